//! PostgreSQL store: claims with `FOR UPDATE SKIP LOCKED`, batch completions with `UNNEST`,
//! wake-ups with LISTEN/NOTIFY. Every time comparison uses the server's `now()`.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Executor, PgPool, Row};
use uuid::Uuid;

use super::{
    log_oversized, oversized_reason, AttemptLine, Claimed, Completion, DatabaseUrl, ListFilter,
    OutboxRow, Recorded, State, StatusLine, StoreConfig, StoreError, CLAIM_PAYLOAD_BUDGET,
    MAX_PAYLOAD_BYTES,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Done rows deleted per prune statement.
const PRUNE_BATCH: i64 = 5000;

/// Attempt ids looked at per orphan-sweep statement.
const SWEEP_RANGE: i64 = 50_000;

/// Timestamps leave PostgreSQL as ISO-8601 UTC text, the same shape SQLite stores.
macro_rules! ts {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

const ROW_COLUMNS: &str = concat!(
    "id, workflow, key, state, attempts, ",
    ts!("due_at"),
    " AS due_at, last_error, last_status, ",
    ts!("created_at"),
    " AS created_at, ",
    ts!("updated_at"),
    " AS updated_at, ",
    ts!("done_at"),
    " AS done_at, payload::text AS payload"
);

#[derive(Clone)]
pub(crate) struct PgStore {
    pub(crate) pool: PgPool,
    schema: Option<String>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgStore {
    pub(crate) async fn open(config: &StoreConfig) -> Result<PgStore, StoreError> {
        let DatabaseUrl::Postgres(url) = &config.url else {
            unreachable!("PgStore::open called with a SQLite URL")
        };
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("'{}': {e}", config.url.redacted())))?
            .application_name("ferry");
        if let Some(schema) = &config.schema {
            check_schema_name(schema)?;
            options = options.options([("search_path", schema.as_str())]);
        }
        // One direct connection first: the pool retries until its timeout and then reports only
        // "pool timed out", hiding the cause (connection refused, unknown database, bad role).
        let target = config.url.redacted();
        match tokio::time::timeout(
            config.connect_timeout,
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
            }
            Ok(Err(cause)) => return Err(StoreError::Connect { target, cause }),
            Err(_) => {
                return Err(StoreError::Connect {
                    target,
                    cause: sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {:?}", config.connect_timeout),
                    )),
                })
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout)
            .connect_with(options)
            .await
            .map_err(|cause| StoreError::Connect {
                target: config.url.redacted(),
                cause,
            })?;
        Ok(PgStore {
            pool,
            schema: config.schema.clone(),
        })
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        if let Some(schema) = &self.schema {
            self.pool
                .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
                .await?;
        }
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The claim. The CTE picks due rows in `due_at` order through the partial index
    /// `ferry_outbox_due` (whose predicate is exactly this state filter), locking each with
    /// `FOR UPDATE SKIP LOCKED` so concurrent relays pass over rows another relay is claiming
    /// instead of waiting for it. The UPDATE then leases them: the lease expiry goes into
    /// `due_at`, which makes an expired lease simply "due" again for the same index scan. The
    /// statement commits on its own, so the locks are held for microseconds; the lease, not a
    /// lock, is what keeps the row during delivery.
    ///
    /// Memory: `taken` keeps the longest prefix (in `due_at` order) whose payloads, as the text
    /// sent back, add up to at most the budget, and always the first row; rows past it stay due
    /// for the next claim. A payload over the limit counts for nothing: such a row is made dead
    /// here with the reason, and its payload is not returned (an UPDATE that does not set
    /// `payload` does not even fetch it from TOAST).
    pub(crate) async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        skip: &[String],
        token: Uuid,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows = sqlx::query(
            "WITH due AS ( \
               SELECT id, due_at, octet_length(payload::text)::bigint AS bytes FROM ferry_outbox \
                WHERE state IN ('pending', 'retry_wait', 'sending') AND due_at <= now() \
                  AND workflow <> ALL($4::text[]) \
                ORDER BY due_at \
                LIMIT $1 \
                FOR UPDATE SKIP LOCKED), \
             sized AS ( \
               SELECT id, bytes, bytes > $5::bigint AS oversized, \
                      row_number() OVER w AS n, \
                      sum(CASE WHEN bytes > $5::bigint THEN 0 ELSE bytes END) OVER w AS running \
                 FROM due \
               WINDOW w AS (ORDER BY due_at, id ROWS UNBOUNDED PRECEDING)), \
             taken AS (SELECT id, bytes, oversized FROM sized WHERE n = 1 OR running <= $6::bigint) \
             UPDATE ferry_outbox o SET \
                    state = CASE WHEN t.oversized THEN 'dead' ELSE 'sending' END, \
                    claim_token = CASE WHEN t.oversized THEN NULL ELSE $2 END, \
                    attempts = CASE WHEN t.oversized THEN o.attempts ELSE o.attempts + 1 END, \
                    due_at = CASE WHEN t.oversized THEN o.due_at \
                                  ELSE now() + $3 * interval '1 millisecond' END, \
                    last_error = CASE WHEN t.oversized THEN format($7::text, t.bytes) ELSE o.last_error END, \
                    last_status = CASE WHEN t.oversized THEN NULL ELSE o.last_status END, \
                    updated_at = now() \
               FROM taken t WHERE o.id = t.id \
             RETURNING o.id, o.workflow, o.key, \
                       CASE WHEN t.oversized THEN NULL ELSE o.payload::text END, \
                       o.attempts, o.created_at, t.bytes",
        )
        .bind(i64::from(limit))
        .bind(token)
        .bind(ms(lease))
        .bind(skip)
        .bind(MAX_PAYLOAD_BYTES as i64)
        .bind(CLAIM_PAYLOAD_BUDGET as i64)
        .bind(oversized_reason("%s"))
        .fetch_all(&self.pool)
        .await?;
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
        let mut tx = self.pool.begin().await?;

        // Rows without on-done SQL: one statement for the whole batch.
        let simple: Vec<usize> = (0..batch.len())
            .filter(|&i| !(batch[i].outcome == super::Outcome::Done && batch[i].on_done.is_some()))
            .collect();
        if !simple.is_empty() {
            let mut ids = Vec::with_capacity(simple.len());
            let mut tokens = Vec::with_capacity(simple.len());
            let mut states = Vec::with_capacity(simple.len());
            let mut waits = Vec::with_capacity(simple.len());
            let mut refunds = Vec::with_capacity(simple.len());
            let mut errors: Vec<Option<String>> = Vec::with_capacity(simple.len());
            let mut statuses: Vec<Option<i32>> = Vec::with_capacity(simple.len());
            for &i in &simple {
                let c = &batch[i];
                ids.push(c.id);
                tokens.push(c.token);
                states.push(c.outcome.next_state().as_str());
                waits.push(c.outcome.wait().map(ms).unwrap_or(0));
                refunds.push(c.outcome.refunds_attempt());
                errors.push(c.outcome.error().map(str::to_string));
                statuses.push(c.record.as_ref().and_then(|r| r.http_status).map(i32::from));
            }
            let accepted: HashSet<(i64, Uuid)> = sqlx::query(
                "UPDATE ferry_outbox AS o SET \
                    state = u.state, \
                    due_at = CASE WHEN u.state = 'retry_wait' \
                                  THEN now() + u.wait_ms * interval '1 millisecond' \
                                  ELSE o.due_at END, \
                    attempts = CASE WHEN u.refund THEN GREATEST(o.attempts - 1, 0) ELSE o.attempts END, \
                    claim_token = NULL, \
                    last_error = CASE WHEN u.refund THEN o.last_error ELSE u.error END, \
                    last_status = CASE WHEN u.refund THEN o.last_status ELSE u.status END, \
                    done_at = CASE WHEN u.state = 'done' THEN now() END, \
                    updated_at = now() \
                 FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::bool[], \
                             $6::text[], $7::int[]) AS u(id, token, state, wait_ms, refund, error, status) \
                 WHERE o.id = u.id AND o.claim_token = u.token AND o.state = 'sending' \
                 RETURNING u.id, u.token",
            )
            .bind(&ids)
            .bind(&tokens)
            .bind(&states)
            .bind(&waits)
            .bind(&refunds)
            .bind(&errors)
            .bind(&statuses)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
            for &i in &simple {
                if accepted.contains(&(batch[i].id, batch[i].token)) {
                    results[i] = Recorded::Accepted;
                }
            }
        }

        // Done rows with on-done SQL: one at a time, each behind a savepoint so a failing
        // statement turns only its own row dead (delivered, flag not set) and not the batch.
        for (i, c) in batch.iter().enumerate() {
            let Some(on_done) = c
                .on_done
                .as_ref()
                .filter(|_| c.outcome == super::Outcome::Done)
            else {
                continue;
            };
            tx.execute("SAVEPOINT ferry_on_done").await?;
            let status = c.record.as_ref().and_then(|r| r.http_status).map(i32::from);
            let marked = sqlx::query(
                "UPDATE ferry_outbox SET state = 'done', claim_token = NULL, last_error = NULL, \
                        last_status = $3, done_at = now(), updated_at = now() \
                  WHERE id = $1 AND claim_token = $2 AND state = 'sending'",
            )
            .bind(c.id)
            .bind(c.token)
            .bind(status)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if marked == 0 {
                tx.execute("RELEASE SAVEPOINT ferry_on_done").await?;
                continue;
            }
            let mut q = sqlx::query(&on_done.postgres);
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
                    sqlx::query(
                        "UPDATE ferry_outbox SET state = 'dead', claim_token = NULL, last_error = $3, \
                                last_status = $4, updated_at = now() \
                          WHERE id = $1 AND claim_token = $2 AND state = 'sending'",
                    )
                    .bind(c.id)
                    .bind(c.token)
                    .bind(&reason)
                    .bind(status)
                    .execute(&mut *tx)
                    .await?;
                    tx.execute("RELEASE SAVEPOINT ferry_on_done").await?;
                    results[i] = Recorded::OnDoneFailed(reason);
                }
            }
        }

        // Completions not recorded: the row is someone else's now (stale), or it was deleted
        // (gone). FOR KEY SHARE keeps a row that still exists from being deleted until this
        // transaction commits, so the delete trigger of a DELETE that follows sees the stale
        // attempt written below and removes it with the row (no orphan); a DELETE that
        // committed first leaves nothing to lock, and a gone row gets no attempt row.
        let unrecorded: Vec<i64> = (0..batch.len())
            .filter(|&i| results[i] == Recorded::Stale)
            .map(|i| batch[i].id)
            .collect();
        if !unrecorded.is_empty() {
            let present: HashSet<i64> = sqlx::query_scalar(
                "SELECT id FROM ferry_outbox WHERE id = ANY($1::bigint[]) FOR KEY SHARE",
            )
            .bind(&unrecorded)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            for (i, c) in batch.iter().enumerate() {
                if results[i] == Recorded::Stale && !present.contains(&c.id) {
                    results[i] = Recorded::Gone;
                }
            }
        }

        // The attempt history: every real attempt, including a stale relay's (marked as such),
        // but none for a row that no longer exists.
        let attempted: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].record.is_some() && results[i] != Recorded::Gone)
            .collect();
        if !attempted.is_empty() {
            let mut ids = Vec::with_capacity(attempted.len());
            let mut numbers = Vec::with_capacity(attempted.len());
            let mut started: Vec<DateTime<Utc>> = Vec::with_capacity(attempted.len());
            let mut durations = Vec::with_capacity(attempted.len());
            let mut outcomes = Vec::with_capacity(attempted.len());
            let mut statuses: Vec<Option<i32>> = Vec::with_capacity(attempted.len());
            let mut errors: Vec<Option<String>> = Vec::with_capacity(attempted.len());
            let mut excerpts: Vec<Option<String>> = Vec::with_capacity(attempted.len());
            for &i in &attempted {
                let c = &batch[i];
                let r = c.record.as_ref().expect("filtered");
                ids.push(c.id);
                numbers.push(c.attempt);
                started.push(r.started_at);
                durations.push(r.duration.as_secs_f64() * 1000.0);
                outcomes.push(attempt_outcome(c, &results[i]));
                statuses.push(r.http_status.map(i32::from));
                errors.push(attempt_error(c, &results[i]));
                excerpts.push(r.response_excerpt.clone());
            }
            sqlx::query(
                "INSERT INTO ferry_attempts \
                   (outbox_id, attempt, started_at, duration_ms, outcome, http_status, error, response_excerpt) \
                 SELECT * FROM UNNEST($1::bigint[], $2::int[], $3::timestamptz[], $4::float8[], \
                                      $5::text[], $6::int[], $7::text[], $8::text[])",
            )
            .bind(&ids)
            .bind(&numbers)
            .bind(&started)
            .bind(&durations)
            .bind(&outcomes)
            .bind(&statuses)
            .bind(&errors)
            .bind(&excerpts)
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
        let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
        let tokens: Vec<Uuid> = held.iter().map(|h| h.1).collect();
        let n = sqlx::query(
            "UPDATE ferry_outbox AS o SET due_at = now() + $3 * interval '1 millisecond' \
               FROM UNNEST($1::bigint[], $2::uuid[]) AS u(id, token) \
              WHERE o.id = u.id AND o.claim_token = u.token AND o.state = 'sending'",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(ms(lease))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    pub(crate) async fn waiter(&self, listen: bool) -> Result<PgWaiter, StoreError> {
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&self.pool)
            .await?;
        let listener = if listen {
            let mut l = PgListener::connect_with(&self.pool).await?;
            l.listen("ferry_outbox").await?;
            Some(l)
        } else {
            None
        };
        Ok(PgWaiter { listener, schema })
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
        let sql = format!("SELECT {ROW_COLUMNS} FROM ferry_outbox WHERE id = $1");
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
            format!("SELECT {ROW_COLUMNS} FROM ferry_outbox WHERE workflow = $1 AND key = $2");
        Ok(sqlx::query_as(&sql)
            .bind(workflow)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(crate) async fn attempts(&self, id: i64) -> Result<Vec<AttemptLine>, StoreError> {
        let sql = concat!(
            "SELECT attempt, ",
            ts!("started_at"),
            " AS started_at, duration_ms, outcome, http_status, error, response_excerpt \
             FROM ferry_attempts WHERE outbox_id = $1 ORDER BY id"
        );
        Ok(sqlx::query_as(sql).bind(id).fetch_all(&self.pool).await?)
    }

    pub(crate) async fn list(&self, f: &ListFilter) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM ferry_outbox \
              WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR workflow = $2) \
              ORDER BY id DESC LIMIT $3"
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
        let n = sqlx::query(
            "UPDATE ferry_outbox SET state = $3, claim_token = NULL, \
                    last_error = COALESCE($4, last_error), updated_at = now() \
              WHERE id = $1 AND state = $2",
        )
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
        Ok(())
    }

    pub(crate) async fn reset_dead(&self, workflow: Option<&str>) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE ferry_outbox SET state = 'pending' WHERE state = 'dead' AND ($1::text IS NULL OR workflow = $1)",
        )
        .bind(workflow)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub(crate) async fn prune_done(&self, older_than: Duration) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            // One statement per batch; the statement-level delete trigger removes the rows'
            // attempts in the same statement's transaction.
            let n = sqlx::query(
                "DELETE FROM ferry_outbox WHERE id IN ( \
                   SELECT id FROM ferry_outbox \
                    WHERE state = 'done' AND done_at < now() - $1 * interval '1 millisecond' \
                    LIMIT $2)",
            )
            .bind(ms(older_than))
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
            // A range of ids per statement: short statements, and no plan that reads the whole
            // of both tables at once.
            total += sqlx::query(
                "DELETE FROM ferry_attempts a \
                  WHERE a.id > $1 AND a.id <= $2 \
                    AND NOT EXISTS (SELECT 1 FROM ferry_outbox o WHERE o.id = a.outbox_id)",
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
        tick: DateTime<Utc>,
        relay: &str,
    ) -> Result<bool, StoreError> {
        let won = sqlx::query(
            "INSERT INTO ferry_cron (job, last_tick, ran_at, ran_by) VALUES ($1, $2, now(), $3) \
             ON CONFLICT (job) DO UPDATE SET last_tick = EXCLUDED.last_tick, ran_at = now(), \
                    ran_by = EXCLUDED.ran_by \
              WHERE ferry_cron.last_tick < EXCLUDED.last_tick \
             RETURNING job",
        )
        .bind(job)
        .bind(tick)
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

/// `ferry_attempts.outcome` for a completion as it was recorded.
pub(crate) fn attempt_outcome(c: &Completion, recorded: &Recorded) -> &'static str {
    match recorded {
        Recorded::OnDoneFailed(_) => "dead",
        _ => c.outcome.attempt_label(),
    }
}

