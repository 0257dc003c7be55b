//! HTTP delivery: turns a claimed row into a request as its workflow says, and the answer into an
//! [`Outcome`].
//!
//! One delivery runs through five stages, each a small function with one job
//! ([`HttpDeliverer`]'s `deliver_row` reads as the list):
//!
//! ```text
//!  prepare ──▶ admit ──▶ authenticate ──▶ send ──▶ judge ──▶ conclude
//!  workflow,   circuit   target's          slot,     workflow's  classify, circuit,
//!  document,   breaker   Authenticator     request,  ResponseRule  attempt record,
//!  budget                    ▲             answer       │         on_done
//!                            └── 401: refresh, repeat once (same attempt)
//! ```
//!
//! * **prepare**: find the workflow, parse and validate the document, check the attempt budget.
//!   A row that fails here is dead (or handed back, for a workflow not configured on this host)
//!   without a request.
//! * **admit**: the target's [`circuit::Circuit`] decides before the row takes a target slot;
//!   while it is open the row is handed back without spending its attempt.
//! * **authenticate**: the target's [`Authenticator`] gives the `Authorization` value. It is the
//!   seam for kinds that log in and cache a token; the kinds a workflow file declares today
//!   ([`auth::NoAuth`], [`auth::StaticAuth`] for Basic and bearer) are fixed at start-up.
//! * **send** (`send.rs`): a target slot, then the request with `Idempotency-Key: <outbox id>` and
//!   a new `X-Request-Id`, no redirects followed, a bounded body read, and every text taken from
//!   the answer scrubbed of the target's secrets (`scrub.rs`).
//! * **judge**: the workflow's [`ResponseRule`] says what the answer means, as a [`Verdict`]; the
//!   default [`StatusRule`] judges by status and the workflow's `retry_on_*` lists. When the rule
//!   says the credential was rejected (HTTP 401 by default), the authenticator is asked to
//!   refresh it and, if it could, the request is repeated once within the same attempt; the
//!   fixed kinds cannot refresh, so a 401 is judged as it stands (dead unless listed).
//! * **conclude**: [`classify`], the one place outcomes are sorted, turns the verdict into an
//!   [`Outcome`] with the retry policy; the circuit hears the result; the attempt record and the
//!   workflow's `on_done` SQL go with the [`Delivery`].
//!
//! Before the slot and the credential are waited for, the delivery calls
//! [`crate::relay::mark_waiting`]; right before the request leaves, [`crate::relay::mark_sending`]:
//! a shutdown that cuts it off in between hands the row back without spending its attempt.
//!
//! Per target (workflows naming the same target share these): one HTTP client, a concurrency
//! cap, a circuit breaker and an authenticator. Secrets: credentials are header values marked
//! sensitive (reqwest's Debug hides them) and never logged.

pub mod auth;
pub mod circuit;
pub mod rules;
pub mod scrub;
mod send;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use crate::documents::DocumentKind;
use crate::outbox::{excerpt, AttemptRecord, Claimed, OnDoneSql, Outcome};
use crate::relay::{Deliver, Delivery};
use crate::workflow::{bind_params, ParamStyle, Registry, Target, Workflow};
use circuit::{Admit, Circuit, CircuitView};

pub use auth::{auth_header, AuthFailure, AuthState, Authenticator, Refresh};
pub use rules::{
    classify, parse_retry_after, Answer, ResponseRule, StatusRule, TransportKind, Verdict,
};

/// How much of a response body is kept in `ferry_attempts.response_excerpt` and errors.
pub const EXCERPT_BYTES: usize = 2048;

/// Errors building the deliverer. Workflow content cannot cause one: a loaded [`Registry`] holds
/// only valid workflows (methods, headers and URLs already parsed).
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

/// What a target's deliveries share.
struct TargetRuntime {
    name: String,
    client: reqwest::Client,
    /// Its `max_concurrency`.
    slots: Semaphore,
    circuit: Circuit,
    /// Gives the credential, and masks the target's secrets in everything that comes back.
    auth: Arc<dyn Authenticator>,
}

