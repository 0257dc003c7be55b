//! The outbox core end to end, on both backends: exactly-once draining by several relays, lease
//! recovery by another relay, the lease a relay takes, an operator reset by plain SQL picked up
//! by the relay, an idle relay woken by a commit; and what each backend's planner does with the
//! claim and the status view. The store's own behaviour, case by case, is in `contract`.

use std::sync::Arc;
use std::time::Duration;

use ferry::outbox::{Completion, Outcome, Recorded, State, Store};
use ferry::relay::{Relay, RelayConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::both_backends;
use crate::helpers::{wait_until, Backend, CountingSink, TestDb};

fn fast_config() -> RelayConfig {
    RelayConfig {
        batch_size: 100,
        concurrency: 32,
        lease_margin: Duration::from_secs(30),
        poll_interval: Duration::from_millis(200),
        ..RelayConfig::default()
    }
}

/// Two relays with separate pools drain 10,000 rows; every row is delivered exactly once.
async fn two_relays_deliver_each_row_once(db: TestDb) {
    const N: usize = 10_000;
    let values: Vec<String> = (0..N)
        .map(|i| format!("('load', 'k{i}', '{{\"i\":{i}}}')"))
        .collect();
    for chunk in values.chunks(1000) {
        db.exec(&format!(
            "INSERT INTO ferry_outbox (workflow, key, payload) VALUES {}",
            chunk.join(",")
        ))
        .await
        .unwrap();
    }
    let sink = CountingSink::ok();
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for _ in 0..2 {
        let store = db.second_store().await;
        let relay = Relay::new(store, sink.clone(), fast_config());
        let stop = stop.clone();
        handles.push(tokio::spawn(async move { relay.run(stop).await }));
    }
    let drained = wait_until(Duration::from_secs(120), || async {
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE state = 'done'")
            .await
            == N as i64
    })
    .await;
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
    assert!(
        drained,
        "not drained: {:?}",
        db.store.count_by_state().await.unwrap()
    );
    assert_eq!(sink.total(), N, "deliveries");
    assert!(
        sink.duplicates().is_empty(),
        "duplicates: {:?}",
        &sink.duplicates()[..5.min(sink.duplicates().len())]
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_attempts").await,
        N as i64
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE attempts <> 1")
            .await,
        0
    );
}
both_backends!(exactly_once_two_relays, two_relays_deliver_each_row_once);

/// A relay that stops mid-delivery leaves a lease behind; another relay takes the row once the
/// lease expires, and the stale relay's late completion is refused.
async fn expired_lease_is_recovered_and_stale_completion_refused(db: TestDb) {
    let e = db.store.enqueue("w", "stale", &json!({})).await.unwrap();
    // The stale relay claims with a very short lease and then goes quiet.
    let claimed = db
        .store
        .claim(10, Duration::from_millis(300), &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let stale = claimed[0].clone();
    assert_eq!(stale.attempt, 1);
    // Not due while the lease holds.
    assert!(db
        .store
        .claim(10, Duration::from_secs(60), &[])
        .await
        .unwrap()
        .is_empty());
    // The row shows in ferry_stuck once the lease expires.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.scalar("SELECT count(*) FROM ferry_stuck").await == 1
        })
        .await
    );
    let sink = CountingSink::ok();
    let relay = Relay::new(db.second_store().await, sink.clone(), fast_config());
    let r = relay.drain().await.unwrap();
    assert_eq!(r.done, 1);
    assert_eq!(sink.count(e.id), 1);
    // The stale relay finally reports (a failure, say): refused.
    let late = Completion {
        id: stale.id,
        token: stale.token,
        key: stale.key.clone(),
        attempt: stale.attempt,
        outcome: Outcome::Dead {
            reason: "late".into(),
        },
        record: Some(ferry::outbox::AttemptRecord {
            started_at: chrono::Utc::now(),
            duration: Duration::from_millis(1),
            http_status: Some(500),
            error: Some("late".into()),
            response_excerpt: None,
        }),
        on_done: None,
    };
    assert_eq!(
        db.store.complete(&[late]).await.unwrap(),
        vec![Recorded::Stale]
    );
    let row = db.store.get(e.id).await.unwrap();
    assert_eq!(row.state, State::Done);
    assert_eq!(row.attempts, 2, "the lost attempt counts");
    let history = db.store.attempts(e.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(
        history[1].error.as_deref().unwrap().contains("stale"),
        "{history:?}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_stuck").await, 0);
}
both_backends!(
    lease_recovery,
    expired_lease_is_recovered_and_stale_completion_refused
);

