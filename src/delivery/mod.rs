//! HTTP delivery: turns a claimed row into one request as its workflow says, and sorts the answer
//! into an [`Outcome`] in one place ([`classify`]).
//!
//! Per target (workflows naming the same target share these): one HTTP client with a bounded
//! keep-alive pool, a concurrency cap, and a [`circuit::Circuit`]. Per request: `Content-Type:
//! application/json`, `Authorization` (Basic is base64 of the UTF-8 `user:password`, so Cyrillic
//! 1C user names work), `Idempotency-Key: <outbox id>` (stable across retries and crashes) and
//! `X-Request-Id` (new per attempt).
//!
//! Redirects are never followed: a 3xx is an answer like any other, sorted by [`classify`] (dead
//! unless the workflow lists the status as retryable). Following one would turn a POST into a
//! bodiless GET whose landing page "succeeds" (302/303), or re-send the document and its
//! idempotency key to another origin (307/308).
//!
//! Secrets: the Authorization value is built once, marked sensitive (reqwest's Debug hides it)
//! and never logged; transport errors are rendered without URLs' user info (URLs carry none).
//! Whatever comes back from a target (body, `Location`, transport error text) passes through the
//! target's [`scrub::Scrubber`] first, so a target echoing the request cannot get its own
//! credential into attempts, `last_error`, `on_done`'s `:response`, logs or Debug output.

pub mod circuit;
pub mod scrub;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use crate::documents::DocumentKind;
use crate::outbox::{excerpt, AttemptRecord, Claimed, OnDoneSql, Outcome};
use crate::relay::{Deliver, Delivery};
use crate::workflow::{bind_params, Auth, ParamStyle, Registry, RetryPolicy, Target, Workflow};
use circuit::{Admit, Circuit, CircuitView};
use scrub::Scrubber;

/// How much of a response body is kept in `ferry_attempts.response_excerpt` and errors.
pub const EXCERPT_BYTES: usize = 2048;
/// How much of a response body is read at all (the rest is dropped with the connection).
const READ_LIMIT: usize = 64 * 1024;
/// Longest `Retry-After` honoured; a target asking for more gets this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);
/// Most characters of a redirect's `Location` shown in a reason.
const LOCATION_MAX_CHARS: usize = 300;

/// Errors building the deliverer.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot build the HTTP client for target '{target}': {cause}")]
    Client {
        target: String,
        cause: reqwest::Error,
    },
}

/// Something a delivery observer wants to know (metrics, the demo's progress).
pub trait DeliveryObserver: Send + Sync + 'static {
    /// An attempt finished (or was skipped: `outcome` is then a release; or the row died before
    /// any request: `status` is then `None` and `duration` zero).
    fn attempt(&self, row: &Claimed, outcome: &Outcome, status: Option<u16>, duration: Duration);
    /// A target's circuit changed state.
    fn circuit(&self, target: &str, view: CircuitView);
}

struct TargetRuntime {
    name: String,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    circuit: Circuit,
    /// The target's own secrets, masked in everything that comes back from it.
    scrubber: Scrubber,
}

struct WorkflowRuntime {
    workflow: Workflow,
    target: Arc<TargetRuntime>,
    method: reqwest::Method,
    /// Parsed once: parsing the URL on every request was a seventh of the relay's CPU.
    url: reqwest::Url,
    headers: HeaderMap,
    on_done: Option<Arc<OnDoneSql>>,
}

/// Delivers rows over HTTP as the workflows in a [`Registry`] say.
pub struct HttpDeliverer {
    workflows: HashMap<String, WorkflowRuntime>,
    targets: Vec<Arc<TargetRuntime>>,
    known: String,
    /// Valid workflows whose variables are unset here: never claimed, so their rows wait.
    unconfigured: Vec<String>,
    max_timeout: Duration,
    observer: Option<Arc<dyn DeliveryObserver>>,
}

