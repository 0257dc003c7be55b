//! The persisted state machine: the outbox table, enqueue in the caller's transaction, and the
//! store that claims and completes rows on PostgreSQL or SQLite.
//!
//! Four layers, each using only the one below it:
//!
//! ```text
//!  Store (this module)           the façade the rest of Ferry calls: typed rows in and out, the
//!    │                           trivial cases (claim 0, an empty batch), and the operator's
//!    │                           moves checked against the state machine (state.rs) first
//!    ▼
//!  OutboxBackend (store/mod.rs)  the contract: what a backend must provide, each method's
//!    │                           guarantees in its doc comment; tests/it/contract.rs runs one
//!    │                           suite of cases against every backend
//!    ▼
//!  PgStore, SqliteStore          the backends (store/pg.rs, store/sqlite.rs): pools, transactions,
//!    │  (store/*.rs)             binding, the wake-up mechanism of each database
//!    ▼
//!  sql/postgres/*.sql,           every statement as SQL, one file each, exposed as constants in
//!  sql/sqlite/*.sql              [`sql`] (the benchmarks EXPLAIN the same text the relay sends)
//! ```
//!
//! [`Store::claim`] takes due rows (and rows whose lease expired) in one statement, marking them
//! `sending` under a fresh claim token and a lease measured on the database's clock;
//! [`Store::complete`] records the outcomes of a batch in one transaction, and refuses any
//! completion whose token no longer matches (the lease was lost and someone else owns the row
//! now). Rows come back typed: [`State`], [`AttemptOutcome`] and `DateTime<Utc>`, decoded by
//! sqlx from each backend's columns.

pub mod browse;
pub mod dynamic;
mod enqueue;
pub mod sql;
pub mod state;
pub mod store;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use enqueue::{
    enqueue, enqueue_many, enqueue_many_ordered, enqueue_ordered, enqueue_with, is_traceparent,
    EnqueueConn, EnqueueOptions, Enqueued, MAX_PAYLOAD_BYTES,
};
pub use state::{AttemptOutcome, Outcome, State};
pub use store::{OutboxBackend, OutboxWaiter, Waiter};

use store::{AnyBackend, PgStore, SqliteStore};

/// Most payload bytes one claim loads. A claim takes due rows in order until the next one would
/// bring the batch's payloads over this budget (it always takes at least one row), so what a
/// claim holds in memory is bounded whatever the table holds. Each payload is at most
/// [`MAX_PAYLOAD_BYTES`], so a claim takes at least four full-size rows.
pub const CLAIM_PAYLOAD_BUDGET: usize = 4 * MAX_PAYLOAD_BYTES;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DATABASE_URL is not usable: {0}")]
    BadUrl(String),
    #[error("cannot connect to the database at {target}: {cause}")]
    Connect { target: String, cause: sqlx::Error },
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid intent: {0}")]
    InvalidIntent(String),
    #[error("no outbox row with id {0}")]
    NotFound(i64),
    #[error("outbox row {id} is {state}: {why}")]
    WrongState { id: i64, state: State, why: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// A row that left `expected` while an operator's command was acting on it.
    pub(crate) fn changed_meanwhile(id: i64, state: State) -> StoreError {
        StoreError::WrongState {
            id,
            state,
            why: "it changed state while the command ran; look again".into(),
        }
    }

    /// Whether the database said a table or view does not exist (migrations not applied, or
    /// the wrong schema): PostgreSQL's `undefined_table`, SQLite's "no such table".
    pub fn is_missing_table(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(e)) = self else {
            return false;
        };
        e.code().as_deref() == Some("42P01") || e.message().starts_with("no such table")
    }

    /// Whether the error is the database being unreachable (worth a reconnect with backoff) rather
    /// than a statement the database refused.
    pub fn is_connection(&self) -> bool {
        match self {
            StoreError::Connect { .. } => true,
            StoreError::Database(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            ),
            _ => false,
        }
    }
}

/// Which database a store talks to, parsed from `DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://` or `postgresql://` (kept whole: it may carry a password, so Debug hides it).
    Postgres(String),
    /// A SQLite file path (`sqlite:ferry.db`, `sqlite://ferry.db`, or a bare `*.db` path).
    Sqlite(String),
}

impl DatabaseUrl {
    /// The default: a SQLite file `ferry.db` in the working directory.
    pub fn default_sqlite() -> Self {
        DatabaseUrl::Sqlite("ferry.db".into())
    }

