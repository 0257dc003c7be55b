//! Named SQL parameters (`:key`, `:response`, …) in workflow SQL.
//!
//! Workflow SQL runs on PostgreSQL and SQLite, which spell positional
//! parameters differently, so files use names and [`bind_params`] rewrites
//! them per backend. Names are checked at load time against a fixed list so
//! a typo such as `:reponse` fails at startup, not at the first delivery.
//!
//! The scanner knows just enough SQL to avoid false positives: it skips
//! string literals (including `E'…'` with backslash escapes), quoted
//! identifiers, comments, PostgreSQL dollar-quoted bodies and `::` casts.

/// How positional parameters are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamStyle {
    /// PostgreSQL: `$1, $2, …`
    Dollar,
    /// SQLite: `?1, ?2, …`
    Question,
}

/// Parameters available to `[on_done] sql`, bound when a row is marked done.
pub const ON_DONE_PARAMS: &[&str] = &["key", "outbox_id", "response", "status", "attempt"];
/// Parameters available to `[source]` SQL: the business key of the document
/// being exported (e.g. the order id given to `ferry export-invoice`).
pub const SOURCE_PARAMS: &[&str] = &["key"];
/// Parameters available to `[reconcile] sql`: the sweep's batch size.
pub const RECONCILE_PARAMS: &[&str] = &["limit"];

/// Every name [`bind_params`] can return (it hands out `&'static str`).
const ALL_PARAMS: &[&str] = &["key", "outbox_id", "response", "status", "attempt", "limit"];

#[derive(Debug, PartialEq)]
enum Token<'a> {
    /// `:name` at `start..end` (the colon included).
    Named {
        name: &'a str,
        start: usize,
        end: usize,
    },
    /// `$1` or `?1`, already positional.
    Positional { text: &'a str },
}

#[derive(Debug, Default)]
struct Scan<'a> {
    tokens: Vec<Token<'a>>,
    /// What was left open at the end of the text, if anything.
    unterminated: Option<&'static str>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Walks the SQL once. Works on bytes: every delimiter is ASCII, and UTF-8
/// continuation bytes are never ASCII, so slicing at these positions is
/// always on a character boundary.
fn scan(sql: &str) -> Scan<'_> {
    let bytes = sql.as_bytes();
    let mut scan = Scan::default();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        match b {
            b'\'' => {
                let prev = i.checked_sub(1).map(|p| bytes[p]);
                let prev2 = i.checked_sub(2).map(|p| bytes[p]);
                let escapes = matches!(prev, Some(b'E' | b'e')) && !prev2.is_some_and(is_ident);
                match skip_quoted(bytes, i + 1, b'\'', escapes) {
                    Some(end) => i = end,
                    None => {
                        scan.unterminated = Some("string literal");
                        return scan;
                    }
                }
            }
            b'"' => match skip_quoted(bytes, i + 1, b'"', false) {
                Some(end) => i = end,
                None => {
                    scan.unterminated = Some("quoted identifier");
                    return scan;
                }
            },
            b'-' if next == Some(b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1);
            }
            b'/' if next == Some(b'*') => match skip_block_comment(bytes, i + 2) {
                Some(end) => i = end,
                None => {
                    scan.unterminated = Some("block comment");
                    return scan;
                }
            },
            b':' if next == Some(b':') => i += 2,
            b':' if next.is_some_and(is_ident_start) => {
                let start = i;
                i += 1;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                scan.tokens.push(Token::Named {
                    name: &sql[start + 1..i],
                    start,
                    end: i,
                });
            }
            b'$' | b'?' if next.is_some_and(|c| c.is_ascii_digit()) => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                scan.tokens.push(Token::Positional {
                    text: &sql[start..i],
                });
            }
            b'$' if i == 0 || !is_ident(bytes[i - 1]) => {
                // `$$` or `$tag$` opens a dollar-quoted body that ends at
                // the same delimiter; anything else is an ordinary `$`.
                match dollar_tag(bytes, i) {
                    Some(tag_end) => {
                        let tag = &bytes[i..tag_end];
                        match find(bytes, tag_end, tag) {
                            Some(close) => i = close + tag.len(),
                            None => {
                                scan.unterminated = Some("dollar-quoted string");
                                return scan;
                            }
                        }
                    }
                    None => i += 1,
                }
            }
            b if is_ident(b) => {
                // Skip whole identifiers so `a$1` or `x$y$` are not misread.
                while i < bytes.len() && (is_ident(bytes[i]) || bytes[i] == b'$') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    scan
}

