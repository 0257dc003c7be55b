//! Fault injection: the real `ferry run` binary killed with SIGKILL mid-drain, its PostgreSQL
//! connections terminated under it, several relays on one schema with kills among them, a
//! chaotic target (5xx, answers slower than the timeout, resets mid-response, garbage, a long
//! outage), a full or read-only SQLite file system, bad input of every kind, and secrets that
//! must never show up anywhere. Each scenario asserts and prints one summary line starting with
//! `FAULTS |`, which RELIABILITY.md reproduces.
//!
//! Randomness comes from a seeded RNG whose seed is printed (`FERRY_FAULT_SEED=<n>` replays a
//! schedule). `FERRY_SOAK=1` runs the long versions (more rows, more kills); otherwise the short
//! versions run. Child processes are killed by [`Proc`]'s Drop if a test fails. Nothing sleeps
//! to hide a race: waits are on conditions with deadlines; the only sleeps are the random delays
//! of the fault schedule itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::delivery::HttpDeliverer;
use ferry::outbox::{AttemptOutcome, State, Store, StoreConfig};
use ferry::relay::{Relay, RelayConfig};
use ferry::testkit::{Reply, TargetServer};
use ferry::workflow::Registry;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::helpers::{pg_url, seed_shop, wait_until, Backend, Proc, TestDb, API_USER, ONEC_USER};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// The heavy scenarios (child processes under load) take this lock so they do not compete for
/// the two cores with each other: CPU starvation would turn into client timeouts, which are
/// legitimate duplicates and would blur what the scenarios measure.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn soak() -> bool {
    std::env::var("FERRY_SOAK").is_ok_and(|v| v == "1")
}

