//! What operators read and do beyond one row at a time: totals and per-minute counts (kept by the
//! triggers of migration 0004), filtered newest-first pages of rows, set-based moves of many rows,
//! and the audit of operator actions.
//!
//! Every query here is written to stay cheap on a table of millions of rows:
//!
//! * done totals and the per-minute chart read the small tables `ferry_totals`/`ferry_minutes`;
//! * pages are newest first by `(created_at, id)` through the index `ferry_outbox_created`, with a
//!   keyset cursor ([`Cursor`]) instead of an offset; a state filter uses the partial indexes of
//!   dead and live rows, a key filter the `(workflow, key)` index;
//! * filters no index can answer (a document code inside the payload, a key pattern) look at a
//!   bounded window of rows per call ([`RowQuery::scan_budget`]): a page may come back short with
//!   a cursor to go on from, and [`Page::scanned`] says how far the search got.
//!
//! Only the store's public pools are used, so this module does not depend on how a backend is
//! put together.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{State, Store, StoreError};

/// Most characters of `last_error` a page carries per row (the row's page has all of it).
pub const ERROR_EXCERPT_CHARS: usize = 300;

/// A position in the newest-first order: the page after it starts with older rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: i64,
}

impl Cursor {
    /// `2026-02-13T10:00:00.123456Z~42`: safe in a URL query as it is.
    pub fn encode(&self) -> String {
        format!(
            "{}~{}",
            self.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            self.id
        )
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (at, id) = s.rsplit_once('~')?;
        Some(Cursor {
            created_at: DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
            id: id.parse().ok()?,
        })
    }
}

/// How a text filter matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextMatch {
    /// Equal.
    Exact(String),
    /// `*` stands for any characters; case-insensitive (ASCII letters).
    Pattern(String),
}

impl TextMatch {
    /// `Pattern` when the text has a `*`, `Exact` otherwise; `None` for blank text.
    pub fn parse(text: &str) -> Option<TextMatch> {
        let text = text.trim();
        if text.is_empty() {
            None
        } else if text.contains('*') {
            Some(TextMatch::Pattern(text.to_string()))
        } else {
            Some(TextMatch::Exact(text.to_string()))
        }
    }

    /// The pattern as SQL `LIKE` text with `\` as the escape character.
    fn like(&self) -> String {
        let text = match self {
            TextMatch::Exact(t) | TextMatch::Pattern(t) => t,
        };
        let mut out = String::with_capacity(text.len() + 2);
        for c in text.chars() {
            match c {
                '%' | '_' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '*' if matches!(self, TextMatch::Pattern(_)) => out.push('%'),
                c => out.push(c),
            }
        }
        out
    }
}

/// Where the document code of some workflows' payloads is (their `identify_by`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodePath {
    pub workflows: Vec<String>,
    /// The dotted path, split (`customer.code` → `["customer", "code"]`).
    pub path: Vec<String>,
}

/// Which rows a page or a bulk action takes. Every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct RowQuery {
    pub workflow: Option<String>,
    pub state: Option<State>,
    pub key: Option<TextMatch>,
    /// The document code (needs [`CodePath`]s; a workflow without one has no code).
    pub code: Option<TextMatch>,
    /// The key or the document code (a search box).
    pub key_or_code: Option<TextMatch>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_to: Option<DateTime<Utc>>,
    /// Rows after this position (older).
    pub before: Option<Cursor>,
    /// Most rows per page.
    pub limit: i64,
    /// Most rows one call looks at when a filter needs the payload or a key pattern.
    pub scan_budget: i64,
}

impl RowQuery {
    /// Whether some filter can only be answered by looking at rows one by one.
    pub fn needs_scan(&self) -> bool {
        self.code.is_some()
            || self.key_or_code.is_some()
            || matches!(self.key, Some(TextMatch::Pattern(_)))
    }
}

/// A row as a list shows it: no payload, the document code, typed times.
#[derive(Debug, Clone, Serialize)]
pub struct RowSummary {
    pub id: i64,
    pub workflow: String,
    pub key: String,
    pub code: Option<String>,
    #[serde(serialize_with = "state_str")]
    pub state: State,
    pub attempts: i32,
    pub last_status: Option<i32>,
    /// At most [`ERROR_EXCERPT_CHARS`] characters.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// pending/retry_wait: when due; sending: the lease expiry.
    pub due_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
}

