//! The dispatcher's state shared by its tasks while it leads, and the guards that lock it.
//!
//! The locks are `std::sync` ones, held for a few in-memory steps and never across an
//! `.await` (admission, deadlines, cancelled runs, slot times, devices), except `settings`, a
//! `tokio` mutex held across the reads and writes of one settings change. `chains` is a
//! `tokio` `RwLock`: read by every result batch, written only when definitions change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::domain::{JobId, QueueName, TargetId};
use faro_shared::messages::RunMessage;
use faro_shared::snmp::Device;
use faro_shared::Namespace;
use tokio::sync::{mpsc, Notify, RwLock};

use crate::admission::{Admission, SlotChanges};
use crate::chains::Chains;
use crate::config::Config;
use crate::deadlines::Deadlines;
use crate::timetable::Recurring;

/// What every task of a leading dispatcher reaches through its `Arc<Dispatcher>`.
pub(crate) struct Dispatcher {
    pub(crate) pool: Pool,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) ns: Namespace,
    pub(crate) config: Config,
    /// Woken when a retry is scheduled, so the retries loop can re-plan its timer.
    pub(crate) retries_changed: Notify,
    /// Slots of every target: what may be published now, what waits.
    pub(crate) admission: Mutex<Admission>,
    /// Target slots taken and freed, for the slot leases in KV.
    pub(crate) slot_changes: mpsc::UnboundedSender<SlotChanges>,
    /// Admitted runs on their way to the publisher task.
    pub(crate) publisher: mpsc::UnboundedSender<Vec<RunMessage>>,
    /// New recurring definitions and ended runs, for the scheduler task.
    pub(crate) schedule: mpsc::UnboundedSender<ScheduleEvent>,
    /// Runs in the outcome outbox to publish now (recurring slots skipped), for the outbox
    /// task: the scheduler never waits on NATS.
    pub(crate) outboxed: mpsc::UnboundedSender<Vec<uuid::Uuid>>,
    /// Chained jobs by parent; read on every result batch, written on new definitions.
    pub(crate) chains: RwLock<Chains>,
    /// Deadlines of the attempts in flight.
    pub(crate) deadlines: Mutex<Deadlines>,
    /// Woken when a deadline is added, so the deadline loop can re-plan its timer.
    pub(crate) deadlines_changed: Notify,
    /// Runs cancelled by an operator: never offered or published again.
    pub(crate) cancelled: Mutex<Cancelled>,
    /// The slot of each recurring run fired and not yet published, for the schedule lag.
    pub(crate) slot_times: Mutex<SlotTimes>,
    /// Held from reading the settings to applying them, and from storing a changed setting to
    /// applying it: a reload that read before a change never applies after it.
    pub(crate) settings: tokio::sync::Mutex<()>,
    /// Held by one submission at a time, from checking its chains for cycles to defining
    /// them: `faro.submit` messages and `submit` requests come in at once, and two that close
    /// a cycle between them must not both pass the check.
    pub(crate) intake: tokio::sync::Mutex<()>,
    /// Address and credentials of each target, attached to the SNMP runs published.
    pub(crate) devices: std::sync::RwLock<Arc<HashMap<TargetId, Device>>>,
    /// `snmp.test_mode`: SNMP runs are published to be simulated.
    pub(crate) snmp_test_mode: std::sync::atomic::AtomicBool,
    /// When this dispatcher last declared each queue's consumer: it declares it before its
    /// first run to the queue and again a minute later (one deleted is made again), since
    /// workers and the demand-collector only open it.
    pub(crate) queue_consumers: tokio::sync::Mutex<HashMap<QueueName, tokio::time::Instant>>,
}

/// Recurring runs fired and not yet published, with their slot.
pub(crate) type SlotTimes = HashMap<uuid::Uuid, chrono::DateTime<chrono::Utc>>;

/// The most recent cancelled runs, bounded.
#[derive(Debug, Default)]
pub(crate) struct Cancelled {
    ids: std::collections::HashSet<uuid::Uuid>,
    order: std::collections::VecDeque<uuid::Uuid>,
}

impl Cancelled {
    const KEPT: usize = 100_000;

    pub(crate) fn insert(&mut self, run: uuid::Uuid) {
        if self.ids.insert(run) {
            self.order.push_back(run);
        }
        while self.order.len() > Self::KEPT {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// What the scheduler task learns from the other loops.
#[derive(Debug)]
pub(crate) enum ScheduleEvent {
    Define(Vec<Recurring>),
    /// Jobs no longer recurring: disabled, or redefined as chained or one-shot.
    Remove(Vec<JobId>),
    Ended(Vec<(JobId, uuid::Uuid)>),
}

impl Dispatcher {
    pub(crate) fn deadlines(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops the runs an operator cancelled.
    pub(crate) fn cancelled(&self) -> std::sync::MutexGuard<'_, Cancelled> {
        self.cancelled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn not_cancelled(&self, runs: &mut Vec<RunMessage>) -> Vec<RunMessage> {
        let cancelled = self.cancelled();
        if cancelled.ids.is_empty() {
            return Vec::new();
        }
        let (dropped, kept) = std::mem::take(runs)
            .into_iter()
            .partition(|r| cancelled.ids.contains(&r.run_id));
        *runs = kept;
        dropped
    }

    pub(crate) fn slot_times(&self) -> std::sync::MutexGuard<'_, SlotTimes> {
        self.slot_times
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The admission state, locked; whatever slots change while it is held are written to
    /// the slot leases when the lock is let go.
    pub(crate) fn admission(&self) -> AdmissionGuard<'_> {
        // A panic while holding the lock leaves counts that are still consistent enough to
        // go on with; the next restart rebuilds them from PostgreSQL.
        AdmissionGuard {
            guard: self
                .admission
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            slot_changes: &self.slot_changes,
        }
    }
}

/// The locked admission state; on unlock its slot changes go to the slot lease writer.
pub(crate) struct AdmissionGuard<'a> {
    guard: std::sync::MutexGuard<'a, Admission>,
    slot_changes: &'a mpsc::UnboundedSender<SlotChanges>,
}

impl std::ops::Deref for AdmissionGuard<'_> {
    type Target = Admission;
    fn deref(&self) -> &Admission {
        &self.guard
    }
}

impl std::ops::DerefMut for AdmissionGuard<'_> {
    fn deref_mut(&mut self) -> &mut Admission {
        &mut self.guard
    }
}

impl Drop for AdmissionGuard<'_> {
    fn drop(&mut self) {
        let changes = self.guard.take_changes();
        // Sent under the lock, so the writer sees the changes in the order they were made,
        // and stamped under it, so their times follow that order.
        if !changes.is_empty() {
            let at = leader_now();
            let _ = self.slot_changes.send(SlotChanges { at, changes });
        }
    }
}

/// The leader's clock: wall time that never goes back within this process, so the times of
/// admission changes and of runs sent after them are in the order they happened, whatever
/// the system clock does.
pub(crate) fn leader_now() -> DateTime<Utc> {
    static LATEST_MICROS: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = Utc::now().timestamp_micros();
    let latest = LATEST_MICROS.fetch_max(now, Ordering::SeqCst).max(now);
    DateTime::from_timestamp_micros(latest).unwrap_or_else(Utc::now)
}
