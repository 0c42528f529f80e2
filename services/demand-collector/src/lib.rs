//! faro's demand-collector: asks every demand provider for pending work, turns external names
//! into queues, and publishes one snapshot per queue on `faro.demand.<queue>`.
//!
//! Modules: `config`, `app` (the collection cycle), `providers` (the trait and its sources),
//! `snapshot` (pure: provider answers to snapshots), `store` (PostgreSQL reads), `metrics`.

mod app;
pub mod config;
pub mod metrics;
pub mod providers;
pub mod snapshot;
mod store;

pub use app::run;
pub use config::Config;
