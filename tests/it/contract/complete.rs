//! Completion: one transaction per batch, fenced by the claim token (`Stale`), rows deleted while
//! held (`Gone`), what each outcome does to the row and its history, on-done SQL in the same
//! transaction behind a savepoint, and a release that refunds the attempt.

use std::sync::Arc;
use std::time::Duration;

use ferry::outbox::{AttemptOutcome, Completion, OnDoneSql, Outcome, Recorded, State};
use serde_json::json;

use super::{completion, LEASE};
use crate::both_backends;
use crate::helpers::TestDb;

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

/// Cancel moves a pending row to dead with the reason; a released row gets its attempt back.
async fn cancel_and_release(db: TestDb) {
    let a = db.store.enqueue("w", "a", &json!({})).await.unwrap();
    db.store
        .cancel(a.id, "cancelled by operator: order refunded")
        .await
        .unwrap();
    let row = db.store.get(a.id).await.unwrap();
    assert_eq!(row.state, State::Dead);
    assert!(row.last_error.unwrap().contains("refunded"));
    let b = db.store.enqueue("w", "b", &json!({})).await.unwrap();
    let claimed = db
        .store
        .claim(1, Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert_eq!(claimed[0].id, b.id);
    let release = Completion {
        id: b.id,
        token: claimed[0].token,
        key: "b".into(),
        attempt: 1,
        outcome: Outcome::Release {
            after: Duration::ZERO,
        },
        record: None,
        on_done: None,
    };
    assert_eq!(
        db.store.complete(&[release]).await.unwrap(),
        vec![Recorded::Accepted]
    );
    let row = db.store.get(b.id).await.unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("retry_wait", 0));
    assert_eq!(db.store.attempts(b.id).await.unwrap().len(), 0);
    // Skipped workflows are not claimed.
    assert!(db
        .store
        .claim(10, Duration::from_secs(60), &["w".to_string()])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.store
            .claim(10, Duration::from_secs(60), &[])
            .await
            .unwrap()
            .len(),
        1
    );
}
both_backends!(cancel_release, cancel_and_release);