/// One page of rows, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub rows: Vec<RowSummary>,
    /// Where the next page starts; `None` when there are no older rows to look at.
    pub next: Option<String>,
    /// The page may be short only because this call's window of rows ended: older rows were not
    /// looked at yet (go on from `next`).
    pub partial: bool,
    /// With `partial`: rows created before this were not looked at yet.
    pub searched_to: Option<DateTime<Utc>>,
}

/// Rows that reached `done` or `dead` in one minute.
#[derive(Debug, Clone, Serialize)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub done: i64,
    pub dead: i64,
}

/// Rows of one workflow that reached `done` or `dead` in a period.
#[derive(Debug, Clone, Serialize)]
pub struct SettledCount {
    pub workflow: String,
    pub done: i64,
    pub dead: i64,
}

/// An operator action to record.
#[derive(Debug, Clone)]
pub struct ActionRecord<'a> {
    pub actor: &'a str,
    /// `retry`, `cancel`, `bulk_retry`, `bulk_cancel`, `release`, `pause` or `resume`.
    pub action: &'a str,
    pub outbox_id: Option<i64>,
    pub filter: Option<serde_json::Value>,
    pub reason: Option<&'a str>,
    pub matched: u64,
    /// The rows it changed.
    pub rows: &'a [i64],
}

/// One recorded operator action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionLine {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub outbox_id: Option<i64>,
    pub filter: Option<serde_json::Value>,
    pub reason: Option<String>,
    pub matched: i64,
    pub changed: i64,
}

fn state_str<S: serde::Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

/// A bound value of a built statement.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Int(i64),
    Time(DateTime<Utc>),
    Texts(Vec<String>),
    Ints(Vec<i64>),
}

/// A statement built for one backend, with its values in placeholder order.
struct Sql {
    pg: bool,
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn new(pg: bool) -> Sql {
        Sql {
            pg,
            text: String::new(),
            args: Vec::new(),
        }
    }

    fn push(&mut self, s: &str) -> &mut Sql {
        self.text.push_str(s);
        self
    }

    /// Append a placeholder for `arg`.
    fn bind(&mut self, arg: Arg) -> &mut Sql {
        self.args.push(arg);
        let n = self.args.len();
        if self.pg {
            let cast = match self.args[n - 1] {
                Arg::Texts(_) => "::text[]",
                Arg::Ints(_) => "::bigint[]",
                Arg::Time(_) => "::timestamptz",
                Arg::Int(_) => "::bigint",
                Arg::Text(_) => "::text",
            };
            self.text.push_str(&format!("${n}{cast}"));
        } else {
            self.text.push_str(&format!("?{n}"));
        }
        self
    }

    /// `expr IN (values)` in the backend's array form.
    fn any(&mut self, expr: &str, values: Arg) -> &mut Sql {
        self.push(expr);
        if self.pg {
            self.push(" = ANY(").bind(values).push(")")
        } else {
            self.push(" IN (SELECT value FROM json_each(")
                .bind(values)
                .push("))")
        }
    }

    fn time(&mut self, t: DateTime<Utc>) -> &mut Sql {
        self.bind(Arg::Time(t))
    }

    async fn fetch_all(self, store: &Store) -> Result<Vec<AnyRow>, StoreError> {
        if let Some(pool) = store.pg_pool() {
            let mut q = sqlx::query(&self.text);
            for a in self.args {
                q = match a {
                    Arg::Text(s) => q.bind(s),
                    Arg::Int(i) => q.bind(i),
                    Arg::Time(t) => q.bind(t),
                    Arg::Texts(v) => q.bind(v),
                    Arg::Ints(v) => q.bind(v),
                };
            }
            Ok(q.fetch_all(pool)
                .await?
                .into_iter()
                .map(AnyRow::Pg)
                .collect())
        } else {
            let pool = store
                .sqlite_pool()
                .expect("a store is PostgreSQL or SQLite");
            let mut q = sqlx::query(&self.text);
            for a in self.args {
                q = match a {
                    Arg::Text(s) => q.bind(s),
                    Arg::Int(i) => q.bind(i),
                    Arg::Time(t) => q.bind(sqlite_time(t)),
                    Arg::Texts(v) => q.bind(serde_json::to_string(&v).unwrap_or_default()),
                    Arg::Ints(v) => q.bind(serde_json::to_string(&v).unwrap_or_default()),
                };
            }
            Ok(q.fetch_all(pool)
                .await?
                .into_iter()
                .map(AnyRow::Sqlite)
                .collect())
        }
    }
}

