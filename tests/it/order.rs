//! Order and flow: ordered groups (in order, held by a retrying row, blocked by a dead one,
//! released, other groups flowing meanwhile, several relays never delivering two rows of one
//! group at once), and pause/resume honoured by running relays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::outbox::{Claimed, Outcome, PauseKind, State, Store};
use ferry::relay::{Deliver, Delivery, Relay, RelayConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::both_backends;
use crate::helpers::{wait_until, Backend, TestDb};

type Script = dyn Fn(&Claimed, u32) -> Outcome + Send + Sync;

/// Records deliveries in the order they started, and checks that no two rows of a group (the
/// key's prefix before '/') are ever in flight at once.
struct OrderSink {
    log: Mutex<Vec<String>>,
    in_flight: Mutex<HashMap<String, u32>>,
    overlaps: Mutex<Vec<String>>,
    tries: Mutex<HashMap<i64, u32>>,
    script: Box<Script>,
    delay: Duration,
}

impl OrderSink {
    fn new(
        delay: Duration,
        script: impl Fn(&Claimed, u32) -> Outcome + Send + Sync + 'static,
    ) -> Arc<OrderSink> {
        Arc::new(OrderSink {
            log: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashMap::new()),
            overlaps: Mutex::new(Vec::new()),
            tries: Mutex::new(HashMap::new()),
            script: Box::new(script),
            delay,
        })
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Keys delivered successfully, in order, of one group.
    fn done_of(&self, group: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter_map(|l| l.strip_suffix(" ok").map(str::to_string))
            .filter(|k| k.starts_with(&format!("{group}/")))
            .collect()
    }
}

fn group_of(key: &str) -> String {
    key.split('/').next().unwrap().to_string()
}

impl Deliver for OrderSink {
    async fn deliver(&self, row: &Claimed) -> Delivery {
        let g = group_of(&row.key);
        {
            let mut f = self.in_flight.lock().unwrap();
            let n = f.entry(g.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                self.overlaps.lock().unwrap().push(row.key.clone());
            }
        }
        let n = {
            let mut t = self.tries.lock().unwrap();
            let n = t.entry(row.id).or_insert(0);
            *n += 1;
            *n
        };
        tokio::time::sleep(self.delay).await;
        let outcome = (self.script)(row, n);
        self.log.lock().unwrap().push(format!(
            "{} {}",
            row.key,
            if outcome == Outcome::Done {
                "ok"
            } else {
                "fail"
            }
        ));
        *self.in_flight.lock().unwrap().get_mut(&g).unwrap() -= 1;
        Delivery::without_attempt(outcome)
    }
}

fn config() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(100),
        lease_margin: Duration::from_secs(30),
        ..RelayConfig::default()
    }
}

async fn enqueue(store: &Store, workflow: &str, key: &str) -> i64 {
    let group = group_of(key);
    store
        .enqueue_ordered(workflow, key, Some(&group), &json!({ "k": key }))
        .await
        .unwrap()
        .id
}

fn retry() -> Outcome {
    Outcome::Retry {
        after: Duration::from_millis(50),
        reason: "503".into(),
    }
}

/// Wait until a plain condition holds, for at most `deadline`.
async fn wait_for(deadline: Duration, cond: impl Fn() -> bool) -> bool {
    wait_until(deadline, || {
        let v = cond();
        async move { v }
    })
    .await
}

/// Run relays over `stores` until `cond` holds (or 20 s), then stop them.
async fn run_relays<D: Deliver>(stores: &[Store], sink: &Arc<D>, cond: impl Fn() -> bool) -> bool {
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for s in stores {
        let relay = Relay::new(s.clone(), sink.clone(), config());
        let stop = stop.clone();
        handles.push(tokio::spawn(async move { relay.run(stop).await }));
    }
    let ok = wait_for(Duration::from_secs(20), cond).await;
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
    ok
}

/// create → update → delete of one document, the create failing twice: they arrive in order,
/// across workflows (the ordering key is shared), and an unordered row is not held up.
async fn group_arrives_in_order(db: TestDb) {
    let sink = OrderSink::new(Duration::from_millis(5), |row, n| {
        if row.key == "doc-1/create" && n <= 2 {
            retry()
        } else {
            Outcome::Done
        }
    });
    enqueue(&db.store, "create", "doc-1/create").await;
    enqueue(&db.store, "update", "doc-1/update").await;
    enqueue(&db.store, "delete", "doc-1/delete").await;
    db.store
        .enqueue("create", "free/1", &json!({}))
        .await
        .unwrap();
    let ok = run_relays(std::slice::from_ref(&db.store), &sink, || {
        sink.done_of("doc-1").len() == 3
    })
    .await;
    assert!(ok, "not all delivered: {:?}", sink.log());
    assert_eq!(
        sink.done_of("doc-1"),
        vec!["doc-1/create", "doc-1/update", "doc-1/delete"]
    );
    let log = sink.log();
    let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("doc-1/create")).count(),
        3,
        "{log:?}"
    );
    // The unordered row did not wait for the group's retries.
    assert!(pos("free/1 ok") < pos("doc-1/create ok"), "{log:?}");
    assert!(sink.overlaps.lock().unwrap().is_empty());
}
both_backends!(group_arrives_in_order, group_arrives_in_order);

