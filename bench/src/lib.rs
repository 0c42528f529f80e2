//! faro-bench: the whole system in one process, on a private `nats-server` and a fresh
//! database, for benchmarks (`src/main.rs`, `schedule`, `scale`) and end-to-end tests
//! (`tests/it`).

pub mod balance;
pub mod chaos;
pub mod e2e;
pub mod failover;
pub mod history;
pub mod scale;
pub mod schedule;
pub mod snmp;
pub mod system;
