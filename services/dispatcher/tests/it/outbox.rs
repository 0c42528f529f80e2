//! Runs recorded before a crash but never published go out when the dispatcher starts.

use std::time::Duration;

use faro_dispatcher::plan::plan_submission;
use faro_dispatcher::store;
use faro_shared::messages::RunMessage;
use faro_shared::testing::{TestBus, TestDb};
use faro_shared::{jobfile, pg};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_outbox_is_published_at_start() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let ns = &bus.ns;
    let pool = pg::pool(&db.config()).unwrap();

    // The state a crash between commit and publish leaves behind.
    let submission = jobfile::parse(
        br#"[{"queue": "q", "kind": "sim", "target": "a"}, {"queue": "q", "kind": "sim", "target": "b"},
             {"queue": "r", "kind": "sim"}]"#,
    )
    .unwrap();
    let runs = plan_submission(&submission);
    store::record_submission(&pool, "crashed", None, None, &runs)
        .await
        .unwrap();

    let env = bus.env(Some(&db));
    let shutdown = CancellationToken::new();
    let config = faro_dispatcher::Config::from_env(&env).unwrap();
    let dispatcher = tokio::spawn(faro_dispatcher::run(config, shutdown.clone()));

    // Every run arrives on its queue's subject, once.
    let mut messages = bus.read_queues(&["q", "r"]).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .expect("outbox runs were not published")
            .unwrap()
            .unwrap();
        let run: RunMessage = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(message.subject.as_str(), run.subject(ns));
        seen.push(run.run_id);
        message.ack().await.unwrap();
    }
    let mut expected: Vec<_> = runs.iter().map(|r| r.message.run_id).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);

    // The outbox empties once JetStream has them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !store::unpublished_runs(&pool, None, 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "outbox not cleared");
        tokio::task::yield_now().await;
    }
    shutdown.cancel();
    dispatcher.await.unwrap().unwrap();
}

/// A restart keeps the per-target limit: runs already in flight hold their slots, waiting runs
/// stay waiting, and a result frees a slot for exactly one of them.
#[tokio::test]
async fn slots_in_flight_before_a_restart_still_count() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let ns = &bus.ns;
    let pool = pg::pool(&db.config()).unwrap();
    let jobs: Vec<_> = (0..5)
        .map(|i| serde_json::json!({"id": format!("j{i}"), "queue": "q", "kind": "sim", "target": "olt"}))
        .collect();
    let submission = jobfile::parse(&serde_json::to_vec(&jobs).unwrap()).unwrap();
    let runs = plan_submission(&submission);
    store::record_submission(&pool, "before", None, None, &runs)
        .await
        .unwrap();
    // Two were published before the restart: stored in their queue's stream, they are in
    // flight.
    let in_flight = [runs[0].message.clone(), runs[1].message.clone()];
    store::mark_published(
        &pool,
        &in_flight.iter().map(|r| (r.run_id, 1)).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    for run in &in_flight {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, run.msg_id().as_str());
        bus.js
            .publish_with_headers(
                run.subject(ns),
                headers,
                serde_json::to_vec(run).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut env = bus.env(Some(&db));
    env.set("FARO_TARGET_MAX_CONCURRENCY", "2");
    let shutdown = CancellationToken::new();
    let config = faro_dispatcher::Config::from_env(&env).unwrap();
    let dispatcher = tokio::spawn(faro_dispatcher::run(config, shutdown.clone()));

    let mut messages = bus.read_queues(&["q"]).await.unwrap();
    // A worker holds the two (delivered, not acknowledged).
    for run in &in_flight {
        let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .expect("the runs in flight are not in their stream")
            .unwrap()
            .unwrap();
        let held: RunMessage = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(held.run_id, run.run_id);
    }
    // The target is full: nothing is published until a result frees a slot.
    let result = faro_shared::messages::RunResult {
        run_id: in_flight[0].run_id,
        attempt: 1,
        job_id: in_flight[0].job_id.clone(),
        queue: in_flight[0].queue.clone(),
        target: in_flight[0].target.clone(),
        worker_id: faro_shared::domain::WorkerId::parse("w").unwrap(),
        outcome: faro_shared::domain::Outcome::Succeeded,
        simulated: true,
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        output: None,
        error: None,
    };
    bus.js
        .publish(
            result.subject(ns),
            serde_json::to_vec(&result).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
        .await
        .expect("the freed slot was not used")
        .unwrap()
        .unwrap();
    let run: RunMessage = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        run.run_id, runs[2].message.run_id,
        "the oldest waiting run goes first"
    );
    // Exactly one: the target is full again.
    let more = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(more.is_err(), "a second run was published past the limit");
    let waiting = store::unpublished_runs(&pool, None, 10).await.unwrap();
    assert_eq!(waiting.len(), 2);

    shutdown.cancel();
    dispatcher.await.unwrap().unwrap();
}

/// A leader killed after recording an end it decided itself (here a timeout), before putting
/// it on the outcome feed: the run waits in the outcome outbox, and the next leader publishes
/// it. A worker's own result is not put there (its redelivery publishes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_the_leader_recorded_and_did_not_publish_reaches_the_feed() {
    use faro_shared::domain::{Outcome, WorkerId};
    use faro_shared::messages::{RunOutcome, RunResult};
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let submission = jobfile::parse(
        br#"[{"queue": "q", "kind": "sim", "target": "a", "max_attempts": 1},
             {"queue": "q", "kind": "sim", "target": "b"}]"#,
    )
    .unwrap();
    let runs = plan_submission(&submission);
    store::record_submission(&pool, "killed", None, None, &runs)
        .await
        .unwrap();
    let result = |run: &RunMessage, worker: &str, outcome| RunResult {
        run_id: run.run_id,
        attempt: 1,
        job_id: run.job_id.clone(),
        queue: run.queue.clone(),
        target: run.target.clone(),
        worker_id: WorkerId::parse(worker).unwrap(),
        outcome,
        simulated: false,
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        output: None,
        error: Some("no result within the timeout".to_owned()),
    };
    let (timed_out, by_worker) = (&runs[0].message, &runs[1].message);
    let recording = store::record_results(
        &pool,
        &[
            result(timed_out, "dispatcher", Outcome::TimedOut),
            result(by_worker, "w1", Outcome::Failed),
        ],
        &faro_dispatcher::retry::RetryPolicy::default(),
        || 0.0,
        &faro_dispatcher::chains::Chains::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        recording.outboxed,
        [timed_out.run_id],
        "only the leader's own end"
    );

    // The next leader.
    let env = bus.env(Some(&db));
    let shutdown = CancellationToken::new();
    let config = faro_dispatcher::Config::from_env(&env).unwrap();
    let dispatcher = tokio::spawn(faro_dispatcher::run(config, shutdown.clone()));
    let mut feed = bus
        .read_stream(&bus.ns.outcomes_stream(), None)
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), feed.next())
        .await
        .expect("the recorded timeout never reached the feed")
        .unwrap()
        .unwrap();
    let outcome: RunOutcome = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (outcome.run_id, outcome.status.as_str()),
        (timed_out.run_id, "timed_out")
    );
    // Published once: the outbox is empty.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM outcome_outbox", &[])
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} left in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    dispatcher.await.unwrap().unwrap();
}
