//! The 1C invoice flow from the directive: an invoice ("Счёт на оплату") is exported only after
//! the order is paid, never twice, and the order's `invoice_exported_to_1c` flag is set only when
//! 1C accepted it (by the workflow's on_done SQL, in the transaction that marks the row done).
//!
//! [`export_invoice`] is what `ferry export-invoice <order_id>` and the reconciliation sweep call:
//! it reads the order through the workflow's `[source]` SQL, refuses an unpaid order with the
//! directive's message, reports an already exported one, and otherwise builds the typed invoice
//! and enqueues it (idempotently: the outbox key is the order id).

use std::str::FromStr;

use rust_decimal::Decimal;

use crate::documents::{DocumentError, OnecCustomer, OnecInvoice, OnecItem};
use crate::outbox::dynamic::{NamedRow, SqlValue};
use crate::outbox::{Enqueued, State, Store, StoreError};
use crate::workflow::WorkflowSummary;

/// Why an export could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("Order status is '{status}', expected 'paid'")]
    NotPaid { status: String },
    #[error("order {0} not found")]
    NotFound(String),
    #[error("workflow {0} has no [source] SQL to read orders with")]
    NoSource(String),
    #[error("order {order}: column {column} {problem} (check the [source] SQL of the workflow)")]
    BadColumn {
        order: String,
        column: String,
        problem: String,
    },
    #[error("order {order} cannot be exported: {cause}")]
    Invalid { order: String, cause: DocumentError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`export_invoice`] did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ExportReport {
    /// The flag was already set: nothing was enqueued.
    AlreadyExported {
        order_id: String,
        invoice_number: String,
        exported_at: Option<String>,
        onec_response: Option<String>,
    },
    /// An outbox row for the order exists now (`created: false` if it existed before).
    Enqueued {
        order_id: String,
        invoice_number: String,
        outbox_id: i64,
        created: bool,
        state: State,
    },
}

/// An order as the `[source]` SQL returns it.
#[derive(Debug, Clone)]
pub struct OrderSnapshot {
    pub status: String,
    pub exported: bool,
    pub exported_at: Option<String>,
    pub onec_response: Option<String>,
    pub invoice: OnecInvoice,
}

fn column(row: &NamedRow, order: &str, name: &str) -> Result<Option<String>, ExportError> {
    match row.get(name) {
        Some(v) => Ok(v.text()),
        None => Err(ExportError::BadColumn {
            order: order.into(),
            column: name.into(),
            problem: "is missing from the result".into(),
        }),
    }
}

fn required(row: &NamedRow, order: &str, name: &str) -> Result<String, ExportError> {
    column(row, order, name)?.ok_or_else(|| ExportError::BadColumn {
        order: order.into(),
        column: name.into(),
        problem: "is NULL".into(),
    })
}

fn decimal(row: &NamedRow, order: &str, name: &str) -> Result<Decimal, ExportError> {
    let text = required(row, order, name)?;
    Decimal::from_str(text.trim())
        .or_else(|_| Decimal::from_scientific(text.trim()))
        .map(|d| d.normalize())
        .map_err(|_| ExportError::BadColumn {
            order: order.into(),
            column: name.into(),
            problem: format!("is not a number: '{text}'"),
        })
}

/// Read an order and build its invoice through the workflow's `[source]` SQL.
///
/// # Errors
/// [`ExportError::NotFound`], [`ExportError::BadColumn`], or database errors.
pub async fn read_order(
    store: &Store,
    wf: impl Into<WorkflowSummary>,
    order_id: &str,
) -> Result<OrderSnapshot, ExportError> {
    let wf: WorkflowSummary = wf.into();
    let source = wf
        .source
        .as_ref()
        .ok_or_else(|| ExportError::NoSource(wf.name.clone()))?;
    let key = [("key", SqlValue::Text(order_id.to_string()))];
    let rows = store.fetch_named(&source.order_sql, &key).await?;
    let Some(o) = rows.first() else {
        return Err(ExportError::NotFound(order_id.to_string()));
    };
    let items = store.fetch_named(&source.items_sql, &key).await?;
    let mut lines = Vec::with_capacity(items.len());
    for it in &items {
        let quantity = decimal(it, order_id, "quantity")?;
        let price = decimal(it, order_id, "price")?;
        lines.push(OnecItem {
            articul: required(it, order_id, "articul")?,
            name: required(it, order_id, "name")?,
            quantity,
            price,
            total: (quantity * price).normalize(),
        });
    }
    let delivery_cost = decimal(o, order_id, "delivery_cost")?;
    let total = (lines.iter().map(|l| l.total).sum::<Decimal>() + delivery_cost).normalize();
    let invoice = OnecInvoice {
        invoice_number: required(o, order_id, "invoice_number")?,
        date: required(o, order_id, "invoice_date")?,
        customer: OnecCustomer {
            name: required(o, order_id, "customer_name")?,
            phone: column(o, order_id, "customer_phone")?.unwrap_or_default(),
            address: column(o, order_id, "customer_address")?.unwrap_or_default(),
        },
        items: lines,
        delivery_cost,
        total,
    };
    Ok(OrderSnapshot {
        status: required(o, order_id, "status")?,
        exported: o.get("exported").map(SqlValue::truthy).unwrap_or(false),
        exported_at: column(o, order_id, "exported_at")?,
        onec_response: column(o, order_id, "onec_response")?,
        invoice,
    })
}

/// Export one order's invoice: check it is paid and not yet exported, validate the document, and
/// enqueue it under the order id.
///
/// # Errors
/// [`ExportError::NotPaid`] with the directive's text `Order status is '<status>', expected
/// 'paid'`, [`ExportError::NotFound`], [`ExportError::Invalid`] naming the field, or database
/// errors.
pub async fn export_invoice(
    store: &Store,
    wf: impl Into<WorkflowSummary>,
    order_id: &str,
) -> Result<ExportReport, ExportError> {
    let wf: WorkflowSummary = wf.into();
    let order = read_order(store, wf.clone(), order_id).await?;
    if order.exported {
        return Ok(ExportReport::AlreadyExported {
            order_id: order_id.to_string(),
            invoice_number: order.invoice.invoice_number,
            exported_at: order.exported_at,
            onec_response: order.onec_response,
        });
    }
    if order.status != "paid" {
        return Err(ExportError::NotPaid {
            status: order.status,
        });
    }
    let payload = serde_json::to_value(&order.invoice).map_err(|e| {
        StoreError::InvalidIntent(format!(
            "invoice of order {order_id} does not serialize: {e}"
        ))
    })?;
    wf.document
        .validate(&payload)
        .map_err(|cause| ExportError::Invalid {
            order: order_id.to_string(),
            cause,
        })?;
    let Enqueued { id, created, state } = store.enqueue(&wf.name, order_id, &payload).await?;
    Ok(ExportReport::Enqueued {
        order_id: order_id.to_string(),
        invoice_number: order.invoice.invoice_number,
        outbox_id: id,
        created,
        state,
    })
}
