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
//! Front doors (the `ferry` binary's [`cli`], the demo, the [`console`]) call the [`service`] layer:
//! it builds and runs the engine once for everyone ([`service::Engine`], [`service::run_daemon`])
//! and holds the typed operator actions ([`service::Operator`]). Imports point inward only:
//! `cli`/`demo`/`console` → `service` → `relay`/`delivery` → `outbox`/`workflow`/`documents`.
//!
//! * [`service`]: the engine builder and the operator actions.
//! * [`outbox`]: the persisted state machine, enqueue, and the store: a façade over a written
//!   backend contract ([`outbox::OutboxBackend`]) implemented for PostgreSQL and SQLite, with
//!   each backend's SQL in files of its own ([`outbox::sql`]).
//! * [`relay`]: claiming, leases, wake-ups, concurrency, graceful shutdown.
//! * [`delivery`]: a delivery in stages (prepare → admit → authenticate → send → judge →
//!   conclude), with an authenticator per target and a response rule per workflow as seams;
//!   outcome classification in one place; circuit breaker.
//! * [`workflow`]: the workflow files (`workflows/*.toml`): one set of serde structs, validated
//!   into types that cannot be invalid; retry policies.
//! * [`documents`]: typed documents and their validation (1C invoice, phiếu nhập/xuất, hóa đơn).
//! * [`export`]: the 1C invoice flow (paid orders only, never twice, flag set on success).
//! * [`ops`]: metrics, the health/metrics HTTP endpoints, logging; [`cron`]: periodic jobs.
//! * [`console`]: the operator console, a web page and a JSON API on [`service::Operator`].
//! * [`config`]: settings in layers (defaults, file, environment, flags), validated.
//! * [`cli`]: parsing and rendering; [`text`]: plain-text helpers shared by the front doors.
//! * `testkit` and `demo` (cargo feature `demo`, on by default): a scriptable HTTP/1.1 target on
//!   loopback, used by the tests and the demo; the zero-configuration demo.
//!
//! Delivery is at least once: every request carries `Idempotency-Key: <outbox id>`, stable across
//! retries and crashes, and a duplicate can only come from a crash between a delivery and the
//! recording of its outcome.

pub mod cli;
pub mod config;
pub mod console;
pub mod cron;
pub mod delivery;
#[cfg(feature = "demo")]
pub mod demo;
pub mod documents;
pub mod export;
pub mod ops;
pub mod outbox;
pub mod relay;
pub mod service;
#[cfg(feature = "demo")]
pub mod testkit;
pub mod text;
pub mod workflow;

pub use outbox::{
    enqueue, enqueue_many, enqueue_many_ordered, enqueue_ordered, enqueue_with, EnqueueOptions,
    Enqueued, Store, StoreConfig, StoreError,
};
