//! Workers, their assignments, demand snapshots, and the balancer's and the registry's
//! events.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::{PoolName, QueueName, WorkerId};
use crate::names::Namespace;

/// A worker's announcement, the value of its key in the `faro_workers` bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub worker_id: WorkerId,
    pub pool: PoolName,
    pub capacity: u32,
    pub kinds: Vec<Kind>,
    pub in_progress: u32,
    /// CPU use in percent, when the worker can read it: of its cgroup's CPU quota when it has
    /// one, else of the whole machine (`load_source.cpu` says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    /// Memory in use in percent: its cgroup's working set of the cgroup's memory limit when it
    /// has one, else the whole machine's (`load_source.mem` says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_percent: Option<f32>,
    /// Where `cpu_percent` and `mem_percent` were read; `host` for both in a beat from a
    /// worker older than this field.
    #[serde(default)]
    pub load_source: LoadSources,
    /// 0 (idle) to 100 (full): the larger of slot use, CPU and memory.
    pub load_score: u8,
    /// `idle` (nothing running), `available` (free slots, taking runs) or `busy` (no free
    /// slot, or load over its limits).
    #[serde(default)]
    pub state: WorkerState,
    /// Why the worker takes no new runs now (CPU or memory over `worker.cpu_max` /
    /// `worker.mem_max`); `None` while it takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_closed: Option<String>,
    /// Runs executed since start, by outcome.
    #[serde(default)]
    pub runs: BTreeMap<String, u64>,
    /// Time between two beats: the balancer counts missed beats at this pace.
    #[serde(default = "default_beat_interval_ms")]
    pub interval_ms: u32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
}

fn default_beat_interval_ms() -> u32 {
    5000
}

/// What a worker is doing, as its heartbeat says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    #[default]
    Idle,
    Available,
    Busy,
}

/// Where a worker read one of its load figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadSource {
    /// The whole machine (`/proc/stat`, `/proc/meminfo`): no cgroup limit applies, or it could
    /// not be read.
    #[default]
    Host,
    /// The worker's cgroup v2 (`cpu.max`/`cpu.stat`, `memory.max`/`memory.current`).
    CgroupV2,
    /// The worker's cgroup v1 (`cpu`/`cpuacct`, `memory` controllers).
    CgroupV1,
}

impl LoadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::CgroupV2 => "cgroup_v2",
            Self::CgroupV1 => "cgroup_v1",
        }
    }
}

impl fmt::Display for LoadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a heartbeat's CPU and memory figures come from, each on its own: a container may
/// limit one and not the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSources {
    #[serde(default)]
    pub cpu: LoadSource,
    #[serde(default)]
    pub mem: LoadSource,
}

/// The hot settings a worker follows, sent with its assignment (the balancer reads them from
/// `system_config` every cycle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// CPU use in percent (of the cgroup quota in a limited container, else of the machine)
    /// above which the worker pulls no new runs.
    pub cpu_max: u8,
    /// Memory use in percent above which the worker pulls no new runs.
    pub mem_max: u8,
    /// The log filter (`log.level`), when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            cpu_max: 80,
            mem_max: 85,
            log_level: None,
        }
    }
}

impl Heartbeat {
    pub fn bucket(ns: &Namespace) -> String {
        ns.workers_bucket()
    }

    pub fn key(&self) -> &str {
        self.worker_id.as_str()
    }
}

/// The queues a worker consumes, the value of its key in the `faro_assignments` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub worker_id: WorkerId,
    pub queues: Vec<QueueName>,
    #[serde(default)]
    pub settings: WorkerSettings,
    pub updated_at: DateTime<Utc>,
}

impl Assignment {
    pub fn bucket(ns: &Namespace) -> String {
        ns.assignments_bucket()
    }
}

/// Pending work of one queue, on `faro.demand.<queue>` (the stream keeps the last per queue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemandSnapshot {
    pub queue: QueueName,
    /// Runs waiting, summed over the providers that answered.
    pub pending: u64,
    /// True when a provider that feeds this queue failed: do not scale in on it.
    pub stale: bool,
    /// Each provider's contribution, by provider name.
    pub sources: BTreeMap<String, u64>,
    pub collected_at: DateTime<Utc>,
}

impl DemandSnapshot {
    pub fn subject(&self, ns: &Namespace) -> String {
        ns.demand_subject(&self.queue)
    }
}

/// A balancer decision: a worker's move, or why a queue got fewer workers than it asks for.
/// Published on `faro.events.balancer` and kept in `balancer_decisions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerEvent {
    pub at: DateTime<Utc>,
    /// The queue the decision is about: the one a worker joins, leaves, or that is held.
    pub queue: Option<QueueName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<QueueName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<QueueName>,
    /// `scale_out`, `scale_in`, `preempted_by Q`, `borrowed_from P`, `returned`, `unfit: ..`,
    /// or `held: ..`.
    pub reason: String,
}

/// A change of a worker's registry state, published on `faro.events.workers` and kept in
/// `worker_events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEvent {
    pub worker: WorkerId,
    /// `joined`, `unstable`, `lost`, `recovered` or `left`.
    pub event: String,
    pub at: DateTime<Utc>,
    /// Beats missed in a row when it happened.
    pub missed: u64,
    /// For `recovered`: the state it came back from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}
