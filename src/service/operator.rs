//! The operator actions: one typed implementation behind every front door (the CLI, the JSON API
//! and the web console call the same functions). Each action validates its input, talks to the
//! store, and returns typed values; rendering is the caller's business.
//!
//! Every action that changes rows (retry, cancel, bulk) is recorded in `ferry_actions` with who
//! did it ([`Operator::acting_as`]: `cli:<user>`, `console:<name>`), when, why (the reason) and
//! which rows it changed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ServiceError;
use crate::export::ExportReport;
use crate::ops::{CircuitGauge, Metrics};
use crate::outbox::browse::{
    ActionLine, ActionRecord, CodePath, Cursor, MinuteCount, Page, RowQuery, TextMatch,
};
use crate::outbox::{
    AttemptLine, BlockedGroup, Enqueued, ListFilter, OutboxRow, PauseKind, PausedLine,
    ReplaySelection, Replayed, State, StatusLine, Store, StoreError,
};
use crate::workflow::WorkflowSummary;

/// Most rows one bulk action touches (larger sets are done in several calls).
pub const BULK_MAX: i64 = 10_000;

/// Most rows a page holds.
pub const PAGE_MAX: i64 = 500;

/// Rows a search that needs the payload (a document code, a key pattern) looks at per call.
pub const SCAN_BUDGET: i64 = 20_000;

/// Longest reason kept with an action.
pub const REASON_MAX_CHARS: usize = 1000;

/// The operator's view of one installation: a store, its workflow directory, and who acts.
#[derive(Debug, Clone)]
pub struct Operator {
    store: Store,
    workflows_dir: PathBuf,
    actor: String,
}

/// One row with its attempt history, oldest attempt first.
#[derive(Debug, Clone, Serialize)]
pub struct RowDetail {
    pub row: OutboxRow,
    pub attempts: Vec<AttemptLine>,
}

/// Which rows a page or a bulk action takes; every field given must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkFilter {
    pub workflow: Option<String>,
    pub state: Option<State>,
    /// The key: exact, or a pattern where `*` stands for any characters.
    pub key: Option<String>,
    /// The document code (the payload field the workflow's `identify_by` names): exact, or a
    /// pattern with `*`.
    pub code: Option<String>,
    /// The key or the document code (a search box).
    pub q: Option<String>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
}

/// The filter of pages and bulk actions (one type: a bulk action takes what a page shows).
pub type RowFilter = BulkFilter;

