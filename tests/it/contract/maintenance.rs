//! Maintenance: the prune of old done rows with their attempts, the sweep of orphan attempts,
//! migration 0002 over rows written before it, cron ticks taken once, and workflow SQL with
//! bound named parameters.

use std::time::Duration;

use ferry::outbox::dynamic::SqlValue;
use ferry::outbox::{Completion, DatabaseUrl, Outcome, State, Store, StoreConfig};
use serde_json::json;

use super::{blob_json, completion, insert_attempt, long_ago, run, store_scalar, LEASE};
use crate::both_backends;
use crate::helpers::{Backend, TestDb};

/// The prune job deletes done rows past the retention together with their attempts, and
/// leaves recent done rows, live rows and dead rows (and their history) alone.
async fn prune_removes_old_done_rows_with_their_attempts(db: TestDb) {
    let old = db.store.enqueue("w", "old", &json!({})).await.unwrap();
    let recent = db.store.enqueue("w", "recent", &json!({})).await.unwrap();
    let dead = db.store.enqueue("w", "dead", &json!({})).await.unwrap();
    let claimed = db.store.claim(100, LEASE, &[]).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let batch: Vec<_> = claimed
        .iter()
        .map(|row| {
            completion(
                row,
                match row.key.as_str() {
                    "dead" => Outcome::Dead {
                        reason: "no".into(),
                    },
                    _ => Outcome::Done,
                },
            )
        })
        .collect();
    db.store.complete(&batch).await.unwrap();
    let live = db.store.enqueue("w", "live", &json!({})).await.unwrap();
    let long_ago = match db.backend {
        Backend::Postgres => "now() - interval '30 days'",
        Backend::Sqlite => "'2000-01-01T00:00:00.000Z'",
    };
    db.exec(&format!(
        "UPDATE ferry_outbox SET done_at = {long_ago} WHERE id = {}",
        old.id
    ))
    .await
    .unwrap();
    let n = db
        .store
        .prune_done(Duration::from_secs(21 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(db.store.get(old.id).await.is_err());
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM ferry_attempts WHERE outbox_id = {}",
            old.id
        ))
        .await,
        0
    );
    for id in [recent.id, dead.id, live.id] {
        db.store.get(id).await.unwrap();
    }
    assert_eq!(db.store.attempts(recent.id).await.unwrap().len(), 1);
    assert_eq!(db.store.attempts(dead.id).await.unwrap().len(), 1);
}
both_backends!(prune, prune_removes_old_done_rows_with_their_attempts);

