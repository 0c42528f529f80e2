//! Target slots as leases in the `faro_leases` bucket: key `slot.<target>.<run>` exists while
//! `run` holds a slot of `target`, and is purged the moment the run ends.
//!
//! The leader decides admission in memory (one writer, no round trip per decision) and writes
//! every slot taken or freed here, in order, without waiting for each write. Each key carries
//! a per-key TTL of the run's deadline plus grace, so the slots of a leader that dies expire by
//! themselves on the NATS server; a new leader rewrites the slots still in flight (from
//! PostgreSQL) and purges the ones nobody holds. Anyone can read who holds an OLT:
//! `nats kv ls faro_leases`, or a watch on `slot.<target>.>`.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{self, context::PublishAckFuture, kv};
use faro_shared::domain::TargetId;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::admission::SlotChange;
use crate::metrics as m;

/// Key prefix of the slot leases in the bucket.
pub const PREFIX: &str = "slot.";

/// Writes not yet confirmed by the server, at most; the writer waits for confirmations beyond.
const IN_FLIGHT: usize = 4096;

/// The key of `run`'s slot of `target`.
pub fn key(target: &TargetId, run: Uuid) -> String {
    format!("{PREFIX}{target}.{run}")
}

/// The run holding a slot, from a key of the bucket; `None` for any other key.
pub fn parse_key(key: &str) -> Option<(TargetId, Uuid)> {
    let rest = key.strip_prefix(PREFIX)?;
    let (target, run) = rest.rsplit_once('.')?;
    Some((TargetId::parse(target).ok()?, run.parse().ok()?))
}

/// The value of a slot lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotLease {
    pub target: TargetId,
    pub run: Uuid,
    /// The dispatcher instance that admitted it.
    pub holder: String,
}

/// Where the slot leases live and how long they last.
#[derive(Debug, Clone)]
pub struct SlotLeases {
    pub js: jetstream::Context,
    pub store: kv::Store,
    pub bucket: String,
    pub holder: String,
    /// Time-to-live of a run without a timeout of its own (the default timeout).
    pub default_timeout: Duration,
    /// Added to every run's timeout, as its deadline is.
    pub grace: Duration,
}

impl SlotLeases {
    /// Writes `restored` (the slots in flight when this leader took over), purges every other
    /// slot lease left in the bucket, then writes each change as it comes until `shutdown`.
    pub async fn run(
        self,
        restored: Vec<SlotChange>,
        mut changes: mpsc::UnboundedReceiver<Vec<SlotChange>>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut pending = Pending::default();
        let held: HashSet<(TargetId, Uuid)> = restored
            .iter()
            .filter_map(|change| match change {
                SlotChange::Held { target, run, .. } => Some((target.clone(), *run)),
                SlotChange::Freed { .. } => None,
            })
            .collect();
        for change in restored {
            let write = self.write(&change).await?;
            pending.push(write).await;
        }
        let orphans = self.orphans(&held).await?;
        if !orphans.is_empty() {
            tracing::info!(
                slots = orphans.len(),
                "purging slot leases that no run in flight holds"
            );
        }
        for (target, run) in orphans {
            let write = self.write(&SlotChange::Freed { target, run }).await?;
            pending.push(write).await;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                () = pending.confirm_oldest(), if !pending.is_empty() => {}
                batch = changes.recv() => {
                    let Some(batch) = batch else { break };
                    for change in batch {
                        let write = self.write(&change).await?;
                        pending.push(write).await;
                    }
                }
            }
        }
        // What was sent is confirmed before the leader lets go.
        while !pending.is_empty() {
            pending.confirm_oldest().await;
        }
        Ok(())
    }

    /// Sends one change; the returned future is the server's confirmation.
    async fn write(&self, change: &SlotChange) -> anyhow::Result<Write> {
        let mut headers = HeaderMap::new();
        let (target, run, payload) = match change {
            SlotChange::Held {
                target,
                run,
                timeout_ms,
            } => {
                let timeout = timeout_ms.map_or(self.default_timeout, Duration::from_millis);
                headers.insert(
                    header::NATS_MESSAGE_TTL,
                    ttl_secs(timeout + self.grace).to_string().as_str(),
                );
                let lease = SlotLease {
                    target: target.clone(),
                    run: *run,
                    holder: self.holder.clone(),
                };
                (target, *run, serde_json::to_vec(&lease)?)
            }
            SlotChange::Freed { target, run } => {
                // A purge drops the key's history; its marker expires a second later, so
                // freed slots leave nothing behind.
                headers.insert("KV-Operation", "PURGE");
                headers.insert(header::NATS_ROLLUP, "sub");
                headers.insert(header::NATS_MESSAGE_TTL, "1");
                (target, *run, Vec::new())
            }
        };
        let subject = format!("$KV.{}.{}", self.bucket, key(target, run));
        let ack: PublishAckFuture = self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .context("cannot send a slot lease")?;
        Ok(Box::pin(async move {
            ack.await.map(|_| ()).map_err(anyhow::Error::new)
        }))
    }

    /// Slot leases in the bucket that none of `held` accounts for.
    async fn orphans(
        &self,
        held: &HashSet<(TargetId, Uuid)>,
    ) -> anyhow::Result<Vec<(TargetId, Uuid)>> {
        let mut keys = self
            .store
            .keys()
            .await
            .with_context(|| format!("cannot list the keys of {}", self.bucket))?;
        let mut orphans = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.with_context(|| format!("cannot list the keys of {}", self.bucket))?;
            if let Some(slot) = parse_key(&key) {
                if !held.contains(&slot) {
                    orphans.push(slot);
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
                error = format!("{error:#}"),
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
        let run = Uuid::new_v4();
        let k = key(&target, run);
        assert_eq!(parse_key(&k), Some((target, run)));
        assert_eq!(parse_key("dispatcher.leader"), None);
        assert_eq!(parse_key("slot.olt.not-a-uuid"), None);
    }

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(630)), 630);
        assert_eq!(ttl_secs(Duration::from_millis(2500)), 3);
    }
}
