//! Enqueue: in the caller's transaction (committed or rolled back with the business change),
//! idempotent per `(workflow, key)` whether through Ferry or plain SQL, and refused intents.

use serde_json::json;

use ferry::outbox::{Outcome, Recorded, State};

use super::{completion, count_rows, LEASE};
use crate::both_backends;
use crate::helpers::{Backend, TestDb};

// A business table and the intent commit or roll back together.
async fn rollback_leaves_nothing_commit_leaves_one(db: TestDb) {
    db.exec("CREATE TABLE payments (order_id BIGINT PRIMARY KEY, amount BIGINT NOT NULL)")
        .await
        .unwrap();
    let payload = json!({"invoice_number": "INV-1"});
    match db.backend {
        Backend::Postgres => {
            let pool = db.store.pg_pool().unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO payments VALUES (1, 100)")
                .execute(&mut *tx)
                .await
                .unwrap();
            ferry::enqueue(&mut *tx, "onec_invoice", "1", &payload)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO payments VALUES (2, 100)")
                .execute(&mut *tx)
                .await
                .unwrap();
            let e = ferry::enqueue(&mut *tx, "onec_invoice", "2", &payload)
                .await
                .unwrap();
            assert!(e.created);
            tx.commit().await.unwrap();
        }
        Backend::Sqlite => {
            let pool = db.store.sqlite_pool().unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO payments VALUES (1, 100)")
                .execute(&mut *tx)
                .await
                .unwrap();
            ferry::enqueue(&mut *tx, "onec_invoice", "1", &payload)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO payments VALUES (2, 100)")
                .execute(&mut *tx)
                .await
                .unwrap();
            let e = ferry::enqueue(&mut *tx, "onec_invoice", "2", &payload)
                .await
                .unwrap();
            assert!(e.created);
            tx.commit().await.unwrap();
        }
    }
    assert_eq!(count_rows(&db).await, 1);
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE key = '2' AND state = 'pending'")
            .await,
        1
    );
    assert_eq!(db.scalar("SELECT count(*) FROM payments").await, 1);
}
both_backends!(
    transactional_enqueue,
    rollback_leaves_nothing_commit_leaves_one
);

async fn duplicate_enqueue_gives_one_row(db: TestDb) {
    let a = db
        .store
        .enqueue("onec_invoice", "42", &json!({"n": 1}))
        .await
        .unwrap();
    let b = db
        .store
        .enqueue("onec_invoice", "42", &json!({"n": 2}))
        .await
        .unwrap();
    assert!(a.created);
    assert!(!b.created);
    assert_eq!(a.id, b.id);
    // The plain-SQL form, with every other column defaulted.
    db.exec("INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('onec_invoice', '42', '{\"n\":3}') ON CONFLICT (workflow, key) DO NOTHING")
        .await
        .unwrap();
    db.exec("INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('onec_invoice', '43', '{\"n\":4}')")
        .await
        .unwrap();
    assert_eq!(count_rows(&db).await, 2);
    let row = db.store.find("onec_invoice", "43").await.unwrap().unwrap();
    assert_eq!(row.state, State::Pending);
    assert_eq!(row.attempts, 0);
    // The first payload stays.
    let first = db.store.get(a.id).await.unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first.payload).unwrap(),
        json!({"n": 1})
    );
    // A plain-SQL row is due at once: both rows are claimed and delivered.
    let claimed = db.store.claim(100, LEASE, &[]).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let batch: Vec<_> = claimed
        .iter()
        .map(|r| completion(r, Outcome::Done))
        .collect();
    assert_eq!(
        db.store.complete(&batch).await.unwrap(),
        vec![Recorded::Accepted; 2]
    );
    // Invalid JSON is refused by the database, and nothing is added.
    assert!(db
        .exec("INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'bad', '{not json')")
        .await
        .is_err());
    // Unicode and SQL metacharacters in keys are data, not SQL.
    let k = "ключ'; DROP TABLE ferry_outbox; --";
    let e = db
        .store
        .enqueue("onec_invoice", k, &json!({}))
        .await
        .unwrap();
    assert_eq!(db.store.get(e.id).await.unwrap().key, k);
    assert_eq!(count_rows(&db).await, 3);
}
both_backends!(duplicate_enqueue, duplicate_enqueue_gives_one_row);

async fn enqueue_refuses_bad_intents(db: TestDb) {
    let big = "x".repeat(ferry::outbox::MAX_PAYLOAD_BYTES + 1);
    let e = db
        .store
        .enqueue("w", "k", &json!({ "blob": big }))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
    let e = db.store.enqueue("", "k", &json!({})).await.unwrap_err();
    assert!(e.to_string().contains("workflow name"), "{e}");
    let e = db.store.enqueue("w", "", &json!({})).await.unwrap_err();
    assert!(e.to_string().contains("key"), "{e}");
    assert_eq!(count_rows(&db).await, 0);
}
both_backends!(bad_intents, enqueue_refuses_bad_intents);

/// Batch enqueue in the caller's transaction: one row per new key, existing keys returned as
/// they are, results in input order, and nothing at all if the transaction rolls back.
async fn batch_enqueue_in_caller_transaction(db: TestDb) {
    let before = db
        .store
        .enqueue("w", "k2", &json!({"old": true}))
        .await
        .unwrap();
    let payloads: Vec<serde_json::Value> = (0..5).map(|i| json!({ "i": i })).collect();
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &serde_json::Value)> = keys
        .iter()
        .map(String::as_str)
        .zip(payloads.iter())
        .collect();
    let run = |commit: bool| {
        let items = items.clone();
        let db = &db;
        async move {
            match db.backend {
                Backend::Postgres => {
                    let mut tx = db.store.pg_pool().unwrap().begin().await.unwrap();
                    let r = ferry::enqueue_many(&mut *tx, "w", &items).await.unwrap();
                    if commit {
                        tx.commit().await.unwrap()
                    } else {
                        tx.rollback().await.unwrap()
                    }
                    r
                }
                Backend::Sqlite => {
                    let mut tx = db.store.sqlite_pool().unwrap().begin().await.unwrap();
                    let r = ferry::enqueue_many(&mut *tx, "w", &items).await.unwrap();
                    if commit {
                        tx.commit().await.unwrap()
                    } else {
                        tx.rollback().await.unwrap()
                    }
                    r
                }
            }
        }
    };
    run(false).await;
    assert_eq!(count_rows(&db).await, 1, "rolled back batch leaves nothing");
    let r = run(true).await;
    assert_eq!(r.len(), 5);
    assert_eq!(r.iter().filter(|e| e.created).count(), 4);
    assert_eq!(r[2].id, before.id);
    assert!(!r[2].created);
    assert_eq!(count_rows(&db).await, 5);
    let row = db.store.get(r[4].id).await.unwrap();
    assert_eq!(row.key, "k4");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&row.payload).unwrap(),
        json!({"i": 4})
    );
}
both_backends!(batch_enqueue, batch_enqueue_in_caller_transaction);