impl BulkFilter {
    /// The filter as recorded with a bulk action.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), serde_json::Value::String(v));
            }
        };
        put("workflow", self.workflow.clone());
        put("state", self.state.map(|s| s.as_str().to_string()));
        put("key", self.key.clone());
        put("code", self.code.clone());
        put("q", self.q.clone());
        put("from", self.from.map(|t| t.to_rfc3339()));
        put("to", self.to.map(|t| t.to_rfc3339()));
        serde_json::Value::Object(m)
    }

    fn check(&self) -> Result<(), ServiceError> {
        for (name, value, max) in [
            ("workflow", &self.workflow, 200),
            ("key", &self.key, 500),
            ("code", &self.code, 500),
            ("q", &self.q, 500),
        ] {
            if let Some(v) = value {
                if v.chars().count() > max {
                    return Err(ServiceError::BadRequest(format!(
                        "{name} is longer than {max} characters"
                    )));
                }
                if v.contains('\0') {
                    return Err(ServiceError::BadRequest(format!(
                        "{name} contains a NUL character"
                    )));
                }
            }
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from >= to {
                return Err(ServiceError::BadRequest(
                    "from must be before to".to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// What a bulk action may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkAction {
    /// Reset to `pending` (dead, retry_wait or sending rows).
    Retry,
    /// Make `dead` with the reason (pending or retry_wait rows).
    Cancel { reason: String },
}

impl BulkAction {
    fn name(&self) -> &'static str {
        match self {
            BulkAction::Retry => "bulk_retry",
            BulkAction::Cancel { .. } => "bulk_cancel",
        }
    }

    fn to(&self) -> State {
        match self {
            BulkAction::Retry => State::Pending,
            BulkAction::Cancel { .. } => State::Dead,
        }
    }
}

/// What a bulk action would take (the preview an operator confirms).
#[derive(Debug, Clone, Serialize)]
pub struct BulkPreview {
    /// Rows the filter matches now (at most [`BULK_MAX`]; `more` says there are others).
    pub matched: u64,
    pub more: bool,
    /// The newest few, to show.
    pub sample: Vec<i64>,
}

/// What a bulk action did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkReport {
    /// Rows the filter matched (at most [`BULK_MAX`]).
    pub matched: u64,
    /// Rows moved.
    pub changed: u64,
    /// Rows that had moved on meanwhile (another relay or operator) and were left alone.
    pub skipped: u64,
    /// The recorded action (`ferry_actions.id`).
    pub action_id: Option<i64>,
}

/// What a single-row action did.
#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    pub id: i64,
    pub state: State,
    /// False when the row was already in the state asked for (nothing recorded).
    pub changed: bool,
    pub action_id: Option<i64>,
}

/// What enqueueing did.
#[derive(Debug, Clone, Serialize)]
pub struct EnqueueReport {
    pub id: i64,
    pub created: bool,
    pub state: State,
    /// When the row existed already and is dead: why (nothing will deliver it until retried).
    pub dead_reason: Option<String>,
}

/// Rows of one workflow (or target) in each state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub pending: i64,
    pub sending: i64,
    pub retry_wait: i64,
    pub dead: i64,
    /// Rows that ever reached done (pruning does not lower it).
    pub done_total: i64,
    /// Rows that reached done / dead in the last 24 hours.
    pub done_24h: i64,
    pub dead_24h: i64,
    /// Seconds since the oldest due row became due (the lag); 0 when nothing is due.
    pub lag_s: f64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.pending += o.pending;
        self.sending += o.sending;
        self.retry_wait += o.retry_wait;
        self.dead += o.dead;
        self.done_total += o.done_total;
        self.done_24h += o.done_24h;
        self.dead_24h += o.dead_24h;
        self.lag_s = self.lag_s.max(o.lag_s);
    }
}

/// One workflow on the overview.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowLine {
    pub workflow: String,
    /// From its file; `None` for rows of a workflow that has no file here.
    pub target: Option<String>,
    pub document: Option<String>,
    pub identify_by: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
}

/// One target on the overview: the sum of its workflows.
#[derive(Debug, Clone, Serialize)]
pub struct TargetLine {
    pub target: String,
    pub workflows: Vec<String>,
    #[serde(flatten)]
    pub counts: Counts,
    /// `closed`, `half_open` or `open`, from the running relay; `None` when not served by one.
    pub circuit: Option<&'static str>,
}

/// What holds rows back besides their due time. A `None` is something this version does not
/// track yet (rows held for a target's login); the page says so.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Holds {
    /// Paused workflows and targets (`ferry pause`), as `workflow:<name>` / `target:<name>`.
    pub paused_workflows: Option<Vec<String>>,
    /// Ordering groups held by a dead row (`ferry_blocked`; `ferry release` or a retry frees
    /// them).
    pub blocked_groups: Option<i64>,
    pub login_held: Option<i64>,
}

/// The overview: rows per workflow and target in each state, throughput, lag, circuits.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub database: String,
    pub workflows: Vec<WorkflowLine>,
    pub targets: Vec<TargetLine>,
    pub totals: Counts,
    /// Rows that reached done/dead per minute, oldest first, over `throughput_minutes`.
    pub throughput: Vec<MinuteCount>,
    pub throughput_minutes: i64,
    /// Whether circuit states come from a running relay (served by `ferry run`).
    pub relay: bool,
    pub holds: Holds,
}

/// The console's view of one row.
#[derive(Debug, Clone, Serialize)]
pub struct RowView {
    pub row: OutboxRow,
    /// The document code (the workflow's `identify_by` field of the payload).
    pub code: Option<String>,
    pub target: Option<String>,
    pub document: Option<String>,
    /// The last attempt's response excerpt: what the target answered last.
    pub response: Option<String>,
    pub attempts: Vec<AttemptLine>,
    /// Operator actions that changed this row, newest first.
    pub actions: Vec<ActionLine>,
    pub can_retry: bool,
    pub can_cancel: bool,
}

