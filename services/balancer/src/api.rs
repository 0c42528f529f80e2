//! The balancer's request/reply API for the CLI (`faro.api.balancer.<verb>`): `workers`,
//! `queues`, `explain` (a queue or a pool) and `mapping` (external demand names to queues).
//! Answers come from the state of the latest cycle, and from PostgreSQL for past decisions.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
use deadpool_postgres::Pool;
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::messages::{
    reply, unknown_verb, BalanceExplainReply, BalanceExplainRequest, BalancerEvent, Mapping,
    MappingReply, MappingRequest, QueueRow, QueuesReply, QueuesRequest, Request, Service,
    WorkerRow, WorkersReply, WorkersRequest, BALANCER_VERBS,
};
use faro_shared::Namespace;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::app::State;
use crate::registry::RegState;

/// Decisions listed by `explain`.
const RECENT: i64 = 20;

pub async fn serve(
    client: async_nats::Client,
    ns: Namespace,
    pool: Pool,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subject = ns.api_subject(Service::Balancer.as_str(), "*");
    faro_shared::nats::serve_api(
        &client,
        subject,
        Service::Balancer.as_str(),
        shutdown,
        |verb, payload| {
            let (pool, state) = (pool.clone(), state.clone());
            async move { answer(&pool, &state, &verb, &payload).await }
        },
    )
    .await
}

async fn answer(
    pool: &Pool,
    state: &Mutex<State>,
    verb: &str,
    payload: &[u8],
) -> anyhow::Result<Vec<u8>> {
    match verb {
        WorkersRequest::VERB => {
            reply(payload, |_: WorkersRequest| async {
                Ok(workers(&*state.lock().await))
            })
            .await
        }
        QueuesRequest::VERB => {
            reply(payload, |_: QueuesRequest| async {
                Ok(queues(&*state.lock().await))
            })
            .await
        }
        BalanceExplainRequest::VERB => {
            reply(payload, |request| explain(pool, state, request)).await
        }
        MappingRequest::VERB => reply(payload, |request| mapping(pool, request)).await,
        other => Err(unknown_verb(Service::Balancer, other, &BALANCER_VERBS)),
    }
}

/// Why a queue or a pool has the workers it has: the facts, then the latest decisions.
async fn explain(
    pool: &Pool,
    state: &Mutex<State>,
    request: BalanceExplainRequest,
) -> anyhow::Result<BalanceExplainReply> {
    Ok(match request {
        BalanceExplainRequest::Queue(queue) => {
            let facts = queue_facts(&*state.lock().await, &queue)?;
            let decisions = decisions(
                pool,
                "queue = $1 OR from_queue = $1 OR to_queue = $1",
                queue.as_str(),
            )
            .await?;
            BalanceExplainReply { facts, decisions }
        }
        BalanceExplainRequest::Pool(name) => {
            let facts = pool_facts(&*state.lock().await, &name);
            let decisions = decisions(pool, "pool = $1", name.as_str()).await?;
            BalanceExplainReply { facts, decisions }
        }
    })
}

fn workers(state: &State) -> WorkersReply {
    let now = Utc::now();
    let workers = state
        .registry
        .workers
        .iter()
        .map(|(id, entry)| {
            let beat = entry.beat.as_ref();
            WorkerRow {
                id: id.clone(),
                pool: beat.map(|b| b.pool.clone()),
                state: entry.state.as_str().to_owned(),
                queues: state
                    .assigned
                    .get(id)
                    .map(|a| a.queues.clone())
                    .unwrap_or_default(),
                kinds: beat.map(|b| b.kinds.clone()).unwrap_or_default(),
                capacity: beat.map_or(0, |b| b.capacity),
                in_progress: beat.map_or(0, |b| b.in_progress),
                load_score: beat.map_or(0, |b| b.load_score),
                cpu_percent: beat.and_then(|b| b.cpu_percent),
                mem_percent: beat.and_then(|b| b.mem_percent),
                admission_closed: beat.and_then(|b| b.admission_closed.clone()),
                first_seen: entry.first_seen,
                last_seen: entry.last_seen,
                uptime_secs: beat
                    .filter(|_| matches!(entry.state, RegState::Active | RegState::Unstable))
                    .and_then(|b| (now - b.started_at).to_std().ok())
                    .map(|d| d.as_secs()),
                beats_received: entry.beats_received,
                beats_missed: entry.beats_missed,
            }
        })
        .collect();
    WorkersReply { workers }
}

fn queues(state: &State) -> QueuesReply {
    let Some((decision, specs)) = &state.last else {
        return QueuesReply::default();
    };
    let queues = decision
        .queues
        .iter()
        .filter_map(|outcome| {
            let spec = specs.iter().find(|s| s.name == outcome.queue)?;
            Some(QueueRow {
                name: spec.name.clone(),
                priority: spec.priority,
                min_workers: spec.min_workers,
                max_workers: spec.max_workers,
                home_pools: spec.home_pools.iter().cloned().collect(),
                pending: outcome.pending,
                stale: outcome.stale,
                workers: outcome.workers,
                capacity: outcome.capacity,
                hold: outcome.hold.as_ref().map(ToString::to_string),
                cooling: spec
                    .home_pools
                    .iter()
                    .filter_map(|p| Some((p.to_string(), *state.cooling.get(p)?)))
                    .collect(),
            })
        })
        .collect();
    QueuesReply { queues }
}

