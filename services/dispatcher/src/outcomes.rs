//! The outcome feed: each run's end on `faro.outcomes.<queue>.<target>`, for integrators to
//! follow. Published once the end is recorded and before the result that ended it is
//! acknowledged, so a leader that dies in between has the result delivered again, finds the
//! run ended by that same attempt, and publishes its outcome then (the `Nats-Msg-Id` drops
//! a repeat within the duplicate window). An end the leader decides itself (a timeout, a
//! cancel, a chained run or a recurring slot skipped) has no message to be delivered again: it
//! waits in the outcome outbox from the transaction that records it until NATS stores its
//! outcome, and [`outbox_loop`] publishes what stays there. An outcome of a worker's result
//! that NATS does not store in time is counted and logged, not tried again: the result is
//! acknowledged, and the run's record has it.

use std::time::Duration;

use std::sync::Arc;

use faro_shared::messages::RunOutcome;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::state::Dispatcher;
use crate::store;

/// How long the feed's acknowledgements are waited for: a NATS that stores nothing must not
/// hold results.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Puts `outcomes` on the feed (its caller asks only when `FARO_OUTCOME_FEED` is on) and waits
/// for NATS to store them (at most [`ACK_WAIT`]). One that is not stored is logged and
/// counted; only the outbox's are tried again.
/// Returns the runs whose outcomes NATS stored.
pub(crate) async fn publish(d: &Dispatcher, outcomes: &[RunOutcome]) -> Vec<uuid::Uuid> {
    if outcomes.is_empty() {
        return Vec::new();
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
    let mut stored = Vec::with_capacity(outcomes.len());
    let mut failed = Vec::new();
    for (outcome, sent) in outcomes.iter().zip(futures::future::join_all(sends).await) {
        match sent {
            Ok(()) => stored.push(outcome.run_id),
            Err(error) => failed.push(faro_shared::pg::error_text(&error)),
        }
    }
    let published = stored.len();
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
    stored
}

/// Publishes the outcomes of `outboxed` runs (those whose end the leader decided itself)
/// among `outcomes`, and clears from the outbox those NATS stored. A failure to clear is
/// logged: the outbox publishes them again, and the feed drops the repeat.
pub(crate) async fn publish_outboxed(
    d: &Dispatcher,
    outcomes: &[RunOutcome],
    outboxed: &[uuid::Uuid],
) {
    let stored = publish(d, outcomes).await;
    let cleared: Vec<uuid::Uuid> = stored
        .into_iter()
        .filter(|run| outboxed.contains(run))
        .collect();
    if let Err(error) = store::clear_outcomes(&d.pool, &cleared).await {
        tracing::warn!(
            error = faro_shared::pg::error_text(&error),
            "cannot clear published outcomes from the outbox; they are published again"
        );
    }
}

/// How long a run waits in the outcome outbox before the leader publishes it from there: its
/// own publish, right after recording, normally clears it within milliseconds.
const OUTBOX_AGE: Duration = Duration::from_secs(5);

/// How often the leader looks in the outcome outbox.
const OUTBOX_EVERY: Duration = Duration::from_secs(5);

/// The most runs published from the outbox at a time.
const OUTBOX_BATCH: i64 = 1_000;

/// While leading: publishes the outboxed runs it is sent (recurring slots skipped) as they
/// come, and what the outcome outbox still holds (left by a leader killed between recording an
/// end it decided and publishing it, or not stored by NATS in time), read back from the runs'
/// records. With the feed off, clears it.
pub(crate) async fn outbox_loop(
    d: Arc<Dispatcher>,
    mut sent: tokio::sync::mpsc::UnboundedReceiver<Vec<uuid::Uuid>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(OUTBOX_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let done = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            runs = sent.recv() => match runs {
                Some(runs) => publish_from_outbox(&d, &runs).await,
                None => return Ok(()),
            },
            _ = tick.tick() => drain_outbox(&d).await,
        };
        if let Err(error) = done {
            tracing::warn!(
                error = faro_shared::pg::error_text(&error),
                "cannot publish the outcome outbox; trying again"
            );
        }
    }
}

/// Publishes the outcomes of `runs`, in the outbox, read back from their records, and clears
/// them (with the feed off, clears them only). A run that has not ended (it never should) or is
/// gone (its history day dropped) has nothing to publish: cleared with the rest.
async fn publish_from_outbox(d: &Dispatcher, runs: &[uuid::Uuid]) -> anyhow::Result<()> {
    if !d.config.outcome_feed {
        return store::clear_outcomes(&d.pool, runs).await;
    }
    let outcomes = store::ended_outcomes(&d.pool, runs).await?;
    let ended: std::collections::HashSet<uuid::Uuid> = outcomes.iter().map(|o| o.run_id).collect();
    let gone: Vec<uuid::Uuid> = runs
        .iter()
        .filter(|run| !ended.contains(run))
        .copied()
        .collect();
    store::clear_outcomes(&d.pool, &gone).await?;
    publish_outboxed(d, &outcomes, runs).await;
    Ok(())
}

/// One look in the outcome outbox: what stayed there past [`OUTBOX_AGE`].
async fn drain_outbox(d: &Dispatcher) -> anyhow::Result<()> {
    let pending = store::pending_outcomes(&d.pool, OUTBOX_AGE, OUTBOX_BATCH).await?;
    if pending.is_empty() {
        return Ok(());
    }
    tracing::info!(
        runs = pending.len(),
        "publishing outcomes a leader recorded and did not publish"
    );
    publish_from_outbox(d, &pending).await
}
