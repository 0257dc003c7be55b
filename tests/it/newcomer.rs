//! A newcomer's first hour, tried as a new user would: the demo's closing hints pasted into a
//! shell, the README's SQL run through the relay, a shop that only uses 1C, and the operator
//! commands (`list`, `show`, `retry`, `export-invoice`) on rows that really went through the
//! relay. Real binary, real databases, loopback targets; children get an empty environment plus
//! what each test sets, and waits are on conditions with deadlines.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ferry::delivery::HttpDeliverer;
use ferry::outbox::{DatabaseUrl, ListFilter, State, Store, StoreConfig};
use ferry::relay::{Relay, RelayConfig};
use ferry::testkit::{Reply, TargetServer};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{
    seed_shop, shipped_registry, wait_until, Backend, ChildEnv, Proc, TestDb, API_PASSWORD,
    API_USER, ONEC_PASSWORD, ONEC_USER,
};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn manifest(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A working directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ferry-newcomer-{}", uuid::Uuid::new_v4().simple()));
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

/// A child's environment: only PATH from ours, plus what the test sets.
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

    /// A test database, the shipped workflows, logs in the temp dir, metrics on a free port.
    fn for_db(tmp: &TempDir, db: &TestDb) -> Env {
        let mut env = Env::new(tmp.path())
            .set("DATABASE_URL", &db.database_url())
            .set(
                "FERRY_WORKFLOWS",
                &manifest("workflows").display().to_string(),
            )
            .set("FERRY_LOG_DIR", &tmp.join("logs").display().to_string())
            .set("FERRY_METRICS_ADDR", "127.0.0.1:0")
            .set("FERRY_POLL_INTERVAL", "200ms");
        if let Some(schema) = db.schema() {
            env = env.set("FERRY_SCHEMA", schema);
        }
        env
    }

    fn onec(self, base_url: &str) -> Env {
        self.set("ONEC_BASE_URL", base_url)
            .set("ONEC_USERNAME", ONEC_USER)
            .set("ONEC_PASSWORD", ONEC_PASSWORD)
    }

    fn partner(self, base_url: &str) -> Env {
        self.set("API_BASE_URL", base_url)
            .set("API_USERNAME", API_USER)
            .set("API_PASSWORD", API_PASSWORD)
    }

    fn set(mut self, k: &str, v: &str) -> Env {
        self.vars.retain(|(n, _)| n != k);
        self.vars.push((k.to_string(), v.to_string()));
        self
    }

    fn program(&self, program: &str, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        c.args(args).current_dir(&self.cwd).env_clear();
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }
}

impl ChildEnv for Env {
    fn command(&self, args: &[&str]) -> std::process::Command {
        self.program(BIN, args)
    }
    fn cwd(&self) -> &Path {
        &self.cwd
    }
}

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

    fn code(self, code: i32) -> Out {
        assert_eq!(self.status.code(), Some(code), "{self:?}");
        self
    }
}

