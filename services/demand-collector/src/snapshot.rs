//! Pure: provider answers to one demand snapshot per queue.
//!
//! A name that is a known queue counts for it; another name counts for the queue
//! `demand_mappings` maps it to; any other name is reported as unmapped (counted, never
//! dropped silently). A provider that failed marks stale the queues it fed in its last answer
//! (every queue, if it never answered): their share is unknown, so nobody may scale them in.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use faro_shared::domain::QueueName;
use faro_shared::messages::DemandSnapshot;

/// What one provider answered this cycle.
#[derive(Debug, Clone)]
pub enum Answer {
    Counts(Vec<(String, u64)>),
    Failed,
}

/// One collection turned into snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub snapshots: Vec<DemandSnapshot>,
    /// Names no queue or mapping matched, with their provider and count.
    pub unmapped: Vec<(&'static str, String, u64)>,
    /// The queues each provider that answered fed: what it marks stale if it fails next.
    pub fed: BTreeMap<&'static str, BTreeSet<QueueName>>,
}

/// Snapshots for `queues`. `fed` holds the queues each provider fed in its last answer.
pub fn snapshots(
    queues: &[QueueName],
    mappings: &BTreeMap<String, QueueName>,
    answers: &[(&'static str, Answer)],
    fed: &BTreeMap<&'static str, BTreeSet<QueueName>>,
    now: DateTime<Utc>,
) -> Collected {
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
    let by_name: BTreeMap<&str, &QueueName> = queues.iter().map(|q| (q.as_str(), q)).collect();
    let mut unmapped = Vec::new();
    let mut fed_now: BTreeMap<&'static str, BTreeSet<QueueName>> = BTreeMap::new();
    for (provider, answer) in answers {
        match answer {
            Answer::Failed => match fed.get(provider) {
                Some(queues) => {
                    for queue in queues {
                        if let Some(s) = by_queue.get_mut(queue) {
                            s.stale = true;
                        }
                    }
                    fed_now.insert(provider, queues.clone());
                }
                None => by_queue.values_mut().for_each(|s| s.stale = true),
            },
            Answer::Counts(counts) => {
                let mine = fed_now.entry(provider).or_default();
                for (name, count) in counts {
                    let queue = by_name
                        .get(name.as_str())
                        .copied()
                        .or_else(|| mappings.get(name).filter(|q| by_queue.contains_key(q)));
                    match queue.and_then(|q| by_queue.get_mut(q)) {
                        Some(snapshot) => {
                            snapshot.pending += count;
                            *snapshot.sources.entry((*provider).to_owned()).or_default() += count;
                            mine.insert(snapshot.queue.clone());
                        }
                        None => unmapped.push((*provider, name.clone(), *count)),
                    }
                }
            }
        }
    }
    Collected {
        snapshots: by_queue.into_values().collect(),
        unmapped,
        fed: fed_now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    #[test]
    fn counts_add_up_per_queue_through_mappings_and_unknown_names_are_reported() {
        let queues = [q("a"), q("b")];
        let mappings = BTreeMap::from([("tickets-fiber".to_owned(), q("b"))]);
        let answers = [
            (
                "jetstream",
                Answer::Counts(vec![("a".into(), 3), ("b".into(), 1)]),
            ),
            (
                "http",
                Answer::Counts(vec![
                    ("a".into(), 2),
                    ("tickets-fiber".into(), 5),
                    ("zzz".into(), 9),
                ]),
            ),
        ];
        let got = snapshots(&queues, &mappings, &answers, &BTreeMap::new(), Utc::now());
        assert_eq!(got.snapshots[0].pending, 5);
        assert_eq!(got.snapshots[0].sources["http"], 2);
        assert_eq!(got.snapshots[1].pending, 6);
        assert_eq!(got.snapshots[1].sources["http"], 5);
        assert!(got.snapshots.iter().all(|s| !s.stale));
        assert_eq!(got.unmapped, [("http", "zzz".to_owned(), 9)]);
        assert_eq!(got.fed["http"], BTreeSet::from([q("a"), q("b")]));
    }

    #[test]
    fn a_failed_provider_marks_stale_only_the_queues_it_fed() {
        let queues = [q("a"), q("b")];
        let fed = BTreeMap::from([("http", BTreeSet::from([q("b")]))]);
        let answers = [
            ("jetstream", Answer::Counts(vec![("a".into(), 1)])),
            ("http", Answer::Failed),
        ];
        let got = snapshots(&queues, &BTreeMap::new(), &answers, &fed, Utc::now());
        assert!(!got.snapshots[0].stale);
        assert!(got.snapshots[1].stale);
        assert_eq!(
            got.fed["http"],
            BTreeSet::from([q("b")]),
            "kept for next time"
        );
    }

    #[test]
    fn a_provider_that_never_answered_marks_every_queue_stale() {
        let queues = [q("a")];
        let answers = [("sql", Answer::Failed)];
        let got = snapshots(
            &queues,
            &BTreeMap::new(),
            &answers,
            &BTreeMap::new(),
            Utc::now(),
        );
        assert!(got.snapshots[0].stale);
    }
}
