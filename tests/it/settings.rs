//! Settings and logs, through the real `ferry` binary: extreme values are refused by name at
//! start-up (never a panic, never a relay that starts and then fails every claim), `workflows
//! check` refuses what `run` refuses, a logged value cannot forge a log line, and start-up logs
//! say each thing once without the database's migration notices.
//!
//! Each test has a working directory of its own and sets every variable on the child only (the
//! environment is cleared first); children are killed if a test fails (see [`Proc`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ferry::outbox::State;
use ferry::testkit::{Reply, TargetServer};
use serde_json::json;

use crate::helpers::{wait_until, Backend, ChildEnv, Proc, TestDb, API_PASSWORD, API_USER};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn shipped_workflows() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workflows")
        .display()
        .to_string()
}

/// A working directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("ferry-set-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
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

/// A child's working directory and complete environment.
#[derive(Clone)]
struct Env {
    cwd: PathBuf,
    vars: Vec<(String, String)>,
}

impl Env {
    /// A SQLite file in `tmp` (or `db`), the shipped workflows with both targets at `target`,
    /// logs in `tmp/logs`, metrics on an ephemeral port, a quick fallback poll.
    fn new(tmp: &TempDir, db: Option<&TestDb>, target: &str) -> Env {
        let mut env = Env {
            cwd: tmp.0.clone(),
            vars: Vec::new(),
        };
        if let Ok(path) = std::env::var("PATH") {
            env = env.set("PATH", &path);
        }
        let url = match db {
            Some(db) => db.database_url(),
            None => format!("sqlite:{}", tmp.join("ferry.db").display()),
        };
        env = env
            .set("DATABASE_URL", &url)
            .set("FERRY_WORKFLOWS", &shipped_workflows())
            .set("FERRY_LOG_DIR", &tmp.join("logs").display().to_string())
            .set("FERRY_METRICS_ADDR", "127.0.0.1:0")
            .set("FERRY_POLL_INTERVAL", "200ms");
        if let Some(schema) = db.and_then(TestDb::schema) {
            env = env.set("FERRY_SCHEMA", schema);
        }
        for (k, v) in [
            ("ONEC_BASE_URL", target),
            ("ONEC_USERNAME", "ferry"),
            ("ONEC_PASSWORD", "secret"),
            ("API_BASE_URL", target),
            ("API_USERNAME", API_USER),
            ("API_PASSWORD", API_PASSWORD),
        ] {
            env = env.set(k, v);
        }
        env
    }

    fn set(mut self, k: &str, v: &str) -> Env {
        self.vars.retain(|(n, _)| n != k);
        self.vars.push((k.to_string(), v.to_string()));
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

/// Exit code and output of a command that must finish on its own within 20 s (the child is
/// killed if the test gives up).
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

async fn ferry(env: &Env, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::from(env.command(args));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        cmd.spawn().expect("spawn ferry").wait_with_output(),
    )
    .await
    .unwrap_or_else(|_| panic!("ferry {args:?} did not finish within 20 s"))
    .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Exit 1 with `ferry: error: NAME: …` naming the value and the range: a refusal, not a panic
/// (101) or a run that never ends.
fn assert_refused(out: &Out, name: &str, value: &str, range: &str) {
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("no line names {name}: {out:?}"));
    assert!(
        line.contains(&format!("'{value}'")) && line.contains(range),
        "{out:?}"
    );
}

/// The daily log files under `tmp/logs`, concatenated.
fn log_files(tmp: &TempDir) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(tmp.join("logs")).into_iter().flatten() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Extreme settings

/// Values past what tokio, `Instant` or the database can hold used to panic at start-up
/// (concurrency beyond the semaphore's maximum), panic later on SIGTERM (the grace deadline), or
/// start a relay whose every claim failed (a lease interval PostgreSQL cannot represent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_extreme_settings_by_name() {
    let tmp = TempDir::new();
    let env = Env::new(&tmp, None, "http://127.0.0.1:9");
    for (name, value, range) in [
        ("FERRY_CONCURRENCY", "2305843009213693952", "1..=10000"),
        ("FERRY_BATCH_SIZE", "4294967296", "1..=10000"),
        ("FERRY_SHUTDOWN_GRACE", "18446744073709551615s", "0s..=1h"),
        ("FERRY_LEASE_MARGIN", "100000000d", "1s..=24h"),
        ("FERRY_POLL_INTERVAL", "0s", "10ms..=1h"),
        ("FERRY_RETENTION", "1000000y", "1h..=3650d"),
        ("FERRY_DB_MAX_CONNECTIONS", "1", "2..=1000"),
    ] {
        let out = ferry(&env.clone().set(name, value), &["run"]).await;
        assert_refused(&out, name, value, range);
    }
    assert!(
        !tmp.join("ferry.db").exists(),
        "the database was opened before the settings were checked"
    );

