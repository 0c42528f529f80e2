//! The balancer service: follows heartbeats and demand snapshots as they arrive, and every
//! `cycle_interval` (at once when a worker joins or returns) ages the registry, calls the pure
//! `decide`, and writes what changed: assignments, cooling, the registry, the decisions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::follow::Follow;
use faro_shared::messages::{Assignment, DemandSnapshot, Heartbeat, WorkerEvent};
use faro_shared::nats::Topology;
use faro_shared::service::{self, Events, Spec};
use faro_shared::shutdown::unless_cancelled;
use faro_shared::Namespace;
use futures::TryStreamExt;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::config::Config;
use crate::cycle::{self, CycleOutcome, Prepared, Written};
use crate::decide::{decide, Decision, Inputs};
use crate::metrics as m;
use crate::registry::Event;
use crate::state::{State, FORGET_AFTER_HOURS};
use crate::store;

/// Runs the balancer until `shutdown` is cancelled or its loop fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let spec = Spec::new("balancer", &config.common, m::METRICS).with_pg(&config.pg);
    let Some(mut service) = service::start(spec, &shutdown).await? else {
        return Ok(());
    };
    let pool = service.pool()?;
    let load = async {
        anyhow::Ok(State {
            registry: store::load_registry(&pool, FORGET_AFTER_HOURS).await?,
            events: Vec::new(),
            assigned: read_all::<Assignment>(&service.topology.assignments)
                .await?
                .into_values()
                .map(|a| (a.worker_id.clone(), a))
                .collect(),
            demand: BTreeMap::new(),
            holds: store::holds(&pool).await?,
            last: None,
            cooling: BTreeMap::new(),
        })
    };
    let Some(state) = unless_cancelled(&shutdown, load).await? else {
        return service.stop_http().await;
    };
    let state = Arc::new(Mutex::new(state));
    let balancer = Balancer {
        config: config.clone(),
        pool: pool.clone(),
        js: service.js.clone(),
        ns: service.ns.clone(),
        topology: service.topology.clone(),
        events: service.events.clone(),
        state: state.clone(),
    };
    let api = api::serve(
        service.client.clone(),
        service.ns.clone(),
        pool,
        state,
        shutdown.clone(),
    );
    let mut supervisor = service.supervisor();
    supervisor.spawn("cycle", balancer.run(shutdown.clone()));
    supervisor.spawn("api", api);
    service.serve(supervisor, config.shutdown_grace).await
}

struct Balancer {
    config: Config,
    pool: Pool,
    js: jetstream::Context,
    ns: Namespace,
    topology: Topology,
    events: Events,
    state: Arc<Mutex<State>>,
}

impl Balancer {
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let workers = self.topology.workers.clone();
        let mut beats = Follow::open("heartbeat watch", move || {
            let workers = workers.clone();
            async move {
                workers
                    .watch_with_history(">")
                    .await
                    .context("cannot watch heartbeats")
            }
        })
        .await?;
        // Every worker's last beat first: a first cycle that saw only some would take the
        // assignments of the others away.
        let mut stored = self
            .js
            .get_stream(self.ns.workers_bucket_stream())
            .await
            .context("cannot open the heartbeat bucket")?;
        let stored = stored
            .info()
            .await
            .context("cannot read the heartbeat bucket")?
            .state
            .messages;
        if stored > 0 {
            while let Ok(entry) =
                tokio::time::timeout(CATCH_UP_WAIT, beats.next(BEATS_SILENCE_IDLE)).await
            {
                let caught_up = entry.delta == 0;
                self.observe_beat(entry).await;
                if caught_up {
                    break;
                }
            }
        }
        let replay = self.demand_stored().await?;
        let (js, ns) = (self.js.clone(), self.ns.clone());
        let mut demand = Follow::open("demand watch", move || {
            follow_demand(js.clone(), ns.clone())
        })
        .await?;
        let demand_silence = demand_silence(self.config.demand_max_age);
        // The latest snapshots first: a first cycle without them would see no demand at all.
        let mut replay = replay;
        while replay > 0 {
            match tokio::time::timeout(CATCH_UP_WAIT, demand.next(demand_silence)).await {
                Ok(message) => {
                    self.observe_demand(&message.payload).await;
                    replay = message.info().map_or(0, |info| info.pending);
                }
                Err(_) => break,
            }
        }
        let mut next = tokio::time::Instant::now();
        let mut cycles: u64 = 0;
        let mut looked_at = DateTime::<Utc>::MIN_UTC;
        loop {
            // A watch silent for longer than the workers beat is dead, not quiet: it is opened
            // again before its silence makes them lost.
            let (beats_silence, unstable_at) = {
                let state = self.state.lock().await;
                (
                    beats_silence(state.registry.longest_beat_interval()),
                    state.registry.next_unstable(),
                )
            };
            // A worker that misses its beat is seen at once: its queue, if it had no other
            // worker, gets a replacement in that cycle, not up to `cycle_interval` later.
            // (Once per instability: a cycle that failed before it aged the registry does
            // not make the loop spin.)
            let wake = unstable_at.filter(|at| *at > looked_at).map_or(next, |at| {
                let after = (at - Utc::now()).to_std().unwrap_or_default();
                next.min(tokio::time::Instant::now() + after + UNSTABLE_SLACK)
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(wake) => {}
                entry = beats.next(beats_silence) => {
                    if self.observe_beat(entry).await {
                        // A worker joined, returned or left: decide at once.
                        next = next.min(tokio::time::Instant::now());
                    }
                    continue;
                }
                message = demand.next(demand_silence) => {
                    self.observe_demand(&message.payload).await;
                    continue;
                }
            }
            let started = Instant::now();
            looked_at = Utc::now();
            let interval = match self.cycle().await {
                Ok(interval) => {
                    metrics::counter!(m::CYCLES, "result" => "ok").increment(1);
                    interval
                }
                Err(error) => {
                    // What was not written is written by the next cycle: the state keeps it.
                    tracing::warn!(
                        error = faro_shared::pg::error_text(&error),
                        "balancing cycle failed"
                    );
                    metrics::counter!(m::CYCLES, "result" => "failed").increment(1);
                    self.config.cycle_interval
                }
            };
            metrics::histogram!(m::CYCLE_SECONDS).record(started.elapsed().as_secs_f64());
            cycles += 1;
            if cycles % 720 == 1 {
                if let Err(error) = self.prune().await {
                    tracing::warn!(
                        error = faro_shared::pg::error_text(&error),
                        "cannot prune old decisions and worker events"
                    );
                }
            }
            next = tokio::time::Instant::now() + interval;
        }
    }