fn queue_facts(state: &State, queue: &QueueName) -> anyhow::Result<Vec<String>> {
    let Some((decision, specs)) = &state.last else {
        anyhow::bail!("the balancer has not finished a cycle yet; ask again in a moment");
    };
    let (Some(spec), Some(outcome)) = (
        specs.iter().find(|s| &s.name == queue),
        decision.queues.iter().find(|q| &q.queue == queue),
    ) else {
        anyhow::bail!("no queue named {queue:?} (as of the latest cycle)");
    };
    let mut facts = Vec::new();
    let pools: Vec<&str> = spec.home_pools.iter().map(PoolName::as_str).collect();
    let kinds: Vec<&str> = spec.kinds.iter().map(|k| k.as_str()).collect();
    facts.push(format!(
        "queue {queue}: priority {} (1 is the most urgent), min_workers {}, max_workers {}, home pools {}, kinds {}",
        spec.priority,
        spec.min_workers,
        spec.max_workers.map_or("none".to_owned(), |m| m.to_string()),
        pools.join(","),
        if kinds.is_empty() { "none yet (nobody serves it until a job is submitted)".to_owned() } else { kinds.join(",") },
    ));
    match state.demand.get(queue) {
        None => {
            facts.push("demand: no snapshot yet; treated as stale, so nothing is scaled in".into())
        }
        Some((snapshot, since)) => {
            let mut line = format!(
                "demand: {} runs pending or running, collected {}",
                snapshot.pending,
                snapshot.collected_at.to_rfc3339()
            );
            if !snapshot.sources.is_empty() {
                let sources: Vec<String> = snapshot
                    .sources
                    .iter()
                    .map(|(p, n)| format!("{p}={n}"))
                    .collect();
                let _ = write!(line, " ({})", sources.join(", "));
            }
            if let Some(since) = since {
                let _ = write!(
                    line,
                    "; STALE since {} (a provider failed): it keeps its workers",
                    since.to_rfc3339()
                );
            }
            facts.push(line);
        }
    }
    let serving: Vec<String> = state
        .assigned
        .iter()
        .filter(|(_, a)| a.queues.contains(queue))
        .map(|(w, _)| w.to_string())
        .collect();
    facts.push(format!(
        "workers: {} ({}), {} slots",
        outcome.workers,
        if serving.is_empty() {
            "none".to_owned()
        } else {
            serving.join(", ")
        },
        outcome.capacity
    ));
    facts.push(match &outcome.hold {
        Some(hold) => format!("why not more: {hold}"),
        None if outcome.stale => "enough: demand unknown, it keeps what it has".to_owned(),
        None if outcome.workers == spec.min_workers && outcome.capacity >= outcome.pending => {
            format!(
                "enough: at its min_workers {}, and its slots cover its pending runs",
                spec.min_workers
            )
        }
        None => format!(
            "enough: {} slots for {} pending runs",
            outcome.capacity, outcome.pending
        ),
    });
    for pool in &spec.home_pools {
        if let Some(until) = state.cooling.get(pool).filter(|u| **u > Utc::now()) {
            facts.push(format!(
                "home pool {pool} is cooling until {}",
                until.to_rfc3339()
            ));
        }
    }
    Ok(facts)
}

fn pool_facts(state: &State, pool: &PoolName) -> Vec<String> {
    let mut facts = Vec::new();
    let members: Vec<(&WorkerId, &crate::registry::Entry)> = state
        .registry
        .workers
        .iter()
        .filter(|(_, e)| e.beat.as_ref().is_some_and(|b| &b.pool == pool))
        .collect();
    let mut by_state = std::collections::BTreeMap::<&str, u32>::new();
    for (_, entry) in &members {
        *by_state.entry(entry.state.as_str()).or_default() += 1;
    }
    let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    facts.push(format!(
        "pool {pool}: {} workers ({})",
        members.len(),
        if states.is_empty() {
            "none".to_owned()
        } else {
            states.join(", ")
        }
    ));
    let home_of: Vec<&QueueName> = state
        .last
        .as_ref()
        .map(|(_, specs)| {
            specs
                .iter()
                .filter(|s| s.home_pools.contains(pool))
                .map(|s| &s.name)
                .collect()
        })
        .unwrap_or_default();
    facts.push(format!(
        "home pool of: {}",
        if home_of.is_empty() {
            "no queue".to_owned()
        } else {
            home_of
                .iter()
                .map(|q| q.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    for (id, entry) in &members {
        if !matches!(entry.state, RegState::Active | RegState::Unstable) {
            continue;
        }
        let serving = state
            .assigned
            .get(*id)
            .and_then(|a| a.queues.first().cloned());
        let line = match serving {
            None => format!("{id}: idle"),
            Some(q) if home_of.contains(&&q) => format!("{id}: serves {q}"),
            Some(q) => format!("{id}: lent to {q} (another pool's queue)"),
        };
        facts.push(line);
    }
    match state.cooling.get(pool).filter(|u| **u > Utc::now()) {
        Some(until) => facts.push(format!(
            "cooling until {}: its workers do not move before then",
            until.to_rfc3339()
        )),
        None => facts.push("not cooling".to_owned()),
    }
    facts
}

async fn decisions(pool: &Pool, filter: &str, value: &str) -> anyhow::Result<Vec<BalancerEvent>> {
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

async fn mapping(pool: &Pool, request: MappingRequest) -> anyhow::Result<MappingReply> {
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let mut removed = false;
    match &request {
        MappingRequest::Add { name, queue } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 200 {
                anyhow::bail!("a demand name must have 1 to 200 characters, got {name:?}");
            }
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
