//! `faro-bench history`: the system on top of a long run history. Writes `--runs` ended runs
//! spread over the `--days` days before today with COPY (not the hot path: a year of polling
//! written in minutes), then measures with the whole system up:
//!
//! - `history_status_ms`: `faro status` (its API request), the median of 20;
//! - `history_list_p99_ms`: the 50 newest failed runs of one queue, and of one target (the
//!   `runs` request of `faro run list`), 20 of each;
//! - `history_job_facts_p99_ms`: `faro explain job` (a job's last run, success, failure and
//!   its five newest runs) of 20 jobs with 2,000 runs each;
//! - `history_e2e_runs_per_sec` on top of that history, beside `e2e_runs_per_sec` on an empty
//!   database: the means of three rounds, each an empty system's measure followed by the
//!   history's (same machine, same minutes), each round's figures printed too;
//! - `history_takeover_secs`: the leading dispatcher's process killed (SIGKILL) to the
//!   standby's first run published, on a 2 s leader lease;
//! - `history_retention_drop_secs`: dropping the oldest day.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::{SinkExt as _, StreamExt as _};

use faro_shared::domain::{QueueName, RunStatus, TargetId};
use faro_shared::messages::{Request as _, RunsRequest};

use crate::e2e;
use crate::system::{Options, System};

/// What to measure.
#[derive(Debug, Clone)]
pub struct HistoryBench {
    /// Ended runs written before measuring.
    pub runs: usize,
    /// Days before today they are spread over.
    pub days: u32,
    /// Runs of each end-to-end measure.
    pub e2e_runs: usize,
    /// The program the dispatchers run as (`<exe> dispatcher`: this binary), so that the
    /// leader's kill is a SIGKILL of its process.
    pub exe: std::path::PathBuf,
}

/// Queues, targets and jobs the history is spread over.
const QUEUES: usize = 20;
const TARGETS: usize = 1_000;
const JOBS: usize = 10_000;

/// Rounds of the end-to-end measure, each on an empty database then on the history.
const E2E_ROUNDS: usize = 3;

/// Runs per COPY statement (progress is printed after each).
const CHUNK: usize = 1_000_000;

