//! Typed outbound documents and their validation before sending.
//!
//! Every workflow names a [`DocumentKind`]. Before a payload is written to the
//! outbox (and again before it is sent) it is checked against the rules of its
//! kind, so a malformed document fails loudly at the producer instead of being
//! retried for days against a partner API that will never accept it.
//!
//! Validation works on `serde_json::Value` rather than on typed structs because
//! payloads arrive from many producers (SQL, other services, the CLI) and the
//! error has to point at the offending field with a JSON path such as
//! `items[1].total`, which a failed `serde` deserialization cannot do well.
//!
//! Validators never panic, whatever the input: everything is checked with
//! fallible conversions and all sizes are bounded.

mod onec;
mod partner;

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

pub use onec::{OnecCustomer, OnecInvoice, OnecItem};

/// The kinds of document a workflow can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// 1C:UNF payment invoice ("Счёт на оплату").
    OnecInvoice,
    /// Partner goods receipt (phiếu nhập), keyed by `invoiceCode`.
    PartnerPhieuNhap,
    /// Partner goods issue (phiếu xuất), keyed by `invoiceCode`.
    PartnerPhieuXuat,
    /// Partner sales invoice (hóa đơn), keyed by `billCode`.
    PartnerHoaDon,
    /// Any JSON value; no checks at all.
    Json,
}

impl DocumentKind {
    /// Every kind, in a stable order (used to list the choices in errors).
    pub const ALL: [DocumentKind; 5] = [
        DocumentKind::OnecInvoice,
        DocumentKind::PartnerPhieuNhap,
        DocumentKind::PartnerPhieuXuat,
        DocumentKind::PartnerHoaDon,
        DocumentKind::Json,
    ];

    /// Parses the name used in workflow files; `None` for unknown names.
    pub fn parse(name: &str) -> Option<DocumentKind> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The name used in workflow files and logs.
    pub fn name(&self) -> &'static str {
        match self {
            DocumentKind::OnecInvoice => "onec_invoice",
            DocumentKind::PartnerPhieuNhap => "partner_phieu_nhap",
            DocumentKind::PartnerPhieuXuat => "partner_phieu_xuat",
            DocumentKind::PartnerHoaDon => "partner_hoa_don",
            DocumentKind::Json => "json",
        }
    }

    /// Validate a payload. The error lists every problem found (up to [`MAX_PROBLEMS`], and
    /// counts the rest), each naming its field with a JSON path like `items[1].total`, so a
    /// producer fixes a document in one round instead of one problem per attempt.
    pub fn validate(&self, payload: &Value) -> Result<(), DocumentError> {
        let mut problems = Problems::new(self.name());
        match self {
            DocumentKind::OnecInvoice => onec::validate(&mut problems, payload),
            DocumentKind::PartnerPhieuNhap | DocumentKind::PartnerPhieuXuat => {
                partner::validate(&mut problems, payload, "invoiceCode")
            }
            DocumentKind::PartnerHoaDon => partner::validate(&mut problems, payload, "billCode"),
            DocumentKind::Json => {}
        }
        problems.finish()
    }
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Most problems an error keeps (the rest are only counted): a document with ten thousand bad
/// lines must not make an error of megabytes.
pub const MAX_PROBLEMS: usize = 100;
/// Budget in bytes for the listing of problems in an error's message (it becomes the row's
/// `last_error`); problems that do not fit are counted as "… and N more".
const MESSAGE_BUDGET: usize = 1200;
/// Longest piece of a document's own text quoted in a problem, in characters.
const QUOTE_MAX_CHARS: usize = 40;

