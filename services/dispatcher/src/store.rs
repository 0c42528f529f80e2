//! The dispatcher's SQL: submissions, runs and their outcomes.
//!
//! Every write on a hot path is one statement per batch (`unnest` of arrays), never a round
//! trip per run. States become SQL text here and only here.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::domain::{JobId, Priority, QueueName, RunStatus, TargetId};
use faro_shared::messages::{RunMessage, RunResult, StatusReply, SubmissionProgress, Task};
use uuid::Uuid;

use crate::plan::NewRun;

/// What recording a submission found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// New: its runs were recorded, waiting in the outbox to be published.
    New,
    /// Seen before: nothing was written.
    Duplicate,
}

fn task_parts(task: &Task) -> anyhow::Result<(String, serde_json::Value)> {
    let mut value = serde_json::to_value(task)?;
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    let params = value
        .get_mut("params")
        .map(serde_json::Value::take)
        .unwrap_or_else(|| serde_json::json!({}));
    Ok((kind, params))
}

/// Records a submission, its queues, jobs and runs (with their outbox rows) in one transaction.
pub async fn record_submission(
    pool: &Pool,
    submission_id: &str,
    submitted_at: Option<DateTime<Utc>>,
    runs: &[NewRun],
) -> anyhow::Result<Recorded> {
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await?;
    let jobs = i32::try_from(runs.len()).unwrap_or(i32::MAX);
    let inserted = tx
        .execute(
            "INSERT INTO submissions (id, jobs, submitted_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
            &[&submission_id, &jobs, &submitted_at],
        )
        .await
        .context("cannot record the submission")?;
    if inserted == 0 {
        return Ok(Recorded::Duplicate);
    }

    let mut ids = Vec::with_capacity(runs.len());
    let mut seqs = Vec::with_capacity(runs.len());
    let mut job_ids = Vec::with_capacity(runs.len());
    let mut queues = Vec::with_capacity(runs.len());
    let mut targets: Vec<Option<String>> = Vec::with_capacity(runs.len());
    let mut kinds = Vec::with_capacity(runs.len());
    let mut params = Vec::with_capacity(runs.len());
    let mut priorities = Vec::with_capacity(runs.len());
    for run in runs {
        let m = &run.message;
        let (kind, param) = task_parts(&m.task)?;
        ids.push(m.run_id);
        seqs.push(run.seq);
        job_ids.push(m.job_id.to_string());
        queues.push(m.queue.to_string());
        targets.push(m.target.as_ref().map(ToString::to_string));
        kinds.push(kind);
        params.push(param);
        priorities.push(i16::from(m.priority.get()));
    }

    tx.execute(
        "INSERT INTO queues (name, kinds)
         SELECT q, array_agg(DISTINCT k ORDER BY k) FROM unnest($1::text[], $2::text[]) AS u(q, k) GROUP BY q
         ON CONFLICT (name) DO UPDATE
            SET kinds = ARRAY(SELECT DISTINCT x FROM unnest(queues.kinds || EXCLUDED.kinds) AS x ORDER BY x),
                updated_at = now()
          WHERE NOT queues.kinds @> EXCLUDED.kinds",
        &[&queues, &kinds],
    )
    .await
    .context("cannot record the submission's queues")?;

    tx.execute(
        "INSERT INTO jobs (id, queue, kind, target, params, priority)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int2[])
         ON CONFLICT (id) DO UPDATE
            SET queue = EXCLUDED.queue, kind = EXCLUDED.kind, target = EXCLUDED.target,
                params = EXCLUDED.params, priority = EXCLUDED.priority, updated_at = now()",
        &[&job_ids, &queues, &kinds, &targets, &params, &priorities],
    )
    .await
    .context("cannot record the submission's jobs")?;

    tx.execute(
        "WITH recorded AS (
             INSERT INTO runs (id, job_id, submission_id, seq, queue, target, kind, params, priority,
                               submitted_at, status, dispatched_at)
             SELECT u.id, u.job_id, $3, u.seq, u.queue, u.target, u.kind, u.params, u.priority, $10,
                    'dispatched', now()
               FROM unnest($1::uuid[], $2::text[], $4::int4[], $5::text[], $6::text[], $7::text[],
                           $8::jsonb[], $9::int2[])
                 AS u(id, job_id, seq, queue, target, kind, params, priority)
             RETURNING id
         )
         INSERT INTO run_outbox (run_id, submission_id) SELECT id, $3 FROM recorded",
        &[
            &ids,
            &job_ids,
            &submission_id,
            &seqs,
            &queues,
            &targets,
            &kinds,
            &params,
            &priorities,
            &submitted_at,
        ],
    )
    .await
    .context("cannot record the submission's runs")?;
    tx.commit().await?;
    Ok(Recorded::New)
}