/// A result row of either backend, read by column index.
enum AnyRow {
    Pg(sqlx::postgres::PgRow),
    Sqlite(sqlx::sqlite::SqliteRow),
}

impl AnyRow {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(match self {
            AnyRow::Pg(r) => r.try_get(i)?,
            AnyRow::Sqlite(r) => r.try_get(i)?,
        })
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(match self {
            AnyRow::Pg(r) => r.try_get(i)?,
            AnyRow::Sqlite(r) => r.try_get(i)?,
        })
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(match self {
            AnyRow::Pg(r) => r.try_get(i)?,
            AnyRow::Sqlite(r) => r.try_get(i)?,
        })
    }
    fn int4(&self, i: usize) -> Result<i32, StoreError> {
        Ok(match self {
            AnyRow::Pg(r) => r.try_get(i)?,
            AnyRow::Sqlite(r) => r.try_get(i)?,
        })
    }
    fn opt_int4(&self, i: usize) -> Result<Option<i32>, StoreError> {
        Ok(match self {
            AnyRow::Pg(r) => r.try_get(i)?,
            AnyRow::Sqlite(r) => r.try_get(i)?,
        })
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            AnyRow::Pg(r) => r.try_get(i)?,
            AnyRow::Sqlite(r) => r.try_get(i)?,
        })
    }
    fn time(&self, i: usize) -> Result<DateTime<Utc>, StoreError> {
        Ok(match self {
            AnyRow::Pg(r) => r.try_get(i)?,
            AnyRow::Sqlite(r) => r.try_get(i)?,
        })
    }
    fn opt_time(&self, i: usize) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(match self {
            AnyRow::Pg(r) => r.try_get(i)?,
            AnyRow::Sqlite(r) => r.try_get(i)?,
        })
    }
    fn opt_json(&self, i: usize) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .opt_text(i)?
            .and_then(|t| serde_json::from_str(&t).ok()))
    }
}

/// SQLite's form of a time: the text every Ferry timestamp is stored as.
fn sqlite_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A SQLite JSON path for `json_extract`: `$."a"[0]."b"`.
fn sqlite_json_path(path: &[String]) -> String {
    let mut out = String::from("$");
    for seg in path {
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            out.push_str(&format!(".\"{}\"", seg.replace('"', "")));
        }
    }
    out
}

/// Whether a code can be looked for in the payload's text before parsing it: the characters a
/// JSON writer never escapes (no `/`, which some writers escape, nor anything non-ASCII).
fn plain_code(code: &str) -> bool {
    !code.is_empty()
        && code.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | ':' | '#' | '+')
        })
}

const SUMMARY_COLUMNS: &str = "o.id, o.workflow, o.key, o.state, o.attempts, o.last_status, \
                               o.last_error, o.created_at, o.updated_at, o.due_at, o.done_at";

impl Store {
    /// Rows that ever reached `done` (since migration 0004, plus those done before it), per
    /// workflow, sorted by workflow. Reads `ferry_totals` only.
    pub async fn done_totals(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut sql = Sql::new(self.pg_pool().is_some());
        sql.push(if sql.pg {
            "SELECT workflow, sum(done)::bigint FROM ferry_totals GROUP BY workflow ORDER BY workflow"
        } else {
            "SELECT workflow, sum(done) FROM ferry_totals GROUP BY workflow ORDER BY workflow"
        });
        sql.fetch_all(self)
            .await?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
    }

