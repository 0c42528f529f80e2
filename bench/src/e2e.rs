//! The end-to-end measure (`faro-bench e2e`, and `history` on top of a long history):
//! zero-duration `sim` runs pushed through a running system, from submission to terminal
//! status recorded.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;

use crate::system::System;

/// What to push through.
#[derive(Debug, Clone)]
pub struct E2e {
    /// Runs measured (after a warm-up of up to 1,000).
    pub runs: usize,
    /// Jobs per submission message.
    pub batch: usize,
    /// Targets the runs are spread over.
    pub targets: usize,
    /// Give up after this long.
    pub limit: Duration,
    /// Whether the database holds other runs (a history): then only the runs made since the
    /// measure began are counted while waiting, by their days of history. On an empty
    /// database the whole table is counted, which reads less.
    pub on_history: bool,
}

impl E2e {
    /// `runs` runs in submissions of 1,000 over 50 targets, within 10 minutes.
    pub fn of(runs: usize) -> Self {
        Self {
            runs,
            batch: 1_000,
            targets: 50,
            limit: Duration::from_secs(600),
            on_history: false,
        }
    }
}

/// What one measure gave.
#[derive(Debug, Clone)]
pub struct Figures {
    pub runs: usize,
    /// Runs of the measure recorded, and those terminal.
    pub recorded: i64,
    pub terminal: i64,
    pub secs: f64,
    pub runs_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

impl Figures {
    /// The `e2e_*` lines.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("e2e_runs={}", self.runs),
            format!("e2e_runs_recorded={}", self.recorded),
            format!("e2e_secs={:.3}", self.secs),
            format!("e2e_runs_per_sec={:.0}", self.runs_per_sec),
            format!("e2e_latency_p50_ms={:.1}", self.latency_p50_ms),
            format!("e2e_latency_p99_ms={:.1}", self.latency_p99_ms),
            format!("runs_lost={}", self.runs as i64 - self.terminal),
        ]
    }
}

/// Pushes `e2e.runs` runs through `system` and measures them. Only the runs made since it
/// started are counted (their days of history), so a long history already there costs the
/// measure nothing.
pub async fn measure(system: &System, e2e: &E2e) -> anyhow::Result<Figures> {
    let since = Utc::now();
    // Warm-up: queues exist, workers assigned and connections open before the clock starts.
    let warmup = 1_000.min(e2e.runs).max(1);
    let tag = format!("{}", since.timestamp_millis());
    system
        .submit(
            submission(0, warmup, e2e.targets, "bench"),
            &format!("warmup-{tag}"),
        )
        .await?;
    // On a history, only the runs made since the measure began are counted.
    let counted = e2e.on_history.then_some(since);
    system
        .wait_terminal_since(warmup as i64, e2e.limit, counted)
        .await
        .context("warm-up")?;

    let started = Instant::now();
    let start_ts = Utc::now();
    let mut sent = 0;
    let mut index = 0;
    while sent < e2e.runs {
        let count = e2e.batch.max(1).min(e2e.runs - sent);
        system
            .submit(
                submission(sent, count, e2e.targets, "bench"),
                &format!("bench-{tag}-{index}"),
            )
            .await?;
        sent += count;
        index += 1;
    }
    let total = (warmup + e2e.runs) as i64;
    let waited = system.wait_terminal_since(total, e2e.limit, counted).await;
    let wall = started.elapsed();

    let client = system.pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status NOT IN ('pending', 'dispatched')),
                    count(*),
                    EXTRACT(EPOCH FROM max(recorded_at) - $1::timestamptz)::float8,
                    (percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM recorded_at - submitted_at)))::float8,
                    (percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM recorded_at - submitted_at)))::float8
               FROM runs WHERE id >= faro_uuid_at($2) AND submission_id LIKE 'bench-%'",
            &[&start_ts, &since],
        )
        .await?;
    waited?;
    let terminal: i64 = row.get(0);
    let secs = row
        .get::<_, Option<f64>>(2)
        .unwrap_or(wall.as_secs_f64())
        .max(1e-9);
    Ok(Figures {
        runs: e2e.runs,
        recorded: row.get(1),
        terminal,
        secs,
        runs_per_sec: terminal as f64 / secs,
        latency_p50_ms: row.get::<_, Option<f64>>(3).unwrap_or(f64::NAN) * 1000.0,
        latency_p99_ms: row.get::<_, Option<f64>>(4).unwrap_or(f64::NAN) * 1000.0,
    })
}

/// A submission of `count` zero-duration `sim` jobs of `queue`, spread over `targets`.
fn submission(first: usize, count: usize, targets: usize, queue: &str) -> Vec<u8> {
    let jobs: Vec<_> = (first..first + count)
        .map(|i| {
            serde_json::json!({
                "queue": queue,
                "kind": "sim",
                "target": format!("t{}", i % targets),
                "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "jobs": jobs, "submitted_at": Utc::now() }))
        .unwrap_or_default()
}
