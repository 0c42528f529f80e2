//! `faro-bench chaos`: faro's two promises under faults. The real service binaries (two
//! dispatchers, three workers, the balancer and the demand collector) run against a private
//! nats-server with a file store and a private PostgreSQL, while a load of simulated runs of
//! random durations over many targets (limit 3 each) and recurring jobs goes through, and the
//! suite kills, freezes and restarts each of them in turn:
//!
//! 1. SIGKILL of the leading dispatcher (started again as a standby);
//! 2. SIGKILL of a worker (started again);
//! 3. SIGSTOP of a worker for longer than the ack wait, then SIGCONT (a zombie that comes back);
//! 4. kill -9 of nats-server, started again on the same store;
//! 5. PostgreSQL stopped as a crash would, and started again;
//! 6. PostgreSQL frozen (SIGSTOP) for a minute, then thawed.
//!
//! Then it waits for everything accepted to end and counts, from PostgreSQL and from each
//! worker's own journal of executions (`FARO_WORKER_JOURNAL`): runs accepted, lost (without
//! exactly one terminal status), doubled (a job run twice, an attempt stored twice, a result
//! recorded after its run ended), moments a target ran more executions at once than its limit
//! (every execution counted, superseded and abandoned ones too, a killed worker's until its
//! kill, an abandoned one until its hold ended), recurring slots with neither a run nor a
//! recorded skip, and the seconds to drain after the last fault.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use faro_shared::config::{Env, PgConfig};
use faro_shared::messages::journal::{self, Event, Execution};
use faro_shared::testing::{send_signal, PrivatePg, TestBus};
use tokio_util::sync::CancellationToken;

/// How many executions of one target may run at once (`FARO_TARGET_MAX_CONCURRENCY`).
pub const LIMIT: usize = 3;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosBench {
    /// One-shot runs submitted while the faults happen.
    pub runs: usize,
    /// Targets they (and the recurring jobs) are spread over.
    pub targets: usize,
    /// Recurring jobs.
    pub recurring: usize,
    /// Their interval.
    pub interval: Duration,
    /// How long PostgreSQL stays frozen.
    pub pg_pause: Duration,
    /// Load between two faults.
    pub settle: Duration,
    /// Slots of each worker.
    pub capacity: u32,
    /// Where the service binaries are (`faro-dispatcher`, `faro-worker`, ...).
    pub bin_dir: PathBuf,
    /// Where logs and journals go; a temporary directory, removed at the end, without it.
    pub logs: Option<PathBuf>,
    /// How long draining may take before what is left counts as lost.
    pub drain_limit: Duration,
}

/// What the suite counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub runs: usize,
    pub lost: usize,
    pub doubled: usize,
    pub over_limit: usize,
    pub missed_slots: usize,
    /// Runs the tallies behind `faro status` count other than they are, by status.
    pub miscounted: usize,
    pub drain_secs: f64,
    /// Executions the workers journaled.
    pub executions: usize,
    /// What each kind of count found, for a reader to start from.
    pub details: Vec<String>,
}

impl Figures {
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("chaos_runs={}", self.runs),
            format!("chaos_lost={}", self.lost),
            format!("chaos_doubled={}", self.doubled),
            format!("chaos_over_limit={}", self.over_limit),
            format!("chaos_missed_slots={}", self.missed_slots),
            format!("chaos_miscounted={}", self.miscounted),
            format!("chaos_drain_secs={:.1}", self.drain_secs),
            format!("chaos_executions={}", self.executions),
        ]
    }

    /// All four promises held, and the counts told were the counts.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.doubled == 0
            && self.over_limit == 0
            && self.missed_slots == 0
            && self.miscounted == 0
    }
}

