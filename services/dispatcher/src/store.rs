//! The dispatcher's SQL: submissions, runs and their outcomes.
//!
//! Every write on a hot path is one statement per batch (`unnest` of arrays), never a round
//! trip per run. States become SQL text here and only here.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::domain::{
    JobId, MaxAttempts, Outcome, Priority, QueueName, Retryable, RunStatus, TargetId,
};
use faro_shared::messages::{
    Overlap, RunMessage, RunResult, StatusReply, SubmissionProgress, Task,
};
use uuid::Uuid;

use crate::chains::{self, Chains, Child, RunIf};
use crate::explain::{AttemptFact, JobFacts, RunFacts};
use crate::plan::NewRun;
use crate::retry::{self, Decision, RetryPolicy, RunState};
use crate::timetable::{Fire, JobDef, Recurring};

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
    let mut max_attempts = Vec::with_capacity(runs.len());
    let mut retry_on: Vec<Option<String>> = Vec::with_capacity(runs.len());
    let mut intervals: Vec<Option<i64>> = Vec::with_capacity(runs.len());
    let mut afters: Vec<Option<String>> = Vec::with_capacity(runs.len());
    let mut run_ifs = Vec::with_capacity(runs.len());
    let mut once = Vec::with_capacity(runs.len());
    let mut timeouts: Vec<Option<i64>> = Vec::with_capacity(runs.len());
    let mut overlaps = Vec::with_capacity(runs.len());
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
                           interval_ms, after_job, run_if, timeout_ms, overlap)
         SELECT u.id, u.queue, u.kind, u.target, u.params, u.priority, u.max_attempts,
                string_to_array(u.retry_on, ','), u.interval_ms, u.after_job, u.run_if,
                u.timeout_ms, u.overlap
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int2[],
                       $7::int4[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::int8[],
                       $13::text[])
             AS u(id, queue, kind, target, params, priority, max_attempts, retry_on, interval_ms,
                  after_job, run_if, timeout_ms, overlap)
         ON CONFLICT (id) DO UPDATE
            SET queue = EXCLUDED.queue, kind = EXCLUDED.kind, target = EXCLUDED.target,
                params = EXCLUDED.params, priority = EXCLUDED.priority,
                max_attempts = EXCLUDED.max_attempts, retry_on = EXCLUDED.retry_on,
                interval_ms = EXCLUDED.interval_ms, after_job = EXCLUDED.after_job,
                run_if = EXCLUDED.run_if, timeout_ms = EXCLUDED.timeout_ms,
                overlap = EXCLUDED.overlap, enabled = true,
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

/// Runs waiting in the outbox (for a slot of their target, or recorded but not yet confirmed
/// stored in JetStream), all or one submission's; retries still in their backoff are left
/// for later.
pub async fn unpublished_runs(
    pool: &Pool,
    submission: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<RunMessage>> {
    outbox_runs(pool, "NOT o.retry", submission, limit, &[]).await
}

/// Runs in the outbox matching `filter` (a fixed SQL condition on `o`), oldest due first.
async fn outbox_runs(
    pool: &Pool,
    filter: &'static str,
    submission: Option<&str>,
    limit: i64,
    ids: &[Uuid],
) -> anyhow::Result<Vec<RunMessage>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let query = format!(
        "SELECT r.id, r.attempt, r.job_id, r.queue, r.target, r.kind, r.params, r.priority,
                r.timeout_ms
           FROM run_outbox o JOIN runs r ON r.id = o.run_id
          WHERE {filter} AND ($1::text IS NULL OR o.submission_id = $1)
            AND ($3::uuid[] IS NOT NULL)
          ORDER BY o.not_before, o.created_at LIMIT $2"
    );
    let statement = client.prepare_cached(&query).await?;
    let rows = client
        .query(&statement, &[&submission, &limit, &ids])
        .await
        .context("cannot read the outbox")?;
    rows.iter()
        .map(|row| {
            message_from_row(
                row,
                row.get("id"),
                u32::try_from(row.get::<_, i32>("attempt")).unwrap_or(1),
                row.get("job_id"),
            )
        })
        .collect()
}

