//! What the demand-collector reads from PostgreSQL: the queues and the demand mappings (the
//! hot settings come from `faro_shared::settings::load`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use deadpool_postgres::Pool;
use faro_shared::domain::QueueName;

/// External demand names mapped to queues (`faro mapping add`).
pub async fn mappings(pool: &Pool) -> anyhow::Result<BTreeMap<String, QueueName>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query("SELECT external_name, queue FROM demand_mappings", &[])
        .await
        .context("cannot read the demand mappings")?;
    Ok(rows
        .iter()
        .filter_map(|row| Some((row.get(0), QueueName::parse(row.get::<_, String>(1)).ok()?)))
        .collect())
}

/// Every defined queue, by name.
pub async fn queue_names(pool: &Pool) -> anyhow::Result<Vec<QueueName>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query("SELECT name FROM queues ORDER BY name", &[])
        .await
        .context("cannot read queues")?;
    Ok(rows
        .iter()
        .filter_map(|row| QueueName::parse(row.get::<_, String>(0)).ok())
        .collect())
}