    // The ranges are in the help text too.
    let help = ferry(&env, &["--help"]).await;
    assert_eq!(help.code, Some(0), "{help:?}");
    let line = help
        .stdout
        .lines()
        .find(|l| l.contains("FERRY_CONCURRENCY"))
        .unwrap_or_else(|| panic!("{help:?}"));
    assert!(line.contains("allowed: 1..=10000"), "{line}");
}

/// `ferry workflows check` said "valid" for files `ferry run` then refused: a target URL with
/// port 99999 only failed when the HTTP client parsed it at start-up, and a metrics address with
/// that port only when it was bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_check_refuses_what_run_refuses() {
    let tmp = TempDir::new();
    let env = Env::new(&tmp, None, "http://127.0.0.1:9");
    let out = ferry(&env, &["workflows", "check"]).await;
    assert_eq!(out.code, Some(0), "the shipped files are valid: {out:?}");

    let bad_url = env.clone().set("ONEC_BASE_URL", "http://127.0.0.1:99999");
    for args in [&["workflows", "check"][..], &["run"][..]] {
        let out = ferry(&bad_url, args).await;
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert!(
            out.stderr.lines().any(|l| l.contains("onec_invoice.toml")
                && l.contains("target.base_url")
                && l.contains("invalid port number")),
            "{args:?}: {out:?}"
        );
    }
    let out = ferry(&bad_url, &["--json", "workflows", "check"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let errors: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(errors["errors"][0]["field"], "target.base_url", "{out:?}");

    let bad_addr = env.clone().set("FERRY_METRICS_ADDR", "127.0.0.1:99999");
    for args in [&["workflows", "check"][..], &["run"][..]] {
        let out = ferry(&bad_addr, args).await;
        assert_refused(&out, "FERRY_METRICS_ADDR", "127.0.0.1:99999", "0..=65535");
    }
    assert!(
        !tmp.join("ferry.db").exists(),
        "run went as far as the database"
    );
}

// ---------------------------------------------------------------------------------------------
// Logs

const FORGED: &str = "2026-12-01T00:00:00Z INFO ferry: delivered fake";

/// A key with a line break in it, delivered by `ferry run`: the `delivered` line used to carry
/// the key raw, so the log (terminal and file) showed a second, forged `INFO … delivered` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cannot_forge_log_lines() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tmp = TempDir::new();
    let target = TargetServer::start().await.unwrap();
    target.required_basic_auth(API_USER, API_PASSWORD);
    target.default_reply(Reply::ok());
    let key = format!("K\n{FORGED}");
    let row = db
        .store
        .enqueue(
            "partner_phieu_nhap",
            &key,
            &json!({ "invoiceCode": "PN-1" }),
        )
        .await
        .unwrap();
    let env = Env::new(&tmp, Some(&db), &target.base_url());

    let mut run = Proc::spawn(&env, &["run"], "run");
    let done = wait_until(Duration::from_secs(20), || async {
        db.state_of(row.id).await == State::Done
    })
    .await;
    run.assert_running();
    assert!(done, "the row was not delivered\n{}", run.output());
    run.stop().await;

    let escaped = format!(r"key=K\n{FORGED}");
    for (what, text) in [
        ("stderr", run.stderr()),
        ("logs/ferry.log", log_files(&tmp)),
    ] {
        assert!(
            !text.lines().any(|l| l.starts_with(FORGED)),
            "{what} has the forged line:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains(" INFO ") && l.contains("delivered") && l.contains(&escaped)),
            "{what} has no delivered line with the escaped key:\n{text}"
        );
    }
}

/// `ferry run` on PostgreSQL used to log sqlx's NOTICEs from the start-up migration (`relation
/// … already exists, skipping`) at INFO, and the metrics address twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_logs_have_no_migration_notices_and_say_things_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let tmp = TempDir::new();
    let env = Env::new(&tmp, Some(&db), "http://127.0.0.1:9");

    let mut run = Proc::spawn(&env, &["run"], "run");
    let started = wait_until(Duration::from_secs(20), || async {
        run.stderr().contains("ferry relay running")
    })
    .await;
    run.assert_running();
    assert!(started, "{}", run.output());
    run.stop().await;

    for (what, text) in [
        ("stderr", run.stderr()),
        ("logs/ferry.log", log_files(&tmp)),
    ] {
        assert!(
            !text.contains("already exists") && !text.contains("sqlx"),
            "{what} has sqlx's notices:\n{text}"
        );
        let metrics_lines = text.lines().filter(|l| l.contains("/metrics")).count();
        assert_eq!(metrics_lines, 1, "{what}:\n{text}");
    }

    // Asked for, they are there.
    let mut debug = Proc::spawn(
        &env.clone().set("FERRY_LOG", "info,sqlx=info"),
        &["run"],
        "debug",
    );
    let noticed = wait_until(Duration::from_secs(20), || async {
        debug.stderr().contains("ferry relay running")
    })
    .await;
    debug.assert_running();
    assert!(noticed, "{}", debug.output());
    debug.stop().await;
    assert!(
        debug.stderr().contains("already exists, skipping"),
        "{}",
        debug.output()
    );
}
