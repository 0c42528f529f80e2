//! Balancer integration tests on a private nats-server and a fresh database; the test plays
//! the workers by writing heartbeats itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::Utc;
use faro_shared::domain::{PoolName, WorkerId};
use faro_shared::messages::{Assignment, Heartbeat, Kind};
use faro_shared::pg;
use faro_shared::testing::{TestBus, TestDb};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

fn beat(id: &str, kinds: Vec<Kind>) -> Vec<u8> {
    serde_json::to_vec(&Heartbeat {
        worker_id: WorkerId::parse(id).unwrap(),
        pool: PoolName::parse("default").unwrap(),
        capacity: 4,
        kinds,
        in_progress: 0,
        cpu_percent: None,
        mem_percent: None,
        load_score: 0,
        state: Default::default(),
        admission_closed: None,
        runs: Default::default(),
        version: "test".into(),
        started_at: Utc::now(),
        sent_at: Utc::now(),
    })
    .unwrap()
}

/// The next change of `key` in the assignments bucket: its queues, or `None` when deleted.
async fn next_assignment(watch: &mut kv::Watch) -> Option<Vec<String>> {
    let entry = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("no assignment change within 10 s")
        .unwrap()
        .unwrap();
    match entry.operation {
        kv::Operation::Put => {
            let a: Assignment = serde_json::from_slice(&entry.value).unwrap();
            Some(a.queues.iter().map(ToString::to_string).collect())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_get_the_queues_of_their_kinds_and_are_registered() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO queues (name, kinds) VALUES ('sims', '{sim}'), ('polls', '{snmp.get}'),
                                                    ('later', '{}')",
        )
        .await
        .unwrap();
    let topology = &bus.topology;
    let mut w1 = topology.assignments.watch("w1").await.unwrap();
    let mut w2 = topology.assignments.watch("w2").await.unwrap();

    let mut env = bus.env(Some(&db));
    env.set("FARO_BALANCER_CYCLE", "60s");
    let shutdown = CancellationToken::new();
    let balancer = tokio::spawn(faro_balancer::run(
        faro_balancer::Config::from_env(&env).unwrap(),
        shutdown.clone(),
    ));

    // Joining triggers a cycle at once (the timer is a minute away).
    topology
        .workers
        .put("w1", beat("w1", vec![Kind::Sim]).into())
        .await
        .unwrap();
    assert_eq!(
        next_assignment(&mut w1).await,
        Some(vec!["sims".to_owned()])
    );
    topology
        .workers
        .put("w2", beat("w2", vec![Kind::Sim, Kind::SnmpGet]).into())
        .await
        .unwrap();
    assert_eq!(
        next_assignment(&mut w2).await,
        Some(vec!["polls".to_owned(), "sims".to_owned()])
    );

    // Leaving: the assignment goes, the registry says so.
    topology.workers.delete("w1").await.unwrap();
    assert_eq!(next_assignment(&mut w1).await, None);
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT worker_id, event FROM worker_events ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let events: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected = [("w1", "joined"), ("w2", "joined"), ("w1", "left")]
        .map(|(w, e)| (w.to_owned(), e.to_owned()));
    assert_eq!(events, expected);
    let states: Vec<(String, String, Vec<String>)> = client
        .query("SELECT id, state, kinds FROM workers ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(states[0].1, "left");
    assert_eq!(
        states[1],
        (
            "w2".into(),
            "active".into(),
            vec!["sim".into(), "snmp.get".into()]
        )
    );

    shutdown.cancel();
    balancer.await.unwrap().unwrap();
}
