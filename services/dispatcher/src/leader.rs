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
    /// How often a standby asks and a leader renews: a third of the TTL, so two renewals may
    /// fail before the lease expires.
    fn period(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
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
                        error = format!("{error:#}"),
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
    /// is lost or may have expired (no renewal for a whole TTL). Returns the lease while it is
    /// still held, for a release at shutdown.
    pub async fn keep(&self, mut lease: Lease, leading: CancellationToken) -> Option<Lease> {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = leading.cancelled() => return Some(lease),
                _ = tokio::time::sleep(self.period()) => {}
            }
            match lease.renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::error!("leader lease lost to another dispatcher; stepping down");
                    leading.cancel();
                    return None;
                }
                Err(error) if renewed.elapsed() + self.period() >= self.ttl => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "cannot renew the leader lease before it expires; stepping down"
                    );
                    leading.cancel();
                    return None;
                }
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot renew the leader lease; trying again"
                ),
            }
        }
    }
}