/// A run message from a row with `queue, target, kind, params, priority`.
fn message_from_row(
    row: &tokio_postgres::Row,
    run_id: Uuid,
    attempt: u32,
    job_id: String,
) -> anyhow::Result<RunMessage> {
    let kind: String = row.get("kind");
    let params: serde_json::Value = row.get("params");
    let task: Task = serde_json::from_value(serde_json::json!({ "kind": kind, "params": params }))
        .with_context(|| format!("job {job_id} has unreadable params"))?;
    Ok(RunMessage {
        run_id,
        attempt,
        job_id: JobId::parse(job_id)?,
        queue: QueueName::parse(row.get::<_, String>("queue"))?,
        target: row
            .get::<_, Option<String>>("target")
            .map(TargetId::parse)
            .transpose()?,
        priority: Priority::new(u8::try_from(row.get::<_, i16>("priority")).unwrap_or(5))?,
        task,
        timeout_ms: row
            .get::<_, Option<i64>>("timeout_ms")
            .and_then(|ms| u64::try_from(ms).ok()),
        device: None,
        simulate: false,
    })
}

/// Every enabled recurring job, as the scheduler keeps it: read as a stream, so a million
/// definitions never sit in memory twice. A row that cannot be read is skipped with a warning,
/// never stopping the others.
pub async fn recurring_jobs(pool: &Pool) -> anyhow::Result<Vec<Recurring>> {
    use futures::TryStreamExt as _;
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query_raw(
            "SELECT id, interval_ms, overlap,
                    (SELECT max(slot_at) FROM runs WHERE runs.job_id = jobs.id
                                                     AND slot_at IS NOT NULL)
               FROM jobs WHERE enabled AND interval_ms IS NOT NULL",
            std::iter::empty::<i32>(),
        )
        .await
        .context("cannot read the recurring jobs")?;
    futures::pin_mut!(rows);
    let mut jobs = Vec::new();
    while let Some(row) = rows
        .try_next()
        .await
        .context("cannot read the recurring jobs")?
    {
        let id: String = row.get(0);
        match JobId::parse(id.clone()) {
            Ok(job) => jobs.push(Recurring {
                id: job,
                interval: std::time::Duration::from_millis(
                    u64::try_from(row.get::<_, i64>(1)).unwrap_or(1),
                ),
                overlap: overlap_from(row.get(2)),
                last_slot: row.get(3),
            }),
            Err(error) => tracing::warn!(job = %id, %error, "recurring job skipped"),
        }
    }
    Ok(jobs)
}

fn overlap_from(stored: &str) -> Overlap {
    match stored {
        "queue_one" => Overlap::QueueOne,
        _ => Overlap::Skip,
    }
}

/// Every enabled chained job, with the job it follows.
pub async fn chained_jobs(pool: &Pool) -> anyhow::Result<Vec<(JobId, Child)>> {
    let mut chained = Vec::new();
    for (def, after, run_if) in definitions(pool, "after_job IS NOT NULL", &[]).await? {
        let Some(parent) = after else { continue };
        chained.push((parent, Child { def, run_if }));
    }
    Ok(chained)
}

/// One enabled job's definition, with the job it follows, if it has one.
pub async fn definition(
    pool: &Pool,
    job: &JobId,
) -> anyhow::Result<Option<(JobDef, Option<JobId>, RunIf)>> {
    Ok(definitions(pool, "id = $1", &[&job.as_str()])
        .await?
        .into_iter()
        .next())
}

/// Enabled job definitions matching `filter` (a fixed SQL condition on `params`), with their
/// chain links.
async fn definitions(
    pool: &Pool,
    filter: &'static str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<Vec<(JobDef, Option<JobId>, RunIf)>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            &format!(
                "SELECT id, queue, kind, target, params, priority, max_attempts, retry_on,
                        interval_ms, after_job, run_if, timeout_ms, overlap,
                        (SELECT max(slot_at) FROM runs WHERE runs.job_id = jobs.id
                                                         AND slot_at IS NOT NULL) AS last_slot_at
                   FROM jobs WHERE enabled AND {filter}"
            ),
            params,
        )
        .await
        .context("cannot read job definitions")?;
    let mut defs = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.get("id");
        let def = (|| -> anyhow::Result<(JobDef, Option<JobId>, RunIf)> {
            let def = JobDef {
                interval: std::time::Duration::from_millis(
                    u64::try_from(row.get::<_, Option<i64>>("interval_ms").unwrap_or(0))
                        .unwrap_or(0),
                ),
                template: message_from_row(row, Uuid::nil(), 1, id.clone())?,
                max_attempts: MaxAttempts::new(
                    u32::try_from(row.get::<_, i32>("max_attempts")).unwrap_or(1),
                )
                .map_err(anyhow::Error::msg)?,
                retry_on: retry_on_from(row.get("retry_on")),
                last_slot: row.get("last_slot_at"),
                overlap: overlap_from(row.get("overlap")),
            };
            let after = row
                .get::<_, Option<String>>("after_job")
                .map(JobId::parse)
                .transpose()?;
            let run_if = match row.get::<_, String>("run_if").as_str() {
                "always" => RunIf::Always,
                _ => RunIf::Success,
            };
            Ok((def, after, run_if))
        })();
        match def {
            Ok(def) => defs.push(def),
            Err(error) => {
                tracing::warn!(job = %id, error = format!("{error:#}"), "job definition skipped")
            }
        }
    }
    Ok(defs)
}

