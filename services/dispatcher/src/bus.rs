//! Publishing runs to their queues, pipelined: a window of publishes is sent before their acks
//! are awaited.

use std::collections::HashMap;
use std::future::IntoFuture;

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use faro_shared::domain::TargetId;
use faro_shared::messages::RunMessage;
use faro_shared::snmp::Device;
use faro_shared::Namespace;

/// Publishes whose acks are awaited at most at once: the oldest is awaited before one more
/// is sent. Each unawaited ack holds one of the JetStream context's ack permits (10,000), and a
/// publish waits for a free permit: with more unawaited acks than permits, it would wait forever.
const WINDOW: usize = 2_000;

/// Publishes `runs` with `Nats-Msg-Id` = run id and attempt, and waits until JetStream has
/// stored every one. Returns how many the server had already (a republish).
pub async fn publish_runs(
    js: &jetstream::Context,
    ns: &Namespace,
    runs: &[RunMessage],
) -> anyhow::Result<usize> {
    let mut acks = std::collections::VecDeque::with_capacity(runs.len().min(WINDOW));
    let mut duplicates = 0;
    for run in runs {
        if acks.len() >= WINDOW {
            duplicates += stored(acks.pop_front()).await?;
        }
        let payload = serde_json::to_vec(run)?;
        let ack = js
            .send_publish(
                run.subject(ns),
                PublishMessage::build()
                    .payload(payload.into())
                    .message_id(run.msg_id()),
            )
            .await
            .with_context(|| format!("cannot publish run {}", run.run_id))?;
        acks.push_back(ack.into_future());
    }
    while let Some(ack) = acks.pop_front() {
        duplicates += stored(Some(ack)).await?;
    }
    Ok(duplicates)
}

/// Pure: `runs` with their target's device attached to those that act on a device (and
/// marked to be simulated in SNMP test mode), or `None` when none acts on a device (the
/// common case of simulations: nothing is copied).
pub fn with_devices(
    runs: &[RunMessage],
    devices: &HashMap<TargetId, Device>,
    test_mode: bool,
) -> Option<Vec<RunMessage>> {
    if !runs.iter().any(|run| run.task.kind().needs_target()) {
        return None;
    }
    Some(
        runs.iter()
            .map(|run| {
                let mut run = run.clone();
                if run.task.kind().needs_target() {
                    run.device = run.target.as_ref().and_then(|t| devices.get(t)).cloned();
                    run.simulate = test_mode;
                }
                run
            })
            .collect(),
    )
}

/// 1 when JetStream already had the message, 0 when it stored it now.
async fn stored(
    ack: Option<<jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture>,
) -> anyhow::Result<usize> {
    let Some(ack) = ack else { return Ok(0) };
    let ack = ack.await.context("JetStream did not store a run")?;
    Ok(usize::from(ack.duplicate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faro_shared::domain::{JobId, Priority, QueueName};
    use faro_shared::messages::{SimParams, Task};
    use faro_shared::testing::TestBus;

    /// More runs than the context has ack permits, in one call: all stored, none waits
    /// forever for a permit that only an unawaited ack would give back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_larger_than_the_ack_permits_is_published() {
        let bus = TestBus::start().await.unwrap();
        let js = faro_shared::nats::jetstream(bus.client.clone());
        let runs: Vec<RunMessage> = (0..12_000)
            .map(|i| RunMessage {
                run_id: uuid::Uuid::now_v7(),
                attempt: 1,
                job_id: JobId::parse(format!("j{i}")).unwrap(),
                queue: QueueName::parse("q").unwrap(),
                target: None,
                priority: Priority::default(),
                task: Task::Sim(SimParams::default()),
                timeout_ms: None,
                device: None,
                simulate: false,
                deadline: None,
            })
            .collect();
        let published = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            publish_runs(&js, &bus.ns, &runs),
        )
        .await
        .expect("publishing stalled")
        .unwrap();
        assert_eq!(published, 0, "no duplicates");
        let info = js
            .get_stream(bus.ns.jobs_stream())
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
        assert_eq!(info.state.messages, 12_000);
    }
}
