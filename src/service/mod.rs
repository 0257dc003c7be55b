//! The service layer: the one place that builds and runs the engine ([`daemon`]) and the one
//! set of operator actions ([`operator`]). Front doors (the CLI, the demo, a JSON API, a web
//! console) call these and only render; they never assemble a relay or talk to a store
//! themselves.
//!
//! ```text
//!  cli / demo / console ──▶ service ──▶ relay, delivery ──▶ outbox, workflow
//! ```

pub mod daemon;
pub mod operator;

pub use daemon::{run_daemon, spawn_signal_handler, DaemonOptions, Engine, RunningEngine};
pub use operator::{
    ActionReport, BulkAction, BulkFilter, BulkPreview, BulkReport, Counts, EnqueueReport, Holds,
    Operator, Overview, RowDetail, RowFilter, RowView, TargetLine, WorkflowLine, BULK_MAX,
};

/// What a service call can fail with, naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] crate::outbox::StoreError),
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error("{0}")]
    Workflow(String),
    #[error("{0}")]
    InvalidPayload(String),
    #[error("{0}")]
    BadRequest(String),
    /// The rows changed since the operator looked (a bulk action's preview no longer holds).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Ops(#[from] crate::ops::OpsError),
}
