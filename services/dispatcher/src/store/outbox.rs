//! The outbox: runs recorded and not yet stored in JetStream, retries waiting for their
//! backoff, and attempts in flight.

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::domain::{JobId, Priority, QueueName, RunStatus, TargetId};
use faro_shared::messages::{RunMessage, Task};
use uuid::Uuid;

use super::to_i32;

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
           FROM run_outbox o
          -- One lookup by id per outbox row: as a join, the whole outbox asked for (a new
          -- leader's) was planned as a hash join over every run of the history (3 s at 6
          -- million runs).
          CROSS JOIN LATERAL (
                SELECT * FROM runs r WHERE r.id = o.run_id
                   -- A run that ended while its row stayed (its publish retried, its row
                   -- not cleared) is never published again.
                   AND r.status IN ('pending', 'dispatched')
                 LIMIT 1) r
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
pub(super) fn message_from_row(
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
        deadline: None,
        sent_at: None,
    })
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

/// The attempts of `stored` (the jobs stream's messages by `Nats-Msg-Id`, with when each was
/// stored) that are their run's current attempt and not ended, with when they were stored:
/// at start they hold their targets' slots and are watched for their deadlines. Each is read
/// by its id, in its day of history: the reads do not grow with the history. Runs with an
/// outbox row (a retry waiting, a publish not cleared) are left to the outbox.
pub async fn in_flight_runs(
    pool: &Pool,
    stored: &HashMap<String, DateTime<Utc>>,
) -> anyhow::Result<Vec<(RunMessage, DateTime<Utc>)>> {
    let mut ids = Vec::with_capacity(stored.len());
    let mut attempts = Vec::with_capacity(stored.len());
    let mut times = Vec::with_capacity(stored.len());
    for (msg_id, at) in stored {
        if let Some((run, attempt)) = RunMessage::attempt_of_msg_id(msg_id) {
            ids.push(run);
            attempts.push(to_i32(attempt));
            times.push(*at);
        }
    }
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT r.id, r.attempt, r.job_id, r.queue, r.target, r.kind, r.params, r.priority,
                    r.timeout_ms, s.at AS published
               FROM unnest($1::uuid[], $2::int4[], $3::timestamptz[]) AS s(id, attempt, at)
              -- One lookup by id per attempt, never a scan of the history.
              CROSS JOIN LATERAL (
                    SELECT * FROM runs r
                     WHERE r.id = s.id AND r.attempt = s.attempt AND r.status = 'dispatched'
                     LIMIT 1) r
              WHERE NOT EXISTS (SELECT 1 FROM run_outbox o WHERE o.run_id = r.id)",
            &[&ids, &attempts, &times],
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

/// Takes a run out of the outbox (it will not be published or retried).
pub async fn drop_from_outbox(pool: &Pool, run_id: Uuid) -> anyhow::Result<()> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    client
        .execute("DELETE FROM run_outbox WHERE run_id = $1", &[&run_id])
        .await
        .context("cannot take the run out of the outbox")?;
    Ok(())
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
