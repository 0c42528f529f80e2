//! `faro-bench schedule`: recurring jobs on zero-duration workers. Prints the lag from each
//! slot to its run's start on a worker, and checks that every slot in the window ran once.

use std::time::Duration;

use faro_shared::domain::JobId;

use crate::system::{Options, System};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ScheduleBench {
    pub jobs: usize,
    pub interval: Duration,
    pub intervals: u32,
    pub targets: usize,
}

/// Runs the benchmark; returns `key=value` lines.
pub async fn run(bench: &ScheduleBench) -> anyhow::Result<Vec<String>> {
    let system = System::start(Options {
        workers: 2,
        capacity: 500,
        ..Options::default()
    })
    .await?;
    let interval_secs = bench.interval.as_secs_f64();
    for (index, first) in (0..bench.jobs).step_by(1_000).enumerate() {
        let batch: Vec<_> = (first..(first + 1_000).min(bench.jobs))
            .map(|i| {
                serde_json::json!({
                    "id": format!("s{i}"), "queue": "poll", "kind": "sim",
                    "target": format!("t{}", i % bench.targets), "interval": interval_secs,
                    "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}},
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "jobs": batch }))?;
        system.submit(body, &format!("schedule-{index}")).await?;
    }
    // Every definition recorded; measure whole intervals from a little later on.
    system
        .wait_count(
            "SELECT count(*) FROM jobs",
            bench.jobs as i64,
            Duration::from_secs(300),
        )
        .await?;
    let from = chrono::Utc::now() + chrono::Duration::seconds(2);
    let window = bench.interval * bench.intervals;
    let until = from + chrono::Duration::from_std(window)?;
    // Waiting for the clock is the point of this benchmark; then let the last slots finish.
    let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(3);
    tokio::time::sleep(wait).await;

    // Slots each job has in [from, until), from the same arithmetic the scheduler uses.
    let step = chrono::Duration::from_std(bench.interval)?;
    let mut expected = 0i64;
    for i in 0..bench.jobs {
        let job = JobId::parse(format!("s{i}"))?;
        let mut slot = faro_dispatcher::schedule::slot_at_or_after(&job, bench.interval, from);
        while slot < until {
            expected += 1;
            slot += step;
        }
    }
    let client = system.pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status = 'skipped'),
                    (percentile_cont(0.5) WITHIN GROUP
                        (ORDER BY EXTRACT(EPOCH FROM started_at - slot_at)))::float8,
                    (percentile_cont(0.99) WITHIN GROUP
                        (ORDER BY EXTRACT(EPOCH FROM started_at - slot_at)))::float8,
                    (SELECT count(*) FROM (SELECT 1 FROM runs WHERE slot_at >= $1 AND slot_at < $2
                                           GROUP BY job_id, slot_at HAVING count(*) > 1) d)
               FROM runs WHERE slot_at >= $1 AND slot_at < $2",
            &[&from, &until],
        )
        .await?;
    let runs: i64 = row.get(0);
    let p50: Option<f64> = row.get(3);
    let p99: Option<f64> = row.get(4);
    let lines = vec![
        format!("schedule_jobs={}", bench.jobs),
        format!("schedule_interval_secs={interval_secs}"),
        format!("schedule_slots_expected={expected}"),
        format!("schedule_slots_run={runs}"),
        format!("schedule_slots_succeeded={}", row.get::<_, i64>(1)),
        format!("schedule_slots_skipped={}", row.get::<_, i64>(2)),
        format!("schedule_slots_fired_twice={}", row.get::<_, i64>(5)),
        format!(
            "schedule_lag_p50_ms={:.1}",
            p50.unwrap_or(f64::NAN) * 1000.0
        ),
        format!(
            "schedule_lag_p99_ms={:.1}",
            p99.unwrap_or(f64::NAN) * 1000.0
        ),
        format!(
            "schedule_runs_per_sec={:.0}",
            runs as f64 / window.as_secs_f64()
        ),
    ];
    // Where in the window the lag comes from: the worst lag per 10 s of slots.
    let buckets = client
        .query(
            "SELECT floor(EXTRACT(EPOCH FROM slot_at - $1) / 10)::int8 AS bucket,
                    (max(EXTRACT(EPOCH FROM COALESCE(started_at, now()) - slot_at)) * 1000)::int8
               FROM runs WHERE slot_at >= $1 AND slot_at < $2
              GROUP BY 1 ORDER BY 1",
            &[&from, &until],
        )
        .await?;
    let worst: Vec<String> = buckets
        .iter()
        .map(|r| r.get::<_, i64>(1).to_string())
        .collect();
    let mut lines = lines;
    lines.push(format!("schedule_lag_max_ms_per_10s={}", worst.join(",")));
    // Which side lags: slot to recorded (the scheduler), recorded to started (publishing,
    // the queue and the workers).
    let split = client
        .query_one(
            "SELECT (percentile_cont(0.99) WITHIN GROUP
                        (ORDER BY EXTRACT(EPOCH FROM dispatched_at - slot_at)))::float8,
                    (percentile_cont(0.99) WITHIN GROUP
                        (ORDER BY EXTRACT(EPOCH FROM started_at - dispatched_at)))::float8
               FROM runs WHERE slot_at >= $1 AND slot_at < $2",
            &[&from, &until],
        )
        .await?;
    for (index, name) in [(0, "record"), (1, "start")] {
        let p99: Option<f64> = split.get(index);
        lines.push(format!(
            "schedule_{name}_lag_p99_ms={:.1}",
            p99.unwrap_or(f64::NAN) * 1000.0
        ));
    }
    drop(client);
    system.stop().await?;
    Ok(lines)
}