/// `retry_on` as stored: NULL is the default.
fn retry_on_from(stored: Option<Vec<String>>) -> Vec<Retryable> {
    match stored {
        None => Retryable::DEFAULT.to_vec(),
        Some(listed) => listed.iter().filter_map(|s| s.parse().ok()).collect(),
    }
}

/// `retry_on` to store: NULL for the default keeps the common row small.
fn retry_on_to(retry_on: &[Retryable]) -> Option<String> {
    (retry_on != Retryable::DEFAULT).then(|| {
        retry_on
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Recurring runs not yet ended, by job: their next slots are skipped until they end.
pub async fn open_recurring_runs(pool: &Pool) -> anyhow::Result<Vec<(JobId, Uuid)>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT job_id, id FROM runs
              WHERE slot_at IS NOT NULL AND status IN ('pending', 'dispatched')",
            &[],
        )
        .await
        .context("cannot read open recurring runs")?;
    rows.iter()
        .map(|row| Ok((JobId::parse(row.get::<_, String>(0))?, row.get(1))))
        .collect()
}

/// Runs made from definitions (recurring slots, chained jobs), as `unnest` columns.
struct DefinedRuns {
    ids: Vec<Uuid>,
    job_ids: Vec<String>,
    slots: Vec<Option<DateTime<Utc>>>,
    parents: Vec<Option<Uuid>>,
    statuses: Vec<&'static str>,
    errors: Vec<Option<String>>,
    queues: Vec<String>,
    targets: Vec<Option<String>>,
    kinds: Vec<String>,
    params: Vec<serde_json::Value>,
    priorities: Vec<i16>,
    max_attempts: Vec<i32>,
    retry_on: Vec<Option<String>>,
    timeouts: Vec<Option<i64>>,
}

impl DefinedRuns {
    fn with_capacity(n: usize) -> Self {
        Self {
            ids: Vec::with_capacity(n),
            job_ids: Vec::with_capacity(n),
            slots: Vec::with_capacity(n),
            parents: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
            queues: Vec::with_capacity(n),
            targets: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            params: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            retry_on: Vec::with_capacity(n),
            timeouts: Vec::with_capacity(n),
        }
    }

    /// Adds a run of `def` (its message already carries the run id).
    fn push(
        &mut self,
        run: &RunMessage,
        def: &JobDef,
        slot: Option<DateTime<Utc>>,
        parent: Option<Uuid>,
        skip: Option<String>,
    ) -> anyhow::Result<()> {
        let (kind, param) = task_parts(&run.task)?;
        self.ids.push(run.run_id);
        self.job_ids.push(run.job_id.to_string());
        self.slots.push(slot);
        self.parents.push(parent);
        self.statuses.push(if skip.is_some() {
            "skipped"
        } else {
            "dispatched"
        });
        self.errors.push(skip);
        self.queues.push(run.queue.to_string());
        self.targets
            .push(run.target.as_ref().map(ToString::to_string));
        self.kinds.push(kind);
        self.params.push(param);
        self.priorities.push(i16::from(run.priority.get()));
        self.max_attempts.push(to_i32(def.max_attempts.get()));
        self.retry_on.push(retry_on_to(&def.retry_on));
        self.timeouts
            .push(run.timeout_ms.and_then(|ms| i64::try_from(ms).ok()));
        Ok(())
    }
}

/// Inserts runs made from definitions, with outbox rows for those that run; a slot already
/// recorded is left alone. Returns the ids inserted.
async fn insert_defined_runs(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &DefinedRuns,
) -> anyhow::Result<HashSet<Uuid>> {
    if rows.ids.is_empty() {
        return Ok(HashSet::new());
    }
    let created = tx
        .query(
            "WITH made AS (
                 INSERT INTO runs (id, job_id, slot_at, parent_run_id, status, error, queue, target,
                                   kind, params, priority, max_attempts, retry_on, dispatched_at,
                                   recorded_at, timeout_ms)
                 SELECT u.id, u.job_id, u.slot, u.parent, u.status, u.error, u.queue, u.target,
                        u.kind, u.params, u.priority, u.max_attempts,
                        string_to_array(u.retry_on, ','),
                        CASE WHEN u.status = 'dispatched' THEN now() END,
                        CASE WHEN u.status = 'skipped' THEN now() END, u.timeout_ms
                   FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::uuid[], $5::text[],
                               $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[],
                               $11::int2[], $12::int4[], $13::text[], $14::int8[])
                     AS u(id, job_id, slot, parent, status, error, queue, target, kind, params,
                          priority, max_attempts, retry_on, timeout_ms)
                 ON CONFLICT (job_id, slot_at) WHERE slot_at IS NOT NULL DO NOTHING
                 RETURNING id, status
             ), queued AS (
                 INSERT INTO run_outbox (run_id) SELECT id FROM made WHERE status = 'dispatched'
             )
             SELECT id FROM made",
            &[
                &rows.ids,
                &rows.job_ids,
                &rows.slots,
                &rows.parents,
                &rows.statuses,
                &rows.errors,
                &rows.queues,
                &rows.targets,
                &rows.kinds,
                &rows.params,
                &rows.priorities,
                &rows.max_attempts,
                &rows.retry_on,
                &rows.timeouts,
            ],
        )
        .await
        .context("cannot record runs of defined jobs")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(created)
}

