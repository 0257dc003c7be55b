//! The relay: claims due rows, hands each to a [`Deliver`] implementation, and records the
//! outcomes.
//!
//! Two ways to drive it:
//! * [`Relay::tick`] / [`Relay::drain`]: one claim–deliver–complete step, or steps until nothing is
//!   due. Tests and one-shot commands use these; no timing is involved.
//! * [`Relay::run`]: the daemon loop. A claimer takes as many rows as there are free delivery
//!   slots, each row is delivered on its own task, a completer records outcomes in batches (the
//!   slot is freed only once the outcome is recorded, which is the backpressure), and a renewer
//!   pushes the leases of rows still in flight. When nothing is due the claimer sleeps on the
//!   store's [`crate::outbox::Waiter`] (LISTEN/NOTIFY, commit hooks) with a poll as fallback. On
//!   shutdown it stops claiming, lets in-flight deliveries finish within a grace period, and hands
//!   back (releases) whatever it still holds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use futures_util::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::outbox::{
    AttemptRecord, Claimed, Completion, OnDoneSql, Outcome, Recorded, Store, StoreError,
};

/// Told about every outcome once the database has recorded it (never before: a completion that
/// is refused as stale, or whose `on_done` SQL fails, is reported as what it became), and about
/// the number of rows in flight. Metrics implement it.
pub trait RelayObserver: Send + Sync + 'static {
    /// One outcome as recorded. `row` is the claimed row's workflow and enqueue time.
    fn recorded(&self, row: &RowInfo, completion: &Completion, recorded: &Recorded);
    /// Rows this relay holds right now (claimed, not yet recorded).
    fn in_flight(&self, _rows: usize) {}
}

/// What an observer needs to know of a recorded row besides its completion.
#[derive(Debug, Clone)]
pub struct RowInfo {
    pub workflow: String,
    pub created_at: DateTime<Utc>,
}

impl RowInfo {
    fn of(row: &Claimed) -> RowInfo {
        RowInfo {
            workflow: row.workflow.clone(),
            created_at: row.created_at,
        }
    }
}

tokio::task_local! {
    /// Set by the relay on each delivery task: where the delivery stands, so that a delivery cut
    /// off at the end of the shutdown grace period is recorded as an `aborted` attempt only when
    /// its request may have reached the target.
    static PHASE: Arc<AtomicU8>;

    /// Set by the relay on each delivery task: the workflows paused by an operator as last seen
    /// (see [`is_paused`]).
    static PAUSED: Arc<std::sync::RwLock<Vec<String>>>;
}

/// How often a relay reads `ferry_paused` at most.
pub const PAUSE_REFRESH: Duration = Duration::from_millis(500);

