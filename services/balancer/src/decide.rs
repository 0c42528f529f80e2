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
//!    cooling pool do not move (step 1 aside).
//!
//! `maintenance_mode` changes nothing. Unstable workers keep what they have and take nothing new.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::messages::Kind;

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

/// The decision's working state: indexes into the sorted inputs.
struct State<'a> {
    queues: Vec<&'a QueueSpec>,
    workers: Vec<&'a WorkerSpec>,
    policy: Policy,
    pools: Vec<&'a PoolName>,
    worker_pool: Vec<usize>,
    worker_mask: Vec<u8>,
    queue_mask: Vec<u8>,
    /// For each queue, its home pools as indexes.
    queue_homes: Vec<Vec<usize>>,
    pending: Vec<u64>,
    stale: Vec<Option<Option<DateTime<Utc>>>>,
    /// Cooling end for frozen pools.
    frozen: Vec<Option<DateTime<Utc>>>,
    /// The queue of each worker now.
    at: Vec<Option<usize>>,
    /// Why each worker last moved this cycle.
    why: Vec<Option<Reason>>,
    /// Workers of each queue.
    members: Vec<Vec<usize>>,
    capacity: Vec<u64>,
    /// Idle usable workers of non-frozen pools: pool -> kind mask -> worker indexes, the
    /// lowest id last (popped first).
    idle: Vec<BTreeMap<u8, Vec<usize>>>,
    /// Pools whose queues have demand (pending work or unknown demand).
    pool_demand: Vec<bool>,
    /// Workers of each pool serving another pool's queue.
    lent: Vec<BTreeSet<usize>>,
    /// Workers of each pool serving a queue, the least urgent queue first (then by name),
    /// then the least busy: where preemption looks for a worker.
    serving: Vec<BTreeSet<Key>>,
}

/// A worker serving a queue, ordered for preemption: (priority, reversed, queue, runs in
/// progress, worker).
type Key = (std::cmp::Reverse<u8>, usize, u32, usize);

