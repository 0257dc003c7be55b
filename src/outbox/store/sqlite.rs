//! SQLite backend, the embedded default: WAL journal, one writer at a time (`BEGIN IMMEDIATE`
//! takes the write lock before reading, so a claim never races another claim in this or any other
//! process), and wake-ups from commit hooks on the store's own pool plus `PRAGMA data_version` for
//! commits made by other connections or processes. Timestamps are stored as UTC text
//! `YYYY-MM-DDTHH:MM:SS.SSSZ` taken from SQLite's clock. The statements are in
//! `src/outbox/sql/sqlite/` ([`crate::outbox::sql::sqlite`]).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteOperation, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Executor, SqliteConnection, SqlitePool};
use tokio::sync::watch;
use uuid::Uuid;

use super::{
    attempt_error, attempt_outcome, bind_on_done, claimed, http_status, on_done,
    on_done_failed_reason, oversized_reason, ClaimRow, OutboxBackend, OutboxWaiter,
};
use crate::outbox::dynamic::{self, NamedRow, SqlValue};
use crate::outbox::sql::sqlite as sql;
use crate::outbox::{
    enqueue_ordered, AttemptLine, BlockedGroup, Claimed, Completion, DatabaseUrl, Enqueued,
    ListFilter, OutboxRow, PauseKind, PausedLine, RateLimit, Recorded, State, StatusLine,
    StoreConfig, StoreError, CLAIM_PAYLOAD_BUDGET, MAX_PAYLOAD_BYTES,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Done rows deleted per prune statement.
const PRUNE_BATCH: i64 = 5000;

/// Attempt ids looked at per orphan-sweep statement.
const SWEEP_RANGE: i64 = 50_000;

#[derive(Clone)]
pub(crate) struct SqliteStore {
    pub(crate) pool: SqlitePool,
    options: SqliteConnectOptions,
    pub(crate) wake: Arc<Wake>,
}

/// In-process wake-up: a counter bumped whenever a connection of the store's pool commits a
/// transaction that inserted into `ferry_outbox`. A `watch` channel, unlike a bare `Notify`,
/// remembers a bump that happened while the relay was busy claiming.
pub(crate) struct Wake {
    tx: watch::Sender<u64>,
}

impl Wake {
    pub(crate) fn notify_waiters(&self) {
        self.tx.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// `+1.250 seconds`, a SQLite date modifier.
fn modifier(d: Duration) -> String {
    format!("+{:.3} seconds", d.as_secs_f64())
}

/// A time as SQLite columns store it: `YYYY-MM-DDTHH:MM:SS.SSSZ`, UTC (sqlx's own encoding of a
/// `DateTime` is another format, which would not compare as text with the stored ones).
fn stored_time(t: DateTime<Utc>) -> String {
    crate::outbox::time_text(t)
}

impl SqliteStore {
    pub(crate) async fn open(config: &StoreConfig) -> Result<SqliteStore, StoreError> {
        let DatabaseUrl::Sqlite(path) = &config.url else {
            unreachable!("SqliteStore::open called with a PostgreSQL URL")
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{path}"))
            .map_err(|e| StoreError::BadUrl(format!("'sqlite:{path}': {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a process crash (kill -9) without losing a commit; a
            // power cut may lose the last commits, but an intent and its business change share
            // a transaction, so they are lost or kept together.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        // One direct connection first, so an unusable path is reported at once with its cause
        // instead of after the pool's timeout.
        if let Err(cause) = SqliteConnection::connect_with(&options).await {
            return Err(StoreError::Connect {
                target: config.url.redacted(),
                cause,
            });
        }
        let (tx, _) = watch::channel(0u64);
        let wake = Arc::new(Wake { tx });
        let hook_wake = wake.clone();
        let pool = SqlitePoolOptions::new()
            // One writer at a time: more connections only add page caches (about 2 MiB each).
            .max_connections(config.max_connections.clamp(2, 4))
            .acquire_timeout(config.connect_timeout)
            .after_connect(move |conn, _meta| {
                let wake = hook_wake.clone();
                Box::pin(async move {
                    install_wake_hooks(conn, wake).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|cause| StoreError::Connect {
                target: config.url.redacted(),
                cause,
            })?;
        Ok(SqliteStore {
            pool,
            options,
            wake,
        })
    }
}

impl OutboxBackend for SqliteStore {
    type Waiter = SqliteWaiter;

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn enqueue(
        &self,
        workflow: &str,
        key: &str,
        ordering_key: Option<&str>,
        payload: &serde_json::Value,
    ) -> Result<Enqueued, StoreError> {
        let mut conn = self.pool.acquire().await?;
        enqueue_ordered(&mut *conn, workflow, key, ordering_key, payload).await
    }

    /// [`sql::CLAIM`] inside `BEGIN IMMEDIATE`.
    async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        skip: &[String],
        token: Uuid,
    ) -> Result<Vec<Claimed>, StoreError> {
        let skip_json = serde_json::to_string(skip).expect("strings serialize");
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows: Vec<ClaimRow> = sqlx::query_as(sql::CLAIM)
            .bind(token.to_string())
            .bind(modifier(lease))
            .bind(i64::from(limit))
            .bind(&skip_json)
            .bind(MAX_PAYLOAD_BYTES as i64)
            .bind(CLAIM_PAYLOAD_BUDGET as i64)
            .bind(oversized_reason("%d"))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(claimed(rows, token))
    }

    /// One `BEGIN IMMEDIATE` transaction: [`sql::COMPLETE`] per row (behind a savepoint with
    /// the on-done SQL for done rows that have some), then which unrecorded rows still exist
    /// (the write lock is held, so nothing changes in between), then the attempts.
    async fn complete(&self, batch: &[Completion]) -> Result<Vec<Recorded>, StoreError> {
        let mut results = vec![Recorded::Stale; batch.len()];
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (i, c) in batch.iter().enumerate() {
            let token = c.token.to_string();
            let status = http_status(c);
            let on_done = on_done(c);
            if on_done.is_some() {
                tx.execute("SAVEPOINT ferry_on_done").await?;
            }
            let marked = sqlx::query(sql::COMPLETE)
                .bind(c.outcome.next_state())
                .bind(modifier(c.outcome.wait().unwrap_or_default()))
                .bind(c.outcome.refunds_attempt())
                .bind(c.outcome.error())
                .bind(status)
                .bind(c.id)
                .bind(&token)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let Some(on_done) = on_done else {
                if marked == 1 {
                    results[i] = Recorded::Accepted;
                }
                continue;
            };
            if marked == 0 {
                tx.execute("RELEASE SAVEPOINT ferry_on_done").await?;
                continue;
            }
            let q = bind_on_done(sqlx::query(&on_done.sqlite), on_done, c);
            match q.execute(&mut *tx).await {
                Ok(_) => {
                    tx.execute("RELEASE SAVEPOINT ferry_on_done").await?;
                    results[i] = Recorded::Accepted;
                }
                Err(e) => {
                    tx.execute("ROLLBACK TO SAVEPOINT ferry_on_done").await?;
                    let reason = on_done_failed_reason(status, &e);
                    sqlx::query(sql::MARK_ON_DONE_FAILED)
                        .bind(c.id)
                        .bind(&token)
                        .bind(&reason)
                        .bind(status)
                        .execute(&mut *tx)
                        .await?;
                    tx.execute("RELEASE SAVEPOINT ferry_on_done").await?;
                    results[i] = Recorded::OnDoneFailed(reason);
                }
            }
        }
        // Completions not recorded: the row is someone else's now (stale) or was deleted (gone;
        // no attempt row for it). The write lock is held, so nothing changes in between.
        for (i, c) in batch.iter().enumerate() {
            if results[i] == Recorded::Stale {
                let present: Option<i64> = sqlx::query_scalar(sql::ROW_EXISTS)
                    .bind(c.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if present.is_none() {
                    results[i] = Recorded::Gone;
                }
            }
        }
        for (i, c) in batch.iter().enumerate() {
            let Some(r) = &c.record else { continue };
            if results[i] == Recorded::Gone {
                continue;
            }
            sqlx::query(sql::INSERT_ATTEMPT)
                .bind(c.id)
                .bind(c.attempt)
                .bind(stored_time(r.started_at))
                .bind(r.duration.as_secs_f64() * 1000.0)
                .bind(attempt_outcome(c, &results[i]))
                .bind(r.http_status.map(i32::from))
                .bind(attempt_error(c, &results[i]))
                .bind(r.response_excerpt.as_deref())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn extend_leases(
        &self,
        held: &[(i64, Uuid)],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let m = modifier(lease);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut n = 0;
        for (id, token) in held {
            n += sqlx::query(sql::EXTEND)
                .bind(id)
                .bind(token.to_string())
                .bind(&m)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Commit hooks and `PRAGMA data_version`; `listen` does not apply (nothing is dropped by a
    /// pooler here).
    async fn waiter(&self, _listen: bool) -> Result<SqliteWaiter, StoreError> {
        Ok(SqliteWaiter {
            wake: self.wake.tx.subscribe(),
            options: self.options.clone(),
            conn: None,
            data_version: None,
            poll: DATA_VERSION_POLL_MIN,
        })
    }

    fn wake(&self) {
        self.wake.notify_waiters();
    }

    async fn status(&self) -> Result<Vec<StatusLine>, StoreError> {
        Ok(sqlx::query_as(sql::STATUS).fetch_all(&self.pool).await?)
    }

    async fn count_by_state(&self) -> Result<Vec<(State, i64)>, StoreError> {
        Ok(sqlx::query_as(sql::COUNT_BY_STATE)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn get(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(sql::GET_ROW)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn find(&self, workflow: &str, key: &str) -> Result<Option<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(sql::FIND_ROW)
            .bind(workflow)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn attempts(&self, id: i64) -> Result<Vec<AttemptLine>, StoreError> {
        Ok(sqlx::query_as(sql::ATTEMPTS)
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn list(&self, f: &ListFilter) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(sql::LIST_ROWS)
            .bind(f.state)
            .bind(f.workflow.as_deref())
            .bind(f.limit_or_default())
            .fetch_all(&self.pool)
            .await?)
    }

    async fn set_state(
        &self,
        id: i64,
        from: State,
        to: State,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let n = sqlx::query(sql::SET_STATE)
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(reason)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            let now = self.get(id).await?.ok_or(StoreError::NotFound(id))?;
            return Err(StoreError::changed_meanwhile(id, now.state));
        }
        if to == State::Pending {
            self.wake.notify_waiters();
        }
        Ok(())
    }

    async fn reset_dead(&self, workflow: Option<&str>) -> Result<u64, StoreError> {
        let n = sqlx::query(sql::RESET_DEAD)
            .bind(workflow)
            .execute(&self.pool)
            .await?
            .rows_affected();
        self.wake.notify_waiters();
        Ok(n)
    }

    async fn release(&self, id: i64, by: &str, reason: &str) -> Result<(), StoreError> {
        let n = sqlx::query(sql::RELEASE)
            .bind(id)
            .bind(by)
            .bind(reason)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            let now = self.get(id).await?.ok_or(StoreError::NotFound(id))?;
            return Err(StoreError::WrongState {
                id,
                state: now.state,
                why: "only a dead row can be released (retry or cancel it otherwise)".into(),
            });
        }
        Ok(())
    }

    async fn blocked(&self) -> Result<Vec<BlockedGroup>, StoreError> {
        Ok(sqlx::query_as(sql::BLOCKED).fetch_all(&self.pool).await?)
    }

    async fn pause(
        &self,
        kind: PauseKind,
        name: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::PAUSE)
            .bind(kind.as_str())
            .bind(name)
            .bind(by)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<PausedLine>, StoreError> {
        Ok(sqlx::query_as(sql::PAUSED).fetch_all(&self.pool).await?)
    }

    async fn resume(&self, kind: PauseKind, name: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(sql::RESUME)
            .bind(kind.as_str())
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        self.wake.notify_waiters();
        Ok(n > 0)
    }

    async fn rate_take(
        &self,
        target: &str,
        limit: RateLimit,
    ) -> Result<Option<Duration>, StoreError> {
        let interval = limit.interval().as_secs_f64();
        let took = sqlx::query(sql::RATE_TAKE)
            .bind(target)
            .bind(interval)
            .bind(0.0_f64)
            .fetch_all(&self.pool)
            .await?;
        if !took.is_empty() {
            return Ok(None);
        }
        let wait: Option<f64> = sqlx::query_scalar(sql::RATE_WAIT)
            .bind(target)
            .bind(0.0_f64)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Some(Duration::from_secs_f64(
            wait.unwrap_or(0.001).clamp(0.001, 3600.0),
        )))
    }

    async fn prune_done(&self, older_than: Duration) -> Result<u64, StoreError> {
        let cutoff = format!("-{:.3} seconds", older_than.as_secs_f64());
        let mut total = 0;
        loop {
            let n = sqlx::query(sql::PRUNE_DONE)
                .bind(&cutoff)
                .bind(PRUNE_BATCH)
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn sweep_orphan_attempts(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = sqlx::query_scalar(sql::MAX_ATTEMPT_ID)
            .fetch_one(&self.pool)
            .await?;
        let mut total = 0;
        let mut from = 0;
        while from < max.unwrap_or(0) {
            total += sqlx::query(sql::SWEEP_ORPHAN_ATTEMPTS)
                .bind(from)
                .bind(from + SWEEP_RANGE)
                .execute(&self.pool)
                .await?
                .rows_affected();
            from += SWEEP_RANGE;
        }
        Ok(total)
    }

    async fn claim_cron_tick(
        &self,
        job: &str,
        tick: DateTime<Utc>,
        relay: &str,
    ) -> Result<bool, StoreError> {
        let won = sqlx::query(sql::CLAIM_CRON_TICK)
            .bind(job)
            .bind(stored_time(tick))
            .bind(relay)
            .fetch_all(&self.pool) // to completion, so a failed autocommit is an error, not a win
            .await?;
        Ok(!won.is_empty())
    }

    async fn fetch_named(
        &self,
        query: &str,
        params: &[(&str, SqlValue)],
    ) -> Result<Vec<NamedRow>, StoreError> {
        Ok(dynamic::fetch_sqlite(&self.pool, query, params).await?)
    }

    async fn execute_script(&self, script: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(script).execute(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(sql::PING).execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Bump the store's wake counter when a transaction that inserted an outbox row commits.
async fn install_wake_hooks(
    conn: &mut SqliteConnection,
    wake: Arc<Wake>,
) -> Result<(), sqlx::Error> {
    let inserted = Arc::new(AtomicBool::new(false));
    let mut handle = conn.lock_handle().await?;
    let flag = inserted.clone();
    handle.set_update_hook(move |r| {
        if r.table == "ferry_outbox" && matches!(r.operation, SqliteOperation::Insert) {
            flag.store(true, Ordering::Relaxed);
        }
    });
    let flag = inserted.clone();
    // The commit hook runs just before the commit completes while this connection still holds
    // the write lock; a woken relay's BEGIN IMMEDIATE waits for that lock, so it sees the row.
    handle.set_commit_hook(move || {
        if flag.swap(false, Ordering::Relaxed) {
            wake.notify_waiters();
        }
        true
    });
    handle.set_rollback_hook(move || inserted.store(false, Ordering::Relaxed));
    Ok(())
}

/// How often the waiter looks at `PRAGMA data_version` for commits by other processes: every
/// 10 ms right after activity, backing off to 250 ms while nothing happens. Each look is a query
/// through sqlx's worker thread (measured: a steady 10 ms poll cost 17 % of a core while idle);
/// commits made through this process's store wake relays at once through commit hooks anyway.
const DATA_VERSION_POLL_MIN: Duration = Duration::from_millis(10);
const DATA_VERSION_POLL_MAX: Duration = Duration::from_millis(250);

/// Waits on the in-process wake counter and on `PRAGMA data_version` of a dedicated connection
/// (it changes when another connection or process commits).
pub struct SqliteWaiter {
    wake: watch::Receiver<u64>,
    options: SqliteConnectOptions,
    conn: Option<SqliteConnection>,
    data_version: Option<i64>,
    poll: Duration,
}

impl SqliteWaiter {
    async fn data_version_changed(&mut self) -> bool {
        if self.conn.is_none() {
            match SqliteConnection::connect_with(&self.options).await {
                Ok(c) => self.conn = Some(c),
                Err(_) => return false,
            }
        }
        let conn = self.conn.as_mut().expect("just set");
        match sqlx::query_scalar::<_, i64>(sql::DATA_VERSION)
            .fetch_one(&mut *conn)
            .await
        {
            Ok(v) => {
                let changed = self.data_version.is_some_and(|old| old != v);
                self.data_version = Some(v);
                changed
            }
            Err(_) => {
                self.conn = None;
                false
            }
        }
    }
}

impl OutboxWaiter for SqliteWaiter {
    async fn close(self) {
        if let Some(conn) = self.conn {
            let _ = conn.close().await;
        }
    }

    async fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        // Take the current data_version as the baseline before sleeping.
        if self.data_version.is_none() {
            self.data_version_changed().await;
        }
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let tick = (now + self.poll).min(deadline);
            tokio::select! {
                r = self.wake.changed() => {
                    if r.is_ok() {
                        self.poll = DATA_VERSION_POLL_MIN;
                        return true;
                    }
                    // The store is gone; fall back to polling only.
                    tokio::time::sleep_until(tick).await;
                }
                _ = tokio::time::sleep_until(tick) => {
                    if self.data_version_changed().await {
                        self.poll = DATA_VERSION_POLL_MIN;
                        return true;
                    }
                    self.poll = (self.poll * 3 / 2).min(DATA_VERSION_POLL_MAX);
                }
            }
        }
    }
}
