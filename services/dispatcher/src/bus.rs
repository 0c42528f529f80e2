//! Publishing runs to their queues, pipelined: every publish is sent before any ack is awaited.

use std::future::IntoFuture;

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use faro_shared::messages::RunMessage;
use faro_shared::Namespace;

/// Publishes `runs` with `Nats-Msg-Id` = run id and attempt, and waits until JetStream has
/// stored every one. Returns how many the server had already (a republish).
pub async fn publish_runs(
    js: &jetstream::Context,
    ns: &Namespace,
    runs: &[RunMessage],
) -> anyhow::Result<usize> {
    let mut acks = Vec::with_capacity(runs.len());
    for run in runs {
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
        acks.push(ack.into_future());
    }
    let acks = futures::future::try_join_all(acks)
        .await
        .context("JetStream did not store a run")?;
    Ok(acks.iter().filter(|ack| ack.duplicate).count())
}

/// Publishes an audit event on `faro.events.<source>`; a failure is logged, not fatal.
pub async fn publish_event(
    js: &jetstream::Context,
    ns: &Namespace,
    source: &str,
    event: &serde_json::Value,
) {
    let payload = match serde_json::to_vec(event) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::warn!(%error, "cannot encode an event");
            return;
        }
    };
    match js.publish(ns.event_subject(source), payload.into()).await {
        Ok(ack) => {
            if let Err(error) = ack.await {
                tracing::warn!(%error, "event not stored");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot publish an event"),
    }
}
