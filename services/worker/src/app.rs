//! The worker service: heartbeat, assignment watch, one pull loop per assigned queue.
//!
//! Slots are a semaphore of `capacity` permits; a pull asks for at most as many runs as there
//! are free permits, and each run holds its permit until it is acked. Shutdown stops pulling,
//! lets in-flight runs finish within the grace period, gives back the rest, and deletes the
//! heartbeat key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, AckKind};
use chrono::Utc;
use faro_shared::domain::QueueName;
use faro_shared::follow::Follow;
use faro_shared::messages::{
    Assignment, Heartbeat, LoadSources, Request, WorkerCancel, WorkerCancelReply, WorkerSettings,
};
use faro_shared::service::{self, Spec};
use faro_shared::{nats, Namespace, VERSION};
use futures::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cancel::Cancels;
use crate::config::Config;
use crate::execute::Executor;
use crate::load;
use crate::metrics as m;
use crate::sampler::{self, Sampler};

/// How often CPU and memory are read.
const LOAD_INTERVAL: Duration = Duration::from_secs(1);

struct Worker {
    config: Config,
    /// The hot settings of the latest assignment.
    settings: std::sync::RwLock<WorkerSettings>,
    /// The latest CPU and memory readings, and why admission is closed (if it is).
    load: std::sync::Mutex<LoadReading>,
    /// Open (true) while the worker takes new runs.
    admission: watch::Sender<bool>,
    /// Whether its latest heartbeat was stored. A worker that cannot write to JetStream (its
    /// NATS node lost the streams while a cluster node died) takes no runs it could not
    /// report: they go to workers that can.
    bus_ok: std::sync::atomic::AtomicBool,
    js: jetstream::Context,
    ns: Namespace,
    slots: Arc<Semaphore>,
    runs: TaskTracker,
    /// Runs received and not yet finished.
    executing: AtomicU32,
    executor: Executor,
    started_at: chrono::DateTime<Utc>,
}

impl Worker {
    /// Runs executing now (not slots merely reserved by an open pull).
    fn in_progress(&self) -> u32 {
        self.executing.load(Ordering::Relaxed)
    }

    fn heartbeat(&self) -> Heartbeat {
        let in_progress = self.in_progress();
        let capacity = self.config.capacity;
        let reading = self
            .load
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Heartbeat {
            worker_id: self.config.worker_id.clone(),
            pool: self.config.pool.clone(),
            capacity,
            kinds: self.config.kinds.clone(),
            in_progress,
            cpu_percent: reading.cpu,
            mem_percent: reading.mem,
            load_source: reading.source,
            load_score: load::load_score(in_progress, capacity, reading.cpu, reading.mem),
            state: load::state(in_progress, capacity, reading.closed.is_some()),
            admission_closed: reading.closed,
            runs: self.executor.outcomes(),
            interval_ms: u32::try_from(self.config.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            version: VERSION.to_owned(),
            started_at: self.started_at,
            sent_at: Utc::now(),
        }
    }
}

/// Runs the worker until `shutdown` is cancelled or one of its loops fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let connection = format!("faro-worker-{}", config.worker_id);
    let spec = Spec::new("worker", &config.common, m::METRICS).connection(&connection);
    let Some(mut service) = service::start(spec, &shutdown).await? else {
        return Ok(());
    };
    let (client, js, ns) = (
        service.client.clone(),
        service.js.clone(),
        service.ns.clone(),
    );
    let topology = service.topology.clone();

    let journal = match &config.journal {
        None => crate::journal::Journal::default(),
        Some(path) => {
            let journal = crate::journal::Journal::open(path).with_context(|| {
                format!(
                    "cannot open FARO_WORKER_JOURNAL={}: expected a file the worker may append to",
                    path.display()
                )
            })?;
            tracing::info!(path = %path.display(), "every execution's start and end is journaled");
            journal
        }
    };
    let abort = CancellationToken::new();
    let worker = Arc::new(Worker {
        settings: std::sync::RwLock::default(),
        load: std::sync::Mutex::default(),
        admission: watch::Sender::new(true),
        bus_ok: std::sync::atomic::AtomicBool::new(true),
        slots: Arc::new(Semaphore::new(config.capacity as usize)),
        runs: TaskTracker::new(),
        executing: AtomicU32::new(0),
        executor: Executor {
            js: js.clone(),
            ns: ns.clone(),
            worker_id: config.worker_id.clone(),
            abort: abort.clone(),
            cancels: Arc::new(Cancels::default()),
            outcomes: Arc::default(),
            journal: Arc::new(journal),
            leases: topology.leases.clone(),
            exec: Arc::new(config.exec.clone()),
            snmp: Arc::new(crate::snmp::Poller::new(
                config.unreachable_after,
                config.unreachable_delay,
            )),
        },
        started_at: Utc::now(),
        js,
        ns,
        config,
    });
    let key = worker.config.worker_id.to_string();
    put_heartbeat(&worker, &topology.workers).await?;
    tracing::info!(worker = %key, pool = %worker.config.pool, capacity = worker.config.capacity, "worker announced");

