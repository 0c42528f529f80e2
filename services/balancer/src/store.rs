//! The balancer's SQL: queues, hot settings, the worker registry, decisions, mappings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::messages::{
    BalancerEvent, Heartbeat, Kind, Mapping, MappingReply, MappingRequest, WorkerSettings,
};
use faro_shared::settings::{HotSettings, Setting};

use crate::decide::{Decision, Policy, QueueSpec};
use crate::registry::{Entry, Event, RegState, Registry};

/// Every queue with what the decision needs. A queue with a kind no worker executes is kept
/// with no kinds (nobody serves it), with a warning.
pub async fn queues(pool: &Pool) -> anyhow::Result<Vec<QueueSpec>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT name, priority, kinds, min_workers, max_workers, home_pools
               FROM queues ORDER BY name",
            &[],
        )
        .await
        .context("cannot read queues")?;
    let mut queues = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.get(0);
        let Ok(name) = QueueName::parse(name.clone()) else {
            tracing::warn!(queue = %name, "queue name is not a valid subject token; ignored");
            continue;
        };
        let mut kinds = BTreeSet::new();
        for kind in row.get::<_, Vec<String>>(2) {
            match kind.parse::<Kind>() {
                Ok(kind) => {
                    kinds.insert(kind);
                }
                Err(error) => {
                    tracing::warn!(queue = %name, %error, "queue has a kind no worker executes");
                    kinds.clear();
                    break;
                }
            }
        }
        let home_pools = row
            .get::<_, Vec<String>>(5)
            .into_iter()
            .filter_map(|p| match PoolName::parse(p.clone()) {
                Ok(p) => Some(p),
                Err(_) => {
                    tracing::warn!(queue = %name, pool = %p, "home pool is not a valid name; ignored");
                    None
                }
            })
            .collect();
        queues.push(QueueSpec {
            name,
            priority: u8::try_from(row.get::<_, i16>(1)).unwrap_or(10),
            min_workers: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
            max_workers: row
                .get::<_, Option<i32>>(4)
                .map(|m| u32::try_from(m).unwrap_or(0)),
            home_pools,
            kinds,
        });
    }
    Ok(queues)
}

/// The hot settings the balancer follows and hands to the workers.
#[derive(Debug, Clone, PartialEq)]
pub struct Hot {
    pub policy: Policy,
    /// `cycle_interval`, when set.
    pub cycle_interval: Option<Duration>,
    pub workers: WorkerSettings,
}

/// The hot settings the balancer follows, read by `faro_shared::settings::load`.
pub async fn hot(pool: &Pool) -> anyhow::Result<Hot> {
    Ok(Hot::from_settings(
        &faro_shared::settings::load(pool).await?,
    ))
}

impl Hot {
    /// Pure: what the balancer follows among the hot settings; a key not stored keeps its
    /// default.
    pub fn from_settings(settings: &HotSettings) -> Self {
        let mut hot = Hot {
            policy: Policy::default(),
            cycle_interval: None,
            workers: WorkerSettings::default(),
        };
        for setting in settings.all() {
            match setting {
                Setting::WorkerCpuMax(n) => hot.workers.cpu_max = *n,
                Setting::WorkerMemMax(n) => hot.workers.mem_max = *n,
                Setting::LogLevel(filter) => hot.workers.log_level = Some(filter.clone()),
                Setting::MaintenanceMode(on) => hot.policy.maintenance = *on,
                Setting::StrictIsolation(on) => hot.policy.strict_isolation = *on,
                Setting::PreemptionMode(on) => hot.policy.preemption = *on,
                Setting::CoolingPeriod(d) => {
                    hot.policy.cooling_period =
                        chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::zero());
                }
                Setting::CycleInterval(d) => hot.cycle_interval = Some(*d),
                // The dispatcher's: target and queue limits, SNMP test mode.
                _ => {}
            }
        }
        hot
    }
}

