//! Pure: what a batch of results does, decided before anything is written.
//!
//! The store locks the runs the results name, reads their states, asks [`plan`], and only
//! then writes what the plan says: end runs, schedule retries, insert chained runs, keep
//! attempts. Every decision (fencing, retry policy, chains) is made here, where a test can
//! see it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use faro_shared::domain::{Outcome, RunStatus};
use faro_shared::messages::RunResult;
use uuid::Uuid;

use crate::chains::{self, Chains, Triggered};
use crate::retry::{self, Decision, RetryPolicy, RunState};

/// A failed attempt whose run goes on: attempt `next` is due at `due`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry<'a> {
    pub result: &'a RunResult,
    pub next: u32,
    pub due: DateTime<Utc>,
}

/// What a batch of results does. Every result is in exactly one of `ended`, `retries` and
/// `late`; each run appears in `ended` or `retries` at most once.
#[derive(Debug, Default, PartialEq)]
pub struct ResultPlan<'a> {
    /// Results that end their run, with the status it ends with.
    pub ended: Vec<(&'a RunResult, RunStatus)>,
    /// Results whose run runs again.
    pub retries: Vec<Retry<'a>>,
    /// Results that change nothing (an attempt superseded or ended, a run unknown, a repeat):
    /// kept in `run_attempts` as late.
    pub late: Vec<&'a RunResult>,
    /// Runs of chained jobs that the ended runs start.
    pub triggered: Vec<Triggered>,
    /// Runs of chained jobs recorded as skipped (a parent did not succeed).
    pub skipped: Vec<Triggered>,
}

/// Plans `results` against the `states` of their runs, read under lock. A result applies
/// only to the current attempt of a run that has not ended, and only once per batch: any
/// further result for a run already decided here is late. `jitter` spreads retries (values in
/// [0, 1)); `new_id` names chained runs.
pub fn plan<'a>(
    results: impl IntoIterator<Item = &'a RunResult>,
    states: &HashMap<Uuid, RunState>,
    chains: &Chains,
    policy: &RetryPolicy,
    mut jitter: impl FnMut() -> f64,
    new_id: impl FnMut() -> Uuid,
    now: DateTime<Utc>,
) -> ResultPlan<'a> {
    let mut plan = ResultPlan::default();
    let mut decided = HashSet::new();
    for result in results {
        if !decided.insert(result.run_id) {
            plan.late.push(result);
            continue;
        }
        let state = states.get(&result.run_id);
        let decision = if result.outcome == Outcome::Succeeded {
            match state {
                Some(run) if !run.status.is_terminal() && run.attempt == result.attempt => {
                    Decision::End(RunStatus::Succeeded)
                }
                _ => Decision::Late,
            }
        } else {
            retry::decide(state, result.attempt, result.outcome, policy, jitter())
        };
        match decision {
            Decision::End(status) => plan.ended.push((result, status)),
            // Only a published run is retried; one still pending has no attempt out.
            Decision::Retry { next, delay }
                if state.is_some_and(|s| s.status == RunStatus::Dispatched) =>
            {
                let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
                plan.retries.push(Retry { result, next, due });
            }
            Decision::Retry { .. } | Decision::Late => plan.late.push(result),
        }
    }
    let ended: Vec<chains::Ended<'_>> = plan
        .ended
        .iter()
        .map(|(result, status)| chains::Ended {
            job: &result.job_id,
            run: result.run_id,
            status: *status,
            error: result.error.as_deref(),
        })
        .collect();
    let (skipped, triggered) = chains
        .triggered(&ended, new_id)
        .into_iter()
        .partition(|t| t.skip.is_some());
    plan.triggered = triggered;
    plan.skipped = skipped;
    plan
}

/// Whether fencing alone decides what `result` does: a success no chain listens for ends its
/// run if it is the run's current attempt and is late otherwise, whatever else is known.
pub fn fencing_decides(result: &RunResult, chains: &Chains) -> bool {
    result.outcome == Outcome::Succeeded && !chains.has_children(&result.job_id)
}

