//! What the database itself refuses or cleans up (migration 0002), on both backends: payloads over
//! 1 MiB written by plain SQL, NUL characters and malformed `due_at` on SQLite, non-finite
//! `due_at` on PostgreSQL; the claim's memory bound and rows over the limit inserted before the
//! migration; a row deleted while a relay holds it; attempt rows removed with their row; the
//! attempt outcome `aborted`.

use std::sync::Arc;
use std::time::Duration;

use ferry::outbox::{
    AttemptOutcome, AttemptRecord, Completion, DatabaseUrl, OnDoneSql, Outcome, Recorded, State,
    Store, StoreConfig, CLAIM_PAYLOAD_BUDGET, MAX_PAYLOAD_BYTES,
};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestDb};

const LEASE: Duration = Duration::from_secs(60);

/// An SQL expression for the JSON document `{"blob":"xx…x"}` with `n` (even) x's, built by the
/// database so the statement stays small.
fn blob_json(backend: Backend, n: usize) -> String {
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
fn long_ago(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "now() - interval '1 hour'",
        Backend::Sqlite => "'2000-01-01T00:00:00.000Z'",
    }
}

/// Run one statement on a store's pool.
async fn run(store: &Store, sql: &str) -> Result<u64, sqlx::Error> {
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => Ok(sqlx::query(sql).execute(pool).await?.rows_affected()),
        (_, Some(pool)) => Ok(sqlx::query(sql).execute(pool).await?.rows_affected()),
        _ => unreachable!(),
    }
}

