//! faro's balancer: keeps the worker registry from heartbeats and decides which queue each
//! worker serves, writing the decision to `faro_assignments` with a reason for every change.
//!
//! Modules: `config`, `app` (the cycle: follow, decide, write), `decide` (pure: the decision),
//! `registry` (pure: worker states from heartbeat age), `store` (PostgreSQL), `api` (the CLI's
//! requests), `metrics`.

mod api;
mod app;
pub mod config;
pub mod decide;
pub mod metrics;
pub mod registry;
mod store;

pub use app::run;
pub use config::Config;