    let mut supervisor = service.supervisor();
    supervisor.spawn(
        "heartbeat",
        heartbeat_loop(worker.clone(), topology.workers.clone(), shutdown.clone()),
    );
    supervisor.spawn(
        "assignment",
        assignment_loop(
            worker.clone(),
            topology.assignments.clone(),
            shutdown.clone(),
        ),
    );
    supervisor.spawn(
        "cancel",
        cancel_loop(worker.clone(), client, shutdown.clone()),
    );
    supervisor.spawn("load", load_loop(worker.clone(), shutdown.clone()));
    let stopped = service.serve(supervisor, Duration::from_secs(10)).await;

    // Pulling has stopped; let in-flight runs finish, then give back what is left.
    worker.runs.close();
    let grace = worker.config.shutdown_grace;
    if tokio::time::timeout(grace, worker.runs.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_progress = worker.in_progress(),
            "grace period over; giving runs back"
        );
        abort.cancel();
        worker.runs.wait().await;
    }
    if let Err(error) = topology.workers.delete(&key).await {
        tracing::warn!(%error, "cannot delete the heartbeat key; it will expire");
    }
    tracing::info!(worker = %key, "worker left");
    stopped
}

/// What the load loop last read.
#[derive(Debug, Clone, Default)]
struct LoadReading {
    cpu: Option<f32>,
    mem: Option<f32>,
    source: LoadSources,
    closed: Option<String>,
}

/// Reads CPU and memory every second (of the worker's cgroup where it limits them, else of the
/// machine); closes admission above `worker.cpu_max` or `worker.mem_max` and opens it again
/// below them.
async fn load_loop(worker: Arc<Worker>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut sampler = Sampler::new();
    let mut tick = tokio::time::interval(LOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let sampler::Reading { cpu, mem, source } = sampler.sample();
        let limits = worker
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let closed = if worker.bus_ok.load(Ordering::Relaxed) {
            load::closed_by(cpu, mem, &limits)
        } else {
            Some("its heartbeat could not be stored in NATS".to_owned())
        };
        if let Some(cpu) = cpu {
            metrics::gauge!(m::CPU_PERCENT).set(f64::from(cpu));
        }
        if let Some(mem) = mem {
            metrics::gauge!(m::MEM_PERCENT).set(f64::from(mem));
        }
        worker.admission.send_if_modified(|open| {
            let now_open = closed.is_none();
            if *open == now_open {
                return false;
            }
            match &closed {
                Some(why) => tracing::warn!(reason = %why, "admission closed: no new runs"),
                None => tracing::info!("admission open again"),
            }
            metrics::gauge!(m::ADMISSION_CLOSED).set(if now_open { 0.0 } else { 1.0 });
            *open = now_open;
            true
        });
        let reading = LoadReading {
            cpu,
            mem,
            source,
            closed,
        };
        *worker
            .load
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reading;
    }
}

/// Applies the hot settings sent with an assignment.
fn apply_settings(worker: &Worker, settings: WorkerSettings) {
    faro_shared::telemetry::follow_log_level(settings.log_level.as_deref());
    let mut current = worker
        .settings
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if (current.cpu_max, current.mem_max) != (settings.cpu_max, settings.mem_max) {
        tracing::info!(
            cpu_max = settings.cpu_max,
            mem_max = settings.mem_max,
            "load limits changed"
        );
    }
    *current = settings;
}