async fn store_scalar(store: &Store, sql: &str) -> i64 {
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => sqlx::query_scalar(sql).fetch_one(pool).await,
        (_, Some(pool)) => sqlx::query_scalar(sql).fetch_one(pool).await,
        _ => unreachable!(),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Insert an attempt row by plain SQL, as an earlier version (or the lead's relay) would.
async fn insert_attempt(store: &Store, backend: Backend, outbox_id: i64, outcome: &str) {
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

fn record() -> Option<AttemptRecord> {
    Some(AttemptRecord {
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(3),
        http_status: Some(200),
        error: None,
        response_excerpt: Some("{\"ok\":true}".into()),
    })
}

fn completion(row: &ferry::outbox::Claimed, outcome: Outcome) -> Completion {
    Completion {
        id: row.id,
        token: row.token,
        key: row.key.clone(),
        attempt: row.attempt,
        outcome,
        record: record(),
        on_done: None,
    }
}

/// Plain SQL cannot store a payload over 1 MiB (insert or update), and the error names the limit.
async fn payload_over_limit_refused_by_database(db: TestDb) {
    let two_mib = blob_json(db.backend, 2 * 1024 * 1024);
    let err = db
        .exec(&format!(
            "INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'big', {two_mib})"
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("over the limit of 1048576 bytes (1 MiB)"),
        "{err}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_outbox").await, 0);
    // A payload under the limit is fine, and cannot be grown over it by an UPDATE either.
    db.exec(&format!(
        "INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'fits', {})",
        blob_json(db.backend, 1_000_000)
    ))
    .await
    .unwrap();
    let err = db
        .exec(&format!(
            "UPDATE ferry_outbox SET payload = {two_mib} WHERE key = 'fits'"
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1048576 bytes"), "{err}");
    let row = db.store.find("w", "fits").await.unwrap().unwrap();
    assert!(
        row.payload.len() < MAX_PAYLOAD_BYTES,
        "{}",
        row.payload.len()
    );
}
both_backends!(payload_limit, payload_over_limit_refused_by_database);

/// A claim over many large rows takes a bounded batch, at least one row, and the next claims
/// take the rest; small rows are still claimed in full batches.
async fn claim_payload_bytes_are_bounded(db: TestDb) {
    const ROWS: usize = 10;
    for i in 0..ROWS {
        db.exec(&format!(
            "INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'large{i}', {})",
            blob_json(db.backend, 900_000)
        ))
        .await
        .unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let mut batches = Vec::new();
    loop {
        let rows = db.store.claim(256, LEASE, &[]).await.unwrap();
        if rows.is_empty() {
            break;
        }
        let bytes: usize = rows.iter().map(|r| r.payload.len()).sum();
        assert!(
            bytes <= CLAIM_PAYLOAD_BUDGET,
            "a claim of {} rows holds {bytes} payload bytes",
            rows.len()
        );
        for r in &rows {
            assert!(seen.insert(r.id), "row {} claimed twice", r.id);
        }
        batches.push(rows.len());
        assert!(batches.len() <= ROWS, "claims never end: {batches:?}");
    }
    // 900 KB each: four fit in 4 MiB, a fifth would not.
    assert_eq!(batches, vec![4, 4, 2]);
    assert_eq!(seen.len(), ROWS);

    // Small rows: the budget does not get in the way.
    let values: Vec<String> = (0..300)
        .map(|i| format!("('small', 's{i}', '{{\"i\":{i}}}')"))
        .collect();
    db.exec(&format!(
        "INSERT INTO ferry_outbox (workflow, key, payload) VALUES {}",
        values.join(",")
    ))
    .await
    .unwrap();
    assert_eq!(db.store.claim(256, LEASE, &[]).await.unwrap().len(), 256);
    assert_eq!(db.store.claim(256, LEASE, &[]).await.unwrap().len(), 44);
}
both_backends!(claim_budget, claim_payload_bytes_are_bounded);

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

/// SQLite: NUL in workflow, key or payload, a BLOB, and a `due_at` that is not the canonical UTC
/// timestamp are refused on insert and update. PostgreSQL: text and jsonb refuse NUL themselves,
/// and a non-finite `due_at` is refused.
async fn nul_and_bad_due_at_refused(db: TestDb) {
    let insert = |workflow: &str, key: &str, payload: &str, due_at: Option<&str>| {
        let (cols, val) = match due_at {
            Some(d) => (", due_at", format!(", {d}")),
            None => ("", String::new()),
        };
        format!(
            "INSERT INTO ferry_outbox (workflow, key, payload{cols}) VALUES ({workflow}, {key}, {payload}{val})"
        )
    };
    let refused = |sql: String, why: &'static str| {
        let db = &db;
        async move {
            let err = db.exec(&sql).await.expect_err(&format!("accepted: {sql}"));
            assert!(err.to_string().contains(why), "{sql}: {err}");
        }
    };
    // NUL through the Rust enqueue (a bound string) is refused on both backends.
    let err = db
        .store
        .enqueue("w", "k\0tail", &json!({}))
        .await
        .unwrap_err();
    let why = match db.backend {
        Backend::Sqlite => "NUL",
        Backend::Postgres => "0x00",
    };
    assert!(err.to_string().contains(why), "{err}");
    match db.backend {
        Backend::Sqlite => {
            let nul = "'k' || char(0) || 'tail'";
            refused(insert("'w'", nul, "'{}'", None), "NUL").await;
            refused(insert(nul, "'k'", "'{}'", None), "NUL").await;
            refused(
                insert("'w'", "'k'", "'{\"ok\":1}' || char(0) || 'garbage'", None),
                "NUL",
            )
            .await;
            refused(insert("'w'", "x'6b'", "'{}'", None), "BLOB").await;
            for bad in [
                "'tomorrow'",
                "'2026-03-01 10:00:00'",
                "'2026-03-01T10:00:00Z'",
                "'2026-03-01T10:00:00.000+01:00'",
                "'2026-02-30T10:00:00.000Z'",
                "2461000.5",
            ] {
                refused(insert("'w'", "'k'", "'{}'", Some(bad)), "due_at must be").await;
            }
            assert_eq!(db.scalar("SELECT count(*) FROM ferry_outbox").await, 0);
            // What Ferry writes is accepted, and so is a number as key (stored as text).
            db.exec(&insert(
                "'w'",
                "'k'",
                "'{}'",
                Some("'2026-03-01T10:00:00.000Z'"),
            ))
            .await
            .unwrap();
            db.exec(&insert("'w'", "42", "'{}'", None)).await.unwrap();
            assert_eq!(db.store.find("w", "42").await.unwrap().unwrap().key, "42");
            refused(
                format!("UPDATE ferry_outbox SET key = {nul} WHERE key = 'k'"),
                "NUL",
            )
            .await;
            refused(
                "UPDATE ferry_outbox SET payload = '{}' || char(0) WHERE key = 'k'".into(),
                "NUL",
            )
            .await;
            refused(
                "UPDATE ferry_outbox SET due_at = 'tomorrow' WHERE key = 'k'".into(),
                "due_at must be",
            )
            .await;
            db.exec(
                "UPDATE ferry_outbox SET due_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 hour') \
                 WHERE key = 'k'",
            )
            .await
            .unwrap();
        }
        Backend::Postgres => {
            refused(
                insert("'w'", "'k' || chr(0)", "'{}'", None),
                "null character not permitted",
            )
            .await;
            refused(
                insert("'w'", "'k'", "'{\"a\":\"\\u0000\"}'", None),
                "unsupported Unicode escape sequence",
            )
            .await;
            refused(
                insert("'w'", "'k'", "'{}'", Some("'infinity'")),
                "must be a finite timestamp",
            )
            .await;
            db.exec(&insert(
                "'w'",
                "'k'",
                "'{}'",
                Some("now() + interval '1 hour'"),
            ))
            .await
            .unwrap();
            refused(
                "UPDATE ferry_outbox SET due_at = 'infinity' WHERE key = 'k'".into(),
                "must be a finite timestamp",
            )
            .await;
        }
    }
    // The relay's own writes of due_at (claim, complete with a wait) pass the guard.
    db.exec(&format!(
        "UPDATE ferry_outbox SET due_at = {}",
        long_ago(db.backend)
    ))
    .await
    .unwrap();
    let rows = db.store.claim(10, LEASE, &[]).await.unwrap();
    assert!(!rows.is_empty());
    let batch: Vec<Completion> = rows
        .iter()
        .map(|r| {
            completion(
                r,
                Outcome::Retry {
                    after: Duration::from_millis(1500),
                    reason: "HTTP 503".into(),
                },
            )
        })
        .collect();
    assert!(db
        .store
        .complete(&batch)
        .await
        .unwrap()
        .iter()
        .all(|r| *r == Recorded::Accepted));
}
both_backends!(nul_and_due_at, nul_and_bad_due_at_refused);

/// Rows deleted by an operator while a relay holds them: completion reports `Gone` (not `Stale`),
/// records nothing, writes no attempt row, and the rows' earlier attempts went with them. A
/// row whose lease was lost in the same batch is still `Stale`, with its attempt kept.
async fn deleted_while_held_is_gone(db: TestDb) {
    let mut ids = std::collections::HashMap::new();
    for key in ["a", "b", "c", "d"] {
        ids.insert(
            key,
            db.store.enqueue("w", key, &json!({})).await.unwrap().id,
        );
    }
    // One attempt each already (a retry), then claimed again.
    let first = db.store.claim(10, LEASE, &[]).await.unwrap();
    assert_eq!(first.len(), 4);
    let retry: Vec<Completion> = first
        .iter()
        .map(|r| {
            completion(
                r,
                Outcome::Retry {
                    after: Duration::ZERO,
                    reason: "HTTP 503".into(),
                },
            )
        })
        .collect();
    db.store.complete(&retry).await.unwrap();
    let held = db.store.claim(10, LEASE, &[]).await.unwrap();
    assert_eq!(held.len(), 4);
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_attempts").await, 4);

    db.exec(&format!(
        "DELETE FROM ferry_outbox WHERE id IN ({}, {})",
        ids["a"], ids["c"]
    ))
    .await
    .unwrap();
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_attempts").await,
        2,
        "the deleted rows' attempts went with them"
    );
    // d: an operator reset revokes the claim.
    db.exec(&format!(
        "UPDATE ferry_outbox SET state = 'pending' WHERE id = {}",
        ids["d"]
    ))
    .await
    .unwrap();

    let on_done = Arc::new(OnDoneSql {
        text: "SELECT 1".into(),
        postgres: "SELECT 1".into(),
        sqlite: "SELECT 1".into(),
        params: vec![],
    });
    let by_key = |k: &str| held.iter().find(|r| r.key == k).unwrap();
    let batch = vec![
        Completion {
            on_done: Some(on_done.clone()),
            ..completion(by_key("a"), Outcome::Done)
        },
        completion(by_key("b"), Outcome::Done),
        completion(by_key("c"), Outcome::Done),
        completion(
            by_key("d"),
            Outcome::Dead {
                reason: "HTTP 400".into(),
            },
        ),
    ];
    assert_eq!(
        db.store.complete(&batch).await.unwrap(),
        vec![
            Recorded::Gone,
            Recorded::Accepted,
            Recorded::Gone,
            Recorded::Stale
        ]
    );
    for key in ["a", "c"] {
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM ferry_attempts WHERE outbox_id = {}",
                ids[key]
            ))
            .await,
            0,
            "{key}"
        );
    }
    assert_eq!(db.store.attempts(ids["b"]).await.unwrap().len(), 2);
    let d = db.store.attempts(ids["d"]).await.unwrap();
    assert_eq!(d.len(), 2);
    assert!(d[1].error.as_deref().unwrap().contains("stale"), "{d:?}");
    assert_eq!(db.state_of(ids["d"]).await, State::Pending);
    // A release (nothing attempted) of a deleted row is Gone too.
    let e = db.store.enqueue("w", "e", &json!({})).await.unwrap();
    let held = db.store.claim(10, LEASE, &[]).await.unwrap();
    let e_row = held.iter().find(|r| r.id == e.id).unwrap();
    db.exec(&format!("DELETE FROM ferry_outbox WHERE id = {}", e.id))
        .await
        .unwrap();
    let release = Completion {
        record: None,
        ..completion(
            e_row,
            Outcome::Release {
                after: Duration::ZERO,
            },
        )
    };
    assert_eq!(
        db.store.complete(&[release]).await.unwrap(),
        vec![Recorded::Gone]
    );
}
both_backends!(deleted_while_held, deleted_while_held_is_gone);

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

/// `ferry_attempts.outcome` takes `aborted` and still refuses anything unknown.
async fn attempt_outcome_aborted_allowed(db: TestDb) {
    let e = db.store.enqueue("w", "k", &json!({})).await.unwrap();
    insert_attempt(&db.store, db.backend, e.id, "aborted").await;
    let err = db
        .exec(&format!(
            "INSERT INTO ferry_attempts (outbox_id, attempt, started_at, duration_ms, outcome) \
             SELECT {}, 2, started_at, 1.0, 'paused' FROM ferry_attempts",
            e.id
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("check"), "{err}");
    let history = db.store.attempts(e.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::Aborted);
}
both_backends!(aborted_outcome, attempt_outcome_aborted_allowed);
