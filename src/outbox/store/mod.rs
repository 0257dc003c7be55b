//! The backend contract: [`OutboxBackend`] states what a database must provide for Ferry's
//! outbox, and [`OutboxWaiter`] what its wake-ups promise. [`PgStore`] (PostgreSQL) and
//! [`SqliteStore`] (SQLite) implement it, each with its SQL in `src/outbox/sql/<backend>/`;
//! [`AnyBackend`] picks one of them at run time for the [`Store`](super::Store) façade.
//!
//! The contract test suite (`tests/it/contract.rs`) runs every case below on both backends.
//!
//! Times: every comparison and every timestamp a backend writes (leases, due times, `done_at`)
//! is taken from **the database's clock**, never the caller's, so relays on hosts with skewed
//! clocks agree. The only caller-supplied times are an attempt's `started_at` and a cron tick.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::dynamic::{NamedRow, SqlValue};
use super::{
    AttemptLine, AttemptOutcome, BlockedGroup, Claimed, Completion, Enqueued, ListFilter,
    OutboxRow, PauseKind, PausedLine, RateLimit, Recorded, State, StatusLine, StoreError,
    MAX_PAYLOAD_BYTES,
};

pub(crate) mod pg;
pub(crate) mod sqlite;

pub(crate) use pg::PgStore;
pub use pg::PgWaiter;
pub(crate) use sqlite::SqliteStore;
pub use sqlite::SqliteWaiter;

