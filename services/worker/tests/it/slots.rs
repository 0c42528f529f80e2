//! Slots, shutdown and giving runs back.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use chrono::{DateTime, Utc};
use faro_shared::domain::{Outcome, TargetId};
use faro_shared::messages::slots::TargetSlots;
use faro_shared::messages::RunMessage;
use faro_shared::nats;

use crate::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_runs_more_than_its_capacity_and_uses_all_of_it() {
    let h = Harness::start().await;
    let (worker, shutdown) = h.worker("w1", 3, "10s").await;
    let runs = h.publish_runs(12, 150).await;
    let results = h.results(12, Duration::from_secs(30)).await;

    // Most runs executing at any instant, from the recorded start and end times.
    let mut edges: Vec<_> = results
        .iter()
        .flat_map(|r| [(r.started_at, 1i32), (r.finished_at, -1)])
        .collect();
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0, 0);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    assert_eq!(most, 3, "capacity 3 was exceeded or never reached");
    assert!(results
        .iter()
        .all(|r| r.outcome == Outcome::Succeeded && r.simulated));
    let mut ids: Vec<_> = results.iter().map(|r| r.run_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), runs.len());

    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert!(
        h.topology.workers.get("w1").await.unwrap().is_none(),
        "heartbeat key left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_runs_in_flight_within_grace() {
    let h = Harness::start().await;
    let (worker, shutdown) = h.worker("w1", 2, "10s").await;
    assert!(
        h.topology.workers.get("w1").await.unwrap().is_some() || {
            // The worker may not have written its first beat yet: wait for it.
            let mut watch = h.topology.workers.watch("w1").await.unwrap();
            futures::StreamExt::next(&mut watch).await.is_some()
        }
    );
    h.publish_runs(2, 800).await;
    let mut consumer: PullConsumer = nats::ensure_queue_consumer(&h.js, &h.ns, &h.queue)
        .await
        .unwrap();
    // Wait until the worker says both runs are executing (delivered is not enough: a run
    // still in the pull buffer at shutdown is rightly given back), then stop it.
    let mut beats = h.topology.workers.watch_with_history("w1").await.unwrap();
    loop {
        let entry = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut beats),
        )
        .await
        .expect("the worker never had both runs in progress")
        .unwrap()
        .unwrap();
        let beat: faro_shared::messages::Heartbeat = serde_json::from_slice(&entry.value).unwrap();
        if beat.in_progress == 2 {
            break;
        }
    }
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    let results = h.results(2, Duration::from_secs(5)).await;
    assert!(results.iter().all(|r| r.outcome == Outcome::Succeeded));
    let info = consumer.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    assert!(h.topology.workers.get("w1").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_unfinished_at_the_end_of_grace_are_given_back() {
    let h = Harness::start().await;
    let (worker, shutdown) = h.worker("w1", 1, "100ms").await;
    let runs = h.publish_runs(1, 60_000).await;
    let mut consumer = nats::ensure_queue_consumer(&h.js, &h.ns, &h.queue)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while consumer.info().await.unwrap().num_ack_pending < 1 {
        assert!(tokio::time::Instant::now() < deadline, "run never pulled");
        tokio::task::yield_now().await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("worker did not stop")
        .unwrap()
        .unwrap();
    // Given back (nak), not left to time out: it can be fetched again at once, well before
    // the 30 s ack wait, as a second delivery.
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let message = futures::StreamExt::next(&mut batch)
        .await
        .expect("the run was not given back")
        .unwrap();
    let run: faro_shared::messages::RunMessage = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(run.run_id, runs[0].run_id);
    let delivered = message.info().unwrap().delivered;
    assert_eq!(delivered, 2, "given back once, then fetched here");
    let stream = h.js.get_stream(h.ns.results_stream()).await.unwrap();
    assert_eq!(
        stream.get_info().await.unwrap().state.messages,
        0,
        "a result was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_reports_nothing_in_progress() {
    let h = Harness::start().await;
    let (worker, shutdown) = h.worker("w1", 3, "10s").await;
    // Its pull is open (slots reserved), but nothing runs: beats must say 0, not 3.
    let mut beats = h.topology.workers.watch_with_history("w1").await.unwrap();
    for _ in 0..6 {
        let entry = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut beats),
        )
        .await
        .expect("no heartbeat")
        .unwrap()
        .unwrap();
        let beat: faro_shared::messages::Heartbeat = serde_json::from_slice(&entry.value).unwrap();
        assert_eq!(
            (beat.in_progress, beat.capacity, beat.state),
            (0, 3, faro_shared::messages::WorkerState::Idle)
        );
        // Reserved slots do not load it: the score is the machine's CPU or memory at most.
        let machine = beat
            .cpu_percent
            .unwrap_or(0.0)
            .max(beat.mem_percent.unwrap_or(0.0));
        assert!(f32::from(beat.load_score) <= machine + 0.5, "{beat:?}");
    }
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

/// A run JetStream delivered as often as it will is not executed once more and left unseen in
/// its queue: the worker ends it failed, saying why, without touching anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_its_last_delivery_ends_failed_with_the_reason_without_executing() {
    let h = Harness::start().await;
    let runs = h.publish_runs(1, 60_000).await;
    let mut consumer = nats::ensure_queue_consumer(&h.js, &h.ns, &h.queue)
        .await
        .unwrap();
    assert_eq!(
        consumer.info().await.unwrap().config.max_deliver,
        nats::RUN_MAX_DELIVER
    );
    // Every delivery but the last given back, as by workers that each gave it up.
    for delivery in 1..nats::RUN_MAX_DELIVER {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .unwrap();
        let message = futures::StreamExt::next(&mut batch)
            .await
            .expect("the run was not delivered again")
            .unwrap();
        assert_eq!(message.info().unwrap().delivered, delivery);
        message
            .ack_with(async_nats::jetstream::AckKind::Nak(None))
            .await
            .unwrap();
    }
    let (worker, shutdown) = h.worker("w1", 1, "1s").await;
    let results = h.results(1, Duration::from_secs(10)).await;
    let result = &results[0];
    assert_eq!(result.run_id, runs[0].run_id);
    assert_eq!(result.outcome, Outcome::Failed);
    let error = result.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "set aside after {} deliveries",
            nats::RUN_MAX_DELIVER
        )),
        "{error}"
    );
    // Acknowledged once its result is stored: nothing stays in the queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer.info().await.unwrap();
        if (info.num_pending, info.num_ack_pending) == (0, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run stays in its queue: {} pending, {} unacknowledged",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

/// An attempt past its deadline is never started, and one still running at its deadline is
/// stopped there, whatever its kind: the dispatcher records it timed out only a grace later,
/// so it never runs next to its retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_never_starts_after_its_deadline_and_stops_at_it() {
    let h = Harness::start().await;
    let now = chrono::Utc::now();
    let mut late = h.sim_run(0, 60_000);
    late.deadline = Some(now - chrono::Duration::seconds(1));
    let mut long = h.sim_run(1, 60_000);
    long.deadline = Some(now + chrono::Duration::milliseconds(1500));
    h.publish(&late).await;
    h.publish(&long).await;
    let (worker, shutdown) = h.worker("w1", 2, "1s").await;
    let results = h.results(2, Duration::from_secs(20)).await;
    let of = |run: &faro_shared::messages::RunMessage| {
        results
            .iter()
            .find(|r| r.run_id == run.run_id)
            .unwrap()
            .clone()
    };
    let late_result = of(&late);
    assert_eq!(late_result.outcome, Outcome::TimedOut);
    let error = late_result.error.unwrap_or_default();
    assert!(error.starts_with("not started: its deadline"), "{error}");
    let long_result = of(&long);
    assert_eq!(long_result.outcome, Outcome::TimedOut);
    let error = long_result.error.unwrap_or_default();
    assert!(error.starts_with("stopped at its deadline"), "{error}");
    let overrun = long_result.finished_at - long.deadline.unwrap();
    assert!(
        overrun < chrono::Duration::milliseconds(500),
        "stopped {overrun} after its deadline"
    );
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

/// The same attempt executed twice (its message delivered again after its ack was lost, or
/// published twice) has its result stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_executed_twice_has_its_result_stored_once() {
    let h = Harness::start().await;
    let run = h.sim_run(0, 0);
    h.publish(&run).await;
    h.publish(&run).await;
    let mut consumer = nats::ensure_queue_consumer(&h.js, &h.ns, &h.queue)
        .await
        .unwrap();
    let (worker, shutdown) = h.worker("w1", 2, "1s").await;
    // Both executed and acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer.info().await.unwrap();
        if info.delivered.stream_sequence >= 2 && (info.num_pending, info.num_ack_pending) == (0, 0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runs were not both executed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut results = h.js.get_stream(h.ns.results_stream()).await.unwrap();
    assert_eq!(results.info().await.unwrap().state.messages, 1);
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

/// Two runs of target t0 the leader sent a second ago.
fn two_sent_runs(h: &Harness) -> (RunMessage, RunMessage) {
    let sent = Utc::now() - chrono::Duration::seconds(1);
    let (mut ended, mut open) = (h.sim_run(0, 0), h.sim_run(3, 0));
    ended.sent_at = Some(sent);
    open.sent_at = Some(sent);
    (ended, open)
}

/// Writes the leader's slot record of t0 as it was at `at`: `holding` holds its slots.
async fn put_slots(h: &Harness, holding: &[&RunMessage], at: DateTime<Utc>) {
    let until = Utc::now() + chrono::Duration::hours(1);
    let record = TargetSlots {
        target: TargetId::parse("t0").unwrap(),
        holder: "d0".to_owned(),
        runs: holding.iter().map(|run| (run.run_id, until)).collect(),
        at: Some(at),
    };
    h.topology
        .leases
        .put("slot.t0", serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();
}

/// Delivers the queue's first `n` runs once, never acknowledged: as to a worker that froze
/// after it published their results.
async fn deliver_unacked(h: &Harness, n: usize) -> PullConsumer {
    let consumer = nats::ensure_queue_consumer(&h.js, &h.ns, &h.queue)
        .await
        .unwrap();
    let mut first = consumer.fetch().max_messages(n).messages().await.unwrap();
    for _ in 0..n {
        let message = futures::StreamExt::next(&mut first).await.unwrap().unwrap();
        message
            .ack_with(async_nats::jetstream::AckKind::Nak(None))
            .await
            .unwrap();
    }
    consumer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_given_again_after_its_attempt_ended_is_not_executed_again() {
    let h = Harness::start().await;
    // `ended` had its result recorded, and its slot went to another run (`open`).
    let (ended, open) = two_sent_runs(&h);
    h.publish(&ended).await;
    h.publish(&open).await;
    let consumer = deliver_unacked(&h, 2).await;
    // The leader's record taken when the result of `ended` was recorded: after both were sent.
    put_slots(&h, &[&open], Utc::now()).await;

    let (worker, shutdown) = h.worker("w1", 2, "1s").await;
    let results = h.results(1, Duration::from_secs(30)).await;
    assert_eq!(results[0].run_id, open.run_id);
    // `ended` was acknowledged without a second execution: the queue empties, one result.
    drop(consumer);
    h.wait_queue_empty_and_no_more_results().await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stored_before_a_restart_that_already_ended_is_not_executed_as_new() {
    // A nats-server that crashed may lose the ack of a run whose result was recorded, and
    // delivers it again as a first delivery. A worker that (re)connected after the run was
    // stored checks the slot record before it executes it.
    let h = Harness::start().await;
    let (ended, open) = two_sent_runs(&h);
    h.publish(&ended).await;
    h.publish(&open).await;
    put_slots(&h, &[&open], Utc::now()).await;

    let (worker, shutdown) = h.worker("w1", 2, "1s").await;
    let results = h.results(1, Duration::from_secs(30)).await;
    assert_eq!(results[0].run_id, open.run_id);
    h.wait_queue_empty_and_no_more_results().await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_record_taken_before_a_run_was_sent_never_stops_it_whenever_it_is_written() {
    // The leader writes its slot records a little after the changes, and the server stores
    // the records and the runs on different streams: a record taken before a run was admitted
    // may be stored after the run. It says nothing about the run, which is executed.
    let h = Harness::start().await;
    let (earlier, sent) = two_sent_runs(&h);
    h.publish(&sent).await;
    // Delivered before (so the worker checks its slot), then the record is stored.
    let consumer = deliver_unacked(&h, 1).await;
    put_slots(
        &h,
        &[&earlier],
        sent.sent_at.unwrap() - chrono::Duration::milliseconds(5),
    )
    .await;

    let (worker, shutdown) = h.worker("w1", 2, "1s").await;
    let results = h.results(1, Duration::from_secs(30)).await;
    assert_eq!(results[0].run_id, sent.run_id);
    assert_eq!(results[0].outcome, Outcome::Succeeded);
    drop(consumer);
    h.wait_queue_empty_and_no_more_results().await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}
