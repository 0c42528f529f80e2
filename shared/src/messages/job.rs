//! Jobs as submitted: kinds and their parameters, job specs, intervals, submissions.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{JobId, MaxAttempts, Priority, QueueName, Retryable, TargetId};
use crate::names::Namespace;
use crate::snmp::{SnmpGetParams, SnmpWalkParams};

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
    /// What the job is, for people (a batch file's task description).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
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
    /// What a batch file says of itself (the previous orchestrator's `metadata`), kept with
    /// the submission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchMetadata>,
}

/// A batch file's description of itself, as the previous orchestrator wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tasks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The queue of its tasks (else `FARO_BATCH_QUEUE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueName>,
}

impl Submission {
    pub fn subject(ns: &Namespace) -> String {
        ns.submit_subject()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
