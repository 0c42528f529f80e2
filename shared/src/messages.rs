//! The JSON messages services exchange, each next to the subject or key it travels on.
//!
//! Owns the wire shapes and their validation. It does not decide anything: the dispatcher,
//! worker and balancer own what a message means for them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    JobId, MaxAttempts, Outcome, PoolName, Priority, QueueName, Retryable, TargetId, WorkerId,
};
use crate::names::Namespace;
use crate::snmp::{Device, SnmpGetParams, SnmpSummary, SnmpWalkParams};

/// What executes a run on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "sim")]
    Sim,
    #[serde(rename = "snmp.get")]
    SnmpGet,
    #[serde(rename = "snmp.walk")]
    SnmpWalk,
    #[serde(rename = "exec")]
    Exec,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Sim, Kind::SnmpGet, Kind::SnmpWalk, Kind::Exec];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sim => "sim",
            Kind::SnmpGet => "snmp.get",
            Kind::SnmpWalk => "snmp.walk",
            Kind::Exec => "exec",
        }
    }

    /// Kinds that act on a device and so need a target.
    pub fn needs_target(self) -> bool {
        matches!(self, Kind::SnmpGet | Kind::SnmpWalk)
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown kind {s:?}; expected one of sim, snmp.get, snmp.walk, exec")
            })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind with its parameters, as `"kind": ..., "params": {...}` on the wire.
///
/// Only the kinds a worker can execute today are variants; a job of another kind is refused
/// at submission with the list of accepted kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "params")]
pub enum Task {
    #[serde(rename = "sim")]
    Sim(SimParams),
    #[serde(rename = "snmp.get")]
    SnmpGet(SnmpGetParams),
    #[serde(rename = "snmp.walk")]
    SnmpWalk(SnmpWalkParams),
    #[serde(rename = "exec")]
    Exec(ExecParams),
}

/// `exec`: a command of the worker's allow-list, by name, with its named parameters (each
/// becomes one argument where the allow-list's template says; see the worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    pub command: String,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

impl Task {
    pub fn kind(&self) -> Kind {
        match self {
            Task::Sim(_) => Kind::Sim,
            Task::SnmpGet(_) => Kind::SnmpGet,
            Task::SnmpWalk(_) => Kind::SnmpWalk,
            Task::Exec(_) => Kind::Exec,
        }
    }
}

/// A simulated run: it sleeps for a random time in `duration_ms` and ends with an outcome
/// drawn by `outcomes`. With a `seed`, the draw depends only on (seed, job, attempt), so a test
/// knows every outcome in advance whichever worker runs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimParams {
    #[serde(default)]
    pub duration_ms: DurationRange,
    #[serde(default)]
    pub outcomes: OutcomeShares,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// The longest simulated run: one day.
pub const MAX_SIM_DURATION_MS: u64 = 24 * 3600 * 1000;

/// An inclusive range of milliseconds, written `[min, max]` or a single number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DurationInput", into = "[u64; 2]")]
pub struct DurationRange {
    pub min: u64,
    pub max: u64,
}

impl Default for DurationRange {
    fn default() -> Self {
        Self {
            min: 500,
            max: 2000,
        }
    }
}

