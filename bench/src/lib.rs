//! faro-bench: the whole system in one process, on a private `nats-server` and a fresh
//! database, for benchmarks (`src/main.rs`) and end-to-end tests (`tests/it`).

pub mod system;
