//! `faro workers`: each worker's pool, state, queue, load, runs in progress, CPU and memory,
//! as the balancer sees them.

use faro_shared::config::Env;
use faro_shared::domain::{PoolName, QueueName};
use faro_shared::messages::{WorkersReply, WorkersRequest};

use crate::ask::ask;
use crate::table::{self, Column};

pub async fn run(env: &Env, json: bool) -> anyhow::Result<()> {
    let reply = ask(env, &WorkersRequest).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    print!("{}", workers_table(&reply));
    Ok(())
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone as _, Utc};
    use faro_shared::domain::WorkerId;
    use faro_shared::messages::{Kind, WorkerRow};

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
}
