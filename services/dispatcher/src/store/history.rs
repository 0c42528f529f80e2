//! The run history's days (V13): `runs` and `run_attempts` are partitioned by the day a run
//! was made, read from its UUIDv7 id. Days are made ahead and dropped whole past retention;
//! the runs of a dropped day that are still open move to the held partition first.

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

/// How long making or dropping a day waits for its locks before giving up until the next
/// check: the runs being written wait behind a lock request, so it is never long.
const LOCK_TIMEOUT: &str = "2s";

/// The name of one day's partition of `runs`.
pub(super) fn runs_day(day: NaiveDate) -> String {
    format!("runs_d{}", day.format("%Y%m%d"))
}

/// The name of one day's partition of `run_attempts`.
pub(super) fn attempts_day(day: NaiveDate) -> String {
    format!("run_attempts_d{}", day.format("%Y%m%d"))
}

/// The UTC day every one of `ids` was made, when they are all UUIDv7 of the same day: the
/// day whose partitions hold them all, if that day is held. `None` for no ids, ids of several
/// days, or an id of another version.
pub(super) fn day_of_runs(ids: &[Uuid]) -> Option<NaiveDate> {
    let mut days = ids.iter().map(|id| {
        let (secs, _) = id.get_timestamp()?.to_unix();
        Some(DateTime::from_timestamp(i64::try_from(secs).ok()?, 0)?.date_naive())
    });
    let first = days.next()??;
    days.all(|day| day == Some(first)).then_some(first)
}

/// The days the history holds, oldest first.
pub async fn history_days(pool: &Pool) -> anyhow::Result<Vec<NaiveDate>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'runs'::regclass",
            &[],
        )
        .await
        .context("cannot list the days of run history")?;
    let mut days: Vec<NaiveDate> = rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            NaiveDate::parse_from_str(name.strip_prefix("runs_d")?, "%Y%m%d").ok()
        })
        .collect();
    days.sort_unstable();
    Ok(days)
}

/// Makes one day's partitions unless they exist; returns whether it made them.
pub async fn make_history_day(pool: &Pool, day: NaiveDate) -> anyhow::Result<bool> {
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .await?;
    let made: bool = tx
        .query_one("SELECT faro_make_history_day($1)", &[&day])
        .await
        .with_context(|| format!("cannot make the history of {day}"))?
        .get(0);
    tx.commit()
        .await
        .with_context(|| format!("cannot make the history of {day}"))?;
    Ok(made)
}

/// Drops one day's partitions; its runs still open move to the held partition, with their
/// attempts, in the same transaction. Returns how many runs were kept.
pub async fn drop_history_day(pool: &Pool, day: NaiveDate) -> anyhow::Result<u64> {
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    // Read without locks first: the day's partition is read once, while runs are written
    // elsewhere; only the runs found open are read again under the lock.
    let open: Vec<Uuid> = match client
        .query(
            &format!(
                "SELECT id FROM {} WHERE status IN ('pending', 'dispatched')",
                runs_day(day)
            ),
            &[],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|row| row.get(0)).collect(),
        // Dropped meanwhile (another leader): the function below does nothing either.
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            Vec::new()
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read the open runs of {day}"))
        }
    };
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .await?;
    let held: i32 = tx
        .query_one("SELECT faro_drop_history_day($1, $2)", &[&day, &open])
        .await
        .with_context(|| format!("cannot drop the history of {day}"))?
        .get(0);
    tx.commit()
        .await
        .with_context(|| format!("cannot drop the history of {day}"))?;
    Ok(u64::try_from(held).unwrap_or(0))
}

/// Deletes the held runs that ended and were made before `before`, with their attempts and
/// failures (the held partition holds only the few runs open when their day was dropped).
/// Returns how many runs it deleted.
pub async fn expire_held_runs(pool: &Pool, before: DateTime<Utc>) -> anyhow::Result<u64> {
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await?;
    let deleted = tx
        .query(
            "DELETE FROM runs_held
              WHERE created_at < $1 AND status NOT IN ('pending', 'dispatched')
             RETURNING id",
            &[&before],
        )
        .await
        .context("cannot delete the held runs past retention")?;
    let ids: Vec<Uuid> = deleted.iter().map(|row| row.get(0)).collect();
    tx.execute(
        "DELETE FROM run_attempts_held WHERE run_id = ANY($1)",
        &[&ids],
    )
    .await
    .context("cannot delete the attempts of held runs past retention")?;
    tx.execute("DELETE FROM run_failures_held WHERE id = ANY($1)", &[&ids])
        .await
        .context("cannot delete the failures of held runs past retention")?;
    tx.commit().await?;
    Ok(ids.len() as u64)
}

