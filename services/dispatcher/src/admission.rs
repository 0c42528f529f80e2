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
            ..Limits::default()
        }
    }

    fn q(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    fn in_queue(queue: &str, target: Option<&str>, priority: u8) -> RunMessage {
        RunMessage {
            queue: q(queue),
            ..run(target, priority)
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
        let next = a.release(admitted[0].run_id);
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
        let next = a.release(first[0].run_id);
        assert_eq!(next[0].run_id, high.run_id);
        let next = a.release(high.run_id);
        assert_eq!(next[0].run_id, low.run_id);
    }

    #[test]
    fn targets_are_independent_and_untargeted_runs_never_wait() {
        let mut a = Admission::new(Limits {
            default: 1,
            per_target: HashMap::from([(t("big"), 3)]),
            ..Limits::default()
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
    fn only_the_attempt_holding_a_slot_frees_it() {
        let mut a = Admission::new(limits(1));
        let mut first = run(Some("olt"), 5);
        first.attempt = 2;
        let waiting = run(Some("olt"), 5);
        assert_eq!(a.offer(vec![first.clone(), waiting.clone()]).len(), 1);
        // A late result of attempt 1 frees nothing: attempt 2 still touches the device.
        assert!(a.release_attempt(first.run_id, 1).is_empty());
        assert_eq!(a.load(&t("olt")), (1, 1));
        let next = a.release_attempt(first.run_id, 2);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].run_id, waiting.run_id);
        // Recording the result afterwards frees nothing twice.
        assert!(a.release(first.run_id).is_empty());
        assert_eq!(a.load(&t("olt")), (1, 0));
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
        assert!(a.release(running[0].run_id).is_empty());
        assert_eq!(a.waiting(), 3);
        let resumed = a.set_paused(false);
        assert_eq!(resumed.len(), 3);
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn waiting_runs_are_counted_by_why_they_wait() {
        let mut a = Admission::new(Limits {
            default: 1,
            queue_set: HashMap::from([(q("limited"), Some(1))]),
            disabled: HashSet::from([t("off")]),
            ..Limits::default()
        });
        let offered = vec![
            in_queue("free", Some("olt"), 5),
            in_queue("free", Some("olt"), 5),
            in_queue("limited", Some("a"), 5),
            in_queue("limited", Some("b"), 5),
            in_queue("limited", None, 5),
            in_queue("free", Some("off"), 5),
        ];
        let ids: Vec<Uuid> = offered.iter().map(|r| r.run_id).collect();
        assert_eq!(a.offer(offered).len(), 2);
        let counts = a.waiting_by_reason();
        assert_eq!(
            counts,
            WaitingByReason {
                maintenance: 0,
                target_disabled: 1,
                queue: 2,
                target: 1,
            }
        );
        // The same as asking for each run.
        let mut asked = WaitingByReason::default();
        for id in ids {
            match a.why_waiting(id) {
                Some(Wait::Maintenance) => asked.maintenance += 1,
                Some(Wait::TargetDisabled { .. }) => asked.target_disabled += 1,
                Some(Wait::Queue { .. }) => asked.queue += 1,
                Some(Wait::Target { .. }) => asked.target += 1,
                None => {}
            }
        }
        assert_eq!(asked, counts);
        a.set_paused(true);
        assert_eq!(a.waiting_by_reason().maintenance, 4);
        assert_eq!(a.waiting_by_reason().total(), 4);
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
        a.restore_in_flight(Some(t("olt")), q("q"), Uuid::new_v4(), 1, None);
        a.restore_in_flight(Some(t("olt")), q("q"), Uuid::new_v4(), 1, None);
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
        assert_eq!(a.release(first[0].run_id).len(), 1);
        assert_eq!(a.load(&t("olt")), (1, 0));
    }

    #[test]
    fn a_full_queue_holds_its_runs_on_every_target_and_only_its_own() {
        let mut a = Admission::new(Limits {
            default: 3,
            queue_set: HashMap::from([(q("discovery"), Some(2))]),
            ..Limits::default()
        });
        let discovery: Vec<_> = (0..4)
            .map(|i| in_queue("discovery", Some(["a", "b"][i % 2]), 5))
            .collect();
        let admitted = a.offer(discovery.clone());
        assert_eq!(
            admitted.len(),
            2,
            "the queue limit, not the targets', holds"
        );
        assert_eq!(a.queue_load(&q("discovery")), 2);
        // Another queue on the same targets is not held by discovery's limit.
        assert_eq!(a.offer(vec![in_queue("get", Some("a"), 5)]).len(), 1);
        // A discovery run ends: the next discovery run, on whichever target, starts.
        let next = a.release(admitted[0].run_id);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].queue, q("discovery"));
        assert_eq!(a.queue_load(&q("discovery")), 2);
        let waiting = discovery
            .iter()
            .find(|r| a.why_waiting(r.run_id).is_some())
            .unwrap();
        assert_eq!(
            a.why_waiting(waiting.run_id),
            Some(Wait::Queue {
                queue: q("discovery"),
                limit: 2,
                in_flight: 2
            })
        );
        // The limit lifted: everything starts.
        assert_eq!(a.set_queue_limit(q("discovery"), None).len(), 1);
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn queue_limits_from_definitions_yield_to_the_hot_configuration() {
        let mut a = Admission::new(limits(10));
        assert!(a
            .set_queue_definitions(HashMap::from([(q("get"), 1)]))
            .is_empty());
        assert_eq!(a.offer(vec![in_queue("get", None, 5)]).len(), 1);
        assert!(a.offer(vec![in_queue("get", None, 5)]).is_empty());
        assert_eq!(a.set_queue_limit(q("get"), Some(2)).len(), 1);
        assert!(a.offer(vec![in_queue("get", None, 5)]).is_empty());
        assert!(a.set_queue_settings(HashMap::new()).is_empty());
        assert_eq!(a.limits().of_queue(&q("get")), Some(1));
    }

    #[test]
    fn why_a_run_waits() {
        let mut a = Admission::new(limits(1));
        let first = a.offer(vec![run(Some("olt"), 5)]);
        let second = run(Some("olt"), 5);
        assert!(a.offer(vec![second.clone()]).is_empty());
        assert_eq!(
            a.why_waiting(second.run_id),
            Some(Wait::Target {
                target: t("olt"),
                limit: 1,
                held_by: vec![first[0].run_id]
            })
        );
        assert_eq!(a.why_waiting(first[0].run_id), None);
        a.set_paused(true);
        assert_eq!(a.why_waiting(second.run_id), Some(Wait::Maintenance));
    }

    #[test]
    fn a_disabled_target_starts_nothing_until_enabled() {
        let mut a = Admission::new(limits(2));
        let first = a.offer(vec![run(Some("olt"), 5)]);
        assert_eq!(first.len(), 1);
        assert!(a.set_disabled(HashSet::from([t("olt")])).is_empty());
        let held = run(Some("olt"), 5);
        assert!(
            a.offer(vec![held.clone()]).is_empty(),
            "started on a disabled target"
        );
        assert_eq!(
            a.why_waiting(held.run_id),
            Some(Wait::TargetDisabled { target: t("olt") })
        );
        // Its run in flight ends; still nothing starts. Other targets are not held.
        assert!(a.release(first[0].run_id).is_empty());
        assert_eq!(a.offer(vec![run(Some("other"), 5)]).len(), 1);
        let resumed = a.set_disabled(HashSet::new());
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].run_id, held.run_id);
    }

    #[test]
    fn a_withdrawn_run_never_starts() {
        let mut a = Admission::new(limits(1));
        let first = a.offer(vec![run(Some("olt"), 5)]);
        let (second, third) = (run(Some("olt"), 5), run(Some("olt"), 5));
        assert!(a.offer(vec![second.clone(), third.clone()]).is_empty());
        assert!(a.withdraw(second.run_id));
        assert!(!a.withdraw(second.run_id), "withdrawn once");
        assert!(!a.withdraw(first[0].run_id), "a running run is not waiting");
        assert!(a.is_running(first[0].run_id));
        let next = a.release(first[0].run_id);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].run_id, third.run_id);
        assert_eq!(a.waiting(), 0);
    }

    proptest! {
        /// Whatever the order of offers and ends, no target exceeds its limit, no run is lost
        /// or admitted twice, and a target with room has nobody waiting.
        #[test]
        fn the_limits_always_hold_and_nothing_is_lost(
            limit in 1u32..5,
            queue_limit in 1u32..8,
            ops in proptest::collection::vec((0u8..3, 0usize..4, 1u8..=10, 0usize..2), 1..200),
        ) {
            let names = ["a", "b", "c", "d"];
            let queues = ["limited", "free"];
            let mut a = Admission::new(Limits {
                default: limit,
                queue_set: HashMap::from([(q("limited"), Some(queue_limit))]),
                ..Limits::default()
            });
            let mut running: Vec<(TargetId, Uuid)> = Vec::new();
            let mut leases: HashSet<(TargetId, Uuid)> = HashSet::new();
            let mut offered = 0usize;
            let mut admitted_total = 0usize;
            let mut ended = 0usize;
            for (op, target, priority, queue) in ops {
                let admitted = if op < 2 {
                    offered += 1;
                    a.offer(vec![in_queue(queues[queue], Some(names[target]), priority)])
                } else if let Some(i) = running.iter().position(|(t, _)| t.as_str() == names[target]) {
                    let (_, id) = running.remove(i);
                    ended += 1;
                    a.release(id)
                } else {
                    Vec::new()
                };
                for r in admitted {
                    admitted_total += 1;
                    prop_assert!(!running.iter().any(|(_, id)| *id == r.run_id));
                    running.push((r.target.clone().unwrap(), r.run_id));
                }
                // The journal, replayed, is exactly the slots held.
                for change in a.take_changes() {
                    match change {
                        SlotChange::Held { target, run, .. } => {
                            prop_assert!(leases.insert((target, run)), "held twice");
                        }
                        SlotChange::Freed { target, run } => {
                            prop_assert!(leases.remove(&(target, run)), "freed unheld");
                        }
                    }
                }
                let mut held: Vec<_> = running.clone();
                held.sort();
                let mut leased: Vec<_> = leases.iter().cloned().collect();
                leased.sort();
                prop_assert_eq!(held, leased);
                let limited = a.queue_load(&q("limited"));
                prop_assert!(limited <= queue_limit as usize);
                for name in names {
                    let (in_flight, waiting) = a.load(&t(name));
                    prop_assert!(in_flight <= limit as usize);
                    // Whoever waits, waits for a full target or a full queue.
                    prop_assert!(
                        waiting == 0 || in_flight == limit as usize || limited == queue_limit as usize
                    );
                }
            }
            prop_assert_eq!(offered, admitted_total + a.waiting());
            prop_assert_eq!(a.waiting_by_reason().total(), a.waiting());
            prop_assert_eq!(running.len(), admitted_total - ended);
        }
    }
}
