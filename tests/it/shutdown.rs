//! A relay's exit and what it counts, in process on both backends: the grace period bounds the
//! exit, a request cut off at its end is recorded as an `aborted` attempt that counts, and the
//! metrics count outcomes as the database recorded them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::delivery::HttpDeliverer;
use ferry::ops::{Metrics, MetricsObserver};
use ferry::outbox::{Claimed, Outcome, State, Store};
use ferry::relay::{Deliver, Delivery, Relay, RelayConfig};
use ferry::testkit::{Reply, TargetServer};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::both_backends;
use crate::delivery::fast_registry;
use crate::helpers::{seed_shop, shipped_registry, wait_until, TestDb};

/// A deliverer that never finishes: either its request is out (`sending`) or it is still
/// waiting for a slot (`waiting`).
struct Hang {
    sending: bool,
}

impl Deliver for Hang {
    async fn deliver(&self, _row: &Claimed) -> Delivery {
        if self.sending {
            ferry::relay::mark_sending();
        } else {
            ferry::relay::mark_waiting();
        }
        std::future::pending::<()>().await;
        unreachable!()
    }
}

fn config(grace: Duration) -> RelayConfig {
    RelayConfig {
        shutdown_grace: grace,
        poll_interval: Duration::from_millis(50),
        ..RelayConfig::default()
    }
}

async fn enqueue_three(store: &Store) {
    for k in ["A", "B", "C"] {
        store
            .enqueue("partner_phieu_nhap", k, &json!({ "invoiceCode": k }))
            .await
            .unwrap();
    }
}

/// Run a relay until all three rows are `sending`, then stop it; returns how long the stop took.
async fn run_and_stop<D: Deliver>(db: &TestDb, relay: Relay<D>) -> Duration {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { relay.run(s).await });
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.scalar("SELECT count(*) FROM ferry_outbox WHERE state = 'sending'")
                .await
                == 3
        })
        .await,
        "rows never claimed"
    );
    let t = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the relay did not stop within 10 s")
        .unwrap();
    t.elapsed()
}

/// Two shutdowns cut off requests in flight: each is an `aborted` attempt in the history, the
/// attempts are not refunded (restarts cannot give unlimited attempts), and the rows are due at
/// once.
async fn aborted_requests_are_recorded_and_count(db: TestDb) {
    enqueue_three(&db.store).await;
    for round in 1..=2 {
        let relay = Relay::new(
            db.store.clone(),
            Arc::new(Hang { sending: true }),
            config(Duration::from_secs(2)),
        );
        let took = run_and_stop(&db, relay).await;
        assert!(took < Duration::from_secs(4), "stop took {took:?}");
        assert_eq!(
            db.scalar("SELECT count(*) FROM ferry_attempts WHERE outcome = 'aborted'")
                .await,
            3 * round,
            "round {round}"
        );
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM ferry_outbox WHERE state = 'retry_wait' AND attempts = {round}"
            ))
            .await,
            3,
            "round {round}: attempts counted, rows due again"
        );
    }
    let row = db
        .store
        .find("partner_phieu_nhap", "A")
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.last_error.as_deref().unwrap_or("").contains("aborted"),
        "{row:?}"
    );
}
both_backends!(aborted_requests, aborted_requests_are_recorded_and_count);

/// A delivery cut off before its request left is handed back: no attempt spent, no history.
async fn unsent_requests_are_handed_back(db: TestDb) {
    enqueue_three(&db.store).await;
    let relay = Relay::new(
        db.store.clone(),
        Arc::new(Hang { sending: false }),
        config(Duration::from_millis(400)),
    );
    run_and_stop(&db, relay).await;
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_attempts").await, 0);
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE attempts = 0 AND state <> 'sending'")
            .await,
        3
    );
}
both_backends!(unsent_requests, unsent_requests_are_handed_back);

/// The in-flight gauge follows the rows the relay holds, and drops to 0 when it stops.
async fn in_flight_gauge_is_set(db: TestDb) {
    enqueue_three(&db.store).await;
    let metrics = Arc::new(Metrics::new());
    let relay = Relay::new(
        db.store.clone(),
        Arc::new(Hang { sending: true }),
        config(Duration::from_millis(300)),
    )
    .with_observer(Arc::new(MetricsObserver(metrics.clone())));
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { relay.run(s).await });
    assert!(
        wait_until(Duration::from_secs(10), || async {
            metrics.render().contains("\nferry_in_flight 3\n")
        })
        .await,
        "{}",
        metrics.render()
    );
    stop.cancel();
    task.await.unwrap();
    assert!(metrics.render().contains("\nferry_in_flight 0\n"));
}
both_backends!(in_flight_gauge, in_flight_gauge_is_set);

fn deliveries(m: &Metrics, workflow: &str, outcome: &str) -> f64 {
    m.counter_value(
        "ferry_deliveries_total",
        &[("workflow", workflow), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// A row whose on_done SQL fails is dead in the database, and so in the metrics.
async fn on_done_failure_counts_as_dead(db: TestDb) {
    seed_shop(&db).await;
    let target = TargetServer::start().await.unwrap();
    target.default_reply(Reply::json(200, json!({"status": "created"})));
    let broken = shipped_registry(
        &target.base_url(),
        &[(
            "onec_invoice",
            "SET invoice_exported_to_1c = TRUE",
            "SET no_such_column = TRUE",
        )],
    );
    let metrics = Arc::new(Metrics::new());
    let relay = Relay::new(
        db.store.clone(),
        Arc::new(HttpDeliverer::new(&broken).unwrap()),
        RelayConfig::default(),
    )
    .with_observer(Arc::new(MetricsObserver(metrics.clone())));
    let wf = fast_registry(&target.base_url());
    ferry::export::export_invoice(&db.store, wf.get("onec_invoice").unwrap(), "1001")
        .await
        .unwrap();
    relay.drain().await.unwrap();
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE state = 'dead'")
            .await,
        1
    );
    assert_eq!(deliveries(&metrics, "onec_invoice", "done"), 0.0);
    assert_eq!(deliveries(&metrics, "onec_invoice", "dead"), 1.0);
}
both_backends!(on_done_failure_metrics, on_done_failure_counts_as_dead);

/// A deliverer whose row is reset by an operator while its request is out: its outcome is
/// stale when recorded.
struct ResetDuring {
    store: Store,
}

impl Deliver for ResetDuring {
    async fn deliver(&self, row: &Claimed) -> Delivery {
        self.store.reset(row.id).await.unwrap();
        Delivery::without_attempt(Outcome::Done)
    }
}

/// A completion refused as stale is not a delivery.
async fn stale_completion_is_not_counted_as_done(db: TestDb) {
    db.store
        .enqueue("partner_phieu_nhap", "S", &json!({ "invoiceCode": "S" }))
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let relay = Relay::new(
        db.store.clone(),
        Arc::new(ResetDuring {
            store: db.store.clone(),
        }),
        RelayConfig::default(),
    )
    .with_observer(Arc::new(MetricsObserver(metrics.clone())));
    let report = relay.tick().await.unwrap();
    assert_eq!(report.stale, 1);
    assert_eq!(deliveries(&metrics, "partner_phieu_nhap", "done"), 0.0);
    assert_eq!(db.state_of(1).await, State::Pending);
}
both_backends!(stale_metrics, stale_completion_is_not_counted_as_done);