/// A store on a database that has only migration 0001 (a deployment before this change): in the
/// PostgreSQL schema of `db`, emptied, or in a second SQLite file next to `db`'s.
async fn store_at_migration_0001(db: &TestDb) -> Store {
    let config = match db.backend {
        Backend::Postgres => {
            let schema = db.schema().unwrap();
            db.exec(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await
                .unwrap();
            db.exec(&format!("CREATE SCHEMA \"{schema}\""))
                .await
                .unwrap();
            db.config.clone()
        }
        Backend::Sqlite => {
            let url = db.database_url();
            let path = std::path::Path::new(url.strip_prefix("sqlite:").unwrap())
                .with_file_name("legacy.db");
            StoreConfig::new(DatabaseUrl::Sqlite(path.display().to_string()))
        }
    };
    let store = Store::open(&config).await.unwrap();
    let backend_dir = match db.backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    let dir = std::env::temp_dir().join(format!(
        "ferry-migration-0001-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend_dir)
            .join("0001_outbox.sql"),
        dir.join("0001_outbox.sql"),
    )
    .unwrap();
    let only_0001 = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => only_0001.run(pool).await.unwrap(),
        (_, Some(pool)) => only_0001.run(pool).await.unwrap(),
        _ => unreachable!(),
    }
    std::fs::remove_dir_all(&dir).unwrap();
    store
}

/// Rows that the new guards would refuse, inserted before the migration: the migration still
/// applies, an oversized payload is made dead at claim time (not loaded, not returned), a
/// `due_at` that was never due becomes due, orphan attempts are swept, and the rebuilt (SQLite)
/// attempts table keeps its rows, index and id sequence.
async fn rows_from_before_the_migration(db: TestDb) {
    let store = store_at_migration_0001(&db).await;
    let s = &store;
    let three_mib = blob_json(db.backend, 3 * 1024 * 1024);
    let never_due = match db.backend {
        Backend::Postgres => "'infinity'",
        Backend::Sqlite => "'tomorrow'",
    };
    run(
        s,
        &format!(
            "INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'big', {three_mib})"
        ),
    )
    .await
    .unwrap();
    // A lease that expired on an oversized row a relay of the old version had claimed.
    run(
        s,
        &format!(
        "INSERT INTO ferry_outbox (workflow, key, payload, state, attempts, due_at, claim_token) \
         VALUES ('w', 'big-sending', {three_mib}, 'sending', 1, {}, NULL)",
        long_ago(db.backend)
    ),
    )
    .await
    .unwrap();
    run(s, &format!(
        "INSERT INTO ferry_outbox (workflow, key, payload, due_at) VALUES ('w', 'never', '{{}}', {never_due})"
    ))
    .await
    .unwrap();
    run(
        s,
        "INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'ok', '{\"n\":1}')",
    )
    .await
    .unwrap();
    let ok_id = store_scalar(s, "SELECT id FROM ferry_outbox WHERE key = 'ok'").await;
    // An attempt whose row an operator deleted under the old version.
    insert_attempt(s, db.backend, 424_242, "done").await;
    for _ in 0..3 {
        insert_attempt(s, db.backend, ok_id, "retry").await;
    }
    // The newest attempt is gone (pruned, say): its id must not be handed out again.
    let top = store_scalar(s, "SELECT max(id) FROM ferry_attempts").await;
    run(s, &format!("DELETE FROM ferry_attempts WHERE id = {top}"))
        .await
        .unwrap();
    let attempts_before = store_scalar(s, "SELECT count(*) FROM ferry_attempts").await;

    store.migrate().await.expect("0002 applies over such rows");

    assert_eq!(
        store_scalar(s, "SELECT count(*) FROM ferry_attempts").await,
        attempts_before
    );
    let claimed = store.claim(100, LEASE, &[]).await.unwrap();
    let mut keys: Vec<&str> = claimed.iter().map(|c| c.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["never", "ok"]);
    // The JSON text as the relay would read it: jsonb renders `{"blob": "…"}`.
    let size = 3 * 1024 * 1024
        + match db.backend {
            Backend::Postgres => 12,
            Backend::Sqlite => 11,
        };
    for key in ["big", "big-sending"] {
        let row = store.find("w", key).await.unwrap().unwrap();
        assert_eq!(row.state, State::Dead, "{key}");
        let reason = row.last_error.unwrap_or_default();
        assert!(
            reason.contains("over the limit of 1048576 bytes")
                && reason.contains(&format!("payload is {size} bytes")),
            "{key}: {reason}"
        );
        assert_eq!(row.last_status, None);
    }
    assert_eq!(
        store_scalar(
            s,
            "SELECT CAST(attempts AS BIGINT) FROM ferry_outbox WHERE key = 'big'"
        )
        .await,
        0,
        "no attempt was made"
    );
    assert_eq!(
        store_scalar(s, "SELECT count(*) FROM ferry_dead").await,
        2,
        "the view survives the migration"
    );
    assert!(store.claim(100, LEASE, &[]).await.unwrap().is_empty());

    // The orphan goes; the attempts of a live row stay.
    assert_eq!(store.sweep_orphan_attempts().await.unwrap(), 1);
    assert_eq!(
        store_scalar(s, "SELECT count(*) FROM ferry_attempts").await,
        attempts_before - 1
    );
    assert_eq!(store.attempts(ok_id).await.unwrap().len(), 2);
    assert_eq!(store.sweep_orphan_attempts().await.unwrap(), 0);

    insert_attempt(s, db.backend, ok_id, "aborted").await;
    let newest = store_scalar(s, "SELECT max(id) FROM ferry_attempts").await;
    assert!(newest > top, "attempt id {newest} reused (old top {top})");
    let index = match db.backend {
        Backend::Postgres => {
            "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() \
             AND indexname = 'ferry_attempts_outbox'"
        }
        Backend::Sqlite => {
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'ferry_attempts_outbox'"
        }
    };
    assert_eq!(store_scalar(s, index).await, 1);
    store.close().await;
}
both_backends!(legacy_rows, rows_from_before_the_migration);

/// Deleting outbox rows (one, or many in one statement) removes their attempts; the prune job
/// still removes a pruned row's attempts, and sweeps attempts left without a row by earlier
/// versions.
async fn attempts_go_with_their_rows(db: TestDb) {
    let mut ids = Vec::new();
    for i in 0..20 {
        let w = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(
            db.store
                .enqueue(w, &format!("k{i}"), &json!({}))
                .await
                .unwrap()
                .id,
        );
    }
    let rows = db.store.claim(100, LEASE, &[]).await.unwrap();
    let done: Vec<Completion> = rows.iter().map(|r| completion(r, Outcome::Done)).collect();
    db.store.complete(&done).await.unwrap();
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_attempts").await, 20);
    assert_eq!(
        db.exec("DELETE FROM ferry_outbox WHERE workflow = 'even'")
            .await
            .unwrap(),
        10
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_attempts").await, 10);
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM ferry_attempts a \
              WHERE NOT EXISTS (SELECT 1 FROM ferry_outbox o WHERE o.id = a.outbox_id)"
        )
        .await,
        0
    );
    // A statement that deletes nothing is fine too.
    db.exec("DELETE FROM ferry_outbox WHERE workflow = 'none'")
        .await
        .unwrap();

    // Orphans from an earlier version.
    for id in [900_001, 900_002, 900_003] {
        insert_attempt(&db.store, db.backend, id, "retry").await;
    }
    // The prune job: old done rows go with their attempts, then the orphans.
    db.exec(&format!(
        "UPDATE ferry_outbox SET done_at = {} WHERE id IN ({}, {})",
        long_ago(db.backend),
        ids[1],
        ids[3]
    ))
    .await
    .unwrap();
    let job = ferry::cron::JobKind::Prune {
        retention: Duration::from_secs(60),
    };
    let line = ferry::cron::run_job(&db.store, &ferry::workflow::Registry::default(), &job)
        .await
        .unwrap();
    assert!(line.contains("pruned 2 done rows"), "{line}");
    assert!(
        line.contains("3 attempts of rows that no longer exist"),
        "{line}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_outbox").await, 8);
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_attempts").await, 8);
    for id in [ids[1], ids[3]] {
        assert!(db.store.get(id).await.is_err());
        assert!(db.store.attempts(id).await.unwrap().is_empty());
    }
}
both_backends!(attempts_with_rows, attempts_go_with_their_rows);

