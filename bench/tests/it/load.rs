//! Admission by load, end to end: `faro config set worker.mem_max` reaches every worker
//! through the balancer's assignments, without a restart.

use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::messages::Heartbeat;
use faro_shared::settings::ConfigRequest;
use futures::StreamExt;

async fn set(system: &System, key: &str, value: &str) {
    let request = ConfigRequest {
        key: Some(key.to_owned()),
        value: Some(value.to_owned()),
    };
    system.ask("config", &request).await.unwrap();
}

/// Waits until every worker's heartbeat satisfies `done`.
async fn all_beats(system: &System, workers: usize, done: impl Fn(&Heartbeat) -> bool) {
    let bucket = system
        .js
        .get_key_value(system.ns.workers_bucket())
        .await
        .unwrap();
    let mut watch = bucket.watch_all().await.unwrap();
    let mut satisfied = std::collections::BTreeSet::new();
    let wait = async {
        while let Some(Ok(entry)) = watch.next().await {
            if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&entry.value) {
                if done(&beat) {
                    satisfied.insert(beat.worker_id.to_string());
                } else {
                    satisfied.remove(beat.worker_id.as_str());
                }
                if satisfied.len() == workers {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the workers' heartbeats never said so");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_set_with_faro_config_holds_every_worker_until_raised() {
    let system = System::start(Options::default()).await.unwrap();
    set(&system, "worker.mem_max", "1").await;
    all_beats(&system, 2, |b| {
        b.admission_closed
            .as_deref()
            .is_some_and(|why| why.contains("worker.mem_max 1%"))
    })
    .await;
    let sim = serde_json::json!({"duration_ms": 0, "outcomes": {"succeeded": 1}});
    let jobs: Vec<_> = (0..6)
        .map(|_| serde_json::json!({"queue": "held", "kind": "sim", "params": sim}))
        .collect();
    system.submit_jobs(&jobs, "held").await.unwrap();
    // Two more seconds of beats, every worker still closed: nothing ran.
    let since = chrono::Utc::now() + chrono::Duration::seconds(2);
    all_beats(&system, 2, |b| {
        b.sent_at > since && b.admission_closed.is_some()
    })
    .await;
    assert_eq!(system.count_terminal().await.unwrap(), 0);

    set(&system, "worker.mem_max", "100").await;
    system
        .wait_terminal(6, Duration::from_secs(30))
        .await
        .unwrap();
    all_beats(&system, 2, |b| b.admission_closed.is_none()).await;
    system.stop().await.unwrap();
}
