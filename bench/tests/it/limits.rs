//! The per-target concurrency limit through the whole system: an OLT is never polled by more
//! than `max_concurrency` runs at once, and waiting runs start as soon as a slot frees.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use faro_bench::system::{Options, System};

/// Most runs of each key (a target, a queue) executing at the same instant, from recorded
/// start and end times.
fn peak_by_target(rows: &[(String, DateTime<Utc>, DateTime<Utc>)]) -> BTreeMap<String, i32> {
    let mut edges: BTreeMap<String, Vec<(DateTime<Utc>, i32)>> = BTreeMap::new();
    for (target, started, finished) in rows {
        let e = edges.entry(target.clone()).or_default();
        e.push((*started, 1));
        e.push((*finished, -1));
    }
    edges
        .into_iter()
        .map(|(target, mut e)| {
            // An end and a start at the same instant do not overlap.
            e.sort();
            let (mut now, mut peak) = (0, 0);
            for (_, delta) in e {
                now += delta;
                peak = peak.max(now);
            }
            (target, peak)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_target_ever_runs_more_than_its_limit_and_the_limit_is_used() {
    let system = System::start(Options {
        workers: 2,
        capacity: 60,
        env: vec![("FARO_TARGET_MAX_CONCURRENCY".into(), "3".into())],
        ..Options::default()
    })
    .await
    .unwrap();
    let slots = system.watch_slots().await.unwrap();
    let jobs: Vec<_> = (0..400)
        .map(|i| {
            serde_json::json!({"queue": "poll", "kind": "sim", "target": format!("olt-{}", i % 20),
                               "priority": (i % 10) + 1,
                               "params": {"duration_ms": [5, 40], "outcomes": {"succeeded": 1}}})
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "jobs": jobs })).unwrap();
    system.submit(body, "limits").await.unwrap();
    system
        .wait_terminal(400, Duration::from_secs(90))
        .await
        .unwrap();

    let client = system.pool.get().await.unwrap();
    let rows: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = client
        .query("SELECT target, started_at, finished_at FROM runs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows.len(), 400);
    let peaks = peak_by_target(&rows);
    assert_eq!(peaks.len(), 20);
    assert!(
        peaks.values().all(|p| *p <= 3),
        "a target exceeded its limit: {peaks:?}"
    );
    assert!(
        peaks.values().filter(|p| **p == 3).count() >= 10,
        "the limit was hardly reached (a limit of 1 or 2 would pass): {peaks:?}"
    );
    let waiting: i64 = client
        .query_one("SELECT count(*) FROM run_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0, "runs left waiting");
    // The slots as leases in KV: never more than the limit, the limit reached, none left.
    slots.wait_none_held(Duration::from_secs(10)).await.unwrap();
    let lease_peaks = slots.peaks();
    assert_eq!(lease_peaks.len(), 20, "{lease_peaks:?}");
    assert!(
        lease_peaks.values().all(|p| *p <= 3),
        "a target held more slot leases than its limit: {lease_peaks:?}"
    );
    assert!(
        lease_peaks.values().filter(|p| **p == 3).count() >= 10,
        "the slot leases hardly reached the limit: {lease_peaks:?}"
    );
    drop(client);
    system.stop().await.unwrap();
}

#[test]
fn peaks_are_counted_per_target() {
    let t = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
    let rows = vec![
        ("a".to_owned(), t(0), t(10)),
        ("a".to_owned(), t(5), t(15)),
        ("a".to_owned(), t(10), t(20)),
        ("b".to_owned(), t(0), t(30)),
    ];
    let peaks = peak_by_target(&rows);
    assert_eq!(peaks["a"], 2);
    assert_eq!(peaks["b"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_limit_set_at_run_time_holds_over_all_targets() {
    let system = System::start(Options {
        workers: 2,
        capacity: 60,
        ..Options::default()
    })
    .await
    .unwrap();
    // Set through the API, as `faro config set` does; no restart.
    let request = serde_json::json!({"key": "queue.discovery.max_in_flight", "value": "5"});
    let reply = system.ask("config", &request).await.unwrap();
    assert!(
        reply["settings"].as_array().is_some_and(|s| s
            .iter()
            .any(|s| s["key"] == "queue.discovery.max_in_flight")),
        "{reply}"
    );
    let jobs: Vec<_> = (0..200)
        .map(|i| {
            let queue = if i % 4 == 3 { "get" } else { "discovery" };
            serde_json::json!({"queue": queue, "kind": "sim", "target": format!("olt-{}", i % 30),
                               "params": {"duration_ms": [10, 60], "outcomes": {"succeeded": 1}}})
        })
        .collect();
    system.submit_jobs(&jobs, "queues").await.unwrap();
    system
        .wait_terminal(200, Duration::from_secs(90))
        .await
        .unwrap();
    let rows: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = system
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT queue, started_at, finished_at FROM runs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let peaks = peak_by_target(&rows);
    assert_eq!(
        peaks["discovery"], 5,
        "discovery must reach its limit of 5 and never pass it: {peaks:?}"
    );
    assert!(
        peaks["get"] > 5,
        "get has no limit and must not be held by discovery's: {peaks:?}"
    );
    system.stop().await.unwrap();
}
