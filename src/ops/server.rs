//! The operator HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.
//!
//! They run on their own listener (default 127.0.0.1:9464) so Prometheus
//! scrapes and orchestrator probes work even when delivery is saturated, and
//! so they can be firewalled separately from anything else.
//!
//! - `/healthz` answers "is the process alive" and deliberately checks
//!   nothing else: a liveness probe that fails on a database outage would
//!   make the orchestrator restart a healthy process in a loop.
//! - `/readyz` runs the caller-supplied [`ReadyCheck`] (typically a database
//!   ping) under a 2 s timeout, so a hung dependency yields a prompt 503
//!   instead of a probe timeout with no explanation.
//!
//! [`serve`] returns as soon as the socket is bound, so callers (and tests
//! using port 0) learn the real address, and a bind failure is reported
//! synchronously with the address in the message.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::OpsError;

/// Readiness probe: `Ok(())` when the process can do useful work, otherwise
/// an operator-readable reason (e.g. "database unreachable: ...").
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// How long `/readyz` waits for the [`ReadyCheck`] before answering 503.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Content type of the Prometheus text exposition format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running ops server. It stops when the `shutdown` token passed to
/// [`serve`] is cancelled; dropping this handle does not stop it.
#[derive(Debug)]
pub struct OpsServer {
    /// The address actually bound (the real port when 0 was requested).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl OpsServer {
    /// Waits until the server task has finished, i.e. after `shutdown` was
    /// cancelled and in-flight requests drained. Lets the caller order its
    /// shutdown (stop serving metrics before flushing logs, say).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "ops server task failed");
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
    ready_timeout: Duration,
}

/// Bind `addr` (e.g. "127.0.0.1:9464"; port 0 allowed for tests) and serve until `shutdown` is cancelled:
///   GET /metrics  -> 200 text/plain; version=0.0.4, Metrics::render()
///   GET /healthz  -> 200 "ok" (the process is alive)
///   GET /readyz   -> 200 "ready" if `ready().await` returns Ok(()), else 503 with the error text
///   anything else -> 404
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
    shutdown: CancellationToken,
) -> Result<OpsServer, OpsError> {
    serve_with_ready_timeout(addr, metrics, ready, shutdown, READY_TIMEOUT, Router::new()).await
}

/// [`serve`], plus the routes of `extra` (the operator console at `/` and `/api/`) on the same
/// listener. `extra` must not set a fallback: unknown paths stay 404.
pub async fn serve_with(
    addr: &str,
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
    shutdown: CancellationToken,
    extra: Router,
) -> Result<OpsServer, OpsError> {
    serve_with_ready_timeout(addr, metrics, ready, shutdown, READY_TIMEOUT, extra).await
}

/// [`serve_with`] with a custom readiness timeout; exists so tests need not wait
/// the full production timeout.
pub(crate) async fn serve_with_ready_timeout(
    addr: &str,
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
    shutdown: CancellationToken,
    ready_timeout: Duration,
    extra: Router,
) -> Result<OpsServer, OpsError> {
    let bind_error = |e: std::io::Error| OpsError::Bind {
        addr: addr.to_owned(),
        reason: describe_bind_error(&e),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;

    let app = router(
        AppState {
            metrics,
            ready,
            ready_timeout,
        },
        extra,
    );

    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        match result {
            Ok(()) => tracing::debug!(addr = %local, "ops server stopped"),
            Err(e) => tracing::error!(addr = %local, error = %e, "ops server failed"),
        }
    });
    tracing::info!(addr = %local, "ops server listening (/metrics, /healthz, /readyz)");

    Ok(OpsServer { addr: local, task })
}

/// Short, stable wording for the common cases; the raw OS text ("Address
/// already in use (os error 98)") varies by platform.
fn describe_bind_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "address not available".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

