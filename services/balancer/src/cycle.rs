//! Pure: one balancing cycle around [`decide`](crate::decide::decide), split so that the
//! state's lock is held only to read it and to fold the result back, never while PostgreSQL
//! or NATS is written:
//! 1. [`prepare`] (lock held): what the decision and the writes need, copied from the state.
//! 2. `decide`, then [`outcome`] (no lock): everything the cycle writes, derived from the
//!    decision: assignments to put and remove, events to publish, holds, cooling, pools.
//! 3. The balancer writes it (no lock), noting in [`Written`] what was written.
//! 4. [`commit`] (lock held): what was written becomes the state.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::messages::{Assignment, BalancerEvent, WorkerSettings};

use crate::decide::{Decision, Demand, QueueSpec, WorkerSpec};
use crate::registry::{Entry, Event, RegState};
use crate::state::State;

/// What a cycle reads from the state, copied under its lock.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Live workers with a heartbeat, as the decision sees them.
    pub workers: Vec<WorkerSpec>,
    /// Each queue's pending work and since when its demand is stale.
    pub demand: BTreeMap<QueueName, Demand>,
    /// Registry rows changed since they were saved.
    pub dirty: Vec<(WorkerId, Entry)>,
    /// Registry events not saved yet.
    pub events: Vec<Event>,
    /// The assignment last written for each worker.
    pub assigned: BTreeMap<WorkerId, Assignment>,
    /// The hold last recorded for each queue.
    pub holds: BTreeMap<QueueName, Option<String>>,
    /// The age of the oldest live worker's last beat.
    pub oldest_beat: Duration,
    /// Workers in the registry by state.
    pub by_state: BTreeMap<&'static str, u32>,
}

/// Reads what a cycle at `now` needs. A snapshot older than `demand_max_age` is stale.
pub fn prepare(state: &State, now: DateTime<Utc>, demand_max_age: Duration) -> Prepared {
    let workers = state
        .registry
        .live()
        .filter_map(|(id, entry)| {
            let beat = entry.beat.as_ref()?;
            Some(WorkerSpec {
                id: id.clone(),
                pool: beat.pool.clone(),
                capacity: beat.capacity,
                kinds: beat.kinds.iter().copied().collect(),
                in_progress: beat.in_progress,
                usable: entry.state == RegState::Active,
                current: state
                    .assigned
                    .get(id)
                    .and_then(|a| a.queues.first().cloned()),
            })
        })
        .collect();
    let max_age = chrono::Duration::from_std(demand_max_age).unwrap_or(chrono::Duration::MAX);
    let demand = state
        .demand
        .iter()
        .map(|(queue, (snapshot, since))| {
            let old = now - snapshot.collected_at > max_age;
            let stale_since = since.or(old.then_some(snapshot.collected_at));
            let demand = Demand {
                pending: snapshot.pending,
                stale_since,
            };
            (queue.clone(), demand)
        })
        .collect();
    let oldest_beat = state
        .registry
        .live()
        .map(|(_, entry)| now - entry.last_seen)
        .max()
        .and_then(|age| age.to_std().ok())
        .unwrap_or_default();
    let mut by_state = BTreeMap::new();
    for entry in state.registry.workers.values() {
        *by_state.entry(entry.state.as_str()).or_insert(0) += 1;
    }
    Prepared {
        workers,
        demand,
        dirty: state
            .registry
            .workers
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect(),
        events: state.events.clone(),
        assigned: state.assigned.clone(),
        holds: state.holds.clone(),
        oldest_beat,
        by_state,
    }
}

/// Everything a cycle writes, derived from its decision.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleOutcome {
    /// Assignments that changed (queues or settings), to put.
    pub put: Vec<Assignment>,
    /// Workers no longer live whose assignment is removed.
    pub remove: Vec<WorkerId>,
    /// Moves, and holds new since the last cycle (a hold is recorded once, not every cycle).
    pub events: Vec<BalancerEvent>,
    /// The hold of each queue now.
    pub holds: BTreeMap<QueueName, Option<String>>,
    /// Pools cooling after this cycle: those still cooling and those the decision cooled.
    pub cooling: BTreeMap<PoolName, DateTime<Utc>>,
    /// Each pool's live workers and the end of its cooling.
    pub pools: BTreeMap<PoolName, (u32, Option<DateTime<Utc>>)>,
}

