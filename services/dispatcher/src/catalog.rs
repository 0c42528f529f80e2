//! The definitions operators manage: targets (`faro target`) and jobs (`faro job`), in
//! PostgreSQL. The dispatcher applies a change the moment it stores it; the settings loop
//! rereads them every few seconds, so a change made by SQL takes effect too.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use deadpool_postgres::Pool;
use faro_shared::domain::{JobId, QueueName, TargetId};
use faro_shared::messages::JobView;
use faro_shared::snmp::Device;
use faro_shared::targetfile::TargetSpec;

/// How to reach each target that has an address: attached to the SNMP runs it publishes. A
/// row whose credentials cannot be read is left out with a warning (its runs then fail with
/// "no address"), never stopping the others.
pub async fn devices(pool: &Pool) -> anyhow::Result<HashMap<TargetId, Device>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT id, address, snmp FROM targets WHERE address IS NOT NULL",
            &[],
        )
        .await
        .context("cannot read the targets' addresses")?;
    let mut devices = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let device = TargetId::parse(id.clone())
            .map_err(|e| e.to_string())
            .and_then(|target| {
                let snmp = serde_json::from_value(row.get(2)).map_err(|e| e.to_string())?;
                Ok((target, snmp))
            });
        match device {
            Ok((target, snmp)) => {
                devices.insert(
                    target,
                    Device {
                        address: row.get(1),
                        snmp,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(target = %id, %error, "target's SNMP settings unreadable; left out")
            }
        }
    }
    Ok(devices)
}

/// Adds the targets, or replaces those with the same id; returns how many were written.
pub async fn put_targets(pool: &Pool, targets: &[TargetSpec]) -> anyhow::Result<usize> {
    let mut ids = Vec::with_capacity(targets.len());
    let mut names = Vec::with_capacity(targets.len());
    let mut addresses = Vec::with_capacity(targets.len());
    let mut snmp = Vec::with_capacity(targets.len());
    let mut limits: Vec<Option<i32>> = Vec::with_capacity(targets.len());
    let mut enabled = Vec::with_capacity(targets.len());
    for t in targets {
        ids.push(t.id.as_str());
        names.push(t.name.as_str());
        addresses.push(t.address.as_str());
        snmp.push(serde_json::to_value(&t.snmp)?);
        limits.push(
            t.max_concurrency
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        );
        enabled.push(t.enabled);
    }
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let written = client
        .execute(
            "INSERT INTO targets (id, name, address, snmp, max_concurrency, enabled)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::int4[],
                                  $6::bool[])
             ON CONFLICT (id) DO UPDATE
                SET name = EXCLUDED.name, address = EXCLUDED.address, snmp = EXCLUDED.snmp,
                    max_concurrency = EXCLUDED.max_concurrency, enabled = EXCLUDED.enabled,
                    updated_at = now()",
            &[&ids, &names, &addresses, &snmp, &limits, &enabled],
        )
        .await
        .context("cannot store the targets")?;
    Ok(usize::try_from(written).unwrap_or(usize::MAX))
}

/// Switches a target on or off; `false` when there is no such target.
pub async fn set_target_enabled(
    pool: &Pool,
    target: &TargetId,
    enabled: bool,
) -> anyhow::Result<bool> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let changed = client
        .execute(
            "UPDATE targets SET enabled = $2, updated_at = now() WHERE id = $1",
            &[&target.as_str(), &enabled],
        )
        .await
        .context("cannot switch the target")?;
    Ok(changed > 0)
}

/// Targets switched off.
pub async fn disabled_targets(pool: &Pool) -> anyhow::Result<HashSet<TargetId>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query("SELECT id FROM targets WHERE NOT enabled", &[])
        .await
        .context("cannot read the disabled targets")?;
    let mut disabled = HashSet::new();
    for row in rows {
        let id: String = row.get(0);
        match TargetId::parse(id.clone()) {
            Ok(target) => {
                disabled.insert(target);
            }
            Err(error) => tracing::warn!(target = %id, %error, "target id ignored"),
        }
    }
    Ok(disabled)
}

