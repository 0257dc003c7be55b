//! `ferry_enqueue(workflow, key, payload)` on PostgreSQL (migration 0003), from SQL and from the
//! example clients in other languages (`examples/python/enqueue.py`, `examples/node/enqueue.mjs`),
//! each run for real against a schema of its own. `.ci/run` installs their packages (psycopg in
//! `examples/python/.venv`, pg with `npm ci` in `examples/node`); a missing interpreter or package
//! fails these tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::helpers::{pg_url, Backend, TestDb};

/// A connection to the test database, with `search_path` set to `schema` (or the server's
/// default when `None`).
async fn connect(schema: Option<&str>) -> PgConnection {
    let mut c = PgConnection::connect(&pg_url()).await.unwrap();
    if let Some(schema) = schema {
        sqlx::query(&format!("SET search_path = \"{schema}\""))
            .execute(&mut c)
            .await
            .unwrap();
    }
    c
}

async fn enqueue(c: &mut PgConnection, workflow: &str, key: &str, payload: &str) -> i64 {
    sqlx::query_scalar("SELECT ferry_enqueue($1, $2, $3::jsonb)")
        .bind(workflow)
        .bind(key)
        .bind(payload)
        .fetch_one(c)
        .await
        .unwrap_or_else(|e| panic!("ferry_enqueue({workflow}, {key}): {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_enqueue_returns_the_id_once_per_key_and_follows_the_transaction() {
    let db = TestDb::new(Backend::Postgres).await;
    let schema = db.schema().unwrap().to_string();
    let mut c = connect(Some(&schema)).await;

    let id = enqueue(&mut c, "partner_hoa_don", "HD-1", r#"{"billCode": "HD-1"}"#).await;
    let row = db.store.get(id).await.unwrap();
    assert_eq!(
        (row.workflow.as_str(), row.key.as_str(), row.state.as_str()),
        ("partner_hoa_don", "HD-1", "pending")
    );
    assert!(row.payload.contains("HD-1"), "{row:?}");
    // Dedupe: the same (workflow, key) gives the same id and adds nothing, whatever the payload
    // and the row's state.
    assert_eq!(enqueue(&mut c, "partner_hoa_don", "HD-1", "{}").await, id);
    db.exec(&format!(
        "UPDATE ferry_outbox SET state = 'dead' WHERE id = {id}"
    ))
    .await
    .unwrap();
    assert_eq!(enqueue(&mut c, "partner_hoa_don", "HD-1", "{}").await, id);
    assert_eq!(
        db.scalar("SELECT count(*) FROM ferry_outbox WHERE key = 'HD-1'")
            .await,
        1
    );
    assert_eq!(db.state_of(id).await, ferry::outbox::State::Dead);
    // Another workflow with the same key is another intent.
    let other = enqueue(&mut c, "partner_phieu_nhap", "HD-1", "{}").await;
    assert_ne!(other, id);

    // In the caller's transaction: rolled back, no intent; committed, the intent.
    let mut tx = c.begin().await.unwrap();
    let gone = enqueue(&mut tx, "partner_hoa_don", "HD-2", "{}").await;
    tx.rollback().await.unwrap();
    assert!(db
        .store
        .find("partner_hoa_don", "HD-2")
        .await
        .unwrap()
        .is_none());
    assert!(db.store.get(gone).await.is_err());
    let mut tx = c.begin().await.unwrap();
    let kept = enqueue(&mut tx, "partner_hoa_don", "HD-2", "{}").await;
    tx.commit().await.unwrap();
    assert_eq!(
        db.store
            .find("partner_hoa_don", "HD-2")
            .await
            .unwrap()
            .unwrap()
            .id,
        kept
    );

    // The database's guards apply as for a plain INSERT.
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(1024 * 1024 + 1));
    for (workflow, key, payload, needle) in [
        ("partner_hoa_don", "HD-3", big.as_str(), "over the limit"),
        ("", "HD-3", "{}", "ferry_outbox_workflow_check"),
        ("partner_hoa_don", "", "{}", "ferry_outbox_key_check"),
    ] {
        let e = sqlx::query_scalar::<_, i64>("SELECT ferry_enqueue($1, $2, $3::jsonb)")
            .bind(workflow)
            .bind(key)
            .bind(payload)
            .fetch_one(&mut c)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{e}");
    }
    let e = sqlx::query_scalar::<_, i64>("SELECT ferry_enqueue('partner_hoa_don', NULL, '{}')")
        .fetch_one(&mut c)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("null value"), "{e}");

    // Callers whose search_path does not hold Ferry's schema name it; the function still finds
    // its own table.
    let mut elsewhere = connect(None).await;
    let id3: i64 = sqlx::query_scalar(&format!(
        "SELECT \"{schema}\".ferry_enqueue('partner_hoa_don', 'HD-4', '{{}}')"
    ))
    .fetch_one(&mut elsewhere)
    .await
    .unwrap();
    assert_eq!(
        db.store
            .find("partner_hoa_don", "HD-4")
            .await
            .unwrap()
            .unwrap()
            .id,
        id3
    );
}

/// Two transactions enqueue the same key at once: the second waits for the first and, once it
/// commits, gets its id; if it rolls back, the second inserts its own row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_of_one_key_make_one_row() {
    let db = TestDb::new(Backend::Postgres).await;
    let schema = db.schema().unwrap().to_string();
    for commit_first in [true, false] {
        let key = format!("HD-C-{commit_first}");
        let mut a = connect(Some(&schema)).await;
        let mut b = connect(Some(&schema)).await;
        let mut tx_a = a.begin().await.unwrap();
        let first = enqueue(&mut tx_a, "partner_hoa_don", &key, "{}").await;
        let key_b = key.clone();
        let second = tokio::spawn(async move {
            let mut tx_b = b.begin().await.unwrap();
            let id = enqueue(&mut tx_b, "partner_hoa_don", &key_b, "{}").await;
            tx_b.commit().await.unwrap();
            id
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "the second enqueue must wait for the first"
        );
        if commit_first {
            tx_a.commit().await.unwrap();
            assert_eq!(second.await.unwrap(), first);
        } else {
            tx_a.rollback().await.unwrap();
            let id = second.await.unwrap();
            assert_ne!(id, first);
            assert_eq!(
                db.store
                    .find("partner_hoa_don", &key)
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
                id
            );
        }
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM ferry_outbox WHERE key = '{key}'"
            ))
            .await,
            1
        );
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

