//! Pure: which queue each worker serves, and why each change was made.
//!
//! `decide` is a deterministic function of its inputs (queues, workers, demand, cooling, policy,
//! now): the same inputs in any order give the same output. A worker serves one queue or none;
//! a queue is served by whole workers, as many as its pending work needs in slots, within
//! `min_workers` and `max_workers`.
//!
//! One cycle, in order:
//! 1. Unfit assignments end (queue gone, a kind the worker lacks, a pool outside the queue's
//!    home pools under strict isolation, above `max_workers`): forced, cooling or not.
//! 2. Scale in: a queue with fresh demand gives back the workers its pending work does not
//!    need (borrowed ones first, then the least busy), never below `min_workers`. A queue whose
//!    demand is stale keeps every worker.
//! 3. Scale out, most urgent queue first (priority 1, then name): first up to `min_workers`,
//!    then until its workers' slots cover its pending work. Sources, in order: an idle worker
//!    of a home pool; (flexible) a home-pool worker lent to another pool's queue, `returned`;
//!    (flexible) an idle worker of a pool whose own queues have no demand, `borrowed_from`;
//!    (preemption) a worker of a less urgent queue above its minimum, `preempted_by`.
//! 4. Every pool with a changed worker cools until `now + cooling_period`; the workers of a
//!    cooling pool do not move (step 1 aside), with one exception: a queue with work whose
//!    workers all stopped beating (dead, cut off) takes an idle home-pool worker, cooling or
//!    not, as its `replacement` (step 3, before any other source), so a dead worker's runs
//!    run elsewhere within seconds.
//!
//! `maintenance_mode` changes nothing. Unstable workers keep what they have and take nothing new.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::messages::Kind;

mod working;

use working::State;

/// A queue as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: QueueName,
    /// 1 is the most urgent.
    pub priority: u8,
    pub min_workers: u32,
    pub max_workers: Option<u32>,
    pub home_pools: BTreeSet<PoolName>,
    /// Kinds submitted to it; a queue with none yet is served by nobody.
    pub kinds: BTreeSet<Kind>,
}

/// A registered worker as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub id: WorkerId,
    pub pool: PoolName,
    pub capacity: u32,
    pub kinds: BTreeSet<Kind>,
    /// Runs in progress now: the least busy worker is the first given back.
    pub in_progress: u32,
    /// False for an unstable worker (a beat missed): it keeps its queue and takes no new one.
    pub usable: bool,
    /// The queue it serves now.
    pub current: Option<QueueName>,
}

/// A queue's demand in the latest snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Runs waiting or running.
    pub pending: u64,
    /// Set when a provider feeding the queue failed (or the snapshot is old): since when.
    pub stale_since: Option<DateTime<Utc>>,
}

/// The hot configuration the decision follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub strict_isolation: bool,
    pub preemption: bool,
    pub cooling_period: chrono::Duration,
    pub maintenance: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            strict_isolation: true,
            preemption: false,
            cooling_period: chrono::Duration::seconds(30),
            maintenance: false,
        }
    }
}

/// Everything the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub queues: &'a [QueueSpec],
    pub workers: &'a [WorkerSpec],
    /// A queue missing here has no snapshot yet: it is treated as stale.
    pub demand: &'a BTreeMap<QueueName, Demand>,
    /// Pool to the end of its cooling; entries in the past are ignored.
    pub cooling: &'a BTreeMap<PoolName, DateTime<Utc>>,
    pub policy: Policy,
    pub now: DateTime<Utc>,
}

/// Why a worker's queue changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    ScaleOut,
    ScaleIn,
    PreemptedBy(QueueName),
    BorrowedFrom(PoolName),
    Returned,
    /// A queue with work whose workers all stopped beating takes an idle worker, even from a
    /// cooling pool: cooling never leaves a dead worker's runs unserved.
    Replacement,
    /// Forced: the assignment became impossible (the text says why).
    Unfit(String),
}

impl Reason {
    /// The reason without its argument, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::ScaleOut => "scale_out",
            Reason::ScaleIn => "scale_in",
            Reason::PreemptedBy(_) => "preempted",
            Reason::BorrowedFrom(_) => "borrowed",
            Reason::Returned => "returned",
            Reason::Replacement => "replacement",
            Reason::Unfit(_) => "unfit",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ScaleOut => f.write_str("scale_out"),
            Reason::ScaleIn => f.write_str("scale_in"),
            Reason::PreemptedBy(queue) => write!(f, "preempted_by {queue}"),
            Reason::BorrowedFrom(pool) => write!(f, "borrowed_from {pool}"),
            Reason::Returned => f.write_str("returned"),
            Reason::Replacement => f.write_str("replacement"),
            Reason::Unfit(why) => write!(f, "unfit: {why}"),
        }
    }
}