/// A target as stored, credentials included (the caller hides them).
#[derive(Debug, Clone)]
pub struct StoredTarget {
    pub id: TargetId,
    pub name: String,
    pub address: Option<String>,
    pub snmp: serde_json::Value,
    pub max_concurrency: Option<u32>,
    pub enabled: bool,
}

/// Every target, by id.
pub async fn targets(pool: &Pool) -> anyhow::Result<Vec<StoredTarget>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT id, name, address, snmp, max_concurrency, enabled FROM targets ORDER BY id",
            &[],
        )
        .await
        .context("cannot read the targets")?;
    let mut targets = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let Ok(parsed) = TargetId::parse(id.clone()) else {
            tracing::warn!(target = %id, "target with an invalid id not listed");
            continue;
        };
        targets.push(StoredTarget {
            id: parsed,
            name: row.get(1),
            address: row.get(2),
            snmp: row.get(3),
            max_concurrency: row
                .get::<_, Option<i32>>(4)
                .map(|n| u32::try_from(n).unwrap_or(1)),
            enabled: row.get(5),
        });
    }
    Ok(targets)
}

/// Job definitions (one-shot jobs too with `all`) matching the filters, by id, at most
/// `limit`; and how many match.
pub async fn jobs(
    pool: &Pool,
    queue: Option<&QueueName>,
    target: Option<&TargetId>,
    limit: u32,
    all: bool,
) -> anyhow::Result<(Vec<JobView>, u64)> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let queue = queue.map(QueueName::as_str);
    let target = target.map(TargetId::as_str);
    let limit = i64::from(limit);
    // The last run, success and failure come from the runs (one indexed lookup per job
    // listed), so recording a run never writes its job's row.
    let rows = client
        .query(
            "SELECT j.id, j.queue, j.kind, j.target, j.interval_ms, j.after_job, j.enabled,
                    (SELECT max(created_at) FROM runs WHERE job_id = j.id AND status <> 'skipped'),
                    (SELECT max(finished_at) FROM runs WHERE job_id = j.id AND status = 'succeeded'),
                    (SELECT max(finished_at) FROM runs WHERE job_id = j.id
                        AND status IN ('failed', 'interrupted', 'timed_out'))
               FROM jobs j
              WHERE ($1::text IS NULL OR j.queue = $1) AND ($2::text IS NULL OR j.target = $2)
                AND ($4 OR j.interval_ms IS NOT NULL OR j.after_job IS NOT NULL)
              ORDER BY j.id LIMIT $3",
            &[&queue, &target, &limit, &all],
        )
        .await
        .context("cannot list the jobs")?;
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM jobs
              WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR target = $2)
                AND ($3 OR interval_ms IS NOT NULL OR after_job IS NOT NULL)",
            &[&queue, &target, &all],
        )
        .await
        .context("cannot count the jobs")?
        .get(0);
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let view = (|| -> anyhow::Result<JobView> {
            Ok(JobView {
                id: JobId::parse(id.clone())?,
                queue: QueueName::parse(row.get::<_, String>(1))?,
                kind: row.get(2),
                target: row
                    .get::<_, Option<String>>(3)
                    .map(TargetId::parse)
                    .transpose()?,
                interval_ms: row
                    .get::<_, Option<i64>>(4)
                    .map(|ms| u64::try_from(ms).unwrap_or(0)),
                after: row
                    .get::<_, Option<String>>(5)
                    .map(JobId::parse)
                    .transpose()?,
                enabled: row.get(6),
                last_run_at: row.get(7),
                last_success_at: row.get(8),
                last_failure_at: row.get(9),
            })
        })();
        match view {
            Ok(view) => jobs.push(view),
            Err(error) => {
                tracing::warn!(job = %id, error = faro_shared::pg::error_text(&error), "job not listed")
            }
        }
    }
    Ok((jobs, u64::try_from(total).unwrap_or(0)))
}

/// Switches a job on or off; `false` when there is no such job.
pub async fn set_job_enabled(pool: &Pool, job: &JobId, enabled: bool) -> anyhow::Result<bool> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let changed = client
        .execute(
            "UPDATE jobs SET enabled = $2, updated_at = now() WHERE id = $1",
            &[&job.as_str(), &enabled],
        )
        .await
        .context("cannot switch the job")?;
    Ok(changed > 0)
}
