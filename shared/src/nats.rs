//! Connecting to NATS, and faro's streams, buckets and consumers: declared by one privileged
//! step, bound by the services.
//!
//! `faro setup` connects as the NATS `admin` user and calls [`provision`]: every stream and
//! bucket, and the dispatcher's durable consumers, created or updated (idempotent, so it is
//! run on every deploy and a changed setting is applied). The services call [`bind_topology`]
//! and may not create, update, delete or purge any of them: their NATS users hold only the API
//! subjects that read and use them. The one consumer a service makes is a queue's, made by the
//! dispatcher on the first run it publishes to the queue ([`ensure_queue_consumer`]). The
//! shapes (retention, dedup windows, expiries) are decided here and nowhere else.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, kv, stream};

use crate::config::NatsConfig;
use crate::domain::QueueName;
use crate::names::Namespace;

/// Settings of the topology that operators may tune.
#[derive(Debug, Clone)]
pub struct TopologySettings {
    /// How long a heartbeat key lives without renewal (worker gone).
    pub heartbeat_ttl: Duration,
    /// Window in which a republished message with the same `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// How long audit events are kept.
    pub events_max_age: Duration,
    /// How long the outcome feed keeps a run's outcome (`FARO_OUTCOMES_MAX_AGE`).
    pub outcomes_max_age: Duration,
    /// Copies of every stream and bucket (`FARO_JETSTREAM_REPLICAS`): 1 on a single server, 3
    /// on a three-node cluster, so losing one node loses no stored run, result or lease.
    pub replicas: usize,
    /// What faro's streams and buckets may store in all, on each node
    /// (`FARO_JETSTREAM_MAX_BYTES`), shared out by [`StoreLimits::of`].
    pub max_bytes: u64,
}

impl TopologySettings {
    /// The operator's settings: `FARO_JETSTREAM_REPLICAS` (1 to 5).
    pub fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        let replicas: usize = env.parse(
            "FARO_JETSTREAM_REPLICAS",
            1,
            "a number of copies from 1 to 5 (3 on a three-node NATS cluster)",
        )?;
        if !(1..=5).contains(&replicas) {
            return Err(crate::config::ConfigError {
                var: "FARO_JETSTREAM_REPLICAS".to_owned(),
                value: replicas.to_string(),
                expected: "a number of copies from 1 to 5 (3 on a three-node NATS cluster)"
                    .to_owned(),
            });
        }
        let max_bytes = env.bytes("FARO_JETSTREAM_MAX_BYTES", DEFAULT_JETSTREAM_MAX_BYTES)?;
        if max_bytes < MIN_JETSTREAM_MAX_BYTES {
            return Err(crate::config::ConfigError {
                var: "FARO_JETSTREAM_MAX_BYTES".to_owned(),
                value: max_bytes.to_string(),
                expected: format!(
                    "at least {} MiB (8G by default), within the NATS server's max_file_store",
                    MIN_JETSTREAM_MAX_BYTES >> 20
                ),
            });
        }
        let outcomes_max_age = env.duration("FARO_OUTCOMES_MAX_AGE", DEFAULT_OUTCOMES_MAX_AGE)?;
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 86_400)).contains(&outcomes_max_age)
        {
            return Err(crate::config::ConfigError {
                var: "FARO_OUTCOMES_MAX_AGE".to_owned(),
                value: format!("{outcomes_max_age:?}"),
                expected: "a duration from 1m to 30d (1d by default)".to_owned(),
            });
        }
        Ok(Self {
            replicas,
            max_bytes,
            outcomes_max_age,
            ..Self::default()
        })
    }
}

/// How long the outcome feed keeps an outcome by default: a day (its share of the store may
/// drop the oldest sooner).
pub const DEFAULT_OUTCOMES_MAX_AGE: Duration = Duration::from_secs(86_400);

/// What faro's streams and buckets may store in all by default: 8 GiB, within the 10G
/// `max_file_store` of `nats/nats-server.conf`.
pub const DEFAULT_JETSTREAM_MAX_BYTES: u64 = 8 << 30;

/// The least `FARO_JETSTREAM_MAX_BYTES` taken.
pub const MIN_JETSTREAM_MAX_BYTES: u64 = 64 << 20;