/// The registry as last saved: every worker but those that left, and those lost for longer
/// than `forget_after_hours`.
pub async fn load_registry(pool: &Pool, forget_after_hours: i64) -> anyhow::Result<Registry> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            "SELECT id, state, first_seen, last_seen, beats_received, beats_missed, last_heartbeat
               FROM workers
              WHERE state IN ('active', 'unstable')
                 OR (state = 'lost' AND last_seen > now() - make_interval(hours => $1))",
            &[&i32::try_from(forget_after_hours).unwrap_or(i32::MAX)],
        )
        .await
        .context("cannot read the worker registry")?;
    let mut registry = Registry::default();
    for row in rows {
        let id: String = row.get(0);
        let Ok(id) = WorkerId::parse(id) else {
            continue;
        };
        let state = RegState::parse(row.get(1)).unwrap_or(RegState::Lost);
        let beat: Option<Heartbeat> = row
            .get::<_, Option<serde_json::Value>>(6)
            .and_then(|v| serde_json::from_value(v).ok());
        registry.workers.insert(
            id,
            Entry {
                state,
                first_seen: row.get(2),
                last_seen: row.get(3),
                beats_received: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
                beats_missed: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
                missed_now: 0,
                beat,
                dirty: false,
            },
        );
    }
    Ok(registry)
}

/// Saves changed registry entries and events in one transaction (the cycle marks them saved).
pub async fn save_registry(
    pool: &Pool,
    dirty: &[(WorkerId, Entry)],
    events: &[Event],
) -> anyhow::Result<()> {
    if dirty.is_empty() && events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut pools = Vec::new();
    let mut capacities = Vec::new();
    let mut kinds = Vec::new();
    let mut versions = Vec::new();
    let mut states = Vec::new();
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut received = Vec::new();
    let mut missed = Vec::new();
    let mut beats = Vec::new();
    for (id, entry) in dirty {
        // An entry loaded without a readable heartbeat keeps its stored columns.
        let beat = entry.beat.as_ref();
        ids.push(id.as_str());
        pools.push(beat.map(|b| b.pool.to_string()));
        capacities.push(beat.map(|b| i32::try_from(b.capacity).unwrap_or(i32::MAX)));
        kinds.push(beat.map(|b| {
            b.kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }));
        versions.push(beat.map(|b| b.version.clone()));
        states.push(entry.state.as_str());
        first.push(entry.first_seen);
        last.push(entry.last_seen);
        received.push(i64::try_from(entry.beats_received).unwrap_or(i64::MAX));
        missed.push(i64::try_from(entry.beats_missed).unwrap_or(i64::MAX));
        beats.push(beat.map(serde_json::to_value).transpose()?);
    }
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO workers (id, pool, capacity, kinds, version, state, first_seen, last_seen,
                              beats_received, beats_missed, last_heartbeat)
         SELECT id, coalesce(pool, ''), coalesce(capacity, 0),
                coalesce(string_to_array(kinds, ','), '{}'), coalesce(version, ''), state,
                first_seen, last_seen, received, missed, beat
           FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::text[],
                       $7::timestamptz[], $8::timestamptz[], $9::int8[], $10::int8[], $11::jsonb[])
             AS u(id, pool, capacity, kinds, version, state, first_seen, last_seen, received,
                  missed, beat)
         ON CONFLICT (id) DO UPDATE
            SET pool = coalesce(EXCLUDED.last_heartbeat->>'pool', workers.pool),
                capacity = CASE WHEN EXCLUDED.last_heartbeat IS NULL THEN workers.capacity
                                ELSE EXCLUDED.capacity END,
                kinds = CASE WHEN EXCLUDED.last_heartbeat IS NULL THEN workers.kinds
                             ELSE EXCLUDED.kinds END,
                version = CASE WHEN EXCLUDED.last_heartbeat IS NULL THEN workers.version
                               ELSE EXCLUDED.version END,
                state = EXCLUDED.state, first_seen = EXCLUDED.first_seen,
                last_seen = EXCLUDED.last_seen, beats_received = EXCLUDED.beats_received,
                beats_missed = EXCLUDED.beats_missed,
                last_heartbeat = coalesce(EXCLUDED.last_heartbeat, workers.last_heartbeat)",
        &[
            &ids,
            &pools,
            &capacities,
            &kinds,
            &versions,
            &states,
            &first,
            &last,
            &received,
            &missed,
            &beats,
        ],
    )
    .await
    .context("cannot save the worker registry")?;
    if !events.is_empty() {
        let workers: Vec<&str> = events.iter().map(|e| e.worker.as_str()).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let at: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
        let details: Vec<serde_json::Value> = events
            .iter()
            .map(|e| {
                let mut detail = serde_json::json!({ "missed": e.missed });
                if let Some(from) = e.from {
                    detail["from"] = from.as_str().into();
                }
                detail
            })
            .collect();
        tx.execute(
            "INSERT INTO worker_events (worker_id, event, at, detail)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[])",
            &[&workers, &kinds, &at, &details],
        )
        .await
        .context("cannot record worker events")?;
    }
    tx.commit().await?;
    Ok(())
}