/// Whether an operator paused `workflow` (directly or through its target), as the relay running
/// this delivery last read it (at most [`PAUSE_REFRESH`] ago). A deliverer asks after waiting
/// and before sending, and hands a paused row back with [`Outcome::Release`] (no attempt
/// spent). Outside a relay's delivery task: false.
pub fn is_paused(workflow: &str) -> bool {
    PAUSED
        .try_with(|p| {
            p.read()
                .map(|p| p.iter().any(|w| w == workflow))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

const PHASE_UNKNOWN: u8 = 0;
const PHASE_WAITING: u8 = 1;
const PHASE_SENDING: u8 = 2;

/// Called by a deliverer before it waits for anything that precedes its request (a target slot,
/// a token): if the relay must cut the delivery off now, the row is handed back without
/// spending an attempt. A deliverer that never calls it is treated as possibly sending.
pub fn mark_waiting() {
    let _ = PHASE.try_with(|p| p.store(PHASE_WAITING, Ordering::Relaxed));
}

/// Called by a deliverer right before its request leaves: from now on, cutting the delivery off
/// spends the attempt (recorded as `aborted`).
pub fn mark_sending() {
    let _ = PHASE.try_with(|p| p.store(PHASE_SENDING, Ordering::Relaxed));
}

/// What a delivery attempt produced.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub outcome: Outcome,
    /// `None` when no request was made (invalid document, unknown workflow, circuit open).
    pub record: Option<AttemptRecord>,
    /// SQL to run in the transaction that marks the row done.
    pub on_done: Option<Arc<OnDoneSql>>,
    /// The document's own code (e.g. the invoice number), for logs.
    pub code: Option<String>,
}

impl Delivery {
    /// An outcome with nothing attempted.
    pub fn without_attempt(outcome: Outcome) -> Self {
        Delivery {
            outcome,
            record: None,
            on_done: None,
            code: None,
        }
    }
}

/// Sends one claimed row somewhere. The HTTP implementation is
/// [`crate::delivery::HttpDeliverer`]; tests may use their own sinks.
pub trait Deliver: Send + Sync + 'static {
    /// Deliver one row and classify the result. Must not panic; must finish within the
    /// lease the relay took (the relay renews leases, but a delivery that never ends holds its
    /// row until the relay stops).
    fn deliver(&self, row: &Claimed) -> impl Future<Output = Delivery> + Send;

    /// Workflows whose rows should not be claimed right now (their target is known down).
    fn paused(&self) -> Vec<String> {
        Vec::new()
    }

    /// The workflows that send to `target` (for `ferry pause --target`).
    fn workflows_of_target(&self, _target: &str) -> Vec<String> {
        Vec::new()
    }

    /// The shortest lease this deliverer's rows need: its longest request timeout plus the time
    /// a row may wait for a per-target slot. The relay adds its margin on top.
    fn min_lease(&self) -> Duration {
        Duration::ZERO
    }
}

/// Relay settings. See each field for why it exists.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most rows taken by one claim. Larger batches mean fewer round trips.
    pub batch_size: u32,
    /// Most rows in flight at once in this relay (delivered but not yet recorded).
    pub concurrency: usize,
    /// Added to the deliverer's [`Deliver::min_lease`]: time for recording the outcome, GC
    /// pauses and clock drift between the database and a slow network.
    pub lease_margin: Duration,
    /// Fallback poll when no wake-up arrives (notifications can be lost; poolers can drop them).
    pub poll_interval: Duration,
    /// Use LISTEN/NOTIFY on PostgreSQL. Turn off behind a transaction-mode connection pooler.
    pub listen: bool,
    /// How long shutdown waits for in-flight deliveries before releasing their rows.
    pub shutdown_grace: Duration,
    /// Most outcomes recorded in one transaction.
    pub completion_batch: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 256,
            concurrency: 128,
            lease_margin: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            listen: true,
            shutdown_grace: Duration::from_secs(30),
            completion_batch: 512,
        }
    }
}

/// Counters of what a relay did since it started. Shared with metrics and the demo.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub claimed: AtomicU64,
    pub done: AtomicU64,
    pub retried: AtomicU64,
    pub dead: AtomicU64,
    pub released: AtomicU64,
    pub stale: AtomicU64,
    /// Requests cut off when the shutdown grace period ended (recorded as `aborted` attempts).
    pub aborted: AtomicU64,
    pub store_errors: AtomicU64,
    /// Claims failed in a row (0 after a claim that worked): readiness reports the relay as not
    /// ready while claims keep failing.
    pub claim_failures: AtomicU64,
    last_claim_error: Mutex<Option<String>>,
}

