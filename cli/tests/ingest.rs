//! `faro ingest --watch DIR` against a real dispatcher on NATS and PostgreSQL: good files are
//! submitted once however often they are dropped, bad ones are refused with a report saying
//! where, and a file still being written is left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use faro_shared::pg;
use faro_shared::testing::{TestBus, TestDb};
use tokio_util::sync::CancellationToken;

fn write_settled(dir: &Path, name: &str, body: &[u8]) {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn report(dir: &Path, original: &str) -> serde_json::Value {
    let name = names(dir)
        .into_iter()
        .find(|n| n.ends_with(&format!("-{original}.error.json")))
        .unwrap_or_else(|| panic!("no report for {original} in {:?}", names(dir)));
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_files_are_taken_once_and_bad_ones_are_reported() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let shutdown = CancellationToken::new();
    let dispatcher = tokio::spawn(faro_dispatcher::run(
        faro_dispatcher::Config::from_env(&bus.env(Some(&db))).unwrap(),
        shutdown.clone(),
    ));

    let dir = tempfile::tempdir().unwrap();
    let good = br#"{"jobs": [{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim"},
                             {"queue": "q", "kind": "sim", "target": "olt-1"}]}"#;
    write_settled(dir.path(), "a-good.json", good);
    write_settled(dir.path(), "b-again.json", good);
    write_settled(
        dir.path(),
        "c-bad.json",
        br#"[{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim", "priority": 0}]"#,
    );
    write_settled(dir.path(), "d-truncated.json", &good[..good.len() / 2]);
    let huge: Vec<_> = (0..100)
        .map(|i| serde_json::json!({"id": format!("job-{i}"), "queue": "q", "kind": "sim"}))
        .collect();
    write_settled(
        dir.path(),
        "e-huge.json",
        &serde_json::to_vec(&huge).unwrap(),
    );
    write_settled(dir.path(), "notes.txt", b"not a job file");
    // Still being written: modified just now.
    std::fs::write(dir.path().join("f-fresh.json"), b"{\"jobs\": [").unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_faro"))
        .args(["ingest", "--watch"])
        .arg(dir.path())
        .args(["--once", "--settle", "30s", "--max-bytes", "2000"])
        .env("FARO_NATS_URL", bus.server.url())
        .env("FARO_NAMESPACE", bus.ns.as_str())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("already submitted before"), "{stdout}");

    // What is left, what moved where.
    assert_eq!(
        names(dir.path()),
        ["f-fresh.json", "notes.txt", "processed", "rejected"]
    );
    let processed = names(&dir.path().join("processed"));
    assert_eq!(processed.len(), 2, "{processed:?}");
    assert!(processed[0].ends_with("-a-good.json") && processed[1].ends_with("-b-again.json"));
    let rejected = dir.path().join("rejected");
    assert_eq!(names(&rejected).len(), 6, "{:?}", names(&rejected));
    let bad = report(&rejected, "c-bad.json");
    assert_eq!(
        (bad["error"]["job"].as_u64(), bad["error"]["field"].as_str()),
        (Some(1), Some("priority"))
    );
    assert!(report(&rejected, "d-truncated.json")["error"]["line"].is_number());
    let huge = report(&rejected, "e-huge.json");
    assert!(
        huge["message"].as_str().unwrap().contains("bytes"),
        "{huge}"
    );

    // The good file's three runs exist once, though it was dropped twice.
    let pool = pg::pool(&db.config()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let runs: i64 = pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM runs", &[])
            .await
            .unwrap()
            .get(0);
        if runs >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs never recorded"
        );
        tokio::task::yield_now().await;
    }
    let client = pool.get().await.unwrap();
    let (runs, submissions): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM submissions)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((runs, submissions), (3, 1));
    drop(client);
    shutdown.cancel();
    dispatcher.await.unwrap().unwrap();
}