/// Runs the benchmark, handing each `key=value` line to `report` as soon as it is measured
/// (the load alone takes minutes: a later failure keeps the figures already found).
pub async fn run(bench: &HistoryBench, mut report: impl FnMut(String)) -> anyhow::Result<()> {
    let mut lines = Reporter(&mut report);
    let mut system = System::start(options(&bench.exe)).await?;
    let loaded = Instant::now();
    load(&system.pool, bench.runs, bench.days).await?;
    lines.push(format!("history_runs={}", bench.runs));
    lines.push(format!(
        "history_load_secs={:.1}",
        loaded.elapsed().as_secs_f64()
    ));

    let mut status = Vec::new();
    for _ in 0..20 {
        let asked = Instant::now();
        let answer = system
            .client
            .request(system.ns.api_subject("dispatcher", "status"), "".into())
            .await?;
        status.push(asked.elapsed().as_secs_f64() * 1000.0);
        let answer: serde_json::Value = serde_json::from_slice(&answer.payload)?;
        anyhow::ensure!(answer.get("error").is_none(), "status refused: {answer}");
    }
    lines.push(format!(
        "history_status_ms={:.1}",
        quantile(&mut status, 0.5)
    ));

    let mut lists = Vec::new();
    for i in 0..20 {
        for request in [
            RunsRequest {
                queue: Some(QueueName::parse(format!("q{}", i % QUEUES))?),
                ..failed()
            },
            RunsRequest {
                target: Some(TargetId::parse(format!("olt-{}", i * 37 % TARGETS))?),
                ..failed()
            },
        ] {
            let asked = Instant::now();
            let answer = faro_shared::api::request(
                &system.client,
                RunsRequest::subject(&system.ns),
                request.encode()?.into(),
                Duration::from_secs(30),
            )
            .await?;
            lists.push(asked.elapsed().as_secs_f64() * 1000.0);
            let page = RunsRequest::decode_reply(&answer)?;
            // A full page, unless the history holds fewer (a small --runs).
            anyhow::ensure!(
                (page.runs.len() == 50 || page.next.is_none())
                    && !page.runs.is_empty()
                    && page.runs.iter().all(|r| r.status == RunStatus::Failed),
                "{request:?} listed {} runs, expected 50 failed ones",
                page.runs.len()
            );
        }
    }
    lines.push(format!(
        "history_list_p99_ms={:.1}",
        quantile(&mut lists, 0.99)
    ));

    let mut facts = Vec::new();
    for i in 0..20 {
        let asked = Instant::now();
        let job =
            faro_dispatcher::store::job_facts(&system.pool, &format!("job-{}", i * 491 % JOBS))
                .await?;
        facts.push(asked.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            job.is_some_and(|job| job.recent.len() == 5),
            "job-{} has no history",
            i * 491 % JOBS
        );
    }
    lines.push(format!(
        "history_job_facts_p99_ms={:.1}",
        quantile(&mut facts, 0.99)
    ));

    // The end-to-end measure on an empty database (a system of its own, started for it) and
    // on the history, in turns: this machine's throughput drifts by a quarter from one
    // minute to the next, so each figure is the mean of its rounds, taken in the same minutes.
    let (mut empty_rates, mut history_rates) = (Vec::new(), Vec::new());
    for round in 1..=E2E_ROUNDS {
        let empty = System::start(options(&bench.exe)).await?;
        let reference = e2e::measure(&empty, &e2e::E2e::of(bench.e2e_runs)).await?;
        empty.stop().await?;
        lines.push(format!(
            "e2e_runs_per_sec_{round}={:.0}",
            reference.runs_per_sec
        ));
        empty_rates.push(reference.runs_per_sec);
        let on_history = e2e::measure(
            &system,
            &e2e::E2e {
                on_history: true,
                ..e2e::E2e::of(bench.e2e_runs)
            },
        )
        .await?;
        lines.push(format!(
            "history_e2e_runs_per_sec_{round}={:.0}",
            on_history.runs_per_sec
        ));
        history_rates.push(on_history.runs_per_sec);
    }
    let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    lines.push(format!("e2e_runs_per_sec={:.0}", mean(&empty_rates)));
    lines.push(format!(
        "history_e2e_runs_per_sec={:.0}",
        mean(&history_rates)
    ));

    let oldest = faro_dispatcher::store::history_days(&system.pool)
        .await?
        .first()
        .copied()
        .context("no day of history")?;
    let dropping = Instant::now();
    faro_dispatcher::store::drop_history_day(&system.pool, oldest)
        .await
        .map_err(|error| anyhow::anyhow!("{error:#}"))?;
    lines.push(format!(
        "history_retention_drop_secs={:.2}",
        dropping.elapsed().as_secs_f64()
    ));
    // Last: the leader is gone after it.
    lines.push(format!(
        "history_takeover_secs={:.2}",
        takeover(&mut system).await?.as_secs_f64()
    ));

    system.stop().await?;
    Ok(())
}

/// The first page of 50 failed runs.
fn failed() -> RunsRequest {
    RunsRequest {
        status: Some(RunStatus::Failed),
        limit: 50,
        ..RunsRequest::default()
    }
}

/// Hands each line on as it comes.
struct Reporter<'a, F: FnMut(String)>(&'a mut F);

impl<F: FnMut(String)> Reporter<'_, F> {
    fn push(&mut self, line: String) {
        (self.0)(line);
    }
}

/// Two dispatchers, each a process of `exe`, on a 2 s lease (a standby takes over within
/// about that), two workers.
fn options(exe: &std::path::Path) -> Options {
    Options {
        dispatchers: 2,
        workers: 2,
        capacity: 500,
        env: vec![("FARO_LEADER_LEASE_TTL".into(), "2s".into())],
        dispatcher_exe: Some(exe.to_owned()),
        ..Options::default()
    }
}

