//! The decision's working state: indexes into the sorted inputs, and the moves that change
//! it. Only [`decide`](super::decide) drives it.

use super::*;

/// The decision's working state: indexes into the sorted inputs.
pub(super) struct State<'a> {
    pub(super) queues: Vec<&'a QueueSpec>,
    pub(super) workers: Vec<&'a WorkerSpec>,
    pub(super) policy: Policy,
    pub(super) pools: Vec<&'a PoolName>,
    pub(super) worker_pool: Vec<usize>,
    pub(super) worker_mask: Vec<u8>,
    pub(super) queue_mask: Vec<u8>,
    /// For each queue, its home pools as indexes.
    pub(super) queue_homes: Vec<Vec<usize>>,
    pub(super) pending: Vec<u64>,
    pub(super) stale: Vec<Option<Option<DateTime<Utc>>>>,
    /// Cooling end for frozen pools.
    pub(super) frozen: Vec<Option<DateTime<Utc>>>,
    /// The queue of each worker now.
    pub(super) at: Vec<Option<usize>>,
    /// Why each worker last moved this cycle.
    pub(super) why: Vec<Option<Reason>>,
    /// Workers of each queue.
    pub(super) members: Vec<Vec<usize>>,
    pub(super) capacity: Vec<u64>,
    /// Idle usable workers of non-frozen pools: pool -> kind mask -> worker indexes, the
    /// lowest id last (popped first).
    pub(super) idle: Vec<BTreeMap<u8, Vec<usize>>>,
    /// Pools whose queues have demand (pending work or unknown demand).
    pub(super) pool_demand: Vec<bool>,
    /// Workers of each pool serving another pool's queue.
    pub(super) lent: Vec<BTreeSet<usize>>,
    /// Workers of each pool serving a queue, the least urgent queue first (then by name),
    /// then the least busy: where preemption looks for a worker.
    pub(super) serving: Vec<BTreeSet<Key>>,
}

/// A worker serving a queue, ordered for preemption: (priority, reversed, queue, runs in
/// progress, worker).
type Key = (std::cmp::Reverse<u8>, usize, u32, usize);

fn mask(kinds: &BTreeSet<Kind>) -> u8 {
    kinds.iter().fold(0, |m, k| {
        m | 1 << Kind::ALL.iter().position(|x| x == k).unwrap_or(0)
    })
}

/// Workers of each pool by kind mask: how many, and how many usable ones serve a queue.
pub(super) type Census = Vec<BTreeMap<u8, (u32, u32)>>;

impl<'a> State<'a> {
    pub(super) fn new(inputs: Inputs<'a>) -> Self {
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

    pub(super) fn movable(&self, w: usize) -> bool {
        self.workers[w].usable && self.frozen[self.worker_pool[w]].is_none()
    }

    pub(super) fn is_home(&self, q: usize, w: usize) -> bool {
        self.queue_homes[q].contains(&self.worker_pool[w])
    }

    pub(super) fn supports(&self, q: usize, w: usize) -> bool {
        let need = self.queue_mask[q];
        need != 0 && self.worker_mask[w] & need == need
    }

    pub(super) fn below_max(&self, q: usize) -> bool {
        self.queues[q]
            .max_workers
            .is_none_or(|max| self.members[q].len() < max as usize)
    }

    pub(super) fn wants_more(&self, q: usize) -> bool {
        self.below_max(q)
            && (self.members[q].len() < self.queues[q].min_workers as usize
                || (self.stale[q].is_none() && self.capacity[q] < self.pending[q]))
    }

    /// Puts an idle worker in the idle index, if it may move.
    pub(super) fn make_idle(&mut self, w: usize) {
        if self.movable(w) {
            let stack = self.idle[self.worker_pool[w]]
                .entry(self.worker_mask[w])
                .or_default();
            // Kept sorted by index descending, so the lowest id pops first.
            let at = stack.partition_point(|&x| x > w);
            stack.insert(at, w);
        }
    }

    pub(super) fn unassign(&mut self, w: usize, reason: Reason) {
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

    pub(super) fn key(&self, q: usize, w: usize) -> Key {
        (
            std::cmp::Reverse(self.queues[q].priority),
            q,
            self.workers[w].in_progress,
            w,
        )
    }

    pub(super) fn assign(&mut self, w: usize, q: usize, reason: Reason) {
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
    pub(super) fn drop_unfit(&mut self) {
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
    pub(super) fn release_order(&self, q: usize, all: bool) -> Vec<usize> {
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
    pub(super) fn scale_in(&mut self) -> bool {
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
    pub(super) fn take_one(&mut self, q: usize) -> bool {
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
        if self.orphaned(q) {
            if let Some(w) = self.idle_while_cooling(q) {
                self.assign(w, q, Reason::Replacement);
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

    /// Whether `q` has work (pending runs, unknown demand, or a minimum) and lost every
    /// worker it had: they stopped beating (dead, cut off), and its runs wait for nobody.
    pub(super) fn orphaned(&self, q: usize) -> bool {
        (self.pending[q] > 0 || self.stale[q].is_some() || self.queues[q].min_workers > 0)
            && self.queue_mask[q] != 0
            && !self.members[q].is_empty()
            && self.members[q].iter().all(|&w| !self.workers[w].usable)
    }

    /// An idle, beating worker of a cooling home pool of `q` with its kinds (the lowest id):
    /// what an orphaned queue takes.
    fn idle_while_cooling(&self, q: usize) -> Option<usize> {
        (0..self.workers.len()).find(|&w| {
            self.at[w].is_none()
                && self.workers[w].usable
                && self.frozen[self.worker_pool[w]].is_some()
                && self.is_home(q, w)
                && self.supports(q, w)
        })
    }

    pub(super) fn pop_idle(&mut self, pool: usize, need: u8) -> Option<usize> {
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
    pub(super) fn victim(&self, q: usize) -> Option<usize> {
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

    pub(super) fn census(&self) -> Census {
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
    pub(super) fn hold(&self, q: usize, census: &Census) -> Option<Hold> {
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
    pub(super) fn blocking_cooling(&self, q: usize, census: &Census) -> Option<DateTime<Utc>> {
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

    pub(super) fn finish(self, inputs: Inputs<'_>, holds: BTreeMap<usize, Hold>) -> Decision {
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