impl Operator {
    pub fn new(store: Store, workflows_dir: impl Into<PathBuf>) -> Operator {
        Operator {
            store,
            workflows_dir: workflows_dir.into(),
            actor: "unknown".into(),
        }
    }

    /// The same operator, recording its actions as done by `actor` (`cli:alice`,
    /// `console:bob`); cut to 200 characters, control characters replaced.
    pub fn acting_as(&self, actor: impl Into<String>) -> Operator {
        let actor: String = actor
            .into()
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(200)
            .collect();
        Operator {
            actor: if actor.trim().is_empty() {
                "unknown".into()
            } else {
                actor
            },
            ..self.clone()
        }
    }

    /// Who this operator's actions are recorded as.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Live rows per workflow and state (`ferry_status`), then one `done` line per workflow
    /// with the rows that ever reached done (from `ferry_totals`: no done row is read).
    pub async fn status(&self) -> Result<Vec<StatusLine>, ServiceError> {
        let mut lines = self.store.status().await?;
        for (workflow, done) in self.store.done_totals().await? {
            lines.push(StatusLine {
                workflow,
                state: State::Done,
                rows: done,
                oldest_due_age_s: 0.0,
            });
        }
        lines.sort_by(|a, b| a.workflow.cmp(&b.workflow).then(a.state.cmp(&b.state)));
        Ok(lines)
    }

