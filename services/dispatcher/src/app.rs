//! The dispatcher service: its loops over submissions, results and API requests.
//!
//! Each loop fetches, calls a pure planner or a store function, and acts; one bad message is
//! refused and recorded without stopping its loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use deadpool_postgres::Pool;
use faro_shared::http::{self, Health};
use faro_shared::jobfile;
use faro_shared::messages::RunMessage;
use faro_shared::messages::{
    CancelReply, CancelRequest, CancelState, ExplainReply, ExplainRequest, JobReply, JobRequest,
    RunResult, SubmissionQuery, TargetReply, TargetRequest, TargetView, WorkerCancel,
    WorkerCancelReply,
};
use faro_shared::nats::Retry;
use faro_shared::shutdown::{unless_cancelled, Supervisor};
use faro_shared::targetfile::Snmp;
use faro_shared::{nats, pg, Namespace};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{mpsc, Notify, RwLock};

use crate::admission::{Admission, Limits, SlotChange};
use crate::chains::{Chains, Child};
use crate::deadlines::Deadlines;
use crate::leader::Election;
use crate::scheduler::{Fire, JobDef, Recurring, Scheduler};
use crate::slot_leases::SlotLeases;
use crate::{explain, schedule};
use faro_shared::domain::{JobId, TargetId};
use faro_shared::domain::{Outcome, WorkerId};
use faro_shared::jobfile::JobFileError;
use faro_shared::settings::{ConfigReply, ConfigRequest, Setting};
use faro_shared::snmp::{Device, ValuesChunk};
use tokio_util::sync::CancellationToken;

use crate::bus;
use crate::catalog;
use crate::config::Config;
use crate::metrics as m;
use crate::plan::plan_submission;
use crate::store::{self, Recorded};
use crate::values;

/// Durable consumer name of the dispatcher on the submit and results streams.
const DURABLE: &str = "dispatcher";

struct Dispatcher {
    pool: Pool,
    client: async_nats::Client,
    js: jetstream::Context,
    ns: Namespace,
    config: Config,
    /// Woken when a retry is scheduled, so the retries loop can re-plan its timer.
    retries_changed: Notify,
    /// Slots of every target: what may be published now, what waits.
    admission: Mutex<Admission>,
    /// Target slots taken and freed, for the slot leases in KV.
    slot_changes: mpsc::UnboundedSender<Vec<SlotChange>>,
    /// Admitted runs on their way to the publisher task.
    publisher: mpsc::UnboundedSender<Vec<RunMessage>>,
    /// New recurring definitions and ended runs, for the scheduler task.
    schedule: mpsc::UnboundedSender<ScheduleEvent>,
    /// Chained jobs by parent; read on every result batch, written on new definitions.
    chains: RwLock<Chains>,
    /// Deadlines of the attempts in flight.
    deadlines: Mutex<Deadlines>,
    /// Woken when a deadline is added, so the deadline loop can re-plan its timer.
    deadlines_changed: Notify,
    /// Runs cancelled by an operator: never offered or published again.
    cancelled: Mutex<Cancelled>,
    /// The slot of each recurring run fired and not yet published, for the schedule lag.
    slot_times: Mutex<SlotTimes>,
    /// Held from reading the settings to applying them, and from storing a changed setting to
    /// applying it: a reload that read before a change never applies after it.
    settings: tokio::sync::Mutex<()>,
    /// Address and credentials of each target, attached to the SNMP runs published.
    devices: std::sync::RwLock<Arc<HashMap<TargetId, Device>>>,
    /// `snmp.test_mode`: SNMP runs are published to be simulated.
    snmp_test_mode: std::sync::atomic::AtomicBool,
}

/// Recurring runs fired and not yet published, with their slot.
type SlotTimes = HashMap<uuid::Uuid, chrono::DateTime<chrono::Utc>>;

/// The most recent cancelled runs, bounded.
#[derive(Debug, Default)]
struct Cancelled {
    ids: std::collections::HashSet<uuid::Uuid>,
    order: std::collections::VecDeque<uuid::Uuid>,
}

impl Cancelled {
    const KEPT: usize = 100_000;

