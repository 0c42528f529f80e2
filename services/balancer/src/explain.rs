//! Pure: why a queue or a pool has the workers it has, in sentences, from the state of the
//! latest cycle (`faro explain queue|pool`).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use faro_shared::domain::{PoolName, QueueName, WorkerId};

use crate::registry::RegState;
use crate::state::State;

/// The facts that decide a queue's workers at `now`; an error for a queue the latest cycle
/// did not see.
pub fn queue_facts(
    state: &State,
    queue: &QueueName,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    let Some((decision, specs)) = &state.last else {
        anyhow::bail!("the balancer has not finished a cycle yet; ask again in a moment");
    };
    let (Some(spec), Some(outcome)) = (
        specs.iter().find(|s| &s.name == queue),
        decision.queues.iter().find(|q| &q.queue == queue),
    ) else {
        anyhow::bail!("no queue named {queue:?} (as of the latest cycle)");
    };
    let mut facts = Vec::new();
    let pools: Vec<&str> = spec.home_pools.iter().map(PoolName::as_str).collect();
    let kinds: Vec<&str> = spec.kinds.iter().map(|k| k.as_str()).collect();
    facts.push(format!(
        "queue {queue}: priority {} (1 is the most urgent), min_workers {}, max_workers {}, home pools {}, kinds {}",
        spec.priority,
        spec.min_workers,
        spec.max_workers.map_or("none".to_owned(), |m| m.to_string()),
        pools.join(","),
        if kinds.is_empty() { "none yet (nobody serves it until a job is submitted)".to_owned() } else { kinds.join(",") },
    ));
    match state.demand.get(queue) {
        None => {
            facts.push("demand: no snapshot yet; treated as stale, so nothing is scaled in".into())
        }
        Some((snapshot, since)) => {
            let mut line = format!(
                "demand: {} runs pending or running, collected {}",
                snapshot.pending,
                snapshot.collected_at.to_rfc3339()
            );
            if !snapshot.sources.is_empty() {
                let sources: Vec<String> = snapshot
                    .sources
                    .iter()
                    .map(|(p, n)| format!("{p}={n}"))
                    .collect();
                let _ = write!(line, " ({})", sources.join(", "));
            }
            if let Some(since) = since {
                let _ = write!(
                    line,
                    "; STALE since {} (a provider failed): it keeps its workers",
                    since.to_rfc3339()
                );
            }
            facts.push(line);
        }
    }
    let serving: Vec<String> = state
        .assigned
        .iter()
        .filter(|(_, a)| a.queues.contains(queue))
        .map(|(w, _)| w.to_string())
        .collect();
    facts.push(format!(
        "workers: {} ({}), {} slots",
        outcome.workers,
        if serving.is_empty() {
            "none".to_owned()
        } else {
            serving.join(", ")
        },
        outcome.capacity
    ));
    facts.push(match &outcome.hold {
        Some(hold) => format!("why not more: {hold}"),
        None if outcome.stale => "enough: demand unknown, it keeps what it has".to_owned(),
        None if outcome.workers == spec.min_workers && outcome.capacity >= outcome.pending => {
            format!(
                "enough: at its min_workers {}, and its slots cover its pending runs",
                spec.min_workers
            )
        }
        None => format!(
            "enough: {} slots for {} pending runs",
            outcome.capacity, outcome.pending
        ),
    });
    for pool in &spec.home_pools {
        if let Some(until) = state.cooling.get(pool).filter(|u| **u > now) {
            facts.push(format!(
                "home pool {pool} is cooling until {}",
                until.to_rfc3339()
            ));
        }
    }
    Ok(facts)
}

