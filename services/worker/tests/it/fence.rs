//! Fenced execution: a worker frozen past its hold on a run lets it go without a result, and
//! the run is executed and reported by the worker JetStream gave it to.

use std::time::Duration;

use faro_shared::messages::journal::{self, Event};
use faro_shared::testing::send_signal;

use crate::Harness;

/// A worker process, killed when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_lets_its_run_go_and_never_reports_it_next_to_the_worker_that_took_it() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let frozen_journal = dir.path().join("frozen.jsonl");
    let mut env = h.worker_env("w-frozen", 1, "1s").await;
    env.set("FARO_WORKER_JOURNAL", frozen_journal.display().to_string());
    let frozen = Process(
        std::process::Command::new(env!("CARGO_BIN_EXE_faro-worker"))
            .env_clear()
            .envs(env.faro_vars())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // One run of 8 s: longer than a hold without confirmations (4 s), so the worker that
    // takes it over must keep its own hold alive with confirmed in-progress acks.
    let run = h.sim_run(0, 8_000);
    h.publish(&run).await;
    h.wait_in_progress("w-frozen", 1, Duration::from_secs(30))
        .await;
    send_signal(frozen.0.id(), "-STOP").unwrap();

    // JetStream gives the run to the other worker once the frozen one's hold is over.
    let other_journal = dir.path().join("other.jsonl");
    let mut env = h.worker_env("w-other", 1, "1s").await;
    env.set("FARO_WORKER_JOURNAL", other_journal.display().to_string());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let other = tokio::spawn(faro_worker::run(
        faro_worker::Config::from_env(&env).unwrap(),
        shutdown.clone(),
    ));
    h.wait_in_progress("w-other", 1, Duration::from_secs(30))
        .await;
    // The frozen worker comes back while the other executes: without a fence, its run (2 s
    // left of 8) would end first and report the attempt as its own.
    send_signal(frozen.0.id(), "-CONT").unwrap();

    let results = h.results(1, Duration::from_secs(30)).await;
    assert_eq!(results[0].worker_id.as_str(), "w-other", "{results:?}");
    assert_eq!(results[0].run_id, run.run_id);

    // Each worker's own record: the frozen one ended (abandoned) when its hold ended, before
    // the other started; the other executed the whole run once.
    let frozen_lines = journal::parse(&std::fs::read_to_string(&frozen_journal).unwrap());
    let other_lines = journal::parse(&std::fs::read_to_string(&other_journal).unwrap());
    assert_eq!(frozen_lines.len(), 2, "{frozen_lines:?}");
    let (start, end) = (&frozen_lines[0], &frozen_lines[1]);
    assert_eq!((start.event, end.event), (Event::Start, Event::End));
    assert!(end.abandoned.is_some(), "{end:?}");
    assert_eq!(end.outcome, Some(faro_shared::domain::Outcome::Interrupted));
    let other_start = other_lines
        .iter()
        .find(|e| e.event == Event::Start)
        .expect("the other worker journaled its start");
    assert_eq!(other_start.delivery, 2);
    assert!(
        end.at <= other_start.at,
        "the frozen worker's execution ({} to {}) overlaps the other's start ({})",
        start.at,
        end.at,
        other_start.at
    );
    assert!(other_lines
        .iter()
        .any(|e| e.event == Event::End && e.abandoned.is_none()));

    shutdown.cancel();
    other.await.unwrap().unwrap();
    drop(frozen);
}
