//! A small, hand-written Prometheus registry for Ferry.
//!
//! Ferry exposes a fixed, known set of metric families, so instead of a
//! generic registry this module keeps one typed slot per family. The hot path
//! (`attempt`, `delivery`, `retry_scheduled`) takes a mutex only to look up the
//! per-workflow series by `&str` (no allocation once the workflow has been
//! seen) and then updates atomics, so delivery workers never wait on a
//! scrape for longer than a map lookup. No lock is ever held across an
//! `.await`: nothing in here is async.
//!
//! `render` produces the text exposition format 0.0.4 with every family's
//! `# HELP`/`# TYPE` header and series sorted by label values, so output is
//! deterministic and diff-friendly in tests. It ends with the standard
//! `process_*` families (read from `/proc/self` on Linux) and
//! `ferry_build_info` (see [`super::process`]).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Upper bounds (seconds) of `ferry_attempt_duration_seconds`; `+Inf` is implicit.
pub const ATTEMPT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds (seconds) of `ferry_delivery_latency_seconds`; `+Inf` is implicit.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0,
];

/// Value of the `ferry_circuit_state{target}` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitGauge {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

/// Locks a mutex, recovering from poisoning: a panic elsewhere must not turn
/// every later scrape or delivery into a second panic, and the data guarded
/// here (counters, gauges) stays meaningful after an interrupted update.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A handful of counters keyed by one label value. A linear scan over a short
/// `Vec` beats a map for the 2–10 distinct values we expect (outcomes, HTTP
/// statuses) and lets us look up by borrowed key without allocating.
struct SmallCounters<K> {
    entries: Mutex<Vec<(K, u64)>>,
}

impl<K> Default for SmallCounters<K> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
        }
    }
}

impl<K: Clone> SmallCounters<K> {
    fn inc<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: PartialEq + ToOwned<Owned = K> + ?Sized,
    {
        let mut entries = lock(&self.entries);
        match entries.iter_mut().find(|(k, _)| k.borrow() == key) {
            Some((_, n)) => *n += 1,
            None => entries.push((key.to_owned(), 1)),
        }
    }

    fn snapshot(&self) -> Vec<(K, u64)> {
        lock(&self.entries).clone()
    }
}

/// A fixed-bucket histogram updated with atomics only.
///
/// Buckets are stored non-cumulatively (one increment per observation) and
/// made cumulative at render time. `_count` is derived from the bucket
/// snapshot rather than kept separately so that the `+Inf` bucket and
/// `_count` always agree, even when a scrape races an observation.
struct Histogram {
    bounds: &'static [f64],
    /// `bounds.len() + 1` slots; the last one is the `+Inf` overflow bucket.
    buckets: Box<[AtomicU64]>,
    /// f64 bits; updated with a CAS loop because there is no atomic f64 add.
    sum_bits: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn observe(&self, seconds: f64) {
        // A NaN would poison `_sum` forever; negative durations cannot happen
        // with `Duration`, but clamp anyway so a bad caller cannot either.
        let v = if seconds.is_finite() {
            seconds.max(0.0)
        } else if seconds > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        // `le` semantics: a value equal to a bound belongs to that bucket.
        let idx = self.bounds.partition_point(|b| *b < v);
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
        }
    }
}

/// Point-in-time copy of a histogram (non-cumulative counts).
#[derive(Clone)]
struct HistogramSnapshot {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
}

impl HistogramSnapshot {
    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// Same estimate as PromQL's `histogram_quantile`: find the bucket holding
    /// rank `q * count` and interpolate linearly between its bounds. The first
    /// bucket's lower bound is 0; a rank in the `+Inf` bucket reports the
    /// highest finite bound, since nothing better is known.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 || q.is_nan() {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            let cumulative = below + n;
            if n > 0 && (cumulative as f64) >= rank {
                let Some(&upper) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let fraction = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * fraction);
            }
            below = cumulative;
        }
        self.bounds.last().copied()
    }
}

/// Most distinct `workflow` label values per family. Workflow names come from rows, which plain
/// SQL may fill with anything: past the known workflows (or this many names) series are counted
/// under [`OTHER_WORKFLOW`], so a flood of bogus names cannot grow `/metrics` without bound.
pub const MAX_WORKFLOW_LABELS: usize = 64;

/// The `workflow` label of rows whose workflow is not loaded (or past [`MAX_WORKFLOW_LABELS`]).
pub const OTHER_WORKFLOW: &str = "(other)";