/// The relay's lease covers the deliverer's longest timeout plus the margin.
#[test]
fn lease_is_never_shorter_than_timeout_plus_margin() {
    let sink = Arc::new(CountingSink {
        min_lease: Duration::from_secs(60),
        ..Arc::try_unwrap(CountingSink::ok()).ok().unwrap()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new(Backend::Sqlite).await;
        let relay = Relay::new(db.store.clone(), sink, fast_config());
        assert_eq!(relay.lease(), Duration::from_secs(90));
    });
}

/// A dead row reset with the documented SQL is due at once with a fresh budget and is delivered;
/// its history is kept; the views count right.
async fn reset_from_dead_by_sql_delivers_again(db: TestDb) {
    let good = db.store.enqueue("w", "good", &json!({})).await.unwrap();
    let bad = db.store.enqueue("w", "bad", &json!({})).await.unwrap();
    let later = db.store.enqueue("w2", "later", &json!({})).await.unwrap();
    let fail_bad = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = fail_bad.clone();
    let sink = CountingSink::with(move |row| match row.key.as_str() {
        "bad" if f.load(std::sync::atomic::Ordering::SeqCst) => Outcome::Dead {
            reason: "HTTP 400: customer.name is required".into(),
        },
        "later" if f.load(std::sync::atomic::Ordering::SeqCst) => Outcome::Retry {
            after: Duration::from_secs(3600),
            reason: "HTTP 503".into(),
        },
        _ => Outcome::Done,
    });
    let relay = Relay::new(db.store.clone(), sink.clone(), fast_config());
    let r = relay.drain().await.unwrap();
    assert_eq!((r.done, r.dead, r.retried), (1, 1, 1));
    assert_eq!(db.state_of(good.id).await, State::Done);
    assert_eq!(db.state_of(later.id).await, State::RetryWait);
    // ferry_dead shows the reason and attempts.
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_dead").await, 1);
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_dead WHERE key = 'bad' AND attempts = 1 AND last_error LIKE '%customer.name%' AND last_status = 400").await,
        1
    );
    // ferry_status: one dead row of w, one retry_wait row of w2, done rows not listed.
    let status = db.store.status().await.unwrap();
    let lines: Vec<(String, State, i64)> = status
        .iter()
        .map(|s| (s.workflow.clone(), s.state, s.rows))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("w".into(), State::Dead, 1),
            ("w2".into(), State::RetryWait, 1)
        ]
    );
    // The retry_wait row is not due: another drain leaves it.
    assert_eq!(relay.drain().await.unwrap().claimed, 0);

    // Operator reset, exactly as the README says.
    fail_bad.store(false, std::sync::atomic::Ordering::SeqCst);
    let n = db
        .exec(&format!(
            "UPDATE ferry_outbox SET state = 'pending' WHERE id IN ({}, {})",
            bad.id, later.id
        ))
        .await
        .unwrap();
    assert_eq!(n, 2);
    let row = db.store.get(bad.id).await.unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("pending", 0));
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_dead").await, 0);
    let r = relay.drain().await.unwrap();
    assert_eq!(r.done, 2, "both reset rows are due at once");
    assert_eq!(db.state_of(bad.id).await, State::Done);
    assert_eq!(db.store.get(bad.id).await.unwrap().attempts, 1);
    let history = db.store.attempts(bad.id).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|a| a.outcome.as_str())
            .collect::<Vec<_>>(),
        vec!["dead", "done"]
    );
    assert!(db.store.status().await.unwrap().is_empty());
}
both_backends!(reset_by_sql, reset_from_dead_by_sql_delivers_again);

/// An idle relay whose poll interval is a minute still picks up a new intent at once.
async fn idle_relay_wakes_on_commit(db: TestDb) {
    let sink = CountingSink::ok();
    let config = RelayConfig {
        poll_interval: Duration::from_secs(60),
        ..fast_config()
    };
    let relay = Relay::new(db.second_store().await, sink.clone(), config);
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(async move { relay.run(s).await });
    // Let the relay make its first (empty) claim and go idle. Not a race guard: if the relay
    // were still starting, the row would simply be found by that first claim.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Committed through a connection that is not the relay's.
    let e = db.store.enqueue("w", "wake", &json!({})).await.unwrap();
    let picked = wait_until(Duration::from_secs(10), || async { sink.count(e.id) == 1 }).await;
    // And by plain SQL from yet another connection.
    let other = db.second_store().await;
    match db.backend {
        Backend::Postgres => {
            sqlx::query(
                "INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'sql', '{}')",
            )
            .execute(other.pg_pool().unwrap())
            .await
            .unwrap();
        }
        Backend::Sqlite => {
            sqlx::query(
                "INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'sql', '{}')",
            )
            .execute(other.sqlite_pool().unwrap())
            .await
            .unwrap();
        }
    }
    let picked_sql = wait_until(Duration::from_secs(10), || async { sink.total() == 2 }).await;
    stop.cancel();
    handle.await.unwrap();
    assert!(picked, "the relay did not wake for an enqueue");
    assert!(picked_sql, "the relay did not wake for a plain SQL insert");
}
both_backends!(wake_on_commit, idle_relay_wakes_on_commit);

