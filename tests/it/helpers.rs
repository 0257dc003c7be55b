//! Test helpers: a fresh database per test (a SQLite file in a temp directory, or a PostgreSQL
//! schema of its own in the `test` database), a counting sink, and waiting on conditions with a
//! deadline instead of sleeping.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::outbox::{AttemptRecord, Claimed, DatabaseUrl, Outcome, State, Store, StoreConfig};
use ferry::relay::{Deliver, Delivery};

/// The PostgreSQL server tests use. CI starts it; if it cannot be reached the tests fail.
pub fn pg_url() -> String {
    std::env::var("FERRY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of the test's own, removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub config: StoreConfig,
    pub store: Store,
    dir: Option<std::path::PathBuf>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let (config, dir) = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("ferry-test-{tag}"));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("ferry.db");
                (
                    StoreConfig::new(DatabaseUrl::Sqlite(path.display().to_string())),
                    Some(dir),
                )
            }
            Backend::Postgres => {
                let mut c = StoreConfig::new(pg_url().parse().unwrap());
                c.schema = Some(format!("ferry_t_{tag}"));
                (c, None)
            }
        };
        let store = Store::open(&config)
            .await
            .unwrap_or_else(|e| panic!("test database for {backend:?} unavailable: {e}"));
        store.migrate().await.expect("migrate");
        TestDb {
            backend,
            config,
            store,
            dir,
        }
    }

    /// Another store (its own pool, so its own connections) on the same database: a second
    /// relay process, as far as the database can tell.
    pub async fn second_store(&self) -> Store {
        Store::open(&self.config).await.expect("second store")
    }

    #[allow(dead_code)]
    pub fn database_url(&self) -> String {
        match self.backend {
            Backend::Sqlite => format!(
                "sqlite:{}",
                self.dir.as_ref().unwrap().join("ferry.db").display()
            ),
            Backend::Postgres => pg_url(),
        }
    }

    #[allow(dead_code)]
    pub fn schema(&self) -> Option<&str> {
        self.config.schema.as_deref()
    }

    /// Run one SQL statement with no result.
    pub async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => Ok(sqlx::query(sql)
                .execute(self.store.sqlite_pool().unwrap())
                .await?
                .rows_affected()),
            Backend::Postgres => Ok(sqlx::query(sql)
                .execute(self.store.pg_pool().unwrap())
                .await?
                .rows_affected()),
        }
    }

    /// Run a query returning one i64.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(self.store.sqlite_pool().unwrap())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Backend::Postgres => sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(self.store.pg_pool().unwrap())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    pub async fn state_of(&self, id: i64) -> State {
        self.store.get(id).await.unwrap().state
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(schema) = self.config.schema.clone() {
            // Drop the schema on a thread of its own: Drop cannot await, and the test's runtime
            // may be shutting down.
            let url = pg_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .execute(&mut c)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Run `$body(TestDb)` once per backend as two tests named `sqlite` and `postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::helpers::TestDb::new($crate::helpers::Backend::Sqlite).await)
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::helpers::TestDb::new($crate::helpers::Backend::Postgres).await)
                    .await
            }
        }
    };
}

/// Wait until `cond` holds, checking every 10 ms, for at most `deadline`. Returns whether it held.
pub async fn wait_until<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

type Script = dyn Fn(&Claimed) -> Outcome + Send + Sync;

/// A sink that counts deliveries per outbox id and answers as its script says.
pub struct CountingSink {
    pub seen: Mutex<HashMap<i64, u32>>,
    pub total: AtomicUsize,
    pub script: Box<Script>,
    pub min_lease: Duration,
}

impl CountingSink {
    pub fn ok() -> Arc<CountingSink> {
        Self::with(|_| Outcome::Done)
    }

    pub fn with(f: impl Fn(&Claimed) -> Outcome + Send + Sync + 'static) -> Arc<CountingSink> {
        Arc::new(CountingSink {
            seen: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            script: Box::new(f),
            min_lease: Duration::ZERO,
        })
    }

    pub fn count(&self, id: i64) -> u32 {
        self.seen.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn duplicates(&self) -> Vec<(i64, u32)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (*k, *n))
            .collect()
    }
}

impl Deliver for CountingSink {
    async fn deliver(&self, row: &Claimed) -> Delivery {
        let started_at = chrono::Utc::now();
        *self.seen.lock().unwrap().entry(row.id).or_insert(0) += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        let outcome = (self.script)(row);
        Delivery {
            record: Some(AttemptRecord {
                started_at,
                duration: Duration::from_micros(50),
                http_status: Some(match outcome {
                    Outcome::Done => 200,
                    Outcome::Dead { .. } => 400,
                    _ => 503,
                }),
                error: outcome.error().map(str::to_string),
                response_excerpt: Some("{\"ok\":true}".into()),
            }),
            outcome,
            on_done: None,
            code: None,
        }
    }

    fn min_lease(&self) -> Duration {
        self.min_lease
    }
}

/// Credentials the tests' 1C plays with: a Cyrillic user name, as real 1C installations have.
pub const ONEC_USER: &str = "Администратор";
pub const ONEC_PASSWORD: &str = "пароль-1С";
pub const API_USER: &str = "đối_tác";
pub const API_PASSWORD: &str = "mật-khẩu";

/// The shipped workflow files, pointed at `target` through their environment variables, with
/// textual edits per file (`(file stem, from, to)`), e.g. to shrink retry waits.
pub fn shipped_registry(target: &str, edits: &[(&str, &str, &str)]) -> ferry::workflow::Registry {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
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
        files.push((path, text));
    }
    let target = target.to_string();
    let env = move |name: &str| -> Option<String> {
        match name {
            "ONEC_BASE_URL" | "API_BASE_URL" => Some(target.clone()),
            "ONEC_USERNAME" => Some(ONEC_USER.into()),
            "ONEC_PASSWORD" => Some(ONEC_PASSWORD.into()),
            "API_USERNAME" => Some(API_USER.into()),
            "API_PASSWORD" => Some(API_PASSWORD.into()),
            _ => None,
        }
    };
    ferry::workflow::Registry::from_files(&files, &env).unwrap_or_else(|e| panic!("{e}"))
}

/// Create the example shop schema and one paid order (id 1001) with two items.
pub async fn seed_shop(db: &TestDb) {
    db.store
        .execute_script(include_str!("../../examples/shop/schema.sql"))
        .await
        .unwrap();
    db.store
        .execute_script(
            "INSERT INTO customers (id, name, phone, address) VALUES (1, 'Иван Иванов', '+79991234567', 'Москва, ул. Ленина, 1');
             INSERT INTO orders (id, customer_id, status, invoice_number, invoice_date, delivery_cost)
                  VALUES (1001, 1, 'paid', 'INV-2026-001', '2026-02-13', 500);
             INSERT INTO order_items VALUES (1001, 1, 'ФР-00000044', 'Варочная панель', 2, 122334);
             INSERT INTO order_items VALUES (1001, 2, 'ФР-00000045', 'Вытяжка', 1, 15000.50);",
        )
        .await
        .unwrap();
}

/// What a test's environment for the `ferry` binary provides: the command line and the working
/// directory (where a child's output files go).
pub trait ChildEnv {
    fn command(&self, args: &[&str]) -> std::process::Command;
    fn cwd(&self) -> &std::path::Path;
}

/// A `ferry` child with its output in files. Dropping it kills it (SIGKILL) and reaps it.
pub struct Proc {
    pub child: std::process::Child,
    pub name: String,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl Proc {
    pub fn spawn(env: &impl ChildEnv, args: &[&str], name: &str) -> Proc {
        let stdout = env.cwd().join(format!("{name}.stdout"));
        let stderr = env.cwd().join(format!("{name}.stderr"));
        let child = env
            .command(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn ferry");
        Proc {
            child,
            name: name.into(),
            stdout,
            stderr,
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn output(&self) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- {} stdout (tail)\n{}\n--- {} stderr (tail)\n{}",
            self.name,
            tail(self.stdout()),
            self.name,
            tail(self.stderr())
        )
    }

    pub fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("{} exited early with {st}\n{}", self.name, self.output());
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.assert_running();
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub fn sigterm(&self) {
        let st = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(st.success());
    }

    pub async fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "{} did not exit within {deadline:?}\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then a clean exit 0 within 20 s.
    pub async fn stop(&mut self) {
        self.sigterm();
        let st = self.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(
            st.code(),
            Some(0),
            "{} on SIGTERM\n{}",
            self.name,
            self.output()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