    /// The URL as shown to people: the password, if any, replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(p) => format!("sqlite:{p}"),
            DatabaseUrl::Postgres(u) => redact_url(u),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl FromStr for DatabaseUrl {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(StoreError::BadUrl(
                "it is empty (unset it to use the default SQLite file ferry.db)".into(),
            ));
        }
        if let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        {
            if rest.is_empty() || rest.starts_with('/') && rest.len() == 1 {
                return Err(StoreError::BadUrl(format!(
                    "'{}' names no host",
                    redact_url(s)
                )));
            }
            sqlx::postgres::PgConnectOptions::from_str(s)
                .map_err(|e| StoreError::BadUrl(format!("'{}': {e}", redact_url(s))))?;
            return Ok(DatabaseUrl::Postgres(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = path.split('?').next().unwrap_or("");
            if path.is_empty() {
                return Err(StoreError::BadUrl(format!("'{s}' names no file")));
            }
            return Ok(DatabaseUrl::Sqlite(path.to_string()));
        }
        if !s.contains("://") && (s.ends_with(".db") || s.ends_with(".sqlite")) {
            return Ok(DatabaseUrl::Sqlite(s.to_string()));
        }
        Err(StoreError::BadUrl(format!(
            "'{}' is neither postgres://… nor sqlite:… (examples: postgres://user@127.0.0.1:5432/app, sqlite:ferry.db)",
            redact_url(s)
        )))
    }
}

/// Replace the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = &url[scheme_end + 3..];
    let auth_end = after.find('/').unwrap_or(after.len());
    let authority = &after[..auth_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}://{}:***@{}",
                    &url[..scheme_end],
                    &userinfo[..colon],
                    &after[at + 1..]
                ),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: DatabaseUrl,
    /// PostgreSQL schema holding Ferry's tables (`search_path`); `None` uses the server default.
    /// Lets several Ferry installations (or parallel tests) share one database.
    pub schema: Option<String>,
    /// Pool size. Relays need a few connections: claims, completions, lease renewals, and one
    /// more for LISTEN on PostgreSQL.
    pub max_connections: u32,
    /// How long to wait for the database when opening a connection.
    pub connect_timeout: Duration,
}

impl StoreConfig {
    pub fn new(url: DatabaseUrl) -> Self {
        StoreConfig {
            url,
            schema: None,
            max_connections: 8,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A row taken by [`Store::claim`]: the relay holds it until the lease expires.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub workflow: String,
    pub key: String,
    /// The payload as JSON text.
    pub payload: String,
    /// This attempt's number within the current budget (1 for the first).
    pub attempt: i32,
    /// The claim token that completion must present.
    pub token: Uuid,
    pub created_at: DateTime<Utc>,
    /// Set on a row made by `ferry replay`: the delivered row it sends again. Its workflow's
    /// `on_done` SQL is not run (the original's already ran).
    pub replay_of: Option<i64>,
    /// The W3C `traceparent` given at enqueue (`ferry_outbox.traceparent`): the parent of each
    /// attempt's span.
    pub traceparent: Option<String>,
}

impl Claimed {
    /// The completion that records `outcome` for this row under its claim token (what a
    /// deliverer's result becomes before [`Store::complete`]). A replay's (`replay_of` set)
    /// drops `on_done`: the original's already ran, and its `:key` would be the replay's.
    pub fn completion(
        &self,
        outcome: Outcome,
        record: Option<AttemptRecord>,
        on_done: Option<Arc<OnDoneSql>>,
    ) -> Completion {
        Completion {
            id: self.id,
            token: self.token,
            key: self.key.clone(),
            attempt: self.attempt,
            outcome,
            record,
            on_done: if self.replay_of.is_some() {
                None
            } else {
                on_done
            },
        }
    }
}

/// What one attempt looked like, for `ferry_attempts`.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// A bounded excerpt of the response body.
    pub response_excerpt: Option<String>,
}

/// SQL a workflow runs in the transaction that marks a row done, with named parameters
/// (`:key`, `:outbox_id`, `:response`, `:status`, `:attempt`) already rewritten per backend.
#[derive(Debug, Clone)]
pub struct OnDoneSql {
    /// The workflow's SQL as written, for messages.
    pub text: String,
    /// `$1…` form for PostgreSQL.
    pub postgres: String,
    /// `?1…` form for SQLite.
    pub sqlite: String,
    /// Parameter names in positional order.
    pub params: Vec<&'static str>,
}

/// The outcome of one claimed row, ready to be recorded.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: i64,
    pub token: Uuid,
    pub key: String,
    pub attempt: i32,
    pub outcome: Outcome,
    /// `None` when nothing was attempted ([`Outcome::Release`], or a row dead before sending).
    pub record: Option<AttemptRecord>,
    pub on_done: Option<Arc<OnDoneSql>>,
}

