//! Runs on the wire: a run to execute and the result of one attempt.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::*;
use crate::domain::{JobId, Outcome, Priority, QueueName, TargetId, WorkerId};
use crate::names::Namespace;
use crate::snmp::{Device, SnmpSummary};

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
    /// When this attempt must have ended: its publication plus its timeout, set by the
    /// dispatcher as it publishes it. A worker never starts it after this and stops it here,
    /// whatever its kind (the dispatcher records it timed out a grace later and may retry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// When the leader sent this attempt, on its own clock: a slot record it took later
    /// holds the change that admitted it (see [`super::slots::TargetSlots::holds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
}

impl RunMessage {
    pub fn subject(&self, ns: &Namespace) -> String {
        ns.job_subject(&self.queue, self.target.as_ref())
    }

    /// The `Nats-Msg-Id` that deduplicates republishing of the same attempt.
    pub fn msg_id(&self) -> String {
        format!("{}:{}", self.run_id, self.attempt)
    }

    /// The run and attempt a `Nats-Msg-Id` of [`Self::msg_id`] names; `None` for another id.
    pub fn attempt_of_msg_id(id: &str) -> Option<(Uuid, u32)> {
        let (run, attempt) = id.split_once(':')?;
        Some((run.parse().ok()?, attempt.parse().ok()?))
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
    /// Whether its error or its program's output holds a NUL character.
    pub fn has_nul(&self) -> bool {
        let output = match &self.output {
            Some(RunOutput::Exec { stdout, stderr, .. }) => {
                stdout.contains('\u{0}') || stderr.contains('\u{0}')
            }
            _ => false,
        };
        output || self.error.as_ref().is_some_and(|e| e.contains('\u{0}'))
    }

    /// The `Nats-Msg-Id` that stores one attempt's result once.
    pub fn msg_id(&self) -> String {
        format!("result:{}:{}", self.run_id, self.attempt)
    }

    /// What is recorded instead of a result PostgreSQL refused (`reason`): the same attempt,
    /// failed, with why and without anything the worker reported (its times, output and error
    /// may be what was refused).
    pub fn unreadable(&self, reason: &str) -> RunResult {
        let now = Utc::now();
        RunResult {
            outcome: Outcome::Failed,
            started_at: now,
            finished_at: now,
            output: None,
            error: Some(format!("result unreadable: {reason}")),
            ..self.clone()
        }
    }

    /// A copy fit for PostgreSQL when this one is not: its text and jsonb cannot hold a NUL
    /// character, which a program's output or an error may carry. Each NUL becomes U+FFFD.
    /// `None` when there is none.
    pub fn without_nul(&self) -> Option<RunResult> {
        if !self.has_nul() {
            return None;
        }
        let clean = |text: &str| text.replace('\u{0}', "\u{fffd}");
        let mut copy = self.clone();
        copy.error = copy.error.as_deref().map(clean);
        if let Some(RunOutput::Exec { stdout, stderr, .. }) = &mut copy.output {
            *stdout = clean(stdout);
            *stderr = clean(stderr);
        }
        Some(copy)
    }

    pub fn subject(&self, ns: &Namespace) -> String {
        ns.result_subject(&self.queue, self.target.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_msg_id_names_its_run_and_attempt() {
        let run_id = Uuid::now_v7();
        let id = format!("{run_id}:3");
        assert_eq!(RunMessage::attempt_of_msg_id(&id), Some((run_id, 3)));
        for other in ["", "submission-1", "not-a-uuid:1", &format!("{run_id}:x")] {
            assert_eq!(RunMessage::attempt_of_msg_id(other), None, "{other}");
        }
    }

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
            deadline: None,
            sent_at: None,
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
    fn a_nul_in_an_error_or_a_program_output_is_replaced_and_only_then() {
        let mut result: RunResult = serde_json::from_value(serde_json::json!({
            "run_id": Uuid::now_v7(), "attempt": 1, "job_id": "j", "queue": "q",
            "worker_id": "w1", "outcome": "failed", "simulated": false,
            "started_at": "2026-11-30T00:00:00Z", "finished_at": "2026-11-30T00:00:01Z",
            "output": {"type": "exec", "exit_code": 1, "stdout": "a\u{0}b", "stderr": "",
                       "truncated": false},
            "error": "x\u{0}"
        }))
        .unwrap();
        let clean = result.without_nul().unwrap();
        assert_eq!(clean.error.as_deref(), Some("x\u{fffd}"));
        let Some(RunOutput::Exec { stdout, .. }) = &clean.output else {
            panic!("{clean:?}");
        };
        assert_eq!(stdout, "a\u{fffd}b");
        assert_eq!(clean.without_nul(), None);
        result.output = None;
        result.error = Some("fine".to_owned());
        assert_eq!(result.without_nul(), None);
    }
}
