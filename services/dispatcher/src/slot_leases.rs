//! Target slots as leases in the `faro_leases` bucket: key `slot.<target>` holds the runs
//! that hold a slot of that target, each with the time its lease runs out, and the leader's
//! time of the latest change it holds; when the last run ends, a record without runs replaces
//! the key's history and lives a few minutes.
//!
//! The leader decides admission in memory (one writer, no round trip per decision) and writes
//! the slots here as they change, without waiting for each write. Changes that come together
//! are written together: one write per target touched, so under load the writes follow the
//! targets, not the runs. Each key has a per-key TTL of its latest run's deadline plus grace,
//! so the slots of a leader that dies expire by themselves on the NATS server; a new leader
//! rewrites the slots still in flight (from PostgreSQL) and purges the others. Anyone can read
//! who holds an OLT: `nats kv get faro_leases slot.<target>`, or a watch on `slot.>`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{self, context::PublishAckFuture, kv};
use chrono::{DateTime, Utc};
use faro_shared::domain::TargetId;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::admission::{SlotChange, SlotChanges};
use crate::deadlines::RunDeadline;
use crate::metrics as m;

pub use faro_shared::messages::slots::{key, parse_key, TargetSlots, PREFIX};

/// How long the record of a target whose last slot was freed stays, in seconds: a worker
/// given a run again after a server restart still reads that the run ended.
const EMPTY_RECORD_TTL: &str = "300";

/// How long changes gather before they are written.
const COALESCE: Duration = Duration::from_millis(20);

/// Writes not yet confirmed by the server, at most; the writer waits for confirmations beyond.
/// Well under the JetStream context's 10,000 ack permits, which unconfirmed writes hold.
const IN_FLIGHT: usize = 1024;

/// The runs holding each target's slots, with the end of each one's lease.
type Held = HashMap<TargetId, BTreeMap<Uuid, DateTime<Utc>>>;

/// Applies changes to the slots held; returns the targets whose slots changed. A run's lease
/// ends at its deadline counted from `now`.
fn apply(
    held: &mut Held,
    changes: Vec<SlotChange>,
    deadline: RunDeadline,
    now: DateTime<Utc>,
) -> HashSet<TargetId> {
    let mut dirty = HashSet::new();
    for change in changes {
        match change {
            SlotChange::Held {
                target,
                run,
                timeout_ms,
            } => {
                let until = deadline.at(now, timeout_ms);
                held.entry(target.clone()).or_default().insert(run, until);
                dirty.insert(target);
            }
            SlotChange::Freed { target, run } => {
                if let Some(runs) = held.get_mut(&target) {
                    runs.remove(&run);
                    if runs.is_empty() {
                        held.remove(&target);
                    }
                }
                dirty.insert(target);
            }
        }
    }
    dirty
}

/// Where the slot leases live and how long they last.
#[derive(Debug, Clone)]
pub struct SlotLeases {
    pub js: jetstream::Context,
    pub store: kv::Store,
    pub bucket: String,
    pub holder: String,
    /// How long a slot is held: until its run's deadline.
    pub deadline: RunDeadline,
}

impl SlotLeases {
    /// Writes `restored` (the slots in flight when this leader took over), empties every other
    /// target's slots left in the bucket, then writes the changes as they come until
    /// `shutdown`. Every record says the time of the latest change it holds.
    pub async fn run(
        self,
        restored: SlotChanges,
        mut changes: mpsc::UnboundedReceiver<SlotChanges>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut pending = Pending::default();
        let mut held: Held = HashMap::new();
        let mut at = restored.at;
        let mut dirty = self.apply(&mut held, restored.changes);
        for orphan in self.orphans(&held).await? {
            tracing::info!(target = %orphan, "emptying slot leases that no run in flight holds");
            dirty.insert(orphan);
        }
        self.flush(&mut held, &mut dirty, at, &mut pending).await?;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                () = pending.confirm_oldest(), if !pending.is_empty() => {}
                batch = changes.recv() => {
                    let Some(batch) = batch else { break };
                    at = at.max(batch.at);
                    let mut dirty = self.apply(&mut held, batch.changes);
                    // What changes in the next moments goes in the same writes: under load a
                    // target is written a few dozen times a second, not once per run.
                    tokio::time::sleep(COALESCE).await;
                    while let Ok(more) = changes.try_recv() {
                        at = at.max(more.at);
                        dirty.extend(self.apply(&mut held, more.changes));
                    }
                    self.flush(&mut held, &mut dirty, at, &mut pending).await?;
                }
            }
        }
        // What was sent is confirmed before the leader lets go.
        while !pending.is_empty() {
            pending.confirm_oldest().await;
        }
        Ok(())
    }

    fn apply(&self, held: &mut Held, changes: Vec<SlotChange>) -> HashSet<TargetId> {
        apply(held, changes, self.deadline, Utc::now())
    }

    /// Sends the slots of every dirty target as they are after the changes up to `at`.
    async fn flush(
        &self,
        held: &mut Held,
        dirty: &mut HashSet<TargetId>,
        at: DateTime<Utc>,
        pending: &mut Pending,
    ) -> anyhow::Result<()> {
        for target in dirty.drain() {
            let write = self.write(&target, held.get(&target), at).await?;
            pending.push(write).await;
        }
        Ok(())
    }

    /// Sends one target's slots as they are after the changes up to `at`; the returned
    /// future is the server's confirmation.
    async fn write(
        &self,
        target: &TargetId,
        runs: Option<&BTreeMap<Uuid, DateTime<Utc>>>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Write> {
        let mut headers = HeaderMap::new();
        let runs = runs.cloned().unwrap_or_default();
        match runs.values().max() {
            Some(last) => {
                let ttl = (*last - Utc::now()).to_std().unwrap_or_default();
                headers.insert(header::NATS_MESSAGE_TTL, ttl_secs(ttl).to_string().as_str());
            }
            None => {
                // The record without runs replaces the key's history; it stays a few minutes
                // (so a worker given a run again after a server restart still reads that the
                // run ended), then a target with no slot held leaves nothing behind.
                headers.insert(header::NATS_ROLLUP, "sub");
                headers.insert(header::NATS_MESSAGE_TTL, EMPTY_RECORD_TTL);
            }
        }
        let payload = serde_json::to_vec(&TargetSlots {
            target: target.clone(),
            holder: self.holder.clone(),
            runs,
            at: Some(at),
        })?;
        let subject = format!("$KV.{}.{}", self.bucket, key(target));
        let ack: PublishAckFuture = self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .context("cannot send a slot lease")?;
        Ok(Box::pin(async move {
            ack.await.map(|_| ()).map_err(anyhow::Error::new)
        }))
    }

    /// Targets with slot leases in the bucket that no run in `held` accounts for.
    async fn orphans(&self, held: &Held) -> anyhow::Result<Vec<TargetId>> {
        let mut keys = self
            .store
            .keys()
            .await
            .with_context(|| format!("cannot list the keys of {}", self.bucket))?;
        let mut orphans = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.with_context(|| format!("cannot list the keys of {}", self.bucket))?;
            if let Some(target) = parse_key(&key) {
                if !held.contains_key(&target) {
                    orphans.push(target);
                }
            }
        }
        Ok(orphans)
    }
}

