//! The integration tests: one binary, a database of its own per test, on both backends.

mod binary;
mod contract;
mod delivery;
mod delivery_seams;
mod faults;
mod helpers;
mod hostile;
mod newcomer;
mod outbox_core;
mod settings;
mod shutdown;
