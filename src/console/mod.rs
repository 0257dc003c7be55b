//! The operator console: a web page and a JSON API on the operator actions of the service layer
//! ([`crate::service::Operator`]). One implementation, three front doors: the CLI, this API,
//! and the page, which calls this API.
//!
//! Served by `ferry run` at `/` next to `/metrics`, `/healthz`, `/readyz` (see
//! [`crate::service::DaemonOptions::console`]), and by `ferry console` against any database,
//! without relaying. The page is plain HTML, CSS and JavaScript compiled into the binary.
//!
//! Safe by default:
//!
//! * it listens where it is told, 127.0.0.1 unless told otherwise; while the listener is on a
//!   loopback address, requests must name a loopback host (`Host: 127.0.0.1:…`,
//!   `localhost:…`), so a web page on another site cannot reach it through DNS rebinding;
//! * reading is open to whoever can reach it; actions (retry, cancel, bulk) need the operator
//!   token ([`ConsoleConfig::token`], `FERRY_CONSOLE_TOKEN`) as `Authorization: Bearer …`, and
//!   are refused when none is configured. The token travels in a header, never a cookie, and a
//!   request whose `Origin` is another site is refused: no cross-site request can act;
//! * workflow auth (passwords, tokens) is never read here; the payload (the business document)
//!   is shown unless [`ConsoleConfig::hide_payload`] (`FERRY_CONSOLE_HIDE_PAYLOAD=true`).

mod api;
mod guard;

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::ops::Metrics;
use crate::service::Operator;

/// How the console behaves.
#[derive(Clone, Default)]
pub struct ConsoleConfig {
    /// The operator token actions need; `None`: read-only.
    pub token: Option<String>,
    /// Never send payloads (personal data in business documents).
    pub hide_payload: bool,
    /// Answer only requests that name a loopback host (set when listening on loopback).
    pub loopback_hosts_only: bool,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("hide_payload", &self.hide_payload)
            .field("loopback_hosts_only", &self.loopback_hosts_only)
            .finish()
    }
}

impl ConsoleConfig {
    /// `loopback_hosts_only` from the address the console listens on.
    pub fn for_addr(mut self, addr: &std::net::SocketAddr) -> ConsoleConfig {
        self.loopback_hosts_only = addr.ip().is_loopback();
        self
    }
}

/// The console as `ferry run` serves it next to `/metrics`.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// Where the workflow files are (target names, document code fields).
    pub workflows_dir: std::path::PathBuf,
    pub config: ConsoleConfig,
}

/// Whether `host:port` names a loopback address (`127.x.x.x`, `[::1]`, `localhost`).
pub fn addr_is_loopback(addr: &str) -> bool {
    guard::is_loopback_host(addr)
}

#[derive(Clone)]
pub(crate) struct Console {
    pub(crate) operator: Operator,
    pub(crate) config: Arc<ConsoleConfig>,
    /// The running relay's metrics (circuit states), when served by `ferry run`.
    pub(crate) metrics: Option<Arc<Metrics>>,
}

/// The console's routes: the page at `/`, its assets under `/assets/`, the API under `/api/`.
/// No fallback, so it merges into the ops server's router.
pub fn router(operator: Operator, config: ConsoleConfig, metrics: Option<Arc<Metrics>>) -> Router {
    let state = Console {
        operator,
        config: Arc::new(config),
        metrics,
    };
    let api = Router::new()
        .route("/api/session", get(api::session))
        .route("/api/session/check", post(api::session_check))
        .route("/api/overview", get(api::overview))
        .route("/api/rows", get(api::rows))
        .route("/api/rows/{id}", get(api::row))
        .route("/api/rows/{id}/retry", post(api::retry))
        .route("/api/rows/{id}/cancel", post(api::cancel))
        .route("/api/bulk/preview", post(api::bulk_preview))
        .route("/api/bulk", post(api::bulk))
        .route("/api/actions", get(api::actions))
        .route("/api/{*rest}", get(api::no_route).post(api::no_route));
    Router::new()
        .route("/", get(page))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/assets/favicon.svg", get(favicon))
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON: &str = include_str!("assets/favicon.svg");

/// What the page may load and do: its own scripts, styles and API only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn page() -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX_HTML);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON)
}
