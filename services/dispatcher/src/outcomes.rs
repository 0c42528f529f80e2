//! The outcome feed: each run's end on `faro.outcomes.<queue>.<target>`, for integrators to
//! follow. Published once the end is recorded and before the result that ended it is
//! acknowledged, so a leader that dies in between has the result delivered again, finds the
//! run ended by that same attempt, and publishes its outcome then (the `Nats-Msg-Id` drops
//! a repeat within the duplicate window). A recurring slot skipped is published by the
//! scheduler once recorded. An outcome NATS does not store in time is counted and logged, not
//! tried again: the result is acknowledged, and the run's record has it.

use std::time::Duration;

use faro_shared::messages::RunOutcome;

use crate::metrics as m;
use crate::state::Dispatcher;

/// How long the feed's acknowledgements are waited for: a NATS that stores nothing must not
/// hold results.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Puts `outcomes` on the feed (its caller asks only when `FARO_OUTCOME_FEED` is on) and waits for NATS to store them (at most [`ACK_WAIT`]). One
/// that is not stored is logged and counted, never retried: the run's record has it.
pub(crate) async fn publish(d: &Dispatcher, outcomes: &[RunOutcome]) {
    if outcomes.is_empty() {
        return;
    }
    let sends = outcomes.iter().map(|outcome| async move {
        let payload = serde_json::to_vec(outcome)?;
        let ack =
            d.js.send_publish(
                outcome.subject(&d.ns),
                async_nats::jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(outcome.msg_id()),
            )
            .await?;
        ack.await?;
        anyhow::Ok(())
    });
    // Each bounded on its own: those stored are counted as stored, whatever the others do.
    let sends = sends.map(|send| async move {
        match tokio::time::timeout(ACK_WAIT, send).await {
            Ok(sent) => sent,
            Err(_) => Err(anyhow::anyhow!(
                "not stored within {} s",
                ACK_WAIT.as_secs()
            )),
        }
    });
    let failed: Vec<String> = futures::future::join_all(sends)
        .await
        .into_iter()
        .filter_map(|sent| sent.err().map(|error| faro_shared::pg::error_text(&error)))
        .collect();
    let published = outcomes.len() - failed.len();
    metrics::counter!(m::OUTCOMES, "result" => "published").increment(published as u64);
    if !failed.is_empty() {
        let lost = outcomes.len() - published;
        metrics::counter!(m::OUTCOMES, "result" => "failed").increment(lost as u64);
        tracing::warn!(
            outcomes = lost,
            error = failed[0],
            "run outcomes not put on the outcome feed; the runs' records have them"
        );
    }
}
