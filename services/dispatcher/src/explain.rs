//! Pure: why a run is where it is, and what a job has been doing, in sentences an operator
//! reads (`faro explain run ID`, `faro explain job ID`). The store gathers the facts; the
//! admission state says why a run waits.

use chrono::{DateTime, Utc};
use faro_shared::domain::RunStatus;
use uuid::Uuid;

use crate::admission::Wait;

/// One attempt as `run_attempts` recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFact {
    pub attempt: u32,
    pub outcome: String,
    pub worker: Option<String>,
    pub at: DateTime<Utc>,
    pub error: Option<String>,
    pub late: bool,
}

/// What PostgreSQL knows of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFacts {
    pub id: Uuid,
    pub job: String,
    pub queue: String,
    pub target: Option<String>,
    pub status: RunStatus,
    pub attempt: u32,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    pub slot_at: Option<DateTime<Utc>>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub error: Option<String>,
    /// When the current attempt is due, for a retry waiting for its backoff.
    pub retry_at: Option<DateTime<Utc>>,
    /// Whether the current attempt is still in the outbox (not yet published).
    pub unpublished: bool,
    pub attempts: Vec<AttemptFact>,
}

/// What the leading dispatcher knows of a run right now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Live {
    /// Why it waits, when it waits for admission.
    pub wait: Option<Wait>,
    /// When it will be recorded `timed_out` if no result comes.
    pub deadline: Option<DateTime<Utc>>,
}

fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// Why `run` is where it is.
pub fn run(facts: &RunFacts, live: &Live, now: DateTime<Utc>) -> Vec<String> {
    let mut lines = vec![format!(
        "run {} of job {} on queue {}{}: {} (attempt {} of {})",
        facts.id,
        facts.job,
        facts.queue,
        facts
            .target
            .as_ref()
            .map(|t| format!(", target {t}"))
            .unwrap_or_default(),
        facts.status.as_str(),
        facts.attempt,
        facts.max_attempts
    )];
    lines.push(match facts.slot_at {
        Some(slot) => format!(
            "created {} for the slot of {}",
            at(facts.created_at),
            at(slot)
        ),
        None => format!("created {}", at(facts.created_at)),
    });
    for a in &facts.attempts {
        lines.push(format!(
            "attempt {}: {} at {}{}{}{}",
            a.attempt,
            a.outcome,
            at(a.at),
            a.worker
                .as_ref()
                .map(|w| format!(" on worker {w}"))
                .unwrap_or_default(),
            a.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            if a.late {
                "; late: it came for an attempt already ended or superseded and changed nothing"
            } else {
                ""
            }
        ));
    }
    let error = facts.error.as_deref().unwrap_or("");
    let why = match facts.status {
        RunStatus::Skipped => format!("skipped: {error}"),
        RunStatus::Cancelled => format!("cancelled: {error}"),
        RunStatus::TimedOut => format!("timed out: {error}"),
        status if status.is_terminal() => format!(
            "ended {} at {}{}{}",
            status.as_str(),
            facts.finished_at.map(at).unwrap_or_else(|| "?".to_owned()),
            facts
                .worker
                .as_ref()
                .map(|w| format!(" on worker {w}"))
                .unwrap_or_default(),
            if error.is_empty() {
                String::new()
            } else {
                format!(": {error}")
            }
        ),
        _ => match (&live.wait, facts.retry_at) {
            (Some(Wait::Maintenance), _) => {
                "waiting: maintenance mode holds every new dispatch (faro config set maintenance_mode false)".to_owned()
            }
            (Some(Wait::TargetDisabled { target }), _) => format!(
                "waiting: target {target} is disabled (faro target enable {target})"
            ),
            (Some(Wait::Queue { queue, limit, in_flight }), _) => format!(
                "waiting: queue {queue} has {in_flight} runs in flight, its limit is {limit} (queue.{queue}.max_in_flight)"
            ),
            (Some(Wait::Target { target, limit, held_by }), _) => format!(
                "waiting for a slot of target {target} (limit {limit}), held by runs {}",
                held_by
                    .iter()
                    .map(Uuid::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, Some(due)) if facts.unpublished && due > now => format!(
                "attempt {} failed ({}); retry at {} as attempt {}",
                facts.attempt - 1,
                if error.is_empty() { "no error given" } else { error },
                at(due),
                facts.attempt
            ),
            (None, _) if facts.unpublished => {
                "admitted; being published to its queue".to_owned()
            }
            (None, _) => format!(
                "published{} to faro.jobs.{}.{}; waiting for or running on a worker{}",
                facts
                    .dispatched_at
                    .map(|t| format!(" at {}", at(t)))
                    .unwrap_or_default(),
                facts.queue,
                facts.target.as_deref().unwrap_or("-"),
                live.deadline
                    .map(|d| format!("; recorded timed_out at {} if no result comes", at(d)))
                    .unwrap_or_default()
            ),
        },
    };
    lines.push(why);
    lines
}

/// What PostgreSQL knows of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFacts {
    pub id: String,
    pub kind: String,
    pub queue: String,
    pub target: Option<String>,
    pub interval_ms: Option<i64>,
    pub after: Option<String>,
    pub run_if: String,
    /// For a recurring job: `skip` or `queue_one`.
    pub overlap: String,
    pub enabled: bool,
    /// `Some(false)` when its target is defined and disabled.
    pub target_enabled: Option<bool>,
    pub max_attempts: u32,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    /// The latest runs, newest first: id, status, created, error.
    pub recent: Vec<(Uuid, String, DateTime<Utc>, Option<String>)>,
    /// Jobs that follow this one.
    pub children: Vec<String>,
    /// What the job is, for people (a batch file's task description).
    pub description: Option<String>,
}

