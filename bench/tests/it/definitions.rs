//! Targets and jobs managed at run time (`faro target`, `faro job`): every change applies
//! without a restart, through the leading dispatcher's API.

use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::messages::{JobReply, JobRequest, TargetReply, TargetRequest};
use faro_shared::targetfile;

async fn targets(system: &System, request: &TargetRequest) -> TargetReply {
    let reply = system.ask("targets", request).await.unwrap();
    serde_json::from_value(reply.clone()).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

async fn jobs(system: &System, request: &JobRequest) -> JobReply {
    let reply = system.ask("jobs", request).await.unwrap();
    serde_json::from_value(reply.clone()).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

fn set(id: &str, enabled: bool) -> TargetRequest {
    TargetRequest::SetEnabled {
        id: faro_shared::domain::TargetId::parse(id).unwrap(),
        enabled,
    }
}

async fn count(system: &System, sql: &str) -> i64 {
    system.one(sql).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_added_limited_disabled_and_enabled_without_restart() {
    let system = System::start(Options::default()).await.unwrap();
    let defined = targetfile::parse(
        br#"[{"id": "olt-a", "address": "192.0.2.1", "max_concurrency": 1,
              "snmp": {"version": "2c", "community": "s3cret"}},
             {"id": "olt-b", "address": "192.0.2.2", "enabled": false},
             {"id": "olt-c", "address": "192.0.2.3", "enabled": false}]"#,
    )
    .unwrap();
    let put = targets(&system, &TargetRequest::Put { targets: defined }).await;
    assert_eq!(put.changed, 3);
    let slots = system.watch_slots().await.unwrap();

    let sim = serde_json::json!({"duration_ms": 100, "outcomes": {"succeeded": 1}});
    let mut batch: Vec<_> = (0..6)
        .map(|_| serde_json::json!({"queue": "poll", "kind": "sim", "target": "olt-a", "params": sim}))
        .collect();
    batch.extend((0..4).map(
        |_| serde_json::json!({"queue": "poll", "kind": "sim", "target": "olt-b", "params": sim}),
    ));
    batch.push(
        serde_json::json!({"id": "poll-c", "queue": "poll", "kind": "sim",
                                   "target": "olt-c", "interval": "200ms", "params": sim}),
    );
    batch.push(
        serde_json::json!({"id": "poll-a", "queue": "poll", "kind": "sim",
                                   "target": "olt-a", "interval": "200ms", "params": sim}),
    );
    system.submit_jobs(&batch, "targets").await.unwrap();

    // olt-a runs one at a time (its own limit); olt-b's runs and olt-c's slots wait.
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE target = 'olt-a' AND job_id <> 'poll-a' AND status = 'succeeded'",
            6,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'poll-a' AND status = 'succeeded'",
            3,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(slots.peaks().get("olt-a"), Some(&1), "{:?}", slots.peaks());
    assert_eq!(
        count(&system, "SELECT count(*) FROM runs WHERE target IN ('olt-b', 'olt-c') AND status NOT IN ('pending', 'dispatched')").await,
        0,
        "a disabled target was polled"
    );
    assert_eq!(
        count(&system, "SELECT count(*) FROM runs WHERE job_id = 'poll-c'").await,
        0,
        "a disabled target's recurring job fired"
    );
    let why = system
        .ask(
            "explain",
            &faro_shared::messages::ExplainRequest::Job("poll-c".to_owned()),
        )
        .await
        .unwrap();
    assert!(
        why.to_string().contains("its target olt-c is disabled"),
        "{why}"
    );
    let listed = targets(&system, &TargetRequest::List).await.targets;
    let b = listed.iter().find(|t| t.id.as_str() == "olt-b").unwrap();
    assert!(!b.enabled);
    assert_eq!((b.in_flight, b.waiting), (0, 4));
    let a = listed.iter().find(|t| t.id.as_str() == "olt-a").unwrap();
    assert_eq!((a.max_concurrency, a.limit), (Some(1), 1));
    assert_eq!(a.address.as_deref(), Some("192.0.2.1:161"));
    assert_eq!(
        a.snmp["community"], "***",
        "a secret was listed: {}",
        a.snmp
    );
    let waiting: uuid::Uuid = system
        .one("SELECT id FROM runs WHERE target = 'olt-b' LIMIT 1")
        .await
        .unwrap();
    let explained = system
        .ask(
            "explain",
            &faro_shared::messages::ExplainRequest::Run(waiting),
        )
        .await
        .unwrap();
    assert!(
        explained.to_string().contains("target olt-b is disabled"),
        "{explained}"
    );

    // Enabled: the waiting runs start at once, the recurring job fires its next slots.
    targets(&system, &set("olt-b", true)).await;
    targets(&system, &set("olt-c", true)).await;
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE target = 'olt-b' AND status = 'succeeded'",
            4,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'poll-c' AND status = 'succeeded'",
            1,
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    // A limit raised at run time applies at once.
    let mut raised =
        targetfile::parse(br#"[{"id": "olt-a", "address": "192.0.2.1", "max_concurrency": 4}]"#)
            .unwrap();
    targets(
        &system,
        &TargetRequest::Put {
            targets: std::mem::take(&mut raised),
        },
    )
    .await;
    let listed = targets(&system, &TargetRequest::List).await.targets;
    assert_eq!(
        listed
            .iter()
            .find(|t| t.id.as_str() == "olt-a")
            .unwrap()
            .limit,
        4
    );

    let unknown = system.ask("targets", &set("olt-zz", false)).await.unwrap();
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("no target olt-zz"),
        "{unknown}"
    );
    // Targets sent as the API takes them (not through a file) are checked as a file's are,
    // before the database: refused by target and field, their secrets never echoed.
    for (target, field) in [
        (
            serde_json::json!({"id": "olt-x", "address": "192.0.2.9", "max_concurrency": 0,
                               "snmp": {"version": "2c", "community": "s3cret-x"}}),
            "max_concurrency",
        ),
        (
            serde_json::json!({"id": "olt-y", "address": "no such:host:1",
                               "snmp": {"version": "2c", "community": "s3cret-y"}}),
            "address",
        ),
    ] {
        let refused = system
            .ask(
                "targets",
                &serde_json::json!({"op": "put", "targets": [target]}),
            )
            .await
            .unwrap();
        let error = refused["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("target 0") && error.contains(field),
            "{refused}"
        );
        assert!(!error.contains("s3cret"), "{refused}");
    }
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_listed_disabled_and_enabled_without_restart() {
    let system = System::start(Options::default()).await.unwrap();
    let sim = serde_json::json!({"duration_ms": [0, 5], "outcomes": {"succeeded": 1}});
    let defined = [
        serde_json::json!({"id": "tick", "queue": "poll", "kind": "sim", "target": "olt-1",
                           "interval": "200ms", "params": sim}),
        serde_json::json!({"id": "other", "queue": "poll", "kind": "sim", "target": "olt-2",
                           "interval": "200ms", "params": sim}),
    ];
    system.submit_jobs(&defined, "jobs").await.unwrap();
    let succeeded = |job: &str| {
        format!("SELECT count(*) FROM runs WHERE job_id = '{job}' AND status = 'succeeded'")
    };
    system
        .wait_count(&succeeded("tick"), 2, Duration::from_secs(20))
        .await
        .unwrap();

    let all = jobs(
        &system,
        &JobRequest::List {
            queue: None,
            target: None,
            limit: 10,
            all: false,
        },
    )
    .await;
    assert_eq!(all.total, 2);
    let tick = all.jobs.iter().find(|j| j.id.as_str() == "tick").unwrap();
    assert_eq!(tick.interval_ms, Some(200));
    assert!(tick.enabled && tick.last_run_at.is_some() && tick.last_success_at.is_some());
    assert_eq!(tick.last_failure_at, None);
    let on_olt_2 = jobs(
        &system,
        &JobRequest::List {
            queue: None,
            target: Some(faro_shared::domain::TargetId::parse("olt-2").unwrap()),
            limit: 10,
            all: false,
        },
    )
    .await;
    assert_eq!(on_olt_2.total, 1);
    assert_eq!(on_olt_2.jobs[0].id.as_str(), "other");

    // Disabled: no more slots, while the other job goes on.
    let switch = |enabled| JobRequest::SetEnabled {
        id: faro_shared::domain::JobId::parse("tick").unwrap(),
        enabled,
    };
    jobs(&system, &switch(false)).await;
    let others = count(&system, &succeeded("other")).await;
    system
        .wait_count(&succeeded("other"), others + 1, Duration::from_secs(10))
        .await
        .unwrap();
    let ticks = count(&system, "SELECT count(*) FROM runs WHERE job_id = 'tick'").await;
    system
        .wait_count(&succeeded("other"), others + 6, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        count(&system, "SELECT count(*) FROM runs WHERE job_id = 'tick'").await,
        ticks,
        "a disabled job fired"
    );
    let listed = jobs(
        &system,
        &JobRequest::List {
            queue: None,
            target: Some(faro_shared::domain::TargetId::parse("olt-1").unwrap()),
            limit: 10,
            all: false,
        },
    )
    .await;
    assert!(!listed.jobs[0].enabled);

    // Enabled again: it fires again.
    jobs(&system, &switch(true)).await;
    system
        .wait_count(
            "SELECT count(*) FROM runs WHERE job_id = 'tick'",
            ticks + 2,
            Duration::from_secs(20),
        )
        .await
        .unwrap();

    let unknown = system
        .ask(
            "jobs",
            &JobRequest::SetEnabled {
                id: faro_shared::domain::JobId::parse("nope").unwrap(),
                enabled: false,
            },
        )
        .await
        .unwrap();
    assert!(
        unknown["error"].as_str().unwrap().contains("no job nope"),
        "{unknown}"
    );
    system.stop().await.unwrap();
}