    /// Sum the done-total rows of database sessions that have ended into one row per workflow
    /// (PostgreSQL keeps one counter row per session, so that relays never wait on each other;
    /// SQLite has one writer and one row). Rows of live sessions are left alone, so nothing a
    /// relay is recording waits for this. Returns how many rows were folded.
    pub async fn fold_counters(&self) -> Result<u64, StoreError> {
        let Some(pool) = self.pg_pool() else {
            return Ok(0);
        };
        let n: Option<i64> = sqlx::query_scalar(
            "WITH gone AS ( \
               DELETE FROM ferry_totals t \
                WHERE t.slot <> 0 \
                  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = t.slot) \
               RETURNING t.workflow, t.done), \
             folded AS ( \
               INSERT INTO ferry_totals AS f (workflow, slot, done) \
               SELECT workflow, 0, sum(done) FROM gone GROUP BY workflow \
               ON CONFLICT (workflow, slot) DO UPDATE SET done = f.done + EXCLUDED.done) \
             SELECT count(*) FROM gone",
        )
        .fetch_one(pool)
        .await?;
        Ok(n.unwrap_or(0) as u64)
    }

    /// Rows that reached `done`/`dead` per minute over the last `minutes` minutes (all workflows,
    /// or one), oldest first; minutes with none are left out.
    pub async fn minute_counts(
        &self,
        minutes: i64,
        workflow: Option<&str>,
    ) -> Result<Vec<MinuteCount>, StoreError> {
        let pg = self.pg_pool().is_some();
        let mut sql = Sql::new(pg);
        let since = Utc::now() - chrono::Duration::minutes(minutes);
        if pg {
            sql.push("SELECT minute, sum(done)::bigint, sum(dead)::bigint FROM ferry_minutes WHERE minute >= date_trunc('minute', ")
                .time(since)
                .push(")");
        } else {
            sql.push("SELECT minute, sum(done), sum(dead) FROM ferry_minutes WHERE minute >= strftime('%Y-%m-%dT%H:%M:00.000Z', ")
                .time(since)
                .push(")");
        }
        if let Some(w) = workflow {
            sql.push(" AND workflow = ").bind(Arg::Text(w.to_string()));
        }
        sql.push(" GROUP BY minute ORDER BY minute");
        sql.fetch_all(self)
            .await?
            .iter()
            .map(|r| {
                Ok(MinuteCount {
                    minute: r.time(0)?,
                    done: r.int(1)?,
                    dead: r.int(2)?,
                })
            })
            .collect()
    }

    /// Rows that reached `done`/`dead` per workflow over the last `minutes` minutes.
    pub async fn settled_since(&self, minutes: i64) -> Result<Vec<SettledCount>, StoreError> {
        let pg = self.pg_pool().is_some();
        let mut sql = Sql::new(pg);
        let since = Utc::now() - chrono::Duration::minutes(minutes);
        sql.push(if pg {
            "SELECT workflow, sum(done)::bigint, sum(dead)::bigint FROM ferry_minutes WHERE minute >= "
        } else {
            "SELECT workflow, sum(done), sum(dead) FROM ferry_minutes WHERE minute >= "
        })
        .time(since)
        .push(" GROUP BY workflow ORDER BY workflow");
        sql.fetch_all(self)
            .await?
            .iter()
            .map(|r| {
                Ok(SettledCount {
                    workflow: r.text(0)?,
                    done: r.int(1)?,
                    dead: r.int(2)?,
                })
            })
            .collect()
    }

