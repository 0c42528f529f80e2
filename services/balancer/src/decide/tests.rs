use super::*;
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn qn(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

fn pn(name: &str) -> PoolName {
    PoolName::parse(name).unwrap()
}

fn queue(name: &str, priority: u8, min: u32, max: Option<u32>, pools: &[&str]) -> QueueSpec {
    QueueSpec {
        name: qn(name),
        priority,
        min_workers: min,
        max_workers: max,
        home_pools: pools.iter().map(|p| pn(p)).collect(),
        kinds: [Kind::Sim].into(),
    }
}

fn worker(id: &str, pool: &str, current: Option<&str>, in_progress: u32) -> WorkerSpec {
    WorkerSpec {
        id: WorkerId::parse(id).unwrap(),
        pool: pn(pool),
        capacity: 4,
        kinds: [Kind::Sim].into(),
        in_progress,
        usable: true,
        current: current.map(qn),
    }
}

fn fresh(pending: u64) -> Demand {
    Demand {
        pending,
        stale_since: None,
    }
}

#[derive(Debug)]
struct Case {
    queues: Vec<QueueSpec>,
    workers: Vec<WorkerSpec>,
    demand: BTreeMap<QueueName, Demand>,
    cooling: BTreeMap<PoolName, DateTime<Utc>>,
    policy: Policy,
}

impl Case {
    fn new(queues: Vec<QueueSpec>, workers: Vec<WorkerSpec>, demand: &[(&str, u64)]) -> Self {
        Self {
            queues,
            workers,
            demand: demand.iter().map(|(q, n)| (qn(q), fresh(*n))).collect(),
            cooling: BTreeMap::new(),
            policy: Policy {
                cooling_period: chrono::Duration::zero(),
                ..Policy::default()
            },
        }
    }

    fn decide(&self) -> Decision {
        decide(Inputs {
            queues: &self.queues,
            workers: &self.workers,
            demand: &self.demand,
            cooling: &self.cooling,
            policy: self.policy,
            now: t0(),
        })
    }

    /// Applies a decision: every worker now serves what it was given.
    fn apply(&mut self, decision: &Decision) {
        for w in &mut self.workers {
            w.current = decision.assignment[&w.id].clone();
        }
    }
}

fn served_by(decision: &Decision, queue: &str) -> Vec<String> {
    decision
        .assignment
        .iter()
        .filter(|(_, q)| q.as_ref().is_some_and(|q| q.as_str() == queue))
        .map(|(w, _)| w.to_string())
        .collect()
}

fn outcome<'d>(decision: &'d Decision, queue: &str) -> &'d QueueOutcome {
    decision
        .queues
        .iter()
        .find(|o| o.queue.as_str() == queue)
        .unwrap()
}

/// The seeds' case: A (priority 1) has work and no idle worker; B (priority 5) holds three
/// busy workers with a minimum of one.
fn preemption_case(preemption: bool) -> Case {
    let mut case = Case::new(
        vec![
            queue("a", 1, 0, None, &["default"]),
            queue("b", 5, 1, None, &["default"]),
        ],
        vec![
            worker("w1", "default", Some("b"), 4),
            worker("w2", "default", Some("b"), 4),
            worker("w3", "default", Some("b"), 4),
        ],
        &[("a", 100), ("b", 100)],
    );
    case.policy.preemption = preemption;
    case
}

#[test]
fn with_preemption_the_urgent_queue_takes_workers_down_to_the_others_minimum() {
    let decision = preemption_case(true).decide();
    assert_eq!(served_by(&decision, "a").len(), 2);
    assert_eq!(served_by(&decision, "b").len(), 1);
    assert!(decision
        .changes
        .iter()
        .all(|c| c.reason == Reason::PreemptedBy(qn("a"))));
    assert_eq!(
        outcome(&decision, "a").hold,
        Some(Hold::NoIdleWorker { preemption: true }),
        "a still wants more but b is at its minimum"
    );
}

#[test]
fn without_preemption_the_urgent_queue_waits_and_says_why() {
    let decision = preemption_case(false).decide();
    assert!(decision.changes.is_empty());
    assert_eq!(served_by(&decision, "b").len(), 3);
    let hold = outcome(&decision, "a").hold.clone().unwrap();
    assert_eq!(hold, Hold::NoIdleWorker { preemption: false });
    assert!(
        hold.to_string().contains("preemption_mode is off"),
        "{hold}"
    );
}