/// A workflow, ready to send.
struct WorkflowRuntime {
    workflow: Workflow,
    /// Index into [`HttpDeliverer::targets`].
    target: usize,
    /// `Content-Type` and `Accept`, then the workflow's own headers.
    headers: HeaderMap,
    rule: Arc<dyn ResponseRule>,
    on_done: Option<Arc<OnDoneSql>>,
}

/// Delivers rows over HTTP as the workflows in a [`Registry`] say.
pub struct HttpDeliverer {
    workflows: HashMap<String, WorkflowRuntime>,
    targets: Vec<TargetRuntime>,
    known: String,
    /// Valid workflows whose variables are unset here: never claimed, so their rows wait.
    unconfigured: Vec<String>,
    max_timeout: Duration,
    observer: Option<Arc<dyn DeliveryObserver>>,
}

impl HttpDeliverer {
    /// Build clients and runtimes for every workflow: per target its client, slots, circuit and
    /// the authenticator its `auth` declares; per workflow the default [`StatusRule`].
    ///
    /// # Errors
    /// When a client cannot be built (TLS set-up).
    pub fn new(registry: &Registry) -> Result<HttpDeliverer, DeliveryError> {
        let mut targets = Vec::new();
        let mut target_index: HashMap<&str, usize> = HashMap::new();
        for target in registry.targets() {
            target_index.insert(&target.name, targets.len());
            targets.push(target_runtime(target, registry)?);
        }
        let workflows = registry
            .iter()
            .map(|wf| {
                let target = target_index[wf.target.name.as_str()];
                (wf.name.clone(), workflow_runtime(wf, target))
            })
            .collect();
        let known = registry
            .iter()
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(HttpDeliverer {
            workflows,
            targets,
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

    /// Authenticate requests to `target` with `auth` instead of what the workflow files declare
    /// (a kind that logs in). An unknown target name changes nothing.
    pub fn with_authenticator(mut self, target: &str, auth: Arc<dyn Authenticator>) -> Self {
        if let Some(t) = self.targets.iter_mut().find(|t| t.name == target) {
            t.auth = auth;
        }
        self
    }

    /// Judge the answers of `workflow` with `rule` instead of the default [`StatusRule`] (a
    /// target that reports failure in the body). An unknown workflow name changes nothing.
    pub fn with_rule(mut self, workflow: &str, rule: Arc<dyn ResponseRule>) -> Self {
        if let Some(w) = self.workflows.get_mut(workflow) {
            w.rule = rule;
        }
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

    /// What each target's authenticator holds, for status displays.
    pub fn auth_states(&self) -> Vec<(String, AuthState)> {
        let mut v: Vec<_> = self
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.auth.state()))
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

    /// The stages, in order; each returns early with the row's [`Delivery`] when it decides it.
    async fn deliver_row(&self, row: &Claimed) -> Delivery {
        let job = match self.prepare(row) {
            Ok(job) => job,
            Err(early) => return early.delivery(),
        };
        // Until the request leaves, a shutdown that cuts this delivery off hands the row back
        // without spending its attempt.
        crate::relay::mark_waiting();
        // Paused by an operator since the claim: hand the row back, no attempt spent.
        if crate::relay::is_paused(&row.workflow) {
            return Early::new(
                job.code.clone(),
                Outcome::Release {
                    after: Duration::ZERO,
                },
            )
            .delivery();
        }
        let probe = match admit(&job) {
            Ok(probe) => probe,
            Err(early) => return early.delivery(),
        };
        let exchange = exchange(&job).await;
        let verdict = judge(&job, &exchange.result);
        self.conclude(&job, probe, exchange, verdict)
    }

    /// Stage 1: the workflow, the document and the attempt budget.
    fn prepare<'a>(&'a self, row: &'a Claimed) -> Result<Job<'a>, Early> {
        let Some(rt) = self.workflows.get(&row.workflow) else {
            if self.unconfigured.contains(&row.workflow) {
                // Not claimed on purpose (see `paused`); should one slip through, hand it back
                // without spending an attempt rather than kill a row that only waits for set-up.
                return Err(Early::new(
                    None,
                    Outcome::Release {
                        after: Duration::from_secs(60),
                    },
                ));
            }
            return Err(Early::dead(
                None,
                format!(
                    "unknown workflow '{}': no file workflows/{}.toml is loaded (known: {})",
                    row.workflow, row.workflow, self.known
                ),
            ));
        };
        let wf = &rt.workflow;
        // The database only stores valid JSON (jsonb / json_valid), so a plain-JSON workflow
        // with no document code to log skips parsing on the hot path.
        let code = if wf.document == DocumentKind::Json && wf.identify_by.is_none() {
            None
        } else {
            let payload: serde_json::Value = serde_json::from_str(&row.payload)
                .map_err(|e| Early::dead(None, format!("payload is not valid JSON: {e}")))?;
            let code = wf.document_code(&payload);
            if let Err(e) = wf.document.validate(&payload) {
                return Err(Early::dead(code, e.to_string()));
            }
            code
        };
        let max = wf.retry.max_attempts as i32;
        if row.attempt > max {
            return Err(Early::dead(
                code,
                format!(
                    "attempt budget spent: this is claim {} of at most {max}; earlier attempts \
                     were lost with relays that stopped mid-delivery",
                    row.attempt
                ),
            ));
        }
        Ok(Job {
            row,
            workflow: rt,
            target: &self.targets[rt.target],
            code,
        })
    }

    /// Stage 5: sort the verdict into an outcome, tell the circuit, build the delivery.
    fn conclude(
        &self,
        job: &Job<'_>,
        probe: bool,
        exchange: Exchange,
        verdict: Verdict,
    ) -> Delivery {
        let wf = &job.workflow.workflow;
        let target_failed = verdict.target_failed();
        let outcome = classify(verdict, &wf.retry, job.row.attempt as u32);
        self.record_circuit(job.target, target_failed, probe);
        let (http_status, response_excerpt, error) = match &exchange.result {
            Ok(Answer::Status { status, body, .. }) => (
                Some(*status),
                Some(excerpt(body, EXCERPT_BYTES)),
                outcome.error().map(str::to_string),
            ),
            Ok(Answer::Transport(_, msg)) => (None, None, Some(msg.clone())),
            Err(_) => (None, None, outcome.error().map(str::to_string)),
        };
        Delivery {
            outcome,
            record: Some(AttemptRecord {
                started_at: exchange.started_at,
                duration: exchange.began.elapsed(),
                http_status,
                error,
                response_excerpt,
            }),
            on_done: job.workflow.on_done.clone(),
            code: job.code.clone(),
        }
    }

    fn record_circuit(&self, target: &TargetRuntime, failed: bool, probe: bool) {
        let Some(change) = target.circuit.record(failed, probe) else {
            return;
        };
        match change {
            CircuitView::Open => {
                tracing::warn!(target_name = %target.name, "circuit open: target failing; its rows wait without spending attempts")
            }
            _ => {
                tracing::info!(target_name = %target.name, "circuit closed: target answering again")
            }
        }
        if let Some(o) = &self.observer {
            o.circuit(&target.name, change);
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
            .filter(|(_, w)| self.targets[w.target].circuit.paused())
            .map(|(name, _)| name.clone())
            .chain(self.unconfigured.iter().cloned())
            .collect()
    }

    fn workflows_of_target(&self, target: &str) -> Vec<String> {
        self.workflows
            .iter()
            .filter(|(_, w)| self.targets[w.target].name == target)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn min_lease(&self) -> Duration {
        self.max_timeout
    }
}

/// A row that passed `prepare`: what the later stages work on.
struct Job<'a> {
    row: &'a Claimed,
    workflow: &'a WorkflowRuntime,
    target: &'a TargetRuntime,
    /// The document's own code, for logs.
    code: Option<String>,
}

/// A delivery decided before any request.
struct Early {
    code: Option<String>,
    outcome: Outcome,
}

impl Early {
    fn new(code: Option<String>, outcome: Outcome) -> Early {
        Early { code, outcome }
    }

    fn dead(code: Option<String>, reason: String) -> Early {
        Early::new(code, Outcome::Dead { reason })
    }

    fn delivery(self) -> Delivery {
        Delivery {
            code: self.code,
            ..Delivery::without_attempt(self.outcome)
        }
    }
}

/// What the request stages produced: the answer, or why no credential could be had.
struct Exchange {
    result: Result<Answer, AuthFailure>,
    /// When the (first) request left, or when authenticating began if none did.
    started_at: DateTime<Utc>,
    began: Instant,
}

/// Stage 2: may a request go to the target now? `Ok(true)` when it is the circuit's probe.
fn admit(job: &Job<'_>) -> Result<bool, Early> {
    match job.target.circuit.admit() {
        Admit::Go => Ok(false),
        Admit::Probe => Ok(true),
        Admit::Wait(after) => Err(Early::new(job.code.clone(), Outcome::Release { after })),
    }
}

/// Stages 3 and 4: authenticate, send; when the workflow's rule says the credential was
/// rejected, ask the authenticator to refresh it and, if it did, send once more. Both requests
/// belong to the row's one attempt.
async fn exchange(job: &Job<'_>) -> Exchange {
    let auth = &*job.target.auth;
    let mut first: Option<(DateTime<Utc>, Instant)> = None;
    let mut renewed = false;
    loop {
        let asked = (Utc::now(), Instant::now());
        let credential = match authenticate(job.target).await {
            Ok(credential) => credential,
            Err(failure) => {
                let (started_at, began) = first.unwrap_or(asked);
                return Exchange {
                    result: Err(failure),
                    started_at,
                    began,
                };
            }
        };
        let sent = send::send(job.target, job.request(credential.as_ref())).await;
        let (started_at, began) = *first.get_or_insert((sent.started_at, sent.began));
        let done = |result| Exchange {
            result,
            started_at,
            began,
        };
        if renewed || !job.workflow.rule.credential_rejected(&sent.answer) {
            return done(Ok(sent.answer));
        }
        match auth.refresh(credential.as_ref()).await {
            Refresh::Renewed => {
                tracing::info!(
                    target_name = %job.target.name,
                    outbox.id = job.row.id,
                    "credential rejected; renewed, repeating the request once"
                );
                renewed = true;
            }
            Refresh::CannotRefresh => return done(Ok(sent.answer)),
            Refresh::Failed(failure) => return done(Err(failure)),
        }
    }
}

/// Stage 3: the target's credential (`None`: send no `Authorization`).
async fn authenticate(target: &TargetRuntime) -> Result<Option<HeaderValue>, AuthFailure> {
    let credential = target.auth.credential().await;
    if let Err(failure) = &credential {
        // The attempt's outcome is logged with the reason by the relay; this names the target.
        tracing::debug!(target_name = %target.name, ?failure, "no credential for the target");
    }
    credential
}

/// Stage 4's judgement: what the answer (or the failure to authenticate) means.
fn judge(job: &Job<'_>, result: &Result<Answer, AuthFailure>) -> Verdict {
    match result {
        Ok(answer) => job.workflow.rule.judge(answer),
        Err(failure) => failure.clone().verdict(),
    }
}

impl Job<'_> {
    fn request<'a>(&'a self, credential: Option<&'a HeaderValue>) -> send::Request<'a> {
        let wf = &self.workflow.workflow;
        send::Request {
            method: &wf.method,
            url: &wf.endpoint,
            headers: &self.workflow.headers,
            credential,
            timeout: wf.timeout,
            outbox_id: self.row.id,
            body: &self.row.payload,
        }
    }
}

fn target_runtime(t: &Target, registry: &Registry) -> Result<TargetRuntime, DeliveryError> {
    let timeout = registry
        .iter()
        .filter(|w| w.target.name == t.name)
        .map(|w| w.timeout)
        .max()
        .unwrap_or(Duration::from_secs(30));
    let client = send::client(t, timeout).map_err(|cause| DeliveryError::Client {
        target: t.name.clone(),
        cause,
    })?;
    Ok(TargetRuntime {
        name: t.name.clone(),
        client,
        slots: Semaphore::new(t.max_concurrency.max(1)),
        circuit: Circuit::new(t.circuit),
        auth: auth::authenticator(&t.auth),
    })
}

fn workflow_runtime(wf: &Workflow, target: usize) -> WorkflowRuntime {
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
    WorkflowRuntime {
        workflow: wf.clone(),
        target,
        headers,
        rule: Arc::new(StatusRule::new(&wf.retry)),
        on_done,
    }
}
