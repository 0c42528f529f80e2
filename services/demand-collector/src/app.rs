//! The demand-collector service: a collection every interval, providers asked in parallel,
//! each bounded by a timeout so a slow one never delays the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream;
use chrono::Utc;
use deadpool_postgres::Pool;
use faro_shared::domain::QueueName;
use faro_shared::service::{self, Spec};
use faro_shared::{pg, Namespace};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics as m;
use crate::providers::{
    DispatcherWaiting, DueSoon, HttpSource, JetStreamBacklog, Provider, SqlSource,
};
use crate::snapshot::{snapshots, Answer};
use crate::store;

/// Runs the demand-collector until `shutdown` is cancelled or its loop fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let spec = Spec::new("demand-collector", &config.common, m::METRICS).with_pg(&config.pg);
    let Some(mut service) = service::start(spec, &shutdown).await? else {
        return Ok(());
    };
    let (pool, js, ns) = (service.pool()?, service.js.clone(), service.ns.clone());
    let providers = providers(&config, &pool, &js, &ns)?;
    tracing::info!(
        providers = ?providers.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "demand providers"
    );
    let mut supervisor = service.supervisor();
    supervisor.spawn(
        "collect",
        collect_loop(config.clone(), pool, js, ns, providers, shutdown.clone()),
    );
    service.serve(supervisor, config.shutdown_grace).await
}

/// The providers the configuration enables.
fn providers(
    config: &Config,
    pool: &Pool,
    js: &jetstream::Context,
    ns: &Namespace,
) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
    let mut out: Vec<Arc<dyn Provider>> = Vec::new();
    for name in &config.providers {
        let provider: Arc<dyn Provider> = match name.as_str() {
            "jetstream" => Arc::new(JetStreamBacklog {
                js: js.clone(),
                ns: ns.clone(),
            }),
            "waiting" => Arc::new(DispatcherWaiting { pool: pool.clone() }),
            "due" => Arc::new(DueSoon {
                pool: pool.clone(),
                horizon: config.due_horizon,
            }),
            "http" => {
                let http = config
                    .http
                    .as_ref()
                    .context("the http provider needs FARO_DEMAND_HTTP_URL")?;
                Arc::new(HttpSource {
                    client: reqwest::Client::builder()
                        .timeout(config.provider_timeout)
                        .build()
                        .context("cannot build the HTTP client")?,
                    url: http.url.clone(),
                    authorization: http.authorization.clone(),
                    paths: http.paths.clone(),
                })
            }
            "sql" => {
                let sql = config
                    .sql
                    .as_ref()
                    .context("the sql provider needs FARO_DEMAND_SQL_URL")?;
                Arc::new(SqlSource {
                    pool: pg::pool(&sql.pg).context("FARO_DEMAND_SQL_URL")?,
                    query: sql.query.clone(),
                    timeout: config.provider_timeout,
                })
            }
            other => anyhow::bail!("unknown demand provider {other:?}"),
        };
        out.push(provider);
    }
    Ok(out)
}

async fn collect_loop(
    config: Config,
    pool: Pool,
    js: jetstream::Context,
    ns: Namespace,
    providers: Vec<Arc<dyn Provider>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fed = BTreeMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match collect_once(&config, &pool, &js, &ns, &providers, &fed).await {
            Ok(now_fed) => fed = now_fed,
            Err(error) => {
                tracing::warn!(
                    error = faro_shared::pg::error_text(&error),
                    "demand collection failed"
                );
            }
        }
    }
}

async fn collect_once(
    config: &Config,
    pool: &Pool,
    js: &jetstream::Context,
    ns: &Namespace,
    providers: &[Arc<dyn Provider>],
    fed: &BTreeMap<&'static str, BTreeSet<QueueName>>,
) -> anyhow::Result<BTreeMap<&'static str, BTreeSet<QueueName>>> {
    let queues = store::queue_names(pool).await?;
    let mappings = store::mappings(pool).await?;
    let settings = faro_shared::settings::load(pool).await?;
    faro_shared::telemetry::follow_log_level(settings.log_level());
    let asked = providers.iter().map(|provider| {
        let queues = &queues;
        async move {
            let answer =
                match tokio::time::timeout(config.provider_timeout, provider.collect(queues)).await
                {
                    Ok(Ok(counts)) => Answer::Counts(counts),
                    Ok(Err(error)) => {
                        tracing::warn!(
                            provider = provider.name(),
                            error = faro_shared::pg::error_text(&error),
                            "demand provider failed"
                        );
                        metrics::counter!(m::PROVIDER_FAILURES, "provider" => provider.name())
                            .increment(1);
                        Answer::Failed
                    }
                    Err(_) => {
                        tracing::warn!(
                            provider = provider.name(),
                            timeout_ms = config.provider_timeout.as_millis() as u64,
                            "demand provider timed out"
                        );
                        metrics::counter!(m::PROVIDER_FAILURES, "provider" => provider.name())
                            .increment(1);
                        Answer::Failed
                    }
                };
            (provider.name(), answer)
        }
    });
    let answers = futures::future::join_all(asked).await;
    let collected = snapshots(&queues, &mappings, &answers, fed, Utc::now());
    if !collected.unmapped.is_empty() {
        // Once per collection, every unmapped name with its count: nothing dropped silently.
        let names: Vec<String> = collected
            .unmapped
            .iter()
            .map(|(provider, name, count)| format!("{provider}:{name}={count}"))
            .collect();
        tracing::warn!(
            unmapped = names.join(" "),
            "demand for names that map to no queue (add one with faro mapping add NAME QUEUE)"
        );
        for (provider, _, count) in &collected.unmapped {
            metrics::counter!(m::UNMAPPED, "provider" => *provider).increment(1);
            metrics::counter!(m::UNMAPPED_RUNS, "provider" => *provider).increment(*count);
        }
    }
    for snapshot in collected.snapshots {
        metrics::gauge!(m::DEMAND, "queue" => snapshot.queue.to_string())
            .set(snapshot.pending as f64);
        let payload = serde_json::to_vec(&snapshot)?;
        js.publish(snapshot.subject(ns), payload.into())
            .await
            .context("cannot publish a demand snapshot")?
            .await
            .context("demand snapshot not stored")?;
    }
    Ok(collected.fed)
}
