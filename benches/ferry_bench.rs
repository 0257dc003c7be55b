//! Ferry's performance benchmark: enqueue rate, end-to-end delivery rate, pickup latency, peak
//! RSS and idle CPU of the real binary, claim cost against a large history, multi-relay scaling,
//! and the demo's wall time. Everything talks to a loopback sink (`ferry::testkit::TargetServer`)
//! that answers 200 at once, and to PostgreSQL on 127.0.0.1 and/or a SQLite temp file.
//!
//! ```sh
//! cargo build --release                                  # scenarios rss, scaling and demo run the binary
//! cargo bench --bench ferry_bench -- [--quick] [--only NAME] [--backend sqlite|postgres]
//! ```
//!
//! NAME is one of enqueue, e2e, pickup, rss, claim, scaling, demo (repeatable, or comma
//! separated). The table is printed at the end and written to `target/ferry-bench.json`.
//! PostgreSQL: `FERRY_BENCH_PG_URL` (else `FERRY_TEST_PG_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`); each scenario uses a schema `ferry_bench_<tag>`
//! that is dropped at its end. SQLite scenarios use files in a temp directory that is removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ferry::delivery::HttpDeliverer;
use ferry::outbox::{
    AttemptRecord, Claimed, Completion, DatabaseUrl, Outcome, Store, StoreConfig,
    CLAIM_PAYLOAD_BUDGET, MAX_PAYLOAD_BYTES,
};
use ferry::relay::{Deliver, RelayConfig};
use ferry::service::Engine;
use ferry::testkit::TargetServer;
use ferry::workflow::Registry;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WORKFLOW: &str = "bench";

// ----- options and sizes -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bk {
    Postgres,
    Sqlite,
}

impl Bk {
    fn name(self) -> &'static str {
        match self {
            Bk::Postgres => "postgres",
            Bk::Sqlite => "sqlite",
        }
    }
}

const SCENARIOS: &[&str] = &[
    "enqueue", "e2e", "ordered", "pickup", "rss", "claim", "scaling", "demo",
];

struct Opts {
    quick: bool,
    only: Vec<String>,
    backends: Vec<Bk>,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let mut quick = false;
        let mut only = Vec::new();
        let mut backends = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => quick = true,
                "--only" => {
                    let v = args.next().ok_or_else(|| anyhow!("--only needs a NAME"))?;
                    for n in v.split(',') {
                        if !SCENARIOS.contains(&n) {
                            bail!("--only {n}: not one of {}", SCENARIOS.join(", "));
                        }
                        only.push(n.to_string());
                    }
                }
                "--backend" => match args.next().as_deref() {
                    Some("sqlite") => backends.push(Bk::Sqlite),
                    Some("postgres") | Some("pg") => backends.push(Bk::Postgres),
                    other => bail!("--backend sqlite|postgres, got {other:?}"),
                },
                // cargo bench passes --bench; libtest-style filters are ignored too.
                _ => {}
            }
        }
        if backends.is_empty() {
            backends = vec![Bk::Postgres, Bk::Sqlite];
        }
        Ok(Opts {
            quick,
            only,
            backends,
        })
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == scenario)
    }
}

struct Sizes {
    enqueue_batched: usize,
    enqueue_single: usize,
    e2e_rows: usize,
    e2e_grid: Vec<(usize, u32)>,
    breakdown_rows: usize,
    pickup_samples: usize,
    rss_rows_pg: usize,
    rss_rows_sqlite: usize,
    idle_secs: u64,
    claim_batches: usize,
    claim_history: usize,
    claim_burst: usize,
    scale_rows: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                enqueue_batched: 20_000,
                enqueue_single: 2_000,
                e2e_rows: 20_000,
                e2e_grid: vec![(128, 256), (256, 512)],
                breakdown_rows: 5_120,
                pickup_samples: 100,
                rss_rows_pg: 100_000,
                rss_rows_sqlite: 50_000,
                idle_secs: 3,
                claim_batches: 50,
                claim_history: 100_000,
                claim_burst: 20_000,
                scale_rows: 20_000,
            }
        } else {
            Sizes {
                enqueue_batched: 100_000,
                enqueue_single: 10_000,
                e2e_rows: 100_000,
                e2e_grid: vec![
                    (64, 256),
                    (64, 512),
                    (128, 256),
                    (128, 512),
                    (256, 256),
                    (256, 512),
                ],
                breakdown_rows: 25_600,
                pickup_samples: 300,
                rss_rows_pg: 1_000_000,
                rss_rows_sqlite: 1_000_000,
                idle_secs: 10,
                claim_batches: 60,
                claim_history: 1_000_000,
                claim_burst: 100_000,
                scale_rows: 100_000,
            }
        }
    }
}

// ----- results ---------------------------------------------------------------------------------

#[derive(Debug, Clone, serde::Serialize)]
struct Figure {
    scenario: String,
    backend: String,
    metric: String,
    value: f64,
    unit: String,
    target: Option<String>,
    pass: Option<bool>,
    note: String,
}

#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        scenario: &str,
        backend: &str,
        metric: &str,
        value: f64,
        unit: &str,
        target: Option<(&str, bool)>,
        note: impl Into<String>,
    ) {
        let f = Figure {
            scenario: scenario.into(),
            backend: backend.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            target: target.map(|t| t.0.to_string()),
            pass: target.map(|t| t.1),
            note: note.into(),
        };
        println!(
            "  {:<9} {:<8} {:<44} {:>12} {:<8} {}{}",
            f.scenario,
            f.backend,
            f.metric,
            fmt_value(f.value),
            f.unit,
            match (&f.target, f.pass) {
                (Some(t), Some(p)) => format!("[{t}: {}] ", if p { "PASS" } else { "MISS" }),
                _ => String::new(),
            },
            f.note
        );
        self.figures.push(f);
    }

    fn print_table(&self) {
        println!();
        println!(
            "| scenario | backend | figure | value | unit | target | result | note |\n|---|---|---|---:|---|---|---|---|"
        );
        for f in &self.figures {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                f.scenario,
                f.backend,
                f.metric,
                fmt_value(f.value),
                f.unit,
                f.target.clone().unwrap_or_default(),
                match f.pass {
                    Some(true) => "pass",
                    Some(false) => "MISS",
                    None => "",
                },
                f.note
            );
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v);
        // thousands separators
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

// ----- environment: sink, workflow, databases --------------------------------------------------