/// A cron tick is taken by exactly one of the relays that try it at the same time; the same or
/// an earlier tick is never taken again; the next tick is; jobs are independent.
async fn cron_tick_runs_once(db: TestDb) {
    use chrono::{DurationRound, TimeDelta};
    let tick = chrono::Utc::now()
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap();
    let mut tries = Vec::new();
    for relay in 0..4 {
        let store = db.second_store().await;
        tries.push(tokio::spawn(async move {
            let won = store
                .claim_cron_tick("prune", tick, &format!("relay-{relay}"))
                .await
                .unwrap();
            store.close().await;
            won
        }));
    }
    let mut winners = 0;
    for t in tries {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "one relay runs the tick");
    assert!(!db
        .store
        .claim_cron_tick("prune", tick, "late")
        .await
        .unwrap());
    let earlier = tick - TimeDelta::seconds(60);
    assert!(!db
        .store
        .claim_cron_tick("prune", earlier, "x")
        .await
        .unwrap());
    let next = tick + TimeDelta::seconds(60);
    assert!(db.store.claim_cron_tick("prune", next, "x").await.unwrap());
    assert!(!db.store.claim_cron_tick("prune", next, "y").await.unwrap());
    assert!(db
        .store
        .claim_cron_tick("reconcile:w", tick, "y")
        .await
        .unwrap());
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_cron").await, 2);
}
both_backends!(cron_tick_once, cron_tick_runs_once);

/// SQL from workflow files: named parameters are bound, never spliced (a key with a quote is
/// data), and columns come back by name.
async fn workflow_sql_binds_named_parameters(db: TestDb) {
    let tricky = "k'; DELETE FROM ferry_outbox; --";
    for key in [tricky, "other", "third"] {
        db.store.enqueue("w", key, &json!({})).await.unwrap();
    }
    let rows = db
        .store
        .fetch_named(
            "SELECT key, attempts FROM ferry_outbox WHERE key = :key OR key = 'third' \
             ORDER BY id LIMIT :limit",
            &[
                ("key", SqlValue::Text(tricky.into())),
                ("limit", SqlValue::Int(5)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["key"], SqlValue::Text(tricky.into()));
    assert_eq!(rows[0]["attempts"], SqlValue::Int(0));
    assert_eq!(rows[1]["key"], SqlValue::Text("third".into()));
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_outbox").await, 3);
    db.store.ping().await.unwrap();
    db.store
        .execute_script("CREATE TABLE scratch (n INTEGER); INSERT INTO scratch VALUES (1);")
        .await
        .unwrap();
    assert_eq!(
        db.scalar("SELECT CAST(count(*) AS BIGINT) FROM scratch")
            .await,
        1
    );
}
both_backends!(workflow_sql, workflow_sql_binds_named_parameters);
