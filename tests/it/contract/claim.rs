//! Claims: due rows in `due_at` order under one token, attempts counted, the lease measured on
//! the database's clock, concurrent claims never sharing a row, expired leases taken up again,
//! the payload budget, and lease renewal only for rows still held.

use std::collections::HashSet;
use std::time::Duration;

use ferry::outbox::{State, CLAIM_PAYLOAD_BUDGET};
use serde_json::json;

use super::{blob_json, LEASE};
use crate::both_backends;
use crate::helpers::TestDb;

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

/// A claim takes only due rows, earliest due first, under one token for the whole claim: each
/// becomes `sending`, its attempt counted, its lease (`due_at`) the database's now plus the lease.
/// Rows of skipped workflows, rows not yet due and rows held under a live lease are left alone.
async fn claim_takes_due_rows_in_order_under_one_token(db: TestDb) {
    let (soon, later, future) = match db.backend {
        crate::helpers::Backend::Postgres => (
            "now() - interval '1 minute'",
            "now() - interval '2 minutes'",
            "now() + interval '1 hour'",
        ),
        crate::helpers::Backend::Sqlite => (
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 minutes')",
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 minutes')",
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 hours')",
        ),
    };
    for (workflow, key, due) in [
        ("w", "second", soon),
        ("w", "first", later),
        ("w", "not-due", future),
        ("skipped", "s", later),
    ] {
        db.exec(&format!(
            "INSERT INTO ferry_outbox (workflow, key, payload, due_at) VALUES ('{workflow}', '{key}', '{{}}', {due})"
        ))
        .await
        .unwrap();
    }
    db.store.enqueue("w", "third", &json!({})).await.unwrap();
    let lease = Duration::from_secs(90);
    let skip = ["skipped".to_string()];
    // The earliest due first (the order rows come back in is not part of the contract).
    let one = db.store.claim(1, lease, &skip).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].key, "first");
    let claimed = db.store.claim(10, lease, &skip).await.unwrap();
    let mut keys: Vec<&str> = claimed.iter().map(|c| c.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["second", "third"]);
    let token = claimed[0].token;
    assert!(claimed.iter().all(|c| c.token == token && c.attempt == 1));
    assert_ne!(one[0].token, token, "every claim has a token of its own");
    for c in one.iter().chain(&claimed) {
        let row = db.store.get(c.id).await.unwrap();
        assert_eq!((row.state, row.attempts), (State::Sending, 1));
        // Both set from the database's clock by the claim: the lease is exact.
        let held = (row.due_at - row.updated_at).to_std().unwrap();
        assert!(
            held.abs_diff(lease) < Duration::from_millis(50),
            "lease {held:?}, asked {lease:?}"
        );
        assert_eq!(c.created_at, row.created_at);
        assert_eq!(c.payload, "{}");
    }
    // Held rows are not due while their lease runs; the limit is honoured.
    assert!(db.store.claim(10, lease, &skip).await.unwrap().is_empty());
    let skipped = db.store.claim(1, lease, &[]).await.unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].key, "s");
    assert_ne!(
        skipped[0].token, token,
        "every claim has a token of its own"
    );
    assert!(db.store.claim(0, lease, &[]).await.unwrap().is_empty());
}
both_backends!(
    due_rows_in_order,
    claim_takes_due_rows_in_order_under_one_token
);

/// Two stores (two relays, as far as the database can tell) claiming at the same time never get
/// the same row, and between them get every row.
async fn concurrent_claims_never_share_a_row(db: TestDb) {
    const N: usize = 600;
    let values: Vec<String> = (0..N).map(|i| format!("('w', 'k{i}', '{{}}')")).collect();
    db.exec(&format!(
        "INSERT INTO ferry_outbox (workflow, key, payload) VALUES {}",
        values.join(",")
    ))
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = db.second_store().await;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let rows = store.claim(25, LEASE, &[]).await.unwrap();
                if rows.is_empty() {
                    break;
                }
                ids.extend(rows.iter().map(|r| r.id));
            }
            store.close().await;
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), N, "claimed in all");
    assert_eq!(distinct.len(), N, "a row was claimed twice");
}
both_backends!(concurrent_claims, concurrent_claims_never_share_a_row);