/// Runs the suite.
pub async fn run(bench: &ChaosBench) -> anyhow::Result<Figures> {
    for program in PROGRAMS {
        let path = bench.bin_dir.join(program);
        anyhow::ensure!(
            path.exists(),
            "no {} in {}: build the service binaries first (cargo build --release --workspace --bins)",
            program,
            bench.bin_dir.display()
        );
    }
    let temp = tempfile::tempdir()?;
    let dir = match &bench.logs {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
            dir.clone()
        }
        None => temp.path().to_owned(),
    };
    let mut bus = TestBus::start().await?;
    let pg = PrivatePg::start()?;
    let url = pg.url("postgres");
    faro_shared::pg::migrate(&PgConfig::new(url.clone())).await?;
    let pool = faro_shared::pg::pool(&PgConfig::new(url.clone()))?;
    crate::system::seed_test_settings(&pool).await?;

    let mut base = bus.env(None);
    base.set("FARO_DATABASE_URL", &url)
        .set("FARO_HEARTBEAT_INTERVAL", "1s")
        .set("FARO_BALANCER_CYCLE", "1s")
        .set("FARO_DEMAND_INTERVAL", "1s")
        .set("FARO_LEADER_LEASE_TTL", "3s")
        .set("FARO_WORKER_CAPACITY", bench.capacity.to_string())
        .set("FARO_WORKER_FETCH_EXPIRY", "1s")
        .set("FARO_SHUTDOWN_GRACE", "5s")
        .set("FARO_TARGET_MAX_CONCURRENCY", LIMIT.to_string());
    let mut fleet = Fleet::default();
    for name in ["d0", "d1"] {
        let mut env = base.clone();
        env.set("FARO_DISPATCHER_ID", name);
        fleet.add(
            name,
            bench.bin_dir.join("faro-dispatcher"),
            env,
            &dir,
            false,
        );
    }
    fleet.add(
        "balancer",
        bench.bin_dir.join("faro-balancer"),
        base.clone(),
        &dir,
        false,
    );
    fleet.add(
        "demand",
        bench.bin_dir.join("faro-demand-collector"),
        base.clone(),
        &dir,
        false,
    );
    for name in WORKERS {
        let mut env = base.clone();
        env.set("FARO_WORKER_ID", name);
        fleet.add(name, bench.bin_dir.join("faro-worker"), env, &dir, true);
    }
    fleet.start_all()?;
    let leases = bus.js.get_key_value(bus.ns.leases_bucket()).await?;
    wait_leader(&leases, None, Duration::from_secs(60)).await?;

    // The recurring jobs first: their slots run through every fault.
    let recurring: Vec<_> = (0..bench.recurring)
        .map(|i| {
            serde_json::json!({
                "id": format!("rec{i}"), "queue": "chaos", "kind": "sim",
                "target": format!("t{}", i % bench.targets.max(1)),
                "interval": bench.interval.as_secs_f64(), "timeout": "2m",
                "params": {"duration_ms": [0, 200], "outcomes": {"succeeded": 1}},
            })
        })
        .collect();
    for (index, batch) in recurring.chunks(500).enumerate() {
        submit(
            &bus.js,
            &bus.ns,
            batch,
            &format!("chaos-rec-{index}"),
            &CancellationToken::new(),
        )
        .await?;
    }

    // One-shot runs, submitted in batches spread over the faults.
    let faults_secs = 6.0 * bench.settle.as_secs_f64()
        + bench.pg_pause.as_secs_f64()
        + faro_shared::nats::RUN_ACK_WAIT.as_secs_f64()
        + 20.0;
    let stop = CancellationToken::new();
    let loader = tokio::spawn(load(
        bus.js.clone(),
        bus.ns.clone(),
        bench.runs,
        bench.targets.max(1),
        Duration::from_secs_f64(faults_secs),
        stop.clone(),
    ));

    tokio::time::sleep(bench.settle).await;
    let mut log = Vec::new();
    // 1. The leader dies.
    let leader = wait_leader(&leases, None, Duration::from_secs(60)).await?;
    fleet.kill(&leader)?;
    let next = wait_leader(&leases, Some(&leader), Duration::from_secs(60)).await?;
    log.push(format!("leader {leader} killed, {next} took over"));
    fleet.start(&leader)?;
    tokio::time::sleep(bench.settle).await;
    // 2. A worker dies, and comes back.
    fleet.kill("w0")?;
    fleet.start("w0")?;
    log.push("worker w0 killed and started again".to_owned());
    tokio::time::sleep(bench.settle).await;
    // 3. A worker freezes past its hold, and comes back.
    fleet.signal("w1", "-STOP")?;
    tokio::time::sleep(faro_shared::nats::RUN_ACK_WAIT + Duration::from_secs(4)).await;
    fleet.signal("w1", "-CONT")?;
    log.push("worker w1 frozen past the ack wait, then thawed".to_owned());
    tokio::time::sleep(bench.settle).await;
    // 4. nats-server dies, and comes back on its store.
    bus.server.restart()?;
    log.push("nats-server killed and started again".to_owned());
    tokio::time::sleep(bench.settle).await;
    // 5. PostgreSQL crashes, and comes back.
    pg.stop("immediate")?;
    pg.start_again()?;
    log.push("PostgreSQL crashed and started again".to_owned());
    tokio::time::sleep(bench.settle).await;
    // 6. PostgreSQL freezes.
    pg.pause()?;
    tokio::time::sleep(bench.pg_pause).await;
    pg.resume()?;
    log.push(format!("PostgreSQL frozen for {:?}", bench.pg_pause));
    tokio::time::sleep(bench.settle).await;

    // Everything is submitted, then drains.
    let accepted = loader.await.context("the load stopped")??;
    let cutoff = Utc::now();
    let faults_over = Instant::now();
    let drained = drain(&pool, accepted.len(), cutoff, bench.drain_limit).await;
    let drain_secs = faults_over.elapsed().as_secs_f64();
    stop.cancel();
    fleet.stop_all();

    let mut figures = count(&pool, &accepted, &fleet, cutoff, bench.interval).await?;
    if bench.logs.is_some() {
        dump_runs(&pool, &dir.join("runs.tsv")).await?;
    }
    figures.drain_secs = drain_secs;
    figures.details.splice(0..0, log);
    if let Err(error) = drained {
        figures.details.push(format!("not drained: {error:#}"));
    }
    if bench.logs.is_some() {
        figures
            .details
            .push(format!("logs and journals in {}", dir.display()));
    }
    Ok(figures)
}

