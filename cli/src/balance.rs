//! `faro workers`, `faro queues`, `faro explain queue|pool` and `faro mapping`: the balancer's
//! view, through its API (`faro.api.balancer.<verb>`).

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use faro_shared::config::Env;
use faro_shared::domain::{PoolName, QueueName};
use faro_shared::messages::{
    BalanceExplainReply, BalanceExplainRequest, MappingReply, MappingRequest, QueuesReply,
    WorkersReply,
};

use crate::ask;
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
    print!("{}", workers_table(&serde_json::from_value(reply)?));
    Ok(())
}

const WORKER_COLUMNS: [Column; 10] = [
    Column::left("WORKER"),
    Column::left("POOL"),
    Column::left("STATE"),
    Column::left("QUEUE"),
    Column::right("LOAD"),
    Column::right("RUNS"),
    Column::right("CPU"),
    Column::right("MEM"),
    Column::right("UPTIME"),
    Column::right("BEATS/MISS"),
];

/// What `faro workers` prints: a worker a line, then why those that take no new runs don't.
fn workers_table(reply: &WorkersReply) -> String {
    if reply.workers.is_empty() {
        return "no worker has announced itself yet\n".to_owned();
    }
    let rows = reply.workers.iter().map(|w| {
        let queues: Vec<&str> = w.queues.iter().map(QueueName::as_str).collect();
        vec![
            w.id.to_string(),
            w.pool.as_ref().map_or("-", PoolName::as_str).to_owned(),
            w.state.clone(),
            if queues.is_empty() {
                "-".to_owned()
            } else {
                queues.join(",")
            },
            w.load_score.to_string(),
            format!("{}/{}", w.in_progress, w.capacity),
            percent(w.cpu_percent),
            percent(w.mem_percent),
            age(w.uptime_secs),
            format!("{}/{}", w.beats_received, w.beats_missed),
        ]
    });
    let mut text = table::render(&WORKER_COLUMNS, rows);
    for w in &reply.workers {
        if let Some(why) = &w.admission_closed {
            text += &format!("{} takes no new runs: {why}\n", w.id);
        }
    }
    text
}

pub async fn queues(env: &Env, json: bool) -> anyhow::Result<()> {
    let reply = ask(env, "balancer", "queues", &serde_json::Value::Null).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    print!(
        "{}",
        queues_table(&serde_json::from_value(reply)?, Utc::now())
    );
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
    use chrono::TimeZone as _;
    use faro_shared::domain::WorkerId;
    use faro_shared::messages::{Kind, Mapping, QueueRow, WorkerRow};

    use super::*;
    use crate::table::tests::misplaced;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, h, m, s).unwrap()
    }

    fn worker(id: &str) -> WorkerRow {
        WorkerRow {
            id: WorkerId::parse(id).unwrap(),
            pool: Some(PoolName::parse("default").unwrap()),
            state: "active".to_owned(),
            queues: vec![QueueName::parse("get").unwrap()],
            kinds: vec![Kind::Sim],
            capacity: 8,
            in_progress: 3,
            load_score: 37,
            cpu_percent: Some(12.4),
            mem_percent: Some(55.0),
            admission_closed: None,
            first_seen: at(9, 0, 0),
            last_seen: at(10, 0, 0),
            uptime_secs: Some(3725),
            beats_received: 1234,
            beats_missed: 2,
        }
    }

    #[test]
    fn workers_line_up_whatever_their_ids_and_queues() {
        let mut busy = worker("fleet-olt-huawei-1-collector-7");
        busy.pool = None;
        busy.state = "unstable".to_owned();
        busy.queues = ["discovery", "optical-power", "get"]
            .into_iter()
            .map(|q| QueueName::parse(q).unwrap())
            .collect();
        busy.capacity = 16;
        busy.in_progress = 16;
        busy.load_score = 100;
        busy.cpu_percent = None;
        busy.mem_percent = None;
        busy.uptime_secs = None;
        busy.beats_received = 5;
        busy.beats_missed = 10;
        busy.admission_closed = Some("cpu 97% above worker.cpu_max 90%".to_owned());
        let reply = WorkersReply {
            workers: vec![worker("w1"), busy],
        };
        let text = workers_table(&reply);
        let cells = [
            vec![
                "w1", "default", "active", "get", "37", "3/8", "12%", "55%", "62m", "1234/2",
            ],
            vec![
                "fleet-olt-huawei-1-collector-7",
                "-",
                "unstable",
                "discovery,optical-power,get",
                "100",
                "16/16",
                "-",
                "-",
                "-",
                "5/10",
            ],
        ];
        let table: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(misplaced(&table, &WORKER_COLUMNS, &cells), None, "\n{text}");
        assert_eq!(
            text,
            "\
WORKER                          POOL     STATE     QUEUE                        LOAD   RUNS  CPU  MEM  UPTIME  BEATS/MISS
w1                              default  active    get                            37    3/8  12%  55%     62m      1234/2
fleet-olt-huawei-1-collector-7  -        unstable  discovery,optical-power,get   100  16/16    -    -       -        5/10
fleet-olt-huawei-1-collector-7 takes no new runs: cpu 97% above worker.cpu_max 90%
"
        );
        assert_eq!(
            workers_table(&WorkersReply::default()),
            "no worker has announced itself yet\n"
        );
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