/// What [`Store::complete`] did with one completion.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The outcome was recorded.
    Accepted,
    /// The claim token no longer matched: the lease was lost and another relay (or an operator
    /// reset) owns the row now. Nothing but the attempt's history was written.
    Stale,
    /// The target accepted the document but the workflow's on-done SQL failed; the row is `dead`
    /// with that reason so an operator can fix the SQL and reset it.
    OnDoneFailed(String),
    /// The row was deleted while held (an operator's `DELETE FROM ferry_outbox`). Nothing was
    /// recorded and no attempt row was written: it would belong to no row.
    Gone,
}

/// One line of the `ferry_status` view.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct StatusLine {
    pub workflow: String,
    pub state: State,
    pub rows: i64,
    pub oldest_due_age_s: f64,
}

/// One line of the `ferry_blocked` view: an ordering group held by a dead row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct BlockedGroup {
    pub ordering_key: String,
    /// The dead row that holds the group (retry it, or release it with `ferry release`).
    pub blocking_id: i64,
    pub workflow: String,
    pub key: String,
    /// The dead row's `last_error`.
    pub reason: Option<String>,
    /// Rows of the group after it that are not done.
    pub waiting: i64,
}

/// What a pause applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseKind {
    /// One workflow's rows.
    Workflow,
    /// The rows of every workflow that sends to the target.
    Target,
}

impl PauseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseKind::Workflow => "workflow",
            PauseKind::Target => "target",
        }
    }
}

/// One line of `ferry_paused`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct PausedLine {
    /// `workflow` or `target`.
    pub kind: String,
    pub name: String,
    pub paused_by: Option<String>,
    pub reason: Option<String>,
    pub paused_at: DateTime<Utc>,
}

/// A rate limit: at most `requests` per `per`, for the whole deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    /// The spacing of requests: `per / requests`.
    pub fn interval(&self) -> Duration {
        self.per / self.requests.max(1)
    }
}

/// Which delivered rows `ferry replay` sends again: `done` rows of `workflow` (not replays
/// themselves) whose `done_at` is in `[since, until)`, of one key if given.
#[derive(Debug, Clone)]
pub struct ReplaySelection {
    pub workflow: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub key: Option<String>,
}

/// The most rows one replay takes; a wider selection is refused (narrow the range).
pub const REPLAY_MAX: i64 = 10_000;

/// One row a replay sends again (or would, in a dry run).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replayed {
    pub original_id: i64,
    pub original_key: String,
    pub done_at: DateTime<Utc>,
    /// The replay's key: `<original key>#replay-<n>`.
    pub key: String,
    /// The new row's id (its Idempotency-Key); `None` in a dry run.
    pub id: Option<i64>,
    /// The document's code (its workflow's `identify_by` field), filled in by the operator.
    pub code: Option<String>,
    /// The payload as JSON text (for the document's code).
    #[serde(skip)]
    pub payload: String,
}

/// A replay's key: the original's with `#replay-<n>`.
pub fn replay_key(original: &str, n: i64) -> String {
    format!("{original}#replay-{n}")
}

/// A whole outbox row, for `ferry show` and `ferry list`. Timestamps serialise as RFC 3339 UTC.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub workflow: String,
    pub key: String,
    pub state: State,
    pub attempts: i32,
    /// When the row is due (`pending`, `retry_wait`), or its lease expiry (`sending`).
    pub due_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    pub payload: String,
    /// Its ordering group, if any (see [`enqueue_ordered`]).
    pub ordering_key: Option<String>,
    /// Set when an operator released this dead row from its group (`ferry release`).
    pub released_at: Option<DateTime<Utc>>,
    pub released_by: Option<String>,
    pub release_reason: Option<String>,
    /// Set on a row made by `ferry replay`: the id of the delivered row it sends again.
    pub replay_of: Option<i64>,
}

