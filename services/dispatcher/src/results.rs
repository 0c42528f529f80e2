//! The results task (the completer): pulls results, records them, frees slots, starts chains.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use faro_shared::domain::JobId;
use faro_shared::messages::RunMessage;
use faro_shared::messages::{RunOutcome, RunResult};
use faro_shared::nats;
use faro_shared::snmp::ValuesChunk;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::dead_letters;
use crate::intake::count_redelivery;
use crate::metrics as m;
use crate::publisher::{dispatch, publish_admitted};
use crate::state::{Dispatcher, ScheduleEvent};
use crate::store;
use crate::values;

mod plan;
pub use plan::{plan, split, ResultPlan, Retry};

pub(crate) async fn results_loop(
    d: Arc<Dispatcher>,
    consumer: PullConsumer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let batch = d.config.result_batch.max(1);
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await
        .context("cannot pull results")?;
    let mut chunks = messages.ready_chunks(batch);
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else {
            anyhow::bail!("the results stream ended");
        };
        let mut good = Vec::with_capacity(chunk.len());
        for message in chunk {
            match message {
                Ok(message) => good.push(message),
                Err(error) => tracing::warn!(%error, "result pull failed; retrying"),
            }
        }
        record_batch(&d, good).await;
    }
}

/// A message of the results stream, decoded.
enum Item {
    Result(RunResult),
    Chunk(ValuesChunk),
}

/// Records a batch from the results stream: values chunks first (a run's chunks are stored
/// before its result), then results. When PostgreSQL refuses the batch, each message is
/// recorded alone, so one it cannot hold never holds up the others.
pub(crate) async fn record_batch(d: &Dispatcher, messages: Vec<jetstream::Message>) {
    let values_prefix = d.ns.values_prefix();
    let mut accepted = Vec::with_capacity(messages.len());
    for message in messages {
        count_redelivery(&message, "results");
        let decoded = if message.subject.starts_with(values_prefix.as_str()) {
            serde_json::from_slice::<ValuesChunk>(&message.payload).map(Item::Chunk)
        } else {
            serde_json::from_slice::<RunResult>(&message.payload).map(Item::Result)
        };
        match decoded {
            Ok(item) => accepted.push((message, item)),
            Err(error) => {
                tracing::warn!(subject = %message.subject, %error, "malformed result refused");
                metrics::counter!(m::BAD_MESSAGES, "stream" => "results").increment(1);
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%error, "cannot refuse a malformed result");
                }
            }
        }
    }
    if accepted.is_empty() {
        return;
    }
    // The attempts reported ended no longer touch their devices: their slots go to waiting
    // runs now, not after the results are recorded (a slow write must not hold an OLT's
    // slots). Recording frees nothing twice.
    let admitted: Vec<RunMessage> = {
        let mut admission = d.admission();
        accepted
            .iter()
            .filter_map(|(_, item)| match item {
                Item::Result(r) => Some(admission.release_attempt(r.run_id, r.attempt)),
                Item::Chunk(_) => None,
            })
            .flatten()
            .collect()
    };
    publish_admitted(d, admitted);
    let items: Vec<&Item> = accepted.iter().map(|(_, item)| item).collect();
    let acks: Vec<(&jetstream::Message, AckKind)> = match record(d, &items).await {
        Ok(()) => accepted.iter().map(|(m, _)| (m, AckKind::Ack)).collect(),
        Err(error) if accepted.len() > 1 && faro_shared::pg::refusal(&error).is_some() => {
            tracing::warn!(
                error = faro_shared::pg::error_text(&error),
                messages = accepted.len(),
                "PostgreSQL refused a batch of results; recording them one by one"
            );
            let mut acks = Vec::with_capacity(accepted.len());
            for (message, item) in &accepted {
                let ack = match record(d, &[item]).await {
                    Ok(()) => AckKind::Ack,
                    Err(error) => settle(d, message, item, &error).await,
                };
                acks.push((message, ack));
            }
            acks
        }
        Err(error) => {
            let mut acks = Vec::with_capacity(accepted.len());
            for (message, item) in &accepted {
                acks.push((message, settle(d, message, item, &error).await));
            }
            acks
        }
    };
    let acks = acks.into_iter().map(|(message, ack)| message.ack_with(ack));
    for outcome in futures::future::join_all(acks).await {
        if let Err(error) = outcome {
            tracing::warn!(%error, "cannot acknowledge a result");
        }
    }
}

