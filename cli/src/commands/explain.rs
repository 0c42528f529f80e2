//! `faro explain run|job|queue|pool`: why a run waits or did what it did, what a job has
//! been doing (the dispatcher); why a queue or a pool has the workers it has (the balancer).

use anyhow::Context as _;
use clap::Subcommand;
use faro_shared::config::Env;
use faro_shared::domain::{PoolName, QueueName};
use faro_shared::messages::{BalanceExplainRequest, ExplainRequest};

use crate::ask::ask;

#[derive(Subcommand)]
pub enum ExplainWhat {
    /// A run, by id (a UUID).
    Run { id: uuid::Uuid },
    /// A job, by id.
    Job { id: String },
    /// Why a queue has the workers it has, and why it did not get more.
    Queue {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A pool's workers: what each serves, lent or not, and its cooling.
    Pool {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(env: &Env, what: ExplainWhat) -> anyhow::Result<()> {
    let request = match what {
        ExplainWhat::Run { id } => ExplainRequest::Run(id),
        ExplainWhat::Job { id } => ExplainRequest::Job(id),
        ExplainWhat::Queue { name, json } => {
            let queue =
                QueueName::parse(&name).with_context(|| format!("{name:?} is not a queue name"))?;
            return balance(env, &BalanceExplainRequest::Queue(queue), json).await;
        }
        ExplainWhat::Pool { name, json } => {
            let pool =
                PoolName::parse(&name).with_context(|| format!("{name:?} is not a pool name"))?;
            return balance(env, &BalanceExplainRequest::Pool(pool), json).await;
        }
    };
    for line in ask(env, &request).await?.lines {
        println!("{line}");
    }
    Ok(())
}

async fn balance(env: &Env, request: &BalanceExplainRequest, json: bool) -> anyhow::Result<()> {
    let reply = ask(env, request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
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