impl RelayStats {
    fn count(&self, outcome: &Outcome, recorded: &Recorded) {
        let c = match (recorded, outcome) {
            (Recorded::Stale | Recorded::Gone, _) => &self.stale,
            (Recorded::OnDoneFailed(_), _) => &self.dead,
            (_, Outcome::Done) => &self.done,
            (_, Outcome::Retry { .. }) => &self.retried,
            (_, Outcome::Dead { .. }) => &self.dead,
            (_, Outcome::Release { .. }) => &self.released,
            (_, Outcome::Aborted { .. }) => &self.aborted,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn claim_ok(&self) {
        if self.claim_failures.swap(0, Ordering::Relaxed) != 0 {
            *self.last_claim_error.lock().expect("claim error lock") = None;
        }
    }

    fn claim_failed(&self, e: &StoreError) {
        self.claim_failures.fetch_add(1, Ordering::Relaxed);
        *self.last_claim_error.lock().expect("claim error lock") = Some(e.to_string());
    }

    /// `Err` with the last error while the relay's claims keep failing (two or more in a row):
    /// a relay that cannot claim is not ready, whatever a ping of the database says.
    pub fn claim_health(&self) -> Result<(), String> {
        let n = self.claim_failures.load(Ordering::Relaxed);
        if n < 2 {
            return Ok(());
        }
        let last = self
            .last_claim_error
            .lock()
            .expect("claim error lock")
            .clone()
            .unwrap_or_default();
        Err(format!("the last {n} claims failed: {last}"))
    }
}

/// What [`Relay::tick`] or [`Relay::drain`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub claimed: usize,
    pub done: usize,
    pub retried: usize,
    pub dead: usize,
    pub released: usize,
    pub stale: usize,
}

impl TickReport {
    fn add(&mut self, outcome: &Outcome, recorded: &Recorded) {
        match (recorded, outcome) {
            (Recorded::Stale | Recorded::Gone, _) => self.stale += 1,
            (Recorded::OnDoneFailed(_), _) => self.dead += 1,
            (_, Outcome::Done) => self.done += 1,
            (_, Outcome::Retry { .. }) => self.retried += 1,
            (_, Outcome::Dead { .. }) => self.dead += 1,
            (_, Outcome::Release { .. }) => self.released += 1,
            (_, Outcome::Aborted { .. }) => self.retried += 1,
        }
    }
}

/// A relay over one store and one deliverer.
pub struct Relay<D: Deliver> {
    store: Store,
    deliver: Arc<D>,
    config: RelayConfig,
    stats: Arc<RelayStats>,
    observer: Option<Arc<dyn RelayObserver>>,
    /// Workflows paused by an operator (`ferry_paused`), and when they were read.
    pause: Arc<std::sync::RwLock<Vec<String>>>,
    pause_read: Mutex<Option<tokio::time::Instant>>,
}

impl<D: Deliver> Relay<D> {
    /// The claim's skip list: the deliverer's own (targets known down, unconfigured workflows)
    /// and the workflows an operator paused, read from the database at most every
    /// [`PAUSE_REFRESH`]. A failed read keeps the last set.
    async fn skip_list(&self) -> Vec<String> {
        let stale = self
            .pause_read
            .lock()
            .expect("pause lock")
            .is_none_or(|at| at.elapsed() >= PAUSE_REFRESH);
        if stale {
            match self.store.paused().await {
                Ok(lines) => {
                    let mut set: Vec<String> = Vec::new();
                    for l in lines {
                        if l.kind == "target" {
                            set.extend(self.deliver.workflows_of_target(&l.name));
                        } else {
                            set.push(l.name);
                        }
                    }
                    set.sort();
                    set.dedup();
                    *self.pause.write().expect("pause lock") = set;
                    *self.pause_read.lock().expect("pause lock") =
                        Some(tokio::time::Instant::now());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading ferry_paused failed; keeping the last set")
                }
            }
        }
        let mut skip = self.deliver.paused();
        skip.extend(self.pause.read().expect("pause lock").iter().cloned());
        skip
    }

    /// Whether anything is paused by an operator (as last read).
    fn any_paused(&self) -> bool {
        !self.pause.read().expect("pause lock").is_empty()
    }

    pub fn new(store: Store, deliver: Arc<D>, config: RelayConfig) -> Self {
        Relay {
            store,
            deliver,
            config,
            stats: Arc::new(RelayStats::default()),
            observer: None,
            pause: Arc::default(),
            pause_read: Mutex::new(None),
        }
    }

    /// Report recorded outcomes and rows in flight to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn RelayObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The counters this relay updates.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// The lease taken on claimed rows: never shorter than the deliverer's longest request
    /// timeout plus the margin, so a slow but live delivery is not taken up a second time.
    pub fn lease(&self) -> Duration {
        self.deliver.min_lease() + self.config.lease_margin
    }