    /// Every workflow name that has rows, sorted: one probe of the `(workflow, key)` index per
    /// name, however many rows there are.
    pub async fn workflow_names(&self) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new(self.pg_pool().is_some());
        sql.push(
            "WITH RECURSIVE wf(w) AS ( \
               SELECT min(workflow) FROM ferry_outbox \
               UNION ALL \
               SELECT (SELECT min(workflow) FROM ferry_outbox WHERE workflow > wf.w) \
                 FROM wf WHERE wf.w IS NOT NULL) \
             SELECT w FROM wf WHERE w IS NOT NULL",
        );
        sql.fetch_all(self)
            .await?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    /// One page of rows matching `q`, newest first. See [`RowQuery`] for what uses an index and
    /// what is looked at row by row.
    pub async fn browse(&self, q: &RowQuery, codes: &[CodePath]) -> Result<Page, StoreError> {
        let limit = q.limit.clamp(1, 1000);
        let names = match &q.key {
            Some(TextMatch::Exact(_)) if q.workflow.is_none() => Some(self.workflow_names().await?),
            _ => None,
        };
        // A filter no index answers: fix the window of rows this call looks at first (the
        // budget-th row from the cursor on, by the cheap filters), then filter inside it.
        let lower = if q.needs_scan() {
            let budget = q.scan_budget.max(limit);
            let mut sql = Sql::new(self.pg_pool().is_some());
            sql.push("SELECT o.created_at, o.id FROM ferry_outbox o WHERE ");
            cheap_filters(&mut sql, q, names.as_deref());
            sql.push(" ORDER BY o.created_at DESC, o.id DESC LIMIT 1 OFFSET ")
                .bind(Arg::Int(budget - 1));
            match sql.fetch_all(self).await?.first() {
                Some(r) => Some(Cursor {
                    created_at: r.time(0)?,
                    id: r.int(1)?,
                }),
                None => None,
            }
        } else {
            None
        };
        let mut sql = Sql::new(self.pg_pool().is_some());
        sql.push("SELECT ").push(SUMMARY_COLUMNS).push(", ");
        code_expr(&mut sql, codes);
        sql.push(" FROM ferry_outbox o WHERE ");
        cheap_filters(&mut sql, q, names.as_deref());
        if let Some(edge) = lower {
            sql.push(" AND o.created_at >= ")
                .time(edge.created_at)
                .push(" AND (o.created_at > ")
                .time(edge.created_at)
                .push(" OR o.id >= ")
                .bind(Arg::Int(edge.id))
                .push(")");
        }
        scan_filters(&mut sql, q, codes);
        sql.push(" ORDER BY o.created_at DESC, o.id DESC LIMIT ")
            .bind(Arg::Int(limit + 1));
        let mut rows = sql
            .fetch_all(self)
            .await?
            .iter()
            .map(summary)
            .collect::<Result<Vec<_>, _>>()?;
        let (next, partial) = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            let last = rows.last().map(|r| Cursor {
                created_at: r.created_at,
                id: r.id,
            });
            (last, false)
        } else {
            // The window is used up: the next call looks at the rows after it.
            (lower, lower.is_some())
        };
        Ok(Page {
            rows,
            next: next.map(|c| c.encode()),
            partial,
            searched_to: lower.filter(|_| partial).map(|c| c.created_at),
        })
    }

    /// The ids of the rows matching `q` (newest first, cursor and budget ignored), at most `max`.
    pub async fn matching_ids(
        &self,
        q: &RowQuery,
        codes: &[CodePath],
        max: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let names = match &q.key {
            Some(TextMatch::Exact(_)) if q.workflow.is_none() => Some(self.workflow_names().await?),
            _ => None,
        };
        let q = RowQuery {
            before: None,
            ..q.clone()
        };
        let pg = self.pg_pool().is_some();
        // Every match is wanted, not the first page: SQLite must start from the state's partial
        // index and sort, not walk an ordered index of the workflow's rows (seconds at a million
        // rows). Its unary `+` keeps a term off indexes; PostgreSQL plans by statistics.
        let by_state = !pg && q.state.is_some();
        let mut sql = Sql::new(pg);
        sql.push("SELECT o.id FROM ferry_outbox o WHERE ");
        cheap_filters_with(&mut sql, &q, names.as_deref(), by_state);
        if matches!(
            q.state,
            Some(State::Pending | State::RetryWait | State::Sending)
        ) {
            // The predicate of the live rows' partial indexes, word for word: SQLite uses a
            // partial index only when the query repeats its WHERE.
            sql.push(" AND o.state IN ('pending', 'retry_wait', 'sending')");
        }
        scan_filters(&mut sql, &q, codes);
        sql.push(if by_state {
            " ORDER BY +o.created_at DESC, +o.id DESC LIMIT "
        } else {
            " ORDER BY o.created_at DESC, o.id DESC LIMIT "
        })
        .bind(Arg::Int(max));
        sql.fetch_all(self)
            .await?
            .iter()
            .map(|r| r.int(0))
            .collect()
    }

    /// Filters an index answers: workflow, state, exact key, time range, cursor.
    /// Rows `from` → `to` by id, each only if still in `from` (compare and set, one statement),
    /// with `reason` as `last_error` if given. Returns the ids moved. A move to `pending` is a
    /// reset (the database's trigger makes the row due now with a fresh attempt budget) and wakes
    /// idle relays.
    pub async fn move_rows(
        &self,
        ids: &[i64],
        from: State,
        to: State,
        reason: Option<&str>,
    ) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if !from.can_move_to(to) {
            return Err(StoreError::InvalidIntent(format!(
                "{from} rows cannot be moved to {to}"
            )));
        }
        let pg = self.pg_pool().is_some();
        let mut moved = Vec::with_capacity(ids.len());
        // Chunks keep each statement (and SQLite's write lock) short.
        for chunk in ids.chunks(1000) {
            let mut sql = Sql::new(pg);
            sql.push("UPDATE ferry_outbox SET state = ")
                .bind(Arg::Text(to.as_str().into()))
                .push(", claim_token = NULL, last_error = COALESCE(");
            match reason {
                Some(r) => sql.bind(Arg::Text(r.to_string())),
                None => sql.push("NULL"),
            };
            sql.push(if pg {
                ", last_error), updated_at = now() WHERE "
            } else {
                ", last_error), updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE "
            });
            sql.any("id", Arg::Ints(chunk.to_vec()));
            sql.push(" AND state = ")
                .bind(Arg::Text(from.as_str().into()))
                .push(" RETURNING id");
            for r in sql.fetch_all(self).await? {
                moved.push(r.int(0)?);
            }
        }
        if to == State::Pending {
            self.wake();
        }
        Ok(moved)
    }

    /// Record an operator action and the rows it changed. Returns the action's id.
    pub async fn record_action(&self, a: &ActionRecord<'_>) -> Result<i64, StoreError> {
        let pg = self.pg_pool().is_some();
        let mut sql = Sql::new(pg);
        sql.push(
            "INSERT INTO ferry_actions (actor, action, outbox_id, filter, reason, matched, changed) VALUES (",
        )
        .bind(Arg::Text(a.actor.to_string()))
        .push(", ")
        .bind(Arg::Text(a.action.to_string()))
        .push(", ");
        match a.outbox_id {
            Some(id) => sql.bind(Arg::Int(id)),
            None => sql.push("NULL"),
        };
        sql.push(", ");
        match &a.filter {
            Some(f) => {
                sql.bind(Arg::Text(f.to_string()));
                if pg {
                    sql.push("::jsonb");
                }
            }
            None => {
                sql.push("NULL");
            }
        }
        sql.push(", ");
        match a.reason {
            Some(r) => sql.bind(Arg::Text(r.to_string())),
            None => sql.push("NULL"),
        };
        sql.push(", ")
            .bind(Arg::Int(a.matched as i64))
            .push(", ")
            .bind(Arg::Int(a.rows.len() as i64))
            .push(") RETURNING id");
        let id = sql
            .fetch_all(self)
            .await?
            .first()
            .map(|r| r.int(0))
            .transpose()?
            .ok_or_else(|| StoreError::InvalidIntent("the action was not recorded".into()))?;
        for chunk in a.rows.chunks(1000) {
            let mut sql = Sql::new(pg);
            if pg {
                sql.push("INSERT INTO ferry_action_rows (outbox_id, action_id) SELECT unnest(")
                    .bind(Arg::Ints(chunk.to_vec()))
                    .push("), ")
                    .bind(Arg::Int(id))
                    .push(" ON CONFLICT DO NOTHING");
            } else {
                sql.push("INSERT INTO ferry_action_rows (outbox_id, action_id) SELECT value, ")
                    .bind(Arg::Int(id))
                    .push(" FROM json_each(")
                    .bind(Arg::Ints(chunk.to_vec()))
                    .push(") WHERE TRUE ON CONFLICT DO NOTHING");
            }
            sql.fetch_all(self).await?;
        }
        Ok(id)
    }

    /// Recorded operator actions, newest first: those that changed row `outbox_id`, or all.
    pub async fn actions(
        &self,
        outbox_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ActionLine>, StoreError> {
        let pg = self.pg_pool().is_some();
        let mut sql = Sql::new(pg);
        sql.push(if pg {
            "SELECT a.id, a.at, a.actor, a.action, a.outbox_id, a.filter::text, a.reason, a.matched, a.changed FROM ferry_actions a"
        } else {
            "SELECT a.id, a.at, a.actor, a.action, a.outbox_id, a.filter, a.reason, a.matched, a.changed FROM ferry_actions a"
        });
        if let Some(id) = outbox_id {
            sql.push(" JOIN ferry_action_rows r ON r.action_id = a.id WHERE r.outbox_id = ")
                .bind(Arg::Int(id));
        }
        sql.push(" ORDER BY a.id DESC LIMIT ")
            .bind(Arg::Int(limit.clamp(1, 1000)));
        sql.fetch_all(self)
            .await?
            .iter()
            .map(|r| {
                Ok(ActionLine {
                    id: r.int(0)?,
                    at: r.time(1)?,
                    actor: r.text(2)?,
                    action: r.text(3)?,
                    outbox_id: r.opt_int(4)?,
                    filter: r.opt_json(5)?,
                    reason: r.opt_text(6)?,
                    matched: r.int(7)?,
                    changed: r.int(8)?,
                })
            })
            .collect()
    }
}

