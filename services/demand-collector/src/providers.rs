//! Demand providers behind one trait: each answers `(external name, pending count)` pairs.
//!
//! Today: the JetStream backlog of each queue's consumer. External HTTP and SQL sources, the
//! dispatcher's waiting runs and the due-soon schedule implement the same trait.

use anyhow::Context as _;
use async_nats::jetstream;
use faro_shared::domain::QueueName;
use faro_shared::{nats, Namespace};
use futures::future::BoxFuture;

/// One source of demand.
pub trait Provider: Send + Sync {
    /// A short fixed name, used in snapshots and metric labels.
    fn name(&self) -> &'static str;

    /// Pending work by external name. `queues` are the queues known now.
    fn collect<'a>(
        &'a self,
        queues: &'a [QueueName],
    ) -> BoxFuture<'a, anyhow::Result<Vec<(String, u64)>>>;
}

/// Runs waiting in each queue's consumer: not yet delivered plus delivered but not acked.
#[derive(Debug, Clone)]
pub struct JetStreamBacklog {
    pub js: jetstream::Context,
    pub ns: Namespace,
}

impl Provider for JetStreamBacklog {
    fn name(&self) -> &'static str {
        "jetstream"
    }

    fn collect<'a>(
        &'a self,
        queues: &'a [QueueName],
    ) -> BoxFuture<'a, anyhow::Result<Vec<(String, u64)>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(queues.len());
            for queue in queues {
                let mut consumer = nats::ensure_queue_consumer(&self.js, &self.ns, queue).await?;
                let info = consumer
                    .info()
                    .await
                    .with_context(|| format!("cannot read the backlog of queue {queue}"))?;
                let pending = info.num_pending + info.num_ack_pending as u64;
                out.push((queue.to_string(), pending));
            }
            Ok(out)
        })
    }
}
