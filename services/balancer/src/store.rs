//! The balancer's SQL: queues to serve and the worker registry.

use anyhow::Context as _;
use deadpool_postgres::Pool;
use faro_shared::domain::QueueName;
use faro_shared::messages::{Heartbeat, Kind, WorkerSettings};
use faro_shared::settings::Setting;

use crate::assign::QueueView;

/// Every queue with the kinds submitted to it. Unknown kind names are skipped with a warning
/// (a queue whose kinds cannot all be served gets no worker).
pub async fn queues(pool: &Pool) -> anyhow::Result<Vec<QueueView>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query("SELECT name, kinds FROM queues ORDER BY name", &[])
        .await
        .context("cannot read queues")?;
    let mut queues = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.get(0);
        let Ok(name) = QueueName::parse(name.clone()) else {
            tracing::warn!(queue = %name, "queue name is not a valid subject token; ignored");
            continue;
        };
        let mut kinds = std::collections::BTreeSet::new();
        let mut unknown = false;
        for kind in row.get::<_, Vec<String>>(1) {
            match kind.parse::<Kind>() {
                Ok(kind) => {
                    kinds.insert(kind);
                }
                Err(error) => {
                    tracing::warn!(queue = %name, %error, "queue has a kind no worker executes");
                    unknown = true;
                }
            }
        }
        if unknown {
            kinds.clear();
        }
        queues.push(QueueView { name, kinds });
    }
    Ok(queues)
}

/// The workers' hot settings from `system_config` (`worker.cpu_max`, `worker.mem_max`,
/// `log.level`); a value that cannot be read keeps its default, with a warning.
pub async fn worker_settings(pool: &Pool) -> anyhow::Result<WorkerSettings> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT key, value FROM system_config
             WHERE key IN ('worker.cpu_max', 'worker.mem_max', 'log.level')",
            &[],
        )
        .await
        .context("cannot read the workers' settings")?;
    let mut settings = WorkerSettings::default();
    for row in rows {
        let key: String = row.get(0);
        match Setting::from_stored(&key, &row.get(1)) {
            Some(Setting::WorkerCpuMax(n)) => settings.cpu_max = n,
            Some(Setting::WorkerMemMax(n)) => settings.mem_max = n,
            Some(Setting::LogLevel(filter)) => settings.log_level = Some(filter),
            _ => tracing::warn!(%key, "stored setting unreadable; its default applies"),
        }
    }
    Ok(settings)
}

/// Records the live workers: new ones get a `joined` event, returning ones `recovered`, and
/// registered workers no longer alive become `left`.
pub async fn record_workers(pool: &Pool, beats: &[Heartbeat]) -> anyhow::Result<()> {
    let mut ids = Vec::with_capacity(beats.len());
    let mut pools = Vec::with_capacity(beats.len());
    let mut capacities = Vec::with_capacity(beats.len());
    let mut kinds = Vec::with_capacity(beats.len());
    let mut versions = Vec::with_capacity(beats.len());
    let mut seen = Vec::with_capacity(beats.len());
    let mut raw = Vec::with_capacity(beats.len());
    for beat in beats {
        ids.push(beat.worker_id.as_str());
        pools.push(beat.pool.as_str());
        capacities.push(i32::try_from(beat.capacity).unwrap_or(i32::MAX));
        kinds.push(
            beat.kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        versions.push(beat.version.as_str());
        seen.push(beat.sent_at);
        raw.push(serde_json::to_value(beat)?);
    }
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await?;
    tx.execute(
        "WITH live AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::jsonb[])
                 AS u(id, pool, capacity, kinds, version, seen, beat)
         ), before AS (
             SELECT w.id, w.state FROM workers w JOIN live USING (id)
         ), upserted AS (
             INSERT INTO workers (id, pool, capacity, kinds, version, state, first_seen, last_seen, last_heartbeat)
             SELECT id, pool, capacity, string_to_array(kinds, ','), version, 'active', seen, seen, beat FROM live
             ON CONFLICT (id) DO UPDATE
                SET pool = EXCLUDED.pool, capacity = EXCLUDED.capacity, kinds = EXCLUDED.kinds,
                    version = EXCLUDED.version, state = 'active', last_seen = EXCLUDED.last_seen,
                    last_heartbeat = EXCLUDED.last_heartbeat
             RETURNING id
         )
         INSERT INTO worker_events (worker_id, event)
         SELECT u.id, CASE WHEN b.id IS NULL THEN 'joined' ELSE 'recovered' END
           FROM upserted u LEFT JOIN before b USING (id)
          WHERE b.id IS NULL OR b.state <> 'active'",
        &[&ids, &pools, &capacities, &kinds, &versions, &seen, &raw],
    )
    .await
    .context("cannot record live workers")?;
    tx.execute(
        "WITH gone AS (
             UPDATE workers SET state = 'left'
              WHERE state = 'active' AND NOT (id = ANY($1::text[]))
             RETURNING id
         )
         INSERT INTO worker_events (worker_id, event) SELECT id, 'left' FROM gone",
        &[&ids],
    )
    .await
    .context("cannot record departed workers")?;
    tx.commit().await?;
    Ok(())
}
