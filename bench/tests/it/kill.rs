//! A worker killed with SIGKILL in the middle of long runs: JetStream redelivers what it held
//! once its in-progress acks stop, another worker executes those runs, each is recorded
//! exactly once, and the registry marks the killed worker unstable, then lost, as its beats
//! stop.

use std::time::Duration;

use faro_bench::system::{Options, System, WorkerProcess};
use futures::StreamExt;

fn spawn_worker(system: &System, id: &str) -> WorkerProcess {
    let mut env = system.env.clone();
    env.set("FARO_WORKER_ID", id)
        .set("FARO_WORKER_CAPACITY", "3")
        .set("FARO_HTTP_ADDR", "127.0.0.1:0");
    WorkerProcess::worker(std::path::Path::new(env!("CARGO_BIN_EXE_faro-bench")), &env).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_a_killed_worker_run_again_elsewhere_and_are_recorded_once() {
    let system = System::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut doomed = spawn_worker(&system, "w-doomed");
    let _survivor = spawn_worker(&system, "w-survivor");

    // Six runs of 4 s, three slots per worker: each worker holds some when the kill comes.
    let sim = serde_json::json!({"duration_ms": 4000, "outcomes": {"succeeded": 1}});
    let jobs: Vec<_> = (0..6)
        .map(|i| {
            serde_json::json!({"id": format!("long-{i}"), "queue": "long", "kind": "sim",
                               "timeout": "2m", "params": sim})
        })
        .collect();
    system.submit_jobs(&jobs, "long").await.unwrap();
    // Kill when the doomed worker is executing (its heartbeat says so).
    let bucket = system
        .js
        .get_key_value(system.ns.workers_bucket())
        .await
        .unwrap();
    let mut beats = bucket.watch_with_history("w-doomed").await.unwrap();
    let executing = async {
        while let Some(Ok(entry)) = beats.next().await {
            let beat = serde_json::from_slice::<faro_shared::messages::Heartbeat>(&entry.value);
            if beat.is_ok_and(|b| b.in_progress > 0) {
                return;
            }
        }
        panic!("the heartbeat watch ended");
    };
    tokio::time::timeout(Duration::from_secs(30), executing)
        .await
        .expect("w-doomed never took a run");
    doomed.kill().unwrap(); // SIGKILL: no shutdown, no nak, no key deleted

    system
        .wait_terminal(6, Duration::from_secs(120))
        .await
        .unwrap();
    let ended: Vec<(String, String)> = system
        .pairs("SELECT job_id, status || ' by ' || worker_id FROM runs ORDER BY job_id")
        .await
        .unwrap();
    assert_eq!(ended.len(), 6, "{ended:?}");
    for (job, outcome) in &ended {
        assert_eq!(outcome, "succeeded by w-survivor", "{job}: {ended:?}");
    }
    // Each run recorded once: one accepted attempt, nothing late.
    let late: i64 = system
        .one("SELECT count(*) FROM run_attempts WHERE late")
        .await
        .unwrap_or(0);
    assert_eq!(late, 0);

    // The killed worker missed its beats: unstable, then lost (never `left`: it said nothing).
    system
        .wait_count(
            "SELECT count(*) FROM workers WHERE id = 'w-doomed' AND state = 'lost'",
            1,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let events: Vec<(String, String)> = system
        .pairs(
            "SELECT event, worker_id FROM worker_events WHERE worker_id = 'w-doomed' ORDER BY id",
        )
        .await
        .unwrap();
    let events: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    // (A loaded machine may delay a beat before the kill: an unstable-recovered pair more.)
    assert!(
        events.first() == Some(&"joined") && events.ends_with(&["unstable", "lost"]),
        "{events:?}"
    );
    system.stop().await.unwrap();
}

/// `faro-bench failover` in short: the only worker of a queue killed while its pool cools;
/// its runs start on the replacement within 10 s, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_of_a_queues_only_worker_start_elsewhere_within_ten_seconds_of_its_death() {
    let figures = faro_bench::failover::run(&faro_bench::failover::FailoverBench {
        rounds: 1,
        runs: 4,
        run_secs: 15,
        exe: std::path::PathBuf::from(env!("CARGO_BIN_EXE_faro-bench")),
    })
    .await
    .unwrap();
    assert_eq!(figures.failovers.len(), 4, "{figures:?}");
    for secs in &figures.failovers {
        assert!(
            *secs < 10.0,
            "a run started again {secs} s after the kill: {figures:?}"
        );
    }
    assert_eq!(figures.doubled, 0, "{figures:?}");
}
