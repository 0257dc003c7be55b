//! What operators see and do: reset and cancel only where the state machine allows them, the
//! database refusing unknown states and illegal moves, the status view, list, get and find,
//! the attempt history, and rows typed as `State`, `AttemptOutcome` and UTC times.

use std::time::Duration;

use ferry::outbox::{AttemptOutcome, ListFilter, Outcome, State};
use serde_json::json;

use super::{completion, rows_in_states, LEASE};
use crate::both_backends;
use crate::helpers::{wait_until, TestDb};

/// The database refuses unknown states and moves the state machine does not have.
async fn database_refuses_unknown_states(db: TestDb) {
    let e = db.store.enqueue("w", "k", &json!({})).await.unwrap();
    let err = db
        .exec(&format!(
            "UPDATE ferry_outbox SET state = 'paused' WHERE id = {}",
            e.id
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("check"), "{err}");
    assert_eq!(db.state_of(e.id).await, State::Pending);
    assert!(db
        .exec("INSERT INTO ferry_outbox (workflow, key, payload, state) VALUES ('w', 'x', '{}', 'bogus')")
        .await
        .is_err());
    // pending -> done skips sending: refused.
    let err = db
        .exec(&format!(
            "UPDATE ferry_outbox SET state = 'done' WHERE id = {}",
            e.id
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("illegal state transition"),
        "{err}"
    );
    // done is final. PostgreSQL reports a failed statement's error before it has rolled the
    // statement back and released its row lock, so a claim right after may still skip the row
    // (SKIP LOCKED); claim until it is taken.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let claimed = db.store.claim(10, LEASE, &[]).await.unwrap();
            let batch: Vec<_> = claimed
                .iter()
                .map(|r| completion(r, Outcome::Done))
                .collect();
            db.store.complete(&batch).await.unwrap();
            db.state_of(e.id).await == State::Done
        })
        .await
    );
    let err = db
        .exec(&format!(
            "UPDATE ferry_outbox SET state = 'pending' WHERE id = {}",
            e.id
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("illegal state transition"),
        "{err}"
    );
    assert_eq!(db.state_of(e.id).await, State::Done);
    // The store's own reset says why in words.
    let err = db.store.reset(e.id).await.unwrap_err();
    assert!(
        err.to_string().contains("only dead, retry_wait or sending"),
        "{err}"
    );
}
both_backends!(unknown_states_refused, database_refuses_unknown_states);

/// Reset and cancel are the operator's moves of the state machine and nothing else: reset from
/// dead, retry_wait and sending (pending stays as it is), cancel from pending and retry_wait.
/// A refused move changes nothing and names the row's state; an unknown id is `NotFound`.
async fn reset_and_cancel_follow_the_state_machine(db: TestDb) {
    use ferry::outbox::StoreError;
    let all = [
        State::Pending,
        State::Sending,
        State::RetryWait,
        State::Done,
        State::Dead,
    ];
    let rows: Vec<(String, State)> = all
        .iter()
        .flat_map(|s| [(format!("reset-{s}"), *s), (format!("cancel-{s}"), *s)])
        .collect();
    let mut spec: Vec<(&str, &str, State)> =
        rows.iter().map(|(k, s)| ("w", k.as_str(), *s)).collect();
    spec.extend([
        ("a", "a-dead", State::Dead),
        ("b", "b-dead", State::Dead),
        ("b", "b-done", State::Done),
    ]);
    let ids = rows_in_states(&db, &spec).await;
    for state in all {
        let id = ids[&format!("reset-{state}")];
        let before = db.store.get(id).await.unwrap();
        let r = db.store.reset(id).await;
        match state {
            State::Dead | State::RetryWait | State::Sending => {
                r.unwrap_or_else(|e| panic!("reset from {state}: {e}"));
                let row = db.store.get(id).await.unwrap();
                assert_eq!(
                    (row.state, row.attempts),
                    (State::Pending, 0),
                    "from {state}"
                );
                assert!(
                    row.due_at <= chrono::Utc::now(),
                    "due at once after a reset"
                );
            }
            State::Pending => {
                r.unwrap();
                assert_eq!(db.store.get(id).await.unwrap().attempts, before.attempts);
            }
            State::Done => {
                let err = r.unwrap_err();
                assert!(
                    matches!(
                        err,
                        StoreError::WrongState {
                            state: State::Done,
                            ..
                        }
                    ),
                    "{err:?}"
                );
                assert!(err.to_string().contains("is done"), "{err}");
                assert_eq!(db.state_of(id).await, State::Done);
            }
        }

        let id = ids[&format!("cancel-{state}")];
        let r = db.store.cancel(id, "order refunded").await;
        if matches!(state, State::Pending | State::RetryWait) {
            r.unwrap_or_else(|e| panic!("cancel from {state}: {e}"));
            let row = db.store.get(id).await.unwrap();
            assert_eq!(row.state, State::Dead);
            assert_eq!(row.last_error.as_deref(), Some("order refunded"));
        } else {
            let err = r.unwrap_err();
            assert!(
                matches!(&err, StoreError::WrongState { state: s, .. } if *s == state),
                "cancel from {state}: {err:?}"
            );
            assert!(
                err.to_string().contains("only pending or retry_wait"),
                "{err}"
            );
            assert_eq!(db.state_of(id).await, state);
        }
    }
    assert!(matches!(
        db.store.reset(999_999).await,
        Err(StoreError::NotFound(999_999))
    ));
    assert!(matches!(
        db.store.cancel(999_999, "x").await,
        Err(StoreError::NotFound(999_999))
    ));
    assert!(matches!(
        db.store.get(999_999).await,
        Err(StoreError::NotFound(999_999))
    ));
    assert!(db.store.find("w", "no such key").await.unwrap().is_none());
    // reset_dead: every dead row, or those of one workflow.
    assert_eq!(db.store.reset_dead(Some("a")).await.unwrap(), 1);
    assert_eq!(db.state_of(ids["a-dead"]).await, State::Pending);
    assert_eq!(db.state_of(ids["b-dead"]).await, State::Dead);
    // b-dead and the cancelled rows above.
    let dead = db
        .scalar("SELECT count(*) FROM ferry_outbox WHERE state = 'dead'")
        .await;
    assert_eq!(db.store.reset_dead(None).await.unwrap(), dead as u64);
    assert_eq!(db.state_of(ids["b-done"]).await, State::Done);
}
both_backends!(
    reset_cancel_legality,
    reset_and_cancel_follow_the_state_machine
);