/// Everything Ferry records per workflow. Allocated once per workflow name
/// and shared through `Arc`, so the registry map lock is released before any
/// counter is touched.
struct WorkflowSeries {
    deliveries: SmallCounters<String>,
    attempts: SmallCounters<String>,
    /// `None` is a transport error (no HTTP status); rendered as "none".
    statuses: SmallCounters<Option<u16>>,
    retries: AtomicU64,
    attempt_duration: Histogram,
    delivery_latency: Histogram,
}

impl WorkflowSeries {
    fn new() -> Self {
        Self {
            deliveries: SmallCounters::default(),
            attempts: SmallCounters::default(),
            statuses: SmallCounters::default(),
            retries: AtomicU64::new(0),
            attempt_duration: Histogram::new(ATTEMPT_BUCKETS),
            delivery_latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// Ferry's metrics registry. `Send + Sync`; share it as `Arc<Metrics>`.
pub struct Metrics {
    workflows: Mutex<BTreeMap<String, Arc<WorkflowSeries>>>,
    rows: Mutex<BTreeMap<(String, String), i64>>,
    oldest_due_age: Mutex<BTreeMap<String, f64>>,
    circuits: Mutex<BTreeMap<String, CircuitGauge>>,
    store_errors: AtomicU64,
    in_flight: AtomicI64,
    /// Ordering groups held by a dead row (`ferry_blocked`).
    blocked_groups: AtomicI64,
    /// What an operator paused: (kind, name) -> 1 while paused, 0 once resumed.
    paused: Mutex<BTreeMap<(String, String), i64>>,
    /// The loaded workflows, when known: other names are labelled [`OTHER_WORKFLOW`].
    known: Mutex<Option<std::collections::BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The full state is what `render` is for; keep Debug cheap.
        f.debug_struct("Metrics")
            .field("workflows", &lock(&self.workflows).len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            workflows: Mutex::new(BTreeMap::new()),
            rows: Mutex::new(BTreeMap::new()),
            oldest_due_age: Mutex::new(BTreeMap::new()),
            circuits: Mutex::new(BTreeMap::new()),
            store_errors: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            blocked_groups: AtomicI64::new(0),
            paused: Mutex::new(BTreeMap::new()),
            known: Mutex::new(None),
        }
    }

    /// Label only these workflows by name; rows of any other are counted as [`OTHER_WORKFLOW`].
    pub fn set_known_workflows<I: IntoIterator<Item = S>, S: Into<String>>(&self, names: I) {
        *lock(&self.known) = Some(names.into_iter().map(Into::into).collect());
    }

    /// The label value for `workflow`, given that a family already has `present` (a test of
    /// whether a name has a series) and `len` series.
    fn workflow_label<'a>(&self, workflow: &'a str, present: bool, len: usize) -> &'a str {
        if let Some(known) = lock(&self.known).as_ref() {
            if !known.contains(workflow) {
                return OTHER_WORKFLOW;
            }
        }
        if !present && len >= MAX_WORKFLOW_LABELS {
            return OTHER_WORKFLOW;
        }
        workflow
    }

    fn workflow(&self, workflow: &str) -> Arc<WorkflowSeries> {
        let mut map = lock(&self.workflows);
        let workflow = self.workflow_label(workflow, map.contains_key(workflow), map.len());
        if let Some(series) = map.get(workflow) {
            return Arc::clone(series);
        }
        let series = Arc::new(WorkflowSeries::new());
        map.insert(workflow.to_owned(), Arc::clone(&series));
        series
    }

    /// One attempt finished. outcome: "done" | "retry" | "dead" | "released"; status: HTTP status if any.
    pub fn attempt(&self, workflow: &str, outcome: &str, status: Option<u16>, duration: Duration) {
        let series = self.workflow(workflow);
        series.attempts.inc(outcome);
        series.statuses.inc(&status);
        series.attempt_duration.observe(duration.as_secs_f64());
    }

    /// A row reached a final state (done or dead) — counts deliveries by workflow and outcome.
    pub fn delivery(&self, workflow: &str, outcome: &str, end_to_end: Duration) {
        let series = self.workflow(workflow);
        series.deliveries.inc(outcome);
        series.delivery_latency.observe(end_to_end.as_secs_f64());
    }

