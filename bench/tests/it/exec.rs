//! `exec` end to end: only the worker's allow-listed programs run, parameters are checked
//! before anything starts, and a program that hangs is killed at its timeout.

use std::time::Duration;

use faro_bench::system::{Options, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allow_listed_programs_run_with_checked_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let allowlist = dir.path().join("allowlist.json");
    std::fs::write(
        &allowlist,
        r#"{"commands": {
            "echo": {"program": "/bin/echo", "args": ["-n", "{text}"], "params": {"text": "word"}},
            "hang": {"program": "/bin/sleep", "args": ["{secs}"], "params": {"secs": "int"},
                     "timeout": "500ms"}
        }}"#,
    )
    .unwrap();
    let system = System::start(Options {
        env: vec![(
            "FARO_WORKER_EXEC_ALLOWLIST".to_owned(),
            allowlist.display().to_string(),
        )],
        ..Options::default()
    })
    .await
    .unwrap();
    let exec = |id: &str, command: &str, args: serde_json::Value| {
        serde_json::json!({"id": id, "queue": "tools", "kind": "exec", "max_attempts": 1,
                           "params": {"command": command, "args": args}})
    };
    system
        .submit_jobs(
            &[
                exec("echo", "echo", serde_json::json!({"text": "olt-1:ok"})),
                exec("unknown", "reboot", serde_json::json!({})),
                exec("evil", "echo", serde_json::json!({"text": "x;reboot"})),
                exec("hang", "hang", serde_json::json!({"secs": "60"})),
            ],
            "exec",
        )
        .await
        .unwrap();
    system
        .wait_terminal(4, Duration::from_secs(60))
        .await
        .unwrap();
    let runs: std::collections::BTreeMap<String, String> = system
        .pairs("SELECT job_id, status || ': ' || coalesce(error, '') FROM runs")
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(runs["echo"], "succeeded: ");
    assert!(
        runs["unknown"].starts_with(
            "failed: command \"reboot\" is not in this worker's allow-list; allowed: echo, hang"
        ),
        "{runs:?}"
    );
    assert!(
        runs["evil"].contains("parameter text=\"x;reboot\" is refused"),
        "{runs:?}"
    );
    assert!(
        runs["hang"].starts_with("timed_out: /bin/sleep killed after its timeout of 500 ms"),
        "{runs:?}"
    );
    let stdout: String = system
        .one("SELECT output->>'stdout' FROM runs WHERE job_id = 'echo'")
        .await
        .unwrap();
    assert_eq!(stdout, "olt-1:ok");
    let hung: f64 = system
        .one("SELECT extract(epoch FROM finished_at - started_at)::float8 FROM runs WHERE job_id = 'hang'")
        .await
        .unwrap();
    assert!(hung < 5.0, "the hung program ran {hung} s");
    system.stop().await.unwrap();
}

/// The previous orchestrator's batch file, as it was written, runs: each task an `exec` of
/// its algorithm with its parameters, in the configured batch queue; the batch's metadata and
/// the tasks' descriptions are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_file_of_the_previous_orchestrator_runs_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let allowlist = dir.path().join("allowlist.json");
    std::fs::write(
        &allowlist,
        r#"{"commands": {"ont-report": {"program": "/bin/echo", "args": ["-n", "{olt}", "{slot}"],
                                        "params": {"olt": "word", "slot": "int"}}}}"#,
    )
    .unwrap();
    let system = System::start(Options {
        env: vec![
            (
                "FARO_WORKER_EXEC_ALLOWLIST".to_owned(),
                allowlist.display().to_string(),
            ),
            ("FARO_BATCH_QUEUE".to_owned(), "reports".to_owned()),
        ],
        ..Options::default()
    })
    .await
    .unwrap();
    let batch = r#"{
        "metadata": {"creation_date": "2025-03-01T10:00:00", "description": "nightly ONT report",
                     "total_tasks": 2, "created_by": "noc"},
        "tasks": [
            {"task_id": "t-1", "algorithm": "ont-report", "parameters": {"olt": "olt-7", "slot": 3},
             "priority": "high", "description": "report of olt-7"},
            {"task_id": "t-2", "algorithm": "ont-report", "parameters": {"olt": "olt-8", "slot": 1},
             "priority": "low"}
        ]}"#;
    system.submit(batch.into(), "nightly").await.unwrap();
    system
        .wait_terminal(2, Duration::from_secs(60))
        .await
        .unwrap();
    let runs: std::collections::BTreeMap<String, String> = system
        .pairs(
            "SELECT job_id, status || ' ' || queue || ' ' || coalesce(output->>'stdout', '')
               FROM runs",
        )
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(runs["t-1"], "succeeded reports olt-7 3", "{runs:?}");
    assert_eq!(runs["t-2"], "succeeded reports olt-8 1", "{runs:?}");
    let description: String = system
        .one("SELECT description FROM jobs WHERE id = 't-1'")
        .await
        .unwrap();
    assert_eq!(description, "report of olt-7");
    let kept: serde_json::Value = system
        .one("SELECT batch FROM submissions WHERE id = 'nightly'")
        .await
        .unwrap();
    assert_eq!(kept["description"], "nightly ONT report");
    assert_eq!(kept["created_by"], "noc");
    assert_eq!(kept["total_tasks"], 2);
    // `faro explain job` says what the task is.
    let explained = system
        .ask("explain", &serde_json::json!({"job": "t-1"}))
        .await
        .unwrap();
    assert!(
        explained.to_string().contains("described as"),
        "{explained}"
    );
    system.stop().await.unwrap();
}
