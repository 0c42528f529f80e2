//! Pure: provider answers to one demand snapshot per queue.
//!
//! A name that is a known queue counts for it (the mapping table extends this); any other name
//! is reported as unmapped. A provider that failed marks every queue stale: its share is
//! unknown, so nobody may scale a queue in on it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use faro_shared::domain::QueueName;
use faro_shared::messages::DemandSnapshot;

/// What one provider answered this cycle.
#[derive(Debug, Clone)]
pub enum Answer {
    Counts(Vec<(String, u64)>),
    Failed,
}

/// Snapshots for `queues`, and the names no queue matched.
pub fn snapshots(
    queues: &[QueueName],
    answers: &[(&'static str, Answer)],
    now: DateTime<Utc>,
) -> (Vec<DemandSnapshot>, Vec<(&'static str, String)>) {
    let mut by_queue: BTreeMap<&QueueName, DemandSnapshot> = queues
        .iter()
        .map(|q| {
            (
                q,
                DemandSnapshot {
                    queue: q.clone(),
                    pending: 0,
                    stale: false,
                    sources: BTreeMap::new(),
                    collected_at: now,
                },
            )
        })
        .collect();
    let mut unmapped = Vec::new();
    for (provider, answer) in answers {
        match answer {
            Answer::Failed => by_queue.values_mut().for_each(|s| s.stale = true),
            Answer::Counts(counts) => {
                for (name, count) in counts {
                    match by_queue.iter_mut().find(|(q, _)| q.as_str() == name) {
                        Some((_, snapshot)) => {
                            snapshot.pending += count;
                            *snapshot.sources.entry((*provider).to_owned()).or_default() += count;
                        }
                        None => unmapped.push((*provider, name.clone())),
                    }
                }
            }
        }
    }
    (by_queue.into_values().collect(), unmapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    #[test]
    fn counts_add_up_per_queue_and_unknown_names_are_reported() {
        let queues = [q("a"), q("b")];
        let answers = [
            (
                "jetstream",
                Answer::Counts(vec![("a".into(), 3), ("b".into(), 1)]),
            ),
            (
                "http",
                Answer::Counts(vec![("a".into(), 2), ("zzz".into(), 9)]),
            ),
        ];
        let (snaps, unmapped) = snapshots(&queues, &answers, Utc::now());
        assert_eq!(snaps[0].pending, 5);
        assert_eq!(snaps[0].sources["http"], 2);
        assert_eq!(snaps[1].pending, 1);
        assert!(snaps.iter().all(|s| !s.stale));
        assert_eq!(unmapped, [("http", "zzz".to_owned())]);
    }

    #[test]
    fn a_failed_provider_marks_queues_stale() {
        let queues = [q("a")];
        let answers = [("jetstream", Answer::Failed)];
        let (snaps, _) = snapshots(&queues, &answers, Utc::now());
        assert!(snaps[0].stale);
    }
}