    /// Drops the decisions and worker events past their retention, and measures what the
    /// balancer keeps: those tables, and the assignments bucket (markers included).
    async fn prune(&self) -> anyhow::Result<()> {
        let (decisions, events) = store::prune_history(
            &self.pool,
            self.config.decisions_kept,
            self.config.worker_events_kept,
        )
        .await?;
        if decisions + events > 0 {
            tracing::info!(
                decisions,
                events,
                "decisions and worker events pruned past retention"
            );
        }
        for (table, bytes) in store::history_bytes(&self.pool).await? {
            metrics::gauge!(m::TABLE_BYTES, "table" => table).set(bytes as f64);
        }
        let assignments = self
            .topology
            .assignments
            .status()
            .await
            .context("cannot read the assignments bucket")?;
        metrics::gauge!(m::ASSIGNMENTS_STORED).set(assignments.values() as f64);
        Ok(())
    }

    /// How many demand snapshots the stream holds now: the latest of each queue, replayed
    /// before the first cycle.
    async fn demand_stored(&self) -> anyhow::Result<u64> {
        let mut stream = self
            .js
            .get_stream(self.ns.demand_stream())
            .await
            .context("cannot open the demand stream")?;
        Ok(stream
            .info()
            .await
            .context("cannot read the demand stream")?
            .state
            .messages)
    }

