//! The outcome feed: each run's end on `faro.outcomes.<queue>.<target>`, once, with what an
//! integrator needs (job, attempt, status, error, timings, output).

use std::collections::BTreeMap;
use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::messages::{Request as _, RunOutcome, RunOutput, SubmitReply, SubmitRequest};

/// The outcome feed from its first message, as an integrator follows it.
async fn feed(system: &System) -> async_nats::jetstream::consumer::pull::Ordered {
    system
        .js
        .get_stream(system.ns.outcomes_stream())
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap()
}

/// The first `count` outcomes the stream holds, as they come (30 s at most), by run id with
/// their subjects.
async fn outcomes(system: &System, count: usize) -> BTreeMap<uuid::Uuid, (String, RunOutcome)> {
    use futures::StreamExt as _;
    let mut messages = feed(system).await;
    let mut read = BTreeMap::new();
    while read.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .unwrap_or_else(|_| panic!("{} outcomes of {count} after 30 s", read.len()))
            .unwrap()
            .unwrap();
        let outcome: RunOutcome = serde_json::from_slice(&message.payload).unwrap();
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|id| id.as_str().to_owned());
        assert_eq!(id, Some(outcome.msg_id()));
        let previous = read.insert(outcome.run_id, (message.subject.to_string(), outcome));
        assert!(previous.is_none(), "a run's outcome twice: {previous:?}");
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ended_run_is_on_the_outcome_feed_once_with_its_end() {
    let system = System::start(Options::default()).await.unwrap();
    let sim = |outcome: &str| serde_json::json!({"duration_ms": 20, "outcomes": {outcome: 1}});
    let body = serde_json::json!({"jobs": [
        {"id": "fine", "queue": "q", "kind": "sim", "target": "olt-1", "params": sim("succeeded")},
        {"id": "broken", "queue": "q", "kind": "sim", "target": "olt-2", "params": sim("failed"),
         "max_attempts": 1},
        {"id": "after-broken", "queue": "q", "kind": "sim", "target": "olt-2",
         "params": sim("succeeded"), "after": "broken"},
        {"id": "untargeted", "queue": "q", "kind": "sim", "params": sim("succeeded")}]});
    let answer = system
        .client
        .request(
            SubmitRequest::subject(&system.ns),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    let reply: SubmitReply = SubmitRequest::decode_reply(&answer.payload).unwrap();
    assert!(reply.accepted, "{reply:?}");
    let run_of = |job: &str| {
        reply
            .runs
            .iter()
            .find(|r| r.job_id.as_str() == job)
            .unwrap()
            .run_id
    };

    // Three runs and the chained run their failure skipped.
    let feed = outcomes(&system, 4).await;
    let ns = system.ns.as_str();
    let (subject, fine) = &feed[&run_of("fine")];
    assert_eq!(subject, &format!("{ns}.outcomes.q.olt-1"));
    assert_eq!(
        (fine.job_id.as_str(), fine.attempt, fine.status.as_str()),
        ("fine", 1, "succeeded")
    );
    assert!(fine.worker_id.is_some() && fine.simulated, "{fine:?}");
    assert!(fine.duration_ms.is_some_and(|ms| ms >= 20), "{fine:?}");
    assert!(
        matches!(fine.output, Some(RunOutput::Sim { .. })),
        "{fine:?}"
    );
    let (_, broken) = &feed[&run_of("broken")];
    assert_eq!(broken.status.as_str(), "failed");
    assert!(broken.error.is_some(), "{broken:?}");
    let (subject, untargeted) = &feed[&run_of("untargeted")];
    assert_eq!(untargeted.status.as_str(), "succeeded");
    assert!(
        subject.starts_with(&format!("{ns}.outcomes.q.")),
        "{subject}"
    );
    let (subject, skipped) = feed
        .values()
        .find(|(_, o)| o.job_id.as_str() == "after-broken")
        .expect("the skipped chained run is on the feed");
    assert_eq!(subject, &format!("{ns}.outcomes.q.olt-2"));
    assert_eq!(skipped.status.as_str(), "skipped");
    let mut stream = system
        .js
        .get_stream(system.ns.outcomes_stream())
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 4, "{feed:?}");
    system.stop().await.unwrap();
}

/// `FARO_OUTCOME_FEED=false`: runs end as before, and nothing goes on the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_feed_off_runs_end_and_nothing_is_published() {
    let system = System::start(Options {
        env: vec![("FARO_OUTCOME_FEED".into(), "false".into())],
        ..Options::default()
    })
    .await
    .unwrap();
    let jobs: Vec<_> = (0..20)
        .map(|i| {
            serde_json::json!({"queue": "q", "kind": "sim", "target": format!("olt-{}", i % 4),
                               "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}}})
        })
        .collect();
    system.submit_jobs(&jobs, "off").await.unwrap();
    system
        .wait_terminal(20, Duration::from_secs(30))
        .await
        .unwrap();
    let mut stream = system
        .js
        .get_stream(system.ns.outcomes_stream())
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    system.stop().await.unwrap();
}

/// A recurring job's slot skipped while its previous run goes on ends on the feed too, as a
/// `skipped` run saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_skipped_behind_a_long_run_is_on_the_feed() {
    let system = System::start(Options::default()).await.unwrap();
    let job = serde_json::json!({"id": "slow", "queue": "poll", "kind": "sim", "target": "olt-1",
        "interval": "200ms",
        "params": {"duration_ms": 900, "outcomes": {"succeeded": 1}}});
    system.submit_jobs(&[job], "slow").await.unwrap();
    // The first slot's run takes 900 ms: the next slots, 200 ms apart, pass while it goes on.
    use futures::StreamExt as _;
    let mut messages = feed(&system).await;
    let (subject, skipped) = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("no skipped slot on the feed within 30 s")
            .unwrap()
            .unwrap();
        let outcome: RunOutcome = serde_json::from_slice(&message.payload).unwrap();
        if outcome.status.as_str() == "skipped" {
            break (message.subject.to_string(), outcome);
        }
    };
    assert_eq!(
        subject,
        format!("{}.outcomes.poll.olt-1", system.ns.as_str())
    );
    assert_eq!(skipped.job_id.as_str(), "slow");
    assert!(
        skipped
            .error
            .as_deref()
            .is_some_and(|error| error.contains("still running")),
        "{skipped:?}"
    );
    system.stop().await.unwrap();
}
