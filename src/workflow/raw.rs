//! The workflow file exactly as written: serde structs plus a small schema.
//!
//! The structs are what the TOML deserializes into; nothing here is checked
//! beyond types. Durations stay strings so the validator can name the field
//! and the text in its error, and integers stay `i64` so range errors can be
//! phrased in domain terms instead of "invalid value: integer `-1`".
//!
//! The schema duplicates the field lists on purpose. serde stops at the first
//! problem and does not say *where* a type mismatch is; walking the parsed
//! table against the schema first reports every unknown, missing or
//! mistyped field with its full path. `deny_unknown_fields` stays on the
//! structs as a second line of defence, and a test checks the two agree.
//!
//! None of these structs derives `Debug`: they hold passwords in clear.

use std::collections::BTreeMap;

use serde::Deserialize;
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
// Schema

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Str,
    Int,
    /// TOML integers are accepted too: `factor = 2` should just work.
    Float,
    Bool,
    List(&'static Kind),
    Table(&'static [Field]),
    /// A table of arbitrary keys with string values (`headers`).
    StrMap,
}

#[derive(Clone, Copy)]
pub(crate) struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const AUTH: &[Field] = &[
    req("kind", Kind::Str),
    opt("username", Kind::Str),
    opt("password", Kind::Str),
    opt("token", Kind::Str),
];

const CIRCUIT: &[Field] = &[
    opt("failures", Kind::Int),
    opt("open_for", Kind::Str),
    opt("max_open_for", Kind::Str),
];

const TARGET: &[Field] = &[
    req("name", Kind::Str),
    req("base_url", Kind::Str),
    req("max_concurrency", Kind::Int),
    req("auth", Kind::Table(AUTH)),
    opt("tls_verify", Kind::Bool),
    opt("circuit", Kind::Table(CIRCUIT)),
];

const REQUEST: &[Field] = &[
    req("method", Kind::Str),
    req("path", Kind::Str),
    req("timeout", Kind::Str),
    opt("headers", Kind::StrMap),
];

const BACKOFF: &[Field] = &[
    req("initial", Kind::Str),
    req("factor", Kind::Float),
    req("max", Kind::Str),
    opt("jitter", Kind::Float),
];

const RETRY: &[Field] = &[
    opt("waits", Kind::List(&Kind::Str)),
    opt("backoff", Kind::Table(BACKOFF)),
    opt("max_attempts", Kind::Int),
    opt("give_up_after", Kind::Str),
    req("retry_on_status", Kind::List(&Kind::Int)),
    opt("retry_on_timeout", Kind::Bool),
    opt("retry_on_connect_error", Kind::Bool),
];

const ON_DONE: &[Field] = &[req("sql", Kind::Str)];
const SOURCE: &[Field] = &[req("order_sql", Kind::Str), req("items_sql", Kind::Str)];
const RECONCILE: &[Field] = &[req("schedule", Kind::Str), req("sql", Kind::Str)];

pub(crate) const WORKFLOW: &[Field] = &[
    req("name", Kind::Str),
    opt("description", Kind::Str),
    req("document", Kind::Str),
    opt("identify_by", Kind::Str),
    req("target", Kind::Table(TARGET)),
    req("request", Kind::Table(REQUEST)),
    req("retry", Kind::Table(RETRY)),
    opt("on_done", Kind::Table(ON_DONE)),
    opt("source", Kind::Table(SOURCE)),
    opt("reconcile", Kind::Table(RECONCILE)),
];

/// Check `table` against `schema`, returning `(field path, problem)` for
/// every unknown, missing or mistyped field.
pub(crate) fn check(table: &Table, schema: &[Field], prefix: &str) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    check_table(table, schema, prefix, &mut problems);
    problems
}

fn check_table(
    table: &Table,
    schema: &[Field],
    prefix: &str,
    problems: &mut Vec<(String, String)>,
) {
    let path = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    for (key, value) in table {
        match schema.iter().find(|field| field.name == key) {
            Some(field) => check_value(value, field.kind, &path(key), problems),
            None => {
                let known: Vec<String> = schema.iter().map(|f| format!("`{}`", f.name)).collect();
                problems.push((
                    path(key),
                    format!("unknown field; expected one of {}", known.join(", ")),
                ));
            }
        }
    }
    for field in schema {
        if field.required && !table.contains_key(field.name) {
            problems.push((path(field.name), "missing required field".to_owned()));
        }
    }
}

fn check_value(value: &Value, kind: Kind, path: &str, problems: &mut Vec<(String, String)>) {
    let mismatch = |expected: &str| {
        (
            path.to_owned(),
            format!("expected {expected}, got {}", toml_type(value)),
        )
    };
    match (kind, value) {
        (Kind::Str, Value::String(_))
        | (Kind::Int, Value::Integer(_))
        | (Kind::Float, Value::Float(_) | Value::Integer(_))
        | (Kind::Bool, Value::Boolean(_)) => {}
        (Kind::List(item), Value::Array(items)) => {
            for (index, element) in items.iter().enumerate() {
                check_value(element, *item, &format!("{path}[{index}]"), problems);
            }
        }
        (Kind::Table(schema), Value::Table(table)) => check_table(table, schema, path, problems),
        (Kind::StrMap, Value::Table(table)) => {
            for (key, element) in table {
                check_value(element, Kind::Str, &format!("{path}.{key}"), problems);
            }
        }
        (Kind::Str, _) => problems.push(mismatch("a string")),
        (Kind::Int, _) => problems.push(mismatch("an integer")),
        (Kind::Float, _) => problems.push(mismatch("a number")),
        (Kind::Bool, _) => problems.push(mismatch("a boolean (true or false)")),
        (Kind::List(_), _) => problems.push(mismatch("an array")),
        (Kind::Table(_) | Kind::StrMap, _) => problems.push(mismatch("a table")),
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

    /// Every field of every struct, so that a field added to a struct but
    /// not to the schema (or the reverse) fails here rather than in review.
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

    #[test]
    fn schema_and_structs_agree() {
        let table: Table = toml::from_str(EVERYTHING).unwrap();
        assert!(check(&table, WORKFLOW, "").is_empty());
        let raw: RawWorkflow = Value::Table(table).try_into().unwrap();
        assert_eq!(raw.retry.backoff.map(|b| b.factor), Some(2.0));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let table: Table = toml::from_str(
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
        )
        .unwrap();
        let problems = check(&table, WORKFLOW, "");
        let got: Vec<(&str, &str)> = problems
            .iter()
            .map(|(f, p)| (f.as_str(), p.as_str()))
            .collect();
        for expected in [
            ("name", "expected a string, got an integer"),
            (
                "target.max_concurrency",
                "expected an integer, got a string",
            ),
            ("request.headers.X-A", "expected a string, got an integer"),
            ("retry.waits[1]", "expected a string, got an integer"),
            ("retry.retry_on_status", "missing required field"),
        ] {
            assert!(got.contains(&expected), "{expected:?} not in {got:?}");
        }
        assert!(got
            .iter()
            .any(|(f, p)| *f == "colour" && p.starts_with("unknown field")));
        assert!(got
            .iter()
            .any(|(f, p)| *f == "target.auth.pasword" && p.contains("`password`")));
    }
}
