//! Results: executes a [`ResultPlan`](crate::results::ResultPlan) (end runs, schedule
//! retries, insert chained runs, keep attempts) in one transaction.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use faro_shared::domain::{JobId, QueueName, Retryable, RunStatus, TargetId, WorkerId};
use faro_shared::messages::{RunMessage, RunResult};
use uuid::Uuid;

use super::definitions::{insert_defined_runs, DefinedRuns};
use super::to_i32;
use crate::chains::{Chains, Triggered};
use crate::results::{plan, split, ResultPlan, Retry};
use crate::retry::{RetryPolicy, RunState};

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
    /// Runs put in the outcome outbox: those the dispatcher's own results ended (a timeout,
    /// a cancel) and the skipped chained runs, whose outcomes no redelivery would publish.
    pub outboxed: Vec<Uuid>,
}

/// Records a batch of results in one transaction. Results that fencing alone decides (see
/// [`split`]) are applied in one statement, fenced in SQL; the runs of the others are locked,
/// their results planned ([`plan`]) and the plan written. A batch of successes alone needs no
/// transaction at all.
pub async fn record_results(
    pool: &Pool,
    results: &[RunResult],
    policy: &RetryPolicy,
    jitter: impl FnMut() -> f64,
    chains: &Chains,
) -> anyhow::Result<Recording> {
    // Rare: a result PostgreSQL could not hold as it is is recorded cleaned, never refused.
    let cleaned: Vec<RunResult>;
    let results = if results.iter().any(RunResult::has_nul) {
        cleaned = results
            .iter()
            .map(|r| r.without_nul().unwrap_or_else(|| r.clone()))
            .collect();
        &cleaned[..]
    } else {
        results
    };
    let (fenced, planned) = split(results, chains);
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    if planned.is_empty() {
        return record_successes(&client, &fenced, true).await;
    }
    let tx = client.transaction().await?;
    let mut recording = record_successes(&tx, &fenced, false).await?;
    let states = lock_states(&tx, &planned).await?;
    let plan = plan(
        planned,
        &states,
        chains,
        policy,
        jitter,
        Uuid::now_v7,
        Utc::now(),
    );
    recording.extend(Recording::of(&plan));
    end_runs(&tx, &plan.ended).await?;
    recording.outboxed = plan
        .ended
        .iter()
        .filter(|(result, _)| result.worker_id.as_str() == crate::deadlines::OWN_WORKER)
        .map(|(result, _)| result.run_id)
        .chain(recording.skipped.iter().copied())
        .collect();
    super::outcomes::outbox(&tx, &recording.outboxed).await?;
    // Chained jobs get their runs in this same transaction: a crash cannot lose them.
    let children: Vec<&Triggered> = plan.triggered.iter().chain(&plan.skipped).collect();
    if !children.is_empty() {
        let mut rows = DefinedRuns::with_capacity(children.len());
        for t in children {
            rows.push(
                &t.run(),
                &t.child.def,
                None,
                Some(t.parent_run),
                t.skip.clone(),
            )?;
        }
        insert_defined_runs(&tx, &rows).await?;
    }
    schedule_retries(&tx, &plan.retries).await?;
    let retried: Vec<&RunResult> = plan.retries.iter().map(|r| r.result).collect();
    insert_attempts(&tx, &retried, false).await?;
    insert_attempts(&tx, &plan.late, true).await?;
    tx.commit().await?;
    Ok(recording)
}

impl Recording {
    fn extend(&mut self, other: Recording) {
        self.ended.extend(other.ended);
        self.retried.extend(other.retried);
        self.late.extend(other.late);
        self.triggered.extend(other.triggered);
        self.skipped.extend(other.skipped);
        self.outboxed.extend(other.outboxed);
    }

    fn of(plan: &ResultPlan<'_>) -> Self {
        Recording {
            ended: plan.ended.iter().map(|(r, s)| (r.run_id, *s)).collect(),
            retried: plan
                .retries
                .iter()
                .map(|r| (r.result.run_id, r.next, r.due))
                .collect(),
            late: plan.late.iter().map(|r| r.run_id).collect(),
            triggered: plan.triggered.iter().map(Triggered::run).collect(),
            skipped: plan.skipped.iter().map(|t| t.run_id).collect(),
            outboxed: Vec::new(),
        }
    }
}

