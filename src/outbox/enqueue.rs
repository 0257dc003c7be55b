//! Enqueue inside the caller's own transaction.
//!
//! The point of an outbox is that the intent commits or rolls back with the business change, so
//! the enqueue function takes the caller's open connection or transaction rather than a pool:
//!
//! ```no_run
//! # async fn pay(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE orders SET status = 'paid' WHERE id = $1").bind(42_i64).execute(&mut *tx).await?;
//! let payload = serde_json::json!({ "invoice_number": "INV-2026-042" });
//! ferry::enqueue(&mut *tx, "onec_invoice", "42", &payload).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use sqlx::{PgConnection, Row, SqliteConnection};

use super::sql;
use super::{State, StoreError};

/// Largest payload accepted, in bytes of JSON text. Documents are invoices, not attachments; a
/// bigger one is almost certainly a bug upstream and would bloat every claim.
///
/// The database enforces the same limit on rows written by plain SQL (migration 0002), on the
/// JSON text as the relay reads it back: on PostgreSQL that is jsonb's rendering (`": "` and
/// `", "` separators, numbers written out), which can be longer than the compact text measured
/// here, so a payload just under the limit may still be refused there, with an error naming the
/// limit. Rows over it that predate the migration are made dead at claim time.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// What [`enqueue`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// `false` when a row for `(workflow, key)` already existed; it is returned unchanged.
    pub created: bool,
    pub state: State,
}

/// One row of [`enqueue_many_ordered`] as sent: key, ordering key, payload text.
#[doc(hidden)]
pub type IntentRow = (String, Option<String>, String);

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection (or transaction, via `&mut *tx`) that can take an outbox row.
pub trait EnqueueConn<'c>: Send {
    #[doc(hidden)]
    fn insert_intent(
        self,
        workflow: &'c str,
        key: &'c str,
        ordering_key: Option<&'c str>,
        payload: String,
    ) -> BoxFut<'c, Result<Enqueued, StoreError>>;

    #[doc(hidden)]
    fn insert_intents(
        self,
        workflow: &'c str,
        rows: Vec<IntentRow>,
    ) -> BoxFut<'c, Result<Vec<Enqueued>, StoreError>>;
}

/// Add an export intent for `(workflow, key)` on the caller's connection or transaction.
///
/// Enqueueing the same `(workflow, key)` again (a retried payment webhook) makes no second row:
/// the existing row comes back with `created: false`.
///
/// # Errors
/// [`StoreError::InvalidIntent`] for an empty or over-long workflow or key, or a payload that
/// is not serializable or larger than [`MAX_PAYLOAD_BYTES`]; database errors otherwise.
pub async fn enqueue<'c, C, P>(
    conn: C,
    workflow: &'c str,
    key: &'c str,
    payload: &P,
) -> Result<Enqueued, StoreError>
where
    C: EnqueueConn<'c>,
    P: Serialize + ?Sized,
{
    enqueue_ordered(conn, workflow, key, None, payload).await
}

/// [`enqueue`] with an ordering key: rows with the same ordering key (across workflows) are
/// delivered one at a time, in enqueue (id) order; an earlier row that is retrying holds the
/// group, and one that is dead blocks it until it is retried or released (`ferry release`).
/// `None` is an unordered row, exactly as [`enqueue`].
///
/// Order is the order of ids among committed rows: two transactions enqueueing into one group
/// at the same time should be serialized by the caller (they usually are, by the lock on the
/// business row they both change), or a later-committing lower id can be claimed after a higher
/// one already was.
///
/// # Errors
/// As [`enqueue`]; also an ordering key that is empty or over 500 bytes.
pub async fn enqueue_ordered<'c, C, P>(
    conn: C,
    workflow: &'c str,
    key: &'c str,
    ordering_key: Option<&'c str>,
    payload: &P,
) -> Result<Enqueued, StoreError>
where
    C: EnqueueConn<'c>,
    P: Serialize + ?Sized,
{
    check_names(workflow, key)?;
    check_ordering_key(ordering_key)?;
    let text = serde_json::to_string(payload)
        .map_err(|e| StoreError::InvalidIntent(format!("payload is not JSON-serializable: {e}")))?;
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(StoreError::InvalidIntent(format!(
            "payload of {workflow}/{key} is {} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
            text.len()
        )));
    }
    conn.insert_intent(workflow, key, ordering_key, text).await
}

