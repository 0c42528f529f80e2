//! Pure: which runs may start now without overloading a target or a queue.
//!
//! Each target has a limit of runs in flight, and each queue may have one too. A run offered
//! when its target or its queue is full waits in its target's queue for that queue, ordered by
//! priority (1 first) then by arrival, and is admitted the moment a run of the same target or
//! queue ends. Runs without a target only wait for their queue. In maintenance mode nothing
//! starts. The state is rebuilt from PostgreSQL at start (runs in flight, runs waiting), so it
//! survives a restart and a change of leader.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use faro_shared::domain::{QueueName, TargetId};
use faro_shared::messages::RunMessage;
use uuid::Uuid;

/// Per-target and per-queue limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Runs of a target in flight at most, unless the target has its own limit.
    pub default: u32,
    pub per_target: HashMap<TargetId, u32>,
    /// Queue limits from the queues' definitions (`queues.max_in_flight`).
    pub queue_defined: HashMap<QueueName, u32>,
    /// Queue limits from the hot configuration; they win, `None` lifts the limit.
    pub queue_set: HashMap<QueueName, Option<u32>>,
    /// Targets switched off by an operator: their runs wait, none starts.
    pub disabled: HashSet<TargetId>,
}

impl Limits {
    pub fn of(&self, target: &TargetId) -> u32 {
        self.per_target
            .get(target)
            .copied()
            .unwrap_or(self.default)
            .max(1)
    }

    /// The limit of a queue, if it has one.
    pub fn of_queue(&self, queue: &QueueName) -> Option<u32> {
        match self.queue_set.get(queue) {
            Some(set) => *set,
            None => self.queue_defined.get(queue).copied(),
        }
        .map(|n| n.max(1))
    }

    fn of_slot(&self, slot: &Slot) -> usize {
        match slot {
            None => usize::MAX,
            Some(target) if self.disabled.contains(target) => 0,
            Some(target) => self.of(target) as usize,
        }
    }

    fn queue_full(&self, queue: &QueueName, in_flight: usize) -> bool {
        self.of_queue(queue)
            .is_some_and(|limit| in_flight >= limit as usize)
    }
}

/// Whose slots a run takes: its target's, or none for a run without a target.
type Slot = Option<TargetId>;

/// The order of waiting runs: the greatest goes first (priority 1, then the earliest).
type Urgency = (Reverse<u8>, Reverse<u64>);

/// A waiting run, ordered by priority then arrival.
#[derive(Debug)]
struct Waiting {
    key: Urgency,
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
    in_flight: HashSet<Uuid>,
    /// Waiting runs by queue: a full queue holds only its own runs.
    waiting: HashMap<QueueName, BinaryHeap<Waiting>>,
    /// Ids waiting, with their queue, so a run offered twice waits once.
    waiting_ids: HashMap<Uuid, QueueName>,
}

#[derive(Debug, Default)]
struct Queue {
    in_flight: usize,
    /// Targets with runs of this queue that wait for the queue (not for the target).
    blocked: HashSet<Slot>,
}

/// Why a run waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Maintenance mode holds every new start.
    Maintenance,
    /// Its target is disabled.
    TargetDisabled { target: TargetId },
    /// Its queue has `in_flight` runs of at most `limit`.
    Queue {
        queue: QueueName,
        limit: u32,
        in_flight: usize,
    },
    /// Its target's slots are all held, by these runs.
    Target {
        target: TargetId,
        limit: u32,
        held_by: Vec<Uuid>,
    },
}

/// How many runs wait, by [`Wait`] reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitingByReason {
    pub maintenance: usize,
    pub target_disabled: usize,
    /// For their queue's limit.
    pub queue: usize,
    /// For a slot of their target.
    pub target: usize,
}

impl WaitingByReason {
    /// Each count with its label value in the waiting gauge.
    pub fn labelled(&self) -> [(&'static str, usize); 4] {
        [
            ("maintenance", self.maintenance),
            ("target_disabled", self.target_disabled),
            ("queue", self.queue),
            ("target", self.target),
        ]
    }

    pub fn total(&self) -> usize {
        self.maintenance + self.target_disabled + self.queue + self.target
    }
}

/// A target slot taken or given back, for the slot leases in KV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotChange {
    /// `run` holds a slot of `target`; `timeout_ms` is its own timeout, if it has one.
    Held {
        target: TargetId,
        run: Uuid,
        timeout_ms: Option<u64>,
    },
    /// `run` gave its slot of `target` back.
    Freed { target: TargetId, run: Uuid },
}

