//! The balancer end to end, with worker processes: demand served by an HTTP source in the test
//! moves workers between queues; the source goes down and nothing is scaled in; a killed
//! worker is unstable, then lost, then recovered when it comes back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faro_bench::system::{Options, System, WorkerProcess};
use faro_shared::domain::QueueName;
use faro_shared::messages::{MappingReply, MappingRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A ticket API: answers its current body as JSON, or 503 when it has none.
struct TicketApi {
    body: Arc<Mutex<Option<serde_json::Value>>>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl TicketApi {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/ticket-types", listener.local_addr().unwrap());
        let body: Arc<Mutex<Option<serde_json::Value>>> = Arc::new(Mutex::new(None));
        let serving = body.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let body = serving.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let answer = match body {
                        Some(json) => {
                            let text = json.to_string();
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                                text.len()
                            )
                        }
                        None => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
                    };
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { body, url, task }
    }

    fn open(&self, fiber: u64, b: u64) {
        *self.body.lock().unwrap() = Some(serde_json::json!({"types": [
            {"type": "fiber-repair", "open": fiber},
            {"type": "tickets-b", "open": b},
        ]}));
    }

    fn down(&self) {
        *self.body.lock().unwrap() = None;
    }
}

impl Drop for TicketApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn spawn_worker(system: &System, id: &str) -> WorkerProcess {
    let mut env = system.env.clone();
    env.set("FARO_WORKER_ID", id)
        .set("FARO_WORKER_CAPACITY", "2")
        .set("FARO_HTTP_ADDR", "127.0.0.1:0");
    WorkerProcess::worker(std::path::Path::new(env!("CARGO_BIN_EXE_faro-bench")), &env).unwrap()
}