    /// One step: claim a batch, deliver it (up to `concurrency` at once), record the outcomes.
    ///
    /// # Errors
    /// Database errors from the claim or the completion. A failed completion leaves its rows in
    /// `sending` until their lease expires; they are then taken up again.
    pub async fn tick(&self) -> Result<TickReport, StoreError> {
        let rows = self
            .store
            .claim(
                self.config.batch_size,
                self.lease(),
                &self.skip_list().await,
            )
            .await?;
        let mut report = TickReport {
            claimed: rows.len(),
            ..TickReport::default()
        };
        if rows.is_empty() {
            return Ok(report);
        }
        self.stats
            .claimed
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let deliver = &self.deliver;
        let pause = &self.pause;
        let finished: Vec<(RowInfo, Completion)> = futures_util::stream::iter(rows)
            .map(|row| async move {
                let d = PAUSED
                    .scope(pause.clone(), deliver_unless_paused(&**deliver, &row))
                    .await;
                (RowInfo::of(&row), completion(&row, d))
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let (infos, completions): (Vec<RowInfo>, Vec<Completion>) = finished.into_iter().unzip();
        let recorded = self.store.complete(&completions).await?;
        for ((info, c), r) in infos.iter().zip(&completions).zip(&recorded) {
            report.add(&c.outcome, r);
            self.stats.count(&c.outcome, r);
            if let Some(o) = &self.observer {
                o.recorded(info, c, r);
            }
            log_recorded(c, r);
        }
        Ok(report)
    }

    /// Tick until a claim finds nothing due. Rows waiting in `retry_wait` for a later time are
    /// not waited for.
    pub async fn drain(&self) -> Result<TickReport, StoreError> {
        let mut total = TickReport::default();
        loop {
            let r = self.tick().await?;
            if r.claimed == 0 {
                return Ok(total);
            }
            total.claimed += r.claimed;
            total.done += r.done;
            total.retried += r.retried;
            total.dead += r.dead;
            total.released += r.released;
            total.stale += r.stale;
        }
    }

    /// The daemon loop; returns after `shutdown` is cancelled and in-flight work is settled.
    ///
    /// The whole exit after `shutdown` is bounded by [`RelayConfig::shutdown_grace`], whatever
    /// the database or the targets do: in-flight deliveries get the grace period less a short
    /// reserve; what is cut off is recorded (`aborted` when its request may have left, handed
    /// back otherwise) within the reserve. What cannot be recorded in time (the database is
    /// down) stays `sending` under its lease and is taken up again when the lease expires.
    pub async fn run(&self, shutdown: CancellationToken) {
        let lease = self.lease();
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let held: Held = Arc::new(Mutex::new(HashMap::new()));
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Finished>();
        // Cancelled when the shutdown's time is up: everything still talking to the database
        // gives up then.
        let give_up = CancellationToken::new();

        let completer = tokio::spawn(completer(
            self.store.clone(),
            done_rx,
            held.clone(),
            self.stats.clone(),
            self.observer.clone(),
            self.config.completion_batch.max(1),
            give_up.clone(),
        ));
        let renewer_stop = CancellationToken::new();
        let renewer = tokio::spawn(renewer(
            self.store.clone(),
            held.clone(),
            lease,
            renewer_stop.clone(),
        ));

        let mut waiter = None;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        // Under load, claim in batches of at least this many rows: a claim and its completions
        // cost about the same for 1 row as for 100 (round trips and commits), so claiming a
        // row per freed slot would spend the database on overhead.
        let concurrency = self.config.concurrency.max(1);
        let low_water = (self.config.batch_size as usize)
            .min(concurrency.div_ceil(2))
            .max(1);
        // Whether the last claim found fewer rows than it asked for: the queue is drained, and
        // any row that comes in is claimed at once, whatever the number of free slots.
        let mut drained = true;
        let mut tasks: JoinSet<()> = JoinSet::new();
        tracing::info!(
            backend = self.store.backend_name(),
            lease_s = lease.as_secs_f64(),
            concurrency = self.config.concurrency,
            "relay started"
        );

        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            if waiter.is_none() {
                let opened = tokio::select! {
                    w = self.store.waiter(self.config.listen) => w,
                    _ = shutdown.cancelled() => break,
                };
                match opened {
                    Ok(w) => waiter = Some(w),
                    Err(e) => {
                        self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                        self.stats.claim_failed(&e);
                        let wait = backoff.next_wait();
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "database unavailable; will retry");
                        sleep_or_cancel(wait, &shutdown).await;
                        continue;
                    }
                }
            }
            // Wait for free slots: one when the queue was drained, a batch's worth under load.
            let need = if drained { 1 } else { low_water };
            if slots.available_permits() < need {
                tokio::select! {
                    p = slots.clone().acquire_many_owned(need as u32) => drop(p),
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let free = slots.available_permits();
            let want = (free as u32).min(self.config.batch_size);
            // A claim cut off by shutdown may have committed: its rows stay `sending` under
            // their lease and are taken up again when it expires. Nothing is lost.
            let paused = self.skip_list().await;
            let claimed = tokio::select! {
                c = self.store.claim(want, lease, &paused) => c,
                _ = shutdown.cancelled() => break,
            };
            let rows = match claimed {
                Ok(rows) => {
                    backoff.reset();
                    self.stats.claim_ok();
                    rows
                }
                Err(e) => {
                    self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    self.stats.claim_failed(&e);
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "claim failed; backing off");
                    sleep_or_cancel(wait, &shutdown).await;
                    continue;
                }
            };
            let got = rows.len();
            // A short claim means nothing more is due, unless the claim's payload budget cut it
            // short (then more rows may be waiting: claim again at once).
            let bytes: usize = rows.iter().map(|r| r.payload.len()).sum();
            let cut_by_budget =
                bytes + crate::outbox::MAX_PAYLOAD_BYTES > crate::outbox::CLAIM_PAYLOAD_BUDGET;
            drained = got < want as usize && !cut_by_budget;
            self.stats.claimed.fetch_add(got as u64, Ordering::Relaxed);
            let claimed_at = Utc::now();
            let clock = tokio::time::Instant::now();
            let mut phases = Vec::with_capacity(got);
            {
                let mut h = held.lock().expect("held lock");
                for row in &rows {
                    let phase = Arc::new(AtomicU8::new(PHASE_UNKNOWN));
                    phases.push(phase.clone());
                    h.insert(
                        row.id,
                        HeldRow {
                            token: row.token,
                            attempt: row.attempt,
                            key: row.key.clone(),
                            info: RowInfo::of(row),
                            claimed_at,
                            clock,
                            phase,
                            delivered: false,
                        },
                    );
                }
                if let Some(o) = &self.observer {
                    o.in_flight(h.len());
                }
            }
            for (row, phase) in rows.into_iter().zip(phases) {
                let permit = slots
                    .clone()
                    .try_acquire_owned()
                    .expect("claimed no more rows than free slots");
                let deliver = self.deliver.clone();
                let tx = done_tx.clone();
                let held = held.clone();
                let pause = self.pause.clone();
                tasks.spawn(PHASE.scope(
                    phase,
                    PAUSED.scope(pause, async move {
                        let d = deliver_unless_paused(&*deliver, &row).await;
                        if let Some(h) = held.lock().expect("held lock").get_mut(&row.id) {
                            h.delivered = true;
                        }
                        let _ = tx.send(Finished {
                            info: RowInfo::of(&row),
                            completion: completion(&row, d),
                            _slot: permit,
                        });
                    }),
                ));
            }
            if drained {
                // Nothing more is due right now: sleep until woken or the poll interval passes.
                let w = waiter.as_mut().expect("set above");
                // While something is paused, look again soon: a resume is seen within about
                // PAUSE_REFRESH even when its wake-up came before the paused set was re-read.
                let wait = if self.any_paused() {
                    self.config.poll_interval.min(PAUSE_REFRESH)
                } else {
                    self.config.poll_interval
                };
                tokio::select! {
                    _ = w.wait(wait) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }

        // Shutdown: no more claims. The grace period bounds everything from here on.
        let grace = self.config.shutdown_grace;
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(grace).unwrap_or(now + FAR);
        // Deliveries get half the grace period (all of it but 2 s when it is long); the rest is
        // for recording what they did.
        let reserve = (grace / 2).min(Duration::from_secs(2));
        let deliveries_end = deadline.checked_sub(reserve).unwrap_or(now);
        tracing::info!(
            in_flight = tasks.len(),
            grace_s = grace.as_secs_f64(),
            "relay stopping"
        );
        let mut aborted = false;
        while !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = tokio::time::sleep_until(deliveries_end) => {
                    tracing::warn!(aborted = tasks.len(), "grace period over; cutting off deliveries still in flight");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    aborted = true;
                }
            }
        }
        if let Some(w) = waiter.take() {
            let _ = tokio::time::timeout_at(deadline, w.close()).await;
        }
        drop(done_tx);
        // Recording delivered outcomes goes on until the deadline, then gives up.
        let give_up_at = deadline;
        let stopper = {
            let give_up = give_up.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(give_up_at).await;
                give_up.cancel();
            })
        };
        let _ = completer.await;
        renewer_stop.cancel();
        let _ = renewer.await;
        // Whatever is still held was cut off mid-delivery or its outcome could not be recorded.
        let leftovers: Vec<(i64, HeldRow)> = held.lock().expect("held lock").drain().collect();
        if !leftovers.is_empty() && !give_up.is_cancelled() {
            self.hand_back(leftovers, aborted, &give_up).await;
        } else if !leftovers.is_empty() {
            tracing::warn!(
                rows = leftovers.len(),
                "shutdown time is up; rows still held are taken up again when their lease expires"
            );
        }
        stopper.abort();
        if let Some(o) = &self.observer {
            o.in_flight(0);
        }
        tracing::info!("relay stopped");
    }