/// Records fired slots in one transaction: a run (with its outbox row) for each slot that
/// runs, a `skipped` run for each slot whose job is still going. What a slot runs comes from
/// the job's stored definition; a job disabled, no longer recurring or on a disabled target
/// records nothing. A slot already recorded (by another dispatcher) is left alone. Returns the
/// runs to dispatch.
pub async fn record_slots(pool: &Pool, fires: &[Fire]) -> anyhow::Result<Vec<RunMessage>> {
    let mut ids = Vec::with_capacity(fires.len());
    let mut jobs = Vec::with_capacity(fires.len());
    let mut slots = Vec::with_capacity(fires.len());
    let mut skips: Vec<Option<String>> = Vec::with_capacity(fires.len());
    for fire in fires {
        ids.push(Uuid::now_v7());
        jobs.push(fire.job.as_str());
        slots.push(fire.slot);
        skips.push(
            fire.overlaps
                .map(|open| format!("skipped: previous run {open} still running")),
        );
    }
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "WITH made AS (
                 INSERT INTO runs (id, job_id, slot_at, status, error, queue, target, kind, params,
                                   priority, max_attempts, retry_on, dispatched_at, recorded_at,
                                   timeout_ms)
                 SELECT u.id, j.id, u.slot,
                        CASE WHEN u.skip IS NULL THEN 'dispatched' ELSE 'skipped' END, u.skip,
                        j.queue, j.target, j.kind, j.params, j.priority, j.max_attempts,
                        j.retry_on, CASE WHEN u.skip IS NULL THEN now() END,
                        CASE WHEN u.skip IS NOT NULL THEN now() END, j.timeout_ms
                   FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[])
                          AS u(id, job, slot, skip)
                   JOIN jobs j ON j.id = u.job
                  WHERE j.enabled AND j.interval_ms IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.id = j.target AND NOT t.enabled)
                 ON CONFLICT (job_id, slot_at) WHERE slot_at IS NOT NULL DO NOTHING
                 RETURNING id, job_id, status, queue, target, kind, params, priority, timeout_ms
             ), queued AS (
                 INSERT INTO run_outbox (run_id) SELECT id FROM made WHERE status = 'dispatched'
             )
             SELECT id, job_id, queue, target, kind, params, priority, timeout_ms
               FROM made WHERE status = 'dispatched'",
            &[&ids, &jobs, &slots, &skips],
        )
        .await
        .context("cannot record fired slots")?;
    tx.commit().await?;
    let mut runs = Vec::with_capacity(rows.len());
    for row in &rows {
        match message_from_row(row, row.get("id"), 1, row.get("job_id")) {
            Ok(run) => runs.push(run),
            // Recorded and in the outbox: a restart offers it again, or it is timed out.
            Err(error) => tracing::warn!(error = format!("{error:#}"), "a fired run is unreadable"),
        }
    }
    Ok(runs)
}

/// Clears the outbox of attempts JetStream has stored. Only the attempt published is cleared:
/// a retry scheduled meanwhile (a fast failure) keeps its row.
pub async fn mark_published(pool: &Pool, runs: &[(Uuid, u32)]) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = runs.iter().map(|(id, _)| *id).collect();
    let attempts: Vec<i32> = runs.iter().map(|(_, a)| to_i32(*a)).collect();
    let client = pool.get().await.context("no PostgreSQL connection")?;
    client
        .execute(
            "DELETE FROM run_outbox o USING unnest($1::uuid[], $2::int4[]) AS u(id, attempt)
              WHERE o.run_id = u.id AND o.attempt = u.attempt",
            &[&ids, &attempts],
        )
        .await
        .context("cannot clear published runs from the outbox")?;
    Ok(())
}

