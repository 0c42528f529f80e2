//! Recurring jobs through the whole system: one run per slot, slots one interval apart at
//! the job's stable offset, and a slot skipped (and recorded) while the previous run goes on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use faro_bench::system::{Options, System};

/// status, started_at, finished_at, error
type RunRow = (
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recurring_jobs_fire_once_per_slot_and_skip_while_running() {
    let system = System::start(Options::default()).await.unwrap();
    let jobs = serde_json::json!({"jobs": [
        {"id": "tick", "queue": "poll", "kind": "sim", "target": "olt-1", "interval": "200ms",
         "params": {"duration_ms": [0, 5], "outcomes": {"succeeded": 1}}},
        {"id": "slow", "queue": "poll", "kind": "sim", "target": "olt-2", "interval": "200ms",
         "params": {"duration_ms": 450, "outcomes": {"succeeded": 1}}}
    ]});
    let body = serde_json::to_vec(&jobs).unwrap();
    system.submit(body.clone(), "recurring").await.unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'tick' AND status = 'succeeded'",
            6,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'slow' AND status = 'skipped'",
            2,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    // The same definition again changes nothing: no slot fires twice.
    system.submit(body, "recurring-again").await.unwrap();

    let client = system.pool.get().await.unwrap();
    let slots: Vec<DateTime<Utc>> = client
        .query(
            "SELECT slot_at FROM runs WHERE job_id = 'tick' ORDER BY slot_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(slots.len() >= 6);
    for pair in slots.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_milliseconds(), 200, "{slots:?}");
    }
    let offset = faro_dispatcher::schedule::offset_ms(
        &faro_shared::domain::JobId::parse("tick").unwrap(),
        Duration::from_millis(200),
    );
    assert!(slots
        .iter()
        .all(|s| s.timestamp_millis().rem_euclid(200) == offset));

    // The slow job never overlaps itself; the slots it could not run are recorded as skipped.
    let runs: Vec<RunRow> = client
        .query(
            "SELECT status, started_at, finished_at, error FROM runs
              WHERE job_id = 'slow' ORDER BY slot_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let ran: Vec<_> = runs
        .iter()
        .filter(|r| r.0 == "succeeded")
        .map(|r| (r.1.unwrap(), r.2.unwrap()))
        .collect();
    assert!(!ran.is_empty());
    for pair in ran.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "runs of one job overlapped: {ran:?}"
        );
    }
    let skipped: Vec<_> = runs.iter().filter(|r| r.0 == "skipped").collect();
    assert!(skipped
        .iter()
        .all(|r| r.3.as_deref().unwrap_or_default().contains("still running")));
    let duplicates: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT job_id, slot_at FROM runs GROUP BY 1, 2 HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(duplicates, 0);
    drop(client);
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_one_runs_a_kept_slot_as_soon_as_the_previous_run_ends() {
    let system = System::start(Options::default()).await.unwrap();
    let jobs = serde_json::json!({"jobs": [
        {"id": "slow", "queue": "poll", "kind": "sim", "target": "olt-1", "interval": "200ms",
         "overlap": "queue_one", "params": {"duration_ms": 450, "outcomes": {"succeeded": 1}}}
    ]});
    system
        .submit(serde_json::to_vec(&jobs).unwrap(), "queue-one")
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'slow' AND status = 'succeeded'",
            4,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let client = system.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT slot_at, started_at, finished_at FROM runs
              WHERE job_id = 'slow' AND status = 'succeeded' ORDER BY slot_at",
            &[],
        )
        .await
        .unwrap();
    let ran: Vec<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for pair in ran.windows(2) {
        let (previous, next) = (pair[0], pair[1]);
        // Never two at once...
        assert!(next.1 >= previous.2, "runs of one job overlapped: {ran:?}");
        // ...and the next one's slot came while the previous ran: it was kept, not skipped
        // (with `skip`, every run's slot comes after the previous run ended).
        assert!(next.0 < previous.2, "slot {} was not kept: {ran:?}", next.0);
    }
    // Slots beyond the one kept are skipped and recorded.
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'slow' AND status = 'skipped'",
            1,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    drop(client);
    system.stop().await.unwrap();
}

/// Slots that come due while PostgreSQL cannot record them (here a trigger refuses every new
/// slot for a while) are not dropped: once it can, the latest runs and each earlier one is
/// recorded as skipped with the reason, so the job's slots have no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_that_came_due_while_postgresql_could_not_record_them_are_recorded_later() {
    let system = System::start(Options::default()).await.unwrap();
    let job = serde_json::json!({"id": "poll", "queue": "poll", "kind": "sim", "target": "olt-1",
        "interval": "300ms", "params": {"duration_ms": 0, "outcomes": {"succeeded": 1}}});
    system.submit_jobs(&[job], "poll").await.unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE status = 'succeeded'",
            2,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let client = system.pool.get().await.unwrap();
    client
        .batch_execute(
            "CREATE FUNCTION refuse_slots() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'slots refused by the test'; END $$;
             CREATE TRIGGER refuse_slots BEFORE INSERT ON runs
                 FOR EACH ROW WHEN (NEW.slot_at IS NOT NULL) EXECUTE FUNCTION refuse_slots();",
        )
        .await
        .unwrap();
    // Several slots come due and fail to be recorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let failed = faro_shared::http::metrics_handle()
            .render()
            .lines()
            .find_map(|line| {
                line.strip_prefix("faro_dispatcher_slots_total{result=\"failed\"} ")
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or_default();
        if failed >= 4.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots never failed to record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
        .batch_execute("DROP TRIGGER refuse_slots ON runs")
        .await
        .unwrap();
    system
        .wait_count(
            &format!(
                "SELECT count(*) FROM runs WHERE status = 'skipped' AND error = '{}'",
                faro_dispatcher::store::MISSED
            ),
            3,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let slots: Vec<DateTime<Utc>> = client
        .query(
            "SELECT slot_at FROM runs WHERE job_id = 'poll' ORDER BY slot_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let gaps: Vec<_> = slots
        .windows(2)
        .filter(|pair| (pair[1] - pair[0]).num_milliseconds() != 300)
        .collect();
    assert!(gaps.is_empty(), "slots missing between {gaps:?}");
    drop(client);
    system.stop().await.unwrap();
}
