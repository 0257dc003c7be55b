//! The integration tests: one binary, a database of its own per test, on both backends.

mod binary;
mod delivery;
mod helpers;
mod outbox_core;
