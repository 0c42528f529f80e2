//! Job definitions (recurring and chained) and the runs made from them; target and queue
//! limits.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::domain::{JobId, MaxAttempts, QueueName, Retryable, TargetId};
use faro_shared::messages::{Overlap, RunMessage};
use uuid::Uuid;

use super::outbox::message_from_row;
use super::submissions::task_parts;
use super::to_i32;
use crate::chains::{Child, RunIf};
use crate::schedule;
use crate::timetable::{Fire, JobDef, Recurring};

/// A job's latest slot recorded, as a subquery on `jobs`: the newest run with a slot by id (a
/// slot's run id is made at the slot's time), among the runs of the last day plus a day or
/// the job's interval, whichever is longer. It reads the job's newest index entries in those
/// few days, so a takeover reads the same whatever the history holds. A job whose latest slot
/// is older (not scheduled for that long) starts at its next slot, as a new job does; the
/// slots it missed would be older than `timetable::MISSED_LOOKBACK` anyway.
const LAST_SLOT: &str = "(SELECT r.slot_at FROM runs r
                           WHERE r.job_id = jobs.id AND r.slot_at IS NOT NULL
                             AND r.id >= faro_uuid_at(now() - interval '1 day'
                                   - greatest(interval '1 day',
                                              COALESCE(jobs.interval_ms, 0) * interval '1 millisecond'))
                           ORDER BY r.id DESC LIMIT 1)";

/// Every enabled recurring job, as the scheduler keeps it: read as a stream, so a million
/// definitions never sit in memory twice. A row that cannot be read is skipped with a warning,
/// never stopping the others.
pub async fn recurring_jobs(pool: &Pool) -> anyhow::Result<Vec<Recurring>> {
    use futures::TryStreamExt as _;
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query_raw(
            &format!(
                "SELECT id, interval_ms, overlap,
                    {LAST_SLOT}
               FROM jobs WHERE enabled AND interval_ms IS NOT NULL"
            ),
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
                        -- Only a recurring job has slots: a chained job's runs are not read.
                        CASE WHEN interval_ms IS NOT NULL THEN {LAST_SLOT} END AS last_slot_at
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
                tracing::warn!(job = %id, error = faro_shared::pg::error_text(&error), "job definition skipped")
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
pub(super) fn retry_on_to(retry_on: &[Retryable]) -> Option<String> {
    (retry_on != Retryable::DEFAULT).then(|| {
        retry_on
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Recurring runs not yet ended, by job: their next slots are skipped until they end. An open
/// run is in the outbox (waiting to be published, or a retry waiting) or in flight
/// (`in_flight`, as the leader restored them from the jobs stream); each is read by its id,
/// so the reads do not grow with the history.
pub async fn open_recurring_runs(
    pool: &Pool,
    in_flight: &[Uuid],
) -> anyhow::Result<Vec<(JobId, Uuid)>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT r.job_id, r.id
               FROM (SELECT run_id FROM run_outbox UNION SELECT unnest($1::uuid[])) AS o(id)
              -- One lookup by id per open run, never a scan of the history.
              CROSS JOIN LATERAL (
                    SELECT r.job_id, r.id FROM runs r
                     WHERE r.id = o.id AND r.slot_at IS NOT NULL
                       AND r.status IN ('pending', 'dispatched')
                     LIMIT 1) r",
            &[&in_flight],
        )
        .await
        .context("cannot read open recurring runs")?;
    rows.iter()
        .map(|row| Ok((JobId::parse(row.get::<_, String>(0))?, row.get(1))))
        .collect()
}

/// Runs made from definitions (recurring slots, chained jobs), as `unnest` columns.
pub(super) struct DefinedRuns {
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
    pub(super) fn with_capacity(n: usize) -> Self {
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
    pub(super) fn push(
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
/// recorded (the same id) is left alone. Returns the ids inserted.
pub(super) async fn insert_defined_runs(
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
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id, status, queue
             ), queued AS (
                 INSERT INTO run_outbox (run_id, queue)
                 SELECT id, queue FROM made WHERE status = 'dispatched'
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

/// Why a slot that passed unfired was skipped.
pub const MISSED: &str = "skipped: came due while no dispatcher could fire it (a leader change, or PostgreSQL unavailable); a later slot ran";

/// Records fired slots in one transaction: a run (with its outbox row) for each slot that
/// runs, a `skipped` run for each slot whose job is still going. What a slot runs comes from
/// the job's stored definition; a job disabled, no longer recurring or on a disabled target
/// records nothing. A slot already recorded (by another dispatcher) is left alone: its run id
/// is derived from the job and the slot, so the primary key finds it. Returns the runs to
/// dispatch, and the ids of the skipped runs this call recorded.
pub async fn record_slots(
    pool: &Pool,
    fires: &[Fire],
) -> anyhow::Result<(Vec<RunMessage>, Vec<Uuid>)> {
    let mut ids = Vec::with_capacity(fires.len());
    let mut jobs = Vec::with_capacity(fires.len());
    let mut slots = Vec::with_capacity(fires.len());
    let mut skips: Vec<Option<String>> = Vec::with_capacity(fires.len());
    for fire in fires {
        ids.push(schedule::slot_run_id(&fire.job, fire.slot));
        jobs.push(fire.job.as_str());
        slots.push(fire.slot);
        skips.push(
            fire.overlaps
                .map(|open| format!("skipped: previous run {open} still running")),
        );
        // Slots that passed unfired: recorded now, unless a dispatcher recorded them then.
        for missed in &fire.missed {
            ids.push(schedule::slot_run_id(&fire.job, *missed));
            jobs.push(fire.job.as_str());
            slots.push(*missed);
            skips.push(Some(MISSED.to_owned()));
        }
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
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id, job_id, status, queue, target, kind, params, priority, timeout_ms
             ), queued AS (
                 INSERT INTO run_outbox (run_id, queue)
                 SELECT id, queue FROM made WHERE status = 'dispatched'
             )
             SELECT id, job_id, status, queue, target, kind, params, priority, timeout_ms
               FROM made",
            &[&ids, &jobs, &slots, &skips],
        )
        .await
        .context("cannot record fired slots")?;
    let skipped: Vec<Uuid> = rows
        .iter()
        .filter(|row| row.get::<_, &str>("status") == "skipped")
        .map(|row| row.get("id"))
        .collect();
    super::outcomes::outbox(&tx, &skipped).await?;
    tx.commit().await?;
    let mut runs = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.get::<_, &str>("status") == "skipped" {
            continue;
        }
        match message_from_row(row, row.get("id"), 1, row.get("job_id")) {
            Ok(run) => runs.push(run),
            // Recorded and in the outbox: a restart offers it again, or it is timed out.
            Err(error) => tracing::warn!(
                error = faro_shared::pg::error_text(&error),
                "a fired run is unreadable"
            ),
        }
    }
    Ok((runs, skipped))
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