/// Filters an index answers: workflow, state, exact key, time range, cursor.
///
/// The state is written as a literal (it is one of [`State`]'s names), so the planner can match
/// it with the partial indexes of dead and live rows whatever plan it caches.
fn cheap_filters(sql: &mut Sql, q: &RowQuery, names: Option<&[String]>) {
    cheap_filters_with(sql, q, names, false)
}

/// [`cheap_filters`], the workflow term kept off SQLite's indexes when `workflow_unindexed`.
fn cheap_filters_with(
    sql: &mut Sql,
    q: &RowQuery,
    names: Option<&[String]>,
    workflow_unindexed: bool,
) {
    sql.push("TRUE");
    if let Some(w) = &q.workflow {
        sql.push(if workflow_unindexed {
            " AND +o.workflow = "
        } else {
            " AND o.workflow = "
        })
        .bind(Arg::Text(w.clone()));
    }
    if let Some(s) = q.state {
        sql.push(&format!(" AND o.state = '{}'", s.as_str()));
    }
    if let Some(TextMatch::Exact(k)) = &q.key {
        sql.push(" AND o.key = ").bind(Arg::Text(k.clone()));
        if let Some(names) = names {
            // Lets the (workflow, key) index find the key without a workflow given.
            sql.push(" AND ");
            sql.any("o.workflow", Arg::Texts(names.to_vec()));
        }
    }
    if let Some(from) = q.created_from {
        sql.push(" AND o.created_at >= ").time(from);
    }
    if let Some(to) = q.created_to {
        sql.push(" AND o.created_at < ").time(to);
    }
    if let Some(c) = q.before {
        // `created_at <= t` bounds the index scan on both backends; the rest settles ties.
        sql.push(" AND o.created_at <= ")
            .time(c.created_at)
            .push(" AND (o.created_at < ")
            .time(c.created_at)
            .push(" OR o.id < ")
            .bind(Arg::Int(c.id))
            .push(")");
    }
}