#[test]
fn the_more_urgent_queue_gets_idle_workers_first() {
    let case = Case::new(
        vec![
            queue("low", 9, 0, None, &["default"]),
            queue("high", 2, 0, None, &["default"]),
        ],
        vec![worker("w1", "default", None, 0)],
        &[("low", 10), ("high", 10)],
    );
    let decision = case.decide();
    assert_eq!(served_by(&decision, "high"), ["w1"]);
    assert_eq!(decision.changes[0].reason, Reason::ScaleOut);
    assert_eq!(
        outcome(&decision, "low").hold,
        Some(Hold::NoIdleWorker { preemption: false })
    );
}

#[test]
fn demand_is_met_in_slots_and_surplus_goes_back() {
    let workers: Vec<_> = (1..=5)
        .map(|i| worker(&format!("w{i}"), "default", None, 0))
        .collect();
    let mut case = Case::new(
        vec![queue("q", 5, 0, None, &["default"])],
        workers,
        &[("q", 9)],
    );
    let decision = case.decide();
    // 9 runs at 4 slots a worker: 3 workers.
    assert_eq!(served_by(&decision, "q"), ["w1", "w2", "w3"]);
    case.apply(&decision);
    case.demand.insert(qn("q"), fresh(4));
    let decision = case.decide();
    assert_eq!(served_by(&decision, "q").len(), 1);
    assert!(decision.changes.iter().all(|c| c.reason == Reason::ScaleIn));
}

#[test]
fn max_workers_caps_and_is_the_reason() {
    let workers: Vec<_> = (1..=4)
        .map(|i| worker(&format!("w{i}"), "default", None, 0))
        .collect();
    let case = Case::new(
        vec![queue("q", 5, 0, Some(2), &["default"])],
        workers,
        &[("q", 100)],
    );
    let decision = case.decide();
    assert_eq!(served_by(&decision, "q").len(), 2);
    let hold = outcome(&decision, "q").hold.clone().unwrap();
    assert_eq!(hold.to_string(), "held: max_workers");
}

#[test]
fn stale_demand_never_scales_in_and_says_since_when() {
    let mut case = Case::new(
        vec![queue("q", 5, 0, None, &["default"])],
        vec![
            worker("w1", "default", Some("q"), 0),
            worker("w2", "default", Some("q"), 0),
        ],
        &[],
    );
    let since = t0() - chrono::Duration::seconds(40);
    case.demand.insert(
        qn("q"),
        Demand {
            pending: 0,
            stale_since: Some(since),
        },
    );
    let decision = case.decide();
    assert!(decision.changes.is_empty());
    assert_eq!(
        outcome(&decision, "q").hold,
        Some(Hold::StaleSince(Some(since)))
    );
    assert!(outcome(&decision, "q")
        .hold
        .as_ref()
        .unwrap()
        .to_string()
        .starts_with("held: demand stale since 2026-11-22T09:59:20"));
}

#[test]
fn a_cooling_pool_does_not_move_and_a_changed_pool_starts_cooling() {
    let mut case = Case::new(
        vec![queue("q", 5, 0, None, &["default"])],
        vec![worker("w1", "default", None, 0)],
        &[("q", 3)],
    );
    let until = t0() + chrono::Duration::seconds(20);
    case.cooling.insert(pn("default"), until);
    let decision = case.decide();
    assert!(decision.changes.is_empty());
    assert_eq!(
        outcome(&decision, "q").hold,
        Some(Hold::CoolingUntil(until))
    );

    case.cooling.clear();
    case.policy.cooling_period = chrono::Duration::seconds(30);
    let decision = case.decide();
    assert_eq!(served_by(&decision, "q"), ["w1"]);
    assert_eq!(
        decision.cooling[&pn("default")],
        t0() + chrono::Duration::seconds(30)
    );
}

#[test]
fn a_queue_whose_only_worker_stopped_beating_gets_a_replacement_while_its_pool_cools() {
    let mut dead = worker("w1", "default", Some("q"), 2);
    dead.usable = false;
    let mut case = Case::new(
        vec![queue("q", 5, 0, None, &["default"])],
        vec![
            dead,
            worker("w2", "default", None, 0),
            worker("w3", "default", None, 0),
        ],
        &[("q", 3)],
    );
    case.cooling
        .insert(pn("default"), t0() + chrono::Duration::seconds(20));
    let decision = case.decide();
    // One replacement (the lowest id), not every idle worker: the rest waits for cooling.
    assert_eq!(served_by(&decision, "q"), ["w1", "w2"]);
    assert_eq!(decision.changes.len(), 1);
    assert_eq!(decision.changes[0].reason, Reason::Replacement);
    assert_eq!(decision.changes[0].reason.to_string(), "replacement");

    // A queue that still has a live worker waits for cooling as before.
    let mut case = Case::new(
        vec![queue("q", 5, 0, None, &["default"])],
        vec![
            worker("w1", "default", Some("q"), 2),
            worker("w2", "default", None, 0),
        ],
        &[("q", 30)],
    );
    case.cooling
        .insert(pn("default"), t0() + chrono::Duration::seconds(20));
    assert!(case.decide().changes.is_empty());
}

