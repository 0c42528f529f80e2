//! Hot configuration through the dispatcher's API: maintenance mode holds new dispatches and
//! lets them go when switched off; a bad key or value is refused with the accepted forms.

use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::settings::{ConfigReply, Setting};

async fn config(system: &System, body: serde_json::Value) -> serde_json::Value {
    system.ask("config", &body).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_holds_runs_until_it_is_switched_off() {
    let system = System::start(Options::default()).await.unwrap();

    let refused = config(
        &system,
        serde_json::json!({"key": "maintenance", "value": "on"}),
    )
    .await;
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("maintenance_mode") && error.contains("target.max_concurrency"),
        "{error}"
    );
    let refused = config(
        &system,
        serde_json::json!({"key": "maintenance_mode", "value": "soon"}),
    )
    .await;
    assert!(refused["error"].as_str().unwrap().contains("true or false"));

    let on = config(
        &system,
        serde_json::json!({"key": "maintenance_mode", "value": "true"}),
    )
    .await;
    let on: ConfigReply = serde_json::from_value(on).unwrap();
    assert!(
        on.settings.contains(&Setting::MaintenanceMode(true)),
        "{:?}",
        on.settings
    );

    let jobs: Vec<_> = (0..5)
        .map(|i| {
            serde_json::json!({"queue": "q", "kind": "sim", "target": format!("olt-{i}"),
                                    "params": {"duration_ms": 0}})
        })
        .collect();
    system
        .submit(serde_json::to_vec(&jobs).unwrap(), "held")
        .await
        .unwrap();
    // The dispatcher took them and holds them: its waiting gauge says so, nothing was published.
    system
        .wait_metric(
            "faro_dispatcher_runs_waiting{reason=\"maintenance\"} 5",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let jobs_stream = system.js.get_stream(system.ns.jobs_stream()).await.unwrap();
    assert_eq!(jobs_stream.get_info().await.unwrap().state.messages, 0);
    assert_eq!(system.count_terminal().await.unwrap(), 0);

    config(
        &system,
        serde_json::json!({"key": "maintenance_mode", "value": "off"}),
    )
    .await;
    system
        .wait_terminal(5, Duration::from_secs(30))
        .await
        .unwrap();
    system.stop().await.unwrap();
}
