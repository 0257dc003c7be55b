//! The workflow file exactly as written: the serde structs, the one definition of its fields.
//!
//! The structs are what the TOML deserializes into; nothing here is checked beyond shape and
//! types. Durations stay strings so the validator can name the field and the text in its error,
//! and integers stay `i64` so range errors can be phrased in domain terms instead of "invalid
//! value: integer `-1`".
//!
//! Field names, which fields are required and their types come from these structs alone:
//! `deny_unknown_fields` refuses a field they do not have, and [`read`] turns serde's errors into
//! `(field path, problem)` pairs. serde stops at the first mistake, so [`read`] takes each
//! mistake out of the table (drops an unknown field, puts a stand-in where a field is missing or
//! mistyped) and deserializes again, until the file is read or every mistake is named.
//!
//! None of these structs derives `Debug`: they hold passwords in clear.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_path_to_error::Segment;
use toml::{Table, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkflow {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub document: String,
    pub identify_by: Option<String>,
    pub target: RawTarget,
    pub request: RawRequest,
    pub retry: RawRetry,
    pub on_done: Option<RawOnDone>,
    pub source: Option<RawSource>,
    pub reconcile: Option<RawReconcile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub name: String,
    pub base_url: String,
    pub max_concurrency: i64,
    pub auth: RawAuth,
    pub tls_verify: Option<bool>,
    pub circuit: Option<RawCircuit>,
}

/// All auth kinds share one struct; which fields are allowed depends on
/// `kind` and is checked by the validator (serde's tagged-enum errors are
/// too vague to show to an operator).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub kind: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCircuit {
    pub failures: Option<i64>,
    pub open_for: Option<String>,
    pub max_open_for: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequest {
    pub method: String,
    pub path: String,
    pub timeout: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub waits: Option<Vec<String>>,
    pub backoff: Option<RawBackoff>,
    pub max_attempts: Option<i64>,
    pub give_up_after: Option<String>,
    pub retry_on_status: Vec<i64>,
    pub retry_on_timeout: Option<bool>,
    pub retry_on_connect_error: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackoff {
    pub initial: String,
    pub factor: f64,
    pub max: String,
    pub jitter: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOnDone {
    pub sql: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub order_sql: String,
    pub items_sql: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReconcile {
    pub schedule: String,
    pub sql: String,
}

// ---------------------------------------------------------------------------
// Reading a table into the structs, naming every mistake

/// A field's dotted path (`retry.waits[1]`, as `env.rs` writes them) and what is wrong with it.
pub(crate) type FieldProblem = (String, String);

/// Deserializations tried for one file at most: one per mistake, a few per stand-in. A file
/// with every section missing needs about forty.
const MAX_PASSES: usize = 200;

/// What a missing or mistyped field is replaced with, tried in turn until serde takes one; the
/// problems found inside a stand-in are not reported (they are about the stand-in).
fn stand_ins() -> [Value; 5] {
    [
        Value::String(String::new()),
        Value::Integer(0),
        Value::Boolean(false),
        Value::Array(Vec::new()),
        Value::Table(Table::new()),
    ]
}

/// One step of a field path.
#[derive(Clone, PartialEq, Eq)]
enum Key {
    Field(String),
    Index(usize),
}

/// Deserialize `table` (already interpolated) into a [`RawWorkflow`], or name every unknown,
/// missing and mistyped field with its path. Values are never echoed in problems: they may be
/// secrets from the environment.
pub(crate) fn read(table: Table) -> Result<RawWorkflow, Vec<FieldProblem>> {
    let mut value = Value::Table(table);
    let mut problems: Vec<FieldProblem> = Vec::new();
    // Fields already reported or replaced by a stand-in: nothing under them is reported again.
    let mut quiet: Vec<Vec<Key>> = Vec::new();
    let mut tried: Vec<(Vec<Key>, usize)> = Vec::new();
    for _ in 0..MAX_PASSES {
        let error = match serde_path_to_error::deserialize::<_, RawWorkflow>(value.clone()) {
            Ok(raw) if problems.is_empty() => return Ok(raw),
            Ok(_) => return Err(problems),
            Err(error) => error,
        };
        let mut path = keys(error.path());
        let mistake = Mistake::of(error.inner().message());
        let problem = match &mistake {
            Mistake::Missing(name) => {
                path.push(Key::Field(name.clone()));
                "missing required field".to_owned()
            }
            Mistake::Unknown { expected } => format!("unknown field; expected {expected}"),
            Mistake::Type { expected } => format!(
                "expected {expected}, got {}",
                lookup(&value, &path).map_or("nothing", toml_type)
            ),
            Mistake::Other(text) => text.clone(),
        };
        if !quiet.iter().any(|q| path.starts_with(q)) {
            problems.push((dotted(&path), problem));
            quiet.push(path.clone());
        }
        let taken_out = match mistake {
            Mistake::Unknown { .. } => remove(&mut value, &path),
            _ => stand_in(&mut value, &path, &mut tried),
        };
        if !taken_out {
            break;
        }
    }
    if problems.is_empty() {
        problems.push((
            String::new(),
            "cannot be read as a workflow file".to_owned(),
        ));
    }
    Err(problems)
}

/// serde's error messages (the `serde::de::Error` constructors' wording), in the file's terms.
enum Mistake {
    Missing(String),
    Unknown { expected: String },
    Type { expected: &'static str },
    Other(String),
}

impl Mistake {
    fn of(message: &str) -> Mistake {
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            return Mistake::Missing(name.to_owned());
        }
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let expected = rest
                .split_once("`, ")
                .map(|(_, expected)| expected.trim_start_matches("expected ").to_owned())
                .unwrap_or_else(|| "no such field".to_owned());
            return Mistake::Unknown { expected };
        }
        if let Some((_, expected)) = message
            .strip_prefix("invalid type: ")
            .and_then(|rest| rest.rsplit_once(", expected "))
        {
            return Mistake::Type {
                expected: expectation(expected),
            };
        }
        // "invalid value: <the value>, expected …": keep what was expected, not the value.
        match message.rsplit_once(", expected ") {
            Some((_, expected)) => Mistake::Other(format!("invalid value; expected {expected}")),
            None => Mistake::Other(message.to_owned()),
        }
    }
}

/// serde's name for an expected type, as the file's reader knows it.
fn expectation(serde: &str) -> &'static str {
    match serde {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "an integer",
        // TOML integers are taken too: `factor = 2` just works.
        "f32" | "f64" => "a number",
        "a boolean" => "a boolean (true or false)",
        "a string" => "a string",
        "a sequence" => "an array",
        _ => "a table",
    }
}

fn keys(path: &serde_path_to_error::Path) -> Vec<Key> {
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Key::Index(*index)),
            Segment::Map { key } => Some(Key::Field(key.clone())),
            Segment::Enum { variant } => Some(Key::Field(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

fn dotted(path: &[Key]) -> String {
    let mut out = String::new();
    for key in path {
        match key {
            Key::Field(name) if out.is_empty() => out.push_str(name),
            Key::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Key::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

fn lookup<'a>(value: &'a Value, path: &[Key]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |value, key| match (key, value) {
            (Key::Field(name), Value::Table(table)) => table.get(name),
            (Key::Index(index), Value::Array(items)) => items.get(*index),
            _ => None,
        })
}

fn lookup_mut<'a>(value: &'a mut Value, path: &[Key]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(value, |value, key| match (key, value) {
            (Key::Field(name), Value::Table(table)) => table.get_mut(name),
            (Key::Index(index), Value::Array(items)) => items.get_mut(*index),
            _ => None,
        })
}

/// Drop the field at `path`; false when there is none.
fn remove(value: &mut Value, path: &[Key]) -> bool {
    let Some((Key::Field(name), parent)) = path.split_last() else {
        return false;
    };
    match lookup_mut(value, parent) {
        Some(Value::Table(table)) => table.remove(name).is_some(),
        _ => false,
    }
}

/// Put the next stand-in at `path`; false when every one was tried there.
fn stand_in(value: &mut Value, path: &[Key], tried: &mut Vec<(Vec<Key>, usize)>) -> bool {
    let next = match tried.iter_mut().find(|(p, _)| p == path) {
        Some((_, count)) => count,
        None => {
            tried.push((path.to_vec(), 0));
            &mut tried.last_mut().expect("just pushed").1
        }
    };
    let Some(replacement) = stand_ins().into_iter().nth(*next) else {
        return false;
    };
    *next += 1;
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    match (last, lookup_mut(value, parent)) {
        (Key::Field(name), Some(Value::Table(table))) => {
            table.insert(name.clone(), replacement);
            true
        }
        (Key::Index(index), Some(Value::Array(items))) if *index < items.len() => {
            items[*index] = replacement;
            true
        }
        _ => false,
    }
}

fn toml_type(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of every struct is read.
    const EVERYTHING: &str = r#"
        name = "x"
        description = "d"
        document = "json"
        identify_by = "id"
        [target]
        name = "t"
        base_url = "https://example.com"
        max_concurrency = 1
        auth = { kind = "basic", username = "u", password = "p", token = "t" }
        tls_verify = true
        circuit = { failures = 1, open_for = "1s", max_open_for = "2s" }
        [request]
        method = "POST"
        path = "/x"
        timeout = "1s"
        headers = { "X-A" = "b" }
        [retry]
        waits = ["1s"]
        backoff = { initial = "1s", factor = 2, max = "2s", jitter = 0.1 }
        max_attempts = 3
        give_up_after = "1h"
        retry_on_status = [500]
        retry_on_timeout = true
        retry_on_connect_error = true
        [on_done]
        sql = "SELECT 1"
        [source]
        order_sql = "SELECT 1"
        items_sql = "SELECT 1"
        [reconcile]
        schedule = "0 * * * * *"
        sql = "SELECT 1"
    "#;

    fn problems(text: &str) -> Vec<FieldProblem> {
        match read(toml::from_str(text).unwrap()) {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    #[test]
    fn every_field_is_read() {
        let raw = read(toml::from_str(EVERYTHING).unwrap()).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(raw.retry.backoff.map(|b| b.factor), Some(2.0));
        assert_eq!(raw.request.headers["X-A"], "b");
        assert_eq!(raw.target.auth.token.as_deref(), Some("t"));
        assert_eq!(raw.reconcile.map(|r| r.sql).as_deref(), Some("SELECT 1"));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let got = problems(
            r#"
            name = 5
            document = "json"
            colour = "red"
            [target]
            name = "t"
            base_url = "https://example.com"
            max_concurrency = "4"
            auth = { kind = "basic", pasword = "p" }
            [request]
            method = "POST"
            path = "/x"
            timeout = "1s"
            headers = { "X-A" = 1 }
            [retry]
            waits = ["1s", 5]
            "#,
        );
        let got: Vec<(&str, &str)> = got.iter().map(|(f, p)| (f.as_str(), p.as_str())).collect();
        for expected in [
            ("name", "expected a string, got an integer"),
            (
                "target.max_concurrency",
                "expected an integer, got a string",
            ),
            ("request.headers.X-A", "expected a string, got an integer"),
            ("retry.waits[1]", "expected a string, got an integer"),
            ("retry.retry_on_status", "missing required field"),
            (
                "target.auth.pasword",
                "unknown field; expected one of `kind`, `username`, `password`, `token`",
            ),
        ] {
            assert!(got.contains(&expected), "{expected:?} not in {got:?}");
        }
        assert!(got
            .iter()
            .any(|(f, p)| *f == "colour" && p.starts_with("unknown field")));
        assert_eq!(got.len(), 7, "{got:?}");
    }

    #[test]
    fn a_missing_section_is_one_problem() {
        let got = problems("name = \"x\"\ndocument = \"json\"");
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["target", "request", "retry"], "{got:?}");
        assert!(got.iter().all(|(_, p)| p == "missing required field"));
        assert_eq!(problems("").len(), 5);
    }

    #[test]
    fn values_are_not_echoed() {
        let got =
            problems(&EVERYTHING.replace("max_concurrency = 1", "max_concurrency = \"s3cr3t\""));
        assert_eq!(
            got,
            [(
                "target.max_concurrency".to_owned(),
                "expected an integer, got a string".to_owned()
            )]
        );
        let got = problems(&EVERYTHING.replace("factor = 2", "factor = \"two\""));
        assert_eq!(got[0].1, "expected a number, got a string");
        let got = problems(&EVERYTHING.replace("retry_on_timeout = true", "retry_on_timeout = 1"));
        assert_eq!(
            got[0].1,
            "expected a boolean (true or false), got an integer"
        );
        let got = problems(
            &EVERYTHING
                .replace("identify_by = \"id\"", "identify_by = \"id\"\non_done = 3")
                .replace("[on_done]\n        sql = \"SELECT 1\"", ""),
        );
        assert_eq!(
            got,
            [(
                "on_done".to_owned(),
                "expected a table, got an integer".to_owned()
            )]
        );
    }
}
