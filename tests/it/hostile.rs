//! Targets that answer in ways a well-behaved API would not: redirects (to a landing page, to
//! another origin, in a loop), echoes of the request with its credentials, and documents with many
//! problems at once. Real loopback servers, real databases.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use ferry::outbox::{Claimed, State};
use ferry::relay::{Deliver, Delivery, Relay, RelayConfig};
use ferry::testkit::{Reply, TargetServer};
use serde_json::json;
use tracing::instrument::WithSubscriber;

use crate::both_backends;
use crate::delivery::{fast_registry, http_relay, invoice};
use crate::helpers::{seed_shop, shipped_registry, Backend, TestDb, ONEC_PASSWORD, ONEC_USER};

/// `orders.invoice_exported_to_1c` of one order, as 0/1.
fn flag(id: i64) -> String {
    format!(
        "SELECT CAST(CASE WHEN invoice_exported_to_1c THEN 1 ELSE 0 END AS BIGINT) FROM orders WHERE id = {id}"
    )
}

/// Enqueue order 1001's invoice the way `ferry export-invoice` does; returns the outbox id.
async fn export_order_1001(db: &TestDb, registry: &ferry::workflow::Registry) -> i64 {
    let wf = registry.get("onec_invoice").unwrap();
    match ferry::export::export_invoice(&db.store, wf, "1001")
        .await
        .unwrap()
    {
        ferry::export::ExportReport::Enqueued { outbox_id, .. } => outbox_id,
        other => panic!("{other:?}"),
    }
}

/// A 302 to a landing page that answers 200 must not count as delivered: before, the POST became
/// a GET without a body, the landing page's 200 marked the row done, and `on_done` set
/// `invoice_exported_to_1c` although 1C never got the invoice.
async fn redirect_to_a_landing_page_is_dead_and_not_followed(db: TestDb) {
    seed_shop(&db).await;
    let target = TargetServer::start().await.unwrap();
    let landing = target.url("/landing");
    target.push_replies("/hs/invoices", [Reply::redirect(302, landing.clone())]);
    // Everything else (the landing page) answers 200 {"ok":true}.
    let registry = fast_registry(&target.base_url());
    let id = export_order_1001(&db, &registry).await;
    http_relay(&db, &registry).drain().await.unwrap();

    let row = db.store.get(id).await.unwrap();
    assert_eq!(row.state, State::Dead, "{row:?}");
    assert_eq!(row.attempts, 1);
    assert_eq!(row.last_status, Some(302));
    let reason = row.last_error.unwrap();
    assert!(
        reason.starts_with(&format!("HTTP 302 redirect to {landing} ")),
        "{reason}"
    );
    assert!(reason.contains("redirects are not followed"), "{reason}");
    assert!(target.requests_to("/landing").is_empty());
    assert_eq!(target.request_count(), 1);
    assert_eq!(db.scalar(&flag(1001)).await, 0, "1C never got the invoice");
    let history = db.store.attempts(id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].outcome.as_str(), history[0].http_status),
        ("dead", Some(302))
    );
}
both_backends!(
    redirect_to_landing_page,
    redirect_to_a_landing_page_is_dead_and_not_followed
);

/// A 307/308 to another origin must not re-send the document and its idempotency key there.
#[tokio::test]
async fn redirect_to_another_origin_sends_it_nothing() {
    let db = TestDb::new(Backend::Sqlite).await;
    seed_shop(&db).await;
    let target = TargetServer::start().await.unwrap();
    let elsewhere = TargetServer::start().await.unwrap();
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    for (i, code) in [307u16, 308].into_iter().enumerate() {
        let location = elsewhere.url(&format!("/steal/{i}"));
        target.push_replies("/hs/invoices", [Reply::redirect(code, location.clone())]);
        let id = db
            .store
            .enqueue(
                "onec_invoice",
                &format!("r{i}"),
                &invoice(&format!("INV-R{i}")),
            )
            .await
            .unwrap()
            .id;
        relay.drain().await.unwrap();
        let row = db.store.get(id).await.unwrap();
        assert_eq!(row.state, State::Dead, "{row:?}");
        let reason = row.last_error.unwrap();
        assert!(
            reason.contains(&format!("HTTP {code} redirect to {location}")),
            "{reason}"
        );
    }
    assert_eq!(
        elsewhere.request_count(),
        0,
        "{:?}",
        elsewhere.requests().first().map(|r| r.echo_text())
    );
    assert_eq!(target.request_count(), 2);
}

