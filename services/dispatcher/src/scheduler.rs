//! The scheduler task: fires recurring jobs' slots from the timetable and records their runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use faro_shared::domain::JobId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::publisher::dispatch;
use crate::state::{Dispatcher, ScheduleEvent};
use crate::store;
use crate::timetable::{merge_unrecorded, Fire, Scheduler};

/// Fires recurring jobs: sleeps until the earliest planned slot (a timer, not a polling loop),
/// records what is due, and dispatches it. A slot whose job is still running is recorded as
/// skipped.
pub(crate) async fn scheduler_loop(
    d: Arc<Dispatcher>,
    mut events: mpsc::UnboundedReceiver<ScheduleEvent>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut scheduler = Scheduler::default();
    let began = std::time::Instant::now();
    let now = chrono::Utc::now();
    for def in store::recurring_jobs(&d.pool).await? {
        scheduler.load(def, now);
    }
    let in_flight = d.deadlines().runs();
    for (job, run) in store::open_recurring_runs(&d.pool, &in_flight).await? {
        scheduler.opened(job, run);
    }
    tracing::info!(
        jobs = scheduler.len(),
        ms = began.elapsed().as_millis(),
        "recurring jobs loaded"
    );
    metrics::gauge!(m::RECURRING_JOBS).set(scheduler.len() as f64);
    // Slots due within a few milliseconds of each other are fired together: one transaction
    // for many slots instead of one per slot when thousands of jobs share an interval.
    const COALESCE: Duration = Duration::from_millis(10);
    let mut last_fire = tokio::time::Instant::now() - COALESCE;
    // Fired slots PostgreSQL did not record yet (it is down): tried again, growing apart,
    // until recorded; never dropped.
    let mut unrecorded: Vec<Fire> = Vec::new();
    let mut retry_pause = UNRECORDED_RETRY;
    let mut retry_at = tokio::time::Instant::now();
    loop {
        let sleep = match scheduler.next_wake() {
            Some(at) => (at - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
                .max(COALESCE.saturating_sub(last_fire.elapsed())),
            None => Duration::from_secs(3600),
        };
        let retry = async {
            if unrecorded.is_empty() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(retry_at).await;
        };
        let fires = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            event = events.recv() => {
                let Some(event) = event else { return Ok(()) };
                apply_schedule_event(&mut scheduler, event)
            }
            _ = tokio::time::sleep(sleep) => {
                last_fire = tokio::time::Instant::now();
                // A disabled target is not polled: recording leaves its jobs' slots out.
                scheduler.fire(chrono::Utc::now())
            }
            _ = retry => Vec::new(),
        };
        if fires.is_empty() && (unrecorded.is_empty() || tokio::time::Instant::now() < retry_at) {
            continue;
        }
        unrecorded.extend(fires);
        let trying = merge_unrecorded(std::mem::take(&mut unrecorded));
        match fire_slots(&d, &mut scheduler, &trying).await {
            Ok(()) => retry_pause = UNRECORDED_RETRY,
            Err(error) => {
                tracing::warn!(
                    error = faro_shared::pg::error_text(&error),
                    slots = trying.len(),
                    retry_in_ms = retry_pause.as_millis() as u64,
                    "cannot record fired slots; they are kept and tried again"
                );
                metrics::counter!(m::SLOTS, "result" => "failed").increment(trying.len() as u64);
                unrecorded = trying;
                retry_at = tokio::time::Instant::now() + retry_pause;
                retry_pause = (retry_pause * 2).min(UNRECORDED_RETRY_MAX);
            }
        }
    }
}

/// The first pause before fired slots that could not be recorded are tried again.
const UNRECORDED_RETRY: Duration = Duration::from_millis(500);
/// The longest pause between two tries.
const UNRECORDED_RETRY_MAX: Duration = Duration::from_secs(10);

/// A definition added or removed, or runs ended; returns the slots that fire now (a slot
/// kept behind a run that ended).
pub(crate) fn apply_schedule_event(scheduler: &mut Scheduler, event: ScheduleEvent) -> Vec<Fire> {
    match event {
        ScheduleEvent::Define(defs) => {
            let now = chrono::Utc::now();
            for def in defs {
                tracing::info!(job = %def.id, interval_ms = def.interval.as_millis() as u64, "recurring job defined");
                scheduler.define(def, now);
            }
        }
        ScheduleEvent::Remove(jobs) => {
            for job in jobs {
                tracing::info!(%job, "recurring job removed");
                scheduler.remove(&job);
            }
        }
        ScheduleEvent::Ended(ended) => {
            return ended
                .into_iter()
                .filter_map(|(job, run)| scheduler.ended(&job, run))
                .collect();
        }
    }
    metrics::gauge!(m::RECURRING_JOBS).set(scheduler.len() as f64);
    Vec::new()
}

/// Records due slots (runs, skips while the previous run goes on, slots missed before) and
/// dispatches the runs; an error leaves them all unrecorded, to be tried again.
pub(crate) async fn fire_slots(
    d: &Dispatcher,
    scheduler: &mut Scheduler,
    fires: &[Fire],
) -> anyhow::Result<()> {
    let skipped = fires.iter().filter(|f| f.overlaps.is_some()).count();
    let missed: usize = fires.iter().map(|f| f.missed.len()).sum();
    let (runs, skipped_runs) = store::record_slots(&d.pool, fires).await?;
    metrics::counter!(m::SLOTS, "result" => "fired").increment(runs.len() as u64);
    metrics::counter!(m::SLOTS, "result" => "skipped").increment(skipped as u64);
    metrics::counter!(m::SLOTS, "result" => "missed").increment(missed as u64);
    if missed > 0 {
        tracing::warn!(
            slots = missed,
            "slots that passed unfired recorded as skipped"
        );
    }
    // A job fires at most one slot per call.
    let slot_of: HashMap<&JobId, _> = fires.iter().map(|f| (&f.job, f.slot)).collect();
    {
        let mut slots = d.slot_times();
        for run in &runs {
            if let Some(slot) = slot_of.get(&run.job_id) {
                slots.insert(run.run_id, *slot);
            }
        }
    }
    for run in &runs {
        scheduler.opened(run.job_id.clone(), run.run_id);
    }
    dispatch(d, runs);
    // Slots skipped end as runs do: on the outcome feed, by the outbox task (a slow NATS
    // must not hold up the scheduler; a send fails only when leading stops, and the outbox
    // keeps them for the next leader).
    if !skipped_runs.is_empty() {
        let _ = d.outboxed.send(skipped_runs);
    }
    Ok(())
}