fn mask(kinds: &BTreeSet<Kind>) -> u8 {
    kinds.iter().fold(0, |m, k| {
        m | 1 << Kind::ALL.iter().position(|x| x == k).unwrap_or(0)
    })
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
                        s.members[q].len() < s.queues[q].min_workers as usize
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

/// Workers of each pool by kind mask: how many, and how many usable ones serve a queue.
type Census = Vec<BTreeMap<u8, (u32, u32)>>;

impl<'a> State<'a> {
    fn new(inputs: Inputs<'a>) -> Self {
        // Sorted by name (the usual input already is), so the order of the input never matters.
        let mut queues: Vec<&QueueSpec> = inputs.queues.iter().collect();
        if !queues.is_sorted_by(|a, b| a.name <= b.name) {
            queues.sort_by(|a, b| a.name.cmp(&b.name));
        }
        queues.dedup_by(|a, b| a.name == b.name);
        let mut workers: Vec<&WorkerSpec> = inputs.workers.iter().collect();
        if !workers.is_sorted_by(|a, b| a.id <= b.id) {
            workers.sort_by(|a, b| a.id.cmp(&b.id));
        }
        workers.dedup_by(|a, b| a.id == b.id);

        let pools: Vec<&PoolName> = workers
            .iter()
            .map(|w| &w.pool)
            .chain(queues.iter().flat_map(|q| q.home_pools.iter()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let pool_at: std::collections::HashMap<&str, usize> = pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let pool_index = |p: &PoolName| pool_at.get(p.as_str()).copied().unwrap_or(0);
        let by_name: std::collections::HashMap<&str, usize> = queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.name.as_str(), i))
            .collect();
        let queue_index = |name: &QueueName| by_name.get(name.as_str()).copied();

        let frozen: Vec<Option<DateTime<Utc>>> = pools
            .iter()
            .map(|p| inputs.cooling.get(*p).copied().filter(|t| *t > inputs.now))
            .collect();
        let worker_pool: Vec<usize> = workers.iter().map(|w| pool_index(&w.pool)).collect();
        let queue_homes: Vec<Vec<usize>> = queues
            .iter()
            .map(|q| q.home_pools.iter().map(pool_index).collect())
            .collect();
        let pending: Vec<u64> = queues
            .iter()
            .map(|q| inputs.demand.get(&q.name).map_or(0, |d| d.pending))
            .collect();
        let stale: Vec<Option<Option<DateTime<Utc>>>> = queues
            .iter()
            .map(|q| match inputs.demand.get(&q.name) {
                None => Some(None),
                Some(d) => d.stale_since.map(Some),
            })
            .collect();
        let mut pool_demand = vec![false; pools.len()];
        for (q, homes) in queue_homes.iter().enumerate() {
            if pending[q] > 0 || stale[q].is_some() || queues[q].min_workers > 0 {
                for &p in homes {
                    pool_demand[p] = true;
                }
            }
        }
        let mut s = State {
            worker_mask: workers.iter().map(|w| mask(&w.kinds)).collect(),
            queue_mask: queues.iter().map(|q| mask(&q.kinds)).collect(),
            at: workers
                .iter()
                .map(|w| w.current.as_ref().and_then(queue_index))
                .collect(),
            why: vec![None; workers.len()],
            members: vec![Vec::new(); queues.len()],
            capacity: vec![0; queues.len()],
            idle: vec![BTreeMap::new(); pools.len()],
            lent: vec![BTreeSet::new(); pools.len()],
            serving: vec![BTreeSet::new(); pools.len()],
            policy: inputs.policy,
            queues,
            workers,
            pools,
            worker_pool,
            queue_homes,
            pending,
            stale,
            frozen,
            pool_demand,
        };
        let mut idle = Vec::new();
        for w in 0..s.workers.len() {
            match s.at[w] {
                Some(q) => {
                    if !s.is_home(q, w) {
                        s.lent[s.worker_pool[w]].insert(w);
                    }
                    let key = s.key(q, w);
                    s.serving[s.worker_pool[w]].insert(key);
                    s.members[q].push(w);
                    s.capacity[q] += u64::from(s.workers[w].capacity);
                }
                None if s.workers[w].current.is_some() => {
                    // Its queue is gone: forced off.
                    s.why[w] = Some(Reason::Unfit("its queue no longer exists".into()));
                    idle.push(w);
                }
                None => idle.push(w),
            }
        }
        // Highest index first, so each stack is built by pushes (the lowest id pops first).
        for &w in idle.iter().rev() {
            if s.movable(w) {
                s.idle[s.worker_pool[w]]
                    .entry(s.worker_mask[w])
                    .or_default()
                    .push(w);
            }
        }
        s
    }

    fn movable(&self, w: usize) -> bool {
        self.workers[w].usable && self.frozen[self.worker_pool[w]].is_none()
    }

    fn is_home(&self, q: usize, w: usize) -> bool {
        self.queue_homes[q].contains(&self.worker_pool[w])
    }

    fn supports(&self, q: usize, w: usize) -> bool {
        let need = self.queue_mask[q];
        need != 0 && self.worker_mask[w] & need == need
    }

    fn below_max(&self, q: usize) -> bool {
        self.queues[q]
            .max_workers
            .is_none_or(|max| self.members[q].len() < max as usize)
    }

    fn wants_more(&self, q: usize) -> bool {
        self.below_max(q)
            && (self.members[q].len() < self.queues[q].min_workers as usize
                || (self.stale[q].is_none() && self.capacity[q] < self.pending[q]))
    }

    /// Puts an idle worker in the idle index, if it may move.
    fn make_idle(&mut self, w: usize) {
        if self.movable(w) {
            let stack = self.idle[self.worker_pool[w]]
                .entry(self.worker_mask[w])
                .or_default();
            // Kept sorted by index descending, so the lowest id pops first.
            let at = stack.partition_point(|&x| x > w);
            stack.insert(at, w);
        }
    }

    fn unassign(&mut self, w: usize, reason: Reason) {
        if let Some(q) = self.at[w].take() {
            let key = self.key(q, w);
            self.serving[self.worker_pool[w]].remove(&key);
            self.lent[self.worker_pool[w]].remove(&w);
            self.members[q].retain(|&x| x != w);
            self.capacity[q] -= u64::from(self.workers[w].capacity);
        }
        self.why[w] = Some(reason);
        self.make_idle(w);
    }

    fn key(&self, q: usize, w: usize) -> Key {
        (
            std::cmp::Reverse(self.queues[q].priority),
            q,
            self.workers[w].in_progress,
            w,
        )
    }

    fn assign(&mut self, w: usize, q: usize, reason: Reason) {
        let p = self.worker_pool[w];
        if let Some(from) = self.at[w] {
            self.members[from].retain(|&x| x != w);
            self.capacity[from] -= u64::from(self.workers[w].capacity);
            let old = self.key(from, w);
            self.serving[p].remove(&old);
        }
        let key = self.key(q, w);
        self.serving[p].insert(key);
        if self.is_home(q, w) {
            self.lent[p].remove(&w);
        } else {
            self.lent[p].insert(w);
        }
        self.at[w] = Some(q);
        self.members[q].push(w);
        self.capacity[q] += u64::from(self.workers[w].capacity);
        self.why[w] = Some(reason);
    }

    /// Step 1: assignments that can no longer hold end, cooling or not.
    fn drop_unfit(&mut self) {
        for w in 0..self.workers.len() {
            let Some(q) = self.at[w] else { continue };
            let why = if !self.supports(q, w) {
                Some("the worker lacks a kind of the queue".to_owned())
            } else if self.policy.strict_isolation && !self.is_home(q, w) {
                Some(format!(
                    "strict isolation: pool {} is not a home pool of the queue",
                    self.workers[w].pool
                ))
            } else {
                None
            };
            if let Some(why) = why {
                self.unassign(w, Reason::Unfit(why));
            }
        }
        for q in 0..self.queues.len() {
            let Some(max) = self.queues[q].max_workers else {
                continue;
            };
            while self.members[q].len() > max as usize {
                let w = self.release_order(q, true)[0];
                self.unassign(w, Reason::Unfit(format!("above max_workers {max}")));
            }
        }
    }

    /// Workers of `q` in the order they are given back: borrowed first, then the least busy,
    /// then the highest id. With `all`, frozen and unstable workers too.
    fn release_order(&self, q: usize, all: bool) -> Vec<usize> {
        let mut order: Vec<usize> = self.members[q]
            .iter()
            .copied()
            .filter(|&w| all || self.movable(w))
            .collect();
        order.sort_by_key(|&w| {
            (
                self.is_home(q, w),
                self.workers[w].in_progress,
                std::cmp::Reverse(w),
            )
        });
        order
    }

    /// Step 2: fresh demand that needs fewer slots gives workers back; true if any did.
    fn scale_in(&mut self) -> bool {
        let mut released = false;
        for q in 0..self.queues.len() {
            if self.stale[q].is_some() {
                continue;
            }
            for w in self.release_order(q, false) {
                let min = self.queues[q].min_workers as usize;
                let cap = u64::from(self.workers[w].capacity);
                if self.members[q].len() > min && self.capacity[q] - cap >= self.pending[q] {
                    self.unassign(w, Reason::ScaleIn);
                    released = true;
                }
            }
        }
        released
    }

    /// Step 3: one more worker for `q`, from the first source that has one.
    fn take_one(&mut self, q: usize) -> bool {
        let need = self.queue_mask[q];
        if need == 0 {
            return false;
        }
        // An idle worker of a home pool.
        for i in 0..self.queue_homes[q].len() {
            let p = self.queue_homes[q][i];
            if let Some(w) = self.pop_idle(p, need) {
                self.assign(w, q, Reason::ScaleOut);
                return true;
            }
        }
        if !self.policy.strict_isolation {
            // A home-pool worker lent to another pool's queue comes back.
            let lent = self.queue_homes[q].iter().find_map(|&p| {
                self.lent[p].iter().copied().find(|&w| {
                    self.supports(q, w)
                        && self.movable(w)
                        && self.at[w].is_some_and(|other| self.stale[other].is_none())
                })
            });
            if let Some(w) = lent {
                self.assign(w, q, Reason::Returned);
                return true;
            }
            // An idle worker of a pool with no demand of its own.
            for p in 0..self.pools.len() {
                if self.pool_demand[p] || self.queue_homes[q].contains(&p) {
                    continue;
                }
                if let Some(w) = self.pop_idle(p, need) {
                    let lender = self.workers[w].pool.clone();
                    self.assign(w, q, Reason::BorrowedFrom(lender));
                    return true;
                }
            }
        }
        if self.policy.preemption {
            if let Some(w) = self.victim(q) {
                let by = self.queues[q].name.clone();
                self.assign(w, q, Reason::PreemptedBy(by));
                return true;
            }
        }
        false
    }

    fn pop_idle(&mut self, pool: usize, need: u8) -> Option<usize> {
        let (&kinds, _) = self
            .idle
            .get(pool)?
            .iter()
            .filter(|(m, stack)| *m & need == need && !stack.is_empty())
            .min_by_key(|(_, stack)| stack.last())?;
        let stack = self.idle[pool].get_mut(&kinds)?;
        let w = stack.pop()?;
        if stack.is_empty() {
            self.idle[pool].remove(&kinds);
        }
        Some(w)
    }

    /// A worker of a less urgent queue above its minimum, whose demand is fresh: the least
    /// urgent queue first (then by name), then its least busy worker.
    fn victim(&self, q: usize) -> Option<usize> {
        let priority = self.queues[q].priority;
        let mut best: Option<(Key, usize)> = None;
        for &p in &self.queue_homes[q] {
            if self.frozen[p].is_some() {
                continue;
            }
            let found = self.serving[p]
                .iter()
                .take_while(|key| key.0 .0 > priority)
                .find(|&&(_, other, _, w)| {
                    self.stale[other].is_none()
                        && self.members[other].len() > self.queues[other].min_workers as usize
                        && self.workers[w].usable
                        && self.supports(q, w)
                });
            if let Some(&key) = found {
                if best.is_none_or(|(b, _)| key < b) {
                    best = Some((key, key.3));
                }
            }
        }
        best.map(|(_, w)| w)
    }

    fn census(&self) -> Census {
        let mut census: Census = vec![BTreeMap::new(); self.pools.len()];
        for w in 0..self.workers.len() {
            let entry = census[self.worker_pool[w]]
                .entry(self.worker_mask[w])
                .or_default();
            entry.0 += 1;
            if self.workers[w].usable && self.at[w].is_some() {
                entry.1 += 1;
            }
        }
        census
    }

    /// Why `q` has fewer workers than it asks for, if it does.
    fn hold(&self, q: usize, census: &Census) -> Option<Hold> {
        if let Some(since) = self.stale[q] {
            let short_of_min = self.members[q].len() < self.queues[q].min_workers as usize;
            return match self.blocking_cooling(q, census) {
                Some(until) if short_of_min => Some(Hold::CoolingUntil(until)),
                _ => Some(Hold::StaleSince(since)),
            };
        }
        if !self.wants_more(q) {
            let capped = self.queues[q]
                .max_workers
                .is_some_and(|max| self.members[q].len() >= max as usize);
            return (capped && self.capacity[q] < self.pending[q]).then_some(Hold::MaxWorkers);
        }
        if let Some(until) = self.blocking_cooling(q, census) {
            return Some(Hold::CoolingUntil(until));
        }
        // Usable workers of its home pools with its kinds, serving some queue, beyond its own.
        let need = self.queue_mask[q];
        let serving: u32 = self.queue_homes[q]
            .iter()
            .flat_map(|&p| census[p].iter())
            .filter(|(m, _)| *m & need == need)
            .map(|(_, (_, serving))| serving)
            .sum();
        let own = self.members[q]
            .iter()
            .filter(|&&w| self.workers[w].usable && self.is_home(q, w))
            .count() as u32;
        Some(if serving > own {
            Hold::NoIdleWorker {
                preemption: self.policy.preemption,
            }
        } else {
            Hold::NoEligibleWorker
        })
    }

    /// The earliest end of cooling among frozen pools holding a worker `q` could use and does
    /// not have yet.
    fn blocking_cooling(&self, q: usize, census: &Census) -> Option<DateTime<Utc>> {
        let need = self.queue_mask[q];
        if need == 0 {
            return None;
        }
        (0..self.pools.len())
            .filter(|&p| self.frozen[p].is_some())
            .filter(|p| !self.policy.strict_isolation || self.queue_homes[q].contains(p))
            .filter(|&p| {
                let fitting: u32 = census[p]
                    .iter()
                    .filter(|(m, _)| *m & need == need)
                    .map(|(_, (all, _))| all)
                    .sum();
                let own = self.members[q]
                    .iter()
                    .filter(|&&w| self.worker_pool[w] == p)
                    .count() as u32;
                fitting > own
            })
            .filter_map(|p| self.frozen[p])
            .min()
    }

    fn finish(self, inputs: Inputs<'_>, holds: BTreeMap<usize, Hold>) -> Decision {
        let mut changes = Vec::new();
        let mut cooling = BTreeMap::new();
        let mut assignment = Vec::with_capacity(self.workers.len());
        for (w, worker) in self.workers.iter().enumerate() {
            let to = self.at[w].map(|q| self.queues[q].name.clone());
            if to != worker.current {
                let reason = self.why[w].clone().unwrap_or(Reason::ScaleIn);
                changes.push(Change {
                    worker: worker.id.clone(),
                    pool: worker.pool.clone(),
                    from: worker.current.clone(),
                    to: to.clone(),
                    reason,
                });
                if inputs.policy.cooling_period > chrono::Duration::zero() {
                    cooling.insert(
                        worker.pool.clone(),
                        inputs.now + inputs.policy.cooling_period,
                    );
                }
            }
            assignment.push((worker.id.clone(), to));
        }
        // Sorted by worker already: the map is built in one pass.
        let assignment: BTreeMap<WorkerId, Option<QueueName>> = assignment.into_iter().collect();
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(q, spec)| QueueOutcome {
                queue: spec.name.clone(),
                workers: self.members[q].len() as u32,
                capacity: self.capacity[q],
                pending: self.pending[q],
                stale: self.stale[q].is_some(),
                hold: holds.get(&q).cloned(),
            })
            .collect();
        Decision {
            assignment,
            changes,
            queues,
            cooling,
        }
    }
}

#[cfg(test)]
mod tests;