    fn insert(&mut self, run: uuid::Uuid) {
        if self.ids.insert(run) {
            self.order.push_back(run);
        }
        while self.order.len() > Self::KEPT {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// What the scheduler task learns from the other loops.
#[derive(Debug)]
enum ScheduleEvent {
    Define(Vec<Recurring>),
    /// Jobs no longer recurring: disabled, or redefined as chained or one-shot.
    Remove(Vec<JobId>),
    Ended(Vec<(JobId, uuid::Uuid)>),
}

impl Dispatcher {
    fn deadlines(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long after its publication an attempt must have a result: timeout plus grace.
    fn deadline_after(&self, run: &RunMessage) -> chrono::Duration {
        let timeout = run
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.config.run_timeout);
        chrono::Duration::from_std(timeout + self.config.run_timeout_grace)
            .unwrap_or_else(|_| chrono::Duration::days(1))
    }

    /// Drops the runs an operator cancelled.
    fn cancelled(&self) -> std::sync::MutexGuard<'_, Cancelled> {
        self.cancelled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn not_cancelled(&self, runs: &mut Vec<RunMessage>) -> Vec<RunMessage> {
        let cancelled = self.cancelled();
        if cancelled.ids.is_empty() {
            return Vec::new();
        }
        let (dropped, kept) = std::mem::take(runs)
            .into_iter()
            .partition(|r| cancelled.ids.contains(&r.run_id));
        *runs = kept;
        dropped
    }

    fn slot_times(&self) -> std::sync::MutexGuard<'_, SlotTimes> {
        self.slot_times
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The admission state, locked; whatever slots change while it is held are written to
    /// the slot leases when the lock is let go.
    fn admission(&self) -> AdmissionGuard<'_> {
        // A panic while holding the lock leaves counts that are still consistent enough to
        // go on with; the next restart rebuilds them from PostgreSQL.
        AdmissionGuard {
            guard: self
                .admission
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            slot_changes: &self.slot_changes,
        }
    }
}

/// The locked admission state; on unlock its slot changes go to the slot lease writer.
struct AdmissionGuard<'a> {
    guard: std::sync::MutexGuard<'a, Admission>,
    slot_changes: &'a mpsc::UnboundedSender<Vec<SlotChange>>,
}

impl std::ops::Deref for AdmissionGuard<'_> {
    type Target = Admission;
    fn deref(&self) -> &Admission {
        &self.guard
    }
}

impl std::ops::DerefMut for AdmissionGuard<'_> {
    fn deref_mut(&mut self) -> &mut Admission {
        &mut self.guard
    }
}

impl Drop for AdmissionGuard<'_> {
    fn drop(&mut self) {
        let changes = self.guard.take_changes();
        // Sent under the lock, so the writer sees the changes in the order they were made.
        if !changes.is_empty() {
            let _ = self.slot_changes.send(changes);
        }
    }
}

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
    http::recorder().describe(m::METRICS);
    let health = Health::default();
    let stop_http = shutdown.child_token();
    let (_, http_task) =
        http::serve(config.common.http_addr, health.clone(), stop_http.clone()).await?;
    let ns = config.common.namespace.clone();

    let start = async {
        pg::migrate(&config.pg).await?;
        let pool = pg::pool(&config.pg)?;
        let client = nats::connect(&config.common.nats, "faro-dispatcher", Retry::Forever).await?;
        let js = nats::jetstream(client.clone());
        let topology = nats::ensure_topology(&js, &ns, &config.topology).await?;
        anyhow::Ok((pool, client, js, topology))
    };
    let Some((pool, client, js, topology)) = unless_cancelled(&shutdown, start).await? else {
        return Ok(());
    };
    let election = Election {
        js: js.clone(),
        store: topology.leases.clone(),
        bucket: ns.leases_bucket(),
        instance: config.instance.clone(),
        ttl: config.leader_lease_ttl,
    };
    // A standby is healthy: it is ready to take over.
    health.set_ready(true);
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
        bus::publish_event(
            &js,
            &ns,
            "dispatcher",
            &serde_json::json!({"type": "leader_elected", "instance": instance}),
        )
        .await;
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
                        error = format!("{error:#}"),
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
                        error = format!("{error:#}"),
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
    stop_http.cancel();
    http_task.await.context("metrics server panicked")?;
    outcome
}

/// How long a new leader may take to open its consumers and read its state before it gives
/// the lease up and tries again.
const LEAD_START_TIMEOUT: Duration = Duration::from_secs(30);