/// What a batch of results did.
#[derive(Debug, Default, PartialEq)]
pub struct Recording {
    /// Runs that ended, with their status.
    pub ended: Vec<(Uuid, RunStatus)>,
    /// Runs whose attempt failed and that will run again, with the next attempt's due time.
    pub retried: Vec<(Uuid, u32, DateTime<Utc>)>,
    /// Results that changed nothing (an attempt superseded or ended, or a repeat), recorded
    /// in `run_attempts` as late.
    pub late: Vec<Uuid>,
    /// Runs of chained jobs that the ended runs triggered, to dispatch.
    pub triggered: Vec<RunMessage>,
    /// Runs of chained jobs recorded as skipped (a parent did not succeed).
    pub skipped: Vec<Uuid>,
}

/// Records a batch of results in one transaction. A result applies only to the current
/// attempt of a run that has not ended (fencing). A retryable failure with attempts left
/// schedules the next attempt in the outbox after its backoff.
pub async fn record_results(
    pool: &Pool,
    results: &[RunResult],
    policy: &RetryPolicy,
    mut jitter: impl FnMut() -> f64,
    chains: &Chains,
) -> anyhow::Result<Recording> {
    let triggers = results.iter().any(|r| chains.has_children(&r.job_id));
    if !triggers && results.iter().all(|r| r.outcome == Outcome::Succeeded) {
        return record_successes(pool, results).await;
    }
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await?;

    // The state of runs whose result may retry them (successes always end or are late).
    let failed: Vec<Uuid> = results
        .iter()
        .filter(|r| r.outcome != Outcome::Succeeded)
        .map(|r| r.run_id)
        .collect();
    let mut states: HashMap<Uuid, RunState> = HashMap::new();
    if !failed.is_empty() {
        for row in tx
            .query(
                "SELECT id, attempt, status, max_attempts, retry_on FROM runs
                  WHERE id = ANY($1) FOR UPDATE",
                &[&failed],
            )
            .await
            .context("cannot read runs to decide retries")?
        {
            let status: String = row.get(2);
            states.insert(
                row.get(0),
                RunState {
                    attempt: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
                    status: status.parse().map_err(anyhow::Error::msg)?,
                    max_attempts: u32::try_from(row.get::<_, i32>(3)).unwrap_or(1),
                    retry_on: match row.get::<_, Option<Vec<String>>>(4) {
                        None => Retryable::DEFAULT.to_vec(),
                        Some(listed) => listed.iter().filter_map(|s| s.parse().ok()).collect(),
                    },
                },
            );
        }
    }

    let now = Utc::now();
    let mut seen = HashSet::new();
    let mut end = Vec::new();
    let mut retry = Vec::new();
    let mut late = Vec::new();
    for result in results {
        if !seen.insert((result.run_id, result.attempt)) {
            late.push(result);
            continue;
        }
        let decision = if result.outcome == Outcome::Succeeded {
            Decision::End(RunStatus::Succeeded)
        } else {
            retry::decide(
                states.get(&result.run_id),
                result.attempt,
                result.outcome,
                policy,
                jitter(),
            )
        };
        match decision {
            Decision::End(status) => end.push((result, status)),
            Decision::Retry { next, delay } => {
                let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
                retry.push((result, next, due));
            }
            Decision::Late => late.push(result),
        }
    }

    let mut recording = Recording::default();
    if !end.is_empty() {
        let ended = end_runs(&tx, &end).await?;
        let mut ended_now = Vec::new();
        for (result, status) in end {
            if ended.contains(&result.run_id) {
                recording.ended.push((result.run_id, status));
                ended_now.push(chains::Ended {
                    job: &result.job_id,
                    run: result.run_id,
                    status,
                    error: result.error.as_deref(),
                });
            } else {
                late.push(result);
            }
        }
        // Chained jobs get their runs in this same transaction: a crash cannot lose them.
        let triggered = chains.triggered(&ended_now, Uuid::now_v7);
        if !triggered.is_empty() {
            let mut rows = DefinedRuns::with_capacity(triggered.len());
            for t in &triggered {
                let mut run = t.child.def.template.clone();
                run.run_id = t.run_id;
                run.attempt = 1;
                rows.push(&run, &t.child.def, None, Some(t.parent_run), t.skip.clone())?;
                if t.skip.is_none() {
                    recording.triggered.push(run);
                } else {
                    recording.skipped.push(t.run_id);
                }
            }
            insert_defined_runs(&tx, &rows).await?;
        }
    }
    if !retry.is_empty() {
        let ids: Vec<Uuid> = retry.iter().map(|(r, _, _)| r.run_id).collect();
        let attempts: Vec<i32> = retry.iter().map(|(r, _, _)| to_i32(r.attempt)).collect();
        let next: Vec<i32> = retry.iter().map(|(_, n, _)| to_i32(*n)).collect();
        let due: Vec<DateTime<Utc>> = retry.iter().map(|(_, _, d)| *d).collect();
        let errors: Vec<Option<String>> = retry.iter().map(|(r, _, _)| r.error.clone()).collect();
        let rows = tx
            .query(
                "WITH moved AS (
                     UPDATE runs r SET attempt = u.next, retry_at = u.due, error = u.error
                       FROM unnest($1::uuid[], $2::int4[], $3::int4[], $4::timestamptz[], $5::text[])
                         AS u(id, attempt, next, due, error)
                      WHERE r.id = u.id AND r.attempt = u.attempt AND r.status = 'dispatched'
                  RETURNING r.id, r.submission_id, u.due, u.next
                 ), queued AS (
                     INSERT INTO run_outbox (run_id, submission_id, not_before, retry, attempt)
                     SELECT id, submission_id, due, true, next FROM moved
                     ON CONFLICT (run_id) DO UPDATE
                        SET not_before = EXCLUDED.not_before, retry = true,
                            attempt = EXCLUDED.attempt
                 )
                 SELECT id FROM moved",
                &[&ids, &attempts, &next, &due, &errors],
            )
            .await
            .context("cannot schedule retries")?;
        let moved: HashSet<Uuid> = rows.iter().map(|row| row.get(0)).collect();
        let mut history = Vec::new();
        for (result, next, due) in retry {
            if moved.contains(&result.run_id) {
                recording.retried.push((result.run_id, next, due));
                history.push(result);
            } else {
                late.push(result);
            }
        }
        insert_attempts(&tx, &history, false).await?;
    }
    insert_attempts(&tx, &late, true).await?;
    recording.late = late.iter().map(|r| r.run_id).collect();
    tx.commit().await?;
    Ok(recording)
}