/// The bytes each stream and bucket may hold. Each is a limit JetStream reserves in its store
/// when the stream is made (a stream it cannot reserve is refused), so their sum never exceeds
/// the store: a stream that fills refuses what comes next (work queues) or drops its oldest
/// (events, demand, dead letters), and never takes the room of another. The buckets have
/// theirs: the leader lease renews whatever the streams hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Submissions not yet recorded: full when the dispatcher is stopped or far behind;
    /// submitters are then refused, told so, and try again.
    pub submit: i64,
    /// Runs published and not yet acknowledged (at most the admitted runs: the targets'
    /// limits bound them).
    pub jobs: i64,
    /// Results and value chunks not yet recorded.
    pub results: i64,
    pub demand: i64,
    pub dead_letters: i64,
    pub events: i64,
    /// The outcome feed: its oldest outcomes go first when it is full.
    pub outcomes: i64,
    pub workers: i64,
    pub assignments: i64,
    pub leases: i64,
    pub cooling: i64,
}

impl StoreLimits {
    /// Pure: `max_bytes` shared out, in thousandths: submissions 150, jobs 250, results 300,
    /// events 50, outcomes 50, dead letters 50, demand 20, and the buckets 20 each (leases
    /// 40); 30 are left unreserved.
    pub fn of(max_bytes: u64) -> Self {
        let share =
            |thousandths: u64| i64::try_from(max_bytes / 1000 * thousandths).unwrap_or(i64::MAX);
        Self {
            submit: share(150),
            jobs: share(250),
            results: share(300),
            demand: share(20),
            dead_letters: share(50),
            events: share(50),
            outcomes: share(50),
            workers: share(20),
            assignments: share(20),
            leases: share(40),
            cooling: share(20),
        }
    }
}

impl Default for TopologySettings {
    fn default() -> Self {
        Self {
            heartbeat_ttl: Duration::from_secs(60),
            duplicate_window: Duration::from_secs(120),
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            outcomes_max_age: DEFAULT_OUTCOMES_MAX_AGE,
            replicas: 1,
            max_bytes: DEFAULT_JETSTREAM_MAX_BYTES,
        }
    }
}

/// Whether a first connection that fails is retried (services) or an error (the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Keep trying in the background: a service may start before NATS does.
    Forever,
    /// Fail at once with the reason.
    Never,
}

/// When this process last connected to NATS, in milliseconds since the epoch (0: never).
static CONNECTED_AT_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn mark_connected() {
    CONNECTED_AT_MS.store(
        chrono::Utc::now().timestamp_millis(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// When this process last connected (or reconnected) to NATS. A message stored before then
/// may be one whose acknowledgement a server that restarted (after a crash) never kept: it is
/// delivered again, even as a first delivery.
pub fn last_connected() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(
        CONNECTED_AT_MS.load(std::sync::atomic::Ordering::Relaxed),
    )
    .unwrap_or_default()
}

/// Connects with the configured credentials and TLS; `name` shows in server monitoring.
pub async fn connect(
    config: &NatsConfig,
    name: &str,
    retry: Retry,
) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        // Replies to this client come on its own inboxes, which no other user may read.
        .custom_inbox_prefix(&config.inbox_prefix)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => {
                    mark_connected();
                    tracing::info!(%event, "nats connection");
                }
                _ => tracing::warn!(%event, "nats connection"),
            }
        });
    if retry == Retry::Forever {
        options = options.retry_on_initial_connect();
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("cannot read FARO_NATS_CREDS file {}", path.display()))?;
    }
    if config.tls_required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    // FARO_NATS_URL lists one server or several, comma-separated (the nodes of a cluster).
    let servers: Vec<&str> = config
        .url
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect();
    let client = options.connect(servers).await.with_context(|| {
        format!(
            "cannot connect to NATS at {} (FARO_NATS_URL)",
            crate::config::urls_for_logs(&config.url)
        )
    })?;
    mark_connected();
    Ok(client)
}

/// A JetStream context with publish backpressure instead of errors when acks pile up.
pub fn jetstream(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(10_000)
        .backpressure_on_inflight(true)
        .build(client)
}

/// The buckets of a namespace, bound.
#[derive(Debug, Clone)]
pub struct Topology {
    pub workers: kv::Store,
    pub assignments: kv::Store,
    pub leases: kv::Store,
    pub cooling: kv::Store,
}

/// How long a service's start waits for the topology: a cluster still electing its meta
/// leader or a stream's, or `faro setup` not finished yet. A service that gives up is
/// restarted by its supervisor (compose, systemd) and waits again.
const TOPOLOGY_WAIT: Duration = Duration::from_secs(60);

