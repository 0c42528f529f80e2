//! Leases in a KV bucket that expire on the server: a key held by one owner, renewed before
//! its time-to-live runs out, and gone by itself when the owner dies.
//!
//! The expiry is the NATS server's per-message TTL (2.11+), so it does not depend on the
//! clocks of the machines that take part. Acquiring and renewing are compare-and-set writes on
//! the key's last revision, so two contenders never both hold it.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{self, kv};

/// Why an acquisition did not give a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Someone holds the key; their value (the holder's id, as they wrote it).
    By(String),
}

/// A held lease: renew it before `ttl` passes, or it is gone.
#[derive(Debug)]
pub struct Lease {
    js: jetstream::Context,
    subject: String,
    key: String,
    holder: String,
    ttl: Duration,
    revision: u64,
    /// When the write that last took or renewed the lease was sent: the server stored it
    /// later, so the lease lives at least `ttl` from this instant.
    written: tokio::time::Instant,
}

/// The store's write subject for `key` (`$KV.<bucket>.<key>`).
fn key_subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// Whole seconds of a TTL, as the server takes them (at least one).
fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

impl Lease {
    /// Takes `key` in `store` for `holder` unless someone holds it. A key whose holder stopped
    /// renewing has expired on the server and is free.
    pub async fn try_acquire(
        js: &jetstream::Context,
        store: &kv::Store,
        bucket: &str,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> anyhow::Result<Result<Self, Held>> {
        let expected = match store
            .entry(key)
            .await
            .with_context(|| format!("cannot read lease {key} in {bucket}"))?
        {
            None => 0,
            Some(entry) if entry.operation == kv::Operation::Put => {
                return Ok(Err(Held::By(
                    String::from_utf8_lossy(&entry.value).into_owned(),
                )));
            }
            // Deleted, purged or expired with a marker: free, written over that revision.
            Some(entry) => entry.revision,
        };
        let mut lease = Self {
            js: js.clone(),
            subject: key_subject(bucket, key),
            key: key.to_owned(),
            holder: holder.to_owned(),
            ttl,
            revision: expected,
            written: tokio::time::Instant::now(),
        };
        match lease.write().await {
            Ok(true) => Ok(Ok(lease)),
            // Someone else wrote in between.
            Ok(false) => {
                let holder = store
                    .get(key)
                    .await
                    .ok()
                    .flatten()
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                Ok(Err(Held::By(holder)))
            }
            Err(error) => Err(error),
        }
    }

    /// Extends the lease by its TTL. `Ok(false)`: it was lost (expired and taken, or deleted);
    /// the holder must stop acting on it at once.
    pub async fn renew(&mut self) -> anyhow::Result<bool> {
        self.write().await
    }

    /// The key this lease holds.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long the lease lives without a renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// When the write that last took or renewed the lease was sent: it is held at least until
    /// `ttl` after this instant, and no longer than that once renewals stop.
    pub fn written_at(&self) -> tokio::time::Instant {
        self.written
    }

    /// Gives the lease up now, so a standby need not wait for the expiry.
    pub async fn release(self, store: &kv::Store) -> anyhow::Result<()> {
        store
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
            .with_context(|| format!("cannot release lease {}", self.key))
    }

    /// Compare-and-set write of the holder at the expected revision, with the TTL.
    async fn write(&mut self) -> anyhow::Result<bool> {
        let asked = tokio::time::Instant::now();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            self.revision.to_string().as_str(),
        );
        headers.insert(
            header::NATS_MESSAGE_TTL,
            ttl_secs(self.ttl).to_string().as_str(),
        );
        let published = self
            .js
            .publish_with_headers(
                self.subject.clone(),
                headers,
                self.holder.clone().into_bytes().into(),
            )
            .await
            .with_context(|| format!("cannot write lease {}", self.key))?
            .await;
        match published {
            Ok(ack) => {
                self.revision = ack.sequence;
                self.written = asked;
                Ok(true)
            }
            Err(error) if wrong_last_sequence(&error) => Ok(false),
            Err(error) => Err(anyhow::Error::new(error))
                .with_context(|| format!("cannot write lease {}", self.key)),
        }
    }
}

/// Whether a publish failed because the key moved on (JetStream error 10071).
fn wrong_last_sequence(error: &jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::context::PublishErrorKind;
    matches!(error.kind(), PublishErrorKind::WrongLastSequence)
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use super::*;
    use crate::testing::TestBus;

    const KEY: &str = "dispatcher.leader";

    #[tokio::test]
    async fn one_holder_at_a_time_and_free_after_expiry() {
        let bus = TestBus::start().await.unwrap();
        let bucket = bus.ns.leases_bucket();
        let store = bus.js.get_key_value(&bucket).await.unwrap();
        let ttl = Duration::from_secs(1);
        let mut first = Lease::try_acquire(&bus.js, &store, &bucket, KEY, "a", ttl)
            .await
            .unwrap()
            .expect("a free key is taken");
        let second = Lease::try_acquire(&bus.js, &store, &bucket, KEY, "b", ttl)
            .await
            .unwrap();
        assert_eq!(second.unwrap_err(), Held::By("a".to_owned()));
        assert!(first.renew().await.unwrap(), "the holder renews");

        // Not renewed: the server expires it and the other contender gets it.
        let started = std::time::Instant::now();
        let mut second = loop {
            match Lease::try_acquire(&bus.js, &store, &bucket, KEY, "b", ttl)
                .await
                .unwrap()
            {
                Ok(lease) => break lease,
                Err(_) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "the lease never expired"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert!(
            !first.renew().await.unwrap(),
            "the old holder learns it lost the lease"
        );
        assert!(second.renew().await.unwrap());

        // Released: free at once.
        second.release(&store).await.unwrap();
        Lease::try_acquire(&bus.js, &store, &bucket, KEY, "c", ttl)
            .await
            .unwrap()
            .expect("a released key is free at once");
    }
}
