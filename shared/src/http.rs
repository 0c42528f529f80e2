//! The HTTP side every service has: `/metrics` for Prometheus and `/health` for probes.
//!
//! Owns the process-wide Prometheus recorder, and what every service exports besides its own
//! metrics: `faro_build_info` and the process metrics (`process`). A service describes its
//! metrics through [`Recorder::describe`], which only the installed recorder offers, so no
//! description can go to the no-op recorder that stands before it. It serves nothing else:
//! services talk to each other over NATS only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `faro_build_info{version,commit}`: 1 on every service.
pub const BUILD_INFO: &str = "faro_build_info";

/// The commit this build comes from (`FARO_COMMIT`, else `git rev-parse --short HEAD` at build
/// time, else `unknown`; see `build.rs`).
pub const COMMIT: &str = env!("BUILD_COMMIT");

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder: installed on first use with `faro_build_info`, then kept.
/// Several services in one process (tests, the benchmark) share it.
fn installed() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ])
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder was installed first; /metrics may be empty");
        }
        Recorder(()).describe(&[Metric::gauge(
            BUILD_INFO,
            Unit::Count,
            "1, labelled with the version and the commit this service was built from.",
        )]);
        metrics::gauge!(BUILD_INFO, "version" => crate::VERSION, "commit" => COMMIT).set(1.0);
        handle
    })
}

/// The process-wide recorder's handle, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    installed().clone()
}

/// The installed process-wide recorder: what a service describes its metrics to.
#[derive(Debug, Clone, Copy)]
pub struct Recorder(());

/// Installs the process-wide recorder if no one has yet, and returns it. A service starts
/// with `http::recorder().describe(metrics::METRICS)`.
pub fn recorder() -> Recorder {
    installed();
    Recorder(())
}

impl Recorder {
    /// Gives each metric its help text and unit; they show in `/metrics` once it has a value.
    pub fn describe(self, metrics: &[Metric]) {
        for metric in metrics {
            let Metric {
                name,
                kind,
                unit,
                help,
            } = *metric;
            match kind {
                Kind::Counter => metrics::describe_counter!(name, unit, help),
                Kind::Gauge => metrics::describe_gauge!(name, unit, help),
                Kind::Histogram => metrics::describe_histogram!(name, unit, help),
            }
        }
    }
}

/// What kind of metric a [`Metric`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric a service exports, declared once in its `metrics.rs` with its help text and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
}

impl Metric {
    pub const fn counter(name: &'static str, unit: Unit, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Counter,
            unit,
            help,
        }
    }

    pub const fn gauge(name: &'static str, unit: Unit, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Gauge,
            unit,
            help,
        }
    }

    pub const fn histogram(name: &'static str, unit: Unit, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Histogram,
            unit,
            help,
        }
    }
}

/// What `/metrics` answers: every recorded metric, then this process's metrics read now.
pub fn render() -> String {
    let mut text = installed().render();
    crate::process::write(&mut text);
    text
}

/// Whether the service is ready; `/health` answers 503 until it is.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves `/metrics` and `/health` on `addr` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let handle = installed();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for /metrics (FARO_HTTP_ADDR)"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(|| async { render() }))
        .route(
            "/health",
            get(move || {
                let ready = health.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        );
    let task = tokio::spawn(async move {
        let stop = shutdown.clone();
        let upkeep_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => handle.run_upkeep(),
                }
            }
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics server stopped");
        }
        upkeep_task.abort();
    });
    tracing::info!(addr = %bound, "serving /metrics and /health");
    Ok((bound, task))
}

/// For a service's `metrics.rs` test: every metric name its `source` declares as a constant
/// is in `metrics` once, and each name follows the conventions (counters end in `_total`,
/// others do not; seconds and bytes are in the name).
#[cfg(feature = "test-util")]
pub fn assert_all_declared(source: &str, metrics: &[Metric]) {
    let constants: Vec<&str> = source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub const "))
        .filter_map(|line| line.split_once(": &str = \"")?.1.split_once('"'))
        .map(|(name, _)| name)
        .collect();
    assert!(!constants.is_empty(), "no metric constant found");
    for name in &constants {
        let found = metrics.iter().filter(|m| m.name == *name).count();
        assert_eq!(found, 1, "{name} is in METRICS {found} times, not once");
    }
    for metric in metrics {
        let name = metric.name;
        assert!(constants.contains(&name), "{name} is not a constant");
        assert_eq!(
            name.ends_with("_total"),
            metric.kind == Kind::Counter,
            "{name}: counters, and only they, end in _total"
        );
        let suffix = match metric.unit {
            Unit::Seconds => Some("_seconds"),
            Unit::Bytes => Some("_bytes"),
            _ => None,
        };
        if let Some(suffix) = suffix {
            assert!(
                name.trim_end_matches("_total").ends_with(suffix),
                "{name}: its unit goes in its name ({suffix})"
            );
        }
        assert!(!metric.help.is_empty(), "{name} has no help text");
    }
}
