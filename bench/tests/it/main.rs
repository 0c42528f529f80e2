//! End-to-end tests: the four services in one process on real NATS and PostgreSQL.

mod bad_input;
mod pipeline;
