//! faro-shared: everything that crosses a service boundary.
//!
//! Message types and their subjects (`messages`, `names`), the request/reply API (`api`), validated names (`domain`), the JSON
//! job format (`jobfile`), targets as operators write them (`targetfile`), SNMP params and values (`snmp`), configuration from `FARO_*` variables (`config`), logs (`telemetry`),
//! `/metrics` and `/health` (`http`), the process metrics (`process`), NATS and PostgreSQL setup (`nats`, `pg`), expiring KV leases (`lease`),
//! shutdown (`shutdown`), one start-up for every service and the event publisher (`service`),
//! and behind the `test-util` feature the test harness (`testing`).
//! Decisions belong to the services, not here.

pub mod api;
pub mod config;
pub mod domain;
pub mod follow;
pub mod http;
pub mod jobfile;
pub mod lease;
pub mod messages;
pub mod names;
pub mod nats;
pub mod pg;
pub mod process;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod snmp;
pub mod targetfile;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod testing;

pub use config::{CommonConfig, Env};
pub use names::Namespace;

/// The version every service reports in heartbeats and logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