/// What a new leader rebuilds from PostgreSQL: admission (limits, settings, slots of the runs
/// in flight), their deadlines, the slot changes to write, the chains.
async fn restore(
    pool: &Pool,
    config: &Config,
) -> anyhow::Result<(Admission, Deadlines, Vec<SlotChange>, Chains)> {
    // Slots held by runs already in flight, from before a restart.
    let mut admission = Admission::new(Limits {
        default: config.target_max_concurrency,
        per_target: store::target_limits(pool).await?,
        queue_defined: store::queue_limits(pool).await?,
        queue_set: HashMap::new(),
        disabled: catalog::disabled_targets(pool).await?,
    });
    // Hot settings in force before the first run is offered.
    for setting in store::settings(pool).await? {
        apply_to(&mut admission, &setting);
    }
    // Attempts in flight before a restart keep their slots and are watched for a deadline
    // from when they were published.
    let mut deadlines = Deadlines::default();
    for (run, published) in store::in_flight_runs(pool).await? {
        admission.restore_in_flight(
            run.target.clone(),
            run.queue.clone(),
            run.run_id,
            run.attempt,
            run.timeout_ms,
        );
        let timeout = run
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(config.run_timeout)
            + config.run_timeout_grace;
        let deadline = published + chrono::Duration::from_std(timeout).unwrap_or_default();
        deadlines.track(run, deadline);
    }
    let restored_slots = admission.take_changes();
    let mut chains = Chains::default();
    for (parent, child) in store::chained_jobs(pool).await? {
        chains.define(parent, child);
    }
    Ok((admission, deadlines, restored_slots, chains))
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
        let submissions = nats::ensure_service_consumer(
            js,
            &ns.submit_stream(),
            DURABLE,
            vec![ns.submit_subject()],
        )
        .await?;
        let results = nats::ensure_service_consumer(
            js,
            &ns.results_stream(),
            DURABLE,
            vec![ns.results_wildcard(), ns.values_wildcard()],
        )
        .await?;
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
    let Some((submissions, results, leases)) = unless_cancelled(&leading, consumers).await? else {
        return Ok(());
    };
    let (admission, deadlines, restored_slots, chains) =
        tokio::time::timeout(LEAD_START_TIMEOUT, restore(&pool, &config))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the leader's state was not read from PostgreSQL within {} s",
                    LEAD_START_TIMEOUT.as_secs()
                )
            })??;
    let grace = config.shutdown_grace;
    let (publisher_tx, publisher_rx) = mpsc::unbounded_channel();
    let (schedule_tx, schedule_rx) = mpsc::unbounded_channel();
    let (slots_tx, slots_rx) = mpsc::unbounded_channel();
    let slot_leases = SlotLeases {
        // A context of its own: its unconfirmed writes never take the ack permits that the
        // publisher of runs needs.
        js: nats::jetstream(client.clone()),
        store: leases,
        bucket: ns.leases_bucket(),
        holder: config.instance.clone(),
        default_timeout: config.run_timeout,
        grace: config.run_timeout_grace,
    };
    let dispatcher = Arc::new(Dispatcher {
        pool,
        client: client.clone(),
        js: js.clone(),
        ns,
        config,
        retries_changed: Notify::new(),
        admission: Mutex::new(admission),
        slot_changes: slots_tx,
        publisher: publisher_tx,
        schedule: schedule_tx,
        chains: RwLock::new(chains),
        deadlines: Mutex::new(deadlines),
        deadlines_changed: Notify::new(),
        cancelled: Mutex::new(Cancelled::default()),
        slot_times: Mutex::default(),
        settings: tokio::sync::Mutex::new(()),
        devices: std::sync::RwLock::default(),
        snmp_test_mode: std::sync::atomic::AtomicBool::new(false),
    });
    let shutdown = leading;
    let mut supervisor = Supervisor::new("dispatcher", shutdown.clone());
    supervisor.spawn(
        "slot leases",
        slot_leases.run(restored_slots, slots_rx, shutdown.clone()),
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
        "api",
        api_loop(dispatcher, client.clone(), shutdown.clone()),
    );
    tracing::info!("dispatcher leading");
    supervisor.wait(grace).await
}

async fn submissions_loop(
    d: Arc<Dispatcher>,
    consumer: PullConsumer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Runs recorded before a crash but never published go out first.
    publish_outbox(&d, None).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(16)
        .messages()
        .await
        .context("cannot pull submissions")?;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                tracing::warn!(%error, "submission pull failed; retrying");
                continue;
            }
            None => anyhow::bail!("the submission stream ended"),
        };
        count_redelivery(&message, "submit");
        let ack = match handle_submission(&d, &message).await {
            Ok(ack) => ack,
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot process a submission; it will be retried"
                );
                AckKind::Nak(Some(Duration::from_secs(2)))
            }
        };
        if let Err(error) = message.ack_with(ack).await {
            tracing::warn!(%error, "cannot acknowledge a submission");
        }
    }
}

/// Counts a message JetStream delivers again: its earlier delivery was not acknowledged in
/// time (a dispatcher failed over) or was given back (recording failed).
fn count_redelivery(message: &jetstream::Message, stream: &'static str) {
    if message.info().is_ok_and(|info| info.delivered > 1) {
        metrics::counter!(m::REDELIVERIES, "stream" => stream).increment(1);
    }
}

/// The id that deduplicates a submission: its `Nats-Msg-Id`, or its stream sequence.
fn submission_id(message: &jetstream::Message) -> String {
    let header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    header.unwrap_or_else(|| match message.info() {
        Ok(info) => format!("seq-{}", info.stream_sequence),
        Err(_) => format!("anon-{}", uuid::Uuid::now_v7()),
    })
}