/// `ferry_status`: one line per workflow and live state plus dead, ordered by workflow and
/// state, never counting done rows; the lag only of rows whose due time passed.
/// `count_by_state` counts every state, done included.
async fn status_skips_done_rows(db: TestDb) {
    rows_in_states(
        &db,
        &[
            ("w1", "p1", State::Pending),
            ("w1", "p2", State::Pending),
            ("w1", "r", State::RetryWait),
            ("w1", "s", State::Sending),
            ("w1", "d1", State::Done),
            ("w1", "d2", State::Done),
            ("w2", "x1", State::Dead),
            ("w2", "x2", State::Dead),
            ("w2", "d3", State::Done),
        ],
    )
    .await;
    let status = db.store.status().await.unwrap();
    let lines: Vec<(&str, State, i64)> = status
        .iter()
        .map(|l| (l.workflow.as_str(), l.state, l.rows))
        .collect();
    assert_eq!(
        lines,
        [
            ("w1", State::Pending, 2),
            ("w1", State::RetryWait, 1),
            ("w1", State::Sending, 1),
            ("w2", State::Dead, 2),
        ]
    );
    for l in &status {
        match l.state {
            State::Pending => assert!(l.oldest_due_age_s >= 0.0, "{l:?}"),
            _ => assert_eq!(l.oldest_due_age_s, 0.0, "{l:?}"),
        }
    }
    assert_eq!(
        db.store.count_by_state().await.unwrap(),
        [
            (State::Dead, 2),
            (State::Done, 3),
            (State::Pending, 2),
            (State::RetryWait, 1),
            (State::Sending, 1),
        ]
    );
    let json = serde_json::to_value(&status[1]).unwrap();
    assert_eq!(json["state"], "retry_wait");
    assert_eq!(json["workflow"], "w1");
}
both_backends!(status_view, status_skips_done_rows);

/// `list`: by state, by workflow, by both; newest first; at most `limit` rows (100 when the
/// limit is not positive).
async fn list_filters_and_orders(db: TestDb) {
    let ids = rows_in_states(
        &db,
        &[
            ("w1", "d", State::Done),
            ("w2", "x1", State::Dead),
            ("w2", "x2", State::Dead),
            ("w1", "p1", State::Pending),
            ("w1", "p2", State::Pending),
            ("w1", "p3", State::Pending),
        ],
    )
    .await;
    let list = |state: Option<State>, workflow: Option<&str>, limit: i64| {
        let store = db.store.clone();
        let workflow = workflow.map(str::to_string);
        async move {
            store
                .list(&ListFilter {
                    state,
                    workflow,
                    limit,
                })
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.key)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Some(State::Dead), None, 10).await, ["x2", "x1"]);
    assert_eq!(list(None, Some("w1"), 10).await, ["p3", "p2", "p1", "d"]);
    assert_eq!(
        list(Some(State::Pending), Some("w1"), 10).await,
        ["p3", "p2", "p1"]
    );
    assert!(list(Some(State::Sending), None, 10).await.is_empty());
    assert!(list(Some(State::Dead), Some("w1"), 10).await.is_empty());
    assert_eq!(list(None, None, 2).await, ["p3", "p2"]);
    assert_eq!(list(None, None, 0).await.len(), 6);
    // Newest is highest id.
    let all = db.store.list(&ListFilter::default()).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(all.last().unwrap().id, ids["d"]);
    let values: Vec<String> = (0..120)
        .map(|i| format!("('many', 'm{i}', '{{}}')"))
        .collect();
    db.exec(&format!(
        "INSERT INTO ferry_outbox (workflow, key, payload) VALUES {}",
        values.join(",")
    ))
    .await
    .unwrap();
    assert_eq!(list(None, Some("many"), 0).await.len(), 100);
    assert_eq!(list(None, Some("many"), -1).await.len(), 100);
    assert_eq!(list(None, Some("many"), 500).await.len(), 120);
}
both_backends!(list_filter, list_filters_and_orders);