#[test]
fn maintenance_changes_nothing_even_for_a_queue_that_is_gone() {
    let mut case = Case::new(
        vec![queue("q", 5, 0, None, &["default"])],
        vec![
            worker("w1", "default", None, 0),
            worker("w2", "default", Some("gone"), 0),
        ],
        &[("q", 3)],
    );
    case.policy.maintenance = true;
    let decision = case.decide();
    assert!(decision.changes.is_empty());
    assert_eq!(
        decision.assignment[&WorkerId::parse("w2").unwrap()],
        Some(qn("gone"))
    );
    assert_eq!(outcome(&decision, "q").hold, Some(Hold::Maintenance));
}

#[test]
fn workers_without_the_queues_kinds_are_never_assigned() {
    let mut w = worker("w1", "default", Some("q"), 0);
    w.kinds = [Kind::SnmpGet].into();
    let case = Case::new(
        vec![queue("q", 5, 0, None, &["default"])],
        vec![w],
        &[("q", 3)],
    );
    let decision = case.decide();
    assert_eq!(decision.assignment[&WorkerId::parse("w1").unwrap()], None);
    assert!(matches!(decision.changes[0].reason, Reason::Unfit(_)));
    assert_eq!(outcome(&decision, "q").hold, Some(Hold::NoEligibleWorker));
}

/// Two sites: each pool's queue has its home there.
fn two_pools(strict: bool) -> Case {
    let mut case = Case::new(
        vec![
            queue("north-q", 5, 0, None, &["north"]),
            queue("south-q", 5, 0, None, &["south"]),
        ],
        vec![
            worker("n1", "north", Some("north-q"), 4),
            worker("s1", "south", None, 0),
            worker("s2", "south", None, 0),
        ],
        &[("north-q", 12), ("south-q", 0)],
    );
    case.policy.strict_isolation = strict;
    case
}

#[test]
fn flexible_pools_lend_idle_workers_and_take_them_back_when_their_demand_returns() {
    let mut case = two_pools(false);
    let lent = case.decide();
    assert_eq!(served_by(&lent, "north-q"), ["n1", "s1", "s2"]);
    assert!(lent
        .changes
        .iter()
        .all(|c| c.reason == Reason::BorrowedFrom(pn("south"))));
    case.apply(&lent);

    // South's own demand comes back: its workers return to it.
    case.demand.insert(qn("south-q"), fresh(8));
    let back = case.decide();
    assert_eq!(served_by(&back, "south-q"), ["s1", "s2"]);
    assert!(back.changes.iter().all(|c| c.reason == Reason::Returned));
    assert_eq!(served_by(&back, "north-q"), ["n1"]);
    assert_eq!(outcome(&back, "north-q").hold, Some(Hold::NoEligibleWorker));
}

#[test]
fn a_lent_worker_waits_for_its_pools_cooling_before_it_returns() {
    let mut case = two_pools(false);
    case.policy.cooling_period = chrono::Duration::seconds(30);
    let lent = case.decide();
    case.apply(&lent);
    case.cooling = lent.cooling.clone();
    case.demand.insert(qn("south-q"), fresh(8));
    let held = case.decide();
    assert!(held.changes.is_empty());
    assert_eq!(
        outcome(&held, "south-q").hold,
        Some(Hold::CoolingUntil(t0() + chrono::Duration::seconds(30)))
    );
}

#[test]
fn strict_pools_lend_nothing() {
    let case = two_pools(true);
    let decision = case.decide();
    assert!(decision.changes.is_empty());
    assert_eq!(served_by(&decision, "north-q"), ["n1"]);
    assert_eq!(
        outcome(&decision, "north-q").hold,
        Some(Hold::NoEligibleWorker)
    );
}

