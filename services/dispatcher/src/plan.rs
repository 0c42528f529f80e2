//! Pure: what a submission becomes. One run per job, attempt 1, ids fixed here.
//!
//! Owns the mapping from the JSON job format to run messages; it does no I/O, so the same
//! submission always plans the same shape and tests need no database.

use faro_shared::domain::{JobId, MaxAttempts, Retryable};
use faro_shared::messages::{Interval, Overlap, RunIf, RunMessage, Submission};
use uuid::Uuid;

/// A run about to be recorded and published.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// Index of its job inside the submission.
    pub seq: i32,
    pub message: RunMessage,
    pub max_attempts: MaxAttempts,
    pub retry_on: Vec<Retryable>,
    /// Set for a recurring job: its definition is recorded, and no run is made now.
    pub interval: Option<Interval>,
    /// Set for a chained job: it runs after each run of this job, per `run_if`.
    pub after: Option<JobId>,
    pub run_if: RunIf,
    pub overlap: Overlap,
    /// What the job is, for people.
    pub description: Option<String>,
}

impl NewRun {
    /// A definition only (recurring or chained): no run now.
    pub fn is_definition(&self) -> bool {
        self.interval.is_some() || self.after.is_some()
    }
}

/// Plans one run per job of `submission`. A job without an id gets its run's id as its own.
pub fn plan_submission(submission: &Submission) -> Vec<NewRun> {
    submission
        .jobs
        .iter()
        .enumerate()
        .map(|(seq, job)| {
            let run_id = Uuid::now_v7();
            let job_id = job.id.clone().unwrap_or_else(|| {
                JobId::parse(run_id.simple().to_string()).expect("a uuid is a valid job id")
            });
            NewRun {
                seq: i32::try_from(seq).unwrap_or(i32::MAX),
                max_attempts: job.max_attempts,
                retry_on: job.retry_on.clone(),
                interval: job.interval,
                after: job.after.clone(),
                run_if: job.run_if,
                overlap: job.overlap,
                description: job.description.clone(),
                message: RunMessage {
                    run_id,
                    attempt: 1,
                    job_id,
                    queue: job.queue.clone(),
                    target: job.target.clone(),
                    priority: job.priority,
                    task: job.task.clone(),
                    timeout_ms: job
                        .timeout
                        .map(|t| u64::try_from(t.get().as_millis()).unwrap_or(u64::MAX)),
                    device: None,
                    simulate: false,
                    deadline: None,
                    sent_at: None,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_per_job_with_unique_ids() {
        let submission = faro_shared::jobfile::parse(
            br#"[{"queue": "q", "kind": "sim"}, {"id": "mine", "queue": "q", "kind": "sim", "target": "t1"},
                 {"queue": "r", "kind": "sim", "priority": 1}]"#,
        )
        .unwrap();
        let runs = plan_submission(&submission);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(runs[1].message.job_id.as_str(), "mine");
        assert_eq!(
            runs[0].message.job_id.as_str(),
            runs[0].message.run_id.simple().to_string()
        );
        assert!(runs.iter().all(|r| r.message.attempt == 1));
        let mut ids: Vec<_> = runs.iter().map(|r| r.message.run_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        assert_eq!(runs[2].message.priority.get(), 1);
    }
}