fn pg_url() -> String {
    std::env::var("FERRY_BENCH_PG_URL")
        .or_else(|_| std::env::var("FERRY_TEST_PG_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Marker arrivals seen by the sink: marker number → when the sink had read the request.
type Markers = mpsc::UnboundedSender<(u64, Instant)>;

struct Env {
    sink: TargetServer,
    markers: mpsc::UnboundedReceiver<(u64, Instant)>,
    dir: PathBuf,
    workflows_dir: PathBuf,
    registry: Arc<Registry>,
    admin: Option<sqlx::PgPool>,
    binary: Option<PathBuf>,
    sizes: Sizes,
    report: Report,
}

impl Env {
    async fn new(opts: &Opts) -> Result<Env> {
        let sink = TargetServer::start().await?;
        sink.record_requests(false);
        let (tx, rx) = mpsc::unbounded_channel();
        let tx: Markers = tx;
        sink.set_responder(move |req, _nth| {
            // Marker payloads are `{"marker": N}` (jsonb renders the same text).
            if req.body.starts_with(b"{\"marker\"") {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&req.body) {
                    if let Some(n) = v.get("marker").and_then(|m| m.as_u64()) {
                        let _ = tx.send((n, req.at));
                    }
                }
            }
            None
        });
        let dir = std::env::temp_dir().join(format!("ferry-bench-{}", std::process::id()));
        let workflows_dir = dir.join("workflows");
        std::fs::create_dir_all(&workflows_dir)?;
        let text = format!(
            r#"name = "{WORKFLOW}"
description = "benchmark sink"
document = "json"
[target]
name = "sink"
base_url = "{base}"
max_concurrency = 256
auth = {{ kind = "none" }}
[request]
method = "POST"
path = "/sink"
timeout = "10s"
[retry]
waits = ["1s", "2s", "5s"]
retry_on_status = [500, 502, 503, 504]
retry_on_timeout = true
retry_on_connect_error = true
"#,
            base = sink.base_url()
        );
        let path = workflows_dir.join(format!("{WORKFLOW}.toml"));
        std::fs::write(&path, &text)?;
        let no_env = |_: &str| -> Option<String> { None };
        let registry = Registry::from_files(&[(path, text)], &no_env)
            .map_err(|e| anyhow!("bench workflow: {e}"))?;
        let admin = if opts.backends.contains(&Bk::Postgres) {
            Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&pg_url())
                    .await
                    .with_context(|| format!("PostgreSQL at {}", pg_url()))?,
            )
        } else {
            None
        };
        let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/ferry");
        let binary = binary.exists().then_some(binary);
        Ok(Env {
            sink,
            markers: rx,
            dir,
            workflows_dir,
            registry: Arc::new(registry),
            admin,
            binary,
            sizes: Sizes::new(opts.quick),
            report: Report::default(),
        })
    }

    fn deliverer(&self) -> Result<HttpDeliverer> {
        Ok(HttpDeliverer::new(&self.registry)?)
    }

    /// A fresh database: a schema of its own on PostgreSQL (dropped first if a previous run left
    /// it), a new file on SQLite. Migrated.
    async fn db(&self, bk: Bk, tag: &str, max_connections: u32) -> Result<Db> {
        let (config, path) = match bk {
            Bk::Postgres => {
                let schema = format!("ferry_bench_{tag}");
                self.admin
                    .as_ref()
                    .expect("admin pool")
                    .execute_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await?;
                let mut c = StoreConfig::new(pg_url().parse()?);
                c.schema = Some(schema);
                (c, None)
            }
            Bk::Sqlite => {
                let path = self.dir.join(format!("{tag}.db"));
                remove_sqlite(&path);
                (
                    StoreConfig::new(DatabaseUrl::Sqlite(path.display().to_string())),
                    Some(path),
                )
            }
        };
        let mut config = config;
        config.max_connections = max_connections;
        let store = Store::open(&config).await?;
        store.migrate().await?;
        Ok(Db {
            bk,
            store,
            config,
            path,
        })
    }

    async fn drop_db(&self, db: Db) -> Result<()> {
        db.store.close().await;
        match db.bk {
            Bk::Postgres => {
                let schema = db.config.schema.as_deref().expect("schema");
                self.admin
                    .as_ref()
                    .expect("admin pool")
                    .execute_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await?;
            }
            Bk::Sqlite => remove_sqlite(db.path.as_ref().expect("path")),
        }
        Ok(())
    }

    fn binary(&self) -> Result<&Path> {
        self.binary.as_deref().ok_or_else(|| {
            anyhow!("target/release/ferry not found: run `cargo build --release` first")
        })
    }

    /// Spawn `ferry run` on `db` with the bench workflow; output discarded.
    ///
    /// `FERRY_BENCH_CHILD_WRAPPER` (e.g. `valgrind --tool=callgrind`) runs it under a profiler.
    fn spawn_relay(&self, db: &Db) -> Result<Child> {
        let wrapper = std::env::var("FERRY_BENCH_CHILD_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(self.binary()?);
                c
            }
            None => Command::new(self.binary()?),
        };
        cmd.arg("run")
            .current_dir(&self.dir)
            .env("DATABASE_URL", db.url_for_child())
            .env("FERRY_WORKFLOWS", &self.workflows_dir)
            .env("FERRY_METRICS_ADDR", "off")
            .env("FERRY_LOG_DIR", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for v in [
            "FERRY_LOG",
            "FERRY_CONCURRENCY",
            "FERRY_BATCH_SIZE",
            "FERRY_CONFIG",
        ] {
            cmd.env_remove(v);
        }
        match &db.config.schema {
            Some(s) => cmd.env("FERRY_SCHEMA", s),
            None => cmd.env_remove("FERRY_SCHEMA"),
        };
        Ok(cmd.spawn()?)
    }
}

trait ExecSql {
    async fn execute_sql(&self, sql: &str) -> Result<()>;
}

impl ExecSql for sqlx::PgPool {
    async fn execute_sql(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(sql).execute(self).await?;
        Ok(())
    }
}

fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

struct Db {
    bk: Bk,
    store: Store,
    config: StoreConfig,
    path: Option<PathBuf>,
}

impl Db {
    fn url_for_child(&self) -> String {
        match &self.config.url {
            DatabaseUrl::Postgres(u) => u.clone(),
            DatabaseUrl::Sqlite(p) => format!("sqlite:{p}"),
        }
    }

    async fn exec(&self, sql: &str) -> Result<()> {
        self.store.execute_script(sql).await?;
        Ok(())
    }