#[test]
fn strict_isolation_ends_a_loan_made_while_flexible() {
    let mut case = two_pools(false);
    let lent = case.decide();
    case.apply(&lent);
    case.policy.strict_isolation = true;
    case.cooling
        .insert(pn("south"), t0() + chrono::Duration::seconds(60));
    let decision = case.decide();
    assert_eq!(served_by(&decision, "north-q"), ["n1"]);
    assert!(decision
        .changes
        .iter()
        .all(|c| matches!(&c.reason, Reason::Unfit(why) if why.contains("strict isolation"))));
}

// ---- properties over random inputs ----

const POOLS: [&str; 3] = ["p0", "p1", "p2"];

fn kinds() -> impl Strategy<Value = BTreeSet<Kind>> {
    proptest::sample::subsequence(Kind::ALL.to_vec(), 0..=3).prop_map(|k| k.into_iter().collect())
}

fn pools() -> impl Strategy<Value = BTreeSet<PoolName>> {
    proptest::sample::subsequence(POOLS.to_vec(), 1..=2)
        .prop_map(|p| p.into_iter().map(pn).collect())
}

prop_compose! {
    fn arb_queue(i: usize)(
        priority in 1u8..=10,
        min in 0u32..3,
        extra in proptest::option::of(0u32..4),
        home in pools(),
        kinds in kinds(),
    ) -> QueueSpec {
        QueueSpec {
            name: qn(&format!("q{i}")),
            priority,
            min_workers: min,
            max_workers: extra.map(|e| min + e),
            home_pools: home,
            kinds,
        }
    }
}

prop_compose! {
    fn arb_worker(i: usize, queues: usize)(
        pool in proptest::sample::select(POOLS.to_vec()),
        capacity in 1u32..8,
        kinds in kinds(),
        in_progress in 0u32..8,
        usable in proptest::bool::weighted(0.9),
        current in proptest::option::of(0..queues.max(1)),
    ) -> WorkerSpec {
        WorkerSpec {
            id: WorkerId::parse(format!("w{i:02}")).unwrap(),
            pool: pn(pool),
            capacity,
            kinds,
            in_progress,
            usable,
            current: current.filter(|_| queues > 0).map(|q| qn(&format!("q{q}"))),
        }
    }
}

fn arb_case() -> impl Strategy<Value = Case> {
    (0usize..6, 0usize..14)
        .prop_flat_map(|(nq, nw)| {
            let queues: Vec<_> = (0..nq).map(arb_queue).collect();
            let workers: Vec<_> = (0..nw).map(|i| arb_worker(i, nq)).collect();
            let demand = proptest::collection::vec(
                (
                    0u64..30,
                    proptest::bool::weighted(0.2),
                    proptest::bool::weighted(0.1),
                ),
                nq,
            );
            let cooling = proptest::collection::vec(proptest::option::of(-30i64..60), 3);
            let policy = (
                any::<bool>(),
                any::<bool>(),
                proptest::bool::weighted(0.1),
                proptest::sample::select(vec![0i64, 30]),
            );
            (queues, workers, demand, cooling, policy)
        })
        .prop_map(|(queues, workers, demand, cooling, policy)| Case {
            demand: queues
                .iter()
                .zip(demand)
                .filter(|(_, (_, _, missing))| !missing)
                .map(|(q, (pending, stale, _))| {
                    let stale_since = stale.then(|| t0() - chrono::Duration::seconds(10));
                    (
                        q.name.clone(),
                        Demand {
                            pending,
                            stale_since,
                        },
                    )
                })
                .collect(),
            cooling: POOLS
                .iter()
                .zip(cooling)
                .filter_map(|(p, c)| c.map(|s| (pn(p), t0() + chrono::Duration::seconds(s))))
                .collect(),
            policy: Policy {
                strict_isolation: policy.0,
                preemption: policy.1,
                maintenance: policy.2,
                cooling_period: chrono::Duration::seconds(policy.3),
            },
            queues,
            workers,
        })
}

/// Whether the worker's current assignment is one the decision must end.
fn unfit(case: &Case, w: &WorkerSpec) -> bool {
    let Some(current) = &w.current else {
        return false;
    };
    let Some(q) = case.queues.iter().find(|q| &q.name == current) else {
        return true;
    };
    q.kinds.is_empty()
        || !q.kinds.is_subset(&w.kinds)
        || (case.policy.strict_isolation && !q.home_pools.contains(&w.pool))
}

