//! `faro mapping add|list|remove`: external demand names (ticket types, work-queue rows)
//! counted as demand of queues.

use anyhow::Context as _;
use clap::Subcommand;
use faro_shared::config::Env;
use faro_shared::domain::QueueName;
use faro_shared::messages::{MappingReply, MappingRequest};

use crate::ask::ask;
use crate::table::{self, Column};

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

pub async fn run(env: &Env, action: MappingAction) -> anyhow::Result<()> {
    let (request, json) = match action {
        MappingAction::Add { name, queue } => {
            let queue = QueueName::parse(queue.as_str())
                .with_context(|| format!("{queue:?} is not a queue name"))?;
            (MappingRequest::Add { name, queue }, false)
        }
        MappingAction::Remove { name } => (MappingRequest::Remove { name }, false),
        MappingAction::List { json } => (MappingRequest::List, json),
    };
    let reply = ask(env, &request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    match &request {
        MappingRequest::Add { name, queue } => println!("{name} now counts as demand of {queue}"),
        MappingRequest::Remove { name } if reply.removed => println!("{name} is no longer mapped"),
        MappingRequest::Remove { name } => println!("{name} was not mapped; nothing changed"),
        MappingRequest::List => {
            print!("{}", mappings_table(&reply));
        }
    }
    Ok(())
}

/// What `faro mapping list` prints.
fn mappings_table(reply: &MappingReply) -> String {
    if reply.mappings.is_empty() {
        return "no mapping: external names count only when they are queue names\n".to_owned();
    }
    table::render(
        &[Column::left("NAME"), Column::left("QUEUE")],
        reply
            .mappings
            .iter()
            .map(|m| [m.name.clone(), m.queue.to_string()]),
    )
}

#[cfg(test)]
mod tests {
    use faro_shared::messages::Mapping;

    use super::*;

    #[test]
    fn mappings_are_a_table_of_names_and_queues() {
        let reply = MappingReply {
            mappings: vec![
                Mapping {
                    name: "tickets-fiber-outage-priority".to_owned(),
                    queue: QueueName::parse("smoke").unwrap(),
                },
                Mapping {
                    name: "wq".to_owned(),
                    queue: QueueName::parse("get").unwrap(),
                },
            ],
            removed: false,
        };
        assert_eq!(
            mappings_table(&reply),
            "\
NAME                           QUEUE
tickets-fiber-outage-priority  smoke
wq                             get
"
        );
    }
}