    async fn scalar(&self, sql: &str) -> Result<i64> {
        Ok(match self.bk {
            Bk::Postgres => {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(self.store.pg_pool().expect("pg"))
                    .await?
            }
            Bk::Sqlite => {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(self.store.sqlite_pool().expect("sqlite"))
                    .await?
            }
        })
    }

    async fn done(&self) -> Result<i64> {
        self.scalar("SELECT count(*) FROM ferry_outbox WHERE state = 'done'")
            .await
    }

    async fn live(&self) -> Result<i64> {
        self.scalar("SELECT count(*) FROM ferry_outbox WHERE state <> 'done'")
            .await
    }

    /// Insert `n` pending rows in one statement (keys `<prefix><n>`, ~300-byte payloads).
    async fn bulk_insert(&self, n: usize, prefix: &str) -> Result<()> {
        match self.bk {
            Bk::Postgres => {
                sqlx::query(
                    "INSERT INTO ferry_outbox (workflow, key, payload) \
                     SELECT $1, $2 || g, jsonb_build_object('invoiceCode', 'INV-' || g, 'seq', g, \
                            'amount', 1000 + g, 'note', repeat('x', 200)) \
                       FROM generate_series(1, $3::int) AS g",
                )
                .bind(WORKFLOW)
                .bind(prefix)
                .bind(n as i32)
                .execute(self.store.pg_pool().expect("pg"))
                .await?;
            }
            Bk::Sqlite => {
                sqlx::query(
                    "INSERT INTO ferry_outbox (workflow, key, payload) \
                     WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?3) \
                     SELECT ?1, ?2 || n, json_object('invoiceCode', 'INV-' || n, 'seq', n, \
                            'amount', 1000 + n, 'note', replace(hex(zeroblob(100)), '00', 'xx')) \
                       FROM g",
                )
                .bind(WORKFLOW)
                .bind(prefix)
                .bind(n as i64)
                .execute(self.store.sqlite_pool().expect("sqlite"))
                .await?;
            }
        }
        Ok(())
    }

    async fn analyze(&self) -> Result<()> {
        self.exec("ANALYZE ferry_outbox").await
    }
}

fn payload(i: usize) -> serde_json::Value {
    serde_json::json!({
        "invoiceCode": format!("INV-{i}"),
        "seq": i,
        "amount": 1000 + i,
        "note": "x".repeat(200),
    })
}