/// How long `faro setup` keeps declaring while JetStream does not take the declarations: a
/// cluster whose nodes are still starting (compose starts them together), each stream's
/// leader election taking seconds on a busy machine. A one-shot, so it waits longer.
pub const SETUP_WAIT: Duration = Duration::from_secs(300);

/// One stream, bucket or consumer [`provision`] declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// `stream`, `KV bucket` or `consumer`.
    pub kind: &'static str,
    pub name: String,
    /// Its limit in the store; 0 for a consumer.
    pub max_bytes: i64,
}

/// What [`provision`] did: the buckets, and each declaration in order.
#[derive(Debug)]
pub struct Provisioned {
    pub topology: Topology,
    pub declared: Vec<Declared>,
}

/// Declares every stream and bucket of `ns` and the dispatcher's durable consumers, creating or
/// updating them (`faro setup`, as a user that may use the whole JetStream API); while
/// JetStream does not take the declarations (a cluster forming, a node restarting), tries
/// again for up to `wait`, logging why.
pub async fn provision(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &TopologySettings,
    wait: Duration,
) -> anyhow::Result<Provisioned> {
    // Not worth waiting for: no retry makes a small budget larger.
    check_limits(
        &StoreLimits::of(settings.max_bytes),
        settings.max_bytes,
        js.client().server_info().max_payload,
    )?;
    patiently("JetStream does not take the topology yet", wait, || {
        declare_topology(js, ns, settings)
    })
    .await
    .context("JetStream did not take the topology")
}

/// Binds the buckets of `ns`: what a service does at start (its streams it opens as it uses
/// them). Waits up to a minute for them (a cluster electing leaders, `faro setup` still
/// running), then fails naming what is missing and how to make it.
pub async fn bind_topology(js: &jetstream::Context, ns: &Namespace) -> anyhow::Result<Topology> {
    patiently(
        "the streams and buckets are not all there yet",
        TOPOLOGY_WAIT,
        || async {
            let bucket = |name: String| async move {
                js.get_key_value(&name)
                    .await
                    .with_context(|| format!("cannot open KV bucket {name}"))
            };
            Ok(Topology {
                workers: bucket(ns.workers_bucket()).await?,
                assignments: bucket(ns.assignments_bucket()).await?,
                leases: bucket(ns.leases_bucket()).await?,
                cooling: bucket(ns.cooling_bucket()).await?,
            })
        },
    )
    .await
    .context(
        "the streams and buckets are missing or unreadable: run `faro setup` (as the NATS admin \
         user) before the services, and check this service's NATS user and namespace",
    )
}

/// Runs `attempt` until it succeeds or `wait` has passed, logging each failure.
async fn patiently<T, F, Fut>(waiting: &str, wait: Duration, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(
                    error = crate::pg::error_text(&error),
                    retry_in_ms = delay.as_millis() as u64,
                    "{waiting}; trying again"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                return Err(error.context(format!("still failing after {} s", wait.as_secs())))
            }
        }
    }
}

