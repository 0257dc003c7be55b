//! The `ferry` command line: argument parsing and one function per command. Each command calls
//! the service layer ([`crate::service`]: the engine and the operator actions) and renders what
//! it returns (`render.rs`); nothing here assembles the engine or is needed to use Ferry as a
//! crate.

mod render;

use render::{
    dead_hint, detail_json, due_or_lease, render_show, retry_command, row_json, unconfigured_lines,
};

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Allowed, Config, ConsoleMode, Sources, SETTINGS};
use crate::console::{ConsoleConfig, ConsoleOptions};
use crate::export::ExportReport;
use crate::ops::{LogConfig, LogFormat};
use crate::outbox::{ListFilter, State, Store};
use crate::service::{self, DaemonOptions, Engine, Operator};
use crate::text::{middle_cut, plural, program, table};
use crate::workflow::{Registry, WorkflowErrors};

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
    /// Print machine-readable JSON instead of tables (payloads as JSON values).
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
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
    /// Rows per workflow and live state (the ferry_status view), and rows ever done.
    Status,
    /// Serve the operator console (a web page and a JSON API) on this database, without
    /// relaying: overview, rows, retry and cancel. `ferry run` serves it too, at / of its
    /// metrics address.
    Console(ConsoleArgs),
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
        /// Why (recorded with the action in ferry_actions).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Release a dead row from its ordering group: it stays dead (recorded: when, by whom,
    /// why), and the later rows of its group are delivered without it.
    Release {
        id: i64,
        #[arg(long)]
        reason: String,
    },
    /// Send delivered rows again on purpose: each done row of WORKFLOW finished in
    /// [--since, --until) gets a new row (new Idempotency-Key, key <key>#replay-<n>); the
    /// original stays done and on_done SQL is not run for the replay.
    Replay {
        #[arg(long)]
        workflow: String,
        /// RFC 3339 (2026-02-13T10:00:00Z), or a date (2026-02-13, midnight UTC).
        #[arg(long, value_parser = parse_time)]
        since: chrono::DateTime<chrono::Utc>,
        /// As --since; exclusive.
        #[arg(long, value_parser = parse_time)]
        until: chrono::DateTime<chrono::Utc>,
        /// Only the row with this key.
        #[arg(long)]
        key: Option<String>,
        /// Print what would be sent (ids, keys, document codes); change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Pause a workflow (or --target: all its workflows) for every relay, within a second.
    Pause {
        /// The workflow (or the target, with --target).
        workflow: Option<String>,
        #[arg(long, conflicts_with = "workflow")]
        target: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused workflow (or --target).
    Resume {
        workflow: Option<String>,
        #[arg(long, conflicts_with = "workflow")]
        target: Option<String>,
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
    /// Print a shell completion script: `ferry completions bash > /etc/bash_completion.d/ferry`,
    /// `ferry completions zsh > "${fpath[1]}/_ferry"`, `ferry completions fish > ~/.config/fish/completions/ferry.fish`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `ferry man > /usr/local/share/man/man1/ferry.1`.
    Man,
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
    /// Print the JSON Schema of workflow files, for editors (Taplo / Even Better TOML):
    /// `ferry workflows schema > workflows/ferry-workflow.schema.json`.
    Schema,
}

#[derive(Debug, Args)]
struct ConsoleArgs {
    /// Listen here; overrides FERRY_CONSOLE_ADDR (default 127.0.0.1:9465).
    #[arg(long)]
    addr: Option<String>,
    /// Do not apply migrations on start.
    #[arg(long)]
    no_migrate: bool,
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

    /// The operator actions on this installation's store and workflows, recorded as done by
    /// `cli:<user>`.
    async fn operator(&self) -> Result<Operator> {
        Ok(Operator::new(self.store().await?, &self.config.workflows_dir).acting_as(cli_actor()))
    }

    /// The operator actions, on a store whose schema is made sure of first.
    async fn migrated_operator(&self) -> Result<Operator> {
        Ok(
            Operator::new(self.migrated_store().await?, &self.config.workflows_dir)
                .acting_as(cli_actor()),
        )
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

/// Who the CLI's actions are recorded as in `ferry_actions`: `cli:<login name>`.
fn cli_actor() -> String {
    format!("cli:{}", operator_name())
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

/// `ferry completions <shell>`, `ferry man`, `ferry workflows schema`: generated from the command
/// definition, needing no configuration (they work where no setting is valid, e.g. while packaging).
fn print_generated(command: &Command) -> Result<bool> {
    use std::io::Write;
    let mut cmd = Cli::command();
    let mut text = Vec::new();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, "ferry", &mut text);
        }
        Command::Man => clap_mangen::Man::new(cmd).render(&mut text)?,
        Command::Workflows {
            command: WorkflowsCommand::Schema,
        } => text = crate::workflow::schema_json().into_bytes(),
        _ => return Ok(false),
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(&text).and_then(|()| out.flush()) {
        // `ferry man | head` is fine.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing to standard output")
        }
        _ => Ok(true),
    }
}

/// Warn about `FERRY_*` variables nothing reads (a typo of a setting is otherwise silently
/// ignored), naming the closest setting. Logged once logging is set up.
fn warn_unknown_variables(ctx: &Ctx) {
    let read_by_workflows = crate::config::workflow_variables(&ctx.config.workflows_dir);
    for unknown in crate::config::unknown_variables(ctx.sources.env.keys(), &read_by_workflows) {
        tracing::warn!(
            variable = %unknown.name,
            suggestion = unknown.suggestion.unwrap_or(""),
            "{unknown}"
        );
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    if print_generated(&cli.command)? {
        return Ok(ExitCode::SUCCESS);
    }
    let sources = Sources::from_process(cli.config.as_deref())?;
    let config = Config::from_sources(&sources)?;
    let ctx = Ctx {
        sources,
        config,
        json: cli.json,
    };
    match cli.command {
        Command::Run(args) => return run(&ctx, args).await,
        Command::Console(args) => return console(&ctx, args).await,
        #[cfg(feature = "demo")]
        Command::Demo(args) => return crate::demo::run(args).await,
        _ => {
            init_cli_logging(&ctx.config);
            warn_unknown_variables(&ctx);
        }
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
            let operator = ctx.operator().await?;
            let lines = operator.status().await.map_err(hint_migrate_service)?;
            let blocked = operator.blocked().await?;
            let paused = operator.paused().await?;
            ctx.print(&lines, || {
                let mut out = if lines.is_empty() {
                    "nothing pending, in flight, waiting or dead".to_string()
                } else {
                    status_table(&lines)
                };
                if !paused.is_empty() {
                    out.push_str("\n\nPaused (ferry resume ... to restart):\n");
                    out.push_str(&table(
                        &["KIND", "NAME", "BY", "SINCE", "REASON"],
                        paused
                            .iter()
                            .map(|p| {
                                vec![
                                    p.kind.clone(),
                                    p.name.clone(),
                                    p.paused_by.clone().unwrap_or_default(),
                                    crate::outbox::time_text(p.paused_at),
                                    p.reason.clone().unwrap_or_default(),
                                ]
                            })
                            .collect(),
                    ));
                }
                if !blocked.is_empty() {
                    out.push_str(
                        "\n\nBlocked groups (retry the dead row, or ferry release <id> --reason ...):\n",
                    );
                    out.push_str(&table(
                        &["ORDERING KEY", "BLOCKED BY", "WORKFLOW", "KEY", "WAITING", "REASON"],
                        blocked
                            .iter()
                            .map(|b| {
                                vec![
                                    b.ordering_key.clone(),
                                    b.blocking_id.to_string(),
                                    b.workflow.clone(),
                                    b.key.clone(),
                                    b.waiting.to_string(),
                                    b.reason.clone().unwrap_or_default(),
                                ]
                            })
                            .collect(),
                    ));
                }
                out
            });
        }
        Command::Release { id, reason } => {
            ctx.operator()
                .await?
                .release(id, &operator_name(), &reason)
                .await?;
            ctx.print(&serde_json::json!({"released": id}), || {
                format!("row {id} released: it stays dead, and its group goes on without it")
            });
        }
        Command::Replay {
            workflow,
            since,
            until,
            key,
            dry_run,
        } => {
            let selection = crate::outbox::ReplaySelection {
                workflow,
                since,
                until,
                key,
            };
            let lines = ctx.operator().await?.replay(&selection, dry_run).await?;
            ctx.print(
                &serde_json::json!({"dry_run": dry_run, "replays": lines}),
                || replay_text(&lines, dry_run),
            );
        }
        Command::Pause {
            workflow,
            target,
            reason,
        } => {
            let (kind, name) = pause_subject(workflow, target)?;
            ctx.operator()
                .await?
                .pause(kind, &name, &operator_name(), reason.as_deref())
                .await?;
            ctx.print(
                &serde_json::json!({"paused": {"kind": kind.as_str(), "name": name}}),
                || {
                    format!(
                        "{} {name} paused: relays stop claiming its rows within a second",
                        kind.as_str()
                    )
                },
            );
        }
        Command::Resume { workflow, target } => {
            let (kind, name) = pause_subject(workflow, target)?;
            let was = ctx.operator().await?.resume(kind, &name).await?;
            ctx.print(
                &serde_json::json!({"resumed": {"kind": kind.as_str(), "name": name, "was_paused": was}}),
                || {
                    if was {
                        format!("{} {name} resumed", kind.as_str())
                    } else {
                        format!("{} {name} was not paused", kind.as_str())
                    }
                },
            );
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
            let rows = ctx
                .operator()
                .await?
                .list(&ListFilter {
                    state,
                    workflow,
                    limit,
                })
                .await
                .map_err(hint_migrate_service)?;
            let json_rows: Vec<serde_json::Value> = rows.iter().map(row_json).collect();
            ctx.print(&json_rows, || {
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
            let detail = ctx
                .operator()
                .await?
                .show(id)
                .await
                .map_err(hint_migrate_service)?;
            ctx.print(&detail_json(&detail.row, &detail.attempts), || {
                render_show(&detail.row, &detail.attempts)
            });
        }
        Command::Retry {
            id,
            dead,
            workflow,
            reason,
        } => {
            let operator = ctx.operator().await?;
            match (id, dead) {
                (Some(id), false) => {
                    operator.retry(id, reason.as_deref()).await?;
                    ctx.print(&serde_json::json!({"reset": [id]}), || {
                        format!("row {id} reset to pending: due now with a fresh attempt budget")
                    });
                }
                (None, true) => {
                    let n = operator.retry_dead(workflow.as_deref()).await?;
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
            ctx.operator().await?.cancel(id, &reason).await?;
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
            let e = ctx
                .migrated_operator()
                .await?
                .enqueue(&workflow, &key, &payload)
                .await?;
            let dead_reason = e.dead_reason.clone();
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
        Command::Workflows {
            command: WorkflowsCommand::Schema,
        } => unreachable!("handled above"),
        Command::ExportInvoice {
            order_id,
            wait,
            timeout,
            workflow,
        } => return export_invoice_command(&ctx, &order_id, &workflow, wait, timeout).await,
        #[cfg(feature = "demo")]
        Command::Demo(_) => unreachable!("handled above"),
        Command::Run(_) | Command::Console(_) => unreachable!("handled above"),
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn hint_migrate_service(e: crate::service::ServiceError) -> anyhow::Error {
    match e {
        crate::service::ServiceError::Store(e) => hint_migrate(e),
        e => e.into(),
    }
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
    let operator = ctx.migrated_operator().await?;
    let store = operator.store().clone();
    let report = operator.export_invoice(workflow, order_id).await?;
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
            &serde_json::json!({"report": report, "row": row_json(&row), "retry": retry_command(outbox_id)}),
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
    let engine = Engine::http(store.clone(), &registry, ctx.config.relay.clone())?.spawn();
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
    engine.stop().await;
    let Some(row) = row else {
        bail!(
            "row {outbox_id} did not settle within {}; it stays queued (see `{} show {outbox_id}`)",
            humantime::format_duration(timeout),
            program()
        );
    };
    let attempts = store.attempts(outbox_id).await?;
    let last = attempts.last();
    ctx.print(&detail_json(&row, &attempts), || {
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
    });
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
    let schedules = cron_schedules(ctx, registry);
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
                "schedules": schedules.iter().map(|(job, s)| serde_json::json!({
                    "job": job,
                    "schedule": s.as_str(),
                    "timezone": s.timezone().map_or("UTC", |tz| tz.name()),
                    "next": s.upcoming_after(chrono::Utc::now(), 3),
                })).collect::<Vec<_>>(),
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
    print!("{}", render_schedules(&schedules, chrono::Utc::now()));
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

/// The console `ferry run` serves next to `/metrics`, as FERRY_CONSOLE says: `auto` serves it
/// only on a loopback address.
fn console_options(config: &Config, metrics_addr: Option<&str>) -> Option<ConsoleOptions> {
    let addr = metrics_addr?;
    let loopback = crate::console::addr_is_loopback(addr);
    match config.console.mode {
        ConsoleMode::Off => return None,
        ConsoleMode::Auto if !loopback => {
            tracing::info!(
                addr,
                "operator console not served: the metrics address is not a loopback one (FERRY_CONSOLE=on serves it there)"
            );
            return None;
        }
        _ => {}
    }
    Some(ConsoleOptions {
        workflows_dir: config.workflows_dir.clone(),
        config: console_config(config, loopback),
    })
}

fn console_config(config: &Config, loopback: bool) -> ConsoleConfig {
    ConsoleConfig {
        token: config
            .console
            .token
            .as_ref()
            .map(|t| t.expose().to_string()),
        hide_payload: config.console.hide_payload,
        loopback_hosts_only: loopback,
    }
}

/// `ferry console`: the console on its own address, no relay.
async fn console(ctx: &Ctx, args: ConsoleArgs) -> Result<ExitCode> {
    let config = &ctx.config;
    let _log = crate::ops::logging::init(&LogConfig {
        format: if config.log_json {
            LogFormat::Json
        } else {
            LogFormat::Human
        },
        filter: config.log_filter.clone(),
        dir: None,
        file_name: "ferry-console.log".into(),
        stderr: true,
    })?;
    let addr = args.addr.unwrap_or_else(|| config.console.addr.clone());
    let store = ctx.store().await?;
    if !args.no_migrate {
        store.migrate().await.context("applying migrations")?;
    }
    let operator = Operator::new(store.clone(), &config.workflows_dir);
    let router = crate::console::router(
        operator,
        console_config(config, crate::console::addr_is_loopback(&addr)),
        None,
    );
    let shutdown = CancellationToken::new();
    service::spawn_signal_handler(shutdown.clone(), Duration::from_secs(5));
    let s = store.clone();
    let ready: crate::ops::ReadyCheck = Arc::new(move || {
        let s = s.clone();
        Box::pin(async move {
            s.ping()
                .await
                .map_err(|e| format!("database unreachable: {e}"))
        })
    });
    let server = crate::ops::serve_with(
        &addr,
        Arc::new(crate::ops::Metrics::new()),
        ready,
        shutdown.clone(),
        router,
    )
    .await?;
    println!(
        "ferry console on http://{}/ ({}; database {}); Ctrl-C stops it",
        server.addr,
        if config.console.token.is_some() {
            "actions need the operator token"
        } else {
            "read-only: set FERRY_CONSOLE_TOKEN to allow actions"
        },
        store.url()
    );
    shutdown.cancelled().await;
    server.join().await;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The cron jobs `run` would schedule: prune, and the reconcile sweep of each configured
/// workflow that has one.
fn cron_schedules(ctx: &Ctx, registry: &Registry) -> Vec<(String, crate::cron::Schedule)> {
    let mut jobs = Vec::new();
    // Validated with the configuration; a schedule that has stopped firing since is left out.
    if let Ok(prune) = crate::cron::Schedule::parse(&ctx.config.prune_schedule) {
        jobs.push(("prune".to_string(), prune));
    }
    for w in registry.iter() {
        if let Some(r) = &w.reconcile {
            jobs.push((format!("reconcile:{}", w.name), r.schedule.clone()));
        }
    }
    jobs
}

/// `cron jobs:` and each job's schedule with its next three runs.
fn render_schedules(
    jobs: &[(String, crate::cron::Schedule)],
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut s = String::from("cron jobs (next three runs):\n");
    for (job, schedule) in jobs {
        let next: Vec<String> = schedule
            .upcoming_after(now, 3)
            .into_iter()
            .map(|t| schedule.show(t))
            .collect();
        s.push_str(&format!(
            "  {job:<20} {:<24} {}\n",
            schedule.as_str(),
            next.join(", ")
        ));
    }
    s
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
    warn_unknown_variables(ctx);
    // Everything is checked before anything starts.
    let registry = Arc::new(ctx.registry()?);
    let metrics_addr = match args.metrics_addr.as_deref() {
        Some("off") => None,
        Some(a) => Some(a.to_string()),
        None => config.metrics_addr.clone(),
    };
    let prune = crate::cron::Schedule::parse(&config.prune_schedule)
        .map_err(|e| anyhow!("FERRY_PRUNE_SCHEDULE: '{}' {e}", config.prune_schedule))?;
    let store = ctx.store().await?;
    if !args.no_migrate {
        store.migrate().await.context("applying migrations")?;
    }
    let mut relay = config.relay.clone();
    if args.poll_only {
        relay.listen = false;
    }
    let shutdown = CancellationToken::new();
    service::spawn_signal_handler(shutdown.clone(), relay.shutdown_grace);
    let console = console_options(config, metrics_addr.as_deref());
    let opts = DaemonOptions {
        relay,
        console,
        metrics_addr,
        prune,
        retention: config.retention,
        relay_id: format!(
            "{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id()
        ),
    };
    service::run_daemon(store, registry, opts, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// The `ferry_status` lines as a table.
fn status_table(lines: &[crate::outbox::StatusLine]) -> String {
    let done = crate::outbox::State::Done;
    let mut out = table(
        &["WORKFLOW", "STATE", "ROWS", "OLDEST DUE (s)"],
        lines
            .iter()
            .map(|l| {
                vec![
                    l.workflow.clone(),
                    l.state.to_string(),
                    l.rows.to_string(),
                    if l.state == done {
                        "-".into()
                    } else {
                        format!("{:.1}", l.oldest_due_age_s)
                    },
                ]
            })
            .collect(),
    );
    if lines.iter().any(|l| l.state == done) {
        out.push_str(
            "\ndone: rows ever delivered (kept by the database, not lowered by pruning); the other states: rows now",
        );
    }
    if lines.iter().all(|l| l.state == done) {
        out.push_str("\nnothing pending, in flight, waiting or dead");
    }
    out
}

/// Who runs an operator action, as recorded on the row or the pause: the login name, or
/// "cli".
fn operator_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "cli".into())
}

/// `ferry pause W` / `ferry pause --target T` (and resume).
fn pause_subject(
    workflow: Option<String>,
    target: Option<String>,
) -> anyhow::Result<(crate::outbox::PauseKind, String)> {
    use crate::outbox::PauseKind;
    match (workflow, target) {
        (Some(w), None) => Ok((PauseKind::Workflow, w)),
        (None, Some(t)) => Ok((PauseKind::Target, t)),
        _ => bail!("say what: a workflow name, or --target <name>"),
    }
}

/// `--since`/`--until` of `ferry replay`: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or a date
/// (midnight UTC).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
        return Ok(Utc.from_utc_datetime(&t));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2026-02-13T10:00:00Z) or a date (2026-02-13)"
    ))
}

/// What `ferry replay` sent (or, with --dry-run, would send), one line per row.
fn replay_text(lines: &[crate::outbox::Replayed], dry_run: bool) -> String {
    if lines.is_empty() {
        return "no delivered row matches; nothing to replay".into();
    }
    let mut s = if dry_run {
        format!(
            "dry run: {} would be sent again (nothing changed):\n",
            crate::text::plural(lines.len(), "row", "rows")
        )
    } else {
        format!(
            "{} enqueued again:\n",
            crate::text::plural(lines.len(), "row", "rows")
        )
    };
    for l in lines {
        s.push_str(&format!(
            "  row {} ({}, code {}, done {}) -> {} {}\n",
            l.original_id,
            l.original_key,
            l.code.as_deref().unwrap_or("-"),
            crate::outbox::time_text(l.done_at),
            l.id.map(|id| format!("new row {id}"))
                .unwrap_or_else(|| "would be a new row".into()),
            l.key
        ));
    }
    s
}
