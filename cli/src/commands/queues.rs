//! `faro queues`: each queue's demand, capacity, workers, cooling and why it is held.

use chrono::{DateTime, Utc};
use faro_shared::config::Env;
use faro_shared::messages::{QueuesReply, QueuesRequest};

use crate::ask::ask;
use crate::table::{self, Column};

pub async fn run(env: &Env, json: bool) -> anyhow::Result<()> {
    let reply = ask(env, &QueuesRequest).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    print!("{}", queues_table(&reply, Utc::now()));
    Ok(())
}

const QUEUE_COLUMNS: [Column; 8] = [
    Column::left("QUEUE"),
    Column::right("PRIO"),
    Column::right("PENDING"),
    Column::right("SLOTS"),
    Column::right("WORKERS"),
    Column::right("MIN/MAX"),
    Column::left("COOLING"),
    Column::left("HELD"),
];

/// What `faro queues` prints at `now` (pools whose cooling has ended by then are left out).
fn queues_table(reply: &QueuesReply, now: DateTime<Utc>) -> String {
    if reply.queues.is_empty() {
        return "no queue yet (or the balancer has not finished a cycle)\n".to_owned();
    }
    let rows = reply.queues.iter().map(|q| {
        let pending = if q.stale {
            format!("{}?", q.pending)
        } else {
            q.pending.to_string()
        };
        let cooling: Vec<String> = q
            .cooling
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(pool, until)| format!("{pool} {}", until.format("%H:%M:%S")))
            .collect();
        vec![
            q.name.to_string(),
            q.priority.to_string(),
            pending,
            q.capacity.to_string(),
            q.workers.to_string(),
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
            q.hold.clone().unwrap_or_else(|| "-".to_owned()),
        ]
    });
    let mut text = table::render(&QUEUE_COLUMNS, rows);
    if reply.queues.iter().any(|q| q.stale) {
        text += "(? : demand stale, a provider failed: those queues keep their workers)\n";
    }
    text
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use faro_shared::domain::{PoolName, QueueName};
    use faro_shared::messages::QueueRow;

    use super::*;
    use crate::table::tests::misplaced;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, h, m, s).unwrap()
    }

    #[test]
    fn queues_show_stale_demand_live_cooling_and_why_they_are_held() {
        let queue = |name: &str| QueueRow {
            name: QueueName::parse(name).unwrap(),
            priority: 5,
            min_workers: 1,
            max_workers: None,
            home_pools: vec![PoolName::parse("default").unwrap()],
            pending: 12,
            stale: false,
            workers: 2,
            capacity: 16,
            hold: None,
            cooling: Default::default(),
        };
        let mut held = queue("olt-huawei-1-discovery");
        held.priority = 10;
        held.pending = 1_250_000;
        held.stale = true;
        held.max_workers = Some(4);
        held.cooling = [
            ("default".to_owned(), at(12, 0, 30)),
            ("edge".to_owned(), at(11, 59, 0)),
        ]
        .into();
        held.hold = Some("max_workers 4 reached".to_owned());
        let reply = QueuesReply {
            queues: vec![queue("get"), held],
        };
        let text = queues_table(&reply, at(12, 0, 0));
        let cells = [
            vec!["get", "5", "12", "16", "2", "1/-", "-", "-"],
            vec![
                "olt-huawei-1-discovery",
                "10",
                "1250000?",
                "16",
                "2",
                "1/4",
                "default 12:00:30",
                "max_workers 4 reached",
            ],
        ];
        let table: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(misplaced(&table, &QUEUE_COLUMNS, &cells), None, "\n{text}");
        assert_eq!(
            text,
            "\
QUEUE                   PRIO   PENDING  SLOTS  WORKERS  MIN/MAX  COOLING           HELD
get                        5        12     16        2      1/-  -                 -
olt-huawei-1-discovery    10  1250000?     16        2      1/4  default 12:00:30  max_workers 4 reached
(? : demand stale, a provider failed: those queues keep their workers)
"
        );
    }
}