/// Slot changes made under one hold of the admission lock, with when the lock was let go
/// ([`crate::state::leader_now`]): later batches have later times, and a run sent after its
/// admission was sent after its batch's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotChanges {
    pub at: chrono::DateTime<chrono::Utc>,
    pub changes: Vec<SlotChange>,
}

/// The admission state of every target and queue.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    targets: HashMap<Slot, Target>,
    queues: HashMap<QueueName, Queue>,
    /// Every run admitted and not yet ended, with its target and queue.
    /// Runs holding slots: their target's slot, their queue, and the attempt that holds them.
    running: HashMap<Uuid, (Slot, QueueName, u32)>,
    waiting: usize,
    arrivals: u64,
    /// Maintenance mode: nothing new starts; runs in flight finish.
    paused: bool,
    /// Target slots taken and freed since the last `take_changes`.
    changes: Vec<SlotChange>,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            targets: HashMap::new(),
            queues: HashMap::new(),
            running: HashMap::new(),
            waiting: 0,
            arrivals: 0,
            paused: false,
            changes: Vec::new(),
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

    /// The targets' own limits (the others have the default): whatever now fits starts.
    pub fn set_target_limits(&mut self, limits: HashMap<TargetId, u32>) -> Vec<RunMessage> {
        if self.limits.per_target == limits {
            return Vec::new();
        }
        self.limits.per_target = limits;
        self.fill_all()
    }

    /// The targets switched off; a target switched back on starts what fits at once.
    pub fn set_disabled(&mut self, disabled: HashSet<TargetId>) -> Vec<RunMessage> {
        if self.limits.disabled == disabled {
            return Vec::new();
        }
        self.limits.disabled = disabled;
        self.fill_all()
    }

    /// The queues' own limits, from their definitions.
    pub fn set_queue_definitions(&mut self, limits: HashMap<QueueName, u32>) -> Vec<RunMessage> {
        if self.limits.queue_defined == limits {
            return Vec::new();
        }
        self.limits.queue_defined = limits;
        self.fill_all()
    }

    /// A queue's limit from the hot configuration (`None`: no limit).
    pub fn set_queue_limit(&mut self, queue: QueueName, limit: Option<u32>) -> Vec<RunMessage> {
        self.limits.queue_set.insert(queue, limit);
        self.fill_all()
    }

    /// Every queue limit of the hot configuration at once; a queue left out goes back to
    /// its definition's limit.
    pub fn set_queue_settings(
        &mut self,
        limits: HashMap<QueueName, Option<u32>>,
    ) -> Vec<RunMessage> {
        if self.limits.queue_set == limits {
            return Vec::new();
        }
        self.limits.queue_set = limits;
        self.fill_all()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Target slots taken and freed since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<SlotChange> {
        std::mem::take(&mut self.changes)
    }

    /// Records a run already in flight (found at start).
    pub fn restore_in_flight(
        &mut self,
        target: Option<TargetId>,
        queue: QueueName,
        run: Uuid,
        attempt: u32,
        timeout_ms: Option<u64>,
    ) {
        if self.running.contains_key(&run) {
            return;
        }
        if let Some(target) = &target {
            self.changes.push(SlotChange::Held {
                target: target.clone(),
                run,
                timeout_ms,
            });
        }
        self.targets
            .entry(target.clone())
            .or_default()
            .in_flight
            .insert(run);
        self.queues.entry(queue.clone()).or_default().in_flight += 1;
        self.running.insert(run, (target, queue, attempt));
    }

    /// Offers runs in order; returns those that may start now. The others wait.
    pub fn offer(&mut self, runs: Vec<RunMessage>) -> Vec<RunMessage> {
        let mut admitted = Vec::with_capacity(runs.len());
        for run in runs {
            if self.running.contains_key(&run.run_id) {
                // Offered again (a republish): it already holds its slot.
                admitted.push(run);
                continue;
            }
            let slot = run.target.clone();
            let target = self.targets.entry(slot.clone()).or_default();
            if target.waiting_ids.contains_key(&run.run_id) {
                // Offered again while waiting: it keeps its place.
                continue;
            }
            self.arrivals += 1;
            target.waiting_ids.insert(run.run_id, run.queue.clone());
            target
                .waiting
                .entry(run.queue.clone())
                .or_default()
                .push(Waiting {
                    key: (Reverse(run.priority.get()), Reverse(self.arrivals)),
                    run,
                });
            self.waiting += 1;
            // A more urgent arrival may go before others, never past a limit.
            admitted.extend(self.fill(&slot));
        }
        admitted
    }

    /// Whether `attempt` of `run` still holds its admission: no result reported, not
    /// cancelled.
    pub fn holds(&self, run: Uuid, attempt: u32) -> bool {
        self.running
            .get(&run)
            .is_some_and(|(_, _, holder)| *holder == attempt)
    }

    /// A run ended (or its attempt did): frees its target's and its queue's slots; returns
    /// the runs that may start now.
    pub fn release(&mut self, run: Uuid) -> Vec<RunMessage> {
        let Some((slot, queue, _)) = self.running.remove(&run) else {
            return Vec::new();
        };
        if let Some(target) = self.targets.get_mut(&slot) {
            target.in_flight.remove(&run);
        }
        if let Some(target) = &slot {
            self.changes.push(SlotChange::Freed {
                target: target.clone(),
                run,
            });
        }
        if let Some(state) = self.queues.get_mut(&queue) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        let mut admitted = self.fill(&slot);
        admitted.extend(self.fill_blocked(&queue));
        self.forget_if_idle(&slot);
        admitted
    }

    /// A worker reported the end of `attempt` of `run`: the device is no longer touched, so
    /// the slots go at once, before the result is recorded. Only the attempt that holds the
    /// slots frees them; a late result of an earlier attempt frees nothing.
    pub fn release_attempt(&mut self, run: Uuid, attempt: u32) -> Vec<RunMessage> {
        match self.running.get(&run) {
            Some((_, _, holder)) if *holder == attempt => self.release(run),
            _ => Vec::new(),
        }
    }

    /// Takes a waiting run out (cancelled); `false` when it was not waiting.
    pub fn withdraw(&mut self, run: Uuid) -> bool {
        let Some(slot) = self
            .targets
            .iter()
            .find_map(|(slot, t)| t.waiting_ids.contains_key(&run).then(|| slot.clone()))
        else {
            return false;
        };
        if let Some(target) = self.targets.get_mut(&slot) {
            if let Some(queue) = target.waiting_ids.remove(&run) {
                if let Some(heap) = target.waiting.get_mut(&queue) {
                    heap.retain(|w| w.run.run_id != run);
                    if heap.is_empty() {
                        target.waiting.remove(&queue);
                    }
                }
                self.waiting -= 1;
            }
        }
        self.forget_if_idle(&slot);
        true
    }

    /// Whether `run` holds slots (admitted, not yet ended).
    pub fn is_running(&self, run: Uuid) -> bool {
        self.running.contains_key(&run)
    }

    /// Every run holding slots (admitted, not yet ended).
    pub fn running_ids(&self) -> Vec<Uuid> {
        self.running.keys().copied().collect()
    }

    /// Runs of `target` in flight, and waiting.
    pub fn load(&self, target: &TargetId) -> (usize, usize) {
        self.targets
            .get(&Some(target.clone()))
            .map_or((0, 0), |t| (t.in_flight.len(), t.waiting_ids.len()))
    }

    /// Runs of `queue` in flight.
    pub fn queue_load(&self, queue: &QueueName) -> usize {
        self.queues.get(queue).map_or(0, |q| q.in_flight)
    }

    /// Runs waiting over all targets and queues.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Runs waiting, by why they wait, as [`Admission::why_waiting`] tells for each. O(1)
    /// when none waits or in maintenance; else one pass over the targets and their queues of
    /// waiting runs (not over the runs), for the waiting gauge.
    pub fn waiting_by_reason(&self) -> WaitingByReason {
        let mut counts = WaitingByReason::default();
        if self.waiting == 0 {
            return counts;
        }
        if self.paused {
            counts.maintenance = self.waiting;
            return counts;
        }
        for (slot, target) in &self.targets {
            if target.waiting_ids.is_empty() {
                continue;
            }
            if slot
                .as_ref()
                .is_some_and(|t| self.limits.disabled.contains(t))
            {
                counts.target_disabled += target.waiting_ids.len();
                continue;
            }
            for (queue, heap) in &target.waiting {
                if self.limits.queue_full(queue, self.queue_load(queue)) {
                    counts.queue += heap.len();
                } else {
                    counts.target += heap.len();
                }
            }
        }
        counts
    }

    /// Why `run` waits; `None` when it does not (admitted, ended or unknown).
    pub fn why_waiting(&self, run: Uuid) -> Option<Wait> {
        let (slot, queue) = self
            .targets
            .iter()
            .find_map(|(slot, t)| t.waiting_ids.get(&run).map(|q| (slot, q)))?;
        if self.paused {
            return Some(Wait::Maintenance);
        }
        if let Some(target) = slot.as_ref().filter(|t| self.limits.disabled.contains(*t)) {
            return Some(Wait::TargetDisabled {
                target: target.clone(),
            });
        }
        let in_flight = self.queue_load(queue);
        if let Some(limit) = self.limits.of_queue(queue) {
            if in_flight >= limit as usize {
                return Some(Wait::Queue {
                    queue: queue.clone(),
                    limit,
                    in_flight,
                });
            }
        }
        let target = slot.clone()?;
        let mut held_by: Vec<Uuid> = self.targets[slot].in_flight.iter().copied().collect();
        held_by.sort();
        Some(Wait::Target {
            limit: self.limits.of(&target),
            target,
            held_by,
        })
    }

    fn fill_all(&mut self) -> Vec<RunMessage> {
        let slots: Vec<Slot> = self.targets.keys().cloned().collect();
        let mut admitted = Vec::new();
        for slot in slots {
            admitted.extend(self.fill(&slot));
            self.forget_if_idle(&slot);
        }
        admitted
    }

    /// Admits the waiting runs of `slot` that fit, most urgent first over all its queues.
    fn fill(&mut self, slot: &Slot) -> Vec<RunMessage> {
        let mut admitted = Vec::new();
        if self.paused {
            return admitted;
        }
        let limit = self.limits.of_slot(slot);
        let Some(target) = self.targets.get_mut(slot) else {
            return admitted;
        };
        while target.in_flight.len() < limit {
            let mut best: Option<(&QueueName, Urgency)> = None;
            for (queue, heap) in &target.waiting {
                let Some(head) = heap.peek() else { continue };
                // A queue without a limit is never full: no lookup, no allocation.
                let in_flight = self.queues.get(queue).map_or(0, |q| q.in_flight);
                if self.limits.queue_full(queue, in_flight) {
                    self.queues
                        .entry(queue.clone())
                        .or_default()
                        .blocked
                        .insert(slot.clone());
                } else if best.is_none_or(|(_, key)| head.key > key) {
                    best = Some((queue, head.key));
                }
            }
            let Some((queue, _)) = best else { break };
            let queue = queue.clone();
            let Some(heap) = target.waiting.get_mut(&queue) else {
                break;
            };
            let Some(next) = heap.pop() else { break };
            if heap.is_empty() {
                target.waiting.remove(&queue);
            }
            target.waiting_ids.remove(&next.run.run_id);
            target.in_flight.insert(next.run.run_id);
            self.queues.entry(queue.clone()).or_default().in_flight += 1;
            self.running
                .insert(next.run.run_id, (slot.clone(), queue, next.run.attempt));
            if let Some(target) = slot {
                self.changes.push(SlotChange::Held {
                    target: target.clone(),
                    run: next.run.run_id,
                    timeout_ms: next.run.timeout_ms,
                });
            }
            self.waiting -= 1;
            admitted.push(next.run);
        }
        admitted
    }

    /// `queue` may have room again: the targets it held may start their runs of it.
    fn fill_blocked(&mut self, queue: &QueueName) -> Vec<RunMessage> {
        let mut admitted = Vec::new();
        if self.paused {
            return admitted;
        }
        let Some(state) = self.queues.get_mut(queue) else {
            return admitted;
        };
        let mut pending: Vec<Slot> = state.blocked.drain().collect();
        while let Some(slot) = pending.pop() {
            if self.limits.queue_full(queue, self.queue_load(queue)) {
                let state = self.queues.entry(queue.clone()).or_default();
                state.blocked.insert(slot);
                state.blocked.extend(pending);
                break;
            }
            // Puts the target back in `blocked` if the queue fills before its turn.
            admitted.extend(self.fill(&slot));
            self.forget_if_idle(&slot);
        }
        admitted
    }

    fn forget_if_idle(&mut self, slot: &Slot) {
        if self
            .targets
            .get(slot)
            .is_some_and(|t| t.in_flight.is_empty() && t.waiting_ids.is_empty())
        {
            self.targets.remove(slot);
        }
    }
}

#[cfg(test)]
mod tests;
