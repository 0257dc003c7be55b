//! The integration tests: one binary, a database of its own per test, on both backends.

mod binary;
mod console;
mod delivery;
mod faults;
mod helpers;
mod hostile;
mod newcomer;
mod outbox_core;
mod schema_guards;
mod settings;
mod shutdown;
