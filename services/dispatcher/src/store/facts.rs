//! What operators ask: a run's and a job's facts, counts by status.

use std::collections::BTreeMap;

use anyhow::Context as _;
use deadpool_postgres::Pool;
use faro_shared::domain::RunStatus;
use faro_shared::messages::StatusReply;
use uuid::Uuid;

use crate::explain::{AttemptFact, JobFacts, RunFacts};

/// Everything recorded of a run, for `faro explain run`.
pub async fn run_facts(pool: &Pool, run_id: Uuid) -> anyhow::Result<Option<RunFacts>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let Some(row) = client
        .query_opt(
            "SELECT r.job_id, r.queue, r.target, r.status, r.attempt, r.max_attempts,
                    r.created_at, r.slot_at, r.dispatched_at, r.finished_at, r.worker_id,
                    r.error, r.retry_at, o.run_id IS NOT NULL AS unpublished
               FROM runs r LEFT JOIN run_outbox o ON o.run_id = r.id
              WHERE r.id = $1",
            &[&run_id],
        )
        .await
        .context("cannot read the run")?
    else {
        return Ok(None);
    };
    let attempts = client
        .query(
            "SELECT attempt, outcome, worker_id, COALESCE(finished_at, recorded_at), error, late
               FROM run_attempts WHERE run_id = $1 ORDER BY recorded_at",
            &[&run_id],
        )
        .await
        .context("cannot read the run's attempts")?
        .iter()
        .map(|a| AttemptFact {
            attempt: u32::try_from(a.get::<_, i32>(0)).unwrap_or(0),
            outcome: a.get(1),
            worker: a.get(2),
            at: a.get(3),
            error: a.get(4),
            late: a.get(5),
        })
        .collect();
    let status: String = row.get("status");
    Ok(Some(RunFacts {
        id: run_id,
        job: row.get("job_id"),
        queue: row.get("queue"),
        target: row.get("target"),
        status: status.parse().map_err(anyhow::Error::msg)?,
        attempt: u32::try_from(row.get::<_, i32>("attempt")).unwrap_or(1),
        max_attempts: u32::try_from(row.get::<_, i32>("max_attempts")).unwrap_or(1),
        created_at: row.get("created_at"),
        slot_at: row.get("slot_at"),
        dispatched_at: row.get("dispatched_at"),
        finished_at: row.get("finished_at"),
        worker: row.get("worker_id"),
        error: row.get("error"),
        retry_at: row.get("retry_at"),
        unpublished: row.get("unpublished"),
        attempts,
    }))
}

/// A job's definition and history, for `faro explain job`. The last run, success and failure
/// are read from the runs, not kept on the job (no write per run): each is the newest of its
/// kind by id (the time made) on the (job_id, id) index, read backwards from the newest day,
/// so a job with a month of runs reads a few rows, not all of them.
pub async fn job_facts(pool: &Pool, job: &str) -> anyhow::Result<Option<JobFacts>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let Some(row) = client
        .query_opt(
            "SELECT j.id, j.kind, j.queue, j.target, j.interval_ms, j.after_job, j.run_if,
                    j.enabled, j.max_attempts, j.overlap,
                    (SELECT enabled FROM targets WHERE id = j.target) AS target_enabled,
                    (SELECT created_at FROM runs WHERE job_id = j.id AND status <> 'skipped'
                      ORDER BY id DESC LIMIT 1),
                    (SELECT finished_at FROM runs WHERE job_id = j.id AND status = 'succeeded'
                      ORDER BY id DESC LIMIT 1),
                    (SELECT finished_at FROM runs WHERE job_id = j.id
                        AND status IN ('failed', 'interrupted', 'timed_out')
                      ORDER BY id DESC LIMIT 1),
                    j.description
               FROM jobs j WHERE j.id = $1",
            &[&job],
        )
        .await
        .context("cannot read the job")?
    else {
        return Ok(None);
    };
    let recent = client
        .query(
            "SELECT id, status, created_at, error FROM runs WHERE job_id = $1
              ORDER BY id DESC LIMIT 5",
            &[&job],
        )
        .await
        .context("cannot read the job's runs")?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let children = client
        .query(
            "SELECT id FROM jobs WHERE after_job = $1 ORDER BY id",
            &[&job],
        )
        .await
        .context("cannot read the job's chained jobs")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(JobFacts {
        id: row.get(0),
        kind: row.get(1),
        queue: row.get(2),
        target: row.get(3),
        interval_ms: row.get(4),
        after: row.get(5),
        run_if: row.get(6),
        enabled: row.get(7),
        max_attempts: u32::try_from(row.get::<_, i32>(8)).unwrap_or(1),
        overlap: row.get(9),
        target_enabled: row.get(10),
        last_run_at: row.get(11),
        last_success_at: row.get(12),
        last_failure_at: row.get(13),
        recent,
        children,
        description: row.get(14),
    }))
}

/// Run counts by status, and open runs by queue: sums of the tallies every write of runs adds
/// to (migration V14), a few rows a day and queue, never a count of the runs themselves.
pub async fn status(pool: &Pool) -> anyhow::Result<StatusReply> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let mut runs = BTreeMap::new();
    let mut queues = BTreeMap::new();
    for row in client
        .query(
            "SELECT status, queue, sum(runs)::int8 FROM run_tallies
              GROUP BY status, queue HAVING sum(runs) <> 0",
            &[],
        )
        .await
        .context("cannot read the run tallies")?
    {
        let (status, queue, count) = (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, i64>(2),
        );
        if status == "pending" || status == "dispatched" {
            *queues.entry(queue).or_insert(0) += count;
        }
        *runs.entry(status).or_insert(0) += count;
    }
    let waiting: i64 = client
        .query_one("SELECT count(*) FROM run_outbox", &[])
        .await
        .context("cannot count the outbox")?
        .get(0);
    Ok(StatusReply {
        runs,
        queues,
        waiting,
    })
}

/// Folds the run tallies written since the last call into one row per day, queue and status.
/// Returns how many rows it folded.
pub async fn compact_run_tallies(pool: &Pool) -> anyhow::Result<u64> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let folded: i64 = client
        .query_one("SELECT faro_compact_run_tallies()", &[])
        .await
        .context("cannot compact the run tallies")?
        .get(0);
    Ok(u64::try_from(folded).unwrap_or(0))
}

/// The status of one run, for tests and `faro explain`.
pub async fn run_status(pool: &Pool, id: Uuid) -> anyhow::Result<Option<RunStatus>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let row = client
        .query_opt("SELECT status FROM runs WHERE id = $1", &[&id])
        .await?;
    row.map(|row| {
        row.get::<_, String>(0)
            .parse::<RunStatus>()
            .map_err(anyhow::Error::msg)
    })
    .transpose()
}