    /// Record what shutdown cut off: a delivery whose request may have left is an `aborted`
    /// attempt (it counts against the budget, so restarts cannot give unlimited attempts); one
    /// that never sent, or whose outcome could not be recorded, is handed back at once.
    async fn hand_back(
        &self,
        leftovers: Vec<(i64, HeldRow)>,
        aborted: bool,
        give_up: &CancellationToken,
    ) {
        let mut infos = Vec::with_capacity(leftovers.len());
        let completions: Vec<Completion> = leftovers
            .into_iter()
            .map(|(id, h)| {
                let cut_off = aborted
                    && !h.delivered
                    && h.phase.load(Ordering::Relaxed) != PHASE_WAITING;
                let (outcome, record) = if cut_off {
                    let reason = format!(
                        "aborted: the relay shut down and its grace period of {:?} ended while the \
                         request was in flight; the target may have received it (same Idempotency-Key on the next attempt)",
                        self.config.shutdown_grace
                    );
                    let record = AttemptRecord {
                        started_at: h.claimed_at,
                        duration: h.clock.elapsed(),
                        http_status: None,
                        error: Some(reason.clone()),
                        response_excerpt: None,
                    };
                    (Outcome::Aborted { reason }, Some(record))
                } else {
                    (
                        Outcome::Release {
                            after: Duration::ZERO,
                        },
                        None,
                    )
                };
                infos.push(h.info);
                Completion {
                    id,
                    token: h.token,
                    key: h.key,
                    attempt: h.attempt,
                    outcome,
                    record,
                    on_done: None,
                }
            })
            .collect();
        let result = tokio::select! {
            r = self.store.complete(&completions) => r,
            _ = give_up.cancelled() => {
                tracing::warn!(rows = completions.len(),
                    "shutdown time is up before rows could be handed back; they are taken up again when their lease expires");
                return;
            }
        };
        match result {
            Ok(recorded) => {
                let mut handed_back = 0;
                let mut cut_off = 0;
                for ((info, c), r) in infos.iter().zip(&completions).zip(&recorded) {
                    self.stats.count(&c.outcome, r);
                    if let Some(o) = &self.observer {
                        o.recorded(info, c, r);
                    }
                    match (&c.outcome, r) {
                        (Outcome::Aborted { .. }, Recorded::Accepted) => cut_off += 1,
                        (_, Recorded::Accepted) => handed_back += 1,
                        _ => log_recorded(c, r),
                    }
                }
                tracing::info!(
                    handed_back,
                    aborted = cut_off,
                    "rows handed back (aborted requests count as attempts)"
                );
            }
            Err(e) => tracing::warn!(error = %e, rows = completions.len(),
                "could not hand rows back; they are taken up again when their lease expires"),
        }
    }
}

