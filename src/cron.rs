//! Periodic jobs with cron schedules: pruning old `done` rows, and per-workflow reconciliation
//! sweeps (e.g. enqueue an invoice for any paid order that has neither been exported nor has an
//! intent, catching a payment service that forgot its outbox row).
//!
//! A tick runs once across all relays: the relay that moves the job's `last_tick` forward in
//! `ferry_cron` (one conditional upsert) runs it; the others see no row come back and skip it.
//! Ticks are the schedule's own timestamps, so relays with slightly skewed clocks still agree on
//! which tick they are competing for.
//!
//! Schedules ([`Schedule`]) are cron expressions as operators write them, parsed by the
//! `croner` crate: the 5 fields of crontab, or 6 with seconds first (7 with a year) as Ferry
//! has always accepted, optionally in a time zone (`CRON_TZ=Europe/Moscow 0 3 * * *`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::export::{export_invoice, ExportError};
use crate::outbox::dynamic::SqlValue;
use crate::outbox::{Store, StoreError};
use crate::workflow::{Registry, Workflow};

/// What a schedule may be written as, for messages.
pub const SCHEDULE_FORMS: &str = "5 fields 'min hour day month weekday' (crontab), or 6 with \
     seconds first 'sec min hour day month weekday' (a 7th for the year), optionally preceded \
     by a time zone: 'CRON_TZ=Europe/Moscow 0 3 * * *'";

/// A cron schedule.
///
/// * **5 fields**, `minute hour day-of-month month day-of-week`: crontab(5). Weekdays `0`–`7`
///   (`0` and `7` are Sunday, `1` Monday) or `MON`–`SUN`; when both day fields are restricted,
///   a day matching either runs (as cron does). `@hourly`, `@daily`, `@weekly`, `@monthly`,
///   `@yearly` too.
/// * **6 fields**, `second minute hour day-of-month month day-of-week`, and an optional 7th,
///   the year: the form Ferry accepted before, with the same meaning as before: weekdays
///   `1`–`7` are Sunday to Saturday (or `SUN`–`SAT`), and both day fields must match.
/// * Either may start with `CRON_TZ=<IANA zone>` (or `TZ=`): the fields are then that zone's
///   wall-clock time, daylight saving included (a time skipped by a DST jump runs at the jump; a
///   time that occurs twice runs once). Without it, UTC.
///
/// Names of weekdays and months mean the same in every form.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
    tz: Option<chrono_tz::Tz>,
}

/// Why a schedule is refused, worded to follow `'<expression>' is …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse(s)
    }
}

const FIVE: &[&str] = &["minute", "hour", "day-of-month", "month", "day-of-week"];
const SIX: &[&str] = &[
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
    "year",
];

impl Schedule {
    /// Parse a schedule (see [`Schedule`] for the forms). An expression that never fires again
    /// (a year in the past) is refused too.
    ///
    /// # Errors
    /// What is wrong: the time zone, the number of fields, or which field and why.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        let (tz, fields) = match text
            .strip_prefix("CRON_TZ=")
            .or_else(|| text.strip_prefix("TZ="))
        {
            Some(rest) => {
                let (zone, fields) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                    ScheduleError(format!(
                        "has a time zone but no fields; expected {SCHEDULE_FORMS}"
                    ))
                })?;
                let tz: chrono_tz::Tz = zone.parse().map_err(|_| {
                    ScheduleError(format!(
                        "names an unknown time zone '{zone}' (expected an IANA name such as Europe/Moscow, Asia/Ho_Chi_Minh or UTC)"
                    ))
                })?;
                (Some(tz), fields.trim())
            }
            None => (None, text),
        };
        let parts: Vec<&str> = fields.split_whitespace().collect();
        let quartz = match parts.len() {
            1 if parts[0].starts_with('@') => false,
            5 => false,
            6 | 7 => true,
            0 => {
                return Err(ScheduleError(format!(
                    "is empty; expected {SCHEDULE_FORMS}"
                )))
            }
            n => {
                return Err(ScheduleError(format!(
                    "has {n} fields; expected {SCHEDULE_FORMS}"
                )))
            }
        };
        let cron = parser(quartz).parse(fields).map_err(|e| {
            ScheduleError(match culprit(&parts, quartz) {
                Some((name, value, why)) => format!("{name} field '{value}' is not valid: {why}"),
                None => format!("is not a cron expression: {}", croner_message(&e)),
            })
        })?;
        let schedule = Schedule {
            text: text.to_string(),
            cron,
            tz,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError(
                "never fires again (a year in the past?)".to_string(),
            ));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The time zone the fields are read in; `None` is UTC.
    pub fn timezone(&self) -> Option<chrono_tz::Tz> {
        self.tz
    }

    /// The first tick strictly after `after`, or `None` if there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.tz {
            None => self.cron.find_next_occurrence(&after, false).ok(),
            Some(tz) => self
                .cron
                .find_next_occurrence(&after.with_timezone(&tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    /// The next `n` ticks after `after`.
    pub fn upcoming_after(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            let Some(next) = self.next_after(t) else {
                break;
            };
            out.push(next);
            t = next;
        }
        out
    }

    /// A tick as an operator reads it: RFC 3339 in the schedule's time zone (`Z` for UTC, the
    /// zone's offset otherwise).
    pub fn show(&self, tick: DateTime<Utc>) -> String {
        match self.tz {
            None => tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Some(tz) => tick
                .with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        }
    }
}

