//! Retries through the whole system: failed attempts run again after their backoff, until
//! they succeed or their attempts run out, exactly as the seeded draw says.

use std::collections::BTreeMap;
use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::domain::{JobId, Outcome};
use faro_shared::messages::{DurationRange, OutcomeShares, SimParams};

const SEED: u64 = 77;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_until_success_or_exhaustion() {
    let system = System::start(Options {
        env: vec![
            ("FARO_RETRY_BASE_DELAY".into(), "20ms".into()),
            ("FARO_RETRY_MAX_DELAY".into(), "100ms".into()),
        ],
        ..Options::default()
    })
    .await
    .unwrap();
    let params = SimParams {
        duration_ms: DurationRange { min: 0, max: 2 },
        outcomes: OutcomeShares {
            succeeded: 0.5,
            failed: 0.5,
            interrupted: 0.0,
        },
        seed: Some(SEED),
    };
    let mut jobs: Vec<_> = (0..60)
        .map(|i| {
            serde_json::json!({"id": format!("r{i}"), "queue": "retry", "kind": "sim",
                               "target": format!("olt-{}", i % 5), "max_attempts": 4,
                               "params": params})
        })
        .collect();
    // Failures not listed in retry_on are final at once.
    jobs.push(
        serde_json::json!({"id": "no-retry", "queue": "retry", "kind": "sim",
        "max_attempts": 3, "retry_on": ["interrupted"],
        "params": {"duration_ms": 0, "outcomes": {"failed": 1}}}),
    );
    let body = serde_json::to_vec(&serde_json::json!({ "jobs": jobs })).unwrap();
    system.submit(body, "retries").await.unwrap();
    system
        .wait_terminal(61, Duration::from_secs(60))
        .await
        .unwrap();

    // Expected: the first attempt whose draw succeeds, or failed after attempt 4.
    let mut expected = BTreeMap::new();
    let mut retried_attempts = 0;
    for i in 0..60 {
        let job = JobId::parse(format!("r{i}")).unwrap();
        let success = (1..=4).find(|a| drawn_outcome(&params, &job, *a) == Outcome::Succeeded);
        let (status, attempt) = match success {
            Some(a) => ("succeeded", a),
            None => ("failed", 4),
        };
        retried_attempts += attempt - 1;
        expected.insert(job.to_string(), (status.to_owned(), attempt as i32));
    }
    expected.insert("no-retry".to_owned(), ("failed".to_owned(), 1));
    assert!(
        retried_attempts > 20,
        "the draw retried too little to test anything"
    );

    let client = system.pool.get().await.unwrap();
    let rows = client
        .query("SELECT job_id, status, attempt FROM runs", &[])
        .await
        .unwrap();
    let actual: BTreeMap<String, (String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(actual, expected);
    let history: i64 = client
        .query_one("SELECT count(*) FROM run_attempts WHERE NOT late", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, i64::from(retried_attempts));
    drop(client);
    system.stop().await.unwrap();
}

fn drawn_outcome(params: &SimParams, job: &JobId, attempt: u32) -> Outcome {
    faro_worker::sim::plan(params, job, attempt, 0).outcome
}
