//! Pure: what a result does to its run. It ends the run, schedules another attempt after an
//! exponential backoff with jitter, or, for an attempt already superseded or ended, nothing.
//!
//! Owns the retry policy; the store applies the decision and the outbox publishes the retry
//! when it is due.

use std::time::Duration;

use faro_shared::domain::{Outcome, Retryable, RunStatus};

/// Backoff between attempts: `base * 2^(attempt-1)`, at most `max`, with "equal jitter"
/// (half fixed, half random) so retries of many runs that failed together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`; `jitter` in [0, 1).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1 << exponent).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        full / 2 + full.mul_f64(jitter / 2.0)
    }
}

/// A run as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub attempt: u32,
    pub status: RunStatus,
    pub max_attempts: u32,
    pub retry_on: Vec<Retryable>,
}

/// What one result does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The run ends with this status.
    End(RunStatus),
    /// The attempt is recorded; attempt `next` runs after `delay`.
    Retry { next: u32, delay: Duration },
    /// The result names an attempt already superseded or a run already ended (or unknown):
    /// it is recorded as late and changes nothing.
    Late,
}

/// Decides what a result of `attempt` with `outcome` does to `run`.
pub fn decide(
    run: Option<&RunState>,
    attempt: u32,
    outcome: Outcome,
    policy: &RetryPolicy,
    jitter: f64,
) -> Decision {
    let Some(run) = run else {
        return Decision::Late;
    };
    if run.status.is_terminal() || run.attempt != attempt {
        return Decision::Late;
    }
    let status = outcome.status();
    let retryable = run.retry_on.iter().any(|r| r.status() == status);
    if retryable && attempt < run.max_attempts {
        Decision::Retry {
            next: attempt + 1,
            delay: policy.delay(attempt, jitter),
        }
    } else {
        Decision::End(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(attempt: u32, max: u32) -> RunState {
        RunState {
            attempt,
            status: RunStatus::Dispatched,
            max_attempts: max,
            retry_on: Retryable::DEFAULT.to_vec(),
        }
    }

    #[test]
    fn failures_retry_until_attempts_run_out() {
        let p = RetryPolicy::default();
        assert!(matches!(
            decide(Some(&run(1, 3)), 1, Outcome::Failed, &p, 0.0),
            Decision::Retry { next: 2, .. }
        ));
        assert!(matches!(
            decide(Some(&run(2, 3)), 2, Outcome::Interrupted, &p, 0.0),
            Decision::Retry { next: 3, .. }
        ));
        assert_eq!(
            decide(Some(&run(3, 3)), 3, Outcome::Failed, &p, 0.0),
            Decision::End(RunStatus::Failed)
        );
        assert_eq!(
            decide(Some(&run(1, 3)), 1, Outcome::Succeeded, &p, 0.0),
            Decision::End(RunStatus::Succeeded)
        );
    }

    #[test]
    fn only_listed_outcomes_are_retried() {
        let mut r = run(1, 5);
        r.retry_on = vec![Retryable::Interrupted];
        assert_eq!(
            decide(Some(&r), 1, Outcome::Failed, &RetryPolicy::default(), 0.5),
            Decision::End(RunStatus::Failed)
        );
        assert!(matches!(
            decide(
                Some(&r),
                1,
                Outcome::Interrupted,
                &RetryPolicy::default(),
                0.5
            ),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn results_of_other_attempts_or_ended_runs_are_late() {
        let p = RetryPolicy::default();
        assert_eq!(
            decide(Some(&run(2, 3)), 1, Outcome::Failed, &p, 0.0),
            Decision::Late
        );
        let mut ended = run(1, 3);
        ended.status = RunStatus::Succeeded;
        assert_eq!(
            decide(Some(&ended), 1, Outcome::Failed, &p, 0.0),
            Decision::Late
        );
        assert_eq!(decide(None, 1, Outcome::Succeeded, &p, 0.0), Decision::Late);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        // No jitter: half of the full delay.
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(p.delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(10, 0.0), Duration::from_secs(5));
        assert_eq!(p.delay(u32::MAX, 0.999_999), p.delay(40, 0.999_999));
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_between_half_and_full(attempt in 1u32..40, jitter in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            let full = p.base.saturating_mul(1 << (attempt - 1).min(30)).min(p.max);
            let d = p.delay(attempt, jitter);
            prop_assert!(d >= full / 2 && d <= full);
        }

        #[test]
        fn a_run_never_gets_more_than_its_attempts(max in 1u32..=20, outcomes in proptest::collection::vec(0u8..3, 1..30)) {
            let p = RetryPolicy::default();
            let mut state = run(1, max);
            for o in outcomes {
                let outcome = [Outcome::Succeeded, Outcome::Failed, Outcome::Interrupted][o as usize];
                match decide(Some(&state), state.attempt, outcome, &p, 0.3) {
                    Decision::Retry { next, .. } => {
                        prop_assert!(next <= max);
                        state.attempt = next;
                    }
                    Decision::End(status) => {
                        state.status = status;
                        break;
                    }
                    Decision::Late => prop_assert!(false, "a current attempt was called late"),
                }
            }
            prop_assert!(state.attempt <= max);
        }
    }
}
