//! The operator console: its JSON API on both backends (every endpoint, filters, paging,
//! actions and their audit, the guards), what migration 0004's counters keep, and the page in
//! headless Chromium driven over WebDriver (chromedriver) against a real `ferry run` delivering
//! to a loopback target.
//!
//! Browser tests (they fail, never skip, when Chromium or chromedriver cannot start; `.ci/run`
//! installs both):
//! * `browser_retry_a_dead_row_until_delivered`: load the overview, filter to dead rows, open
//!   one, unlock, retry it and watch it become done;
//! * `browser_bulk_retry_by_filter`: retry every dead row of one workflow, the preview count
//!   checked in the confirmation;
//! * `browser_actions_need_the_token`: an action without the token is refused (read-only
//!   `ferry console`, a locked page, a wrong token).
//!
//! TODO(pause/resume): pausing and resuming a workflow from the console arrives with that
//! feature: pause from the overview, see its rows held ("Held back"), resume, see them
//! delivered. Likewise blocked ordering groups and replay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry::console::ConsoleConfig;
use ferry::ops::{Metrics, ReadyCheck};
use ferry::outbox::browse::{CodePath, RowQuery, TextMatch};
use ferry::outbox::State;
use ferry::service::{Engine, Operator};
use ferry::testkit::{Reply, TargetServer};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::both_backends;
use crate::helpers::{
    pg_url, shipped_registry, wait_until, Backend, ChildEnv, Proc, TestDb, API_PASSWORD, API_USER,
    ONEC_PASSWORD, ONEC_USER,
};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const TOKEN: &str = "test-operator-token-0123456789";

fn workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows")
}

/// A console served in this process on an ephemeral loopback port.
struct Console {
    base: String,
    stop: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(db: &TestDb, token: Option<&str>, hide_payload: bool) -> Console {
    let stop = CancellationToken::new();
    let store = db.store.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let s = store.clone();
        Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
    });
    let router = ferry::console::router(
        Operator::new(db.store.clone(), workflows_dir()),
        ConsoleConfig {
            token: token.map(str::to_string),
            hide_payload,
            loopback_hosts_only: true,
        },
        None,
    );
    let server = ferry::ops::serve_with(
        "127.0.0.1:0",
        Arc::new(Metrics::new()),
        ready,
        stop.clone(),
        router,
    )
    .await
    .expect("bind the console");
    Console {
        base: format!("http://{}", server.addr),
        stop,
        http: reqwest::Client::new(),
    }
}

/// The body as JSON (`null` when it is not).
async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null)
}

impl Console {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, json_of(r).await)
    }

    async fn post(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-Ferry-Operator", "tester")
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, json_of(r).await)
    }

    async fn rows(&self, query: &str) -> Vec<Value> {
        let (status, page) = self.get(&format!("/api/rows?{query}")).await;
        assert_eq!(status, 200, "{query}: {page}");
        page["rows"].as_array().unwrap().clone()
    }
}

/// A partner target that refuses documents whose code starts with `REJECT` the first time it
/// sees them (HTTP 422, the partner's reason) and accepts everything else.
async fn partner_target() -> TargetServer {
    let target = TargetServer::start().await.unwrap();
    target.set_responder(|req, nth| {
        let doc = req.json().unwrap_or(Value::Null);
        let code = doc["billCode"]
            .as_str()
            .or(doc["invoiceCode"].as_str())
            .unwrap_or("");
        if code.starts_with("REJECT") && nth == 1 {
            Some(Reply::json(
                422,
                json!({"error": "mã số thuế không hợp lệ", "code": code}),
            ))
        } else {
            Some(Reply::json(200, json!({"status": "created"})))
        }
    });
    target
}

/// Rows by key: `(id, key)` of each enqueued, in order.
async fn enqueue(db: &TestDb, wf: &str, docs: &[(&str, &str)]) -> Vec<i64> {
    let field = if wf == "partner_hoa_don" {
        "billCode"
    } else {
        "invoiceCode"
    };
    let mut ids = Vec::new();
    for (key, code) in docs {
        let e = db
            .store
            .enqueue(
                wf,
                key,
                &json!({ field: code, "note": "Công ty TNHH Mặt Trời" }),
            )
            .await
            .unwrap();
        ids.push(e.id);
    }
    ids
}

/// hoa_don: 5 delivered (keys order-1..5, codes HD-0001..5) and 2 dead (order-d1/2, codes
/// REJECT-HD-1/2); phieu_nhap: 1 delivered, 1 dead. Returns (delivered hoa_don ids, dead
/// hoa_don ids, dead phieu_nhap id).
async fn seed(db: &TestDb, target: &TargetServer) -> (Vec<i64>, Vec<i64>, i64) {
    let done = enqueue(
        db,
        "partner_hoa_don",
        &[
            ("order-1", "HD-0001"),
            ("order-2", "HD-0002"),
            ("order-3", "HD-0003"),
            ("order-4", "HD-0004"),
            ("order-5", "HD-0005"),
        ],
    )
    .await;
    let dead = enqueue(
        db,
        "partner_hoa_don",
        &[("order-d1", "REJECT-HD-1"), ("order-d2", "REJECT-HD-2")],
    )
    .await;
    enqueue(db, "partner_phieu_nhap", &[("PN-0001", "PN-0001")]).await;
    let pn_dead = enqueue(db, "partner_phieu_nhap", &[("PN-0002", "REJECT-PN-2")]).await[0];
    let registry = shipped_registry(&target.base_url(), &[]);
    let engine = Engine::http(db.store.clone(), &registry, Default::default()).unwrap();
    engine.drain().await.unwrap();
    for id in &dead {
        assert_eq!(db.state_of(*id).await, State::Dead);
    }
    (done, dead, pn_dead)
}