async fn declare_topology(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &TopologySettings,
) -> anyhow::Result<Provisioned> {
    let mut declared = Vec::new();
    let limits = StoreLimits::of(settings.max_bytes);
    // Work queues refuse what would not fit (the publisher is told, and tries again): their
    // messages are accepted work, never dropped to make room.
    let work_queue =
        |name: String, subjects: Vec<String>, window: Duration, max_bytes: i64| stream::Config {
            name,
            subjects,
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: window,
            max_bytes,
            discard: stream::DiscardPolicy::New,
            num_replicas: settings.replicas,
            ..Default::default()
        };
    let streams = [
        work_queue(
            ns.submit_stream(),
            vec![ns.submit_subject()],
            settings.duplicate_window,
            limits.submit,
        ),
        work_queue(
            ns.jobs_stream(),
            vec![ns.jobs_wildcard()],
            settings.duplicate_window,
            limits.jobs,
        ),
        work_queue(
            ns.results_stream(),
            // Values chunks share the results stream: a run's chunks are stored before its
            // result, and one consumer reads both in that order.
            vec![ns.results_wildcard(), ns.values_wildcard()],
            RESULTS_DUPLICATE_WINDOW,
            limits.results,
        ),
        stream::Config {
            name: ns.demand_stream(),
            subjects: vec![ns.demand_wildcard()],
            max_messages_per_subject: 1,
            max_bytes: limits.demand,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            allow_direct: true,
            num_replicas: settings.replicas,
            ..Default::default()
        },
        // What could not be recorded however often it was tried, kept for an operator with
        // where it came from and why (`faro dead-letters`); bounded, so it never fills a disk.
        stream::Config {
            name: ns.dead_stream(),
            subjects: vec![ns.dead_wildcard()],
            max_age: DEAD_LETTERS_MAX_AGE,
            max_messages: DEAD_LETTERS_MAX,
            max_bytes: limits.dead_letters,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            ..Default::default()
        },
        stream::Config {
            name: ns.events_stream(),
            subjects: vec![ns.events_wildcard()],
            max_age: settings.events_max_age,
            max_bytes: limits.events,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            ..Default::default()
        },
        // Each run's end, for integrators to follow (`faro.outcomes.<queue>.<target>`): a
        // feed, so the oldest go when it is full or too old, never blocking a run. Declared
        // after the events stream, whose share it took: an events stream made by an older
        // version shrinks first, so the two never need more than the store.
        stream::Config {
            name: ns.outcomes_stream(),
            subjects: vec![ns.outcomes_wildcard()],
            max_age: settings.outcomes_max_age,
            max_bytes: limits.outcomes,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: settings.duplicate_window,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            ..Default::default()
        },
    ];
    for config in streams {
        let (name, max_bytes) = (config.name.clone(), config.max_bytes);
        js.create_or_update_stream(config)
            .await
            .with_context(|| reserve_error("stream", &name, max_bytes, settings.max_bytes))?;
        declared.push(Declared {
            kind: "stream",
            name,
            max_bytes,
        });
    }
    let bucket = |bucket: String, max_age: Duration, max_bytes: i64| kv::Config {
        bucket,
        history: 1,
        max_age,
        max_bytes,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    };
    let declare = |config: kv::Config| async move {
        let (name, max_bytes) = (config.bucket.clone(), config.max_bytes);
        let store = js
            .create_or_update_key_value(config)
            .await
            .with_context(|| reserve_error("KV bucket", &name, max_bytes, settings.max_bytes))?;
        anyhow::Ok((
            store,
            Declared {
                kind: "KV bucket",
                name,
                max_bytes,
            },
        ))
    };
    let (workers, bucket_workers) = declare(bucket(
        ns.workers_bucket(),
        settings.heartbeat_ttl,
        limits.workers,
    ))
    .await?;
    // A removed assignment is purged with a TTL (FARO_BALANCER_ASSIGNMENT_MARKER_TTL): its
    // marker goes too, so workers that come and go leave no key behind.
    let (assignments, bucket_assignments) = declare(kv::Config {
        limit_markers: Some(Duration::from_secs(1)),
        ..bucket(ns.assignments_bucket(), Duration::ZERO, limits.assignments)
    })
    .await?;
    // Every lease has its own TTL (the leader lease, target slots); an expired or purged key
    // leaves a marker that lives one second. No bucket age: a run's slot lease lives as long
    // as its deadline, however long that is.
    let (leases, bucket_leases) = declare(kv::Config {
        limit_markers: Some(Duration::from_secs(1)),
        ..bucket(ns.leases_bucket(), Duration::ZERO, limits.leases)
    })
    .await?;
    let (cooling, bucket_cooling) =
        declare(bucket(ns.cooling_bucket(), Duration::ZERO, limits.cooling)).await?;
    declared.extend([
        bucket_workers,
        bucket_assignments,
        bucket_leases,
        bucket_cooling,
    ]);
    // The dispatcher's: submissions, and results with their values chunks.
    for (stream, filters) in [
        (ns.submit_stream(), vec![ns.submit_subject()]),
        (
            ns.results_stream(),
            vec![ns.results_wildcard(), ns.values_wildcard()],
        ),
    ] {
        declare_service_consumer(js, &stream, ns.dispatcher_consumer(), filters).await?;
        declared.push(Declared {
            kind: "consumer",
            name: format!("{stream} > {}", ns.dispatcher_consumer()),
            max_bytes: 0,
        });
    }
    Ok(Provisioned {
        topology: Topology {
            workers,
            assignments,
            leases,
            cooling,
        },
        declared,
    })
}

