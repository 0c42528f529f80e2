//! One start-up for every service, and the one event publisher.
//!
//! [`start`] describes the service's metrics and serves `/metrics` and `/health` first (a
//! probe sees a service that is starting, not a dead one), then, unless shut down meanwhile,
//! applies the migrations, opens the PostgreSQL pool, connects to NATS and binds the
//! topology (`faro setup` declared it). The [`Service`] it returns gives the tasks what they share and supervises them:
//! [`Service::supervisor`] runs the HTTP server as one of them, [`Service::serve`] marks the
//! service ready and waits for its tasks to end.

use std::io::Write as _;

use anyhow::Context as _;
use async_nats::jetstream;
use deadpool_postgres::Pool;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::PgConfig;
use crate::http::{self, Health, Metric};
use crate::nats::{self, Retry, Topology};
use crate::shutdown::{unless_cancelled, Supervisor};
use crate::{CommonConfig, Namespace};

/// How a service's `main` ends: an error is logged and printed as [`crate::pg::error_text`]
/// shows it (never a PostgreSQL error's DETAIL, which repeats a refused row whole), and the
/// process exits 1.
pub fn exit_code(name: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let text = crate::pg::error_text(&error);
            tracing::error!(error = text, "{name} stopped");
            // Also where no log is set up yet (a configuration refused).
            let _ = writeln!(std::io::stderr(), "faro-{name}: {text}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a service starts with.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// Its name, in logs and in its supervisor.
    pub name: &'static str,
    /// Its NATS connection's name when not `faro-<name>` (a worker adds its id).
    pub connection: Option<&'a str>,
    pub common: &'a CommonConfig,
    /// PostgreSQL, for the services that keep state there: migrated, then pooled.
    pub pg: Option<&'a PgConfig>,
    /// Its metrics, described in `/metrics`.
    pub metrics: &'a [Metric],
}

impl<'a> Spec<'a> {
    /// A service `name` without PostgreSQL, connected to NATS as `faro-<name>`.
    pub fn new(name: &'static str, common: &'a CommonConfig, metrics: &'a [Metric]) -> Self {
        Self {
            name,
            connection: None,
            common,
            pg: None,
            metrics,
        }
    }

    /// With PostgreSQL, migrated and pooled at start.
    pub fn with_pg(self, pg: &'a PgConfig) -> Self {
        Self {
            pg: Some(pg),
            ..self
        }
    }

    /// With a NATS connection name of its own.
    pub fn connection(self, connection: &'a str) -> Self {
        Self {
            connection: Some(connection),
            ..self
        }
    }
}

/// A started service: what its tasks share.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub health: Health,
    pub ns: Namespace,
    /// `None` for a service started without PostgreSQL (the worker).
    pub pool: Option<Pool>,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub events: Events,
    shutdown: CancellationToken,
    /// Stops the HTTP server: last, once the service has stopped.
    stop_http: CancellationToken,
    http: Option<JoinHandle<()>>,
}

/// Starts a service; `None` when `shutdown` came first.
pub async fn start(
    spec: Spec<'_>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Service>> {
    http::recorder().describe(spec.metrics);
    let health = Health::default();
    let stop_http = shutdown.child_token();
    let (_, http) = http::serve(spec.common.http_addr, health.clone(), stop_http.clone()).await?;
    let ns = spec.common.namespace.clone();
    let connect = async {
        let pool = match spec.pg {
            Some(pg) => {
                crate::pg::migrate_when_up(pg).await?;
                Some(crate::pg::pool(pg)?)
            }
            None => None,
        };
        let connection = match spec.connection {
            Some(connection) => connection.to_owned(),
            None => format!("faro-{}", spec.name),
        };
        let client = nats::connect(&spec.common.nats, &connection, Retry::Forever).await?;
        let js = nats::jetstream(client.clone());
        let topology = nats::bind_topology(&js, &ns).await?;
        anyhow::Ok((pool, client, js, topology))
    };
    let Some((pool, client, js, topology)) = unless_cancelled(shutdown, connect).await? else {
        stop_http.cancel();
        http.await.context("metrics server panicked")?;
        return Ok(None);
    };
    Ok(Some(Service {
        name: spec.name,
        health,
        events: Events {
            js: js.clone(),
            ns: ns.clone(),
        },
        ns,
        pool,
        client,
        js,
        topology,
        shutdown: shutdown.clone(),
        stop_http,
        http: Some(http),
    }))
}

impl Service {
    /// The PostgreSQL pool of a service started with one.
    pub fn pool(&self) -> anyhow::Result<Pool> {
        self.pool
            .clone()
            .with_context(|| format!("the {} was started without PostgreSQL", self.name))
    }

    /// A supervisor of the service's tasks, the HTTP server first among them: it stops when
    /// the service is shut down or a task fails.
    pub fn supervisor(&mut self) -> Supervisor {
        let mut supervisor = Supervisor::new(self.name, self.shutdown.clone());
        if let Some(http) = self.http.take() {
            supervisor.spawn("http", async move {
                http.await.context("metrics server panicked")
            });
        }
        supervisor
    }