async fn handle_submission(
    d: &Dispatcher,
    message: &jetstream::Message,
) -> anyhow::Result<AckKind> {
    let id = submission_id(message);
    let submission = match jobfile::parse(&message.payload) {
        Ok(submission) => submission,
        Err(error) => return Ok(reject(d, &id, error).await),
    };
    let runs = plan_submission(&submission);
    // Chains must stay acyclic, counting the chains already defined.
    let edges: Vec<(JobId, JobId)> = runs
        .iter()
        .filter_map(|r| Some((r.message.job_id.clone(), r.after.clone()?)))
        .collect();
    if let Err(cycle) = d.chains.read().await.check(&edges) {
        let index = runs.iter().position(|r| r.message.job_id == cycle.job);
        return Ok(reject(
            d,
            &id,
            JobFileError::in_job_field(index, "after", cycle.to_string()),
        )
        .await);
    }
    match store::record_submission(&d.pool, &id, submission.submitted_at, &runs).await? {
        Recorded::New => {
            let mut once = Vec::new();
            let mut recurring = Vec::new();
            let mut not_recurring = Vec::new();
            let mut chains = d.chains.write().await;
            for run in runs {
                // A job redefined from recurring to chained (or back) leaves its old role.
                if run.is_definition() && run.interval.is_none() {
                    not_recurring.push(run.message.job_id.clone());
                }
                if run.after.is_none() {
                    chains.remove(&run.message.job_id);
                }
                let def = JobDef {
                    interval: run.interval.map(|i| i.get()).unwrap_or_default(),
                    template: run.message.clone(),
                    max_attempts: run.max_attempts,
                    retry_on: run.retry_on.clone(),
                    last_slot: None,
                    overlap: run.overlap,
                };
                match (&run.interval, &run.after) {
                    (Some(_), _) => recurring.push(def.recurring()),
                    (None, Some(parent)) => chains.define(
                        parent.clone(),
                        Child {
                            def,
                            run_if: run.run_if,
                        },
                    ),
                    (None, None) => once.push(run.message),
                }
            }
            drop(chains);
            if !not_recurring.is_empty() {
                let _ = d.schedule.send(ScheduleEvent::Remove(not_recurring));
            }
            if !recurring.is_empty() {
                let _ = d.schedule.send(ScheduleEvent::Define(recurring));
            }
            let count = once.len();
            dispatch(d, once);
            metrics::counter!(m::SUBMISSIONS, "outcome" => "accepted").increment(1);
            tracing::debug!(submission = %id, runs = count, "submission accepted");
        }
        Recorded::Duplicate => {
            // Seen before; publish whatever a crash left unpublished.
            publish_outbox(d, Some(&id)).await?;
            metrics::counter!(m::SUBMISSIONS, "outcome" => "duplicate").increment(1);
            tracing::info!(submission = %id, "duplicate submission ignored");
        }
        Recorded::MissingParents(missing) => {
            let index = runs.iter().position(|r| {
                r.after
                    .as_ref()
                    .is_some_and(|p| missing.iter().any(|m| m == p.as_str()))
            });
            let problem = format!(
                "after names jobs that do not exist: {}; expected the id of a job in this submission or already defined",
                missing.join(", ")
            );
            return Ok(reject(d, &id, JobFileError::in_job_field(index, "after", problem)).await);
        }
    }
    Ok(AckKind::Ack)
}

/// Refuses a whole submission: logged, counted, and published on `faro.events.dispatcher`
/// with the job index and field, so the submitter can see why.
async fn reject(d: &Dispatcher, id: &str, error: JobFileError) -> AckKind {
    tracing::warn!(submission = %id, job = ?error.job, field = ?error.field, problem = %error.problem, "submission rejected");
    metrics::counter!(m::SUBMISSIONS, "outcome" => "rejected").increment(1);
    bus::publish_event(
        &d.js,
        &d.ns,
        "dispatcher",
        &serde_json::json!({"type": "submission_rejected", "submission_id": id, "error": error}),
    )
    .await;
    AckKind::Term
}

/// Offers runs to admission; those whose target has a free slot go to the publisher, the
/// others wait in the outbox until a run of their target ends.
fn dispatch(d: &Dispatcher, mut runs: Vec<RunMessage>) {
    d.not_cancelled(&mut runs);
    let admitted = d.admission().offer(runs);
    publish_admitted(d, admitted);
}

/// Hands admitted runs to the publisher task (they hold their slots already).
fn publish_admitted(d: &Dispatcher, admitted: Vec<RunMessage>) {
    gauge_waiting(d);
    if !admitted.is_empty() && d.publisher.send(admitted).is_err() {
        // Only when the service is stopping: the runs stay in the outbox for the next start.
        tracing::info!("publisher stopped; admitted runs stay in the outbox");
    }
}

/// Sets the waiting gauge, one series per reason.
fn gauge_waiting(d: &Dispatcher) {
    let counts = d.admission().waiting_by_reason();
    for (reason, runs) in counts.labelled() {
        metrics::gauge!(m::RUNS_WAITING, "reason" => reason).set(runs as f64);
    }
}