/// The common case, a batch of successes: one statement ends the runs whose current attempt
/// they are and files the others as late, atomically, with no transaction round trips.
async fn record_successes(pool: &Pool, results: &[RunResult]) -> anyhow::Result<Recording> {
    let mut seen = HashSet::new();
    let (first, repeats): (Vec<&RunResult>, Vec<&RunResult>) = results
        .iter()
        .partition(|r| seen.insert((r.run_id, r.attempt)));
    let columns = ResultColumns::of(first.iter().map(|r| (*r, RunStatus::Succeeded)))?;
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let statement = client
        .prepare_cached(
            "WITH u AS (
                 SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[],
                                      $5::timestamptz[], $6::timestamptz[], $7::bool[],
                                      $8::jsonb[], $9::text[])
                     AS u(id, attempt, status, worker, started, finished, simulated, output, error)
             ), ended AS (
                 UPDATE runs r
                    SET status = u.status, worker_id = u.worker, started_at = u.started,
                        finished_at = u.finished, simulated = u.simulated, output = u.output,
                        error = u.error, recorded_at = clock_timestamp()
                   FROM u
                  WHERE r.id = u.id AND r.attempt = u.attempt
                    AND r.status IN ('pending', 'dispatched')
              RETURNING r.id
             ), late AS (
                 INSERT INTO run_attempts (run_id, attempt, outcome, worker_id, started_at,
                                           finished_at, error, late)
                 SELECT u.id, u.attempt, u.status, u.worker, u.started, u.finished, u.error, true
                   FROM u WHERE u.id NOT IN (SELECT id FROM ended)
             )
             SELECT id FROM ended",
        )
        .await?;
    let rows = client
        .query(&statement, &columns.params())
        .await
        .context("cannot record results")?;
    let ended: HashSet<Uuid> = rows.iter().map(|row| row.get(0)).collect();
    let mut recording = Recording::default();
    for result in first {
        if ended.contains(&result.run_id) {
            recording.ended.push((result.run_id, RunStatus::Succeeded));
        } else {
            recording.late.push(result.run_id);
        }
    }
    if !repeats.is_empty() {
        let mut client = client;
        let tx = client.transaction().await?;
        insert_attempts(&tx, &repeats, true).await?;
        tx.commit().await?;
        recording.late.extend(repeats.iter().map(|r| r.run_id));
    }
    Ok(recording)
}