/// Kills the leading dispatcher's process (SIGKILL), submits one run at once, and returns the time from the kill
/// to the first run published by the next leader.
async fn takeover(system: &mut System) -> anyhow::Result<Duration> {
    let mut published = system.client.subscribe(system.ns.jobs_wildcard()).await?;
    let leader = system.wait_leader(None, Duration::from_secs(10)).await?;
    let killed = Instant::now();
    system.kill(&format!("dispatcher {leader}"))?;
    system
        .submit_jobs(
            &[serde_json::json!({"queue": "takeover", "kind": "sim",
                "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}}})],
            "takeover",
        )
        .await?;
    tokio::time::timeout(Duration::from_secs(60), published.next())
        .await
        .context("no run published within 60 s of the kill")?
        .context("the subscription to the jobs ended")?;
    Ok(killed.elapsed())
}

/// Writes `runs` ended runs spread evenly over the `days` days before today, in their days'
/// partitions, with COPY; then vacuums, analyzes and checkpoints them. Progress goes to standard error, a
/// line per million runs.
#[allow(clippy::print_stderr)]
pub async fn load(pool: &Pool, runs: usize, days: u32) -> anyhow::Result<()> {
    let client = pool.get().await?;
    // A million rows a statement, then a vacuum of them all: longer than the services'
    // statement timeout allows (this connection goes back to the pool as it was).
    client.batch_execute("SET statement_timeout = 0").await?;
    let today = Utc::now().date_naive();
    for back in 1..=u64::from(days) {
        client
            .query_one(
                "SELECT faro_make_history_day($1)",
                &[&(today - chrono::Days::new(back))],
            )
            .await?;
    }
    let start = (today - chrono::Days::new(u64::from(days)))
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis();
    let span = i64::from(days) * 86_400_000;
    // The jobs the runs are of (one-shot definitions, each on one queue), so that a job's
    // facts can be asked.
    let (queues, jobs) = (
        i32::try_from(QUEUES).unwrap_or(i32::MAX),
        i32::try_from(JOBS).unwrap_or(i32::MAX),
    );
    client
        .execute(
            "INSERT INTO queues (name, kinds)
             SELECT 'q' || n, '{sim}' FROM generate_series(0, $1 - 1) n
             ON CONFLICT (name) DO NOTHING",
            &[&queues],
        )
        .await
        .context("cannot define the history's queues")?;
    client
        .execute(
            "INSERT INTO jobs (id, queue, kind)
             SELECT 'job-' || n, 'q' || (n % $1), 'sim' FROM generate_series(0, $2 - 1) n
             ON CONFLICT (id) DO NOTHING",
            &[&queues, &jobs],
        )
        .await
        .context("cannot define the history's jobs")?;
    let mut written = 0;
    while written < runs {
        let count = CHUNK.min(runs - written);
        let sink = client
            .copy_in(
                "COPY runs (id, job_id, queue, target, kind, params, priority, status,
                            created_at, dispatched_at, started_at, finished_at, recorded_at,
                            worker_id, simulated, error) FROM STDIN",
            )
            .await?;
        futures::pin_mut!(sink);
        let mut text = String::with_capacity(64 * 1024);
        for i in written..written + count {
            let at = start + i64::try_from(i).unwrap_or(0) * span / runs.max(1) as i64;
            row(&mut text, i, at);
            if text.len() > 60 * 1024 {
                sink.send(bytes::Bytes::from(std::mem::take(&mut text)))
                    .await?;
            }
        }
        sink.send(bytes::Bytes::from(text)).await?;
        sink.finish().await?;
        written += count;
        eprintln!("history: {written} of {runs} runs written");
    }
    // Vacuumed as a history months old would be: otherwise autovacuum takes its first pass
    // over every day just written while the figures are measured.
    eprintln!("history: vacuuming");
    client
        .batch_execute("VACUUM (ANALYZE) runs, run_failures, run_tallies")
        .await?;
    // And written out: the load's and the vacuum's dirty pages are not flushed by a
    // checkpoint in the middle of the figures.
    eprintln!("history: checkpoint");
    client.batch_execute("CHECKPOINT").await?;
    client.batch_execute("RESET statement_timeout").await?;
    Ok(())
}

/// One COPY line: run `i`, made at `at` (ms) and ended 500 ms later, of a queue, target and
/// job drawn from `i`; 1 in 100 failed, 1 in 100 timed out.
fn row(text: &mut String, i: usize, at: i64) {
    use std::fmt::Write as _;
    // splitmix64: every field drawn independently of the others.
    let mut h = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&h.to_be_bytes());
    random[8..].copy_from_slice(&(i as u16).to_be_bytes());
    let id = uuid::Builder::from_unix_timestamp_millis(u64::try_from(at).unwrap_or(0), &random)
        .into_uuid();
    let time = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(at + ms)
            .unwrap_or_default()
            .to_rfc3339()
    };
    let draw = |shift: u32, of: usize| (h >> shift) as usize % of;
    let (status, error) = match draw(0, 100) {
        0 => ("failed", "sim: failed"),
        1 => ("timed_out", "no result within 60 s"),
        _ => ("succeeded", "\\N"),
    };
    let _ = writeln!(
        text,
        "{id}\tjob-{}\tq{}\tolt-{}\tsim\t{{}}\t5\t{status}\t{}\t{}\t{}\t{}\t{}\tw{}\tt\t{error}",
        draw(32, JOBS),
        draw(8, QUEUES),
        draw(16, TARGETS),
        time(0),
        time(0),
        time(10),
        time(500),
        time(510),
        draw(48, 10),
    );
}

/// The `q` quantile of `values` (sorted in place); NaN when empty.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1)) - 1;
    values.get(i).copied().unwrap_or(f64::NAN)
}