/// A pool's workers at `now`: how many in each state, what each serves, its cooling.
pub fn pool_facts(state: &State, pool: &PoolName, now: DateTime<Utc>) -> Vec<String> {
    let mut facts = Vec::new();
    let members: Vec<(&WorkerId, &crate::registry::Entry)> = state
        .registry
        .workers
        .iter()
        .filter(|(_, e)| e.beat.as_ref().is_some_and(|b| &b.pool == pool))
        .collect();
    let mut by_state = std::collections::BTreeMap::<&str, u32>::new();
    for (_, entry) in &members {
        *by_state.entry(entry.state.as_str()).or_default() += 1;
    }
    let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    facts.push(format!(
        "pool {pool}: {} workers ({})",
        members.len(),
        if states.is_empty() {
            "none".to_owned()
        } else {
            states.join(", ")
        }
    ));
    let home_of: Vec<&QueueName> = state
        .last
        .as_ref()
        .map(|(_, specs)| {
            specs
                .iter()
                .filter(|s| s.home_pools.contains(pool))
                .map(|s| &s.name)
                .collect()
        })
        .unwrap_or_default();
    facts.push(format!(
        "home pool of: {}",
        if home_of.is_empty() {
            "no queue".to_owned()
        } else {
            home_of
                .iter()
                .map(|q| q.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    for (id, entry) in &members {
        if !matches!(entry.state, RegState::Active | RegState::Unstable) {
            continue;
        }
        let serving = state
            .assigned
            .get(*id)
            .and_then(|a| a.queues.first().cloned());
        let line = match serving {
            None => format!("{id}: idle"),
            Some(q) if home_of.contains(&&q) => format!("{id}: serves {q}"),
            Some(q) => format!("{id}: lent to {q} (another pool's queue)"),
        };
        facts.push(line);
    }
    match state.cooling.get(pool).filter(|u| **u > now) {
        Some(until) => facts.push(format!(
            "cooling until {}: its workers do not move before then",
            until.to_rfc3339()
        )),
        None => facts.push("not cooling".to_owned()),
    }
    facts
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use faro_shared::messages::Kind;

    use super::*;
    use crate::decide::{Decision, Hold, QueueOutcome, QueueSpec};
    use crate::fixtures::{assignment, beat, pool, queue, snapshot, t, worker};

    fn spec(name: &str, home: &str) -> QueueSpec {
        QueueSpec {
            name: queue(name),
            priority: 1,
            min_workers: 0,
            max_workers: Some(1),
            home_pools: BTreeSet::from([pool(home)]),
            kinds: BTreeSet::from([Kind::Sim]),
        }
    }

    /// w1 (pool a) serves walk, w2 (pool b) is lent to walk, w3 (pool a) is idle; walk is at
    /// its max_workers; pool a cools until t(100).
    fn state() -> State {
        let mut state = State::default();
        for (id, home) in [("w1", "a"), ("w2", "b"), ("w3", "a")] {
            state.registry.beat(beat(id, home, t(0)), t(0));
        }
        state
            .assigned
            .insert(worker("w1"), assignment("w1", &["walk"]));
        state
            .assigned
            .insert(worker("w2"), assignment("w2", &["walk"]));
        state
            .demand
            .insert(queue("walk"), (snapshot("walk", 9, t(0)), Some(t(-5))));
        state.cooling.insert(pool("a"), t(100));
        let decision = Decision {
            assignment: BTreeMap::new(),
            changes: Vec::new(),
            queues: vec![QueueOutcome {
                queue: queue("walk"),
                workers: 2,
                capacity: 4,
                pending: 9,
                stale: true,
                hold: Some(Hold::MaxWorkers),
            }],
            cooling: BTreeMap::new(),
        };
        state.last = Some((decision, vec![spec("walk", "a")]));
        state
    }

    #[test]
    fn a_queue_is_explained_by_its_spec_demand_workers_hold_and_cooling() {
        let state = state();
        let facts = queue_facts(&state, &queue("walk"), t(10)).unwrap();
        assert!(facts[0].starts_with("queue walk: priority 1"), "{facts:?}");
        assert!(
            facts[1].contains("9 runs pending") && facts[1].contains("STALE"),
            "{facts:?}"
        );
        assert_eq!(facts[2], "workers: 2 (w1, w2), 4 slots");
        assert_eq!(facts[3], format!("why not more: {}", Hold::MaxWorkers));
        assert!(
            facts[4].starts_with("home pool a is cooling until"),
            "{facts:?}"
        );
        // Once the cooling has ended, it is not mentioned.
        let later = queue_facts(&state, &queue("walk"), t(200)).unwrap();
        assert_eq!(later.len(), 4, "{later:?}");
    }

    #[test]
    fn a_queue_is_explained_only_after_a_cycle_saw_it() {
        let error = queue_facts(&State::default(), &queue("walk"), t(0)).unwrap_err();
        assert!(
            error.to_string().contains("not finished a cycle"),
            "{error}"
        );
        let error = queue_facts(&state(), &queue("nope"), t(0)).unwrap_err();
        assert!(error.to_string().contains("no queue named"), "{error}");
    }

    #[test]
    fn a_pool_is_explained_by_its_workers_and_what_each_serves() {
        let state = state();
        let facts = pool_facts(&state, &pool("a"), t(10));
        assert_eq!(facts[0], "pool a: 2 workers (2 active)");
        assert_eq!(facts[1], "home pool of: walk");
        assert!(facts.contains(&"w1: serves walk".to_owned()), "{facts:?}");
        assert!(facts.contains(&"w3: idle".to_owned()), "{facts:?}");
        assert!(
            facts.last().unwrap().starts_with("cooling until"),
            "{facts:?}"
        );
        let b = pool_facts(&state, &pool("b"), t(10));
        assert!(
            b.contains(&"w2: lent to walk (another pool's queue)".to_owned()),
            "{b:?}"
        );
        assert_eq!(b.last().unwrap(), "not cooling");
        assert_eq!(
            pool_facts(&state, &pool("a"), t(200)).last().unwrap(),
            "not cooling"
        );
    }
}
