//! From file text to a validated [`Workflow`], collecting every problem.
//!
//! Each check records its problem and carries on with the next field, so a
//! file with five mistakes reports five errors. A section that failed yields
//! `None` and the workflow is only assembled when nothing failed.
//!
//! Numeric bounds that the spec does not fix (largest wait, largest
//! concurrency, …) are sanity caps: they are far above any real setting and
//! exist to catch unit slips such as `"30d"` for `"30s"`.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use toml::Table;

use super::env::{interpolate_table, EnvLookup};
use super::raw::{self, RawAuth, RawCircuit, RawRequest, RawRetry, RawTarget, RawWorkflow};
use super::retry::{attempts_within, Backoff, RetryPolicy};
use super::sql::{self, ON_DONE_PARAMS, RECONCILE_PARAMS, SOURCE_PARAMS};
use super::{Auth, CircuitPolicy, Reconcile, Secret, SourceSql, Target, Workflow, WorkflowError};
use crate::documents::DocumentKind;

const NAME_MAX: usize = 64;
const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const MAX_CONCURRENCY: i64 = 1024;
const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_GIVE_UP: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_ATTEMPTS: u32 = 100_000;
const MAX_CIRCUIT_FAILURES: i64 = 10_000;
const MAX_OPEN_FOR: Duration = Duration::from_secs(24 * 3600);
/// Longest `description` worth keeping; it ends up in logs and `ferry list`.
const DESCRIPTION_MAX: usize = 1000;

/// Headers the engine sets itself. `Authorization` comes from `auth`,
/// `Idempotency-Key` from the outbox row; the rest belong to the HTTP client
/// and overriding them would corrupt the request framing.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "idempotency-key",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// Collects problems for one file.
struct Problems<'a> {
    file: &'a Path,
    list: Vec<WorkflowError>,
}

impl Problems<'_> {
    fn at(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.list.push(WorkflowError {
            file: self.file.to_path_buf(),
            field: Some(field.into()),
            problem: problem.into(),
        });
    }

    fn whole_file(&mut self, problem: impl Into<String>) {
        self.list.push(WorkflowError {
            file: self.file.to_path_buf(),
            field: None,
            problem: problem.into(),
        });
    }
}

/// Parse, interpolate, deserialize (naming every unknown, missing or mistyped field) and
/// validate one file.
pub(super) fn load_file(
    file: &Path,
    text: &str,
    env: EnvLookup<'_>,
) -> Result<Workflow, Vec<WorkflowError>> {
    let mut problems = Problems {
        file,
        list: Vec::new(),
    };
    let mut table: Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => {
            problems.whole_file(syntax_problem(text, &e));
            return Err(problems.list);
        }
    };
    for (field, problem) in interpolate_table(&mut table, env) {
        problems.at(field, problem);
    }
    // A value whose interpolation failed is still a string, so the shape is checked anyway and
    // both kinds of problem are reported together.
    let raw = raw::read(table);
    let raw = match raw {
        Ok(raw) if problems.list.is_empty() => raw,
        Ok(_) => return Err(problems.list),
        Err(shape) => {
            for (field, problem) in shape {
                if field.is_empty() {
                    problems.whole_file(problem);
                } else {
                    problems.at(field, problem);
                }
            }
            return Err(problems.list);
        }
    };
    match build(file, raw, &mut problems) {
        Some(workflow) if problems.list.is_empty() => Ok(workflow),
        _ => Err(problems.list),
    }
}

