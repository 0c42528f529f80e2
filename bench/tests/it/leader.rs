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
    // A slot lease the dying leader never freed (its purge lost): the next leader, which
    // knows the runs in flight, purges it rather than leave the OLT a slot short for an hour.
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
    let purged = async {
        while let Some(Ok(entry)) = stale_updates.next().await {
            if entry.operation != async_nats::jetstream::kv::Operation::Put {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), purged)
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

    faro_shared::nats::ensure_topology(
        &system.js,
        &system.ns,
        &faro_shared::nats::TopologySettings::default(),
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
