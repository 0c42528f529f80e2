//! The settings task: reloads hot settings and target definitions and applies them.

use std::sync::Arc;
use std::time::Duration;

use faro_shared::messages::RunMessage;
use faro_shared::settings::Setting;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::catalog;
use crate::metrics as m;
use crate::publisher::publish_admitted;
use crate::state::Dispatcher;
use crate::store;

/// Applies a hot setting to admission; returns the runs it lets start.
pub(crate) fn apply_to(admission: &mut Admission, setting: &Setting) -> Vec<RunMessage> {
    match setting {
        Setting::MaintenanceMode(on) => {
            if admission.is_paused() != *on {
                tracing::warn!(maintenance = on, "maintenance mode changed");
            }
            admission.set_paused(*on)
        }
        Setting::TargetMaxConcurrency(limit) => admission.set_default_limit(*limit),
        Setting::QueueMaxInFlight(queue, limit) => {
            if admission.limits().queue_set.get(queue) != Some(limit) {
                tracing::info!(%queue, limit = ?limit, "queue limit changed");
            }
            admission.set_queue_limit(queue.clone(), *limit)
        }
        Setting::LogLevel(filter) => {
            match faro_shared::telemetry::set_filter(filter) {
                Ok(true) => tracing::warn!(%filter, "log level changed"),
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    error = faro_shared::pg::error_text(&error),
                    "log level refused"
                ),
            }
            Vec::new()
        }
        // The workers' settings (the balancer hands them out with the assignments) and the
        // balancer's own.
        Setting::SnmpTestMode(_)
        | Setting::WorkerCpuMax(_)
        | Setting::WorkerMemMax(_)
        | Setting::StrictIsolation(_)
        | Setting::PreemptionMode(_)
        | Setting::CoolingPeriod(_)
        | Setting::CycleInterval(_) => Vec::new(),
        // Read by the history task at each check.
        Setting::RunsRetention(_) => Vec::new(),
    }
}

/// Applies a hot setting at once.
pub(crate) fn apply_setting(d: &Dispatcher, setting: &Setting) {
    if let Setting::SnmpTestMode(on) = setting {
        let was = d
            .snmp_test_mode
            .swap(*on, std::sync::atomic::Ordering::Relaxed);
        if was != *on {
            tracing::warn!(test_mode = on, "SNMP test mode changed");
        }
    }
    let admitted = apply_to(&mut d.admission(), setting);
    metrics::gauge!(m::MAINTENANCE).set(if d.admission().is_paused() { 1.0 } else { 0.0 });
    publish_admitted(d, admitted);
}

/// Reads the hot settings and the limits of targets and queues every few seconds (another
/// dispatcher, `faro target`, or an operator's SQL may have changed them); a setting removed
/// goes back to its default.
pub(crate) async fn settings_loop(
    d: Arc<Dispatcher>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(error) = reload_settings(&d).await {
            tracing::warn!(
                error = faro_shared::pg::error_text(&error),
                "cannot read settings"
            );
        }
    }
}

pub(crate) async fn reload_settings(d: &Dispatcher) -> anyhow::Result<()> {
    let _serialized = d.settings.lock().await;
    let stored = faro_shared::settings::load(&d.pool).await?;
    let targets = store::target_limits(&d.pool).await?;
    let disabled = catalog::disabled_targets(&d.pool).await?;
    let devices = catalog::devices(&d.pool).await?;
    let queues = store::queue_limits(&d.pool).await?;
    *d.devices
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(devices);
    apply_setting(d, &Setting::MaintenanceMode(stored.maintenance()));
    let limit = stored
        .target_max_concurrency()
        .unwrap_or(d.config.target_max_concurrency);
    apply_setting(d, &Setting::TargetMaxConcurrency(limit));
    let filter = stored
        .log_level()
        .map_or_else(faro_shared::telemetry::default_filter, str::to_owned);
    apply_setting(d, &Setting::LogLevel(filter));
    let test_mode = stored.all().contains(&Setting::SnmpTestMode(true));
    apply_setting(d, &Setting::SnmpTestMode(test_mode));
    let queue_set = stored
        .all()
        .iter()
        .filter_map(|s| match s {
            Setting::QueueMaxInFlight(queue, limit) => Some((queue.clone(), *limit)),
            _ => None,
        })
        .collect();
    let admitted = {
        let mut admission = d.admission();
        let mut admitted = admission.set_target_limits(targets);
        admitted.extend(admission.set_disabled(disabled));
        admitted.extend(admission.set_queue_definitions(queues));
        admitted.extend(admission.set_queue_settings(queue_set));
        admitted
    };
    publish_admitted(d, admitted);
    Ok(())
}
