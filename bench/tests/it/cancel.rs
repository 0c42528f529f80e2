//! `faro cancel` through the whole system: a waiting run is cancelled at once, a running one
//! through its worker, a queued one before any worker takes it; the status says which, and a
//! result that comes after a cancel changes nothing.

use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::messages::{CancelReply, CancelRequest, CancelState};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(15);

async fn cancel(system: &System, run_id: Uuid) -> serde_json::Value {
    let reply = system
        .client
        .request(
            system.ns.api_subject("dispatcher", "cancel"),
            serde_json::to_vec(&CancelRequest { run_id })
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

async fn cancelled(system: &System, run_id: Uuid) -> CancelReply {
    serde_json::from_value(cancel(system, run_id).await).unwrap()
}

/// The id of the run at `seq` in submission `id`.
async fn run_at(system: &System, id: &str, seq: i32) -> Uuid {
    system
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT id FROM runs WHERE submission_id = $1 AND seq = $2",
            &[&id, &seq],
        )
        .await
        .unwrap()
        .get(0)
}

async fn status(system: &System, run_id: Uuid) -> (String, Option<String>) {
    let row = system
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT status, error FROM runs WHERE id = $1", &[&run_id])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn long_runs(count: usize) -> Vec<serde_json::Value> {
    (0..count)
        .map(|_| {
            serde_json::json!({"queue": "poll", "kind": "sim", "target": "olt-1",
                "params": {"duration_ms": 60_000, "outcomes": {"succeeded": 1}}})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_and_running_runs_are_cancelled_and_the_status_says_which() {
    let system = System::start(Options {
        env: vec![("FARO_TARGET_MAX_CONCURRENCY".into(), "1".into())],
        ..Options::default()
    })
    .await
    .unwrap();
    system.submit_jobs(&long_runs(3), "long").await.unwrap();
    system
        .wait_count("SELECT count(*) FROM runs", 3, LIMIT)
        .await
        .unwrap();
    system
        .wait_metric("faro_worker_runs_in_progress 1", LIMIT)
        .await
        .unwrap();
    let (first, second, third) = (
        run_at(&system, "long", 0).await,
        run_at(&system, "long", 1).await,
        run_at(&system, "long", 2).await,
    );

    // The second waits for the target's only slot: cancelled at once.
    let reply = cancelled(&system, second).await;
    assert_eq!(reply.state, CancelState::Waiting);
    assert_eq!(status(&system, second).await.0, "cancelled");

    // The first runs: its worker stops it long before its 60 s are over.
    let reply = cancelled(&system, first).await;
    assert_eq!(reply.state, CancelState::Running, "{reply:?}");
    assert!(reply.worker_id.is_some());
    system
        .wait_count(
            &format!("SELECT count(*) FROM runs WHERE id = '{first}' AND status = 'cancelled'"),
            1,
            LIMIT,
        )
        .await
        .unwrap();
    let (_, error) = status(&system, first).await;
    assert!(error.unwrap_or_default().contains("while it ran"));

    // Its slot went to the third, skipping the cancelled second.
    system
        .wait_metric("faro_worker_runs_in_progress 1", LIMIT)
        .await
        .unwrap();
    assert_eq!(cancelled(&system, third).await.state, CancelState::Running);
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE status = 'cancelled'",
            3,
            LIMIT,
        )
        .await
        .unwrap();

    // Already ended: nothing changes; unknown: a clear error.
    let again = cancelled(&system, first).await;
    assert_eq!(again.state, CancelState::Ended);
    assert_eq!(again.status, "cancelled");
    let unknown = cancel(&system, Uuid::new_v4()).await;
    assert!(
        unknown["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no run"),
        "{unknown}"
    );
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_is_cancelled_and_a_worker_that_takes_it_later_does_not_execute_it() {
    let mut system = System::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await
    .unwrap();
    let job = serde_json::json!({"queue": "poll", "kind": "sim", "target": "olt-1",
        "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}}});
    system.submit_jobs(&[job], "queued").await.unwrap();
    // Published (out of the outbox), with no worker to take it.
    system
        .wait_count(
            "SELECT count(*) FROM runs r WHERE NOT EXISTS
               (SELECT 1 FROM run_outbox o WHERE o.run_id = r.id)",
            1,
            LIMIT,
        )
        .await
        .unwrap();
    let run = run_at(&system, "queued", 0).await;
    assert_eq!(cancelled(&system, run).await.state, CancelState::Queued);
    assert_eq!(status(&system, run).await.0, "cancelled");

    // A worker that never heard of the cancel takes the message: stored before it connected,
    // it is checked against the target's slots (freed by the cancel) and acknowledged without
    // an execution. (A late result would change nothing either: see the store's tests.)
    let mut env = system.env.clone();
    env.set("FARO_WORKER_ID", "late");
    system.spawn_worker(&env).unwrap();
    let queue = faro_shared::domain::QueueName::parse("poll").unwrap();
    let mut consumer = faro_shared::nats::ensure_queue_consumer(&system.js, &system.ns, &queue)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let info = consumer.info().await.unwrap();
        if info.delivered.stream_sequence >= 1 && (info.num_pending, info.num_ack_pending) == (0, 0)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts: i64 = system
        .one(&format!(
            "SELECT count(*) FROM run_attempts WHERE run_id = '{run}'"
        ))
        .await
        .unwrap();
    assert_eq!(attempts, 0, "the cancelled run was executed");
    assert_eq!(status(&system, run).await.0, "cancelled");
    system.stop().await.unwrap();
}
