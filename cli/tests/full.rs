//! A JetStream store whose streams are full: with no dispatcher taking them, submissions,
//! runs and results pile up to their streams' limits. A submission is then refused with an
//! error that says so, and the leader lease and the heartbeats still renew: every stream has
//! its limit, reserved in the store, and the buckets theirs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use faro_shared::lease::Lease;
use faro_shared::nats::StoreLimits;
use faro_shared::testing::{TestBus, TEST_JETSTREAM_MAX_BYTES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_submissions_by_name_and_the_leases_still_renew() {
    let bus = TestBus::start().await.unwrap();
    let limits = StoreLimits::of(TEST_JETSTREAM_MAX_BYTES);
    let size = 900 * 1024;
    let ns = &bus.ns;
    let submissions = bus
        .fill(&ns.submit_subject(), size, limits.submit)
        .await
        .unwrap();
    let runs = bus
        .fill(&format!("{}.jobs.q.olt-1", ns.as_str()), size, limits.jobs)
        .await
        .unwrap();
    let results = bus
        .fill(&format!("{}.results.q", ns.as_str()), size, limits.results)
        .await
        .unwrap();
    // Each stream took what its limit holds (less the messages' own overhead).
    for (stored, limit) in [
        (submissions, limits.submit),
        (runs, limits.jobs),
        (results, limits.results),
    ] {
        assert!(stored > limit / 10 * 9, "{stored} bytes stored of {limit}");
    }

    // A submission now is refused, and the submitter told why and what to do.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.json");
    std::fs::write(&file, br#"{"jobs": [{"queue": "q", "kind": "sim"}]}"#).unwrap();
    let env = bus.env(None);
    let mut command = Command::new(env!("CARGO_BIN_EXE_faro"));
    command
        .arg("submit")
        .arg(&file)
        .env_clear()
        .envs(env.faro_vars());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("the submissions stream is full")
            && stderr.contains("submit the file again later"),
        "{stderr}"
    );

    // The leader lease is taken and renewed; a worker's heartbeat is written.
    let leases = &bus.topology.leases;
    let mut lease = Lease::try_acquire(
        &bus.js,
        leases,
        &ns.leases_bucket(),
        "dispatcher-leader",
        "d1",
        Duration::from_secs(5),
    )
    .await
    .unwrap()
    .expect("a free lease");
    for _ in 0..3 {
        assert!(lease.renew().await.unwrap());
    }
    bus.topology.workers.put("w1", "{}".into()).await.unwrap();
}
