//! # Ferry: a durable delivery engine
//!
//! A business service writes an *export intent* into the `ferry_outbox` table in the same
//! transaction as its own change ([`enqueue`] or plain SQL). A relay claims due rows, delivers
//! each to an external HTTP API as its workflow file says, and records every attempt. Data flows
//! one way:
//!
//! ```text
//!  business tx ──INSERT──▶ ferry_outbox ──claim──▶ relay ──▶ workflow ──▶ delivery ──HTTP──▶ target
//!                               ▲                                              │
//!                               └──────────── outcome (done / retry / dead) ◀──┘
//! ```
//!
//! * [`outbox`]: the persisted state machine, enqueue, and the store per backend (PostgreSQL,
//!   SQLite).
//! * [`relay`]: claiming, leases, wake-ups, concurrency, graceful shutdown.
//!
//! Delivery is at least once: every request carries `Idempotency-Key: <outbox id>`, stable across
//! retries and crashes, and a duplicate can only come from a crash between a delivery and the
//! recording of its outcome.

pub mod outbox;
pub mod relay;

pub use outbox::{enqueue, Enqueued, Store, StoreConfig, StoreError};