/// Splits a batch: the results of runs that fencing alone decides (every result of the run
/// is a success no chain listens for), which the store applies in one statement fenced in
/// SQL without locking or reading the runs first; and the others, which [`plan`] decides. A
/// run's results all go the same way, so a run is still decided once per batch.
pub fn split<'a>(
    results: &'a [RunResult],
    chains: &Chains,
) -> (Vec<&'a RunResult>, Vec<&'a RunResult>) {
    let planned: HashSet<Uuid> = results
        .iter()
        .filter(|r| !fencing_decides(r, chains))
        .map(|r| r.run_id)
        .collect();
    results.iter().partition(|r| !planned.contains(&r.run_id))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use faro_shared::domain::{JobId, Retryable};
    use proptest::prelude::*;

    use super::*;
    use crate::chains::{Child, RunIf};

    fn state(attempt: u32, status: RunStatus, max_attempts: u32) -> RunState {
        RunState {
            attempt,
            status,
            max_attempts,
            retry_on: Retryable::DEFAULT.to_vec(),
        }
    }

    fn result(job: &str, run: Uuid, attempt: u32, outcome: Outcome) -> RunResult {
        let mut r = crate::fixtures::result(run, outcome);
        r.job_id = JobId::parse(job).unwrap();
        r.attempt = attempt;
        r
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn planned<'a>(
        results: &'a [RunResult],
        states: &HashMap<Uuid, RunState>,
        chains: &Chains,
    ) -> ResultPlan<'a> {
        plan(
            results,
            states,
            chains,
            &RetryPolicy::default(),
            || 0.5,
            Uuid::new_v4,
            now(),
        )
    }

    #[test]
    fn a_result_applies_only_to_the_current_attempt() {
        let run = Uuid::new_v4();
        let states = HashMap::from([(run, state(2, RunStatus::Dispatched, 3))]);
        let chains = Chains::default();
        for outcome in [Outcome::Succeeded, Outcome::Failed] {
            let old = [result("poll", run, 1, outcome)];
            let plan = planned(&old, &states, &chains);
            assert!(
                plan.ended.is_empty() && plan.retries.is_empty(),
                "{outcome:?}"
            );
            assert_eq!(plan.late.len(), 1);

            let current = [result("poll", run, 2, outcome)];
            let plan = planned(&current, &states, &chains);
            assert!(plan.late.is_empty(), "{outcome:?}");
        }
    }

    #[test]
    fn an_ended_or_unknown_run_takes_no_result() {
        let ended = Uuid::new_v4();
        let states = HashMap::from([(ended, state(1, RunStatus::TimedOut, 3))]);
        let results = [
            result("poll", ended, 1, Outcome::Succeeded),
            result("poll", Uuid::new_v4(), 1, Outcome::Succeeded),
            result("poll", Uuid::new_v4(), 1, Outcome::Failed),
        ];
        let plan = planned(&results, &states, &Chains::default());
        assert_eq!(plan.late.len(), 3);
    }

    #[test]
    fn a_failure_with_attempts_left_is_retried_after_its_backoff() {
        let run = Uuid::new_v4();
        let states = HashMap::from([(run, state(1, RunStatus::Dispatched, 3))]);
        let results = [result("poll", run, 1, Outcome::Failed)];
        let plan = planned(&results, &states, &Chains::default());
        assert_eq!(plan.retries.len(), 1);
        assert_eq!(plan.retries[0].next, 2);
        // Default policy: 1 s base, equal jitter at 0.5 -> 0.75 s.
        assert_eq!(plan.retries[0].due, now() + Duration::from_millis(750));

        let last = HashMap::from([(run, state(3, RunStatus::Dispatched, 3))]);
        let results = [result("poll", run, 3, Outcome::Failed)];
        let plan = planned(&results, &last, &Chains::default());
        assert_eq!(plan.ended, vec![(&results[0], RunStatus::Failed)]);
    }

    #[test]
    fn a_run_still_pending_is_not_retried() {
        let run = Uuid::new_v4();
        let states = HashMap::from([(run, state(1, RunStatus::Pending, 3))]);
        let results = [result("poll", run, 1, Outcome::Failed)];
        let plan = planned(&results, &states, &Chains::default());
        assert!(plan.retries.is_empty());
        assert_eq!(plan.late.len(), 1);
    }

    #[test]
    fn a_repeated_result_is_late() {
        let run = Uuid::new_v4();
        let states = HashMap::from([(run, state(1, RunStatus::Dispatched, 1))]);
        let once = result("poll", run, 1, Outcome::Succeeded);
        let results = [once.clone(), once];
        let plan = planned(&results, &states, &Chains::default());
        assert_eq!(plan.ended.len(), 1);
        assert_eq!(plan.late.len(), 1);
    }

    fn chain(parent: &str, child: &str, run_if: RunIf) -> Chains {
        let mut chains = Chains::default();
        chains.define(
            JobId::parse(parent).unwrap(),
            Child {
                def: crate::fixtures::def(child, 0),
                run_if,
            },
        );
        chains
    }

    #[test]
    fn an_ended_parent_starts_its_child_once_and_a_failed_one_skips_it() {
        let chains = chain("walk", "status", RunIf::Success);
        let ok = Uuid::new_v4();
        let bad = Uuid::new_v4();
        let retrying = Uuid::new_v4();
        let states = HashMap::from([
            (ok, state(1, RunStatus::Dispatched, 1)),
            (bad, state(1, RunStatus::Dispatched, 1)),
            (retrying, state(1, RunStatus::Dispatched, 2)),
        ]);
        let results = [
            result("walk", ok, 1, Outcome::Succeeded),
            result("walk", ok, 1, Outcome::Succeeded),
            result("walk", bad, 1, Outcome::Failed),
            result("walk", retrying, 1, Outcome::Failed),
        ];
        let plan = planned(&results, &states, &chains);
        assert_eq!(plan.triggered.len(), 1);
        assert_eq!(plan.triggered[0].parent_run, ok);
        assert_eq!(plan.skipped.len(), 1);
        assert_eq!(plan.skipped[0].parent_run, bad);
        assert_eq!(plan.retries.len(), 1, "a retried parent starts nothing yet");
    }

    #[test]
    fn fencing_alone_decides_only_successes_no_chain_listens_for() {
        let chains = chain("walk", "status", RunIf::Always);
        let run = Uuid::new_v4();
        assert!(fencing_decides(
            &result("poll", run, 1, Outcome::Succeeded),
            &chains
        ));
        assert!(!fencing_decides(
            &result("walk", run, 1, Outcome::Succeeded),
            &chains
        ));
        assert!(!fencing_decides(
            &result("poll", run, 1, Outcome::Failed),
            &chains
        ));
    }

    #[test]
    fn a_run_with_any_result_to_plan_is_planned_whole() {
        let chains = chain("walk", "status", RunIf::Always);
        let (simple, mixed, parent) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let results = [
            result("poll", simple, 1, Outcome::Succeeded),
            result("poll", mixed, 1, Outcome::Succeeded),
            result("poll", mixed, 1, Outcome::Failed),
            result("walk", parent, 1, Outcome::Succeeded),
        ];
        let (fenced, planned) = split(&results, &chains);
        let ids = |rs: &[&RunResult]| rs.iter().map(|r| r.run_id).collect::<Vec<_>>();
        assert_eq!(ids(&fenced), [simple]);
        assert_eq!(ids(&planned), [mixed, mixed, parent]);
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Succeeded),
            Just(Outcome::Failed),
            Just(Outcome::Interrupted),
            Just(Outcome::TimedOut),
        ]
    }

    fn status() -> impl Strategy<Value = RunStatus> {
        proptest::sample::select(RunStatus::ALL.to_vec())
    }

    proptest! {
        /// Any batch over a few runs: every result lands in exactly one place, a run is decided
        /// at most once, only a result of the current attempt of an open run changes it, and
        /// each ended parent gets exactly one run of its child.
        #[test]
        fn nothing_is_lost_and_nothing_applies_twice(
            runs in proptest::collection::vec((1u32..4, status(), 1u32..4, any::<bool>()), 1..6),
            picks in proptest::collection::vec((0usize..6, 1u32..4, outcome()), 0..20),
        ) {
            let ids: Vec<Uuid> = (0..runs.len()).map(|_| Uuid::new_v4()).collect();
            let mut states = HashMap::new();
            for (id, (attempt, status, max, known)) in ids.iter().zip(&runs) {
                if *known {
                    states.insert(*id, state(*attempt, *status, *max));
                }
            }
            let results: Vec<RunResult> = picks
                .iter()
                .map(|(i, attempt, outcome)| result("walk", ids[i % ids.len()], *attempt, *outcome))
                .collect();
            let chains = chain("walk", "status", RunIf::Always);
            let plan = planned(&results, &states, &chains);

            prop_assert_eq!(
                plan.ended.len() + plan.retries.len() + plan.late.len(),
                results.len()
            );
            let mut changed = HashSet::new();
            let applied = plan
                .ended
                .iter()
                .map(|(r, _)| *r)
                .chain(plan.retries.iter().map(|r| r.result));
            for r in applied {
                prop_assert!(changed.insert(r.run_id), "run {} decided twice", r.run_id);
                let s = &states[&r.run_id];
                prop_assert_eq!(s.attempt, r.attempt);
                prop_assert!(!s.status.is_terminal());
            }
            // RunIf::Always: every ended parent starts exactly one child run, none skipped.
            prop_assert!(plan.skipped.is_empty());
            let mut parents: Vec<Uuid> = plan.triggered.iter().map(|t| t.parent_run).collect();
            parents.sort();
            let mut ended: Vec<Uuid> = plan.ended.iter().map(|(r, _)| r.run_id).collect();
            ended.sort();
            prop_assert_eq!(parents, ended);
        }
    }
}