/// Whether JetStream refused to store a publish because its stream is at its limit (error
/// 10077, "maximum bytes exceeded" or "maximum messages exceeded"): the message was not
/// stored, and will fit once the stream's consumer has taken what it holds.
pub fn refused_as_full(error: &jetstream::context::PublishError) -> bool {
    // 10077 is any failure to store; only these two descriptions are a stream at its limit
    // (a disk failing is not).
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|error| {
            let text = error.to_string();
            error.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED
                && (text.contains("maximum bytes exceeded")
                    || text.contains("maximum messages exceeded"))
        })
}

/// Messages of the server's largest payload a stream must hold at least.
const MIN_MESSAGES: i64 = 4;

/// Pure: every stream that carries messages as large as the server takes (submission
/// chunks, runs, results and value chunks, and their dead letters) holds at least
/// [`MIN_MESSAGES`] of them, and every other stream and bucket 1 MiB; else an error naming
/// the setting to raise.
pub fn check_limits(
    limits: &StoreLimits,
    max_bytes: u64,
    max_payload: usize,
) -> anyhow::Result<()> {
    let large = i64::try_from(max_payload)
        .unwrap_or(i64::MAX)
        .saturating_mul(MIN_MESSAGES);
    let small = 1 << 20;
    for (name, limit, least) in [
        ("submissions stream", limits.submit, large),
        ("jobs stream", limits.jobs, large),
        ("results stream", limits.results, large),
        ("dead-letter stream", limits.dead_letters, large),
        ("demand stream", limits.demand, small),
        ("events stream", limits.events, small),
        ("outcomes stream", limits.outcomes, small),
        ("workers bucket", limits.workers, small),
        ("assignments bucket", limits.assignments, small),
        ("leases bucket", limits.leases, small),
        ("cooling bucket", limits.cooling, small),
    ] {
        anyhow::ensure!(
            limit >= least,
            "FARO_JETSTREAM_MAX_BYTES={max_bytes} leaves the {name} {limit} bytes, less than \
             {least} (the NATS server's max_payload is {max_payload} bytes); raise it"
        );
    }
    Ok(())
}

/// Why a stream or bucket was not declared: JetStream reserves its limit in the store when it
/// is made, and refuses a limit it cannot reserve.
fn reserve_error(what: &str, name: &str, limit: i64, max_bytes: u64) -> String {
    format!(
        "cannot declare {what} {name} (a limit of {limit} bytes, its share of \
         FARO_JETSTREAM_MAX_BYTES={max_bytes}: the NATS server's JetStream store, max_file_store, \
         must be able to reserve them all)"
    )
}

/// How long the results stream drops a result published again (`Nats-Msg-Id`
/// `result:<run>:<attempt>`): a publish retried, or an attempt executed again at once after
/// its result's confirmation was lost. Short: the server keeps every id of the window, and at
/// thousands of results a second a long window costs the whole pipeline.
pub const RESULTS_DUPLICATE_WINDOW: Duration = Duration::from_secs(10);

/// How long a worker may hold a run without an acknowledgement before JetStream redelivers
/// it: short, so the runs of a worker that died run elsewhere within seconds. A worker keeps
/// a long run with an in-progress ack every [`RUN_PROGRESS_EVERY`].
pub const RUN_ACK_WAIT: Duration = Duration::from_secs(6);

/// How often a worker sends an in-progress ack for each run it executes.
pub const RUN_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How long before JetStream could redeliver a run its worker lets go of it: a worker that
/// has had no in-progress ack confirmed for `RUN_ACK_WAIT - RUN_HOLD_MARGIN` abandons the
/// attempt, so it never polls next to the worker the run went to. The margin covers the
/// network's latency and the clocks' disagreement between workers.
pub const RUN_HOLD_MARGIN: Duration = Duration::from_secs(2);

/// How long a message set aside stays in the dead-letter stream.
pub const DEAD_LETTERS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How many messages the dead-letter stream keeps at most (the oldest go first).
pub const DEAD_LETTERS_MAX: i64 = 100_000;

/// How often JetStream delivers one run before it stops: runs come back when the worker that
/// had one died, stalled or gave it back (over its load limits as it arrived: see
/// [`give_back_delay`]). The last delivery is not executed: the worker ends the run `failed`
/// with the reason, so it never sits in its queue unseen.
pub const RUN_MAX_DELIVER: i64 = 100;