    async fn observe_demand(&self, payload: &[u8]) {
        let snapshot: DemandSnapshot = match serde_json::from_slice(payload) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(%error, "malformed demand snapshot ignored");
                return;
            }
        };
        let mut state = self.state.lock().await;
        let since = match state.demand.get(&snapshot.queue) {
            _ if !snapshot.stale => None,
            Some((_, Some(since))) => Some(*since),
            _ => Some(snapshot.collected_at),
        };
        state
            .demand
            .insert(snapshot.queue.clone(), (snapshot, since));
    }

    /// Records a heartbeat entry; true when a worker joined, came back or left.
    async fn observe_beat(&self, entry: kv::Entry) -> bool {
        // Microseconds, as PostgreSQL keeps them: a beat saved and seen again compares equal.
        let at = DateTime::from_timestamp_micros(
            i64::try_from(entry.created.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX),
        )
        .unwrap_or_else(Utc::now);
        let mut state = self.state.lock().await;
        let event = match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Heartbeat>(&entry.value) {
                Ok(beat) if beat.worker_id.as_str() == entry.key => state.registry.beat(beat, at),
                Ok(_) => {
                    tracing::warn!(key = %entry.key, "heartbeat under another worker's key ignored");
                    None
                }
                Err(error) => {
                    tracing::warn!(key = %entry.key, %error, "malformed heartbeat ignored");
                    None
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => match WorkerId::parse(&entry.key) {
                Ok(id) => state.registry.left(&id, Utc::now()),
                Err(_) => None,
            },
        };
        let Some(event) = event else { return false };
        tracing::info!(worker = %event.worker, event = event.kind.as_str(), "worker registry");
        state.events.push(event);
        true
    }

    /// One decision; returns the time to the next. The state's lock is held to prepare and
    /// to commit only (see `cycle`).
    async fn cycle(&self) -> anyhow::Result<Duration> {
        let hot = store::hot(&self.pool).await?;
        faro_shared::telemetry::follow_log_level(hot.workers.log_level.as_deref());
        let queues = store::queues(&self.pool).await?;
        let cooling = self.read_cooling().await?;
        let now = Utc::now();
        let prepared = {
            let mut state = self.state.lock().await;
            state.age(now, self.config.max_missed);
            cycle::prepare(&state, now, self.config.demand_max_age)
        };
        metrics::gauge!(m::WORKERS).set(prepared.workers.len() as f64);
        metrics::gauge!(m::OLDEST_HEARTBEAT_SECONDS).set(prepared.oldest_beat.as_secs_f64());
        let decided = Instant::now();
        let decision = decide(Inputs {
            queues: &queues,
            workers: &prepared.workers,
            demand: &prepared.demand,
            cooling: &cooling,
            policy: hot.policy,
            now,
        });
        metrics::histogram!(m::DECIDE_SECONDS).record(decided.elapsed().as_secs_f64());
        let outcome = cycle::outcome(&prepared, &decision, &cooling, &hot.workers, now);
        observe(&prepared, &decision);

        let mut written = Written::default();
        let result = self
            .write(&prepared, &decision, &outcome, now, &mut written)
            .await;
        let mut state = self.state.lock().await;
        cycle::commit(&mut state, &prepared, outcome, written, (decision, queues));
        drop(state);
        result?;
        Ok(hot.cycle_interval.unwrap_or(self.config.cycle_interval))
    }

    /// Writes a cycle's outcome, noting each step written: the registry first (once an
    /// assignment changes, the registry already says why), then cooling, assignments, the
    /// cycle's record and its events.
    async fn write(
        &self,
        prepared: &Prepared,
        decision: &Decision,
        outcome: &CycleOutcome,
        now: DateTime<Utc>,
        written: &mut Written,
    ) -> anyhow::Result<()> {
        store::save_registry(&self.pool, &prepared.dirty, &prepared.events).await?;
        written.registry = true;
        for event in &prepared.events {
            self.publish_worker_event(event).await;
        }
        self.write_cooling(&decision.cooling).await?;
        for assignment in &outcome.put {
            let worker = &assignment.worker_id;
            self.topology
                .assignments
                .put(worker.as_str(), serde_json::to_vec(assignment)?.into())
                .await
                .with_context(|| format!("cannot write the assignment of {worker}"))?;
            metrics::counter!(m::ASSIGNMENT_CHANGES).increment(1);
            written.put.push(assignment.clone());
        }
        for worker in &outcome.remove {
            self.topology
                .assignments
                .purge_with_ttl(worker.as_str(), self.config.assignment_marker_ttl)
                .await
                .with_context(|| format!("cannot remove the assignment of {worker}"))?;
            tracing::info!(%worker, "assignment removed: worker gone");
            written.removed.push(worker.clone());
        }
        store::record_cycle(&self.pool, now, &outcome.events, decision, &outcome.pools).await?;
        for event in &outcome.events {
            self.events.publish("balancer", event).await;
        }
        written.all = true;
        Ok(())
    }

    async fn publish_worker_event(&self, event: &Event) {
        let body = WorkerEvent {
            worker: event.worker.clone(),
            event: event.kind.as_str().to_owned(),
            at: event.at,
            missed: event.missed,
            from: event.from.map(|s| s.as_str().to_owned()),
        };
        self.events.publish("workers", &body).await;
    }

    async fn read_cooling(&self) -> anyhow::Result<BTreeMap<PoolName, DateTime<Utc>>> {
        let stored = read_all::<DateTime<Utc>>(&self.topology.cooling).await?;
        Ok(stored
            .into_iter()
            .filter_map(|(pool, until)| Some((PoolName::parse(pool).ok()?, until)))
            .collect())
    }

    async fn write_cooling(
        &self,
        cooling: &BTreeMap<PoolName, DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        for (pool, until) in cooling {
            self.topology
                .cooling
                .put(pool.as_str(), serde_json::to_vec(until)?.into())
                .await
                .with_context(|| format!("cannot write the cooling of pool {pool}"))?;
        }
        Ok(())
    }
}