/// A dead head blocks its own group only, ferry_blocked shows it, release unblocks it.
async fn dead_head_blocks_its_group_until_released(db: TestDb) {
    let sink = OrderSink::new(Duration::ZERO, |row, _| {
        if row.key == "a/1" {
            Outcome::Dead {
                reason: "rejected: bad document".into(),
            }
        } else {
            Outcome::Done
        }
    });
    let dead = enqueue(&db.store, "w", "a/1").await;
    enqueue(&db.store, "w", "a/2").await;
    enqueue(&db.store, "w", "a/3").await;
    for i in 1..=3 {
        enqueue(&db.store, "w", &format!("b/{i}")).await;
    }
    let ok = run_relays(std::slice::from_ref(&db.store), &sink, || {
        sink.done_of("b").len() == 3
    })
    .await;
    assert!(ok, "group b did not flow: {:?}", sink.log());
    assert!(sink.done_of("a").is_empty(), "{:?}", sink.log());
    assert_eq!(db.state_of(dead).await, State::Dead);

    let blocked = db.store.blocked().await.unwrap();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].ordering_key, "a");
    assert_eq!(blocked[0].blocking_id, dead);
    assert_eq!(blocked[0].key, "a/1");
    assert_eq!(blocked[0].waiting, 2);
    assert!(blocked[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("bad document"));

    // Only a dead row can be released; the release is recorded and the group flows.
    let live = db.store.find("w", "a/2").await.unwrap().unwrap().id;
    assert!(db.store.release(live, "tester", "no").await.is_err());
    db.store
        .release(dead, "tester", "superseded by a/2")
        .await
        .unwrap();
    assert!(db.store.blocked().await.unwrap().is_empty());
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM ferry_outbox WHERE id = {dead} AND released_by = 'tester' \
             AND release_reason = 'superseded by a/2' AND released_at IS NOT NULL"
        ))
        .await,
        1
    );
    let ok = run_relays(std::slice::from_ref(&db.store), &sink, || {
        sink.done_of("a").len() == 2
    })
    .await;
    assert!(ok, "{:?}", sink.log());
    assert_eq!(sink.done_of("a"), vec!["a/2", "a/3"]);
    assert_eq!(db.state_of(dead).await, State::Dead);
}
both_backends!(
    dead_head_blocks_its_group_until_released,
    dead_head_blocks_its_group_until_released
);

