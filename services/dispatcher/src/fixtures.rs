//! Test fixtures shared by the unit tests of the pure modules.

use std::time::Duration;

use faro_shared::domain::{JobId, MaxAttempts, Priority, QueueName, Retryable, TargetId};
use faro_shared::messages::{Overlap, RunMessage, SimParams, Task};
use uuid::Uuid;

use crate::timetable::JobDef;

/// A `sim` run of job `job` on `target`, with a fresh id.
pub fn run(job: &str, target: Option<&str>, priority: u8) -> RunMessage {
    RunMessage {
        run_id: Uuid::new_v4(),
        attempt: 1,
        job_id: JobId::parse(job).expect("valid job id"),
        queue: QueueName::parse("q").expect("valid queue"),
        target: target.map(|t| TargetId::parse(t).expect("valid target")),
        priority: Priority::new(priority).expect("valid priority"),
        task: Task::Sim(SimParams::default()),
        timeout_ms: None,
        device: None,
        simulate: false,
        deadline: None,
        sent_at: None,
    }
}

/// A definition of job `job` every `interval_ms` (0 for a chained job).
pub fn def(job: &str, interval_ms: u64) -> JobDef {
    let mut template = run(job, None, 5);
    template.run_id = Uuid::nil();
    JobDef {
        interval: Duration::from_millis(interval_ms),
        template,
        max_attempts: MaxAttempts::default(),
        retry_on: Retryable::DEFAULT.to_vec(),
        last_slot: None,
        overlap: Overlap::Skip,
    }
}

/// A result of attempt 1 of `run` (job `poll` on queue `q`) with `outcome`.
pub fn result(
    run: Uuid,
    outcome: faro_shared::domain::Outcome,
) -> faro_shared::messages::RunResult {
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid time");
    faro_shared::messages::RunResult {
        run_id: run,
        attempt: 1,
        job_id: JobId::parse("poll").expect("valid job id"),
        queue: QueueName::parse("q").expect("valid queue"),
        target: None,
        worker_id: faro_shared::domain::WorkerId::parse("w1").expect("valid worker id"),
        outcome,
        simulated: true,
        started_at: at,
        finished_at: at,
        output: None,
        error: (outcome != faro_shared::domain::Outcome::Succeeded).then(|| "failed".to_owned()),
    }
}