fn parser(quartz: bool) -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(if quartz {
            croner::parser::Seconds::Required
        } else {
            croner::parser::Seconds::Optional
        })
        .alternative_weekdays(quartz)
        .dom_and_dow(quartz)
        // `0/5` as well as `*/5`: the `cron` crate Ferry used before accepted both.
        .sloppy_ranges(true)
        .build()
}

/// Which field makes `fields` invalid: each field is tried alone (the others `*`).
fn culprit(parts: &[&str], quartz: bool) -> Option<(&'static str, String, String)> {
    let names = if quartz { SIX } else { FIVE };
    if parts.len() == 1 {
        return None; // a nickname
    }
    for (i, part) in parts.iter().enumerate() {
        let probe: Vec<&str> = (0..parts.len())
            .map(|j| if j == i { *part } else { "*" })
            .collect();
        if let Err(e) = parser(quartz).parse(&probe.join(" ")) {
            return Some((names[i], part.to_string(), croner_message(&e)));
        }
    }
    None
}

/// croner's message without its type prefixes.
fn croner_message(e: &croner::errors::CronError) -> String {
    let s = e.to_string();
    for prefix in ["Component error: ", "Invalid pattern: "] {
        if let Some(rest) = s.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    s
}

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
    pub schedule: Schedule,
    pub kind: JobKind,
}