/// Index just past the closing quote; doubled quotes are an escaped quote.
fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8, backslash_escapes: bool) -> Option<usize> {
    while i < bytes.len() {
        let b = bytes[i];
        if backslash_escapes && b == b'\\' {
            i += 2;
        } else if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// PostgreSQL block comments nest.
fn skip_block_comment(bytes: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 1usize;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// End (exclusive) of a `$tag$` opener starting at `start`, if it is one.
fn dollar_tag(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if bytes.get(i) == Some(&b'$') {
        return Some(i + 1);
    }
    if !bytes.get(i).copied().is_some_and(is_ident_start) {
        return None;
    }
    while i < bytes.len() && is_ident(bytes[i]) {
        i += 1;
    }
    (bytes.get(i) == Some(&b'$')).then_some(i + 1)
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|p| from + p)
}

/// Problems with `sql` given the parameter names it may use; empty if fine.
pub(crate) fn check(sql: &str, allowed: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if sql.trim().is_empty() {
        problems.push("must not be empty".to_owned());
        return problems;
    }
    let scan = scan(sql);
    if let Some(what) = scan.unterminated {
        problems.push(format!("unterminated {what}"));
    }
    let mut reported: Vec<&str> = Vec::new();
    for token in &scan.tokens {
        match token {
            Token::Named { name, .. } if !allowed.contains(name) && !reported.contains(name) => {
                reported.push(name);
                let allowed: Vec<String> = allowed.iter().map(|a| format!(":{a}")).collect();
                let allowed = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                problems.push(format!(
                    "unknown SQL parameter :{name} (allowed here: {allowed})"
                ));
            }
            Token::Positional { text } if !reported.contains(text) => {
                reported.push(text);
                problems.push(format!(
                    "positional parameter {text} is not allowed; use named parameters such as :key"
                ));
            }
            _ => {}
        }
    }
    problems
}

/// Rewrite named parameters to positional ones for `style`.
///
/// A name used twice gets the same number both times. Returns the rewritten
/// SQL and the names in positional order (index 0 is `$1`/`?1`), i.e. the
/// order in which values must be bound. Names outside the known list are
/// left untouched; loading a workflow has already rejected them.
pub fn bind_params(sql: &str, style: ParamStyle) -> (String, Vec<&'static str>) {
    let scan = scan(sql);
    let mut out = String::with_capacity(sql.len() + 8);
    let mut order: Vec<&'static str> = Vec::new();
    let mut copied = 0;
    for token in scan.tokens {
        let Token::Named { name, start, end } = token else {
            continue;
        };
        let Some(known) = ALL_PARAMS.iter().copied().find(|p| *p == name) else {
            continue;
        };
        let number = match order.iter().position(|p| *p == known) {
            Some(index) => index + 1,
            None => {
                order.push(known);
                order.len()
            }
        };
        out.push_str(&sql[copied..start]);
        out.push(match style {
            ParamStyle::Dollar => '$',
            ParamStyle::Question => '?',
        });
        out.push_str(&number.to_string());
        copied = end;
    }
    out.push_str(&sql[copied..]);
    (out, order)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON_DONE: &str = "UPDATE orders SET invoice_exported_to_1c = TRUE, invoice_exported_at = CURRENT_TIMESTAMP, onec_response = :response WHERE id = CAST(:key AS BIGINT)";

    #[test]
    fn rewrites_for_postgres_and_sqlite() {
        let (pg, names) = bind_params(ON_DONE, ParamStyle::Dollar);
        assert!(
            pg.ends_with("onec_response = $1 WHERE id = CAST($2 AS BIGINT)"),
            "{pg}"
        );
        assert_eq!(names, ["response", "key"]);
        let (lite, names) = bind_params(ON_DONE, ParamStyle::Question);
        assert!(
            lite.ends_with("onec_response = ?1 WHERE id = CAST(?2 AS BIGINT)"),
            "{lite}"
        );
        assert_eq!(names, ["response", "key"]);
    }

    #[test]
    fn repeated_names_share_a_number() {
        let (sql, names) = bind_params(
            "UPDATE t SET a = :status, b = :key WHERE c = :status AND d = :key",
            ParamStyle::Dollar,
        );
        assert_eq!(sql, "UPDATE t SET a = $1, b = $2 WHERE c = $1 AND d = $2");
        assert_eq!(names, ["status", "key"]);
    }

    #[test]
    fn casts_strings_comments_and_identifiers_are_not_params() {
        let sql = "SELECT :key::bigint, ':status', E'it\\'s :attempt', \"col:response\", \
                   $$ :outbox_id $$, $body$ :x $body$ -- :nope\n /* :no /* :nested */ */ x$y, :attempt";
        let (out, names) = bind_params(sql, ParamStyle::Dollar);
        assert_eq!(names, ["key", "attempt"]);
        assert!(out.starts_with("SELECT $1::bigint, ':status'"), "{out}");
        assert!(out.ends_with("x$y, $2"), "{out}");
        assert!(
            check(sql, ON_DONE_PARAMS).is_empty(),
            "{:?}",
            check(sql, ON_DONE_PARAMS)
        );
    }

    #[test]
    fn unknown_and_positional_params_are_reported_once_each() {
        let problems = check(
            "UPDATE t SET r = :reponse, s = :reponse, k = $1, m = ?2 WHERE id = :key",
            ON_DONE_PARAMS,
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0]
            .starts_with("unknown SQL parameter :reponse (allowed here: :key, :outbox_id"));
        assert!(problems[1].contains("positional parameter $1"));
        assert!(problems[2].contains("positional parameter ?2"));
        assert_eq!(
            check("SELECT :key", RECONCILE_PARAMS),
            ["unknown SQL parameter :key (allowed here: :limit)"]
        );
    }

    #[test]
    fn unterminated_and_empty_sql_are_reported() {
        assert_eq!(check("  ", ON_DONE_PARAMS), ["must not be empty"]);
        assert_eq!(
            check("SELECT 'x", ON_DONE_PARAMS),
            ["unterminated string literal"]
        );
        assert_eq!(
            check("SELECT /* x", ON_DONE_PARAMS),
            ["unterminated block comment"]
        );
        assert_eq!(
            check("SELECT $a$ x", ON_DONE_PARAMS),
            ["unterminated dollar-quoted string"]
        );
    }

    #[test]
    fn unicode_text_is_left_intact() {
        let sql = "UPDATE t SET note = 'Счёт :key' || :response WHERE name = 'hóa đơn'";
        let (out, names) = bind_params(sql, ParamStyle::Question);
        assert_eq!(
            out,
            "UPDATE t SET note = 'Счёт :key' || ?1 WHERE name = 'hóa đơn'"
        );
        assert_eq!(names, ["response"]);
    }

    #[test]
    fn scanner_never_panics_on_odd_input() {
        let pieces = [
            "'", "\"", "$", "$$", "$a$", ":", "::", ":key", "--", "/*", "*/", "E'", "\\", "?", "1",
            "Ж", "\n",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5000 {
            let sql: String = (0..rng.usize(0..12))
                .map(|_| pieces[rng.usize(..pieces.len())])
                .collect();
            let _ = check(&sql, ON_DONE_PARAMS);
            let _ = bind_params(&sql, ParamStyle::Dollar);
        }
    }
}
