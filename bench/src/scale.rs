//! `faro-bench scale`: a dispatcher starting over a million recurring job definitions.
//! Prints how long it takes from start to the whole schedule loaded and its first due runs
//! published, and its peak resident memory; as a reference, how long a plain client takes to
//! read the same definitions from PostgreSQL.

use std::time::{Duration, Instant};

use faro_shared::testing::{TestBus, TestDb};
use faro_shared::{http, pg};
use tokio_util::sync::CancellationToken;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ScaleBench {
    pub jobs: usize,
    pub interval: Duration,
    pub targets: usize,
}

/// Rows inserted per statement while setting up, with progress shown between them.
const INSERT_CHUNK: usize = 100_000;

/// Runs the benchmark; returns `key=value` lines.
#[allow(clippy::print_stderr)]
pub async fn run(bench: &ScaleBench) -> anyhow::Result<Vec<String>> {
    let bus = TestBus::start().await?;
    let db = TestDb::create().await?;
    let pool = pg::pool(&db.config())?;
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO queues (name, kinds) VALUES ('poll', '{sim}')",
            &[],
        )
        .await?;
    let interval_ms = i64::try_from(bench.interval.as_millis())?;
    let targets = i64::try_from(bench.targets.max(1))?;
    let started = Instant::now();
    for first in (0..bench.jobs).step_by(INSERT_CHUNK) {
        let last = (first + INSERT_CHUNK).min(bench.jobs);
        client
            .execute(
                "INSERT INTO jobs (id, queue, kind, target, params, interval_ms)
                 SELECT 'scale-' || g, 'poll', 'sim', 't' || (g % $3),
                        '{\"duration_ms\": 0, \"outcomes\": {\"succeeded\": 1}}', $4
                   FROM generate_series($1::int8, $2::int8 - 1) AS g",
                &[
                    &i64::try_from(first)?,
                    &i64::try_from(last)?,
                    &targets,
                    &interval_ms,
                ],
            )
            .await?;
        eprintln!("{last}/{} job definitions written", bench.jobs);
    }
    client.execute("ANALYZE jobs", &[]).await?;
    let setup_secs = started.elapsed().as_secs_f64();

    // Reference: a plain client reading every definition the dispatcher reads.
    let started = Instant::now();
    let rows = client
        .query(
            "SELECT id, queue, kind, target, params, priority, max_attempts, retry_on,
                    interval_ms, after_job, run_if, timeout_ms, overlap
               FROM jobs WHERE enabled AND interval_ms IS NOT NULL",
            &[],
        )
        .await?;
    let reference_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(rows.len() == bench.jobs, "read {} definitions", rows.len());
    drop(rows);
    drop(client);

    // The dispatcher, in this process: peak memory counted from here.
    reset_peak_rss();
    let before_mib = rss_mib("VmRSS:");
    let env = bus.env(Some(&db));
    let config = faro_dispatcher::Config::from_env(&env)?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let dispatcher = tokio::spawn(faro_dispatcher::run(config, shutdown.child_token()));
    let loaded = format!("faro_dispatcher_recurring_jobs {}", bench.jobs);
    let mut loaded_secs = None;
    let limit = Duration::from_secs(600);
    let load_secs = loop {
        let metrics = http::metrics_handle().render();
        if loaded_secs.is_none() && metrics.lines().any(|l| l == loaded) {
            loaded_secs = Some(started.elapsed().as_secs_f64());
        }
        let dispatched = metrics
            .lines()
            .filter(|l| l.starts_with("faro_dispatcher_runs_dispatched_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if loaded_secs.is_some() && dispatched > 0.0 {
            break started.elapsed().as_secs_f64();
        }
        anyhow::ensure!(!dispatcher.is_finished(), "the dispatcher stopped");
        anyhow::ensure!(
            started.elapsed() < limit,
            "schedule not loaded and dispatching after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A few seconds of firing and recording slots count towards the peak too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let peak_mib = rss_mib("VmHWM:");
    // More than one: the dispatcher lost its lease under the load, and the figures are void.
    let leaderships = http::metrics_handle()
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix("faro_dispatcher_leaderships_total ")?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_default();
    shutdown.cancel();
    dispatcher.await??;
    Ok(vec![
        format!("scale_jobs={}", bench.jobs),
        format!("scale_setup_secs={setup_secs:.1}"),
        format!("scale_reference_read_secs={reference_secs:.2}"),
        format!(
            "scale_schedule_loaded_secs={:.2}",
            loaded_secs.unwrap_or_default()
        ),
        format!("scale_load_secs={load_secs:.2}"),
        format!("scale_rss_before_mib={before_mib:.0}"),
        format!("scale_rss_mib={peak_mib:.0}"),
        format!("scale_leaderships={leaderships}"),
    ])
}

/// Resets this process's peak resident memory (VmHWM) to its current size (Linux).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `/proc/self/status` memory line, in MiB (0 where unavailable).
fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
