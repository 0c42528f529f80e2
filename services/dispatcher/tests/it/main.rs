//! Dispatcher integration tests on a real PostgreSQL database and a private nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod history;
mod outbox;
mod store;