/// "TOML syntax error at line L, column C: message", from toml's span.
fn syntax_problem(text: &str, error: &toml::de::Error) -> String {
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match error.span() {
        Some(span) => {
            let before = &text[..floor_char_boundary(text, span.start)];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn build(file: &Path, raw: RawWorkflow, problems: &mut Problems<'_>) -> Option<Workflow> {
    let stem = file.file_stem().and_then(|s| s.to_str());
    let name = check_name(&raw.name, stem, problems);
    if raw.description.chars().count() > DESCRIPTION_MAX {
        problems.at(
            "description",
            format!("too long; at most {DESCRIPTION_MAX} characters"),
        );
    }
    let document = DocumentKind::parse(&raw.document);
    if document.is_none() {
        let known: Vec<&str> = DocumentKind::ALL.iter().map(|k| k.name()).collect();
        problems.at(
            "document",
            format!(
                "unknown document kind {:?}; expected one of {}",
                raw.document,
                known.join(", ")
            ),
        );
    }
    if let Some(field) = &raw.identify_by {
        check_identify_by(field, problems);
    }
    let target = target(raw.target, problems);
    let request = request(raw.request, problems);
    let retry = retry(raw.retry, problems);

    let on_done_sql = raw.on_done.map(|on_done| {
        check_sql(problems, "on_done.sql", &on_done.sql, ON_DONE_PARAMS);
        on_done.sql
    });
    let source = raw.source.map(|source| {
        check_sql(
            problems,
            "source.order_sql",
            &source.order_sql,
            SOURCE_PARAMS,
        );
        check_sql(
            problems,
            "source.items_sql",
            &source.items_sql,
            SOURCE_PARAMS,
        );
        SourceSql {
            order_sql: source.order_sql,
            items_sql: source.items_sql,
        }
    });
    let reconcile = raw.reconcile.and_then(|reconcile| {
        check_sql(problems, "reconcile.sql", &reconcile.sql, RECONCILE_PARAMS);
        let text = reconcile.schedule.trim().to_owned();
        match crate::cron::Schedule::parse(&text) {
            Ok(schedule) => Some(Reconcile {
                schedule,
                schedule_text: text,
                sql: reconcile.sql,
            }),
            Err(e) => {
                problems.at(
                    "reconcile.schedule",
                    format!(
                        "invalid cron expression {text:?}: {e} ({})",
                        crate::cron::SCHEDULE_FORMS
                    ),
                );
                None
            }
        }
    });

    // A section that failed has recorded a problem, and `load_file` discards
    // the result whenever any problem was recorded, so `None` sections that
    // are optional (like a broken reconcile) cannot leak out.
    let (method, path, timeout, headers) = request?;
    let target = target?;
    let endpoint = endpoint(&target.base_url, &path, problems)?;
    Some(Workflow {
        name: name?,
        description: raw.description,
        file: file.to_path_buf(),
        document: document?,
        identify_by: raw.identify_by,
        target,
        method,
        path,
        endpoint,
        timeout,
        headers,
        retry: retry?,
        on_done_sql,
        source,
        reconcile,
    })
}

/// `[a-z0-9_]+`, short enough for metric labels and log fields.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_name(name: &str, stem: Option<&str>, problems: &mut Problems<'_>) -> Option<String> {
    let mut ok = true;
    if !is_identifier(name) {
        problems.at(
            "name",
            format!("invalid name {name:?}: use 1 to {NAME_MAX} characters from a-z, 0-9 and _"),
        );
        ok = false;
    }
    match stem {
        Some(stem) if stem == name => {}
        Some(stem) => {
            problems.at(
                "name",
                format!("name {name:?} must equal the file name without .toml ({stem:?})"),
            );
            ok = false;
        }
        None => {
            problems.at(
                "name",
                "the file name is not valid UTF-8, so it cannot match the name",
            );
            ok = false;
        }
    }
    ok.then(|| name.to_owned())
}

fn check_identify_by(field: &str, problems: &mut Problems<'_>) {
    let valid = !field.is_empty()
        && field.split('.').count() <= 16
        && field.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        });
    if !valid {
        problems.at(
            "identify_by",
            format!("invalid field path {field:?}: use a field name or a dotted path like customer.name"),
        );
    }
}

fn check_sql(problems: &mut Problems<'_>, field: &str, text: &str, allowed: &[&str]) {
    for problem in sql::check(text, allowed) {
        problems.at(field, problem);
    }
}

/// Parses a humantime duration such as `"30s"` or `"1h 30m"` and checks
/// that it is non-zero and at most `max`.
fn duration(
    problems: &mut Problems<'_>,
    field: &str,
    text: &str,
    max: Duration,
) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => {
            problems.at(field, format!("must be greater than zero, got {text:?}"));
            None
        }
        Ok(d) if d > max => {
            problems.at(
                field,
                format!(
                    "{text:?} is too long; at most {}",
                    humantime::format_duration(max)
                ),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            problems.at(
                field,
                format!("invalid duration {text:?}: {e} (examples: \"500ms\", \"30s\", \"5m\", \"72h\")"),
            );
            None
        }
    }
}