impl HttpDeliverer {
    /// Build clients and runtimes for every workflow.
    ///
    /// # Errors
    /// When a client cannot be built (TLS set-up) or a header value is unusable.
    pub fn new(registry: &Registry) -> Result<HttpDeliverer, DeliveryError> {
        let mut targets: HashMap<String, Arc<TargetRuntime>> = HashMap::new();
        let mut workflows = HashMap::new();
        for wf in registry.iter() {
            let target = match targets.get(&wf.target.name) {
                Some(t) => t.clone(),
                None => {
                    let t = Arc::new(target_runtime(&wf.target, registry)?);
                    targets.insert(wf.target.name.clone(), t.clone());
                    t
                }
            };
            let mut headers = HeaderMap::new();
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            headers.insert(
                reqwest::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            );
            for (name, value) in &wf.headers {
                headers.insert(name, value.clone());
            }
            if let Some(v) = auth_header(&wf.target.auth) {
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            let on_done = wf.on_done_sql.as_ref().map(|sql| {
                let (postgres, params) = bind_params(sql, ParamStyle::Dollar);
                let (sqlite, _) = bind_params(sql, ParamStyle::Question);
                Arc::new(OnDoneSql {
                    text: sql.clone(),
                    postgres,
                    sqlite,
                    params,
                })
            });
            workflows.insert(
                wf.name.clone(),
                WorkflowRuntime {
                    workflow: wf.clone(),
                    target,
                    method: wf.method.clone(),
                    url: wf.endpoint.clone(),
                    headers,
                    on_done,
                },
            );
        }
        let known = registry
            .iter()
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(HttpDeliverer {
            workflows,
            targets: targets.into_values().collect(),
            known,
            unconfigured: registry
                .unconfigured()
                .iter()
                .map(|u| u.name.clone())
                .collect(),
            max_timeout: registry.max_timeout(),
            observer: None,
        })
    }

    /// Report attempts and circuit changes to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn DeliveryObserver>) -> Self {
        for t in &self.targets {
            observer.circuit(&t.name, t.circuit.view());
        }
        self.observer = Some(observer);
        self
    }

    /// Circuit state per target, for status displays.
    pub fn circuits(&self) -> Vec<(String, CircuitView)> {
        let mut v: Vec<_> = self
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.circuit.view()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn observe(&self, row: &Claimed, d: &Delivery) {
        if let Some(o) = &self.observer {
            let (status, duration) = d
                .record
                .as_ref()
                .map(|r| (r.http_status, r.duration))
                .unwrap_or((None, Duration::ZERO));
            o.attempt(row, &d.outcome, status, duration);
        }
    }

    async fn deliver_row(&self, row: &Claimed) -> Delivery {
        let Some(rt) = self.workflows.get(&row.workflow) else {
            if self.unconfigured.contains(&row.workflow) {
                // Not claimed on purpose (see `paused`); should one slip through, hand it back
                // without spending an attempt rather than kill a row that only waits for set-up.
                return Delivery::without_attempt(Outcome::Release {
                    after: Duration::from_secs(60),
                });
            }
            return Delivery::without_attempt(Outcome::Dead {
                reason: format!(
                    "unknown workflow '{}': no file workflows/{}.toml is loaded (known: {})",
                    row.workflow, row.workflow, self.known
                ),
            });
        };
        let wf = &rt.workflow;
        // The database only stores valid JSON (jsonb / json_valid), so a plain-JSON workflow
        // with no document code to log skips parsing on the hot path.
        let code = if wf.document == DocumentKind::Json && wf.identify_by.is_none() {
            None
        } else {
            let payload: serde_json::Value = match serde_json::from_str(&row.payload) {
                Ok(v) => v,
                Err(e) => {
                    return Delivery::without_attempt(Outcome::Dead {
                        reason: format!("payload is not valid JSON: {e}"),
                    })
                }
            };
            let code = wf.document_code(&payload);
            if let Err(e) = wf.document.validate(&payload) {
                return Delivery {
                    code,
                    ..Delivery::without_attempt(Outcome::Dead {
                        reason: e.to_string(),
                    })
                };
            }
            code
        };
        let dead = |reason: String| Delivery {
            code: code.clone(),
            ..Delivery::without_attempt(Outcome::Dead { reason })
        };
        let max = wf.retry.max_attempts as i32;
        if row.attempt > max {
            return dead(format!(
                "attempt budget spent: this is claim {} of at most {max}; earlier attempts were lost \
                 with relays that stopped mid-delivery",
                row.attempt
            ));
        }
        // Until the request leaves, a shutdown that cuts this delivery off hands the row back
        // without spending its attempt.
        crate::relay::mark_waiting();
        // The circuit decides before the row takes a target slot.
        let probe = match rt.target.circuit.admit() {
            Admit::Go => false,
            Admit::Probe => true,
            Admit::Wait(after) => {
                return Delivery {
                    code,
                    ..Delivery::without_attempt(Outcome::Release { after })
                }
            }
        };
        let _slot = rt
            .target
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("target semaphore is never closed");
        let started_at = chrono::Utc::now();
        let clock = Instant::now();
        crate::relay::mark_sending();
        let sent = rt
            .target
            .client
            .request(rt.method.clone(), rt.url.clone())
            .headers(rt.headers.clone())
            .header("Idempotency-Key", row.id.to_string())
            .header("X-Request-Id", uuid::Uuid::new_v4().to_string())
            .timeout(wf.timeout)
            .body(row.payload.clone())
            .send()
            .await;
        // Everything taken from the answer goes through the target's scrubber here, before
        // classification, excerpts, logs or Debug can see it.
        let scrub = |text: String| rt.target.scrubber.scrub(text);
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
        let duration = clock.elapsed();
        let (outcome, failed_for_circuit) = classify(&answer, &wf.retry, row.attempt as u32);
        if let Some(change) = rt.target.circuit.record(failed_for_circuit, probe) {
            match change {
                CircuitView::Open => {
                    tracing::warn!(target_name = %rt.target.name, "circuit open: target failing; its rows wait without spending attempts")
                }
                _ => {
                    tracing::info!(target_name = %rt.target.name, "circuit closed: target answering again")
                }
            }
            if let Some(o) = &self.observer {
                o.circuit(&rt.target.name, change);
            }
        }
        let (http_status, response_excerpt, error) = match &answer {
            Answer::Status { status, body, .. } => (
                Some(*status),
                Some(excerpt(body, EXCERPT_BYTES)),
                outcome.error().map(str::to_string),
            ),
            Answer::Transport(_, msg) => (None, None, Some(msg.clone())),
        };
        Delivery {
            outcome,
            record: Some(AttemptRecord {
                started_at,
                duration,
                http_status,
                error,
                response_excerpt,
            }),
            on_done: rt.on_done.clone(),
            code,
        }
    }
}

impl Deliver for HttpDeliverer {
    async fn deliver(&self, row: &Claimed) -> Delivery {
        let d = self.deliver_row(row).await;
        self.observe(row, &d);
        d
    }

