//! The dispatcher service's run and lead loop: stand by until the leader lease is held,
//! rebuild the leader's state from PostgreSQL, run every task until the lease is lost or a
//! task fails, and stand by again. The tasks live in their own modules (see the crate doc).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use deadpool_postgres::Pool;
use faro_shared::nats;
use faro_shared::service::{self, Spec};
use faro_shared::shutdown::{unless_cancelled, Supervisor};
use tokio::sync::{mpsc, Notify, RwLock};
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Limits, SlotChanges};
use crate::api::api_loop;
use crate::bus;
use crate::catalog;
use crate::chains::Chains;
use crate::config::Config;
use crate::deadlines::deadlines_loop;
use crate::deadlines::Deadlines;
use crate::history::history_loop;
use crate::intake::submissions_loop;
use crate::leader::Election;
use crate::metrics as m;
use crate::publisher::publisher_loop;
use crate::results::results_loop;
use crate::retries::retries_loop;
use crate::scheduler::scheduler_loop;
use crate::settings::{apply_to, settings_loop};
use crate::slot_leases::SlotLeases;
use crate::state::{Cancelled, Dispatcher};
use crate::store;

/// First pause before a dispatcher whose leading failed competes for the lease again; it
/// doubles with each failure in a row, up to [`LEAD_RETRY_MAX_PAUSE`].
const LEAD_RETRY_PAUSE: Duration = Duration::from_millis(500);
const LEAD_RETRY_MAX_PAUSE: Duration = Duration::from_secs(15);

/// What a dispatcher does once it no longer leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterLeading {
    /// The service is shutting down.
    Stop,
    /// The lease was lost (renewal failed): compete for it again at once.
    StandBy,
    /// A loop of the leader failed (NATS or PostgreSQL gone for a moment: a NATS node died, a
    /// database restarted): the lease was given up, so a standby may lead at once; compete
    /// again after this pause. The process stays up: only a shutdown ends it.
    Pause(Duration),
}

/// Decides [`AfterLeading`] from how leading ended; counts leaderships that failed in a row,
/// and the pause doubles with each, from [`LEAD_RETRY_PAUSE`] to [`LEAD_RETRY_MAX_PAUSE`].
fn after_leading(
    led: &anyhow::Result<()>,
    shutting_down: bool,
    failed_in_a_row: &mut u32,
) -> AfterLeading {
    if shutting_down {
        return AfterLeading::Stop;
    }
    if led.is_ok() {
        *failed_in_a_row = 0;
        return AfterLeading::StandBy;
    }
    *failed_in_a_row += 1;
    AfterLeading::Pause(
        LEAD_RETRY_PAUSE
            .saturating_mul(1 << (*failed_in_a_row - 1).min(6))
            .min(LEAD_RETRY_MAX_PAUSE),
    )
}