/// The hold last recorded for each queue.
pub async fn holds(pool: &Pool) -> anyhow::Result<BTreeMap<QueueName, Option<String>>> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query("SELECT queue, hold FROM queue_balance", &[])
        .await
        .context("cannot read the queues' balance")?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let queue = QueueName::parse(row.get::<_, String>(0)).ok()?;
            Some((queue, row.get(1)))
        })
        .collect())
}

/// Records a cycle: its events (moves and new holds), each queue's balance and each pool's
/// cooling.
pub async fn record_cycle(
    pool: &Pool,
    at: DateTime<Utc>,
    events: &[BalancerEvent],
    decision: &Decision,
    pools: &BTreeMap<PoolName, (u32, Option<DateTime<Utc>>)>,
) -> anyhow::Result<()> {
    let mut client = pool.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await?;
    if !events.is_empty() {
        let text = |v: Option<&dyn ToString>| v.map(|v| v.to_string());
        let queues: Vec<Option<String>> = events
            .iter()
            .map(|e| text(e.queue.as_ref().map(|q| q as _)))
            .collect();
        let workers: Vec<Option<String>> = events
            .iter()
            .map(|e| text(e.worker.as_ref().map(|w| w as _)))
            .collect();
        let pools_of: Vec<Option<String>> = events
            .iter()
            .map(|e| text(e.pool.as_ref().map(|p| p as _)))
            .collect();
        let from: Vec<Option<String>> = events
            .iter()
            .map(|e| text(e.from.as_ref().map(|q| q as _)))
            .collect();
        let to: Vec<Option<String>> = events
            .iter()
            .map(|e| text(e.to.as_ref().map(|q| q as _)))
            .collect();
        let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
        tx.execute(
            "INSERT INTO balancer_decisions (at, queue, worker_id, pool, from_queue, to_queue, reason)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::text[])",
            &[&at, &queues, &workers, &pools_of, &from, &to, &reasons],
        )
        .await
        .context("cannot record the balancer's decisions")?;
    }
    let names: Vec<&str> = decision.queues.iter().map(|q| q.queue.as_str()).collect();
    let workers: Vec<i32> = decision
        .queues
        .iter()
        .map(|q| i32::try_from(q.workers).unwrap_or(i32::MAX))
        .collect();
    let capacity: Vec<i64> = decision
        .queues
        .iter()
        .map(|q| i64::try_from(q.capacity).unwrap_or(i64::MAX))
        .collect();
    let pending: Vec<i64> = decision
        .queues
        .iter()
        .map(|q| i64::try_from(q.pending).unwrap_or(i64::MAX))
        .collect();
    let stale: Vec<bool> = decision.queues.iter().map(|q| q.stale).collect();
    let hold: Vec<Option<String>> = decision
        .queues
        .iter()
        .map(|q| q.hold.as_ref().map(ToString::to_string))
        .collect();
    tx.execute(
        "INSERT INTO queue_balance (queue, workers, capacity, pending, stale, hold, updated_at)
         SELECT *, $7 FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int8[], $5::bool[],
                                  $6::text[])
         ON CONFLICT (queue) DO UPDATE
            SET workers = EXCLUDED.workers, capacity = EXCLUDED.capacity,
                pending = EXCLUDED.pending, stale = EXCLUDED.stale, hold = EXCLUDED.hold,
                updated_at = EXCLUDED.updated_at",
        &[&names, &workers, &capacity, &pending, &stale, &hold, &at],
    )
    .await
    .context("cannot record the queues' balance")?;
    tx.execute(
        "DELETE FROM queue_balance WHERE NOT (queue = ANY($1::text[]))",
        &[&names],
    )
    .await?;
    let pool_names: Vec<&str> = pools.keys().map(PoolName::as_str).collect();
    let pool_workers: Vec<i32> = pools
        .values()
        .map(|(n, _)| i32::try_from(*n).unwrap_or(i32::MAX))
        .collect();
    let until: Vec<Option<DateTime<Utc>>> = pools.values().map(|(_, u)| *u).collect();
    tx.execute(
        "INSERT INTO pool_balance (pool, workers, cooling_until, updated_at)
         SELECT *, $4 FROM unnest($1::text[], $2::int4[], $3::timestamptz[])
         ON CONFLICT (pool) DO UPDATE
            SET workers = EXCLUDED.workers, cooling_until = EXCLUDED.cooling_until,
                updated_at = EXCLUDED.updated_at",
        &[&pool_names, &pool_workers, &until, &at],
    )
    .await
    .context("cannot record the pools' balance")?;
    tx.commit().await?;
    Ok(())
}