/// A redirect loop: one request per attempt, never the client's ten follow-ups. Dead at once by
/// default; a workflow that lists the status in `retry_on_status` retries it, still one request
/// per attempt.
#[tokio::test]
async fn redirect_loop_is_one_request_per_attempt() {
    let db = TestDb::new(Backend::Sqlite).await;
    seed_shop(&db).await;
    let target = TargetServer::start().await.unwrap();
    target.default_reply(Reply::redirect(307, target.url("/hs/invoices")));

    let id = db
        .store
        .enqueue("onec_invoice", "loop", &invoice("INV-LOOP"))
        .await
        .unwrap()
        .id;
    http_relay(&db, &fast_registry(&target.base_url()))
        .drain()
        .await
        .unwrap();
    let row = db.store.get(id).await.unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("dead", 1), "{row:?}");
    assert_eq!(target.request_count(), 1);

    // Listed as retryable: four attempts (1 + three waits), four requests.
    let mut registry_edits = vec![(
        "onec_invoice",
        "retry_on_status = [500, 502, 503, 504]",
        "retry_on_status = [307, 500, 502, 503, 504]",
    )];
    registry_edits.push((
        "onec_invoice",
        r#"waits = ["2s", "5s", "10s"]"#,
        r#"waits = ["1ms", "1ms", "1ms"]"#,
    ));
    let registry = shipped_registry(&target.base_url(), &registry_edits);
    let relay = http_relay(&db, &registry);
    target.clear();
    let id = db
        .store
        .enqueue("onec_invoice", "loop-retried", &invoice("INV-LOOP-2"))
        .await
        .unwrap()
        .id;
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while db.state_of(id).await != State::Dead {
        assert!(tokio::time::Instant::now() < end, "did not settle");
        relay.tick().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let row = db.store.get(id).await.unwrap();
    assert_eq!(row.attempts, 4);
    let reason = row.last_error.unwrap();
    assert!(
        reason.contains("attempts exhausted (4 of 4)") && reason.contains("HTTP 307 redirect"),
        "{reason}"
    );
    let history = db.store.attempts(id).await.unwrap();
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|a| a.http_status == Some(307)));
    assert_eq!(target.request_count(), 4, "one request per attempt");
    assert_eq!(target.count_for_key(&id.to_string()), 4);
}

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Keeps the `Debug` of every delivery the inner deliverer produced.
struct Recording<D> {
    inner: D,
    seen: Mutex<Vec<String>>,
}

impl<D: Deliver> Deliver for Recording<D> {
    async fn deliver(&self, row: &Claimed) -> Delivery {
        let d = self.inner.deliver(row).await;
        self.seen.lock().unwrap().push(format!("{d:?}"));
        d
    }
    fn paused(&self) -> Vec<String> {
        self.inner.paused()
    }
    fn min_lease(&self) -> Duration {
        self.inner.min_lease()
    }
}

async fn text_of(db: &TestDb, sql: &str) -> Option<String> {
    match db.backend {
        Backend::Sqlite => sqlx::query_scalar::<_, Option<String>>(sql)
            .fetch_one(db.store.sqlite_pool().unwrap())
            .await
            .unwrap(),
        Backend::Postgres => sqlx::query_scalar::<_, Option<String>>(sql)
            .fetch_one(db.store.pg_pool().unwrap())
            .await
            .unwrap(),
    }
}

