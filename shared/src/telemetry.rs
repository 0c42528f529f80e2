//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG`, as text or JSON.
//!
//! Owns the global subscriber and nothing else; metrics live in `http`.

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// The filter in force, changeable at run time (`log.level` in the hot configuration).
struct Filter {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

static FILTER: OnceLock<Filter> = OnceLock::new();

/// The filter a service starts with: `RUST_LOG`, else `info`.
pub fn default_filter() -> String {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| "info".to_owned())
}

/// Follows the hot `log.level`: the given filter, or the start-up one (`RUST_LOG`, else
/// `info`) when none is set; a change is logged, a bad filter refused with a warning.
pub fn follow_log_level(setting: Option<&str>) {
    let filter = setting.map_or_else(default_filter, str::to_owned);
    match set_filter(&filter) {
        Ok(true) => tracing::warn!(%filter, "log level changed"),
        Ok(false) => {}
        Err(error) => tracing::warn!(error = crate::pg::error_text(&error), "log level refused"),
    }
}

/// Replaces the log filter (`info`, `info,faro_dispatcher=debug`); `Ok(false)` when it was
/// already in force or logging is not set up (tests).
pub fn set_filter(filter: &str) -> anyhow::Result<bool> {
    let Some(state) = FILTER.get() else {
        return Ok(false);
    };
    let mut current = state
        .current
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *current == filter {
        return Ok(false);
    }
    let parsed = EnvFilter::try_new(filter)
        .map_err(|error| anyhow::anyhow!("log filter {filter:?} is not valid: {error}"))?;
    state.handle.reload(parsed)?;
    filter.clone_into(&mut current);
    Ok(true)
}

/// Installs the global subscriber for `service`. `RUST_LOG` filters (default `info`); the
/// filter can be changed later with [`set_filter`]. Calling it twice (several services in one
/// process) keeps the first.
pub fn init(service: &'static str, format: LogFormat) {
    let initial = default_filter();
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&initial));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(Filter {
            handle,
            current: Mutex::new(initial),
        });
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    }
}
