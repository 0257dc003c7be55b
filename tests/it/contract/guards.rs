//! What the database itself refuses (migrations 0001 and 0002), on both backends: payloads over
//! 1 MiB written by plain SQL, NUL characters and malformed `due_at` on SQLite, non-finite
//! `due_at` on PostgreSQL, and unknown attempt outcomes; the relay's own writes pass the guards.

use std::time::Duration;

use ferry::outbox::{AttemptOutcome, Completion, Outcome, Recorded, MAX_PAYLOAD_BYTES};
use serde_json::json;

use super::{blob_json, completion, insert_attempt, long_ago, LEASE};
use crate::both_backends;
use crate::helpers::{Backend, TestDb};

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