/// The jobs for a registry: the prune job and one reconcile job per workflow that has one.
pub fn jobs(registry: &Registry, prune_schedule: &Schedule, retention: Duration) -> Vec<Job> {
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
            // The console's done totals: one counter row per database session that recorded
            // outcomes; those of sessions that have ended are summed into one.
            store.fold_counters().await?;
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
                let Some(tick) = job.schedule.next_after(Utc::now()) else { return };
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> DateTime<Utc> {
        Schedule::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .next_after(at(after))
            .unwrap()
    }

    #[test]
    fn five_and_six_fields_parse_alike() {
        // 2026-01-10 is a Saturday.
        let from = "2026-01-10T00:00:00Z";
        assert_eq!(next("0 3 * * *", from), at("2026-01-10T03:00:00Z"));
        assert_eq!(next("0 0 3 * * *", from), at("2026-01-10T03:00:00Z"));
        assert_eq!(next("17 3 * * *", from), at("2026-01-10T03:17:00Z"));
        assert_eq!(next("0 17 3 * * *", from), at("2026-01-10T03:17:00Z"));
        assert_eq!(next("*/5 * * * *", from), at("2026-01-10T00:05:00Z"));
        assert_eq!(next("0 */5 * * * *", from), at("2026-01-10T00:05:00Z"));
        assert_eq!(next("*/10 * * * * *", from), at("2026-01-10T00:00:10Z"));
        assert_eq!(next("@daily", from), at("2026-01-11T00:00:00Z"));
        assert_eq!(next("0 0 0 1 1 * 2030", from), at("2030-01-01T00:00:00Z"));
        assert_eq!(next("0 12 * * FRI#2", from), at("2026-02-13T12:00:00Z"));
        assert_eq!(next("0 12 * * 5#2", from), at("2026-02-13T12:00:00Z"));
        assert_eq!(next("0 12 15W * *", from), at("2026-01-15T12:00:00Z"));
        assert_eq!(next("0 12 L * *", from), at("2026-01-31T12:00:00Z"));
        // Weekdays: crontab numbering in 5 fields, Ferry's earlier numbering (1 = Sunday) in 6;
        // names mean the same everywhere.
        let monday = at("2026-01-12T03:00:00Z");
        for expr in ["0 3 * * 1", "0 3 * * MON", "0 0 3 * * 2", "0 0 3 * * MON"] {
            assert_eq!(next(expr, from), monday, "{expr}");
        }
        let sunday = at("2026-01-11T03:00:00Z");
        for expr in ["0 3 * * 0", "0 3 * * 7", "0 3 * * SUN", "0 0 3 * * 1"] {
            assert_eq!(next(expr, from), sunday, "{expr}");
        }
        let s = Schedule::parse("  0 3 * * *  ").unwrap();
        assert_eq!(s.as_str(), "0 3 * * *");
        assert_eq!(s.to_string(), "0 3 * * *");
        assert_eq!(s.timezone(), None);
    }

    #[test]
    fn a_time_zone_changes_the_next_run() {
        let from = "2026-01-10T00:00:00Z";
        // 03:00 in Moscow (UTC+3, no DST) is midnight UTC.
        assert_eq!(
            next("CRON_TZ=Europe/Moscow 0 3 * * *", from),
            at("2026-01-11T00:00:00Z")
        );
        assert_eq!(
            next("TZ=Asia/Ho_Chi_Minh 0 0 9 * * *", from),
            at("2026-01-10T02:00:00Z")
        );
        assert_eq!(
            next("CRON_TZ=UTC 0 3 * * *", from),
            at("2026-01-10T03:00:00Z")
        );
        let s = Schedule::parse("CRON_TZ=Europe/Moscow 0 3 * * *").unwrap();
        assert_eq!(s.timezone(), Some(chrono_tz::Europe::Moscow));
        assert_eq!(
            s.show(at("2026-01-11T00:00:00Z")),
            "2026-01-11T03:00:00+03:00"
        );
        let utc = Schedule::parse("0 3 * * *").unwrap();
        assert_eq!(utc.show(at("2026-01-11T03:00:00Z")), "2026-01-11T03:00:00Z");
    }

    #[test]
    fn daylight_saving_days_run_once() {
        // Berlin skips 02:00-03:00 on 2026-03-29 and repeats 02:00-03:00 on 2026-10-25.
        let s = Schedule::parse("CRON_TZ=Europe/Berlin 30 2 * * *").unwrap();
        for (from, days) in [("2026-03-27T00:00:00Z", 4), ("2026-10-23T00:00:00Z", 4)] {
            let ticks = s.upcoming_after(at(from), days);
            assert_eq!(ticks.len(), days);
            let dates: Vec<_> = ticks
                .iter()
                .map(|t| t.with_timezone(&chrono_tz::Europe::Berlin).date_naive())
                .collect();
            for pair in dates.windows(2) {
                assert_eq!(pair[1], pair[0].succ_opt().unwrap(), "{ticks:?}");
            }
        }
    }

    #[test]
    fn upcoming_gives_ticks_in_order() {
        let s = Schedule::parse("0 */5 * * * *").unwrap();
        let ticks = s.upcoming_after(at("2026-01-10T00:01:00Z"), 3);
        assert_eq!(
            ticks,
            [
                at("2026-01-10T00:05:00Z"),
                at("2026-01-10T00:10:00Z"),
                at("2026-01-10T00:15:00Z")
            ]
        );
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (expr, needle) in [
            ("0 61 * * *", "hour field '61'"),
            ("61 * * * *", "minute field '61'"),
            ("0 61 * * * *", "minute field '61'"),
            ("0 0 3 32 * *", "day-of-month field '32'"),
            ("0 3 * 13 *", "month field '13'"),
            ("0 3 * * FUNDAY", "day-of-week field"),
            ("every day", "has 2 fields"),
            ("every five minutes", "has 3 fields"),
            ("", "is empty"),
            (
                "CRON_TZ=Mars/Olympus 0 3 * * *",
                "unknown time zone 'Mars/Olympus'",
            ),
            ("CRON_TZ=Europe/Moscow", "no fields"),
            ("0 0 0 1 1 * 2001", "never fires again"),
        ] {
            let e = Schedule::parse(expr).unwrap_err().to_string();
            assert!(e.contains(needle), "{expr}: {e}");
        }
        // Field counts other than 5, 6 and 7 list the accepted forms.
        let e = Schedule::parse("1 2 3 4 5 6 7 8").unwrap_err().to_string();
        assert!(e.contains("has 8 fields") && e.contains("CRON_TZ="), "{e}");
    }

    /// The 6-field form means what it meant with the `cron` crate Ferry used before: the same
    /// ticks for every kind of field, weekday numbers and both day fields restricted included.
    #[test]
    fn six_fields_keep_their_earlier_meaning() {
        let from = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
        for expr in [
            "0 17 3 * * *",
            "0 */5 * * * *",
            "* * * * * *",
            "0 0/15 8-18 * * *",
            "30 0 12 * * 2",
            "0 0 12 * * 1,7",
            "0 0 12 * * Mon-Fri",
            "0 0 12 13 * 6",
            "0 0 12 1 * Mon",
            "0 0 0 29 2 *",
            "0 0 6 L * *",
            "0 15 10 * JAN,JUL *",
            "0 0 0 1 1 * 2030",
        ] {
            if expr.contains(" L ") {
                // The last day of the month is croner's addition (the cron crate refused it).
                let t = Schedule::parse(expr).unwrap().next_after(from).unwrap();
                assert_eq!((t.day(), t.hour()), (31, 6), "{expr}");
                continue;
            }
            let old: cron::Schedule = expr.parse().unwrap();
            let want: Vec<_> = old.after(&from).take(6).collect();
            let got = Schedule::parse(expr).unwrap().upcoming_after(from, 6);
            assert_eq!(got, want, "{expr}");
        }
        assert_eq!(
            next("0 0 12 13 * 6", "2026-01-10T00:00:00Z").weekday(),
            Weekday::Fri
        );
    }
}