/// Far enough in the future to mean "never", small enough not to overflow an `Instant`.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// A row this relay holds: claimed and not yet recorded.
struct HeldRow {
    token: Uuid,
    attempt: i32,
    key: String,
    info: RowInfo,
    claimed_at: DateTime<Utc>,
    clock: tokio::time::Instant,
    phase: Arc<AtomicU8>,
    /// The deliverer returned; its outcome is on its way to the database.
    delivered: bool,
}

type Held = Arc<Mutex<HashMap<i64, HeldRow>>>;

struct Finished {
    info: RowInfo,
    completion: Completion,
    /// The delivery slot, freed only when the outcome is recorded.
    _slot: OwnedSemaphorePermit,
}

/// Deliver a row, or hand it back (no attempt spent) if its workflow was paused since the claim.
async fn deliver_unless_paused<D: Deliver>(deliver: &D, row: &Claimed) -> Delivery {
    if is_paused(&row.workflow) {
        return Delivery::without_attempt(Outcome::Release {
            after: Duration::ZERO,
        });
    }
    deliver.deliver(row).await
}

fn completion(row: &Claimed, d: Delivery) -> Completion {
    let c = row.completion(d.outcome, d.record, d.on_done);
    log_delivery(row, &c, d.code.as_deref());
    c
}