/// A cycle's metrics and logs: each queue's workers and hold, the registry by state, each move.
fn observe(prepared: &Prepared, decision: &Decision) {
    for outcome in &decision.queues {
        let queue = outcome.queue.to_string();
        metrics::gauge!(m::QUEUE_WORKERS, "queue" => queue.clone()).set(f64::from(outcome.workers));
        let held = if outcome.hold.is_some() { 1.0 } else { 0.0 };
        metrics::gauge!(m::QUEUE_HELD, "queue" => queue).set(held);
    }
    for registry_state in ["active", "unstable", "lost", "left"] {
        let n = prepared.by_state.get(registry_state).copied().unwrap_or(0);
        metrics::gauge!(m::WORKERS_BY_STATE, "state" => registry_state).set(f64::from(n));
    }
    for change in &decision.changes {
        metrics::counter!(m::MOVES, "reason" => change.reason.kind()).increment(1);
        tracing::info!(worker = %change.worker, from = ?change.from.as_ref().map(QueueName::as_str), to = ?change.to.as_ref().map(QueueName::as_str), reason = %change.reason, "assignment changed");
    }
}

/// How long the first reads of the heartbeat and demand watches may wait for the next entry
/// before the balancer stops catching up and decides.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// How long after a worker's beat is due to be missed the balancer looks: past the instant,
/// so the registry counts it missed.
const UNSTABLE_SLACK: Duration = Duration::from_millis(50);

/// Heartbeat-watch silence allowed while no worker is live: the watch is opened again this
/// often on an idle system (cheap), so a dead one cannot hide a worker that starts later.
const BEATS_SILENCE_IDLE: Duration = Duration::from_secs(10);

/// Heartbeat-watch silence allowed at least, however fast workers beat.
const BEATS_SILENCE_MIN: Duration = Duration::from_secs(2);

/// Pure: how long the heartbeat watch may say nothing before it is opened again: three beats
/// of the slowest live worker (it is lost only after `max_missed`, 5 by default), at least
/// [`BEATS_SILENCE_MIN`]; [`BEATS_SILENCE_IDLE`] with no live worker.
fn beats_silence(longest_interval: Option<Duration>) -> Duration {
    longest_interval.map_or(BEATS_SILENCE_IDLE, |interval| {
        (interval * 3).max(BEATS_SILENCE_MIN)
    })
}

/// Pure: how long the demand watch may say nothing before it is opened again: a third of the
/// age at which demand counts as stale, at least 2 s.
fn demand_silence(max_age: Duration) -> Duration {
    (max_age / 3).max(Duration::from_secs(2))
}

/// Every queue's latest demand snapshot, then each new one, as a new ordered consumer.
async fn follow_demand(
    js: jetstream::Context,
    ns: Namespace,
) -> anyhow::Result<jetstream::consumer::pull::Ordered> {
    let stream = js
        .get_stream(ns.demand_stream())
        .await
        .context("cannot open the demand stream")?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: ns.demand_wildcard(),
            deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .context("cannot follow the demand stream")?;
    consumer
        .messages()
        .await
        .context("cannot follow the demand stream")
}

/// Every value of a bucket, by key; a malformed value is skipped with a warning.
///
/// The keys come from the stream's subjects (one request to the stream's leader), not from
/// `keys()`, whose ephemeral push consumer timed out on every cycle for minutes after a NATS
/// cluster node died (the balancer then moved no worker); deleted keys read as `None`.
async fn read_all<T: serde::de::DeserializeOwned>(
    bucket: &kv::Store,
) -> anyhow::Result<BTreeMap<String, T>> {
    let subjects: Vec<(String, usize)> = bucket
        .stream
        .info_with_subjects(format!("{}>", bucket.prefix))
        .await
        .with_context(|| format!("cannot list the keys of {}", bucket.name))?
        .try_collect()
        .await
        .with_context(|| format!("cannot list the keys of {}", bucket.name))?;
    let keys = subjects.into_iter().filter_map(|(subject, _)| {
        subject
            .strip_prefix(bucket.prefix.as_str())
            .map(str::to_owned)
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_watch_may_be_quiet_three_beats_and_longer_when_idle() {
        assert_eq!(
            beats_silence(Some(Duration::from_secs(5))),
            Duration::from_secs(15)
        );
        assert_eq!(
            beats_silence(Some(Duration::from_millis(100))),
            BEATS_SILENCE_MIN
        );
        assert_eq!(beats_silence(None), BEATS_SILENCE_IDLE);
        // Reopened before a worker beating every 5 s is lost (5 missed beats, 27.5 s).
        assert!(beats_silence(Some(Duration::from_secs(5))) < Duration::from_millis(27_500));
    }

    #[test]
    fn the_demand_watch_may_be_quiet_a_third_of_the_stale_age() {
        assert_eq!(
            demand_silence(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            demand_silence(Duration::from_secs(1)),
            Duration::from_secs(2)
        );
    }
}