/// The history of a row in the order it was recorded, across an operator reset (attempt numbers
/// start again) and with a stale attempt recorded late (it started before the others).
async fn attempts_in_recorded_order(db: TestDb) {
    let e = db.store.enqueue("w", "k", &json!({})).await.unwrap();
    let first = db.store.claim(1, LEASE, &[]).await.unwrap();
    db.store
        .complete(&[first[0].completion(
            Outcome::Retry {
                after: Duration::ZERO,
                reason: "HTTP 503".into(),
            },
            super::record(),
            None,
        )])
        .await
        .unwrap();
    let late = db.store.claim(1, LEASE, &[]).await.unwrap();
    assert_eq!(late[0].attempt, 2);
    let late_started = chrono::Utc::now();
    db.store.reset(e.id).await.unwrap();
    let fresh = db.store.claim(1, LEASE, &[]).await.unwrap();
    assert_eq!(fresh[0].attempt, 1, "a reset gives a fresh budget");
    tokio::time::sleep(Duration::from_millis(20)).await;
    db.store
        .complete(&[completion(&fresh[0], Outcome::Done)])
        .await
        .unwrap();
    let mut stale = completion(
        &late[0],
        Outcome::Dead {
            reason: "HTTP 400".into(),
        },
    );
    stale.record.as_mut().unwrap().started_at = late_started;
    assert_eq!(
        db.store.complete(&[stale]).await.unwrap(),
        vec![ferry::outbox::Recorded::Stale]
    );
    let history = db.store.attempts(e.id).await.unwrap();
    let seen: Vec<(i32, AttemptOutcome, bool)> = history
        .iter()
        .map(|a| (a.attempt, a.outcome, a.is_stale()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, AttemptOutcome::Retry, false),
            (1, AttemptOutcome::Done, false),
            (2, AttemptOutcome::Dead, true),
        ]
    );
    assert!(history[2].started_at < history[1].started_at);
    assert!(history[2]
        .error
        .as_deref()
        .unwrap()
        .starts_with("HTTP 400 (stale:"));
    assert_eq!(db.state_of(e.id).await, State::Done);
    assert!(db.store.attempts(999_999).await.unwrap().is_empty());
}
both_backends!(attempts_order, attempts_in_recorded_order);

/// Rows come back typed: the state as `State`, attempt outcomes as `AttemptOutcome`, times as
/// UTC instants from the database's clock; as JSON (`--json`), the same field names as ever,
/// states and outcomes by their snake_case names, times as RFC 3339 UTC.
async fn rows_are_typed_and_serialise_by_name(db: TestDb) {
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let ids = rows_in_states(
        &db,
        &[
            ("w", "waiting", State::RetryWait),
            ("w", "done", State::Done),
        ],
    )
    .await;
    let after = chrono::Utc::now() + chrono::Duration::seconds(5);
    let row = db.store.get(ids["waiting"]).await.unwrap();
    assert_eq!(row.state, State::RetryWait);
    assert!(before < row.created_at && row.created_at <= row.updated_at && row.updated_at < after);
    assert!(row.due_at > after, "waiting an hour: {row:?}");
    assert_eq!(row.done_at, None);
    let done = db.store.find("w", "done").await.unwrap().unwrap();
    assert!(done.done_at.is_some_and(|t| before < t && t < after));

    let json = serde_json::to_value(&row).unwrap();
    let fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "id",
        "workflow",
        "key",
        "state",
        "attempts",
        "due_at",
        "last_error",
        "last_status",
        "created_at",
        "updated_at",
        "done_at",
        "payload",
    ];
    expected.sort();
    let mut fields = fields;
    fields.sort();
    assert_eq!(fields, expected);
    assert_eq!(json["state"], "retry_wait");
    assert_eq!(json["done_at"], serde_json::Value::Null);
    for field in ["due_at", "created_at", "updated_at"] {
        let text = json[field].as_str().unwrap();
        assert!(text.ends_with('Z'), "{field}: {text}");
        let parsed = chrono::DateTime::parse_from_rfc3339(text).unwrap();
        assert_eq!(parsed, json_time(&row, field), "{field}");
    }
    let attempts = db.store.attempts(ids["waiting"]).await.unwrap();
    let json = serde_json::to_value(&attempts).unwrap();
    assert_eq!(json[0]["outcome"], "retry");
    assert!(json[0]["started_at"].as_str().unwrap().ends_with('Z'));
    let fields: Vec<&str> = json[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields.len(), 7, "{fields:?}");
}
both_backends!(typed_rows, rows_are_typed_and_serialise_by_name);

fn json_time(row: &ferry::outbox::OutboxRow, field: &str) -> chrono::DateTime<chrono::Utc> {
    match field {
        "due_at" => row.due_at,
        "created_at" => row.created_at,
        "updated_at" => row.updated_at,
        _ => unreachable!(),
    }
}