/// Runs the dispatcher until `shutdown` is cancelled: stands by until it holds the leader
/// lease, leads while it holds it, and stands by again if it loses it or one of its loops
/// fails (then after a pause, giving a standby the lease first).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let spec = Spec::new("dispatcher", &config.common, m::METRICS).with_pg(&config.pg);
    let Some(service) = service::start(spec, &shutdown).await? else {
        return Ok(());
    };
    let (pool, client, js) = (service.pool()?, service.client.clone(), service.js.clone());
    let (ns, topology) = (service.ns.clone(), service.topology.clone());
    let election = Election {
        js: js.clone(),
        store: topology.leases.clone(),
        bucket: ns.leases_bucket(),
        instance: config.instance.clone(),
        ttl: config.leader_lease_ttl,
    };
    // A standby is healthy: it is ready to take over.
    service.health.set_ready(true);
    let instance = config.instance.as_str();
    let mut failed_leaderships = 0u32;
    let outcome = loop {
        metrics::gauge!(m::LEADER).set(0.0);
        tracing::info!(instance, "waiting for the leader lease");
        let Some(lease) = election.acquire(&shutdown).await else {
            break Ok(());
        };
        metrics::gauge!(m::LEADER).set(1.0);
        metrics::counter!(m::LEADERSHIPS).increment(1);
        tracing::info!(instance, "leader lease taken; leading");
        let elected = serde_json::json!({"type": "leader_elected", "instance": instance});
        service.events.publish("dispatcher", &elected).await;
        // Both end together: leading stops when the lease is lost, the lease is given up
        // when leading stops. Nothing is spawned outside this future, so aborting it (a
        // killed process) stops renewing at once.
        let leading = shutdown.child_token();
        let (led, lease) = tokio::join!(
            async {
                let led = lead(&config, &pool, &client, &js, leading.clone()).await;
                // However leading ended (its start failed too), renewing ends with it: a
                // lease kept with nothing led stops every run until the process dies.
                leading.cancel();
                led
            },
            election.keep(lease, leading.clone()),
        );
        if shutdown.is_cancelled() || led.is_err() {
            if let Some(lease) = lease {
                if let Err(error) = lease.release(&topology.leases).await {
                    tracing::warn!(
                        error = faro_shared::pg::error_text(&error),
                        "cannot release the leader lease; it expires by itself"
                    );
                }
            }
        }
        match after_leading(&led, shutdown.is_cancelled(), &mut failed_leaderships) {
            AfterLeading::Stop => break led,
            AfterLeading::StandBy => {
                tracing::warn!(instance, "no longer the leader; standing by");
            }
            AfterLeading::Pause(pause) => {
                if let Err(error) = &led {
                    tracing::error!(
                        instance,
                        error = faro_shared::pg::error_text(error),
                        failed_leaderships,
                        pause_ms = pause.as_millis() as u64,
                        "leading failed; lease given up, standing by"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    };
    metrics::gauge!(m::LEADER).set(0.0);
    service.stop_http().await?;
    outcome
}

/// How long a new leader may take to open its consumers and read its state before it gives
/// the lease up and tries again.
const LEAD_START_TIMEOUT: Duration = Duration::from_secs(30);

/// What a new leader rebuilds from PostgreSQL and its queues.
struct Restored {
    /// Limits, settings and the slots of the runs in flight.
    admission: Admission,
    /// The deadlines of the runs in flight.
    deadlines: Deadlines,
    /// The slot leases to write.
    slots: SlotChanges,
    chains: Chains,
}

/// Rebuilds the leader's state from PostgreSQL, and from the jobs stream the runs the last
/// leader published without clearing them from the outbox (it died in between).
async fn restore(
    pool: &Pool,
    config: &Config,
    js: &jetstream::Context,
    ns: &faro_shared::Namespace,
) -> anyhow::Result<Restored> {
    let began = std::time::Instant::now();
    // The reads that do not depend on one another go at once: a takeover waits for the
    // slowest of them, not for their sum.
    let definitions = async {
        let (per_target, queue_defined, disabled, settings, chained) = tokio::try_join!(
            store::target_limits(pool),
            store::queue_limits(pool),
            catalog::disabled_targets(pool),
            faro_shared::settings::load(pool),
            store::chained_jobs(pool),
        )?;
        anyhow::Ok((
            (per_target, queue_defined, disabled, settings, chained),
            began.elapsed(),
        ))
    };
    // Attempts in flight before a restart keep their slots and are watched for a deadline
    // from when they were published; so do those in the outbox that a queue holds already,
    // whose slots waiting runs would otherwise take while they execute. An attempt is in
    // flight while the jobs stream holds it (queued, or executing and not yet acknowledged:
    // a worker acknowledges once its result is stored, and the result then ends it). Without
    // that list the slots in use are unknown, so this leadership fails and is tried again.
    let flight = async {
        let stored = bus::stored_attempts(js, ns)
            .await
            .context("cannot read which runs the queues hold, so which runs are in flight")?;
        let queued = began.elapsed();
        let mut in_flight = store::in_flight_runs(pool, &stored).await?;
        if !stored.is_empty() {
            let waiting = store::unpublished_runs(pool, None, i64::MAX).await?;
            let published = bus::already_stored(waiting, &stored);
            if !published.is_empty() {
                tracing::info!(
                    runs = published.len(),
                    "runs the last leader published without clearing them: counted in flight"
                );
                let cleared: Vec<_> = published
                    .iter()
                    .map(|(r, _)| (r.run_id, r.attempt))
                    .collect();
                store::mark_published(pool, &cleared).await?;
                in_flight.extend(published);
            }
        }
        anyhow::Ok((stored.len(), in_flight, queued, began.elapsed()))
    };
    let (
        ((per_target, queue_defined, disabled, settings, chained), defined_in),
        (queued, in_flight, queued_in, flight_in),
    ) = tokio::try_join!(definitions, flight)?;
    tracing::info!(
        definitions_ms = defined_in.as_millis(),
        jobs_stream_ms = queued_in.as_millis(),
        in_flight_ms = flight_in.as_millis(),
        queued,
        in_flight = in_flight.len(),
        chained = chained.len(),
        "leader state read"
    );
    // Slots held by runs already in flight, from before a restart.
    let mut admission = Admission::new(Limits {
        default: config.target_max_concurrency,
        per_target,
        queue_defined,
        queue_set: HashMap::new(),
        disabled,
    });
    // Hot settings in force before the first run is offered.
    for setting in settings.all() {
        apply_to(&mut admission, setting);
    }
    let mut deadlines = Deadlines::default();
    for (run, published) in in_flight {
        admission.restore_in_flight(
            run.target.clone(),
            run.queue.clone(),
            run.run_id,
            run.attempt,
            run.timeout_ms,
        );
        let deadline = config.run_deadline().at(published, run.timeout_ms);
        deadlines.track(run, deadline);
    }
    let slots = SlotChanges {
        at: crate::state::leader_now(),
        changes: admission.take_changes(),
    };
    let mut chains = Chains::default();
    for (parent, child) in chained {
        chains.define(parent, child);
    }
    Ok(Restored {
        admission,
        deadlines,
        slots,
        chains,
    })
}

/// Does the leader's work until `leading` is cancelled: rebuilds its state from PostgreSQL
/// (slots in flight, deadlines, chains, the schedule, the outbox), then runs every loop.
async fn lead(
    config: &Config,
    pool: &Pool,
    client: &async_nats::Client,
    js: &jetstream::Context,
    leading: CancellationToken,
) -> anyhow::Result<()> {
    let (pool, config, ns) = (
        pool.clone(),
        config.clone(),
        config.common.namespace.clone(),
    );
    let consumers = async {
        let submissions =
            nats::bind_service_consumer(js, &ns.submit_stream(), ns.dispatcher_consumer()).await?;
        let results =
            nats::bind_service_consumer(js, &ns.results_stream(), ns.dispatcher_consumer()).await?;
        let leases = js
            .get_key_value(ns.leases_bucket())
            .await
            .context("cannot open the leases bucket")?;
        anyhow::Ok((submissions, results, leases))
    };
    // Bounded: a request JetStream never answers (a stream whose new leader is still being
    // elected after a NATS node died) must not hold the lease with nothing led.
    let consumers = async {
        tokio::time::timeout(LEAD_START_TIMEOUT, consumers)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the leader's consumers and leases bucket did not open within {} s",
                    LEAD_START_TIMEOUT.as_secs()
                )
            })?
    };
    let began = std::time::Instant::now();
    let Some((submissions, results, leases)) = unless_cancelled(&leading, consumers).await? else {
        return Ok(());
    };
    let opened = began.elapsed();
    let restored = tokio::time::timeout(LEAD_START_TIMEOUT, restore(&pool, &config, js, &ns))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the leader's state was not read from PostgreSQL within {} s",
                LEAD_START_TIMEOUT.as_secs()
            )
        })??;
    tracing::info!(
        consumers_ms = opened.as_millis(),
        ms = began.elapsed().as_millis(),
        "leader state restored"
    );
    let grace = config.shutdown_grace;
    let (publisher_tx, publisher_rx) = mpsc::unbounded_channel();
    let (schedule_tx, schedule_rx) = mpsc::unbounded_channel();
    let (outboxed_tx, outboxed_rx) = mpsc::unbounded_channel();
    let (slots_tx, slots_rx) = mpsc::unbounded_channel();
    let slot_leases = SlotLeases {
        // A context of its own: its unconfirmed writes never take the ack permits that the
        // publisher of runs needs.
        js: nats::jetstream(client.clone()),
        store: leases,
        bucket: ns.leases_bucket(),
        holder: config.instance.clone(),
        deadline: config.run_deadline(),
    };
    let dispatcher = Arc::new(Dispatcher {
        pool,
        client: client.clone(),
        js: js.clone(),
        ns,
        config,
        retries_changed: Notify::new(),
        admission: Mutex::new(restored.admission),
        slot_changes: slots_tx,
        publisher: publisher_tx,
        schedule: schedule_tx,
        outboxed: outboxed_tx,
        chains: RwLock::new(restored.chains),
        deadlines: Mutex::new(restored.deadlines),
        deadlines_changed: Notify::new(),
        cancelled: Mutex::new(Cancelled::default()),
        slot_times: Mutex::default(),
        settings: tokio::sync::Mutex::new(()),
        intake: tokio::sync::Mutex::new(()),
        devices: std::sync::RwLock::default(),
        snmp_test_mode: std::sync::atomic::AtomicBool::new(false),
        queue_consumers: tokio::sync::Mutex::default(),
    });
    let shutdown = leading;
    let mut supervisor = Supervisor::new("dispatcher", shutdown.clone());
    supervisor.spawn(
        "slot leases",
        slot_leases.run(restored.slots, slots_rx, shutdown.clone()),
    );
    supervisor.spawn(
        "submissions",
        submissions_loop(dispatcher.clone(), submissions, shutdown.clone()),
    );
    supervisor.spawn(
        "results",
        results_loop(dispatcher.clone(), results, shutdown.clone()),
    );
    supervisor.spawn(
        "publisher",
        publisher_loop(dispatcher.clone(), publisher_rx, shutdown.clone()),
    );
    supervisor.spawn(
        "settings",
        settings_loop(dispatcher.clone(), shutdown.clone()),
    );
    supervisor.spawn(
        "deadlines",
        deadlines_loop(dispatcher.clone(), shutdown.clone()),
    );
    supervisor.spawn(
        "scheduler",
        scheduler_loop(dispatcher.clone(), schedule_rx, shutdown.clone()),
    );
    supervisor.spawn(
        "retries",
        retries_loop(dispatcher.clone(), shutdown.clone()),
    );
    supervisor.spawn(
        "outcome outbox",
        crate::outcomes::outbox_loop(dispatcher.clone(), outboxed_rx, shutdown.clone()),
    );
    supervisor.spawn(
        "history",
        history_loop(dispatcher.clone(), shutdown.clone()),
    );
    supervisor.spawn(
        "api",
        api_loop(dispatcher, client.clone(), shutdown.clone()),
    );
    tracing::info!("dispatcher leading");
    supervisor.wait(grace).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_leadership_stands_by_and_retries_after_a_growing_pause() {
        let mut failed = 0;
        let error = || {
            Err(anyhow::anyhow!(
                "cannot list the keys of faro_leases: timed out"
            ))
        };
        let pauses: Vec<AfterLeading> = (0..8)
            .map(|_| after_leading(&error(), false, &mut failed))
            .collect();
        assert_eq!(
            pauses,
            [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]
                .map(|ms| AfterLeading::Pause(Duration::from_millis(ms)))
        );
        // A leadership that ended without error (its lease was lost) starts the count again.
        assert_eq!(
            after_leading(&Ok(()), false, &mut failed),
            AfterLeading::StandBy
        );
        assert_eq!(
            after_leading(&error(), false, &mut failed),
            AfterLeading::Pause(LEAD_RETRY_PAUSE)
        );
    }

    #[test]
    fn only_a_shutdown_stops_the_dispatcher() {
        let mut failed = 3;
        assert_eq!(
            after_leading(&Ok(()), true, &mut failed),
            AfterLeading::Stop
        );
        assert_eq!(
            after_leading(&Err(anyhow::anyhow!("broken")), true, &mut failed),
            AfterLeading::Stop
        );
    }
}