/// Records values chunks, then results.
async fn record(d: &Dispatcher, items: &[&Item]) -> anyhow::Result<()> {
    let mut results = Vec::with_capacity(items.len());
    let mut chunks = Vec::new();
    for item in items {
        match item {
            Item::Result(result) => results.push(result.clone()),
            Item::Chunk(chunk) => chunks.push(chunk.clone()),
        }
    }
    let values = values::record(&d.pool, &chunks).await?;
    metrics::counter!(m::VALUES, "result" => "recorded").increment(values.values as u64);
    metrics::counter!(m::VALUES, "result" => "late").increment(values.late as u64);
    metrics::counter!(m::VALUES, "result" => "mismatched").increment(values.mismatched as u64);
    if !results.is_empty() {
        apply_results(d, &results).await?;
    }
    Ok(())
}

/// What becomes of one message that could not be recorded. A result PostgreSQL refuses is
/// recorded as what it is, a failed attempt whose result was unreadable; a values chunk it
/// refuses is set aside. Any other failure (PostgreSQL down) is tried again later, until the
/// message's last delivery sets it aside in the dead-letter stream.
async fn settle(
    d: &Dispatcher,
    message: &jetstream::Message,
    item: &Item,
    error: &anyhow::Error,
) -> AckKind {
    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
    let source = match item {
        Item::Result(_) => "results",
        Item::Chunk(_) => "values",
    };
    // The error itself, never its text: only it says whether PostgreSQL refused the message.
    let error = match (faro_shared::pg::refusal(error), item) {
        (Some(reason), Item::Result(result)) => {
            let unreadable = Item::Result(result.unreadable(&reason));
            match record(d, &[&unreadable]).await {
                Ok(()) => {
                    tracing::warn!(run.id = %result.run_id, attempt = result.attempt, reason, "result unreadable; recorded as a failed attempt");
                    metrics::counter!(m::RESULTS_UNREADABLE).increment(1);
                    return AckKind::Term;
                }
                Err(error) => faro_shared::pg::error_text(&error),
            }
        }
        (Some(reason), Item::Chunk(_)) => {
            let reason = format!("PostgreSQL cannot hold these values: {reason}");
            return dead_letters::set_aside(d, source, message, &reason).await;
        }
        (None, _) => faro_shared::pg::error_text(error),
    };
    if nats::is_last_delivery(delivered, nats::SERVICE_MAX_DELIVER) {
        let reason = format!("not recorded after {delivered} deliveries: {error}");
        return dead_letters::set_aside(d, source, message, &reason).await;
    }
    tracing::error!(
        subject = %message.subject,
        error,
        delivered,
        "cannot record a result; it will be delivered again"
    );
    AckKind::Nak(Some(nats::retry_delay(delivered)))
}

