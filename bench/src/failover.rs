//! `faro-bench failover`: a worker killed (SIGKILL) in the middle of long runs, as the only
//! worker of its queue, while its pool cools. Prints how long each of its runs took to start
//! again on another worker (from the kill to the first start in that worker's own journal),
//! and how many ran twice after the kill or were recorded twice.
//!
//! Each round is a fresh system: the dispatcher, balancer and demand collector in this
//! process, the workers as processes of this binary (`faro-bench worker`) so a kill is real.
//! The balancer cycles every 5 s and workers beat every 5 s, as deployed: the figures are
//! what an operator gets, not what short test timers give.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use faro_shared::config::Env;
use faro_shared::messages::journal::{self, Event};
use faro_shared::messages::Heartbeat;
use futures::StreamExt;

use crate::system::{Options, System, WorkerProcess};

/// What to measure.
#[derive(Debug, Clone)]
pub struct FailoverBench {
    /// Fresh systems, one kill each.
    pub rounds: usize,
    /// Runs the killed worker holds when it dies.
    pub runs: usize,
    /// How long each run lasts: long enough to still run after the failover.
    pub run_secs: u64,
    /// The program that runs a worker (`<exe> worker`): this binary.
    pub exe: PathBuf,
}

/// The figures of every round together.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Seconds from the kill to each run's next start elsewhere.
    pub failovers: Vec<f64>,
    /// Runs started more than once after the kill, or recorded twice.
    pub doubled: usize,
}

impl Figures {
    pub fn lines(&self) -> Vec<String> {
        let mut sorted = self.failovers.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
            sorted.get(i).copied().unwrap_or(f64::NAN)
        };
        vec![
            format!("failover_runs={}", sorted.len()),
            format!("failover_p50_secs={:.2}", at(0.5)),
            format!("failover_p99_secs={:.2}", at(0.99)),
            format!(
                "failover_max_secs={:.2}",
                sorted.last().copied().unwrap_or(f64::NAN)
            ),
            format!("failover_doubled={}", self.doubled),
        ]
    }
}

/// Runs the benchmark.
pub async fn run(bench: &FailoverBench) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();
    for round in 0..bench.rounds.max(1) {
        one_round(bench, round, &mut figures)
            .await
            .with_context(|| format!("failover round {}", round + 1))?;
    }
    Ok(figures)
}

async fn one_round(
    bench: &FailoverBench,
    round: usize,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let system = System::start(Options {
        workers: 0,
        cycle: Duration::from_secs(5),
        heartbeat: Duration::from_secs(5),
        ..Options::default()
    })
    .await?;
    // The pool cools for a minute after every move: the dead worker's queue must get its
    // replacement all the same.
    system
        .pool
        .get()
        .await?
        .execute(
            "UPDATE system_config SET value = '\"60s\"'::jsonb WHERE key = 'cooling_period'",
            &[],
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let capacity = bench.runs.max(1) + 2;
    let main_journal = dir.path().join("main.jsonl");
    let mut main = spawn(bench, &system.env, "w-main", capacity, &main_journal)?;

    let jobs: Vec<_> = (0..bench.runs.max(1))
        .map(|i| {
            serde_json::json!({
                "id": format!("r{round}-{i}"), "queue": "failover", "kind": "sim", "timeout": "5m",
                "params": {"duration_ms": bench.run_secs * 1000, "outcomes": {"succeeded": 1}},
            })
        })
        .collect();
    system
        .submit_jobs(&jobs, &format!("failover-{round}"))
        .await?;
    wait_in_progress(&system, "w-main", jobs.len(), Duration::from_secs(60)).await?;

    // The spare joins once the main worker is busy: idle, in a cooling pool.
    let spare_journal = dir.path().join("spare.jsonl");
    let _spare = spawn(bench, &system.env, "w-spare", capacity, &spare_journal)?;
    system
        .wait_count(
            "SELECT count(*) FROM workers WHERE id = 'w-spare' AND state = 'active'",
            1,
            Duration::from_secs(30),
        )
        .await?;

    let killed_at = Utc::now();
    main.kill()?;
    wait_in_progress(&system, "w-spare", jobs.len(), Duration::from_secs(60)).await?;

    let doomed = unfinished(&read(&main_journal)?);
    anyhow::ensure!(
        doomed.len() == jobs.len(),
        "the killed worker held {} runs, not {}",
        doomed.len(),
        jobs.len()
    );
    let mut starts: BTreeMap<uuid::Uuid, Vec<DateTime<Utc>>> = BTreeMap::new();
    for e in read(&spare_journal)? {
        if e.event == Event::Start && e.at >= killed_at {
            starts.entry(e.run_id).or_default().push(e.at);
        }
    }
    for run in &doomed {
        let again = starts
            .get(run)
            .and_then(|s| s.iter().min())
            .with_context(|| format!("run {run} never started again"))?;
        figures
            .failovers
            .push((*again - killed_at).num_milliseconds() as f64 / 1000.0);
    }
    figures.doubled += starts.values().filter(|s| s.len() > 1).count();

    system
        .wait_terminal(jobs.len() as i64, Duration::from_secs(bench.run_secs + 120))
        .await?;
    let recorded_twice: i64 = system
        .one("SELECT count(*) FROM run_attempts WHERE late")
        .await?;
    figures.doubled += usize::try_from(recorded_twice).unwrap_or(0);
    system.stop().await?;
    Ok(())
}

fn spawn(
    bench: &FailoverBench,
    base: &Env,
    id: &str,
    capacity: usize,
    journal: &Path,
) -> anyhow::Result<WorkerProcess> {
    let mut env = base.clone();
    env.set("FARO_WORKER_ID", id)
        .set("FARO_WORKER_CAPACITY", capacity.to_string())
        .set("FARO_HTTP_ADDR", "127.0.0.1:0")
        .set("FARO_WORKER_JOURNAL", journal.display().to_string());
    WorkerProcess::worker(&bench.exe, &env)
}

fn read(path: &Path) -> anyhow::Result<Vec<journal::Execution>> {
    Ok(journal::parse(
        &std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    ))
}

/// Runs a journal shows started and never ended.
fn unfinished(lines: &[journal::Execution]) -> Vec<uuid::Uuid> {
    let mut open: BTreeMap<(uuid::Uuid, u32), i32> = BTreeMap::new();
    for e in lines {
        *open.entry((e.run_id, e.attempt)).or_default() += match e.event {
            Event::Start => 1,
            Event::End => -1,
        };
    }
    open.into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|((run, _), _)| run)
        .collect()
}

/// Waits until worker `id`'s heartbeat says it executes `count` runs.
async fn wait_in_progress(
    system: &System,
    id: &str,
    count: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let bucket = system.js.get_key_value(system.ns.workers_bucket()).await?;
    let mut beats = bucket.watch_with_history(id).await?;
    let executing = async {
        while let Some(Ok(entry)) = beats.next().await {
            let beat = serde_json::from_slice::<Heartbeat>(&entry.value);
            if beat.is_ok_and(|b| b.in_progress as usize == count) {
                return Ok(());
            }
        }
        anyhow::bail!("the heartbeat watch of {id} ended")
    };
    tokio::time::timeout(limit, executing)
        .await
        .with_context(|| format!("{id} never had {count} runs in progress within {limit:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_of_every_round_together() {
        let figures = Figures {
            failovers: (1..=100).map(f64::from).collect(),
            doubled: 0,
        };
        let lines = figures.lines();
        assert!(
            lines.contains(&"failover_p50_secs=50.00".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"failover_p99_secs=99.00".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"failover_doubled=0".to_owned()),
            "{lines:?}"
        );
    }
}