    /// Marks the service ready and waits for its tasks; each gets `grace` to finish once it
    /// is shut down.
    pub async fn serve(
        &self,
        supervisor: Supervisor,
        grace: std::time::Duration,
    ) -> anyhow::Result<()> {
        self.health.set_ready(true);
        tracing::info!("{} ready", self.name);
        supervisor.wait(grace).await
    }

    /// For a service that runs its own loop instead of a supervisor (the dispatcher): stops
    /// the HTTP server once it is done.
    pub async fn stop_http(mut self) -> anyhow::Result<()> {
        self.stop_http.cancel();
        if let Some(http) = self.http.take() {
            http.await.context("metrics server panicked")?;
        }
        Ok(())
    }
}

/// Publishes audit events on `faro.events.<source>`: records for people, never worth waiting
/// on, so a publish is bounded by [`EVENT_TIMEOUT`] and a failure is logged, never returned.
#[derive(Debug, Clone)]
pub struct Events {
    js: jetstream::Context,
    ns: Namespace,
}

/// How long publishing an event may take before it is given up: a JetStream that does not
/// take it (a NATS node just died; the context's ack permits all taken) cannot hold up what
/// comes after it, such as a new leader starting to lead.
pub const EVENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Events {
    pub fn new(js: jetstream::Context, ns: Namespace) -> Self {
        Self { js, ns }
    }

    /// Publishes `event` from `source` and waits, at most [`EVENT_TIMEOUT`], until it is
    /// stored.
    pub async fn publish(&self, source: &str, event: &impl Serialize) {
        let payload = match serde_json::to_vec(event) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(%error, "cannot encode an event");
                return;
            }
        };
        let publish = async {
            match self
                .js
                .publish(self.ns.event_subject(source), payload.into())
                .await
            {
                Ok(ack) => {
                    if let Err(error) = ack.await {
                        tracing::warn!(%error, "event not stored");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot publish an event"),
            }
        };
        if tokio::time::timeout(EVENT_TIMEOUT, publish).await.is_err() {
            tracing::warn!(
                timeout_ms = EVENT_TIMEOUT.as_millis() as u64,
                "event not stored in time; dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Shut down before NATS answers (here it never would): no service, and the HTTP server
    /// it started first has let its port go.
    #[tokio::test]
    async fn a_service_shut_down_while_it_starts_stops_its_http_server() {
        let (http, nobody) = (free_port(), free_port());
        let mut env = Env::default();
        env.set("FARO_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .set("FARO_NATS_URL", format!("nats://127.0.0.1:{nobody}"));
        let common = CommonConfig::from_env(&env).unwrap();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let spec = Spec::new("test", &common, &[]);
        let started = start(spec, &shutdown).await.unwrap();
        assert!(started.is_none());
        std::net::TcpListener::bind(("127.0.0.1", http))
            .expect("the HTTP server of a service that never started still holds its port");
    }
}

#[cfg(all(test, feature = "test-util"))]
mod waiting {
    use super::*;
    use crate::config::PgConfig;
    use crate::testing::{PrivatePg, TestBus};
    use std::time::Duration;

    async fn health(port: u16) -> Option<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        Some(answer)
    }

    /// A service whose PostgreSQL is down at start does not exit: it waits, its `/health`
    /// saying it is starting, and starts once PostgreSQL answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_waits_for_a_postgresql_that_is_down_and_starts_once_it_answers() {
        let pg = PrivatePg::start().unwrap();
        pg.stop("fast").unwrap();
        let bus = TestBus::start().await.unwrap();
        let http = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut env = bus.env(None);
        env.set("FARO_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .set("FARO_DATABASE_URL", pg.url("postgres"))
            .set("FARO_DATABASE_WAIT", "1s");
        let shutdown = CancellationToken::new();
        let starting = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let common = CommonConfig::from_env(&env).unwrap();
                let pg = PgConfig::from_env(&env).unwrap();
                let spec = Spec::new("test", &common, &[]).with_pg(&pg);
                start(spec, &shutdown)
                    .await
                    .map(|service| service.is_some())
            }
        });
        // Three times as long as FARO_DATABASE_WAIT: still waiting, and saying it starts.
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < until {
            assert!(
                !starting.is_finished(),
                "the service gave up: {:?}",
                starting.await
            );
            if let Some(answer) = health(http).await {
                assert!(
                    answer.starts_with("HTTP/1.0 503") || answer.starts_with("HTTP/1.1 503"),
                    "{answer}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pg.start_again().unwrap();
        let started = tokio::time::timeout(Duration::from_secs(60), starting)
            .await
            .expect("the service did not start once PostgreSQL answered")
            .unwrap();
        assert!(started.unwrap(), "the service did not start");
        shutdown.cancel();
    }
}
