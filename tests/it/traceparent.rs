//! The W3C `traceparent` of an intent (migration 0007): given at enqueue from Rust or plain SQL,
//! checked by both, and returned by the claim.

use std::time::Duration;

use ferry::outbox::{EnqueueOptions, StoreError};

use crate::both_backends;
use crate::helpers::{Backend, TestDb};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Not W3C traceparents: each must be refused by Rust and by the database.
const BAD: &[&str] = &[
    "",
    "garbage",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
    "00-4bf92f3577b34da6a3ce929d0e0e473600-f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7--1",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",
];

/// Run `sql` with `$1`/`?1` = key and `$2`/`?2` = traceparent; the database's error as text.
async fn bound(db: &TestDb, sql: &str, key: &str, traceparent: Option<&str>) -> Result<(), String> {
    let done = match db.backend {
        Backend::Postgres => sqlx::query(sql)
            .bind(key)
            .bind(traceparent)
            .execute(db.store.pg_pool().unwrap())
            .await
            .map(drop),
        Backend::Sqlite => sqlx::query(&sql.replace('$', "?"))
            .bind(key)
            .bind(traceparent)
            .execute(db.store.sqlite_pool().unwrap())
            .await
            .map(drop),
    };
    done.map_err(|e| e.to_string())
}

async fn insert_sql(db: &TestDb, key: &str, traceparent: Option<&str>) -> Result<(), String> {
    let sql =
        "INSERT INTO ferry_outbox (workflow, key, payload, traceparent) VALUES ('w', $1, '{}', $2)";
    bound(db, sql, key, traceparent).await
}

async fn enqueue_rust(db: &TestDb, key: &str, tp: &str) -> Result<i64, StoreError> {
    let payload = serde_json::json!({"k": key});
    let options = EnqueueOptions::traceparent(tp);
    let done = match db.backend {
        Backend::Postgres => {
            let mut conn = db.store.pg_pool().unwrap().acquire().await?;
            ferry::enqueue_with(&mut *conn, "w", key, &payload, options).await?
        }
        Backend::Sqlite => {
            let mut conn = db.store.sqlite_pool().unwrap().acquire().await?;
            ferry::enqueue_with(&mut *conn, "w", key, &payload, options).await?
        }
    };
    Ok(done.id)
}

async fn traceparent_given_at_enqueue_comes_back_with_the_claim(db: TestDb) {
    let rust = enqueue_rust(&db, "rust", TP).await.unwrap();
    insert_sql(&db, "sql", Some(TP)).await.unwrap();
    insert_sql(&db, "none", None).await.unwrap();
    for (i, bad) in BAD.iter().enumerate() {
        let refused = enqueue_rust(&db, &format!("bad-rust-{i}"), bad).await;
        assert!(
            matches!(&refused, Err(StoreError::InvalidIntent(m)) if m.contains("traceparent")),
            "{bad:?}: {refused:?}"
        );
        let refused = insert_sql(&db, &format!("bad-sql-{i}"), Some(bad)).await;
        assert!(
            matches!(&refused, Err(m) if m.contains("traceparent")),
            "{bad:?} by SQL on {:?}: {refused:?}",
            db.backend
        );
        assert!(!ferry::outbox::is_traceparent(bad), "{bad:?}");
    }
    // An update that sets it is checked too.
    let sql = "UPDATE ferry_outbox SET traceparent = $2 WHERE key = $1";
    let refused = bound(&db, sql, "none", Some("garbage")).await;
    assert!(
        matches!(&refused, Err(m) if m.contains("traceparent")),
        "{:?}: {refused:?}",
        db.backend
    );

    let mut claimed = db
        .store
        .claim(10, Duration::from_secs(60), &[])
        .await
        .unwrap();
    claimed.sort_by_key(|c| c.id);
    let got: Vec<(&str, Option<&str>)> = claimed
        .iter()
        .map(|c| (c.key.as_str(), c.traceparent.as_deref()))
        .collect();
    assert_eq!(
        got,
        [("rust", Some(TP)), ("sql", Some(TP)), ("none", None)],
        "{:?}",
        db.backend
    );
    assert_eq!(claimed[0].id, rust);
}
both_backends!(
    traceparent_round_trip,
    traceparent_given_at_enqueue_comes_back_with_the_claim
);
