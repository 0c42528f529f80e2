//! A submission travels the whole path: dispatcher, JetStream, workers, PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::domain::JobId;
use faro_shared::messages::{DurationRange, OutcomeShares, SimParams};

const SEED: u64 = 20_261_122;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sim_runs_over_fifty_targets_each_end_once_as_predicted() {
    let system = System::start(Options::default()).await.unwrap();
    let jobs: Vec<_> = (0..1000)
        .map(|i| {
            serde_json::json!({
                "id": format!("job-{i}"),
                "queue": if i % 2 == 0 { "discovery" } else { "get" },
                "kind": "sim",
                "target": format!("olt-{}", i % 50),
                "priority": (i % 10) + 1,
                "params": {"duration_ms": [0, 5], "seed": SEED},
            })
        })
        .collect();
    // Two submissions; the first is sent twice and must not create runs twice.
    let first = serde_json::to_vec(&serde_json::json!({ "jobs": jobs[..600] })).unwrap();
    let second = serde_json::to_vec(&serde_json::json!({ "jobs": jobs[600..] })).unwrap();
    system.submit(first.clone(), "e2e-a").await.unwrap();
    system.submit(second, "e2e-b").await.unwrap();
    system.submit(first, "e2e-a").await.unwrap();
    system
        .wait_terminal(1000, Duration::from_secs(60))
        .await
        .unwrap();

    // What each run must have ended as, drawn the way any worker draws it.
    let params = SimParams {
        duration_ms: DurationRange { min: 0, max: 5 },
        outcomes: OutcomeShares::default(),
        seed: Some(SEED),
    };
    let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
    for i in 0..1000 {
        let job = JobId::parse(format!("job-{i}")).unwrap();
        let plan = faro_worker::sim::plan(&params, &job, 1, 0);
        *expected.entry(plan.outcome.as_str()).or_default() += 1;
    }

    let client = system.pool.get().await.unwrap();
    let rows = client
        .query("SELECT status, count(*) FROM runs GROUP BY status", &[])
        .await
        .unwrap();
    let actual: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: BTreeMap<String, i64> = expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(
        actual, expected,
        "outcome counts differ from the seeded draw"
    );
    // The seeds' shares, roughly: a broken draw would not land here.
    assert!((740..=860).contains(&actual["succeeded"]), "{actual:?}");

    // Every run exactly once, fully recorded, on one of the workers.
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT job_id), count(DISTINCT target),
                    count(*) FILTER (WHERE worker_id IN ('w0', 'w1') AND started_at IS NOT NULL
                                     AND finished_at >= started_at AND recorded_at IS NOT NULL
                                     AND simulated AND attempt = 1)
               FROM runs",
            &[],
        )
        .await
        .unwrap();
    let (runs, jobs, targets, complete): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((runs, jobs, targets, complete), (1000, 1000, 50, 1000));
    let failed_have_errors: i64 = client
        .query_one(
            "SELECT count(*) FROM runs WHERE status <> 'succeeded' AND error IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed_have_errors, 0);
    let submissions: i64 = client
        .query_one("SELECT count(*) FROM submissions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(submissions, 2);
    drop(client);
    system.stop().await.unwrap();
}