/// A write sent; it resolves when the server confirms it.
type Write = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Writes sent and not yet confirmed, oldest first (the server confirms them in order).
#[derive(Default)]
struct Pending(VecDeque<Write>);

impl Pending {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a write, first waiting for the oldest when `IN_FLIGHT` are unconfirmed.
    async fn push(&mut self, write: Write) {
        if self.0.len() >= IN_FLIGHT {
            self.confirm_oldest().await;
        }
        self.0.push_back(write);
    }

    /// Waits for the oldest write; a refused one is counted and logged (the key is then
    /// corrected by its TTL).
    async fn confirm_oldest(&mut self) {
        let Some(oldest) = self.0.front_mut() else {
            return;
        };
        let written = oldest.await;
        self.0.pop_front();
        if let Err(error) = written {
            metrics::counter!(m::SLOT_LEASE_ERRORS).increment(1);
            tracing::warn!(
                error = faro_shared::pg::error_text(&error),
                "a slot lease write failed; the key is corrected by its TTL"
            );
        }
    }
}

/// Whole seconds of a TTL, rounded up, as the server takes them.
fn ttl_secs(ttl: Duration) -> u64 {
    (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_other_keys_are_not_slots() {
        let target = TargetId::parse("olt-7_a").unwrap();
        assert_eq!(parse_key(&key(&target)), Some(target));
        assert_eq!(parse_key("dispatcher.leader"), None);
        assert_eq!(parse_key("slot.not.a.target"), None);
    }

    #[test]
    fn changes_coalesce_per_target_and_leases_end_at_the_deadline() {
        let (a, b) = (TargetId::parse("a").unwrap(), TargetId::parse("b").unwrap());
        let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
        let now = DateTime::UNIX_EPOCH;
        let mut held = Held::new();
        let minute = Duration::from_secs(60);
        let dirty = apply(
            &mut held,
            vec![
                SlotChange::Held {
                    target: a.clone(),
                    run: r1,
                    timeout_ms: None,
                },
                SlotChange::Held {
                    target: a.clone(),
                    run: r2,
                    timeout_ms: Some(1_000),
                },
                SlotChange::Held {
                    target: b.clone(),
                    run: r1,
                    timeout_ms: None,
                },
                SlotChange::Freed {
                    target: b.clone(),
                    run: r1,
                },
            ],
            RunDeadline {
                default_timeout: minute,
                grace: Duration::from_secs(30),
            },
            now,
        );
        assert_eq!(dirty, HashSet::from([a.clone(), b.clone()]));
        assert!(
            !held.contains_key(&b),
            "a target with no slot held is dropped"
        );
        assert_eq!(held[&a][&r1], now + chrono::Duration::seconds(90));
        assert_eq!(held[&a][&r2], now + chrono::Duration::seconds(31));
        // Freeing a run twice, or one never held, changes nothing but marks the target.
        let dirty = apply(
            &mut held,
            vec![SlotChange::Freed {
                target: a.clone(),
                run: Uuid::new_v4(),
            }],
            RunDeadline {
                default_timeout: minute,
                grace: Duration::ZERO,
            },
            now,
        );
        assert_eq!(dirty.len(), 1);
        assert_eq!(held[&a].len(), 2);
    }

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(630)), 630);
        assert_eq!(ttl_secs(Duration::from_millis(2500)), 3);
    }
}