/// What a database must provide to hold Ferry's outbox. Each method's doc comment is its
/// contract; both implementations keep all of it, and `tests/it/contract.rs` checks it on both.
///
/// Every method may fail with [`StoreError::Database`] (the statement was refused or the
/// connection lost; [`StoreError::is_connection`] tells which). A method that fails has changed
/// nothing unless its doc says otherwise: each is one statement or one transaction.
///
/// The façade ([`Store`](super::Store)) answers trivial calls itself, so a backend is never
/// asked to claim 0 rows, complete an empty batch or extend no leases; it also decides whether
/// an operator's move is legal (from [`super::state::TRANSITIONS`]) before calling
/// [`OutboxBackend::set_state`].
pub trait OutboxBackend: Clone + Send + Sync + 'static {
    /// What [`OutboxBackend::waiter`] returns.
    type Waiter: OutboxWaiter;

    /// Apply this backend's migrations (`migrations/<backend>/`). Idempotent, and safe to run
    /// from several processes at once.
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Insert one intent on a pooled connection of its own (autocommit), as
    /// [`super::enqueue`] does in a caller's transaction: a second intent for the same
    /// `(workflow, key)` inserts nothing and returns the existing row with `created: false`.
    /// Names and payload size are checked before anything is sent.
    /// `ordering_key` puts the row in an ordered group (see [`super::enqueue_ordered`]).
    fn enqueue(
        &self,
        workflow: &str,
        key: &str,
        ordering_key: Option<&str>,
        payload: &serde_json::Value,
    ) -> impl Future<Output = Result<Enqueued, StoreError>> + Send;

    /// Claim up to `limit` due rows for one relay, in **one statement** that reads and leases
    /// them atomically: on PostgreSQL `FOR UPDATE SKIP LOCKED` (concurrent claims pass over each
    /// other's rows instead of waiting), on SQLite inside `BEGIN IMMEDIATE` (the single write
    /// lock is taken before the read). So no row is ever returned to two claims holding valid
    /// leases at once.
    ///
    /// * Due means: `pending` or `retry_wait` with `due_at` passed, or `sending` whose lease
    ///   (`due_at`) expired (its relay died). Rows of workflows in `skip` are left alone. Rows
    ///   are taken earliest `due_at` first (a claim of `n` takes the `n` earliest); the order
    ///   they come back in is unspecified.
    /// * Ordering: a row with an `ordering_key` is due only when every earlier row (lower id) of
    ///   its group, in any workflow, is `done` or is `dead` and released. So one claim takes at
    ///   most one row of a group, concurrent claims never hold two rows of a group at once, and
    ///   a crashed relay's row (still `sending`) holds its group until it is delivered again.
    /// * Each taken row becomes `sending`, its `attempts` counted up by one, its `claim_token`
    ///   set to `token` (the same for the whole claim), its lease (`due_at`) set to the
    ///   database's now plus `lease`.
    /// * Payload budget: the claim stops before the row that would bring the returned payloads
    ///   over [`super::CLAIM_PAYLOAD_BUDGET`] bytes, but always takes at least one row; so fewer
    ///   than `limit` rows may come back while more are due.
    /// * A due row whose payload is over [`MAX_PAYLOAD_BYTES`] (inserted before the database
    ///   refused such payloads) is made `dead` in the same statement, with
    ///   [`oversized_reason`] naming its size, no attempt counted and its payload never loaded;
    ///   it is not returned (it is logged).
    fn claim(
        &self,
        limit: u32,
        lease: Duration,
        skip: &[String],
        token: Uuid,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;

    /// Record a batch of outcomes in **one transaction**; the result follows the order of
    /// `batch`.
    ///
    /// * Token fence: a completion is recorded only if its row is still `sending` under the
    ///   completion's claim token. The row moves to [`super::Outcome::next_state`]: `done` (with
    ///   `done_at`), `retry_wait` due after [`super::Outcome::wait`] from the database's now, or
    ///   `dead`; `last_error`/`last_status` take the outcome's; the token is cleared. A
    ///   [`super::Outcome::Release`] gives back the attempt the claim counted and keeps the
    ///   previous `last_error`/`last_status`. → [`Recorded::Accepted`].
    /// * A completion whose token no longer matches (the lease was lost: another relay or an
    ///   operator reset owns the row) changes nothing of the row. → [`Recorded::Stale`]; its
    ///   attempt is still kept in the history, its error marked stale ([`AttemptLine::is_stale`]).
    /// * A completion whose row no longer exists (deleted while held) writes nothing at all, no
    ///   attempt row either. → [`Recorded::Gone`]. A row deleted after this transaction takes
    ///   the attempts written here with it (no orphans).
    /// * `on_done`: for a `Done` outcome with on-done SQL, the row is marked done and the SQL run
    ///   in the same transaction, behind a savepoint; if the SQL fails, only that row is
    ///   affected: it goes `dead` with the reason ("delivered (HTTP …), but the workflow's
    ///   on_done SQL failed: …") and its attempt is recorded `dead`.
    ///   → [`Recorded::OnDoneFailed`]. Other rows of the batch are recorded as usual.
    /// * Every completion with an [`super::AttemptRecord`] whose row exists adds one row to
    ///   `ferry_attempts` ([`attempt_outcome`], [`attempt_error`]).
    fn complete(
        &self,
        batch: &[Completion],
    ) -> impl Future<Output = Result<Vec<Recorded>, StoreError>> + Send;

    /// Push the lease of each held `(id, token)` to the database's now plus `lease`, only where
    /// the row is still `sending` under that token (a lost lease is never renewed). Returns how
    /// many rows were renewed.
    fn extend_leases(
        &self,
        held: &[(i64, Uuid)],
        lease: Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// A waiter that returns when new intents may be due (see [`OutboxWaiter`]). `listen: false`
    /// asks for a plain sleep where the wake-up needs a dedicated connection (PostgreSQL
    /// LISTEN, which connection poolers in transaction mode drop).
    fn waiter(&self, listen: bool)
        -> impl Future<Output = Result<Self::Waiter, StoreError>> + Send;

    /// Wake this process's waiters now (after an enqueue that bypassed this store's pool).
    /// A no-op where the database itself notifies (PostgreSQL).
    fn wake(&self);

    /// The `ferry_status` view ordered by workflow and state: live states and `dead` only
    /// (`done` rows are never read, however many there are).
    fn status(&self) -> impl Future<Output = Result<Vec<StatusLine>, StoreError>> + Send;

    /// Rows per state, every state with rows (`done` included), ordered by state name. Reads
    /// the whole table.
    fn count_by_state(&self) -> impl Future<Output = Result<Vec<(State, i64)>, StoreError>> + Send;

    /// One row by id, or `None`.
    fn get(&self, id: i64) -> impl Future<Output = Result<Option<OutboxRow>, StoreError>> + Send;

    /// One row by `(workflow, key)`, or `None`.
    fn find(
        &self,
        workflow: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<OutboxRow>, StoreError>> + Send;

    /// A row's attempt history in the order it was recorded (a stale attempt is recorded late),
    /// across resets; empty for a row that does not exist.
    fn attempts(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Vec<AttemptLine>, StoreError>> + Send;

    /// Rows matching the filter's state and workflow (either may be absent), newest (highest
    /// id) first, at most `limit` (100 when `limit` is 0 or less).
    fn list(
        &self,
        filter: &ListFilter,
    ) -> impl Future<Output = Result<Vec<OutboxRow>, StoreError>> + Send;

    /// An operator's move of one row from `from` to `to`, only if the row is still in `from`
    /// (compare and set): any claim is revoked, `last_error` becomes `reason` if given. A move to
    /// `pending` is a reset: the database's trigger makes the row due now with a fresh attempt
    /// budget, and idle relays are woken. The caller has checked that the move is legal.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the row is gone; [`StoreError::WrongState`] naming the
    /// current state if it is no longer in `from`.
    fn set_state(
        &self,
        id: i64,
        from: State,
        to: State,
        reason: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reset every `dead` row (of `workflow` only, if given) to `pending`, as
    /// [`OutboxBackend::set_state`] would each; wakes idle relays. Returns how many rows.
    fn reset_dead(
        &self,
        workflow: Option<&str>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Release a `dead` row from its ordering group: it stays `dead` with its history, and
    /// `released_at` (the database's now), `released_by` and `release_reason` are recorded; the
    /// later rows of its group no longer wait for it. Releasing again overwrites the record. A
    /// released row that is later reset to `pending` holds its group again until done.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the row is gone; [`StoreError::WrongState`] if it is not dead.
    fn release(
        &self,
        id: i64,
        by: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The `ferry_blocked` view, oldest blocking row first: every ordering group whose earliest
    /// unfinished row is dead and not released.
    fn blocked(&self) -> impl Future<Output = Result<Vec<BlockedGroup>, StoreError>> + Send;

    /// Pause a workflow or a target (idempotent: pausing again keeps the first `paused_at`).
    fn pause(
        &self,
        kind: PauseKind,
        name: &str,
        by: &str,
        reason: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Resume a workflow or a target; wakes idle relays. Returns whether it was paused.
    fn resume(
        &self,
        kind: PauseKind,
        name: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Everything paused, by kind and name.
    fn paused(&self) -> impl Future<Output = Result<Vec<PausedLine>, StoreError>> + Send;

    /// Take one request of `target`'s rate limit, shared by every relay on the database: a GCRA
    /// on the database's clock in `ferry_rate`, one atomic statement. `None`: allowed (counted);
    /// `Some(wait)`: refused, ask again after `wait`. Requests are spaced by
    /// [`RateLimit::interval`] with no burst, so any window of `per` holds at most `requests`
    /// (plus one at its closed end).
    fn rate_take(
        &self,
        target: &str,
        limit: RateLimit,
    ) -> impl Future<Output = Result<Option<Duration>, StoreError>> + Send;

    /// Delete `done` rows whose `done_at` is more than `older_than` before the database's now,
    /// with their attempts, in batches (one short statement each). Never touches live or dead
    /// rows. Returns how many outbox rows.
    fn prune_done(
        &self,
        older_than: Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Delete attempt rows whose outbox row no longer exists (left by versions before the
    /// delete trigger), walking `ferry_attempts` in ranges of ids. Returns how many.
    fn sweep_orphan_attempts(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Take tick `tick` of cron job `job` for relay `relay`: true for exactly one caller across
    /// all relays and processes sharing the database (the one whose write moves the job's
    /// `last_tick` forward); false for every other caller of the same or an earlier tick.
    fn claim_cron_tick(
        &self,
        job: &str,
        tick: DateTime<Utc>,
        relay: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Run SQL from a workflow file with named parameters (`:key`, `:limit`), always bound,
    /// never spliced; rows by column name.
    fn fetch_named(
        &self,
        sql: &str,
        params: &[(&str, SqlValue)],
    ) -> impl Future<Output = Result<Vec<NamedRow>, StoreError>> + Send;

    /// Run statements with no parameters and no result (example schemas, tests).
    fn execute_script(&self, sql: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the database answers now.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Close the pool: wait for its connections to be returned and close them.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// Waits for a sign that new rows may be due.
///
/// A waiter may report a wake-up that finds nothing to claim (that only costs one claim), but it
/// must not sleep through a commit it was meant to see for longer than `timeout` (the relay's
/// poll interval is the fallback). In particular, on PostgreSQL a lost LISTEN connection is
/// re-established and **reported as a wake-up**, since a NOTIFY sent while it was down is gone.
pub trait OutboxWaiter: Send {
    /// Return `true` when woken, `false` after `timeout` without a wake-up.
    fn wait(&mut self, timeout: Duration) -> impl Future<Output = bool> + Send;

    /// Close the waiter's own connection now rather than whenever it is dropped.
    fn close(self) -> impl Future<Output = ()> + Send;
}

// ----- helpers both backends use ----------------------------------------------------------------

/// A row as the claim statement returns it (both backends alias the same columns).
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    id: i64,
    workflow: String,
    key: String,
    /// `NULL` for a row the claim made dead because its payload is over the limit.
    payload: Option<String>,
    attempts: i32,
    created_at: DateTime<Utc>,
    payload_bytes: i64,
}

/// The claimed rows of one claim; rows it made dead for their size are logged and left out.
pub(crate) fn claimed(rows: Vec<ClaimRow>, token: Uuid) -> Vec<Claimed> {
    rows.into_iter()
        .filter_map(|r| {
            let Some(payload) = r.payload else {
                log_oversized(r.id, &r.workflow, &r.key, r.payload_bytes);
                return None;
            };
            Some(Claimed {
                id: r.id,
                workflow: r.workflow,
                key: r.key,
                payload,
                attempt: r.attempts,
                token,
                created_at: r.created_at,
            })
        })
        .collect()
}

/// `last_error` of a row found at claim time with a payload over [`MAX_PAYLOAD_BYTES`] (it was
/// inserted before the database enforced the limit): it is made dead without being loaded. The
/// claim passes a format placeholder (`%s`, `%d`) as `bytes` and lets the database fill it in.
pub fn oversized_reason(bytes: &str) -> String {
    format!(
        "payload is {bytes} bytes, over the limit of {MAX_PAYLOAD_BYTES} bytes (1 MiB); not \
         delivered. Replace the payload with a smaller one and reset the row"
    )
}

/// Log a row the claim made dead because its payload is over the limit.
fn log_oversized(id: i64, workflow: &str, key: &str, bytes: i64) {
    tracing::error!(
        outbox.id = id,
        workflow,
        key,
        payload_bytes = bytes,
        limit = MAX_PAYLOAD_BYTES,
        "dead: payload over the limit, not loaded nor delivered"
    );
}

/// How the note on the error of an attempt recorded stale begins (see
/// [`AttemptLine::is_stale`]).
pub(crate) const STALE_TAG: &str = "(stale:";

/// `ferry_attempts.outcome` for a completion as it was recorded.
pub fn attempt_outcome(c: &Completion, recorded: &Recorded) -> AttemptOutcome {
    match recorded {
        Recorded::OnDoneFailed(_) => AttemptOutcome::Dead,
        _ => c.outcome.attempt_outcome(),
    }
}

/// `ferry_attempts.error` for a completion as it was recorded: the attempt's error (or the
/// outcome's reason), the on-done failure, or either marked stale.
pub fn attempt_error(c: &Completion, recorded: &Recorded) -> Option<String> {
    let base = c
        .record
        .as_ref()
        .and_then(|r| r.error.clone())
        .or_else(|| c.outcome.error().map(str::to_string));
    match recorded {
        Recorded::Accepted | Recorded::Gone => base,
        Recorded::OnDoneFailed(reason) => Some(reason.clone()),
        Recorded::Stale => Some(format!(
            "{}{STALE_TAG} the lease was lost before this outcome was recorded; discarded)",
            base.map(|b| format!("{b} ")).unwrap_or_default()
        )),
    }
}

/// The HTTP status of a completion's attempt, as stored.
pub(crate) fn http_status(c: &Completion) -> Option<i32> {
    c.record.as_ref().and_then(|r| r.http_status).map(i32::from)
}

/// The on-done SQL of a completion, if it has some and its outcome is `Done`.
pub(crate) fn on_done(c: &Completion) -> Option<&super::OnDoneSql> {
    c.on_done
        .as_deref()
        .filter(|_| c.outcome == super::Outcome::Done)
}

/// `last_error` of a row whose on-done SQL failed.
pub(crate) fn on_done_failed_reason(status: Option<i32>, e: &sqlx::Error) -> String {
    format!(
        "delivered (HTTP {}), but the workflow's on_done SQL failed: {e}",
        status.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
    )
}

/// Bind the named parameters of a workflow's on-done SQL, in the order the rewritten statement
/// numbers them.
pub(crate) fn bind_on_done<'q, DB: sqlx::Database>(
    mut q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    sql: &super::OnDoneSql,
    c: &Completion,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i32: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i32>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for p in &sql.params {
        q = match *p {
            "key" => q.bind(c.key.clone()),
            "outbox_id" => q.bind(c.id),
            "attempt" => q.bind(c.attempt),
            "status" => q.bind(http_status(c)),
            "response" => q.bind(c.record.as_ref().and_then(|r| r.response_excerpt.clone())),
            _ => q.bind(Option::<String>::None),
        };
    }
    q
}

/// A duration in whole milliseconds, as the PostgreSQL statements take it.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// ----- run-time choice of backend ---------------------------------------------------------------

/// One of the backends, chosen by the database URL; dispatches each call of the contract to it.
// One store per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum AnyBackend {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Waits for a sign that new rows may be due. See [`Store::waiter`](super::Store::waiter).
#[allow(clippy::large_enum_variant)]
pub enum Waiter {
    Postgres(PgWaiter),
    Sqlite(SqliteWaiter),
}

impl Waiter {
    /// Return when woken or after `timeout`, whichever comes first. Returns `true` if woken.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        match self {
            Waiter::Postgres(w) => w.wait(timeout).await,
            Waiter::Sqlite(w) => w.wait(timeout).await,
        }
    }

    /// Close the waiter's own connection now rather than whenever it is dropped (a dropped
    /// SQLite connection lets go of the database file later, on its worker thread).
    pub async fn close(self) {
        match self {
            Waiter::Postgres(w) => OutboxWaiter::close(w).await,
            Waiter::Sqlite(w) => OutboxWaiter::close(w).await,
        }
    }
}

impl OutboxWaiter for Waiter {
    async fn wait(&mut self, timeout: Duration) -> bool {
        Waiter::wait(self, timeout).await
    }

    async fn close(self) {
        Waiter::close(self).await
    }
}

impl OutboxBackend for AnyBackend {
    type Waiter = Waiter;

    async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.migrate().await,
            Self::Sqlite(s) => s.migrate().await,
        }
    }

    async fn enqueue(
        &self,
        workflow: &str,
        key: &str,
        ordering_key: Option<&str>,
        payload: &serde_json::Value,
    ) -> Result<Enqueued, StoreError> {
        match self {
            Self::Postgres(s) => s.enqueue(workflow, key, ordering_key, payload).await,
            Self::Sqlite(s) => s.enqueue(workflow, key, ordering_key, payload).await,
        }
    }

    async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        skip: &[String],
        token: Uuid,
    ) -> Result<Vec<Claimed>, StoreError> {
        match self {
            Self::Postgres(s) => s.claim(limit, lease, skip, token).await,
            Self::Sqlite(s) => s.claim(limit, lease, skip, token).await,
        }
    }

    async fn complete(&self, batch: &[Completion]) -> Result<Vec<Recorded>, StoreError> {
        match self {
            Self::Postgres(s) => s.complete(batch).await,
            Self::Sqlite(s) => s.complete(batch).await,
        }
    }

    async fn extend_leases(
        &self,
        held: &[(i64, Uuid)],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        match self {
            Self::Postgres(s) => s.extend_leases(held, lease).await,
            Self::Sqlite(s) => s.extend_leases(held, lease).await,
        }
    }

    async fn waiter(&self, listen: bool) -> Result<Waiter, StoreError> {
        Ok(match self {
            Self::Postgres(s) => Waiter::Postgres(s.waiter(listen).await?),
            Self::Sqlite(s) => Waiter::Sqlite(s.waiter(listen).await?),
        })
    }

    fn wake(&self) {
        match self {
            Self::Postgres(s) => s.wake(),
            Self::Sqlite(s) => s.wake(),
        }
    }

    async fn status(&self) -> Result<Vec<StatusLine>, StoreError> {
        match self {
            Self::Postgres(s) => s.status().await,
            Self::Sqlite(s) => s.status().await,
        }
    }

    async fn count_by_state(&self) -> Result<Vec<(State, i64)>, StoreError> {
        match self {
            Self::Postgres(s) => s.count_by_state().await,
            Self::Sqlite(s) => s.count_by_state().await,
        }
    }

    async fn get(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        match self {
            Self::Postgres(s) => s.get(id).await,
            Self::Sqlite(s) => s.get(id).await,
        }
    }

    async fn find(&self, workflow: &str, key: &str) -> Result<Option<OutboxRow>, StoreError> {
        match self {
            Self::Postgres(s) => s.find(workflow, key).await,
            Self::Sqlite(s) => s.find(workflow, key).await,
        }
    }

    async fn attempts(&self, id: i64) -> Result<Vec<AttemptLine>, StoreError> {
        match self {
            Self::Postgres(s) => s.attempts(id).await,
            Self::Sqlite(s) => s.attempts(id).await,
        }
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<OutboxRow>, StoreError> {
        match self {
            Self::Postgres(s) => s.list(filter).await,
            Self::Sqlite(s) => s.list(filter).await,
        }
    }

    async fn set_state(
        &self,
        id: i64,
        from: State,
        to: State,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.set_state(id, from, to, reason).await,
            Self::Sqlite(s) => s.set_state(id, from, to, reason).await,
        }
    }

    async fn reset_dead(&self, workflow: Option<&str>) -> Result<u64, StoreError> {
        match self {
            Self::Postgres(s) => s.reset_dead(workflow).await,
            Self::Sqlite(s) => s.reset_dead(workflow).await,
        }
    }

    async fn release(&self, id: i64, by: &str, reason: &str) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.release(id, by, reason).await,
            Self::Sqlite(s) => s.release(id, by, reason).await,
        }
    }

    async fn blocked(&self) -> Result<Vec<BlockedGroup>, StoreError> {
        match self {
            Self::Postgres(s) => s.blocked().await,
            Self::Sqlite(s) => s.blocked().await,
        }
    }

    async fn pause(
        &self,
        kind: PauseKind,
        name: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.pause(kind, name, by, reason).await,
            Self::Sqlite(s) => s.pause(kind, name, by, reason).await,
        }
    }

    async fn resume(&self, kind: PauseKind, name: &str) -> Result<bool, StoreError> {
        match self {
            Self::Postgres(s) => s.resume(kind, name).await,
            Self::Sqlite(s) => s.resume(kind, name).await,
        }
    }

    async fn paused(&self) -> Result<Vec<PausedLine>, StoreError> {
        match self {
            Self::Postgres(s) => s.paused().await,
            Self::Sqlite(s) => s.paused().await,
        }
    }

    async fn rate_take(
        &self,
        target: &str,
        limit: RateLimit,
    ) -> Result<Option<Duration>, StoreError> {
        match self {
            Self::Postgres(s) => s.rate_take(target, limit).await,
            Self::Sqlite(s) => s.rate_take(target, limit).await,
        }
    }

    async fn prune_done(&self, older_than: Duration) -> Result<u64, StoreError> {
        match self {
            Self::Postgres(s) => s.prune_done(older_than).await,
            Self::Sqlite(s) => s.prune_done(older_than).await,
        }
    }

    async fn sweep_orphan_attempts(&self) -> Result<u64, StoreError> {
        match self {
            Self::Postgres(s) => s.sweep_orphan_attempts().await,
            Self::Sqlite(s) => s.sweep_orphan_attempts().await,
        }
    }

    async fn claim_cron_tick(
        &self,
        job: &str,
        tick: DateTime<Utc>,
        relay: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Postgres(s) => s.claim_cron_tick(job, tick, relay).await,
            Self::Sqlite(s) => s.claim_cron_tick(job, tick, relay).await,
        }
    }

    async fn fetch_named(
        &self,
        sql: &str,
        params: &[(&str, SqlValue)],
    ) -> Result<Vec<NamedRow>, StoreError> {
        match self {
            Self::Postgres(s) => s.fetch_named(sql, params).await,
            Self::Sqlite(s) => s.fetch_named(sql, params).await,
        }
    }

    async fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.execute_script(sql).await,
            Self::Sqlite(s) => s.execute_script(sql).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.ping().await,
            Self::Sqlite(s) => s.ping().await,
        }
    }

    async fn close(&self) {
        match self {
            Self::Postgres(s) => s.close().await,
            Self::Sqlite(s) => s.close().await,
        }
    }
}
