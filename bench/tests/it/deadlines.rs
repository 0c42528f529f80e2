//! Deadlines through the whole system: an attempt is stopped at its timeout by its worker and
//! recorded `timed_out` (and retried if asked), frees its target's slot at once, and never runs
//! on next to its retry.

use std::time::Duration;

use chrono::{DateTime, Utc};
use faro_bench::system::{Options, System};

/// An attempt still running at its deadline (its publication plus its timeout) is stopped
/// there by its worker and recorded `timed_out`, retried if asked; it frees its target's slot
/// at once, and it never goes on running next to its retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_deadline_times_out_and_frees_its_target() {
    let system = System::start(Options {
        env: vec![
            ("FARO_RUN_TIMEOUT_GRACE".into(), "2s".into()),
            ("FARO_TARGET_MAX_CONCURRENCY".into(), "1".into()),
            ("FARO_RETRY_BASE_DELAY".into(), "20ms".into()),
        ],
        ..Options::default()
    })
    .await
    .unwrap();
    let jobs = serde_json::json!({"jobs": [
        {"id": "hang", "queue": "poll", "kind": "sim", "target": "olt-1", "priority": 1,
         "timeout": "200ms", "max_attempts": 2, "retry_on": ["timed_out"],
         "params": {"duration_ms": 1500, "outcomes": {"succeeded": 1}}},
        {"id": "next", "queue": "poll", "kind": "sim", "target": "olt-1", "priority": 9,
         "params": {"duration_ms": 10, "outcomes": {"succeeded": 1}}}
    ]});
    system
        .submit(serde_json::to_vec(&jobs).unwrap(), "deadlines")
        .await
        .unwrap();
    system
        .wait_terminal(2, Duration::from_secs(30))
        .await
        .unwrap();

    let client = system.pool.get().await.unwrap();
    let hang = client
        .query_one(
            "SELECT status, attempt, worker_id, error, started_at, finished_at
               FROM runs WHERE job_id = 'hang'",
            &[],
        )
        .await
        .unwrap();
    let (status, attempt, worker, error): (String, i32, String, String) =
        (hang.get(0), hang.get(1), hang.get(2), hang.get(3));
    assert_eq!((status.as_str(), attempt), ("timed_out", 2));
    assert_ne!(
        worker, "dispatcher",
        "the worker stops it, long before the grace ends"
    );
    assert!(error.starts_with("stopped at its deadline"), "{error}");
    let (started, finished): (DateTime<Utc>, DateTime<Utc>) = (hang.get(4), hang.get(5));
    assert!(
        finished - started < chrono::Duration::milliseconds(1000),
        "ran {} of its 1500 ms past a 200 ms timeout",
        finished - started
    );
    let history: Vec<(i32, String, bool)> = client
        .query(
            "SELECT attempt, outcome, late FROM run_attempts ORDER BY recorded_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // Attempt 1 stopped at its deadline; no attempt went on to report later.
    assert_eq!(history, [(1, "timed_out".to_owned(), false)]);

    // The slot was freed at the timeout: `next` ran before `hang` could have ended.
    let next_finished: DateTime<Utc> = client
        .query_one("SELECT finished_at FROM runs WHERE job_id = 'next'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        next_finished < started + chrono::Duration::milliseconds(1500),
        "next waited for the hung run ({next_finished})"
    );
    drop(client);
    system.stop().await.unwrap();
}

/// Fast runs must not outrun their deadline bookkeeping: once every result is in, nothing is
/// still watched (an attempt left watched would time out later, long after it succeeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_deadline_outlives_its_result() {
    let system = System::start(Options::default()).await.unwrap();
    let jobs: Vec<_> = (0..300)
        .map(|i| {
            serde_json::json!({"queue": "q", "kind": "sim", "target": format!("olt-{}", i % 30),
                               "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}}})
        })
        .collect();
    system
        .submit(serde_json::to_vec(&jobs).unwrap(), "fast")
        .await
        .unwrap();
    system
        .wait_terminal(300, Duration::from_secs(30))
        .await
        .unwrap();
    system
        .wait_metric("faro_dispatcher_runs_watched 0", Duration::from_secs(10))
        .await
        .unwrap();
    system.stop().await.unwrap();
}
