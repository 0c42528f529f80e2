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

/// A run's end on the outcome feed, `faro.outcomes.<queue>.<target>`: what an integrator
/// follows instead of asking. One per run that ends (its `Nats-Msg-Id` is
/// `outcome:<run id>`, so a repeat within the duplicate window is dropped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub run_id: Uuid,
    pub job_id: JobId,
    pub queue: QueueName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetId>,
    /// The attempt that ended it.
    pub attempt: u32,
    /// `succeeded`, `failed`, `timed_out`, `cancelled` or `skipped`.
    pub status: crate::domain::RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// What the worker reported: a `sim` run's duration, an SNMP run's value count, a
    /// program's exit code with its output cut to [`RunOutcome::OUTPUT_BYTES`] each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<RunOutput>,
    #[serde(default)]
    pub simulated: bool,
}

impl RunOutcome {
    /// Most bytes of a program's standard output, and of its standard error, on the feed
    /// (the run's record keeps 64 KiB).
    pub const OUTPUT_BYTES: usize = 1024;

    /// The `Nats-Msg-Id` that puts a run's outcome on the feed once.
    pub fn msg_id(&self) -> String {
        format!("outcome:{}", self.run_id)
    }

    /// The outcome of the run `result` ended with `status`.
    pub fn of_result(result: &RunResult, status: crate::domain::RunStatus) -> Self {
        let cut = |text: &str| -> (String, bool) {
            if text.len() <= Self::OUTPUT_BYTES {
                return (text.to_owned(), false);
            }
            let mut end = Self::OUTPUT_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (text[..end].to_owned(), true)
        };
        let output = result.output.as_ref().map(|output| match output {
            RunOutput::Exec {
                exit_code,
                stdout,
                stderr,
                truncated,
            } => {
                let ((stdout, cut_out), (stderr, cut_err)) = (cut(stdout), cut(stderr));
                RunOutput::Exec {
                    exit_code: *exit_code,
                    stdout,
                    stderr,
                    truncated: *truncated || cut_out || cut_err,
                }
            }
            other => other.clone(),
        });
        Self {
            run_id: result.run_id,
            job_id: result.job_id.clone(),
            queue: result.queue.clone(),
            target: result.target.clone(),
            attempt: result.attempt,
            status,
            error: result.error.clone(),
            worker_id: Some(result.worker_id.clone()),
            started_at: Some(result.started_at),
            finished_at: result.finished_at,
            duration_ms: u64::try_from((result.finished_at - result.started_at).num_milliseconds())
                .ok(),
            output,
            simulated: result.simulated,
        }
    }

    /// Where it goes on the feed.
    pub fn subject(&self, ns: &Namespace) -> String {
        ns.outcome_subject(&self.queue, self.target.as_ref())
    }
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
    fn an_outcome_tells_the_run_its_end_and_a_programs_output_cut_short() {
        let started = Utc::now();
        let result = RunResult {
            run_id: Uuid::now_v7(),
            attempt: 2,
            job_id: JobId::parse("j1").unwrap(),
            queue: QueueName::parse("q").unwrap(),
            target: Some(TargetId::parse("olt-1").unwrap()),
            worker_id: WorkerId::parse("w1").unwrap(),
            outcome: Outcome::Failed,
            simulated: false,
            started_at: started,
            finished_at: started + chrono::Duration::milliseconds(1500),
            // A two-byte character across the cut: it is cut before, never split.
            output: Some(RunOutput::Exec {
                exit_code: Some(3),
                stdout: format!("{}é", "x".repeat(RunOutcome::OUTPUT_BYTES - 1)),
                stderr: "short".into(),
                truncated: false,
            }),
            error: Some("exit code 3".into()),
        };
        let outcome = RunOutcome::of_result(&result, crate::domain::RunStatus::Failed);
        assert_eq!(outcome.msg_id(), format!("outcome:{}", result.run_id));
        assert_eq!(
            outcome.subject(&Namespace::default()),
            "faro.outcomes.q.olt-1"
        );
        assert_eq!((outcome.attempt, outcome.duration_ms), (2, Some(1500)));
        assert_eq!(outcome.error.as_deref(), Some("exit code 3"));
        let Some(RunOutput::Exec {
            exit_code,
            stdout,
            stderr,
            truncated,
        }) = outcome.output
        else {
            panic!("{outcome:?}");
        };
        assert_eq!(exit_code, Some(3));
        assert_eq!(stdout.len(), RunOutcome::OUTPUT_BYTES - 1);
        assert_eq!(stderr, "short");
        assert!(truncated);
        let json = serde_json::to_value(RunOutcome::of_result(
            &result,
            crate::domain::RunStatus::Failed,
        ))
        .unwrap();
        assert_eq!(json["status"], "failed", "{json}");
    }

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
