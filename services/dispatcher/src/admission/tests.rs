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
    assert!(a.holds(first.run_id, 2) && !a.holds(first.run_id, 1));
    let next = a.release_attempt(first.run_id, 2);
    // Reported: a publish of it still being retried is not sent again.
    assert!(!a.holds(first.run_id, 2));
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