/// Records results (from workers, or timeouts from the deadline loop) and acts on them:
/// retries, freed slots, recurring jobs' next slots, chained jobs.
pub(crate) async fn apply_results(d: &Dispatcher, results: &[RunResult]) -> anyhow::Result<()> {
    let started = Instant::now();
    let jitter = || f64::from(uuid::Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX);
    let chains = d.chains.read().await;
    let recorded = store::record_results(&d.pool, results, &d.config.retry, jitter, &chains).await;
    drop(chains);
    let recording = recorded?;
    metrics::histogram!(m::RESULT_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
    for (_, status) in &recording.ended {
        metrics::counter!(m::RESULTS, "outcome" => status.as_str()).increment(1);
    }
    for (run, next, due) in &recording.retried {
        tracing::info!(run.id = %run, attempt = next, due = %due, "attempt failed; retry scheduled");
    }
    metrics::counter!(m::RETRIES).increment(recording.retried.len() as u64);
    for run in &recording.late {
        tracing::info!(run.id = %run, "late or repeated result recorded; it changed nothing");
    }
    metrics::counter!(m::RESULTS_IGNORED).increment(recording.late.len() as u64);
    if !recording.retried.is_empty() {
        d.retries_changed.notify_one();
    }
    // Attempts that ended or will be retried are no longer watched for a deadline.
    {
        let mut deadlines = d.deadlines();
        for (run, _) in &recording.ended {
            deadlines.clear(*run);
        }
        for (run, _, _) in &recording.retried {
            deadlines.clear(*run);
        }
        metrics::gauge!(m::RUNS_WATCHED).set(deadlines.len() as f64);
    }
    // A recurring job's next slot may run once its run has ended.
    let ended_ids: std::collections::HashSet<_> =
        recording.ended.iter().map(|(id, _)| *id).collect();
    let ended: Vec<(JobId, uuid::Uuid)> = results
        .iter()
        .filter(|r| ended_ids.contains(&r.run_id))
        .map(|r| (r.job_id.clone(), r.run_id))
        .collect();
    if !ended.is_empty() {
        let _ = d.schedule.send(ScheduleEvent::Ended(ended));
    }
    // Every attempt that ended frees its target's and queue's slots for the next waiting run.
    let freed = recording
        .ended
        .iter()
        .map(|(run, _)| *run)
        .chain(recording.retried.iter().map(|(run, _, _)| *run));
    let mut admitted = Vec::new();
    {
        let mut admission = d.admission();
        for run in freed {
            admitted.extend(admission.release(run));
        }
    }
    publish_admitted(d, admitted);
    if !recording.triggered.is_empty() || !recording.skipped.is_empty() {
        tracing::debug!(
            runs = recording.triggered.len(),
            skipped = recording.skipped.len(),
            "chained jobs triggered"
        );
    }
    dispatch(d, recording.triggered);
    if !d.config.outcome_feed {
        return Ok(());
    }
    // The feed, before the results are acknowledged: every run this batch ended; the chained
    // runs it skipped; and the runs a repeated result finds ended by its own attempt, whose
    // outcome may not be on the feed yet (a leader that died after recording them).
    let by_run = newest_attempts(results);
    let mut ended: Vec<RunOutcome> = recording
        .ended
        .iter()
        .filter_map(|(run, status)| by_run.get(run).map(|r| RunOutcome::of_result(r, *status)))
        .collect();
    let read_back: Vec<uuid::Uuid> = recording
        .skipped
        .iter()
        .chain(&recording.late)
        .copied()
        .collect();
    match store::ended_outcomes(&d.pool, &read_back).await {
        Ok(stored) => ended.extend(stored.into_iter().filter(|outcome| {
            recording.skipped.contains(&outcome.run_id)
                || by_run
                    .get(&outcome.run_id)
                    .is_some_and(|r| r.attempt == outcome.attempt)
        })),
        Err(error) => tracing::warn!(
            error = faro_shared::pg::error_text(&error),
            "cannot read the outcomes of skipped or repeated runs; the runs' records have them"
        ),
    }
    crate::outcomes::publish_outboxed(d, &ended, &recording.outboxed).await;
    Ok(())
}

/// Pure: each run's result of its newest attempt in `results`, the one that may have ended
/// it: a later attempt exists only once an earlier one failed, so an older result beside it
/// is late.
fn newest_attempts(results: &[RunResult]) -> HashMap<uuid::Uuid, &RunResult> {
    let mut by_run: HashMap<uuid::Uuid, &RunResult> = HashMap::with_capacity(results.len());
    for result in results {
        let newest = by_run.entry(result.run_id).or_insert(result);
        if result.attempt > newest.attempt {
            *newest = result;
        }
    }
    by_run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_outcome_is_of_its_newest_attempt_whatever_the_order() {
        let run = uuid::Uuid::now_v7();
        let result = |attempt, worker: &str| {
            let mut r = crate::fixtures::result(run, faro_shared::domain::Outcome::Succeeded);
            r.attempt = attempt;
            r.worker_id = faro_shared::domain::WorkerId::parse(worker).unwrap();
            r
        };
        // Attempt 2's success, then attempt 1's late failure: the outcome is attempt 2's.
        let batch = [result(2, "w2"), result(1, "w1")];
        let newest = newest_attempts(&batch);
        assert_eq!(newest.len(), 1);
        assert_eq!(
            (newest[&run].attempt, newest[&run].worker_id.as_str()),
            (2, "w2")
        );
        let batch = [result(1, "w1"), result(2, "w2")];
        assert_eq!(newest_attempts(&batch)[&run].attempt, 2);
    }
}
