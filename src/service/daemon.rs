//! Building and running the engine, once, for every front door: `ferry run`, the demo,
//! `export-invoice --wait`, tests and benches.
//!
//! [`Engine`] is a relay over a store and a deliverer with its metrics wired in (outcomes are
//! counted as the database recorded them). [`run_daemon`] is `ferry run`: the engine plus the
//! HTTP endpoints, the gauge refresher, the cron jobs and a shutdown bounded by the grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ServiceError;
use crate::delivery::HttpDeliverer;
use crate::ops::{Metrics, MetricsObserver};
use crate::outbox::{State, Store};
use crate::relay::{Deliver, Relay, RelayConfig, RelayStats, TickReport};
use crate::workflow::Registry;

/// A relay over one store and one deliverer, with metrics.
pub struct Engine<D: Deliver = HttpDeliverer> {
    store: Store,
    relay: Relay<D>,
    metrics: Arc<Metrics>,
}

impl Engine<HttpDeliverer> {
    /// The engine that delivers the workflows of `registry` over HTTP.
    ///
    /// # Errors
    /// When an HTTP client cannot be built for a target.
    pub fn http(
        store: Store,
        registry: &Registry,
        config: RelayConfig,
    ) -> Result<Engine<HttpDeliverer>, ServiceError> {
        let metrics = Arc::new(Metrics::new());
        metrics.set_known_workflows(registry.iter().map(|w| w.name.clone()));
        let deliverer = HttpDeliverer::new(registry)?
            .with_observer(Arc::new(MetricsObserver(metrics.clone())))
            .with_rate_store(store.clone());
        Ok(Engine::assemble(store, deliverer, config, metrics))
    }
}

impl<D: Deliver> Engine<D> {
    /// An engine over any deliverer (tests and benches use sinks of their own).
    pub fn with_deliverer(store: Store, deliverer: D, config: RelayConfig) -> Engine<D> {
        Engine::assemble(store, deliverer, config, Arc::new(Metrics::new()))
    }

    fn assemble(store: Store, deliverer: D, config: RelayConfig, metrics: Arc<Metrics>) -> Self {
        let relay = Relay::new(store.clone(), Arc::new(deliverer), config)
            .with_observer(Arc::new(MetricsObserver(metrics.clone())));
        Engine {
            store,
            relay,
            metrics,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn stats(&self) -> Arc<RelayStats> {
        self.relay.stats()
    }

    pub fn relay(&self) -> &Relay<D> {
        &self.relay
    }

    /// Claim and deliver until nothing is due (no timing involved).
    pub async fn drain(&self) -> Result<TickReport, ServiceError> {
        Ok(self.relay.drain().await?)
    }

    /// Run until `shutdown` is cancelled (the exit is bounded by the grace period).
    pub async fn run(&self, shutdown: CancellationToken) {
        self.relay.run(shutdown).await
    }

    /// Run on a task of its own; stop it with [`RunningEngine::stop`].
    pub fn spawn(self) -> RunningEngine
    where
        D: Deliver,
    {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let metrics = self.metrics.clone();
        let stats = self.relay.stats();
        let handle = tokio::spawn(async move { self.relay.run(s).await });
        RunningEngine {
            stop,
            handle,
            metrics,
            stats,
        }
    }
}

/// An engine running on its own task.
pub struct RunningEngine {
    stop: CancellationToken,
    handle: JoinHandle<()>,
    metrics: Arc<Metrics>,
    stats: Arc<RelayStats>,
}

impl RunningEngine {
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Stop claiming, settle what is in flight (within the grace period), and wait for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

/// What `ferry run` needs besides the store and the workflows.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub relay: RelayConfig,
    /// `/metrics`, `/healthz`, `/readyz` on this address; `None` serves nothing.
    pub metrics_addr: Option<String>,
    /// The operator console at `/` of the same address; `None` serves none.
    pub console: Option<crate::console::ConsoleOptions>,
    /// The prune job's schedule and what it keeps.
    pub prune: crate::cron::Schedule,
    pub retention: Duration,
    /// Names this relay in `ferry_cron` (which relay ran a tick).
    pub relay_id: String,
}

/// `ferry run`: the engine, the ops endpoints, the gauges and the cron jobs, until `shutdown`
/// (SIGTERM/SIGINT: see [`spawn_signal_handler`]). The grace period bounds the whole exit.
pub async fn run_daemon(
    store: Store,
    registry: Arc<Registry>,
    opts: DaemonOptions,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let grace = opts.relay.shutdown_grace;
    let engine = Engine::http(store.clone(), &registry, opts.relay.clone())?;
    let metrics = engine.metrics();
    let ops_server = match &opts.metrics_addr {
        Some(addr) => {
            let s = store.clone();
            let stats = engine.stats();
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
            let console = match &opts.console {
                Some(c) => crate::console::router(
                    super::Operator::new(store.clone(), &c.workflows_dir),
                    c.config.clone(),
                    Some(metrics.clone()),
                ),
                None => axum::Router::new(),
            };
            let server =
                crate::ops::serve_with(addr, metrics.clone(), ready, shutdown.clone(), console)
                    .await?;
            if opts.console.is_some() {
                tracing::info!(url = %format!("http://{}/", server.addr), "operator console");
            }
            Some(server)
        }
        None => None,
    };
    let gauges = tokio::spawn(refresh_gauges(
        store.clone(),
        metrics.clone(),
        engine.stats(),
        shutdown.clone(),
    ));
    let jobs = crate::cron::jobs(&registry, &opts.prune, opts.retention);
    let cron = tokio::spawn(crate::cron::run_jobs(
        store.clone(),
        registry.clone(),
        jobs,
        opts.relay_id.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        database = %store.url(),
        workflows = registry.len(),
        "ferry relay running; SIGTERM or Ctrl-C stops it"
    );
    let started = tokio::time::Instant::now();
    engine.run(shutdown.clone()).await;
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
    Ok(())
}

/// First SIGTERM/SIGINT: stop gracefully (the relay bounds its exit by `grace`). A second one:
/// exit at once (rows held stay `sending` under their lease and are taken up again when it
/// expires). A watchdog exits too if the graceful stop overruns the grace period by far.
pub fn spawn_signal_handler(shutdown: CancellationToken, grace: Duration) {
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

/// Keep the row-count and lag gauges fresh (the `ferry_status` view is cheap: it skips done
/// rows).
async fn refresh_gauges(
    store: Store,
    metrics: Arc<Metrics>,
    stats: Arc<RelayStats>,
    shutdown: CancellationToken,
) {
    let mut last_errors = 0;
    loop {
        let status = tokio::select! {
            s = store.status() => s,
            _ = shutdown.cancelled() => return,
        };
        match status {
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
        match store.blocked().await {
            Ok(groups) => metrics.set_blocked_groups(groups.len() as i64),
            Err(e) => tracing::debug!(error = %e, "blocked-groups gauge refresh failed"),
        }
        match store.paused().await {
            Ok(lines) => metrics.set_paused(
                &lines
                    .into_iter()
                    .map(|l| (l.kind, l.name))
                    .collect::<Vec<_>>(),
            ),
            Err(e) => tracing::debug!(error = %e, "paused gauge refresh failed"),
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
