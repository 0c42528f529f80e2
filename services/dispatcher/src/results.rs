//! The results task (the completer): pulls results, records them, frees slots, starts chains.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use faro_shared::domain::JobId;
use faro_shared::messages::RunMessage;
use faro_shared::messages::RunResult;
use faro_shared::snmp::ValuesChunk;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

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

/// Records a batch from the results stream: values chunks first (a run's chunks are stored
/// before its result), then results.
pub(crate) async fn record_batch(d: &Dispatcher, messages: Vec<jetstream::Message>) {
    let values_prefix = d.ns.values_prefix();
    let mut results = Vec::with_capacity(messages.len());
    let mut chunks = Vec::new();
    let mut accepted = Vec::with_capacity(messages.len());
    for message in messages {
        count_redelivery(&message, "results");
        let decoded = if message.subject.starts_with(values_prefix.as_str()) {
            serde_json::from_slice::<ValuesChunk>(&message.payload).map(|c| chunks.push(c))
        } else {
            serde_json::from_slice::<RunResult>(&message.payload).map(|r| results.push(r))
        };
        match decoded {
            Ok(()) => accepted.push(message),
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
        results
            .iter()
            .flat_map(|r| admission.release_attempt(r.run_id, r.attempt))
            .collect()
    };
    publish_admitted(d, admitted);
    let recorded = async {
        let values = values::record(&d.pool, &chunks).await?;
        metrics::counter!(m::VALUES, "result" => "recorded").increment(values.values as u64);
        metrics::counter!(m::VALUES, "result" => "late").increment(values.late as u64);
        if !results.is_empty() {
            apply_results(d, &results).await?;
        }
        anyhow::Ok(())
    };
    let ack = match recorded.await {
        Ok(()) => AckKind::Ack,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                results = results.len(),
                chunks = chunks.len(),
                "cannot record results; they will be redelivered"
            );
            AckKind::Nak(Some(Duration::from_secs(1)))
        }
    };
    let acks = accepted.iter().map(|message| message.ack_with(ack));
    for outcome in futures::future::join_all(acks).await {
        if let Err(error) = outcome {
            tracing::warn!(%error, "cannot acknowledge a result");
        }
    }
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
    Ok(())
}
