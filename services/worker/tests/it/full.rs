//! A results stream at its limit (no dispatcher has taken results for a while).

use std::time::Duration;

use faro_shared::messages::journal::{self, Event};
use faro_shared::nats::StoreLimits;
use faro_shared::testing::TEST_JETSTREAM_MAX_BYTES;

use crate::Harness;

/// A result the full results stream refuses is kept, its run held, and stored once the
/// stream has room again: the run is executed once, never given back to run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_refused_by_a_full_results_stream_is_kept_and_stored_once_there_is_room() {
    let h = Harness::start().await;
    let filler = format!("{}.results.filler", h.ns.as_str());
    h.bus
        .fill(
            &filler,
            900 * 1024,
            StoreLimits::of(TEST_JETSTREAM_MAX_BYTES).results,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal_path = dir.path().join("w1.jsonl");
    let mut env = h.worker_env("w1", 1, "10s").await;
    env.set("FARO_WORKER_JOURNAL", journal_path.display().to_string());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(faro_worker::run(
        faro_worker::Config::from_env(&env).unwrap(),
        shutdown.clone(),
    ));
    let run = h.sim_run(0, 0);
    h.publish(&run).await;

    // Executed: its result refused, as the stream is full.
    let executions = || {
        journal::parse(&std::fs::read_to_string(&journal_path).unwrap_or_default())
            .into_iter()
            .filter(|line| line.run_id == run.run_id && line.event == Event::Start)
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !journal::parse(&std::fs::read_to_string(&journal_path).unwrap_or_default())
        .iter()
        .any(|line| line.run_id == run.run_id && line.event == Event::End)
    {
        assert!(tokio::time::Instant::now() < deadline, "the run never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The dispatcher takes what the stream holds: room again.
    h.js.get_stream(h.ns.results_stream())
        .await
        .unwrap()
        .purge()
        .filter(&filler)
        .await
        .unwrap();
    let results = h.results(1, Duration::from_secs(30)).await;
    assert_eq!(results[0].run_id, run.run_id);
    assert_eq!(executions(), 1, "the run was given back and executed again");
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(executions(), 1);
}