    /// Rows matching a filter, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<OutboxRow>, ServiceError> {
        Ok(self.store.list(filter).await?)
    }

    /// One row and its attempts.
    pub async fn show(&self, id: i64) -> Result<RowDetail, ServiceError> {
        let row = self.store.get(id).await?;
        let attempts = self.store.attempts(id).await?;
        Ok(RowDetail { row, attempts })
    }

    /// The workflow files' summaries (no variables needed), by name.
    fn summaries(&self) -> BTreeMap<String, WorkflowSummary> {
        crate::workflow::peek_all(&self.workflows_dir)
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect()
    }

    /// Where each workflow's document code is, grouped by path.
    fn code_paths(summaries: &BTreeMap<String, WorkflowSummary>) -> Vec<CodePath> {
        let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in summaries.values() {
            if let Some(path) = &s.identify_by {
                by_path
                    .entry(path.clone())
                    .or_default()
                    .push(s.name.clone());
            }
        }
        by_path
            .into_iter()
            .map(|(path, workflows)| CodePath {
                workflows,
                path: path.split('.').map(str::to_string).collect(),
            })
            .collect()
    }

    /// The overview. `metrics` is the running relay's (served by `ferry run`): circuit states
    /// come from it; without it they are `None`. `minutes` of throughput (1..=2880).
    pub async fn overview(
        &self,
        minutes: i64,
        metrics: Option<&Metrics>,
    ) -> Result<Overview, ServiceError> {
        let minutes = minutes.clamp(1, 2880);
        let summaries = self.summaries();
        let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
        for l in self.store.status().await? {
            let c = counts.entry(l.workflow.clone()).or_default();
            match l.state.as_str() {
                "pending" => c.pending = l.rows,
                "sending" => c.sending = l.rows,
                "retry_wait" => c.retry_wait = l.rows,
                "dead" => c.dead = l.rows,
                _ => {}
            }
            if matches!(l.state, State::Pending | State::RetryWait) {
                c.lag_s = c.lag_s.max(l.oldest_due_age_s);
            }
        }
        for (workflow, done) in self.store.done_totals().await? {
            counts.entry(workflow).or_default().done_total = done;
        }
        for s in self.store.settled_since(24 * 60).await? {
            let c = counts.entry(s.workflow).or_default();
            c.done_24h = s.done;
            c.dead_24h = s.dead;
        }
        for name in summaries.keys() {
            counts.entry(name.clone()).or_default();
        }
        let workflows: Vec<WorkflowLine> = counts
            .into_iter()
            .map(|(workflow, counts)| {
                let s = summaries.get(&workflow);
                WorkflowLine {
                    target: s.and_then(|s| s.target.clone()),
                    document: s.map(|s| s.document.name().to_string()),
                    identify_by: s.and_then(|s| s.identify_by.clone()),
                    workflow,
                    counts,
                }
            })
            .collect();
        let circuits: BTreeMap<String, CircuitGauge> = metrics
            .map(|m| m.circuits().into_iter().collect())
            .unwrap_or_default();
        let mut targets: BTreeMap<String, TargetLine> = BTreeMap::new();
        let mut totals = Counts::default();
        for w in &workflows {
            totals.add(&w.counts);
            let name = w
                .target
                .clone()
                .unwrap_or_else(|| "(no workflow file)".into());
            let t = targets.entry(name.clone()).or_insert_with(|| TargetLine {
                circuit: metrics.map(|_| match circuits.get(&name) {
                    Some(CircuitGauge::Open) => "open",
                    Some(CircuitGauge::HalfOpen) => "half_open",
                    _ => "closed",
                }),
                target: name,
                workflows: Vec::new(),
                counts: Counts::default(),
            });
            t.workflows.push(w.workflow.clone());
            t.counts.add(&w.counts);
        }
        Ok(Overview {
            generated_at: Utc::now(),
            database: self.store.url().to_string(),
            workflows,
            targets: targets.into_values().collect(),
            totals,
            throughput: self.store.minute_counts(minutes, None).await?,
            throughput_minutes: minutes,
            relay: metrics.is_some(),
            holds: Holds {
                paused_workflows: Some(
                    self.store
                        .paused()
                        .await?
                        .into_iter()
                        .map(|p| format!("{}:{}", p.kind, p.name))
                        .collect(),
                ),
                blocked_groups: Some(self.store.blocked().await?.len() as i64),
                login_held: None,
            },
        })
    }

    fn query(&self, filter: &BulkFilter, codes: &[CodePath]) -> Result<RowQuery, ServiceError> {
        filter.check()?;
        let parse = |v: &Option<String>| v.as_deref().and_then(TextMatch::parse);
        let q = RowQuery {
            workflow: filter.workflow.clone().filter(|w| !w.trim().is_empty()),
            state: filter.state,
            key: parse(&filter.key),
            code: parse(&filter.code),
            key_or_code: parse(&filter.q),
            created_from: filter.from,
            created_to: filter.to,
            before: None,
            limit: 50,
            scan_budget: SCAN_BUDGET,
        };
        if q.code.is_some() && codes.is_empty() {
            return Err(ServiceError::BadRequest(
                "no workflow file names a document code field (identify_by), so rows cannot be found by code; search by key".into(),
            ));
        }
        Ok(q)
    }

    /// A page of rows matching `filter`, newest first, from `cursor` on (a page's `next`), at
    /// most `limit` (1..=[`PAGE_MAX`]). A search by document code or key pattern looks at
    /// [`SCAN_BUDGET`] rows per call: a `partial` page is followed by another from its `next`.
    pub async fn rows(
        &self,
        filter: &RowFilter,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Page, ServiceError> {
        let codes = Self::code_paths(&self.summaries());
        let mut q = self.query(filter, &codes)?;
        q.limit = limit.clamp(1, PAGE_MAX);
        q.before = match cursor.filter(|c| !c.is_empty()) {
            Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
                ServiceError::BadRequest(format!("'{c}' is not a cursor (use a page's next)"))
            })?),
            None => None,
        };
        Ok(self.store.browse(&q, &codes).await?)
    }

    /// One row as the console shows it: the row, its code, the last response, the attempt
    /// timeline and the operator actions that changed it.
    pub async fn row_view(&self, id: i64) -> Result<RowView, ServiceError> {
        let row = self.store.get(id).await?;
        let attempts = self.store.attempts(id).await?;
        let actions = self.store.actions(Some(id), 100).await?;
        let summary = crate::workflow::peek(&self.workflows_dir, &row.workflow).ok();
        let code = summary
            .as_ref()
            .and_then(|s| s.identify_by.as_deref())
            .and_then(|path| {
                let payload: serde_json::Value = serde_json::from_str(&row.payload).ok()?;
                crate::documents::document_code(&payload, path)
            });
        let state = Some(row.state);
        let response = attempts
            .iter()
            .rev()
            .find_map(|a| a.response_excerpt.clone());
        Ok(RowView {
            code,
            target: summary.as_ref().and_then(|s| s.target.clone()),
            document: summary.as_ref().map(|s| s.document.name().to_string()),
            response,
            can_retry: state.is_some_and(|s| s != State::Pending && s.can_move_to(State::Pending)),
            can_cancel: matches!(state, Some(State::Pending | State::RetryWait)),
            row,
            attempts,
            actions,
        })
    }

    /// Recorded operator actions, newest first.
    pub async fn actions(&self, limit: i64) -> Result<Vec<ActionLine>, ServiceError> {
        Ok(self.store.actions(None, limit).await?)
    }

    fn reason(reason: Option<&str>) -> Result<Option<String>, ServiceError> {
        let Some(r) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(None);
        };
        if r.chars().count() > REASON_MAX_CHARS {
            return Err(ServiceError::BadRequest(format!(
                "the reason is longer than {REASON_MAX_CHARS} characters"
            )));
        }
        Ok(Some(r.to_string()))
    }

    async fn record(
        &self,
        action: &str,
        outbox_id: Option<i64>,
        filter: Option<serde_json::Value>,
        reason: Option<&str>,
        matched: u64,
        rows: &[i64],
    ) -> Result<i64, ServiceError> {
        self.store
            .record_action(&ActionRecord {
                actor: &self.actor,
                action,
                outbox_id,
                filter,
                reason,
                matched,
                rows,
            })
            .await
            .map_err(|e| {
                ServiceError::Store(StoreError::InvalidIntent(format!(
                    "{action} was done, but recording it in ferry_actions failed: {e}"
                )))
            })
    }

    /// Reset one row to `pending` (due now, a fresh attempt budget; the history stays), and
    /// record who did it and why. A row already pending is left as it is.
    pub async fn retry(&self, id: i64, reason: Option<&str>) -> Result<ActionReport, ServiceError> {
        let reason = Self::reason(reason)?;
        let before = self.store.get(id).await?;
        self.store.reset(id).await?;
        if before.state == State::Pending {
            return Ok(ActionReport {
                id,
                state: State::Pending,
                changed: false,
                action_id: None,
            });
        }
        let action_id = self
            .record("retry", Some(id), None, reason.as_deref(), 1, &[id])
            .await?;
        Ok(ActionReport {
            id,
            state: State::Pending,
            changed: true,
            action_id: Some(action_id),
        })
    }

    /// Reset every dead row (of one workflow, if given), recorded as a bulk retry. Returns how
    /// many.
    pub async fn retry_dead(&self, workflow: Option<&str>) -> Result<u64, ServiceError> {
        let filter = BulkFilter {
            state: Some(State::Dead),
            workflow: workflow.map(str::to_string),
            ..BulkFilter::default()
        };
        let mut total = 0;
        loop {
            let report = self.bulk(&BulkAction::Retry, &filter, None, None).await?;
            total += report.changed;
            if report.matched < BULK_MAX as u64 || report.changed == 0 {
                return Ok(total);
            }
        }
    }

    /// Make a `pending` or `retry_wait` row `dead` with the reason, and record it.
    pub async fn cancel(&self, id: i64, reason: &str) -> Result<ActionReport, ServiceError> {
        let Some(reason) = Self::reason(Some(reason))? else {
            return Err(ServiceError::BadRequest(
                "a cancel needs a reason (it is the row's last_error)".into(),
            ));
        };
        self.store.cancel(id, &reason).await?;
        let action_id = self
            .record("cancel", Some(id), None, Some(&reason), 1, &[id])
            .await?;
        Ok(ActionReport {
            id,
            state: State::Dead,
            changed: true,
            action_id: Some(action_id),
        })
    }

    /// Release a dead row from its ordering group: it stays dead, with `released_at`,
    /// `released_by` (`by`) and `release_reason` recorded, and the later rows of its group are
    /// delivered without it.
    pub async fn release(&self, id: i64, by: &str, reason: &str) -> Result<(), ServiceError> {
        if reason.trim().is_empty() {
            return Err(ServiceError::BadRequest(
                "a release needs a reason (it is recorded on the row)".into(),
            ));
        }
        self.store.release(id, by, reason).await?;
        self.record("release", Some(id), None, Some(reason), 1, &[id])
            .await?;
        Ok(())
    }

    /// Ordering groups held by a dead row (`ferry_blocked`).
    pub async fn blocked(&self) -> Result<Vec<BlockedGroup>, ServiceError> {
        Ok(self.store.blocked().await?)
    }

    /// Pause a workflow or a target for every relay (within about a second): its rows are not
    /// claimed, and rows claimed but not yet sent are handed back without spending an attempt.
    pub async fn pause(
        &self,
        kind: PauseKind,
        name: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(), ServiceError> {
        if name.trim().is_empty() || name.len() > 200 {
            return Err(ServiceError::BadRequest(
                "name the workflow or target to pause (1 to 200 bytes)".into(),
            ));
        }
        self.store.pause(kind, name, by, reason).await?;
        let what = serde_json::json!({ kind.as_str(): name });
        self.record("pause", None, Some(what), reason, 0, &[])
            .await?;
        Ok(())
    }

    /// Resume a workflow or a target. Returns whether it was paused.
    pub async fn resume(&self, kind: PauseKind, name: &str) -> Result<bool, ServiceError> {
        let was = self.store.resume(kind, name).await?;
        if was {
            let what = serde_json::json!({ kind.as_str(): name });
            self.record("resume", None, Some(what), None, 0, &[])
                .await?;
        }
        Ok(was)
    }

    /// Everything paused.
    pub async fn paused(&self) -> Result<Vec<PausedLine>, ServiceError> {
        Ok(self.store.paused().await?)
    }

    /// The state a bulk action takes rows from: the filter's, which the action must be able to
    /// move (a bulk action names the state it works on, so its preview counts only rows it can
    /// change).
    fn bulk_from(action: &BulkAction, filter: &BulkFilter) -> Result<State, ServiceError> {
        let allowed: &[State] = match action {
            BulkAction::Retry => &[State::Dead, State::RetryWait, State::Sending],
            BulkAction::Cancel { .. } => &[State::Pending, State::RetryWait],
        };
        let names = allowed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        match filter.state {
            Some(s) if allowed.contains(&s) => Ok(s),
            Some(s) => Err(ServiceError::BadRequest(format!(
                "{} takes {names} rows, not {s}",
                action.name().replace('_', " ")
            ))),
            None => Err(ServiceError::BadRequest(format!(
                "a bulk action needs a state in its filter ({names} for {})",
                action.name().replace('_', " ")
            ))),
        }
    }

    /// How many rows a bulk action with this filter would take (the preview an operator
    /// confirms), at most [`BULK_MAX`].
    pub async fn preview(
        &self,
        action: &BulkAction,
        filter: &BulkFilter,
    ) -> Result<BulkPreview, ServiceError> {
        Self::bulk_from(action, filter)?;
        let codes = Self::code_paths(&self.summaries());
        let q = self.query(filter, &codes)?;
        let mut ids = self.store.matching_ids(&q, &codes, BULK_MAX + 1).await?;
        let more = ids.len() as i64 > BULK_MAX;
        ids.truncate(BULK_MAX as usize);
        Ok(BulkPreview {
            matched: ids.len() as u64,
            more,
            sample: ids.iter().take(10).copied().collect(),
        })
    }

    /// Apply `action` to the rows of `filter` (at most [`BULK_MAX`]), and record it with the
    /// filter, the reason and the rows changed. With `expected` (the previewed count), refuse
    /// when the filter now matches a different number of rows: the operator confirmed another
    /// set. Each row moves only if it is still in the filter's state; the others are skipped.
    pub async fn bulk(
        &self,
        action: &BulkAction,
        filter: &BulkFilter,
        expected: Option<u64>,
        reason: Option<&str>,
    ) -> Result<BulkReport, ServiceError> {
        let from = Self::bulk_from(action, filter)?;
        let reason = match action {
            BulkAction::Cancel { reason } => Some(
                Self::reason(Some(reason))?
                    .ok_or_else(|| ServiceError::BadRequest("a cancel needs a reason".into()))?,
            ),
            BulkAction::Retry => Self::reason(reason)?,
        };
        let codes = Self::code_paths(&self.summaries());
        let q = self.query(filter, &codes)?;
        let ids = self.store.matching_ids(&q, &codes, BULK_MAX).await?;
        let matched = ids.len() as u64;
        if let Some(n) = expected {
            if n != matched {
                return Err(ServiceError::Conflict(format!(
                    "the filter now matches {matched} rows, not the {n} previewed; preview again"
                )));
            }
        }
        let last_error = match action {
            BulkAction::Cancel { .. } => reason.as_deref(),
            BulkAction::Retry => None,
        };
        let moved = self
            .store
            .move_rows(&ids, from, action.to(), last_error)
            .await?;
        let action_id = if matched > 0 {
            Some(
                self.record(
                    action.name(),
                    None,
                    Some(filter.to_json()),
                    reason.as_deref(),
                    matched,
                    &moved,
                )
                .await?,
            )
        } else {
            None
        };
        Ok(BulkReport {
            matched,
            changed: moved.len() as u64,
            skipped: matched - moved.len() as u64,
            action_id,
        })
    }

    /// Send delivered rows again on purpose (`ferry replay`): each selected `done` row gets a
    /// new row (its own id, so a new Idempotency-Key; key `<key>#replay-<n>`; `replay_of` the
    /// original), the original stays `done`, and the workflow's `on_done` SQL is not run for
    /// the replay. `dry_run`: what would be sent, nothing changed. Each line carries the
    /// document's code when the workflow file names one (`identify_by`).
    pub async fn replay(
        &self,
        selection: &ReplaySelection,
        dry_run: bool,
    ) -> Result<Vec<Replayed>, ServiceError> {
        let identify_by = self.workflow(&selection.workflow)?.identify_by;
        let mut lines = self.store.replay(selection, dry_run).await?;
        if let Some(field) = identify_by {
            for line in &mut lines {
                line.code = serde_json::from_str(&line.payload)
                    .ok()
                    .and_then(|p| crate::documents::document_code(&p, &field));
            }
        }
        Ok(lines)
    }

    /// What enqueueing needs of a workflow (its document kind), without its targets' variables.
    pub fn workflow(&self, name: &str) -> Result<WorkflowSummary, ServiceError> {
        crate::workflow::peek(&self.workflows_dir, name)
            .map_err(|e| ServiceError::Workflow(e.to_string()))
    }

    /// Validate `payload` as a document of `workflow` and enqueue it (a no-op for a key that is
    /// already there: its state says what became of it).
    pub async fn enqueue(
        &self,
        workflow: &str,
        key: &str,
        payload: &serde_json::Value,
    ) -> Result<EnqueueReport, ServiceError> {
        self.workflow(workflow)?
            .document
            .validate(payload)
            .map_err(|e| ServiceError::InvalidPayload(e.to_string()))?;
        let Enqueued { id, created, state } = self.store.enqueue(workflow, key, payload).await?;
        let dead_reason = if !created && state == State::Dead {
            self.store.get(id).await?.last_error
        } else {
            None
        };
        Ok(EnqueueReport {
            id,
            created,
            state,
            dead_reason,
        })
    }

    /// Build the 1C invoice of a paid order from the shop's tables and enqueue it.
    pub async fn export_invoice(
        &self,
        workflow: &str,
        order_id: &str,
    ) -> Result<ExportReport, ServiceError> {
        let wf = self.workflow(workflow)?;
        Ok(crate::export::export_invoice(&self.store, wf, order_id).await?)
    }
}