async fn workers_of(system: &System, queue: &str, n: i64) {
    system
        .wait_count(
            &format!(
                "SELECT count(*) FROM queue_balance WHERE queue = '{queue}' AND workers = {n}"
            ),
            1,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_follow_external_demand_keep_them_on_a_stale_signal_and_a_killed_one_recovers() {
    let api = TicketApi::start().await;
    let system = System::start(Options {
        workers: 0,
        env: vec![
            ("FARO_DEMAND_HTTP_URL".into(), api.url.clone()),
            ("FARO_DEMAND_HTTP_ITEMS".into(), "/types".into()),
            ("FARO_DEMAND_HTTP_NAME".into(), "/type".into()),
            ("FARO_DEMAND_HTTP_COUNT".into(), "/open".into()),
            ("FARO_DEMAND_PROVIDER_TIMEOUT".into(), "1s".into()),
        ],
        ..Options::default()
    })
    .await
    .unwrap();
    system
        .pool
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO queues (name, kinds) VALUES ('tickets-a', '{sim}'), ('tickets-b', '{sim}')",
        )
        .await
        .unwrap();
    // The ticket API says fiber-repair; tickets-a is the queue that works on it.
    let reply = system
        .client
        .request(
            system.ns.api_subject("balancer", "mapping"),
            serde_json::to_vec(&MappingRequest::Add {
                name: "fiber-repair".into(),
                queue: QueueName::parse("tickets-a").unwrap(),
            })
            .unwrap()
            .into(),
        )
        .await
        .unwrap();
    let mappings: MappingReply = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(mappings.mappings.len(), 1, "{mappings:?}");

    let _w1 = spawn_worker(&system, "w1");
    let _w2 = spawn_worker(&system, "w2");
    let mut w3 = spawn_worker(&system, "w3");

    // 4 open repairs at 2 slots a worker: tickets-a gets two workers, tickets-b none.
    api.open(4, 0);
    workers_of(&system, "tickets-a", 2).await;
    workers_of(&system, "tickets-b", 0).await;

    // The demand moves: tickets-a scales in, tickets-b takes all three.
    api.open(0, 6);
    workers_of(&system, "tickets-b", 3).await;
    workers_of(&system, "tickets-a", 0).await;
    let reasons: Vec<(String, String)> = system
        .pairs(
            "SELECT DISTINCT to_queue, reason FROM balancer_decisions
              WHERE worker_id IS NOT NULL AND to_queue IS NOT NULL ORDER BY 1, 2",
        )
        .await
        .unwrap();
    assert_eq!(
        reasons,
        [
            ("tickets-a".to_owned(), "scale_out".to_owned()),
            ("tickets-b".to_owned(), "scale_out".to_owned())
        ]
    );

    // The API goes down: the queues it fed are stale, and keep their workers.
    api.down();
    system
        .wait_count(
            "SELECT count(*) FROM queue_balance WHERE queue = 'tickets-b' AND stale
                AND hold LIKE 'held: demand stale since%'",
            1,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let stale_at: chrono::DateTime<chrono::Utc> = system
        .one("SELECT updated_at FROM queue_balance WHERE queue = 'tickets-b'")
        .await
        .unwrap();
    // Several cycles later, still stale and still three workers.
    system
        .wait_count(
            &format!(
                "SELECT count(*) FROM queue_balance WHERE queue = 'tickets-b'
                    AND updated_at > '{}'::timestamptz + interval '2 seconds'",
                stale_at.to_rfc3339()
            ),
            1,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let (workers, stale): (i32, bool) = system
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT workers, stale FROM queue_balance WHERE queue = 'tickets-b'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((workers, stale), (3, true), "scaled in on a stale signal");
    let scale_ins: i64 = system
        .one("SELECT count(*) FROM balancer_decisions WHERE reason = 'scale_in' AND from_queue = 'tickets-b'")
        .await
        .unwrap();
    assert_eq!(scale_ins, 0);

    // A worker killed: unstable, then lost; started again under its id: recovered.
    w3.kill().unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM workers WHERE id = 'w3' AND state = 'lost'",
            1,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let _w3 = spawn_worker(&system, "w3");
    system
        .wait_count(
            "SELECT count(*) FROM worker_events WHERE worker_id = 'w3' AND event = 'recovered'",
            1,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let events: Vec<(String, String)> = system
        .pairs("SELECT event, coalesce(detail->>'from', '') FROM worker_events WHERE worker_id = 'w3' ORDER BY id")
        .await
        .unwrap();
    let events_from: Vec<String> = events.iter().map(|(_, from)| from.clone()).collect();
    let events: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    // (A loaded machine may delay a beat before the kill: an unstable-recovered pair more.)
    assert!(
        events.first() == Some(&"joined") && events.ends_with(&["unstable", "lost", "recovered"]),
        "{events:?}"
    );
    assert_eq!(events_from.last().map(String::as_str), Some("lost"));

    system.stop().await.unwrap();
}

/// The balancer's answers never wait on its writes: while PostgreSQL holds up the cycle's
/// write of the queues' balance, `faro workers` and `faro queues` still answer at once (the
/// state's lock is not held across the cycle's I/O), and the cycle goes on once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_while_a_cycle_waits_on_postgresql() {
    use faro_shared::messages::{QueuesRequest, Request as _, WorkersRequest};

    let system = System::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await
    .unwrap();
    system
        .pool
        .get()
        .await
        .unwrap()
        .batch_execute("INSERT INTO queues (name, kinds) VALUES ('held', '{sim}')")
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM queue_balance WHERE queue = 'held'",
            1,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    // A connection of the test's own blocks every write of the table the cycle writes last.
    let (locker, connection) = tokio_postgres::connect(system.db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE queue_balance IN EXCLUSIVE MODE")
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND query LIKE '%queue_balance%'",
            1,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    for subject in [
        WorkersRequest::subject(&system.ns),
        QueuesRequest::subject(&system.ns),
    ] {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            system.client.request(subject.clone(), "".into()),
        )
        .await;
        assert!(
            matches!(answer, Ok(Ok(_))),
            "{subject} did not answer while a cycle waited on PostgreSQL: {answer:?}"
        );
    }
    let before: chrono::DateTime<chrono::Utc> = system
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT max(updated_at) FROM queue_balance", &[])
        .await
        .unwrap()
        .get(0);
    locker.batch_execute("ROLLBACK").await.unwrap();
    system
        .wait_count(
            &format!(
                "SELECT count(*) FROM queue_balance WHERE updated_at > '{}'",
                before.to_rfc3339()
            ),
            1,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
}