fn log_delivery(row: &Claimed, c: &Completion, code: Option<&str>) {
    let status = c.record.as_ref().and_then(|r| r.http_status);
    let duration_ms = c.record.as_ref().map(|r| r.duration.as_secs_f64() * 1000.0);
    match &c.outcome {
        Outcome::Done => tracing::info!(
            outbox.id = row.id, workflow = %row.workflow, key = %row.key, code, attempt = row.attempt,
            status, duration_ms, "delivered"
        ),
        Outcome::Retry { after, reason } => tracing::warn!(
            outbox.id = row.id, workflow = %row.workflow, key = %row.key, code, attempt = row.attempt,
            status, duration_ms, retry_in_s = after.as_secs_f64(), error = %reason, "attempt failed; will retry"
        ),
        Outcome::Dead { reason } => tracing::error!(
            outbox.id = row.id, workflow = %row.workflow, key = %row.key, code, attempt = row.attempt,
            status, duration_ms, error = %reason, payload = %crate::outbox::excerpt(&row.payload, 4096),
            "dead: delivery given up"
        ),
        Outcome::Release { after } => tracing::debug!(
            outbox.id = row.id, workflow = %row.workflow, key = %row.key, retry_in_s = after.as_secs_f64(),
            "not attempted; row handed back"
        ),
        Outcome::Aborted { reason } => tracing::warn!(
            outbox.id = row.id, workflow = %row.workflow, key = %row.key, attempt = row.attempt,
            error = %reason, "attempt aborted"
        ),
    }
}

fn log_recorded(c: &Completion, r: &Recorded) {
    match r {
        Recorded::Accepted => {}
        Recorded::Stale => tracing::warn!(
            outbox.id = c.id, attempt = c.attempt,
            "lease lost before the outcome was recorded; another relay owns the row, outcome discarded"
        ),
        Recorded::OnDoneFailed(reason) => tracing::error!(outbox.id = c.id, error = %reason, "dead: on_done SQL failed"),
        Recorded::Gone => tracing::warn!(
            outbox.id = c.id, attempt = c.attempt,
            "row deleted while it was being delivered; outcome discarded"
        ),
    }
}

async fn completer(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Finished>,
    held: Held,
    stats: Arc<RelayStats>,
    observer: Option<Arc<dyn RelayObserver>>,
    max_batch: usize,
    give_up: CancellationToken,
) {
    let mut batch: Vec<Finished> = Vec::with_capacity(max_batch);
    // Two recording transactions may be in flight: each mostly waits for its commit to reach
    // the disk, and batches hold disjoint rows, so they never wait for each other.
    let pipeline = Arc::new(Semaphore::new(COMPLETION_PIPELINE));
    let mut recording: JoinSet<()> = JoinSet::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // Linger a moment for more outcomes: one transaction for many rows is the cheap way
        // to record them, and a millisecond is nothing next to a delivery.
        let linger = tokio::time::Instant::now() + COMPLETION_LINGER;
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(linger, rx.recv()).await {
                        Ok(Some(f)) => batch.push(f),
                        _ => break,
                    }
                }
            }
        }
        let turn = tokio::select! {
            t = pipeline.clone().acquire_owned() => t.expect("the pipeline semaphore is never closed"),
            _ = give_up.cancelled() => break,
        };
        recording.spawn(record(
            store.clone(),
            std::mem::replace(&mut batch, Vec::with_capacity(max_batch)),
            held.clone(),
            stats.clone(),
            observer.clone(),
            give_up.clone(),
            turn,
        ));
        while recording.try_join_next().is_some() {}
    }
    while recording.join_next().await.is_some() {}
}