fn count(assignment: &BTreeMap<WorkerId, Option<QueueName>>, q: &QueueName) -> usize {
    assignment
        .values()
        .filter(|x| x.as_ref() == Some(q))
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_decision_keeps_every_rule(case in arb_case()) {
        let decision = case.decide();
        let before: BTreeMap<WorkerId, Option<QueueName>> =
            case.workers.iter().map(|w| (w.id.clone(), w.current.clone())).collect();
        prop_assert_eq!(decision.assignment.len(), before.len());
        if case.policy.maintenance {
            prop_assert_eq!(&decision.assignment, &before);
            prop_assert!(decision.changes.is_empty());
            return Ok(());
        }
        for w in &case.workers {
            let to = &decision.assignment[&w.id];
            if let Some(q) = to {
                let spec = case.queues.iter().find(|s| &s.name == q).unwrap();
                // kinds and strict isolation
                prop_assert!(!spec.kinds.is_empty() && spec.kinds.is_subset(&w.kinds));
                if case.policy.strict_isolation {
                    prop_assert!(spec.home_pools.contains(&w.pool), "{} of {} serves {}", w.id, w.pool, q);
                }
            }
            // a cooling pool's workers stay, unless their assignment had to end
            let cooling = case.cooling.get(&w.pool).is_some_and(|t| *t > t0());
            if cooling && !unfit(&case, w) && to != &w.current {
                let over_max = w.current.as_ref().is_some_and(|q| {
                    let spec = case.queues.iter().find(|s| &s.name == q).unwrap();
                    spec.max_workers.is_some_and(|m| count(&before, q) > m as usize)
                });
                // ... or it replaces the workers a queue lost (all that could serve it stopped
                // beating; the ones that cannot serve it are let go anyway)
                let replaces = w.current.is_none() && to.as_ref().is_some_and(|q| {
                    let had: Vec<_> = case.workers.iter()
                        .filter(|o| o.current.as_ref() == Some(q) && !unfit(&case, o))
                        .collect();
                    !had.is_empty() && had.iter().all(|o| !o.usable)
                });
                prop_assert!(over_max || replaces, "{} of cooling pool {} moved", w.id, w.pool);
            }
            // an unstable worker takes nothing new
            if !w.usable && to.is_some() {
                prop_assert_eq!(to, &w.current);
            }
        }
        for q in &case.queues {
            let n = count(&decision.assignment, &q.name);
            if let Some(max) = q.max_workers {
                prop_assert!(n <= max as usize, "{} has {} > max {}", q.name, n, max);
            }
            let stale = case.demand.get(&q.name).is_none_or(|d| d.stale_since.is_some());
            if stale {
                let kept = case.workers.iter().filter(|w| {
                    w.current.as_ref() == Some(&q.name) && !unfit(&case, w)
                }).count();
                let kept = q.max_workers.map_or(kept, |m| kept.min(m as usize));
                prop_assert!(n >= kept, "stale {} scaled in from {} to {}", q.name, kept, n);
            }
            // min held whenever an idle fitting worker was left over
            if n < q.min_workers as usize {
                let spare = case.workers.iter().any(|w| {
                    decision.assignment[&w.id].is_none()
                        && w.usable
                        && case.cooling.get(&w.pool).is_none_or(|t| *t <= t0())
                        && !q.kinds.is_empty() && q.kinds.is_subset(&w.kinds)
                        && q.home_pools.contains(&w.pool)
                });
                prop_assert!(!spare, "{} below min with a spare worker", q.name);
            }
        }
        // every change is reported, and only changes
        let changed: Vec<&WorkerId> =
            before.iter().filter(|(w, q)| &decision.assignment[*w] != *q).map(|(w, _)| w).collect();
        prop_assert_eq!(changed.len(), decision.changes.len());
    }

    #[test]
    fn the_same_inputs_in_any_order_give_the_same_decision(case in arb_case()) {
        let decision = case.decide();
        prop_assert_eq!(&case.decide(), &decision);
        let reversed = Case {
            queues: case.queues.iter().rev().cloned().collect(),
            workers: case.workers.iter().rev().cloned().collect(),
            demand: case.demand.clone(),
            cooling: case.cooling.clone(),
            policy: case.policy,
        };
        prop_assert_eq!(reversed.decide(), decision);
    }

    #[test]
    fn constant_demand_reaches_a_fixed_point_within_two_cycles(mut case in arb_case()) {
        // Cooling only delays moves; with cooling off every cycle may move.
        case.cooling.clear();
        case.policy.cooling_period = chrono::Duration::zero();
        let first = case.decide();
        case.apply(&first);
        let second = case.decide();
        case.apply(&second);
        let third = case.decide();
        prop_assert!(third.changes.is_empty(), "still moving in cycle 3: {:?}", third.changes);
    }
}