impl From<DurationRange> for [u64; 2] {
    fn from(value: DurationRange) -> Self {
        [value.min, value.max]
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationInput {
    One(u64),
    Range([u64; 2]),
}

impl TryFrom<DurationInput> for DurationRange {
    type Error = String;
    fn try_from(value: DurationInput) -> Result<Self, Self::Error> {
        let (min, max) = match value {
            DurationInput::One(ms) => (ms, ms),
            DurationInput::Range([min, max]) => (min, max),
        };
        if min > max {
            return Err(format!(
                "duration_ms [{min}, {max}] has min above max; expected [min, max] with min <= max"
            ));
        }
        if max > MAX_SIM_DURATION_MS {
            return Err(format!(
                "duration_ms max {max} is above the limit of {MAX_SIM_DURATION_MS} ms"
            ));
        }
        Ok(Self { min, max })
    }
}

/// Relative weights of the outcomes of a simulated run; the seeds' default is 80/15/5.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SharesInput")]
pub struct OutcomeShares {
    pub succeeded: f64,
    pub failed: f64,
    pub interrupted: f64,
}

impl Default for OutcomeShares {
    fn default() -> Self {
        Self {
            succeeded: 0.80,
            failed: 0.15,
            interrupted: 0.05,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SharesInput {
    #[serde(default)]
    succeeded: f64,
    #[serde(default)]
    failed: f64,
    #[serde(default)]
    interrupted: f64,
}

impl TryFrom<SharesInput> for OutcomeShares {
    type Error = String;
    fn try_from(v: SharesInput) -> Result<Self, Self::Error> {
        let shares = [v.succeeded, v.failed, v.interrupted];
        if shares.iter().any(|s| !s.is_finite() || *s < 0.0) {
            return Err("outcomes weights must be finite numbers >= 0".to_owned());
        }
        if shares.iter().sum::<f64>() <= 0.0 {
            return Err("outcomes weights add up to 0; expected at least one above 0".to_owned());
        }
        Ok(Self {
            succeeded: v.succeeded,
            failed: v.failed,
            interrupted: v.interrupted,
        })
    }
}

/// One job of a submission, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<JobId>,
    pub queue: QueueName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetId>,
    #[serde(flatten)]
    pub task: Task,
    pub priority: Priority,
    /// Attempts in all, the first included.
    pub max_attempts: MaxAttempts,
    /// Outcomes after which another attempt is made (while attempts remain).
    pub retry_on: Vec<Retryable>,
    /// Set for a recurring job: it runs once per interval instead of once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// Set for a chained job: it runs after each run of this job ends, per `run_if`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<JobId>,
    #[serde(skip_serializing_if = "RunIf::is_default")]
    pub run_if: RunIf,
    /// How long one attempt may take (default: the dispatcher's `FARO_RUN_TIMEOUT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Interval>,
    /// For a recurring job: what a slot does while the previous run is still going.
    #[serde(skip_serializing_if = "Overlap::is_default")]
    pub overlap: Overlap,
}

/// What a recurring job's slot does while the job's previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The slot is skipped and the skip recorded (the default).
    #[default]
    Skip,
    /// The first such slot waits and runs when the previous run ends; further ones are
    /// skipped while it waits.
    QueueOne,
}

impl Overlap {
    pub fn is_default(&self) -> bool {
        *self == Overlap::Skip
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::QueueOne => "queue_one",
        }
    }
}

/// When a chained job runs after its parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunIf {
    /// Only after the parent succeeded (the default); otherwise it is recorded as skipped.
    #[default]
    Success,
    /// After every end of the parent.
    Always,
}

impl RunIf {
    pub fn is_default(&self) -> bool {
        *self == RunIf::Success
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunIf::Success => "success",
            RunIf::Always => "always",
        }
    }
}

/// The period of a recurring job: `"30s"`, `"5m"`, or a number of seconds; 100 ms to 1 day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "IntervalInput", into = "String")]
pub struct Interval(std::time::Duration);

impl Interval {
    pub const MIN: std::time::Duration = std::time::Duration::from_millis(100);
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(86_400);

