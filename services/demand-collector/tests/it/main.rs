//! Demand-collector integration test: a queue's JetStream backlog becomes its snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faro_shared::messages::DemandSnapshot;
use faro_shared::pg;
use faro_shared::testing::{TestBus, TestDb};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// A bus and a database with `queues` defined, and `runs` messages waiting in the first.
async fn backlog(queues: &[&str], runs: usize) -> (TestBus, TestDb) {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    for queue in queues {
        pool.get()
            .await
            .unwrap()
            .execute(
                "INSERT INTO queues (name, kinds) VALUES ($1, '{sim}')",
                &[queue],
            )
            .await
            .unwrap();
    }
    // As the dispatcher does before its first run to a queue; the others have no consumer
    // (no run was ever published to them), and their backlog is none.
    let first = faro_shared::domain::QueueName::parse(queues[0]).unwrap();
    faro_shared::nats::ensure_queue_consumer(&bus.js, &bus.ns, &first)
        .await
        .unwrap();
    for i in 0..runs {
        bus.js
            .publish(format!("{}.jobs.{}.t{i}", bus.ns, queues[0]), "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    (bus, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_of_each_queue_is_published() {
    let (bus, db) = backlog(&["busy", "idle"], 7).await;
    let ns = &bus.ns;

    let mut env = bus.env(Some(&db));
    env.set("FARO_DEMAND_INTERVAL", "100ms");
    let shutdown = CancellationToken::new();
    let collector = tokio::spawn(faro_demand_collector::run(
        faro_demand_collector::Config::from_env(&env).unwrap(),
        shutdown.clone(),
    ));

    let consumer = bus.read_stream(&ns.demand_stream(), None).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut latest = std::collections::BTreeMap::new();
    while latest.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("no demand snapshot within 10 s")
            .unwrap()
            .unwrap();
        let snapshot: DemandSnapshot = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(message.subject.as_str(), snapshot.subject(ns));
        message.ack().await.unwrap();
        latest.insert(snapshot.queue.to_string(), snapshot);
    }
    assert_eq!(latest["busy"].pending, 7);
    assert_eq!(latest["busy"].sources["jetstream"], 7);
    assert!(!latest["busy"].stale);
    assert_eq!(latest["idle"].pending, 0);

    shutdown.cancel();
    collector.await.unwrap().unwrap();
}

mod sources {
    use std::time::Duration;

    use faro_demand_collector::providers::{DispatcherWaiting, DueSoon, Provider, SqlSource};
    use faro_shared::pg;
    use faro_shared::testing::TestDb;

    fn sorted(mut pairs: Vec<(String, u64)>) -> Vec<(String, u64)> {
        pairs.sort();
        pairs
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_runs_and_runs_due_soon_are_counted_per_queue() {
        let db = TestDb::create().await.unwrap();
        let pool = pg::pool(&db.config()).unwrap();
        pool.get()
            .await
            .unwrap()
            .batch_execute(
                "INSERT INTO queues (name) VALUES ('polls'), ('batch');
                 INSERT INTO targets (id, enabled) VALUES ('olt-1', true), ('olt-off', false);
                 -- every 2 s, 5 s and 60 s; a disabled job and a disabled target's job count nothing
                 INSERT INTO jobs (id, queue, kind, target, interval_ms, enabled) VALUES
                     ('a', 'polls', 'snmp.get', 'olt-1', 2000, true),
                     ('b', 'polls', 'snmp.get', 'olt-1', 5000, true),
                     ('c', 'polls', 'snmp.get', 'olt-1', 60000, true),
                     ('d', 'polls', 'snmp.get', 'olt-1', 1000, false),
                     ('e', 'polls', 'snmp.get', 'olt-off', 1000, true),
                     ('f', 'batch', 'sim', NULL, NULL, true);
                 INSERT INTO runs (id, job_id, queue, kind, params, priority) VALUES
                     (gen_random_uuid(), 'f', 'batch', 'sim', '{}', 5),
                     (gen_random_uuid(), 'f', 'batch', 'sim', '{}', 5),
                     (gen_random_uuid(), 'a', 'polls', 'snmp.get', '{}', 5),
                     (gen_random_uuid(), 'f', 'batch', 'sim', '{}', 5);
                 -- three wait in the outbox; the last run was published already
                 INSERT INTO run_outbox (run_id, queue)
                     SELECT id, queue FROM runs ORDER BY created_at, id LIMIT 3;",
            )
            .await
            .unwrap();
        let in_outbox: Vec<(String, i64)> = pool
            .get()
            .await
            .unwrap()
            .query(
                "SELECT r.queue, count(*) FROM run_outbox o JOIN runs r ON r.id = o.run_id GROUP BY 1 ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let waiting = DispatcherWaiting { pool: pool.clone() };
        let got = sorted(waiting.collect(&[]).await.unwrap());
        let want: Vec<(String, u64)> = in_outbox
            .into_iter()
            .map(|(q, n)| (q, u64::try_from(n).unwrap()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(got.iter().map(|(_, n)| n).sum::<u64>(), 3);

        // Within 10 s: 5 runs of a, 2 of b, 10/60 of c, rounded up: 8.
        let due = DueSoon {
            pool: pool.clone(),
            horizon: Duration::from_secs(10),
        };
        assert_eq!(due.collect(&[]).await.unwrap(), [("polls".to_owned(), 8)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sql_source_reads_names_and_counts_read_only_and_says_what_is_wrong() {
        // The seeds' work-queue database, another PostgreSQL database.
        let work = TestDb::create().await.unwrap();
        let pool = pg::pool(&work.config()).unwrap();
        pool.get()
            .await
            .unwrap()
            .batch_execute(
                "CREATE TABLE work_items (kind text, done boolean);
                 INSERT INTO work_items VALUES ('fiber', false), ('fiber', false),
                                               ('fiber', true), ('copper', false);",
            )
            .await
            .unwrap();
        let source = |query: &str| SqlSource {
            pool: pool.clone(),
            query: query.to_owned(),
            timeout: Duration::from_secs(2),
        };
        let got = source("SELECT kind, count(*) FROM work_items WHERE NOT done GROUP BY kind")
            .collect(&[])
            .await
            .unwrap();
        assert_eq!(
            sorted(got),
            [("copper".to_owned(), 1), ("fiber".to_owned(), 2)]
        );

        // Read-only whatever the query says.
        let error = source("DELETE FROM work_items RETURNING kind, 1::int8")
            .collect(&[])
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("read-only"), "{error:#}");
        let left: i64 = pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM work_items", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 4);

        // Wrong columns are named.
        let error = source("SELECT 1, kind FROM work_items")
            .collect(&[])
            .await
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("the first column must be the name"),
            "{error:#}"
        );
        // A slow query ends at the timeout, on the server.
        let slow = SqlSource {
            timeout: Duration::from_millis(200),
            ..source("SELECT 'x', 1::int8 FROM pg_sleep(5)")
        };
        let started = std::time::Instant::now();
        assert!(slow.collect(&[]).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_hangs_marks_its_queues_stale_and_delays_no_other() {
    let (bus, db) = backlog(&["busy"], 3).await;
    let ns = &bus.ns;
    // An HTTP source that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/demand", listener.local_addr().unwrap());
    let hang = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });

    let mut env = bus.env(Some(&db));
    env.set("FARO_DEMAND_INTERVAL", "100ms")
        .set("FARO_DEMAND_PROVIDER_TIMEOUT", "300ms")
        .set("FARO_DEMAND_HTTP_URL", url);
    let shutdown = CancellationToken::new();
    let started = std::time::Instant::now();
    let collector = tokio::spawn(faro_demand_collector::run(
        faro_demand_collector::Config::from_env(&env).unwrap(),
        shutdown.clone(),
    ));
    let consumer = bus.read_stream(&ns.demand_stream(), None).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("no demand snapshot within 10 s")
        .unwrap()
        .unwrap();
    let snapshot: DemandSnapshot = serde_json::from_slice(&message.payload).unwrap();
    // The backlog still counts, the queue is stale, and the hung source cost one timeout.
    assert_eq!(snapshot.sources["jetstream"], 3);
    assert!(snapshot.stale);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    shutdown.cancel();
    collector.await.unwrap().unwrap();
    hang.abort();
}