    pub fn retry_scheduled(&self, workflow: &str) {
        self.workflow(workflow)
            .retries
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the `ferry_rows` family with a fresh snapshot (typically a
    /// `GROUP BY workflow, state` count). A series reported before but absent
    /// now is kept at 0 rather than dropped: the query omits empty groups, so
    /// "absent" means "zero rows", and a 0 lets `ferry_rows{state="dead"} > 0`
    /// alerts resolve instead of going stale. Duplicate keys are summed.
    pub fn set_rows(&self, rows: &[(String, String, i64)]) {
        let mut map = lock(&self.rows);
        map.values_mut().for_each(|v| *v = 0);
        for (workflow, state, n) in rows {
            let present = map.contains_key(&(workflow.clone(), state.clone()));
            let label = self.workflow_label(workflow, present, map.len() / 5);
            *map.entry((label.to_string(), state.clone())).or_insert(0) += n;
        }
    }

    /// Replaces the `ferry_oldest_due_age_seconds` family. As with
    /// [`Metrics::set_rows`], workflows no longer reported drop to 0 (nothing
    /// is due, so there is no lag). Duplicate workflows keep the largest age.
    pub fn set_oldest_due_age(&self, ages: &[(String, f64)]) {
        let mut map = lock(&self.oldest_due_age);
        map.values_mut().for_each(|v| *v = 0.0);
        for (workflow, age) in ages {
            let label = self.workflow_label(workflow, map.contains_key(workflow), map.len());
            let slot = map.entry(label.to_string()).or_insert(0.0);
            *slot = slot.max(*age);
        }
    }

    pub fn set_circuit(&self, target: &str, state: CircuitGauge) {
        let mut map = lock(&self.circuits);
        match map.get_mut(target) {
            Some(slot) => *slot = state,
            None => {
                map.insert(target.to_owned(), state);
            }
        }
    }

    /// The circuit state of every target whose circuit changed since start (the others are
    /// closed), sorted by target.
    pub fn circuits(&self) -> Vec<(String, CircuitGauge)> {
        lock(&self.circuits)
            .iter()
            .map(|(t, s)| (t.clone(), *s))
            .collect()
    }

    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets `ferry_blocked_groups`.
    pub fn set_blocked_groups(&self, n: i64) {
        self.blocked_groups.store(n, Ordering::Relaxed);
    }

    /// Replaces the `ferry_paused{kind,name}` family: 1 for each paused (kind, name); one
    /// reported before and resumed since stays at 0, so alerts resolve.
    pub fn set_paused(&self, paused: &[(String, String)]) {
        let mut map = lock(&self.paused);
        map.values_mut().for_each(|v| *v = 0);
        for key in paused {
            map.insert(key.clone(), 1);
        }
    }

    pub fn set_relay_in_flight(&self, n: i64) {
        self.in_flight.store(n, Ordering::Relaxed);
    }

    /// Renders every family in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        // Copy the workflow map out first so the registry lock is not held
        // while formatting; series keep updating concurrently, which is fine
        // for a scrape.
        let workflows: Vec<(String, Arc<WorkflowSeries>)> = lock(&self.workflows)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();

        let mut out = String::with_capacity(4096);

        header(
            &mut out,
            "ferry_deliveries_total",
            "Deliveries that reached a final state, by workflow and outcome (done|dead).",
            "counter",
        );
        for (wf, s) in &workflows {
            for (outcome, n) in sorted(s.deliveries.snapshot()) {
                sample(
                    &mut out,
                    "ferry_deliveries_total",
                    &[("workflow", wf), ("outcome", &outcome)],
                    n as f64,
                );
            }
        }

        header(
            &mut out,
            "ferry_attempts_total",
            "Delivery attempts, by workflow and outcome (done|retry|dead|released).",
            "counter",
        );
        for (wf, s) in &workflows {
            for (outcome, n) in sorted(s.attempts.snapshot()) {
                sample(
                    &mut out,
                    "ferry_attempts_total",
                    &[("workflow", wf), ("outcome", &outcome)],
                    n as f64,
                );
            }
        }

        header(
            &mut out,
            "ferry_attempt_status_total",
            "Delivery attempts by HTTP status (\"none\" for transport errors).",
            "counter",
        );
        for (wf, s) in &workflows {
            let statuses = sorted(
                s.statuses
                    .snapshot()
                    .into_iter()
                    .map(|(code, n)| (status_label(code), n))
                    .collect(),
            );
            for (status, n) in statuses {
                sample(
                    &mut out,
                    "ferry_attempt_status_total",
                    &[("workflow", wf), ("status", &status)],
                    n as f64,
                );
            }
        }

        header(
            &mut out,
            "ferry_retries_total",
            "Retries scheduled, by workflow.",
            "counter",
        );
        for (wf, s) in &workflows {
            sample(
                &mut out,
                "ferry_retries_total",
                &[("workflow", wf)],
                s.retries.load(Ordering::Relaxed) as f64,
            );
        }

        header(
            &mut out,
            "ferry_attempt_duration_seconds",
            "Duration of one delivery attempt, by workflow.",
            "histogram",
        );
        for (wf, s) in &workflows {
            histogram(
                &mut out,
                "ferry_attempt_duration_seconds",
                wf,
                &s.attempt_duration.snapshot(),
            );
        }

        header(
            &mut out,
            "ferry_delivery_latency_seconds",
            "End-to-end latency from row creation to final state, by workflow.",
            "histogram",
        );
        for (wf, s) in &workflows {
            histogram(
                &mut out,
                "ferry_delivery_latency_seconds",
                wf,
                &s.delivery_latency.snapshot(),
            );
        }

        header(
            &mut out,
            "ferry_rows",
            "Outbox rows by workflow and state.",
            "gauge",
        );
        for ((wf, state), n) in lock(&self.rows).iter() {
            sample(
                &mut out,
                "ferry_rows",
                &[("workflow", wf), ("state", state)],
                *n as f64,
            );
        }

        header(
            &mut out,
            "ferry_oldest_due_age_seconds",
            "Age of the oldest row that is due for delivery, by workflow (lag).",
            "gauge",
        );
        for (wf, age) in lock(&self.oldest_due_age).iter() {
            sample(
                &mut out,
                "ferry_oldest_due_age_seconds",
                &[("workflow", wf)],
                *age,
            );
        }

        header(
            &mut out,
            "ferry_circuit_state",
            "Circuit breaker state per target (0 closed, 1 half-open, 2 open).",
            "gauge",
        );
        for (target, state) in lock(&self.circuits).iter() {
            sample(
                &mut out,
                "ferry_circuit_state",
                &[("target", target)],
                *state as i64 as f64,
            );
        }

        header(
            &mut out,
            "ferry_store_errors_total",
            "Errors talking to the outbox store.",
            "counter",
        );
        sample(
            &mut out,
            "ferry_store_errors_total",
            &[],
            self.store_errors.load(Ordering::Relaxed) as f64,
        );

        header(
            &mut out,
            "ferry_in_flight",
            "Deliveries currently in flight in the relay.",
            "gauge",
        );
        sample(
            &mut out,
            "ferry_in_flight",
            &[],
            self.in_flight.load(Ordering::Relaxed) as f64,
        );

        header(
            &mut out,
            "ferry_blocked_groups",
            "Ordering groups held by a dead row (the ferry_blocked view).",
            "gauge",
        );
        sample(
            &mut out,
            "ferry_blocked_groups",
            &[],
            self.blocked_groups.load(Ordering::Relaxed) as f64,
        );

        header(
            &mut out,
            "ferry_paused",
            "1 while an operator has paused the workflow or target (ferry pause).",
            "gauge",
        );
        for ((kind, name), v) in lock(&self.paused).iter() {
            sample(
                &mut out,
                "ferry_paused",
                &[("kind", kind), ("name", name)],
                *v as f64,
            );
        }

        header(
            &mut out,
            "ferry_up",
            "Always 1 while the process serves metrics.",
            "gauge",
        );
        sample(&mut out, "ferry_up", &[], 1.0);

        super::process::render(&mut out, super::process::read().as_ref());
        out
    }

    /// Value of one sample as it would appear in [`Metrics::render`].
    ///
    /// `name` is a full sample name (`ferry_attempts_total`, but also
    /// `ferry_rows`, `ferry_attempt_duration_seconds_count`, ...). Every
    /// series whose labels include all of `labels` is summed, so
    /// `counter_value("ferry_attempts_total", &[("workflow", "w")])` is all
    /// attempts of `w` across outcomes. `None` if no series matches.
    ///
    /// Built on `render` on purpose: it is meant for tests and the demo
    /// summary, and going through the exposition text means it checks what a
    /// scraper would see rather than internal state.
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.render();
        let mut total: Option<f64> = None;
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((sample_name, sample_labels, value)) = parse_sample(line) else {
                continue;
            };
            if sample_name != name {
                continue;
            }
            let matches = labels.iter().all(|(k, v)| {
                sample_labels
                    .iter()
                    .any(|(sk, sv)| sk == k && sv.as_str() == *v)
            });
            if matches {
                *total.get_or_insert(0.0) += value;
            }
        }
        total
    }

    /// Estimates quantile `q` (0..=1) of attempt duration from the
    /// `ferry_attempt_duration_seconds` buckets, interpolating linearly inside
    /// the bucket like PromQL's `histogram_quantile`. `workflow: None`
    /// aggregates all workflows. `None` if there are no samples.
    pub fn quantile(&self, workflow: Option<&str>, q: f64) -> Option<Duration> {
        let merged = {
            let map = lock(&self.workflows);
            let mut merged: Option<HistogramSnapshot> = None;
            let selected: Vec<&Arc<WorkflowSeries>> = match workflow {
                Some(wf) => map.get(wf).into_iter().collect(),
                None => map.values().collect(),
            };
            for series in selected {
                let snap = series.attempt_duration.snapshot();
                match merged.as_mut() {
                    Some(m) => m.merge(&snap),
                    None => merged = Some(snap),
                }
            }
            merged?
        };
        let seconds = merged.quantile(q)?;
        Duration::try_from_secs_f64(seconds).ok()
    }
}