/// The document code of a row as a column: its workflow's path into the payload.
fn code_expr(sql: &mut Sql, codes: &[CodePath]) {
    if codes.is_empty() {
        sql.push("NULL");
        return;
    }
    sql.push("CASE");
    for c in codes {
        sql.push(" WHEN ");
        sql.any("o.workflow", Arg::Texts(c.workflows.clone()));
        sql.push(" THEN ");
        if sql.pg {
            sql.push("o.payload #>> ").bind(Arg::Texts(c.path.clone()));
        } else {
            sql.push("CAST(json_extract(o.payload, ")
                .bind(Arg::Text(sqlite_json_path(&c.path)))
                .push(") AS TEXT)");
        }
    }
    sql.push(" END");
}

/// `expr` matching `m`: equal, or `LIKE` (case-insensitive) for a pattern.
fn text_match(sql: &mut Sql, expr: impl FnOnce(&mut Sql), m: &TextMatch) {
    match m {
        TextMatch::Exact(t) => {
            expr(sql);
            sql.push(" = ").bind(Arg::Text(t.clone()));
        }
        TextMatch::Pattern(_) => {
            expr(sql);
            sql.push(if sql.pg { " ILIKE " } else { " LIKE " })
                .bind(Arg::Text(m.like()))
                .push(" ESCAPE '\\'");
        }
    }
}

