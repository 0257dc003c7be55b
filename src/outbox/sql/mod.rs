//! Every statement Ferry's store sends, as SQL, one file per statement and per backend
//! (`src/outbox/sql/postgres/*.sql`, `src/outbox/sql/sqlite/*.sql`), each with a comment that
//! names its parameters. The store binds them (never splices values into them); benchmarks and
//! tests that need a statement (to EXPLAIN it, say) take it from here instead of copying it.
//!
//! The two backends' files mirror each other where they can; they differ where the databases
//! do: `$n` and `?n` placeholders, `now()` against `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`
//! (SQLite stores timestamps as that text), arrays (`UNNEST`) on PostgreSQL where SQLite runs
//! one prepared statement per row inside its single write transaction.

/// PostgreSQL statements.
pub mod postgres {
    /// A row's attempts, in the order recorded.
    pub const ATTEMPTS: &str = include_str!("postgres/attempts.sql");
    /// Groups held by a dead row (the `ferry_blocked` view).
    pub const BLOCKED: &str = include_str!("postgres/blocked.sql");
    /// Claim due rows under one token and a lease (see the file for parameters).
    pub const CLAIM: &str = include_str!("postgres/claim.sql");
    /// Take one tick of a cron job, once across relays.
    pub const CLAIM_CRON_TICK: &str = include_str!("postgres/claim_cron_tick.sql");
    /// Record the outcomes of a batch of held rows (token-fenced).
    pub const COMPLETE: &str = include_str!("postgres/complete.sql");
    /// Rows per state, done included.
    pub const COUNT_BY_STATE: &str = include_str!("postgres/count_by_state.sql");
    /// The schema a waiter listens for.
    pub const CURRENT_SCHEMA: &str = include_str!("postgres/current_schema.sql");
    /// Insert one intent unless its (workflow, key) exists.
    pub const ENQUEUE: &str = include_str!("postgres/enqueue.sql");
    /// Insert intents of one workflow unless their keys exist.
    pub const ENQUEUE_MANY: &str = include_str!("postgres/enqueue_many.sql");
    /// Renew the leases of the rows still held.
    pub const EXTEND: &str = include_str!("postgres/extend.sql");
    /// Id and state of the row of a (workflow, key).
    pub const FIND_INTENT: &str = include_str!("postgres/find_intent.sql");
    /// Ids and states of the rows of some keys of a workflow.
    pub const FIND_INTENTS: &str = include_str!("postgres/find_intents.sql");
    /// One outbox row by workflow and key.
    pub const FIND_ROW: &str = include_str!("postgres/find_row.sql");
    /// One outbox row by id.
    pub const GET_ROW: &str = include_str!("postgres/get_row.sql");
    /// Insert the attempt rows of a batch.
    pub const INSERT_ATTEMPTS: &str = include_str!("postgres/insert_attempts.sql");
    /// Outbox rows by state and workflow, newest first.
    pub const LIST_ROWS: &str = include_str!("postgres/list_rows.sql");
    /// Which rows of a batch still exist, key-share locked until commit.
    pub const LOCK_PRESENT: &str = include_str!("postgres/lock_present.sql");
    /// Mark one held row done before its on-done SQL runs.
    pub const MARK_DONE: &str = include_str!("postgres/mark_done.sql");
    /// Make a delivered row dead because its on-done SQL failed.
    pub const MARK_ON_DONE_FAILED: &str = include_str!("postgres/mark_on_done_failed.sql");
    /// The highest attempt id.
    pub const MAX_ATTEMPT_ID: &str = include_str!("postgres/max_attempt_id.sql");
    /// Pause a workflow or a target.
    pub const PAUSE: &str = include_str!("postgres/pause.sql");
    /// Everything paused.
    pub const PAUSED: &str = include_str!("postgres/paused.sql");
    /// Whether the database answers.
    pub const PING: &str = include_str!("postgres/ping.sql");
    /// One batch of the prune of old done rows.
    pub const PRUNE_DONE: &str = include_str!("postgres/prune_done.sql");
    /// Take one request of a target's rate limit, or the wait until one.
    pub const RATE_TAKE: &str = include_str!("postgres/rate_take.sql");
    /// Release a dead row from holding its ordering group.
    pub const RELEASE: &str = include_str!("postgres/release.sql");
    /// Reset dead rows (of one workflow, or all).
    pub const RESET_DEAD: &str = include_str!("postgres/reset_dead.sql");
    /// Resume a workflow or a target, waking relays.
    pub const RESUME: &str = include_str!("postgres/resume.sql");
    /// An operator's move of one row from a known state.
    pub const SET_STATE: &str = include_str!("postgres/set_state.sql");
    /// The `ferry_status` view, ordered.
    pub const STATUS: &str = include_str!("postgres/status.sql");
    /// Delete attempts of rows that no longer exist, in a range of ids.
    pub const SWEEP_ORPHAN_ATTEMPTS: &str = include_str!("postgres/sweep_orphan_attempts.sql");
}

