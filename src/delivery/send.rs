//! Sending one request and reading its answer.
//!
//! Per target: one HTTP client with a bounded keep-alive pool that never follows redirects (a
//! 3xx is an answer like any other, judged by the workflow's rule: following one would turn a
//! POST into a bodiless GET whose landing page "succeeds" (302/303), or re-send the document and
//! its idempotency key to another origin (307/308)).
//!
//! Per request: a target slot first (its `max_concurrency`), then the workflow's headers,
//! `Authorization` from the authenticator, `Idempotency-Key: <outbox id>` (stable across retries
//! and crashes) and `X-Request-Id` (new per request). At most [`READ_LIMIT`] bytes of the body
//! are read. Everything taken from the answer (body, `Location`, transport error text) passes
//! through the target's authenticator's scrubber before anything else sees it, so a target
//! echoing the request cannot get its own credential into attempts, `last_error`, `on_done`'s
//! `:response`, logs or Debug output.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, Url};

use super::rules::{parse_retry_after, Answer, TransportKind};
use super::TargetRuntime;
use crate::workflow::Target;

/// How much of a response body is read at all (the rest is dropped with the connection).
pub const READ_LIMIT: usize = 64 * 1024;

/// The HTTP client of a target whose longest request timeout is `timeout`.
pub(super) fn client(target: &Target, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    if !target.tls_verify {
        tracing::warn!(target_name = %target.name, "TLS certificate verification is OFF for this target (tls_verify = false)");
    }
    reqwest::Client::builder()
        .use_rustls_tls()
        // Never follow: a 3xx is judged (see `rules`), not chased with or without the body.
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(!target.tls_verify)
        .pool_max_idle_per_host(target.max_concurrency)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One request of a row, as its workflow says.
pub(super) struct Request<'a> {
    pub method: &'a Method,
    pub url: &'a Url,
    /// `Content-Type`, `Accept` and the workflow's own headers.
    pub headers: &'a HeaderMap,
    pub credential: Option<&'a HeaderValue>,
    pub timeout: Duration,
    pub outbox_id: i64,
    pub body: &'a str,
}

/// A request sent and its answer read.
pub(super) struct Sent {
    pub answer: Answer,
    /// When the request left (after the slot was taken).
    pub started_at: DateTime<Utc>,
    pub began: Instant,
}

/// Take a slot of `target`, send `request`, read the answer (bounded) and scrub it.
pub(super) async fn send(target: &TargetRuntime, request: Request<'_>) -> Sent {
    let _slot = target
        .slots
        .acquire()
        .await
        .expect("target semaphore is never closed");
    let started_at = Utc::now();
    let began = Instant::now();
    let mut headers = request.headers.clone();
    if let Some(credential) = request.credential {
        headers.insert(AUTHORIZATION, credential.clone());
    }
    crate::relay::mark_sending();
    let sent = target
        .client
        .request(request.method.clone(), request.url.clone())
        .headers(headers)
        .header("Idempotency-Key", request.outbox_id.to_string())
        .header("X-Request-Id", uuid::Uuid::new_v4().to_string())
        .timeout(request.timeout)
        .body(request.body.to_owned())
        .send()
        .await;
    let scrub = |text: String| target.auth.scrub(text);
    let answer = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| scrub(String::from_utf8_lossy(v.as_bytes()).into_owned()));
            match read_limited(resp).await {
                Ok(body) => Answer::Status {
                    status,
                    body: scrub(body),
                    retry_after,
                    location,
                },
                Err(e) => Answer::Transport(transport_kind(&e), scrub(describe(&e))),
            }
        }
        Err(e) => Answer::Transport(transport_kind(&e), scrub(describe(&e))),
    };
    Sent {
        answer,
        started_at,
        began,
    }
}

async fn read_limited(mut resp: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = READ_LIMIT.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= READ_LIMIT {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn transport_kind(e: &reqwest::Error) -> TransportKind {
    if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Broken
    }
}

/// A transport error in words, with its causes (reqwest's Display alone says only "error sending
/// request"). URLs carry no user info (validation refuses it), so none can show here.
fn describe(e: &reqwest::Error) -> String {
    let kind = match transport_kind(e) {
        TransportKind::Timeout => "timed out",
        TransportKind::Connect => "connection failed",
        TransportKind::Broken => "connection broken",
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