/// A row whose lease expired (its relay died) is due again: the next claim takes it with a new
/// token and counts another attempt, it shows in `ferry_stuck` meanwhile, and the old holder's
/// completion is refused as stale.
async fn expired_lease_is_claimed_again(db: TestDb) {
    let e = db.store.enqueue("w", "k", &json!({})).await.unwrap();
    let first = db
        .store
        .claim(10, Duration::from_millis(200), &[])
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_stuck").await, 0);
    assert!(
        crate::helpers::wait_until(Duration::from_secs(10), || async {
            db.scalar("SELECT count(*) FROM ferry_stuck").await == 1
        })
        .await,
        "the expired lease never showed in ferry_stuck"
    );
    let second = db.store.claim(10, LEASE, &[]).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_stuck").await, 0);
    assert_eq!(second[0].id, e.id);
    assert_eq!(second[0].attempt, 2);
    assert_ne!(second[0].token, first[0].token);
    let late = super::completion(&first[0], ferry::outbox::Outcome::Done);
    assert_eq!(
        db.store.complete(&[late]).await.unwrap(),
        vec![ferry::outbox::Recorded::Stale]
    );
    let row = db.store.get(e.id).await.unwrap();
    assert_eq!((row.state, row.attempts), (State::Sending, 2));
    let ok = super::completion(&second[0], ferry::outbox::Outcome::Done);
    assert_eq!(
        db.store.complete(&[ok]).await.unwrap(),
        vec![ferry::outbox::Recorded::Accepted]
    );
}
both_backends!(expired_lease, expired_lease_is_claimed_again);

/// Lease renewal pushes the lease of rows still held under their token, from the database's
/// now, and nothing else: not a row whose token changed, not a row already completed.
async fn extend_renews_only_leases_still_held(db: TestDb) {
    for key in ["a", "b", "c"] {
        db.store.enqueue("w", key, &json!({})).await.unwrap();
    }
    let held = db
        .store
        .claim(10, Duration::from_secs(30), &[])
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    let by_key = |k: &str| held.iter().find(|r| r.key == k).unwrap();
    let (a, b, c) = (by_key("a"), by_key("b"), by_key("c"));
    // b: reset by an operator (its claim revoked); c: completed.
    db.store.reset(b.id).await.unwrap();
    db.store
        .complete(&[super::completion(c, ferry::outbox::Outcome::Done)])
        .await
        .unwrap();
    let before = |id| {
        let store = db.store.clone();
        async move { store.get(id).await.unwrap().due_at }
    };
    let (b_due, c_due) = (before(b.id).await, before(c.id).await);
    let n = db
        .store
        .extend_leases(
            &[(a.id, a.token), (b.id, b.token), (c.id, c.token)],
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "only a is still held");
    let a_row = db.store.get(a.id).await.unwrap();
    let left = (a_row.due_at - chrono::Utc::now()).to_std().unwrap();
    assert!(
        left > Duration::from_secs(3500),
        "a's lease runs {left:?} more"
    );
    assert_eq!(a_row.state, State::Sending);
    assert_eq!(db.store.get(b.id).await.unwrap().due_at, b_due);
    assert_eq!(db.store.get(c.id).await.unwrap().due_at, c_due);
    // A wrong token renews nothing.
    assert_eq!(
        db.store
            .extend_leases(&[(a.id, uuid::Uuid::new_v4())], LEASE)
            .await
            .unwrap(),
        0
    );
    assert_eq!(db.store.extend_leases(&[], LEASE).await.unwrap(), 0);
}
both_backends!(extend_leases, extend_renews_only_leases_still_held);