/// SQLite statements.
pub mod sqlite {
    /// A row's attempts, in the order recorded.
    pub const ATTEMPTS: &str = include_str!("sqlite/attempts.sql");
    /// Groups held by a dead row (the `ferry_blocked` view).
    pub const BLOCKED: &str = include_str!("sqlite/blocked.sql");
    /// Claim due rows under one token and a lease (see the file for parameters).
    pub const CLAIM: &str = include_str!("sqlite/claim.sql");
    /// Take one tick of a cron job, once across relays.
    pub const CLAIM_CRON_TICK: &str = include_str!("sqlite/claim_cron_tick.sql");
    /// Record the outcome of one held row (token-fenced).
    pub const COMPLETE: &str = include_str!("sqlite/complete.sql");
    /// Rows per state, done included.
    pub const COUNT_BY_STATE: &str = include_str!("sqlite/count_by_state.sql");
    /// The counter that changes when another connection commits.
    pub const DATA_VERSION: &str = include_str!("sqlite/data_version.sql");
    /// Insert one intent unless its (workflow, key) exists.
    pub const ENQUEUE: &str = include_str!("sqlite/enqueue.sql");
    /// Renew the lease of one row still held.
    pub const EXTEND: &str = include_str!("sqlite/extend.sql");
    /// Id and state of the row of a (workflow, key).
    pub const FIND_INTENT: &str = include_str!("sqlite/find_intent.sql");
    /// One outbox row by workflow and key.
    pub const FIND_ROW: &str = include_str!("sqlite/find_row.sql");
    /// One outbox row by id.
    pub const GET_ROW: &str = include_str!("sqlite/get_row.sql");
    /// Insert one attempt row.
    pub const INSERT_ATTEMPT: &str = include_str!("sqlite/insert_attempt.sql");
    /// Outbox rows by state and workflow, newest first.
    pub const LIST_ROWS: &str = include_str!("sqlite/list_rows.sql");
    /// Make a delivered row dead because its on-done SQL failed.
    pub const MARK_ON_DONE_FAILED: &str = include_str!("sqlite/mark_on_done_failed.sql");
    /// The highest attempt id.
    pub const MAX_ATTEMPT_ID: &str = include_str!("sqlite/max_attempt_id.sql");
    /// Pause a workflow or a target.
    pub const PAUSE: &str = include_str!("sqlite/pause.sql");
    /// Everything paused.
    pub const PAUSED: &str = include_str!("sqlite/paused.sql");
    /// Whether the database answers.
    pub const PING: &str = include_str!("sqlite/ping.sql");
    /// One batch of the prune of old done rows.
    pub const PRUNE_DONE: &str = include_str!("sqlite/prune_done.sql");
    /// Take one request of a target's rate limit (no row back: refused).
    pub const RATE_TAKE: &str = include_str!("sqlite/rate_take.sql");
    /// After a refused take: the wait until one.
    pub const RATE_WAIT: &str = include_str!("sqlite/rate_wait.sql");
    /// Release a dead row from holding its ordering group.
    pub const RELEASE: &str = include_str!("sqlite/release.sql");
    /// Reset dead rows (of one workflow, or all).
    pub const RESET_DEAD: &str = include_str!("sqlite/reset_dead.sql");
    /// Resume a workflow or a target.
    pub const RESUME: &str = include_str!("sqlite/resume.sql");
    /// Whether one row still exists.
    pub const ROW_EXISTS: &str = include_str!("sqlite/row_exists.sql");
    /// An operator's move of one row from a known state.
    pub const SET_STATE: &str = include_str!("sqlite/set_state.sql");
    /// The `ferry_status` view, ordered.
    pub const STATUS: &str = include_str!("sqlite/status.sql");
    /// Delete attempts of rows that no longer exist, in a range of ids.
    pub const SWEEP_ORPHAN_ATTEMPTS: &str = include_str!("sqlite/sweep_orphan_attempts.sql");
}
