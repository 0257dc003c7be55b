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

use super::{State, StoreError};

/// Largest payload accepted, in bytes of JSON text. Documents are invoices, not attachments; a
/// bigger one is almost certainly a bug upstream and would bloat every claim.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// What [`enqueue`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// `false` when a row for `(workflow, key)` already existed; it is returned unchanged.
    pub created: bool,
    pub state: State,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection (or transaction, via `&mut *tx`) that can take an outbox row.
pub trait EnqueueConn<'c>: Send {
    #[doc(hidden)]
    fn insert_intent(
        self,
        workflow: &'c str,
        key: &'c str,
        payload: String,
    ) -> BoxFut<'c, Result<Enqueued, StoreError>>;
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
    check_names(workflow, key)?;
    let text = serde_json::to_string(payload)
        .map_err(|e| StoreError::InvalidIntent(format!("payload is not JSON-serializable: {e}")))?;
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(StoreError::InvalidIntent(format!(
            "payload of {workflow}/{key} is {} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
            text.len()
        )));
    }
    conn.insert_intent(workflow, key, text).await
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

fn parse_state(s: &str) -> Result<State, StoreError> {
    s.parse()
        .map_err(|e: super::state::UnknownState| StoreError::InvalidIntent(e.to_string()))
}

impl<'c> EnqueueConn<'c> for &'c mut PgConnection {
    fn insert_intent(
        self,
        workflow: &'c str,
        key: &'c str,
        payload: String,
    ) -> BoxFut<'c, Result<Enqueued, StoreError>> {
        Box::pin(async move {
            // ON CONFLICT DO NOTHING waits for a concurrent uncommitted insert of the same key and
            // then yields nothing; the SELECT below then sees the committed row.
            let inserted = sqlx::query(
                "INSERT INTO ferry_outbox (workflow, key, payload) VALUES ($1, $2, $3::jsonb) \
                 ON CONFLICT (workflow, key) DO NOTHING RETURNING id",
            )
            .bind(workflow)
            .bind(key)
            .bind(&payload)
            .fetch_optional(&mut *self)
            .await?;
            if let Some(row) = inserted {
                return Ok(Enqueued {
                    id: row.try_get(0)?,
                    created: true,
                    state: State::Pending,
                });
            }
            let row =
                sqlx::query("SELECT id, state FROM ferry_outbox WHERE workflow = $1 AND key = $2")
                    .bind(workflow)
                    .bind(key)
                    .fetch_one(&mut *self)
                    .await?;
            Ok(Enqueued {
                id: row.try_get(0)?,
                created: false,
                state: parse_state(row.try_get(1)?)?,
            })
        })
    }
}

impl<'c> EnqueueConn<'c> for &'c mut SqliteConnection {
    fn insert_intent(
        self,
        workflow: &'c str,
        key: &'c str,
        payload: String,
    ) -> BoxFut<'c, Result<Enqueued, StoreError>> {
        Box::pin(async move {
            let inserted = sqlx::query(
                "INSERT INTO ferry_outbox (workflow, key, payload) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (workflow, key) DO NOTHING RETURNING id",
            )
            .bind(workflow)
            .bind(key)
            .bind(&payload)
            .fetch_optional(&mut *self)
            .await?;
            if let Some(row) = inserted {
                return Ok(Enqueued {
                    id: row.try_get(0)?,
                    created: true,
                    state: State::Pending,
                });
            }
            let row =
                sqlx::query("SELECT id, state FROM ferry_outbox WHERE workflow = ?1 AND key = ?2")
                    .bind(workflow)
                    .bind(key)
                    .fetch_one(&mut *self)
                    .await?;
            Ok(Enqueued {
                id: row.try_get(0)?,
                created: false,
                state: parse_state(row.try_get(1)?)?,
            })
        })
    }
}
