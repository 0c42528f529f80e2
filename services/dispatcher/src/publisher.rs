//! The publisher task: offers runs to admission and publishes the admitted ones to their queues.

use std::sync::Arc;
use std::time::Duration;

use faro_shared::messages::RunMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus;
use crate::metrics as m;
use crate::state::Dispatcher;
use crate::store;

/// Offers runs to admission; those whose target has a free slot go to the publisher, the
/// others wait in the outbox until a run of their target ends.
pub(crate) fn dispatch(d: &Dispatcher, mut runs: Vec<RunMessage>) {
    d.not_cancelled(&mut runs);
    let admitted = d.admission().offer(runs);
    publish_admitted(d, admitted);
}

/// Hands admitted runs to the publisher task (they hold their slots already).
pub(crate) fn publish_admitted(d: &Dispatcher, admitted: Vec<RunMessage>) {
    gauge_waiting(d);
    if !admitted.is_empty() && d.publisher.send(admitted).is_err() {
        // Only when the service is stopping: the runs stay in the outbox for the next start.
        tracing::info!("publisher stopped; admitted runs stay in the outbox");
    }
}

/// Sets the waiting gauge, one series per reason.
pub(crate) fn gauge_waiting(d: &Dispatcher) {
    let counts = d.admission().waiting_by_reason();
    for (reason, runs) in counts.labelled() {
        metrics::gauge!(m::RUNS_WAITING, "reason" => reason).set(runs as f64);
    }
}

/// Publishes admitted runs as they come, coalescing what is queued, and retries until
/// JetStream has stored them: an admitted run holds its slot until it is published.
pub(crate) async fn publisher_loop(
    d: Arc<Dispatcher>,
    mut admitted: mpsc::UnboundedReceiver<Vec<RunMessage>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let mut batch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = admitted.recv() => match next {
                Some(batch) => batch,
                None => return Ok(()),
            },
        };
        while batch.len() < 10_000 {
            match admitted.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        // A run cancelled after its admission gives its slots back unpublished.
        let dropped = d.not_cancelled(&mut batch);
        if !dropped.is_empty() {
            let mut admitted = Vec::new();
            for run in dropped {
                admitted.extend(d.admission().release(run.run_id));
            }
            publish_admitted(&d, admitted);
        }
        if batch.is_empty() {
            continue;
        }
        // Watched before it is published: a fast result may be recorded before the publish
        // call even returns, and must find the deadline to clear.
        // On the leader's clock, after every admission change of the batch: a slot record the
        // leader takes later holds them.
        let now = crate::state::leader_now();
        // The deadline runs from publication, and the message carries it to the worker.
        for run in &mut batch {
            run.deadline = Some(d.config.run_deadline().execution_ends(now, run.timeout_ms));
            run.sent_at = Some(now);
        }
        {
            let mut deadlines = d.deadlines();
            for run in &batch {
                deadlines.track(run.clone(), d.config.run_deadline().at(now, run.timeout_ms));
            }
            metrics::gauge!(m::RUNS_WATCHED).set(deadlines.len() as f64);
        }
        d.deadlines_changed.notify_one();
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = publish_and_mark(&d, &batch).await {
            tracing::warn!(
                error = faro_shared::pg::error_text(&error),
                runs = batch.len(),
                "cannot publish admitted runs; retrying"
            );
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            // A run reported meanwhile was stored (a worker executed it) and only its ack got
            // lost: it is not sent again. A server that restarted may no longer know its
            // message id (its message already acknowledged and gone) and would store it twice.
            let (still, reported): (Vec<RunMessage>, Vec<RunMessage>) = {
                let admission = d.admission();
                batch
                    .into_iter()
                    .partition(|run| admission.holds(run.run_id, run.attempt))
            };
            batch = still;
            if !reported.is_empty() {
                tracing::info!(
                    runs = reported.len(),
                    "runs reported while their publish was retried; not sent again"
                );
                let published: Vec<_> = reported.iter().map(|r| (r.run_id, r.attempt)).collect();
                if let Err(error) = store::mark_published(&d.pool, &published).await {
                    // Their outbox rows stay; an ended run is never read from the outbox again.
                    tracing::warn!(
                        error = faro_shared::pg::error_text(&error),
                        "cannot clear reported runs from the outbox"
                    );
                }
            }
            if batch.is_empty() {
                break;
            }
        }
    }
}

pub(crate) async fn publish_and_mark(
    d: &Dispatcher,
    runs: &[faro_shared::messages::RunMessage],
) -> anyhow::Result<()> {
    let devices = d
        .devices
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let test_mode = d.snmp_test_mode.load(std::sync::atomic::Ordering::Relaxed);
    let published: Vec<_> = runs.iter().map(|r| (r.run_id, r.attempt)).collect();
    ensure_queue_consumers(d, runs).await?;
    match bus::with_devices(runs, &devices, test_mode) {
        Some(polls) => bus::publish_runs(&d.js, &d.ns, &polls).await?,
        None => bus::publish_runs(&d.js, &d.ns, runs).await?,
    };
    record_schedule_lag(d, runs);
    store::mark_published(&d.pool, &published).await?;
    for run in runs {
        metrics::counter!(m::RUNS_DISPATCHED, "queue" => run.queue.to_string()).increment(1);
    }
    Ok(())
}

/// How long a queue's consumer, once declared, goes without being declared again.
const QUEUE_CONSUMER_REDECLARE: Duration = Duration::from_secs(60);

/// Declares the consumer of each queue among `runs` this dispatcher has not declared within
/// [`QUEUE_CONSUMER_REDECLARE`]: workers and the demand-collector may only open a queue's
/// consumer, not make it, so one lost (deleted by hand, a NATS store lost) must be made again.
async fn ensure_queue_consumers(d: &Dispatcher, runs: &[RunMessage]) -> anyhow::Result<()> {
    let mut declared = d.queue_consumers.lock().await;
    let now = tokio::time::Instant::now();
    for run in runs {
        let fresh = declared
            .get(&run.queue)
            .is_some_and(|at| now.duration_since(*at) < QUEUE_CONSUMER_REDECLARE);
        if !fresh {
            faro_shared::nats::ensure_queue_consumer(&d.js, &d.ns, &run.queue).await?;
            if declared.insert(run.queue.clone(), now).is_none() {
                tracing::info!(queue = %run.queue, "queue consumer declared");
            }
        }
    }
    Ok(())
}

/// Records how late each recurring run among `runs`, just stored in its queue's stream, went
/// out after its slot. Once per run: a republish finds its slot gone.
pub(crate) fn record_schedule_lag(d: &Dispatcher, runs: &[RunMessage]) {
    let mut slots = d.slot_times();
    if slots.is_empty() {
        return;
    }
    let now = chrono::Utc::now();
    for run in runs {
        if let Some(slot) = slots.remove(&run.run_id) {
            let lag = (now - slot).to_std().unwrap_or_default();
            metrics::histogram!(m::SCHEDULE_LAG_SECONDS).record(lag.as_secs_f64());
        }
    }
}

/// Offers every run waiting in the outbox (all, or one submission's) to admission.
pub(crate) async fn publish_outbox(d: &Dispatcher, submission: Option<&str>) -> anyhow::Result<()> {
    let runs = store::unpublished_runs(&d.pool, submission, i64::MAX).await?;
    if !runs.is_empty() {
        tracing::info!(runs = runs.len(), "offering runs waiting in the outbox");
        dispatch(d, runs);
    }
    Ok(())
}