/// What `job` is and has been doing; `next_slot` for a recurring job.
pub fn job(facts: &JobFacts, next_slot: Option<DateTime<Utc>>) -> Vec<String> {
    let mut lines = vec![format!(
        "job {}: {} on queue {}{}, {}{}",
        facts.id,
        facts.kind,
        facts.queue,
        facts
            .target
            .as_ref()
            .map(|t| format!(", target {t}"))
            .unwrap_or_default(),
        if facts.enabled { "enabled" } else { "disabled" },
        if facts.max_attempts > 1 {
            format!(", up to {} attempts", facts.max_attempts)
        } else {
            String::new()
        }
    )];
    if let Some(description) = &facts.description {
        lines.push(format!("described as {description:?}"));
    }
    match (facts.interval_ms, &facts.after) {
        (Some(ms), _) => lines.push(format!(
            "recurring every {ms} ms{}{}",
            match (facts.enabled, facts.target_enabled, next_slot) {
                (false, _, _) => "; disabled, no slot fires".to_owned(),
                (true, Some(false), _) => format!(
                    "; its target {} is disabled: slots pass without runs",
                    facts.target.as_deref().unwrap_or("?")
                ),
                (true, _, Some(next)) => format!("; next slot {}", at(next)),
                _ => String::new(),
            },
            if facts.overlap == "queue_one" {
                "; a slot that comes while a run goes on waits for it (overlap: queue_one)"
            } else {
                "; a slot that comes while a run goes on is skipped (overlap: skip)"
            }
        )),
        (None, Some(parent)) => lines.push(format!(
            "runs after each run of job {parent} ends, if it {}",
            if facts.run_if == "always" {
                "ends at all (run_if: always)"
            } else {
                "succeeded (run_if: success); otherwise its run is recorded skipped"
            }
        )),
        (None, None) => lines.push("one-shot".to_owned()),
    }
    if !facts.children.is_empty() {
        lines.push(format!("followed by {}", facts.children.join(", ")));
    }
    let when = |t: Option<DateTime<Utc>>| t.map(at).unwrap_or_else(|| "never".to_owned());
    lines.push(format!(
        "last run {}, last success {}, last failure {}",
        when(facts.last_run_at),
        when(facts.last_success_at),
        when(facts.last_failure_at)
    ));
    for (id, status, created, error) in &facts.recent {
        lines.push(format!(
            "  run {id} {status} (created {}){}",
            at(*created),
            error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: RunStatus) -> RunFacts {
        RunFacts {
            id: Uuid::nil(),
            job: "disc-olt-1".to_owned(),
            queue: "discovery".to_owned(),
            target: Some("olt-1".to_owned()),
            status,
            attempt: 1,
            max_attempts: 3,
            created_at: DateTime::UNIX_EPOCH,
            slot_at: None,
            dispatched_at: None,
            finished_at: None,
            worker: None,
            error: None,
            retry_at: None,
            unpublished: true,
            attempts: Vec::new(),
        }
    }

    fn waiting(wait: Wait) -> Live {
        Live {
            wait: Some(wait),
            deadline: None,
        }
    }

    #[test]
    fn a_waiting_run_says_what_it_waits_for() {
        let now = DateTime::UNIX_EPOCH;
        let held = Uuid::from_u128(7);
        let wait = Wait::Target {
            target: faro_shared::domain::TargetId::parse("olt-1").unwrap(),
            limit: 3,
            held_by: vec![held],
        };
        let lines = run(&facts(RunStatus::Dispatched), &waiting(wait), now);
        let last = lines.last().unwrap();
        assert!(
            last.contains("slot of target olt-1") && last.contains(&held.to_string()),
            "{last}"
        );
        let queue = Wait::Queue {
            queue: faro_shared::domain::QueueName::parse("discovery").unwrap(),
            limit: 25,
            in_flight: 25,
        };
        let lines = run(&facts(RunStatus::Dispatched), &waiting(queue), now);
        assert!(lines
            .last()
            .unwrap()
            .contains("queue discovery has 25 runs in flight"));
        let lines = run(
            &facts(RunStatus::Dispatched),
            &waiting(Wait::Maintenance),
            now,
        );
        assert!(lines.last().unwrap().contains("maintenance mode"));
        let disabled = Wait::TargetDisabled {
            target: faro_shared::domain::TargetId::parse("olt-9").unwrap(),
        };
        let lines = run(&facts(RunStatus::Dispatched), &waiting(disabled), now);
        assert!(lines.last().unwrap().contains("target olt-9 is disabled"));
    }

    #[test]
    fn a_retry_says_when() {
        let mut f = facts(RunStatus::Dispatched);
        f.attempt = 2;
        f.error = Some("simulated failure".to_owned());
        f.retry_at = Some(DateTime::UNIX_EPOCH + chrono::Duration::seconds(4));
        let lines = run(&f, &Live::default(), DateTime::UNIX_EPOCH);
        let last = lines.last().unwrap();
        assert!(
            last.contains("attempt 1 failed (simulated failure)")
                && last.contains("retry at 1970-01-01 00:00:04"),
            "{last}"
        );
    }

    #[test]
    fn an_ended_run_says_how() {
        let mut f = facts(RunStatus::Skipped);
        f.error = Some("parent job disc run 1 failed".to_owned());
        assert_eq!(
            run(&f, &Live::default(), DateTime::UNIX_EPOCH)
                .last()
                .unwrap(),
            "skipped: parent job disc run 1 failed"
        );
        let mut f = facts(RunStatus::Succeeded);
        f.worker = Some("w1".to_owned());
        f.finished_at = Some(DateTime::UNIX_EPOCH);
        f.attempts.push(AttemptFact {
            attempt: 1,
            outcome: "failed".to_owned(),
            worker: Some("w2".to_owned()),
            at: DateTime::UNIX_EPOCH,
            error: None,
            late: true,
        });
        let lines = run(&f, &Live::default(), DateTime::UNIX_EPOCH);
        assert!(lines.iter().any(|l| l.contains("late")));
        assert!(
            lines.last().unwrap().starts_with("ended succeeded")
                && lines.last().unwrap().contains("w1")
        );
    }

    #[test]
    fn a_job_shows_its_schedule_and_history() {
        let f = JobFacts {
            id: "optical-olt-1".to_owned(),
            kind: "sim".to_owned(),
            queue: "get".to_owned(),
            target: Some("olt-1".to_owned()),
            interval_ms: None,
            after: Some("disc-olt-1".to_owned()),
            run_if: "success".to_owned(),
            overlap: "skip".to_owned(),
            enabled: true,
            target_enabled: None,
            max_attempts: 1,
            last_run_at: Some(DateTime::UNIX_EPOCH),
            last_success_at: None,
            last_failure_at: Some(DateTime::UNIX_EPOCH),
            recent: vec![(
                Uuid::nil(),
                "failed".to_owned(),
                DateTime::UNIX_EPOCH,
                Some("boom".to_owned()),
            )],
            children: vec!["desc-olt-1".to_owned()],
            description: None,
        };
        let lines = job(&f, None);
        assert!(lines[1].contains("after each run of job disc-olt-1"));
        assert!(lines.iter().any(|l| l == "followed by desc-olt-1"));
        assert!(lines.iter().any(|l| l.contains("last success never")));
        assert!(lines
            .iter()
            .any(|l| l.contains("failed") && l.contains("boom")));

        // Recurring, on a disabled target, keeping one slot.
        let recurring = JobFacts {
            interval_ms: Some(30_000),
            after: None,
            overlap: "queue_one".to_owned(),
            target_enabled: Some(false),
            ..f
        };
        let lines = job(&recurring, Some(DateTime::UNIX_EPOCH));
        assert!(
            lines[1].contains("its target olt-1 is disabled") && lines[1].contains("queue_one"),
            "{}",
            lines[1]
        );

        // A batch file's task, with its description.
        let described = JobFacts {
            description: Some("report of olt-7".to_owned()),
            ..recurring
        };
        let lines = job(&described, None);
        assert_eq!(lines[1], "described as \"report of olt-7\"");
    }
}