/// The statement of [`record_successes`], on `day`'s partitions or on the partitioned tables.
async fn end_successes(
    client: &impl GenericClient,
    day: Option<chrono::NaiveDate>,
    columns: &ResultColumns<'_>,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let (runs, attempts) = day.map_or_else(
        || ("runs".to_owned(), "run_attempts".to_owned()),
        |day| {
            (
                super::history::runs_day(day),
                super::history::attempts_day(day),
            )
        },
    );
    let statement = client
        .prepare_cached(&format!(
            "WITH u AS (
                 SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[],
                                      $5::timestamptz[], $6::timestamptz[], $7::bool[],
                                      $8::jsonb[], $9::text[])
                     AS u(id, attempt, status, worker, started, finished, simulated, output, error)
             ), ended AS (
                 UPDATE {runs} r
                    SET status = u.status, worker_id = u.worker, started_at = u.started,
                        finished_at = u.finished, simulated = u.simulated, output = u.output,
                        error = u.error, recorded_at = clock_timestamp()
                   FROM u
                  WHERE r.id = u.id AND r.attempt = u.attempt
                    AND r.status IN ('pending', 'dispatched')
              RETURNING r.id
             ), late AS (
                 INSERT INTO {attempts} (run_id, attempt, outcome, worker_id, started_at,
                                         finished_at, error, late)
                 SELECT u.id, u.attempt, u.status, u.worker, u.started, u.finished, u.error, true
                   FROM u WHERE u.id NOT IN (SELECT id FROM ended)
                    AND NOT EXISTS (SELECT 1 FROM {runs} r
                                     WHERE r.id = u.id AND r.attempt = u.attempt
                                       AND r.status = u.status AND r.worker_id = u.worker
                                       AND r.started_at = u.started)
                    AND NOT EXISTS (SELECT 1 FROM {attempts} a
                                     WHERE a.run_id = u.id AND a.attempt = u.attempt
                                       AND a.outcome = u.status AND a.worker_id = u.worker
                                       AND a.started_at = u.started)
             )
             SELECT id FROM ended"
        ))
        .await?;
    client.query(&statement, &columns.params()).await
}

/// Locks the runs `results` name, in id order (two batches never wait on each other in a
/// cycle), and reads their states: under these locks the plan's fencing is the truth.
async fn lock_states(
    tx: &deadpool_postgres::Transaction<'_>,
    results: &[&RunResult],
) -> anyhow::Result<HashMap<Uuid, RunState>> {
    let mut ids: Vec<Uuid> = results.iter().map(|r| r.run_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query(
            "SELECT id, attempt, status, max_attempts, retry_on FROM runs
              WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await
        .context("cannot lock runs to record their results")?;
    let mut states = HashMap::with_capacity(rows.len());
    for row in rows {
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
    Ok(states)
}

/// Moves retried runs to their next attempt and queues it in the outbox for its due time.
async fn schedule_retries(
    tx: &deadpool_postgres::Transaction<'_>,
    retries: &[Retry<'_>],
) -> anyhow::Result<()> {
    if retries.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = retries.iter().map(|r| r.result.run_id).collect();
    let attempts: Vec<i32> = retries.iter().map(|r| to_i32(r.result.attempt)).collect();
    let next: Vec<i32> = retries.iter().map(|r| to_i32(r.next)).collect();
    let due: Vec<DateTime<Utc>> = retries.iter().map(|r| r.due).collect();
    let errors: Vec<Option<String>> = retries.iter().map(|r| r.result.error.clone()).collect();
    let moved = tx
        .execute(
            "WITH moved AS (
                 UPDATE runs r SET attempt = u.next, retry_at = u.due, error = u.error
                   FROM unnest($1::uuid[], $2::int4[], $3::int4[], $4::timestamptz[], $5::text[])
                     AS u(id, attempt, next, due, error)
                  WHERE r.id = u.id AND r.attempt = u.attempt AND r.status = 'dispatched'
              RETURNING r.id, r.submission_id, r.queue, u.due, u.next
             )
             INSERT INTO run_outbox (run_id, submission_id, queue, not_before, retry, attempt)
             SELECT id, submission_id, queue, due, true, next FROM moved
             ON CONFLICT (run_id) DO UPDATE
                SET not_before = EXCLUDED.not_before, retry = true, attempt = EXCLUDED.attempt",
            &[&ids, &attempts, &next, &due, &errors],
        )
        .await
        .context("cannot schedule retries")?;
    expect_all("retried", moved as usize, retries.len())
}

/// Under the runs' locks every planned write applies; a shortfall means the plan was made on
/// states that changed, and the whole batch is rolled back (and redelivered) rather than
/// recorded half right.
fn expect_all(what: &str, written: usize, planned: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        written == planned,
        "{what} {written} of {planned} runs planned: their states changed under lock"
    );
    Ok(())
}

/// Successes that fencing alone decides: one statement ends the runs whose current attempt
/// they are and files the others as late, atomically, without reading the runs first.
///
/// `direct` (outside a transaction): when the batch's runs were all made the same day, the
/// statement names that day's partitions themselves, planned as plain tables, instead of
/// `runs` and `run_attempts`, whose planning covers every day held and whose estimates for a
/// day still being written lead to scans. A day dropped meanwhile falls back to the
/// partitioned tables.
async fn record_successes(
    client: &impl GenericClient,
    results: &[&RunResult],
    direct: bool,
) -> anyhow::Result<Recording> {
    if results.is_empty() {
        return Ok(Recording::default());
    }
    let mut seen = HashSet::new();
    let (first, repeats): (Vec<&RunResult>, Vec<&RunResult>) = results
        .iter()
        .partition(|r| seen.insert((r.run_id, r.attempt)));
    let columns = ResultColumns::of(first.iter().map(|r| (*r, RunStatus::Succeeded)))?;
    let day = direct
        .then(|| super::history::day_of_runs(&columns.ids))
        .flatten();
    let rows = match end_successes(client, day, &columns).await {
        Err(error)
            if day.is_some()
                && error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
        {
            end_successes(client, None, &columns).await
        }
        rows => rows,
    }
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
        insert_attempts(client, &repeats, true).await?;
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

/// Ends the runs whose current attempt these results are.
async fn end_runs(
    tx: &deadpool_postgres::Transaction<'_>,
    end: &[(&RunResult, RunStatus)],
) -> anyhow::Result<()> {
    if end.is_empty() {
        return Ok(());
    }
    let columns = ResultColumns::of(end.iter().copied())?;
    let ended = tx
        .execute(
            "UPDATE runs r
                SET status = u.status, worker_id = u.worker, started_at = u.started,
                    finished_at = u.finished, simulated = u.simulated, output = u.output,
                    error = u.error, recorded_at = clock_timestamp()
               FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::timestamptz[],
                           $6::timestamptz[], $7::bool[], $8::jsonb[], $9::text[])
                 AS u(id, attempt, status, worker, started, finished, simulated, output, error)
              WHERE r.id = u.id AND r.attempt = u.attempt
                AND r.status IN ('pending', 'dispatched')",
            &columns.params(),
        )
        .await
        .context("cannot record results")?;
    expect_all("ended", ended as usize, end.len())
}

/// Keeps attempts that did not end their run: retried ones, and late ones. A late result that
/// repeats one already recorded (the same attempt, outcome, worker and start: the same
/// message delivered again because its acknowledgement was lost) is not kept twice.
async fn insert_attempts(
    tx: &impl GenericClient,
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
                                   $5::timestamptz[], $6::timestamptz[], $7::text[])
                          AS u(id, attempt, outcome, worker, started, finished, error)
          WHERE NOT ($8 AND (
                    EXISTS (SELECT 1 FROM runs r
                             WHERE r.id = u.id AND r.attempt = u.attempt
                               AND r.status = u.outcome AND r.worker_id = u.worker
                               AND r.started_at = u.started)
                 OR EXISTS (SELECT 1 FROM run_attempts a
                             WHERE a.run_id = u.id AND a.attempt = u.attempt
                               AND a.outcome = u.outcome AND a.worker_id = u.worker
                               AND a.started_at = u.started)))",
        &[&ids, &attempts, &outcomes, &workers, &started, &finished, &errors, &late],
    )
    .await
    .context("cannot record attempts")?;
    Ok(())
}

