//! The `ferry` command line: argument parsing and one function per command. Each command calls
//! the library; nothing here is needed to use Ferry as a crate.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Allowed, Config, Sources, SETTINGS};
use crate::delivery::HttpDeliverer;
use crate::export::{export_invoice, ExportReport};
use crate::ops::{LogConfig, LogFormat, Metrics, MetricsObserver};
use crate::outbox::{ListFilter, State, Store};
use crate::relay::Relay;
use crate::workflow::Registry;

fn settings_help() -> String {
    let mut s = String::from(
        "Configuration (environment, .env, or --config FILE with the same names in lower case):\n",
    );
    for setting in SETTINGS {
        let (name, what, default) = (setting.name, setting.what, setting.default);
        match setting.allowed {
            Allowed::Text(_) => s.push_str(&format!("  {name:<26} {what} [default: {default}]\n")),
            range => s.push_str(&format!(
                "  {name:<26} {what} [default: {default}; allowed: {range}]\n"
            )),
        }
    }
    s.push_str("Workflow files read their own variables: ONEC_BASE_URL, ONEC_USERNAME, ONEC_PASSWORD,\n  ONEC_INVOICES_ENDPOINT, API_BASE_URL, API_USERNAME, API_PASSWORD.");
    s
}

/// Ferry: a durable outbox delivery engine.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, after_help = settings_help())]
pub struct Cli {
    /// A TOML config file (settings in lower case); environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations (also done by `run` unless --no-migrate).
    Migrate,
    /// Run the relay: claim due rows, deliver them, record outcomes, until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Zero-configuration demo: embedded SQLite, simulated 1C and partner servers on loopback
    /// (with injected failures), a batch of paid orders and partner documents, the real relay.
    Demo(crate::demo::DemoArgs),
    /// Rows per workflow and live state (the ferry_status view).
    Status,
    /// List rows, newest first.
    List {
        /// pending, sending, retry_wait, done or dead.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One row with its payload and attempt history.
    Show { id: i64 },
    /// Reset a row (or all dead rows) to pending: due now, fresh attempt budget, history kept.
    Retry {
        /// The row to retry.
        id: Option<i64>,
        /// Retry every dead row (of --workflow, if given).
        #[arg(long, conflicts_with = "id")]
        dead: bool,
        #[arg(long, requires = "dead")]
        workflow: Option<String>,
    },
    /// Cancel a pending or retry_wait row: it becomes dead with the reason.
    Cancel {
        id: i64,
        #[arg(long, default_value = "cancelled by operator")]
        reason: String,
    },
    /// Enqueue an intent; the payload is read from FILE, or standard input when FILE is - or absent.
    Enqueue {
        workflow: String,
        key: String,
        file: Option<PathBuf>,
    },
    /// Workflow files.
    Workflows {
        #[command(subcommand)]
        command: WorkflowsCommand,
    },
    /// Export an order's invoice to 1C (only if paid; never twice).
    ExportInvoice {
        order_id: String,
        /// Wait for the outcome (delivering in this process meanwhile) and print it.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// The workflow to use.
        #[arg(long, default_value = "onec_invoice")]
        workflow: String,
    },
}

#[derive(Debug, Subcommand)]
enum WorkflowsCommand {
    /// Validate every workflow file; name the file, field and problem of each mistake.
    Check,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Do not apply migrations on start.
    #[arg(long)]
    no_migrate: bool,
    /// Serve /metrics, /healthz and /readyz here ('off' disables); overrides FERRY_METRICS_ADDR.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Only poll (no LISTEN/NOTIFY): for PostgreSQL behind a transaction-mode pooler.
    #[arg(long)]
    poll_only: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            } else {
                eprintln!("ferry: error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

struct Ctx {
    sources: Sources,
    config: Config,
    json: bool,
}

impl Ctx {
    async fn store(&self) -> Result<Store> {
        Store::open(&self.config.store)
            .await
            .with_context(|| "opening the database (DATABASE_URL)".to_string())
    }

    /// Open the store and make sure the schema exists (cheap when it does).
    async fn migrated_store(&self) -> Result<Store> {
        let store = self.store().await?;
        store.migrate().await.context("applying migrations")?;
        Ok(store)
    }

    fn registry(&self) -> Result<Registry> {
        let env = Config::env_lookup(&self.sources);
        Registry::load_dir(&self.config.workflows_dir, &env).map_err(|e| {
            anyhow!(
                "invalid workflow files in {} (run `ferry workflows check`):\n{e}",
                self.config.workflows_dir.display()
            )
        })
    }

    /// What enqueueing needs of a workflow, without the targets' variables.
    fn summary(&self, workflow: &str) -> Result<crate::workflow::WorkflowSummary> {
        crate::workflow::peek(&self.config.workflows_dir, workflow).map_err(|e| anyhow!("{e}"))
    }

    fn print<T: serde::Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{}", human());
        }
    }
}

fn init_cli_logging(config: &Config) {
    // One-shot commands log warnings to stderr only; `run` sets up the full logging.
    let _ = crate::ops::logging::init(&LogConfig {
        format: if config.log_json {
            LogFormat::Json
        } else {
            LogFormat::Human
        },
        filter: "warn".into(),
        dir: None,
        file_name: "ferry.log".into(),
        stderr: true,
    })
    .map(std::mem::forget);
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let sources = Sources::from_process(cli.config.as_deref())?;
    let config = Config::from_sources(&sources)?;
    let ctx = Ctx {
        sources,
        config,
        json: cli.json,
    };
    match cli.command {
        Command::Run(args) => return run(&ctx, args).await,
        Command::Demo(args) => return crate::demo::run(args).await,
        _ => init_cli_logging(&ctx.config),
    }
    match cli.command {
        Command::Migrate => {
            let store = ctx.migrated_store().await?;
            ctx.print(
                &serde_json::json!({"migrated": store.url().to_string()}),
                || format!("migrations applied to {}", store.url()),
            );
        }
        Command::Status => {
            let store = ctx.store().await?;
            let lines = store.status().await.map_err(hint_migrate)?;
            ctx.print(&lines, || {
                if lines.is_empty() {
                    return "nothing pending, in flight, waiting or dead".into();
                }
                table(
                    &["WORKFLOW", "STATE", "ROWS", "OLDEST DUE (s)"],
                    lines
                        .iter()
                        .map(|l| {
                            vec![
                                l.workflow.clone(),
                                l.state.clone(),
                                l.rows.to_string(),
                                format!("{:.1}", l.oldest_due_age_s),
                            ]
                        })
                        .collect(),
                )
            });
        }
        Command::List {
            state,
            workflow,
            limit,
        } => {
            let state = state
                .map(|s| s.parse::<State>())
                .transpose()
                .map_err(|e| anyhow!("--state: {e}"))?;
            let store = ctx.store().await?;
            let rows = store
                .list(&ListFilter {
                    state,
                    workflow,
                    limit,
                })
                .await
                .map_err(hint_migrate)?;
            ctx.print(&rows, || {
                table(
                    &[
                        "ID",
                        "WORKFLOW",
                        "KEY",
                        "STATE",
                        "ATTEMPTS",
                        "DUE/LEASE",
                        "LAST ERROR",
                    ],
                    rows.iter()
                        .map(|r| {
                            vec![
                                r.id.to_string(),
                                r.workflow.clone(),
                                r.key.clone(),
                                r.state.clone(),
                                r.attempts.to_string(),
                                r.due_at.clone(),
                                r.last_error
                                    .clone()
                                    .map(|e| crate::outbox::excerpt(&e, 80))
                                    .unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        Command::Show { id } => {
            let store = ctx.store().await?;
            let row = store.get(id).await.map_err(hint_migrate)?;
            let attempts = store.attempts(id).await?;
            ctx.print(&serde_json::json!({"row": row, "attempts": attempts}), || {
                let mut s = format!(
                    "outbox row {}\n  workflow    {}\n  key         {}\n  state       {}\n  attempts    {}\n  due/lease   {}\n  created     {}\n  updated     {}\n  done        {}\n  last status {}\n  last error  {}\n  payload     {}\n",
                    row.id, row.workflow, row.key, row.state, row.attempts, row.due_at, row.created_at, row.updated_at,
                    row.done_at.clone().unwrap_or_default(),
                    row.last_status.map(|s| s.to_string()).unwrap_or_default(),
                    row.last_error.clone().unwrap_or_default(),
                    crate::outbox::excerpt(&row.payload, 2000),
                );
                s.push_str(&format!("attempt history ({}):\n", attempts.len()));
                s.push_str(&table(
                    &["#", "STARTED", "MS", "OUTCOME", "STATUS", "ERROR / RESPONSE"],
                    attempts
                        .iter()
                        .map(|a| {
                            vec![
                                a.attempt.to_string(),
                                a.started_at.clone(),
                                format!("{:.1}", a.duration_ms),
                                a.outcome.clone(),
                                a.http_status.map(|s| s.to_string()).unwrap_or_default(),
                                crate::outbox::excerpt(
                                    a.error.as_deref().or(a.response_excerpt.as_deref()).unwrap_or(""),
                                    100,
                                ),
                            ]
                        })
                        .collect(),
                ));
                s
            });
        }
        Command::Retry { id, dead, workflow } => {
            let store = ctx.store().await?;
            match (id, dead) {
                (Some(id), false) => {
                    store.reset(id).await?;
                    ctx.print(&serde_json::json!({"reset": [id]}), || {
                        format!("row {id} reset to pending: due now with a fresh attempt budget")
                    });
                }
                (None, true) => {
                    let n = store.reset_dead(workflow.as_deref()).await?;
                    ctx.print(&serde_json::json!({"reset": n}), || {
                        format!("{n} dead rows reset to pending")
                    });
                }
                _ => bail!(
                    "say which rows: `ferry retry <id>` or `ferry retry --dead [--workflow W]`"
                ),
            }
        }
        Command::Cancel { id, reason } => {
            let store = ctx.store().await?;
            store.cancel(id, &reason).await?;
            ctx.print(&serde_json::json!({"cancelled": id}), || {
                format!("row {id} cancelled: {reason}")
            });
        }
        Command::Enqueue {
            workflow,
            key,
            file,
        } => {
            let text = match file.as_deref() {
                None => read_stdin()?,
                Some(p) if p.as_os_str() == "-" => read_stdin()?,
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("reading payload file {}", p.display()))?,
            };
            let payload: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow!("the payload is not valid JSON: {e}"))?;
            ctx.summary(&workflow)?.document.validate(&payload)?;
            let store = ctx.migrated_store().await?;
            let e = store.enqueue(&workflow, &key, &payload).await?;
            ctx.print(
                &serde_json::json!({"id": e.id, "created": e.created, "state": e.state.as_str()}),
                || {
                    if e.created {
                        format!("enqueued as row {}", e.id)
                    } else {
                        format!(
                            "already enqueued as row {} ({}); nothing added",
                            e.id, e.state
                        )
                    }
                },
            );
        }
        Command::Workflows {
            command: WorkflowsCommand::Check,
        } => {
            let env = Config::env_lookup(&ctx.sources);
            match Registry::load_dir(&ctx.config.workflows_dir, &env) {
                Ok(registry) => {
                    let list: Vec<_> = registry
                        .iter()
                        .map(|w| {
                            serde_json::json!({
                                "name": w.name, "file": w.file.display().to_string(),
                                "request": format!("{} {}", w.method, w.url()),
                                "target": w.target.name, "timeout_s": w.timeout.as_secs_f64(),
                                "max_attempts": w.retry.max_attempts, "document": w.document.name(),
                            })
                        })
                        .collect();
                    ctx.print(&list, || {
                        let mut s = format!(
                            "{} workflow files in {} are valid:\n",
                            registry.len(),
                            ctx.config.workflows_dir.display()
                        );
                        for w in registry.iter() {
                            s.push_str(&format!(
                                "  {:<20} {} {} (target {}, timeout {}, up to {} attempts, document {})\n",
                                w.name,
                                w.method,
                                w.url(),
                                w.target.name,
                                humantime::format_duration(w.timeout),
                                w.retry.max_attempts,
                                w.document.name()
                            ));
                        }
                        s
                    });
                }
                Err(errors) => {
                    if ctx.json {
                        let list: Vec<_> = errors
                            .0
                            .iter()
                            .map(|e| serde_json::json!({"file": e.file.display().to_string(), "field": e.field, "problem": e.problem}))
                            .collect();
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&serde_json::json!({"errors": list}))?
                        );
                    } else {
                        eprintln!("{errors}");
                        eprintln!("ferry: {} problem(s) in workflow files", errors.0.len());
                    }
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::ExportInvoice {
            order_id,
            wait,
            timeout,
            workflow,
        } => return export_invoice_command(&ctx, &order_id, &workflow, wait, timeout).await,
        Command::Run(_) | Command::Demo(_) => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn hint_migrate(e: crate::outbox::StoreError) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("ferry_outbox") || text.contains("ferry_status") {
        anyhow!("{text} (has `ferry migrate` been run on this database?)")
    } else {
        e.into()
    }
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the payload from standard input")?;
    Ok(s)
}

async fn export_invoice_command(
    ctx: &Ctx,
    order_id: &str,
    workflow: &str,
    wait: bool,
    timeout: Duration,
) -> Result<ExitCode> {
    // Waiting means delivering here, which needs the targets' variables; enqueueing does not.
    let registry = if wait { Some(ctx.registry()?) } else { None };
    let wf = ctx.summary(workflow)?;
    let store = ctx.migrated_store().await?;
    let report = export_invoice(&store, wf, order_id).await?;
    let (outbox_id, created) = match &report {
        ExportReport::AlreadyExported {
            invoice_number,
            exported_at,
            onec_response,
            ..
        } => {
            ctx.print(&report, || {
                format!(
                    "order {order_id} is already exported: invoice {invoice_number} at {}; 1C answered: {}",
                    exported_at.as_deref().unwrap_or("?"),
                    onec_response.as_deref().unwrap_or("(nothing recorded)")
                )
            });
            return Ok(ExitCode::SUCCESS);
        }
        ExportReport::Enqueued {
            outbox_id, created, ..
        } => (*outbox_id, *created),
    };
    if !wait {
        ctx.print(&report, || {
            if created {
                format!("order {order_id}: invoice enqueued as outbox row {outbox_id}; a running relay delivers it")
            } else {
                format!("order {order_id}: already enqueued as outbox row {outbox_id}; nothing added")
            }
        });
        return Ok(ExitCode::SUCCESS);
    }
    // Deliver in this process while waiting: a relay like any other, safe beside running ones.
    let registry = registry.expect("loaded when waiting");
    let deliverer = Arc::new(HttpDeliverer::new(&registry)?);
    let relay = Relay::new(store.clone(), deliverer, ctx.config.relay.clone());
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(async move { relay.run(s).await });
    let deadline = tokio::time::Instant::now() + timeout;
    let row = loop {
        let row = store.get(outbox_id).await?;
        if row.state == "done" || row.state == "dead" {
            break Some(row);
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.cancel();
    let _ = handle.await;
    let Some(row) = row else {
        bail!(
            "row {outbox_id} did not settle within {}; it stays queued (see `ferry show {outbox_id}`)",
            humantime::format_duration(timeout)
        );
    };
    let attempts = store.attempts(outbox_id).await?;
    let last = attempts.last();
    ctx.print(
        &serde_json::json!({"row": row, "attempts": attempts}),
        || {
            format!(
                "order {order_id}: {} after {} attempt(s){}{}",
                row.state,
                row.attempts,
                last.and_then(|a| a.http_status)
                    .map(|s| format!(", HTTP {s}"))
                    .unwrap_or_default(),
                match row.state.as_str() {
                    "done" => format!(
                        "; 1C answered: {}",
                        last.and_then(|a| a.response_excerpt.clone())
                            .unwrap_or_default()
                    ),
                    _ => format!("; reason: {}", row.last_error.clone().unwrap_or_default()),
                }
            )
        },
    );
    Ok(if row.state == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run(ctx: &Ctx, args: RunArgs) -> Result<ExitCode> {
    let config = &ctx.config;
    let _log = crate::ops::logging::init(&LogConfig {
        format: if config.log_json {
            LogFormat::Json
        } else {
            LogFormat::Human
        },
        filter: config.log_filter.clone(),
        dir: config.log_dir.clone(),
        file_name: "ferry.log".into(),
        stderr: true,
    })?;
    // Everything is checked before anything starts.
    let registry = Arc::new(ctx.registry()?);
    let metrics_addr = match args.metrics_addr.as_deref() {
        Some("off") => None,
        Some(a) => Some(a.to_string()),
        None => config.metrics_addr.clone(),
    };
    let prune: cron::Schedule = config
        .prune_schedule
        .parse()
        .map_err(|e| anyhow!("FERRY_PRUNE_SCHEDULE: {e}"))?;
    let store = ctx.store().await?;
    if !args.no_migrate {
        store.migrate().await.context("applying migrations")?;
    }
    let metrics = Arc::new(Metrics::new());
    metrics.set_known_workflows(registry.iter().map(|w| w.name.clone()));
    let deliverer =
        HttpDeliverer::new(&registry)?.with_observer(Arc::new(MetricsObserver(metrics.clone())));
    let mut relay_config = config.relay.clone();
    if args.poll_only {
        relay_config.listen = false;
    }
    let grace = relay_config.shutdown_grace;
    let relay = Relay::new(store.clone(), Arc::new(deliverer), relay_config)
        .with_observer(Arc::new(MetricsObserver(metrics.clone())));
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone(), grace);

    let ops_server = match metrics_addr {
        Some(addr) => {
            let s = store.clone();
            let stats = relay.stats();
            // Ready means the relay can claim: the database answers a ping and the relay's
            // own claims are not failing (a ping can work while every claim fails).
            let ready: crate::ops::ReadyCheck = Arc::new(move || {
                let s = s.clone();
                let stats = stats.clone();
                Box::pin(async move {
                    s.ping()
                        .await
                        .map_err(|e| format!("database unreachable: {e}"))?;
                    stats
                        .claim_health()
                        .map_err(|e| format!("relay cannot claim: {e}"))
                })
            });
            let server = crate::ops::serve(&addr, metrics.clone(), ready, shutdown.clone()).await?;
            Some(server)
        }
        None => None,
    };
    let gauges = tokio::spawn(refresh_gauges(
        store.clone(),
        metrics.clone(),
        relay.stats(),
        shutdown.clone(),
    ));
    let relay_id = format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
        std::process::id()
    );
    let jobs = crate::cron::jobs(&registry, &prune, config.retention);
    let cron = tokio::spawn(crate::cron::run_jobs(
        store.clone(),
        registry.clone(),
        jobs,
        relay_id,
        shutdown.clone(),
    ));
    tracing::info!(
        database = %store.url(),
        workflows = registry.len(),
        "ferry relay running; SIGTERM or Ctrl-C stops it"
    );
    let started = tokio::time::Instant::now();
    relay.run(shutdown.clone()).await;
    shutdown.cancel();
    // The relay kept within the grace period; the rest of the exit (cron, gauges, the HTTP
    // server, closing the pool) gets what is left of it, and a short moment at least.
    let left = grace
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(500));
    let cleanup = async {
        let _ = gauges.await;
        let _ = cron.await;
        if let Some(s) = ops_server {
            s.join().await;
        }
        store.close().await;
    };
    if tokio::time::timeout(left, cleanup).await.is_err() {
        tracing::warn!("shutdown time is up; exiting without waiting for the database");
    }
    tracing::info!("ferry relay stopped");
    Ok(ExitCode::SUCCESS)
}

/// First SIGTERM/SIGINT: stop gracefully (the relay bounds its exit by `grace`). A second one:
/// exit at once (rows held stay `sending` under their lease and are taken up again when it
/// expires). A watchdog exits too if the graceful stop overruns the grace period by far.
fn spawn_signal_handler(shutdown: CancellationToken, grace: Duration) {
    let mut signals = Signals::new();
    tokio::spawn(async move {
        let first = signals.next().await;
        tracing::info!("{first}: stopping (a second signal exits at once)");
        shutdown.cancel();
        let overrun = grace.saturating_add(Duration::from_secs(10));
        tokio::select! {
            second = signals.next() => {
                tracing::warn!("{second} again: exiting now; rows in flight are taken up again when their lease expires");
                eprintln!("ferry: {second} again: exiting now");
                std::process::exit(130);
            }
            _ = tokio::time::sleep(overrun) => {
                tracing::error!(grace_s = grace.as_secs_f64(), "graceful stop overran the grace period; exiting now");
                eprintln!("ferry: graceful stop overran the grace period; exiting now");
                std::process::exit(1);
            }
        }
    });
}

/// SIGTERM and SIGINT, as they come.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        Signals {
            #[cfg(unix)]
            term: match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    None
                }
            },
        }
    }

    /// Wait for the next SIGTERM or SIGINT; returns its name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Keep the row-count and lag gauges fresh (the ferry_status view is cheap: it skips done rows).
async fn refresh_gauges(
    store: Store,
    metrics: Arc<Metrics>,
    stats: Arc<crate::relay::RelayStats>,
    shutdown: CancellationToken,
) {
    let mut last_errors = 0;
    loop {
        match store.status().await {
            Ok(lines) => {
                let rows: Vec<(String, String, i64)> = lines
                    .iter()
                    .map(|l| (l.workflow.clone(), l.state.clone(), l.rows))
                    .collect();
                metrics.set_rows(&rows);
                let ages: Vec<(String, f64)> = lines
                    .iter()
                    .filter(|l| l.state == "pending" || l.state == "retry_wait")
                    .map(|l| (l.workflow.clone(), l.oldest_due_age_s))
                    .collect();
                metrics.set_oldest_due_age(&ages);
            }
            Err(e) => tracing::debug!(error = %e, "gauge refresh failed"),
        }
        let errors = stats
            .store_errors
            .load(std::sync::atomic::Ordering::Relaxed);
        for _ in last_errors..errors {
            metrics.store_error();
        }
        last_errors = errors;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Render rows as an aligned text table.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i] - c.chars().count())))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r));
    }
    out
}