/// Rows deleted by one statement of [`expire_submissions`].
const EXPIRE_BATCH: i64 = 10_000;

/// Batches [`expire_submissions`] deletes of each table at most in one call (the rest waits
/// for the next check).
const EXPIRE_BATCHES: usize = 20;

/// What [`expire_submissions`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub submissions: u64,
    pub jobs: u64,
}

/// Deletes the submissions received before `before`, and the one-shot jobs (neither recurring
/// nor chained) last defined before it that have no run still open and no job chained after
/// them; oldest first, in batches. Their runs stay for their own retention.
pub async fn expire_submissions(pool: &Pool, before: DateTime<Utc>) -> anyhow::Result<Expired> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let mut expired = Expired::default();
    for (count, sql) in [
        (
            &mut expired.submissions,
            "WITH gone AS (
                 DELETE FROM submissions WHERE id IN (
                     SELECT id FROM submissions WHERE received_at < $1
                      ORDER BY received_at LIMIT $2)
              RETURNING 1)
             SELECT count(*) FROM gone",
        ),
        (
            &mut expired.jobs,
            "WITH gone AS (
                 DELETE FROM jobs WHERE id IN (
                     SELECT j.id FROM jobs j
                      WHERE j.interval_ms IS NULL AND j.after_job IS NULL AND j.updated_at < $1
                        AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.after_job = j.id)
                        AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.job_id = j.id
                                           AND r.status IN ('pending', 'dispatched'))
                      ORDER BY j.updated_at LIMIT $2)
                   -- Checked again on the row as it is now: a job submitted again meanwhile
                   -- (defined anew, a new run) stays.
                   AND interval_ms IS NULL AND after_job IS NULL AND updated_at < $1
              RETURNING 1)
             SELECT count(*) FROM gone",
        ),
    ] {
        for _ in 0..EXPIRE_BATCHES {
            let deleted: i64 = client
                .query_one(sql, &[&before, &EXPIRE_BATCH])
                .await
                .context("cannot delete submissions or one-shot jobs past retention")?
                .get(0);
            *count += u64::try_from(deleted).unwrap_or(0);
            if deleted < EXPIRE_BATCH {
                break;
            }
        }
    }
    Ok(expired)
}

/// The bytes `table` takes on disk, indexes included.
pub async fn table_bytes(pool: &Pool, table: &str) -> anyhow::Result<i64> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    Ok(client
        .query_one(
            "SELECT COALESCE(pg_total_relation_size(to_regclass($1)), 0)::int8",
            &[&table],
        )
        .await
        .with_context(|| format!("cannot read the size of {table}"))?
        .get(0))
}

/// What the history holds: runs held past their day, and its size on disk in bytes.
pub async fn history_size(pool: &Pool) -> anyhow::Result<(i64, i64)> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM runs_held),
                    (SELECT COALESCE(sum(pg_total_relation_size(i.inhrelid)), 0)::int8
                       FROM pg_inherits i
                      WHERE i.inhparent IN ('runs'::regclass, 'run_attempts'::regclass,
                                            'run_failures'::regclass))",
            &[],
        )
        .await
        .context("cannot read the size of the run history")?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(at: &str) -> Uuid {
        let ms = at.parse::<DateTime<Utc>>().unwrap().timestamp_millis();
        uuid::Builder::from_unix_timestamp_millis(u64::try_from(ms).unwrap(), &[7; 10]).into_uuid()
    }

    #[test]
    fn a_batch_has_a_day_only_when_all_its_runs_were_made_that_day() {
        let day: NaiveDate = "2026-12-01".parse().unwrap();
        let (morning, night) = (
            made("2026-12-01T00:00:00Z"),
            made("2026-12-01T23:59:59.999Z"),
        );
        assert_eq!(day_of_runs(&[morning, night]), Some(day));
        assert_eq!(runs_day(day), "runs_d20261201");
        assert_eq!(attempts_day(day), "run_attempts_d20261201");
        assert_eq!(day_of_runs(&[morning, made("2026-12-02T00:00:00Z")]), None);
        assert_eq!(day_of_runs(&[morning, Uuid::new_v4()]), None);
        assert_eq!(day_of_runs(&[]), None);
    }
}
