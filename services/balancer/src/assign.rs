//! Pure: which queues each worker consumes.
//!
//! The policy for now is the simplest correct one: every live worker serves every queue whose
//! kinds it supports all of. Deterministic: the same inputs give the same output, with queues
//! sorted by name. Priorities, pools, preemption and cooling extend this function.

use std::collections::{BTreeMap, BTreeSet};

use faro_shared::domain::{QueueName, WorkerId};
use faro_shared::messages::Kind;

/// A live worker as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub id: WorkerId,
    pub kinds: BTreeSet<Kind>,
}

/// A queue as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub name: QueueName,
    /// Kinds submitted to it; a queue with none yet is served by nobody.
    pub kinds: BTreeSet<Kind>,
}

/// The queues of every worker (an empty list for a worker with nothing to serve).
pub fn assign(workers: &[WorkerView], queues: &[QueueView]) -> BTreeMap<WorkerId, Vec<QueueName>> {
    let mut sorted: Vec<&QueueView> = queues.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    workers
        .iter()
        .map(|worker| {
            let served = sorted
                .iter()
                .filter(|q| !q.kinds.is_empty() && q.kinds.is_subset(&worker.kinds))
                .map(|q| q.name.clone())
                .collect();
            (worker.id.clone(), served)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn worker(id: &str, kinds: &[Kind]) -> WorkerView {
        WorkerView {
            id: WorkerId::parse(id).unwrap(),
            kinds: kinds.iter().copied().collect(),
        }
    }

    fn queue(name: &str, kinds: &[Kind]) -> QueueView {
        QueueView {
            name: QueueName::parse(name).unwrap(),
            kinds: kinds.iter().copied().collect(),
        }
    }

    #[test]
    fn workers_serve_only_queues_whose_kinds_they_support() {
        let workers = [
            worker("w1", &[Kind::Sim]),
            worker("w2", &[Kind::Sim, Kind::SnmpGet, Kind::SnmpWalk]),
        ];
        let queues = [
            queue("sims", &[Kind::Sim]),
            queue("polls", &[Kind::SnmpGet, Kind::SnmpWalk]),
            queue("mixed", &[Kind::Sim, Kind::SnmpGet]),
            queue("empty", &[]),
        ];
        let out = assign(&workers, &queues);
        let names = |w: &str| -> Vec<&str> {
            out[&WorkerId::parse(w).unwrap()]
                .iter()
                .map(QueueName::as_str)
                .collect()
        };
        assert_eq!(names("w1"), ["sims"]);
        assert_eq!(names("w2"), ["mixed", "polls", "sims"]);
    }

    fn kinds() -> impl Strategy<Value = Vec<Kind>> {
        proptest::sample::subsequence(Kind::ALL.to_vec(), 0..=4)
    }

    proptest! {
        #[test]
        fn never_assigns_an_unsupported_kind_and_is_deterministic(
            ws in proptest::collection::vec(kinds(), 0..8),
            qs in proptest::collection::vec(kinds(), 0..8),
        ) {
            let workers: Vec<_> = ws.iter().enumerate().map(|(i, k)| worker(&format!("w{i}"), k)).collect();
            let queues: Vec<_> = qs.iter().enumerate().map(|(i, k)| queue(&format!("q{i}"), k)).collect();
            let out = assign(&workers, &queues);
            prop_assert_eq!(out.len(), workers.len());
            for w in &workers {
                for q in &out[&w.id] {
                    let queue = queues.iter().find(|x| &x.name == q).unwrap();
                    prop_assert!(!queue.kinds.is_empty() && queue.kinds.is_subset(&w.kinds));
                }
            }
            let mut reversed = queues.clone();
            reversed.reverse();
            prop_assert_eq!(assign(&workers, &reversed), out);
        }
    }
}
