//! Test fixtures shared by the integration tests and the `ferry demo` command.
//!
//! The centrepiece is [`TargetServer`], a scriptable HTTP/1.1 server bound to
//! `127.0.0.1:0` that stands in for 1C and partner APIs. It is hand-written on
//! top of `tokio::net::TcpListener` rather than hyper/axum on purpose: the
//! delivery engine has to be exercised against failures that a well-behaved
//! HTTP stack refuses to produce — connection resets before or in the middle
//! of a response, bytes that are not HTTP at all, and peers that never answer.
//!
//! A short tour:
//!
//! ```no_run
//! # async fn tour() -> std::io::Result<()> {
//! use std::time::Duration;
//! use ferry::testkit::{Reply, TargetServer};
//!
//! let target = TargetServer::start().await?;
//! // First two deliveries to /orders fail, then the default (200) applies.
//! target.push_replies("/orders", [Reply::status(503), Reply::Reset]);
//! // Replaying an idempotency key yields 409, as a strict partner would do.
//! target.set_responder(|_req, nth| (nth > 1).then(|| Reply::status(409)));
//! // ... point the engine at target.base_url() ...
//! assert!(target.wait_for_requests(3, Duration::from_secs(5)).await);
//! assert!(target.duplicate_keys().is_empty());
//! target.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod target;

pub use target::{ReceivedRequest, Reply, TargetServer, MAX_BODY_BYTES, MAX_HEAD_BYTES};