    pub fn new(value: std::time::Duration) -> Result<Self, String> {
        if (Self::MIN..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!(
                "interval {value:?} is not accepted; expected 100ms to 1 day, such as \"30s\" or \"5m\""
            ))
        }
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<Interval> for String {
    fn from(value: Interval) -> String {
        format!("{}ms", value.0.as_millis())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntervalInput {
    Seconds(f64),
    Text(String),
}

impl TryFrom<IntervalInput> for Interval {
    type Error = String;
    fn try_from(value: IntervalInput) -> Result<Self, Self::Error> {
        let duration = match value {
            IntervalInput::Seconds(s) if s.is_finite() && s >= 0.0 => {
                std::time::Duration::from_secs_f64(s)
            }
            IntervalInput::Seconds(s) => return Err(format!("interval {s} is not a duration")),
            IntervalInput::Text(text) => crate::config::parse_duration(&text).ok_or_else(|| {
                format!("interval {text:?} is not a duration; expected such as \"30s\" or \"5m\"")
            })?,
        };
        Interval::new(duration)
    }
}

/// A batch of jobs: the JSON job format, the body of a `faro.submit` message and of a batch
/// file. Parse it with [`crate::jobfile::parse`], which names the job and field of any error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submission {
    pub jobs: Vec<JobSpec>,
    /// When the submitter sent it; measures end-to-end latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
}

impl Submission {
    pub fn subject(ns: &Namespace) -> String {
        ns.submit_subject()
    }
}

/// A run to execute, on `faro.jobs.<queue>.<target>`; its `Nats-Msg-Id` is the run id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMessage {
    pub run_id: Uuid,
    /// 1 for the first attempt; a result must echo it (fencing).
    pub attempt: u32,
    pub job_id: JobId,
    pub queue: QueueName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetId>,
    pub priority: Priority,
    #[serde(flatten)]
    pub task: Task,
    /// How long the run may take; past it (and a grace) the dispatcher records it timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The target's address and credentials, attached by the dispatcher when it publishes a
    /// run of a kind that acts on a device (`None` when the target is not defined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// Set by the dispatcher in SNMP test mode (`snmp.test_mode`): the worker simulates the
    /// run instead of polling the device, and marks its result `simulated`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub simulate: bool,
}

impl RunMessage {
    pub fn subject(&self, ns: &Namespace) -> String {
        ns.job_subject(&self.queue, self.target.as_ref())
    }

    /// The `Nats-Msg-Id` that deduplicates republishing of the same attempt.
    pub fn msg_id(&self) -> String {
        format!("{}:{}", self.run_id, self.attempt)
    }
}

/// What a run produced, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunOutput {
    Sim {
        duration_ms: u64,
    },
    /// The values went in `ValuesChunk`s; this counts them.
    Snmp(SnmpSummary),
    /// An allowed program's exit code (`None` when killed) and its output, each cut at 64 KiB.
    Exec {
        exit_code: Option<i32>,
        stdout: String,
        stderr: String,
        truncated: bool,
    },
}

/// The outcome of one attempt, on `faro.results.<queue>.<target>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run_id: Uuid,
    pub attempt: u32,
    pub job_id: JobId,
    pub queue: QueueName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetId>,
    pub worker_id: WorkerId,
    pub outcome: Outcome,
    /// True when nothing real was touched (the `sim` kind, or test mode).
    pub simulated: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<RunOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunResult {
    pub fn subject(&self, ns: &Namespace) -> String {
        ns.result_subject(&self.queue, self.target.as_ref())
    }
}

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

/// One worker in the reply of `faro.api.balancer.workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    pub id: WorkerId,
    pub pool: Option<PoolName>,
    /// `active`, `unstable`, `lost` or `left`.
    pub state: String,
    pub queues: Vec<QueueName>,
    pub kinds: Vec<Kind>,
    pub capacity: u32,
    pub in_progress: u32,
    pub load_score: u8,
    pub cpu_percent: Option<f32>,
    pub mem_percent: Option<f32>,
    /// Why it takes no new runs, when it does not.
    pub admission_closed: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Since the worker process started.
    pub uptime_secs: Option<u64>,
    pub beats_received: u64,
    pub beats_missed: u64,
}

/// The reply of `faro.api.balancer.workers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkersReply {
    pub workers: Vec<WorkerRow>,
}

