//! Pure: the draw of a simulated run, its duration and outcome.
//!
//! With a seed the draw depends only on (seed, job id, attempt), so every worker draws the same
//! for the same attempt and a test can predict outcomes exactly. The generator is SplitMix64,
//! fixed here so results never change with a dependency's version.

use std::time::Duration;

use faro_shared::domain::{JobId, Outcome};
use faro_shared::messages::SimParams;

/// What a simulated run will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimPlan {
    pub duration: Duration,
    pub outcome: Outcome,
}

/// Draws the plan of one attempt. `entropy` is used when the params carry no seed.
pub fn plan(params: &SimParams, job: &JobId, attempt: u32, entropy: u64) -> SimPlan {
    let mut state = match params.seed {
        Some(seed) => seed ^ fnv1a(job.as_str().as_bytes()) ^ u64::from(attempt).rotate_left(32),
        None => entropy,
    };
    let range = params.duration_ms;
    let span = range.max - range.min;
    let duration_ms = range.min
        + if span == 0 {
            0
        } else {
            splitmix64(&mut state) % (span + 1)
        };
    let shares = params.outcomes;
    let total = shares.succeeded + shares.failed + shares.interrupted;
    // 53 random bits -> a uniform float in [0, 1).
    let u = (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64 * total;
    let outcome = if u < shares.succeeded {
        Outcome::Succeeded
    } else if u < shares.succeeded + shares.failed {
        Outcome::Failed
    } else {
        Outcome::Interrupted
    };
    SimPlan {
        duration: Duration::from_millis(duration_ms),
        outcome,
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use faro_shared::messages::{DurationRange, OutcomeShares};
    use proptest::prelude::*;

    fn params(seed: Option<u64>) -> SimParams {
        SimParams {
            duration_ms: DurationRange { min: 10, max: 20 },
            outcomes: OutcomeShares::default(),
            seed,
        }
    }

    #[test]
    fn seeded_draws_repeat_and_differ_by_job_and_attempt() {
        let job = JobId::parse("j1").unwrap();
        let p = params(Some(42));
        assert_eq!(plan(&p, &job, 1, 1), plan(&p, &job, 1, 999));
        let plans: std::collections::HashSet<_> = (0..50)
            .map(|i| plan(&p, &JobId::parse(format!("j{i}")).unwrap(), 1, 0).duration)
            .collect();
        assert!(plans.len() > 5, "durations do not vary by job");
    }

    #[test]
    fn shares_hold_over_many_draws() {
        let p = params(Some(7));
        let mut counts = [0u32; 3];
        for i in 0..20_000 {
            let job = JobId::parse(format!("job-{i}")).unwrap();
            match plan(&p, &job, 1, 0).outcome {
                Outcome::Succeeded => counts[0] += 1,
                Outcome::Failed => counts[1] += 1,
                Outcome::Interrupted => counts[2] += 1,
                Outcome::TimedOut | Outcome::Cancelled => {
                    unreachable!("a simulated run never times out or cancels itself")
                }
            }
        }
        // 80/15/5 within 1.5 points.
        assert!((15_700..=16_300).contains(&counts[0]), "{counts:?}");
        assert!((2_700..=3_300).contains(&counts[1]), "{counts:?}");
        assert!((700..=1_300).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn a_zero_share_never_happens() {
        let mut p = params(None);
        p.outcomes = OutcomeShares {
            succeeded: 1.0,
            failed: 0.0,
            interrupted: 0.0,
        };
        let job = JobId::parse("j").unwrap();
        for entropy in 0..1000 {
            assert_eq!(plan(&p, &job, 1, entropy).outcome, Outcome::Succeeded);
        }
    }

    proptest! {
        #[test]
        fn duration_stays_in_range(min in 0u64..10_000, extra in 0u64..10_000, entropy: u64) {
            let mut p = params(None);
            p.duration_ms = DurationRange { min, max: min + extra };
            let d = plan(&p, &JobId::parse("j").unwrap(), 1, entropy).duration.as_millis() as u64;
            prop_assert!(d >= min && d <= min + extra);
        }
    }
}
