//! Leader election: one dispatcher holds the leader lease in `faro_leases` and does the work;
//! the others stand by and take the lease when it expires.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use faro_shared::lease::{Held, Lease};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The key of the leader lease in the leases bucket.
pub const LEADER_KEY: &str = "dispatcher.leader";

/// Where the lease lives and who asks for it.
#[derive(Debug, Clone)]
pub struct Election {
    pub js: jetstream::Context,
    pub store: kv::Store,
    pub bucket: String,
    pub instance: String,
    pub ttl: Duration,
}

impl Election {
    /// How often a standby asks and a leader renews: a quarter of the TTL, so a renewal may
    /// take a quarter of the TTL and a failed one be tried again before the fence.
    fn period(&self) -> Duration {
        (self.ttl / 4).max(Duration::from_millis(100))
    }

    /// How long a leader acts on a lease whose renewal it has not seen confirmed: half the TTL
    /// from the last confirmed write. The server keeps the lease a whole TTL from that write,
    /// so a leader cut off from it (a renewal that blocks, NATS stalled) has stopped long
    /// before another dispatcher can take the lease.
    pub fn fence(&self) -> Duration {
        self.ttl / 2
    }

    /// Waits until this dispatcher holds the lease; `None` when `shutdown` comes first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Option<Lease> {
        let mut seen: Option<String> = None;
        loop {
            match Lease::try_acquire(
                &self.js,
                &self.store,
                &self.bucket,
                LEADER_KEY,
                &self.instance,
                self.ttl,
            )
            .await
            {
                Ok(Ok(lease)) => return Some(lease),
                Ok(Err(Held::By(leader))) => {
                    if seen.as_deref() != Some(leader.as_str()) {
                        tracing::info!(%leader, "standing by: another dispatcher leads");
                        seen = Some(leader);
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        error = faro_shared::pg::error_text(&error),
                        "cannot ask for the leader lease; trying again"
                    )
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.period()) => {}
            }
        }
    }

    /// Renews `lease` until `leading` is cancelled, and cancels `leading` the moment the lease
    /// is lost, or half its TTL has passed since its last confirmed write (a renewal that
    /// fails or never answers). Returns the lease while it is still held, for a release at
    /// shutdown.
    pub async fn keep(&self, mut lease: Lease, leading: CancellationToken) -> Option<Lease> {
        let mut pause = self.period();
        loop {
            let fenced_at = lease.written_at() + self.fence();
            tokio::select! {
                _ = leading.cancelled() => return Some(lease),
                _ = tokio::time::sleep_until(fenced_at.min(Instant::now() + pause)) => {}
            }
            let renewed = tokio::select! {
                _ = leading.cancelled() => return Some(lease),
                renewed = tokio::time::timeout_at(fenced_at, lease.renew()) => renewed,
            };
            match renewed {
                Ok(Ok(true)) => pause = self.period(),
                Ok(Ok(false)) => {
                    tracing::error!("leader lease lost to another dispatcher; stepping down");
                    leading.cancel();
                    return None;
                }
                Ok(Err(error)) if Instant::now() < fenced_at => {
                    tracing::warn!(
                        error = faro_shared::pg::error_text(&error),
                        "cannot renew the leader lease; trying again"
                    );
                    // Tried again soon: the fence is near.
                    pause = self.period() / 4;
                }
                Ok(Err(error)) => {
                    tracing::error!(
                        error = faro_shared::pg::error_text(&error),
                        fence_ms = self.fence().as_millis() as u64,
                        "leader lease not renewed for half its TTL; stepping down before another can take it"
                    );
                    leading.cancel();
                    return None;
                }
                Err(_) => {
                    tracing::error!(
                        fence_ms = self.fence().as_millis() as u64,
                        "leader lease renewal unanswered for half its TTL; stepping down before another can take it"
                    );
                    leading.cancel();
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faro_shared::testing::TestBus;

    /// A leader whose renewals get no answer (NATS frozen) stops leading within half its TTL
    /// of its last confirmed renewal, before the server can give the lease to another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_that_cannot_renew_stops_within_half_its_ttl() {
        let bus = TestBus::start().await.unwrap();
        let election = Election {
            js: bus.js.clone(),
            store: bus.topology.leases.clone(),
            bucket: bus.ns.leases_bucket(),
            instance: "d0".to_owned(),
            ttl: Duration::from_secs(2),
        };
        let lease = election
            .acquire(&CancellationToken::new())
            .await
            .expect("a free lease is taken");
        let leading = CancellationToken::new();
        let keeper = tokio::spawn({
            let election = election.clone();
            let leading = leading.clone();
            async move { election.keep(lease, leading).await }
        });
        // One renewal confirmed, seen as the key's next revision.
        let mut watch = bus.topology.leases.watch(LEADER_KEY).await.unwrap();
        let renewal =
            tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut watch))
                .await
                .expect("the lease was never renewed");
        assert!(renewal.is_some());
        bus.server.pause().unwrap();
        let frozen = Instant::now();
        let stopped = tokio::time::timeout(election.ttl, leading.cancelled()).await;
        let waited = frozen.elapsed();
        bus.server.resume().unwrap();
        assert!(
            stopped.is_ok(),
            "still leading a whole TTL after NATS froze"
        );
        assert!(
            waited <= election.fence() + Duration::from_millis(300),
            "stopped {waited:?} after NATS froze; the fence is {:?}",
            election.fence()
        );
        assert!(
            keeper.await.unwrap().is_none(),
            "a fenced lease is not given back as held"
        );
    }
}
