//! Target slots in the `faro_leases` bucket: key `slot.<target>` holds the runs that hold a
//! slot of that target (written by the leading dispatcher), so anyone can read who holds an
//! OLT, and a worker given a run again can tell whether its attempt still holds a slot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::TargetId;

/// Key prefix of the slot leases in the bucket.
pub const PREFIX: &str = "slot.";

/// The key of `target`'s slots.
pub fn key(target: &TargetId) -> String {
    format!("{PREFIX}{target}")
}

/// The target of a slot key; `None` for any other key of the bucket.
pub fn parse_key(key: &str) -> Option<TargetId> {
    TargetId::parse(key.strip_prefix(PREFIX)?).ok()
}

/// The value of a target's slot key: who holds its slots, and until when. A target whose
/// last slot was freed keeps a record without runs for a few minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSlots {
    pub target: TargetId,
    /// The dispatcher instance that admitted them.
    pub holder: String,
    /// Each run holding a slot, with the end of its lease (its deadline plus grace).
    pub runs: BTreeMap<Uuid, DateTime<Utc>>,
    /// The leader's time of the latest admission change this record holds: every change the
    /// leader made before it is in it. Absent in records of dispatchers older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

impl TargetSlots {
    /// Whether `run`, sent by the leader at `sent_at` (its own clock, as the run message
    /// says), still holds its slot: `None` when this record cannot tell. Only a record taken
    /// after the run was sent holds the change that admitted it, so only such a record
    /// without it says it ended (or was superseded). When it was written does not matter:
    /// the leader writes its records a little after the changes, and a record taken before
    /// a run was admitted may reach the server after the run.
    pub fn holds(&self, run: Uuid, sent_at: Option<DateTime<Utc>>) -> Option<bool> {
        match (self.at, sent_at) {
            (Some(at), Some(sent_at)) if at > sent_at => Some(self.runs.contains_key(&run)),
            _ if self.runs.contains_key(&run) => Some(true),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at: Option<DateTime<Utc>>, runs: &[Uuid]) -> TargetSlots {
        let until = DateTime::from_timestamp(2_000_000_000, 0).unwrap();
        TargetSlots {
            target: TargetId::parse("olt-1").unwrap(),
            holder: "d0".to_owned(),
            runs: runs.iter().map(|run| (*run, until)).collect(),
            at,
        }
    }

    #[test]
    fn only_a_record_taken_after_a_run_was_sent_says_it_ended() {
        let (run, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let sent = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let later = sent + chrono::Duration::microseconds(1);
        // Taken after it was sent: what it says goes.
        assert_eq!(
            record(Some(later), &[other]).holds(run, Some(sent)),
            Some(false)
        );
        assert_eq!(record(Some(later), &[]).holds(run, Some(sent)), Some(false));
        assert_eq!(
            record(Some(later), &[run]).holds(run, Some(sent)),
            Some(true)
        );
        // Taken before it was sent, at the same time, by an older leader, or the run does
        // not say when it was sent: without the run it tells nothing.
        for (at, sent_at) in [
            (Some(sent - chrono::Duration::seconds(1)), Some(sent)),
            (Some(sent), Some(sent)),
            (None, Some(sent)),
            (Some(later), None),
        ] {
            assert_eq!(
                record(at, &[other]).holds(run, sent_at),
                None,
                "{at:?} {sent_at:?}"
            );
            assert_eq!(record(at, &[run]).holds(run, sent_at), Some(true));
        }
    }

    #[test]
    fn records_of_older_leaders_still_read() {
        let old = r#"{"target":"t0","holder":"d0","runs":{}}"#;
        let parsed: TargetSlots = serde_json::from_str(old).unwrap();
        assert_eq!(parsed.at, None);
    }
}
