//! faro's worker: heartbeats into `faro_workers`, follows its assignment in `faro_assignments`,
//! pulls runs from the durable consumer of each assigned queue (never more than its free
//! slots), executes them, publishes each result and only then acknowledges the run.
//!
//! Modules: `config`, `app` (heartbeat, assignment, pull and cancel loops), `execute` (one
//! run), `hold` (when a worker must let go of a run), `journal` (its record of executions), `cancel` (cancels asked for by the dispatcher),
//! `sim` (pure: the simulated kind's draw), `snmp` (`snmp.get`, `snmp.walk`), `exec` (allow-listed programs), `reach` (pure: which agents answer), `load` (pure: CPU, memory, admission by load), `cgroup` (pure: the process's cgroup and
//! its CPU and memory files), `sampler` (reads the load from the cgroup or the machine), `metrics`.

// async-snmp's futures nest deeply inside a run's future.
#![recursion_limit = "256"]

mod app;
mod cancel;
mod cgroup;
pub mod config;
pub mod exec;
mod execute;
pub mod hold;
mod journal;
mod load;
pub mod metrics;
pub mod reach;
mod sampler;
pub mod sim;
pub mod snmp;

pub use app::run;
pub use config::Config;
