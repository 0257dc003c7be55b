//! SQLite store, the embedded default: WAL journal, one writer at a time (`BEGIN IMMEDIATE`
//! takes the write lock before reading, so a claim never races another claim in this or any other
//! process), and wake-ups from commit hooks on the store's own pool plus `PRAGMA data_version` for
//! commits made by other connections or processes.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteOperation, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Executor, Row, SqliteConnection, SqlitePool};
use tokio::sync::watch;
use uuid::Uuid;

use super::pg::{attempt_error, attempt_outcome};
use super::{
    log_oversized, oversized_reason, AttemptLine, Claimed, Completion, DatabaseUrl, ListFilter,
    OutboxRow, Outcome, Recorded, State, StatusLine, StoreConfig, StoreError, CLAIM_PAYLOAD_BUDGET,
    MAX_PAYLOAD_BYTES,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Done rows deleted per prune statement.
const PRUNE_BATCH: i64 = 5000;

/// Attempt ids looked at per orphan-sweep statement.
const SWEEP_RANGE: i64 = 50_000;

/// SQLite's "now" in the format every Ferry timestamp is stored in.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

const ROW_COLUMNS: &str = "id, workflow, key, state, attempts, due_at, last_error, last_status, \
                           created_at, updated_at, done_at, payload";

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

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The claim: the same contract as PostgreSQL's, inside `BEGIN IMMEDIATE` so the read of due
    /// rows and their lease happen under the database's single write lock; the same payload
    /// budget (`sized`: the first row, then as long as the running total fits) and the same
    /// handling of payloads over the limit. `octet_length` of a column reads the size from the
    /// record header, not the value; the one rewrite of an oversized row that makes it dead is
    /// the only time SQLite reads it again, and its payload is not returned.
    pub(crate) async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        skip: &[String],
        token: Uuid,
    ) -> Result<Vec<Claimed>, StoreError> {
        let skip_json = serde_json::to_string(skip).expect("strings serialize");
        let token_text = token.to_string();
        let sql = format!(
            "WITH due AS ( \
                SELECT id, due_at, octet_length(payload) AS bytes FROM ferry_outbox \
                 WHERE state IN ('pending', 'retry_wait', 'sending') AND due_at <= {NOW} \
                   AND workflow NOT IN (SELECT value FROM json_each(?4)) \
                 ORDER BY due_at LIMIT ?3), \
             sized AS ( \
                SELECT id, row_number() OVER w AS n, \
                       sum(CASE WHEN bytes > ?5 THEN 0 ELSE bytes END) OVER w AS running \
                  FROM due \
                WINDOW w AS (ORDER BY due_at, id ROWS UNBOUNDED PRECEDING)) \
             UPDATE ferry_outbox SET \
                    state = CASE WHEN octet_length(payload) > ?5 THEN 'dead' ELSE 'sending' END, \
                    claim_token = CASE WHEN octet_length(payload) > ?5 THEN NULL ELSE ?1 END, \
                    attempts = CASE WHEN octet_length(payload) > ?5 THEN attempts ELSE attempts + 1 END, \
                    due_at = CASE WHEN octet_length(payload) > ?5 THEN due_at \
                                  ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2) END, \
                    last_error = CASE WHEN octet_length(payload) > ?5 \
                                      THEN printf(?7, octet_length(payload)) ELSE last_error END, \
                    last_status = CASE WHEN octet_length(payload) > ?5 THEN NULL ELSE last_status END, \
                    updated_at = {NOW} \
              WHERE id IN (SELECT id FROM sized WHERE n = 1 OR running <= ?6) \
             RETURNING id, workflow, key, \
                       CASE WHEN octet_length(payload) > ?5 THEN NULL ELSE payload END, \
                       attempts, created_at, octet_length(payload)"
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(&sql)
            .bind(&token_text)
            .bind(modifier(lease))
            .bind(i64::from(limit))
            .bind(&skip_json)
            .bind(MAX_PAYLOAD_BYTES as i64)
            .bind(CLAIM_PAYLOAD_BUDGET as i64)
            .bind(oversized_reason("%d"))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get(0)?;
            let workflow: String = r.try_get(1)?;
            let key: String = r.try_get(2)?;
            let Some(payload) = r.try_get::<Option<String>, _>(3)? else {
                log_oversized(id, &workflow, &key, r.try_get(6)?);
                continue;
            };
            claimed.push(Claimed {
                id,
                workflow,
                key,
                payload,
                attempt: r.try_get(4)?,
                token,
                created_at: r.try_get(5)?,
            });
        }
        Ok(claimed)
    }

    pub(crate) async fn complete(&self, batch: &[Completion]) -> Result<Vec<Recorded>, StoreError> {
        let mut results = vec![Recorded::Stale; batch.len()];
        let update_sql = format!(
            "UPDATE ferry_outbox SET \
                state = ?1, \
                due_at = CASE WHEN ?1 = 'retry_wait' THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2) \
                              ELSE due_at END, \
                attempts = CASE WHEN ?3 THEN max(attempts - 1, 0) ELSE attempts END, \
                claim_token = NULL, \
                last_error = CASE WHEN ?3 THEN last_error ELSE ?4 END, \
                last_status = CASE WHEN ?3 THEN last_status ELSE ?5 END, \
                done_at = CASE WHEN ?1 = 'done' THEN {NOW} END, \
                updated_at = {NOW} \
              WHERE id = ?6 AND claim_token = ?7 AND state = 'sending'"
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (i, c) in batch.iter().enumerate() {
            let token = c.token.to_string();
            let status = c.record.as_ref().and_then(|r| r.http_status).map(i32::from);
            let on_done = c.on_done.as_ref().filter(|_| c.outcome == Outcome::Done);
            if on_done.is_some() {
                tx.execute("SAVEPOINT ferry_on_done").await?;
            }
            let marked = sqlx::query(&update_sql)
                .bind(c.outcome.next_state().as_str())
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
            let mut q = sqlx::query(&on_done.sqlite);
            for p in &on_done.params {
                q = match *p {
                    "key" => q.bind(c.key.clone()),
                    "outbox_id" => q.bind(c.id),
                    "attempt" => q.bind(c.attempt),
                    "status" => q.bind(status),
                    "response" => {
                        q.bind(c.record.as_ref().and_then(|r| r.response_excerpt.clone()))
                    }
                    _ => q.bind(Option::<String>::None),
                };
            }
            match q.execute(&mut *tx).await {
                Ok(_) => {
                    tx.execute("RELEASE SAVEPOINT ferry_on_done").await?;
                    results[i] = Recorded::Accepted;
                }
                Err(e) => {
                    tx.execute("ROLLBACK TO SAVEPOINT ferry_on_done").await?;
                    let reason = format!(
                        "delivered (HTTP {}), but the workflow's on_done SQL failed: {e}",
                        status.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
                    );
                    sqlx::query(&format!(
                        "UPDATE ferry_outbox SET state = 'dead', claim_token = NULL, last_error = ?3, \
                                last_status = ?4, updated_at = {NOW} \
                          WHERE id = ?1 AND claim_token = ?2 AND state = 'sending'"
                    ))
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
                let present: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM ferry_outbox WHERE id = ?1")
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
            sqlx::query(
                "INSERT INTO ferry_attempts \
                   (outbox_id, attempt, started_at, duration_ms, outcome, http_status, error, response_excerpt) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(c.id)
            .bind(c.attempt)
            .bind(r.started_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
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

    pub(crate) async fn extend(
        &self,
        held: &[(i64, Uuid)],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let sql = "UPDATE ferry_outbox SET due_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3) \
                    WHERE id = ?1 AND claim_token = ?2 AND state = 'sending'";
        let m = modifier(lease);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut n = 0;
        for (id, token) in held {
            n += sqlx::query(sql)
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

    pub(crate) fn waiter(&self) -> SqliteWaiter {
        SqliteWaiter {
            wake: self.wake.tx.subscribe(),
            options: self.options.clone(),
            conn: None,
            data_version: None,
            poll: DATA_VERSION_POLL_MIN,
        }
    }

    pub(crate) async fn status(&self) -> Result<Vec<StatusLine>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT workflow, state, rows, oldest_due_age_s FROM ferry_status ORDER BY workflow, state",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn count_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as(
                "SELECT state, count(*) FROM ferry_outbox GROUP BY state ORDER BY state",
            )
            .fetch_all(&self.pool)
            .await?,
        )
    }

    pub(crate) async fn get(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let sql = format!("SELECT {ROW_COLUMNS} FROM ferry_outbox WHERE id = ?1");
        Ok(sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(crate) async fn find(
        &self,
        workflow: &str,
        key: &str,
    ) -> Result<Option<OutboxRow>, StoreError> {
        let sql =
            format!("SELECT {ROW_COLUMNS} FROM ferry_outbox WHERE workflow = ?1 AND key = ?2");
        Ok(sqlx::query_as(&sql)
            .bind(workflow)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(crate) async fn attempts(&self, id: i64) -> Result<Vec<AttemptLine>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, outcome, http_status, error, response_excerpt \
               FROM ferry_attempts WHERE outbox_id = ?1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn list(&self, f: &ListFilter) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM ferry_outbox \
              WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR workflow = ?2) \
              ORDER BY id DESC LIMIT ?3"
        );
        Ok(sqlx::query_as(&sql)
            .bind(f.state.map(|s| s.as_str()))
            .bind(f.workflow.as_deref())
            .bind(if f.limit > 0 { f.limit } else { 100 })
            .fetch_all(&self.pool)
            .await?)
    }

    pub(crate) async fn set_state(
        &self,
        id: i64,
        from: State,
        to: State,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let n = sqlx::query(&format!(
            "UPDATE ferry_outbox SET state = ?3, claim_token = NULL, \
                    last_error = COALESCE(?4, last_error), updated_at = {NOW} \
              WHERE id = ?1 AND state = ?2"
        ))
        .bind(id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(reason)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            let now = self.get(id).await?.ok_or(StoreError::NotFound(id))?;
            return Err(StoreError::WrongState {
                id,
                state: now.state.parse().unwrap_or(from),
                why: "it changed state while the command ran; look again".into(),
            });
        }
        if to == State::Pending {
            self.wake.notify_waiters();
        }
        Ok(())
    }

    pub(crate) async fn reset_dead(&self, workflow: Option<&str>) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "UPDATE ferry_outbox SET state = 'pending' WHERE state = 'dead' AND (?1 IS NULL OR workflow = ?1)",
        )
        .bind(workflow)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.wake.notify_waiters();
        Ok(n)
    }

    pub(crate) async fn prune_done(&self, older_than: Duration) -> Result<u64, StoreError> {
        let cutoff = format!("-{:.3} seconds", older_than.as_secs_f64());
        let mut total = 0;
        loop {
            // One statement per batch; the delete trigger removes the rows' attempts with them.
            let n = sqlx::query(
                "DELETE FROM ferry_outbox WHERE id IN ( \
                   SELECT id FROM ferry_outbox \
                    WHERE state = 'done' AND done_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1) \
                    LIMIT ?2)",
            )
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

    pub(crate) async fn sweep_orphan_attempts(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM ferry_attempts")
            .fetch_one(&self.pool)
            .await?;
        let mut total = 0;
        let mut from = 0;
        while from < max.unwrap_or(0) {
            // A range of ids per statement, so the write lock is held for milliseconds.
            total += sqlx::query(
                "DELETE FROM ferry_attempts \
                  WHERE id > ?1 AND id <= ?2 \
                    AND NOT EXISTS (SELECT 1 FROM ferry_outbox o WHERE o.id = ferry_attempts.outbox_id)",
            )
            .bind(from)
            .bind(from + SWEEP_RANGE)
            .execute(&self.pool)
            .await?
            .rows_affected();
            from += SWEEP_RANGE;
        }
        Ok(total)
    }

    pub(crate) async fn claim_cron_tick(
        &self,
        job: &str,
        tick: chrono::DateTime<chrono::Utc>,
        relay: &str,
    ) -> Result<bool, StoreError> {
        let tick = tick.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let won = sqlx::query(&format!(
            "INSERT INTO ferry_cron (job, last_tick, ran_at, ran_by) VALUES (?1, ?2, {NOW}, ?3) \
             ON CONFLICT (job) DO UPDATE SET last_tick = excluded.last_tick, ran_at = {NOW}, \
                    ran_by = excluded.ran_by \
              WHERE ferry_cron.last_tick < excluded.last_tick \
             RETURNING job"
        ))
        .bind(job)
        .bind(&tick)
        .bind(relay)
        .fetch_all(&self.pool) // to completion, so a failed autocommit is an error, not a win
        .await?;
        Ok(!won.is_empty())
    }

    pub(crate) async fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(sql).execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
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
        match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
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

    pub(crate) async fn close(self) {
        if let Some(conn) = self.conn {
            let _ = conn.close().await;
        }
    }

    pub(crate) async fn wait(&mut self, timeout: Duration) -> bool {
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