fn target(raw: RawTarget, problems: &mut Problems<'_>) -> Option<Target> {
    let name = if is_identifier(&raw.name) {
        Some(raw.name)
    } else {
        problems.at(
            "target.name",
            format!(
                "invalid target name {:?}: use 1 to {NAME_MAX} characters from a-z, 0-9 and _",
                raw.name
            ),
        );
        None
    };
    let base_url = base_url(&raw.base_url, problems);
    let max_concurrency = if (1..=MAX_CONCURRENCY).contains(&raw.max_concurrency) {
        usize::try_from(raw.max_concurrency).ok()
    } else {
        problems.at(
            "target.max_concurrency",
            format!(
                "must be between 1 and {MAX_CONCURRENCY}, got {}",
                raw.max_concurrency
            ),
        );
        None
    };
    let auth = auth(raw.auth, problems);
    let circuit = circuit(raw.circuit, problems);
    Some(Target {
        name: name?,
        base_url: base_url?,
        auth: auth?,
        max_concurrency: max_concurrency?,
        tls_verify: raw.tls_verify.unwrap_or(true),
        circuit: circuit?,
    })
}

/// The value is not echoed: it may come from the environment and a URL is
/// one place people put credentials.
fn base_url(text: &str, problems: &mut Problems<'_>) -> Option<String> {
    let field = "target.base_url";
    let text = text.trim();
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        problems.at(field, "must start with http:// or https://");
        return None;
    };
    // Paths start with '/', so a trailing slash here would double it.
    let scheme_len = text.len() - rest.len();
    let rest = rest.trim_end_matches('/');
    let trimmed = &text[..scheme_len + rest.len()];
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        problems.at(field, "has no host after the scheme");
        return None;
    }
    if authority.contains('@') {
        problems.at(
            field,
            "must not contain credentials (user:password@); use target.auth",
        );
        return None;
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problems.at(field, "must not contain spaces or control characters");
        return None;
    }
    if trimmed.contains(['?', '#']) {
        problems.at(
            field,
            "must not contain a query or fragment; request.path is appended to it",
        );
        return None;
    }
    // The parser the HTTP client uses at start-up: a port over 65535, a malformed IP address or
    // a character no host name may hold is refused here, by `ferry workflows check` too.
    if let Err(e) = reqwest::Url::parse(trimmed) {
        problems.at(field, format!("is not a usable URL: {e}"));
        return None;
    }
    Some(trimmed.to_owned())
}

/// The request URL, parsed once here with the HTTP client's parser: a file `ferry workflows
/// check` accepts never fails at `ferry run`, and the deliverer never parses it again.
fn endpoint(base_url: &str, path: &str, problems: &mut Problems<'_>) -> Option<Url> {
    match Url::parse(&format!("{base_url}{path}")) {
        Ok(url) => Some(url),
        Err(e) => {
            problems.at(
                "request.path",
                format!("with target.base_url, does not make a usable URL: {e}"),
            );
            None
        }
    }
}

/// Secret values are never put in messages.
fn auth(raw: RawAuth, problems: &mut Problems<'_>) -> Option<Auth> {
    let kind = raw.kind.as_str();
    let unused = |problems: &mut Problems<'_>, key: &str, present: bool| {
        if present {
            problems.at(
                format!("target.auth.{key}"),
                format!("not used with kind = {kind:?}; remove it"),
            );
        }
    };
    let needed = |problems: &mut Problems<'_>, key: &str, value: Option<String>| match value {
        Some(v) if !v.is_empty() => Some(v),
        Some(_) => {
            problems.at(format!("target.auth.{key}"), "must not be empty");
            None
        }
        None => {
            problems.at(
                format!("target.auth.{key}"),
                format!("required with kind = {kind:?}"),
            );
            None
        }
    };
    match kind {
        "none" => {
            unused(problems, "username", raw.username.is_some());
            unused(problems, "password", raw.password.is_some());
            unused(problems, "token", raw.token.is_some());
            Some(Auth::None)
        }
        "basic" => {
            unused(problems, "token", raw.token.is_some());
            let username = needed(problems, "username", raw.username);
            if username.as_deref().is_some_and(|u| u.contains(':')) {
                // RFC 7617: the user-id cannot contain a colon.
                problems.at("target.auth.username", "must not contain ':' (basic auth)");
                return None;
            }
            let password = needed(problems, "password", raw.password);
            Some(Auth::Basic {
                username: username?,
                password: Secret(password?),
            })
        }
        "bearer" => {
            unused(problems, "username", raw.username.is_some());
            unused(problems, "password", raw.password.is_some());
            let token = needed(problems, "token", raw.token)?;
            // What an HTTP header value can carry: anything else made the header unbuildable,
            // and requests went out with no Authorization at all.
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                problems.at(
                    "target.auth.token",
                    "must be printable ASCII without spaces or control characters",
                );
                return None;
            }
            Some(Auth::Bearer {
                token: Secret(token),
            })
        }
        other => {
            problems.at(
                "target.auth.kind",
                format!("unknown auth kind {other:?}; expected none, basic or bearer"),
            );
            None
        }
    }
}