async fn put_heartbeat(worker: &Worker, bucket: &kv::Store) -> anyhow::Result<()> {
    let beat = serde_json::to_vec(&worker.heartbeat())?;
    bucket
        .put(worker.config.worker_id.as_str(), beat.into())
        .await
        .context("cannot write the heartbeat")?;
    Ok(())
}

async fn heartbeat_loop(
    worker: Arc<Worker>,
    bucket: kv::Store,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(worker.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let beat = put_heartbeat(&worker, &bucket).await;
        worker.bus_ok.store(beat.is_ok(), Ordering::Relaxed);
        match beat {
            Ok(()) => metrics::counter!(m::HEARTBEATS, "result" => "ok").increment(1),
            Err(error) => {
                // A missed beat is the balancer's business; keep trying.
                tracing::warn!(
                    error = faro_shared::pg::error_text(&error),
                    "heartbeat failed"
                );
                metrics::counter!(m::HEARTBEATS, "result" => "failed").increment(1);
            }
        }
    }
}

/// Answers the dispatcher's cancel broadcasts: stops the attempt if it executes here (and
/// says so), or remembers it so a later pull skips it.
async fn cancel_loop(
    worker: Arc<Worker>,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut requests = client
        .subscribe(WorkerCancel::subject(&worker.ns))
        .await
        .context("cannot listen for cancels")?;
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            request = requests.next() => request,
        };
        let Some(request) = request else {
            anyhow::bail!("the cancel subscription ended");
        };
        let cancel = match WorkerCancel::decode(&request.payload) {
            Ok(cancel) => cancel,
            Err(error) => {
                tracing::warn!(%error, "malformed cancel request ignored");
                continue;
            }
        };
        let running = worker
            .executor
            .cancels
            .request(cancel.run_id, cancel.attempt);
        tracing::info!(run.id = %cancel.run_id, attempt = cancel.attempt, running, "cancel requested");
        if let (true, Some(reply)) = (running, request.reply) {
            let body = serde_json::to_vec(&WorkerCancelReply {
                worker_id: worker.config.worker_id.clone(),
            })?;
            if let Err(error) = client.publish(reply, body.into()).await {
                tracing::warn!(%error, "cannot answer a cancel");
            }
        }
    }
}

/// How often a worker reads its assignment key itself, to catch a change its watch missed
/// (a watch can die without a word when a NATS node dies; see `faro_shared::follow`).
const ASSIGNMENT_CHECK: Duration = Duration::from_secs(10);

/// Assignment-watch silence after which it is opened again anyway: assignments change
/// rarely, so this is long; [`ASSIGNMENT_CHECK`] finds a dead watch sooner.
const ASSIGNMENT_SILENCE: Duration = Duration::from_secs(300);

/// Follows this worker's key in the assignments bucket, starting and stopping pull loops.
async fn assignment_loop(
    worker: Arc<Worker>,
    bucket: kv::Store,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let key = worker.config.worker_id.to_string();
    let (watched, watched_key) = (bucket.clone(), key.clone());
    let mut follow = Follow::open("assignment watch", move || {
        let (bucket, key) = (watched.clone(), watched_key.clone());
        async move {
            bucket
                .watch_with_history(key)
                .await
                .context("cannot watch the assignment")
        }
    })
    .await?;
    let mut check = tokio::time::interval_at(
        tokio::time::Instant::now() + ASSIGNMENT_CHECK,
        ASSIGNMENT_CHECK,
    );
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The revision of the latest entry acted on: a reopened watch replays it.
    let mut seen: Option<u64> = None;
    let mut loops: HashMap<QueueName, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    let result = loop {
        let entry = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            entry = follow.next(ASSIGNMENT_SILENCE) => entry,
            _ = check.tick() => match bucket.entry(&key).await {
                Ok(Some(entry)) if seen.is_none_or(|seen| entry.revision > seen) => {
                    tracing::warn!(
                        revision = entry.revision,
                        "the assignment watch missed a change; following it again"
                    );
                    follow.restart();
                    entry
                }
                Ok(_) => continue,
                Err(error) => {
                    tracing::debug!(%error, "cannot read the assignment");
                    continue;
                }
            },
        };
        if seen.is_some_and(|seen| entry.revision <= seen) {
            continue;
        }
        seen = Some(entry.revision);
        let queues: Vec<QueueName> = match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Assignment>(&entry.value) {
                Ok(assignment) => {
                    apply_settings(&worker, assignment.settings);
                    assignment.queues
                }
                Err(error) => {
                    tracing::warn!(%error, "malformed assignment ignored");
                    continue;
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => Vec::new(),
        };
        loops.retain(|queue, (stop, _)| {
            let keep = queues.contains(queue);
            if !keep {
                tracing::info!(%queue, "queue unassigned; stop pulling");
                stop.cancel();
            }
            keep
        });
        for queue in queues {
            if loops.contains_key(&queue) {
                continue;
            }
            tracing::info!(%queue, "queue assigned; start pulling");
            let stop = shutdown.child_token();
            let task = tokio::spawn(pull_loop(worker.clone(), queue.clone(), stop.clone()));
            loops.insert(queue, (stop, task));
        }
    };
    for (_, (stop, task)) in loops.drain() {
        stop.cancel();
        let _ = task.await;
    }
    result
}

