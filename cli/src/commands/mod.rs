//! The commands, one module each; each has a `run` that `main` calls with its arguments.

pub mod cancel;
pub mod config;
pub mod dead_letters;
pub mod explain;
pub mod ingest;
pub mod job;
pub mod mapping;
pub mod migrate;
pub mod queues;
pub mod run;
pub mod setup;
pub mod status;
pub mod submit;
pub mod target;
pub mod validate;
pub mod workers;
