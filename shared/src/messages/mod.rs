//! The JSON messages services exchange, each next to the subject or key it travels on:
//! `job` (what is submitted), `run` (a run and its result), `worker` (heartbeats,
//! assignments, demand, events), `dead` (messages set aside) and `api` (each request of the API with its reply).
//!
//! Owns the wire shapes and their validation. It does not decide anything: the dispatcher,
//! worker and balancer own what a message means for them.

mod api;
pub mod dead;
mod job;
pub mod journal;
mod run;
pub mod slots;
mod worker;

pub use api::*;
pub use job::*;
pub use run::*;
pub use worker::*;
