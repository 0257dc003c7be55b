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
use crate::outbox::{AttemptOutcome, ListFilter, State, Store};
use crate::relay::Relay;
use crate::workflow::{Registry, Unconfigured, WorkflowErrors};

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
    ///
    /// A valid file whose variables are unset (e.g. the partner API's, on a shop that only uses
    /// 1C) is reported as not configured, apart from mistakes: `run` leaves its rows pending.
    /// Exit 0 when no file has a mistake and at least one workflow is configured; 1 otherwise,
    /// or with --strict when any workflow is not configured.
    Check {
        /// Also fail when a valid workflow is not configured.
        #[arg(long)]
        strict: bool,
    },
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

    /// The workflows `run` delivers: every configured, valid file. A valid file whose variables
    /// are unset is set aside with a warning (its rows stay pending, unclaimed); a real mistake
    /// in any file, or no configured workflow at all, is an error.
    fn registry(&self) -> Result<Registry> {
        let registry = self.configured_registry()?;
        if registry.is_empty() {
            bail!(
                "no workflow in {} is configured; set the variables of at least one (`ferry workflows check` lists them):\n{}",
                self.config.workflows_dir.display(),
                unconfigured_lines(registry.unconfigured())
            );
        }
        for u in registry.unconfigured() {
            tracing::warn!(
                workflow = %u.name,
                missing = %u.missing.join(", "),
                file = %u.file.display(),
                "workflow not configured (variables unset): its rows stay pending, neither claimed nor dead, until the variables are set and the relay restarts"
            );
        }
        Ok(registry)
    }

    /// [`Registry::load_configured`] on the workflow directory, errors worded for the CLI.
    fn configured_registry(&self) -> Result<Registry> {
        let env = Config::env_lookup(&self.sources);
        Registry::load_configured(&self.config.workflows_dir, &env).map_err(|e| {
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
                                l.state.to_string(),
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
                                r.state.to_string(),
                                r.attempts.to_string(),
                                due_or_lease(r),
                                r.last_error
                                    .as_deref()
                                    .map(|e| middle_cut(e, 100))
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
            ctx.print(
                &serde_json::json!({"row": row, "attempts": attempts}),
                || render_show(&row, &attempts),
            );
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
                        format!("{} reset to pending", plural(n, "dead row", "dead rows"))
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
            let dead_reason = if e.state == State::Dead {
                store.get(e.id).await?.last_error
            } else {
                None
            };
            ctx.print(
                &serde_json::json!({"id": e.id, "created": e.created, "state": e.state.as_str()}),
                || {
                    if e.created {
                        format!("enqueued as row {}", e.id)
                    } else {
                        format!(
                            "already enqueued as row {} ({}); nothing added{}",
                            e.id,
                            e.state,
                            dead_hint(e.id, e.state, dead_reason.as_deref())
                        )
                    }
                },
            );
        }
        Command::Workflows {
            command: WorkflowsCommand::Check { strict },
        } => return workflows_check(&ctx, strict),
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
    if e.is_missing_table() {
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
    // Waiting means delivering here, which needs this workflow's variables (not the other
    // workflows'); enqueueing needs none.
    let registry = if wait {
        let registry = ctx.configured_registry()?;
        if let Some(u) = registry.unconfigured().iter().find(|u| u.name == workflow) {
            bail!(
                "workflow {workflow} is not configured here: {} not set (read by {}); nothing was enqueued. \
                 Set them to deliver with --wait, or leave out --wait to enqueue for a relay that has them",
                u.missing.join(", "),
                u.file.display()
            );
        }
        Some(registry)
    } else {
        None
    };
    let wf = ctx.summary(workflow)?;
    let store = ctx.migrated_store().await?;
    let report = export_invoice(&store, wf, order_id).await?;
    let (outbox_id, created, state) = match &report {
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
            outbox_id,
            created,
            state,
            ..
        } => (*outbox_id, *created, *state),
    };
    if !created && state == State::Dead {
        // Nothing will deliver it: say so, why, and how to try again.
        let row = store.get(outbox_id).await?;
        ctx.print(
            &serde_json::json!({"report": report, "row": row, "retry": retry_command(outbox_id)}),
            || {
                format!(
                    "order {order_id}: its invoice is already in the outbox as row {outbox_id}, which is dead \
                     after {}: {}\nNothing was added. Fix the cause, then retry it: {}",
                    plural(row.attempts, "attempt", "attempts"),
                    row.last_error.as_deref().unwrap_or("(no reason recorded)"),
                    retry_command(outbox_id)
                )
            },
        );
        return Ok(ExitCode::FAILURE);
    }
    if !wait {
        ctx.print(&report, || {
            if created {
                format!("order {order_id}: invoice enqueued as outbox row {outbox_id}; a running relay delivers it")
            } else {
                format!(
                    "order {order_id}: already enqueued as outbox row {outbox_id} ({state}); nothing added{}",
                    if state == State::Done {
                        ""
                    } else {
                        "; a running relay delivers it"
                    }
                )
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
        if matches!(row.state, State::Done | State::Dead) {
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
            "row {outbox_id} did not settle within {}; it stays queued (see `{} show {outbox_id}`)",
            humantime::format_duration(timeout),
            program()
        );
    };
    let attempts = store.attempts(outbox_id).await?;
    let last = attempts.last();
    ctx.print(
        &serde_json::json!({"row": row, "attempts": attempts}),
        || {
            format!(
                "order {order_id}: {} after {}{}{}",
                row.state,
                plural(row.attempts, "attempt", "attempts"),
                last.and_then(|a| a.http_status)
                    .map(|s| format!(", HTTP {s}"))
                    .unwrap_or_default(),
                match row.state {
                    State::Done => format!(
                        "; 1C answered: {}",
                        last.and_then(|a| a.response_excerpt.clone())
                            .unwrap_or_default()
                    ),
                    _ => format!(
                        "; reason: {}\nFix the cause, then retry it: {}",
                        row.last_error.clone().unwrap_or_default(),
                        retry_command(outbox_id)
                    ),
                }
            )
        },
    );
    Ok(if row.state == State::Done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `ferry workflows check`: mistakes (exit 1), configured workflows, and valid ones whose
/// variables are unset (warnings; exit 1 only with `--strict` or when none is configured).
fn workflows_check(ctx: &Ctx, strict: bool) -> Result<ExitCode> {
    let env = Config::env_lookup(&ctx.sources);
    let dir = &ctx.config.workflows_dir;
    let report = match Registry::inspect_dir(dir, &env) {
        Ok(report) => report,
        Err(errors) => crate::workflow::DirReport {
            registry: Registry::default(),
            errors: errors.0,
        },
    };
    let registry = &report.registry;
    let unconfigured = registry.unconfigured();
    let files = registry.len() + unconfigured.len();
    let broken = !report.errors.is_empty();
    let none_configured = !broken && registry.is_empty();
    let ok = !broken && !none_configured && (!strict || unconfigured.is_empty());
    if ctx.json {
        let valid: Vec<_> = registry
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
        let errors: Vec<_> = report
            .errors
            .iter()
            .map(|e| serde_json::json!({"file": e.file.display().to_string(), "field": e.field, "problem": e.problem}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": ok,
                "configured": valid,
                "unconfigured": unconfigured,
                "errors": errors,
            }))?
        );
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if !registry.is_empty() {
        let mut s = if unconfigured.is_empty() && !broken {
            format!(
                "{} in {} {} valid:\n",
                plural(registry.len(), "workflow file", "workflow files"),
                dir.display(),
                if registry.len() == 1 { "is" } else { "are" }
            )
        } else {
            format!(
                "{} of {} workflow files in {} {} valid and configured:\n",
                registry.len(),
                files,
                dir.display(),
                if registry.len() == 1 { "is" } else { "are" }
            )
        };
        for w in registry.iter() {
            s.push_str(&format!(
                "  {:<20} {} {} (target {}, timeout {}, up to {}, document {})\n",
                w.name,
                w.method,
                w.url(),
                w.target.name,
                humantime::format_duration(w.timeout),
                plural(w.retry.max_attempts, "attempt", "attempts"),
                w.document.name()
            ));
        }
        print!("{s}");
    }
    if none_configured {
        eprintln!(
            "ferry: no workflow in {} is configured; set the variables of at least one (`ferry run` refuses to start until then):\n{}",
            dir.display(),
            unconfigured_lines(unconfigured)
        );
    } else if !unconfigured.is_empty() {
        eprintln!(
            "{}: {} valid but not configured on this host; `ferry run` delivers the others and leaves {} rows pending (not claimed, not dead) until the variables are set and the relay restarts:\n{}",
            if ok { "warning" } else { "ferry" },
            if unconfigured.len() == 1 {
                "1 workflow is".to_string()
            } else {
                format!("{} workflows are", unconfigured.len())
            },
            if unconfigured.len() == 1 { "its" } else { "their" },
            unconfigured_lines(unconfigured)
        );
    }
    if broken {
        eprintln!("{}", WorkflowErrors(report.errors.clone()));
        eprintln!(
            "ferry: {} in workflow files",
            plural(report.errors.len(), "problem", "problems")
        );
    } else if !ok && !none_configured {
        eprintln!("ferry: --strict: every workflow must be configured");
    }
    Ok(if ok {
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
                    .map(|l| (l.workflow.clone(), l.state.to_string(), l.rows))
                    .collect();
                metrics.set_rows(&rows);
                let ages: Vec<(String, f64)> = lines
                    .iter()
                    .filter(|l| matches!(l.state, State::Pending | State::RetryWait))
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

/// `n` and the noun in the right number: `1 dead row`, `2 dead rows`.
pub fn plural<N>(n: N, one: &str, many: &str) -> String
where
    N: std::fmt::Display + PartialEq + From<u8>,
{
    format!("{n} {}", if n == N::from(1) { one } else { many })
}

/// `text` as one shell word: unchanged when it holds only characters no shell treats specially,
/// otherwise in single quotes (a `'` inside becomes `'\''`).
pub fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A SQL statement as one shell word that reads well: in single quotes when it has none, in
/// double quotes when it has single quotes but nothing a shell expands inside double quotes
/// (`$`, `` ` ``, `\`, `"`, and `!` for interactive history), otherwise [`shell_quote`].
pub fn shell_quote_sql(sql: &str) -> String {
    if !sql.contains('\'') {
        format!("'{sql}'")
    } else if !sql.chars().any(|c| "$`\\\"!".contains(c)) {
        format!("\"{sql}\"")
    } else {
        shell_quote(sql)
    }
}

/// How to type this program in a shell, from the current directory: `ferry` when that is what
/// `PATH` finds, otherwise the path of the running executable (relative when it is under the
/// current directory, e.g. `target/release/ferry` after `cargo run --release`), shell-quoted.
pub fn program() -> String {
    let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
    else {
        return "ferry".into();
    };
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("ferry"))
            .find(|candidate| candidate.is_file())
    });
    if on_path.and_then(|p| p.canonicalize().ok()).as_ref() == Some(&exe) {
        return "ferry".into();
    }
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(|p| p.to_path_buf()));
    let shown = match relative {
        // A bare name would be looked up in PATH, not here.
        Some(rel) if rel.components().count() == 1 => format!("./{}", rel.display()),
        Some(rel) => rel.display().to_string(),
        None => exe.display().to_string(),
    };
    shell_quote(&shown)
}

/// The command that resets row `id` to pending.
fn retry_command(id: i64) -> String {
    format!("{} retry {id}", program())
}

/// For a row found already enqueued: if it is dead, its reason and how to retry it.
fn dead_hint(id: i64, state: State, reason: Option<&str>) -> String {
    if state != State::Dead {
        return String::new();
    }
    format!(
        "\nreason: {}\nFix the cause, then retry it: {}",
        reason.unwrap_or("(no reason recorded)"),
        retry_command(id)
    )
}

/// Unconfigured workflows, one line each: name, file, the unset variables.
fn unconfigured_lines(list: &[Unconfigured]) -> String {
    list.iter()
        .map(|u| {
            format!(
                "  {:<20} {} not set (read by {})",
                u.name,
                u.missing.join(", "),
                u.file.display()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The due time of a waiting row, the lease expiry of a `sending` one, `-` for finished rows
/// (their `due_at` means nothing any more).
fn due_or_lease(row: &crate::outbox::OutboxRow) -> String {
    match row.state {
        State::Done | State::Dead => "-".into(),
        _ => crate::outbox::time_text(row.due_at),
    }
}

/// At most `max` characters of `text` on one line: whole when short, otherwise its start and
/// its end around `…` (the end of an error often names what failed: `no such table: orders`).
pub fn middle_cut(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let count = flat.chars().count();
    if count <= max {
        return flat;
    }
    let keep = max.saturating_sub(1);
    let head = keep / 2;
    let tail = keep - head;
    let start: String = flat.chars().take(head).collect();
    let end: String = flat.chars().skip(count - tail).collect();
    format!("{start}…{end}")
}

/// Which attempt budget each attempt (in the order given) belongs to, from 1: an operator reset
/// gives a row a fresh budget whose attempts are numbered from 1 again. Attempts recorded stale
/// (their relay had lost the row) never start a budget.
fn budgets(attempts: &[&crate::outbox::AttemptLine]) -> Vec<u32> {
    let mut budget = 1;
    let mut last: Option<i32> = None;
    attempts
        .iter()
        .map(|a| {
            if !a.is_stale() {
                if last.is_some_and(|prev| a.attempt <= prev) {
                    budget += 1;
                }
                last = Some(a.attempt);
            }
            budget
        })
        .collect()
}

/// `ferry show`: the row, then every request ever made for it. Errors are shown whole.
pub fn render_show(
    row: &crate::outbox::OutboxRow,
    attempts: &[crate::outbox::AttemptLine],
) -> String {
    // Oldest first by start time: a stale attempt is recorded late but started early.
    let mut history: Vec<&crate::outbox::AttemptLine> = attempts.iter().collect();
    history.sort_by_key(|a| a.started_at);
    let budget_of = budgets(&history);
    let last_budget = budget_of.last().copied().unwrap_or(0);
    // Requests of the current budget: the last budget in the history, unless the row was reset
    // after it (then its attempt count is below that budget's numbers, or zero).
    let last_numbers: Vec<i32> = history
        .iter()
        .zip(&budget_of)
        .filter(|(_, b)| **b == last_budget)
        .map(|(a, _)| a.attempt)
        .collect();
    let current_is_last = row.attempts > 0
        && last_numbers
            .iter()
            .max()
            .is_some_and(|max| *max <= row.attempts);
    let sent_now = if current_is_last {
        last_numbers.len() as i32
    } else {
        0
    };
    let in_flight = i32::from(row.state == State::Sending);
    let unsent = (row.attempts - sent_now - in_flight).max(0);
    let last_is_fatal_request = current_is_last
        && history
            .last()
            .is_some_and(|a| a.outcome == AttemptOutcome::Dead);
    let dead_without_request = row.state == State::Dead && !last_is_fatal_request;

    let state = if dead_without_request {
        "dead (no request was sent for this outcome: see the last error)".to_string()
    } else {
        row.state.to_string()
    };
    let mut notes = Vec::new();
    if row.attempts > 0 && sent_now == 0 && in_flight == 0 {
        notes.push("no request was sent".to_string());
    } else {
        if unsent > 0 {
            notes.push(format!(
                "{} sent, {unsent} without a request (refused before sending, or its relay stopped)",
                plural(sent_now, "request", "requests")
            ));
        }
        if in_flight > 0 {
            notes.push("one in flight now".into());
        }
    }
    let budgets_in_all = last_budget + u32::from(!current_is_last && !history.is_empty());
    if history.len() > sent_now as usize {
        notes.push(format!(
            "{} in all, over {}",
            plural(history.len(), "request", "requests"),
            plural(budgets_in_all, "budget", "budgets")
        ));
    }
    let mut attempts_line = format!("{} in the current budget", row.attempts);
    if !notes.is_empty() {
        attempts_line.push_str(&format!(" ({})", notes.join("; ")));
    }
    let mut s = format!(
        "outbox row {}\n  workflow    {}\n  key         {}\n  state       {}\n  attempts    {}\n  due/lease   {}\n  created     {}\n  updated     {}\n  done        {}\n  last status {}\n  last error  {}\n  payload     {}\n",
        row.id,
        row.workflow,
        row.key,
        state,
        attempts_line,
        due_or_lease(row),
        crate::outbox::time_text(row.created_at),
        crate::outbox::time_text(row.updated_at),
        row.done_at
            .map(crate::outbox::time_text)
            .unwrap_or_else(|| "-".into()),
        row.last_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
        row.last_error.clone().unwrap_or_else(|| "-".into()),
        crate::outbox::excerpt(&row.payload, 2000),
    );
    if history.is_empty() {
        s.push_str("attempt history (0): no request has been sent for this row\n");
        return s;
    }
    s.push_str(&format!("attempt history ({}):", history.len()));
    if last_budget > 1 {
        s.push_str(&format!(
            " {} budgets (an operator reset gives a fresh budget, numbered from 1 again); # counts every request",
            last_budget
        ));
    }
    s.push('\n');
    s.push_str(&table(
        &[
            "#",
            "BUDGET",
            "TRY",
            "STARTED",
            "MS",
            "OUTCOME",
            "STATUS",
            "ERROR / RESPONSE",
        ],
        history
            .iter()
            .zip(&budget_of)
            .enumerate()
            .map(|(i, (a, budget))| {
                let detail = match (&a.error, &a.response_excerpt) {
                    (Some(e), _) => e.replace(['\n', '\r'], " "),
                    (None, Some(r)) => middle_cut(r, 300),
                    (None, None) => String::new(),
                };
                vec![
                    (i + 1).to_string(),
                    budget.to_string(),
                    a.attempt.to_string(),
                    crate::outbox::time_text(a.started_at),
                    format!("{:.1}", a.duration_ms),
                    a.outcome.to_string(),
                    a.http_status.map(|s| s.to_string()).unwrap_or_default(),
                    detail,
                ]
            })
            .collect(),
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{AttemptLine, OutboxRow};

    fn time(text: &str) -> chrono::DateTime<chrono::Utc> {
        text.parse().unwrap()
    }

    fn row(state: &str, attempts: i32, last_error: Option<&str>) -> OutboxRow {
        OutboxRow {
            id: 7,
            workflow: "partner_phieu_nhap".into(),
            key: "PN-BROKEN".into(),
            state: state.parse().unwrap(),
            attempts,
            due_at: time("2026-12-01T10:00:00.000Z"),
            last_error: last_error.map(str::to_string),
            last_status: None,
            created_at: time("2026-12-01T09:59:59.000Z"),
            updated_at: time("2026-12-01T10:00:00.000Z"),
            done_at: None,
            payload: "{}".into(),
        }
    }

    fn attempt(n: i32, at: &str, outcome: &str, error: Option<&str>) -> AttemptLine {
        AttemptLine {
            attempt: n,
            started_at: time(&format!("2026-12-01T10:00:{at}.000Z")),
            duration_ms: 1.0,
            outcome: outcome.parse().unwrap(),
            http_status: Some(503),
            error: error.map(str::to_string),
            response_excerpt: None,
        }
    }

    #[test]
    fn plural_and_quoting() {
        assert_eq!(plural(1, "dead row", "dead rows"), "1 dead row");
        assert_eq!(plural(0, "dead row", "dead rows"), "0 dead rows");
        assert_eq!(shell_quote("ferry-demo.db"), "ferry-demo.db");
        assert_eq!(shell_quote("my demo.db"), "'my demo.db'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote_sql("SELECT 1"), "'SELECT 1'");
        assert_eq!(
            shell_quote_sql("SELECT 1 WHERE x <> 'done'"),
            "\"SELECT 1 WHERE x <> 'done'\""
        );
        assert_eq!(shell_quote_sql("SELECT '$x'"), r"'SELECT '\''$x'\'''");
    }

    #[test]
    fn middle_cut_keeps_the_end() {
        let e = format!("{} no such table: orders", "x".repeat(200));
        let cut = middle_cut(&e, 60);
        assert_eq!(cut.chars().count(), 60);
        assert!(cut.ends_with("no such table: orders"), "{cut}");
        assert_eq!(middle_cut("short\nline", 60), "short line");
    }

    #[test]
    fn refused_document_says_no_request_was_sent() {
        let r = row(
            "dead",
            1,
            Some("invalid partner_phieu_nhap document: invoiceCode: missing required field"),
        );
        let text = render_show(&r, &[]);
        assert!(text.contains("no request was sent"), "{text}");
        assert!(
            text.contains("attempt history (0): no request has been sent"),
            "{text}"
        );
        assert!(text.contains("due/lease   -"), "{text}");
        assert!(
            text.contains("invoiceCode: missing required field"),
            "{text}"
        );
    }

    #[test]
    fn budgets_are_told_apart_after_a_reset() {
        let history = [
            attempt(1, "01", "retry", None),
            attempt(2, "02", "dead", Some("HTTP 503")),
            attempt(1, "03", "retry", None),
            attempt(2, "04", "retry", None),
        ];
        let r = row("retry_wait", 2, Some("HTTP 503"));
        let text = render_show(&r, &history);
        assert!(text.contains("attempt history (4): 2 budgets"), "{text}");
        let lines: Vec<&str> = text.lines().skip_while(|l| !l.starts_with('#')).collect();
        let firsts: Vec<Vec<&str>> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().take(3).collect())
            .collect();
        assert_eq!(
            firsts,
            [
                ["1", "1", "1"],
                ["2", "1", "2"],
                ["3", "2", "1"],
                ["4", "2", "2"]
            ]
        );
        assert!(
            text.contains("2 in the current budget (4 requests in all, over 2 budgets)"),
            "{text}"
        );
        // A stale attempt recorded late does not open a budget.
        let stale = [
            attempt(
                1,
                "01",
                "retry",
                Some("HTTP 503 (stale: the lease was lost)"),
            ),
            attempt(2, "02", "done", None),
        ];
        let ordered: Vec<&AttemptLine> = stale.iter().rev().collect();
        assert_eq!(budgets(&ordered), [1, 1]);
    }

    #[test]
    fn long_errors_are_shown_whole() {
        let reason = format!(
            "delivered (HTTP 201), but the workflow's on_done SQL failed: {} relation \"orders\" does not exist",
            "context ".repeat(30)
        );
        let history = [attempt(1, "01", "dead", Some(&reason))];
        let text = render_show(&row("dead", 1, Some(&reason)), &history);
        assert!(
            text.lines()
                .any(|l| l.starts_with("1 ") && l.ends_with("relation \"orders\" does not exist")),
            "{text}"
        );
        assert!(!text.contains("bytes cut"), "{text}");
        assert!(text.contains("state       dead\n"), "{text}");
    }
}
