//! The store contract, `ferry::outbox::OutboxBackend`: one suite of cases, each written once as
//! `async fn case(db: TestDb)` and run on every backend by `both_backends!`. A case states the
//! guarantee it checks; together they cover every clause of the trait's doc comments (the one
//! about a lost LISTEN connection, which needs a database of its own to kill connections in, is
//! `faults::listener_reconnect_reports_a_possible_missed_wakeup_postgres`).
//!
//! * [`enqueue`]: in the caller's transaction, idempotent per `(workflow, key)`, refused intents.
//! * [`claim`]: due rows in order under one token, the lease on the database's clock, disjoint
//!   concurrent claims, expired leases, the payload budget, lease renewal.
//! * [`complete`]: the token fence (`Stale`), deleted rows (`Gone`), each outcome's effect,
//!   on-done SQL in the same transaction, release.
//! * [`operator`]: reset and cancel legality, the database refusing illegal moves, status, list,
//!   get/find, attempt history, typed rows and their JSON.
//! * [`maintenance`]: prune, orphan sweep, migration over old rows, cron ticks, workflow SQL.
//! * [`guards`]: what the schema itself refuses (payload size, NUL, `due_at`, outcomes).
//! * [`waiter`]: wake-ups on commit.

mod claim;
mod complete;
mod enqueue;
mod guards;
mod maintenance;
mod operator;
mod waiter;

use std::collections::HashMap;
use std::time::Duration;

use ferry::outbox::{AttemptRecord, Claimed, Completion, Outcome, State, Store};
use serde_json::json;

use crate::helpers::{Backend, TestDb};

/// The lease of claims whose rows should stay held for the whole case.
pub const LEASE: Duration = Duration::from_secs(60);

/// An SQL expression for the JSON document `{"blob":"xx…x"}` with `n` (even) x's, built by the
/// database so the statement stays small.
pub fn blob_json(backend: Backend, n: usize) -> String {
    assert!(n.is_multiple_of(2));
    match backend {
        Backend::Postgres => format!("jsonb_build_object('blob', repeat('x', {n}))"),
        Backend::Sqlite => format!(
            "'{{\"blob\":\"' || replace(hex(zeroblob({})), '0', 'x') || '\"}}'",
            n / 2
        ),
    }
}

/// A timestamp literal long past, in the backend's form.
pub fn long_ago(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "now() - interval '1 hour'",
        Backend::Sqlite => "'2000-01-01T00:00:00.000Z'",
    }
}

/// Run one statement on a store's pool.
pub async fn run(store: &Store, sql: &str) -> Result<u64, sqlx::Error> {
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => Ok(sqlx::query(sql).execute(pool).await?.rows_affected()),
        (_, Some(pool)) => Ok(sqlx::query(sql).execute(pool).await?.rows_affected()),
        _ => unreachable!(),
    }
}

pub async fn store_scalar(store: &Store, sql: &str) -> i64 {
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => sqlx::query_scalar(sql).fetch_one(pool).await,
        (_, Some(pool)) => sqlx::query_scalar(sql).fetch_one(pool).await,
        _ => unreachable!(),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Insert an attempt row by plain SQL, as an earlier version (or the lead's relay) would.
pub async fn insert_attempt(store: &Store, backend: Backend, outbox_id: i64, outcome: &str) {
    let started = match backend {
        Backend::Postgres => "now()",
        Backend::Sqlite => "'2026-01-01T00:00:00.000Z'",
    };
    run(
        store,
        &format!(
            "INSERT INTO ferry_attempts (outbox_id, attempt, started_at, duration_ms, outcome) \
             VALUES ({outbox_id}, 1, {started}, 1.5, '{outcome}')"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("attempt {outcome} for {outbox_id}: {e}"));
}

/// An attempt that took 3 ms and got a 200.
pub fn record() -> Option<AttemptRecord> {
    Some(AttemptRecord {
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(3),
        http_status: Some(200),
        error: None,
        response_excerpt: Some("{\"ok\":true}".into()),
    })
}

/// The completion of a claimed row with `outcome` and [`record`].
pub fn completion(row: &Claimed, outcome: Outcome) -> Completion {
    row.completion(outcome, record(), None)
}

pub async fn count_rows(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) FROM ferry_outbox").await
}

/// A retryable failure that leaves the row waiting for an hour.
pub fn retry_later() -> Outcome {
    Outcome::Retry {
        after: Duration::from_secs(3600),
        reason: "HTTP 503".into(),
    }
}

/// Rows brought to the given states the way Ferry does (enqueue, claim, record an outcome),
/// one after another so each claim takes exactly its row: `(workflow, key, state)` in, the ids
/// by key out. `sending` rows are held under a lease of [`LEASE`], `retry_wait` rows wait an
/// hour; rows left `pending` are enqueued last.
pub async fn rows_in_states(db: &TestDb, rows: &[(&str, &str, State)]) -> HashMap<String, i64> {
    let mut ids = HashMap::new();
    let (pending, moved): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.2 == State::Pending);
    for &(workflow, key, state) in moved {
        let e = db.store.enqueue(workflow, key, &json!({})).await.unwrap();
        let claimed = db.store.claim(10, LEASE, &[]).await.unwrap();
        assert_eq!(claimed.len(), 1, "only {key} is due");
        let outcome = match state {
            State::Sending => None,
            State::Done => Some(Outcome::Done),
            State::Dead => Some(Outcome::Dead {
                reason: "HTTP 400".into(),
            }),
            State::RetryWait => Some(retry_later()),
            State::Pending => unreachable!(),
        };
        if let Some(outcome) = outcome {
            let r = db
                .store
                .complete(&[completion(&claimed[0], outcome)])
                .await
                .unwrap();
            assert_eq!(r, vec![ferry::outbox::Recorded::Accepted]);
        }
        assert_eq!(db.state_of(e.id).await, state);
        ids.insert(key.to_string(), e.id);
    }
    for &(workflow, key, _) in pending {
        let e = db.store.enqueue(workflow, key, &json!({})).await.unwrap();
        ids.insert(key.to_string(), e.id);
    }
    ids
}
