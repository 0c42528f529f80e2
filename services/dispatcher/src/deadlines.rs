//! The deadlines task, and the pure book it keeps: runs in flight and when each must have a
//! result by.
//!
//! A published attempt gets a deadline (its timeout plus a grace). An attempt with no result by
//! then is recorded as `timed_out` by the dispatcher, through the same path as a worker's
//! result: it may be retried, it frees its target's slot, and a result arriving later for it is
//! late and changes nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use faro_shared::domain::{Outcome, WorkerId};
use faro_shared::messages::RunMessage;
use faro_shared::messages::RunResult;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics as m;
use crate::results::apply_results;
use crate::state::Dispatcher;

/// The deadline arithmetic, in one place: an attempt must have a result by its timeout (its
/// own, else the default) plus a grace for the result's way back. Deadlines and target slot
/// leases both end there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunDeadline {
    /// The timeout of a run without one of its own (`FARO_RUN_TIMEOUT`).
    pub default_timeout: Duration,
    /// Added to every timeout (`FARO_RUN_TIMEOUT_GRACE`).
    pub grace: Duration,
}

impl RunDeadline {
    /// How long after its start an attempt with `timeout_ms` must have a result.
    pub fn allowed(&self, timeout_ms: Option<u64>) -> chrono::Duration {
        let timeout = timeout_ms.map_or(self.default_timeout, Duration::from_millis);
        chrono::Duration::from_std(timeout + self.grace)
            .unwrap_or_else(|_| chrono::Duration::days(1))
    }

    /// When an attempt with `timeout_ms` published at `start` must have ended on its worker:
    /// its timeout, without the grace (the grace is for the result's way back).
    pub fn execution_ends(&self, start: DateTime<Utc>, timeout_ms: Option<u64>) -> DateTime<Utc> {
        let timeout = timeout_ms.map_or(self.default_timeout, Duration::from_millis);
        start + chrono::Duration::from_std(timeout).unwrap_or_else(|_| chrono::Duration::days(1))
    }

    /// When an attempt with `timeout_ms` that started at `start` must have a result by.
    pub fn at(&self, start: DateTime<Utc>, timeout_ms: Option<u64>) -> DateTime<Utc> {
        start + self.allowed(timeout_ms)
    }
}

/// Deadlines of the attempts in flight.
#[derive(Debug, Default)]
pub struct Deadlines {
    by_run: HashMap<Uuid, (u32, DateTime<Utc>, RunMessage)>,
    timetable: BinaryHeap<Reverse<(DateTime<Utc>, Uuid, u32)>>,
}

impl Deadlines {
    /// Starts watching an attempt (replacing an earlier attempt of the same run).
    pub fn track(&mut self, run: RunMessage, deadline: DateTime<Utc>) {
        self.timetable
            .push(Reverse((deadline, run.run_id, run.attempt)));
        self.by_run.insert(run.run_id, (run.attempt, deadline, run));
    }

    /// When `run`'s attempt in flight must have a result by.
    pub fn deadline_of(&self, run: Uuid) -> Option<DateTime<Utc>> {
        self.by_run.get(&run).map(|(_, deadline, _)| *deadline)
    }

    /// A result for `run` came (it ended, or its attempt will be retried).
    pub fn clear(&mut self, run: Uuid) {
        self.by_run.remove(&run);
    }