/// Publishes admitted runs as they come, coalescing what is queued, and retries until
/// JetStream has stored them: an admitted run holds its slot until it is published.
async fn publisher_loop(
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
        let now = chrono::Utc::now();
        {
            let mut deadlines = d.deadlines();
            for run in &batch {
                deadlines.track(run.clone(), now + d.deadline_after(run));
            }
            metrics::gauge!(m::RUNS_WATCHED).set(deadlines.len() as f64);
        }
        d.deadlines_changed.notify_one();
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = publish_and_mark(&d, &batch).await {
            tracing::warn!(
                error = format!("{error:#}"),
                runs = batch.len(),
                "cannot publish admitted runs; retrying"
            );
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

async fn publish_and_mark(
    d: &Dispatcher,
    runs: &[faro_shared::messages::RunMessage],
) -> anyhow::Result<()> {
    let devices = d
        .devices
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let test_mode = d.snmp_test_mode.load(std::sync::atomic::Ordering::Relaxed);
    match bus::with_devices(runs, &devices, test_mode) {
        Some(polls) => bus::publish_runs(&d.js, &d.ns, &polls).await?,
        None => bus::publish_runs(&d.js, &d.ns, runs).await?,
    };
    record_schedule_lag(d, runs);
    let published: Vec<_> = runs.iter().map(|r| (r.run_id, r.attempt)).collect();
    store::mark_published(&d.pool, &published).await?;
    for run in runs {
        metrics::counter!(m::RUNS_DISPATCHED, "queue" => run.queue.to_string()).increment(1);
    }
    Ok(())
}

/// Records how late each recurring run among `runs`, just stored in its queue's stream, went
/// out after its slot. Once per run: a republish finds its slot gone.
fn record_schedule_lag(d: &Dispatcher, runs: &[RunMessage]) {
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
async fn publish_outbox(d: &Dispatcher, submission: Option<&str>) -> anyhow::Result<()> {
    let runs = store::unpublished_runs(&d.pool, submission, i64::MAX).await?;
    if !runs.is_empty() {
        tracing::info!(runs = runs.len(), "offering runs waiting in the outbox");
        dispatch(d, runs);
    }
    Ok(())
}

/// Fires recurring jobs: sleeps until the earliest planned slot (a timer, not a polling loop),
/// records what is due, and dispatches it. A slot whose job is still running is recorded as
/// skipped.
async fn scheduler_loop(
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
async fn apply_schedule_event(d: &Dispatcher, scheduler: &mut Scheduler, event: ScheduleEvent) {
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
async fn fire_slots(d: &Dispatcher, scheduler: &mut Scheduler, fires: Vec<Fire>) {
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

/// Publishes each retry when its backoff is over: sleeps until the earliest one is due, or
/// until a new one is scheduled. A database or NATS error is logged and tried again.
async fn retries_loop(d: Arc<Dispatcher>, shutdown: CancellationToken) -> anyhow::Result<()> {
    const IDLE: Duration = Duration::from_secs(60);
    loop {
        let wait = match publish_due_retries(&d).await {
            Ok(next) => next
                .map(|due| (due - chrono::Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(IDLE)
                .min(IDLE),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot publish due retries; trying again"
                );
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = d.retries_changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Publishes every retry that is due; returns when the next one will be.
async fn publish_due_retries(
    d: &Dispatcher,
) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    loop {
        let due = store::take_due_retries(&d.pool, 5_000).await?;
        if due.is_empty() {
            return store::next_retry(&d.pool).await;
        }
        tracing::debug!(runs = due.len(), "offering due retries");
        dispatch(d, due);
    }
}

async fn results_loop(
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
async fn record_batch(d: &Dispatcher, messages: Vec<jetstream::Message>) {
    let values_prefix = format!("{}.values.", d.ns.as_str());
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
async fn apply_results(d: &Dispatcher, results: &[RunResult]) -> anyhow::Result<()> {
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

/// Applies a hot setting to admission; returns the runs it lets start.
fn apply_to(admission: &mut Admission, setting: &Setting) -> Vec<RunMessage> {
    match setting {
        Setting::MaintenanceMode(on) => {
            if admission.is_paused() != *on {
                tracing::warn!(maintenance = on, "maintenance mode changed");
            }
            admission.set_paused(*on)
        }
        Setting::TargetMaxConcurrency(limit) => admission.set_default_limit(*limit),
        Setting::QueueMaxInFlight(queue, limit) => {
            if admission.limits().queue_set.get(queue) != Some(limit) {
                tracing::info!(%queue, limit = ?limit, "queue limit changed");
            }
            admission.set_queue_limit(queue.clone(), *limit)
        }
        Setting::LogLevel(filter) => {
            match faro_shared::telemetry::set_filter(filter) {
                Ok(true) => tracing::warn!(%filter, "log level changed"),
                Ok(false) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "log level refused"),
            }
            Vec::new()
        }
        // The workers' settings (the balancer hands them out with the assignments) and the
        // balancer's own.
        Setting::SnmpTestMode(_)
        | Setting::WorkerCpuMax(_)
        | Setting::WorkerMemMax(_)
        | Setting::StrictIsolation(_)
        | Setting::PreemptionMode(_)
        | Setting::CoolingPeriod(_)
        | Setting::CycleInterval(_) => Vec::new(),
    }
}

/// Applies a hot setting at once.
fn apply_setting(d: &Dispatcher, setting: &Setting) {
    if let Setting::SnmpTestMode(on) = setting {
        let was = d
            .snmp_test_mode
            .swap(*on, std::sync::atomic::Ordering::Relaxed);
        if was != *on {
            tracing::warn!(test_mode = on, "SNMP test mode changed");
        }
    }
    let admitted = apply_to(&mut d.admission(), setting);
    metrics::gauge!(m::MAINTENANCE).set(if d.admission().is_paused() { 1.0 } else { 0.0 });
    publish_admitted(d, admitted);
}

/// Reads the hot settings and the limits of targets and queues every few seconds (another
/// dispatcher, `faro target`, or an operator's SQL may have changed them); a setting removed
/// goes back to its default.
async fn settings_loop(d: Arc<Dispatcher>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(error) = reload_settings(&d).await {
            tracing::warn!(error = format!("{error:#}"), "cannot read settings");
        }
    }
}

async fn reload_settings(d: &Dispatcher) -> anyhow::Result<()> {
    let _serialized = d.settings.lock().await;
    let stored = store::settings(&d.pool).await?;
    let targets = store::target_limits(&d.pool).await?;
    let disabled = catalog::disabled_targets(&d.pool).await?;
    let devices = catalog::devices(&d.pool).await?;
    let queues = store::queue_limits(&d.pool).await?;
    *d.devices
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(devices);
    let maintenance = stored.contains(&Setting::MaintenanceMode(true));
    apply_setting(d, &Setting::MaintenanceMode(maintenance));
    let limit = stored
        .iter()
        .find_map(|s| match s {
            Setting::TargetMaxConcurrency(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(d.config.target_max_concurrency);
    apply_setting(d, &Setting::TargetMaxConcurrency(limit));
    let filter = stored
        .iter()
        .find_map(|s| match s {
            Setting::LogLevel(filter) => Some(filter.clone()),
            _ => None,
        })
        .unwrap_or_else(faro_shared::telemetry::default_filter);
    apply_setting(d, &Setting::LogLevel(filter));
    let test_mode = stored.contains(&Setting::SnmpTestMode(true));
    apply_setting(d, &Setting::SnmpTestMode(test_mode));
    let queue_set = stored
        .iter()
        .filter_map(|s| match s {
            Setting::QueueMaxInFlight(queue, limit) => Some((queue.clone(), *limit)),
            _ => None,
        })
        .collect();
    let admitted = {
        let mut admission = d.admission();
        let mut admitted = admission.set_target_limits(targets);
        admitted.extend(admission.set_disabled(disabled));
        admitted.extend(admission.set_queue_definitions(queues));
        admitted.extend(admission.set_queue_settings(queue_set));
        admitted
    };
    publish_admitted(d, admitted);
    Ok(())
}

/// A result the dispatcher records itself (a timeout, a cancel) for `run`'s attempt.
fn own_result(run: &RunMessage, outcome: Outcome, error: String) -> RunResult {
    let now = chrono::Utc::now();
    RunResult {
        run_id: run.run_id,
        attempt: run.attempt,
        job_id: run.job_id.clone(),
        queue: run.queue.clone(),
        target: run.target.clone(),
        worker_id: WorkerId::parse("dispatcher").expect("a valid worker id"),
        outcome,
        simulated: false,
        started_at: now,
        finished_at: now,
        output: None,
        error: Some(error),
    }
}

/// Records `timed_out` for attempts with no result by their deadline (timeout and grace).
async fn deadlines_loop(d: Arc<Dispatcher>, shutdown: CancellationToken) -> anyhow::Result<()> {
    const IDLE: Duration = Duration::from_secs(3600);
    loop {
        let wait = d
            .deadlines()
            .next_wake()
            .map(|at| (at - chrono::Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(IDLE)
            .min(IDLE);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = d.deadlines_changed.notified() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        let expired = d.deadlines().expired(chrono::Utc::now());
        if expired.is_empty() {
            continue;
        }
        let results: Vec<RunResult> = expired
            .iter()
            .map(|run| {
                own_result(
                    run,
                    Outcome::TimedOut,
                    format!(
                        "no result within the timeout ({} ms) and grace ({} ms)",
                        run.timeout_ms
                            .unwrap_or(d.config.run_timeout.as_millis() as u64),
                        d.config.run_timeout_grace.as_millis()
                    ),
                )
            })
            .collect();
        tracing::warn!(runs = results.len(), "attempts timed out");
        metrics::counter!(m::TIMEOUTS).increment(results.len() as u64);
        if let Err(error) = apply_results(&d, &results).await {
            // Watch them again: the next wake records them.
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot record timeouts; trying again"
            );
            let retry_at = chrono::Utc::now() + chrono::Duration::seconds(1);
            let mut deadlines = d.deadlines();
            for run in expired {
                deadlines.track(run, retry_at);
            }
        }
    }
}

async fn api_loop(
    d: Arc<Dispatcher>,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subject = d.ns.api_subject("dispatcher", "*");
    nats::serve_api(&client, subject, "dispatcher", shutdown, |verb, payload| {
        let d = d.clone();
        async move { answer(&d, &verb, &payload).await }
    })
    .await
}

/// How long a cancel waits for the worker executing the run to answer.
const CANCEL_ANSWER: Duration = Duration::from_millis(500);

/// Cancels a run: at once if it waits or no worker has started it, through its worker if one
/// executes it.
async fn cancel(d: &Dispatcher, run_id: uuid::Uuid) -> anyhow::Result<CancelReply> {
    let Some((run, status)) = store::run_message(&d.pool, run_id).await? else {
        anyhow::bail!("no run {run_id}; expected the id of a run, as faro explain job shows");
    };
    let reply = |state, status: &str, worker_id| CancelReply {
        run_id,
        state,
        status: status.to_owned(),
        worker_id,
    };
    if status.is_terminal() {
        return Ok(reply(CancelState::Ended, status.as_str(), None));
    }
    d.cancelled().insert(run_id);
    // Never published now: no schedule lag to record.
    d.slot_times().remove(&run_id);
    let waiting = {
        let mut admission = d.admission();
        admission.withdraw(run_id) || !admission.is_running(run_id)
    };
    if waiting {
        // Waiting for a slot, a queue, maintenance or a retry: it was never handed out.
        store::drop_from_outbox(&d.pool, run_id).await?;
        gauge_waiting(d);
        let result = own_result(
            &run,
            Outcome::Cancelled,
            "cancelled by an operator while it waited".to_owned(),
        );
        apply_results(d, &[result]).await?;
        tracing::info!(run.id = %run_id, "waiting run cancelled");
        return Ok(reply(CancelState::Waiting, "cancelled", None));
    }
    // Published: the worker executing it stops it; every worker skips it if pulled later.
    let body = serde_json::to_vec(&WorkerCancel {
        run_id,
        attempt: run.attempt,
    })?;
    let inbox = d.client.new_inbox();
    let mut answers = d.client.subscribe(inbox.clone()).await?;
    d.client
        .publish_with_reply(d.ns.api_subject("worker", "cancel"), inbox, body.into())
        .await?;
    let answer = tokio::time::timeout(CANCEL_ANSWER, answers.next()).await;
    if let Ok(Some(message)) = answer {
        if let Ok(answer) = serde_json::from_slice::<WorkerCancelReply>(&message.payload) {
            tracing::info!(run.id = %run_id, worker = %answer.worker_id, "running run cancelled through its worker");
            return Ok(reply(
                CancelState::Running,
                status.as_str(),
                Some(answer.worker_id),
            ));
        }
    }
    let result = own_result(
        &run,
        Outcome::Cancelled,
        "cancelled by an operator before a worker started it".to_owned(),
    );
    apply_results(d, &[result]).await?;
    tracing::info!(run.id = %run_id, "queued run cancelled");
    Ok(reply(CancelState::Queued, "cancelled", None))
}

/// Why a run is where it is, or what a job has been doing.
async fn explain(d: &Dispatcher, request: ExplainRequest) -> anyhow::Result<ExplainReply> {
    let now = chrono::Utc::now();
    let lines = match request {
        ExplainRequest::Run(id) => {
            let Some(facts) = store::run_facts(&d.pool, id).await? else {
                anyhow::bail!("no run {id}; expected the id of a run, as faro explain job shows");
            };
            let live = explain::Live {
                wait: d.admission().why_waiting(id),
                deadline: d.deadlines().deadline_of(id),
            };
            explain::run(&facts, &live, now)
        }
        ExplainRequest::Job(id) => {
            let Some(facts) = store::job_facts(&d.pool, &id).await? else {
                anyhow::bail!("no job {id:?}; expected the id of a defined job");
            };
            let next = facts
                .interval_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .zip(JobId::parse(id.clone()).ok())
                .map(|(ms, job)| schedule::slot_at_or_after(&job, Duration::from_millis(ms), now));
            explain::job(&facts, next)
        }
    };
    Ok(ExplainReply { lines })
}

/// Defines, switches or lists targets; a change applies to admission and the schedule at once.
async fn targets(d: &Dispatcher, request: TargetRequest) -> anyhow::Result<TargetReply> {
    let changed = match request {
        TargetRequest::Put { targets } => {
            let changed = catalog::put_targets(&d.pool, &targets).await?;
            tracing::info!(targets = changed, "targets defined");
            changed
        }
        TargetRequest::SetEnabled { id, enabled } => {
            if !catalog::set_target_enabled(&d.pool, &id, enabled).await? {
                anyhow::bail!("no target {id}; `faro target list` shows them");
            }
            tracing::info!(target = %id, enabled, "target switched");
            1
        }
        TargetRequest::List => {
            let stored = catalog::targets(&d.pool).await?;
            let admission = d.admission();
            let targets = stored
                .into_iter()
                .map(|t| {
                    let (in_flight, waiting) = admission.load(&t.id);
                    let snmp = serde_json::from_value::<Snmp>(t.snmp)
                        .map(|s| serde_json::to_value(s.redacted()).unwrap_or_default())
                        .unwrap_or_else(|e| serde_json::json!({"unreadable": e.to_string()}));
                    TargetView {
                        limit: admission.limits().of(&t.id),
                        id: t.id,
                        name: t.name,
                        address: t.address,
                        snmp,
                        max_concurrency: t.max_concurrency,
                        enabled: t.enabled,
                        in_flight,
                        waiting,
                    }
                })
                .collect();
            return Ok(TargetReply {
                changed: 0,
                targets,
            });
        }
    };
    // The same reread as every few seconds, now: limits and switches apply at once.
    reload_settings(d).await?;
    Ok(TargetReply {
        changed,
        targets: Vec::new(),
    })
}

/// Lists or switches job definitions; a switched job joins or leaves the schedule and its
/// chain at once.
async fn jobs(d: &Dispatcher, request: JobRequest) -> anyhow::Result<JobReply> {
    match request {
        JobRequest::List {
            queue,
            target,
            limit,
            all,
        } => {
            let (jobs, total) =
                catalog::jobs(&d.pool, queue.as_ref(), target.as_ref(), limit, all).await?;
            Ok(JobReply {
                changed: 0,
                jobs,
                total,
            })
        }
        JobRequest::SetEnabled { id, enabled } => {
            if !catalog::set_job_enabled(&d.pool, &id, enabled).await? {
                anyhow::bail!("no job {id}; `faro job list` shows them");
            }
            tracing::info!(job = %id, enabled, "job switched");
            let definition = if enabled {
                store::definition(&d.pool, &id).await?
            } else {
                None
            };
            let mut chains = d.chains.write().await;
            chains.remove(&id);
            match definition {
                Some((def, Some(parent), run_if)) => chains.define(parent, Child { def, run_if }),
                Some((def, None, _)) if !def.interval.is_zero() => {
                    let _ = d
                        .schedule
                        .send(ScheduleEvent::Define(vec![def.recurring()]));
                }
                _ => {
                    let _ = d.schedule.send(ScheduleEvent::Remove(vec![id]));
                }
            }
            Ok(JobReply {
                changed: 1,
                jobs: Vec::new(),
                total: 1,
            })
        }
    }
}

/// Answers one API request by verb.
async fn answer(d: &Dispatcher, verb: &str, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    match verb {
        "status" => Ok(serde_json::to_vec(&store::status(&d.pool).await?)?),
        "submission" => {
            let query: SubmissionQuery =
                serde_json::from_slice(payload).context("expected {\"submission_ids\": [..]}")?;
            let progress = store::submission_progress(&d.pool, &query.submission_ids).await?;
            Ok(serde_json::to_vec(&progress)?)
        }
        "config" => {
            let request: ConfigRequest = serde_json::from_slice(payload)
                .context("expected {\"key\": .., \"value\": ..} or {}")?;
            if let (Some(key), Some(value)) = (&request.key, &request.value) {
                let setting = Setting::parse(key, value)?;
                let _serialized = d.settings.lock().await;
                store::store_setting(&d.pool, &setting).await?;
                apply_setting(d, &setting);
                tracing::info!(%setting, "setting changed");
            }
            let settings = store::settings(&d.pool).await?;
            Ok(serde_json::to_vec(&ConfigReply { settings })?)
        }
        "cancel" => {
            let request: CancelRequest =
                serde_json::from_slice(payload).context("expected {\"run_id\": \"<uuid>\"}")?;
            Ok(serde_json::to_vec(&cancel(d, request.run_id).await?)?)
        }
        "explain" => {
            let request: ExplainRequest = serde_json::from_slice(payload)
                .context("expected {\"run\": \"<uuid>\"} or {\"job\": \"<job id>\"}")?;
            Ok(serde_json::to_vec(&explain(d, request).await?)?)
        }
        "targets" => {
            let request: TargetRequest = serde_json::from_slice(payload).context(
                "expected {\"op\": \"put\", \"targets\": [..]}, {\"op\": \"set_enabled\", \"id\": .., \"enabled\": ..} or {\"op\": \"list\"}",
            )?;
            Ok(serde_json::to_vec(&targets(d, request).await?)?)
        }
        "jobs" => {
            let request: JobRequest = serde_json::from_slice(payload).context(
                "expected {\"op\": \"list\", \"limit\": N} or {\"op\": \"set_enabled\", \"id\": .., \"enabled\": ..}",
            )?;
            Ok(serde_json::to_vec(&jobs(d, request).await?)?)
        }
        other => anyhow::bail!(
            "unknown verb {other:?}; expected status, submission, config, cancel, explain, targets or jobs"
        ),
    }
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
