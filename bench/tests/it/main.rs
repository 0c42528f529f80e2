//! End-to-end tests: the four services in one process on real NATS and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod balance;
mod cancel;
mod chains;
mod chaos;
mod cluster;
mod deadlines;
mod definitions;
mod docs;
mod exec;
mod explain;
mod history;
mod kill;
mod leader;
mod limits;
mod load;
mod maintenance;
mod metrics;
mod outcomes;
mod permissions;
mod pipeline;
mod recurring;
mod retries;
mod snmp;
mod submit;