/// A target that echoes the request back (headers, body, and, like a chatty error page, the
/// decoded credentials) must not get the target's own Basic credential into attempts, last_error,
/// the on_done `:response`, logs or any Debug output; the excerpt shows `***` in its place.
async fn echoing_target_never_gets_its_credential_stored(db: TestDb) {
    seed_shop(&db).await;
    let target = TargetServer::start().await.unwrap();
    target.required_basic_auth(ONEC_USER, ONEC_PASSWORD);
    target.set_responder(|req, nth| {
        let (user, pass) = req.basic_auth().unwrap_or_default();
        let text = format!(
            "{}\r\n-- you are {user}, password {pass} --\r\n{{\"headers\":{{\"Authorization\":{}}}}}",
            req.echo_text(),
            serde_json::to_string(req.authorization().unwrap_or("")).unwrap()
        );
        let number = req.json()?["invoice_number"].as_str()?.to_string();
        let code = match (number.as_str(), nth) {
            ("INV-ECHO-1", 1) => 503, // retried: the reason is logged and kept in last_error
            ("INV-ECHO-1", _) => 400, // dead with the body in the reason
            _ => 200,                 // done: excerpt and on_done :response
        };
        Some(Reply::body(code, "text/plain", text))
    });
    let registry = fast_registry(&target.base_url());
    let deliverer = Arc::new(Recording {
        inner: ferry::delivery::HttpDeliverer::new(&registry).unwrap(),
        seen: Mutex::new(Vec::new()),
    });
    let relay = Relay::new(db.store.clone(), deliverer.clone(), RelayConfig::default());
    let failing = db
        .store
        .enqueue("onec_invoice", "9", &invoice("INV-ECHO-1"))
        .await
        .unwrap()
        .id;
    let delivered = export_order_1001(&db, &registry).await;

    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    async {
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            relay.tick().await.unwrap();
            let states = (db.state_of(failing).await, db.state_of(delivered).await);
            if states == (State::Dead, State::Done) {
                break;
            }
            assert!(tokio::time::Instant::now() < end, "{states:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    .with_subscriber(subscriber)
    .await;

    // The target did get the credential, and did echo it.
    let sent = target.requests()[0].authorization().unwrap().to_string();
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(format!("{ONEC_USER}:{ONEC_PASSWORD}").as_bytes());
    assert_eq!(sent, format!("Basic {b64}"));

    let mut everything = String::new();
    for id in [failing, delivered] {
        everything += &format!("{:?}\n", db.store.get(id).await.unwrap());
        everything += &format!("{:?}\n", db.store.attempts(id).await.unwrap());
    }
    let onec_response = text_of(&db, "SELECT onec_response FROM orders WHERE id = 1001")
        .await
        .unwrap();
    everything += &onec_response;
    let logged = logs.text();
    everything += &logged;
    let recorded = deliverer.seen.lock().unwrap().join("\n");
    everything += &recorded;
    for secret in [ONEC_PASSWORD, b64.as_str(), sent.as_str()] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
    // Still useful: the excerpt shows what came back, with the secrets masked.
    let dead = db.store.get(failing).await.unwrap();
    let reason = dead.last_error.unwrap();
    assert!(reason.starts_with("HTTP 400"), "{reason}");
    assert!(reason.contains("authorization: Basic ***"), "{reason}");
    let history = db.store.attempts(failing).await.unwrap();
    assert_eq!(history.len(), 2);
    for a in &history {
        let excerpt = a.response_excerpt.as_deref().unwrap();
        assert!(excerpt.contains("authorization: Basic ***"), "{excerpt}");
        assert!(excerpt.contains("password *** --"), "{excerpt}");
        assert!(
            excerpt.contains(r#""Authorization":"Basic ***""#),
            "{excerpt}"
        );
        assert!(excerpt.contains("idempotency-key: "), "{excerpt}");
    }
    assert!(
        onec_response.contains("authorization: Basic ***"),
        "{onec_response}"
    );
    assert!(
        logged.contains("attempt failed; will retry") && logged.contains("Basic ***"),
        "{logged}"
    );
    assert!(recorded.contains("Basic ***"), "{recorded}");
}
both_backends!(
    echoing_target,
    echoing_target_never_gets_its_credential_stored
);

/// Every problem of a document is reported at once, each naming its field, instead of one per
/// round of fixing and resending.
#[tokio::test]
async fn every_validation_problem_is_named_at_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    let mut doc = invoice("INV-3");
    doc["date"] = json!("2026-02-30");
    doc["customer"].as_object_mut().unwrap().remove("phone");
    doc["items"][0]["total"] = json!(244000);
    let id = db
        .store
        .enqueue("onec_invoice", "three", &doc)
        .await
        .unwrap()
        .id;
    relay.drain().await.unwrap();
    let row = db.store.get(id).await.unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("dead", 1));
    let reason = row.last_error.unwrap();
    assert!(
        reason.starts_with("invalid onec_invoice document, 3 problems: "),
        "{reason}"
    );
    for expected in [
        "date: day must be 01..28 for 2026-02",
        "customer.phone: missing required field",
        "items[0].total: expected quantity × price = 244668, got 244000",
    ] {
        assert!(reason.contains(expected), "{expected} not in {reason}");
    }
    assert_eq!(target.request_count(), 0);

    // A thousand bad lines: the reason stays bounded and says how many it left out.
    let mut doc = invoice("INV-MANY");
    let line = json!({ "articul": "A", "name": "a", "quantity": 1, "price": 2, "total": 3 });
    doc["items"] = json!(vec![line; 1000]);
    let id = db
        .store
        .enqueue("onec_invoice", "many", &doc)
        .await
        .unwrap()
        .id;
    relay.drain().await.unwrap();
    let reason = db.store.get(id).await.unwrap().last_error.unwrap();
    assert!(
        reason.starts_with("invalid onec_invoice document, 1001 problems: items[0].total: "),
        "{reason}"
    );
    assert!(reason.len() <= 2048, "{} bytes", reason.len());
    assert!(reason.contains("more"), "{reason}");
}