/// Filters looked at row by row: key patterns and document codes.
fn scan_filters(sql: &mut Sql, q: &RowQuery, codes: &[CodePath]) {
    if let Some(m @ TextMatch::Pattern(_)) = &q.key {
        sql.push(" AND ");
        text_match(
            sql,
            |s| {
                s.push("o.key");
            },
            m,
        );
    }
    if let Some(m) = &q.code {
        sql.push(" AND (");
        code_match(sql, m, codes);
        sql.push(")");
    }
    if let Some(m) = &q.key_or_code {
        sql.push(" AND (");
        text_match(
            sql,
            |s| {
                s.push("o.key");
            },
            m,
        );
        sql.push(" OR ");
        code_match(sql, m, codes);
        sql.push(")");
    }
}

/// The row's document code matching `m` (false for workflows without a code path).
fn code_match(sql: &mut Sql, m: &TextMatch, codes: &[CodePath]) {
    if codes.is_empty() {
        sql.push("FALSE");
        return;
    }
    let pg = sql.pg;
    // SQLite parses the JSON of every row it tests; a plain code is first looked for in the
    // text, which rules out almost every row at a fraction of the cost.
    if let (false, TextMatch::Exact(code)) = (pg, m) {
        if plain_code(code) {
            sql.push("instr(o.payload, ")
                .bind(Arg::Text(code.clone()))
                .push(") > 0 AND ");
        }
    }
    sql.push("(");
    for (i, c) in codes.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        sql.any("o.workflow", Arg::Texts(c.workflows.clone()));
        sql.push(" AND ");
        let path = c.path.clone();
        text_match(
            sql,
            |s| {
                if pg {
                    s.push("(o.payload #>> ").bind(Arg::Texts(path)).push(")");
                } else {
                    s.push("CAST(json_extract(o.payload, ")
                        .bind(Arg::Text(sqlite_json_path(&path)))
                        .push(") AS TEXT)");
                }
            },
            m,
        );
        sql.push(")");
    }
    sql.push(")");
}

fn summary(r: &AnyRow) -> Result<RowSummary, StoreError> {
    let state = r.text(3)?;
    Ok(RowSummary {
        id: r.int(0)?,
        workflow: r.text(1)?,
        key: r.text(2)?,
        state: state
            .parse()
            .map_err(|e: super::state::UnknownState| StoreError::InvalidIntent(e.to_string()))?,
        attempts: r.int4(4)?,
        last_status: r.opt_int4(5)?,
        last_error: r.opt_text(6)?.map(|e| cut(&e, ERROR_EXCERPT_CHARS)),
        created_at: r.time(7)?,
        updated_at: r.time(8)?,
        due_at: r.time(9)?,
        done_at: r.opt_time(10)?,
        code: r.opt_text(11)?,
    })
}

/// At most `max` characters, `…` marking a cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            created_at: DateTime::parse_from_rfc3339("2026-02-13T10:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            id: 42,
        };
        assert_eq!(c.encode(), "2026-02-13T10:00:00.123456Z~42");
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nonsense"), None);
        assert_eq!(Cursor::decode("2026-02-13T10:00:00Z~x"), None);
    }

    #[test]
    fn patterns_escape_like_wildcards() {
        assert_eq!(TextMatch::parse("  "), None);
        assert_eq!(
            TextMatch::parse("PN-1"),
            Some(TextMatch::Exact("PN-1".into()))
        );
        let p = TextMatch::parse("PN_1*%").unwrap();
        assert_eq!(p.like(), "PN\\_1%\\%");
        assert_eq!(TextMatch::Exact("a%b".into()).like(), "a\\%b");
    }

    #[test]
    fn sqlite_paths_and_plain_codes() {
        assert_eq!(
            sqlite_json_path(&["items".into(), "0".into(), "code".into()]),
            "$.\"items\"[0].\"code\""
        );
        assert!(plain_code("INV-2026-042"));
        assert!(!plain_code("PX/2026/01"));
        assert!(!plain_code("Счёт-1"));
    }
}