/// What `decision` writes, from what [`prepare`] read and the cooling stored before it.
pub fn outcome(
    prepared: &Prepared,
    decision: &Decision,
    cooling: &BTreeMap<PoolName, DateTime<Utc>>,
    settings: &WorkerSettings,
    now: DateTime<Utc>,
) -> CycleOutcome {
    let mut put = Vec::new();
    for (worker, queue) in &decision.assignment {
        let queues: Vec<QueueName> = queue.iter().cloned().collect();
        let unchanged = prepared
            .assigned
            .get(worker)
            .is_some_and(|a| a.queues == queues && &a.settings == settings);
        if !unchanged {
            put.push(Assignment {
                worker_id: worker.clone(),
                queues,
                settings: settings.clone(),
                updated_at: now,
            });
        }
    }
    let remove = prepared
        .assigned
        .keys()
        .filter(|w| !decision.assignment.contains_key(*w))
        .cloned()
        .collect();
    let mut events: Vec<BalancerEvent> = decision
        .changes
        .iter()
        .map(|change| BalancerEvent {
            at: now,
            queue: change.to.clone().or_else(|| change.from.clone()),
            worker: Some(change.worker.clone()),
            pool: Some(change.pool.clone()),
            from: change.from.clone(),
            to: change.to.clone(),
            reason: change.reason.to_string(),
        })
        .collect();
    let holds: BTreeMap<QueueName, Option<String>> = decision
        .queues
        .iter()
        .map(|q| (q.queue.clone(), q.hold.as_ref().map(ToString::to_string)))
        .collect();
    for (queue, hold) in &holds {
        let before = prepared.holds.get(queue).cloned().flatten();
        if let Some(reason) = hold.as_ref().filter(|r| before.as_ref() != Some(*r)) {
            events.push(BalancerEvent {
                at: now,
                queue: Some(queue.clone()),
                worker: None,
                pool: None,
                from: None,
                to: None,
                reason: reason.clone(),
            });
        }
    }
    let mut cooling_now: BTreeMap<PoolName, DateTime<Utc>> = cooling
        .iter()
        .filter(|(_, until)| **until > now)
        .map(|(pool, until)| (pool.clone(), *until))
        .collect();
    cooling_now.extend(decision.cooling.clone());
    let mut pools: BTreeMap<PoolName, (u32, Option<DateTime<Utc>>)> = BTreeMap::new();
    for worker in &prepared.workers {
        pools.entry(worker.pool.clone()).or_default().0 += 1;
    }
    for (pool, until) in &cooling_now {
        pools.entry(pool.clone()).or_default().1 = Some(*until);
    }
    CycleOutcome {
        put,
        remove,
        events,
        holds,
        cooling: cooling_now,
        pools,
    }
}

/// What the balancer wrote of a cycle's outcome, step by step: a step that failed stops the
/// cycle, and what was written before it is still folded into the state.
#[derive(Debug, Default, PartialEq)]
pub struct Written {
    /// The registry rows and events prepared were saved.
    pub registry: bool,
    /// Assignments put.
    pub put: Vec<Assignment>,
    /// Assignments removed.
    pub removed: Vec<WorkerId>,
    /// Every step succeeded: the cycle's holds, cooling and decision are now the state's.
    pub all: bool,
}