    /// The earliest deadline still watched.
    pub fn next_wake(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((at, run, attempt))) = self.timetable.peek() {
            match self.by_run.get(run) {
                Some((a, d, _)) if a == attempt && d == at => return Some(*at),
                _ => {
                    self.timetable.pop();
                }
            }
        }
        None
    }

    /// The attempts whose deadline passed at `now`; they are no longer watched.
    pub fn expired(&mut self, now: DateTime<Utc>) -> Vec<RunMessage> {
        let mut out = Vec::new();
        while let Some(at) = self.next_wake() {
            if at > now {
                break;
            }
            if let Some(Reverse((_, run, _))) = self.timetable.pop() {
                if let Some((_, _, message)) = self.by_run.remove(&run) {
                    out.push(message);
                }
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.by_run.len()
    }

    /// The runs watched.
    pub fn runs(&self) -> Vec<Uuid> {
        self.by_run.keys().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_run.is_empty()
    }
}

/// The worker id of the results the dispatcher records itself.
pub(crate) const OWN_WORKER: &str = "dispatcher";

/// A result the dispatcher records itself (a timeout, a cancel) for `run`'s attempt.
pub(crate) fn own_result(run: &RunMessage, outcome: Outcome, error: String) -> RunResult {
    let now = chrono::Utc::now();
    RunResult {
        run_id: run.run_id,
        attempt: run.attempt,
        job_id: run.job_id.clone(),
        queue: run.queue.clone(),
        target: run.target.clone(),
        worker_id: WorkerId::parse(OWN_WORKER).expect("a valid worker id"),
        outcome,
        simulated: false,
        started_at: now,
        finished_at: now,
        output: None,
        error: Some(error),
    }
}

/// Records `timed_out` for attempts with no result by their deadline (timeout and grace).
pub(crate) async fn deadlines_loop(
    d: Arc<Dispatcher>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    const IDLE: Duration = Duration::from_secs(3600);
    loop {
        let wait = d
            .deadlines()
            .next_wake()
            .map(|at| (at - chrono::Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(IDLE)
            .min(IDLE);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = d.deadlines_changed.notified() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        let expired = d.deadlines().expired(chrono::Utc::now());
        if expired.is_empty() {
            continue;
        }
        let results: Vec<RunResult> = expired
            .iter()
            .map(|run| {
                own_result(
                    run,
                    Outcome::TimedOut,
                    format!(
                        "no result within the timeout ({} ms) and grace ({} ms)",
                        run.timeout_ms
                            .unwrap_or(d.config.run_timeout.as_millis() as u64),
                        d.config.run_timeout_grace.as_millis()
                    ),
                )
            })
            .collect();
        let first: Vec<String> = results
            .iter()
            .take(10)
            .map(|r| format!("{} attempt {}", r.run_id, r.attempt))
            .collect();
        tracing::warn!(runs = results.len(), first = ?first, "attempts timed out: no result by their deadline and grace");
        metrics::counter!(m::TIMEOUTS).increment(results.len() as u64);
        if let Err(error) = apply_results(&d, &results).await {
            // Watch them again: the next wake records them.
            tracing::warn!(
                error = faro_shared::pg::error_text(&error),
                "cannot record timeouts; trying again"
            );
            let retry_at = chrono::Utc::now() + chrono::Duration::seconds(1);
            let mut deadlines = d.deadlines();
            for run in expired {
                deadlines.track(run, retry_at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(attempt: u32) -> RunMessage {
        let mut run = crate::fixtures::run("j", None, 5);
        run.attempt = attempt;
        run
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn a_deadline_is_the_timeout_plus_the_grace() {
        let rule = RunDeadline {
            default_timeout: Duration::from_secs(600),
            grace: Duration::from_secs(30),
        };
        assert_eq!(rule.at(at(0), None), at(630_000));
        assert_eq!(rule.at(at(1_000), Some(2_500)), at(33_500));
        // A timeout too large for a date is held to a day, never an overflow.
        assert_eq!(rule.allowed(Some(u64::MAX)), chrono::Duration::days(1));
        // The worker stops it at the timeout; the grace is the result's way back.
        assert_eq!(rule.execution_ends(at(1_000), Some(2_500)), at(3_500));
        assert_eq!(rule.execution_ends(at(0), None), at(600_000));
        assert!(rule.execution_ends(at(0), Some(u64::MAX)) <= at(0) + chrono::Duration::days(1));
    }

    #[test]
    fn only_attempts_without_a_result_expire() {
        let mut d = Deadlines::default();
        let (a, b, c) = (run(1), run(1), run(1));
        d.track(a.clone(), at(100));
        d.track(b.clone(), at(200));
        d.track(c.clone(), at(300));
        d.clear(b.run_id);
        assert_eq!(d.next_wake(), Some(at(100)));
        assert!(d.expired(at(99)).is_empty());
        let expired: Vec<_> = d.expired(at(250)).iter().map(|r| r.run_id).collect();
        assert_eq!(expired, [a.run_id]);
        assert_eq!(d.next_wake(), Some(at(300)));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_retried_attempt_gets_a_new_deadline() {
        let mut d = Deadlines::default();
        let first = run(1);
        d.track(first.clone(), at(100));
        let mut second = first.clone();
        second.attempt = 2;
        d.track(second, at(500));
        // The first attempt's deadline no longer counts.
        assert_eq!(d.next_wake(), Some(at(500)));
        let expired = d.expired(at(1000));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].attempt, 2);
        assert!(d.is_empty());
    }
}