/// The RNG seed: `FERRY_FAULT_SEED` if set, else a fresh one (printed either way).
fn seed() -> u64 {
    std::env::var("FERRY_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// One line of the results table.
#[allow(clippy::too_many_arguments)]
fn summary(
    scenario: &str,
    load: &str,
    faults: &str,
    committed: usize,
    done: usize,
    dead: &str,
    duplicates: &str,
    lost: usize,
    started: Instant,
) {
    println!(
        "FAULTS | {scenario} | {load} | {faults} | committed {committed} | done {done} | dead {dead} | duplicates {duplicates} | lost {lost} | {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------------------------------
// Temp dirs, child processes, workflow copies
// ------------------------------------------------------------------------------------------

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let dir = std::env::temp_dir().join(format!(
            "ferry-faults-{tag}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child's environment: starts empty (nothing leaks in from the developer's shell).
#[derive(Clone)]
struct Env {
    cwd: PathBuf,
    vars: BTreeMap<String, String>,
}

impl Env {
    fn new(cwd: &Path) -> Env {
        let mut vars = BTreeMap::new();
        if let Ok(p) = std::env::var("PATH") {
            vars.insert("PATH".into(), p);
        }
        Env {
            cwd: cwd.to_path_buf(),
            vars,
        }
    }

    /// Ferry's settings for a relay on `url` (and `schema`), workflows from `workflows`, both
    /// targets at `target`, logs in the temp dir, no metrics server.
    fn relay(
        tmp: &Tmp,
        url: &str,
        schema: Option<&str>,
        workflows: &Path,
        onec: &str,
        api: &str,
    ) -> Env {
        let mut e = Env::new(tmp.path())
            .set("DATABASE_URL", url)
            .set("FERRY_WORKFLOWS", &workflows.display().to_string())
            .set("FERRY_METRICS_ADDR", "off")
            .set("FERRY_LOG_DIR", &tmp.join("logs").display().to_string())
            .set("FERRY_POLL_INTERVAL", "200ms")
            .set("FERRY_LEASE_MARGIN", "1s")
            .set("FERRY_SHUTDOWN_GRACE", "5s")
            .set("ONEC_BASE_URL", onec)
            .set("ONEC_USERNAME", ONEC_USER)
            .set("ONEC_PASSWORD", "onec-pass")
            .set("API_BASE_URL", api)
            .set("API_USERNAME", API_USER)
            .set("API_PASSWORD", "api-pass");
        if let Some(s) = schema {
            e = e.set("FERRY_SCHEMA", s);
        }
        e
    }

    fn set(mut self, k: &str, v: &str) -> Env {
        self.vars.insert(k.into(), v.into());
        self
    }

    fn unset(mut self, k: &str) -> Env {
        self.vars.remove(k);
        self
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        c.args(args).current_dir(&self.cwd).env_clear();
        c.envs(&self.vars);
        c
    }
}

impl crate::helpers::ChildEnv for Env {
    fn command(&self, args: &[&str]) -> std::process::Command {
        Env::command(self, args)
    }
    fn cwd(&self) -> &Path {
        &self.cwd
    }
}

/// Run a one-shot `ferry` command to completion.
async fn ferry_once(env: &Env, args: &[&str]) -> (ExitStatus, String, String) {
    let mut c = tokio::process::Command::from(env.command(args));
    c.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), c.output())
        .await
        .expect("ferry command did not finish in 30 s")
        .expect("run ferry");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How the shipped workflow files are shrunk for a test.
#[derive(Clone)]
struct Shrink {
    /// Request timeout of every workflow.
    timeout: &'static str,
    /// Partner workflows: `max_attempts` instead of `give_up_after = "72h"`.
    partner_attempts: u32,
    /// 1C fixed waits instead of 2 s, 5 s, 10 s.
    onec_waits: &'static str,
    /// Per-target concurrency cap.
    concurrency: u32,
    /// Body of `[target.circuit]` for every target.
    circuit: &'static str,
}

/// A circuit that never opens in practice (the crash and relay tests measure duplicates, not
/// the breaker).
const CIRCUIT_OFF: &str = "failures = 10000\nopen_for = \"50ms\"";
/// A real breaker with short pauses (the chaos test exercises it).
const CIRCUIT_FAST: &str = "failures = 5\nopen_for = \"50ms\"\nmax_open_for = \"200ms\"";

impl Default for Shrink {
    fn default() -> Shrink {
        Shrink {
            timeout: "1s",
            partner_attempts: 12,
            onec_waits: r#"["10ms", "20ms", "50ms"]"#,
            concurrency: 16,
            circuit: CIRCUIT_OFF,
        }
    }
}

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows")
}

/// Shrunk copies of the shipped workflow files, written into `dir`.
fn write_workflows(dir: &Path, s: &Shrink) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(shipped_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let mut text = std::fs::read_to_string(&path).unwrap();
        let mut edit = |from: &str, to: &str| {
            assert!(text.contains(from), "{stem}: no '{from}' to edit");
            text = text.replace(from, to);
        };
        if stem == "onec_invoice" {
            edit(
                r#"waits = ["2s", "5s", "10s"]"#,
                &format!("waits = {}", s.onec_waits),
            );
            edit(
                r#"timeout = "60s""#,
                &format!("timeout = \"{}\"", s.timeout),
            );
            edit("failures = 5\nopen_for = \"30s\"", s.circuit);
            edit(
                "max_concurrency = 4",
                &format!("max_concurrency = {}", s.concurrency),
            );
        } else {
            edit(r#"initial = "10s""#, r#"initial = "10ms""#);
            edit(r#"max = "30m""#, r#"max = "50ms""#);
            edit(
                r#"give_up_after = "72h""#,
                &format!("max_attempts = {}", s.partner_attempts),
            );
            edit(
                r#"timeout = "30s""#,
                &format!("timeout = \"{}\"", s.timeout),
            );
            edit(
                "max_concurrency = 8",
                &format!("max_concurrency = {}", s.concurrency),
            );
            edit(
                "\n[request]",
                &format!("\n[target.circuit]\n{}\n\n[request]", s.circuit),
            );
        }
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
    dir.to_path_buf()
}

/// The registry of a workflow directory, with the targets' variables from `vars`.
fn load_registry(dir: &Path, vars: &[(&str, &str)]) -> Registry {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| vars.get(name).cloned();
    Registry::load_dir(dir, &lookup).unwrap_or_else(|e| panic!("{e}"))
}

fn target_vars<'a>(onec: &'a str, api: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("ONEC_BASE_URL", onec),
        ("ONEC_USERNAME", ONEC_USER),
        ("ONEC_PASSWORD", "onec-pass"),
        ("API_BASE_URL", api),
        ("API_USERNAME", API_USER),
        ("API_PASSWORD", "api-pass"),
    ]
}

// ------------------------------------------------------------------------------------------
// Database access that works on a Store or on a plain pool (so checks need not use the
// application name `ferry`, which scenario 2 terminates)
// ------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Db {
    Pg(sqlx::PgPool),
    Lite(sqlx::SqlitePool),
}

#[derive(Debug, Clone)]
struct Row {
    id: i64,
    workflow: String,
    key: String,
    state: State,
    last_error: Option<String>,
}

impl Db {
    fn of(store: &Store) -> Db {
        match (store.pg_pool(), store.sqlite_pool()) {
            (Some(p), _) => Db::Pg(p.clone()),
            (_, Some(p)) => Db::Lite(p.clone()),
            _ => unreachable!(),
        }
    }

    async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Db::Pg(p) => sqlx::raw_sql(sql).execute(p).await?.rows_affected(),
            Db::Lite(p) => sqlx::raw_sql(sql).execute(p).await?.rows_affected(),
        })
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let r = match self {
            Db::Pg(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
            Db::Lite(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
        };
        r.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn live(&self) -> i64 {
        self.scalar(
            "SELECT COUNT(*) FROM ferry_outbox WHERE state IN ('pending', 'sending', 'retry_wait')",
        )
        .await
    }

    async fn count_state(&self, state: &str) -> i64 {
        self.scalar(&format!(
            "SELECT COUNT(*) FROM ferry_outbox WHERE state = '{state}'"
        ))
        .await
    }

    async fn rows(&self) -> Vec<Row> {
        let sql = "SELECT id, workflow, key, state, last_error FROM ferry_outbox ORDER BY id";
        type T = (i64, String, String, State, Option<String>);
        let rows: Vec<T> = match self {
            Db::Pg(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
            Db::Lite(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        };
        rows.into_iter()
            .map(|(id, workflow, key, state, last_error)| Row {
                id,
                workflow,
                key,
                state,
                last_error,
            })
            .collect()
    }

    /// Attempts recorded per outbox id.
    async fn attempts_per_row(&self) -> HashMap<i64, i64> {
        let sql = "SELECT outbox_id, COUNT(*) FROM ferry_attempts GROUP BY outbox_id";
        let rows: Vec<(i64, i64)> = match self {
            Db::Pg(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
            Db::Lite(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        };
        rows.into_iter().collect()
    }

    /// Every row of a table or view as one line of text (for the secret scan).
    async fn dump(&self, table: &str) -> Vec<String> {
        match self {
            Db::Pg(p) => sqlx::query_scalar::<_, String>(&format!(
                "SELECT row_to_json(t)::text FROM {table} t"
            ))
            .fetch_all(p)
            .await
            .unwrap(),
            Db::Lite(_) => unreachable!("the secret scan runs on PostgreSQL"),
        }
    }
}

/// The document code field of a partner workflow.
fn code_field(workflow: &str) -> &'static str {
    if workflow == "partner_hoa_don" {
        "billCode"
    } else {
        "invoiceCode"
    }
}

const PARTNER: [&str; 3] = [
    "partner_hoa_don",
    "partner_phieu_nhap",
    "partner_phieu_xuat",
];

/// Insert partner intents `K-<i>` for i in `range`, spread over the three partner workflows, in
/// one transaction (multi-row VALUES works on both backends).
async fn insert_rows(db: &Db, prefix: &str, range: std::ops::Range<usize>) {
    if range.is_empty() {
        return;
    }
    let mut sql = String::from("INSERT INTO ferry_outbox (workflow, key, payload) VALUES ");
    for (n, i) in range.enumerate() {
        let wf = PARTNER[i % 3];
        let key = format!("{prefix}{i}");
        if n > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "('{wf}', '{key}', '{{\"{}\": \"{key}\", \"qty\": {i}}}')",
            code_field(wf)
        ));
    }
    db.exec(&sql).await.expect("insert rows");
}

/// The document code a request carried (its body's billCode or invoiceCode).
fn request_code(body: &Value) -> Option<String> {
    body.get("billCode")
        .or_else(|| body.get("invoiceCode"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Per idempotency key, how many times the target *accepted* (answered 2xx) a request.
type Accepted = Arc<Mutex<HashMap<String, u32>>>;

/// A flaky target: ~10 % 5xx, ~1.5 % a 504 slower than the client's timeout, ~1.5 % a reset
/// before any answer, ~1 % a reset mid-response; the rest 200. Only 200s count as accepted: the
/// failures are of the kind where the target did not process the document.
fn flaky_target(target: &TargetServer, seed: u64, slow: Duration) -> Accepted {
    let accepted: Accepted = Arc::default();
    let acc = accepted.clone();
    let rng = Mutex::new(fastrand::Rng::with_seed(seed));
    target.set_responder(move |req, _| {
        let r = rng.lock().unwrap().u32(0..1000);
        Some(match r {
            0..=99 => Reply::status([500, 502, 503, 504][(r % 4) as usize]),
            100..=114 => Reply::status(504).delayed(slow),
            115..=129 => Reply::Reset,
            130..=139 => Reply::ResetMidResponse,
            _ => {
                if let Some(k) = req.idempotency_key() {
                    *acc.lock().unwrap().entry(k.to_string()).or_insert(0) += 1;
                }
                Reply::ok()
            }
        })
    });
    accepted
}

/// A target that accepts everything, counting acceptances per key.
fn accepting_target(target: &TargetServer) -> Accepted {
    let accepted: Accepted = Arc::default();
    let acc = accepted.clone();
    target.set_responder(move |req, _| {
        if let Some(k) = req.idempotency_key() {
            *acc.lock().unwrap().entry(k.to_string()).or_insert(0) += 1;
        }
        Some(Reply::ok())
    });
    accepted
}

/// Group dead reasons by their first words, for the summary.
fn dead_reasons(rows: &[Row]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.state == State::Dead) {
        let e = r.last_error.clone().unwrap_or_default();
        let head: String = e
            .split([':', '('])
            .next()
            .unwrap_or("")
            .trim()
            .chars()
            .take(40)
            .collect();
        *by.entry(head).or_default() += 1;
    }
    if by.is_empty() {
        return "0".into();
    }
    let n: usize = by.values().sum();
    let parts: Vec<String> = by.iter().map(|(k, v)| format!("{v}× {k}")).collect();
    format!("{n} ({})", parts.join("; "))
}

/// What the final check of a run found.
struct Verdict {
    committed: usize,
    done: usize,
    dead: String,
    duplicates: u32,
    /// Rows dead although the target accepted them (a crash between acceptance and recording,
    /// then the budget ran out): reported with the duplicates.
    dead_but_accepted: u32,
    lost: usize,
}

/// The invariants every scenario with a partner load shares: every committed key is in the
/// table exactly once, done or dead with a reason, nothing live; every request carried its row's
/// id as Idempotency-Key; every done row was accepted by the target at least once.
async fn verify(
    db: &Db,
    target: &TargetServer,
    expected_keys: &HashSet<String>,
    acc: &Accepted,
) -> Verdict {
    let rows = db.rows().await;
    let by_key: HashMap<&str, &Row> = rows.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut lost = 0;
    for k in expected_keys {
        if !by_key.contains_key(k.as_str()) {
            eprintln!("LOST: committed key {k} is not in ferry_outbox");
            lost += 1;
        }
    }
    assert_eq!(rows.len(), expected_keys.len(), "row count");
    let live: Vec<&Row> = rows
        .iter()
        .filter(|r| r.state != State::Done && r.state != State::Dead)
        .collect();
    assert!(
        live.is_empty(),
        "rows not settled: {:?}",
        &live[..live.len().min(10)]
    );
    for r in rows.iter().filter(|r| r.state == State::Dead) {
        assert!(
            r.last_error
                .as_deref()
                .is_some_and(|e| !e.trim().is_empty()),
            "dead without a reason: {r:?}"
        );
    }
    // Every request carried the id of the row its document belongs to.
    let mut checked = 0;
    for req in target.requests() {
        let body = req.json().unwrap_or(Value::Null);
        let code = request_code(&body)
            .unwrap_or_else(|| panic!("request without a code: {}", req.body_text()));
        let row = by_key
            .get(code.as_str())
            .unwrap_or_else(|| panic!("request for unknown document {code}"));
        assert_eq!(
            req.idempotency_key(),
            Some(row.id.to_string().as_str()),
            "request for {code} carried the wrong Idempotency-Key"
        );
        checked += 1;
    }
    assert!(checked > 0);
    let acc = acc.lock().unwrap();
    let (mut duplicates, mut dead_but_accepted, mut done) = (0, 0, 0);
    for r in &rows {
        let a = acc.get(&r.id.to_string()).copied().unwrap_or(0);
        match r.state.as_str() {
            "done" => {
                done += 1;
                if a == 0 {
                    eprintln!(
                        "LOST: row {} is done but the target never accepted it",
                        r.id
                    );
                    lost += 1;
                }
                duplicates += a.saturating_sub(1);
            }
            _ => dead_but_accepted += a.min(1),
        }
    }
    Verdict {
        committed: expected_keys.len(),
        done,
        dead: dead_reasons(&rows),
        duplicates,
        dead_but_accepted,
        lost,
    }
}

// ------------------------------------------------------------------------------------------
// 1. kill -9 mid-drain, restart, repeat
// ------------------------------------------------------------------------------------------

async fn crash_scenario(backend: Backend) {
    let _heavy = HEAVY.lock().await;
    let started = Instant::now();
    let (n_rows, n_kills): (usize, usize) = if soak() { (20_000, 20) } else { (3_000, 5) };
    let seed = seed();
    println!("crash/{backend:?}: seed {seed} (FERRY_FAULT_SEED={seed} replays the schedule)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let tdb = TestDb::new(backend).await;
    let db = Db::of(&tdb.store);
    let target = TargetServer::start().await.unwrap();
    let acc = flaky_target(&target, seed.wrapping_add(1), Duration::from_millis(1300));
    let tmp = Tmp::new("crash");
    let wf = write_workflows(&tmp.join("workflows"), &Shrink::default());
    let url = target.base_url();
    let env = Env::relay(&tmp, &tdb.database_url(), tdb.schema(), &wf, &url, &url)
        .set("FERRY_CONCURRENCY", "32")
        .set("FERRY_LOG", "warn");

    // Two thirds committed up front; the rest in chunks while the relay is down or restarting.
    let first = n_rows * 2 / 3;
    let chunk = (n_rows - first).div_ceil(n_kills);
    insert_rows(&db, "K-", 0..first).await;
    let mut committed = first;

    let mut proc = Proc::spawn(&env, &["run"], "relay-0");
    let mut in_flight = Vec::new();
    let mut outstanding = Vec::new();
    for k in 0..n_kills {
        // Let the relay get going (it delivered something since it started), then kill it at a
        // random moment.
        let base = target.request_count();
        assert!(
            wait_until(Duration::from_secs(20), || async {
                target.request_count() > base + 5 || db.live().await == 0
            })
            .await,
            "relay made no progress\n{}",
            proc.output()
        );
        tokio::time::sleep(Duration::from_millis(rng.u64(50..700))).await;
        proc.kill9();
        // The relay is dead: its `sending` rows are exactly what it had in flight.
        in_flight.push(db.count_state("sending").await);
        outstanding.push(db.live().await);
        let end = (committed + chunk).min(n_rows);
        insert_rows(&db, "K-", committed..end).await;
        committed = end;
        proc = Proc::spawn(&env, &["run"], &format!("relay-{}", k + 1));
    }
    assert!(
        wait_until(Duration::from_secs(90), || async { db.live().await == 0 }).await,
        "not settled: {} live\n{}",
        db.live().await,
        proc.output()
    );
    proc.stop().await;
    assert!(!proc.stderr().contains("panicked"), "{}", proc.output());

    let expected: HashSet<String> = (0..n_rows).map(|i| format!("K-{i}")).collect();
    let v = verify(&db, &target, &expected, &acc).await;
    let bound: i64 = in_flight.iter().sum();
    println!(
        "crash/{backend:?}: in flight at each kill {in_flight:?}, live rows at each kill {outstanding:?}, \
         requests {}, duplicates {} (bound {bound}), dead-but-accepted {}",
        target.request_count(),
        v.duplicates,
        v.dead_but_accepted
    );
    assert_eq!(v.lost, 0);
    assert!(
        i64::from(v.duplicates + v.dead_but_accepted) <= bound,
        "more duplicates ({}) than rows in flight at the kills ({bound})",
        v.duplicates
    );
    summary(
        &format!("1 crash ({backend:?})"),
        &format!("{n_rows} partner rows, flaky target, concurrency 32"),
        &format!("{n_kills}× kill -9 + restart; ~10% 5xx, 1.5% slow 504, 2.5% resets"),
        v.committed,
        v.done,
        &v.dead,
        &format!("{} (≤ {bound} in flight at kills)", v.duplicates),
        v.lost,
        started,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kill9_postgres() {
    crash_scenario(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kill9_sqlite() {
    crash_scenario(Backend::Sqlite).await;
}

// ------------------------------------------------------------------------------------------
// 2. PostgreSQL connections terminated under a running relay
// ------------------------------------------------------------------------------------------

/// A PostgreSQL database of the test's own (so `datname = current_database()` confines the
/// terminations to this test), dropped WITH (FORCE) at the end.
struct OwnDatabase {
    name: String,
    url: String,
}

impl OwnDatabase {
    async fn create() -> OwnDatabase {
        use sqlx::Connection;
        let name = format!(
            "ferry_fault_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = pg_url();
        let cut = base.rfind('/').unwrap();
        OwnDatabase {
            url: format!("{}/{name}", &base[..cut]),
            name,
        }
    }

    /// A pool whose connections are not named `ferry` (they survive the terminations).
    async fn checker(&self) -> sqlx::PgPool {
        use std::str::FromStr;
        let opts = sqlx::postgres::PgConnectOptions::from_str(&self.url)
            .unwrap()
            .application_name("ferry-faults-check");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(3)
            .connect_with(opts)
            .await
            .unwrap()
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&pg_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The listener's connection is terminated and a row comes in before the relay waits again:
/// its NOTIFY went nowhere. The wait that discovers the lost connection must report a wake-up
/// at once (the relay then claims) instead of re-listening silently and sleeping a whole poll
/// interval. Deterministic: the NOTIFY is always sent while nobody listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_reconnect_reports_a_possible_missed_wakeup_postgres() {
    let own = OwnDatabase::create().await;
    let store = Store::open(&StoreConfig::new(own.url.parse().unwrap()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let checker = own.checker().await;
    let mut waiter = store.waiter(true).await.unwrap();
    // A first NOTIFY arrives: the listener works.
    sqlx::query("INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'first', '{}')")
        .execute(&checker)
        .await
        .unwrap();
    assert!(
        waiter.wait(Duration::from_secs(5)).await,
        "no first wake-up"
    );
    let killed: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'ferry' \
           AND datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&checker)
    .await
    .unwrap();
    assert_eq!(killed.len(), 1, "one listening backend");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(killed[0])
        .execute(&checker)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
                .bind(killed[0])
                .fetch_one(&checker)
                .await
                .unwrap()
                == 0
        })
        .await
    );
    // Sent while nobody listens: lost.
    sqlx::query("INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'gap', '{}')")
        .execute(&checker)
        .await
        .unwrap();
    let t = Instant::now();
    let woke = waiter.wait(Duration::from_secs(10)).await;
    let took = t.elapsed();
    assert!(
        woke && took < Duration::from_secs(5),
        "after a reconnect the waiter slept {took:?} (woke: {woke}) although a wake-up may have been missed"
    );
    // And the re-established LISTEN works.
    sqlx::query("INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('w', 'after', '{}')")
        .execute(&checker)
        .await
        .unwrap();
    assert!(
        waiter.wait(Duration::from_secs(5)).await,
        "LISTEN not re-established"
    );
    waiter.close().await;
    store.close().await;
    checker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connections_terminated_postgres() {
    let _heavy = HEAVY.lock().await;
    let started = Instant::now();
    let (n_rows, n_terminations) = if soak() { (20_000, 15) } else { (3_000, 5) };
    let seed = seed();
    println!("dbloss: seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let own = OwnDatabase::create().await;
    {
        let store = Store::open(&StoreConfig::new(own.url.parse().unwrap()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store.close().await;
    }
    let db = Db::Pg(own.checker().await);
    let target = TargetServer::start().await.unwrap();
    let acc = accepting_target(&target);
    let tmp = Tmp::new("dbloss");
    let wf = write_workflows(&tmp.join("workflows"), &Shrink::default());
    let url = target.base_url();
    // A long fallback poll: after the terminations, new rows must still be picked up at once,
    // which only LISTEN/NOTIFY can do.
    let env = Env::relay(&tmp, &own.url, None, &wf, &url, &url)
        .set("FERRY_CONCURRENCY", "32")
        .set("FERRY_POLL_INTERVAL", "10s");
    insert_rows(&db, "K-", 0..n_rows).await;
    let mut proc = Proc::spawn(&env, &["run"], "relay");
    let mut terminated = Vec::new();
    for _ in 0..n_terminations {
        let base = target.request_count();
        assert!(
            wait_until(Duration::from_secs(30), || async {
                target.request_count() > base + 20 || db.live().await == 0
            })
            .await,
            "no progress after a termination\n{}",
            proc.output()
        );
        tokio::time::sleep(Duration::from_millis(rng.u64(20..300))).await;
        let Db::Pg(pool) = &db else { unreachable!() };
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'ferry' AND datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        terminated.push(killed.iter().filter(|k| **k).count());
        proc.assert_running();
    }
    let settled = wait_until(Duration::from_secs(60), || async { db.live().await == 0 }).await;
    assert!(
        settled,
        "not settled: {} live\n{}",
        db.live().await,
        proc.output()
    );
    // Wake-ups work again: a new row is delivered well before the 10 s fallback poll.
    insert_rows(&db, "LATE-", 0..1).await;
    let t = Instant::now();
    let late = wait_until(Duration::from_secs(20), || async {
        db.scalar("SELECT COUNT(*) FROM ferry_outbox WHERE key = 'LATE-0' AND state = 'done'")
            .await
            == 1
    })
    .await;
    let late_s = t.elapsed().as_secs_f64();
    assert!(late, "row enqueued after the terminations never delivered");
    proc.stop().await;
    let stderr = proc.stderr();
    assert!(!stderr.contains("panicked"), "{}", proc.output());
    let lost_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("terminating connection")
                || l.contains("connection lost")
                || l.contains("connection closed")
                || l.contains("database unavailable")
        })
        .collect();
    assert!(
        !lost_lines.is_empty(),
        "stderr never mentions the lost connection\n{}",
        proc.output()
    );
    println!(
        "dbloss: terminated backends per round {terminated:?}; {} log lines about it, e.g. {}",
        lost_lines.len(),
        lost_lines[0].chars().take(300).collect::<String>()
    );
    println!(
        "dbloss: row enqueued after the terminations delivered in {late_s:.2}s (fallback poll 10s)"
    );
    let mut expected: HashSet<String> = (0..n_rows).map(|i| format!("K-{i}")).collect();
    expected.insert("LATE-0".into());
    let v = verify(&db, &target, &expected, &acc).await;
    assert_eq!(v.lost, 0);
    assert!(
        late_s < 9.0,
        "after losing its connections the relay no longer gets NOTIFY wake-ups: {late_s:.1}s"
    );
    summary(
        "2 database loss (Postgres)",
        &format!("{} partner rows, accepting target", n_rows + 1),
        &format!(
            "{n_terminations}× pg_terminate_backend of all relay connections ({} backends)",
            terminated.iter().sum::<usize>()
        ),
        v.committed,
        v.done,
        &v.dead,
        &v.duplicates.to_string(),
        v.lost,
        started,
    );
}

// ------------------------------------------------------------------------------------------
// 3. A chaotic target and one that stays down longer than the whole retry schedule
// ------------------------------------------------------------------------------------------

/// Run a relay in this process until every row is settled (bounded), then stop it.
async fn run_relay_until_settled(
    db: &Db,
    store: &Store,
    registry: &Registry,
    deadline: Duration,
) -> bool {
    let relay = Relay::new(
        store.clone(),
        Arc::new(HttpDeliverer::new(registry).expect("deliverer")),
        RelayConfig {
            batch_size: 64,
            concurrency: 32,
            lease_margin: Duration::from_secs(2),
            poll_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_secs(5),
            ..RelayConfig::default()
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { relay.run(stop).await }
    });
    let settled = wait_until(deadline, || async { db.live().await == 0 }).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("relay did not stop")
        .unwrap();
    settled
}

fn invoice(number: &str) -> Value {
    json!({
        "invoice_number": number,
        "date": "2026-02-13",
        "customer": { "name": "Иван Иванов", "phone": "+79991234567", "address": "Москва, ул. Ленина, 1" },
        "items": [ { "articul": "ФР-00000044", "name": "Варочная панель", "quantity": 2, "price": 122334, "total": 244668 } ],
        "delivery_cost": 500,
        "total": 245168
    })
}

async fn target_chaos(backend: Backend) {
    let started = Instant::now();
    let n_partner: usize = if soak() { 3_000 } else { 400 };
    let n_onec = 10;
    let seed = seed();
    println!("chaos/{backend:?}: seed {seed}");
    let tdb = TestDb::new(backend).await;
    let db = Db::of(&tdb.store);
    let partner = TargetServer::start().await.unwrap();
    let onec = TargetServer::start().await.unwrap();
    onec.set_up(false); // 503 + Retry-After: 1 for the whole run
    let rng = Mutex::new(fastrand::Rng::with_seed(seed));
    let kinds: Arc<Mutex<BTreeMap<&'static str, u32>>> = Arc::default();
    let k2 = kinds.clone();
    partner.set_responder(move |_, _| {
        let r = rng.lock().unwrap().u32(0..100);
        let (name, reply) = match r {
            0..=5 => ("500", Reply::status(500)),
            6..=11 => ("502", Reply::status(502)),
            12..=17 => ("503", Reply::status(503)),
            18..=23 => ("504", Reply::status(504)),
            24..=28 => ("slow", Reply::ok().delayed(Duration::from_millis(600))),
            29..=33 => ("reset-mid-response", Reply::ResetMidResponse),
            34..=38 => ("malformed", Reply::Malformed),
            39..=41 => ("reset", Reply::Reset),
            _ => ("200", Reply::ok()),
        };
        *k2.lock().unwrap().entry(name).or_default() += 1;
        Some(reply)
    });
    let tmp = Tmp::new("chaos");
    let dir = write_workflows(
        &tmp.join("workflows"),
        &Shrink {
            timeout: "300ms",
            partner_attempts: 6,
            concurrency: 8,
            circuit: CIRCUIT_FAST,
            ..Shrink::default()
        },
    );
    let registry = load_registry(&dir, &target_vars(&onec.base_url(), &partner.base_url()));
    insert_rows(&db, "C-", 0..n_partner).await;
    for i in 0..n_onec {
        tdb.store
            .enqueue(
                "onec_invoice",
                &format!("{}", 5000 + i),
                &invoice(&format!("INV-C-{i}")),
            )
            .await
            .unwrap();
    }
    let settled =
        run_relay_until_settled(&db, &tdb.store, &registry, Duration::from_secs(60)).await;
    assert!(settled, "rows still live after 60 s: {}", db.live().await);

    let rows = db.rows().await;
    let attempts = db.attempts_per_row().await;
    let mut seen = partner.keys_seen();
    seen.extend(onec.keys_seen());
    let (mut done, mut total_attempts) = (0, 0);
    for r in &rows {
        let a = attempts.get(&r.id).copied().unwrap_or(0);
        let requests = i64::from(seen.get(&r.id.to_string()).copied().unwrap_or(0));
        total_attempts += a;
        assert_eq!(
            a, requests,
            "row {} ({}): attempts recorded vs requests the target saw",
            r.id, r.key
        );
        let max = if r.workflow == "onec_invoice" { 4 } else { 6 };
        assert!(a >= 1 && a <= max, "row {r:?}: {a} attempts");
        match r.state.as_str() {
            "done" => {
                assert_ne!(r.workflow, "onec_invoice", "1C was down all along");
                done += 1;
            }
            "dead" => {
                let e = r.last_error.as_deref().unwrap_or("");
                assert!(
                    e.starts_with(&format!("attempts exhausted ({max} of {max})")),
                    "row {r:?}"
                );
                assert_eq!(a, max);
                if r.workflow == "onec_invoice" {
                    assert!(e.contains("503"), "{e}");
                }
            }
            s => panic!("row {r:?} in {s}"),
        }
    }
    let requests = partner.request_count() + onec.request_count();
    assert_eq!(
        total_attempts as u64, requests,
        "ferry_attempts vs requests seen"
    );
    assert_eq!(rows.len(), n_partner + n_onec);
    println!(
        "chaos/{backend:?}: partner replies {:?}; 1C answered 503 to all {} requests",
        kinds.lock().unwrap(),
        onec.request_count()
    );
    summary(
        &format!("3 target chaos ({backend:?})"),
        &format!("{n_partner} partner rows + {n_onec} 1C invoices, in-process relay"),
        "partner: 24% 500/502/503/504, 5% slower than timeout, 5% reset mid-response, 5% malformed, 3% reset; 1C down (503) throughout",
        rows.len(),
        done,
        &dead_reasons(&rows),
        &format!("n/a (attempts recorded {total_attempts} = requests seen {requests})"),
        0,
        started,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_chaos_sqlite() {
    target_chaos(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_chaos_postgres() {
    target_chaos(Backend::Postgres).await;
}

// ------------------------------------------------------------------------------------------
// 4. Three relays on one schema, kill -9 among them
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_with_kills_postgres() {
    let _heavy = HEAVY.lock().await;
    let started = Instant::now();
    let (n_phase, n_kills): (usize, usize) = if soak() { (10_000, 12) } else { (1_500, 3) };
    let seed = seed();
    println!("relays: seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let tdb = TestDb::new(Backend::Postgres).await;
    let db = Db::of(&tdb.store);
    let target = TargetServer::start().await.unwrap();
    let acc = flaky_target(&target, seed.wrapping_add(7), Duration::from_millis(1300));
    let tmp = Tmp::new("relays");
    let wf = write_workflows(&tmp.join("workflows"), &Shrink::default());
    let url = target.base_url();
    let env = Env::relay(&tmp, &tdb.database_url(), tdb.schema(), &wf, &url, &url)
        .set("FERRY_CONCURRENCY", "16")
        .set("FERRY_LOG", "warn");

    // Phase 1: no kills. Three relays compete for the same rows; none may be delivered twice.
    insert_rows(&db, "A-", 0..n_phase).await;
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| Proc::spawn(&env, &["run"], &format!("relay{i}-0")))
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || async { db.live().await == 0 }).await,
        "phase 1 not settled"
    );
    let dup = |prefix: &'static str| {
        let acc = acc.clone();
        let db = db.clone();
        async move {
            let rows = db.rows().await;
            let acc = acc.lock().unwrap();
            rows.iter()
                .filter(|r| r.key.starts_with(prefix) && r.state == State::Done)
                .map(|r| {
                    acc.get(&r.id.to_string())
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(1)
                })
                .sum::<u32>()
        }
    };
    let dup1 = dup("A-").await;
    assert_eq!(dup1, 0, "duplicates with three relays and no crash");

    // Phase 2: kill -9 a random relay at random moments, restart it.
    insert_rows(&db, "B-", 0..n_phase).await;
    let mut bound = 0;
    let mut killed = Vec::new();
    for k in 0..n_kills {
        let base = target.request_count();
        assert!(
            wait_until(Duration::from_secs(20), || async {
                target.request_count() > base + 5 || db.live().await == 0
            })
            .await,
            "no progress"
        );
        tokio::time::sleep(Duration::from_millis(rng.u64(20..500))).await;
        let i = rng.usize(0..3);
        procs[i].kill9();
        // Rows in `sending` now: the victim's in-flight rows are among them (an upper bound).
        bound += db.count_state("sending").await;
        killed.push(i);
        procs[i] = Proc::spawn(&env, &["run"], &format!("relay{i}-{}", k + 1));
    }
    assert!(
        wait_until(Duration::from_secs(60), || async { db.live().await == 0 }).await,
        "phase 2 not settled: {} live",
        db.live().await
    );
    for p in &mut procs {
        p.stop().await;
        assert!(!p.stderr().contains("panicked"), "{}", p.output());
    }
    let dup2 = dup("B-").await;
    let mut expected: HashSet<String> = (0..n_phase).map(|i| format!("A-{i}")).collect();
    expected.extend((0..n_phase).map(|i| format!("B-{i}")));
    let v = verify(&db, &target, &expected, &acc).await;
    assert_eq!(v.lost, 0);
    assert!(
        i64::from(dup2) <= bound,
        "{dup2} duplicates > {bound} rows in flight at kills"
    );
    println!("relays: phase 1 (no kills) duplicates {dup1}; phase 2 killed relays {killed:?}, duplicates {dup2} (≤ {bound} sending at kill times)");
    summary(
        "4 three relays (Postgres)",
        &format!("2 × {n_phase} partner rows, 3 × `ferry run`, flaky target"),
        &format!("phase 1: none; phase 2: {n_kills}× kill -9 of a random relay + restart"),
        v.committed,
        v.done,
        &v.dead,
        &format!("phase 1: {dup1}; phase 2: {dup2} (≤ {bound} in flight)"),
        v.lost,
        started,
    );
}

// ------------------------------------------------------------------------------------------
// 6. Bad input
// ------------------------------------------------------------------------------------------

/// A workflow of its own target (`locked`), to play a target that refuses our credentials.
fn write_locked_workflow(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("partner_hoa_don.toml"))
        .unwrap()
        .replace("name = \"partner_hoa_don\"", "name = \"partner_locked\"")
        .replace("name = \"partner\"", "name = \"locked\"")
        .replace("${API_BASE_URL}", "${LOCKED_BASE_URL}")
        .replace("${API_PASSWORD}", "${LOCKED_PASSWORD}");
    std::fs::write(dir.join("partner_locked.toml"), text).unwrap();
}

async fn bad_input(backend: Backend) {
    let started = Instant::now();
    let tdb = TestDb::new(backend).await;
    let db = Db::of(&tdb.store);
    let store = &tdb.store;

    // Malformed JSON through plain SQL: the database refuses it.
    let err = db
        .exec("INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('partner_hoa_don', 'bad-json', '{\"billCode\": ')")
        .await
        .expect_err("malformed JSON accepted");
    println!("bad/{backend:?}: malformed JSON refused: {err}");
    // Over 1 MiB through the API: refused, saying why.
    let big = json!({ "billCode": "BIG", "blob": "x".repeat(1 << 20) });
    let err = store
        .enqueue("partner_hoa_don", "big", &big)
        .await
        .expect_err("1 MiB accepted");
    let msg = err.to_string();
    assert!(
        msg.contains("over the limit") && msg.contains("bytes"),
        "{msg}"
    );
    // Empty and over-long keys.
    assert!(store
        .enqueue("partner_hoa_don", "", &json!({}))
        .await
        .is_err());
    assert!(store
        .enqueue("partner_hoa_don", &"k".repeat(501), &json!({}))
        .await
        .is_err());
    // A NUL in a key: refused (PostgreSQL text cannot hold it) or kept byte for byte.
    match store
        .enqueue("partner_hoa_don", "nul\0key", &json!({"billCode": "NUL-1"}))
        .await
    {
        Err(e) => println!("bad/{backend:?}: key with NUL refused: {e}"),
        Ok(e) => {
            assert_eq!(store.get(e.id).await.unwrap().key, "nul\0key");
            db.exec(&format!("UPDATE ferry_outbox SET state = 'dead', last_error = 'cancelled by the test' WHERE id = {}", e.id)).await.unwrap();
            println!("bad/{backend:?}: key with NUL stored byte for byte");
        }
    }

    let partner = TargetServer::start().await.unwrap();
    let locked = TargetServer::start().await.unwrap();
    locked.required_basic_auth(API_USER, "the-real-password");
    let tmp = Tmp::new("bad");
    let dir = write_workflows(
        &tmp.join("workflows"),
        &Shrink {
            timeout: "500ms",
            partner_attempts: 3,
            ..Shrink::default()
        },
    );
    write_locked_workflow(&dir);
    let partner_url = partner.base_url();
    let mut vars = target_vars("http://127.0.0.1:1", &partner_url);
    let locked_url = locked.base_url();
    vars.push(("LOCKED_BASE_URL", &locked_url));
    vars.push(("LOCKED_PASSWORD", "a-wrong-password"));
    let registry = load_registry(&dir, &vars);

    let nasty = [
        "'; DROP TABLE ferry_outbox; --",
        "Robert'); DELETE FROM ferry_attempts; --",
        "\" OR 1=1 --",
        "%_\\*?[]{}$1 :key ?1",
        "ключ/khóa-đơn/鍵/🚚",
        "tab\tnew\nline",
        "  spaced  ",
    ];
    let mut ids = HashMap::new();
    for k in nasty {
        let e = store
            .enqueue("partner_hoa_don", k, &json!({ "billCode": k }))
            .await
            .unwrap();
        ids.insert(k, e.id);
    }
    // Unknown workflow; wrong types; a valid invoice to an unreachable host; bad credentials.
    db.exec("INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('no_such_workflow', 'u-1', '{}')")
        .await
        .unwrap();
    let wrong_code = store
        .enqueue("partner_hoa_don", "wrong-type", &json!({ "billCode": 12 }))
        .await
        .unwrap()
        .id;
    let mut inv = invoice("INV-BAD-1");
    inv["items"][0]["quantity"] = json!("two");
    let wrong_qty = store
        .enqueue("onec_invoice", "9001", &inv)
        .await
        .unwrap()
        .id;
    let mut inv = invoice("INV-BAD-2");
    inv["items"][0]["total"] = json!(1);
    let wrong_total = store
        .enqueue("onec_invoice", "9002", &inv)
        .await
        .unwrap()
        .id;
    let unreachable = store
        .enqueue("onec_invoice", "9003", &invoice("INV-9003"))
        .await
        .unwrap()
        .id;
    let unauthorized = store
        .enqueue("partner_locked", "L-1", &json!({ "billCode": "L-1" }))
        .await
        .unwrap()
        .id;

    assert!(run_relay_until_settled(&db, store, &registry, Duration::from_secs(30)).await);
    let reason = |id: i64| async move {
        let r = store.get(id).await.unwrap();
        assert_eq!(r.state, State::Dead, "row {id}: {r:?}");
        r.last_error.unwrap_or_default()
    };
    let unknown = store
        .find("no_such_workflow", "u-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unknown.state, State::Dead);
    assert!(
        unknown
            .last_error
            .as_deref()
            .unwrap()
            .contains("unknown workflow 'no_such_workflow'"),
        "{unknown:?}"
    );
    assert!(reason(wrong_code)
        .await
        .contains("billCode: expected a string, got number"));
    assert!(reason(wrong_qty).await.contains("items[0].quantity"));
    assert!(reason(wrong_total)
        .await
        .contains("items[0].total: expected quantity × price = 244668, got 1"));
    for id in [unknown.id, wrong_code, wrong_qty, wrong_total] {
        assert!(
            store.attempts(id).await.unwrap().is_empty(),
            "no request for an invalid row"
        );
    }
    let e = reason(unreachable).await;
    assert!(
        e.starts_with("attempts exhausted (4 of 4)") && e.contains("connection"),
        "{e}"
    );
    let history = store.attempts(unreachable).await.unwrap();
    assert_eq!(history.len(), 4);
    assert!(
        history.iter().all(|a| a.http_status.is_none()
            && a.error.as_deref().unwrap().contains("onnection refused")),
        "{history:?}"
    );
    let e = reason(unauthorized).await;
    assert!(e.contains("HTTP 401"), "{e}");
    assert_eq!(
        store.attempts(unauthorized).await.unwrap().len(),
        1,
        "401 is never retried"
    );
    // The nasty keys round-trip through the database and to the target.
    let bodies: HashSet<String> = partner
        .requests()
        .iter()
        .filter_map(|r| r.json())
        .filter_map(|b| request_code(&b))
        .collect();
    for k in nasty {
        let row = store.find("partner_hoa_don", k).await.unwrap().expect(k);
        assert_eq!(
            (row.key.as_str(), row.id, row.state.as_str()),
            (k, ids[k], "done")
        );
        assert!(bodies.contains(k), "target never got {k:?}");
    }
    assert!(db.scalar("SELECT COUNT(*) FROM ferry_attempts").await > 0);
    let rows = db.rows().await;
    let done = rows.iter().filter(|r| r.state == State::Done).count();
    summary(
        &format!("6 bad input ({backend:?})"),
        "malformed JSON, >1 MiB, empty/long/NUL keys, SQL metacharacters + Unicode keys, unknown workflow, wrong types",
        "target 127.0.0.1:1 (refused), target answering 401",
        rows.len(),
        done,
        &dead_reasons(&rows),
        "n/a",
        0,
        started,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_sqlite() {
    bad_input(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_postgres() {
    bad_input(Backend::Postgres).await;
}

#[test]
fn workflow_file_mistakes_are_named() {
    let text = std::fs::read_to_string(shipped_dir().join("partner_hoa_don.toml")).unwrap();
    let vars: HashMap<&str, &str> = target_vars("http://127.0.0.1:9", "http://127.0.0.1:9")
        .into_iter()
        .collect();
    let lookup = move |n: &str| vars.get(n).map(|v| v.to_string());
    let load =
        |t: String| Registry::from_files(&[(PathBuf::from("partner_hoa_don.toml"), t)], &lookup);
    assert!(load(text.clone()).is_ok());
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{text}\n[reconcile]\nschedule = \"every tuesday at noon\"\nsql = \"SELECT 'x' AS key\"\n"),
            "reconcile.schedule",
        ),
        (format!("{text}\n[reconcile]\nschedule = \"0 61 * * * *\"\nsql = \"SELECT 'x' AS key\"\n"), "reconcile.schedule"),
        (text.replace("timeout = \"30s\"", "timeout = \"soon\""), "request.timeout"),
        (text.replace("method = \"POST\"", "method = \"FETCH\""), "request.method"),
        (text.replace("max_concurrency = 8", "max_concurrency = -1"), "target.max_concurrency"),
        (text.replace("factor = 2.0", "factor = \"two\""), "factor"),
        (text.replace("[request]", "[request]\nretries = 3"), "retries"),
        (text.replace("name = \"partner_hoa_don\"", "name = \"other_name\""), "name"),
        (text.replace("document = \"partner_hoa_don\"", "document = \"pdf\""), "document"),
        (text.replace("${API_BASE_URL}", "${NOT_SET_ANYWHERE}"), "NOT_SET_ANYWHERE"),
        (text.replace("${API_BASE_URL}", "ftp://127.0.0.1"), "base_url"),
        (text.replace("[retry]", "[retry\n"), "partner_hoa_don.toml"),
        (String::new(), "partner_hoa_don.toml"),
        ("\u{0}\u{1}binary".into(), "partner_hoa_don.toml"),
    ];
    for (t, needle) in cases {
        let e = load(t).expect_err(needle).to_string();
        assert!(
            e.contains(needle) && e.contains("partner_hoa_don.toml"),
            "expected '{needle}' in: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_refuses_bad_database_url_and_bad_workflows() {
    let tmp = Tmp::new("badurl");
    let wf = write_workflows(&tmp.join("workflows"), &Shrink::default());
    let base = Env::relay(
        &tmp,
        "sqlite:x.db",
        None,
        &wf,
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
    );
    for url in [
        "mysql://root:pw@127.0.0.1/app",
        "",
        "postgres://",
        "https://example.invalid/db",
        "postgres://postgres@127.0.0.1:1/test",
    ] {
        let (st, _, err) = ferry_once(&base.clone().set("DATABASE_URL", url), &["run"]).await;
        assert!(!st.success(), "DATABASE_URL={url:?} accepted");
        assert!(err.contains("DATABASE_URL"), "DATABASE_URL={url:?}: {err}");
        assert!(!err.contains("pw@") && !err.contains("panicked"), "{err}");
    }
    // Unset: the documented default, a SQLite file ferry.db in the working directory.
    let (st, _, err) = ferry_once(&base.clone().unset("DATABASE_URL"), &["migrate"]).await;
    assert!(st.success(), "{err}");
    assert!(tmp.join("ferry.db").exists());
    // An invalid workflow file: `ferry run` refuses to start and names the file and the field.
    std::fs::write(wf.join("broken.toml"), "name = \"broken\"\ndocument = 42\n").unwrap();
    let (st, _, err) = ferry_once(&base.clone(), &["run"]).await;
    assert!(!st.success());
    assert!(
        err.contains("broken.toml") && err.contains("document"),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------------
// 7. Secrets never leak; TLS verification
// ------------------------------------------------------------------------------------------

const SECRET: &str = "S3cr3t-Пароль-42";

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every form in which the secret could leak.
fn secret_forms() -> Vec<String> {
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    vec![
        SECRET.to_string(),
        percent_encode(SECRET),
        "Пароль".to_string(),
        b64(format!("{ONEC_USER}:{SECRET}")),
        b64(format!("{API_USER}:{SECRET}")),
        b64(SECRET.to_string()),
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for form in secret_forms() {
        assert!(
            !text.contains(&form),
            "{what} contains the secret (as {form:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leak_postgres() {
    let started = Instant::now();
    let tdb = TestDb::new(Backend::Postgres).await;
    seed_shop(&tdb).await;
    let db = Db::of(&tdb.store);
    let onec = TargetServer::start().await.unwrap();
    onec.required_basic_auth(ONEC_USER, SECRET);
    let partner = TargetServer::start().await.unwrap();
    partner.required_basic_auth(API_USER, SECRET);
    // Some failures too, so error paths are logged: a 500 then success, a 400, a 401.
    partner.set_responder(|req, nth| {
        let code = req
            .json()
            .and_then(|b| request_code(&b))
            .unwrap_or_default();
        match code.as_str() {
            "S-500" if nth == 1 => Some(Reply::status(500)),
            "S-400" => Some(Reply::json(400, json!({"error": "bad document"}))),
            "S-401" => Some(Reply::status(401)),
            _ => None,
        }
    });
    let tmp = Tmp::new("secret");
    let wf = write_workflows(&tmp.join("workflows"), &Shrink::default());
    let port = free_port();
    let pg = pg_url();
    let url_with_password = pg.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{}@", percent_encode(SECRET)),
        1,
    );
    assert_ne!(
        url_with_password, pg,
        "FERRY_TEST_PG_URL must be postgres://postgres@…"
    );
    let env = Env::relay(
        &tmp,
        &url_with_password,
        tdb.schema(),
        &wf,
        &onec.base_url(),
        &partner.base_url(),
    )
    .set("ONEC_PASSWORD", SECRET)
    .set("API_PASSWORD", SECRET)
    .set("FERRY_LOG_FORMAT", "json")
    .set("FERRY_LOG", "debug")
    .set("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}"));
    tdb.store
        .enqueue("onec_invoice", "1001", &invoice("INV-2026-001"))
        .await
        .unwrap();
    for k in ["S-1", "S-2", "S-500", "S-400", "S-401"] {
        tdb.store
            .enqueue("partner_hoa_don", k, &json!({ "billCode": k }))
            .await
            .unwrap();
    }
    tdb.store
        .enqueue("partner_hoa_don", "S-invalid", &json!({ "nobillCode": 1 }))
        .await
        .unwrap();
    let mut proc = Proc::spawn(&env, &["run"], "relay");
    assert!(
        wait_until(Duration::from_secs(30), || async { db.live().await == 0 }).await,
        "not settled\n{}",
        proc.output()
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ferry_"), "{metrics}");
    // Operator commands print rows and history.
    let mut outputs = Vec::new();
    for args in [
        vec!["status"],
        vec!["list"],
        vec!["show", "1"],
        vec!["--json", "list", "--state", "dead"],
        vec!["workflows", "check"],
    ] {
        let (_, out, err) = ferry_once(&env, &args).await;
        outputs.push((format!("ferry {args:?}"), format!("{out}\n{err}")));
    }
    proc.stop().await;
    let ok = onec
        .requests()
        .iter()
        .chain(partner.requests().iter())
        .filter(|r| r.basic_auth().is_some_and(|(_, p)| p == SECRET))
        .count();
    assert!(ok >= 6, "the secret was really used ({ok} requests)");

    let mut scanned = vec![
        ("stdout".to_string(), proc.stdout()),
        ("stderr".to_string(), proc.stderr()),
        ("/metrics".to_string(), metrics),
    ];
    scanned.extend(outputs);
    let mut log_files = 0;
    for e in std::fs::read_dir(tmp.join("logs")).unwrap() {
        let p = e.unwrap().path();
        scanned.push((
            p.display().to_string(),
            std::fs::read_to_string(&p).unwrap(),
        ));
        log_files += 1;
    }
    assert!(log_files > 0);
    for table in [
        "ferry_outbox",
        "ferry_attempts",
        "ferry_status",
        "ferry_dead",
        "ferry_stuck",
        "orders",
    ] {
        scanned.push((table.to_string(), db.dump(table).await.join("\n")));
    }
    // Debug output of everything in-process that holds the credentials.
    let registry = load_registry(
        &wf,
        &[
            ("ONEC_BASE_URL", &onec.base_url()),
            ("ONEC_USERNAME", ONEC_USER),
            ("ONEC_PASSWORD", SECRET),
            ("API_BASE_URL", &partner.base_url()),
            ("API_USERNAME", API_USER),
            ("API_PASSWORD", SECRET),
        ],
    );
    scanned.push((
        "Debug(Registry)".into(),
        format!("{registry:?} {registry:#?}"),
    ));
    for w in registry.iter() {
        scanned.push((
            format!("Debug(Workflow {})", w.name),
            format!("{w:?} {:?} {:?}", w.target, w.target.auth),
        ));
    }
    let config: StoreConfig = StoreConfig::new(url_with_password.parse().unwrap());
    scanned.push((
        "Debug(StoreConfig)".into(),
        format!("{config:?} {}", config.url),
    ));
    // An invalid file holding the secret inline: the error must not quote it.
    let bad = std::fs::read_to_string(wf.join("partner_hoa_don.toml"))
        .unwrap()
        .replace(
            "password = \"${API_PASSWORD}\"",
            &format!("password = \"{SECRET}\", pasword = \"{SECRET}\""),
        );
    let lookup = |_: &str| Some("http://127.0.0.1:9".to_string());
    let err = Registry::from_files(&[(PathBuf::from("partner_hoa_don.toml"), bad)], &lookup)
        .expect_err("typo accepted");
    scanned.push(("WorkflowErrors".into(), err.to_string()));
    let mut bytes = 0;
    for (what, text) in &scanned {
        assert_no_secret(what, text);
        bytes += text.len();
    }
    let rows = db.rows().await;
    let done = rows.iter().filter(|r| r.state == State::Done).count();
    println!("secret: scanned {} outputs ({bytes} bytes, {log_files} log files) for {} forms of the secret: none found", scanned.len(), secret_forms().len());
    println!("secret: HttpDeliverer has no Debug implementation (nothing to print)");
    summary(
        "7 secrets (Postgres)",
        "7 rows (1C + partner), password on both targets and in DATABASE_URL, debug JSON logs",
        "500 then 200, 400, 401, invalid document",
        rows.len(),
        done,
        &dead_reasons(&rows),
        "n/a",
        0,
        started,
    );
}

/// A one-connection-at-a-time HTTPS server with a self-signed certificate for 127.0.0.1.
/// Returns its port and counters (handshakes failed, requests served).
async fn tls_server() -> (
    u16,
    Arc<std::sync::atomic::AtomicU32>,
    Arc<std::sync::atomic::AtomicU32>,
) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.key_pair.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (failed, served) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (f, s) = (failed.clone(), served.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, f, s) = (acceptor.clone(), f.clone(), s.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    f.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then Content-Length bytes of body (bounded).
                loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 || buf.len() > 1 << 20 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                s.fetch_add(1, Ordering::SeqCst);
                let body = "{\"ok\":true}";
                let _ = tls
                    .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes())
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, failed, served)
}

fn tls_workflow(port: u16, verify: Option<bool>) -> Registry {
    let tls_line = verify
        .map(|v| format!("tls_verify = {v}\n"))
        .unwrap_or_default();
    let text = format!(
        "name = \"tls_json\"\ndocument = \"json\"\n\n[target]\nname = \"selfsigned\"\nbase_url = \"https://127.0.0.1:{port}\"\nmax_concurrency = 2\nauth = {{ kind = \"none\" }}\n{tls_line}\n[request]\nmethod = \"POST\"\npath = \"/in\"\ntimeout = \"2s\"\n\n[retry]\nwaits = [\"10ms\"]\nretry_on_status = [503]\nretry_on_timeout = true\nretry_on_connect_error = true\n"
    );
    let lookup = |_: &str| None;
    Registry::from_files(&[(PathBuf::from("tls_json.toml"), text)], &lookup)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verification_refuses_self_signed_unless_disabled() {
    use std::sync::atomic::Ordering;
    let tdb = TestDb::new(Backend::Sqlite).await;
    let (port, failed, served) = tls_server().await;

    // Default (tls_verify unset): the certificate is refused, retried as a connection failure.
    let registry = tls_workflow(port, None);
    assert!(registry.get("tls_json").unwrap().target.tls_verify);
    let id = tdb
        .store
        .enqueue("tls_json", "t-1", &json!({"n": 1}))
        .await
        .unwrap()
        .id;
    let relay = Relay::new(
        tdb.store.clone(),
        Arc::new(HttpDeliverer::new(&registry).unwrap()),
        RelayConfig::default(),
    );
    let end = Instant::now() + Duration::from_secs(20);
    while tdb.state_of(id).await != State::Dead {
        assert!(Instant::now() < end, "did not settle");
        relay.tick().await.unwrap();
    }
    let history = tdb.store.attempts(id).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(
        history[0].outcome,
        AttemptOutcome::Retry,
        "a certificate failure is retryable (connection failure)"
    );
    for a in &history {
        let e = a.error.as_deref().unwrap_or("").to_lowercase();
        assert!(
            e.contains("certificate") || e.contains("unknownissuer"),
            "{e}"
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 0);
    assert!(failed.load(Ordering::SeqCst) >= 2);
    println!("tls: verify on: {:?}", history[0].error);

    // tls_verify = false: delivered, and a warning says verification is off.
    let registry = tls_workflow(port, Some(false));
    let buf = Captured::default();
    let b2 = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || b2.clone())
        .with_ansi(false)
        .finish();
    let deliverer =
        tracing::subscriber::with_default(subscriber, || HttpDeliverer::new(&registry).unwrap());
    let logged = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("WARN") && logged.contains("tls_verify = false"),
        "{logged}"
    );
    let id = tdb
        .store
        .enqueue("tls_json", "t-2", &json!({"n": 2}))
        .await
        .unwrap()
        .id;
    let relay = Relay::new(
        tdb.store.clone(),
        Arc::new(deliverer),
        RelayConfig::default(),
    );
    relay.tick().await.unwrap();
    assert_eq!(tdb.state_of(id).await, State::Done);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    println!("tls: verify off: delivered; warning: {}", logged.trim());
}

// ------------------------------------------------------------------------------------------
// 5. SQLite on a full, then read-only, file system
// ------------------------------------------------------------------------------------------

/// A small tmpfs mounted for the test (the tests run as root, which ignores permission bits, so
/// chmod proves nothing; a real file system that is full or read-only does). Unmounted on Drop.
struct SmallFs {
    dir: Tmp,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = Tmp::new("smallfs");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs { dir })
    }

    /// Remount with `opts`. A just-closed SQLite connection releases its file on its worker
    /// thread, so a read-only remount may be refused as busy for a moment: retry until it is
    /// accepted, for at most five seconds.
    fn remount(&self, opts: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let st = std::process::Command::new("mount")
                .args(["-o", &format!("remount,{opts}")])
                .arg(self.dir.path())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if st.success() {
                return;
            }
            if Instant::now() >= deadline {
                let held = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("ls -l /proc/$PPID/fd /proc/$PPID/task/*/fd 2>/dev/null | grep {} ; grep {} /proc/$PPID/maps", self.dir.path().display(), self.dir.path().display()))
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!("remount {opts} refused for 5 s; held: {held}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn integrity(path: &Path) -> String {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}?mode=ro", path.display()))
        .await
        .unwrap();
    let r: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_and_read_only() {
    let started = Instant::now();
    let Some(fs) = SmallFs::mount("600k") else {
        // No privilege to mount: fall back to PRAGMA max_page_count on the enqueue connection.
        println!("SKIPPED-BY-ENVIRONMENT: cannot mount a tmpfs here; see sqlite_page_limit_full");
        return;
    };
    let path = fs.dir.join("ferry.db");
    let store = Store::open(&StoreConfig::new(ferry::outbox::DatabaseUrl::Sqlite(
        path.display().to_string(),
    )))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let db = Db::of(&store);
    let target = TargetServer::start().await.unwrap();
    let acc = accepting_target(&target);
    let tmp = Tmp::new("full");
    let dir = write_workflows(&tmp.join("workflows"), &Shrink::default());
    let url = target.base_url();
    let registry = load_registry(&dir, &target_vars(&url, &url));

    // Fill the file system with intents of ~20 KiB until the database says it is full.
    let pad = "x".repeat(20 * 1024);
    let mut committed = Vec::new();
    let mut full_error = None;
    for i in 0..200 {
        let key = format!("F-{i}");
        match store
            .enqueue(
                "partner_hoa_don",
                &key,
                &json!({ "billCode": key, "pad": pad }),
            )
            .await
        {
            Ok(_) => committed.push(key),
            Err(e) => {
                full_error = Some(e.to_string());
                break;
            }
        }
    }
    // Every intent `enqueue` reported as created must be in the table.
    let in_table = db.scalar("SELECT COUNT(*) FROM ferry_outbox").await;
    assert_eq!(
        in_table as usize,
        committed.len(),
        "Store::enqueue returned Ok for {} intents on a full disk, but only {in_table} are in ferry_outbox: \
         the commit failed (SQLITE_FULL) and the error was swallowed",
        committed.len()
    );
    let full_error = full_error.expect("600 KiB never filled up");
    println!("full: after {} intents: {full_error}", committed.len());
    assert!(
        full_error.contains("full"),
        "not a clear disk-full error: {full_error}"
    );
    assert!(!committed.is_empty());
    // The relay cannot record outcomes either; it must neither crash nor corrupt anything.
    let relay = Relay::new(
        store.clone(),
        Arc::new(HttpDeliverer::new(&registry).unwrap()),
        RelayConfig::default(),
    );
    let tick = relay.tick().await;
    println!(
        "full: a relay tick on the full disk: {:?}",
        tick.as_ref().map(|r| r.claimed).map_err(|e| e.to_string())
    );
    assert_eq!(integrity(&path).await, "ok");

    // More room: everything proceeds.
    fs.remount("size=16m");
    let late = store
        .enqueue(
            "partner_hoa_don",
            "F-late",
            &json!({ "billCode": "F-late" }),
        )
        .await
        .unwrap();
    committed.push("F-late".into());
    assert!(run_relay_until_settled(&db, &store, &registry, Duration::from_secs(30)).await);
    assert_eq!(store.get(late.id).await.unwrap().state, State::Done);

    // Read-only: Linux refuses to remount read-only while any file on it is open for writing
    // (and any process of this test binary may briefly hold one across a fork), so copy the
    // closed database to a second tmpfs that nothing has opened and make that one read-only.
    // Opening (or writing) it fails with a clear error.
    store.close().await;
    let sqlite_url = || {
        StoreConfig::new(ferry::outbox::DatabaseUrl::Sqlite(
            path.display().to_string(),
        ))
    };
    let ro_fs = SmallFs::mount("16m").expect("a second tmpfs");
    let ro_path = ro_fs.dir.join("ferry.db");
    std::fs::copy(&path, &ro_path).unwrap();
    ro_fs.remount("ro");
    let err = match Store::open(&StoreConfig::new(ferry::outbox::DatabaseUrl::Sqlite(
        ro_path.display().to_string(),
    )))
    .await
    {
        Err(e) => e.to_string(),
        Ok(ro) => ro
            .enqueue("partner_hoa_don", "R-1", &json!({ "billCode": "R-1" }))
            .await
            .expect_err("enqueue on a read-only file system")
            .to_string(),
    };
    println!("read-only: {err}");
    assert!(
        err.contains("readonly")
            || err.contains("read-only")
            || err.contains("I/O")
            || err.contains("unable to open"),
        "{err}"
    );
    assert_eq!(integrity(&path).await, "ok");
    let store = Store::open(&sqlite_url()).await.unwrap();
    let db = Db::of(&store);
    store
        .enqueue("partner_hoa_don", "R-2", &json!({ "billCode": "R-2" }))
        .await
        .unwrap();
    committed.push("R-2".into());
    assert!(run_relay_until_settled(&db, &store, &registry, Duration::from_secs(30)).await);
    store.close().await;
    assert_eq!(integrity(&path).await, "ok");
    let store = Store::open(&StoreConfig::new(ferry::outbox::DatabaseUrl::Sqlite(
        path.display().to_string(),
    )))
    .await
    .unwrap();
    let db = Db::of(&store);
    let expected: HashSet<String> = committed.iter().cloned().collect();
    let v = verify(&db, &target, &expected, &acc).await;
    assert_eq!(v.lost, 0);
    assert_eq!(v.done, expected.len());
    store.close().await;
    summary(
        "5 disk full / read-only (SQLite)",
        &format!(
            "{} partner rows of ~20 KiB on a 600 KiB tmpfs",
            expected.len()
        ),
        "ENOSPC (SQLITE_FULL), then tmpfs grown; a copy on a read-only tmpfs",
        v.committed,
        v.done,
        &v.dead,
        &v.duplicates.to_string(),
        v.lost,
        started,
    );
}

/// Where mounting is impossible: the same error path through `PRAGMA max_page_count` on the
/// connection that enqueues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_page_limit_full() {
    let tdb = TestDb::new(Backend::Sqlite).await;
    let pool = tdb.store.sqlite_pool().unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("PRAGMA max_page_count = {}", pages + 2))
        .execute(&mut *conn)
        .await
        .unwrap();
    let pad = "y".repeat(64 * 1024);
    let mut err = None;
    for i in 0..50 {
        if let Err(e) = ferry::enqueue(
            &mut *conn,
            "partner_hoa_don",
            &format!("P-{i}"),
            &json!({ "billCode": i.to_string(), "pad": pad }),
        )
        .await
        {
            err = Some(e.to_string());
            break;
        }
    }
    let err = err.expect("page limit never hit");
    assert!(err.contains("full"), "{err}");
    sqlx::raw_sql("PRAGMA max_page_count = 1073741823")
        .execute(&mut *conn)
        .await
        .unwrap();
    ferry::enqueue(
        &mut *conn,
        "partner_hoa_don",
        "P-after",
        &json!({ "billCode": "P-after" }),
    )
    .await
    .unwrap();
    let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(ok, "ok");
    println!("page limit: {err}");
}