/// Pure: how long a run a worker gives back unexecuted (its load limits closed while the
/// run was on its way) waits before its next delivery, after `delivered` deliveries: at once
/// the first time, so another worker takes it; then 100 ms more each time, at most 5 s, so a
/// worker whose load hovers at its limit cannot spend the run's deliveries in a burst.
pub fn give_back_delay(delivered: i64) -> Duration {
    let steps = u64::try_from(delivered.saturating_sub(1).clamp(0, 50)).unwrap_or(50);
    Duration::from_millis(100 * steps)
}

/// How often JetStream delivers one submission or result to the dispatcher before it stops.
/// The tries before the last are spaced by [`retry_delay`] (about 20 minutes in all, so a
/// PostgreSQL outage does not exhaust them); the last delivery is not tried again but set aside
/// in the dead-letter stream with its reason.
pub const SERVICE_MAX_DELIVER: i64 = 50;

/// Pure: how long a message that could not be handled waits before its next delivery, after
/// `delivered` deliveries: 1 s, doubling, at most 30 s.
pub fn retry_delay(delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 5)).unwrap_or(5);
    Duration::from_secs(1 << doublings).min(Duration::from_secs(30))
}

/// Pure: whether a message delivered `delivered` times of `max_deliver` is on its last
/// delivery, the one that sets it aside instead of trying again.
pub fn is_last_delivery(delivered: i64, max_deliver: i64) -> bool {
    delivered >= max_deliver
}

/// The durable pull consumer of a queue, shared by every worker assigned to it: declared by
/// the dispatcher before the first run it publishes to the queue. The declaration is
/// idempotent and updates a consumer declared with other settings (by an older version).
pub async fn ensure_queue_consumer(
    js: &jetstream::Context,
    ns: &Namespace,
    queue: &QueueName,
) -> anyhow::Result<consumer::PullConsumer> {
    let name = ns.queue_consumer(queue);
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!("runs of queue {queue}")),
        filter_subject: ns.job_filter(queue),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: RUN_ACK_WAIT,
        max_deliver: RUN_MAX_DELIVER,
        max_ack_pending: 100_000,
        max_batch: 10_000,
        ..Default::default()
    };
    js.create_consumer_on_stream(config, ns.jobs_stream())
        .await
        .with_context(|| format!("cannot declare consumer {name} for queue {queue}"))
}

/// The consumer of `queue`, as workers and the demand-collector open it; `None` while the
/// dispatcher has published no run to the queue yet (it declares the consumer first).
pub async fn bind_queue_consumer(
    js: &jetstream::Context,
    ns: &Namespace,
    queue: &QueueName,
) -> anyhow::Result<Option<consumer::PullConsumer>> {
    let name = ns.queue_consumer(queue);
    match js.get_consumer_from_stream(&name, ns.jobs_stream()).await {
        Ok(consumer) => Ok(Some(consumer)),
        Err(error)
            if matches!(error.kind(), jetstream::stream::ConsumerErrorKind::JetStream(error)
                if error.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) =>
        {
            Ok(None)
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot open consumer {name} of queue {queue}"))
        }
    }
}

/// How long the dispatcher may hold a submission or result before JetStream redelivers it:
/// short, so what a killed leader had pulled reaches the next leader soon; a repeat is
/// harmless (submissions are deduplicated, a repeated result is recorded as late).
pub const SERVICE_ACK_WAIT: Duration = Duration::from_secs(20);

/// Declares the dispatcher's durable pull consumer over a whole stream (`submit` or
/// `results`), or updates one declared with other settings (by an older version).
async fn declare_service_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    durable: &str,
    filters: Vec<String>,
) -> anyhow::Result<consumer::PullConsumer> {
    let config = consumer::pull::Config {
        durable_name: Some(durable.to_owned()),
        filter_subjects: filters,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: SERVICE_ACK_WAIT,
        max_deliver: SERVICE_MAX_DELIVER,
        max_ack_pending: 50_000,
        max_batch: 10_000,
        ..Default::default()
    };
    js.create_consumer_on_stream(config, stream_name)
        .await
        .with_context(|| format!("cannot declare consumer {durable} on {stream_name}"))
}

