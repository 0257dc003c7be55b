//! Periodic jobs with cron schedules: pruning old `done` rows, and per-workflow reconciliation
//! sweeps (e.g. enqueue an invoice for any paid order that has neither been exported nor has an
//! intent, catching a payment service that forgot its outbox row).
//!
//! A tick runs once across all relays: the relay that moves the job's `last_tick` forward in
//! `ferry_cron` (one conditional upsert) runs it; the others see no row come back and skip it.
//! Ticks are the schedule's own timestamps, so relays with slightly skewed clocks still agree on
//! which tick they are competing for.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::export::{export_invoice, ExportError};
use crate::outbox::dynamic::SqlValue;
use crate::outbox::{Store, StoreError};
use crate::workflow::{Registry, Workflow};

/// Most keys one reconciliation tick enqueues (the rest wait for the next tick).
pub const RECONCILE_LIMIT: i64 = 1000;

/// What a job does.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// Delete `done` rows (and with them their attempts) older than the retention, and attempts
    /// left without their row (rows deleted before the delete trigger existed).
    Prune { retention: Duration },
    /// Run a workflow's `[reconcile]` SQL and enqueue what it finds.
    Reconcile { workflow: String },
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub schedule: cron::Schedule,
    pub kind: JobKind,
}

/// The jobs for a registry: the prune job and one reconcile job per workflow that has one.
pub fn jobs(registry: &Registry, prune_schedule: &cron::Schedule, retention: Duration) -> Vec<Job> {
    let mut jobs = vec![Job {
        name: "prune".into(),
        schedule: prune_schedule.clone(),
        kind: JobKind::Prune { retention },
    }];
    for wf in registry.iter() {
        if let Some(r) = &wf.reconcile {
            jobs.push(Job {
                name: format!("reconcile:{}", wf.name),
                schedule: r.schedule.clone(),
                kind: JobKind::Reconcile {
                    workflow: wf.name.clone(),
                },
            });
        }
    }
    jobs
}

/// Run one job now (after its tick was won). Returns a line for the log.
///
/// # Errors
/// Database errors.
pub async fn run_job(
    store: &Store,
    registry: &Registry,
    kind: &JobKind,
) -> Result<String, StoreError> {
    match kind {
        JobKind::Prune { retention } => {
            let n = store.prune_done(*retention).await?;
            let orphans = store.sweep_orphan_attempts().await?;
            Ok(format!(
                "pruned {n} done rows older than {} and {orphans} attempts of rows that no longer exist",
                humantime::format_duration(*retention)
            ))
        }
        JobKind::Reconcile { workflow } => {
            let Some(wf) = registry.get(workflow) else {
                return Ok(format!("workflow {workflow} is gone; nothing to do"));
            };
            let n = reconcile(store, wf).await?;
            Ok(format!("reconcile {workflow}: {n} intents enqueued"))
        }
    }
}

/// Run a workflow's reconcile SQL: rows with a `payload` column are enqueued as they are; rows
/// with only `key` are built through the workflow's `[source]` (the 1C invoice flow).
///
/// # Errors
/// Database errors.
pub async fn reconcile(store: &Store, wf: &Workflow) -> Result<usize, StoreError> {
    let Some(r) = &wf.reconcile else { return Ok(0) };
    let rows = store
        .fetch_named(&r.sql, &[("limit", SqlValue::Int(RECONCILE_LIMIT))])
        .await?;
    let mut added = 0;
    for row in rows {
        let Some(key) = row.get("key").and_then(SqlValue::text) else {
            tracing::warn!(workflow = %wf.name, "reconcile SQL returned a row without a 'key' column");
            continue;
        };
        if let Some(payload) = row.get("payload").and_then(SqlValue::text) {
            match serde_json::from_str::<serde_json::Value>(&payload) {
                Ok(p) => {
                    if store.enqueue(&wf.name, &key, &p).await?.created {
                        added += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(workflow = %wf.name, key, error = %e, "reconcile payload is not JSON; skipped")
                }
            }
            continue;
        }
        match export_invoice(store, wf, &key).await {
            Ok(crate::export::ExportReport::Enqueued { created: true, .. }) => added += 1,
            Ok(_) => {}
            Err(ExportError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(workflow = %wf.name, key, error = %e, "reconcile could not enqueue")
            }
        }
    }
    Ok(added)
}

/// Run the jobs until `shutdown`: each waits for its next tick, competes for it, and runs if it
/// won.
pub async fn run_jobs(
    store: Store,
    registry: std::sync::Arc<Registry>,
    jobs: Vec<Job>,
    relay_id: String,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        let store = store.clone();
        let registry = registry.clone();
        let me = relay_id.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                let Some(tick) = job.schedule.upcoming(Utc).next() else { return };
                let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
                match store.claim_cron_tick(&job.name, tick, &me).await {
                    Ok(true) => match run_job(&store, &registry, &job.kind).await {
                        Ok(line) => tracing::info!(job = %job.name, tick = %tick, "{line}"),
                        Err(e) => tracing::warn!(job = %job.name, error = %e, "cron job failed"),
                    },
                    Ok(false) => tracing::debug!(job = %job.name, tick = %tick, "tick taken by another relay"),
                    Err(e) => tracing::warn!(job = %job.name, error = %e, "cannot claim cron tick"),
                }
                // Never run the same tick twice in this relay even if the clock jumps back.
                let after: DateTime<Utc> = tick + chrono::Duration::milliseconds(1);
                if let Ok(d) = (after - Utc::now()).to_std() {
                    tokio::time::sleep(d).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
