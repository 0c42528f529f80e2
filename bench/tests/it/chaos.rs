//! `faro-bench chaos` in short: the service binaries (built beside this test's
//! `faro-bench`: `scripts/test` builds them) under every fault once, with fewer runs and a
//! shorter PostgreSQL freeze. Nothing lost, nothing doubled, no target over its limit, no
//! recurring slot missed.

use std::time::Duration;

use faro_bench::chaos::{run, ChaosBench};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_every_fault_no_run_is_lost_or_doubled_and_no_target_goes_over_its_limit() {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_faro-bench"))
        .parent()
        .unwrap()
        .to_owned();
    let figures = run(&ChaosBench {
        runs: 1_200,
        targets: 30,
        recurring: 30,
        interval: Duration::from_secs(5),
        pg_pause: Duration::from_secs(15),
        settle: Duration::from_secs(3),
        capacity: 30,
        bin_dir,
        logs: None,
        drain_limit: Duration::from_secs(300),
    })
    .await
    .unwrap();
    assert!(figures.runs >= 1_200, "{figures:#?}");
    assert!(figures.executions > 0, "{figures:#?}");
    assert!(figures.clean(), "{figures:#?}");
}