fn circuit(raw: Option<RawCircuit>, problems: &mut Problems<'_>) -> Option<CircuitPolicy> {
    let defaults = CircuitPolicy::default();
    let Some(raw) = raw else {
        return Some(defaults);
    };
    let failures = match raw.failures {
        None => Some(defaults.failures),
        Some(n) if (1..=MAX_CIRCUIT_FAILURES).contains(&n) => u32::try_from(n).ok(),
        Some(n) => {
            problems.at(
                "target.circuit.failures",
                format!("must be between 1 and {MAX_CIRCUIT_FAILURES}, got {n}"),
            );
            None
        }
    };
    let open_for = match &raw.open_for {
        None => Some(defaults.open_for),
        Some(text) => duration(problems, "target.circuit.open_for", text, MAX_OPEN_FOR),
    };
    let max_open_for = match &raw.max_open_for {
        // The default must not undercut an explicit, longer open_for.
        None => open_for.map(|o| o.max(defaults.max_open_for)),
        Some(text) => duration(problems, "target.circuit.max_open_for", text, MAX_OPEN_FOR),
    };
    if let (Some(open), Some(max)) = (open_for, max_open_for) {
        if max < open {
            problems.at(
                "target.circuit.max_open_for",
                format!(
                    "must be at least open_for ({})",
                    humantime::format_duration(open)
                ),
            );
            return None;
        }
    }
    Some(CircuitPolicy {
        failures: failures?,
        open_for: open_for?,
        max_open_for: max_open_for?,
    })
}

type Request = (Method, String, Duration, HeaderMap);

fn request(raw: RawRequest, problems: &mut Problems<'_>) -> Option<Request> {
    let method = match raw.method.as_str() {
        "POST" => Some(Method::POST),
        "PUT" => Some(Method::PUT),
        "PATCH" => Some(Method::PATCH),
        other => {
            problems.at(
                "request.method",
                format!("unsupported method {other:?}; expected POST, PUT or PATCH"),
            );
            None
        }
    };
    let path = if !raw.path.starts_with('/') {
        problems.at(
            "request.path",
            format!("must start with '/', got {:?}", raw.path),
        );
        None
    } else if raw
        .path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        problems.at(
            "request.path",
            "must not contain spaces, control characters or '#'",
        );
        None
    } else {
        Some(raw.path)
    };
    let timeout = match humantime::parse_duration(raw.timeout.trim()) {
        Ok(d) if d.is_zero() => {
            problems.at("request.timeout", "must be greater than zero");
            None
        }
        Ok(d) if d > MAX_TIMEOUT => {
            problems.at(
                "request.timeout",
                format!("{:?} is longer than the 10m maximum", raw.timeout),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            problems.at(
                "request.timeout",
                format!("invalid duration {:?}: {e}", raw.timeout),
            );
            None
        }
    };
    let headers = headers(raw.headers, problems);
    Some((method?, path?, timeout?, headers?))
}

