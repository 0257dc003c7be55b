//! The operator actions: one typed implementation behind every front door (the CLI today; a
//! JSON API and a web console call the same functions). Each action validates its input, talks
//! to the store, and returns typed values; rendering is the caller's business.

use std::path::PathBuf;

use serde::Serialize;

use super::ServiceError;
use crate::export::ExportReport;
use crate::outbox::{
    AttemptLine, BlockedGroup, Enqueued, ListFilter, OutboxRow, PauseKind, PausedLine,
    ReplaySelection, Replayed, State, StatusLine, Store,
};
use crate::workflow::WorkflowSummary;

/// Most rows one bulk action touches (a bulk action is a loop over rows, each moved through the
/// state machine like a single action; larger sets are done in several calls).
pub const BULK_MAX: i64 = 10_000;

/// The operator's view of one installation: a store and its workflow directory.
#[derive(Debug, Clone)]
pub struct Operator {
    store: Store,
    workflows_dir: PathBuf,
}

/// One row with its attempt history, oldest attempt first.
#[derive(Debug, Clone, Serialize)]
pub struct RowDetail {
    pub row: OutboxRow,
    pub attempts: Vec<AttemptLine>,
}

/// Which rows a bulk action takes.
#[derive(Debug, Clone, Default)]
pub struct BulkFilter {
    pub state: Option<State>,
    pub workflow: Option<String>,
}

/// What a bulk action may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkAction {
    /// Reset to `pending` (dead, retry_wait or sending rows).
    Retry,
    /// Make `dead` with the reason (pending or retry_wait rows).
    Cancel { reason: String },
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
}

/// What enqueueing did.
#[derive(Debug, Clone, Serialize)]
pub struct EnqueueReport {
    pub id: i64,
    pub created: bool,
    #[serde(serialize_with = "state_name")]
    pub state: State,
    /// When the row existed already and is dead: why (nothing will deliver it until retried).
    pub dead_reason: Option<String>,
}

impl Operator {
    pub fn new(store: Store, workflows_dir: impl Into<PathBuf>) -> Operator {
        Operator {
            store,
            workflows_dir: workflows_dir.into(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Live rows per workflow and state (`ferry_status`: done rows are not counted).
    pub async fn status(&self) -> Result<Vec<StatusLine>, ServiceError> {
        Ok(self.store.status().await?)
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

    /// Reset one row to `pending` (due now, a fresh attempt budget; the history stays).
    pub async fn retry(&self, id: i64) -> Result<(), ServiceError> {
        Ok(self.store.reset(id).await?)
    }

    /// Reset every dead row (of one workflow, if given). Returns how many.
    pub async fn retry_dead(&self, workflow: Option<&str>) -> Result<u64, ServiceError> {
        Ok(self.store.reset_dead(workflow).await?)
    }

    /// Make a `pending` or `retry_wait` row `dead` with the reason.
    pub async fn cancel(&self, id: i64, reason: &str) -> Result<(), ServiceError> {
        if reason.trim().is_empty() {
            return Err(ServiceError::BadRequest(
                "a cancel needs a reason (it is the row's last_error)".into(),
            ));
        }
        Ok(self.store.cancel(id, reason).await?)
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
        Ok(self.store.release(id, by, reason).await?)
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
        Ok(self.store.pause(kind, name, by, reason).await?)
    }

    /// Resume a workflow or a target. Returns whether it was paused.
    pub async fn resume(&self, kind: PauseKind, name: &str) -> Result<bool, ServiceError> {
        Ok(self.store.resume(kind, name).await?)
    }

    /// Everything paused.
    pub async fn paused(&self) -> Result<Vec<PausedLine>, ServiceError> {
        Ok(self.store.paused().await?)
    }

    fn bulk_list(filter: &BulkFilter) -> ListFilter {
        ListFilter {
            state: filter.state,
            workflow: filter.workflow.clone(),
            limit: BULK_MAX,
        }
    }

    /// How many rows a bulk action with this filter would take (the preview an operator
    /// confirms), at most [`BULK_MAX`].
    pub async fn preview(&self, filter: &BulkFilter) -> Result<u64, ServiceError> {
        Ok(self.store.list(&Self::bulk_list(filter)).await?.len() as u64)
    }

    /// Apply `action` to the rows of `filter`. With `expected` (the previewed count), refuse
    /// when the filter now matches a different number of rows: the operator confirmed another
    /// set.
    pub async fn bulk(
        &self,
        action: &BulkAction,
        filter: &BulkFilter,
        expected: Option<u64>,
    ) -> Result<BulkReport, ServiceError> {
        if filter.state.is_none() && filter.workflow.is_none() {
            return Err(ServiceError::BadRequest(
                "a bulk action needs a filter (a state, a workflow or both)".into(),
            ));
        }
        if let BulkAction::Cancel { reason } = action {
            if reason.trim().is_empty() {
                return Err(ServiceError::BadRequest("a cancel needs a reason".into()));
            }
        }
        let rows = self.store.list(&Self::bulk_list(filter)).await?;
        let mut report = BulkReport {
            matched: rows.len() as u64,
            ..BulkReport::default()
        };
        if let Some(n) = expected {
            if n != report.matched {
                return Err(ServiceError::BadRequest(format!(
                    "the filter now matches {} rows, not the {n} previewed; preview again",
                    report.matched
                )));
            }
        }
        for row in rows {
            let done = match action {
                BulkAction::Retry => self.store.reset(row.id).await,
                BulkAction::Cancel { reason } => self.store.cancel(row.id, reason).await,
            };
            match done {
                Ok(()) => report.changed += 1,
                Err(crate::outbox::StoreError::WrongState { .. })
                | Err(crate::outbox::StoreError::NotFound(_)) => report.skipped += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
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

fn state_name<S: serde::Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}
