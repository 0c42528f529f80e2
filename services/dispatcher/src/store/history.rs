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
fn runs_day(day: NaiveDate) -> String {
    format!("runs_d{}", day.format("%Y%m%d"))
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

/// Deletes the held runs that ended and were made before `before`, with their attempts (the
/// held partition holds only the few runs open when their day was dropped). Returns how
/// many runs it deleted.
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
    tx.commit().await?;
    Ok(ids.len() as u64)
}

/// What the history holds: runs held past their day, and its size on disk in bytes.
pub async fn history_size(pool: &Pool) -> anyhow::Result<(i64, i64)> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM runs_held),
                    (SELECT COALESCE(sum(pg_total_relation_size(i.inhrelid)), 0)::int8
                       FROM pg_inherits i
                      WHERE i.inhparent IN ('runs'::regclass, 'run_attempts'::regclass))",
            &[],
        )
        .await
        .context("cannot read the size of the run history")?;
    Ok((row.get(0), row.get(1)))
}