/// One thing wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the offending field (`$` for the payload itself).
    pub field: String,
    /// What is wrong, naming expected and found values where that helps.
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Why a payload was rejected: every problem found, in document order.
///
/// Displayed as `invalid <document> document: <field>: <problem>` for one problem, and as
/// `invalid <document> document, <n> problems: <field>: <problem>; <field>: <problem>; …` for
/// several, bounded in length (what does not fit is counted as `… and N more`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// The [`DocumentKind::name`] of the document.
    pub document: &'static str,
    /// The problems kept (at most [`MAX_PROBLEMS`]), in document order; never empty.
    pub problems: Vec<Problem>,
    /// Problems found beyond those kept.
    pub not_kept: usize,
}

impl DocumentError {
    /// How many problems were found in all.
    pub fn count(&self) -> usize {
        self.problems.len() + self.not_kept
    }

    /// The fields named, in document order (of the problems kept).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.problems.iter().map(|p| p.field.as_str())
    }
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.count();
        if count == 1 {
            write!(f, "invalid {} document: ", self.document)?;
        } else {
            write!(f, "invalid {} document, {count} problems: ", self.document)?;
        }
        let mut used = 0;
        let mut listed = 0;
        for p in &self.problems {
            let text = p.to_string();
            let sep = if listed == 0 { "" } else { "; " };
            if listed > 0 && used + sep.len() + text.len() > MESSAGE_BUDGET {
                break;
            }
            // The first problem is always shown, cut to the budget if it has to be.
            let mut end = text.len().min(MESSAGE_BUDGET);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            f.write_str(sep)?;
            f.write_str(&text[..end])?;
            if end < text.len() {
                f.write_str("…")?;
            }
            used += sep.len() + end;
            listed += 1;
        }
        if listed < count {
            write!(f, "; … and {} more", count - listed)?;
        }
        Ok(())
    }
}

impl std::error::Error for DocumentError {}

/// Collects the problems of one document while a validator walks it.
pub(crate) struct Problems {
    document: &'static str,
    list: Vec<Problem>,
    not_kept: usize,
}

impl Problems {
    fn new(document: &'static str) -> Problems {
        Problems {
            document,
            list: Vec::new(),
            not_kept: 0,
        }
    }

    pub(crate) fn add(&mut self, problem: Problem) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(problem);
        } else {
            self.not_kept += 1;
        }
    }

    /// The value, or `None` with the problem recorded: the caller skips what depends on it
    /// and goes on with the rest of the document.
    pub(crate) fn take<T>(&mut self, checked: Result<T, Problem>) -> Option<T> {
        match checked {
            Ok(v) => Some(v),
            Err(p) => {
                self.add(p);
                None
            }
        }
    }

    fn finish(self) -> Result<(), DocumentError> {
        if self.list.is_empty() {
            return Ok(());
        }
        Err(DocumentError {
            document: self.document,
            problems: self.list,
            not_kept: self.not_kept,
        })
    }
}

/// Longest display string [`document_code`] returns, in characters; codes
/// are for log lines, and an attacker-sized string must not flood them.
const CODE_MAX_CHARS: usize = 64;
/// A dotted path deeper than this is certainly a mistake, not a field.
const CODE_MAX_SEGMENTS: usize = 16;