/// Record one batch of outcomes, retrying while the database is unavailable (until `give_up`,
/// the end of a shutdown); then free the batch's delivery slots (the backpressure) and forget
/// the rows.
async fn record(
    store: Store,
    batch: Vec<Finished>,
    held: Held,
    stats: Arc<RelayStats>,
    observer: Option<Arc<dyn RelayObserver>>,
    give_up: CancellationToken,
    _turn: OwnedSemaphorePermit,
) {
    let (infos, completions, slots): (Vec<RowInfo>, Vec<Completion>, Vec<OwnedSemaphorePermit>) =
        batch.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut i, mut c, mut s), f| {
                i.push(f.info);
                c.push(f.completion);
                s.push(f._slot);
                (i, c, s)
            },
        );
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    // Keep trying: the outcome is known and only the database can take it. If the lease runs
    // out meanwhile the row is delivered again (a crash-window duplicate, same key).
    let recorded = loop {
        let result = tokio::select! {
            r = store.complete(&completions) => r,
            _ = give_up.cancelled() => break None,
        };
        match result {
            Ok(r) => break Some(r),
            Err(e) => {
                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, rows = completions.len(), retry_in_ms = wait.as_millis() as u64,
                    "recording outcomes failed; retrying");
                sleep_or_cancel(wait, &give_up).await;
            }
        }
    };
    match recorded {
        Some(recorded) => {
            let mut h = held.lock().expect("held lock");
            for ((info, c), r) in infos.iter().zip(&completions).zip(&recorded) {
                stats.count(&c.outcome, r);
                if let Some(o) = &observer {
                    o.recorded(info, c, r);
                }
                log_recorded(c, r);
                if h.get(&c.id).map(|x| x.token) == Some(c.token) {
                    h.remove(&c.id);
                }
            }
            if let Some(o) = &observer {
                o.in_flight(h.len());
            }
        }
        None => tracing::warn!(
            rows = completions.len(),
            "shutdown time is up before these outcomes could be recorded; the rows are taken up again when their lease expires"
        ),
    }
    drop(slots);
}

/// Recording transactions in flight at once.
const COMPLETION_PIPELINE: usize = 2;

/// How long the completer waits for more outcomes before recording a partial batch.
const COMPLETION_LINGER: Duration = Duration::from_millis(1);

async fn renewer(store: Store, held: Held, lease: Duration, stop: CancellationToken) {
    let every = (lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let snapshot: Vec<(i64, Uuid)> = held
            .lock()
            .expect("held lock")
            .iter()
            .map(|(&id, h)| (id, h.token))
            .collect();
        if snapshot.is_empty() {
            continue;
        }
        let result = tokio::select! {
            r = store.extend_leases(&snapshot, lease) => r,
            _ = stop.cancelled() => return,
        };
        match result {
            Ok(n) if (n as usize) < snapshot.len() => tracing::debug!(
                held = snapshot.len(),
                renewed = n,
                "some leases were not renewed (already completed, reset or lost)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
        }
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = cancel.cancelled() => {}
    }
}

/// Exponential backoff with full jitter, for reconnecting to the database.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempts: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempts: 0,
        }
    }

    pub fn next_wait(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempts.min(16))
            .min(self.cap);
        self.attempts += 1;
        // Jitter between half and the whole wait, so relays that lost the database together do
        // not all come back in the same millisecond.
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<Duration> = (0..10).map(|_| b.next_wait()).collect();
        assert!(waits[0] <= Duration::from_millis(100));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(2)));
        assert!(waits[9] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