/// One queue in the reply of `faro.api.balancer.queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRow {
    pub name: QueueName,
    pub priority: u8,
    pub min_workers: u32,
    pub max_workers: Option<u32>,
    pub home_pools: Vec<PoolName>,
    /// Runs waiting or running, from the latest demand snapshot.
    pub pending: u64,
    /// Set when its demand is stale: since when (`None` inside: no snapshot yet).
    pub stale: bool,
    pub workers: u32,
    /// Slots of its workers.
    pub capacity: u64,
    /// Why it has fewer workers than it asks for.
    pub hold: Option<String>,
    /// Its home pools that are cooling, with the end of their cooling.
    pub cooling: BTreeMap<String, DateTime<Utc>>,
}

/// The reply of `faro.api.balancer.queues`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuesReply {
    pub queues: Vec<QueueRow>,
}

/// The request of `faro.api.balancer.explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceExplainRequest {
    Queue(QueueName),
    Pool(PoolName),
}

/// The reply of `faro.api.balancer.explain`: the facts that decide, and the latest decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceExplainReply {
    pub facts: Vec<String>,
    /// The latest decisions about it, the newest first.
    pub decisions: Vec<BalancerEvent>,
}

/// The request of `faro.api.balancer.mapping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum MappingRequest {
    Add { name: String, queue: QueueName },
    Remove { name: String },
    List,
}

/// One mapping of an external demand name to a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub name: String,
    pub queue: QueueName,
}

/// The reply of `faro.api.balancer.mapping`: every mapping after the change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingReply {
    pub mappings: Vec<Mapping>,
    /// For a removal: whether the name was mapped.
    #[serde(default)]
    pub removed: bool,
}

/// The reply of `faro.api.dispatcher.status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Run counts by status name.
    pub runs: BTreeMap<String, i64>,
    /// Queue name to runs not yet terminal.
    pub queues: BTreeMap<String, i64>,
    /// Runs not yet published: waiting for a slot of their target, or for a retry's backoff.
    #[serde(default)]
    pub waiting: i64,
}

/// The request of `faro.api.dispatcher.submission`: how far these submissions are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionQuery {
    pub submission_ids: Vec<String>,
}

/// The reply of `faro.api.dispatcher.submission`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionProgress {
    /// Run counts by status name, over the submissions asked for.
    pub runs: BTreeMap<String, i64>,
    /// Submissions the dispatcher has recorded, of those asked for.
    pub recorded: usize,
}

impl SubmissionProgress {
    pub fn total(&self) -> i64 {
        self.runs.values().sum()
    }

    /// Runs that reached a terminal status.
    pub fn finished(&self) -> i64 {
        self.runs
            .iter()
            .filter(|(status, _)| {
                status
                    .parse::<crate::domain::RunStatus>()
                    .is_ok_and(|s| s.is_terminal())
            })
            .map(|(_, count)| count)
            .sum()
    }
}

/// The request of `faro.api.dispatcher.cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub run_id: Uuid,
}

/// Where a run was when it was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelState {
    /// It waited (for a slot, a queue, maintenance or a retry's backoff): cancelled at once.
    Waiting,
    /// It was published and no worker had started it: cancelled at once; a worker that pulls
    /// it later skips it.
    Queued,
    /// A worker was executing it: the worker stops it and reports it cancelled.
    Running,
    /// It had already ended; nothing changed.
    Ended,
}

/// The reply of `faro.api.dispatcher.cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    pub run_id: Uuid,
    pub state: CancelState,
    /// The run's status after the request (`cancelled`, or how it had ended; `dispatched`
    /// while a worker stops it).
    pub status: String,
    /// The worker executing it, when `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
}

/// The broadcast on `faro.api.worker.cancel`: every worker stops this attempt if it executes
/// it, and skips it if it pulls it later. A worker executing it replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCancel {
    pub run_id: Uuid,
    pub attempt: u32,
}

/// A worker's reply to [`WorkerCancel`]: it was executing the run and is stopping it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCancelReply {
    pub worker_id: WorkerId,
}

