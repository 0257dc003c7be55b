//! The real `ferry` binary, driven as an operator would: `ferry demo`, `ferry run` stopped by
//! SIGTERM, the metrics endpoints, every operator command, `export-invoice`, the reconciliation
//! cron with two relays, and configuration mistakes. Each test has a working directory of its
//! own, sets every variable on the child process only (the environment is cleared first), talks
//! only to 127.0.0.1, and waits on conditions with deadlines. Every child is killed if the test
//! fails (see [`Proc`]).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::outbox::{AttemptRecord, Completion, DatabaseUrl, Outcome, State, Store, StoreConfig};
use ferry::testkit::{Reply, TargetServer};
use serde_json::{json, Value};

use crate::helpers::{
    pg_url, seed_shop, wait_until, Backend, Proc, TestDb, API_PASSWORD, API_USER, ONEC_PASSWORD,
    ONEC_USER,
};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn shipped_workflows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows")
}

/// A working directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("ferry-bin-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The environment and working directory of a child. The child's environment starts empty, so
/// nothing from the developer's shell (a DATABASE_URL, an ONEC_BASE_URL) leaks in.
#[derive(Clone)]
struct Env {
    cwd: PathBuf,
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(cwd: &Path) -> Env {
        let mut vars = Vec::new();
        if let Ok(path) = std::env::var("PATH") {
            vars.push(("PATH".to_string(), path));
        }
        Env {
            cwd: cwd.to_path_buf(),
            vars,
        }
    }

    /// Ferry's own settings for a test database: its URL and schema, the shipped workflows, logs
    /// inside the temp directory, metrics on an ephemeral port, a quick fallback poll.
    fn for_db(tmp: &TempDir, db: &TestDb) -> Env {
        let mut env = Env::new(tmp.path())
            .set("DATABASE_URL", &db.database_url())
            .set(
                "FERRY_WORKFLOWS",
                &shipped_workflows().display().to_string(),
            )
            .set("FERRY_LOG_DIR", &tmp.join("logs").display().to_string())
            .set("FERRY_METRICS_ADDR", "127.0.0.1:0")
            .set("FERRY_POLL_INTERVAL", "200ms");
        if let Some(schema) = db.schema() {
            env = env.set("FERRY_SCHEMA", schema);
        }
        env
    }

    /// The variables the shipped workflow files read, pointing both targets at `base_url`.
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
        self.vars.push((k.to_string(), v.to_string()));
        self
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        c.args(args).current_dir(&self.cwd).env_clear();
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }
}

/// What a finished command printed.
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

impl Out {
    fn ok(self) -> Out {
        assert!(self.status.success(), "expected success: {self:?}");
        self
    }

    fn failed(self) -> Out {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "expected a non-zero exit: {self:?}"
        );
        self
    }
}

