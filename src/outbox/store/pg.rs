//! PostgreSQL backend: claims with `FOR UPDATE SKIP LOCKED`, batch completions with `UNNEST`,
//! wake-ups with LISTEN/NOTIFY. Every time comparison uses the server's `now()`. The statements
//! are in `src/outbox/sql/postgres/` ([`crate::outbox::sql::postgres`]).

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Executor, PgPool};
use uuid::Uuid;

use super::{
    attempt_error, attempt_outcome, bind_on_done, claimed, http_status, millis, on_done,
    on_done_failed_reason, oversized_reason, ClaimRow, OutboxBackend, OutboxWaiter,
};
use crate::outbox::dynamic::{self, NamedRow, SqlValue};
use crate::outbox::sql::postgres as sql;
use crate::outbox::{
    enqueue_ordered, AttemptLine, BlockedGroup, Claimed, Completion, DatabaseUrl, Enqueued,
    ListFilter, OutboxRow, PauseKind, PausedLine, RateLimit, Recorded, State, StatusLine,
    StoreConfig, StoreError, CLAIM_PAYLOAD_BUDGET, MAX_PAYLOAD_BYTES,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Done rows deleted per prune statement.
const PRUNE_BATCH: i64 = 5000;

/// Attempt ids looked at per orphan-sweep statement.
const SWEEP_RANGE: i64 = 50_000;

#[derive(Clone)]
pub(crate) struct PgStore {
    pub(crate) pool: PgPool,
    schema: Option<String>,
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
}

impl OutboxBackend for PgStore {
    type Waiter = PgWaiter;

    async fn migrate(&self) -> Result<(), StoreError> {
        if let Some(schema) = &self.schema {
            self.pool
                .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
                .await?;
        }
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

    /// One statement, [`sql::CLAIM`]: see the file for how the budget and oversized rows are
    /// handled within it.
    async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        skip: &[String],
        token: Uuid,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows: Vec<ClaimRow> = sqlx::query_as(sql::CLAIM)
            .bind(i64::from(limit))
            .bind(token)
            .bind(millis(lease))
            .bind(skip)
            .bind(MAX_PAYLOAD_BYTES as i64)
            .bind(CLAIM_PAYLOAD_BUDGET as i64)
            .bind(oversized_reason("%s"))
            .fetch_all(&self.pool)
            .await?;
        Ok(claimed(rows, token))
    }

    /// Rows without on-done SQL in one statement ([`sql::COMPLETE`]); done rows with on-done SQL
    /// one at a time behind a savepoint; then which unrecorded rows still exist, key-share
    /// locked ([`sql::LOCK_PRESENT`]); then the attempts in one statement.
    async fn complete(&self, batch: &[Completion]) -> Result<Vec<Recorded>, StoreError> {
        let mut results = vec![Recorded::Stale; batch.len()];
        let mut tx = self.pool.begin().await?;

        // Rows without on-done SQL: one statement for the whole batch.
        let simple: Vec<usize> = (0..batch.len())
            .filter(|&i| on_done(&batch[i]).is_none())
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
                waits.push(c.outcome.wait().map(millis).unwrap_or(0));
                refunds.push(c.outcome.refunds_attempt());
                errors.push(c.outcome.error().map(str::to_string));
                statuses.push(http_status(c));
            }
            let accepted: HashSet<(i64, Uuid)> = sqlx::query_as(sql::COMPLETE)
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
                .collect();
            for &i in &simple {
                if accepted.contains(&(batch[i].id, batch[i].token)) {
                    results[i] = Recorded::Accepted;
                }
            }
        }

        // Done rows with on-done SQL: one at a time, each behind a savepoint so a failing
        // statement turns only its own row dead (delivered, flag not set) and not the batch.
        for (i, c) in batch.iter().enumerate() {
            let Some(on_done) = on_done(c) else {
                continue;
            };
            tx.execute("SAVEPOINT ferry_on_done").await?;
            let status = http_status(c);
            let marked = sqlx::query(sql::MARK_DONE)
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
            let q = bind_on_done(sqlx::query(&on_done.postgres), on_done, c);
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
        // (gone). The key-share lock keeps a row that still exists until this transaction
        // commits, so a DELETE that follows takes the stale attempt written below with it.
        let unrecorded: Vec<i64> = (0..batch.len())
            .filter(|&i| results[i] == Recorded::Stale)
            .map(|i| batch[i].id)
            .collect();
        if !unrecorded.is_empty() {
            let present: HashSet<i64> = sqlx::query_scalar(sql::LOCK_PRESENT)
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
                outcomes.push(attempt_outcome(c, &results[i]).as_str());
                statuses.push(r.http_status.map(i32::from));
                errors.push(attempt_error(c, &results[i]));
                excerpts.push(r.response_excerpt.clone());
            }
            sqlx::query(sql::INSERT_ATTEMPTS)
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

    async fn extend_leases(
        &self,
        held: &[(i64, Uuid)],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
        let tokens: Vec<Uuid> = held.iter().map(|h| h.1).collect();
        Ok(sqlx::query(sql::EXTEND)
            .bind(&ids)
            .bind(&tokens)
            .bind(millis(lease))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn waiter(&self, listen: bool) -> Result<PgWaiter, StoreError> {
        let schema: String = sqlx::query_scalar(sql::CURRENT_SCHEMA)
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

    /// The database notifies (a trigger's NOTIFY on insert and reset): nothing to do.
    fn wake(&self) {}

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
        Ok(())
    }

    async fn reset_dead(&self, workflow: Option<&str>) -> Result<u64, StoreError> {
        Ok(sqlx::query(sql::RESET_DEAD)
            .bind(workflow)
            .execute(&self.pool)
            .await?
            .rows_affected())
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
        let (removed, _): (i64, Option<String>) = sqlx::query_as(sql::RESUME)
            .bind(kind.as_str())
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(removed > 0)
    }

    async fn rate_take(
        &self,
        target: &str,
        limit: RateLimit,
    ) -> Result<Option<Duration>, StoreError> {
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let (wait_us,): (i64,) = sqlx::query_as(sql::RATE_TAKE)
            .bind(target)
            .bind(micros(limit.interval()))
            .bind(0_i64)
            .fetch_one(&self.pool)
            .await?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us as u64)))
    }

    async fn prune_done(&self, older_than: Duration) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = sqlx::query(sql::PRUNE_DONE)
                .bind(millis(older_than))
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
            .bind(tick)
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
        Ok(dynamic::fetch_pg(&self.pool, query, params).await?)
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

impl OutboxWaiter for PgWaiter {
    async fn close(self) {
        if let Some(l) = self.listener {
            drop(l);
        }
    }

    async fn wait(&mut self, timeout: Duration) -> bool {
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