/// Each outcome moves a held row as `Outcome::next_state` says, with the times taken from the
/// database's clock, and adds one attempt to its history with the outcome's name.
async fn outcomes_move_held_rows(db: TestDb) {
    for key in ["done", "retry", "dead", "aborted"] {
        db.store.enqueue("w", key, &json!({})).await.unwrap();
    }
    let held = db.store.claim(10, LEASE, &[]).await.unwrap();
    assert_eq!(held.len(), 4);
    let by_key = |k: &str| held.iter().find(|r| r.key == k).unwrap();
    let wait = Duration::from_secs(3600);
    let started_at = chrono::Utc::now() - chrono::Duration::seconds(2);
    let record = |status: Option<u16>, error: Option<&str>| {
        Some(ferry::outbox::AttemptRecord {
            started_at,
            duration: Duration::from_millis(1500),
            http_status: status,
            error: error.map(str::to_string),
            response_excerpt: Some("{\"ok\":true}".into()),
        })
    };
    let batch = vec![
        by_key("done").completion(Outcome::Done, record(Some(201), None), None),
        by_key("retry").completion(
            Outcome::Retry {
                after: wait,
                reason: "HTTP 503".into(),
            },
            record(Some(503), Some("HTTP 503")),
            None,
        ),
        by_key("dead").completion(
            Outcome::Dead {
                reason: "HTTP 400: bad".into(),
            },
            record(Some(400), Some("HTTP 400: bad")),
            None,
        ),
        by_key("aborted").completion(
            Outcome::Aborted {
                reason: "cut off at shutdown".into(),
            },
            record(None, Some("cut off at shutdown")),
            None,
        ),
    ];
    assert_eq!(
        db.store.complete(&batch).await.unwrap(),
        vec![Recorded::Accepted; 4]
    );
    let close =
        |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>, d: Duration| {
            ((a - b).to_std().unwrap_or(Duration::MAX)).abs_diff(d) < Duration::from_millis(50)
        };

    let done = db.store.get(by_key("done").id).await.unwrap();
    assert_eq!(done.state, State::Done);
    assert_eq!(
        (done.last_status, done.last_error.as_deref()),
        (Some(201), None)
    );
    assert!(
        close(done.done_at.unwrap(), done.updated_at, Duration::ZERO),
        "{done:?}"
    );

    let retry = db.store.get(by_key("retry").id).await.unwrap();
    assert_eq!(retry.state, State::RetryWait);
    assert_eq!(retry.attempts, 1);
    assert_eq!(retry.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(retry.done_at, None);
    assert!(close(retry.due_at, retry.updated_at, wait), "{retry:?}");

    let dead = db.store.get(by_key("dead").id).await.unwrap();
    assert_eq!(dead.state, State::Dead);
    assert_eq!(dead.last_status, Some(400));
    assert_eq!(dead.last_error.as_deref(), Some("HTTP 400: bad"));

    // Aborted: the attempt counts, and the row is due again at once.
    let aborted = db.store.get(by_key("aborted").id).await.unwrap();
    assert_eq!((aborted.state, aborted.attempts), (State::RetryWait, 1));
    assert!(
        close(aborted.due_at, aborted.updated_at, Duration::ZERO),
        "{aborted:?}"
    );
    let again = db.store.claim(10, LEASE, &[]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (aborted.id, 2));

    for (key, outcome) in [
        ("done", AttemptOutcome::Done),
        ("retry", AttemptOutcome::Retry),
        ("dead", AttemptOutcome::Dead),
        ("aborted", AttemptOutcome::Aborted),
    ] {
        let history = db.store.attempts(by_key(key).id).await.unwrap();
        assert_eq!(history.len(), 1, "{key}");
        let a = &history[0];
        assert_eq!((a.attempt, a.outcome), (1, outcome), "{key}");
        assert!(!a.is_stale());
        assert!(
            (a.started_at - started_at).num_milliseconds().abs() <= 1,
            "{key}: started {} recorded as {}",
            started_at,
            a.started_at
        );
        assert!(
            (a.duration_ms - 1500.0).abs() < 0.01,
            "{key}: {}",
            a.duration_ms
        );
    }
}
both_backends!(outcomes, outcomes_move_held_rows);

/// A workflow's on-done SQL runs in the transaction that marks its row done, behind a savepoint:
/// its effect commits with the row; when it fails, only its row goes dead (delivered, with the
/// reason) and its attempt is recorded dead, while the rest of the batch is recorded as usual;
/// a stale completion runs no on-done SQL at all.
async fn on_done_runs_in_the_completing_transaction(db: TestDb) {
    db.exec("CREATE TABLE flags (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        .await
        .unwrap();
    db.exec("INSERT INTO flags (key, n) VALUES ('ok', 0), ('broken', 0), ('stale', 0)")
        .await
        .unwrap();
    let sql = |text: &str| {
        Arc::new(OnDoneSql {
            text: text.into(),
            postgres: text.replace(":key", "$1"),
            sqlite: text.replace(":key", "?1"),
            params: vec!["key"],
        })
    };
    let flag = sql("UPDATE flags SET n = n + 1 WHERE key = :key");
    let broken = sql("UPDATE no_such_table SET n = n + 1 WHERE key = :key");
    for key in ["ok", "broken", "plain", "stale"] {
        db.store.enqueue("w", key, &json!({})).await.unwrap();
    }
    let held = db.store.claim(10, LEASE, &[]).await.unwrap();
    let by_key = |k: &str| held.iter().find(|r| r.key == k).unwrap();
    db.store.reset(by_key("stale").id).await.unwrap();
    let with = |k: &str, on_done: &Arc<OnDoneSql>| Completion {
        on_done: Some(on_done.clone()),
        ..completion(by_key(k), Outcome::Done)
    };
    let results = db
        .store
        .complete(&[
            with("ok", &flag),
            with("broken", &broken),
            completion(by_key("plain"), Outcome::Done),
            with("stale", &flag),
        ])
        .await
        .unwrap();
    let reason = match &results[1] {
        Recorded::OnDoneFailed(reason) => reason.clone(),
        other => panic!("broken on-done SQL recorded as {other:?}"),
    };
    assert!(
        reason.starts_with("delivered (HTTP 200), but the workflow's on_done SQL failed: "),
        "{reason}"
    );
    assert_eq!(
        (&results[0], &results[2], &results[3]),
        (&Recorded::Accepted, &Recorded::Accepted, &Recorded::Stale)
    );
    let n = |k: &str| format!("SELECT CAST(n AS BIGINT) FROM flags WHERE key = '{k}'");
    assert_eq!(db.scalar(&n("ok")).await, 1);
    assert_eq!(
        db.scalar(&n("broken")).await,
        0,
        "the failed statement is rolled back"
    );
    assert_eq!(
        db.scalar(&n("stale")).await,
        0,
        "no on-done SQL for a row no longer held"
    );
    let ok = db.store.get(by_key("ok").id).await.unwrap();
    assert_eq!(ok.state, State::Done);
    let dead = db.store.get(by_key("broken").id).await.unwrap();
    assert_eq!((dead.state, dead.last_status), (State::Dead, Some(200)));
    assert_eq!(dead.last_error.as_deref(), Some(reason.as_str()));
    let history = db.store.attempts(dead.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::Dead);
    assert_eq!(history[0].error.as_deref(), Some(reason.as_str()));
    assert_eq!(db.state_of(by_key("plain").id).await, State::Done);
    assert_eq!(db.state_of(by_key("stale").id).await, State::Pending);
}
both_backends!(on_done, on_done_runs_in_the_completing_transaction);