/// `ferry_attempts.error` for a completion as it was recorded.
pub(crate) fn attempt_error(c: &Completion, recorded: &Recorded) -> Option<String> {
    let base = c
        .record
        .as_ref()
        .and_then(|r| r.error.clone())
        .or_else(|| c.outcome.error().map(str::to_string));
    match recorded {
        Recorded::Accepted | Recorded::Gone => base,
        Recorded::OnDoneFailed(reason) => Some(reason.clone()),
        Recorded::Stale => Some(format!(
            "{}(stale: the lease was lost before this outcome was recorded; discarded)",
            base.map(|b| format!("{b} ")).unwrap_or_default()
        )),
    }
}

fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadUrl(format!(
            "schema name '{schema}' must be lowercase letters, digits and underscores"
        )))
    }
}

/// LISTEN-based waiter (or a plain poll when LISTEN is off).
pub struct PgWaiter {
    listener: Option<PgListener>,
    schema: String,
}

impl PgWaiter {
    pub(crate) async fn close(self) {
        if let Some(l) = self.listener {
            drop(l);
        }
    }

    pub(crate) async fn wait(&mut self, timeout: Duration) -> bool {
        let Some(listener) = self.listener.as_mut() else {
            tokio::time::sleep(timeout).await;
            return false;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // `try_recv`, not `recv`: `recv` reconnects a lost connection silently, and a NOTIFY
            // sent while the connection was down is gone. `Ok(None)` is that reconnect (done
            // eagerly, so LISTEN is in force again); a row may have come in meanwhile, so report
            // a wake-up and let the relay claim at once.
            match tokio::time::timeout_at(deadline, listener.try_recv()).await {
                Err(_) => return false,
                Ok(Ok(Some(n))) if n.payload() == self.schema => return true,
                Ok(Ok(Some(_))) => continue, // another schema's outbox
                Ok(Ok(None)) => {
                    tracing::warn!(
                        "LISTEN connection lost and re-established; wake-ups may have been missed, claiming now"
                    );
                    return true;
                }
                Ok(Err(e)) => {
                    // The reconnect itself failed (the database is down): the listener tries
                    // again on the next call. Claim now (the claim reports the outage and backs
                    // off) after a short pause, so a dead database is not hammered from here.
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    tokio::time::sleep_until(
                        deadline.min(tokio::time::Instant::now() + Duration::from_millis(500)),
                    )
                    .await;
                    return true;
                }
            }
        }
    }
}
