//! faro's balancer: keeps the worker registry from heartbeats and decides which queues each
//! worker consumes, writing the decision to `faro_assignments`.
//!
//! Modules: `config`, `app` (the cycle: fetch, decide, write), `assign` (pure: the decision),
//! `store` (PostgreSQL: queues and the registry), `metrics`.

mod app;
pub mod assign;
pub mod config;
mod metrics;
mod store;

pub use app::run;
pub use config::Config;