fn sorted<K: Ord>(mut v: Vec<(K, u64)>) -> Vec<(K, u64)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn status_label(code: Option<u16>) -> String {
    match code {
        Some(code) => code.to_string(),
        None => "none".to_owned(),
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value_into(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(value));
    out.push('\n');
}

fn histogram(out: &mut String, name: &str, workflow: &str, snap: &HistogramSnapshot) {
    let bucket_name = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, n) in snap.counts.iter().enumerate() {
        cumulative += n;
        let le = match snap.bounds.get(i) {
            Some(b) => format_value(*b),
            None => "+Inf".to_owned(),
        };
        sample(
            out,
            &bucket_name,
            &[("workflow", workflow), ("le", &le)],
            cumulative as f64,
        );
    }
    sample(
        out,
        &format!("{name}_sum"),
        &[("workflow", workflow)],
        snap.sum,
    );
    sample(
        out,
        &format!("{name}_count"),
        &[("workflow", workflow)],
        cumulative as f64,
    );
}

/// Floats as the exposition format expects them: Go-style shortest
/// representation (`1`, `0.0025`), and the special spellings for infinities
/// and NaN that Rust's `Display` does not produce.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes only backslash and newline (quotes are literal there).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label pairs of a parsed sample line, unescaped.
type ParsedLabels = Vec<(String, String)>;