/// Runs recorded but not yet confirmed stored in JetStream (a crash between the two).
pub async fn unpublished_runs(
    pool: &Pool,
    submission: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<RunMessage>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT r.id, r.attempt, r.job_id, r.queue, r.target, r.kind, r.params, r.priority
               FROM run_outbox o JOIN runs r ON r.id = o.run_id
              WHERE ($1::text IS NULL OR o.submission_id = $1)
              ORDER BY o.created_at LIMIT $2",
            &[&submission, &limit],
        )
        .await
        .context("cannot read the outbox")?;
    rows.iter()
        .map(|row| {
            let kind: String = row.get("kind");
            let params: serde_json::Value = row.get("params");
            let task: Task =
                serde_json::from_value(serde_json::json!({ "kind": kind, "params": params }))
                    .with_context(|| {
                        format!("run {} has unreadable params", row.get::<_, Uuid>("id"))
                    })?;
            Ok(RunMessage {
                run_id: row.get("id"),
                attempt: u32::try_from(row.get::<_, i32>("attempt")).unwrap_or(1),
                job_id: JobId::parse(row.get::<_, String>("job_id"))?,
                queue: QueueName::parse(row.get::<_, String>("queue"))?,
                target: row
                    .get::<_, Option<String>>("target")
                    .map(TargetId::parse)
                    .transpose()?,
                priority: Priority::new(u8::try_from(row.get::<_, i16>("priority")).unwrap_or(5))?,
                task,
            })
        })
        .collect()
}

/// Clears the outbox of runs JetStream has stored.
pub async fn mark_published(pool: &Pool, ids: &[Uuid]) -> anyhow::Result<()> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    client
        .execute("DELETE FROM run_outbox WHERE run_id = ANY($1)", &[&ids])
        .await
        .context("cannot clear published runs from the outbox")?;
    Ok(())
}

/// Records a batch of results. A result applies only to the attempt it names and only while
/// the run is not terminal (fencing); returns the ids of the runs it changed.
pub async fn record_results(pool: &Pool, results: &[RunResult]) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(results.len());
    let mut attempts = Vec::with_capacity(results.len());
    let mut statuses = Vec::with_capacity(results.len());
    let mut workers = Vec::with_capacity(results.len());
    let mut started = Vec::with_capacity(results.len());
    let mut finished = Vec::with_capacity(results.len());
    let mut simulated = Vec::with_capacity(results.len());
    let mut outputs: Vec<Option<serde_json::Value>> = Vec::with_capacity(results.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(results.len());
    for result in results {
        ids.push(result.run_id);
        attempts.push(i32::try_from(result.attempt).unwrap_or(i32::MAX));
        statuses.push(result.outcome.status().as_str());
        workers.push(result.worker_id.as_str());
        started.push(result.started_at);
        finished.push(result.finished_at);
        simulated.push(result.simulated);
        outputs.push(
            result
                .output
                .as_ref()
                .map(serde_json::to_value)
                .transpose()?,
        );
        errors.push(result.error.clone());
    }
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "UPDATE runs r
                SET status = u.status, worker_id = u.worker, started_at = u.started,
                    finished_at = u.finished, simulated = u.simulated, output = u.output,
                    error = u.error, recorded_at = clock_timestamp()
               FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::timestamptz[],
                           $6::timestamptz[], $7::bool[], $8::jsonb[], $9::text[])
                 AS u(id, attempt, status, worker, started, finished, simulated, output, error)
              WHERE r.id = u.id AND r.attempt = u.attempt
                AND r.status IN ('pending', 'dispatched')
          RETURNING r.id",
            &[
                &ids, &attempts, &statuses, &workers, &started, &finished, &simulated, &outputs,
                &errors,
            ],
        )
        .await
        .context("cannot record results")?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Run counts by status, and open runs by queue.
pub async fn status(pool: &Pool) -> anyhow::Result<StatusReply> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let mut runs = BTreeMap::new();
    for row in client
        .query("SELECT status, count(*) FROM runs GROUP BY status", &[])
        .await?
    {
        runs.insert(row.get::<_, String>(0), row.get::<_, i64>(1));
    }
    let mut queues = BTreeMap::new();
    for row in client
        .query(
            "SELECT queue, count(*) FROM runs WHERE status IN ('pending', 'dispatched') GROUP BY queue",
            &[],
        )
        .await?
    {
        queues.insert(row.get::<_, String>(0), row.get::<_, i64>(1));
    }
    Ok(StatusReply { runs, queues })
}

/// Run counts by status over some submissions, and how many of them are recorded.
pub async fn submission_progress(
    pool: &Pool,
    ids: &[String],
) -> anyhow::Result<SubmissionProgress> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let mut runs = BTreeMap::new();
    for row in client
        .query(
            "SELECT status, count(*) FROM runs WHERE submission_id = ANY($1) GROUP BY status",
            &[&ids],
        )
        .await?
    {
        runs.insert(row.get::<_, String>(0), row.get::<_, i64>(1));
    }
    let recorded: i64 = client
        .query_one(
            "SELECT count(*) FROM submissions WHERE id = ANY($1)",
            &[&ids],
        )
        .await?
        .get(0);
    Ok(SubmissionProgress {
        runs,
        recorded: usize::try_from(recorded).unwrap_or(0),
    })
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
