//! `${VAR}` / `${VAR:-default}` interpolation of workflow string values.
//!
//! Secrets and per-site URLs live in the environment, not in the workflow
//! files, which are committed. Variables are looked up through a caller
//! supplied function so tests and the demo never touch the process
//! environment. Expansion is single-pass: a value that itself contains
//! `${...}` is inserted literally, so an environment value cannot pull in
//! other variables.

use toml::{Table, Value};

/// Environment lookup: `Some(value)` when the variable is set.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expand every `${...}` in `text`.
///
/// `$${` is an escape for a literal `${`. A bare `$` is kept as is, because
/// SQL uses it (`$1`, `$$ ... $$`). `${VAR:-default}` follows the shell: the
/// default is used when the variable is unset *or empty*.
pub(crate) fn interpolate(text: &str, env: EnvLookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                return Err(format!(
                    "unterminated \"${{\" (write \"$${{\" for a literal \"${{\"): {}",
                    preview(after)
                ));
            };
            let inner = &tail[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !valid_name(name) {
                return Err(format!(
                    "invalid environment variable name {name:?} in \"${{{inner}}}\" (letters, digits and _, not starting with a digit)"
                ));
            }
            match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set and has no default (write ${{{name}:-default}} to give one)"
                    ))
                }
            }
            rest = &tail[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Variables written as `${NAME}` (no default) in `text` that `env` does not set, in order of
/// appearance. Parsed as [`interpolate`] parses (`$${` is a literal); malformed expressions are
/// left to [`interpolate`] to report.
pub(crate) fn unset_without_default(text: &str, env: EnvLookup<'_>) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                break;
            };
            let inner = &tail[..close];
            if !inner.contains(":-") && valid_name(inner) && env(inner).is_none() {
                names.push(inner.to_string());
            }
            rest = &tail[close + 1..];
        } else {
            rest = &after[1..];
        }
    }
    names
}

/// Every `(field path, variable)` of [`unset_without_default`] over the string values of
/// `table`, with field paths written as [`interpolate_table`] writes them.
pub(crate) fn unset_in_table(table: &Table, env: EnvLookup<'_>) -> Vec<(String, String)> {
    fn visit(
        value: &Value,
        path: String,
        env: EnvLookup<'_>,
        depth: usize,
        out: &mut Vec<(String, String)>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        match value {
            Value::String(text) => {
                for name in unset_without_default(text, env) {
                    out.push((path.clone(), name));
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    visit(item, format!("{path}[{index}]"), env, depth + 1, out);
                }
            }
            Value::Table(table) => {
                for (key, item) in table {
                    visit(item, format!("{path}.{key}"), env, depth + 1, out);
                }
            }
            Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {}
        }
    }
    let mut out = Vec::new();
    for (key, value) in table {
        visit(value, key.clone(), env, 0, &mut out);
    }
    out
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The start of an unterminated expression, short enough for an error line.
fn preview(text: &str) -> String {
    let mut cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// Deepest nesting walked; the parser's own limit is far lower in practice,
/// this only makes the recursion obviously bounded.
const MAX_DEPTH: usize = 32;

/// Interpolate every string value (not keys) in `table`, in place.
/// Problems are returned as `(field path, message)` pairs, all of them.
pub(crate) fn interpolate_table(table: &mut Table, env: EnvLookup<'_>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (key, value) in table.iter_mut() {
        walk(value, key.clone(), env, 0, &mut problems);
    }
    problems
}

fn walk(
    value: &mut Value,
    path: String,
    env: EnvLookup<'_>,
    depth: usize,
    problems: &mut Vec<(String, String)>,
) {
    if depth > MAX_DEPTH {
        problems.push((path, "nested too deeply".to_owned()));
        return;
    }
    match value {
        Value::String(text) => match interpolate(text, env) {
            Ok(expanded) => *text = expanded,
            Err(problem) => problems.push((path, problem)),
        },
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{index}]"), env, depth + 1, problems);
            }
        }
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                walk(item, format!("{path}.{key}"), env, depth + 1, problems);
            }
        }
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("erp.local".into()),
            "EMPTY" => Some(String::new()),
            "NESTED" => Some("${HOST}".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_and_defaults() {
        let cases = [
            ("https://${HOST}/x", "https://erp.local/x"),
            ("${MISSING:-/hs/invoices}", "/hs/invoices"),
            ("${HOST:-other}", "erp.local"),
            ("${EMPTY:-fallback}", "fallback"),
            ("[${EMPTY}]", "[]"),
            ("${MISSING:-}", ""),
            ("no variables", "no variables"),
            ("price $1 and $$body$$", "price $1 and $$body$$"),
            ("literal $${HOST}", "literal ${HOST}"),
            ("${NESTED}", "${HOST}"),
            ("Счёт ${HOST} hóa đơn", "Счёт erp.local hóa đơn"),
            ("trailing $", "trailing $"),
        ];
        for (input, expected) in cases {
            assert_eq!(interpolate(input, &env).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn reports_unset_and_malformed_variables() {
        let err = interpolate("${ONEC_PASSWORD}", &env).unwrap_err();
        assert!(
            err.starts_with("environment variable ONEC_PASSWORD is not set"),
            "{err}"
        );
        let err = interpolate("x ${HOST", &env).unwrap_err();
        assert!(err.starts_with("unterminated"), "{err}");
        let err = interpolate("${1ABC}", &env).unwrap_err();
        assert!(
            err.contains("invalid environment variable name \"1ABC\""),
            "{err}"
        );
        assert!(interpolate("${}", &env).is_err());
        assert!(interpolate("${A-B}", &env).is_err());
    }

    #[test]
    fn finds_unset_variables_without_default() {
        assert_eq!(
            unset_without_default(
                "${HOST}/${NOPE}/${MISSING:-x}/$${ESCAPED}/${EMPTY}/${NOPE2}",
                &env
            ),
            ["NOPE", "NOPE2"]
        );
        assert!(unset_without_default("${1BAD} ${unterminated", &env).is_empty());
        let table: Table = toml::from_str(
            r#"
            a = "${HOST}"
            list = ["x", "${NOPE1}"]
            [t]
            b = "${NOPE2:-d} ${NOPE3}"
            "#,
        )
        .unwrap();
        assert_eq!(
            unset_in_table(&table, &env),
            [
                ("list[1]".to_string(), "NOPE1".to_string()),
                ("t.b".to_string(), "NOPE3".to_string())
            ]
        );
    }

    #[test]
    fn walks_tables_and_arrays_collecting_every_problem() {
        let mut table: Table = toml::from_str(
            r#"
            a = "${HOST}"
            list = ["x", "${NOPE1}"]
            [t]
            b = "${NOPE2}"
            n = 5
            "#,
        )
        .unwrap();
        let problems = interpolate_table(&mut table, &env);
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["list[1]", "t.b"]);
        assert_eq!(table["a"].as_str(), Some("erp.local"));
    }
}