/// The extra headers as the request will carry them. Values are marked sensitive (a file may
/// put an API key in one), so `Debug` of the map shows their names only.
fn headers(
    raw: std::collections::BTreeMap<String, String>,
    problems: &mut Problems<'_>,
) -> Option<HeaderMap> {
    let mut ok = true;
    let mut map = HeaderMap::new();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in &raw {
        let field = format!("request.headers.{name}");
        let lower = name.to_ascii_lowercase();
        // RFC 9110 token characters.
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        // Printable ASCII only: also stops CR/LF header injection through an env variable.
        let valid_value = value.chars().all(|c| c == '\t' || (' '..='~').contains(&c));
        if !valid_name {
            problems.at(field, "invalid header name");
            ok = false;
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            problems.at(
                field,
                format!("{name} is set by ferry itself and cannot be configured here"),
            );
            ok = false;
        } else if seen.contains(&lower) {
            problems.at(field, "header given twice (names are case-insensitive)");
            ok = false;
        } else if !valid_value {
            problems.at(
                field,
                "header values must be printable ASCII without line breaks",
            );
            ok = false;
        } else {
            // Both always parse after the checks above; a failure is still reported, not unwrapped.
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(mut value)) => {
                    value.set_sensitive(true);
                    map.insert(name, value);
                }
                _ => {
                    problems.at(field, "not a usable HTTP header");
                    ok = false;
                }
            }
        }
        seen.push(lower);
    }
    ok.then_some(map)
}

fn retry(raw: RawRetry, problems: &mut Problems<'_>) -> Option<RetryPolicy> {
    let backoff = match (raw.waits, raw.backoff) {
        (Some(_), Some(_)) => {
            problems.at(
                "retry",
                "give either `waits` (fixed waits) or `backoff` (exponential), not both",
            );
            None
        }
        (None, None) => {
            problems.at(
                "retry",
                "missing the schedule: give `waits = [\"2s\", \"5s\"]` or `backoff = { initial, factor, max, jitter }`",
            );
            None
        }
        (Some(waits), None) => {
            let parsed: Vec<Option<Duration>> = waits
                .iter()
                .enumerate()
                .map(|(i, text)| duration(problems, &format!("retry.waits[{i}]"), text, MAX_WAIT))
                .collect();
            if parsed.len() >= MAX_ATTEMPTS as usize {
                problems.at("retry.waits", format!("at most {} waits", MAX_ATTEMPTS - 1));
                None
            } else {
                parsed
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(Backoff::Fixed)
            }
        }
        (None, Some(b)) => {
            let initial = duration(problems, "retry.backoff.initial", &b.initial, MAX_WAIT);
            let max = duration(problems, "retry.backoff.max", &b.max, MAX_WAIT);
            let factor = if b.factor.is_finite() && (1.0..=100.0).contains(&b.factor) {
                Some(b.factor)
            } else {
                problems.at(
                    "retry.backoff.factor",
                    format!("must be between 1.0 and 100.0, got {}", b.factor),
                );
                None
            };
            let jitter = b.jitter.unwrap_or(0.0);
            let jitter = if jitter.is_finite() && (0.0..=1.0).contains(&jitter) {
                Some(jitter)
            } else {
                problems.at(
                    "retry.backoff.jitter",
                    format!("must be between 0.0 and 1.0 (a fraction of the wait), got {jitter}"),
                );
                None
            };
            if let (Some(i), Some(m)) = (initial, max) {
                if m < i {
                    problems.at(
                        "retry.backoff.max",
                        format!(
                            "must be at least initial ({})",
                            humantime::format_duration(i)
                        ),
                    );
                }
            }
            match (initial, factor, max, jitter) {
                (Some(initial), Some(factor), Some(max), Some(jitter)) if max >= initial => {
                    Some(Backoff::Exponential {
                        initial,
                        factor,
                        max,
                        jitter,
                    })
                }
                _ => None,
            }
        }
    };

    let max_attempts = match (&backoff, raw.max_attempts, &raw.give_up_after) {
        (_, Some(_), Some(_)) => {
            problems.at(
                "retry",
                "give either `max_attempts` or `give_up_after`, not both",
            );
            None
        }
        (Some(Backoff::Fixed(waits)), None, None) => u32::try_from(waits.len() + 1).ok(),
        (Some(Backoff::Fixed(_)), Some(_), None) => {
            problems.at(
                "retry.max_attempts",
                "not used with `waits` (attempts are 1 + number of waits)",
            );
            None
        }
        (Some(Backoff::Fixed(_)), None, Some(_)) => {
            problems.at(
                "retry.give_up_after",
                "not used with `waits` (attempts are 1 + number of waits)",
            );
            None
        }
        (_, Some(n), None) => {
            if (1..=i64::from(MAX_ATTEMPTS)).contains(&n) {
                u32::try_from(n).ok()
            } else {
                problems.at(
                    "retry.max_attempts",
                    format!("must be between 1 and {MAX_ATTEMPTS}, got {n}"),
                );
                None
            }
        }
        (backoff, None, Some(text)) => {
            let give_up = duration(problems, "retry.give_up_after", text, MAX_GIVE_UP);
            match (backoff, give_up) {
                (Some(backoff), Some(give_up)) => {
                    match attempts_within(backoff, give_up, MAX_ATTEMPTS) {
                        Some(1) => {
                            problems.at(
                            "retry.give_up_after",
                            format!("{text:?} is shorter than the first wait, so nothing would ever be retried"),
                        );
                            None
                        }
                        Some(n) => Some(n),
                        None => {
                            problems.at(
                            "retry.give_up_after",
                            format!("{text:?} allows more than {MAX_ATTEMPTS} attempts; raise backoff.max or shorten it"),
                        );
                            None
                        }
                    }
                }
                _ => None,
            }
        }
        (Some(Backoff::Exponential { .. }), None, None) => {
            problems.at(
                "retry",
                "`backoff` needs `max_attempts` or `give_up_after` to know when to stop",
            );
            None
        }
        (None, None, None) => None,
    };

    let mut statuses = Vec::with_capacity(raw.retry_on_status.len());
    let mut statuses_ok = true;
    for (i, &code) in raw.retry_on_status.iter().enumerate() {
        let field = format!("retry.retry_on_status[{i}]");
        match u16::try_from(code) {
            Ok(code @ 200..=299) => {
                problems.at(
                    field,
                    format!("{code} is a success status and cannot be retried"),
                );
                statuses_ok = false;
            }
            Ok(code @ 100..=599) if statuses.contains(&code) => {
                problems.at(field, format!("{code} is listed twice"));
                statuses_ok = false;
            }
            Ok(code @ 100..=599) => statuses.push(code),
            _ => {
                problems.at(field, format!("{code} is not an HTTP status (100..=599)"));
                statuses_ok = false;
            }
        }
    }

    let backoff = backoff?;
    let max_attempts = max_attempts?;
    statuses_ok.then_some(RetryPolicy {
        backoff,
        max_attempts,
        retry_on_status: statuses,
        retry_on_timeout: raw.retry_on_timeout.unwrap_or(true),
        retry_on_connect_error: raw.retry_on_connect_error.unwrap_or(true),
    })
}