/// Results as the column arrays of an `unnest`.
struct ResultColumns<'a> {
    ids: Vec<Uuid>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    workers: Vec<&'a str>,
    started: Vec<DateTime<Utc>>,
    finished: Vec<DateTime<Utc>>,
    simulated: Vec<bool>,
    outputs: Vec<Option<serde_json::Value>>,
    errors: Vec<Option<String>>,
}

impl<'a> ResultColumns<'a> {
    fn of(results: impl Iterator<Item = (&'a RunResult, RunStatus)>) -> anyhow::Result<Self> {
        let mut c = ResultColumns {
            ids: Vec::new(),
            attempts: Vec::new(),
            statuses: Vec::new(),
            workers: Vec::new(),
            started: Vec::new(),
            finished: Vec::new(),
            simulated: Vec::new(),
            outputs: Vec::new(),
            errors: Vec::new(),
        };
        for (result, status) in results {
            c.ids.push(result.run_id);
            c.attempts.push(to_i32(result.attempt));
            c.statuses.push(status.as_str());
            c.workers.push(result.worker_id.as_str());
            c.started.push(result.started_at);
            c.finished.push(result.finished_at);
            c.simulated.push(result.simulated);
            c.outputs.push(
                result
                    .output
                    .as_ref()
                    .map(serde_json::to_value)
                    .transpose()?,
            );
            c.errors.push(result.error.clone());
        }
        Ok(c)
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 9] {
        [
            &self.ids,
            &self.attempts,
            &self.statuses,
            &self.workers,
            &self.started,
            &self.finished,
            &self.simulated,
            &self.outputs,
            &self.errors,
        ]
    }
}

fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Ends runs whose current attempt these results are; returns the runs that ended.
async fn end_runs(
    tx: &deadpool_postgres::Transaction<'_>,
    end: &[(&RunResult, RunStatus)],
) -> anyhow::Result<HashSet<Uuid>> {
    let columns = ResultColumns::of(end.iter().copied())?;
    let rows = tx
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
            &columns.params(),
        )
        .await
        .context("cannot record results")?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Keeps attempts that did not end their run: retried ones, and late ones.
async fn insert_attempts(
    tx: &deadpool_postgres::Transaction<'_>,
    results: &[&RunResult],
    late: bool,
) -> anyhow::Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = results.iter().map(|r| r.run_id).collect();
    let attempts: Vec<i32> = results.iter().map(|r| to_i32(r.attempt)).collect();
    let outcomes: Vec<&str> = results.iter().map(|r| r.outcome.as_str()).collect();
    let workers: Vec<&str> = results.iter().map(|r| r.worker_id.as_str()).collect();
    let started: Vec<DateTime<Utc>> = results.iter().map(|r| r.started_at).collect();
    let finished: Vec<DateTime<Utc>> = results.iter().map(|r| r.finished_at).collect();
    let errors: Vec<Option<String>> = results.iter().map(|r| r.error.clone()).collect();
    tx.execute(
        "INSERT INTO run_attempts (run_id, attempt, outcome, worker_id, started_at, finished_at, error, late)
         SELECT u.*, $8 FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[],
                                   $5::timestamptz[], $6::timestamptz[], $7::text[]) AS u",
        &[&ids, &attempts, &outcomes, &workers, &started, &finished, &errors, &late],
    )
    .await
    .context("cannot record attempts")?;
    Ok(())
}

/// Takes the retries whose backoff is over, oldest first: from now on they wait in the outbox
/// like fresh runs (so a restart offers them again), and are returned to be offered.
pub async fn take_due_retries(pool: &Pool, limit: i64) -> anyhow::Result<Vec<RunMessage>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let taken: Vec<Uuid> = client
        .query(
            "UPDATE run_outbox SET retry = false
              WHERE run_id IN (SELECT run_id FROM run_outbox WHERE retry AND not_before <= now()
                                ORDER BY not_before LIMIT $1)
          RETURNING run_id",
            &[&limit],
        )
        .await
        .context("cannot take due retries")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    drop(client);
    outbox_runs(pool, "o.run_id = ANY($3)", None, limit, &taken).await
}

/// Attempts published and not ended, with when they were published: at start they hold
/// their targets' slots and are watched for their deadlines.
pub async fn in_flight_runs(pool: &Pool) -> anyhow::Result<Vec<(RunMessage, DateTime<Utc>)>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT r.id, r.attempt, r.job_id, r.queue, r.target, r.kind, r.params, r.priority,
                    r.timeout_ms, COALESCE(r.retry_at, r.dispatched_at, r.created_at) AS published
               FROM runs r
              WHERE r.status = 'dispatched'
                AND NOT EXISTS (SELECT 1 FROM run_outbox o WHERE o.run_id = r.id)",
            &[],
        )
        .await
        .context("cannot read runs in flight")?;
    rows.iter()
        .map(|row| {
            let run = message_from_row(
                row,
                row.get("id"),
                u32::try_from(row.get::<_, i32>("attempt")).unwrap_or(1),
                row.get("job_id"),
            )?;
            Ok((run, row.get("published")))
        })
        .collect()
}

