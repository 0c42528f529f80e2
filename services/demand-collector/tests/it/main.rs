//! Demand-collector integration test: a queue's JetStream backlog becomes its snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faro_shared::messages::DemandSnapshot;
use faro_shared::pg;
use faro_shared::testing::{TestBus, TestDb};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_of_each_queue_is_published() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO queues (name, kinds) VALUES ('busy', '{sim}'), ('idle', '{sim}')",
        )
        .await
        .unwrap();
    let (ns, js) = (&bus.ns, &bus.js);
    for i in 0..7 {
        js.publish(format!("{ns}.jobs.busy.t{i}"), "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

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
