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
use crate::timetable::{Fire, Scheduler};

/// Fires recurring jobs: sleeps until the earliest planned slot (a timer, not a polling loop),
/// records what is due, and dispatches it. A slot whose job is still running is recorded as
/// skipped.
pub(crate) async fn scheduler_loop(
    d: Arc<Dispatcher>,
    mut events: mpsc::UnboundedReceiver<ScheduleEvent>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut scheduler = Scheduler::default();
    let now = chrono::Utc::now();
    for def in store::recurring_jobs(&d.pool).await? {
        scheduler.define(def, now);
    }
    for (job, run) in store::open_recurring_runs(&d.pool).await? {
        scheduler.opened(job, run);
    }
    tracing::info!(jobs = scheduler.len(), "recurring jobs loaded");
    metrics::gauge!(m::RECURRING_JOBS).set(scheduler.len() as f64);
    // Slots due within a few milliseconds of each other are fired together: one transaction
    // for many slots instead of one per slot when thousands of jobs share an interval.
    const COALESCE: Duration = Duration::from_millis(10);
    let mut last_fire = tokio::time::Instant::now() - COALESCE;
    loop {
        let sleep = match scheduler.next_wake() {
            Some(at) => (at - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
                .max(COALESCE.saturating_sub(last_fire.elapsed())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            event = events.recv() => {
                let Some(event) = event else { return Ok(()) };
                apply_schedule_event(&d, &mut scheduler, event).await;
            }
            _ = tokio::time::sleep(sleep) => {
                last_fire = tokio::time::Instant::now();
                // A disabled target is not polled: recording leaves its jobs' slots out.
                let fires = scheduler.fire(chrono::Utc::now());
                if !fires.is_empty() {
                    fire_slots(&d, &mut scheduler, fires).await;
                }
            }
        }
    }
}

/// A definition added or removed, or runs ended (which may fire a slot kept behind them).
pub(crate) async fn apply_schedule_event(
    d: &Dispatcher,
    scheduler: &mut Scheduler,
    event: ScheduleEvent,
) {
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
            let kept: Vec<_> = ended
                .into_iter()
                .filter_map(|(job, run)| scheduler.ended(&job, run))
                .collect();
            if !kept.is_empty() {
                fire_slots(d, scheduler, kept).await;
            }
            return;
        }
    }
    metrics::gauge!(m::RECURRING_JOBS).set(scheduler.len() as f64);
}

/// Records due slots (runs, or skips while the previous run goes on) and dispatches the runs.
pub(crate) async fn fire_slots(d: &Dispatcher, scheduler: &mut Scheduler, fires: Vec<Fire>) {
    let skipped = fires.iter().filter(|f| f.overlaps.is_some()).count();
    match store::record_slots(&d.pool, &fires).await {
        Ok(runs) => {
            metrics::counter!(m::SLOTS, "result" => "fired").increment(runs.len() as u64);
            metrics::counter!(m::SLOTS, "result" => "skipped").increment(skipped as u64);
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
        }
        Err(error) => {
            // Those slots are missed; the next ones are planned.
            tracing::warn!(
                error = format!("{error:#}"),
                slots = fires.len(),
                "cannot record fired slots"
            );
            metrics::counter!(m::SLOTS, "result" => "failed").increment(fires.len() as u64);
        }
    }
}