/// Add many intents of one workflow in one statement (PostgreSQL) or one loop of prepared
/// statements (SQLite) on the caller's connection or transaction. Keys already present are left
/// as they are and come back with `created: false`. The result follows the order of `items`.
///
/// # Errors
/// As [`enqueue`], for the first offending item.
pub async fn enqueue_many<'c, C, P>(
    conn: C,
    workflow: &'c str,
    items: &[(&str, &P)],
) -> Result<Vec<Enqueued>, StoreError>
where
    C: EnqueueConn<'c>,
    P: Serialize,
{
    let items: Vec<(&str, Option<&str>, &P)> = items.iter().map(|(k, p)| (*k, None, *p)).collect();
    enqueue_many_ordered(conn, workflow, &items).await
}

/// [`enqueue_many`] with an ordering key per item (see [`enqueue_ordered`]); items of one group
/// get ids, and so are delivered, in the order given.
///
/// # Errors
/// As [`enqueue_ordered`], for the first offending item.
pub async fn enqueue_many_ordered<'c, C, P>(
    conn: C,
    workflow: &'c str,
    items: &[(&str, Option<&str>, &P)],
) -> Result<Vec<Enqueued>, StoreError>
where
    C: EnqueueConn<'c>,
    P: Serialize,
{
    let mut rows = Vec::with_capacity(items.len());
    for (key, ordering_key, payload) in items {
        check_names(workflow, key)?;
        check_ordering_key(*ordering_key)?;
        let text = serde_json::to_string(payload).map_err(|e| {
            StoreError::InvalidIntent(format!(
                "payload of {workflow}/{key} is not JSON-serializable: {e}"
            ))
        })?;
        if text.len() > MAX_PAYLOAD_BYTES {
            return Err(StoreError::InvalidIntent(format!(
                "payload of {workflow}/{key} is {} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
                text.len()
            )));
        }
        rows.push((key.to_string(), ordering_key.map(str::to_string), text));
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    conn.insert_intents(workflow, rows).await
}

fn check_ordering_key(ordering_key: Option<&str>) -> Result<(), StoreError> {
    match ordering_key {
        Some(g) if g.is_empty() || g.len() > 500 => Err(StoreError::InvalidIntent(
            "ordering key must be 1 to 500 bytes (or none)".into(),
        )),
        _ => Ok(()),
    }
}

fn check_names(workflow: &str, key: &str) -> Result<(), StoreError> {
    if workflow.is_empty() || workflow.len() > 200 {
        return Err(StoreError::InvalidIntent(
            "workflow name must be 1 to 200 bytes".into(),
        ));
    }
    if key.is_empty() || key.len() > 500 {
        return Err(StoreError::InvalidIntent(format!(
            "key for {workflow} must be 1 to 500 bytes"
        )));
    }
    Ok(())
}

impl<'c> EnqueueConn<'c> for &'c mut PgConnection {
    fn insert_intent(
        self,
        workflow: &'c str,
        key: &'c str,
        ordering_key: Option<&'c str>,
        payload: String,
    ) -> BoxFut<'c, Result<Enqueued, StoreError>> {
        Box::pin(async move {
            // ON CONFLICT DO NOTHING waits for a concurrent uncommitted insert of the same key and
            // then yields nothing; the SELECT below then sees the committed row.
            let inserted = sqlx::query(sql::postgres::ENQUEUE)
                .bind(workflow)
                .bind(key)
                .bind(&payload)
                .bind(ordering_key)
                // Read to completion (not fetch_optional): the statement's commit, when it runs in
                // autocommit, happens as it finishes, and its error must reach the caller.
                .fetch_all(&mut *self)
                .await?
                .into_iter()
                .next();
            if let Some(row) = inserted {
                return Ok(Enqueued {
                    id: row.try_get(0)?,
                    created: true,
                    state: State::Pending,
                });
            }
            let (id, state): (i64, State) = sqlx::query_as(sql::postgres::FIND_INTENT)
                .bind(workflow)
                .bind(key)
                .fetch_one(&mut *self)
                .await?;
            Ok(Enqueued {
                id,
                created: false,
                state,
            })
        })
    }

    fn insert_intents(
        self,
        workflow: &'c str,
        rows: Vec<IntentRow>,
    ) -> BoxFut<'c, Result<Vec<Enqueued>, StoreError>> {
        Box::pin(async move {
            let mut keys = Vec::with_capacity(rows.len());
            let mut groups = Vec::with_capacity(rows.len());
            let mut payloads = Vec::with_capacity(rows.len());
            for (k, g, p) in rows {
                keys.push(k);
                groups.push(g);
                payloads.push(p);
            }
            let inserted: Vec<(i64, String)> = sqlx::query_as(sql::postgres::ENQUEUE_MANY)
                .bind(workflow)
                .bind(&keys)
                .bind(&payloads)
                .bind(&groups)
                .fetch_all(&mut *self)
                .await?;
            let mut found: std::collections::HashMap<String, Enqueued> = inserted
                .into_iter()
                .map(|(id, k)| {
                    (
                        k,
                        Enqueued {
                            id,
                            created: true,
                            state: State::Pending,
                        },
                    )
                })
                .collect();
            if found.len() < keys.len() {
                let missing: Vec<&String> =
                    keys.iter().filter(|k| !found.contains_key(*k)).collect();
                let existing: Vec<(i64, String, State)> =
                    sqlx::query_as(sql::postgres::FIND_INTENTS)
                        .bind(workflow)
                        .bind(&missing)
                        .fetch_all(&mut *self)
                        .await?;
                for (id, k, st) in existing {
                    found.insert(
                        k,
                        Enqueued {
                            id,
                            created: false,
                            state: st,
                        },
                    );
                }
            }
            keys.iter()
                .map(|k| {
                    found.get(k).cloned().ok_or_else(|| {
                        StoreError::InvalidIntent(format!("key {k} appears twice in one batch"))
                    })
                })
                .collect()
        })
    }
}