    fn paused(&self) -> Vec<String> {
        self.workflows
            .iter()
            .filter(|(_, w)| w.target.circuit.paused())
            .map(|(name, _)| name.clone())
            .chain(self.unconfigured.iter().cloned())
            .collect()
    }

    fn min_lease(&self) -> Duration {
        self.max_timeout
    }
}

fn target_runtime(t: &Target, registry: &Registry) -> Result<TargetRuntime, DeliveryError> {
    let timeout = registry
        .iter()
        .filter(|w| w.target.name == t.name)
        .map(|w| w.timeout)
        .max()
        .unwrap_or(Duration::from_secs(30));
    if !t.tls_verify {
        tracing::warn!(target_name = %t.name, "TLS certificate verification is OFF for this target (tls_verify = false)");
    }
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        // Never follow: a 3xx is classified (see `classify`), not chased with or without the body.
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(!t.tls_verify)
        .pool_max_idle_per_host(t.max_concurrency)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|cause| DeliveryError::Client {
            target: t.name.clone(),
            cause,
        })?;
    Ok(TargetRuntime {
        name: t.name.clone(),
        client,
        slots: Arc::new(Semaphore::new(t.max_concurrency.max(1))),
        circuit: Circuit::new(t.circuit),
        scrubber: Scrubber::for_auth(&t.auth),
    })
}

/// `Authorization` for a target: Basic is base64 of the UTF-8 bytes of `user:password`.
pub fn auth_header(auth: &Auth) -> Option<HeaderValue> {
    let text = match auth {
        Auth::None => return None,
        Auth::Basic { username, password } => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.expose()).as_bytes())
        ),
        Auth::Bearer { token } => format!("Bearer {}", token.expose()),
    };
    let mut v = HeaderValue::from_str(&text).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// What came back from one request (already scrubbed of the target's secrets).
