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

/// How long a new leader may take to read which attempts its queues hold.
const STORED_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The attempts the jobs stream holds now (queued, or executing and not yet acknowledged),
/// by their `Nats-Msg-Id`, with when each was stored: read by a new leader to tell which of
/// its outbox's runs the last leader had published before it died. A work-queue stream takes
/// no second consumer, so its messages are read one by one, many at a time.
pub async fn stored_attempts(
    js: &jetstream::Context,
    ns: &Namespace,
) -> anyhow::Result<HashMap<String, chrono::DateTime<chrono::Utc>>> {
    use futures::StreamExt as _;
    let mut stream = js
        .get_stream(ns.jobs_stream())
        .await
        .with_context(|| format!("cannot open stream {}", ns.jobs_stream()))?;
    let state = stream
        .info()
        .await
        .context("cannot read the jobs stream")?
        .state
        .clone();
    let mut stored = HashMap::new();
    if state.messages == 0 {
        return Ok(stored);
    }
    let stream = &stream;
    let mut reads = futures::stream::iter(state.first_sequence..=state.last_sequence)
        .map(|sequence| async move { stream.get_raw_message(sequence).await })
        .buffer_unordered(64);
    let read = async {
        while let Some(read) = reads.next().await {
            let message = match read {
                Ok(message) => message,
                // Acknowledged (gone from a work queue) since the stream was looked at.
                Err(error)
                    if error.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                {
                    continue
                }
                Err(error) => return Err(error).context("cannot read the jobs stream"),
            };
            if let Some(id) = message.headers.get(async_nats::header::NATS_MESSAGE_ID) {
                let at = chrono::DateTime::from_timestamp_nanos(
                    i64::try_from(message.time.unix_timestamp_nanos()).unwrap_or_default(),
                );
                stored.insert(id.as_str().to_owned(), at);
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(STORED_READ_LIMIT, read)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the jobs stream was not read within {} s",
                STORED_READ_LIMIT.as_secs()
            )
        })??;
    Ok(stored)
}

/// Pure: the runs of `waiting` (outbox rows) that the jobs stream holds already, with when
/// they were stored: published by a leader that died before clearing them, so in flight.
pub fn already_stored(
    waiting: Vec<RunMessage>,
    stored: &HashMap<String, chrono::DateTime<chrono::Utc>>,
) -> Vec<(RunMessage, chrono::DateTime<chrono::Utc>)> {
    waiting
        .into_iter()
        .filter_map(|run| stored.get(&run.msg_id()).map(|at| (run, *at)))
        .collect()
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

    /// What a new leader reads: the attempts its queues hold, by id, with when they were
    /// stored; the outbox rows among them are the runs already published.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_leader_finds_which_waiting_runs_its_queues_hold() {
        let bus = TestBus::start().await.unwrap();
        let js = faro_shared::nats::jetstream(bus.client.clone());
        let run = |i: usize, attempt: u32| RunMessage {
            attempt,
            ..crate::fixtures::run(&format!("j{i}"), None, 5)
        };
        assert!(stored_attempts(&js, &bus.ns).await.unwrap().is_empty());
        let published: Vec<_> = (0..3).map(|i| run(i, 1)).collect();
        publish_runs(&js, &bus.ns, &published).await.unwrap();
        let stored = stored_attempts(&js, &bus.ns).await.unwrap();
        assert_eq!(stored.len(), 3);
        let mut retried = published[1].clone();
        retried.attempt = 2;
        let waiting = vec![published[0].clone(), retried, run(9, 1)];
        let found = already_stored(waiting, &stored);
        assert_eq!(found.len(), 1, "only the same attempt of a run counts");
        assert_eq!(found[0].0.run_id, published[0].run_id);
        assert!(found[0].1 <= chrono::Utc::now());
    }

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
                sent_at: None,
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
