//! The balancer's request/reply API for the CLI (`faro.api.balancer.<verb>`): `workers`,
//! `queues`, `explain` (a queue or a pool) and `mapping` (external demand names to queues).
//! Answers come from the state of the latest cycle, and from PostgreSQL for past decisions.

use std::sync::Arc;

use chrono::Utc;
use deadpool_postgres::Pool;
use faro_shared::messages::{
    reply, unknown_verb, BalanceExplainReply, BalanceExplainRequest, MappingReply, MappingRequest,
    QueueRow, QueuesReply, QueuesRequest, Request, Service, WorkerRow, WorkersReply,
    WorkersRequest, BALANCER_VERBS,
};
use faro_shared::Namespace;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::explain;
use crate::registry::RegState;
use crate::state::State;
use crate::store::{self, DecisionsOf};

pub async fn serve(
    client: async_nats::Client,
    ns: Namespace,
    pool: Pool,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subject = ns.api_subject(Service::Balancer.as_str(), "*");
    faro_shared::api::serve_api(
        &client,
        subject,
        Service::Balancer.as_str(),
        shutdown,
        |verb, request| {
            let (pool, state) = (pool.clone(), state.clone());
            async move { answer(&pool, &state, &verb, &request.payload).await }
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
            let facts = explain::queue_facts(&*state.lock().await, &queue, Utc::now())?;
            let decisions = store::recent_decisions(pool, DecisionsOf::Queue(&queue)).await?;
            BalanceExplainReply { facts, decisions }
        }
        BalanceExplainRequest::Pool(name) => {
            let facts = explain::pool_facts(&*state.lock().await, &name, Utc::now());
            let decisions = store::recent_decisions(pool, DecisionsOf::Pool(&name)).await?;
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

/// Changes or lists the mappings; a name must be 1 to 200 characters.
async fn mapping(pool: &Pool, request: MappingRequest) -> anyhow::Result<MappingReply> {
    if let MappingRequest::Add { name, .. } = &request {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            anyhow::bail!("a demand name must have 1 to 200 characters, got {name:?}");
        }
    }
    store::change_mapping(pool, &request).await
}