#[derive(Debug, Clone)]
pub enum Answer {
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
        /// The `Location` header as sent (lossy UTF-8), for 3xx reasons.
        location: Option<String>,
    },
    Transport(TransportKind, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Timeout,
    Connect,
    /// The connection broke or the answer was not HTTP (reset mid-response, garbage).
    Broken,
}

/// Sort an answer into an outcome, in one place. Returns the outcome and whether it counts as
/// a failure of the target for its circuit breaker (retryable failures do; a 4xx or 3xx does
/// not: the target is up and said no).
///
/// 2xx is done. A 3xx (redirects are never followed) is dead with its `Location` in the reason,
/// unless the workflow lists the status in `retry_on_status`. Other statuses are retried when
/// listed and dead otherwise; transport failures as the policy says.
pub fn classify(answer: &Answer, policy: &RetryPolicy, attempt: u32) -> (Outcome, bool) {
    let (retryable, reason, floor) = match answer {
        Answer::Status { status, .. } if (200..300).contains(status) => {
            return (Outcome::Done, false)
        }
        Answer::Status {
            status, location, ..
        } if (300..400).contains(status) => {
            let reason = redirect_reason(*status, location.as_deref());
            if !policy.retries_status(*status) {
                return (Outcome::Dead { reason }, false);
            }
            (true, reason, None)
        }
        Answer::Status {
            status,
            body,
            retry_after,
            ..
        } => {
            let reason = format!(
                "HTTP {status} {}: {}",
                reqwest::StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or(""),
                excerpt(body.trim(), 512)
            );
            if !policy.retries_status(*status) {
                return (Outcome::Dead { reason }, false);
            }
            (true, reason, *retry_after)
        }
        Answer::Transport(kind, msg) => {
            let retryable = match kind {
                TransportKind::Timeout => policy.retry_on_timeout,
                TransportKind::Connect | TransportKind::Broken => policy.retry_on_connect_error,
            };
            (retryable, msg.clone(), None)
        }
    };
    if !retryable {
        return (Outcome::Dead { reason }, true);
    }
    match policy.next_wait(attempt) {
        Some(wait) if attempt < policy.max_attempts => {
            let after = match floor {
                Some(ra) => wait.max(ra.min(MAX_RETRY_AFTER)),
                None => wait,
            };
            (Outcome::Retry { after, reason }, true)
        }
        _ => (
            Outcome::Dead {
                reason: format!(
                    "attempts exhausted ({attempt} of {}); last: {reason}",
                    policy.max_attempts
                ),
            },
            true,
        ),
    }
}