/// Folds what was written into the state. Events and rows saved are no longer pending (the
/// ones that came since stay); the next cycle writes whatever was not.
pub fn commit(
    state: &mut State,
    prepared: &Prepared,
    outcome: CycleOutcome,
    written: Written,
    last: (Decision, Vec<QueueSpec>),
) {
    if written.registry {
        let saved = prepared.events.len().min(state.events.len());
        state.events.drain(..saved);
        for (id, saved) in &prepared.dirty {
            if let Some(entry) = state.registry.workers.get_mut(id) {
                // Changed again since it was read: it stays dirty.
                if entry == saved {
                    entry.dirty = false;
                }
            }
        }
    }
    for assignment in written.put {
        state
            .assigned
            .insert(assignment.worker_id.clone(), assignment);
    }
    for worker in written.removed {
        state.assigned.remove(&worker);
    }
    if written.all {
        state.holds = outcome.holds;
        state.cooling = outcome.cooling;
        state.last = Some(last);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::decide::{Change, Hold, QueueOutcome, Reason};
    use crate::fixtures::{assignment, beat, pool, queue, snapshot, t, worker};

    /// Two live workers (w1 serving q1), one that left, and demand of q1 (fresh) and q2 (old).
    fn state() -> State {
        let mut state = State::default();
        state.registry.beat(beat("w1", "a", t(0)), t(0));
        state.registry.beat(beat("w2", "a", t(0)), t(0));
        state.registry.beat(beat("w3", "b", t(0)), t(0));
        state.registry.left(&worker("w3"), t(1));
        state
            .assigned
            .insert(worker("w1"), assignment("w1", &["q1"]));
        state
            .demand
            .insert(queue("q1"), (snapshot("q1", 4, t(9)), None));
        state
            .demand
            .insert(queue("q2"), (snapshot("q2", 7, t(-100)), None));
        state
    }

    #[test]
    fn prepare_reads_live_workers_with_their_queue_and_ages_demand() {
        let state = state();
        let prepared = prepare(&state, t(10), Duration::from_secs(60));
        let workers: Vec<(&str, Option<&str>)> = prepared
            .workers
            .iter()
            .map(|w| (w.id.as_str(), w.current.as_ref().map(QueueName::as_str)))
            .collect();
        assert_eq!(workers, [("w1", Some("q1")), ("w2", None)]);
        assert_eq!(prepared.demand[&queue("q1")].stale_since, None);
        assert_eq!(prepared.demand[&queue("q2")].stale_since, Some(t(-100)));
        assert_eq!(prepared.demand[&queue("q2")].pending, 7);
        assert_eq!(prepared.dirty.len(), 3, "every entry is new, so unsaved");
        assert_eq!(prepared.by_state.get("left"), Some(&1));
        assert_eq!(prepared.oldest_beat, Duration::from_secs(10));
    }

    fn outcome_of(q: &str, hold: Option<Hold>) -> QueueOutcome {
        QueueOutcome {
            queue: queue(q),
            workers: 1,
            capacity: 2,
            pending: 4,
            stale: false,
            hold,
        }
    }

    #[test]
    fn outcome_writes_only_what_changed_and_records_a_hold_once() {
        let mut state = state();
        state
            .assigned
            .insert(worker("gone"), assignment("gone", &["q2"]));
        state
            .holds
            .insert(queue("q1"), Some(Hold::MaxWorkers.to_string()));
        let prepared = prepare(&state, t(10), Duration::from_secs(60));
        let decision = Decision {
            assignment: BTreeMap::from([
                (worker("w1"), Some(queue("q1"))),
                (worker("w2"), Some(queue("q2"))),
            ]),
            changes: vec![Change {
                worker: worker("w2"),
                pool: pool("a"),
                from: None,
                to: Some(queue("q2")),
                reason: Reason::ScaleOut,
            }],
            queues: vec![
                outcome_of("q1", Some(Hold::MaxWorkers)),
                outcome_of("q2", Some(Hold::NoEligibleWorker)),
            ],
            cooling: BTreeMap::from([(pool("a"), t(70))]),
        };
        let cooling = BTreeMap::from([(pool("b"), t(5)), (pool("c"), t(40))]);
        let out = outcome(
            &prepared,
            &decision,
            &cooling,
            &WorkerSettings::default(),
            t(10),
        );
        let put: Vec<&str> = out.put.iter().map(|a| a.worker_id.as_str()).collect();
        assert_eq!(put, ["w2"], "w1's assignment is unchanged");
        assert_eq!(out.remove, [worker("gone")]);
        let reasons: Vec<(Option<&str>, &str)> = out
            .events
            .iter()
            .map(|e| (e.worker.as_ref().map(WorkerId::as_str), e.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2, "the move, and q2's new hold: {reasons:?}");
        assert_eq!(reasons[0].0, Some("w2"));
        assert_eq!(
            reasons[1],
            (None, Hold::NoEligibleWorker.to_string().as_str())
        );
        let cooling_now: BTreeSet<&str> = out.cooling.keys().map(PoolName::as_str).collect();
        assert_eq!(
            cooling_now,
            BTreeSet::from(["a", "c"]),
            "b's cooling has ended"
        );
        assert_eq!(out.pools[&pool("a")], (2, Some(t(70))));
        assert_eq!(out.pools[&pool("c")], (0, Some(t(40))));

        // Settings that changed rewrite every assignment.
        let stricter = WorkerSettings {
            cpu_max: 50,
            ..WorkerSettings::default()
        };
        let out = outcome(&prepared, &decision, &cooling, &stricter, t(10));
        assert_eq!(out.put.len(), 2);
    }

    fn nothing_decided() -> (Decision, Vec<QueueSpec>) {
        let decision = Decision {
            assignment: BTreeMap::new(),
            changes: Vec::new(),
            queues: Vec::new(),
            cooling: BTreeMap::new(),
        };
        (decision, Vec::new())
    }

    #[test]
    fn commit_folds_in_what_was_written_and_keeps_what_came_since() {
        let mut state = state();
        state.registry.tick(t(10), 5);
        state
            .events
            .extend(state.registry.left(&worker("w2"), t(2)));
        let prepared = prepare(&state, t(10), Duration::from_secs(60));
        let before = state.events.len();
        // While the cycle wrote: w1 beat again, and an event came.
        state.registry.beat(beat("w1", "a", t(11)), t(11));
        state
            .events
            .extend(state.registry.left(&worker("w1"), t(12)));
        let out = CycleOutcome {
            put: vec![assignment("w2", &["q2"])],
            remove: vec![worker("w1")],
            events: Vec::new(),
            holds: BTreeMap::from([(queue("q1"), Some("held".to_owned()))]),
            cooling: BTreeMap::new(),
            pools: BTreeMap::new(),
        };
        let written = Written {
            registry: true,
            put: out.put.clone(),
            removed: Vec::new(),
            all: false,
        };
        commit(&mut state, &prepared, out, written, nothing_decided());
        assert_eq!(
            state.events.len(),
            1,
            "saved: {before}; the one that came since stays"
        );
        assert!(
            state.registry.workers[&worker("w1")].dirty,
            "changed since it was read"
        );
        assert!(!state.registry.workers[&worker("w2")].dirty);
        assert_eq!(state.assigned[&worker("w2")].queues, [queue("q2")]);
        assert!(
            state.assigned.contains_key(&worker("w1")),
            "its removal failed"
        );
        assert!(
            state.holds.is_empty(),
            "a cycle that failed records no holds"
        );
        assert!(state.last.is_none());
    }

    #[test]
    fn a_cycle_whose_registry_save_failed_keeps_every_event_and_row() {
        let mut state = state();
        state
            .events
            .extend(state.registry.left(&worker("w2"), t(2)));
        let prepared = prepare(&state, t(10), Duration::from_secs(60));
        let out = outcome(
            &prepared,
            &nothing_decided().0,
            &BTreeMap::new(),
            &WorkerSettings::default(),
            t(10),
        );
        commit(
            &mut state,
            &prepared,
            out,
            Written::default(),
            nothing_decided(),
        );
        assert_eq!(state.events.len(), 1);
        assert!(state.registry.workers.values().all(|e| e.dirty));
    }
}
