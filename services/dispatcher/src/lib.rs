//! faro's dispatcher: turns submissions into runs, publishes them to their queues, and records
//! every outcome in PostgreSQL.
//!
//! One rule: each task owns its state behind a channel (the scheduler its timetable, the
//! publisher its queue of admitted runs, the slot lease writer its slot changes), or the state
//! is in `state` behind a lock whose kind is justified there.
//!
//! The service: `app` (stand by, lead, stand by again), `state` (what the tasks share),
//! `leader` (the leader lease), `config` (settings), `metrics`. Its tasks, one module each:
//! `intake` (submissions to runs), `publisher` (admission to the queues), `scheduler` (slots
//! of recurring jobs), `retries` (retries due), `results` (the completer: results recorded as
//! the pure `results::plan` decides), `deadlines` (attempts with no result in time; its
//! `RunDeadline` is the one place a deadline is computed), `settings` (hot settings reloaded),
//! `slot_leases` (target slots in KV), `history` (days of run history made ahead and dropped
//! past retention), `api` (one function per verb).
//! Pure decisions: `plan` (a submission's runs), `admission` (target and queue slots),
//! `timetable` (which recurring slot fires next), `schedule` (slot arithmetic), `retry`
//! (retry policy), `chains` (children of a finished parent), `explain` (why a run waits),
//! `history::plan` (days to make and drop).
//! At the edges: `store` (PostgreSQL, one module per table family; it executes plans),
//! `catalog` (targets and jobs as operators define them), `bus` (NATS publishing), `values`
//! (SNMP values of a result).

pub mod admission;
mod api;
mod app;
mod bus;
pub mod catalog;
pub mod chains;
pub mod config;
mod dead_letters;
pub mod deadlines;
pub mod explain;
#[cfg(test)]
mod fixtures;
pub mod history;
mod intake;
pub mod leader;
pub mod metrics;
mod outcomes;
pub mod plan;
mod publisher;
mod results;
mod retries;
pub mod retry;
pub mod schedule;
mod scheduler;
mod settings;
pub mod slot_leases;
mod state;
pub mod store;
pub mod timetable;
pub mod values;

pub use app::run;
pub use config::Config;