/// The dispatcher's durable consumer of `stream_name`, declared by `faro setup`.
pub async fn bind_service_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    durable: &str,
) -> anyhow::Result<consumer::PullConsumer> {
    js.get_consumer_from_stream(durable, stream_name)
        .await
        .with_context(|| {
            format!(
                "cannot open consumer {durable} of stream {stream_name} (`faro setup` declares it)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn a_message_that_fails_waits_longer_each_time_and_its_last_delivery_is_known() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(i64::MAX), Duration::from_secs(30));
        // The tries before the last outlast a PostgreSQL outage of a quarter of an hour.
        let waited: Duration = (1..SERVICE_MAX_DELIVER).map(retry_delay).sum();
        assert!(waited > Duration::from_secs(15 * 60), "{waited:?}");
        assert!(!is_last_delivery(
            SERVICE_MAX_DELIVER - 1,
            SERVICE_MAX_DELIVER
        ));
        assert!(is_last_delivery(SERVICE_MAX_DELIVER, SERVICE_MAX_DELIVER));
    }

    #[test]
    fn a_run_given_back_again_and_again_keeps_its_deliveries_for_minutes() {
        assert_eq!(give_back_delay(1), Duration::ZERO);
        assert_eq!(give_back_delay(2), Duration::from_millis(100));
        assert_eq!(give_back_delay(1000), Duration::from_secs(5));
        let spent: Duration = (1..RUN_MAX_DELIVER).map(give_back_delay).sum();
        assert!(spent > Duration::from_secs(4 * 60), "{spent:?}");
    }

    #[test]
    fn the_store_is_shared_out_within_its_size_with_room_for_the_buckets() {
        for max_bytes in [
            MIN_JETSTREAM_MAX_BYTES,
            DEFAULT_JETSTREAM_MAX_BYTES,
            1 << 40,
        ] {
            let limits = StoreLimits::of(max_bytes);
            let all = [
                limits.submit,
                limits.jobs,
                limits.results,
                limits.demand,
                limits.dead_letters,
                limits.events,
                limits.outcomes,
                limits.workers,
                limits.assignments,
                limits.leases,
                limits.cooling,
            ];
            let total: i64 = all.iter().sum();
            assert!(all.iter().all(|limit| *limit > 0), "{limits:?}");
            assert!(
                u64::try_from(total).unwrap() <= max_bytes / 100 * 98,
                "{limits:?} over {max_bytes}"
            );
            // The leader lease and the slot leases have the largest bucket.
            assert!(limits.leases >= limits.workers.max(limits.cooling));
        }
        let default = StoreLimits::of(DEFAULT_JETSTREAM_MAX_BYTES);
        assert!(check_limits(&default, DEFAULT_JETSTREAM_MAX_BYTES, 4 << 20).is_ok());
        // Too small for the server's messages: named, with what to raise.
        let small = StoreLimits::of(MIN_JETSTREAM_MAX_BYTES);
        let error = check_limits(&small, MIN_JETSTREAM_MAX_BYTES, 4 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("FARO_JETSTREAM_MAX_BYTES=67108864") && error.contains("stream"),
            "{error}"
        );
        assert!(check_limits(&small, MIN_JETSTREAM_MAX_BYTES, 64 << 10).is_ok());
    }

    #[test]
    fn the_store_size_is_read_with_its_unit_and_refused_below_the_least() {
        let read = |value: &str| {
            TopologySettings::from_env(&Env::from_pairs([("FARO_JETSTREAM_MAX_BYTES", value)]))
        };
        assert_eq!(
            TopologySettings::from_env(&Env::default())
                .unwrap()
                .max_bytes,
            DEFAULT_JETSTREAM_MAX_BYTES
        );
        assert_eq!(read("20G").unwrap().max_bytes, 20 << 30);
        assert_eq!(read("512M").unwrap().max_bytes, 512 << 20);
        for bad in ["10M", "lots", "-1"] {
            let error = read(bad).unwrap_err();
            assert_eq!(error.var, "FARO_JETSTREAM_MAX_BYTES", "{bad}");
        }
    }

    #[test]
    fn replicas_default_to_one_and_refuse_what_no_cluster_takes() {
        assert_eq!(
            TopologySettings::from_env(&Env::default())
                .unwrap()
                .replicas,
            1
        );
        let three = Env::from_pairs([("FARO_JETSTREAM_REPLICAS", "3")]);
        assert_eq!(TopologySettings::from_env(&three).unwrap().replicas, 3);
        for bad in ["0", "6", "three", "-1"] {
            let error =
                TopologySettings::from_env(&Env::from_pairs([("FARO_JETSTREAM_REPLICAS", bad)]))
                    .unwrap_err();
            assert_eq!(error.var, "FARO_JETSTREAM_REPLICAS");
            assert!(error.expected.contains("1 to 5"), "{error}");
        }
    }
}
