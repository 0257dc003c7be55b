//! The integration tests: one binary, a database of its own per test, on both backends.

mod binary;
mod cli_polish;
mod console;
mod contract;
mod delivery;
mod delivery_seams;
mod deploy_kit;
mod enqueue_function;
mod faults;
mod helpers;
mod hostile;
mod newcomer;
mod order;
mod outbox_core;
mod settings;
mod shutdown;
mod traceparent;
mod workflow_schema;