impl<'c> EnqueueConn<'c> for &'c mut SqliteConnection {
    fn insert_intent(
        self,
        workflow: &'c str,
        key: &'c str,
        ordering_key: Option<&'c str>,
        payload: String,
    ) -> BoxFut<'c, Result<Enqueued, StoreError>> {
        Box::pin(async move { sqlite_insert(self, workflow, key, ordering_key, &payload).await })
    }

    fn insert_intents(
        self,
        workflow: &'c str,
        rows: Vec<IntentRow>,
    ) -> BoxFut<'c, Result<Vec<Enqueued>, StoreError>> {
        // SQLite runs in-process: a prepared statement per row inside the caller's transaction
        // costs microseconds, so one loop is as fast as a multi-row statement and simpler.
        Box::pin(async move {
            let mut out = Vec::with_capacity(rows.len());
            for (key, group, payload) in &rows {
                out.push(
                    sqlite_insert(&mut *self, workflow, key, group.as_deref(), payload).await?,
                );
            }
            Ok(out)
        })
    }
}

async fn sqlite_insert(
    conn: &mut SqliteConnection,
    workflow: &str,
    key: &str,
    ordering_key: Option<&str>,
    payload: &str,
) -> Result<Enqueued, StoreError> {
    let inserted = sqlx::query(sql::sqlite::ENQUEUE)
        .bind(workflow)
        .bind(key)
        .bind(payload)
        .bind(ordering_key)
        // Read to completion: outside a transaction SQLite commits when the statement finishes, and
        // fetch_optional would stop after the RETURNING row and lose a failed commit (disk full)
        // while reporting the intent as stored.
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .next();
    if let Some(row) = inserted {
        return Ok(Enqueued {
            id: row.try_get(0)?,
            created: true,
            state: State::Pending,
        });
    }
    let (id, state): (i64, State) = sqlx::query_as(sql::sqlite::FIND_INTENT)
        .bind(workflow)
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Enqueued {
        id,
        created: false,
        state,
    })
}
