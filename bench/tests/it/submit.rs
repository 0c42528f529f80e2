//! A submission by request/reply (`faro.api.dispatcher.submit`): the answer is the accepted
//! submission with its runs, or the refusal naming the job and field, as `faro submit` says.

use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::messages::{Request as _, SubmitReply, SubmitRequest};

/// Sends `body` as a `submit` request, named `id` when given.
async fn submit(system: &System, body: &serde_json::Value, id: Option<&str>) -> SubmitReply {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = id {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    }
    let answer = system
        .client
        .request_with_headers(
            SubmitRequest::subject(&system.ns),
            headers,
            serde_json::to_vec(body).unwrap().into(),
        )
        .await
        .unwrap();
    SubmitRequest::decode_reply(&answer.payload).unwrap()
}

async fn count(system: &System, sql: &str) -> i64 {
    let client = system.pool.get().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_by_request_is_answered_with_its_runs_or_with_why_it_is_refused() {
    let system = System::start(Options::default()).await.unwrap();
    let sim = serde_json::json!({"duration_ms": 0, "outcomes": {"succeeded": 1}});

    // Refused: the second job's priority is out of range. Nothing is recorded.
    let bad = serde_json::json!({"jobs": [
        {"queue": "q", "kind": "sim", "target": "olt-1", "params": sim},
        {"queue": "q", "kind": "sim", "target": "olt-1", "params": sim, "priority": 0}]});
    let refused = submit(&system, &bad, Some("int-1")).await;
    assert!(!refused.accepted, "{refused:?}");
    let error = refused.error.expect("a refusal says why");
    assert_eq!(error.job, Some(1), "{error:?}");
    assert_eq!(error.field.as_deref(), Some("priority"), "{error:?}");
    assert!(refused.runs.is_empty());

    // Refused: a chained job after a job that does not exist.
    let orphan = serde_json::json!({"jobs": [
        {"id": "child", "queue": "q", "kind": "sim", "params": sim, "after": "nowhere"}]});
    let refused = submit(&system, &orphan, Some("int-1")).await;
    let error = refused.error.expect("a refusal says why");
    assert_eq!(
        (error.job, error.field.as_deref()),
        (Some(0), Some("after")),
        "{error:?}"
    );
    assert!(error.problem.contains("nowhere"), "{error:?}");
    assert_eq!(count(&system, "SELECT count(*) FROM runs").await, 0);
    assert_eq!(count(&system, "SELECT count(*) FROM submissions").await, 0);

    // Fixed and sent again under the same id: accepted, with a run per one-shot job and the
    // recurring job defined.
    let good = serde_json::json!({"jobs": [
        {"id": "once-a", "queue": "q", "kind": "sim", "target": "olt-1", "params": sim},
        {"id": "once-b", "queue": "q", "kind": "sim", "target": "olt-2", "params": sim},
        {"id": "every-hour", "queue": "q", "kind": "sim", "target": "olt-3", "params": sim,
         "interval": "1h"}]});
    let accepted = submit(&system, &good, Some("int-1")).await;
    assert!(accepted.accepted && !accepted.duplicate, "{accepted:?}");
    assert_eq!(accepted.submission_id, "int-1");
    assert_eq!(accepted.error, None);
    let jobs: Vec<&str> = accepted.runs.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!(jobs, ["once-a", "once-b"]);
    assert_eq!(
        accepted
            .defined
            .iter()
            .map(|j| j.as_str())
            .collect::<Vec<_>>(),
        ["every-hour"]
    );
    // Its runs are those recorded, and they run.
    for run in &accepted.runs {
        let client = system.pool.get().await.unwrap();
        let row = client
            .query_one("SELECT job_id FROM runs WHERE id = $1", &[&run.run_id])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), run.job_id.as_str());
    }
    system
        .wait_terminal(2, Duration::from_secs(30))
        .await
        .unwrap();

    // The same id again (a request whose answer was lost): the first answer, nothing twice.
    let again = submit(&system, &good, Some("int-1")).await;
    assert!(again.accepted && again.duplicate, "{again:?}");
    assert_eq!(again.runs, accepted.runs);
    assert_eq!(
        count(
            &system,
            "SELECT count(*) FROM runs WHERE job_id IN ('once-a', 'once-b')"
        )
        .await,
        2
    );

    // Without an id, each request is a submission of its own.
    let once = serde_json::json!([{"queue": "q", "kind": "sim", "params": sim}]);
    let first = submit(&system, &once, None).await;
    let second = submit(&system, &once, None).await;
    assert!(first.accepted && second.accepted, "{first:?} {second:?}");
    assert!(first.submission_id.starts_with("api-"), "{first:?}");
    assert_ne!(first.submission_id, second.submission_id);
    assert_ne!(first.runs, second.runs);

    // A name longer than 200 bytes is refused, not recorded.
    let long = "x".repeat(201);
    let refused = submit(&system, &once, Some(&long)).await;
    assert!(!refused.accepted, "{refused:?}");
    let error = refused.error.expect("a refusal says why");
    assert!(error.problem.contains("1 to 200 bytes"), "{error:?}");

    // Text that is not JSON is refused with where it went wrong.
    let answer = system
        .client
        .request(SubmitRequest::subject(&system.ns), "{not json".into())
        .await
        .unwrap();
    let refused = SubmitRequest::decode_reply(&answer.payload).unwrap();
    let error = refused.error.expect("a refusal says why");
    assert_eq!((error.line, error.column), (Some(1), Some(2)), "{error:?}");
    system.stop().await.unwrap();
}

/// Two submissions that close a chain cycle between them, sent at once (requests are
/// answered four at a time): never both accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_closing_a_chain_cycle_between_them_are_never_both_accepted() {
    let system = System::start(Options::default()).await.unwrap();
    let sim = serde_json::json!({"duration_ms": 0, "outcomes": {"succeeded": 1}});
    const PAIRS: usize = 10;
    let jobs: Vec<_> = (0..PAIRS)
        .flat_map(|i| {
            [format!("a-{i}"), format!("b-{i}")]
                .map(|id| serde_json::json!({"id": id, "queue": "q", "kind": "sim", "params": sim}))
        })
        .collect();
    let defined = submit(&system, &serde_json::json!({ "jobs": jobs }), None).await;
    assert!(defined.accepted, "{defined:?}");
    let chained = |job: &str, after: &str| {
        serde_json::json!({"jobs": [{"id": job, "queue": "q", "kind": "sim", "params": sim,
                                     "after": after}]})
    };
    let requests: Vec<_> = (0..PAIRS)
        .flat_map(|i| {
            let (a, b) = (format!("a-{i}"), format!("b-{i}"));
            [chained(&a, &b), chained(&b, &a)]
        })
        .collect();
    let answers =
        futures::future::join_all(requests.iter().map(|body| submit(&system, body, None))).await;
    for (i, pair) in answers.chunks(2).enumerate() {
        let accepted = pair.iter().filter(|answer| answer.accepted).count();
        assert_eq!(accepted, 1, "pair {i}: {pair:?}");
        let refused = pair.iter().find(|answer| !answer.accepted).unwrap();
        let error = refused.error.as_ref().unwrap();
        assert_eq!(error.field.as_deref(), Some("after"), "{error:?}");
    }
    system.stop().await.unwrap();
}
