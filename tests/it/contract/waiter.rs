//! Wake-ups: a waiter sleeps while nothing is committed and returns soon after a commit that
//! adds a row, whether through another store's pool or by plain SQL on another connection.

use std::time::{Duration, Instant};

use serde_json::json;

use super::run;
use crate::both_backends;
use crate::helpers::TestDb;

async fn waiter_wakes_on_commit(db: TestDb) {
    let mut waiter = db.store.waiter(true).await.unwrap();
    assert!(
        !waiter.wait(Duration::from_millis(300)).await,
        "woken with nothing committed"
    );
    let other = db.second_store().await;
    let enqueue = {
        let other = other.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            other.enqueue("w", "k", &json!({})).await.unwrap();
        })
    };
    let t = Instant::now();
    assert!(
        waiter.wait(Duration::from_secs(20)).await,
        "no wake-up for an enqueue"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    enqueue.await.unwrap();
    let insert = {
        let other = other.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            run(
                &other,
                "INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'sql', '{}')",
            )
            .await
            .unwrap();
        })
    };
    let t = Instant::now();
    assert!(
        waiter.wait(Duration::from_secs(20)).await,
        "no wake-up for a plain SQL insert"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    insert.await.unwrap();
    waiter.close().await;
    other.close().await;
}
both_backends!(wakes_on_commit, waiter_wakes_on_commit);