/// The value of a top-level (or dotted path) field as a short display string, for logs, e.g. invoice_number. None if absent.
///
/// Numeric segments index into arrays (`items.0.articul`). Strings are
/// trimmed, control characters are replaced (so a payload cannot forge log
/// lines) and long values are cut. Null, empty strings, objects and arrays
/// give `None`: none of them identifies a document.
pub fn document_code(payload: &Value, field: &str) -> Option<String> {
    if field.is_empty() {
        return None;
    }
    let mut current = payload;
    for (depth, segment) in field.split('.').enumerate() {
        if depth >= CODE_MAX_SEGMENTS {
            return None;
        }
        current = match current {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    let text = match current {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null | Value::Array(_) | Value::Object(_) => return None,
    };
    if text.is_empty() {
        return None;
    }
    let mut out: String = text
        .chars()
        .take(CODE_MAX_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(CODE_MAX_CHARS).is_some() {
        out.push('…');
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Helpers shared by the validators. They all take the document name so the
// error can be built where the problem is found.

/// JSON type name as used in messages ("expected a string, got number").
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(crate) fn problem(field: impl Into<String>, problem: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A piece of the document's own text for a message: quoted, control characters escaped, and
/// cut to [`QUOTE_MAX_CHARS`] characters (a megabyte "date" must not become a megabyte error).
pub(crate) fn quoted(text: &str) -> String {
    let mut cut: String = text.chars().take(QUOTE_MAX_CHARS).collect();
    let more = cut.len() < text.len();
    cut = format!("{cut:?}");
    if more {
        cut.push('…');
    }
    cut
}

/// `parent.key`, or just `key` at the top level.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Human path for a field: the root is shown as `$`.
fn shown(path: &str) -> &str {
    if path.is_empty() {
        "$"
    } else {
        path
    }
}

pub(crate) fn expect_object<'a>(
    value: &'a Value,
    path: &str,
) -> Result<&'a Map<String, Value>, Problem> {
    value.as_object().ok_or_else(|| {
        problem(
            shown(path),
            format!("expected an object, got {}", type_name(value)),
        )
    })
}

pub(crate) fn required<'a>(
    object: &'a Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<&'a Value, Problem> {
    object
        .get(key)
        .ok_or_else(|| problem(join(parent, key), "missing required field"))
}

pub(crate) fn expect_str<'a>(value: &'a Value, path: &str) -> Result<&'a str, Problem> {
    value.as_str().ok_or_else(|| {
        problem(
            shown(path),
            format!("expected a string, got {}", type_name(value)),
        )
    })
}

/// A string that is not blank and at most `max_chars` characters long
/// (characters, not bytes, so Cyrillic and Vietnamese get the same budget).
pub(crate) fn expect_code<'a>(
    value: &'a Value,
    path: &str,
    max_chars: usize,
) -> Result<&'a str, Problem> {
    let text = expect_str(value, path)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(problem(path, "must not be empty"));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(problem(
            path,
            format!("too long: {chars} characters, at most {max_chars} allowed"),
        ));
    }
    Ok(trimmed)
}