/// Parses one sample line produced by `sample` back into name, labels and
/// value. Only needs to understand our own output.
fn parse_sample(line: &str) -> Option<(&str, ParsedLabels, f64)> {
    let split = line.find(['{', ' '])?;
    let name = &line[..split];
    let mut labels = Vec::new();
    let mut chars = line[split..].chars().peekable();
    if chars.peek() == Some(&'{') {
        chars.next();
        loop {
            match chars.peek()? {
                '}' => {
                    chars.next();
                    break;
                }
                ',' => {
                    chars.next();
                    continue;
                }
                _ => {}
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if chars.next()? != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            }
            labels.push((key, value));
        }
    }
    let rest: String = chars.collect();
    let value = match rest.trim() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Lines of `render()` that start with `prefix`, for focused assertions.
    fn lines_with(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn empty_registry_has_headers_and_scalars() {
        let text = Metrics::new().render();
        for (name, kind) in [
            ("ferry_deliveries_total", "counter"),
            ("ferry_attempts_total", "counter"),
            ("ferry_attempt_status_total", "counter"),
            ("ferry_retries_total", "counter"),
            ("ferry_attempt_duration_seconds", "histogram"),
            ("ferry_delivery_latency_seconds", "histogram"),
            ("ferry_rows", "gauge"),
            ("ferry_oldest_due_age_seconds", "gauge"),
            ("ferry_circuit_state", "gauge"),
            ("ferry_store_errors_total", "counter"),
            ("ferry_in_flight", "gauge"),
            ("ferry_up", "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "missing TYPE for {name}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "missing HELP");
        }
        assert!(text.contains("\nferry_up 1\n"));
        assert!(text.contains("# TYPE ferry_build_info gauge\n"));
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
            assert!(text.contains(&format!("\n{name} ")), "{name}: {text}");
        }
        assert!(text.contains("\nferry_store_errors_total 0\n"));
        assert!(text.contains("\nferry_in_flight 0\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn attempts_render_counters_and_histogram() {
        let m = Metrics::new();
        // Durations chosen to be exact in binary so _sum compares exactly;
        // 250 ms sits exactly on a bucket bound and must count as le="0.25".
        m.attempt("orders", "done", Some(200), Duration::from_micros(62_500));
        m.attempt("orders", "retry", Some(503), ms(250));
        m.attempt("orders", "retry", None, ms(2000));
        m.retry_scheduled("orders");
        m.retry_scheduled("orders");
        let text = m.render();

        assert_eq!(
            lines_with(&text, "ferry_attempts_total{"),
            [
                r#"ferry_attempts_total{workflow="orders",outcome="done"} 1"#,
                r#"ferry_attempts_total{workflow="orders",outcome="retry"} 2"#,
            ]
        );
        assert_eq!(
            lines_with(&text, "ferry_attempt_status_total{"),
            [
                r#"ferry_attempt_status_total{workflow="orders",status="200"} 1"#,
                r#"ferry_attempt_status_total{workflow="orders",status="503"} 1"#,
                r#"ferry_attempt_status_total{workflow="orders",status="none"} 1"#,
            ]
        );
        assert_eq!(
            lines_with(&text, "ferry_retries_total{"),
            [r#"ferry_retries_total{workflow="orders"} 2"#]
        );
        let expected: Vec<String> = [
            ("0.001", 0),
            ("0.0025", 0),
            ("0.005", 0),
            ("0.01", 0),
            ("0.025", 0),
            ("0.05", 0),
            ("0.1", 1),
            ("0.25", 2),
            ("0.5", 2),
            ("1", 2),
            ("2.5", 3),
            ("5", 3),
            ("10", 3),
            ("30", 3),
            ("60", 3),
            ("+Inf", 3),
        ]
        .iter()
        .map(|(le, n)| {
            format!(r#"ferry_attempt_duration_seconds_bucket{{workflow="orders",le="{le}"}} {n}"#)
        })
        .collect();
        assert_eq!(
            lines_with(&text, "ferry_attempt_duration_seconds_bucket"),
            expected
        );
        assert_eq!(
            lines_with(&text, "ferry_attempt_duration_seconds_sum"),
            [r#"ferry_attempt_duration_seconds_sum{workflow="orders"} 2.3125"#]
        );
        assert_eq!(
            lines_with(&text, "ferry_attempt_duration_seconds_count"),
            [r#"ferry_attempt_duration_seconds_count{workflow="orders"} 3"#]
        );
        // Histogram family header precedes its samples.
        let type_at = text
            .find("# TYPE ferry_attempt_duration_seconds histogram")
            .unwrap();
        let first_bucket = text.find("ferry_attempt_duration_seconds_bucket").unwrap();
        assert!(type_at < first_bucket);
    }

    #[test]
    fn deliveries_and_latency_histogram() {
        let m = Metrics::new();
        m.delivery("orders", "done", ms(500));
        m.delivery("orders", "dead", Duration::from_secs(4000));
        let text = m.render();
        assert_eq!(
            lines_with(&text, "ferry_deliveries_total{"),
            [
                r#"ferry_deliveries_total{workflow="orders",outcome="dead"} 1"#,
                r#"ferry_deliveries_total{workflow="orders",outcome="done"} 1"#,
            ]
        );
        let buckets = lines_with(&text, "ferry_delivery_latency_seconds_bucket");
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert!(buckets.contains(
            &r#"ferry_delivery_latency_seconds_bucket{workflow="orders",le="0.25"} 0"#.to_owned()
        ));
        assert!(buckets.contains(
            &r#"ferry_delivery_latency_seconds_bucket{workflow="orders",le="0.5"} 1"#.to_owned()
        ));
        assert!(buckets.contains(
            &r#"ferry_delivery_latency_seconds_bucket{workflow="orders",le="3600"} 1"#.to_owned()
        ));
        assert!(buckets.contains(
            &r#"ferry_delivery_latency_seconds_bucket{workflow="orders",le="+Inf"} 2"#.to_owned()
        ));
        assert!(text.contains("ferry_delivery_latency_seconds_sum{workflow=\"orders\"} 4000.5\n"));
        assert!(text.contains("ferry_delivery_latency_seconds_count{workflow=\"orders\"} 2\n"));
    }

    #[test]
    fn series_sorted_by_label_values() {
        let m = Metrics::new();
        for wf in ["zeta", "alpha", "mid"] {
            m.retry_scheduled(wf);
        }
        m.set_circuit("https://b.example", CircuitGauge::Open);
        m.set_circuit("https://a.example", CircuitGauge::HalfOpen);
        let text = m.render();
        assert_eq!(
            lines_with(&text, "ferry_retries_total{"),
            [
                r#"ferry_retries_total{workflow="alpha"} 1"#,
                r#"ferry_retries_total{workflow="mid"} 1"#,
                r#"ferry_retries_total{workflow="zeta"} 1"#,
            ]
        );
        assert_eq!(
            lines_with(&text, "ferry_circuit_state{"),
            [
                r#"ferry_circuit_state{target="https://a.example"} 1"#,
                r#"ferry_circuit_state{target="https://b.example"} 2"#,
            ]
        );
        // Rendering twice yields identical text (Ferry's own families: the process_* ones
        // measure the process, which moves on).
        let own = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.contains("process_"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(own(&text), own(&m.render()));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        let nasty = "a\\b\"c\nd";
        m.retry_scheduled(nasty);
        let text = m.render();
        assert!(
            text.contains("ferry_retries_total{workflow=\"a\\\\b\\\"c\\nd\"} 1\n"),
            "{text}"
        );
        // No raw newline may leak into a sample line.
        assert!(text.lines().all(|l| !l.starts_with("d\"")));
        // And the snapshot helper round-trips the escaping.
        assert_eq!(
            m.counter_value("ferry_retries_total", &[("workflow", nasty)]),
            Some(1.0)
        );
    }

    #[test]
    fn set_rows_replaces_family() {
        let m = Metrics::new();
        m.set_rows(&[
            ("orders".into(), "pending".into(), 5),
            ("orders".into(), "dead".into(), 2),
            ("invoices".into(), "pending".into(), 1),
        ]);
        assert_eq!(
            lines_with(&m.render(), "ferry_rows{"),
            [
                r#"ferry_rows{workflow="invoices",state="pending"} 1"#,
                r#"ferry_rows{workflow="orders",state="dead"} 2"#,
                r#"ferry_rows{workflow="orders",state="pending"} 5"#,
            ]
        );
        // Next snapshot: dead rows were purged, invoices drained, a new state
        // appeared. Vanished series read 0 so alerts on them resolve.
        m.set_rows(&[
            ("orders".into(), "pending".into(), 7),
            ("orders".into(), "in_flight".into(), 3),
        ]);
        assert_eq!(
            lines_with(&m.render(), "ferry_rows{"),
            [
                r#"ferry_rows{workflow="invoices",state="pending"} 0"#,
                r#"ferry_rows{workflow="orders",state="dead"} 0"#,
                r#"ferry_rows{workflow="orders",state="in_flight"} 3"#,
                r#"ferry_rows{workflow="orders",state="pending"} 7"#,
            ]
        );
        assert_eq!(
            m.counter_value("ferry_rows", &[("workflow", "orders")]),
            Some(10.0)
        );
    }

    #[test]
    fn set_oldest_due_age_replaces_family() {
        let m = Metrics::new();
        m.set_oldest_due_age(&[("orders".into(), 12.5), ("invoices".into(), 3.0)]);
        m.set_oldest_due_age(&[("orders".into(), 1.25)]);
        assert_eq!(
            lines_with(&m.render(), "ferry_oldest_due_age_seconds{"),
            [
                r#"ferry_oldest_due_age_seconds{workflow="invoices"} 0"#,
                r#"ferry_oldest_due_age_seconds{workflow="orders"} 1.25"#,
            ]
        );
    }

    #[test]
    fn scalars_and_circuit_updates() {
        let m = Metrics::new();
        m.store_error();
        m.store_error();
        m.set_relay_in_flight(7);
        m.set_circuit("erp", CircuitGauge::Open);
        m.set_circuit("erp", CircuitGauge::Closed);
        let text = m.render();
        assert!(text.contains("\nferry_store_errors_total 2\n"));
        assert!(text.contains("\nferry_in_flight 7\n"));
        assert!(text.contains("\nferry_circuit_state{target=\"erp\"} 0\n"));
        assert_eq!(m.counter_value("ferry_store_errors_total", &[]), Some(2.0));
    }

    #[test]
    fn counter_value_matches_labels() {
        let m = Metrics::new();
        m.attempt("orders", "done", Some(200), ms(5));
        m.attempt("orders", "retry", Some(503), ms(5));
        m.attempt("orders", "retry", Some(503), ms(5));
        m.attempt("invoices", "dead", Some(400), ms(5));
        let v = |name: &str, labels: &[(&str, &str)]| m.counter_value(name, labels);
        assert_eq!(
            v(
                "ferry_attempts_total",
                &[("workflow", "orders"), ("outcome", "retry")]
            ),
            Some(2.0)
        );
        // Label order in the query does not matter.
        assert_eq!(
            v(
                "ferry_attempts_total",
                &[("outcome", "retry"), ("workflow", "orders")]
            ),
            Some(2.0)
        );
        assert_eq!(
            v("ferry_attempts_total", &[("workflow", "orders")]),
            Some(3.0)
        );
        assert_eq!(v("ferry_attempts_total", &[]), Some(4.0));
        assert_eq!(
            v("ferry_attempt_status_total", &[("status", "503")]),
            Some(2.0)
        );
        assert_eq!(
            v(
                "ferry_attempt_duration_seconds_count",
                &[("workflow", "invoices")]
            ),
            Some(1.0)
        );
        assert_eq!(v("ferry_attempts_total", &[("workflow", "missing")]), None);
        assert_eq!(v("ferry_nonexistent_total", &[]), None);
        // Prefix of a longer name must not match.
        assert_eq!(v("ferry_attempt", &[]), None);
    }

    #[test]
    fn quantile_estimates() {
        let m = Metrics::new();
        assert_eq!(m.quantile(None, 0.5), None);
        for _ in 0..100 {
            m.attempt("orders", "done", Some(200), ms(10));
        }
        m.attempt("orders", "retry", Some(503), Duration::from_secs(5));

        let secs = |q: f64| m.quantile(Some("orders"), q).unwrap().as_secs_f64();
        // p50 and p99 fall in the (0.005, 0.01] bucket holding the 100 fast
        // samples; interpolation places them inside it.
        let p50 = secs(0.5);
        assert!(p50 > 0.005 && p50 <= 0.01, "p50 = {p50}");
        assert!((p50 - 0.0075).abs() < 1e-3, "p50 = {p50}");
        let p99 = secs(0.99);
        assert!(p99 > 0.009 && p99 <= 0.01, "p99 = {p99}");
        assert!(p99 >= p50);
        // The single slow sample owns the top: (2.5, 5].
        let p100 = secs(1.0);
        assert!(p100 > 2.5 && p100 <= 5.0, "p100 = {p100}");
        // Aggregate over all workflows equals the single workflow here.
        assert_eq!(m.quantile(None, 0.5), m.quantile(Some("orders"), 0.5));
        assert_eq!(m.quantile(Some("missing"), 0.5), None);
        assert_eq!(m.quantile(None, f64::NAN), None);
        // Out-of-range q is clamped rather than rejected.
        assert_eq!(m.quantile(None, 7.0), m.quantile(None, 1.0));
    }

    #[test]
    fn quantile_in_overflow_bucket_reports_highest_bound() {
        let m = Metrics::new();
        m.attempt("slow", "retry", None, Duration::from_secs(120));
        assert_eq!(m.quantile(None, 0.5), Some(Duration::from_secs(60)));
    }

    #[test]
    fn quantile_aggregates_workflows() {
        let m = Metrics::new();
        for _ in 0..10 {
            m.attempt("a", "done", Some(200), ms(1));
            m.attempt("b", "done", Some(200), Duration::from_secs(20));
        }
        let all = m.quantile(None, 0.9).unwrap();
        assert!(all > Duration::from_secs(10) && all <= Duration::from_secs(30));
        let a = m.quantile(Some("a"), 0.9).unwrap();
        assert!(a <= ms(1));
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let m = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    let wf = if i % 2 == 0 { "even" } else { "odd" };
                    for _ in 0..1000 {
                        m.attempt(wf, "done", Some(200), Duration::from_micros(62_500));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.counter_value("ferry_attempts_total", &[]), Some(8000.0));
        assert_eq!(
            m.counter_value("ferry_attempt_duration_seconds_sum", &[]),
            Some(500.0)
        );
    }

    #[test]
    fn metrics_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }

    #[test]
    fn workflow_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..5_000 {
            m.attempt(&format!("bogus-{i}"), "dead", None, Duration::ZERO);
        }
        let rows: Vec<(String, String, i64)> = (0..5_000)
            .map(|i| (format!("bogus-{i}"), "pending".to_string(), 1))
            .collect();
        m.set_rows(&rows);
        let text = m.render();
        assert!(text.len() < 200_000, "{} bytes", text.len());
        assert!(text.contains(OTHER_WORKFLOW));

        let m = Metrics::new();
        m.set_known_workflows(["onec_invoice"]);
        m.attempt("onec_invoice", "done", Some(200), Duration::ZERO);
        m.attempt("typo_workflow", "dead", None, Duration::ZERO);
        let text = m.render();
        assert!(text.contains("workflow=\"onec_invoice\""));
        assert!(!text.contains("typo_workflow"), "{text}");
        assert!(text.contains("workflow=\"(other)\""));
    }
}