/// Why a queue did not get the workers its demand asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    CoolingUntil(DateTime<Utc>),
    /// `None`: no snapshot of this queue's demand has arrived yet.
    StaleSince(Option<DateTime<Utc>>),
    MaxWorkers,
    /// The workers that could serve it serve other queues: preemption is off, or could take
    /// none of them (as urgent, or at their own minimum).
    NoIdleWorker {
        preemption: bool,
    },
    /// No registered worker of its home pools supports its kinds.
    NoEligibleWorker,
    Maintenance,
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::CoolingUntil(t) => write!(f, "held: cooling until {}", t.to_rfc3339()),
            Hold::StaleSince(Some(t)) => write!(f, "held: demand stale since {}", t.to_rfc3339()),
            Hold::StaleSince(None) => f.write_str("held: demand stale since start (no snapshot)"),
            Hold::MaxWorkers => f.write_str("held: max_workers"),
            Hold::NoIdleWorker { preemption: false } => f.write_str(
                "held: no idle worker (those that could serve it serve other queues; preemption_mode is off)",
            ),
            Hold::NoIdleWorker { preemption: true } => f.write_str(
                "held: no idle worker (those that could serve it serve queues as urgent or at their min_workers)",
            ),
            Hold::NoEligibleWorker => {
                f.write_str("held: no idle worker of its home pools with its kinds")
            }
            Hold::Maintenance => f.write_str("held: maintenance_mode"),
        }
    }
}

/// One worker's move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub worker: WorkerId,
    pub pool: PoolName,
    pub from: Option<QueueName>,
    pub to: Option<QueueName>,
    pub reason: Reason,
}

/// A queue after the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOutcome {
    pub queue: QueueName,
    pub workers: u32,
    /// Slots of its workers.
    pub capacity: u64,
    pub pending: u64,
    pub stale: bool,
    /// Set when it has fewer workers than its demand or minimum asks for.
    pub hold: Option<Hold>,
}

/// The decision: the queue of every worker, each change with its reason, each queue's state,
/// and the pools that start cooling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub assignment: BTreeMap<WorkerId, Option<QueueName>>,
    pub changes: Vec<Change>,
    pub queues: Vec<QueueOutcome>,
    pub cooling: BTreeMap<PoolName, DateTime<Utc>>,
}

/// Decides the next assignment. See the module documentation for the rules.
pub fn decide(inputs: Inputs<'_>) -> Decision {
    let mut s = State::new(inputs);
    let mut holds: BTreeMap<usize, Hold> = BTreeMap::new();
    if inputs.policy.maintenance {
        for q in 0..s.queues.len() {
            if s.wants_more(q) {
                holds.insert(q, Hold::Maintenance);
            }
        }
        let mut decision = s.finish(inputs, holds);
        // Nothing moves, not even a worker whose queue is gone.
        decision.changes.clear();
        decision.cooling.clear();
        for worker in inputs.workers {
            decision
                .assignment
                .insert(worker.id.clone(), worker.current.clone());
        }
        return decision;
    }
    s.drop_unfit();
    let mut order: Vec<usize> = (0..s.queues.len()).collect();
    order.sort_by_key(|&q| (s.queues[q].priority, q));
    // A queue that got a worker late in a pass may now spare one to a more urgent queue that
    // found none earlier, and a worker returned to its pool may leave the queue it was lent to
    // below its minimum: passes repeat until one moves nothing (bounded: workers only move
    // towards more urgent queues, out of idleness, or home).
    // A worker taken late makes an earlier, smaller one surplus: each pass scales in first.
    for _ in 0..=s.workers.len() {
        let mut again = s.scale_in();
        for minimum in [true, false] {
            for &q in &order {
                while s.below_max(q)
                    && if minimum {
                        s.members[q].len() < s.queues[q].min_workers as usize || s.orphaned(q)
                    } else {
                        s.stale[q].is_none() && s.capacity[q] < s.pending[q]
                    }
                {
                    if !s.take_one(q) {
                        break;
                    }
                    again = true;
                }
            }
        }
        if !again {
            break;
        }
    }
    let census = s.census();
    for q in 0..s.queues.len() {
        if let Some(hold) = s.hold(q, &census) {
            holds.insert(q, hold);
        }
    }
    s.finish(inputs, holds)
}

#[cfg(test)]
mod tests;
