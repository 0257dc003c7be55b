//! Operator-facing observability for Ferry: metrics, the ops HTTP endpoints
//! and logging set-up.
//!
//! - [`metrics`]: a small hand-written Prometheus registry ([`Metrics`]) that
//!   the relay updates on every attempt and the store poller refreshes with
//!   row counts and lag.
//! - [`process`]: the standard `process_*` metrics from `/proc/self` and
//!   `ferry_build_info`, appended to every scrape.
//! - [`server`]: `/metrics`, `/healthz` and `/readyz` on a separate port, so
//!   scrapes and probes never compete with delivery traffic.
//! - [`logging`]: the global `tracing` subscriber (human or JSON, stderr and a
//!   daily-rotating file) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the
//!   OpenTelemetry layer of [`otel`] (delivery attempts as spans, over OTLP).
//!
//! All fallible set-up returns [`OpsError`], whose messages name the thing an
//! operator has to fix (address, directory, bad value).

pub mod logging;
pub mod metrics;
pub mod observe;
pub mod otel;
pub mod process;
pub mod server;

use std::path::PathBuf;

pub use logging::{LogConfig, LogFormat, LogGuard};
pub use metrics::{CircuitGauge, Metrics};
pub use observe::MetricsObserver;
pub use server::{serve, serve_with, OpsServer, ReadyCheck};

/// Errors from setting up metrics serving or logging.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The ops HTTP listener could not be bound.
    #[error("cannot listen on {addr} for metrics: {reason}")]
    Bind { addr: String, reason: String },

    /// A log format string other than human/text/json.
    #[error("unknown log format {0:?} (expected \"human\", \"text\" or \"json\")")]
    LogFormat(String),

    /// The log filter is not valid `EnvFilter` syntax.
    #[error("invalid log filter {filter:?}: {reason}")]
    LogFilter { filter: String, reason: String },

    /// The log directory could not be created or the log file not opened.
    #[error("cannot write logs to directory {}: {reason}", dir.display())]
    LogDir { dir: PathBuf, reason: String },

    /// A global subscriber is already installed (e.g. `init` called twice).
    #[error("logging is already initialised: {0}")]
    LogAlreadyInitialised(String),

    /// OTLP export was asked for (`OTEL_EXPORTER_OTLP_ENDPOINT`) but cannot be set up.
    #[error("cannot set up OpenTelemetry export (OTEL_EXPORTER_OTLP_ENDPOINT): {0}")]
    Otel(String),
}