/// A JSON number as an exact decimal.
///
/// Goes through the number's text rather than `as_f64` so `0.1` stays
/// exactly `0.1` and `quantity × price == total` can be compared exactly.
pub(crate) fn expect_decimal(value: &Value, path: &str) -> Result<Decimal, Problem> {
    let Value::Number(number) = value else {
        return Err(problem(
            path,
            format!("expected a number, got {}", type_name(value)),
        ));
    };
    let text = number.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| {
            problem(
                path,
                format!("number {text} is out of the supported decimal range"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kind_names_round_trip() {
        for kind in DocumentKind::ALL {
            assert_eq!(DocumentKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(DocumentKind::parse("Onec_Invoice"), None);
        assert_eq!(DocumentKind::parse(""), None);
    }

    #[test]
    fn json_kind_accepts_anything() {
        for value in [json!(null), json!(1), json!("x"), json!([1, {}])] {
            assert_eq!(DocumentKind::Json.validate(&value), Ok(()));
        }
    }

    fn error_of(problems: Vec<Problem>, not_kept: usize) -> DocumentError {
        DocumentError {
            document: "onec_invoice",
            problems,
            not_kept,
        }
    }

    #[test]
    fn error_display_names_document_field_and_problem() {
        let e = error_of(
            vec![problem("items[1].total", "expected a number, got string")],
            0,
        );
        assert_eq!(
            e.to_string(),
            "invalid onec_invoice document: items[1].total: expected a number, got string"
        );
        let e = error_of(
            vec![
                problem("date", "expected a string, got number"),
                problem("items", "must contain at least one item"),
            ],
            0,
        );
        assert_eq!(
            e.to_string(),
            "invalid onec_invoice document, 2 problems: date: expected a string, got number; \
             items: must contain at least one item"
        );
        assert_eq!(e.fields().collect::<Vec<_>>(), ["date", "items"]);
    }

    #[test]
    fn error_display_is_bounded_and_counts_what_it_leaves_out() {
        let many: Vec<Problem> = (0..MAX_PROBLEMS)
            .map(|i| {
                problem(
                    format!("items[{i}].total"),
                    "expected quantity × price = 2, got 3",
                )
            })
            .collect();
        let e = error_of(many, 900);
        assert_eq!(e.count(), 1000);
        let text = e.to_string();
        assert!(text.len() <= MESSAGE_BUDGET + 100, "{}", text.len());
        assert!(
            text.starts_with("invalid onec_invoice document, 1000 problems: items[0].total: "),
            "{text}"
        );
        let listed = text.matches("expected quantity").count();
        assert!(listed > 10, "{text}");
        assert!(
            text.ends_with(&format!("; … and {} more", 1000 - listed)),
            "{text}"
        );
        // One huge problem is cut, not dropped.
        let e = error_of(vec![problem("x", "ж".repeat(5000))], 0);
        let text = e.to_string();
        assert!(text.len() <= MESSAGE_BUDGET + 100 && text.ends_with('…'));
    }

    #[test]
    fn collection_keeps_a_bounded_number_of_problems() {
        let mut p = Problems::new("json");
        for i in 0..MAX_PROBLEMS + 7 {
            p.add(problem(format!("f{i}"), "bad"));
        }
        assert_eq!(p.take(Ok::<_, Problem>(5)), Some(5));
        assert_eq!(p.take(Err::<u8, _>(problem("g", "bad"))), None);
        let e = p.finish().unwrap_err();
        assert_eq!(
            (e.problems.len(), e.not_kept, e.count()),
            (MAX_PROBLEMS, 8, MAX_PROBLEMS + 8)
        );
        assert_eq!(Problems::new("json").finish(), Ok(()));
    }

    #[test]
    fn quoted_text_is_short_and_escaped() {
        assert_eq!(quoted("2026-1-1"), "\"2026-1-1\"");
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        let long = quoted(&"7".repeat(1_000_000));
        assert_eq!(long, format!("{:?}…", "7".repeat(QUOTE_MAX_CHARS)));
    }

    #[test]
    fn document_code_reads_top_level_and_dotted_paths() {
        let payload = json!({
            "invoice_number": "  INV-1 ",
            "customer": { "name": "Иван Иванов" },
            "items": [{ "articul": "ФР-00000044" }],
            "n": 42, "flag": true, "empty": "", "nothing": null, "obj": {}
        });
        assert_eq!(
            document_code(&payload, "invoice_number").as_deref(),
            Some("INV-1")
        );
        assert_eq!(
            document_code(&payload, "customer.name").as_deref(),
            Some("Иван Иванов")
        );
        assert_eq!(
            document_code(&payload, "items.0.articul").as_deref(),
            Some("ФР-00000044")
        );
        assert_eq!(document_code(&payload, "n").as_deref(), Some("42"));
        assert_eq!(document_code(&payload, "flag").as_deref(), Some("true"));
        for absent in ["missing", "empty", "nothing", "obj", "items.5", "n.x", ""] {
            assert_eq!(document_code(&payload, absent), None, "{absent}");
        }
    }

    #[test]
    fn document_code_is_short_and_log_safe() {
        let long = "Ж".repeat(500);
        let payload = json!({ "a": long, "b": "x\ny\u{1b}[31m" });
        let code = document_code(&payload, "a").unwrap();
        assert_eq!(code.chars().count(), CODE_MAX_CHARS + 1);
        assert!(code.ends_with('…'));
        assert_eq!(document_code(&payload, "b").as_deref(), Some("x?y?[31m"));
        let deep = vec!["a"; 100].join(".");
        assert_eq!(document_code(&payload, &deep), None);
    }

    #[test]
    fn decimals_are_exact() {
        let d = expect_decimal(&json!(0.1), "x").unwrap();
        assert_eq!(d, Decimal::from_str("0.1").unwrap());
        let big = expect_decimal(&json!(1e20), "x").unwrap();
        assert_eq!(big, Decimal::from_str("100000000000000000000").unwrap());
        let small = expect_decimal(&json!(1.5e-7), "x").unwrap();
        assert_eq!(small, Decimal::from_str("0.00000015").unwrap());
        let err = expect_decimal(&json!(1e300), "x").unwrap_err();
        assert!(err.problem.contains("out of the supported"), "{err}");
        let err = expect_decimal(&json!("5"), "x").unwrap_err();
        assert_eq!(err.problem, "expected a number, got string");
    }

    /// Random JSON built by hand: a cheap stand-in for a fuzzer that keeps
    /// the dependency list short. Values are biased towards the shapes the
    /// validators look at so the deep paths get exercised too.
    fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
        const KEYS: [&str; 14] = [
            "invoice_number",
            "date",
            "customer",
            "name",
            "phone",
            "address",
            "items",
            "articul",
            "quantity",
            "price",
            "total",
            "delivery_cost",
            "invoiceCode",
            "billCode",
        ];
        let leaf_only = depth >= 5;
        match rng.u8(0..if leaf_only { 6 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.bool()),
            2 => json!(rng.i64(..)),
            3 => {
                let choices = [0.0, -1.0, 0.1, 1e300, -1e-300, 2.5, f64::MAX, 1e28, 7.0];
                json!(choices[rng.usize(..choices.len())])
            }
            4 => json!(rng.u64(..)),
            5 => {
                let choices = [
                    "",
                    " ",
                    "2026-02-29",
                    "2024-02-29",
                    "9999-12-31",
                    "0000-00-00",
                    "2026-13-01",
                    "ФР-1",
                    "hóa đơn",
                    "\u{0}",
                    "12345678901",
                ];
                let mut s = choices[rng.usize(..choices.len())].to_owned();
                if rng.u8(0..10) == 0 {
                    s = s.repeat(rng.usize(0..200));
                }
                Value::String(s)
            }
            6 => Value::Array(
                (0..rng.usize(0..4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.usize(0..8))
                    .map(|_| {
                        let key = KEYS[rng.usize(..KEYS.len())].to_owned();
                        (key, random_value(rng, depth + 1))
                    })
                    .collect(),
            ),
        }
    }

    /// Replace one random node of `value` with random garbage.
    fn mutate(rng: &mut fastrand::Rng, value: &mut Value, depth: u32) {
        let stop = rng.u8(0..4) == 0 || depth > 6;
        match value {
            Value::Object(map) if !stop && !map.is_empty() => {
                let index = rng.usize(..map.len());
                if let Some((_, child)) = map.iter_mut().nth(index) {
                    mutate(rng, child, depth + 1);
                }
            }
            Value::Array(items) if !stop && !items.is_empty() => {
                let index = rng.usize(..items.len());
                mutate(rng, &mut items[index], depth + 1);
            }
            _ => *value = random_value(rng, depth),
        }
    }

    #[test]
    fn validators_never_panic_on_random_input() {
        let valid = onec::tests::sample();
        let mut rng = fastrand::Rng::with_seed(0x5eed_f3e7);
        for round in 0..20_000 {
            let value = if round % 2 == 0 {
                random_value(&mut rng, 0)
            } else {
                let mut v = valid.clone();
                for _ in 0..rng.usize(1..4) {
                    mutate(&mut rng, &mut v, 0);
                }
                v
            };
            for kind in DocumentKind::ALL {
                if let Err(e) = kind.validate(&value) {
                    assert!(!e.problems.is_empty());
                    assert!(e.to_string().len() <= MESSAGE_BUDGET + 100, "{e}");
                }
            }
            for field in ["invoice_number", "customer.name", "items.0.total", "a..b"] {
                let _ = document_code(&value, field);
            }
        }
    }
}