fn router(state: AppState, extra: Router) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(extra)
        .fallback(not_found)
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    // Run the check in its own task: a panicking check becomes a 503 instead
    // of a dropped connection, and a hung one can be aborted on timeout
    // rather than left running after the probe has been answered.
    let mut check = tokio::spawn((state.ready)());
    let outcome = tokio::time::timeout(state.ready_timeout, &mut check).await;
    let result = match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(join_error)) => Err(format!("readiness check failed: {join_error}")),
        Err(_elapsed) => {
            check.abort();
            Err("readiness check timed out".to_owned())
        }
    };
    match result {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
        }
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn always(result: Result<(), String>) -> ReadyCheck {
        Arc::new(move || {
            let result = result.clone();
            Box::pin(async move { result })
        })
    }

    async fn start(ready: ReadyCheck) -> (OpsServer, Arc<Metrics>, CancellationToken) {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let server = serve_with_ready_timeout(
            "127.0.0.1:0",
            Arc::clone(&metrics),
            ready,
            shutdown.clone(),
            Duration::from_millis(200),
            Router::new(),
        )
        .await
        .expect("bind 127.0.0.1:0");
        (server, metrics, shutdown)
    }

    async fn get(server: &OpsServer, path: &str) -> (u16, String, String) {
        let url = format!("http://{}{}", server.addr, path);
        let resp = reqwest::get(&url).await.expect("request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, resp.text().await.expect("body"))
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_exposition_format() {
        let (server, metrics, shutdown) = start(always(Ok(()))).await;
        assert!(server.addr.ip().is_loopback());
        assert_ne!(server.addr.port(), 0);
        metrics.attempt("orders", "done", Some(200), Duration::from_millis(3));

        let (status, content_type, body) = get(&server, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        assert!(body.contains("# TYPE ferry_attempts_total counter\n"));
        assert!(body.contains("ferry_attempts_total{workflow=\"orders\",outcome=\"done\"} 1\n"));
        assert!(body.contains("\nferry_up 1\n"));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn healthz_and_not_found() {
        let (server, _metrics, shutdown) = start(always(Err("db down".into()))).await;
        // Liveness ignores readiness on purpose.
        assert_eq!(get(&server, "/healthz").await.0, 200);
        assert_eq!(get(&server, "/healthz").await.2, "ok");
        let (status, _, body) = get(&server, "/nope").await;
        assert_eq!(status, 404);
        assert_eq!(body, "not found");
        assert_eq!(get(&server, "/").await.0, 404);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn readyz_reports_check_result() {
        let (ok_server, _m, ok_shutdown) = start(always(Ok(()))).await;
        let (status, _, body) = get(&ok_server, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready"));
        ok_shutdown.cancel();

        let (bad_server, _m, bad_shutdown) = start(always(Err(
            "database unreachable: connection refused".into(),
        )))
        .await;
        let (status, _, body) = get(&bad_server, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "database unreachable: connection refused");
        bad_shutdown.cancel();
    }

    #[tokio::test]
    async fn readyz_times_out_a_hung_check() {
        let hung: ReadyCheck = Arc::new(|| Box::pin(std::future::pending()));
        let (server, _m, shutdown) = start(hung).await;
        let started = std::time::Instant::now();
        let (status, _, body) = get(&server, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "readiness check timed out");
        assert!(started.elapsed() < Duration::from_secs(2));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn readyz_survives_a_panicking_check() {
        let panicky: ReadyCheck = Arc::new(|| Box::pin(async { panic!("boom") }));
        let (server, _m, shutdown) = start(panicky).await;
        let (status, _, body) = get(&server, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.starts_with("readiness check failed"), "{body}");
        // The server keeps working afterwards.
        assert_eq!(get(&server, "/healthz").await.0, 200);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn bind_failure_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = serve(
            &addr,
            Arc::new(Metrics::new()),
            always(Ok(())),
            CancellationToken::new(),
        )
        .await
        .expect_err("port is taken");
        assert_eq!(
            err.to_string(),
            format!("cannot listen on {addr} for metrics: address in use")
        );
    }

    #[tokio::test]
    async fn graceful_shutdown_stops_the_server() {
        let (server, _m, shutdown) = start(always(Ok(()))).await;
        let addr = server.addr;
        assert_eq!(get(&server, "/healthz").await.0, 200);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server.join())
            .await
            .expect("server stops promptly after cancellation");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "listener should be closed"
        );
    }
}