const SETUP: &str = "set the examples up as `.ci/run` does: \
    `python3 -m venv examples/python/.venv && examples/python/.venv/bin/pip install -r examples/python/requirements.txt` \
    and `npm ci --prefix examples/node`";

/// Run an example client against the test's schema; its one JSON line of output.
fn run_example(program: &Path, script: &Path, cwd: &Path, db: &TestDb) -> Value {
    let mut cmd = Command::new(program);
    cmd.arg(script)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", pg_url())
        .env("FERRY_SCHEMA", db.schema().unwrap());
    if let Ok(home) = std::env::var("HOME") {
        cmd.env("HOME", home);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} {}: {e}; {SETUP}",
            program.display(),
            script.display()
        )
    });
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{} {} failed ({:?}); {SETUP}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        program.display(),
        script.display(),
        out.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// What an example reported, checked against the database itself.
async fn check_example(db: &TestDb, report: &Value, prefix: &str) {
    let key = report["committed"]["key"].as_str().unwrap();
    assert!(key.starts_with(prefix), "{report}");
    let id = report["committed"]["id"].as_i64().unwrap();
    assert_eq!(report["duplicate_id"].as_i64(), Some(id), "{report}");
    let row = db
        .store
        .find("partner_hoa_don", key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.id, row.state.as_str()), (id, "pending"));
    let stored = db.store.get(id).await.unwrap();
    let payload: Value = serde_json::from_str(&stored.payload).unwrap();
    assert_eq!(payload["billCode"], key, "{payload}");
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM example_payments WHERE bill_code = '{key}'"
        ))
        .await,
        1
    );
    let declined = report["rolled_back"]["key"].as_str().unwrap();
    assert!(db
        .store
        .find("partner_hoa_don", declined)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM example_payments WHERE bill_code = '{declined}'"
        ))
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_enqueues_in_its_transaction() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = examples().join("python");
    provision(
        &dir,
        ".venv/bin/python",
        "python3 -m venv .venv && .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt",
    );
    let venv = dir.join(".venv/bin/python");
    let python = if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    };
    let report = run_example(&python, Path::new("enqueue.py"), &dir, &db);
    check_example(&db, &report, "HD-PY-").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_enqueues_in_its_transaction() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = examples().join("node");
    provision(
        &dir,
        "node_modules/pg",
        "npm ci --no-audit --no-fund --silent",
    );
    assert!(
        dir.join("node_modules/pg").is_dir(),
        "examples/node/node_modules/pg is missing; {SETUP}"
    );
    let report = run_example(Path::new("node"), Path::new("enqueue.mjs"), &dir, &db);
    check_example(&db, &report, "HD-JS-").await;
}

/// On a fresh machine the README's test command must pass on its own: install an example's
/// packages when `marker` is missing (as `.ci/run` does). A failed install makes the test fail
/// below with the set-up command; it is never skipped.
fn provision(dir: &Path, marker: &str, command: &str) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if dir.join(marker).exists() {
        return;
    }
    eprintln!(
        "{}: installing the example's packages: {command}",
        dir.display()
    );
    let _ = std::process::Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .status();
}