/// One line of `ferry_attempts`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AttemptLine {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: f64,
    pub outcome: AttemptOutcome,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

impl AttemptLine {
    /// Whether this attempt's outcome arrived after its relay had lost the row (the lease
    /// expired, or an operator reset it): kept in the history, but it changed nothing.
    pub fn is_stale(&self) -> bool {
        self.error
            .as_deref()
            .is_some_and(|e| e.contains(store::STALE_TAG))
    }
}

/// Filter for [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<State>,
    pub workflow: Option<String>,
    /// Most rows; 0 or less means 100.
    pub limit: i64,
}

impl ListFilter {
    /// The limit a backend applies.
    pub(crate) fn limit_or_default(&self) -> i64 {
        if self.limit > 0 {
            self.limit
        } else {
            100
        }
    }
}

/// The outbox on one database: the façade the rest of Ferry uses. Cheap to clone (pools are
/// shared). Each call goes to the backend chosen by the URL, through the [`OutboxBackend`]
/// contract, whose doc comments state what each call guarantees.
#[derive(Clone)]
pub struct Store {
    backend: AnyBackend,
    url: DatabaseUrl,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

impl Store {
    /// Open a pool on the configured database. Does not apply migrations.
    ///
    /// # Errors
    /// [`StoreError::Connect`] naming the (redacted) database when it cannot be reached.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let backend = match &config.url {
            DatabaseUrl::Postgres(_) => AnyBackend::Postgres(PgStore::open(config).await?),
            DatabaseUrl::Sqlite(_) => AnyBackend::Sqlite(SqliteStore::open(config).await?),
        };
        Ok(Store {
            backend,
            url: config.url.clone(),
        })
    }

    /// Open with defaults from a URL string.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::open(&StoreConfig::new(url.parse()?)).await
    }

    /// The database this store talks to (password redacted in Display/Debug).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            AnyBackend::Postgres(_) => "postgres",
            AnyBackend::Sqlite(_) => "sqlite",
        }
    }

    /// The PostgreSQL pool, for callers that enqueue in their own transactions.
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.backend {
            AnyBackend::Postgres(s) => Some(&s.pool),
            AnyBackend::Sqlite(_) => None,
        }
    }

    /// The SQLite pool. Transactions on it that insert outbox rows wake this process's idle
    /// relays the moment they commit.
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.backend {
            AnyBackend::Sqlite(s) => Some(&s.pool),
            AnyBackend::Postgres(_) => None,
        }
    }

    /// Apply the backend's migrations (idempotent; safe to run from several relays at once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.backend.migrate().await
    }

    /// Enqueue on a pooled connection of its own (outside any business transaction). To enqueue
    /// atomically with a business change use [`enqueue`] with the caller's transaction.
    pub async fn enqueue(
        &self,
        workflow: &str,
        key: &str,
        payload: &serde_json::Value,
    ) -> Result<Enqueued, StoreError> {
        self.backend.enqueue(workflow, key, None, payload).await
    }

    /// [`Store::enqueue`] into an ordered group (see [`enqueue_ordered`]); `None` is unordered.
    pub async fn enqueue_ordered(
        &self,
        workflow: &str,
        key: &str,
        ordering_key: Option<&str>,
        payload: &serde_json::Value,
    ) -> Result<Enqueued, StoreError> {
        self.backend
            .enqueue(workflow, key, ordering_key, payload)
            .await
    }

    /// Claim up to `limit` due rows: rows in `pending` or `retry_wait` whose `due_at` has passed,
    /// and rows in `sending` whose lease expired (their relay died). Each is moved to `sending`
    /// with one new claim token, its attempt counted, and a lease of `lease` from the database's
    /// now. Rows of workflows in `skip` (targets known to be down) are left alone.
    ///
    /// The claim stops before the row that would bring the batch's payloads over
    /// [`CLAIM_PAYLOAD_BUDGET`] (it takes at least one row), so fewer than `limit` rows may come
    /// back while more are due. A due row whose payload is over [`MAX_PAYLOAD_BYTES`] (inserted
    /// before the database refused such payloads) is made `dead` with the reason instead, in the
    /// same statement, without its payload being read into memory; it is not returned. See
    /// [`OutboxBackend::claim`].
    pub async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        skip: &[String],
    ) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.backend.claim(limit, lease, skip, Uuid::new_v4()).await
    }

    /// Record a batch of outcomes in one transaction. A completion whose claim token no longer
    /// matches the row (lease lost) changes nothing but the attempt history and comes back
    /// [`Recorded::Stale`]; one whose row no longer exists changes nothing at all and comes back
    /// [`Recorded::Gone`]. The result is in the order of `batch`. See
    /// [`OutboxBackend::complete`].
    pub async fn complete(&self, batch: &[Completion]) -> Result<Vec<Recorded>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.backend.complete(batch).await
    }

    /// Push the lease of rows this relay still holds `lease` past the database's now. Returns how
    /// many rows were still held.
    pub async fn extend_leases(
        &self,
        held: &[(i64, Uuid)],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        if held.is_empty() {
            return Ok(0);
        }
        self.backend.extend_leases(held, lease).await
    }

    /// A waiter that returns when new intents may be due: LISTEN/NOTIFY on PostgreSQL (unless
    /// `listen` is false: connection poolers in transaction mode drop notifications), commit
    /// hooks and `PRAGMA data_version` on SQLite. See [`OutboxWaiter`].
    pub async fn waiter(&self, listen: bool) -> Result<Waiter, StoreError> {
        self.backend.waiter(listen).await
    }

    /// Wake this process's idle relays (after an enqueue that bypassed the store's pool).
    pub fn wake(&self) {
        self.backend.wake()
    }

    /// The `ferry_status` view.
    pub async fn status(&self) -> Result<Vec<StatusLine>, StoreError> {
        self.backend.status().await
    }

    /// Count of rows per state (all states, `done` included: this reads the whole table).
    pub async fn count_by_state(&self) -> Result<Vec<(State, i64)>, StoreError> {
        self.backend.count_by_state().await
    }

    /// One row by id.
    pub async fn get(&self, id: i64) -> Result<OutboxRow, StoreError> {
        self.backend.get(id).await?.ok_or(StoreError::NotFound(id))
    }

    /// One row by workflow and key.
    pub async fn find(&self, workflow: &str, key: &str) -> Result<Option<OutboxRow>, StoreError> {
        self.backend.find(workflow, key).await
    }

    /// A row's attempt history, oldest first.
    pub async fn attempts(&self, id: i64) -> Result<Vec<AttemptLine>, StoreError> {
        self.backend.attempts(id).await
    }

    /// Rows matching a filter, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<OutboxRow>, StoreError> {
        self.backend.list(filter).await
    }

    /// Operator reset (the same as `UPDATE ferry_outbox SET state = 'pending' WHERE id = …`):
    /// allowed on `dead`, `retry_wait` and `sending` rows (the operator's moves to `pending` in
    /// [`state::TRANSITIONS`]); a `pending` row is left as it is.
    pub async fn reset(&self, id: i64) -> Result<(), StoreError> {
        let state = self.get(id).await?.state;
        if state == State::Pending {
            return Ok(());
        }
        if !state.can_move_by(State::Pending, state::Actor::Operator) {
            return Err(StoreError::WrongState {
                id,
                state,
                why: "only dead, retry_wait or sending rows can be retried".into(),
            });
        }
        self.backend
            .set_state(id, state, State::Pending, None)
            .await
    }

    /// Release a dead row from holding its ordering group (see [`OutboxBackend::release`]).
    pub async fn release(&self, id: i64, by: &str, reason: &str) -> Result<(), StoreError> {
        self.backend.release(id, by, reason).await
    }

    /// Ordering groups held by a dead row (`ferry_blocked`).
    pub async fn blocked(&self) -> Result<Vec<BlockedGroup>, StoreError> {
        self.backend.blocked().await
    }

    /// Pause a workflow or a target for every relay.
    pub async fn pause(
        &self,
        kind: PauseKind,
        name: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.backend.pause(kind, name, by, reason).await
    }

    /// Resume a workflow or a target; returns whether it was paused.
    pub async fn resume(&self, kind: PauseKind, name: &str) -> Result<bool, StoreError> {
        self.backend.resume(kind, name).await
    }

    /// Everything paused.
    pub async fn paused(&self) -> Result<Vec<PausedLine>, StoreError> {
        self.backend.paused().await
    }

    /// Take one request of a target's deployment-wide rate limit (see
    /// [`OutboxBackend::rate_take`]): `None` allowed, `Some(wait)` ask again after `wait`.
    pub async fn rate_take(
        &self,
        target: &str,
        limit: RateLimit,
    ) -> Result<Option<Duration>, StoreError> {
        self.backend.rate_take(target, limit).await
    }

    /// Reset every dead row (of one workflow, if given). Returns how many.
    pub async fn reset_dead(&self, workflow: Option<&str>) -> Result<u64, StoreError> {
        self.backend.reset_dead(workflow).await
    }

    /// Operator cancel: a `pending` or `retry_wait` row becomes `dead` with the reason (the
    /// operator's moves to `dead` in [`state::TRANSITIONS`]).
    pub async fn cancel(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        let state = self.get(id).await?.state;
        if !state.can_move_by(State::Dead, state::Actor::Operator) {
            return Err(StoreError::WrongState {
                id,
                state,
                why: "only pending or retry_wait rows can be cancelled".into(),
            });
        }
        self.backend
            .set_state(id, state, State::Dead, Some(reason))
            .await
    }

    /// Run a statement with no parameters (used by tests and the demo for example schemas).
    pub async fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        self.backend.execute_script(sql).await
    }

    /// Send delivered rows again on purpose: see [`OutboxBackend::replay`]. Every new row gets
    /// its own id (a new Idempotency-Key) and `replay_of`; its workflow's `on_done` SQL is not
    /// run for it.
    ///
    /// # Errors
    /// [`StoreError::InvalidIntent`] for an empty range or one wider than [`REPLAY_MAX`] rows.
    pub async fn replay(
        &self,
        selection: &ReplaySelection,
        dry_run: bool,
    ) -> Result<Vec<Replayed>, StoreError> {
        if selection.since >= selection.until {
            return Err(StoreError::InvalidIntent(
                "the replay's --since must be before its --until".into(),
            ));
        }
        self.backend.replay(selection, dry_run).await
    }

    /// Delete `done` rows finished more than `older_than` ago (their attempts go with them, by
    /// the database's delete trigger), in batches so no statement holds locks for long. Returns
    /// how many rows.
    pub async fn prune_done(&self, older_than: Duration) -> Result<u64, StoreError> {
        self.backend.prune_done(older_than).await
    }

    /// Delete attempt rows whose outbox row no longer exists: rows deleted by versions before
    /// the delete trigger (migration 0002), or with triggers disabled. Walks `ferry_attempts`
    /// in ranges of ids, one short statement each. Returns how many attempt rows.
    pub async fn sweep_orphan_attempts(&self) -> Result<u64, StoreError> {
        self.backend.sweep_orphan_attempts().await
    }

    /// Take the tick `tick` of cron job `job` for this relay: true if no relay took it before.
    pub async fn claim_cron_tick(
        &self,
        job: &str,
        tick: DateTime<Utc>,
        relay: &str,
    ) -> Result<bool, StoreError> {
        self.backend.claim_cron_tick(job, tick, relay).await
    }

    /// Run SQL from a workflow file with named parameters (`:key`, `:limit`), rows by column name.
    pub async fn fetch_named(
        &self,
        sql: &str,
        params: &[(&str, dynamic::SqlValue)],
    ) -> Result<Vec<dynamic::NamedRow>, StoreError> {
        self.backend.fetch_named(sql, params).await
    }

    /// Is the database reachable right now?
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    /// Close the pool.
    pub async fn close(&self) {
        self.backend.close().await
    }
}

/// A time as Ferry shows it to people (and as SQLite stores it): `YYYY-MM-DDTHH:MM:SS.SSSZ`, UTC.
pub fn time_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Truncate `s` to at most `max` bytes on a char boundary, marking the cut.
pub fn excerpt(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes cut]", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_redact() {
        assert_eq!(
            "sqlite:ferry.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("ferry.db".into())
        );
        assert_eq!(
            "sqlite:///tmp/x.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            "data/app.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("data/app.db".into())
        );
        let pg: DatabaseUrl = "postgres://ferry:s3cret@127.0.0.1:5432/app"
            .parse()
            .unwrap();
        assert_eq!(pg.redacted(), "postgres://ferry:***@127.0.0.1:5432/app");
        assert!(!format!("{pg:?}").contains("s3cret"));
        let err = "mysql://root:pw@x/y".parse::<DatabaseUrl>().unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
        assert!("".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        let s = "Ошибка".repeat(100);
        let e = excerpt(&s, 7);
        assert!(e.starts_with("Оши"));
        assert!(e.contains("bytes cut"));
        assert_eq!(excerpt("short", 10), "short");
    }
}
