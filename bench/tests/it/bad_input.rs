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
        .query("SELECT id FROM submissions WHERE rejected IS NULL", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(submissions, ["good"]);
    // The refused ones are recorded with why, so asking about them says so.
    let progress = system
        .ask(
            "submission",
            &serde_json::json!({"submission_ids": ["bad-1", "bad-2", "good"]}),
        )
        .await
        .unwrap();
    assert_eq!(progress["recorded"], 3, "{progress}");
    assert!(
        progress["rejected"]["bad-1"]
            .as_str()
            .is_some_and(|why| why.contains("priority")),
        "{progress}"
    );
    assert!(progress["rejected"]["good"].is_null(), "{progress}");

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

/// What PostgreSQL refuses (here a timestamp before 4713 BC, which JSON and chrono accept) is
/// recorded as what it is, once, and the rest of its batch is recorded: a result becomes its
/// attempt failed with `result unreadable: <reason>`; a values chunk is set aside in the
/// dead-letter stream with its reason; a submission is refused with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_postgresql_refuses_is_recorded_as_what_it_is_and_stalls_nothing() {
    let system = System::start(Options::default()).await.unwrap();
    let ns = &system.ns;
    let run = slow_run(&system).await;
    let ancient = "-5000-01-01T00:00:00Z";
    let chunk = serde_json::json!({"run_id": run, "attempt": 1, "job_id": "slow", "queue": "q",
        "target": "t9", "seq": 0, "polled_at": ancient,
        "values": [["1.3.6.1.2.1.1.5.0", {"type": "string", "value": "olt-9"}]]});
    let result = serde_json::json!({"run_id": run, "attempt": 1, "job_id": "slow", "queue": "q",
        "target": "t9", "worker_id": "forged", "outcome": "succeeded", "simulated": true,
        "started_at": ancient, "finished_at": ancient});
    // Good work around the poison, in the same batches where timing allows.
    let good: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            serde_json::json!({"queue": "q", "kind": "sim", "target": format!("t{}", i % 4),
            "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}}})
        })
        .collect();
    system.submit_jobs(&good, "good").await.unwrap();
    for (subject, body) in [
        (format!("{ns}.values.q.t9"), &chunk),
        (format!("{ns}.results.q.t9"), &result),
    ] {
        system
            .js
            .publish(subject, serde_json::to_vec(body).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let refused = serde_json::to_vec(&serde_json::json!({"submitted_at": ancient,
        "jobs": [{"queue": "q", "kind": "sim", "params": {"duration_ms": 0}}]}))
    .unwrap();
    system.submit(refused, "ancient").await.unwrap();

    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id <> 'slow' AND status = 'succeeded'",
            20,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'slow' AND status = 'failed'",
            1,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let (status, error): (String, String) = system
        .pairs("SELECT status, error FROM runs WHERE job_id = 'slow'")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(status, "failed");
    assert!(
        error.starts_with("result unreadable: ") && error.contains("SQLSTATE 22008"),
        "{error}"
    );
    system
        .wait_count(
            "SELECT count(*) FROM submissions WHERE id = 'ancient' AND rejected LIKE 'PostgreSQL cannot hold it: %'",
            1,
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    // The chunk is in the dead-letter stream with where it came from and why.
    let dead = faro_shared::messages::dead::read_last(&system.js, ns, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source, "values");
    assert_eq!(dead[0].subject, format!("{ns}.values.q.t9"));
    assert!(dead[0].reason.contains("SQLSTATE 22008"), "{dead:?}");
    assert!(dead[0].payload.contains(ancient), "{dead:?}");

    // Nothing waits to be delivered again: the results and submit streams empty out.
    for stream in [ns.results_stream(), ns.submit_stream()] {
        let mut stream = system.js.get_stream(&stream).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = stream.info().await.unwrap().state.messages;
            if left == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{left} messages stay in {}",
                stream.cached_info().config.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    system.stop().await.unwrap();
}

/// A result PostgreSQL refuses that arrives alone in its batch is recorded as unreadable at
/// once, like one refused with others: not taken for a passing failure and retried for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_result_alone_in_its_batch_is_recorded_unreadable_at_once() {
    let system = System::start(Options::default()).await.unwrap();
    let run = slow_run(&system).await;
    let ancient = "-5000-01-01T00:00:00Z";
    let result = serde_json::json!({"run_id": run, "attempt": 1, "job_id": "slow", "queue": "q",
        "target": "t9", "worker_id": "forged", "outcome": "succeeded", "simulated": true,
        "started_at": ancient, "finished_at": ancient});
    system
        .js
        .publish(
            format!("{}.results.q.t9", system.ns),
            serde_json::to_vec(&result).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Well before the real execution ends (20 s) and reports it.
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'slow' AND status = 'failed'
                AND error LIKE 'result unreadable: %'",
            1,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    system.stop().await.unwrap();
}

/// Submits job `slow` on target t9: one run that executes 20 s, long enough for a forged
/// result of its attempt to arrive first. Returns its run id once it is dispatched.
async fn slow_run(system: &System) -> uuid::Uuid {
    let slow = serde_json::json!({"id": "slow", "queue": "q", "kind": "sim", "target": "t9",
        "max_attempts": 1, "params": {"duration_ms": 20000, "outcomes": {"succeeded": 1}}});
    system.submit_jobs(&[slow], "slow").await.unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'slow' AND status = 'dispatched'",
            1,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    system
        .one("SELECT id FROM runs WHERE job_id = 'slow'")
        .await
        .unwrap()
}
