//! faro's dispatcher: turns submissions into runs, publishes them to their queues, and records
//! every outcome in PostgreSQL.
//!
//! Modules: `config` (settings), `app` (the service's loops), `plan` (pure: submission to runs),
//! `store` (PostgreSQL), `bus` (NATS publishing), `metrics`. Scheduling of recurring jobs,
//! admission, retries and chains build on these.

pub mod admission;
mod app;
mod bus;
pub mod catalog;
pub mod chains;
pub mod config;
pub mod deadlines;
pub mod explain;
#[cfg(test)]
mod fixtures;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod retry;
pub mod schedule;
pub mod scheduler;
pub mod slot_leases;
pub mod store;
pub mod values;

pub use app::run;
pub use config::Config;