/// Run a command to completion (at most `limit`; killed if the test gives up).
async fn run_to_end(cmd: std::process::Command, limit: Duration) -> Out {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("the command finished in time")
        .unwrap();
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ferry(env: &Env, args: &[&str]) -> Out {
    run_to_end(env.command(args), Duration::from_secs(30)).await
}

/// `line` as a user pasting it into bash in the child's working directory would run it.
async fn bash(env: &Env, line: &str) -> Out {
    run_to_end(env.program("bash", &["-c", line]), Duration::from_secs(30)).await
}

/// The SQL of the README's "From SQL" example: every ```sql block that enqueues.
fn readme_sql() -> String {
    let readme = std::fs::read_to_string(manifest("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```sql\n") {
        let body = &rest[start + 7..];
        let end = body.find("```").expect("closed block");
        if body[..end].contains("INSERT INTO ferry_outbox") {
            blocks.push(body[..end].to_string());
        }
        rest = &body[end + 3..];
    }
    assert!(!blocks.is_empty(), "no enqueueing SQL in the README");
    let sql = blocks.join("\n");
    assert!(
        !sql.contains("..."),
        "an incomplete document in the README: {sql}"
    );
    sql
}

fn shipped_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(manifest("workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn row_id(db: &TestDb, workflow: &str, key: &str) -> i64 {
    db.store
        .find(workflow, key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no row {workflow}/{key}"))
        .id
}

// ---------------------------------------------------------------------------------------------
// 1 and 2. The demo's closing hints run as printed

/// The commands under "Look deeper", as printed (four spaces in).
fn hint_commands(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("Look deeper"))
        .filter_map(|l| l.strip_prefix("    "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_hints_run_as_printed_in_a_shell() {
    let tmp = TempDir::new();
    let env = Env::new(tmp.path());
    let out = run_to_end(
        env.command(&["demo", "--quiet", "--db", "demo.db"]),
        Duration::from_secs(90),
    )
    .await
    .ok();
    let hints = hint_commands(&out.stdout);
    assert_eq!(hints.len(), 6, "{hints:#?}\n{out:?}");
    let store = Store::open(&StoreConfig::new(DatabaseUrl::Sqlite(
        tmp.join("demo.db").display().to_string(),
    )))
    .await
    .unwrap();
    let pool = store.sqlite_pool().unwrap().clone();

    // The sqlite3 lines: bash parses each (sqlite3 replaced by a function that prints its
    // arguments), and the SQL it hands over runs on the demo database.
    let sqlite3_lines: Vec<&String> = hints.iter().filter(|h| h.starts_with("sqlite3 ")).collect();
    assert_eq!(sqlite3_lines.len(), 3, "{hints:#?}");
    assert!(
        sqlite3_lines.iter().any(|l| l.contains("'done'")),
        "{hints:#?}"
    );
    for line in &sqlite3_lines {
        let parsed = bash(
            &env,
            &format!("sqlite3() {{ printf '%s\\0' \"$@\"; }}\n{line}"),
        )
        .await
        .ok();
        let argv: Vec<&str> = parsed
            .stdout
            .split('\0')
            .filter(|a| !a.is_empty())
            .collect();
        assert_eq!(argv.len(), 2, "{line}: {argv:?}");
        assert_eq!(argv[0], "demo.db", "{line}");
        let rows = sqlx::query(argv[1])
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{line}: the SQL bash passes fails: {e}"));
        assert!(!rows.is_empty(), "{line}: no rows");
    }
    // And with the real sqlite3 when it is installed (the quoting is tested above either way).
    let has_sqlite3 = bash(&env, "command -v sqlite3").await.status.success();
    if has_sqlite3 {
        for line in &sqlite3_lines {
            let out = bash(&env, line).await.ok();
            assert!(!out.stdout.trim().is_empty(), "{line}: {out:?}");
        }
    } else {
        eprintln!(
            "sqlite3 is not installed: the hints' quoting was checked through bash and sqlx only"
        );
    }

    // ferry show / retry: runnable as printed (the binary is named as it can be typed here).
    let show = hints.iter().find(|h| h.contains(" show ")).unwrap();
    let id: i64 = show.rsplit(' ').next().unwrap().parse().unwrap();
    let row = store.get(id).await.unwrap();
    assert_eq!(row.state, State::Dead, "the hint shows a dead row");
    let out = bash(&env, show).await.ok();
    assert!(out.stdout.contains(&format!("outbox row {id}")), "{out:?}");
    // The demo's first dead row is the document without its code: refused before sending.
    assert_eq!(row.key, "PN-BROKEN");
    assert!(out.stdout.contains("no request was sent"), "{out:?}");
    let retry = hints.iter().find(|h| h.contains(" retry ")).unwrap();
    assert!(retry.ends_with(&format!(" retry {id}")), "{retry}");
    let out = bash(&env, retry).await.ok();
    assert!(out.stdout.contains("reset to pending"), "{out:?}");
    assert_eq!(store.get(id).await.unwrap().state, State::Pending);

    // The log file, by its real (dated) name.
    let less = hints.iter().find(|h| h.starts_with("less ")).unwrap();
    let log = less.strip_prefix("less ").unwrap();
    let date = log
        .strip_prefix("logs/ferry-demo.log.")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        date.len() == 10 && date.chars().filter(|c| *c == '-').count() == 2,
        "{log}"
    );
    let text = std::fs::read_to_string(tmp.join(log)).unwrap_or_else(|e| panic!("{log}: {e}"));
    assert!(
        text.contains("onec_invoice"),
        "{log} holds no delivery lines"
    );
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 3. The README's SQL: one complete, valid document per shipped workflow, delivered

async fn readme_sql_is_delivered(db: TestDb) {
    db.store
        .execute_script(include_str!("../../examples/shop/schema.sql"))
        .await
        .unwrap();
    db.store.execute_script(&readme_sql()).await.unwrap();
    let target = TargetServer::start().await.unwrap();
    target.default_reply(Reply::json(201, json!({"status": "created"})));
    let registry = shipped_registry(&target.base_url(), &[]);
    let rows = db
        .store
        .list(&ListFilter {
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    let mut workflows: Vec<String> = rows.iter().map(|r| r.workflow.clone()).collect();
    workflows.sort();
    assert_eq!(
        workflows,
        shipped_names(),
        "one example per shipped workflow"
    );
    for r in &rows {
        let payload: Value = serde_json::from_str(&r.payload).unwrap();
        registry
            .get(&r.workflow)
            .unwrap()
            .document
            .validate(&payload)
            .unwrap_or_else(|e| panic!("README example for {}: {e}", r.workflow));
    }
    let relay = Relay::new(
        db.store.clone(),
        Arc::new(HttpDeliverer::new(&registry).unwrap()),
        RelayConfig::default(),
    );
    relay.drain().await.unwrap();
    for r in &rows {
        let now = db.store.get(r.id).await.unwrap();
        assert_eq!(now.state, State::Done, "{now:?}");
    }
    assert_eq!(target.request_count(), rows.len() as u64);
    target.shutdown().await;
}

both_backends!(
    readme_sql_documents_are_valid_and_delivered,
    readme_sql_is_delivered
);

// ---------------------------------------------------------------------------------------------
// 4. A shop that only uses 1C

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_with_only_1c_runs_and_partner_rows_wait_until_configured() {
    let db = TestDb::new(Backend::Sqlite).await;
    db.store
        .execute_script(include_str!("../../examples/shop/schema.sql"))
        .await
        .unwrap();
    db.store.execute_script(&readme_sql()).await.unwrap();
    let tmp = TempDir::new();
    let onec = TargetServer::start().await.unwrap();
    onec.required_basic_auth(ONEC_USER, ONEC_PASSWORD);
    onec.default_reply(Reply::json(201, json!({"status": "created"})));
    let env = Env::for_db(&tmp, &db).onec(&onec.base_url());

    let out = ferry(&env, &["workflows", "check"]).await.ok();
    assert!(
        out.stdout.contains("1 of 4 workflow files") && out.stdout.contains("onec_invoice"),
        "{out:?}"
    );
    assert!(out.stderr.starts_with("warning:"), "{out:?}");
    for name in [
        "partner_hoa_don",
        "partner_phieu_nhap",
        "partner_phieu_xuat",
    ] {
        assert!(
            out.stderr.lines().any(|l| l.contains(name)
                && l.contains("API_BASE_URL, API_USERNAME, API_PASSWORD not set")),
            "{name}: {out:?}"
        );
    }
    let out = ferry(&env, &["workflows", "check", "--strict"])
        .await
        .code(1);
    assert!(out.stderr.contains("--strict"), "{out:?}");
    let out = ferry(&env, &["--json", "workflows", "check"]).await.ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(v["ok"], true);
    assert_eq!(v["configured"].as_array().unwrap().len(), 1);
    assert_eq!(v["unconfigured"].as_array().unwrap().len(), 3);
    assert_eq!(v["unconfigured"][0]["missing"][0], "API_BASE_URL");

    // `run` delivers the invoice; the partner rows are never claimed. Every row was due before
    // the relay started and one claim takes up to 256, so the claim that took the invoice would
    // have taken them too.
    let invoice = row_id(&db, "onec_invoice", "42").await;
    let mut relay = Proc::spawn(&env, &["run"], "relay-1c");
    let delivered = wait_until(Duration::from_secs(20), || async {
        db.state_of(invoice).await == State::Done
    })
    .await;
    relay.assert_running();
    assert!(
        delivered,
        "the invoice was not delivered\n{}",
        relay.output()
    );
    for (wf, key) in [
        ("partner_phieu_nhap", "PN-0001"),
        ("partner_phieu_xuat", "PX-0001"),
        ("partner_hoa_don", "HD-0001"),
    ] {
        let row = db.store.get(row_id(&db, wf, key).await).await.unwrap();
        assert_eq!(
            (row.state.as_str(), row.attempts),
            ("pending", 0),
            "{row:?}"
        );
    }
    relay.stop().await;
    let log = relay.stderr();
    assert!(
        log.contains("workflow not configured") && log.contains("API_BASE_URL"),
        "{log}"
    );

    // Once the partner's variables are set, a restarted relay delivers them.
    let partner = TargetServer::start().await.unwrap();
    partner.required_basic_auth(API_USER, API_PASSWORD);
    let env = env.partner(&partner.base_url());
    ferry(&env, &["workflows", "check"]).await.ok();
    let mut relay = Proc::spawn(&env, &["run"], "relay-all");
    let delivered = wait_until(Duration::from_secs(20), || async {
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE state = 'done'")
            .await
            == 4
    })
    .await;
    relay.assert_running();
    assert!(delivered, "partner rows not delivered\n{}", relay.output());
    relay.stop().await;
    assert_eq!(partner.request_count(), 3);
    assert_eq!(onec.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_check_tells_unconfigured_from_broken() {
    let tmp = TempDir::new();
    let db_file = tmp.join("never.db");
    let base = Env::new(tmp.path())
        .set("DATABASE_URL", &format!("sqlite:{}", db_file.display()))
        .set(
            "FERRY_WORKFLOWS",
            &manifest("workflows").display().to_string(),
        )
        .set("FERRY_LOG_DIR", &tmp.join("logs").display().to_string())
        .set("FERRY_METRICS_ADDR", "127.0.0.1:0");

    // Nothing configured: check and run fail, naming every workflow's variables.
    let out = ferry(&base, &["workflows", "check"]).await.code(1);
    assert!(
        out.stderr.contains("ONEC_BASE_URL") && out.stderr.contains("API_BASE_URL"),
        "{out:?}"
    );
    assert!(out.stderr.contains("no workflow"), "{out:?}");
    let out = ferry(&base, &["run"]).await.code(1);
    assert!(
        out.stderr.contains("no workflow") && out.stderr.contains("ONEC_BASE_URL"),
        "{out:?}"
    );
    assert!(!db_file.exists(), "run created the database: {out:?}");

    // A real mistake in an unconfigured file is an error, with its file and field.
    let dir = tmp.join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    for name in shipped_names() {
        let mut text =
            std::fs::read_to_string(manifest(&format!("workflows/{name}.toml"))).unwrap();
        if name == "partner_hoa_don" {
            text = text.replace(r#"timeout = "30s""#, r#"timeout = "30 parsecs""#);
        }
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
    let env = base
        .clone()
        .set("FERRY_WORKFLOWS", &dir.display().to_string())
        .onec("http://127.0.0.1:9");
    let out = ferry(&env, &["workflows", "check"]).await.code(1);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("partner_hoa_don.toml: request.timeout")),
        "{out:?}"
    );
    // The two valid partner files are still reported as merely unconfigured.
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("partner_phieu_nhap") && l.contains("not set (read by")),
        "{out:?}"
    );
    assert!(out.stderr.contains("problems in workflow files"), "{out:?}");
    let out = ferry(&env, &["run"]).await.code(1);
    assert!(out.stderr.contains("request.timeout"), "{out:?}");
    assert!(!db_file.exists(), "run created the database: {out:?}");
}

// ---------------------------------------------------------------------------------------------
// 5. list / show / retry / export-invoice on rows that went through the relay

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_tell_what_happened() {
    // No shop tables: the invoice reaches 1C but its on_done SQL fails (the README's trap).
    let db = TestDb::new(Backend::Sqlite).await;
    db.store.execute_script(&readme_sql()).await.unwrap();
    db.exec(r#"INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('partner_phieu_nhap', 'PN-BROKEN', '{"warehouse": "Kho Hà Nội"}')"#)
        .await
        .unwrap();
    let target = TargetServer::start().await.unwrap();
    target.default_reply(Reply::json(201, json!({"status": "created"})));
    target.push_replies(
        "/hoadon",
        [Reply::json(
            422,
            json!({"error": "mã số thuế không hợp lệ"}),
        )],
    );
    let registry = shipped_registry(&target.base_url(), &[]);
    let relay = Relay::new(
        db.store.clone(),
        Arc::new(HttpDeliverer::new(&registry).unwrap()),
        RelayConfig::default(),
    );
    relay.drain().await.unwrap();
    let invoice = row_id(&db, "onec_invoice", "42").await;
    let broken = row_id(&db, "partner_phieu_nhap", "PN-BROKEN").await;
    let bill = row_id(&db, "partner_hoa_don", "HD-0001").await;
    for id in [invoice, broken, bill] {
        assert_eq!(db.state_of(id).await, State::Dead);
    }
    let tmp = TempDir::new();
    let env = Env::for_db(&tmp, &db);

    // list: finished rows show no due/lease time.
    let out = ferry(&env, &["list"]).await.ok();
    let mut finished = 0;
    for line in out.stdout.lines().skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells[3] == "done" || cells[3] == "dead" {
            assert_eq!(cells[5], "-", "{line}\n{out:?}");
            finished += 1;
        }
    }
    assert_eq!(finished, 5, "{out:?}");
    // ...and keeps the end of a long reason.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{invoice} ")) && l.ends_with("no such table: orders")),
        "{out:?}"
    );

    // show, document refused by validation: no request, and it says so.
    let out = ferry(&env, &["show", &broken.to_string()]).await.ok();
    assert!(
        out.stdout
            .contains("attempts    1 in the current budget (no request was sent)"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("attempt history (0): no request has been sent for this row"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("invoiceCode: missing required field"),
        "{out:?}"
    );

    // show, the on_done failure: the whole reason, its end included.
    let out = ferry(&env, &["show", &invoice.to_string()]).await.ok();
    assert!(!out.stdout.contains("bytes cut"), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("1 ") && l.ends_with("no such table: orders")),
        "{out:?}"
    );

    // retry, deliver again: the history tells the two budgets apart.
    ferry(&env, &["retry", &bill.to_string()]).await.ok();
    relay.drain().await.unwrap();
    assert_eq!(db.state_of(bill).await, State::Done);
    let out = ferry(&env, &["show", &bill.to_string()]).await.ok();
    assert!(
        out.stdout.contains("attempt history (2): 2 budgets"),
        "{out:?}"
    );
    let history: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("#"))
        .skip(1)
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(history, [["1", "1", "1"], ["2", "2", "1"]], "{out:?}");

    // Pluralisation.
    let out = ferry(
        &env,
        &["retry", "--dead", "--workflow", "partner_phieu_nhap"],
    )
    .await
    .ok();
    assert!(
        out.stdout.contains("1 dead row reset to pending"),
        "{out:?}"
    );
    let out = ferry(&env, &["retry", "--dead"]).await.ok();
    assert!(
        out.stdout.contains("1 dead row reset to pending"),
        "{out:?}"
    );
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_invoice_on_a_dead_intent_says_why_and_how_to_retry() {
    let db = TestDb::new(Backend::Sqlite).await;
    seed_shop(&db).await; // order 1001, paid
    let tmp = TempDir::new();
    let onec = TargetServer::start().await.unwrap();
    onec.required_basic_auth(ONEC_USER, ONEC_PASSWORD);
    onec.push_replies(
        "/hs/invoices",
        [Reply::json(
            400,
            json!({"error": "Контрагент не найден: ИНН не заполнен"}),
        )],
    );
    onec.default_reply(Reply::json(201, json!({"status": "created"})));

    // Only the partner's variables: --wait cannot deliver an invoice here, and adds nothing.
    let partner_only = Env::for_db(&tmp, &db).partner("http://127.0.0.1:9");
    let out = ferry(&partner_only, &["export-invoice", "1001", "--wait"])
        .await
        .code(1);
    assert!(
        out.stderr.contains("onec_invoice is not configured")
            && out
                .stderr
                .contains("ONEC_BASE_URL, ONEC_USERNAME, ONEC_PASSWORD")
            && out.stderr.contains("nothing was enqueued"),
        "{out:?}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ferry_outbox").await, 0);

    // Only 1C's variables are needed to wait for an invoice.
    let env = Env::for_db(&tmp, &db).onec(&onec.base_url());
    let out = ferry(
        &env,
        &["export-invoice", "1001", "--wait", "--timeout", "15s"],
    )
    .await
    .code(1);
    assert!(
        out.stdout
            .contains("order 1001: dead after 1 attempt, HTTP 400"),
        "{out:?}"
    );
    let id = row_id(&db, "onec_invoice", "1001").await;
    assert!(out.stdout.contains(&format!(" retry {id}")), "{out:?}");

    // Asked again: not "already enqueued", but dead, why, and the exact retry command.
    let out = ferry(&env, &["export-invoice", "1001"]).await.code(1);
    assert!(
        out.stdout.contains(&format!("row {id}, which is dead")),
        "{out:?}"
    );
    assert!(out.stdout.contains("Контрагент не найден"), "{out:?}");
    let command = out
        .stdout
        .lines()
        .find_map(|l| l.split_once("retry it: ").map(|(_, c)| c.to_string()))
        .unwrap_or_else(|| panic!("no retry command: {out:?}"));
    let reset = bash(&env, &command).await.ok();
    assert!(reset.stdout.contains("reset to pending"), "{reset:?}");
    assert_eq!(db.state_of(id).await, State::Pending);

    let out = ferry(
        &env,
        &["export-invoice", "1001", "--wait", "--timeout", "15s"],
    )
    .await
    .ok();
    assert!(
        out.stdout
            .contains("order 1001: done after 1 attempt, HTTP 201"),
        "{out:?}"
    );
    assert_eq!(onec.request_count(), 2);
    onec.shutdown().await;
}