/// Plain SQL is the way in: an INSERT naming ordering_key orders rows like the Rust enqueue.
async fn plain_sql_orders(db: TestDb) {
    db.exec(
        "INSERT INTO ferry_outbox (workflow, key, ordering_key, payload) VALUES \
         ('w', 'p/1', 'p', '{}'), ('w', 'p/2', 'p', '{}')",
    )
    .await
    .unwrap();
    let first = db
        .store
        .claim(10, Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert_eq!(first.len(), 1, "one row of a group per claim");
    assert_eq!(first[0].key, "p/1");
    assert!(db
        .store
        .claim(10, Duration::from_secs(60), &[])
        .await
        .unwrap()
        .is_empty());
}
both_backends!(plain_sql_orders, plain_sql_orders);

/// Three relays (three pools) over 50 groups: every group in order, never two rows of a group
/// in flight at once.
async fn three_relays_keep_groups_in_order(db: TestDb) {
    let stores = vec![
        db.store.clone(),
        db.second_store().await,
        db.second_store().await,
    ];
    let sink = OrderSink::new(Duration::from_millis(2), |_, n| {
        if n == 1 && rand_ish() {
            retry()
        } else {
            Outcome::Done
        }
    });
    const GROUPS: usize = 50;
    const PER: usize = 6;
    let mut tx_rows = Vec::new();
    for i in 0..PER {
        for g in 0..GROUPS {
            tx_rows.push((format!("g{g}/{i}"), format!("g{g}")));
        }
    }
    for (key, group) in &tx_rows {
        db.store
            .enqueue_ordered("w", key, Some(group), &json!({}))
            .await
            .unwrap();
    }
    let ok = run_relays(&stores, &sink, || {
        sink.log().iter().filter(|l| l.ends_with(" ok")).count() == GROUPS * PER
    })
    .await;
    assert!(ok, "not drained");
    assert!(
        sink.overlaps.lock().unwrap().is_empty(),
        "two rows of a group in flight at once: {:?}",
        sink.overlaps.lock().unwrap()
    );
    for g in 0..GROUPS {
        let want: Vec<String> = (0..PER).map(|i| format!("g{g}/{i}")).collect();
        assert_eq!(sink.done_of(&format!("g{g}")), want);
    }
}

fn rand_ish() -> bool {
    uuid::Uuid::new_v4().as_bytes()[0] < 64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_keep_groups_in_order_postgres() {
    three_relays_keep_groups_in_order(TestDb::new(Backend::Postgres).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_keep_groups_in_order_sqlite() {
    three_relays_keep_groups_in_order(TestDb::new(Backend::Sqlite).await).await
}

/// Pause stops deliveries of a running relay within a second; resume restarts them; no
/// attempt is spent on the paused rows.
async fn pause_and_resume(db: TestDb) {
    let sink = OrderSink::new(Duration::ZERO, |_, _| Outcome::Done);
    let stop = CancellationToken::new();
    let relay = Relay::new(db.store.clone(), sink.clone(), config());
    let handle = {
        let stop = stop.clone();
        tokio::spawn(async move { relay.run(stop).await })
    };
    db.store.enqueue("w", "x/0", &json!({})).await.unwrap();
    assert!(wait_for(Duration::from_secs(5), || sink.log().len() == 1).await);

    db.store
        .pause(
            PauseKind::Workflow,
            "w",
            "tester",
            Some("target maintenance"),
        )
        .await
        .unwrap();
    assert_eq!(db.store.paused().await.unwrap().len(), 1);
    // Within a second every relay has seen it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(
            db.store
                .enqueue("w", &format!("x/{i}"), &json!({}))
                .await
                .unwrap()
                .id,
        );
    }
    db.store.enqueue("other", "y/1", &json!({})).await.unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || sink
            .log()
            .contains(&"y/1 ok".to_string()))
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sink.log().len(),
        2,
        "paused rows were delivered: {:?}",
        sink.log()
    );

    assert!(db.store.resume(PauseKind::Workflow, "w").await.unwrap());
    assert!(!db.store.resume(PauseKind::Workflow, "w").await.unwrap());
    assert!(
        wait_for(Duration::from_secs(3), || sink.log().len() == 7).await,
        "{:?}",
        sink.log()
    );
    for id in ids {
        assert_eq!(db.store.get(id).await.unwrap().attempts, 1, "row {id}");
        assert_eq!(db.state_of(id).await, State::Done);
    }
    stop.cancel();
    handle.await.unwrap();
}
both_backends!(pause_and_resume, pause_and_resume);

/// A claimed row whose workflow is paused before it is sent is handed back without an attempt.
async fn paused_after_claim_is_handed_back(db: TestDb) {
    let id = db.store.enqueue("w", "h/1", &json!({})).await.unwrap().id;
    db.store
        .pause(PauseKind::Target, "t", "tester", None)
        .await
        .unwrap();
    // A sink that says "t" has workflow "w".
    struct T(Arc<OrderSink>);
    impl Deliver for T {
        async fn deliver(&self, row: &Claimed) -> Delivery {
            self.0.deliver(row).await
        }
        fn workflows_of_target(&self, target: &str) -> Vec<String> {
            if target == "t" {
                vec!["w".into()]
            } else {
                Vec::new()
            }
        }
    }
    let sink = Arc::new(T(OrderSink::new(Duration::ZERO, |_, _| Outcome::Done)));
    let relay = Relay::new(db.store.clone(), sink.clone(), config());
    let report = relay.tick().await.unwrap();
    assert_eq!(
        report.claimed, 0,
        "a paused target's workflow is not claimed"
    );
    assert_eq!(db.state_of(id).await, State::Pending);
}
both_backends!(
    paused_after_claim_is_handed_back,
    paused_after_claim_is_handed_back
);

/// The shared rate limit: three stores (three relays, as far as the database can tell) taking
/// requests of one target under 20 requests/s stay at or under 20 in any 1 s window; waiting
/// is a plain sleep between two short statements.
async fn rate_limit_is_shared(db: TestDb) {
    use ferry::outbox::RateLimit;
    let limit = RateLimit {
        requests: 20,
        per: Duration::from_secs(1),
    };
    let stores = vec![
        db.store.clone(),
        db.second_store().await,
        db.second_store().await,
    ];
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for s in stores {
        handles.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            while start.elapsed() < Duration::from_millis(2500) {
                match s.rate_take("partner", limit).await.unwrap() {
                    None => sent.push(start.elapsed()),
                    Some(wait) => tokio::time::sleep(wait).await,
                }
            }
            sent
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    let max_window = all
        .iter()
        .map(|t| {
            all.iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(max_window <= 21, "{max_window} requests in one second");
    assert!(all.len() >= 40, "only {} requests in 2.5 s", all.len());
}
both_backends!(rate_limit_is_shared, rate_limit_is_shared);
