//! Chained jobs through the whole system: links run in order, each when its parent's run
//! ends; a failed parent skips its chain with the reason; nothing ever waits forever.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use faro_bench::system::{Options, System};

/// status, started_at, finished_at, error, id, parent_run_id
type Row = (
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
    uuid::Uuid,
    Option<uuid::Uuid>,
);

fn ok(id: &str, after: Option<&str>) -> serde_json::Value {
    let mut job = serde_json::json!({"id": id, "queue": "olt", "kind": "sim", "target": "olt-1",
        "params": {"duration_ms": [10, 30], "outcomes": {"succeeded": 1}}});
    if let Some(parent) = after {
        job["after"] = parent.into();
    }
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_run_in_order_and_failures_skip_the_rest() {
    let system = System::start(Options::default()).await.unwrap();
    let mut failing = ok("bad-discovery", None);
    failing["params"]["outcomes"] = serde_json::json!({"failed": 1});
    failing["target"] = "olt-2".into();
    let mut report = ok("report", Some("bad-discovery"));
    report["run_if"] = "always".into();
    let jobs = serde_json::json!({"jobs": [
        ok("discovery", None),
        ok("descriptions", Some("discovery")),
        ok("optical", Some("descriptions")),
        failing,
        ok("bad-descriptions", Some("bad-discovery")),
        ok("bad-optical", Some("bad-descriptions")),
        report,
    ]});
    system
        .submit(serde_json::to_vec(&jobs).unwrap(), "chains")
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE status NOT IN ('pending', 'dispatched')",
            7,
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    let client = system.pool.get().await.unwrap();
    let rows: BTreeMap<String, Row> = client
        .query(
            "SELECT job_id, status, started_at, finished_at, error, id, parent_run_id FROM runs",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)),
            )
        })
        .collect();
    assert_eq!(rows.len(), 7, "{rows:?}");

    // Discovery, then descriptions, then optical power, each after the previous ended.
    for (parent, child) in [("discovery", "descriptions"), ("descriptions", "optical")] {
        let (p, c) = (&rows[parent], &rows[child]);
        assert_eq!((p.0.as_str(), c.0.as_str()), ("succeeded", "succeeded"));
        assert!(
            c.1.unwrap() >= p.2.unwrap(),
            "{child} started before {parent} ended"
        );
        assert_eq!(c.5, Some(p.4), "{child} does not point at {parent}'s run");
    }

    // The failed parent skips its chain, with the reason, all the way down.
    assert_eq!(rows["bad-discovery"].0, "failed");
    let skipped = &rows["bad-descriptions"];
    assert_eq!(skipped.0, "skipped");
    let reason = skipped.3.as_deref().unwrap();
    assert!(
        reason.contains("bad-discovery") && reason.contains("failed"),
        "{reason}"
    );
    assert_eq!(rows["bad-optical"].0, "skipped");
    assert_eq!(rows["bad-optical"].5, Some(skipped.4));
    // `run_if: always` runs anyway.
    assert_eq!(rows["report"].0, "succeeded");

    // A chain to nowhere, or in a circle, is refused whole.
    let missing = serde_json::json!([ok("orphan", Some("no-such-job"))]);
    system
        .submit(serde_json::to_vec(&missing).unwrap(), "missing")
        .await
        .unwrap();
    let cycle = serde_json::json!([ok("discovery", Some("optical"))]);
    system
        .submit(serde_json::to_vec(&cycle).unwrap(), "cycle")
        .await
        .unwrap();
    let fine = serde_json::json!([ok("after-all", None)]);
    system
        .submit(serde_json::to_vec(&fine).unwrap(), "fine")
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'after-all' AND status = 'succeeded'",
            1,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let submissions: Vec<(String, Option<String>)> = client
        .query("SELECT id, rejected FROM submissions ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let accepted: Vec<&str> = submissions
        .iter()
        .filter(|(_, rejected)| rejected.is_none())
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(accepted, ["chains", "fine"]);
    // The refused ones are recorded with why.
    let refused: Vec<&(String, Option<String>)> =
        submissions.iter().filter(|(_, r)| r.is_some()).collect();
    assert_eq!(refused.len(), 2, "{submissions:?}");
    assert!(refused
        .iter()
        .all(|(_, why)| why.as_deref().is_some_and(|why| why.contains("after"))));
    let orphan: i64 = client
        .query_one("SELECT count(*) FROM jobs WHERE id = 'orphan'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphan, 0, "a refused submission left a job behind");
    drop(client);
    system.stop().await.unwrap();
}