/// Drops decisions older than `decisions` and worker events older than `events`; returns how
/// many rows of each went.
pub async fn prune_history(
    pool: &Pool,
    decisions: Duration,
    events: Duration,
) -> anyhow::Result<(u64, u64)> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let decisions = client
        .execute(
            "DELETE FROM balancer_decisions WHERE at < now() - make_interval(secs => $1)",
            &[&decisions.as_secs_f64()],
        )
        .await
        .context("cannot prune old decisions")?;
    let events = client
        .execute(
            "DELETE FROM worker_events WHERE at < now() - make_interval(secs => $1)",
            &[&events.as_secs_f64()],
        )
        .await
        .context("cannot prune old worker events")?;
    Ok((decisions, events))
}

/// The bytes the balancer's growing tables take on disk, indexes included: `balancer_decisions`
/// and `worker_events`.
pub async fn history_bytes(pool: &Pool) -> anyhow::Result<[(&'static str, i64); 2]> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let row = client
        .query_one(
            "SELECT pg_total_relation_size('balancer_decisions'),
                    pg_total_relation_size('worker_events')",
            &[],
        )
        .await
        .context("cannot read the size of the balancer's tables")?;
    Ok([
        ("balancer_decisions", row.get(0)),
        ("worker_events", row.get(1)),
    ])
}

/// Decisions listed by `faro explain queue|pool`.
const RECENT: i64 = 20;

/// Whose decisions `recent_decisions` lists.
#[derive(Debug, Clone, Copy)]
pub enum DecisionsOf<'a> {
    /// Moves into or out of a queue, and its holds.
    Queue(&'a QueueName),
    /// Moves of a pool's workers.
    Pool(&'a PoolName),
}

/// The latest decisions about a queue or a pool, newest first.
pub async fn recent_decisions(
    pool: &Pool,
    of: DecisionsOf<'_>,
) -> anyhow::Result<Vec<BalancerEvent>> {
    let (filter, value) = match of {
        DecisionsOf::Queue(queue) => (
            "queue = $1 OR from_queue = $1 OR to_queue = $1",
            queue.as_str(),
        ),
        DecisionsOf::Pool(name) => ("pool = $1", name.as_str()),
    };
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query(
            &format!(
                "SELECT at, queue, worker_id, pool, from_queue, to_queue, reason
                   FROM balancer_decisions WHERE {filter} ORDER BY id DESC LIMIT {RECENT}"
            ),
            &[&value],
        )
        .await
        .context("cannot read the balancer's decisions")?;
    let name = |v: Option<String>| v.and_then(|v| QueueName::parse(v).ok());
    Ok(rows
        .into_iter()
        .map(|row| BalancerEvent {
            at: row.get(0),
            queue: name(row.get(1)),
            worker: row
                .get::<_, Option<String>>(2)
                .and_then(|v| WorkerId::parse(v).ok()),
            pool: row
                .get::<_, Option<String>>(3)
                .and_then(|v| PoolName::parse(v).ok()),
            from: name(row.get(4)),
            to: name(row.get(5)),
            reason: row.get(6),
        })
        .collect())
}

/// Adds, removes or lists the mappings of external demand names to queues; every mapping
/// after the change. A name mapped to a queue that does not exist is refused.
pub async fn change_mapping(pool: &Pool, request: &MappingRequest) -> anyhow::Result<MappingReply> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let mut removed = false;
    match request {
        MappingRequest::Add { name, queue } => {
            let name = name.trim();
            let exists = client
                .query_opt("SELECT 1 FROM queues WHERE name = $1", &[&queue.as_str()])
                .await?
                .is_some();
            if !exists {
                anyhow::bail!("no queue named {queue:?}; define it (or submit a job to it) first");
            }
            client
                .execute(
                    "INSERT INTO demand_mappings (external_name, queue) VALUES ($1, $2)
                     ON CONFLICT (external_name) DO UPDATE SET queue = EXCLUDED.queue",
                    &[&name, &queue.as_str()],
                )
                .await
                .context("cannot store the mapping")?;
        }
        MappingRequest::Remove { name } => {
            removed = client
                .execute(
                    "DELETE FROM demand_mappings WHERE external_name = $1",
                    &[&name.trim()],
                )
                .await
                .context("cannot remove the mapping")?
                > 0;
        }
        MappingRequest::List => {}
    }
    let rows = client
        .query(
            "SELECT external_name, queue FROM demand_mappings ORDER BY external_name",
            &[],
        )
        .await
        .context("cannot read the mappings")?;
    let mappings = rows
        .into_iter()
        .filter_map(|row| {
            Some(Mapping {
                name: row.get(0),
                queue: QueueName::parse(row.get::<_, String>(1)).ok()?,
            })
        })
        .collect();
    Ok(MappingReply { mappings, removed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balancer_follows_its_settings_and_ignores_the_dispatchers() {
        let defaults = Hot::from_settings(&HotSettings::default());
        assert_eq!(defaults.policy, Policy::default());
        assert_eq!(defaults.workers, WorkerSettings::default());
        assert_eq!(defaults.cycle_interval, None);

        let hot = Hot::from_settings(&HotSettings::new(vec![
            Setting::WorkerCpuMax(60),
            Setting::LogLevel("debug".into()),
            Setting::PreemptionMode(true),
            Setting::CoolingPeriod(Duration::from_secs(90)),
            Setting::CycleInterval(Duration::from_secs(2)),
            Setting::TargetMaxConcurrency(9),
        ]));
        assert_eq!(hot.workers.cpu_max, 60);
        assert_eq!(hot.workers.mem_max, WorkerSettings::default().mem_max);
        assert_eq!(hot.workers.log_level.as_deref(), Some("debug"));
        assert!(hot.policy.preemption);
        assert_eq!(hot.policy.cooling_period, chrono::Duration::seconds(90));
        assert_eq!(hot.cycle_interval, Some(Duration::from_secs(2)));
    }
}