// ----- small measuring helpers -----------------------------------------------------------------

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm field: state is field 3, utime 14, stime 15 (1-based over the whole line).
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// utime + stime summed over every live `postgres` process, in clock ticks.
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim() == "postgres" {
            total += cpu_ticks(pid).unwrap_or(0);
        }
    }
    total
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// (VmHWM, VmRSS) of a process in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// SIGTERM, then wait up to 20 s, then SIGKILL. Returns the exit code if it exited by itself.
async fn stop_child(child: &mut Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// CPU used by this process and by PostgreSQL over a stretch, in CPU seconds.
struct CpuSplit {
    me: u64,
    pg: u64,
    tck: f64,
}

impl CpuSplit {
    fn start(tck: f64) -> CpuSplit {
        CpuSplit {
            me: cpu_ticks(std::process::id()).unwrap_or(0),
            pg: postgres_ticks(),
            tck,
        }
    }

    /// (this process, postgres) CPU seconds since start.
    fn stop(&self) -> (f64, f64) {
        let me = cpu_ticks(std::process::id()).unwrap_or(0);
        let pg = postgres_ticks();
        (
            me.saturating_sub(self.me) as f64 / self.tck,
            pg.saturating_sub(self.pg) as f64 / self.tck,
        )
    }
}

/// (commits in this database, WAL bytes written so far) on PostgreSQL; stats of closed sessions
/// are flushed when they exit.
async fn pg_counters(env: &Env) -> Result<Option<(i64, f64)>> {
    let Some(admin) = &env.admin else {
        return Ok(None);
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = admin.acquire().await?;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let (commits, wal): (i64, f64) = sqlx::query_as(
        "SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 \
           FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some((commits, wal)))
}

// ----- 1. enqueue ------------------------------------------------------------------------------

async fn enqueue_batch(db: &Db, items: &[(&str, &serde_json::Value)]) -> Result<()> {
    match db.bk {
        Bk::Postgres => {
            let mut tx = db.store.pg_pool().expect("pg").begin().await?;
            ferry::enqueue_many(&mut *tx, WORKFLOW, items).await?;
            tx.commit().await?;
        }
        Bk::Sqlite => {
            let mut tx = db.store.sqlite_pool().expect("sqlite").begin().await?;
            ferry::enqueue_many(&mut *tx, WORKFLOW, items).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn enqueue_one(db: &Db, key: &str, payload: &serde_json::Value) -> Result<()> {
    match db.bk {
        Bk::Postgres => {
            let mut tx = db.store.pg_pool().expect("pg").begin().await?;
            ferry::enqueue(&mut *tx, WORKFLOW, key, payload).await?;
            tx.commit().await?;
        }
        Bk::Sqlite => {
            let mut tx = db.store.sqlite_pool().expect("sqlite").begin().await?;
            ferry::enqueue(&mut *tx, WORKFLOW, key, payload).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn scenario_enqueue(env: &mut Env, bk: Bk) -> Result<()> {
    let db = env.db(bk, "enqueue", 8).await?;
    let n = env.sizes.enqueue_batched;
    let keys: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    let payloads: Vec<serde_json::Value> = (0..1000).map(payload).collect();
    let t = Instant::now();
    for (c, chunk) in keys.chunks(1000).enumerate() {
        let items: Vec<(&str, &serde_json::Value)> = chunk
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), &payloads[(c + i) % payloads.len()]))
            .collect();
        enqueue_batch(&db, &items).await?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let target = (bk == Bk::Postgres).then_some(("≥ 50,000", rate >= 50_000.0));
    env.report.add(
        "enqueue",
        bk.name(),
        "batched enqueue_many (1000 rows/tx)",
        rate,
        "rows/s",
        target,
        format!("{n} rows"),
    );

    let n = env.sizes.enqueue_single;
    let t = Instant::now();
    for i in 0..n {
        enqueue_one(&db, &format!("s{i}"), &payloads[i % payloads.len()]).await?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    env.report.add(
        "enqueue",
        bk.name(),
        "single enqueue (1 row/tx)",
        rate,
        "rows/s",
        None,
        format!("{n} rows, one client"),
    );
    let got = db.scalar("SELECT count(*) FROM ferry_outbox").await?;
    if got != (env.sizes.enqueue_batched + n) as i64 {
        bail!(
            "enqueue: expected {} rows, found {got}",
            env.sizes.enqueue_batched + n
        );
    }
    env.drop_db(db).await
}

// ----- 2. end-to-end delivery ------------------------------------------------------------------

/// Drain `n` due rows with an in-process `Relay::run`; returns (seconds, bench CPU s, pg CPU s).
async fn run_relay_until_done(
    env: &Env,
    db: &Db,
    n: usize,
    config: RelayConfig,
) -> Result<(f64, f64, f64)> {
    // The engine as `ferry run` builds it (service layer), on a task of its own.
    let cpu = CpuSplit::start(clk_tck());
    let t = Instant::now();
    let engine = Engine::http(db.store.clone(), &env.registry, config)?.spawn();
    let stats = engine.stats();
    let deadline = t + Duration::from_secs(600);
    while (stats.done.load(Ordering::Relaxed) as usize) < n {
        if Instant::now() > deadline {
            engine.stop().await;
            bail!(
                "relay did not finish {n} rows in 600 s (done {})",
                stats.done.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let (me, pg) = cpu.stop();
    engine.stop().await;
    let done = db.done().await?;
    if done != n as i64 {
        bail!("expected {n} done rows, found {done}");
    }
    Ok((secs, me, pg))
}

async fn scenario_e2e(env: &mut Env, bk: Bk) -> Result<()> {
    let n = env.sizes.e2e_rows;
    let mut best: Option<(f64, usize, u32)> = None;
    let grid = env.sizes.e2e_grid.clone();
    for (concurrency, batch) in grid {
        let db = env.db(bk, "e2e", 8).await?;
        db.bulk_insert(n, "e").await?;
        db.analyze().await?;
        env.sink.clear();
        let config = RelayConfig {
            concurrency,
            batch_size: batch,
            ..RelayConfig::default()
        };
        let pg0 = if bk == Bk::Postgres {
            pg_counters(env).await?
        } else {
            None
        };
        let (secs, me, pg) = run_relay_until_done(env, &db, n, config).await?;
        let rate = n as f64 / secs;
        let dups = env.sink.duplicate_keys().len();
        db.store.close().await;
        let pg1 = if pg0.is_some() {
            pg_counters(env).await?
        } else {
            None
        };
        let pg_note = match (pg0, pg1) {
            (Some(a), Some(b)) => format!(
                "; {:.1} commits and {:.0} WAL KiB per 100 rows",
                (b.0 - a.0) as f64 / n as f64 * 100.0,
                (b.1 - a.1) / n as f64 * 100.0 / 1024.0
            ),
            _ => String::new(),
        };
        env.report.add(
            "e2e",
            bk.name(),
            &format!("delivery rate, concurrency {concurrency}, batch {batch}"),
            rate,
            "rows/s",
            None,
            format!(
                "{n} rows in {secs:.1} s; CPU s per 10k rows: bench(relay+sink) {:.2}, postgres {:.2}; dup keys {dups}{pg_note}",
                me / n as f64 * 10_000.0,
                pg / n as f64 * 10_000.0
            ),
        );
        if best.is_none_or(|b| rate > b.0) {
            best = Some((rate, concurrency, batch));
        }
        env.drop_db(db).await?;
    }
    if let Some((rate, c, b)) = best {
        let (t, goal) = match bk {
            Bk::Postgres => ("≥ 10,000", 10_000.0),
            Bk::Sqlite => ("≥ 3,000", 3_000.0),
        };
        env.report.add(
            "e2e",
            bk.name(),
            "delivery rate, best",
            rate,
            "rows/s",
            Some((t, rate >= goal)),
            format!("concurrency {c}, batch {b}, {n} rows"),
        );
    }
    breakdown(env, bk).await
}

/// Ordered against unordered drain: the same rows (100,000 by default) once without ordering
/// keys and once in 1,000 ordering groups (row i in group i mod 1000, so every group has its
/// rows spread over the whole queue), drained by the engine with default settings.
async fn scenario_ordered(env: &mut Env, bk: Bk) -> Result<()> {
    let n = if env.sizes.e2e_rows < 100_000 {
        env.sizes.e2e_rows
    } else {
        100_000
    };
    let groups = 1_000.min(n.max(1));
    let mut rates = Vec::new();
    for ordered in [false, true] {
        let db = env.db(bk, "ordered", 8).await?;
        db.bulk_insert(n, "o").await?;
        if ordered {
            db.exec(&format!(
                "UPDATE ferry_outbox SET ordering_key = 'g' || (id % {groups})"
            ))
            .await?;
        }
        db.analyze().await?;
        env.sink.clear();
        let (secs, _, _) = run_relay_until_done(env, &db, n, RelayConfig::default()).await?;
        let rate = n as f64 / secs;
        rates.push(rate);
        env.report.add(
            "ordered",
            bk.name(),
            if ordered {
                "drain rate, ordered (1,000 groups)"
            } else {
                "drain rate, unordered"
            },
            rate,
            "rows/s",
            None,
            format!("{n} rows in {secs:.1} s"),
        );
        db.store.close().await;
        env.drop_db(db).await?;
    }
    let slowdown = rates[0] / rates[1];
    env.report.add(
        "ordered",
        bk.name(),
        "ordered slowdown",
        slowdown,
        "×",
        Some(("≤ 2", slowdown <= 2.0)),
        format!(
            "unordered {:.0} rows/s, ordered {:.0} rows/s",
            rates[0], rates[1]
        ),
    );
    Ok(())
}

/// Where the time goes: claim → deliver (concurrently) → complete, one phase at a time, timed.
async fn breakdown(env: &mut Env, bk: Bk) -> Result<()> {
    let n = env.sizes.breakdown_rows;
    let db = env.db(bk, "breakdown", 8).await?;
    db.bulk_insert(n, "d").await?;
    db.analyze().await?;
    let deliverer = env.deliverer()?;
    let (mut claim, mut http, mut complete) = (0.0, 0.0, 0.0);
    let mut rows_done = 0usize;
    let batch = 256u32;
    let lease = Duration::from_secs(60);
    let t_all = Instant::now();
    for _ in 0..(n / batch as usize + 2) {
        let t = Instant::now();
        let rows: Vec<Claimed> = db.store.claim(batch, lease, &[]).await?;
        claim += t.elapsed().as_secs_f64();
        if rows.is_empty() {
            break;
        }
        let t = Instant::now();
        let deliverer = &deliverer;
        let completions: Vec<Completion> = futures_util::stream::iter(rows)
            .map(|row| async move {
                let d = deliverer.deliver(&row).await;
                row.completion(d.outcome, d.record, d.on_done)
            })
            .buffer_unordered(128)
            .collect()
            .await;
        http += t.elapsed().as_secs_f64();
        let t = Instant::now();
        db.store.complete(&completions).await?;
        complete += t.elapsed().as_secs_f64();
        rows_done += completions.len();
    }
    let total = t_all.elapsed().as_secs_f64();
    if rows_done != n {
        bail!("breakdown: delivered {rows_done} of {n}");
    }
    let per = |s: f64| s / n as f64 * 1e6;
    env.report.add(
        "e2e",
        bk.name(),
        "sequential loop (claim 256 → HTTP ×128 → complete)",
        n as f64 / total,
        "rows/s",
        None,
        format!(
            "µs/row: claim {:.1}, HTTP {:.1}, complete {:.1}",
            per(claim),
            per(http),
            per(complete)
        ),
    );
    env.drop_db(db).await
}

// ----- 3. pickup latency -----------------------------------------------------------------------

async fn scenario_pickup(env: &mut Env, bk: Bk) -> Result<()> {
    let db = env.db(bk, "pickup", 8).await?;
    // The business side: on PostgreSQL its own pool (the relay learns of commits by NOTIFY); on
    // SQLite the store's pool, whose commit hooks wake the relay in this process.
    let business = match bk {
        Bk::Postgres => Some(Store::open(&db.config).await?),
        Bk::Sqlite => None,
    };
    let writer = Db {
        bk,
        store: business.clone().unwrap_or_else(|| db.store.clone()),
        config: db.config.clone(),
        path: None,
    };
    let engine = Engine::http(db.store.clone(), &env.registry, RelayConfig::default())?.spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while env.markers.try_recv().is_ok() {}

    let samples = env.sizes.pickup_samples;
    let mut marker_no = 0u64;
    let idle = measure_pickup(env, &writer, samples, &mut marker_no).await?;
    report_pickup(env, bk, "idle relay", &idle, true);

    // Busy: a background stream of ~2,000 rows/s (20 rows every 10 ms) being delivered.
    let bg_stop = CancellationToken::new();
    let bg = {
        let writer = Db {
            bk,
            store: writer.store.clone(),
            config: writer.config.clone(),
            path: None,
        };
        let bg_stop = bg_stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let body = payload(1);
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut i = 0usize;
            while !bg_stop.is_cancelled() && Instant::now() < deadline {
                tick.tick().await;
                let keys: Vec<String> = (i..i + 20).map(|k| format!("bg{k}")).collect();
                i += 20;
                let items: Vec<(&str, &serde_json::Value)> =
                    keys.iter().map(|k| (k.as_str(), &body)).collect();
                if let Err(e) = enqueue_batch(&writer, &items).await {
                    eprintln!("background enqueue failed: {e}");
                    break;
                }
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = env.sink.request_count();
    let t = Instant::now();
    let busy = measure_pickup(env, &writer, samples, &mut marker_no).await?;
    let bg_rate = (env.sink.request_count() - before) as f64 / t.elapsed().as_secs_f64();
    bg_stop.cancel();
    let enqueued = bg.await?;
    report_pickup(
        env,
        bk,
        &format!("busy relay (~{bg_rate:.0} deliveries/s)"),
        &busy,
        false,
    );
    engine.stop().await;
    let live = db.live().await?;
    if live != 0 {
        eprintln!("pickup: {live} rows still live after stop ({enqueued} background rows)");
    }
    if let Some(b) = business {
        b.close().await;
    }
    env.drop_db(db).await
}

/// Enqueue a marker, commit, and time from just after the commit returned until the sink read
/// the request. Returns latencies in ms.
async fn measure_pickup(
    env: &mut Env,
    writer: &Db,
    samples: usize,
    marker_no: &mut u64,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        // A random gap so pickups do not line up with any timer of the relay.
        tokio::time::sleep(Duration::from_millis(5 + fastrand::u64(0..15))).await;
        *marker_no += 1;
        let n = *marker_no;
        let body = serde_json::json!({ "marker": n });
        enqueue_one(writer, &format!("m{n}"), &body).await?;
        let committed = Instant::now();
        let deadline = committed + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, env.markers.recv()).await {
                Ok(Some((m, at))) if m == n => {
                    let ms = match at.checked_duration_since(committed) {
                        Some(d) => d.as_secs_f64() * 1000.0,
                        None => -(committed.duration_since(at).as_secs_f64() * 1000.0),
                    };
                    out.push(ms);
                    break;
                }
                Ok(Some(_)) => continue, // an older marker delivered again
                Ok(None) => bail!("marker channel closed"),
                Err(_) => bail!("marker {n} not delivered within 10 s"),
            }
        }
    }
    Ok(out)
}

fn report_pickup(env: &mut Env, bk: Bk, what: &str, ms: &[f64], idle: bool) {
    let s = sorted(ms.to_vec());
    let (p50, p95, p99) = (
        percentile(&s, 0.50),
        percentile(&s, 0.95),
        percentile(&s, 0.99),
    );
    let note = format!(
        "{} samples, max {:.2} ms, min {:.2} ms",
        s.len(),
        s[s.len() - 1],
        s[0]
    );
    env.report.add(
        "pickup",
        bk.name(),
        &format!("p50, {what}"),
        p50,
        "ms",
        None,
        note.clone(),
    );
    env.report.add(
        "pickup",
        bk.name(),
        &format!("p95, {what}"),
        p95,
        "ms",
        None,
        "",
    );
    env.report.add(
        "pickup",
        bk.name(),
        &format!("p99, {what}"),
        p99,
        "ms",
        idle.then_some(("< 20 ms", p99 < 20.0)),
        "",
    );
}

// ----- 4. RSS, drain of a large table, idle CPU (the real binary) ------------------------------

/// EXPLAIN the claim statement the store sends (`ferry::outbox::sql::<backend>::CLAIM`), with
/// literal values and as the generic plan a long-lived prepared statement gets. Returns (uses
/// ferry_outbox_due in both, the custom plan text).
async fn explain_claim(db: &Db) -> Result<(bool, bool, String)> {
    match db.bk {
        Bk::Postgres => {
            let claim = ferry::outbox::sql::postgres::CLAIM;
            let pool = db.store.pg_pool().expect("pg");
            let mut conn = pool.acquire().await?;
            let literal = claim
                .replace("$4::text[]", "'{}'::text[]")
                .replace("$1", "256")
                .replace("$2", "gen_random_uuid()")
                .replace("$3", "60000")
                .replace("$5", &MAX_PAYLOAD_BYTES.to_string())
                .replace("$6", &CLAIM_PAYLOAD_BUDGET.to_string())
                .replace("$7", "'payload is %s bytes'");
            let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {literal}"))
                .fetch_all(&mut *conn)
                .await?;
            let custom = lines.join("\n");
            sqlx::raw_sql(&format!(
                "SET plan_cache_mode = force_generic_plan; \
                 PREPARE ferry_bench_claim(bigint, uuid, bigint, text[], bigint, bigint, text) AS {claim}"
            ))
            .execute(&mut *conn)
            .await?;
            let generic: Vec<String> = sqlx::query_scalar(&format!(
                "EXPLAIN EXECUTE ferry_bench_claim(256, gen_random_uuid(), 60000, '{{}}', \
                 {MAX_PAYLOAD_BYTES}, {CLAIM_PAYLOAD_BUDGET}, 'payload is %s bytes')"
            ))
            .fetch_all(&mut *conn)
            .await?;
            sqlx::raw_sql("DEALLOCATE ferry_bench_claim; RESET plan_cache_mode")
                .execute(&mut *conn)
                .await?;
            let generic = generic.join("\n");
            Ok((
                custom.contains("ferry_outbox_due"),
                generic.contains("ferry_outbox_due"),
                custom,
            ))
        }
        Bk::Sqlite => {
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
                "EXPLAIN QUERY PLAN {}",
                ferry::outbox::sql::sqlite::CLAIM
            ))
            .bind(uuid::Uuid::new_v4().to_string())
            .bind("+60.000 seconds")
            .bind(256_i64)
            .bind("[]")
            .bind(MAX_PAYLOAD_BYTES as i64)
            .bind(CLAIM_PAYLOAD_BUDGET as i64)
            .bind("payload is %d bytes")
            .fetch_all(db.store.sqlite_pool().expect("sqlite"))
            .await?;
            let text = rows
                .iter()
                .map(|r| r.3.clone())
                .collect::<Vec<_>>()
                .join("; ");
            let uses = text.contains("ferry_outbox_due");
            Ok((uses, uses, text))
        }
    }
}

async fn scenario_rss(env: &mut Env, bk: Bk) -> Result<()> {
    let n = match std::env::var("FERRY_BENCH_RSS_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => n,
        None => match bk {
            Bk::Postgres => env.sizes.rss_rows_pg,
            Bk::Sqlite => env.sizes.rss_rows_sqlite,
        },
    };
    let db = env.db(bk, "rss", 4).await?;
    let t = Instant::now();
    db.bulk_insert(n, "r").await?;
    db.analyze().await?;
    println!(
        "  (rss: {n} rows inserted in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    env.sink.clear();
    let tck = clk_tck();
    let pg0 = postgres_ticks();
    let me0 = cpu_ticks(std::process::id()).unwrap_or(0);
    let t = Instant::now();
    let mut child = env.spawn_relay(&db)?;
    let pid = child.id();
    let (mut hwm, mut rss_max) = (0u64, 0u64);
    let mut analyzed_mid = None;
    let deadline = t + Duration::from_secs(1800);
    let mut child_ticks = 0;
    loop {
        if let Some((h, r)) = rss_kib(pid) {
            hwm = hwm.max(h);
            rss_max = rss_max.max(r);
        }
        child_ticks = cpu_ticks(pid).unwrap_or(child_ticks);
        if let Some(status) = child.try_wait()? {
            bail!("ferry run exited early: {status}");
        }
        if Instant::now() > deadline {
            stop_child(&mut child).await;
            bail!("ferry run did not drain {n} rows in 30 min");
        }
        let seen = env.sink.request_count() as usize;
        if analyzed_mid.is_none() && seen >= n / 2 {
            // The PERFORMANCE.md hazard: ANALYZE on a half-drained table, then look at the plan.
            db.analyze().await?;
            analyzed_mid = Some(explain_claim(&db).await?);
        }
        if seen >= n && db.live().await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let relay_cpu = child_ticks as f64 / tck;
    let pg_cpu = postgres_ticks().saturating_sub(pg0) as f64 / tck;
    let sink_cpu = cpu_ticks(std::process::id())
        .unwrap_or(0)
        .saturating_sub(me0) as f64
        / tck;
    let done = db.done().await?;
    if done != n as i64 {
        stop_child(&mut child).await;
        bail!("rss: expected {n} done, found {done}");
    }
    let peak = hwm.max(rss_max) as f64 / 1024.0;
    let scale_note = if bk == Bk::Sqlite && n < 1_000_000 {
        " (SQLite at a smaller backlog to keep the run short)"
    } else {
        ""
    };
    env.report.add(
        "rss",
        bk.name(),
        &format!("peak RSS of `ferry run`, {n} rows due"),
        peak,
        "MiB",
        Some(("< 64 MiB", peak < 64.0)),
        format!("VmHWM{scale_note}"),
    );
    env.report.add(
        "rss",
        bk.name(),
        &format!("drain rate of `ferry run`, {n} rows"),
        n as f64 / secs,
        "rows/s",
        None,
        format!(
            "{secs:.1} s incl. start; default FERRY_CONCURRENCY/BATCH_SIZE, info logs to /dev/null; CPU s per 10k rows: relay {:.2}, postgres {:.2}, sink {:.2}",
            relay_cpu / n as f64 * 1e4,
            pg_cpu / n as f64 * 1e4,
            sink_cpu / n as f64 * 1e4
        ),
    );
    if let Some((custom, generic, plan)) = analyzed_mid {
        let first = plan.lines().take(6).collect::<Vec<_>>().join(" / ");
        env.report.add(
            "rss",
            bk.name(),
            "claim plan after ANALYZE of a half-drained table uses ferry_outbox_due",
            if custom && generic { 1.0 } else { 0.0 },
            "bool",
            Some(("uses index", custom && generic)),
            format!("custom plan {custom}, generic plan {generic}: {first}"),
        );
    }

    // Idle CPU: the same child with nothing due.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = cpu_ticks(pid).unwrap_or(0);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(env.sizes.idle_secs)).await;
    let b = cpu_ticks(pid).unwrap_or(0);
    let pct = (b - a) as f64 / tck / t.elapsed().as_secs_f64() * 100.0;
    env.report.add(
        "rss",
        bk.name(),
        &format!(
            "idle CPU of `ferry run` ({} s, nothing due)",
            env.sizes.idle_secs
        ),
        pct,
        "% core",
        Some(("≤ 1 %", pct <= 1.0)),
        format!("{} ticks of 1/{tck:.0} s", b - a),
    );
    let code = stop_child(&mut child).await;
    if code != Some(0) {
        eprintln!("ferry run exited with {code:?} on SIGTERM");
    }
    env.drop_db(db).await
}

// ----- 5. claim cost against history -----------------------------------------------------------

async fn claim_batches(db: &Db, batches: usize, prefix: &str) -> Result<Vec<f64>> {
    let per = 100usize;
    let warmup = 5;
    db.bulk_insert((batches + warmup) * per, prefix).await?;
    claim_rounds(db, batches).await
}

/// `batches` timed rounds (after 5 warm-up rounds) of claim 100 + complete them as done.
async fn claim_rounds(db: &Db, batches: usize) -> Result<Vec<f64>> {
    let per = 100usize;
    let warmup = 5;
    let mut us = Vec::with_capacity(batches);
    let lease = Duration::from_secs(60);
    for b in 0..batches + warmup {
        let t = Instant::now();
        let rows = db.store.claim(per as u32, lease, &[]).await?;
        if rows.len() != per {
            bail!("claim returned {} rows, expected {per}", rows.len());
        }
        let completions: Vec<Completion> = rows
            .iter()
            .map(|r| {
                r.completion(
                    Outcome::Done,
                    Some(AttemptRecord {
                        started_at: chrono::Utc::now(),
                        duration: Duration::from_micros(300),
                        http_status: Some(200),
                        error: None,
                        response_excerpt: Some("{\"ok\":true}".into()),
                    }),
                    None,
                )
            })
            .collect();
        db.store.complete(&completions).await?;
        if b >= warmup {
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(sorted(us))
}

async fn scenario_claim(env: &mut Env, bk: Bk) -> Result<()> {
    let db = env.db(bk, "claim", 4).await?;
    let batches = env.sizes.claim_batches;
    let empty = claim_batches(&db, batches, "c0-").await?;
    let base = percentile(&empty, 0.5);
    env.report.add(
        "claim",
        bk.name(),
        "claim+complete of 100 rows, empty history (median)",
        base,
        "µs/batch",
        None,
        format!("p90 {:.0} µs, {batches} batches", percentile(&empty, 0.9)),
    );

    // 1M done rows of history: inserted pending, moved to sending, then to done (the trigger
    // refuses any other path). Then ANALYZE, as autovacuum would on a quiet, drained table.
    let h = env.sizes.claim_history;
    let t = Instant::now();
    db.bulk_insert(h, "h-").await?;
    match bk {
        Bk::Postgres => {
            db.exec("UPDATE ferry_outbox SET state = 'sending', claim_token = gen_random_uuid() WHERE key LIKE 'h-%'").await?;
            db.exec("UPDATE ferry_outbox SET state = 'done', claim_token = NULL, done_at = now(), last_status = 200 WHERE key LIKE 'h-%'").await?;
        }
        Bk::Sqlite => {
            db.exec(
                "UPDATE ferry_outbox SET state = 'sending', claim_token = 'x' WHERE key LIKE 'h-%'",
            )
            .await?;
            db.exec("UPDATE ferry_outbox SET state = 'done', claim_token = NULL, done_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), last_status = 200 WHERE key LIKE 'h-%'").await?;
        }
    }
    db.analyze().await?;
    println!(
        "  (claim: {h} done rows of history made in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let (custom, generic, plan) = explain_claim(&db).await?;
    let plan_line = |p: &str| {
        p.lines()
            .filter(|l| l.contains("Scan") || l.contains("Sort") || l.contains("SEARCH"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" / ")
    };
    env.report.add(
        "claim",
        bk.name(),
        &format!("claim plan, {h} done + 0 live rows, after ANALYZE, uses ferry_outbox_due"),
        if custom && generic { 1.0 } else { 0.0 },
        "bool",
        Some(("uses index", custom && generic)),
        format!(
            "custom plan {custom}, generic plan {generic}: {}",
            plan_line(&plan)
        ),
    );
    let hist = claim_batches(&db, batches, "c1-").await?;
    let with = percentile(&hist, 0.5);
    let ratio = with / base;
    env.report.add(
        "claim",
        bk.name(),
        &format!("claim+complete of 100 rows, {h} done rows (median)"),
        with,
        "µs/batch",
        Some(("flat: ≤ 1.25 × empty", ratio <= 1.25)),
        format!(
            "{ratio:.2} × empty; p90 {:.0} µs; statistics from the ANALYZE above",
            percentile(&hist, 0.9)
        ),
    );

    // A burst after the quiet period: a backlog arrives while the statistics still say "no live
    // rows" (autovacuum re-analyzes only after 10 % of the table changed).
    let burst = env.sizes.claim_burst;
    let backlog = claim_batches_with_backlog(&db, batches, burst).await?;
    let b = percentile(&backlog, 0.5);
    let (custom, generic, plan) = explain_claim(&db).await?;
    env.report.add(
        "claim",
        bk.name(),
        &format!("claim+complete of 100 rows, {h} done + {burst} due, stale statistics"),
        b,
        "µs/batch",
        Some(("flat: ≤ 1.25 × empty", b / base <= 1.25)),
        format!(
            "{:.2} × empty; plan uses ferry_outbox_due: custom {custom}, generic {generic}: {}",
            b / base,
            plan_line(&plan)
        ),
    );
    if bk == Bk::Postgres {
        db.exec("VACUUM ANALYZE ferry_outbox").await?;
        let vac = claim_batches(&db, batches, "c3-").await?;
        let v = percentile(&vac, 0.5);
        env.report.add(
            "claim",
            bk.name(),
            &format!("claim+complete of 100 rows, {h} done rows, after VACUUM ANALYZE"),
            v,
            "µs/batch",
            None,
            format!("{:.2} × empty", v / base),
        );
    }
    env.drop_db(db).await
}

/// Insert `backlog` due rows, then time `batches` claim+complete rounds of 100 from it.
async fn claim_batches_with_backlog(db: &Db, batches: usize, backlog: usize) -> Result<Vec<f64>> {
    db.bulk_insert(backlog, "burst-").await?;
    let us = claim_rounds(db, batches).await?;
    Ok(us)
}

// ----- 6. scaling with several relay processes ------------------------------------------------

async fn scenario_scaling(env: &mut Env) -> Result<()> {
    let n = env.sizes.scale_rows;
    let mut one = None;
    for procs in [1usize, 2, 4] {
        let db = env.db(Bk::Postgres, &format!("scale{procs}"), 4).await?;
        env.sink.clear();
        let mut children = Vec::new();
        for _ in 0..procs {
            children.push(env.spawn_relay(&db)?);
        }
        // Let them start, migrate (a no-op) and go idle on LISTEN.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for c in &mut children {
            if let Some(s) = c.try_wait()? {
                bail!("ferry run exited at start: {s}");
            }
        }
        let cpu = CpuSplit::start(clk_tck());
        db.bulk_insert(n, "s").await?;
        let t = Instant::now();
        let deadline = t + Duration::from_secs(900);
        loop {
            if Instant::now() > deadline {
                for c in &mut children {
                    stop_child(c).await;
                }
                bail!("{procs} relays did not drain {n} rows in 15 min");
            }
            if env.sink.request_count() as usize >= n && db.live().await? == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let (_, pg) = cpu.stop();
        for c in &mut children {
            stop_child(c).await;
        }
        let keys = env.sink.keys_seen();
        let dups: u32 = keys.values().filter(|&&c| c > 1).map(|c| c - 1).sum();
        let done = db.done().await?;
        let rate = n as f64 / secs;
        let base = *one.get_or_insert(rate);
        env.report.add(
            "scaling",
            "postgres",
            &format!("{procs} × `ferry run` draining {n} rows"),
            rate,
            "rows/s",
            Some(("0 duplicates", dups == 0 && keys.len() == n && done == n as i64)),
            format!(
                "{:.2} × one relay; {} keys seen, {dups} duplicate deliveries, {done} done; postgres CPU {:.1} s",
                rate / base,
                keys.len(),
                pg
            ),
        );
        env.drop_db(db).await?;
    }
    Ok(())
}

// ----- demo ------------------------------------------------------------------------------------

async fn scenario_demo(env: &mut Env) -> Result<()> {
    let bin = env.binary()?.to_path_buf();
    let db = env.dir.join("demo.db");
    let t = Instant::now();
    let out = tokio::process::Command::new(&bin)
        .args(["demo", "--quiet", "--db"])
        .arg(&db)
        .current_dir(&env.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .map_err(|_| anyhow!("ferry demo took over 5 min"))??;
    let secs = t.elapsed().as_secs_f64();
    remove_sqlite(&db);
    env.report.add(
        "demo",
        "sqlite",
        "`ferry demo --quiet` wall time",
        secs,
        "s",
        None,
        format!("exit {}", status.code().unwrap_or(-1)),
    );
    Ok(())
}

// ----- main ------------------------------------------------------------------------------------

/// The commit measured, and whether src/ had uncommitted changes.
fn source_state() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = git(&["status", "--porcelain", "src", "migrations", "Cargo.toml"]);
    if dirty.is_empty() {
        head
    } else {
        format!("{head} + uncommitted changes in src/")
    }
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_gib": mem_kib as f64 / 1024.0 / 1024.0,
        "cpu": cpu,
    })
}

async fn run(opts: Opts) -> Result<Report> {
    let mut env = Env::new(&opts).await?;
    let pg_version = match &env.admin {
        Some(pool) => sqlx::query_scalar::<_, String>("SHOW server_version")
            .fetch_one(pool)
            .await
            .unwrap_or_default(),
        None => String::new(),
    };
    let source = source_state();
    println!(
        "ferry bench ({} mode), source {}, machine {}, PostgreSQL {pg_version}",
        if opts.quick { "quick" } else { "full" },
        source,
        machine()
    );
    if env.binary.is_none() {
        eprintln!("note: target/release/ferry is missing; rss, scaling and demo are skipped (cargo build --release)");
    }
    let started = Instant::now();
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        if !opts.wants(scenario) {
            continue;
        }
        let needs_binary = matches!(*scenario, "rss" | "scaling" | "demo");
        if needs_binary && env.binary.is_none() {
            continue;
        }
        let t = Instant::now();
        println!("== {scenario}");
        let results: Vec<(String, Result<()>)> = match *scenario {
            "scaling" => {
                if opts.backends.contains(&Bk::Postgres) {
                    vec![("postgres".into(), scenario_scaling(&mut env).await)]
                } else {
                    Vec::new()
                }
            }
            "demo" => vec![("sqlite".into(), scenario_demo(&mut env).await)],
            _ => {
                let mut v = Vec::new();
                for &bk in &opts.backends {
                    let r = match *scenario {
                        "enqueue" => scenario_enqueue(&mut env, bk).await,
                        "e2e" => scenario_e2e(&mut env, bk).await,
                        "ordered" => scenario_ordered(&mut env, bk).await,
                        "pickup" => scenario_pickup(&mut env, bk).await,
                        "rss" => scenario_rss(&mut env, bk).await,
                        "claim" => scenario_claim(&mut env, bk).await,
                        _ => unreachable!(),
                    };
                    v.push((bk.name().to_string(), r));
                }
                v
            }
        };
        for (bk, r) in results {
            if let Err(e) = r {
                eprintln!("!! {scenario} on {bk} failed: {e:#}");
                failures.push(format!("{scenario}/{bk}: {e:#}"));
            }
        }
        println!("   ({scenario} took {:.1} s)", t.elapsed().as_secs_f64());
    }
    let total = started.elapsed().as_secs_f64();
    env.report.print_table();
    println!("\ntotal bench time {total:.0} s");
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let json = serde_json::json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "mode": if opts.quick { "quick" } else { "full" },
        "machine": machine(),
        "source": source,
        "postgres_version": pg_version,
        "total_seconds": total,
        "figures": env.report.figures,
        "failures": failures,
    });
    let out = target_dir.join("ferry-bench.json");
    std::fs::create_dir_all(&target_dir)?;
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", out.display());
    env.sink.shutdown().await;
    let _ = std::fs::remove_dir_all(&env.dir);
    if !failures.is_empty() {
        bail!(
            "{} scenario(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(std::mem::take(&mut env.report))
}

fn main() {
    // Test runners ask a target for its tests with `--list` (cargo-nextest:
    // `--list --format terse`, and again with `--ignored`) and parse the answer as
    // "name: test" lines. This target holds no tests: answer with an empty list, exit 0, and
    // measure nothing.
    if std::env::args().skip(1).any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` (the test command, in CI) runs
    // bench targets too, without it: measuring there would take minutes in a debug build.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ferry_bench: not run under `cargo test`; run `cargo bench --bench ferry_bench`");
        return;
    }
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ferry_bench: {e:#}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(opts)) {
        Ok(_) => {}
        Err(e) => {
            eprintln!("ferry_bench: {e:#}");
            std::process::exit(1);
        }
    }
}
