//! High availability: two dispatchers, one leads; killing the leader during a run of
//! recurring jobs hands the schedule to the standby within a few seconds, no slot fires
//! twice and no run is lost.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use faro_bench::system::{Options, System};
use futures::StreamExt as _;

const JOBS: usize = 40;
const INTERVAL_MS: i64 = 500;
const ONE_SHOT: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_leader_dies() {
    let mut system = System::start(Options {
        dispatchers: 2,
        env: vec![
            ("FARO_LEADER_LEASE_TTL".into(), "2s".into()),
            ("FARO_TARGET_MAX_CONCURRENCY".into(), "20".into()),
        ],
        ..Options::default()
    })
    .await
    .unwrap();
    let recurring: Vec<_> = (0..JOBS)
        .map(|i| {
            serde_json::json!({"id": format!("poll-{i}"), "queue": "poll", "kind": "sim",
                "target": format!("olt-{}", i % 10), "interval": format!("{INTERVAL_MS}ms"),
                "params": {"duration_ms": [0, 20], "outcomes": {"succeeded": 1}}})
        })
        .collect();
    system.submit_jobs(&recurring, "recurring").await.unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE status = 'succeeded'",
            (JOBS * 3) as i64,
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    // One-shot runs in flight when the leader dies.
    let one_shot: Vec<_> = (0..ONE_SHOT)
        .map(|i| {
            serde_json::json!({"queue": "poll", "kind": "sim", "target": format!("olt-{}", i % 10),
                "params": {"duration_ms": [0, 400], "outcomes": {"succeeded": 1}}})
        })
        .collect();
    system.submit_jobs(&one_shot, "one-shot").await.unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE submission_id = 'one-shot'",
            1,
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let leader = system
        .wait_leader(None, Duration::from_secs(10))
        .await
        .unwrap();
    // A slot lease the dying leader never freed (its last write lost): the next leader, which
    // knows the runs in flight, empties it rather than leave the OLT a slot short for an hour.
    let leases = system
        .js
        .get_key_value(system.ns.leases_bucket())
        .await
        .unwrap();
    let stale = faro_dispatcher::slot_leases::key(
        &faro_shared::domain::TargetId::parse("olt-gone").unwrap(),
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_TTL, "3600");
    system
        .js
        .publish_with_headers(
            format!("$KV.{}.{stale}", system.ns.leases_bucket()),
            headers,
            "stale".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut stale_updates = leases.watch(&stale).await.unwrap();
    system.kill(&format!("dispatcher {leader}")).unwrap();
    let killed = Instant::now();
    let killed_at = Utc::now();
    let next = system
        .wait_leader(Some(&leader), Duration::from_secs(20))
        .await
        .unwrap();
    let takeover = killed.elapsed();
    assert_ne!(next, leader);
    eprintln!("{next} took over from {leader} in {takeover:?}");
    assert!(
        takeover < Duration::from_secs(6),
        "the standby took {takeover:?} to take over a 2 s lease"
    );
    let emptied = async {
        while let Some(Ok(entry)) = stale_updates.next().await {
            let slots =
                serde_json::from_slice::<faro_dispatcher::slot_leases::TargetSlots>(&entry.value);
            if slots.is_ok_and(|slots| slots.runs.is_empty() && slots.at.is_some()) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), emptied)
        .await
        .expect("the new leader left a slot lease nobody holds");

    // The schedule goes on under the new leader: every job runs a slot after the takeover.
    let after = (killed_at + chrono::Duration::seconds(1)).to_rfc3339();
    system
        .wait_count(
            &format!(
                "SELECT count(DISTINCT job_id) FROM runs
                  WHERE status = 'succeeded' AND slot_at > '{after}'::timestamptz"
            ),
            JOBS as i64,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    // Nothing is lost: every one-shot run and every slot from before the kill ends (what
    // the dead leader had pulled comes back after the consumers' ack wait).
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE submission_id = 'one-shot'
                AND status NOT IN ('pending', 'dispatched')",
            ONE_SHOT as i64,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let before = killed_at.to_rfc3339();
    system
        .wait_count(
            &format!(
                "SELECT (count(*) = 0)::int::bigint FROM runs
                  WHERE slot_at <= '{before}'::timestamptz AND status IN ('pending', 'dispatched')"
            ),
            1,
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    let outcomes: Vec<(String, i64)> = system
        .pairs("SELECT status, count(*) FROM runs WHERE submission_id = 'one-shot' GROUP BY 1")
        .await
        .unwrap();
    assert_eq!(outcomes, vec![("succeeded".to_owned(), ONE_SHOT as i64)]);
    // No slot fired twice: one run per (job, slot), slots a whole number of intervals apart.
    let slots: Vec<(String, DateTime<Utc>)> = system
        .pairs(
            "SELECT job_id, slot_at FROM runs WHERE slot_at IS NOT NULL ORDER BY job_id, slot_at",
        )
        .await
        .unwrap();
    for pair in slots.windows(2) {
        if pair[0].0 == pair[1].0 {
            let gap = (pair[1].1 - pair[0].1).num_milliseconds();
            assert!(
                gap >= INTERVAL_MS && gap % INTERVAL_MS == 0,
                "slots of {} {gap} ms apart: {:?}",
                pair[0].0,
                pair
            );
        }
    }
    system.stop().await.unwrap();
}

/// Writes the leader lease as "intruder", waits until the dispatcher stops leading, and frees
/// the lease again.
async fn take_the_lease_away(system: &System, limit: Duration) {
    let store = system
        .js
        .get_key_value(system.ns.leases_bucket())
        .await
        .unwrap();
    store
        .put(faro_dispatcher::leader::LEADER_KEY, "intruder".into())
        .await
        .unwrap();
    system
        .wait_metric("faro_dispatcher_leader 0", limit)
        .await
        .unwrap();
    store
        .delete(faro_dispatcher::leader::LEADER_KEY)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_steps_down_and_can_lead_again() {
    let system = System::start(Options {
        env: vec![("FARO_LEADER_LEASE_TTL".into(), "2s".into())],
        ..Options::default()
    })
    .await
    .unwrap();
    let limit = Duration::from_secs(15);
    assert_eq!(system.wait_leader(None, limit).await.unwrap(), "d0");
    system
        .wait_metric("faro_dispatcher_leader 1", limit)
        .await
        .unwrap();

    // Someone else writes the lease (a partition healed, an operator's hand): the leader's
    // next renewal fails and it stops leading at once. Free again: the same dispatcher
    // leads again, rebuilt from PostgreSQL, and runs work.
    take_the_lease_away(&system, limit).await;
    assert_eq!(
        system.wait_leader(Some("intruder"), limit).await.unwrap(),
        "d0"
    );
    system
        .wait_metric("faro_dispatcher_leaderships_total 2", limit)
        .await
        .unwrap();
    let job = serde_json::json!({"queue": "poll", "kind": "sim", "target": "olt-1",
        "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}}});
    system.submit_jobs(&[job], "after-relead").await.unwrap();
    system.wait_terminal(1, limit).await.unwrap();
    system.stop().await.unwrap();
}

/// A new leader whose start fails (here: its submissions stream is gone) gives the lease up
/// and competes again after a pause, rather than renew a lease with nothing led, which
/// stopped every run for as long as the process lived. Once the stream is back, it leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_start_fails_gives_the_lease_up_and_leads_once_it_can() {
    let system = System::start(Options {
        env: vec![("FARO_LEADER_LEASE_TTL".into(), "2s".into())],
        ..Options::default()
    })
    .await
    .unwrap();
    let limit = Duration::from_secs(30);
    system
        .wait_metric("faro_dispatcher_leaderships_total 1", limit)
        .await
        .unwrap();
    system
        .js
        .delete_stream(system.ns.submit_stream())
        .await
        .unwrap();
    take_the_lease_away(&system, limit).await;
    // The second leadership cannot open its submissions consumer; a third follows it.
    system
        .wait_metric("faro_dispatcher_leaderships_total 3", limit)
        .await
        .unwrap();

    faro_shared::nats::provision(
        &system.js,
        &system.ns,
        &faro_shared::nats::TopologySettings {
            max_bytes: faro_shared::testing::TEST_JETSTREAM_MAX_BYTES,
            ..Default::default()
        },
        faro_shared::nats::SETUP_WAIT,
    )
    .await
    .unwrap();
    let job = serde_json::json!({"queue": "poll", "kind": "sim", "target": "olt-1",
        "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}}});
    system
        .submit_jobs(&[job], "after-failed-start")
        .await
        .unwrap();
    system.wait_terminal(1, limit).await.unwrap();
    system.stop().await.unwrap();
}

/// A leader killed after a run was stored in its queue but before it cleared it from the
/// outbox: the next leader counts it in flight. With a limit of 1, a run that waited in the
/// outbox since before it (passed over for its lower priority, 10 against 1) does not start until it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_published_by_a_leader_killed_before_clearing_it_keeps_its_slot() {
    let (mut system, mut consumer) = olt_with_a_limit_of_one().await;
    let client = system.pool.get().await.unwrap();
    // A run holds olt-1's one slot, published and cleared from the outbox.
    executing_and_cleared(&system, &mut consumer, sim("blocker", 5, 4000)).await;
    // From now on the leader cannot clear its outbox: it dies between storing a run and
    // clearing it.
    client
        .batch_execute(
            "CREATE FUNCTION hold_outbox() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'the outbox is held by the test'; END $$;
             CREATE TRIGGER hold_outbox BEFORE DELETE ON run_outbox
                 FOR EACH ROW EXECUTE FUNCTION hold_outbox();",
        )
        .await
        .unwrap();
    // Two wait behind it: the older one has the lower priority, so the newer goes next.
    system
        .submit_jobs(&[sim("older", 10, 100)], "older")
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'older'",
            1,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    system
        .submit_jobs(&[sim("newer", 1, 3000)], "newer")
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'blocker' AND status = 'succeeded'",
            1,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    // The newer one is executing, published but still in the outbox.
    wait_executing(&mut consumer, "the newer run never started").await;
    let leader = system
        .wait_leader(None, Duration::from_secs(10))
        .await
        .unwrap();
    system.kill(&format!("dispatcher {leader}")).unwrap();
    let older_waits: i64 = client
        .query_one(
            "SELECT count(*) FROM runs WHERE job_id = 'older' AND status = 'dispatched'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        older_waits, 1,
        "the older run did not wait behind the newer"
    );
    client
        .batch_execute("DROP TRIGGER hold_outbox ON run_outbox")
        .await
        .unwrap();
    one_after_the_other(&system, &leader, 3, "newer", "older").await;
    // Nothing left behind: the outbox is clear.
    let left: i64 = client
        .query_one("SELECT count(*) FROM run_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    drop(client);
    system.stop().await.unwrap();
}

/// A leader killed while a run executes (published and cleared from the outbox): the next
/// leader finds it in flight in its queue's stream (a worker acknowledges a run only once its
/// result is stored), so with a limit of 1 the run waiting behind it does not start before it
/// ends, and the run is still watched for its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_executing_when_the_leader_dies_keeps_its_slot_under_the_next() {
    let (mut system, mut consumer) = olt_with_a_limit_of_one().await;
    executing_and_cleared(&system, &mut consumer, sim("executing", 5, 5000)).await;
    system
        .submit_jobs(&[sim("waiting", 5, 100)], "waiting")
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'waiting'",
            1,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let leader = system
        .wait_leader(None, Duration::from_secs(10))
        .await
        .unwrap();
    system.kill(&format!("dispatcher {leader}")).unwrap();
    one_after_the_other(&system, &leader, 2, "executing", "waiting").await;
    system.stop().await.unwrap();
}

/// Two dispatchers on a 2 s lease, one worker, and targets limited to one run at a time; with
/// a consumer of queue `q` to see what its worker holds.
async fn olt_with_a_limit_of_one() -> (System, async_nats::jetstream::consumer::PullConsumer) {
    let system = System::start(Options {
        dispatchers: 2,
        workers: 1,
        env: vec![
            ("FARO_LEADER_LEASE_TTL".into(), "2s".into()),
            ("FARO_TARGET_MAX_CONCURRENCY".into(), "1".into()),
        ],
        ..Options::default()
    })
    .await
    .unwrap();
    let queue = faro_shared::domain::QueueName::parse("q").unwrap();
    let consumer = faro_shared::nats::ensure_queue_consumer(&system.js, &system.ns, &queue)
        .await
        .unwrap();
    (system, consumer)
}

/// A job of queue `q` on olt-1 that runs `duration_ms` and succeeds.
fn sim(id: &str, priority: u8, duration_ms: u64) -> serde_json::Value {
    serde_json::json!({"id": id, "queue": "q", "kind": "sim", "target": "olt-1",
        "priority": priority,
        "params": {"duration_ms": duration_ms, "outcomes": {"succeeded": 1}}})
}

/// Submits `job` and waits until a worker executes its run and the leader cleared it from
/// the outbox.
async fn executing_and_cleared(
    system: &System,
    consumer: &mut async_nats::jetstream::consumer::PullConsumer,
    job: serde_json::Value,
) {
    let id = job["id"].as_str().unwrap().to_owned();
    system.submit_jobs(&[job], &id).await.unwrap();
    wait_executing(consumer, &format!("{id} never started")).await;
    system
        .wait_count(
            &format!(
                "SELECT count(*) FROM runs r WHERE job_id = '{id}'
                    AND NOT EXISTS (SELECT 1 FROM run_outbox o WHERE o.run_id = r.id)"
            ),
            1,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

/// Waits for a leader other than `killed` and for `runs` runs succeeded, then checks that
/// job `then`'s run started only once job `first`'s had finished (olt-1 allows one at a time).
async fn one_after_the_other(system: &System, killed: &str, runs: i64, first: &str, then: &str) {
    system
        .wait_leader(Some(killed), Duration::from_secs(20))
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE status = 'succeeded'",
            runs,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let times: std::collections::HashMap<String, (DateTime<Utc>, DateTime<Utc>)> = system
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT job_id, started_at, finished_at FROM runs", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    let (before, after) = (times[first], times[then]);
    assert!(
        after.0 >= before.1,
        "olt-1 ran two polls at once against its limit of 1: {first} {before:?}, {then} {after:?}"
    );
}

/// Waits until a worker holds a run of `consumer`'s queue (it executes it); fails with `what`.
async fn wait_executing(consumer: &mut async_nats::jetstream::consumer::PullConsumer, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumer.info().await.unwrap().num_ack_pending < 1 {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