/// Checks across files: unique names, and one definition per target.
pub(super) fn cross_check(workflows: &[Workflow], errors: &mut Vec<WorkflowError>) {
    for (index, workflow) in workflows.iter().enumerate() {
        let earlier = &workflows[..index];
        let mut problem = |field: &str, text: String| {
            errors.push(WorkflowError {
                file: workflow.file.clone(),
                field: Some(field.to_owned()),
                problem: text,
            });
        };
        if let Some(first) = earlier.iter().find(|w| w.name == workflow.name) {
            problem(
                "name",
                format!(
                    "workflow {:?} is already defined in {}",
                    workflow.name,
                    first.file.display()
                ),
            );
        }
        let Some(first) = earlier
            .iter()
            .find(|w| w.target.name == workflow.target.name)
        else {
            continue;
        };
        let (mine, theirs) = (&workflow.target, &first.target);
        let differs = [
            ("target.base_url", mine.base_url != theirs.base_url),
            ("target.auth", mine.auth != theirs.auth),
            (
                "target.max_concurrency",
                mine.max_concurrency != theirs.max_concurrency,
            ),
            ("target.tls_verify", mine.tls_verify != theirs.tls_verify),
            ("target.circuit", mine.circuit != theirs.circuit),
        ];
        for (field, differs) in differs {
            if differs {
                // Values are not shown: auth is secret and the others are
                // one glance away in the named file.
                problem(
                    field,
                    format!(
                        "target {:?} is also defined in {} with a different {}; workflows sharing a target must declare it identically",
                        mine.name,
                        first.file.display(),
                        field.trim_start_matches("target.")
                    ),
                );
            }
        }
    }
}
