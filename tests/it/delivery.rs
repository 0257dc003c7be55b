//! Delivery to a real HTTP server on 127.0.0.1 playing 1C and the partner API, driven by the
//! shipped workflow files (only retry waits and timeouts shrunk so the tests run in milliseconds).

use std::sync::Arc;
use std::time::Duration;

use ferry::delivery::HttpDeliverer;
use ferry::outbox::{AttemptOutcome, State};
use ferry::relay::{Deliver, Relay, RelayConfig};
use ferry::testkit::{Reply, TargetServer};
use ferry::workflow::Registry;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{
    seed_shop, shipped_registry, Backend, TestDb, API_PASSWORD, API_USER, ONEC_PASSWORD, ONEC_USER,
};

pub fn invoice(number: &str) -> Value {
    json!({
        "invoice_number": number,
        "date": "2026-02-13",
        "customer": { "name": "Иван Иванов", "phone": "+79991234567", "address": "Москва, ул. Ленина, 1" },
        "items": [ { "articul": "ФР-00000044", "name": "Варочная панель", "quantity": 2, "price": 122334, "total": 244668 } ],
        "delivery_cost": 500,
        "total": 245168
    })
}

/// The shipped files with the 1C waits 2 s/5 s/10 s shrunk to 20 ms, the 1C timeout to 300 ms,
/// and the partner schedule to 10 ms steps with 6 attempts.
pub fn fast_registry(target: &str) -> Registry {
    let mut edits = vec![
        (
            "onec_invoice",
            r#"waits = ["2s", "5s", "10s"]"#,
            r#"waits = ["20ms", "20ms", "20ms"]"#,
        ),
        ("onec_invoice", r#"timeout = "60s""#, r#"timeout = "300ms""#),
    ];
    for wf in PARTNER_WORKFLOWS {
        edits.push((wf, r#"give_up_after = "72h""#, "max_attempts = 6"));
        edits.push((wf, r#"initial = "10s""#, r#"initial = "10ms""#));
        edits.push((wf, r#"max = "30m""#, r#"max = "20ms""#));
    }
    shipped_registry(target, &edits)
}

/// The three shipped partner workflows (one target, one schedule).
pub const PARTNER_WORKFLOWS: [&str; 3] = [
    "partner_phieu_nhap",
    "partner_phieu_xuat",
    "partner_hoa_don",
];

pub fn http_relay(db: &TestDb, registry: &Registry) -> Relay<HttpDeliverer> {
    let deliverer = HttpDeliverer::new(registry).expect("deliverer");
    Relay::new(
        db.store.clone(),
        Arc::new(deliverer),
        RelayConfig {
            batch_size: 50,
            concurrency: 16,
            ..RelayConfig::default()
        },
    )
}

/// Tick until the row is done or dead (retry waits are milliseconds here).
pub async fn settle<D: Deliver>(relay: &Relay<D>, db: &TestDb, id: i64) -> String {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        relay.tick().await.unwrap();
        let s = db.state_of(id).await;
        if matches!(s, State::Done | State::Dead) {
            if s == State::Dead {
                eprintln!(
                    "row {id} dead: {:?}",
                    db.store.get(id).await.unwrap().last_error
                );
            }
            return s.to_string();
        }
        assert!(
            tokio::time::Instant::now() < end,
            "row {id} did not settle: {s}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn onec_success_with_cyrillic_basic_auth(db: TestDb) {
    seed_shop(&db).await; // the 1C workflow's on_done SQL updates orders
    let target = TargetServer::start().await.unwrap();
    target.required_basic_auth(ONEC_USER, ONEC_PASSWORD);
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    let doc = invoice("INV-2026-001");
    let e = db
        .store
        .enqueue("onec_invoice", "1001", &doc)
        .await
        .unwrap();
    assert_eq!(settle(&relay, &db, e.id).await, "done");
    let reqs = target.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/hs/invoices")
    );
    assert_eq!(r.json().unwrap(), doc);
    assert_eq!(r.idempotency_key(), Some(e.id.to_string().as_str()));
    assert!(r.header("x-request-id").is_some_and(|v| v.len() >= 32));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    // base64 of the UTF-8 bytes of "user:password", byte for byte.
    let raw = r.basic_auth_bytes().unwrap();
    assert_eq!(raw, format!("{ONEC_USER}:{ONEC_PASSWORD}").as_bytes());
    let history = db.store.attempts(e.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].http_status, Some(200));
    assert_eq!(history[0].outcome, AttemptOutcome::Done);
    assert!(history[0]
        .response_excerpt
        .as_deref()
        .unwrap()
        .contains("ok"));
}
both_backends!(onec_success, onec_success_with_cyrillic_basic_auth);

#[tokio::test]
async fn transient_5xx_then_success_keeps_one_idempotency_key() {
    let db = TestDb::new(Backend::Sqlite).await;
    seed_shop(&db).await; // the 1C workflow's on_done SQL updates orders
    let target = TargetServer::start().await.unwrap();
    target.push_replies(
        "/hs/invoices",
        [Reply::status(502), Reply::status(503), Reply::status(504)],
    );
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    let e = db
        .store
        .enqueue("onec_invoice", "1", &invoice("INV-1"))
        .await
        .unwrap();
    assert_eq!(settle(&relay, &db, e.id).await, "done");
    let reqs = target.requests();
    assert_eq!(reqs.len(), 4);
    let key = e.id.to_string();
    assert!(reqs
        .iter()
        .all(|r| r.idempotency_key() == Some(key.as_str())));
    let request_ids: std::collections::HashSet<_> = reqs
        .iter()
        .map(|r| r.header("x-request-id").unwrap().to_string())
        .collect();
    assert_eq!(request_ids.len(), 4, "a new request id per attempt");
    let statuses: Vec<_> = db
        .store
        .attempts(e.id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.http_status)
        .collect();
    assert_eq!(statuses, vec![Some(502), Some(503), Some(504), Some(200)]);
    // 500 is retryable too.
    target.push_replies("/hs/invoices", [Reply::status(500)]);
    let e2 = db
        .store
        .enqueue("onec_invoice", "2", &invoice("INV-2"))
        .await
        .unwrap();
    assert_eq!(settle(&relay, &db, e2.id).await, "done");
    assert_eq!(db.store.get(e2.id).await.unwrap().attempts, 2);
}

#[tokio::test]
async fn timeout_reset_and_garbage_are_retried() {
    let db = TestDb::new(Backend::Sqlite).await;
    seed_shop(&db).await; // the 1C workflow's on_done SQL updates orders
    let target = TargetServer::start().await.unwrap();
    target.push_replies(
        "/hs/invoices",
        [
            Reply::ok().delayed(Duration::from_secs(2)),
            Reply::Reset,
            Reply::Malformed,
        ],
    );
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    let e = db
        .store
        .enqueue("onec_invoice", "1", &invoice("INV-1"))
        .await
        .unwrap();
    assert_eq!(settle(&relay, &db, e.id).await, "done");
    let history = db.store.attempts(e.id).await.unwrap();
    assert_eq!(history.len(), 4);
    assert!(
        history[0].error.as_deref().unwrap().contains("timed out"),
        "{history:?}"
    );
    assert!(history[1].error.is_some() && history[1].http_status.is_none());
    assert!(history[2].error.is_some() && history[2].http_status.is_none());
    assert_eq!(history[3].http_status, Some(200));
}

#[tokio::test]
async fn client_errors_are_dead_at_once_with_status_and_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    seed_shop(&db).await; // the 1C workflow's on_done SQL updates orders
    let target = TargetServer::start().await.unwrap();
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    for (i, code) in [400u16, 401, 404, 422].into_iter().enumerate() {
        target.push_replies(
            "/hs/invoices",
            [Reply::json(
                code,
                json!({"error": format!("rejected with {code}")}),
            )],
        );
        let e = db
            .store
            .enqueue(
                "onec_invoice",
                &format!("k{i}"),
                &invoice(&format!("INV-{i}")),
            )
            .await
            .unwrap();
        assert_eq!(settle(&relay, &db, e.id).await, "dead");
        let row = db.store.get(e.id).await.unwrap();
        assert_eq!(row.attempts, 1, "{code} is not retried");
        assert_eq!(row.last_status, Some(code as i32));
        let err = row.last_error.unwrap();
        assert!(
            err.contains(&format!("HTTP {code}")) && err.contains("rejected with"),
            "{err}"
        );
    }
    assert_eq!(target.request_count(), 4);
    // Bad credentials end dead with the reason, and the password is nowhere.
    target.required_basic_auth("someone-else", "x");
    let e = db
        .store
        .enqueue("onec_invoice", "auth", &invoice("INV-A"))
        .await
        .unwrap();
    assert_eq!(settle(&relay, &db, e.id).await, "dead");
    let row = db.store.get(e.id).await.unwrap();
    assert!(row.last_error.as_deref().unwrap().contains("401"));
    let all = format!("{row:?}{:?}", db.store.attempts(e.id).await.unwrap());
    assert!(!all.contains(ONEC_PASSWORD));
}

#[tokio::test]
async fn attempts_exhausted_end_dead() {
    let db = TestDb::new(Backend::Sqlite).await;
    seed_shop(&db).await; // the 1C workflow's on_done SQL updates orders
    let target = TargetServer::start().await.unwrap();
    target.default_reply(Reply::status(503));
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    let e = db
        .store
        .enqueue("onec_invoice", "1", &invoice("INV-1"))
        .await
        .unwrap();
    assert_eq!(settle(&relay, &db, e.id).await, "dead");
    let row = db.store.get(e.id).await.unwrap();
    assert_eq!(row.attempts, 4, "first attempt and three retries");
    assert!(row
        .last_error
        .unwrap()
        .contains("attempts exhausted (4 of 4)"));
    assert_eq!(target.request_count(), 4);
    assert_eq!(db.store.attempts(e.id).await.unwrap().len(), 4);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    target.push_replies(
        "/phieunhap",
        [Reply::status(429).with_header("Retry-After", "3")],
    );
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    let e = db
        .store
        .enqueue(
            "partner_phieu_nhap",
            "PN-1",
            &json!({"invoiceCode": "PN-1"}),
        )
        .await
        .unwrap();
    relay.tick().await.unwrap();
    let row = db.store.get(e.id).await.unwrap();
    assert_eq!(row.state, State::RetryWait);
    let wait = (row.due_at - row.updated_at).num_milliseconds();
    assert!(
        wait >= 2900,
        "waited only {wait} ms instead of the 3 s asked (policy wait is 10 ms)"
    );
    // Not due before then.
    assert_eq!(relay.tick().await.unwrap().claimed, 0);
}

#[tokio::test]
async fn invalid_documents_die_without_a_request() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    let mut bad = invoice("INV-BAD");
    bad["items"][0]["total"] = json!(244000);
    let a = db.store.enqueue("onec_invoice", "bad", &bad).await.unwrap();
    let b = db
        .store
        .enqueue("partner_hoa_don", "HD", &json!({"items": []}))
        .await
        .unwrap();
    let c = db
        .store
        .enqueue("no_such_workflow", "x", &json!({}))
        .await
        .unwrap();
    relay.drain().await.unwrap();
    for id in [a.id, b.id, c.id] {
        assert_eq!(db.state_of(id).await, State::Dead);
    }
    let e = db.store.get(a.id).await.unwrap().last_error.unwrap();
    assert!(e.contains("items[0].total") && e.contains("244668"), "{e}");
    let e = db.store.get(b.id).await.unwrap().last_error.unwrap();
    assert!(e.contains("billCode"), "{e}");
    let e = db.store.get(c.id).await.unwrap().last_error.unwrap();
    assert!(e.contains("unknown workflow 'no_such_workflow'"), "{e}");
    assert_eq!(target.request_count(), 0);
}

#[tokio::test]
async fn partner_documents_reach_their_endpoints() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    target.required_basic_auth(API_USER, API_PASSWORD);
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    let docs = [
        (
            "partner_phieu_nhap",
            "/phieunhap",
            json!({"invoiceCode": "PN-001", "lines": [{"sku": "A", "qty": 3}]}),
        ),
        (
            "partner_phieu_xuat",
            "/phieuxuat",
            json!({"invoiceCode": "PX-001"}),
        ),
        (
            "partner_hoa_don",
            "/hoadon",
            json!({"billCode": "HD-001", "total": 150000}),
        ),
    ];
    for (wf, _, doc) in &docs {
        db.store.enqueue(wf, "1", doc).await.unwrap();
    }
    let r = relay.drain().await.unwrap();
    assert_eq!(r.done, 3);
    for (_, path, doc) in &docs {
        let reqs = target.requests_to(path);
        assert_eq!(reqs.len(), 1, "{path}");
        assert_eq!(&reqs[0].json().unwrap(), doc);
        assert_eq!(
            reqs[0].basic_auth().unwrap(),
            (API_USER.to_string(), API_PASSWORD.to_string())
        );
    }
}

const CIRCUIT_AFTER: &str = r#"password = "${API_PASSWORD}" }"#;
const CIRCUIT_EDIT: &str = r#"password = "${API_PASSWORD}" }
[target.circuit]
failures = 3
open_for = "100ms"
max_open_for = "200ms""#;

/// While the partner is down the circuit opens: rows wait without spending attempts, one probe at
/// a time tests the target, and when it is back every row is delivered; with a 6-attempt policy
/// and no breaker these rows would all have died during the outage.
#[tokio::test]
async fn circuit_breaker_keeps_attempts_through_an_outage() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    target.set_up(false);
    let registry = shipped_registry(
        &target.base_url(),
        &[
            (
                "partner_phieu_nhap",
                r#"give_up_after = "72h""#,
                "max_attempts = 6",
            ),
            (
                "partner_phieu_nhap",
                r#"initial = "10s""#,
                r#"initial = "5ms""#,
            ),
            ("partner_phieu_nhap", r#"max = "30m""#, r#"max = "5ms""#),
            (
                "partner_phieu_nhap",
                "max_concurrency = 8",
                "max_concurrency = 1",
            ),
            ("partner_phieu_nhap", CIRCUIT_AFTER, CIRCUIT_EDIT),
            (
                "partner_phieu_xuat",
                "max_concurrency = 8",
                "max_concurrency = 1",
            ),
            ("partner_phieu_xuat", CIRCUIT_AFTER, CIRCUIT_EDIT),
            (
                "partner_hoa_don",
                "max_concurrency = 8",
                "max_concurrency = 1",
            ),
            ("partner_hoa_don", CIRCUIT_AFTER, CIRCUIT_EDIT),
        ],
    );
    let relay = http_relay(&db, &registry);
    let mut ids = Vec::new();
    for i in 0..20 {
        let code = format!("PN-{i}");
        ids.push(
            db.store
                .enqueue("partner_phieu_nhap", &code, &json!({"invoiceCode": code}))
                .await
                .unwrap()
                .id,
        );
    }
    // Two seconds of outage: ten or more open periods.
    let outage_end = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < outage_end {
        relay.tick().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let spent = db
        .scalar("SELECT COALESCE(sum(attempts), 0) FROM ferry_outbox")
        .await;
    let requests = target.request_count() as i64;
    assert_eq!(
        spent, requests,
        "every request spent exactly one attempt, nothing else did"
    );
    assert!(
        requests < 40,
        "the breaker let {requests} requests through a 2 s outage"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE state = 'dead'")
            .await,
        0
    );
    // The partner is back.
    target.set_up(true);
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while db
        .scalar("SELECT count(*) FROM ferry_outbox WHERE state = 'done'")
        .await
        < 20
    {
        assert!(
            tokio::time::Instant::now() < end,
            "{:?}",
            db.store.count_by_state().await.unwrap()
        );
        relay.tick().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The order's flag is set by the workflow's on_done SQL in the transaction that marks the row
/// done, and only on success.
async fn flag_set_only_on_success_in_the_same_transaction(db: TestDb) {
    seed_shop(&db).await;
    db.store
        .execute_script(
            "INSERT INTO orders (id, customer_id, status, invoice_number, invoice_date, delivery_cost) VALUES (1002, 1, 'paid', 'INV-2026-002', '2026-02-14', 0);
             INSERT INTO order_items VALUES (1002, 1, 'A-1', 'Чайник', 1, 100);",
        )
        .await
        .unwrap();
    let target = TargetServer::start().await.unwrap();
    target.set_responder(|req, _| {
        let n = req.json()?["invoice_number"].as_str()?.to_string();
        (n == "INV-2026-002").then(|| Reply::json(400, json!({"error": "контрагент не найден"})))
    });
    target.default_reply(Reply::json(
        200,
        json!({"status": "created", "ref": "СЧ-000123"}),
    ));
    let relay = http_relay(&db, &fast_registry(&target.base_url()));
    let wf = fast_registry(&target.base_url());
    let wf = wf.get("onec_invoice").unwrap();
    for order in ["1001", "1002"] {
        ferry::export::export_invoice(&db.store, wf, order)
            .await
            .unwrap();
    }
    relay.drain().await.unwrap();
    let flag = |id: i64| {
        format!("SELECT CAST(CASE WHEN invoice_exported_to_1c THEN 1 ELSE 0 END AS BIGINT) FROM orders WHERE id = {id}")
    };
    assert_eq!(db.scalar(&flag(1001)).await, 1);
    assert_eq!(
        db.scalar(&flag(1002)).await,
        0,
        "a failed export leaves the flag false"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM orders WHERE id = 1001 AND onec_response LIKE '%СЧ-000123%' AND invoice_exported_at IS NOT NULL").await, 1);
    // The body sent was built from the order tables: 2 × 122334 + 1 × 15000.50 + 500.
    let sent = target
        .requests()
        .into_iter()
        .find(|r| r.json().unwrap()["invoice_number"] == "INV-2026-001")
        .unwrap();
    let body = sent.json().unwrap();
    assert_eq!(body["items"][1]["total"], json!(15000.5));
    assert_eq!(body["total"], json!(260168.5));
    assert_eq!(body["customer"]["name"], "Иван Иванов");

    // Same transaction: when the on_done SQL fails, the row is not done (it is dead with the
    // reason, delivered but unflagged) and the flag stays false.
    db.store.execute_script("INSERT INTO orders (id, customer_id, status, invoice_number, invoice_date, delivery_cost) VALUES (1003, 1, 'paid', 'INV-2026-003', '2026-02-15', 0); INSERT INTO order_items VALUES (1003, 1, 'A-1', 'Чайник', 1, 100);").await.unwrap();
    let broken = shipped_registry(
        &target.base_url(),
        &[(
            "onec_invoice",
            "SET invoice_exported_to_1c = TRUE",
            "SET no_such_column = TRUE",
        )],
    );
    let relay2 = http_relay(&db, &broken);
    let e = ferry::export::export_invoice(&db.store, wf, "1003")
        .await
        .unwrap();
    let ferry::export::ExportReport::Enqueued { outbox_id, .. } = e else {
        panic!("{e:?}")
    };
    relay2.drain().await.unwrap();
    let row = db.store.get(outbox_id).await.unwrap();
    assert_eq!(row.state, State::Dead);
    assert!(row.last_error.unwrap().contains("on_done SQL failed"));
    assert_eq!(db.scalar(&flag(1003)).await, 0);
}
both_backends!(onec_flag, flag_set_only_on_success_in_the_same_transaction);

/// `export-invoice` edge cases from the directive, with their exact messages.
async fn export_invoice_edge_cases(db: TestDb) {
    seed_shop(&db).await;
    db.store
        .execute_script("INSERT INTO orders (id, customer_id, status, invoice_number, invoice_date) VALUES (2001, 1, 'new', 'INV-2026-101', '2026-03-01')")
        .await
        .unwrap();
    let target = TargetServer::start().await.unwrap();
    target.default_reply(Reply::json(200, json!({"ref": "СЧ-1"})));
    let registry = fast_registry(&target.base_url());
    let wf = registry.get("onec_invoice").unwrap();
    let err = ferry::export::export_invoice(&db.store, wf, "2001")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Order status is 'new', expected 'paid'");
    let err = ferry::export::export_invoice(&db.store, wf, "9999")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "order 9999 not found");
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_outbox").await, 0);
    // Exporting twice before delivery gives one row.
    let a = ferry::export::export_invoice(&db.store, wf, "1001")
        .await
        .unwrap();
    let b = ferry::export::export_invoice(&db.store, wf, "1001")
        .await
        .unwrap();
    let (
        ferry::export::ExportReport::Enqueued {
            outbox_id: ia,
            created: ca,
            ..
        },
        ferry::export::ExportReport::Enqueued {
            outbox_id: ib,
            created: cb,
            ..
        },
    ) = (a, b)
    else {
        panic!()
    };
    assert_eq!((ia, ca, cb), (ib, true, false));
    http_relay(&db, &registry).drain().await.unwrap();
    match ferry::export::export_invoice(&db.store, wf, "1001")
        .await
        .unwrap()
    {
        ferry::export::ExportReport::AlreadyExported {
            invoice_number,
            exported_at,
            onec_response,
            ..
        } => {
            assert_eq!(invoice_number, "INV-2026-001");
            assert!(exported_at.is_some());
            assert!(onec_response.unwrap().contains("СЧ-1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(target.request_count(), 1);
}
both_backends!(export_invoice_cases, export_invoice_edge_cases);

/// The per-target cap holds: with `max_concurrency = 2` and answers taking 150 ms, no third
/// request reaches the target while two are open, even though the relay has 16 slots.
#[tokio::test]
async fn per_target_concurrency_is_capped() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    target.default_reply(Reply::ok().delayed(Duration::from_millis(150)));
    let mut edits = Vec::new();
    for wf in [
        "partner_phieu_nhap",
        "partner_phieu_xuat",
        "partner_hoa_don",
    ] {
        edits.push((wf, "max_concurrency = 8", "max_concurrency = 2"));
    }
    let relay = http_relay(&db, &shipped_registry(&target.base_url(), &edits));
    for i in 0..8 {
        let code = format!("HD-{i}");
        db.store
            .enqueue("partner_hoa_don", &code, &json!({ "billCode": code }))
            .await
            .unwrap();
    }
    let r = relay.drain().await.unwrap();
    assert_eq!(r.done, 8);
    let mut arrivals: Vec<_> = target.requests().iter().map(|r| r.at).collect();
    arrivals.sort();
    for w in arrivals.windows(3) {
        let gap = w[2] - w[0];
        assert!(
            gap >= Duration::from_millis(140),
            "three requests within {gap:?}: the cap of 2 was exceeded"
        );
    }
}