/// The reason for a 3xx: where it pointed (bounded, control characters escaped) and what to do.
fn redirect_reason(status: u16, location: Option<&str>) -> String {
    const ADVICE: &str = "(redirects are not followed: fix the target URL in the workflow)";
    let Some(location) = location else {
        let name = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("redirect");
        return format!("HTTP {status} {name} without a Location header {ADVICE}");
    };
    let mut shown = String::new();
    for (i, c) in location.chars().enumerate() {
        if i == LOCATION_MAX_CHARS {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    format!("HTTP {status} redirect to {shown} {ADVICE}")
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
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
/// request").
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::{Backoff, Secret};

    fn onec_policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::Fixed(vec![
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_secs(10),
            ]),
            max_attempts: 4,
            retry_on_status: vec![500, 502, 503, 504],
            retry_on_timeout: true,
            retry_on_connect_error: true,
        }
    }

    fn status(code: u16) -> Answer {
        Answer::Status {
            status: code,
            body: "{}".into(),
            retry_after: None,
            location: None,
        }
    }

    fn redirect(code: u16, location: &str) -> Answer {
        Answer::Status {
            status: code,
            body: "<html>moved</html>".into(),
            retry_after: None,
            location: Some(location.into()),
        }
    }

    #[test]
    fn classification_follows_the_directive() {
        let p = onec_policy();
        assert_eq!(classify(&status(201), &p, 1).0, Outcome::Done);
        for code in [500, 502, 503, 504] {
            let (o, failed) = classify(&status(code), &p, 1);
            assert!(matches!(o, Outcome::Retry { after, .. } if after == Duration::from_secs(2)));
            assert!(failed);
        }
        let waits: Vec<_> = (1..=3)
            .map(|a| classify(&status(503), &p, a).0.wait().unwrap())
            .collect();
        assert_eq!(waits, [2, 5, 10].map(Duration::from_secs));
        let (o, _) = classify(&status(503), &p, 4);
        assert!(
            matches!(&o, Outcome::Dead { reason } if reason.contains("attempts exhausted (4 of 4)")),
            "{o:?}"
        );
        for code in [400, 401, 404, 409, 422, 429] {
            let (o, failed) = classify(&status(code), &p, 1);
            assert!(
                matches!(&o, Outcome::Dead { reason } if reason.contains(&code.to_string())),
                "{o:?}"
            );
            assert!(!failed);
        }
        let t = Answer::Transport(TransportKind::Timeout, "timed out".into());
        assert!(matches!(classify(&t, &p, 1).0, Outcome::Retry { .. }));
        let c = Answer::Transport(TransportKind::Connect, "refused".into());
        assert!(matches!(classify(&c, &p, 2).0, Outcome::Retry { .. }));
    }

    #[test]
    fn redirects_are_dead_by_default_with_their_location() {
        let p = onec_policy();
        for code in [301, 302, 303, 307, 308] {
            let (o, failed) = classify(&redirect(code, "http://1c.example/login?next=/hs"), &p, 1);
            assert_eq!(
                o,
                Outcome::Dead {
                    reason: format!(
                        "HTTP {code} redirect to http://1c.example/login?next=/hs (redirects are \
                         not followed: fix the target URL in the workflow)"
                    )
                }
            );
            assert!(!failed, "the target answered: not a circuit failure");
        }
        let (o, _) = classify(&status(304), &p, 1);
        assert_eq!(
            o.error(),
            Some(
                "HTTP 304 Not Modified without a Location header (redirects are not followed: \
                 fix the target URL in the workflow)"
            )
        );
        // Control characters escaped (no forged log lines), length bounded.
        let hostile = format!("http://x/\r\nFAKE: 1\u{1b}[31m{}", "a".repeat(10_000));
        let (o, _) = classify(&redirect(302, &hostile), &p, 1);
        let reason = o.error().unwrap();
        assert!(
            reason.starts_with("HTTP 302 redirect to http://x/\\r\\nFAKE: 1\\u{1b}[31maaa"),
            "{reason}"
        );
        assert!(!reason.chars().any(char::is_control), "{reason}");
        assert!(reason.len() < LOCATION_MAX_CHARS + 150, "{}", reason.len());
        assert!(
            reason.contains("a… (redirects are not followed"),
            "{reason}"
        );
    }

    #[test]
    fn a_redirect_listed_as_retryable_is_retried_then_dead() {
        let mut p = onec_policy();
        p.retry_on_status.push(307);
        let (o, failed) = classify(&redirect(307, "http://elsewhere/"), &p, 1);
        assert!(
            matches!(&o, Outcome::Retry { after, reason } if *after == Duration::from_secs(2) && reason.starts_with("HTTP 307 redirect to http://elsewhere/")),
            "{o:?}"
        );
        assert!(failed);
        let (o, _) = classify(&redirect(307, "http://elsewhere/"), &p, 4);
        assert!(
            o.error()
                .unwrap()
                .starts_with("attempts exhausted (4 of 4); last: HTTP 307 redirect"),
            "{o:?}"
        );
        // Another 3xx is still dead.
        assert!(matches!(
            classify(&redirect(302, "/"), &p, 1).0,
            Outcome::Dead { .. }
        ));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = onec_policy();
        let a = Answer::Status {
            status: 503,
            body: String::new(),
            retry_after: Some(Duration::from_secs(30)),
            location: None,
        };
        assert_eq!(classify(&a, &p, 1).0.wait(), Some(Duration::from_secs(30)));
        let a = Answer::Status {
            status: 503,
            body: String::new(),
            retry_after: Some(Duration::from_secs(1)),
            location: None,
        };
        assert_eq!(classify(&a, &p, 1).0.wait(), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn basic_auth_is_utf8_base64_and_hidden() {
        let v = auth_header(&Auth::Basic {
            username: "Администратор".into(),
            password: Secret::new("пароль"),
        })
        .unwrap();
        assert!(v.is_sensitive());
        let b64 = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(raw, "Администратор:пароль".as_bytes());
        assert!(!format!("{v:?}").contains(b64));
    }
}
