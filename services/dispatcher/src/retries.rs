//! The retries task: publishes each scheduled retry when it falls due.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::publisher::dispatch;
use crate::state::Dispatcher;
use crate::store;

/// Publishes each retry when its backoff is over: sleeps until the earliest one is due, or
/// until a new one is scheduled. A database or NATS error is logged and tried again.
pub(crate) async fn retries_loop(
    d: Arc<Dispatcher>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    const IDLE: Duration = Duration::from_secs(60);
    loop {
        let wait = match publish_due_retries(&d).await {
            Ok(next) => next
                .map(|due| (due - chrono::Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(IDLE)
                .min(IDLE),
            Err(error) => {
                tracing::warn!(
                    error = faro_shared::pg::error_text(&error),
                    "cannot publish due retries; trying again"
                );
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = d.retries_changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Publishes every retry that is due; returns when the next one will be.
pub(crate) async fn publish_due_retries(
    d: &Dispatcher,
) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    loop {
        let due = store::take_due_retries(&d.pool, 5_000).await?;
        if due.is_empty() {
            return store::next_retry(&d.pool).await;
        }
        tracing::debug!(runs = due.len(), "offering due retries");
        dispatch(d, due);
    }
}
