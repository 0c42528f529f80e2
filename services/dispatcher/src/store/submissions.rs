//! Submissions: a batch of jobs recorded with its queues, jobs, runs and outbox rows, and
//! its progress.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::domain::JobId;
use faro_shared::messages::{BatchMetadata, SubmissionProgress, SubmittedRun, Task};

use super::definitions::retry_on_to;
use super::to_i32;
use crate::plan::NewRun;

/// What recording a submission found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// New: its runs were recorded, waiting in the outbox to be published.
    New,
    /// Seen before: nothing was written.
    Duplicate,
    /// Refused (nothing written): chained jobs name parents that do not exist.
    MissingParents(Vec<String>),
}

pub(super) fn task_parts(task: &Task) -> anyhow::Result<(String, serde_json::Value)> {
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
    batch: Option<&BatchMetadata>,
    runs: &[NewRun],
) -> anyhow::Result<Recorded> {
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await?;
    let jobs = i32::try_from(runs.len()).unwrap_or(i32::MAX);
    let batch = batch.map(serde_json::to_value).transpose()?;
    let inserted = tx
        .execute(
            "INSERT INTO submissions (id, jobs, submitted_at, batch) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
            &[&submission_id, &jobs, &submitted_at, &batch],
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
    let mut max_attempts = Vec::with_capacity(runs.len());
    let mut retry_on: Vec<Option<String>> = Vec::with_capacity(runs.len());
    let mut intervals: Vec<Option<i64>> = Vec::with_capacity(runs.len());
    let mut afters: Vec<Option<String>> = Vec::with_capacity(runs.len());
    let mut run_ifs = Vec::with_capacity(runs.len());
    let mut once = Vec::with_capacity(runs.len());
    let mut timeouts: Vec<Option<i64>> = Vec::with_capacity(runs.len());
    let mut overlaps = Vec::with_capacity(runs.len());
    let mut descriptions: Vec<Option<&str>> = Vec::with_capacity(runs.len());
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
        max_attempts.push(to_i32(run.max_attempts.get()));
        afters.push(run.after.as_ref().map(ToString::to_string));
        run_ifs.push(run.run_if.as_str());
        once.push(!run.is_definition());
        timeouts.push(m.timeout_ms.and_then(|ms| i64::try_from(ms).ok()));
        overlaps.push(run.overlap.as_str());
        descriptions.push(run.description.as_deref());
        intervals.push(
            run.interval
                .map(|i| i64::try_from(i.get().as_millis()).unwrap_or(i64::MAX)),
        );
        retry_on.push(retry_on_to(&run.retry_on));
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
        "INSERT INTO jobs (id, queue, kind, target, params, priority, max_attempts, retry_on,
                           interval_ms, after_job, run_if, timeout_ms, overlap, description)
         SELECT u.id, u.queue, u.kind, u.target, u.params, u.priority, u.max_attempts,
                string_to_array(u.retry_on, ','), u.interval_ms, u.after_job, u.run_if,
                u.timeout_ms, u.overlap, u.description
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int2[],
                       $7::int4[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::int8[],
                       $13::text[], $14::text[])
             AS u(id, queue, kind, target, params, priority, max_attempts, retry_on, interval_ms,
                  after_job, run_if, timeout_ms, overlap, description)
         ON CONFLICT (id) DO UPDATE
            SET queue = EXCLUDED.queue, kind = EXCLUDED.kind, target = EXCLUDED.target,
                params = EXCLUDED.params, priority = EXCLUDED.priority,
                max_attempts = EXCLUDED.max_attempts, retry_on = EXCLUDED.retry_on,
                interval_ms = EXCLUDED.interval_ms, after_job = EXCLUDED.after_job,
                run_if = EXCLUDED.run_if, timeout_ms = EXCLUDED.timeout_ms,
                overlap = EXCLUDED.overlap, description = EXCLUDED.description, enabled = true,
                updated_at = now()",
        &[
            &job_ids,
            &queues,
            &kinds,
            &targets,
            &params,
            &priorities,
            &max_attempts,
            &retry_on,
            &intervals,
            &afters,
            &run_ifs,
            &timeouts,
            &overlaps,
            &descriptions,
        ],
    )
    .await
    .context("cannot record the submission's jobs")?;

    // A chained job's parent must exist: in this submission (just recorded) or before it.
    let missing: Vec<String> = tx
        .query(
            "SELECT DISTINCT p FROM unnest($1::text[]) AS p
              WHERE p IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs WHERE id = p)",
            &[&afters],
        )
        .await
        .context("cannot check the chained jobs' parents")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !missing.is_empty() {
        return Ok(Recorded::MissingParents(missing));
    }

    tx.execute(
        "WITH recorded AS (
             INSERT INTO runs (id, job_id, submission_id, seq, queue, target, kind, params, priority,
                               submitted_at, status, dispatched_at, max_attempts, retry_on,
                               timeout_ms)
             SELECT u.id, u.job_id, $3, u.seq, u.queue, u.target, u.kind, u.params, u.priority, $10,
                    'dispatched', now(), u.max_attempts, string_to_array(u.retry_on, ','),
                    u.timeout_ms
               FROM unnest($1::uuid[], $2::text[], $4::int4[], $5::text[], $6::text[], $7::text[],
                           $8::jsonb[], $9::int2[], $11::int4[], $12::text[], $13::bool[],
                           $14::int8[])
                 AS u(id, job_id, seq, queue, target, kind, params, priority, max_attempts, retry_on,
                      once, timeout_ms)
              WHERE u.once
             RETURNING id, queue
         )
         INSERT INTO run_outbox (run_id, submission_id, queue) SELECT id, $3, queue FROM recorded",
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
            &max_attempts,
            &retry_on,
            &once,
            &timeouts,
        ],
    )
    .await
    .context("cannot record the submission's runs")?;
    tx.commit().await?;
    Ok(Recorded::New)
}