/// The request of `faro.api.dispatcher.explain`: one run or one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainRequest {
    Run(Uuid),
    Job(String),
}

/// The reply of `faro.api.dispatcher.explain`: sentences, most important last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainReply {
    pub lines: Vec<String>,
}

/// The request of `faro.api.dispatcher.targets`: define, switch or list targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TargetRequest {
    /// Adds the targets or replaces those with the same id (`faro target add|import`).
    Put {
        targets: Vec<crate::targetfile::TargetSpec>,
    },
    /// `faro target enable|disable`.
    SetEnabled {
        id: TargetId,
        enabled: bool,
    },
    List,
}

/// A target as listed: no secrets, with its slots in use now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    pub id: TargetId,
    pub name: String,
    pub address: Option<String>,
    /// Credentials with every community and password hidden.
    pub snmp: serde_json::Value,
    /// Its own limit; `None` for the system default.
    pub max_concurrency: Option<u32>,
    /// The limit in force (its own or the default).
    pub limit: u32,
    pub enabled: bool,
    pub in_flight: usize,
    pub waiting: usize,
}

/// The reply of `faro.api.dispatcher.targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetReply {
    /// Targets added, replaced or switched.
    pub changed: usize,
    #[serde(default)]
    pub targets: Vec<TargetView>,
}

/// The request of `faro.api.dispatcher.jobs`: list or switch job definitions (adding one is a
/// submission on `faro.submit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum JobRequest {
    List {
        #[serde(default)]
        queue: Option<QueueName>,
        #[serde(default)]
        target: Option<TargetId>,
        /// Most jobs listed, ordered by id.
        limit: u32,
        /// One-shot jobs too, not only definitions (recurring and chained).
        #[serde(default)]
        all: bool,
    },
    /// `faro job enable|disable`.
    SetEnabled { id: JobId, enabled: bool },
}

/// A job definition as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub queue: QueueName,
    pub kind: String,
    pub target: Option<TargetId>,
    pub interval_ms: Option<u64>,
    pub after: Option<JobId>,
    pub enabled: bool,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
}

/// The reply of `faro.api.dispatcher.jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReply {
    pub changed: usize,
    #[serde(default)]
    pub jobs: Vec<JobView>,
    /// Jobs matching the filter, listed or not.
    pub total: u64,
}

/// The body of an API reply that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_message_round_trips_with_kind_and_params() {
        let run = RunMessage {
            run_id: Uuid::now_v7(),
            attempt: 1,
            job_id: JobId::parse("j1").unwrap(),
            queue: QueueName::parse("q").unwrap(),
            target: Some(TargetId::parse("olt1").unwrap()),
            priority: Priority::default(),
            task: Task::Sim(SimParams::default()),
            timeout_ms: None,
            device: None,
            simulate: false,
        };
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["kind"], "sim");
        assert_eq!(
            json["params"]["duration_ms"],
            serde_json::json!([500, 2000])
        );
        let back: RunMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, run);
        assert_eq!(run.subject(&Namespace::default()), "faro.jobs.q.olt1");
    }

    #[test]
    fn duration_range_is_checked() {
        let p: SimParams = serde_json::from_str(r#"{"duration_ms": 0}"#).unwrap();
        assert_eq!(p.duration_ms, DurationRange { min: 0, max: 0 });
        let err = serde_json::from_str::<SimParams>(r#"{"duration_ms": [5, 1]}"#).unwrap_err();
        assert!(err.to_string().contains("min above max"), "{err}");
    }

    #[test]
    fn outcome_shares_refuse_negative_and_zero_sums() {
        for bad in [
            r#"{"outcomes": {"succeeded": -1}}"#,
            r#"{"outcomes": {"succeeded": 0, "failed": 0}}"#,
            r#"{"outcomes": {"sucess": 1}}"#,
        ] {
            assert!(serde_json::from_str::<SimParams>(bad).is_err(), "{bad}");
        }
    }
}
