//! `faro explain` through the whole system: a waiting run names the target and the runs that
//! hold its slots, a chained run skipped by its parent's failure says so, a job shows its
//! chain and its last success and failure.

use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::messages::{ExplainReply, ExplainRequest};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(15);

async fn explain(system: &System, request: ExplainRequest) -> Vec<String> {
    let reply = system.ask("explain", &request).await.unwrap();
    let lines: ExplainReply =
        serde_json::from_value(reply.clone()).unwrap_or_else(|_| panic!("{reply}"));
    lines.lines
}

async fn one_id(system: &System, sql: &str) -> Uuid {
    system.one(sql).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_why_a_run_waits_and_what_a_chain_did() {
    let system = System::start(Options {
        env: vec![("FARO_TARGET_MAX_CONCURRENCY".into(), "1".into())],
        ..Options::default()
    })
    .await
    .unwrap();
    let jobs = [
        serde_json::json!({"id": "disc", "queue": "poll", "kind": "sim", "target": "olt-2",
            "params": {"duration_ms": 0, "outcomes": {"failed": 1}}}),
        serde_json::json!({"id": "desc", "after": "disc", "queue": "poll", "kind": "sim",
            "target": "olt-2", "params": {"duration_ms": 0}}),
        serde_json::json!({"id": "long-1", "queue": "poll", "kind": "sim", "target": "olt-1",
            "params": {"duration_ms": 30_000, "outcomes": {"succeeded": 1}}}),
        serde_json::json!({"id": "long-2", "queue": "poll", "kind": "sim", "target": "olt-1",
            "params": {"duration_ms": 30_000, "outcomes": {"succeeded": 1}}}),
    ];
    system.submit_jobs(&jobs, "explain").await.unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'desc' AND status = 'skipped'",
            1,
            LIMIT,
        )
        .await
        .unwrap();
    system
        .wait_metric("faro_worker_runs_in_progress 1", LIMIT)
        .await
        .unwrap();

    let first = one_id(&system, "SELECT id FROM runs WHERE job_id = 'long-1'").await;
    let second = one_id(&system, "SELECT id FROM runs WHERE job_id = 'long-2'").await;
    let lines = explain(&system, ExplainRequest::Run(second)).await;
    let why = lines.last().unwrap();
    assert!(
        why.contains("waiting for a slot of target olt-1 (limit 1)")
            && why.contains(&first.to_string()),
        "{lines:#?}"
    );
    let lines = explain(&system, ExplainRequest::Run(first)).await;
    assert!(
        lines
            .last()
            .unwrap()
            .contains("waiting for or running on a worker"),
        "{lines:#?}"
    );

    let skipped = one_id(&system, "SELECT id FROM runs WHERE job_id = 'desc'").await;
    let lines = explain(&system, ExplainRequest::Run(skipped)).await;
    let why = lines.last().unwrap();
    assert!(
        why.starts_with("skipped:") && why.contains("disc"),
        "{lines:#?}"
    );
    let lines = explain(&system, ExplainRequest::Job("disc".to_owned())).await;
    assert!(lines.iter().any(|l| l == "followed by desc"), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("last success never") && !l.contains("last failure never")),
        "{lines:#?}"
    );

    let unknown = system
        .ask("explain", &ExplainRequest::Job("nope".to_owned()))
        .await
        .unwrap();
    assert!(unknown["error"]
        .as_str()
        .unwrap_or_default()
        .contains("no job"));
    // Stop the long runs rather than wait for them at shutdown.
    for run_id in [second, first] {
        let request = faro_shared::messages::CancelRequest { run_id };
        system.ask("cancel", &request).await.unwrap();
    }
    system.stop().await.unwrap();
}
