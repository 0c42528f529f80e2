//! Balancer integration tests on a private nats-server and a fresh database; the test plays
//! the workers (it writes their heartbeats) and the demand-collector (it publishes snapshots).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::Utc;
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::messages::{Assignment, DemandSnapshot, Heartbeat, Kind};
use faro_shared::pg;
use faro_shared::testing::{TestBus, TestDb};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Writes a heartbeat of worker `id`, as the worker would.
async fn beat(bus: &TestBus, id: &str, kinds: Vec<Kind>, interval_ms: u32) {
    let body = serde_json::to_vec(&Heartbeat {
        worker_id: WorkerId::parse(id).unwrap(),
        pool: PoolName::parse("default").unwrap(),
        capacity: 4,
        kinds,
        in_progress: 0,
        cpu_percent: None,
        mem_percent: None,
        load_source: Default::default(),
        load_score: 0,
        state: Default::default(),
        admission_closed: None,
        runs: Default::default(),
        interval_ms,
        version: "test".into(),
        started_at: Utc::now(),
        sent_at: Utc::now(),
    })
    .unwrap();
    bus.topology.workers.put(id, body.into()).await.unwrap();
}

async fn demand(bus: &TestBus, queue: &str, pending: u64, stale: bool) {
    let snapshot = DemandSnapshot {
        queue: QueueName::parse(queue).unwrap(),
        pending,
        stale,
        sources: BTreeMap::new(),
        collected_at: Utc::now(),
    };
    bus.js
        .publish(
            snapshot.subject(&bus.ns),
            serde_json::to_vec(&snapshot).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The next change of a key in the assignments bucket: its queues, or `None` when deleted.
async fn next_assignment(watch: &mut kv::Watch) -> Option<Vec<String>> {
    let entry = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("no assignment change within 10 s")
        .unwrap()
        .unwrap();
    match entry.operation {
        kv::Operation::Put => {
            let a: Assignment = serde_json::from_slice(&entry.value).unwrap();
            Some(a.queues.iter().map(ToString::to_string).collect())
        }
        _ => None,
    }
}

/// Waits until `query` (one text column) returns `want`.
async fn wait_rows(pool: &deadpool_postgres::Pool, query: &str, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut interval = tokio::time::interval(Duration::from_millis(50));
    loop {
        interval.tick().await;
        let rows: Vec<String> = pool
            .get()
            .await
            .unwrap()
            .query(query, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if rows == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{query}: got {rows:?}, want {want:?}"
        );
    }
}

fn start(
    bus: &TestBus,
    db: &TestDb,
    cycle: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    start_with(bus, db, &[("FARO_BALANCER_CYCLE", cycle)])
}

/// A balancer with these settings.
fn start_with(
    bus: &TestBus,
    db: &TestDb,
    settings: &[(&str, &str)],
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut env = bus.env(Some(db));
    for (var, value) in settings {
        env.set(*var, *value);
    }
    let shutdown = CancellationToken::new();
    let balancer = tokio::spawn(faro_balancer::run(
        faro_balancer::Config::from_env(&env).unwrap(),
        shutdown.clone(),
    ));
    (shutdown, balancer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_go_where_the_demand_is_with_a_reason_for_each_move() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO queues (name, kinds) VALUES ('sims', '{sim}'), ('polls', '{snmp.get}'),
                                                    ('later', '{}');
             INSERT INTO system_config (key, value) VALUES ('cooling_period', '\"0s\"');",
        )
        .await
        .unwrap();
    let topology = &bus.topology;
    let mut w1 = topology.assignments.watch("w1").await.unwrap();
    let mut w2 = topology.assignments.watch("w2").await.unwrap();
    demand(&bus, "sims", 3, false).await;
    demand(&bus, "polls", 2, false).await;
    let (shutdown, balancer) = start(&bus, &db, "60s");

    // Joining triggers a cycle at once (the timer is a minute away).
    beat(&bus, "w1", vec![Kind::Sim], 5000).await;
    assert_eq!(
        next_assignment(&mut w1).await,
        Some(vec!["sims".to_owned()])
    );
    // w2 is the only one that can poll: polls gets it, sims keeps w1.
    beat(&bus, "w2", vec![Kind::Sim, Kind::SnmpGet], 5000).await;
    assert_eq!(
        next_assignment(&mut w2).await,
        Some(vec!["polls".to_owned()])
    );
    wait_rows(
        &pool,
        "SELECT worker_id || ' ' || coalesce(to_queue, '-') || ' ' || reason
           FROM balancer_decisions WHERE worker_id IS NOT NULL ORDER BY id",
        &["w1 sims scale_out", "w2 polls scale_out"],
    )
    .await;

    // Leaving: the assignment goes, the registry says so.
    topology.workers.delete("w1").await.unwrap();
    assert_eq!(next_assignment(&mut w1).await, None);
    wait_rows(
        &pool,
        "SELECT worker_id || ' ' || event FROM worker_events ORDER BY id",
        &["w1 joined", "w2 joined", "w1 left"],
    )
    .await;
    let client = pool.get().await.unwrap();
    let states: Vec<(String, String, Vec<String>)> = client
        .query("SELECT id, state, kinds FROM workers ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(states[0].1, "left");
    assert_eq!(
        states[1],
        (
            "w2".into(),
            "active".into(),
            vec!["sim".into(), "snmp.get".into()]
        )
    );
    // sims lost its only worker: it is held, and says why, once.
    wait_rows(
        &pool,
        "SELECT reason FROM balancer_decisions WHERE queue = 'sims' AND worker_id IS NULL",
        &["held: no idle worker (those that could serve it serve other queues; preemption_mode is off)"],
    )
    .await;

    shutdown.cancel();
    balancer.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_unstable_then_lost_and_recovers_across_a_balancer_restart() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO queues (name, kinds, min_workers) VALUES ('sims', '{sim}', 1);
             INSERT INTO system_config (key, value) VALUES ('cooling_period', '\"0s\"');",
        )
        .await
        .unwrap();
    demand(&bus, "sims", 0, false).await;
    let topology = &bus.topology;
    let mut w1 = topology.assignments.watch("w1").await.unwrap();
    let (shutdown, balancer) = start(&bus, &db, "100ms");

    // Beats every 200 ms: one missed after 300 ms of silence, lost after 5 (1.1 s).
    beat(&bus, "w1", vec![Kind::Sim], 200).await;
    assert_eq!(
        next_assignment(&mut w1).await,
        Some(vec!["sims".to_owned()]),
        "min_workers 1 gives it a worker without demand"
    );
    wait_rows(
        &pool,
        "SELECT event FROM worker_events ORDER BY id",
        &["joined", "unstable", "lost"],
    )
    .await;
    assert_eq!(
        next_assignment(&mut w1).await,
        None,
        "a lost worker has no assignment"
    );
    wait_rows(&pool, "SELECT state FROM workers", &["lost"]).await;

    // The balancer restarts; the registry survives it.
    shutdown.cancel();
    balancer.await.unwrap().unwrap();
    let (shutdown, balancer) = start(&bus, &db, "100ms");
    beat(&bus, "w1", vec![Kind::Sim], 200).await;
    wait_rows(
        &pool,
        "SELECT event FROM worker_events ORDER BY id",
        &["joined", "unstable", "lost", "recovered"],
    )
    .await;
    assert_eq!(
        next_assignment(&mut w1).await,
        Some(vec!["sims".to_owned()])
    );
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT state, beats_received, beats_missed, (SELECT detail->>'from' FROM worker_events
                     WHERE event = 'recovered') FROM workers",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "active");
    assert_eq!(row.get::<_, i64>(1), 2);
    assert!(row.get::<_, i64>(2) >= 5, "missed {}", row.get::<_, i64>(2));
    assert_eq!(row.get::<_, String>(3), "lost");

    shutdown.cancel();
    balancer.await.unwrap().unwrap();
}

/// The workers of a queue after the latest cycle.
async fn workers_of(pool: &deadpool_postgres::Pool, queue: &str) -> i32 {
    pool.get()
        .await
        .unwrap()
        .query_one(
            "SELECT workers FROM queue_balance WHERE queue = $1",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0)
}

async fn set(pool: &deadpool_postgres::Pool, key: &str, value: serde_json::Value) {
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO system_config (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &value],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_maintenance_and_cooling_follow_the_hot_configuration_and_survive_a_restart() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO queues (name, kinds, priority, min_workers) VALUES
                 ('urgent', '{sim}', 1, 0), ('bulk', '{sim}', 5, 1);
             INSERT INTO system_config (key, value) VALUES ('cooling_period', '\"0s\"');",
        )
        .await
        .unwrap();
    demand(&bus, "bulk", 100, false).await;
    demand(&bus, "urgent", 0, false).await;
    let topology = &bus.topology;
    for w in ["w1", "w2", "w3"] {
        beat(&bus, w, vec![Kind::Sim], 60_000).await;
    }
    let (shutdown, balancer) = start(&bus, &db, "100ms");
    let serving = "SELECT string_agg(worker_id, ',' ORDER BY worker_id) FILTER (WHERE to_queue IS NOT NULL)
                     FROM (SELECT DISTINCT ON (worker_id) worker_id, to_queue FROM balancer_decisions
                            WHERE worker_id IS NOT NULL ORDER BY worker_id, id DESC) latest
                    WHERE to_queue = 'urgent'";
    wait_rows(
        &pool,
        "SELECT workers::text FROM queue_balance WHERE queue = 'bulk'",
        &["3"],
    )
    .await;

    // Urgent work comes; preemption is off: urgent waits, and says why.
    demand(&bus, "urgent", 100, false).await;
    wait_rows(
        &pool,
        "SELECT coalesce(hold, '') FROM queue_balance WHERE queue = 'urgent'",
        &["held: no idle worker (those that could serve it serve other queues; preemption_mode is off)"],
    )
    .await;

    // Switched on without a restart: urgent takes workers down to bulk's minimum.
    set(&pool, "preemption_mode", serde_json::json!(true)).await;
    wait_rows(
        &pool,
        "SELECT workers::text FROM queue_balance WHERE queue = 'bulk'",
        &["1"],
    )
    .await;
    wait_rows(
        &pool,
        "SELECT DISTINCT reason FROM balancer_decisions WHERE to_queue = 'urgent'",
        &["preempted_by urgent"],
    )
    .await;
    wait_rows(
        &pool,
        &format!("SELECT coalesce(({serving}), '')"),
        &["w1,w2"],
    )
    .await;

    // Maintenance: nothing moves, whatever the demand says.
    set(&pool, "maintenance_mode", serde_json::json!(true)).await;
    demand(&bus, "urgent", 0, false).await;
    wait_rows(
        &pool,
        "SELECT coalesce(hold, '') FROM queue_balance WHERE queue = 'bulk'",
        &["held: maintenance_mode"],
    )
    .await;
    assert_eq!(workers_of(&pool, "urgent").await, 2);

    // Out of maintenance with a long cooling: one move, then the pool is frozen.
    set(&pool, "cooling_period", serde_json::json!("1h")).await;
    set(&pool, "maintenance_mode", serde_json::json!(false)).await;
    wait_rows(
        &pool,
        "SELECT workers::text FROM queue_balance WHERE queue = 'bulk'",
        &["3"],
    )
    .await;
    let cooling = topology.cooling.get("default").await.unwrap();
    assert!(cooling.is_some(), "the default pool cools");
    demand(&bus, "urgent", 100, false).await;
    wait_rows(
        &pool,
        "SELECT left(coalesce(hold, ''), 22) FROM queue_balance WHERE queue = 'urgent'",
        &["held: cooling until 20"],
    )
    .await;

    // The cooling survives a restart, and the restarted balancer takes no assignment away
    // (it reads every worker's last beat before its first decision).
    let mut assignments = topology.assignments.watch_all().await.unwrap();
    shutdown.cancel();
    balancer.await.unwrap().unwrap();
    pool.get()
        .await
        .unwrap()
        .execute("DELETE FROM queue_balance", &[])
        .await
        .unwrap();
    let (shutdown, balancer) = start(&bus, &db, "100ms");
    wait_rows(
        &pool,
        "SELECT left(coalesce(hold, ''), 22) FROM queue_balance WHERE queue = 'urgent'",
        &["held: cooling until 20"],
    )
    .await;
    assert_eq!(workers_of(&pool, "bulk").await, 3);
    // A cycle has run since the restart: whatever it wrote is in the watch already.
    while let Ok(Some(entry)) =
        tokio::time::timeout(Duration::from_millis(200), assignments.next()).await
    {
        let entry = entry.unwrap();
        assert_eq!(
            entry.operation,
            kv::Operation::Put,
            "{} lost its assignment at the restart",
            entry.key
        );
    }
    shutdown.cancel();
    balancer.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_workers_assignment_leaves_no_marker_and_old_history_is_pruned() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO queues (name, kinds) VALUES ('sims', '{sim}');
             INSERT INTO worker_events (worker_id, event, at)
             VALUES ('w0', 'joined', now() - interval '3 hours'), ('w0', 'left', now());
             INSERT INTO balancer_decisions (at, queue, reason)
             VALUES (now() - interval '3 hours', 'sims', 'old'), (now(), 'sims', 'new');",
        )
        .await
        .unwrap();
    let topology = &bus.topology;
    let mut w1 = topology.assignments.watch("w1").await.unwrap();
    demand(&bus, "sims", 3, false).await;
    let (shutdown, balancer) = start_with(
        &bus,
        &db,
        &[
            ("FARO_BALANCER_CYCLE", "60s"),
            ("FARO_BALANCER_ASSIGNMENT_MARKER_TTL", "1s"),
            ("FARO_BALANCER_WORKER_EVENTS_KEPT", "1h"),
            ("FARO_BALANCER_DECISIONS_KEPT", "1h"),
        ],
    );

    beat(&bus, "w1", vec![Kind::Sim], 5000).await;
    assert_eq!(
        next_assignment(&mut w1).await,
        Some(vec!["sims".to_owned()])
    );
    // The first cycle pruned what was older than an hour.
    wait_rows(
        &pool,
        "SELECT worker_id || ' ' || event FROM worker_events WHERE worker_id = 'w0'",
        &["w0 left"],
    )
    .await;
    wait_rows(
        &pool,
        "SELECT reason FROM balancer_decisions WHERE reason IN ('old', 'new')",
        &["new"],
    )
    .await;

    // The worker leaves: its watcher sees the removal, then the marker goes too.
    topology.workers.delete("w1").await.unwrap();
    assert_eq!(next_assignment(&mut w1).await, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        interval.tick().await;
        // The purge's marker expires; JetStream leaves a delete marker of its own in its
        // place for a second (the bucket's limit_markers), and then nothing.
        let stored = topology.assignments.status().await.unwrap().values();
        let entry = topology.assignments.entry("w1").await.unwrap();
        if stored == 0 && entry.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stored} entries still in the assignments bucket, w1: {entry:?}"
        );
    }

    shutdown.cancel();
    balancer.await.unwrap().unwrap();
}
