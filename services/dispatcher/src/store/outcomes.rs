//! The outcome feed's outbox (`outcome_outbox`): the runs whose end the leader decided itself,
//! written in the transaction that ends them and cleared once their outcomes are on the feed.

use anyhow::Context as _;
use deadpool_postgres::Pool;
use uuid::Uuid;

/// Puts `runs` in the outbox, in the transaction that ends them.
pub(super) async fn outbox(
    tx: &deadpool_postgres::Transaction<'_>,
    runs: &[Uuid],
) -> anyhow::Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO outcome_outbox (run_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING",
        &[&runs],
    )
    .await
    .context("cannot record runs for the outcome feed")?;
    Ok(())
}

/// Clears `runs` from the outbox: their outcomes are on the feed (or the feed is off).
pub async fn clear_outcomes(pool: &Pool, runs: &[Uuid]) -> anyhow::Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let client = pool.get().await.context("no PostgreSQL connection")?;
    client
        .execute(
            "DELETE FROM outcome_outbox WHERE run_id = ANY($1::uuid[])",
            &[&runs],
        )
        .await
        .context("cannot clear runs published on the outcome feed")?;
    Ok(())
}

/// Up to `limit` runs waiting in the outbox for longer than `age`, oldest first: those the
/// leader that ended them did not publish (it died, or NATS did not store them in time).
pub async fn pending_outcomes(
    pool: &Pool,
    age: std::time::Duration,
    limit: i64,
) -> anyhow::Result<Vec<Uuid>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT run_id FROM outcome_outbox
              WHERE made_at < now() - $1::int8 * interval '1 millisecond'
              ORDER BY made_at LIMIT $2",
            &[&age_ms, &limit],
        )
        .await
        .context("cannot read the outcome outbox")?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