const PROGRAMS: [&str; 4] = [
    "faro-dispatcher",
    "faro-worker",
    "faro-balancer",
    "faro-demand-collector",
];
const WORKERS: [&str; 3] = ["w0", "w1", "w2"];

/// Waits until a dispatcher other than `not` holds the leader lease; its id.
async fn wait_leader(
    leases: &async_nats::jetstream::kv::Store,
    not: Option<&str>,
    limit: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(entry)) = leases.entry(faro_dispatcher::leader::LEADER_KEY).await {
            let id = String::from_utf8_lossy(&entry.value).into_owned();
            if entry.operation == async_nats::jetstream::kv::Operation::Put
                && Some(id.as_str()) != not
            {
                return Ok(id);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no new leader within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes one submission until JetStream stores it (the same message id each time, so a
/// publish that was stored but not confirmed is stored once).
async fn submit(
    js: &async_nats::jetstream::Context,
    ns: &faro_shared::Namespace,
    jobs: &[serde_json::Value],
    id: &str,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({ "jobs": jobs }))?;
    let limit = Instant::now() + Duration::from_secs(600);
    loop {
        match publish(js, ns, body.clone(), id).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                anyhow::ensure!(
                    Instant::now() < limit && !stop.is_cancelled(),
                    "submission {id} never stored: {error:#}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn publish(
    js: &async_nats::jetstream::Context,
    ns: &faro_shared::Namespace,
    body: Vec<u8>,
    id: &str,
) -> anyhow::Result<()> {
    let ack = js
        .send_publish(
            ns.submit_subject(),
            async_nats::jetstream::message::PublishMessage::build()
                .payload(body.into())
                .message_id(id),
        )
        .await?;
    tokio::time::timeout(Duration::from_secs(5), ack)
        .await
        .context("no acknowledgement within 5 s")??;
    Ok(())
}

/// Submits `runs` one-shot sim runs in batches over `over`; the job ids JetStream stored.
async fn load(
    js: async_nats::jetstream::Context,
    ns: faro_shared::Namespace,
    runs: usize,
    targets: usize,
    over: Duration,
    stop: CancellationToken,
) -> anyhow::Result<Vec<String>> {
    const BATCH: usize = 50;
    let batches = runs.div_ceil(BATCH).max(1);
    let every = over / u32::try_from(batches).unwrap_or(u32::MAX);
    let mut accepted = Vec::with_capacity(runs);
    for (index, first) in (0..runs).step_by(BATCH).enumerate() {
        let started = Instant::now();
        let ids: Vec<String> = (first..(first + BATCH).min(runs))
            .map(|i| format!("c{i}"))
            .collect();
        let jobs: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(k, id)| {
                serde_json::json!({
                    "id": id, "queue": "chaos", "kind": "sim",
                    "target": format!("t{}", (first + k) % targets), "timeout": "5m",
                    "params": {"duration_ms": [20, 1500], "outcomes": {"succeeded": 1}},
                })
            })
            .collect();
        submit(&js, &ns, &jobs, &format!("chaos-{index}"), &stop).await?;
        accepted.extend(ids);
        tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
    }
    Ok(accepted)
}

/// Waits until every accepted one-shot run exists and every run accepted before `cutoff` is
/// terminal.
async fn drain(
    pool: &deadpool_postgres::Pool,
    one_shot: usize,
    cutoff: DateTime<Utc>,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let counted = async {
            let client = pool.get().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM runs WHERE job_id LIKE 'c%'),
                            (SELECT count(*) FROM runs
                              WHERE status IN ('pending', 'dispatched')
                                AND (slot_at IS NULL OR slot_at <= $1))",
                    &[&cutoff],
                )
                .await?;
            anyhow::Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
        }
        .await;
        let last = match counted {
            Ok((runs, open)) if runs >= one_shot as i64 && open == 0 => return Ok(()),
            Ok((runs, open)) => format!("{runs} of {one_shot} one-shot runs, {open} open"),
            Err(error) => format!("{error:#}"),
        };
        anyhow::ensure!(Instant::now() < deadline, "after {limit:?}: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counts what the suite promises, from PostgreSQL and the journals.
async fn count(
    pool: &deadpool_postgres::Pool,
    accepted: &[String],
    fleet: &Fleet,
    cutoff: DateTime<Utc>,
    interval: Duration,
) -> anyhow::Result<Figures> {
    let client = pool.get().await?;
    let mut figures = Figures::default();

    // One-shot jobs: each exactly one run, ended.
    let rows = client
        .query(
            "SELECT job_id, count(*), count(*) FILTER (WHERE status NOT IN ('pending', 'dispatched'))
               FROM runs WHERE job_id LIKE 'c%' GROUP BY job_id",
            &[],
        )
        .await?;
    let runs: BTreeMap<String, (i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut lost = 0;
    let mut twice = 0;
    for id in accepted {
        match runs.get(id) {
            Some((_, ended)) if *ended >= 1 => {}
            _ => lost += 1,
        }
        if runs.get(id).is_some_and(|(all, _)| *all > 1) {
            twice += 1;
        }
    }
    // Recurring runs of slots before the cutoff: ended.
    let open_recurring: i64 = client
        .query_one(
            "SELECT count(*) FROM runs WHERE slot_at <= $1 AND status IN ('pending', 'dispatched')",
            &[&cutoff],
        )
        .await?
        .get(0);
    let recurring_runs: i64 = client
        .query_one("SELECT count(*) FROM runs WHERE slot_at <= $1", &[&cutoff])
        .await?
        .get(0);
    let late: i64 = client
        .query_one("SELECT count(*) FROM run_attempts WHERE late", &[])
        .await?
        .get(0);
    figures.runs = accepted.len() + usize::try_from(recurring_runs).unwrap_or(0);
    figures.lost = lost + usize::try_from(open_recurring).unwrap_or(0);
    figures.details.push(format!(
        "lost: {lost} one-shot jobs without an ended run, {open_recurring} recurring runs open"
    ));

    // Attempts the dispatcher ended itself for want of a result: not a broken promise (the
    // run was tried again), but a message lost somewhere, worth a look.
    let rows = client
        .query(
            "SELECT id::text FROM runs WHERE error LIKE 'no result within%'
             UNION ALL
             SELECT run_id::text FROM run_attempts WHERE error LIKE 'no result within%'",
            &[],
        )
        .await?;
    if !rows.is_empty() {
        let ids: Vec<String> = rows.iter().take(10).map(|r| r.get(0)).collect();
        figures.details.push(format!(
            "{} attempts timed out without a result (the dispatcher ended them): {}",
            rows.len(),
            ids.join(", ")
        ));
    }

    // The tallies `faro status` sums against the runs, in one snapshot (recurring runs may
    // still be written).
    let miscounted: i64 = client
        .query_one(
            "WITH t AS (SELECT status, sum(runs) AS n FROM run_tallies GROUP BY 1),
                  c AS (SELECT status, count(*) AS n FROM runs GROUP BY 1)
             SELECT COALESCE(sum(abs(COALESCE(t.n, 0) - COALESCE(c.n, 0))), 0)::int8
               FROM t FULL JOIN c USING (status)",
            &[],
        )
        .await?
        .get(0);
    figures.miscounted = usize::try_from(miscounted).unwrap_or(usize::MAX);
    figures.details.push(format!(
        "miscounted: {miscounted} runs counted by status other than the tallies say"
    ));

    // The workers' own record of every execution.
    let mut executions = Vec::new();
    for (path, killed) in fleet.journals() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        executions.extend(spans(
            &journal::parse(&text),
            killed.unwrap_or_else(Utc::now),
        ));
    }
    figures.executions = executions.len();
    let stored_twice = stored_twice(&executions);
    figures.doubled = twice + stored_twice + usize::try_from(late).unwrap_or(0);
    figures.details.push(format!(
        "doubled: {twice} jobs with two runs, {stored_twice} attempts stored twice, {late} results recorded after their run ended"
    ));
    let over = over_limit(&executions, LIMIT);
    figures.over_limit = over.len();
    for (target, at) in over.iter().take(10) {
        figures.details.push(format!(
            "over the limit: target {target} at {}",
            at.to_rfc3339()
        ));
    }

    // Recurring slots: each a run or a recorded skip.
    let rows = client
        .query(
            "SELECT job_id, slot_at FROM runs WHERE slot_at IS NOT NULL ORDER BY job_id, slot_at",
            &[],
        )
        .await?;
    let mut slots: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    for row in &rows {
        slots.entry(row.get(0)).or_default().push(row.get(1));
    }
    let until = cutoff - chrono::Duration::from_std(interval)?;
    for (job, fired) in &slots {
        let missed = missed_slots(fired, interval, until);
        if missed > 0 {
            figures
                .details
                .push(format!("missed slots: {job} missed {missed}"));
        }
        figures.missed_slots += missed;
    }
    Ok(figures)
}

/// Every run and attempt as PostgreSQL recorded them, one per line, for a reader of the logs.
async fn dump_runs(pool: &deadpool_postgres::Pool, path: &Path) -> anyhow::Result<()> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT concat_ws(E'\t', id, job_id, target, status, attempt, dispatched_at,
                              started_at, finished_at, worker_id, error)
               FROM runs
             UNION ALL
             SELECT concat_ws(E'\t', run_id, 'attempt', attempt, outcome, started_at,
                              finished_at, worker_id, error, late, recorded_at)
               FROM run_attempts",
            &[],
        )
        .await?;
    let text: String = rows
        .iter()
        .map(|r| format!("{}\n", r.get::<_, String>(0)))
        .collect();
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// One execution of one attempt by one worker process, from its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub run_id: uuid::Uuid,
    pub attempt: u32,
    pub delivery: i64,
    pub stream_seq: u64,
    pub target: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Pure: the executions of one worker process's journal; one never ended (the process was
/// killed) ends at `killed`.
pub fn spans(lines: &[Execution], killed: DateTime<Utc>) -> Vec<Span> {
    let mut open: BTreeMap<(uuid::Uuid, u32, i64), &Execution> = BTreeMap::new();
    let mut spans = Vec::new();
    for line in lines {
        let key = (line.run_id, line.attempt, line.delivery);
        match line.event {
            Event::Start => {
                open.insert(key, line);
            }
            Event::End => {
                if let Some(start) = open.remove(&key) {
                    spans.push(span(start, line.at));
                }
            }
        }
    }
    spans.extend(open.into_values().map(|start| span(start, killed)));
    spans
}

fn span(start: &Execution, end: DateTime<Utc>) -> Span {
    Span {
        run_id: start.run_id,
        attempt: start.attempt,
        delivery: start.delivery,
        stream_seq: start.stream_seq,
        target: start.target.as_ref().map(ToString::to_string),
        start: start.at,
        end: end.max(start.at),
    }
}

/// Pure: attempts JetStream stored twice: one attempt executed from two stream messages. (Not
/// two first deliveries: a server that lost its consumers' state delivers a message as new.)
pub fn stored_twice(spans: &[Span]) -> usize {
    let mut copies: BTreeMap<(uuid::Uuid, u32), BTreeSet<u64>> = BTreeMap::new();
    for s in spans {
        copies
            .entry((s.run_id, s.attempt))
            .or_default()
            .insert(s.stream_seq);
    }
    copies.values().filter(|seqs| seqs.len() > 1).count()
}

/// Pure: each moment a target went above `limit` executions at once (an end and a start at
/// the same instant: the end first), as (target, when).
pub fn over_limit(spans: &[Span], limit: usize) -> Vec<(String, DateTime<Utc>)> {
    let mut by_target: BTreeMap<&str, Vec<(DateTime<Utc>, i32)>> = BTreeMap::new();
    for s in spans {
        let Some(target) = &s.target else { continue };
        let edges = by_target.entry(target).or_default();
        edges.push((s.start, 1));
        edges.push((s.end, -1));
    }
    let mut moments = Vec::new();
    for (target, mut edges) in by_target {
        edges.sort();
        let mut now = 0i32;
        for (at, delta) in edges {
            let before = now;
            now += delta;
            if before <= limit as i32 && now > limit as i32 {
                moments.push((target.to_owned(), at));
            }
        }
    }
    moments
}

/// Pure: slots of one recurring job between its first fired slot and `until` that have
/// neither a run nor a recorded skip (`fired`: its slots with a row, any order).
pub fn missed_slots(fired: &[DateTime<Utc>], interval: Duration, until: DateTime<Utc>) -> usize {
    let Some(first) = fired.iter().min().copied() else {
        return 0;
    };
    let Ok(step) = chrono::Duration::from_std(interval) else {
        return 0;
    };
    if step <= chrono::Duration::zero() {
        return 0;
    }
    let present: BTreeSet<DateTime<Utc>> = fired.iter().copied().collect();
    let mut missed = 0;
    let mut slot = first;
    while slot <= until {
        if !present.contains(&slot) {
            missed += 1;
        }
        slot += step;
    }
    missed
}

/// The processes of the suite, by name.
#[derive(Default)]
struct Fleet {
    procs: BTreeMap<String, Proc>,
}

struct Proc {
    program: PathBuf,
    env: Env,
    dir: PathBuf,
    name: String,
    journal: bool,
    child: Option<Child>,
    instance: usize,
    /// Each instance's journal, with when it was killed (None: it ended on its own).
    journals: Vec<(PathBuf, Option<DateTime<Utc>>)>,
}

impl Fleet {
    fn add(&mut self, name: &str, program: PathBuf, env: Env, dir: &Path, journal: bool) {
        self.procs.insert(
            name.to_owned(),
            Proc {
                program,
                env,
                dir: dir.to_owned(),
                name: name.to_owned(),
                journal,
                child: None,
                instance: 0,
                journals: Vec::new(),
            },
        );
    }

    fn get(&mut self, name: &str) -> anyhow::Result<&mut Proc> {
        self.procs
            .get_mut(name)
            .with_context(|| format!("no process {name}"))
    }

    fn start_all(&mut self) -> anyhow::Result<()> {
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for name in names {
            self.start(&name)?;
        }
        Ok(())
    }

    fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let proc = self.get(name)?;
        proc.instance += 1;
        let stem = format!("{}.{}", proc.name, proc.instance);
        let log = std::fs::File::create(proc.dir.join(format!("{stem}.log")))?;
        let mut env = proc.env.clone();
        if proc.journal {
            let path = proc.dir.join(format!("{stem}.jsonl"));
            env.set("FARO_WORKER_JOURNAL", path.display().to_string());
            proc.journals.push((path, None));
        }
        let child = Command::new(&proc.program)
            .env_clear()
            .envs(env.faro_vars())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", proc.program.display()))?;
        proc.child = Some(child);
        Ok(())
    }

    /// SIGKILL: nothing cleaned up, nothing given back.
    fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let proc = self.get(name)?;
        let mut child = proc.child.take().context("not running")?;
        child.kill()?;
        let killed = Utc::now();
        child.wait()?;
        if let Some(last) = proc.journals.last_mut() {
            last.1 = Some(killed);
        }
        Ok(())
    }

    fn signal(&mut self, name: &str, signal: &str) -> anyhow::Result<()> {
        let proc = self.get(name)?;
        let pid = proc.child.as_ref().context("not running")?.id();
        send_signal(pid, signal)
    }

    /// SIGTERM to every process, workers first (their runs end or are given back, and
    /// journaled), waiting for each; SIGKILL for one that does not stop.
    fn stop_all(&mut self) {
        let mut order: Vec<&mut Proc> = self.procs.values_mut().collect();
        order.sort_by_key(|p| !p.journal);
        for proc in order {
            let Some(mut child) = proc.child.take() else {
                continue;
            };
            let _ = send_signal(child.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                if let Some(last) = proc.journals.last_mut() {
                    last.1 = Some(Utc::now());
                }
            }
            let _ = child.wait();
        }
    }

    fn journals(&self) -> Vec<(PathBuf, Option<DateTime<Utc>>)> {
        self.procs
            .values()
            .flat_map(|p| p.journals.iter().cloned())
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for proc in self.procs.values_mut() {
            if let Some(mut child) = proc.child.take() {
                let _ = send_signal(child.id(), "-CONT");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faro_shared::domain::{QueueName, TargetId, WorkerId};

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn line(event: Event, run: u128, delivery: i64, target: &str, at: i64) -> Execution {
        seq_line(event, run, delivery, 1, target, at)
    }

    fn seq_line(
        event: Event,
        run: u128,
        delivery: i64,
        stream_seq: u64,
        target: &str,
        at: i64,
    ) -> Execution {
        Execution {
            event,
            run_id: uuid::Uuid::from_u128(run),
            attempt: 1,
            queue: QueueName::parse("q").unwrap(),
            target: Some(TargetId::parse(target).unwrap()),
            worker_id: WorkerId::parse("w").unwrap(),
            delivery,
            stream_seq,
            at: t(at),
            outcome: None,
            abandoned: None,
        }
    }

    fn spans_of(lines: &[Execution]) -> Vec<Span> {
        spans(lines, t(10_000))
    }

    #[test]
    fn an_execution_never_ended_lasts_until_its_worker_was_killed() {
        let lines = [
            line(Event::Start, 1, 1, "a", 0),
            line(Event::Start, 2, 1, "a", 100),
            line(Event::End, 1, 1, "a", 500),
        ];
        let spans = spans_of(&lines);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].start, spans[0].end), (t(0), t(500)));
        assert_eq!((spans[1].start, spans[1].end), (t(100), t(10_000)));
    }

    #[test]
    fn a_target_over_its_limit_is_counted_once_per_moment_and_touching_ends_do_not_count() {
        let mut lines = Vec::new();
        for run in 0..3 {
            lines.push(line(Event::Start, run, 1, "a", 0));
            lines.push(line(Event::End, run, 1, "a", 1000));
        }
        // Starts as one ends: never four at once.
        lines.push(line(Event::Start, 9, 1, "a", 1000));
        lines.push(line(Event::End, 9, 1, "a", 2000));
        assert!(over_limit(&spans_of(&lines), 3).is_empty());
        // A fourth during the first three: one moment; another target is not counted.
        lines.push(line(Event::Start, 10, 2, "a", 500));
        lines.push(line(Event::End, 10, 2, "a", 600));
        lines.push(line(Event::Start, 11, 1, "b", 500));
        lines.push(line(Event::End, 11, 1, "b", 600));
        assert_eq!(over_limit(&spans_of(&lines), 3), [("a".to_owned(), t(500))]);
    }

    #[test]
    fn an_attempt_executed_from_two_stream_messages_was_stored_twice() {
        let lines = [
            line(Event::Start, 1, 1, "a", 0),
            line(Event::End, 1, 1, "a", 10),
            // A redelivery is not a second copy, nor a first delivery again (a server that
            // lost its consumer's state).
            line(Event::Start, 1, 2, "a", 20),
            line(Event::End, 1, 2, "a", 30),
            line(Event::Start, 1, 1, "a", 40),
            line(Event::End, 1, 1, "a", 50),
        ];
        assert_eq!(stored_twice(&spans_of(&lines)), 0);
        let mut twice = lines.to_vec();
        twice.push(seq_line(Event::Start, 1, 1, 2, "a", 60));
        assert_eq!(stored_twice(&spans_of(&twice)), 1);
    }

    #[test]
    fn slots_without_a_row_between_the_first_and_the_cutoff_are_missed() {
        let step = Duration::from_secs(5);
        let fired = [t(0), t(5_000), t(15_000)];
        assert_eq!(missed_slots(&fired, step, t(15_000)), 1);
        assert_eq!(missed_slots(&fired, step, t(25_000)), 3);
        assert_eq!(missed_slots(&[], step, t(25_000)), 0);
    }

    #[test]
    fn figures_print_one_line_each() {
        let figures = Figures {
            runs: 10,
            drain_secs: 1.25,
            ..Figures::default()
        };
        let lines = figures.lines();
        assert!(lines.contains(&"chaos_runs=10".to_owned()));
        assert!(lines.contains(&"chaos_lost=0".to_owned()));
        assert!(
            lines.contains(&"chaos_drain_secs=1.2".to_owned())
                || lines.contains(&"chaos_drain_secs=1.3".to_owned())
        );
        assert!(figures.clean());
    }
}
