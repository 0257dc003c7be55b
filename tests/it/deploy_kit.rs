//! The monitoring kit in `deploy/` against the code: every metric the Grafana dashboard and the
//! Prometheus alert rules query is one that `Metrics::render()` produces (so a renamed metric
//! breaks this test, not an operator's dashboard at night), and every Ferry metric family is on
//! the dashboard. The PromQL itself is checked by promtool in `.ci/run`.

use std::collections::BTreeSet;
use std::path::Path;

use ferry::ops::Metrics;

/// Series Prometheus makes itself for every scrape target.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Metrics the alert rules already watch that other work adds later (ordered groups, session
/// logins). Remove a name from here when `Metrics::render()` starts producing it.
const COMING: &[&str] = &["ferry_target_login_held"];

fn repo(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `(family, kind)` of every `# TYPE` line of a render.
fn families() -> Vec<(String, String)> {
    let m = Metrics::new();
    m.attempt("w", "done", Some(200), std::time::Duration::from_millis(5));
    m.render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// The sample names a query may use: a counter or gauge by its name, a histogram by its
/// `_bucket`, `_sum` and `_count` series.
fn sample_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, kind) in families() {
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name);
        }
    }
    names.extend(PROMETHEUS_OWN.iter().map(|s| s.to_string()));
    names
}

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects: identifiers that are not functions (followed
/// by `(`), keywords, label lists (after `by`, `without`, `on`, `ignoring`, `group_*`), label
/// matchers (`{…}`), ranges (`[…]`), strings, numbers or Grafana variables (`$x`).
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |i: usize, close: char| -> usize {
        let mut j = i + 1;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            let c = chars[j];
            match quote {
                Some(_) if c == '\\' => j += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == close => return j + 1,
                None => {}
            }
            j += 1;
        }
        panic!("unbalanced {close} in {expr}")
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_to(i, '}'),
            '[' => i = skip_to(i, ']'),
            '"' | '\'' | '`' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != c {
                    if chars[j] == '\\' {
                        j += 1;
                    }
                    j += 1;
                }
                i = j + 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    if chars.get(next) == Some(&'(') {
                        i = skip_to(next, ')');
                    }
                } else if chars.get(next) == Some(&'(') || KEYWORDS.contains(&lower.as_str()) {
                    // A function or an aggregation.
                } else {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn the_metric_name_extractor_reads_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (le, workflow) (rate(ferry_attempt_duration_seconds_bucket{job=~"$job", le!="x{"}[$__rate_interval])))"#
        ),
        ["ferry_attempt_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            r#"sum(rate(a_total[5m])) by (outcome) * 60 / on (instance) group_left (version) b_info offset 1h or vector(0) > bool 1e3"#
        ),
        ["a_total", "b_info"]
    );
    assert_eq!(
        metric_names("time() - process_start_time_seconds"),
        ["process_start_time_seconds"]
    );
}

/// Every `expr` of the dashboard's panels, and the metric of each `label_values(metric, label)`
/// variable query.
fn dashboard_queries() -> Vec<(String, Vec<String>)> {
    let dash: serde_json::Value =
        serde_json::from_str(&repo("deploy/grafana/ferry-dashboard.json"))
            .expect("deploy/grafana/ferry-dashboard.json is JSON");
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<(String, Vec<String>)>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    out.push((expr.clone(), metric_names(expr)));
                }
                for v in map.values() {
                    walk(v, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dash["panels"], &mut out);
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["definition"].as_str().unwrap();
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _label)| selector)
            .unwrap_or_else(|| {
                panic!("variable query {query}: expected label_values(metric, label)")
            });
        out.push((query.to_string(), metric_names(inner)));
    }
    out
}

#[test]
fn the_dashboard_queries_only_metrics_ferry_renders() {
    let known = sample_names();
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut unknown = Vec::new();
    for (expr, names) in &queries {
        assert!(!names.is_empty(), "no metric in {expr}");
        for n in names {
            if !known.contains(n) {
                unknown.push(format!("{n} (in {expr})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics Metrics::render() does not produce:\n  {}\nknown: {known:?}",
        unknown.join("\n  ")
    );
}

#[test]
fn every_ferry_metric_is_on_the_dashboard() {
    let used: BTreeSet<String> = dashboard_queries()
        .into_iter()
        .flat_map(|(_, names)| names)
        .collect();
    let missing: Vec<String> = families()
        .into_iter()
        .filter(|(name, _)| name.starts_with("ferry_"))
        .filter(|(name, kind)| {
            let samples: Vec<String> = if kind == "histogram" {
                vec![
                    format!("{name}_bucket"),
                    format!("{name}_sum"),
                    format!("{name}_count"),
                ]
            } else {
                vec![name.clone()]
            };
            !samples.iter().any(|s| used.contains(s))
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        missing.is_empty(),
        "Ferry renders these families but deploy/grafana/ferry-dashboard.json shows none of them: {missing:?}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(used.contains(name), "{name} is not on the dashboard");
    }
}

#[test]
fn the_alert_rules_query_only_metrics_ferry_renders() {
    let known = sample_names();
    let text = repo("deploy/prometheus/ferry-alerts.yml");
    let exprs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(str::trim)
        .collect();
    assert!(exprs.len() >= 6, "{exprs:?}");
    let mut unknown = Vec::new();
    let mut coming_used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for n in names {
            if COMING.contains(&n.as_str()) {
                assert!(
                    !known.contains(&n),
                    "{n} is rendered now: remove it from COMING in tests/it/deploy_kit.rs"
                );
                coming_used.insert(n);
            } else if !known.contains(&n) {
                unknown.push(format!("{n} (in {expr})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the alert rules query metrics Metrics::render() does not produce:\n  {}",
        unknown.join("\n  ")
    );
    assert_eq!(coming_used.len(), COMING.len(), "{coming_used:?}");
    // Every rule has a unit test in the promtool test file.
    let tests = repo("deploy/prometheus/ferry-alerts.test.yml");
    for alert in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
    {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no test in ferry-alerts.test.yml"
        );
    }
}

/// The systemd unit gives the relay more time to stop than its shutdown grace period, and keeps
/// the sandboxing the README promises. (`systemd-analyze verify` and `security` in `.ci/run`
/// check the unit's syntax and exposure.)
#[test]
fn the_systemd_unit_outlasts_the_shutdown_grace() {
    let unit = repo("deploy/systemd/ferry.service");
    let value = |key: &str| -> String {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("ferry.service has no {key}="))
            .trim()
            .to_string()
    };
    let stop = humantime::parse_duration(&value("TimeoutStopSec")).unwrap();
    let grace = humantime::parse_duration(ferry::config::SHUTDOWN_GRACE.default).unwrap();
    assert!(
        stop >= grace + std::time::Duration::from_secs(10),
        "TimeoutStopSec={stop:?} leaves too little beyond FERRY_SHUTDOWN_GRACE={grace:?}"
    );
    assert_eq!(value("KillSignal"), "SIGTERM");
    assert_eq!(value("Restart"), "on-failure");
    assert!(value("ExecStart").ends_with("/ferry run"));
    assert_eq!(value("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert_eq!(value("SystemCallFilter"), "@system-service");
    for key in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "MemoryDenyWriteExecute",
    ] {
        assert_eq!(value(key), "yes", "{key}");
    }
    assert_eq!(value("ProtectSystem"), "strict");
    assert!(value("ReadWritePaths").contains("/var/lib/ferry"));
    assert!(value("EnvironmentFile").starts_with("/etc/ferry/"));
}
