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

/// The value of a target's slot key: who holds its slots, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSlots {
    pub target: TargetId,
    /// The dispatcher instance that admitted them.
    pub holder: String,
    /// Each run holding a slot, with the end of its lease (its deadline plus grace).
    pub runs: BTreeMap<Uuid, DateTime<Utc>>,
}
