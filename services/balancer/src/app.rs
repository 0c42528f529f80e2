//! The balancer service: a cycle on a timer, and at once when a worker joins or leaves.
//!
//! A cycle fetches heartbeats, queues and current assignments, calls the pure `assign`, and
//! writes only the assignments that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use chrono::Utc;
use deadpool_postgres::Pool;
use faro_shared::domain::{QueueName, WorkerId};
use faro_shared::http::{self, Health};
use faro_shared::messages::{Assignment, Heartbeat, WorkerSettings};
use faro_shared::nats::Retry;
use faro_shared::nats::Topology;
use faro_shared::shutdown::{unless_cancelled, Supervisor};
use faro_shared::{nats, pg};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::assign::{assign, WorkerView};
use crate::config::Config;
use crate::metrics as m;
use crate::store;

/// Runs the balancer until `shutdown` is cancelled or its loop fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    m::describe();
    let health = Health::default();
    let (_, http_task) =
        http::serve(config.common.http_addr, health.clone(), shutdown.clone()).await?;
    let start = async {
        pg::migrate(&config.pg).await?;
        let pool = pg::pool(&config.pg)?;
        let client = nats::connect(&config.common.nats, "faro-balancer", Retry::Forever).await?;
        let js = nats::jetstream(client);
        let topology =
            nats::ensure_topology(&js, &config.common.namespace, &config.topology).await?;
        anyhow::Ok((pool, topology))
    };
    let Some((pool, topology)) = unless_cancelled(&shutdown, start).await? else {
        return Ok(());
    };

    let mut supervisor = Supervisor::new("balancer", shutdown.clone());
    supervisor.spawn(
        "cycle",
        cycle_loop(config.clone(), pool, topology, shutdown.clone()),
    );
    supervisor.spawn("http", async move {
        http_task.await.context("metrics server panicked")
    });
    health.set_ready(true);
    tracing::info!("balancer ready");
    supervisor.wait(config.shutdown_grace).await
}

async fn cycle_loop(
    config: Config,
    pool: Pool,
    topology: Topology,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut changes = topology
        .workers
        .watch_all()
        .await
        .context("cannot watch heartbeats")?;
    let mut tick = tokio::time::interval(config.cycle_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
            change = changes.next() => match change {
                // A beat of a worker already known changes nothing until the next tick.
                Some(Ok(entry)) if entry.operation == kv::Operation::Put && known.contains(&entry.key) => continue,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "heartbeat watch error");
                    continue;
                }
                None => anyhow::bail!("the heartbeat watch ended"),
            },
        }
        let started = Instant::now();
        match cycle(&pool, &topology).await {
            Ok(live) => {
                known = live;
                metrics::counter!(m::CYCLES, "result" => "ok").increment(1);
            }
            Err(error) => {
                // Nothing is written on a failed cycle: assignments stay as they were.
                tracing::warn!(error = format!("{error:#}"), "balancing cycle failed");
                metrics::counter!(m::CYCLES, "result" => "failed").increment(1);
            }
        }
        metrics::histogram!(m::CYCLE_SECONDS).record(started.elapsed().as_secs_f64());
    }
}

/// One decision; returns the keys of the live workers.
async fn cycle(pool: &Pool, topology: &Topology) -> anyhow::Result<BTreeSet<String>> {
    let beats = read_all::<Heartbeat>(&topology.workers).await?;
    let queues = store::queues(pool).await?;
    let current = read_all::<Assignment>(&topology.assignments).await?;
    let settings = store::worker_settings(pool).await?;
    faro_shared::telemetry::follow_log_level(settings.log_level.as_deref());
    metrics::gauge!(m::WORKERS).set(beats.len() as f64);

    let workers: Vec<WorkerView> = beats
        .values()
        .map(|beat| WorkerView {
            id: beat.worker_id.clone(),
            kinds: beat.kinds.iter().copied().collect(),
        })
        .collect();
    let decision = assign(&workers, &queues);
    // The registry first: once an assignment changes, the registry already says why.
    let live: Vec<Heartbeat> = beats.into_values().collect();
    store::record_workers(pool, &live).await?;
    write_changes(&topology.assignments, &decision, &current, &settings).await?;
    Ok(live.iter().map(|b| b.worker_id.to_string()).collect())
}

async fn write_changes(
    bucket: &kv::Store,
    decision: &BTreeMap<WorkerId, Vec<QueueName>>,
    current: &BTreeMap<String, Assignment>,
    settings: &WorkerSettings,
) -> anyhow::Result<()> {
    for (worker, queues) in decision {
        let unchanged = current
            .get(worker.as_str())
            .is_some_and(|a| &a.queues == queues && &a.settings == settings);
        if unchanged {
            continue;
        }
        let assignment = Assignment {
            worker_id: worker.clone(),
            queues: queues.clone(),
            settings: settings.clone(),
            updated_at: Utc::now(),
        };
        bucket
            .put(worker.as_str(), serde_json::to_vec(&assignment)?.into())
            .await
            .with_context(|| format!("cannot write the assignment of {worker}"))?;
        metrics::counter!(m::ASSIGNMENT_CHANGES).increment(1);
        tracing::info!(worker = %worker, queues = ?queues.iter().map(QueueName::as_str).collect::<Vec<_>>(), "assignment changed");
    }
    for key in current.keys() {
        if !decision.keys().any(|w| w.as_str() == key) {
            bucket
                .delete(key)
                .await
                .with_context(|| format!("cannot remove the assignment of {key}"))?;
            tracing::info!(worker = %key, "assignment removed: worker gone");
        }
    }
    Ok(())
}

/// Every value of a bucket, by key; a malformed value is skipped with a warning.
async fn read_all<T: serde::de::DeserializeOwned>(
    bucket: &kv::Store,
) -> anyhow::Result<BTreeMap<String, T>> {
    let keys: Vec<String> = bucket
        .keys()
        .await
        .context("cannot list keys")?
        .try_collect()
        .await
        .context("cannot list keys")?;
    let mut values = BTreeMap::new();
    for key in keys {
        let Some(bytes) = bucket.get(&key).await.context("cannot read a key")? else {
            continue;
        };
        match serde_json::from_slice(&bytes) {
            Ok(value) => {
                values.insert(key, value);
            }
            Err(error) => tracing::warn!(%key, %error, "malformed value skipped"),
        }
    }
    Ok(values)
}
