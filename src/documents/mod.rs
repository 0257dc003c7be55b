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

    /// Validate a payload; the error names the field (a JSON path like `items[1].total`) and the problem.
    pub fn validate(&self, payload: &Value) -> Result<(), DocumentError> {
        let document = self.name();
        match self {
            DocumentKind::OnecInvoice => onec::validate(document, payload),
            DocumentKind::PartnerPhieuNhap | DocumentKind::PartnerPhieuXuat => {
                partner::validate(document, payload, "invoiceCode")
            }
            DocumentKind::PartnerHoaDon => partner::validate(document, payload, "billCode"),
            DocumentKind::Json => Ok(()),
        }
    }
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a payload was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {document} document: {field}: {problem}")]
pub struct DocumentError {
    /// The [`DocumentKind::name`] of the document.
    pub document: &'static str,
    /// JSON path of the offending field (`$` for the payload itself).
    pub field: String,
    /// What is wrong, naming expected and found values where that helps.
    pub problem: String,
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

pub(crate) fn error(
    document: &'static str,
    field: impl Into<String>,
    problem: impl Into<String>,
) -> DocumentError {
    DocumentError {
        document,
        field: field.into(),
        problem: problem.into(),
    }
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
    document: &'static str,
    value: &'a Value,
    path: &str,
) -> Result<&'a Map<String, Value>, DocumentError> {
    value.as_object().ok_or_else(|| {
        error(
            document,
            shown(path),
            format!("expected an object, got {}", type_name(value)),
        )
    })
}

pub(crate) fn required<'a>(
    document: &'static str,
    object: &'a Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<&'a Value, DocumentError> {
    object
        .get(key)
        .ok_or_else(|| error(document, join(parent, key), "missing required field"))
}

pub(crate) fn expect_str<'a>(
    document: &'static str,
    value: &'a Value,
    path: &str,
) -> Result<&'a str, DocumentError> {
    value.as_str().ok_or_else(|| {
        error(
            document,
            shown(path),
            format!("expected a string, got {}", type_name(value)),
        )
    })
}

/// A string that is not blank and at most `max_chars` characters long
/// (characters, not bytes, so Cyrillic and Vietnamese get the same budget).
pub(crate) fn expect_code<'a>(
    document: &'static str,
    value: &'a Value,
    path: &str,
    max_chars: usize,
) -> Result<&'a str, DocumentError> {
    let text = expect_str(document, value, path)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(error(document, path, "must not be empty"));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(error(
            document,
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
pub(crate) fn expect_decimal(
    document: &'static str,
    value: &Value,
    path: &str,
) -> Result<Decimal, DocumentError> {
    let Value::Number(number) = value else {
        return Err(error(
            document,
            path,
            format!("expected a number, got {}", type_name(value)),
        ));
    };
    let text = number.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| {
            error(
                document,
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

    #[test]
    fn error_display_names_document_field_and_problem() {
        let e = error(
            "onec_invoice",
            "items[1].total",
            "expected a number, got string",
        );
        assert_eq!(
            e.to_string(),
            "invalid onec_invoice document: items[1].total: expected a number, got string"
        );
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
        let d = expect_decimal("t", &json!(0.1), "x").unwrap();
        assert_eq!(d, Decimal::from_str("0.1").unwrap());
        let big = expect_decimal("t", &json!(1e20), "x").unwrap();
        assert_eq!(big, Decimal::from_str("100000000000000000000").unwrap());
        let small = expect_decimal("t", &json!(1.5e-7), "x").unwrap();
        assert_eq!(small, Decimal::from_str("0.00000015").unwrap());
        let err = expect_decimal("t", &json!(1e300), "x").unwrap_err();
        assert!(err.problem.contains("out of the supported"), "{err}");
        let err = expect_decimal("t", &json!("5"), "x").unwrap_err();
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
                let _ = kind.validate(&value);
            }
            for field in ["invoice_number", "customer.name", "items.0.total", "a..b"] {
                let _ = document_code(&value, field);
            }
        }
    }
}