/// Run a one-shot command to completion (at most 20 s; the child is killed if the test gives up
/// or panics meanwhile).
async fn ferry(env: &Env, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = tokio::process::Command::from(env.command(args));
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn ferry");
    if let Some(text) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ferry {args:?} did not finish within 20 s"))
        .unwrap();
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl crate::helpers::ChildEnv for Env {
    fn command(&self, args: &[&str]) -> std::process::Command {
        Env::command(self, args)
    }
    fn cwd(&self) -> &std::path::Path {
        &self.cwd
    }
}

/// A free port on 127.0.0.1 (bound then released; nothing else on this host races for it in
/// practice).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shipped workflow files copied into `dir`, with textual edits `(file stem, from, to)`.
fn workflows_copy(dir: &Path, edits: &[(&str, &str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(shipped_workflows()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (file, from, to) in edits {
            if *file == stem {
                assert!(text.contains(from), "{stem}: no '{from}' to edit");
                text = text.replace(from, to);
            }
        }
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
    dir.to_path_buf()
}

async fn count_state(db: &TestDb, state: &str) -> i64 {
    db.scalar(&format!(
        "SELECT count(*) FROM ferry_outbox WHERE state = '{state}'"
    ))
    .await
}

// ---------------------------------------------------------------------------------------------
// 1. ferry demo

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_exits_zero_with_every_row_settled() {
    let tmp = TempDir::new();
    let db_path = tmp.join("d.db");
    let env = Env::new(tmp.path());
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        ferry(
            &env,
            &["demo", "--quiet", "--db", db_path.to_str().unwrap()],
            None,
        ),
    )
    .await
    .expect("demo finished")
    .ok();
    assert!(
        out.stdout.contains("All rows settled as designed"),
        "{out:?}"
    );
    let store = Store::open(&StoreConfig::new(DatabaseUrl::Sqlite(
        db_path.display().to_string(),
    )))
    .await
    .unwrap();
    let counts: std::collections::HashMap<State, i64> =
        store.count_by_state().await.unwrap().into_iter().collect();
    let get = |s: State| counts.get(&s).copied().unwrap_or(0);
    assert_eq!(get(State::Pending), 0, "{counts:?}");
    assert_eq!(get(State::Sending), 0, "{counts:?}");
    assert_eq!(get(State::RetryWait), 0, "{counts:?}");
    assert_eq!(get(State::Dead), 2, "{counts:?}");
    assert!(get(State::Done) > 0, "{counts:?}");
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 2. SIGTERM in the middle of a run

async fn sigterm_mid_run(backend: Backend) {
    const ROWS: i64 = 300;
    let db = TestDb::new(backend).await;
    let tmp = TempDir::new();
    let target = TargetServer::start().await.unwrap();
    target.required_basic_auth(API_USER, API_PASSWORD);
    target.default_reply(Reply::ok().delayed(Duration::from_millis(50)));
    for i in 1..=ROWS {
        let code = format!("PN-{i}");
        db.store
            .enqueue("partner_phieu_nhap", &code, &json!({ "invoiceCode": code }))
            .await
            .unwrap();
    }
    let env = Env::for_db(&tmp, &db)
        .targets(&target.base_url())
        .set("FERRY_CONCURRENCY", "16");

    let mut first = Proc::spawn(&env, &["run"], "run-1");
    let got = target.wait_for_requests(30, Duration::from_secs(15)).await;
    first.assert_running();
    assert!(got, "the target saw no 30 requests\n{}", first.output());
    first.stop().await;

    let sending = count_state(&db, "sending").await;
    let done = count_state(&db, "done").await;
    let total = db.scalar("SELECT count(*) FROM ferry_outbox").await;
    assert_eq!(sending, 0, "rows left in 'sending' after SIGTERM");
    assert_eq!(total, ROWS, "rows lost");
    assert!(
        done < ROWS,
        "the relay finished everything before SIGTERM took effect ({done} done)"
    );
    let released_or_new = ROWS - done;
    assert_eq!(
        count_state(&db, "pending").await + count_state(&db, "retry_wait").await,
        released_or_new
    );
    // A row done in the first run must never be sent again.
    let done_ids: Vec<i64> = match db.backend {
        Backend::Sqlite => sqlx::query_scalar("SELECT id FROM ferry_outbox WHERE state = 'done'")
            .fetch_all(db.store.sqlite_pool().unwrap())
            .await
            .unwrap(),
        Backend::Postgres => sqlx::query_scalar("SELECT id FROM ferry_outbox WHERE state = 'done'")
            .fetch_all(db.store.pg_pool().unwrap())
            .await
            .unwrap(),
    };
    let requests_first_run = target.request_count();

    let mut second = Proc::spawn(&env, &["run"], "run-2");
    let all_done = wait_until(Duration::from_secs(20), || async {
        count_state(&db, "done").await == ROWS
    })
    .await;
    second.assert_running();
    assert!(
        all_done,
        "not every row done after the restart ({} done)\n{}",
        count_state(&db, "done").await,
        second.output()
    );
    second.stop().await;

    for id in &done_ids {
        assert_eq!(
            target.count_for_key(&id.to_string()),
            1,
            "row {id}, done in the first run, was delivered again"
        );
    }
    let keys = target.keys_seen();
    assert_eq!(keys.len() as i64, ROWS, "every row reached the target");
    let duplicates = target.duplicate_keys();
    println!(
        "{backend:?}: first run {done} done ({requests_first_run} requests), {released_or_new} \
         left for the restart; {} requests in total; {} rows delivered twice: {duplicates:?}",
        target.request_count(),
        duplicates.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_run_leaves_nothing_stuck_and_loses_nothing() {
    sigterm_mid_run(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_run_leaves_nothing_stuck_and_loses_nothing_sqlite() {
    sigterm_mid_run(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// 3. /metrics, /healthz, /readyz

async fn http_get(url: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_named_series_after_a_known_run() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tmp = TempDir::new();
    let target = TargetServer::start().await.unwrap();
    target.required_basic_auth(API_USER, API_PASSWORD);
    // HD-3's first request gets a 503 asking for 3 s: the row sits in retry_wait across a
    // refresh of the row gauges (every 2 s).
    target.set_responder(|req, nth| {
        let body = req.json()?;
        (body["billCode"] == "HD-3" && nth == 1)
            .then(|| Reply::status(503).with_header("Retry-After", "3"))
    });
    let workflows = workflows_copy(
        &tmp.join("workflows"),
        &[
            (
                "partner_hoa_don",
                r#"give_up_after = "72h""#,
                "max_attempts = 6",
            ),
            (
                "partner_hoa_don",
                r#"initial = "10s""#,
                r#"initial = "100ms""#,
            ),
            ("partner_hoa_don", r#"max = "30m""#, r#"max = "100ms""#),
        ],
    );
    let port = free_port();
    let env = Env::for_db(&tmp, &db)
        .targets(&target.base_url())
        .set("FERRY_WORKFLOWS", &workflows.display().to_string())
        .set("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}"));
    for i in 1..=5 {
        let file = tmp.join(&format!("hd-{i}.json"));
        std::fs::write(&file, json!({"billCode": format!("HD-{i}")}).to_string()).unwrap();
        let out = ferry(
            &env,
            &[
                "enqueue",
                "partner_hoa_don",
                &format!("HD-{i}"),
                file.to_str().unwrap(),
            ],
            None,
        )
        .await
        .ok();
        assert!(out.stdout.contains("enqueued as row"), "{out:?}");
    }

    let mut run = Proc::spawn(&env, &["run"], "run");
    let all_done = wait_until(Duration::from_secs(15), || async {
        count_state(&db, "done").await == 5
    })
    .await;
    run.assert_running();
    assert!(all_done, "not all 5 done\n{}", run.output());

    let base = format!("http://127.0.0.1:{port}");
    let (status, text) = http_get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        r#"ferry_deliveries_total{workflow="partner_hoa_don",outcome="done"} 5"#,
        r#"ferry_attempts_total{workflow="partner_hoa_don",outcome="retry"} 1"#,
        r#"ferry_attempt_status_total{workflow="partner_hoa_don",status="503"} 1"#,
        r#"ferry_retries_total{workflow="partner_hoa_don"} 1"#,
        r#"ferry_attempt_duration_seconds_count{workflow="partner_hoa_don"} 6"#,
        r#"ferry_circuit_state{target="partner"} 0"#,
        "ferry_up 1",
    ] {
        assert!(lines.contains(&expected), "no `{expected}` in\n{text}");
    }
    assert!(
        !text.contains(r#"outcome="dead""#),
        "nothing should be dead:\n{text}"
    );
    // The row gauges saw HD-3 waiting, and drop back to 0 once it is done.
    let last = std::sync::Mutex::new(String::new());
    let settled = wait_until(Duration::from_secs(8), || async {
        let (_, text) = http_get(&format!("{base}/metrics")).await;
        let hit = text
            .lines()
            .any(|l| l == r#"ferry_rows{workflow="partner_hoa_don",state="retry_wait"} 0"#);
        *last.lock().unwrap() = text;
        hit
    })
    .await;
    assert!(
        settled,
        "ferry_rows never showed retry_wait back at 0:\n{}",
        last.lock().unwrap()
    );
    assert_eq!(http_get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(http_get(&format!("{base}/readyz")).await.0, 200);
    run.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. The operator commands

fn record(status: u16, error: Option<&str>) -> AttemptRecord {
    AttemptRecord {
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(3),
        http_status: Some(status),
        error: error.map(str::to_string),
        response_excerpt: Some(format!("{{\"status\":{status}}}")),
    }
}

/// Claim the only due row and record `outcome` for it.
async fn settle_by_hand(store: &Store, id: i64, outcome: Outcome, status: u16) {
    let claimed = store.claim(10, Duration::from_secs(60), &[]).await.unwrap();
    assert_eq!(claimed.len(), 1, "only row {id} should be due");
    assert_eq!(claimed[0].id, id);
    let error = outcome.error().map(str::to_string);
    let c = Completion {
        id,
        token: claimed[0].token,
        key: claimed[0].key.clone(),
        attempt: claimed[0].attempt,
        outcome,
        record: Some(record(status, error.as_deref())),
        on_done: None,
    };
    store.complete(&[c]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_against_a_seeded_database() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tmp = TempDir::new();
    let wf = "partner_hoa_don";
    // One dead, one done, two pending.
    let dead = db
        .store
        .enqueue(wf, "HD-DEAD", &json!({"billCode": "HD-DEAD"}))
        .await
        .unwrap()
        .id;
    settle_by_hand(
        &db.store,
        dead,
        Outcome::Dead {
            reason: "HTTP 422: mã số thuế không hợp lệ".into(),
        },
        422,
    )
    .await;
    let done = db
        .store
        .enqueue(wf, "HD-DONE", &json!({"billCode": "HD-DONE"}))
        .await
        .unwrap()
        .id;
    settle_by_hand(&db.store, done, Outcome::Done, 200).await;
    let pending = db
        .store
        .enqueue(wf, "HD-P1", &json!({"billCode": "HD-P1"}))
        .await
        .unwrap()
        .id;
    let to_cancel = db
        .store
        .enqueue(wf, "HD-P2", &json!({"billCode": "HD-P2"}))
        .await
        .unwrap()
        .id;
    assert_eq!(db.state_of(dead).await, State::Dead);
    assert_eq!(db.state_of(done).await, State::Done);

    // Operator commands need no target variables.
    let env = Env::for_db(&tmp, &db);

    let out = ferry(&env, &["status"], None).await.ok();
    assert!(
        out.stdout.contains("WORKFLOW") && out.stdout.contains(wf),
        "{out:?}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(wf) && l.contains("dead")),
        "{out:?}"
    );

    let out = ferry(&env, &["status", "--json"], None).await.ok();
    let lines: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let rows_in = |state: &str| {
        lines
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["workflow"] == wf && l["state"] == state)
            .map(|l| l["rows"].as_i64().unwrap())
    };
    assert_eq!(rows_in("dead"), Some(1), "{out:?}");
    assert_eq!(rows_in("pending"), Some(2), "{out:?}");

    let out = ferry(
        &env,
        &["list", "--state", "dead", "--workflow", wf, "--json"],
        None,
    )
    .await
    .ok();
    let rows: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{out:?}");
    assert_eq!(rows[0]["id"], dead);
    assert_eq!(rows[0]["key"], "HD-DEAD");
    assert_eq!(rows[0]["state"], "dead");

    let out = ferry(&env, &["show", &dead.to_string()], None).await.ok();
    assert!(
        out.stdout.contains(&format!("outbox row {dead}")),
        "{out:?}"
    );
    assert!(out.stdout.contains("attempt history (1):"), "{out:?}");
    assert!(out.stdout.contains("mã số thuế không hợp lệ"), "{out:?}");
    assert!(out.stdout.contains("422"), "{out:?}");

    // retry <id>: the dead row is pending again, its history kept.
    let out = ferry(&env, &["retry", &dead.to_string()], None).await.ok();
    assert!(out.stdout.contains("reset to pending"), "{out:?}");
    assert_eq!(db.state_of(dead).await, State::Pending);
    assert_eq!(db.store.attempts(dead).await.unwrap().len(), 1);

    // cancel <id>: pending -> dead with the reason; then retry --dead brings it back.
    let out = ferry(
        &env,
        &["cancel", &to_cancel.to_string(), "--reason", "đơn trùng"],
        None,
    )
    .await
    .ok();
    assert!(out.stdout.contains("cancelled"), "{out:?}");
    let row = db.store.get(to_cancel).await.unwrap();
    assert_eq!(row.state, State::Dead);
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("đơn trùng"),
        "{row:?}"
    );
    let out = ferry(&env, &["retry", "--dead"], None).await.ok();
    assert!(out.stdout.contains("1 dead row reset"), "{out:?}");
    assert_eq!(db.state_of(to_cancel).await, State::Pending);
    assert_eq!(db.state_of(pending).await, State::Pending);

    // cancel on a done row: refused, naming the state.
    let out = ferry(&env, &["cancel", &done.to_string()], None)
        .await
        .failed();
    assert!(out.stderr.contains("is done"), "{out:?}");
    assert_eq!(db.state_of(done).await, State::Done);

    let out = ferry(&env, &["show", "999999"], None).await.failed();
    assert!(
        out.stderr.contains("no outbox row with id 999999"),
        "{out:?}"
    );

    let out = ferry(&env, &["list", "--state", "bogus"], None)
        .await
        .failed();
    assert!(out.stderr.contains("bogus"), "{out:?}");

    // enqueue from standard input, twice.
    let out = ferry(
        &env,
        &["enqueue", wf, "HD-1", "-"],
        Some(r#"{"billCode":"HD-1"}"#),
    )
    .await
    .ok();
    assert!(out.stdout.contains("enqueued as row"), "{out:?}");
    let id = db
        .store
        .find(wf, "HD-1")
        .await
        .unwrap()
        .expect("enqueued")
        .id;
    assert!(out.stdout.contains(&id.to_string()), "{out:?}");
    let out = ferry(
        &env,
        &["enqueue", wf, "HD-1", "-"],
        Some(r#"{"billCode":"HD-1"}"#),
    )
    .await
    .ok();
    assert!(out.stdout.contains("already enqueued"), "{out:?}");
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE key = 'HD-1'")
            .await,
        1
    );

    let out = ferry(&env, &["enqueue", wf, "HD-2"], Some("{}"))
        .await
        .failed();
    assert!(out.stderr.contains("billCode"), "{out:?}");
    assert!(db.store.find(wf, "HD-2").await.unwrap().is_none());

    let out = ferry(&env, &["enqueue", "nope", "k"], Some("{}"))
        .await
        .failed();
    assert!(out.stderr.contains("unknown workflow 'nope'"), "{out:?}");

    let out = ferry(&env, &["migrate"], None).await.ok();
    assert!(out.stdout.contains("migrations applied"), "{out:?}");

    // workflows check: with every variable set, then with none.
    let out = ferry(
        &env.clone().targets("http://127.0.0.1:9"),
        &["workflows", "check"],
        None,
    )
    .await
    .ok();
    assert!(out.stdout.contains("4 workflow files"), "{out:?}");
    for name in [
        "onec_invoice",
        "partner_hoa_don",
        "partner_phieu_nhap",
        "partner_phieu_xuat",
    ] {
        assert!(out.stdout.contains(name), "{name}: {out:?}");
    }
    let out = ferry(&Env::for_db(&tmp, &db), &["workflows", "check"], None).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("ONEC_BASE_URL"), "{out:?}");
    assert!(out.stderr.contains("onec_invoice.toml"), "{out:?}");

    let out = ferry(&env, &["--help"], None).await.ok();
    assert!(
        out.stdout.contains("Usage") && out.stdout.contains("DATABASE_URL"),
        "{out:?}"
    );
    let out = ferry(&env, &["retry", "--help"], None).await.ok();
    assert!(out.stdout.contains("--dead"), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// 5. ferry export-invoice

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_invoice_command_edge_cases() {
    let db = TestDb::new(Backend::Sqlite).await;
    seed_shop(&db).await;
    db.exec(
        "INSERT INTO orders (id, customer_id, status, invoice_number, invoice_date, delivery_cost)
              VALUES (1002, 1, 'new', 'INV-2026-002', '2026-02-14', 0)",
    )
    .await
    .unwrap();
    db.exec("INSERT INTO order_items VALUES (1002, 1, 'ФР-00000044', 'Варочная панель', 1, 100)")
        .await
        .unwrap();
    let tmp = TempDir::new();
    let target = TargetServer::start().await.unwrap();
    target.required_basic_auth(ONEC_USER, ONEC_PASSWORD);
    target.default_reply(Reply::json(
        201,
        json!({"status": "created", "document": "СчетНаОплату №1"}),
    ));
    let env = Env::for_db(&tmp, &db).targets(&target.base_url());

    let out = ferry(&env, &["export-invoice", "1002"], None)
        .await
        .failed();
    assert!(
        out.stderr
            .contains("Order status is 'new', expected 'paid'"),
        "{out:?}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_outbox").await, 0);

    let out = ferry(
        &env,
        &["export-invoice", "1001", "--wait", "--timeout", "15s"],
        None,
    )
    .await
    .ok();
    assert!(out.stdout.contains("order 1001: done"), "{out:?}");
    assert!(out.stdout.contains("HTTP 201"), "{out:?}");
    assert_eq!(target.request_count(), 1);
    let sent = target.requests()[0].json().unwrap();
    assert_eq!(sent["invoice_number"], "INV-2026-001");
    assert_eq!(
        db.scalar("SELECT count(*) FROM orders WHERE id = 1001 AND invoice_exported_to_1c")
            .await,
        1
    );

    let out = ferry(&env, &["export-invoice", "1001", "--wait"], None)
        .await
        .ok();
    assert!(out.stdout.contains("already exported"), "{out:?}");
    assert!(out.stdout.contains("INV-2026-001"), "{out:?}");
    assert_eq!(target.request_count(), 1, "exported twice");
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_outbox").await, 1);
}

// ---------------------------------------------------------------------------------------------
// 6. The reconciliation cron with two relays

const RECONCILE: &str = r#"
[reconcile]
schedule = "* * * * * *"
sql = "SELECT CAST(o.id AS TEXT) AS key FROM orders o WHERE o.status = 'paid' AND NOT o.invoice_exported_to_1c AND NOT EXISTS (SELECT 1 FROM ferry_outbox f WHERE f.workflow = 'onec_invoice' AND f.key = CAST(o.id AS TEXT)) LIMIT :limit"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_reconcile_enqueues_missing_intents_once_with_two_relays() {
    let db = TestDb::new(Backend::Postgres).await;
    seed_shop(&db).await; // order 1001, paid
    let mut script = String::new();
    for id in 1002..=1006 {
        script.push_str(&format!(
            "INSERT INTO orders (id, customer_id, status, invoice_number, invoice_date, delivery_cost)
                  VALUES ({id}, 1, 'paid', 'INV-2026-{id}', '2026-02-14', 300);
             INSERT INTO order_items VALUES ({id}, 1, 'ФР-00000044', 'Варочная панель', 1, 1000.25);\n"
        ));
    }
    // Not paid: never enqueued.
    script.push_str(
        "INSERT INTO orders (id, customer_id, status, invoice_number, invoice_date)
              VALUES (1007, 1, 'new', 'INV-2026-1007', '2026-02-14');",
    );
    db.store.execute_script(&script).await.unwrap();
    let paid = db
        .scalar("SELECT count(*) FROM orders WHERE status = 'paid'")
        .await;
    assert_eq!(paid, 6);

    let tmp = TempDir::new();
    let workflows = workflows_copy(&tmp.join("workflows"), &[]);
    let file = workflows.join("onec_invoice.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(RECONCILE);
    std::fs::write(&file, text).unwrap();

    let target = TargetServer::start().await.unwrap();
    target.required_basic_auth(ONEC_USER, ONEC_PASSWORD);
    let env = Env::for_db(&tmp, &db)
        .targets(&target.base_url())
        .set("FERRY_WORKFLOWS", &workflows.display().to_string());
    let out = ferry(&env, &["workflows", "check"], None).await.ok();
    assert!(out.stdout.contains("4 workflow files"), "{out:?}");

    let mut relays = Vec::new();
    for n in 1..=2 {
        let env = env.clone().set(
            "FERRY_LOG_DIR",
            &tmp.join(&format!("logs-{n}")).display().to_string(),
        );
        relays.push(Proc::spawn(&env, &["run"], &format!("relay-{n}")));
    }
    let settled = wait_until(Duration::from_secs(15), || async {
        db.scalar(
            "SELECT count(*) FROM ferry_outbox WHERE workflow = 'onec_invoice' AND state = 'done'",
        )
        .await
            == paid
            && db
                .scalar("SELECT count(*) FROM orders WHERE invoice_exported_to_1c")
                .await
                == paid
    })
    .await;
    for r in &mut relays {
        r.assert_running();
    }
    assert!(
        settled,
        "reconciliation did not export every paid order\n{}\n{}",
        relays[0].output(),
        relays[1].output()
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE workflow = 'onec_invoice'")
            .await,
        paid
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE key = '1007'")
            .await,
        0,
        "an unpaid order was enqueued"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_cron WHERE job = 'reconcile:onec_invoice'")
            .await,
        1
    );
    // Exactly one request per order.
    let requests = target.requests();
    let mut numbers: Vec<String> = requests
        .iter()
        .map(|r| {
            r.json().unwrap()["invoice_number"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    numbers.sort();
    let expected: Vec<String> = std::iter::once("INV-2026-001".to_string())
        .chain((1002..=1006).map(|id| format!("INV-2026-{id}")))
        .collect();
    assert_eq!(numbers, expected, "one request per paid order");
    for r in &mut relays {
        r.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Configuration mistakes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_and_missing_variables_are_named() {
    let tmp = TempDir::new();
    let db_file = tmp.join("never.db");
    let base = Env::new(tmp.path())
        .set("DATABASE_URL", &format!("sqlite:{}", db_file.display()))
        .set(
            "FERRY_WORKFLOWS",
            &shipped_workflows().display().to_string(),
        )
        .set("FERRY_LOG_DIR", &tmp.join("logs").display().to_string())
        .set("FERRY_METRICS_ADDR", "127.0.0.1:0");
    let with_targets = base.clone().targets("http://127.0.0.1:9");

    let out = ferry(
        &with_targets.clone().set("DATABASE_URL", "mysql://x"),
        &["run"],
        None,
    )
    .await
    .failed();
    assert!(out.stderr.contains("DATABASE_URL"), "{out:?}");

    let out = ferry(
        &with_targets.clone().set("FERRY_CONCURRENCY", "lots"),
        &["run"],
        None,
    )
    .await
    .failed();
    assert!(out.stderr.contains("FERRY_CONCURRENCY"), "{out:?}");
    assert!(out.stderr.contains("lots"), "{out:?}");

    // Workflow variables unset: named before anything starts, no database file created.
    let out = ferry(&base, &["run"], None).await.failed();
    assert!(out.stderr.contains("ONEC_BASE_URL"), "{out:?}");
    assert!(!db_file.exists(), "the SQLite file was created: {out:?}");

    let out = ferry(
        &with_targets
            .clone()
            .set("DATABASE_URL", "postgres://ferry:hunter2@127.0.0.1:1/x"),
        &["run"],
        None,
    )
    .await
    .failed();
    assert!(out.stderr.contains("127.0.0.1:1"), "{out:?}");
    assert!(
        !out.stderr.contains("hunter2") && !out.stdout.contains("hunter2"),
        "the password leaked: {out:?}"
    );
    for entry in std::fs::read_dir(tmp.join("logs")).into_iter().flatten() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains("hunter2"),
            "the password leaked into {}",
            path.display()
        );
    }

    let config = tmp.join("f.toml");
    std::fs::write(&config, "concurency = 4\n").unwrap();
    let out = ferry(
        &with_targets,
        &["--config", config.to_str().unwrap(), "run"],
        None,
    )
    .await
    .failed();
    assert!(out.stderr.contains("concurency"), "{out:?}");
    assert!(!db_file.exists(), "the SQLite file was created: {out:?}");
}

// ---------------------------------------------------------------------------------------------
// Bugs found while writing these tests

/// `ferry enqueue` loads the workflows with a lookup that answers "unset" for every variable it
/// does not know, so `${ONEC_INVOICES_ENDPOINT:-/hs/invoices}` in the shipped onec_invoice.toml
/// becomes the path "unset" and the whole command fails, for any workflow, unless
/// ONEC_INVOICES_ENDPOINT happens to be set. `ferry export-invoice` without `--wait` fails the
/// same way. The README's operator commands, on the shipped files, do not work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_needs_no_optional_workflow_variables() {
    let db = TestDb::new(Backend::Sqlite).await;
    seed_shop(&db).await;
    let tmp = TempDir::new();
    let env = Env::for_db(&tmp, &db);
    let out = ferry(
        &env,
        &["enqueue", "partner_hoa_don", "HD-1", "-"],
        Some(r#"{"billCode":"HD-1"}"#),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("enqueued as row"), "{out:?}");
    let out = ferry(&env, &["export-invoice", "1001"], None).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("invoice enqueued"), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// Shutdown while the database is down

/// A TCP proxy on 127.0.0.1 in front of PostgreSQL that can be taken down: it then refuses new
/// connections and cuts the ones it carries, as a database host that went away.
struct DbProxy {
    port: u16,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl DbProxy {
    async fn start(upstream: &str) -> DbProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_string();
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                c.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        DbProxy {
            port,
            accept,
            conns,
        }
    }

    /// Refuse new connections and cut the open ones.
    async fn down(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
        // The listener is closed once the accept task is gone.
        assert!(
            wait_until(Duration::from_secs(5), || async {
                tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_err()
            })
            .await
        );
    }
}

/// With the database refusing connections, SIGTERM still ends the relay within its grace
/// period, and a second signal ends it at once. Nothing held is lost: the rows stay `sending`
/// under their lease (or were handed back) and are delivered later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_while_the_database_is_down() {
    let db = TestDb::new(Backend::Postgres).await;
    let tmp = TempDir::new();
    let target = TargetServer::start().await.unwrap();
    target.required_basic_auth(API_USER, API_PASSWORD);
    target.default_reply(Reply::ok().delayed(Duration::from_millis(300)));
    for i in 1..=200 {
        let code = format!("DB-{i}");
        db.store
            .enqueue("partner_phieu_nhap", &code, &json!({ "invoiceCode": code }))
            .await
            .unwrap();
    }
    let url = pg_url();
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_string();
    // Short requests and leases, so that rows left `sending` are taken up again within seconds.
    let workflows = workflows_copy(
        &tmp.join("workflows"),
        &[
            ("onec_invoice", r#"timeout = "60s""#, r#"timeout = "2s""#),
            (
                "partner_phieu_nhap",
                r#"timeout = "30s""#,
                r#"timeout = "2s""#,
            ),
            (
                "partner_phieu_xuat",
                r#"timeout = "30s""#,
                r#"timeout = "2s""#,
            ),
            ("partner_hoa_don", r#"timeout = "30s""#, r#"timeout = "2s""#),
        ],
    );
    for (grace, signals, bound) in [
        ("3s", 1, Duration::from_secs(6)),
        ("60s", 2, Duration::from_secs(3)),
    ] {
        let proxy = DbProxy::start(&host_port).await;
        let env = Env::for_db(&tmp, &db)
            .targets(&target.base_url())
            .set("FERRY_WORKFLOWS", &workflows.display().to_string())
            .set("FERRY_LEASE_MARGIN", "1s")
            .set(
                "DATABASE_URL",
                &url.replace(&host_port, &format!("127.0.0.1:{}", proxy.port)),
            )
            .set("FERRY_SHUTDOWN_GRACE", grace)
            .set("FERRY_CONCURRENCY", "8");
        let base = target.request_count();
        let mut relay = Proc::spawn(&env, &["run"], "relay");
        assert!(
            target
                .wait_for_requests(base + 10, Duration::from_secs(20))
                .await,
            "no deliveries\n{}",
            relay.output()
        );
        proxy.down().await;
        // The relay notices: claims and recordings fail.
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.assert_running();
        let t = Instant::now();
        relay.sigterm();
        if signals == 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            relay.sigterm();
        }
        let st = relay.wait_exit(bound).await;
        let took = t.elapsed();
        println!("grace {grace}, {signals} signal(s): exited {st:?} after {took:?}");
        if signals == 1 {
            assert_eq!(st.code(), Some(0), "{}", relay.output());
        } else {
            assert_ne!(st.code(), Some(0), "{}", relay.output());
            assert!(
                relay.stderr().contains("again: exiting now"),
                "{}",
                relay.output()
            );
        }
    }
    // Nothing lost: a relay on the real database delivers every row, once the leases of the
    // rows held by the relays that exited expire.
    let env = Env::for_db(&tmp, &db)
        .targets(&target.base_url())
        .set("FERRY_WORKFLOWS", &workflows.display().to_string())
        .set("FERRY_LEASE_MARGIN", "1s");
    let mut relay = Proc::spawn(&env, &["run"], "relay-after");
    let all = wait_until(Duration::from_secs(60), || async {
        count_state(&db, "done").await == 200
    })
    .await;
    if !all {
        let filter = ferry::outbox::ListFilter {
            limit: 1000,
            ..Default::default()
        };
        let left: Vec<String> = db
            .store
            .list(&filter)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.state != State::Done)
            .map(|r| {
                format!(
                    "{} {} #{} due {} {:?}",
                    r.key, r.state, r.attempts, r.due_at, r.last_error
                )
            })
            .collect();
        panic!("not every row delivered: {left:#?}\n{}", relay.output());
    }
    relay.stop().await;
}

/// Readiness reflects a relay that cannot claim: with its table gone the database still answers
/// a ping, but every claim fails, so `/readyz` must say 503 (and 200 again once claims work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reflects_a_relay_that_cannot_claim() {
    let db = TestDb::new(Backend::Postgres).await;
    let tmp = TempDir::new();
    let port = free_port();
    let env = Env::for_db(&tmp, &db)
        .targets("http://127.0.0.1:9")
        .set("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}"))
        .set("FERRY_POLL_INTERVAL", "50ms");
    let mut relay = Proc::spawn(&env, &["run"], "relay");
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let get = |url: String| async move {
        match reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            get(ready.clone()).await.0 == 200
        })
        .await,
        "never ready\n{}",
        relay.output()
    );
    db.exec("ALTER TABLE ferry_outbox RENAME TO ferry_outbox_away")
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            let (status, body) = get(ready.clone()).await;
            status == 503 && body.contains("cannot claim")
        })
        .await,
        "/readyz kept saying ready while claims failed: {:?}\n{}",
        get(ready.clone()).await,
        relay.output()
    );
    db.exec("ALTER TABLE ferry_outbox_away RENAME TO ferry_outbox")
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            get(ready.clone()).await.0 == 200
        })
        .await,
        "not ready again after claims work\n{}",
        relay.output()
    );
    relay.stop().await;
}
