//! What the balancer knows between cycles, behind one `tokio::sync::Mutex` shared by the cycle
//! and the API. An async mutex because the API's answers read it across an await; the cycle
//! holds it only to prepare and to commit (see `cycle`), never while it writes PostgreSQL or
//! NATS, so a slow write never holds an answer up.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::messages::{Assignment, DemandSnapshot};

use crate::decide::{Decision, QueueSpec};
use crate::registry::{Event, Registry};

/// Lost and left workers unseen for this long leave the balancer's memory and `faro workers`
/// (their rows and events stay in PostgreSQL).
pub const FORGET_AFTER_HOURS: i64 = 24;

/// What the balancer knows between cycles; the API answers from it.
#[derive(Debug, Default)]
pub struct State {
    pub registry: Registry,
    /// Registry events not saved yet.
    pub events: Vec<Event>,
    /// The assignment last written for each worker.
    pub assigned: BTreeMap<WorkerId, Assignment>,
    /// The latest demand snapshot of each queue, and since when it has been stale.
    pub demand: BTreeMap<QueueName, (DemandSnapshot, Option<DateTime<Utc>>)>,
    /// The hold last recorded for each queue.
    pub holds: BTreeMap<QueueName, Option<String>>,
    /// The latest decision and the queues it was made for.
    pub last: Option<(Decision, Vec<QueueSpec>)>,
    /// Pool to the end of its cooling.
    pub cooling: BTreeMap<PoolName, DateTime<Utc>>,
}

impl State {
    /// Ages the registry to `now`: workers silent for too long become unstable, then lost
    /// (events to save), and those gone for [`FORGET_AFTER_HOURS`] are forgotten.
    pub fn age(&mut self, now: DateTime<Utc>, max_missed: u64) {
        let aged = self.registry.tick(now, max_missed);
        for event in &aged {
            tracing::info!(worker = %event.worker, event = event.kind.as_str(), missed = event.missed, "worker registry");
        }
        self.events.extend(aged);
        self.registry
            .forget_before(now - chrono::Duration::hours(FORGET_AFTER_HOURS));
    }
}
