//! Admission by load: above `worker.mem_max` (sent with the assignment) the worker pulls
//! nothing and its heartbeat says why and where it read its load; when the limit is raised,
//! the waiting runs execute.

use std::time::Duration;

use chrono::Utc;
use faro_shared::domain::WorkerId;
use faro_shared::messages::{Assignment, Heartbeat, WorkerSettings, WorkerState};
use futures::StreamExt;

use crate::Harness;

async fn assign(h: &Harness, mem_max: u8) {
    let assignment = Assignment {
        worker_id: WorkerId::parse("w1").unwrap(),
        queues: vec![h.queue.clone()],
        settings: WorkerSettings {
            cpu_max: 100,
            mem_max,
            log_level: None,
        },
        updated_at: Utc::now(),
    };
    h.topology
        .assignments
        .put("w1", serde_json::to_vec(&assignment).unwrap().into())
        .await
        .unwrap();
}

/// Waits for the heartbeats of `w1` until one satisfies `done`; returns it.
async fn beat_until(h: &Harness, done: impl Fn(&Heartbeat) -> bool) -> Heartbeat {
    let mut watch = h.topology.workers.watch_with_history("w1").await.unwrap();
    let wait = async {
        while let Some(Ok(entry)) = watch.next().await {
            if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&entry.value) {
                if done(&beat) {
                    return beat;
                }
            }
        }
        panic!("the heartbeat watch ended");
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("no such heartbeat within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_memory_limit_a_worker_pulls_nothing_and_says_why() {
    let h = Harness::start().await;
    let (worker, shutdown) = h.worker("w1", 4, "10s").await;
    // Any machine, or cgroup with a memory limit, uses more than 0% of its memory (1%, the
    // setting's lowest, might not be reached in a container with a large limit).
    assign(&h, 0).await;
    let closed = beat_until(&h, |b| b.admission_closed.is_some()).await;
    let why = closed.admission_closed.clone().unwrap();
    assert!(
        why.starts_with("memory at") && why.contains("worker.mem_max 0%"),
        "{why}"
    );
    assert_eq!(closed.state, WorkerState::Busy);
    assert!(closed.mem_percent.is_some_and(|m| m > 0.0), "{closed:?}");
    // The beat says where its figures come from (which, depends on this machine).
    let raw = h.topology.workers.get("w1").await.unwrap().unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    for resource in ["cpu", "mem"] {
        let source = raw["load_source"][resource].as_str().unwrap_or_default();
        assert!(
            ["host", "cgroup_v2", "cgroup_v1"].contains(&source),
            "{raw}"
        );
    }

    h.publish_runs(5, 10).await;
    // Two more seconds of beats (the load is read every second, beats come every 50 ms):
    // still closed, and not one run executed (a pull open when admission closed gives its
    // runs back).
    let last = closed.sent_at;
    beat_until(&h, |b| {
        b.sent_at > last + chrono::Duration::seconds(2) && b.admission_closed.is_some()
    })
    .await;
    let mut results = h.js.get_stream(h.ns.results_stream()).await.unwrap();
    let stored = results.info().await.unwrap().state.messages;
    assert_eq!(stored, 0, "runs were executed while admission was closed");

    // Raised limit: admission opens and the runs execute.
    assign(&h, 100).await;
    let results = h.results(5, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 5);
    let open = beat_until(&h, |b| {
        b.admission_closed.is_none() && b.runs.get("succeeded") == Some(&5)
    })
    .await;
    assert_eq!(open.state, WorkerState::Idle);
    assert!(open.load_score <= 100);

    shutdown.cancel();
    worker.await.unwrap().unwrap();
}