async fn api_endpoints(db: TestDb) {
    let target = partner_target().await;
    let (done, dead, pn_dead) = seed(&db, &target).await;
    let c = serve(&db, Some(TOKEN), false).await;

    // GET /api/session
    let (status, s) = c.get("/api/session").await;
    assert_eq!(status, 200);
    assert_eq!(s["actions_enabled"], true);
    assert_eq!(s["relay"], false);
    assert_eq!(s["hide_payload"], false);
    // POST /api/session/check: 200 with the token, 401 without or with another.
    let (status, ok) = c.post("/api/session/check", json!({}), Some(TOKEN)).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["actor"], "console:tester");
    assert_eq!(c.post("/api/session/check", json!({}), None).await.0, 401);
    let (status, e) = c
        .post(
            "/api/session/check",
            json!({}),
            Some("not-the-token-at-all"),
        )
        .await;
    assert_eq!(status, 401);
    assert!(e["error"].as_str().unwrap().contains("not right"), "{e}");

    // GET /api/overview: live counts, done totals from the trigger, throughput, targets.
    let (status, o) = c.get("/api/overview?minutes=60").await;
    assert_eq!(status, 200, "{o}");
    let wf = |name: &str| {
        o["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["workflow"] == name)
            .unwrap_or_else(|| panic!("{name} in {o}"))
            .clone()
    };
    let hd = wf("partner_hoa_don");
    assert_eq!(hd["dead"], 2, "{hd}");
    assert_eq!(hd["done_total"], 5, "{hd}");
    assert_eq!(hd["done_24h"], 5, "{hd}");
    assert_eq!(hd["dead_24h"], 2, "{hd}");
    assert_eq!(hd["target"], "partner");
    assert_eq!(hd["identify_by"], "billCode");
    assert_eq!(wf("partner_phieu_nhap")["done_total"], 1);
    // A workflow with a file but no rows is listed with zeros.
    assert_eq!(wf("onec_invoice")["done_total"], 0);
    let partner = o["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "partner")
        .unwrap();
    assert_eq!(partner["dead"], 3, "{partner}");
    assert_eq!(
        partner["circuit"],
        Value::Null,
        "no relay, no circuit state"
    );
    assert_eq!(o["totals"]["done_total"], 6);
    let finished: i64 = o["throughput"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["done"].as_i64().unwrap() + p["dead"].as_i64().unwrap())
        .sum();
    assert_eq!(finished, 9, "{}", o["throughput"]);
    assert_eq!(o["holds"]["blocked_groups"], 0);
    assert_eq!(o["holds"]["paused_workflows"], json!([]));
    assert_eq!(o["holds"]["login_held"], Value::Null, "not tracked yet");
    // A pause shows in the held-back rows and in the audit; a resume too.
    let op = Operator::new(db.store.clone(), workflows_dir()).acting_as("cli:tester");
    op.pause(
        ferry::outbox::PauseKind::Workflow,
        "partner_phieu_xuat",
        "tester",
        Some("partner maintenance"),
    )
    .await
    .unwrap();
    let (_, o2) = c.get("/api/overview").await;
    assert_eq!(
        o2["holds"]["paused_workflows"],
        json!(["workflow:partner_phieu_xuat"])
    );
    assert!(op
        .resume(ferry::outbox::PauseKind::Workflow, "partner_phieu_xuat")
        .await
        .unwrap());
    let recorded = op.actions(10).await.unwrap();
    assert_eq!(recorded[1].action, "pause");
    assert_eq!(recorded[1].reason.as_deref(), Some("partner maintenance"));
    assert_eq!(recorded[0].action, "resume");

    // GET /api/rows: filters.
    let dead_rows = c.rows("state=dead").await;
    assert_eq!(dead_rows.len(), 3);
    let ids: Vec<i64> = dead_rows
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![pn_dead, dead[1], dead[0]], "newest first");
    assert_eq!(c.rows("state=dead&workflow=partner_hoa_don").await.len(), 2);
    let by_code = c.rows("q=HD-0003").await;
    assert_eq!(by_code.len(), 1, "{by_code:?}");
    assert_eq!(by_code[0]["id"], done[2]);
    assert_eq!(by_code[0]["code"], "HD-0003");
    assert_eq!(by_code[0]["key"], "order-3");
    assert_eq!(
        c.rows("q=order-3").await[0]["id"],
        done[2],
        "q finds keys too"
    );
    assert_eq!(c.rows("key=order-4").await[0]["id"], done[3]);
    assert_eq!(
        c.rows("key=ORDER-*").await.len(),
        7,
        "key pattern, any case"
    );
    assert_eq!(c.rows("code=HD-000*").await.len(), 5);
    assert_eq!(c.rows("code=REJECT-*&state=dead").await.len(), 3);
    assert!(c.rows("q=nothing-like-this").await.is_empty());
    let hour_ago = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let in_an_hour = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let enc = |s: &str| s.replace('+', "%2B");
    assert_eq!(c.rows(&format!("from={}", enc(&hour_ago))).await.len(), 9);
    assert!(c
        .rows(&format!("from={}", enc(&in_an_hour)))
        .await
        .is_empty());
    assert!(c.rows(&format!("to={}", enc(&hour_ago))).await.is_empty());
    // Paging: every row once, newest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = c
            .get(&format!("/api/rows?limit=2&cursor={}", enc(&cursor)))
            .await;
        assert_eq!(status, 200, "{page}");
        for r in page["rows"].as_array().unwrap() {
            seen.push(r["id"].as_i64().unwrap());
        }
        match page["next"].as_str() {
            Some(n) => cursor = n.to_string(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 9);
    // Mistakes are named.
    let (status, e) = c.get("/api/rows?state=lost").await;
    assert_eq!(status, 400);
    assert!(
        e["error"].as_str().unwrap().contains("unknown state"),
        "{e}"
    );
    let (status, e) = c.get("/api/rows?cursor=abc").await;
    assert_eq!(status, 400, "{e}");
    let (status, e) = c.get("/api/rows?from=yesterday").await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().starts_with("from:"), "{e}");

    // GET /api/rows/{id}: payload, response, attempts.
    let (status, v) = c.get(&format!("/api/rows/{}", dead[0])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["row"]["state"], "dead");
    assert_eq!(v["row"]["payload"]["billCode"], "REJECT-HD-1");
    assert_eq!(v["payload_hidden"], false);
    assert_eq!(v["code"], "REJECT-HD-1");
    assert_eq!(v["target"], "partner");
    assert!(
        v["response"].as_str().unwrap().contains("mã số thuế"),
        "{v}"
    );
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(v["attempts"][0]["http_status"], 422);
    assert_eq!(v["can_retry"], true);
    assert_eq!(v["can_cancel"], false);
    assert!(!v.to_string().contains(API_PASSWORD), "no workflow secret");
    assert_eq!(c.get("/api/rows/99999999").await.0, 404);
    assert_eq!(c.get("/api/rows/abc").await.0, 400);
    let (status, e) = c.get("/api/nothing").await;
    assert_eq!(status, 404);
    assert!(e["error"].is_string());

    // POST /api/rows/{id}/retry: the token, the origin, the host.
    let retry = format!("/api/rows/{}/retry", dead[0]);
    assert_eq!(c.post(&retry, json!({}), None).await.0, 401);
    assert_eq!(
        c.post(&retry, json!({}), Some("wrong-token-0123456789"))
            .await
            .0,
        401
    );
    let cross = c
        .http
        .post(format!("{}{retry}", c.base))
        .bearer_auth(TOKEN)
        .header("Origin", "http://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403);
    let rebound = c
        .http
        .get(format!("{}/api/overview", c.base))
        .header("Host", "evil.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 421);
    assert_eq!(db.state_of(dead[0]).await, State::Dead, "nothing was done");
    let (status, r) = c
        .post(&retry, json!({"reason": "tax code fixed"}), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["state"], "pending");
    assert_eq!(r["changed"], true);
    assert_eq!(db.state_of(dead[0]).await, State::Pending);
    let (_, again) = c.post(&retry, json!({}), Some(TOKEN)).await;
    assert_eq!(again["changed"], false, "already pending");
    let (status, e) = c
        .post(
            &format!("/api/rows/{}/retry", done[0]),
            json!({}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 409, "a done row cannot be retried: {e}");
    let (_, v) = c.get(&format!("/api/rows/{}", dead[0])).await;
    assert_eq!(v["actions"][0]["actor"], "console:tester");
    assert_eq!(v["actions"][0]["action"], "retry");
    assert_eq!(v["actions"][0]["reason"], "tax code fixed");
    assert_eq!(v["can_cancel"], true);

    // POST /api/rows/{id}/cancel: a reason is required.
    let cancel = format!("/api/rows/{}/cancel", dead[0]);
    let (status, e) = c.post(&cancel, json!({}), Some(TOKEN)).await;
    assert_eq!(status, 400, "{e}");
    let (status, r) = c
        .post(&cancel, json!({"reason": "order refunded"}), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{r}");
    let row = db.store.get(dead[0]).await.unwrap();
    assert_eq!(row.state, State::Dead);
    assert_eq!(row.last_error.as_deref(), Some("order refunded"));
    assert_eq!(
        c.post(&cancel, json!({"reason": "x"}), Some(TOKEN)).await.0,
        409
    );

    // POST /api/bulk/preview and /api/bulk: the count confirmed must still hold.
    let filter = json!({"state": "dead", "workflow": "partner_hoa_don"});
    let (status, p) = c
        .post(
            "/api/bulk/preview",
            json!({"action": "retry", "filter": filter}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["matched"], 2);
    assert_eq!(p["more"], false);
    let (status, e) = c
        .post(
            "/api/bulk/preview",
            json!({"action": "retry", "filter": {"workflow": "partner_hoa_don"}}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 400, "a bulk action names its state: {e}");
    let (status, e) = c
        .post(
            "/api/bulk",
            json!({"action": "retry", "filter": filter, "expected": 3}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("preview again"),
        "{e}"
    );
    assert_eq!(
        c.post(
            "/api/bulk",
            json!({"action": "retry", "filter": filter}),
            Some(TOKEN)
        )
        .await
        .0,
        400,
        "the previewed count is required"
    );
    assert_eq!(
        c.post(
            "/api/bulk",
            json!({"action": "retry", "filter": filter, "expected": 2}),
            None
        )
        .await
        .0,
        401
    );
    let (status, r) = c
        .post(
            "/api/bulk",
            json!({"action": "retry", "filter": filter, "expected": 2, "reason": "partner fixed"}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["changed"], 2);
    assert_eq!(r["skipped"], 0);
    for id in &dead {
        assert_eq!(db.state_of(*id).await, State::Pending);
    }
    assert_eq!(
        db.state_of(pn_dead).await,
        State::Dead,
        "outside the filter"
    );
    // Bulk cancel needs a reason; with one, the pending rows become dead with it.
    let pending = json!({"state": "pending", "workflow": "partner_hoa_don"});
    let (status, _) = c
        .post(
            "/api/bulk",
            json!({"action": "cancel", "filter": pending, "expected": 2}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 400);
    let (status, r) = c
        .post(
            "/api/bulk",
            json!({"action": "cancel", "filter": pending, "expected": 2, "reason": "duplicates"}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["changed"], 2);
    assert_eq!(
        db.store.get(dead[1]).await.unwrap().last_error.as_deref(),
        Some("duplicates")
    );

    // GET /api/actions: the audit, newest first.
    let (status, a) = c.get("/api/actions").await;
    assert_eq!(status, 200);
    let a = a.as_array().unwrap();
    let kinds: Vec<&str> = a.iter().map(|x| x["action"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        vec![
            "bulk_cancel",
            "bulk_retry",
            "cancel",
            "retry",
            "resume",
            "pause"
        ]
    );
    assert_eq!(a[1]["filter"], filter);
    assert_eq!(a[1]["matched"], 2);
    assert_eq!(a[1]["changed"], 2);
    assert_eq!(a[1]["reason"], "partner fixed");
    assert!(a[..4].iter().all(|x| x["actor"] == "console:tester"));
    assert_eq!(a[5]["filter"], json!({"workflow": "partner_phieu_xuat"}));
    // The page and its assets.
    let page = c.http.get(&c.base).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page
        .headers()
        .get("content-security-policy")
        .is_some_and(|v| v.to_str().unwrap().contains("default-src 'none'")));
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
    for asset in ["/assets/app.js", "/assets/app.css", "/assets/favicon.svg"] {
        let r = c
            .http
            .get(format!("{}{asset}", c.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{asset}");
    }
    target.shutdown().await;
}
both_backends!(api_endpoints_on_a_delivered_database, api_endpoints);

async fn read_only_and_hidden_payloads(db: TestDb) {
    let target = partner_target().await;
    let (_, dead, _) = seed(&db, &target).await;
    let c = serve(&db, None, true).await;
    let (_, s) = c.get("/api/session").await;
    assert_eq!(s["actions_enabled"], false);
    assert_eq!(s["hide_payload"], true);
    let (status, e) = c
        .post(
            &format!("/api/rows/{}/retry", dead[0]),
            json!({}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 403, "{e}");
    assert!(e["error"].as_str().unwrap().contains("read-only"), "{e}");
    assert_eq!(db.state_of(dead[0]).await, State::Dead);
    let (status, v) = c.get(&format!("/api/rows/{}", dead[0])).await;
    assert_eq!(status, 200);
    assert_eq!(v["row"]["payload"], Value::Null);
    assert_eq!(v["payload_hidden"], true);
    assert!(!v.to_string().contains("Công ty"), "{v}");
    // Reading still works: the overview and pages.
    assert_eq!(c.get("/api/overview").await.0, 200);
    assert_eq!(c.rows("state=dead").await.len(), 3);
    target.shutdown().await;
}
both_backends!(
    read_only_console_and_hidden_payloads,
    read_only_and_hidden_payloads
);

/// A search the indexes cannot answer looks at a bounded window per call and says where to go
/// on: every match is found, once, newest first.
async fn searches_go_window_by_window(db: TestDb) {
    let mut ids = Vec::new();
    for i in 0..10 {
        let code = if i == 1 || i == 8 {
            format!("FIND-{i}")
        } else {
            format!("OTHER-{i}")
        };
        ids.push(enqueue(&db, "partner_hoa_don", &[(&format!("k-{i}"), &code)]).await[0]);
    }
    let codes = vec![CodePath {
        workflows: vec!["partner_hoa_don".into()],
        path: vec!["billCode".into()],
    }];
    // A window is at least a page: pages of 2, windows of 3 rows.
    let mut q = RowQuery {
        code: TextMatch::parse("FIND-*"),
        limit: 2,
        scan_budget: 3,
        ..RowQuery::default()
    };
    let mut found = Vec::new();
    let mut calls = 0;
    loop {
        let page = db.store.browse(&q, &codes).await.unwrap();
        calls += 1;
        found.extend(page.rows.iter().map(|r| r.id));
        if page.rows.is_empty() {
            assert!(page.partial || page.next.is_none());
        }
        match page.next {
            Some(n) => q.before = ferry::outbox::browse::Cursor::decode(&n),
            None => break,
        }
        assert!(calls < 10);
    }
    assert_eq!(found, vec![ids[8], ids[1]]);
    assert!(calls >= 4, "three rows per call over ten rows: {calls}");
    // Indexed filters need no window.
    let page = db
        .store
        .browse(
            &RowQuery {
                key: TextMatch::parse("k-3"),
                limit: 5,
                scan_budget: 3,
                ..RowQuery::default()
            },
            &codes,
        )
        .await
        .unwrap();
    assert_eq!(page.rows.len(), 1);
    assert!(!page.partial && page.next.is_none());
    assert_eq!(page.rows[0].code.as_deref(), Some("OTHER-3"));
    assert_eq!(page.rows[0].state, State::Pending);
}
both_backends!(searches_go_window_by_window, searches_go_window_by_window);

/// Migration 0004's counters: done totals and per-minute counts follow every move into done
/// or dead, whoever makes it (a relay, an operator's SQL under another search_path), and old
/// minutes are dropped. `ferry status` shows the totals.
async fn counters_follow_state_changes(db: TestDb) {
    let target = partner_target().await;
    let (done, dead, _) = seed(&db, &target).await;
    let totals = db
        .scalar(
            "SELECT CAST(sum(done) AS BIGINT) FROM ferry_totals WHERE workflow = 'partner_hoa_don'",
        )
        .await;
    assert_eq!(totals, 5);
    let operator = Operator::new(db.store.clone(), workflows_dir());
    let status = operator.status().await.unwrap();
    let done_line = status
        .iter()
        .find(|l| l.workflow == "partner_hoa_don" && l.state == State::Done)
        .expect("a done line");
    assert_eq!(done_line.rows, 5);
    // An operator's plain SQL (PostgreSQL: from a session whose search_path lacks the schema).
    let id = enqueue(&db, "partner_hoa_don", &[("by-sql", "HD-SQL")]).await[0];
    match db.backend {
        Backend::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
            let schema = db.schema().unwrap();
            sqlx::query(&format!(
                "UPDATE \"{schema}\".ferry_outbox SET state = 'dead', last_error = 'by hand' WHERE id = $1"
            ))
            .bind(id)
            .execute(&mut conn)
            .await
            .expect("an operator's UPDATE works whatever the search_path");
        }
        Backend::Sqlite => {
            db.exec(&format!(
                "UPDATE ferry_outbox SET state = 'dead', last_error = 'by hand' WHERE id = {id}"
            ))
            .await
            .unwrap();
        }
    }
    let dead_minutes = db
        .scalar("SELECT CAST(sum(dead) AS BIGINT) FROM ferry_minutes WHERE workflow = 'partner_hoa_don'")
        .await;
    assert_eq!(dead_minutes, 3);
    // Updates that move nothing into done or dead count nothing.
    db.exec(&format!(
        "UPDATE ferry_outbox SET last_error = 'note' WHERE id = {}",
        dead[0]
    ))
    .await
    .unwrap();
    assert_eq!(
        db.scalar("SELECT CAST(sum(dead) AS BIGINT) FROM ferry_minutes")
            .await,
        4
    );
    // Minutes older than two days go at the next counted change of a new minute.
    let old = match db.backend {
        Backend::Postgres => "now() - interval '3 days'",
        Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:00.000Z', 'now', '-3 days')",
    };
    db.exec(&format!(
        "INSERT INTO ferry_minutes (minute, workflow, slot, done, dead) VALUES ({old}, 'old', 0, 7, 0)"
    ))
    .await
    .unwrap();
    db.exec("DELETE FROM ferry_minutes WHERE workflow <> 'old'")
        .await
        .unwrap();
    let operator = operator.acting_as("cli:test");
    operator.retry(dead[0], None).await.unwrap();
    operator.cancel(dead[0], "counted again").await.unwrap();
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_minutes WHERE workflow = 'old'")
            .await,
        0
    );
    // Totals are all time: pruning done rows does not lower them.
    db.exec(&format!("DELETE FROM ferry_outbox WHERE id = {}", done[0]))
        .await
        .unwrap();
    let total = || async {
        db.scalar(
            "SELECT CAST(sum(done) AS BIGINT) FROM ferry_totals WHERE workflow = 'partner_hoa_don'",
        )
        .await
    };
    assert_eq!(total().await, 5);
    // PostgreSQL: one counter row per database session; the prune job folds those of ended
    // sessions into slot 0, and the total stays what it was.
    if db.backend == Backend::Postgres {
        use sqlx::Connection;
        let id = enqueue(&db, "partner_hoa_don", &[("by-session", "HD-S")]).await[0];
        let mut conn = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
        let schema = db.schema().unwrap();
        for state in ["sending", "done"] {
            sqlx::query(&format!(
                "UPDATE \"{schema}\".ferry_outbox SET state = '{state}' WHERE id = $1"
            ))
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        assert_eq!(total().await, 6);
        let ended = wait_until(Duration::from_secs(10), || async {
            db.scalar(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
            ))
            .await
                == 0
        })
        .await;
        assert!(ended, "session {pid} did not end");
        assert!(db.store.fold_counters().await.unwrap() >= 1);
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM ferry_totals WHERE slot = {pid}"
            ))
            .await,
            0
        );
        assert_eq!(total().await, 6, "folding keeps the total");
    }
    target.shutdown().await;
}
both_backends!(counters_follow_state_changes, counters_follow_state_changes);

// ---------------------------------------------------------------------------------------------
// The `ferry` binary: CLI actions are recorded, `ferry run` serves the console.

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ferry-console-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The environment of a `ferry` child: nothing from the developer's shell but PATH.
struct Env {
    cwd: PathBuf,
    vars: Vec<(String, String)>,
}

impl Env {
    fn for_db(tmp: &TempDir, db: &TestDb) -> Env {
        let mut env = Env {
            cwd: tmp.0.clone(),
            vars: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
        }
        .set("DATABASE_URL", &db.database_url())
        .set("FERRY_WORKFLOWS", &workflows_dir().display().to_string())
        .set("FERRY_LOG_DIR", "off")
        .set("FERRY_POLL_INTERVAL", "100ms")
        .set("USER", "tester");
        if let Some(schema) = db.schema() {
            env = env.set("FERRY_SCHEMA", schema);
        }
        env
    }

    fn targets(self, base_url: &str) -> Env {
        self.set("ONEC_BASE_URL", base_url)
            .set("ONEC_USERNAME", ONEC_USER)
            .set("ONEC_PASSWORD", ONEC_PASSWORD)
            .set("API_BASE_URL", base_url)
            .set("API_USERNAME", API_USER)
            .set("API_PASSWORD", API_PASSWORD)
    }

    fn set(mut self, k: &str, v: &str) -> Env {
        self.vars.retain(|(n, _)| n != k);
        self.vars.push((k.into(), v.into()));
        self
    }
}

impl ChildEnv for Env {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        c.args(args).current_dir(&self.cwd).env_clear();
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }
    fn cwd(&self) -> &Path {
        &self.cwd
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_actions_are_recorded_and_status_shows_done_totals() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = partner_target().await;
    let (_, dead, pn_dead) = seed(&db, &target).await;
    let tmp = TempDir::new();
    let env = Env::for_db(&tmp, &db);
    let out = env
        .command(&["retry", &dead[0].to_string(), "--reason", "fixed by hand"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = env
        .command(&["retry", "--dead", "--workflow", "partner_phieu_nhap"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let actions = Operator::new(db.store.clone(), workflows_dir())
        .actions(10)
        .await
        .unwrap();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(
        actions.iter().all(|a| a.actor == "cli:tester"),
        "{actions:?}"
    );
    assert_eq!(actions[1].action, "retry");
    assert_eq!(actions[1].reason.as_deref(), Some("fixed by hand"));
    assert_eq!(actions[0].action, "bulk_retry");
    assert_eq!(actions[0].changed, 1);
    assert_eq!(db.state_of(pn_dead).await, State::Pending);
    let out = env.command(&["status", "--json"]).output().unwrap();
    let lines: Value = serde_json::from_slice(&out.stdout).unwrap();
    let done = lines
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["workflow"] == "partner_hoa_don" && l["state"] == "done")
        .cloned();
    assert_eq!(done.map(|l| l["rows"].clone()), Some(json!(5)), "{lines}");
    let out = env.command(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rows ever delivered"), "{text}");
    target.shutdown().await;
}

/// `ferry run` serves the console at / of its metrics address, with live circuit states; with
/// FERRY_CONSOLE=off (or `auto` on a non-loopback address) it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_run_serves_the_console_next_to_metrics() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = partner_target().await;
    let tmp = TempDir::new();
    let port = free_port();
    let env = Env::for_db(&tmp, &db)
        .targets(&target.base_url())
        .set("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}"));
    let mut relay = Proc::spawn(&env, &["run"], "relay");
    let base = format!("http://127.0.0.1:{port}");
    let up = wait_until(Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/api/session")).await.is_ok()
    })
    .await;
    assert!(up, "{}", relay.output());
    let s = json_of(reqwest::get(format!("{base}/api/session")).await.unwrap()).await;
    assert_eq!(s["relay"], true);
    let o = json_of(reqwest::get(format!("{base}/api/overview")).await.unwrap()).await;
    let partner = o["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "partner")
        .cloned()
        .unwrap();
    assert_eq!(partner["circuit"], "closed", "{o}");
    assert_eq!(
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .status(),
        200
    );
    relay.stop().await;

    let port = free_port();
    let env = env
        .set("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}"))
        .set("FERRY_CONSOLE", "off");
    let mut relay = Proc::spawn(&env, &["run"], "relay-off");
    let base = format!("http://127.0.0.1:{port}");
    let up = wait_until(Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    assert!(up, "{}", relay.output());
    assert_eq!(
        reqwest::get(format!("{base}/api/session"))
            .await
            .unwrap()
            .status(),
        404
    );
    relay.stop().await;
    target.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The page in headless Chromium.

mod browser {
    use super::*;
    use fantoccini::{Client, ClientBuilder, Locator};

    /// One browser test at a time: two cores shared with the rest of the suite.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// chromedriver and a WebDriver session on headless Chromium with a profile directory of its
    /// own.
    pub struct Browser {
        pub client: Client,
        driver: std::process::Child,
        profile: TempDir,
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            // By process id only. chromedriver first; then any Chromium process it left behind
            // (a test that failed before closing its session), each found by the profile
            // directory no other process names. (Never `kill` with a negative id: procps
            // `kill -KILL -<pgid>` can signal every process.)
            let _ = self.driver.kill();
            let _ = self.driver.wait();
            let marker = self.profile.0.display().to_string();
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return;
            };
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|pid| *pid > 1 && *pid != std::process::id())
                else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&marker) {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &pid.to_string()])
                        .status();
                }
            }
        }
    }

    fn program(var: &str, default: &str) -> String {
        std::env::var(var).unwrap_or_else(|_| default.to_string())
    }

    /// Start chromedriver and Chromium. Panics (the test fails, it is never skipped) when either
    /// cannot start: `.ci/run` installs Debian's chromium and chromium-driver.
    pub async fn start() -> Browser {
        install_browser_once();
        let profile = TempDir::new();
        let port = free_port();
        let chromedriver = program("FERRY_TEST_CHROMEDRIVER", "chromedriver");
        let log = profile.0.join("chromedriver.log");
        let driver = std::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {chromedriver} (install chromium-driver; .ci/run does): {e}")
            });
        let webdriver = format!("http://127.0.0.1:{port}");
        let listening = wait_until(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(listening, "chromedriver did not listen on {port}");
        let chromium = program("FERRY_TEST_CHROMIUM", "/usr/bin/chromium");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&webdriver),
        )
        .await;
        let client = match session {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "headless Chromium ({chromium}) did not start: {e}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
            Err(_) => panic!(
                "headless Chromium ({chromium}) did not start within 60 s\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// Wait until `script` (a JavaScript expression) is truthy; on timeout, fail with what the
    /// page shows.
    pub async fn until(c: &Client, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = c
                .execute(&format!("return !!({script});"), vec![])
                .await
                .unwrap_or(Value::Bool(false));
            if v == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let text = c
                    .execute("return document.body.innerText", vec![])
                    .await
                    .unwrap_or_default();
                panic!("timed out waiting for {what} ({script}); the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text(c: &Client, css: &str) -> String {
        c.find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn click(c: &Client, css: &str) {
        c.find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn type_in(c: &Client, css: &str, text: &str) {
        c.find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Unlock actions through the dialog, as an operator would.
    pub async fn unlock(c: &Client, token: &str, name: &str) {
        click(c, "#lock").await;
        until(
            c,
            "the unlock dialog",
            "document.querySelector('#unlock-dialog').open",
        )
        .await;
        type_in(c, "#unlock-token", token).await;
        type_in(c, "#unlock-name", name).await;
        click(c, "#unlock-submit").await;
    }

    /// `ferry run` on `db` (PostgreSQL), delivering to `target`, serving the console with the
    /// operator token. Returns the child and the console's base URL.
    pub async fn relay(tmp: &TempDir, db: &TestDb, target: &TargetServer) -> (Proc, String) {
        let port = free_port();
        let env = Env::for_db(tmp, db)
            .targets(&target.base_url())
            .set("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}"))
            .set("FERRY_CONSOLE_TOKEN", TOKEN);
        let mut proc = Proc::spawn(&env, &["run"], "relay");
        let base = format!("http://127.0.0.1:{port}");
        let up = wait_until(Duration::from_secs(30), || async {
            reqwest::get(format!("{base}/api/session")).await.is_ok()
        })
        .await;
        if !up {
            proc.assert_running();
            panic!("the console did not come up\n{}", proc.output());
        }
        (proc, base)
    }

    pub async fn settled(db: &TestDb, ids: &[i64]) {
        for id in ids {
            let ok = wait_until(Duration::from_secs(30), || async {
                matches!(db.state_of(*id).await.as_str(), "done" | "dead")
            })
            .await;
            assert!(ok, "row {id} did not settle");
        }
    }

    pub async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().await
    }
}

use browser::{click, text, type_in, unlock, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_retry_a_dead_row_until_delivered() {
    let _one = browser::lock().await;
    let db = TestDb::new(Backend::Postgres).await;
    let target = partner_target().await;
    let tmp = TempDir::new();
    let (mut relay, base) = browser::relay(&tmp, &db, &target).await;
    let ok = enqueue(&db, "partner_hoa_don", &[("order-1", "HD-0001")]).await;
    let rejected = enqueue(&db, "partner_hoa_don", &[("order-2", "REJECT-HD-2")]).await[0];
    browser::settled(&db, &[ok[0], rejected]).await;
    assert_eq!(db.state_of(rejected).await, State::Dead);

    let b = browser::start().await;
    let c = &b.client;
    c.goto(&format!("{base}/")).await.unwrap();
    until(c, "the overview", "document.querySelector('#card-dead')").await;
    assert_eq!(text(c, "#card-dead .value").await, "1");
    assert_eq!(
        text(
            c,
            "#workflows tr[data-workflow=partner_hoa_don] td[data-col=dead]"
        )
        .await,
        "1"
    );
    assert_eq!(text(c, "#mode").await, "served by the relay");

    // Filter to dead rows with the filter bar.
    click(c, "nav a[data-nav=rows]").await;
    until(c, "the rows page", "document.querySelector('#f-state')").await;
    c.find(fantoccini::Locator::Css("#f-state"))
        .await
        .unwrap()
        .select_by_value("dead")
        .await
        .unwrap();
    until(
        c,
        "one dead row",
        "location.hash.includes('state=dead') && document.querySelectorAll('#rows-body tr[data-id]').length === 1",
    )
    .await;
    assert_eq!(
        text(c, "#rows-body tr[data-id] td:nth-child(4)").await,
        "REJECT-HD-2"
    );

    // Open it: the reason, the payload, the response, one attempt.
    click(c, "#rows-body tr[data-id]").await;
    until(
        c,
        "the dead row",
        "document.querySelector('#row-detail[data-state=dead]')",
    )
    .await;
    assert!(text(c, "#row-error").await.contains("422"));
    assert!(text(c, "#payload")
        .await
        .contains("\"billCode\": \"REJECT-HD-2\""));
    assert!(text(c, "#response")
        .await
        .contains("mã số thuế không hợp lệ"));
    assert_eq!(
        c.find_all(fantoccini::Locator::Css("#attempts li"))
            .await
            .unwrap()
            .len(),
        1
    );
    let retry = c
        .find(fantoccini::Locator::Css("#row-retry"))
        .await
        .unwrap();
    assert!(
        !retry.is_enabled().await.unwrap(),
        "locked until the token is given"
    );

    // Unlock, retry with a reason, and watch the page follow it to done.
    unlock(c, TOKEN, "e2e").await;
    until(c, "unlocked", "document.querySelector('#lock.unlocked')").await;
    until(
        c,
        "retry enabled",
        "!document.querySelector('#row-retry').disabled",
    )
    .await;
    click(c, "#row-retry").await;
    until(
        c,
        "the confirmation",
        "document.querySelector('#confirm-dialog').open",
    )
    .await;
    type_in(c, "#confirm-reason", "tax code fixed at the partner").await;
    click(c, "#confirm-ok").await;
    until(
        c,
        "the row delivered",
        "document.querySelector('#row-detail[data-state=done]')",
    )
    .await;
    assert_eq!(db.state_of(rejected).await, State::Done);
    until(
        c,
        "two attempts and the action",
        "document.querySelectorAll('#attempts li').length === 2 && document.querySelector('#row-actions')",
    )
    .await;
    let actions = text(c, "#row-actions").await;
    assert!(actions.contains("console:e2e"), "{actions}");
    assert!(
        actions.contains("tax code fixed at the partner"),
        "{actions}"
    );

    c.clone().close().await.unwrap();
    relay.stop().await;
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_bulk_retry_by_filter() {
    let _one = browser::lock().await;
    let db = TestDb::new(Backend::Postgres).await;
    let target = partner_target().await;
    let tmp = TempDir::new();
    let (mut relay, base) = browser::relay(&tmp, &db, &target).await;
    let nhap = enqueue(
        &db,
        "partner_phieu_nhap",
        &[
            ("PN-1", "REJECT-PN-1"),
            ("PN-2", "REJECT-PN-2"),
            ("PN-3", "REJECT-PN-3"),
            ("PN-4", "PN-4"),
        ],
    )
    .await;
    let other = enqueue(&db, "partner_hoa_don", &[("order-9", "REJECT-HD-9")]).await[0];
    browser::settled(&db, &[&nhap[..], &[other]].concat()).await;

    let b = browser::start().await;
    let c = &b.client;
    c.goto(&format!("{base}/")).await.unwrap();
    until(c, "the overview", "document.querySelector('#card-dead')").await;
    assert_eq!(text(c, "#card-dead .value").await, "4");
    unlock(c, TOKEN, "bulk-tester").await;
    until(c, "unlocked", "document.querySelector('#lock.unlocked')").await;

    // Dead rows of one workflow, through the filter bar.
    c.goto(&format!(
        "{base}/#/rows?state=dead&workflow=partner_phieu_nhap"
    ))
    .await
    .unwrap();
    until(
        c,
        "three dead rows",
        "document.querySelectorAll('#rows-body tr[data-id]').length === 3",
    )
    .await;
    until(
        c,
        "bulk retry enabled",
        "!document.querySelector('#bulk-retry').disabled",
    )
    .await;
    assert!(
        !c.find(fantoccini::Locator::Css("#bulk-cancel"))
            .await
            .unwrap()
            .is_enabled()
            .await
            .unwrap(),
        "dead rows cannot be cancelled"
    );
    click(c, "#bulk-retry").await;
    until(
        c,
        "the preview",
        "document.querySelector('#confirm-dialog').open",
    )
    .await;
    assert_eq!(text(c, "#bulk-count").await, "3", "the preview count");
    assert!(text(c, "#confirm-title").await.contains("Retry 3 rows"));
    type_in(c, "#confirm-reason", "partner fixed the warehouse").await;
    click(c, "#confirm-ok").await;
    until(
        c,
        "the dialog closed",
        "!document.querySelector('#confirm-dialog').open",
    )
    .await;
    for id in &nhap {
        let ok = wait_until(Duration::from_secs(30), || async {
            db.state_of(*id).await == State::Done
        })
        .await;
        assert!(ok, "row {id} delivered after the bulk retry");
    }
    assert_eq!(db.state_of(other).await, State::Dead, "outside the filter");
    let actions = Operator::new(db.store.clone(), workflows_dir())
        .actions(5)
        .await
        .unwrap();
    assert_eq!(actions[0].action, "bulk_retry");
    assert_eq!(actions[0].matched, 3);
    assert_eq!(actions[0].actor, "console:bulk-tester");
    assert_eq!(
        actions[0].reason.as_deref(),
        Some("partner fixed the warehouse")
    );
    // The activity page lists it.
    click(c, "nav a[data-nav=activity]").await;
    until(
        c,
        "the activity",
        "document.querySelector('#activity tbody tr')",
    )
    .await;
    assert!(text(c, "#activity").await.contains("bulk retry"));

    c.clone().close().await.unwrap();
    relay.stop().await;
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_actions_need_the_token() {
    let _one = browser::lock().await;
    let db = TestDb::new(Backend::Postgres).await;
    let target = partner_target().await;
    let tmp = TempDir::new();
    let (mut relay, base) = browser::relay(&tmp, &db, &target).await;
    let dead = enqueue(&db, "partner_hoa_don", &[("order-1", "REJECT-1")]).await[0];
    browser::settled(&db, &[dead]).await;

    let b = browser::start().await;
    let c = &b.client;
    // Locked: the button is off, and the API refuses the action without the token.
    c.goto(&format!("{base}/#/rows/{dead}")).await.unwrap();
    until(
        c,
        "the row",
        "document.querySelector('#row-detail[data-state=dead]')",
    )
    .await;
    assert!(!c
        .find(fantoccini::Locator::Css("#row-retry"))
        .await
        .unwrap()
        .is_enabled()
        .await
        .unwrap());
    let status = c
        .execute(
            &format!(
                "return fetch('/api/rows/{dead}/retry', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: '{{}}'}}).then(r => r.status)"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(401));
    // A wrong token is refused in the dialog and not kept.
    unlock(c, "not-the-operator-token", "mallory").await;
    until(
        c,
        "the refusal",
        "!document.querySelector('#unlock-error').hidden",
    )
    .await;
    assert!(text(c, "#unlock-error").await.contains("not right"));
    assert_eq!(
        c.execute("return sessionStorage.getItem('ferry.token')", vec![])
            .await
            .unwrap(),
        Value::Null
    );
    assert_eq!(db.state_of(dead).await, State::Dead);
    relay.stop().await;

    // `ferry console` without a token: read-only, whatever a request carries.
    let port = free_port();
    let env = Env::for_db(&tmp, &db).set("FERRY_CONSOLE_ADDR", &format!("127.0.0.1:{port}"));
    let mut console = Proc::spawn(&env, &["console"], "console");
    let base = format!("http://127.0.0.1:{port}");
    let up = wait_until(Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/api/session")).await.is_ok()
    })
    .await;
    assert!(up, "{}", console.output());
    c.goto(&format!("{base}/#/rows/{dead}")).await.unwrap();
    until(
        c,
        "the row",
        "document.querySelector('#row-detail[data-state=dead]')",
    )
    .await;
    assert_eq!(text(c, "#lock").await, "Read-only");
    assert_eq!(text(c, "#mode").await, "console only");
    let status = c
        .execute(
            &format!(
                "return fetch('/api/rows/{dead}/retry', {{method: 'POST', headers: {{'Authorization': 'Bearer {TOKEN}', 'Content-Type': 'application/json'}}, body: '{{}}'}}).then(r => r.status)"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    assert_eq!(db.state_of(dead).await, State::Dead);
    c.clone().close().await.unwrap();
    console.sigterm();
    console.wait_exit(Duration::from_secs(20)).await;
    target.shutdown().await;
}

/// On a fresh machine the README's test command must pass on its own: when chromedriver is not
/// on PATH (and no `FERRY_TEST_CHROMEDRIVER` names one), install Debian's chromium and
/// chromium-driver once, as `.ci/run` does. A failed install makes the tests fail when the
/// browser cannot start; they are never skipped.
fn install_browser_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("FERRY_TEST_CHROMEDRIVER").is_some() {
            return;
        }
        let found = std::process::Command::new("sh")
            .args(["-c", "command -v chromedriver && command -v chromium"])
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if found {
            return;
        }
        eprintln!("console tests: chromium/chromedriver missing; installing Debian's packages");
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                "sudo=''; [ \"$(id -u)\" = 0 ] || sudo=sudo; \
                 $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
                 --no-install-recommends chromium chromium-driver",
            ])
            .status();
    });
}
