//! faro's balancer: keeps the worker registry from heartbeats and decides which queue each
//! worker serves, writing the decision to `faro_assignments` with a reason for every change.
//!
//! Modules: `config`, `app` (follow heartbeats and demand, and run the cycles), `state` (what
//! the cycle and the API share, behind one lock), `cycle` (pure: a cycle's inputs from the
//! state, and what its decision writes), `decide` (pure: the decision), `registry` (pure:
//! worker states from heartbeat age), `explain` (pure: why a queue or a pool has its
//! workers), `store` (PostgreSQL), `api` (the CLI's requests), `metrics`.

mod api;
mod app;
pub mod config;
pub mod cycle;
pub mod decide;
pub mod explain;
#[cfg(test)]
mod fixtures;
pub mod metrics;
pub mod registry;
pub mod state;
mod store;

pub use app::run;
pub use config::Config;