/// How soon a worker assigned to a queue without a consumer looks for it again: at first, then
/// twice as long each time, up to [`CONSUMER_POLL_MAX`] (many idle workers must not load the
/// JetStream API).
const CONSUMER_POLL_FIRST: Duration = Duration::from_millis(250);
const CONSUMER_POLL_MAX: Duration = Duration::from_secs(4);

/// Pulls runs of one queue while it is assigned, never more than the free slots.
async fn pull_loop(worker: Arc<Worker>, queue: QueueName, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    // The dispatcher declares a queue's consumer before its first run: a worker assigned to
    // a queue whose runs all still wait (their targets' slots taken) waits for it.
    let mut said_waiting = false;
    let mut waiting = CONSUMER_POLL_FIRST / 2;
    let consumer = loop {
        let pause = match nats::bind_queue_consumer(&worker.js, &worker.ns, &queue).await {
            Ok(Some(consumer)) => break consumer,
            Ok(None) => {
                if !said_waiting {
                    tracing::info!(%queue, "the queue has no consumer yet (no run published to it); waiting for one");
                    said_waiting = true;
                }
                waiting = (waiting * 2).min(CONSUMER_POLL_MAX);
                waiting
            }
            Err(error) => {
                tracing::warn!(%queue, error = faro_shared::pg::error_text(&error), "cannot open the queue's consumer; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                backoff
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    };
    let mut admission = worker.admission.subscribe();
    loop {
        // Over its load limits, the worker pulls nothing until they are met again.
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            open = admission.wait_for(|open| *open) => if open.is_err() { return },
        }
        // Stopping wins over a free slot: a run given back at shutdown frees a slot, and
        // pulling again would take that run back only to give it back again.
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            permit = worker.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let mut permits = vec![first];
        while let Ok(permit) = worker.slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(worker.config.fetch_expiry)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%queue, %error, "pull failed; retrying");
                drop(permits);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Drain the pull to its end; after `stop`, whatever still arrives is given back at once,
        // and the drain lasts at most one fetch expiry more.
        let expiry = worker.config.fetch_expiry;
        let drain_deadline = async {
            stop.cancelled().await;
            tokio::time::sleep(expiry).await;
        };
        tokio::pin!(drain_deadline);
        let mut interrupted = false;
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = &mut drain_deadline => None,
            };
            let Some(message) = next else { break };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%queue, %error, "pull interrupted");
                    interrupted = true;
                    break;
                }
            };
            backoff = Duration::from_millis(100);
            // Stopped, or over the load limits since the pull began: given back, at once the
            // first time (another worker may take it), later after a growing pause.
            let permit = match permits.pop() {
                Some(permit) if !stop.is_cancelled() && *admission.borrow() => permit,
                _ => {
                    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
                    let delay = nats::give_back_delay(delivered);
                    let nak = AckKind::Nak((!delay.is_zero()).then_some(delay));
                    let _ = message.ack_with(nak).await;
                    continue;
                }
            };
            let executing = worker.clone();
            executing.executing.fetch_add(1, Ordering::Relaxed);
            worker.runs.spawn(async move {
                executing.executor.handle(message).await;
                executing.executing.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
        // A pull the server refused at once (no consumer leader while a NATS node is down,
        // 503) is asked again after a pause that grows until a run arrives: asked again at
        // once, it spun tens of thousands of times a minute and starved the machine.
        if interrupted {
            drop(permits);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
