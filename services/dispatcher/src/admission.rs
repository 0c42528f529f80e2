//! Pure: which runs may start now without overloading a target.
//!
//! Each target has a limit of runs in flight. A run offered when its target is full waits in
//! that target's queue, ordered by priority (1 first) then by arrival, and is admitted the
//! moment a run of the same target ends. Runs without a target are never held. The state is
//! rebuilt from PostgreSQL at start (runs in flight, runs waiting), so it survives a restart.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use faro_shared::domain::TargetId;
use faro_shared::messages::RunMessage;
use uuid::Uuid;

/// Per-target limits: a default and overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub default: u32,
    pub per_target: HashMap<TargetId, u32>,
}

impl Limits {
    pub fn of(&self, target: &TargetId) -> u32 {
        self.per_target
            .get(target)
            .copied()
            .unwrap_or(self.default)
            .max(1)
    }
}

/// A waiting run, ordered by priority then arrival.
#[derive(Debug)]
struct Waiting {
    key: (Reverse<u8>, Reverse<u64>),
    run: RunMessage,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

#[derive(Debug, Default)]
struct Target {
    /// Runs of this target admitted and not yet ended.
    in_flight: Vec<Uuid>,
    waiting: BinaryHeap<Waiting>,
    /// Ids in `waiting`, so a run offered twice waits once.
    waiting_ids: HashSet<Uuid>,
}

/// The admission state of every target.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    targets: HashMap<TargetId, Target>,
    arrivals: u64,
    /// Maintenance mode: nothing new starts; runs in flight finish.
    paused: bool,
    /// Runs without a target held while paused.
    held: Vec<RunMessage>,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            targets: HashMap::new(),
            arrivals: 0,
            paused: false,
            held: Vec::new(),
        }
    }

    /// Maintenance mode on: offers wait, ends start nothing. Off: whatever fits starts now.
    pub fn set_paused(&mut self, paused: bool) -> Vec<RunMessage> {
        self.paused = paused;
        self.fill_all()
    }

    /// A new default limit (targets without their own): whatever now fits starts.
    pub fn set_default_limit(&mut self, limit: u32) -> Vec<RunMessage> {
        self.limits.default = limit.max(1);
        self.fill_all()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn fill_all(&mut self) -> Vec<RunMessage> {
        if self.paused {
            return Vec::new();
        }
        let mut admitted = std::mem::take(&mut self.held);
        for (id, target) in &mut self.targets {
            let limit = self.limits.of(id) as usize;
            admitted.extend(Self::fill(target, limit));
        }
        admitted
    }

    /// Records a run already in flight (found at start).
    pub fn restore_in_flight(&mut self, target: TargetId, run: Uuid) {
        self.targets.entry(target).or_default().in_flight.push(run);
    }

    /// Offers runs in order; returns those that may start now. The others wait.
    pub fn offer(&mut self, runs: Vec<RunMessage>) -> Vec<RunMessage> {
        let mut admitted = Vec::with_capacity(runs.len());
        for run in runs {
            let Some(target_id) = run.target.clone() else {
                if self.paused {
                    if !self.held.iter().any(|h| h.run_id == run.run_id) {
                        self.held.push(run);
                    }
                } else {
                    admitted.push(run);
                }
                continue;
            };
            let limit = self.limits.of(&target_id) as usize;
            let target = self.targets.entry(target_id).or_default();
            if target.in_flight.contains(&run.run_id) {
                // Offered again (a republish): it already holds its slot.
                admitted.push(run);
            } else if target.waiting_ids.contains(&run.run_id) {
                // Offered again while waiting: it keeps its place.
            } else if !self.paused && target.in_flight.len() < limit && target.waiting.is_empty() {
                target.in_flight.push(run.run_id);
                admitted.push(run);
            } else {
                self.arrivals += 1;
                target.waiting_ids.insert(run.run_id);
                target.waiting.push(Waiting {
                    key: (Reverse(run.priority.get()), Reverse(self.arrivals)),
                    run,
                });
                // A more urgent arrival may go before others, never past the limit.
                if !self.paused {
                    admitted.extend(Self::fill(target, limit));
                }
            }
        }
        admitted
    }

    /// A run of `target` ended (or its attempt did): frees its slot; returns the runs that
    /// may start now.
    pub fn release(&mut self, target: &TargetId, run: Uuid) -> Vec<RunMessage> {
        let limit = self.limits.of(target) as usize;
        let Some(state) = self.targets.get_mut(target) else {
            return Vec::new();
        };
        state.in_flight.retain(|id| *id != run);
        let admitted = if self.paused {
            Vec::new()
        } else {
            Self::fill(state, limit)
        };
        if state.in_flight.is_empty() && state.waiting.is_empty() {
            self.targets.remove(target);
        }
        admitted
    }

    /// Runs of `target` in flight, and waiting.
    pub fn load(&self, target: &TargetId) -> (usize, usize) {
        self.targets
            .get(target)
            .map_or((0, 0), |t| (t.in_flight.len(), t.waiting.len()))
    }

    /// Runs waiting over all targets (and held without one).
    pub fn waiting(&self) -> usize {
        self.targets
            .values()
            .map(|t| t.waiting.len())
            .sum::<usize>()
            + self.held.len()
    }

    fn fill(target: &mut Target, limit: usize) -> Vec<RunMessage> {
        let mut admitted = Vec::new();
        while target.in_flight.len() < limit {
            let Some(next) = target.waiting.pop() else {
                break;
            };
            target.waiting_ids.remove(&next.run.run_id);
            target.in_flight.push(next.run.run_id);
            admitted.push(next.run);
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn run(target: Option<&str>, priority: u8) -> RunMessage {
        fixtures::run("j", target, priority)
    }
    use proptest::prelude::*;

    fn limits(default: u32) -> Limits {
        Limits {
            default,
            per_target: HashMap::new(),
        }
    }

    fn t(name: &str) -> TargetId {
        TargetId::parse(name).unwrap()
    }

    #[test]
    fn a_full_target_holds_runs_until_one_ends() {
        let mut a = Admission::new(limits(2));
        let runs: Vec<_> = (0..5).map(|_| run(Some("olt"), 5)).collect();
        let admitted = a.offer(runs.clone());
        assert_eq!(admitted.len(), 2);
        assert_eq!(a.load(&t("olt")), (2, 3));
        let next = a.release(&t("olt"), admitted[0].run_id);
        assert_eq!(next.len(), 1);
        assert_eq!(
            next[0].run_id, runs[2].run_id,
            "waiting runs go in arrival order"
        );
        assert_eq!(a.load(&t("olt")), (2, 2));
    }

    #[test]
    fn urgent_runs_wait_less() {
        let mut a = Admission::new(limits(1));
        let first = a.offer(vec![run(Some("olt"), 5)]);
        let low = run(Some("olt"), 9);
        let high = run(Some("olt"), 1);
        assert!(a.offer(vec![low.clone(), high.clone()]).is_empty());
        let next = a.release(&t("olt"), first[0].run_id);
        assert_eq!(next[0].run_id, high.run_id);
        let next = a.release(&t("olt"), high.run_id);
        assert_eq!(next[0].run_id, low.run_id);
    }

    #[test]
    fn targets_are_independent_and_untargeted_runs_never_wait() {
        let mut a = Admission::new(Limits {
            default: 1,
            per_target: HashMap::from([(t("big"), 3)]),
        });
        let offered = vec![
            run(Some("small"), 5),
            run(Some("small"), 5),
            run(Some("big"), 5),
            run(Some("big"), 5),
            run(Some("big"), 5),
            run(None, 5),
            run(None, 5),
        ];
        assert_eq!(a.offer(offered).len(), 6);
        assert_eq!(a.load(&t("small")), (1, 1));
        assert_eq!(a.load(&t("big")), (3, 0));
    }

    #[test]
    fn maintenance_holds_new_starts_and_lets_them_go_after() {
        let mut a = Admission::new(limits(2));
        let running = a.offer(vec![run(Some("olt"), 5)]);
        assert!(a.set_paused(true).is_empty());
        assert!(a
            .offer(vec![
                run(Some("olt"), 5),
                run(Some("other"), 5),
                run(None, 5)
            ])
            .is_empty());
        // A run ending during maintenance frees its slot but starts nothing.
        assert!(a.release(&t("olt"), running[0].run_id).is_empty());
        assert_eq!(a.waiting(), 3);
        let resumed = a.set_paused(false);
        assert_eq!(resumed.len(), 3);
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn a_higher_default_limit_starts_waiting_runs_at_once() {
        let mut a = Admission::new(limits(1));
        a.offer((0..4).map(|_| run(Some("olt"), 5)).collect());
        assert_eq!(a.load(&t("olt")), (1, 3));
        assert_eq!(a.set_default_limit(3).len(), 2);
        assert_eq!(a.load(&t("olt")), (3, 1));
    }

    #[test]
    fn runs_found_in_flight_at_start_count() {
        let mut a = Admission::new(limits(2));
        a.restore_in_flight(t("olt"), Uuid::new_v4());
        a.restore_in_flight(t("olt"), Uuid::new_v4());
        assert!(a.offer(vec![run(Some("olt"), 1)]).is_empty());
        // A republish of a run already in flight keeps its slot, takes no other.
        let mut b = Admission::new(limits(1));
        let r = run(Some("olt"), 5);
        assert_eq!(b.offer(vec![r.clone()]).len(), 1);
        assert_eq!(b.offer(vec![r]).len(), 1);
        assert_eq!(b.load(&t("olt")), (1, 0));
    }

    #[test]
    fn a_waiting_run_offered_again_waits_once() {
        let mut a = Admission::new(limits(1));
        let first = a.offer(vec![run(Some("olt"), 5)]);
        let waiting = run(Some("olt"), 5);
        assert!(a.offer(vec![waiting.clone()]).is_empty());
        assert!(a.offer(vec![waiting.clone()]).is_empty());
        assert_eq!(a.load(&t("olt")), (1, 1));
        assert_eq!(a.release(&t("olt"), first[0].run_id).len(), 1);
        assert_eq!(a.load(&t("olt")), (1, 0));
    }

    proptest! {
        /// Whatever the order of offers and ends, no target exceeds its limit, no run is lost
        /// or admitted twice, and a target with room has nobody waiting.
        #[test]
        fn the_limit_always_holds_and_nothing_is_lost(
            limit in 1u32..5,
            ops in proptest::collection::vec((0u8..3, 0usize..4, 1u8..=10), 1..200),
        ) {
            let names = ["a", "b", "c", "d"];
            let mut a = Admission::new(limits(limit));
            let mut running: Vec<(TargetId, Uuid)> = Vec::new();
            let mut offered = 0usize;
            let mut admitted_total = 0usize;
            let mut ended = 0usize;
            for (op, target, priority) in ops {
                let admitted = if op < 2 {
                    offered += 1;
                    a.offer(vec![run(Some(names[target]), priority)])
                } else if let Some(i) = running.iter().position(|(t, _)| t.as_str() == names[target]) {
                    let (t, id) = running.remove(i);
                    ended += 1;
                    a.release(&t, id)
                } else {
                    Vec::new()
                };
                for r in admitted {
                    admitted_total += 1;
                    prop_assert!(!running.iter().any(|(_, id)| *id == r.run_id));
                    running.push((r.target.clone().unwrap(), r.run_id));
                }
                for name in names {
                    let (in_flight, waiting) = a.load(&t(name));
                    prop_assert!(in_flight <= limit as usize);
                    prop_assert!(waiting == 0 || in_flight == limit as usize);
                }
            }
            prop_assert_eq!(offered, admitted_total + a.waiting());
            prop_assert_eq!(running.len(), admitted_total - ended);
        }
    }
}