/// The claim keeps its ordered partial-index scan on a table that is mostly done: after ANALYZE
/// with a few due rows, and in the hazard case of PERFORMANCE.md: ANALYZE while nothing was live,
/// then the queue refilled (statistics stale). `ferry_status` must not scan the done rows either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claim_plan_uses_partial_index_on_mostly_done_table() {
    let db = TestDb::new(Backend::Postgres).await;
    db.exec(
        "INSERT INTO ferry_outbox (workflow, key, payload) \
             SELECT 'w', 'done' || g, '{}' FROM generate_series(1, 50000) g",
    )
    .await
    .unwrap();
    // Move them through sending to done as the relay would.
    db.exec("UPDATE ferry_outbox SET state = 'sending'")
        .await
        .unwrap();
    db.exec("UPDATE ferry_outbox SET state = 'done', done_at = now()")
        .await
        .unwrap();
    let claim_plan = || async {
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN SELECT id FROM ferry_outbox \
              WHERE state IN ('pending', 'retry_wait', 'sending') AND due_at <= now() \
                AND workflow <> ALL(ARRAY[]::text[]) ORDER BY due_at LIMIT 100 FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(db.store.pg_pool().unwrap())
        .await
        .unwrap();
        plan.join("\n")
    };
    let status_plan = || async {
        let plan: Vec<String> = sqlx::query_scalar("EXPLAIN SELECT * FROM ferry_status")
            .fetch_all(db.store.pg_pool().unwrap())
            .await
            .unwrap();
        plan.join("\n")
    };
    // Statistics taken while nothing is live.
    db.exec("ANALYZE ferry_outbox").await.unwrap();
    let plan = claim_plan().await;
    assert!(
        plan.contains("ferry_outbox_due"),
        "empty queue, claim plan:\n{plan}"
    );
    // The queue refills; the statistics still say it is empty.
    db.exec(
        "INSERT INTO ferry_outbox (workflow, key, payload) \
             SELECT 'w', 'due' || g, '{}' FROM generate_series(1, 20000) g",
    )
    .await
    .unwrap();
    let plan = claim_plan().await;
    assert!(
        plan.contains("ferry_outbox_due"),
        "stale statistics, claim plan:\n{plan}"
    );
    assert!(
        !plan.contains("Seq Scan") && !plan.contains("Sort"),
        "stale statistics, claim plan:\n{plan}"
    );
    let plan = status_plan().await;
    assert!(!plan.contains("Seq Scan"), "ferry_status plan:\n{plan}");
    // And with fresh statistics.
    db.exec("ANALYZE ferry_outbox").await.unwrap();
    let plan = claim_plan().await;
    assert!(
        plan.contains("ferry_outbox_due") && !plan.contains("Seq Scan"),
        "fresh statistics, claim plan:\n{plan}"
    );
    let claimed = db
        .store
        .claim(100, Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 100);
    let status = db.store.status().await.unwrap();
    assert_eq!(status.iter().map(|s| s.rows).sum::<i64>(), 20000);
}

/// A store on a PostgreSQL that cannot be reached says which one, without the password.
#[tokio::test]
async fn unreachable_database_is_named_without_password() {
    let mut config =
        ferry::StoreConfig::new("postgres://ferry:hunter2@127.0.0.1:1/app".parse().unwrap());
    config.connect_timeout = Duration::from_secs(2);
    let err = Store::open(&config).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// SQLite: the claim uses the ordered due index and ferry_status never reads the done rows.
#[tokio::test]
async fn sqlite_plans_skip_done_rows() {
    let db = TestDb::new(Backend::Sqlite).await;
    db.exec(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000) \
             INSERT INTO ferry_outbox (workflow, key, payload) SELECT 'w', 'k' || n, '{}' FROM g",
    )
    .await
    .unwrap();
    db.exec("ANALYZE").await.unwrap();
    let plan = |sql: &'static str| {
        let pool = db.store.sqlite_pool().unwrap().clone();
        async move {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
    };
    let claim = plan(
        "SELECT id FROM ferry_outbox WHERE state IN ('pending', 'retry_wait', 'sending') \
         AND due_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') ORDER BY due_at LIMIT 100",
    )
    .await;
    assert!(
        claim.contains("ferry_outbox_due") && !claim.contains("TEMP B-TREE"),
        "{claim}"
    );
    let status = plan("SELECT * FROM ferry_status").await;
    assert!(
        !status.contains("sqlite_autoindex") && !status.contains("SCAN ferry_outbox\n"),
        "{status}"
    );
    assert!(
        status.contains("ferry_outbox_live") && status.contains("ferry_outbox_dead"),
        "{status}"
    );
}