/// The outcomes of those of `ids` that have ended, read back from their records (for the
/// outcome feed: a chained run skipped, a result delivered again after its outcome may not
/// have been published). Each is read by its id, never by a scan.
pub async fn ended_outcomes(
    pool: &Pool,
    ids: &[Uuid],
) -> anyhow::Result<Vec<faro_shared::messages::RunOutcome>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT r.id, r.job_id, r.queue, r.target, r.attempt, r.status, r.error, r.worker_id,
                    r.started_at, COALESCE(r.finished_at, r.recorded_at), COALESCE(r.simulated, false)
               FROM unnest($1::uuid[]) AS i(id)
              CROSS JOIN LATERAL (SELECT * FROM runs r WHERE r.id = i.id LIMIT 1) r",
            &[&ids],
        )
        .await
        .context("cannot read ended runs")?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in &rows {
        match outcome_of(row) {
            Ok(Some(outcome)) => outcomes.push(outcome),
            Ok(None) => {}
            // One unreadable row never keeps the others off the feed.
            Err(error) => tracing::warn!(
                run = %row.get::<_, Uuid>(0),
                error = faro_shared::pg::error_text(&error),
                "a run's outcome is unreadable; left off the feed"
            ),
        }
    }
    Ok(outcomes)
}

/// A run's outcome from its row; `None` while it has not ended.
fn outcome_of(
    row: &tokio_postgres::Row,
) -> anyhow::Result<Option<faro_shared::messages::RunOutcome>> {
    let status: RunStatus = row
        .get::<_, String>(5)
        .parse()
        .map_err(anyhow::Error::msg)?;
    if !status.is_terminal() {
        return Ok(None);
    }
    let started_at: Option<DateTime<Utc>> = row.get(8);
    let finished_at: Option<DateTime<Utc>> = row.get(9);
    let finished_at = finished_at.unwrap_or_else(Utc::now);
    Ok(Some(faro_shared::messages::RunOutcome {
        run_id: row.get(0),
        job_id: JobId::parse(row.get::<_, String>(1))?,
        queue: QueueName::parse(row.get::<_, String>(2))?,
        target: row
            .get::<_, Option<String>>(3)
            .map(TargetId::parse)
            .transpose()?,
        attempt: u32::try_from(row.get::<_, i32>(4)).unwrap_or(1),
        status,
        error: row.get(6),
        worker_id: row
            .get::<_, Option<String>>(7)
            .map(WorkerId::parse)
            .transpose()?,
        started_at,
        finished_at,
        duration_ms: started_at
            .and_then(|at| u64::try_from((finished_at - at).num_milliseconds()).ok()),
        output: None,
        simulated: row.get(10),
    }))
}