/// One run as it would be published (its current attempt), and its status.
pub async fn run_message(
    pool: &Pool,
    run_id: Uuid,
) -> anyhow::Result<Option<(RunMessage, RunStatus)>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let Some(row) = client
        .query_opt(
            "SELECT id, attempt, job_id, queue, target, kind, params, priority, timeout_ms, status
               FROM runs WHERE id = $1",
            &[&run_id],
        )
        .await
        .context("cannot read the run")?
    else {
        return Ok(None);
    };
    let run = message_from_row(
        &row,
        run_id,
        u32::try_from(row.get::<_, i32>("attempt")).unwrap_or(1),
        row.get("job_id"),
    )?;
    let status: String = row.get("status");
    Ok(Some((run, status.parse().map_err(anyhow::Error::msg)?)))
}

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
/// are read from the runs (indexed by job), not kept on the job: no write per run.
pub async fn job_facts(pool: &Pool, job: &str) -> anyhow::Result<Option<JobFacts>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let Some(row) = client
        .query_opt(
            "SELECT j.id, j.kind, j.queue, j.target, j.interval_ms, j.after_job, j.run_if,
                    j.enabled, j.max_attempts, j.overlap,
                    (SELECT enabled FROM targets WHERE id = j.target) AS target_enabled,
                    (SELECT max(created_at) FROM runs WHERE job_id = j.id AND status <> 'skipped'),
                    (SELECT max(finished_at) FROM runs WHERE job_id = j.id AND status = 'succeeded'),
                    (SELECT max(finished_at) FROM runs WHERE job_id = j.id
                        AND status IN ('failed', 'interrupted', 'timed_out'))
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
              ORDER BY created_at DESC LIMIT 5",
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
    }))
}

/// Takes a run out of the outbox (it will not be published or retried).
pub async fn drop_from_outbox(pool: &Pool, run_id: Uuid) -> anyhow::Result<()> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    client
        .execute("DELETE FROM run_outbox WHERE run_id = $1", &[&run_id])
        .await
        .context("cannot take the run out of the outbox")?;
    Ok(())
}

/// Targets whose concurrency limit is not the default.
pub async fn target_limits(pool: &Pool) -> anyhow::Result<HashMap<TargetId, u32>> {
    named_limits(
        pool,
        "SELECT id, max_concurrency FROM targets WHERE max_concurrency IS NOT NULL",
        |id| TargetId::parse(id).map_err(|e| e.to_string()),
        "target",
    )
    .await
}

/// Queues with a limit of runs in flight in their definition.
pub async fn queue_limits(pool: &Pool) -> anyhow::Result<HashMap<QueueName, u32>> {
    named_limits(
        pool,
        "SELECT name, max_in_flight FROM queues WHERE max_in_flight IS NOT NULL",
        |name| QueueName::parse(name).map_err(|e| e.to_string()),
        "queue",
    )
    .await
}

/// Rows of (name, limit); a name that does not parse is logged and skipped.
async fn named_limits<K: std::hash::Hash + Eq>(
    pool: &Pool,
    sql: &str,
    parse: impl Fn(String) -> Result<K, String>,
    what: &str,
) -> anyhow::Result<HashMap<K, u32>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(sql, &[])
        .await
        .with_context(|| format!("cannot read {what} limits"))?;
    let mut limits = HashMap::new();
    for row in rows {
        let name: String = row.get(0);
        match parse(name.clone()) {
            Ok(key) => {
                limits.insert(key, u32::try_from(row.get::<_, i32>(1)).unwrap_or(1));
            }
            Err(error) => tracing::warn!(what, %name, %error, "limit ignored"),
        }
    }
    Ok(limits)
}

/// When the next retry is due, if any waits.
pub async fn next_retry(pool: &Pool) -> anyhow::Result<Option<DateTime<Utc>>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let row = client
        .query_one("SELECT min(not_before) FROM run_outbox WHERE retry", &[])
        .await
        .context("cannot read the next retry")?;
    Ok(row.get(0))
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
    let waiting: i64 = client
        .query_one("SELECT count(*) FROM run_outbox", &[])
        .await?
        .get(0);
    Ok(StatusReply {
        runs,
        queues,
        waiting,
    })
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