/// Records that a submission was refused, and why; a submission already recorded (accepted or
/// refused) is left as it is.
pub async fn record_rejection(
    pool: &Pool,
    submission_id: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    client
        .execute(
            "INSERT INTO submissions (id, jobs, rejected) VALUES ($1, 0, $2)
             ON CONFLICT (id) DO NOTHING",
            &[&submission_id, &reason],
        )
        .await
        .context("cannot record the submission's refusal")?;
    Ok(())
}

/// What a recorded submission holds: why it was refused, if it was; else its runs, in the
/// file's order.
pub async fn submission_record(
    pool: &Pool,
    submission_id: &str,
) -> anyhow::Result<(Option<String>, Vec<SubmittedRun>)> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rejected: Option<String> = client
        .query_opt(
            "SELECT rejected FROM submissions WHERE id = $1",
            &[&submission_id],
        )
        .await
        .context("cannot read the submission")?
        .and_then(|row| row.get(0));
    if rejected.is_some() {
        return Ok((rejected, Vec::new()));
    }
    let runs = client
        .query(
            "SELECT job_id, id FROM runs WHERE submission_id = $1 ORDER BY seq",
            &[&submission_id],
        )
        .await
        .context("cannot read the submission's runs")?
        .iter()
        .map(|row| {
            Ok(SubmittedRun {
                job_id: JobId::parse(row.get::<_, String>(0))?,
                run_id: row.get(1),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((None, runs))
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
    let mut recorded = 0;
    let mut rejected = BTreeMap::new();
    let mut batch = None;
    for row in client
        .query(
            "SELECT id, rejected, batch FROM submissions WHERE id = ANY($1)",
            &[&ids],
        )
        .await?
    {
        recorded += 1;
        if let Some(reason) = row.get::<_, Option<String>>(1) {
            rejected.insert(row.get::<_, String>(0), reason);
        }
        // Each chunk of a batch file carries its metadata.
        if let Some(value) = row.get::<_, Option<serde_json::Value>>(2) {
            batch = serde_json::from_value(value).ok();
        }
    }
    Ok(SubmissionProgress {
        runs,
        recorded,
        rejected,
        batch,
    })
}
