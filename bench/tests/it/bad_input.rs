//! Bad input is refused with a clear error and stops nothing else.

use std::time::Duration;

use faro_bench::system::{Options, System};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_refused_and_good_work_goes_on() {
    let system = System::start(Options::default()).await.unwrap();
    let ns = &system.ns;

    // A submission whose second job is wrong: nothing of it may be applied.
    let bad = br#"{"jobs": [{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim", "priority": 0}]}"#;
    system.submit(bad.to_vec(), "bad-1").await.unwrap();
    system.submit(b"{not json".to_vec(), "bad-2").await.unwrap();
    // Garbage where runs and results travel.
    system
        .client
        .publish(format!("{ns}.jobs.q.t1"), "garbage".into())
        .await
        .unwrap();
    system
        .client
        .publish(format!("{ns}.results.q.t1"), "{\"run_id\": 5}".into())
        .await
        .unwrap();

    let good = br#"[{"queue": "q", "kind": "sim", "target": "t1", "params": {"duration_ms": 0}},
                    {"queue": "q", "kind": "sim", "target": "t2", "params": {"duration_ms": 0}}]"#;
    system.submit(good.to_vec(), "good").await.unwrap();
    system
        .wait_terminal(2, Duration::from_secs(30))
        .await
        .unwrap();

    let client = system.pool.get().await.unwrap();
    let runs: i64 = client
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 2, "a refused submission left runs behind");
    let submissions: Vec<String> = client
        .query("SELECT id FROM submissions", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(submissions, ["good"]);

    // The refusals are on the audit trail, naming job and field.
    let consumer = system
        .bus
        .read_stream(&ns.events_stream(), Some(ns.event_subject("dispatcher")))
        .await
        .unwrap();
    let mut events = consumer.fetch().max_messages(10).messages().await.unwrap();
    let mut rejected = Vec::new();
    while let Some(Ok(event)) = events.next().await {
        rejected.push(serde_json::from_slice::<serde_json::Value>(&event.payload).unwrap());
    }
    // Other events (a leader elected) share the subject.
    rejected.retain(|event| event["type"] != "leader_elected");
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let first = &rejected[0];
    assert_eq!(first["type"], "submission_rejected");
    assert_eq!(first["submission_id"], "bad-1");
    assert_eq!(first["error"]["job"], 1);
    assert_eq!(first["error"]["field"], "priority");
    assert!(rejected[1]["error"]["line"].is_number(), "{rejected:?}");

    drop(client);
    system.stop().await.unwrap();
}
