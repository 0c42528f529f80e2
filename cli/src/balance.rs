//! `faro workers`, `faro queues`, `faro explain queue|pool` and `faro mapping`: the balancer's
//! view, through its API (`faro.api.balancer.<verb>`).

use anyhow::Context as _;
use clap::Subcommand;
use faro_shared::config::Env;
use faro_shared::domain::{PoolName, QueueName};
use faro_shared::messages::{
    BalanceExplainReply, BalanceExplainRequest, MappingReply, MappingRequest, QueuesReply,
    WorkersReply,
};

use crate::ask;

#[derive(Subcommand)]
pub enum MappingAction {
    /// Count a provider's NAME as demand of QUEUE (replaces NAME's mapping if it has one).
    Add { name: String, queue: String },
    /// Every mapping.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop mapping NAME (its demand is then reported as unmapped).
    Remove { name: String },
}

fn percent(value: Option<f32>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.0}%"))
}

fn age(seconds: Option<u64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) if s < 172_800 => format!("{}h", s / 3600),
        Some(s) => format!("{}d", s / 86_400),
    }
}

pub async fn workers(env: &Env, json: bool) -> anyhow::Result<()> {
    let reply = ask(env, "balancer", "workers", &serde_json::Value::Null).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let reply: WorkersReply = serde_json::from_value(reply)?;
    if reply.workers.is_empty() {
        println!("no worker has announced itself yet");
        return Ok(());
    }
    println!(
        "{:<20} {:<12} {:<9} {:<20} {:>5} {:>9} {:>5} {:>5} {:>7} {:>11}",
        "WORKER", "POOL", "STATE", "QUEUE", "LOAD", "RUNS", "CPU", "MEM", "UPTIME", "BEATS/MISS"
    );
    for w in &reply.workers {
        let queues: Vec<&str> = w.queues.iter().map(QueueName::as_str).collect();
        println!(
            "{:<20} {:<12} {:<9} {:<20} {:>5} {:>9} {:>5} {:>5} {:>7} {:>11}",
            w.id,
            w.pool.as_ref().map_or("-", PoolName::as_str),
            w.state,
            if queues.is_empty() {
                "-".to_owned()
            } else {
                queues.join(",")
            },
            w.load_score,
            format!("{}/{}", w.in_progress, w.capacity),
            percent(w.cpu_percent),
            percent(w.mem_percent),
            age(w.uptime_secs),
            format!("{}/{}", w.beats_received, w.beats_missed),
        );
        if let Some(why) = &w.admission_closed {
            println!("    takes no new runs: {why}");
        }
    }
    Ok(())
}

pub async fn queues(env: &Env, json: bool) -> anyhow::Result<()> {
    let reply = ask(env, "balancer", "queues", &serde_json::Value::Null).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let reply: QueuesReply = serde_json::from_value(reply)?;
    if reply.queues.is_empty() {
        println!("no queue yet (or the balancer has not finished a cycle)");
        return Ok(());
    }
    println!(
        "{:<20} {:>4} {:>9} {:>9} {:>9} {:>7} {:<22} HELD",
        "QUEUE", "PRIO", "PENDING", "SLOTS", "WORKERS", "MIN/MAX", "COOLING"
    );
    for q in &reply.queues {
        let pending = if q.stale {
            format!("{}?", q.pending)
        } else {
            q.pending.to_string()
        };
        let cooling: Vec<String> = q
            .cooling
            .iter()
            .filter(|(_, until)| **until > chrono::Utc::now())
            .map(|(pool, until)| format!("{pool} {}", until.format("%H:%M:%S")))
            .collect();
        println!(
            "{:<20} {:>4} {:>9} {:>9} {:>9} {:>7} {:<22} {}",
            q.name,
            q.priority,
            pending,
            q.capacity,
            q.workers,
            format!(
                "{}/{}",
                q.min_workers,
                q.max_workers.map_or("-".to_owned(), |m| m.to_string())
            ),
            if cooling.is_empty() {
                "-".to_owned()
            } else {
                cooling.join(",")
            },
            q.hold.as_deref().unwrap_or("-"),
        );
    }
    if reply.queues.iter().any(|q| q.stale) {
        println!("(? : demand stale, a provider failed: those queues keep their workers)");
    }
    Ok(())
}

async fn explain(env: &Env, request: &BalanceExplainRequest, json: bool) -> anyhow::Result<()> {
    let reply = ask(env, "balancer", "explain", request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let reply: BalanceExplainReply = serde_json::from_value(reply)?;
    for fact in &reply.facts {
        println!("{fact}");
    }
    if reply.decisions.is_empty() {
        println!("no decision recorded yet");
    } else {
        println!("latest decisions, newest first:");
    }
    for d in &reply.decisions {
        let what = match (&d.worker, &d.from, &d.to) {
            (Some(w), from, to) => format!(
                "{w} ({}): {} -> {}",
                d.pool.as_ref().map_or("-", PoolName::as_str),
                from.as_ref().map_or("idle", QueueName::as_str),
                to.as_ref().map_or("idle", QueueName::as_str),
            ),
            (None, ..) => format!("queue {}", d.queue.as_ref().map_or("-", QueueName::as_str)),
        };
        println!(
            "  {}  {what}: {}",
            d.at.format("%Y-%m-%d %H:%M:%S"),
            d.reason
        );
    }
    Ok(())
}

pub async fn explain_queue(env: &Env, name: &str, json: bool) -> anyhow::Result<()> {
    let queue = QueueName::parse(name).with_context(|| format!("{name:?} is not a queue name"))?;
    explain(env, &BalanceExplainRequest::Queue(queue), json).await
}

pub async fn explain_pool(env: &Env, name: &str, json: bool) -> anyhow::Result<()> {
    let pool = PoolName::parse(name).with_context(|| format!("{name:?} is not a pool name"))?;
    explain(env, &BalanceExplainRequest::Pool(pool), json).await
}

pub async fn mapping(env: &Env, action: MappingAction) -> anyhow::Result<()> {
    let (request, json) = match action {
        MappingAction::Add { name, queue } => {
            let queue = QueueName::parse(queue.as_str())
                .with_context(|| format!("{queue:?} is not a queue name"))?;
            (MappingRequest::Add { name, queue }, false)
        }
        MappingAction::Remove { name } => (MappingRequest::Remove { name }, false),
        MappingAction::List { json } => (MappingRequest::List, json),
    };
    let reply = ask(env, "balancer", "mapping", &request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let reply: MappingReply = serde_json::from_value(reply)?;
    match &request {
        MappingRequest::Add { name, queue } => println!("{name} now counts as demand of {queue}"),
        MappingRequest::Remove { name } if reply.removed => println!("{name} is no longer mapped"),
        MappingRequest::Remove { name } => println!("{name} was not mapped; nothing changed"),
        MappingRequest::List => {
            if reply.mappings.is_empty() {
                println!("no mapping: external names count only when they are queue names");
            } else {
                println!("{:<32} QUEUE", "NAME");
                for m in &reply.mappings {
                    println!("{:<32} {}", m.name, m.queue);
                }
            }
        }
    }
    Ok(())
}
