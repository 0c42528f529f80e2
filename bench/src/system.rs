//! The whole system in-process: the four services through their `run(config, shutdown)`, on
//! a private NATS server, a fresh PostgreSQL database and a random namespace. Dispatchers may
//! run as processes instead (`Options::dispatcher_exe`), so that a kill is a real SIGKILL.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::config::Env;
use faro_shared::messages::{Request as _, StatusRequest, WorkersRequest};
use faro_shared::testing::{TestBus, TestDb};
use faro_shared::{pg, Namespace};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Settings every test system starts with. Tests and benchmarks load this machine's CPU on
/// purpose: workers must not stop taking runs because of it (the load tests set their own
/// limits). Pools do not cool: a test moves workers as fast as demand changes (the cooling
/// tests set their own).
pub async fn seed_test_settings(pool: &Pool) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO system_config (key, value)
             VALUES ('worker.cpu_max', '100'::jsonb), ('worker.mem_max', '100'::jsonb),
                    ('cooling_period', '\"0s\"'::jsonb)",
            &[],
        )
        .await
        .context("cannot seed the workers' load limits")?;
    Ok(())
}

/// Whether a leading dispatcher answers its status API within a second.
pub async fn dispatcher_answers(client: &async_nats::Client, ns: &Namespace) -> bool {
    answers(client, StatusRequest::subject(ns)).await
}

/// Whether a service answers on `subject` within a second.
async fn answers(client: &async_nats::Client, subject: String) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), client.request(subject, "".into())).await,
        Ok(Ok(_))
    )
}

/// Runs a service, writing why it stopped to standard error if it failed: a test that sees a
/// service stop then says why, not only which.
async fn reporting(
    service: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let result = service.await;
    if let Err(error) = &result {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("service failed: {error:#}");
        }
    }
    result
}

/// How to start the system.
#[derive(Debug, Clone)]
pub struct Options {
    /// Dispatchers started: one leads, the others stand by (`d0`, `d1`, ...).
    pub dispatchers: usize,
    pub workers: usize,
    pub capacity: u32,
    /// Balancer cycle and demand interval: short, so tests do not wait on timers.
    pub cycle: Duration,
    pub heartbeat: Duration,
    /// Further `FARO_*` settings for every service.
    pub env: Vec<(String, String)>,
    /// NATS servers: 1, or a JetStream cluster of this many with a copy of everything on each.
    pub nats_nodes: usize,
    /// Run the dispatchers as processes of this program (`<exe> dispatcher`: `faro-bench`)
    /// instead of tasks of this one.
    pub dispatcher_exe: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dispatchers: 1,
            workers: 2,
            capacity: 50,
            cycle: Duration::from_millis(250),
            heartbeat: Duration::from_millis(500),
            env: Vec::new(),
            nats_nodes: 1,
            dispatcher_exe: None,
        }
    }
}

/// A running system; [`System::stop`] shuts every service down gracefully.
#[derive(Debug)]
pub struct System {
    pub bus: TestBus,
    pub db: TestDb,
    pub ns: Namespace,
    pub pool: Pool,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    /// The settings every service started with.
    pub env: Env,
    shutdown: CancellationToken,
    services: Vec<(String, JoinHandle<anyhow::Result<()>>)>,
    /// Services running as processes, by the same names.
    processes: Vec<(String, ServiceProcess)>,
}

impl System {
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let bus = if options.nats_nodes > 1 {
            TestBus::start_cluster(options.nats_nodes).await?
        } else {
            TestBus::start().await?
        };
        let db = TestDb::create().await?;
        let pool = pg::pool(&db.config())?;
        seed_test_settings(&pool).await?;

        let mut base = bus.env(Some(&db));
        base.set(
            "FARO_BALANCER_CYCLE",
            format!("{}ms", options.cycle.as_millis()),
        )
        .set(
            "FARO_DEMAND_INTERVAL",
            format!("{}ms", options.cycle.as_millis()),
        )
        .set(
            "FARO_HEARTBEAT_INTERVAL",
            format!("{}ms", options.heartbeat.as_millis()),
        )
        .set("FARO_WORKER_CAPACITY", options.capacity.to_string())
        .set("FARO_WORKER_FETCH_EXPIRY", "1s")
        .set("FARO_SHUTDOWN_GRACE", "10s");

        for (var, value) in &options.env {
            base.set(var.clone(), value.clone());
        }
        let shutdown = CancellationToken::new();
        let mut services = Vec::new();
        let mut processes = Vec::new();
        for i in 0..options.dispatchers.max(1) {
            let mut env = base.clone();
            env.set("FARO_DISPATCHER_ID", format!("d{i}"));
            let dispatcher = faro_dispatcher::Config::from_env(&env)?;
            if let Some(exe) = &options.dispatcher_exe {
                processes.push((
                    format!("dispatcher d{i}"),
                    ServiceProcess::spawn(exe, "dispatcher", &env)?,
                ));
                continue;
            }
            services.push((
                format!("dispatcher d{i}"),
                tokio::spawn(reporting(faro_dispatcher::run(
                    dispatcher,
                    shutdown.child_token(),
                ))),
            ));
        }
        let balancer = faro_balancer::Config::from_env(&base)?;
        services.push((
            "balancer".to_owned(),
            tokio::spawn(reporting(faro_balancer::run(
                balancer,
                shutdown.child_token(),
            ))),
        ));
        let demand = faro_demand_collector::Config::from_env(&base)?;
        services.push((
            "demand-collector".to_owned(),
            tokio::spawn(reporting(faro_demand_collector::run(
                demand,
                shutdown.child_token(),
            ))),
        ));
        let mut system = Self {
            ns: bus.ns.clone(),
            client: bus.client.clone(),
            js: bus.js.clone(),
            bus,
            db,
            pool,
            env: base.clone(),
            shutdown,
            services,
            processes,
        };
        for i in 0..options.workers {
            let mut env = base.clone();
            env.set("FARO_WORKER_ID", format!("w{i}"));
            system.spawn_worker(&env)?;
        }
        system
            .wait_answers(StatusRequest::subject(&system.ns))
            .await?;
        system
            .wait_answers(WorkersRequest::subject(&system.ns))
            .await?;
        Ok(system)
    }

    /// Waits until a service answers on `subject` (it has started): the leading dispatcher,
    /// then the balancer, so a test can ask either at once.
    async fn wait_answers(&mut self, subject: String) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if answers(&self.client, subject.clone()).await {
                return Ok(());
            }
            if let Some((name, _)) = self.services.iter().find(|(_, task)| task.is_finished()) {
                anyhow::bail!("service {name} stopped during start-up");
            }
            if let Some(name) = self
                .processes
                .iter_mut()
                .find_map(|(name, p)| p.ended().then(|| name.clone()))
            {
                anyhow::bail!("service {name} stopped during start-up");
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("nothing answered on {subject} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The instance id of the dispatcher holding the leader lease, if one does.
    pub async fn leader(&self) -> anyhow::Result<Option<String>> {
        let store = self.js.get_key_value(self.ns.leases_bucket()).await?;
        let entry = store.entry(faro_dispatcher::leader::LEADER_KEY).await?;
        Ok(entry
            .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Waits until a dispatcher other than `not` holds the leader lease; returns its id.
    pub async fn wait_leader(&self, not: Option<&str>, limit: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(leader) = self.leader().await? {
                if Some(leader.as_str()) != not {
                    return Ok(leader);
                }
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("no new leader within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Follows the target slot leases in KV from now on: who holds which target, and the
    /// most each target held at once.
    pub async fn watch_slots(&self) -> anyhow::Result<SlotWatch> {
        let store = self.js.get_key_value(self.ns.leases_bucket()).await?;
        let mut updates = store
            .watch_with_history(format!("{}>", faro_dispatcher::slot_leases::PREFIX))
            .await?;
        let state = std::sync::Arc::new(std::sync::Mutex::new(SlotState::default()));
        let (changed, _) = tokio::sync::watch::channel(());
        let changed = std::sync::Arc::new(changed);
        let task = {
            let (state, changed) = (state.clone(), changed.clone());
            tokio::spawn(async move {
                use futures::StreamExt as _;
                while let Some(Ok(entry)) = updates.next().await {
                    let Some(target) = faro_dispatcher::slot_leases::parse_key(&entry.key) else {
                        continue;
                    };
                    let runs: std::collections::HashSet<uuid::Uuid> = if entry.operation
                        == async_nats::jetstream::kv::Operation::Put
                    {
                        match serde_json::from_slice::<faro_dispatcher::slot_leases::TargetSlots>(
                            &entry.value,
                        ) {
                            Ok(slots) => slots.runs.into_keys().collect(),
                            Err(_) => continue,
                        }
                    } else {
                        Default::default()
                    };
                    let now = runs.len();
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    s.held.insert(target.to_string(), runs);
                    let peak = s.peak.entry(target.to_string()).or_default();
                    *peak = (*peak).max(now);
                    drop(s);
                    changed.send_replace(());
                }
            })
        };
        Ok(SlotWatch {
            state,
            changed,
            task,
        })
    }

    /// Kills a service as a crash would: its task is aborted (its process gets SIGKILL),
    /// nothing is cleaned up. `name` is as listed at start, such as `dispatcher d0` or
    /// `worker w1`.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(index) = self.processes.iter().position(|(n, _)| n == name) {
            let (_, mut process) = self.processes.remove(index);
            return process.kill();
        }
        let index = self
            .services
            .iter()
            .position(|(n, _)| n == name)
            .with_context(|| format!("no service named {name}"))?;
        let (_, task) = self.services.remove(index);
        task.abort();
        Ok(())
    }

    /// Starts one more worker with the given settings.
    pub fn spawn_worker(&mut self, env: &Env) -> anyhow::Result<()> {
        let config = faro_worker::Config::from_env(env)?;
        let name = format!("worker {}", config.worker_id);
        let task = tokio::spawn(reporting(faro_worker::run(
            config,
            self.shutdown.child_token(),
        )));
        self.services.push((name, task));
        Ok(())
    }

    /// Publishes a submission on `faro.submit` with the given dedup id.
    pub async fn submit(&self, body: Vec<u8>, msg_id: &str) -> anyhow::Result<()> {
        self.js
            .send_publish(
                self.ns.submit_subject(),
                async_nats::jetstream::message::PublishMessage::build()
                    .payload(body.into())
                    .message_id(msg_id),
            )
            .await?
            .await
            .context("submission not stored")?;
        Ok(())
    }

    /// Asks the leading dispatcher's API (`verb`: status, config, cancel, explain...) and
    /// returns its JSON answer (an `{"error": ..}` answer included).
    pub async fn ask(
        &self,
        verb: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<serde_json::Value> {
        let reply = self
            .client
            .request(
                self.ns.api_subject("dispatcher", verb),
                serde_json::to_vec(body)?.into(),
            )
            .await?;
        Ok(serde_json::from_slice(&reply.payload)?)
    }

    /// Submits `{"jobs": jobs}` with the given dedup id.
    pub async fn submit_jobs(
        &self,
        jobs: &[serde_json::Value],
        msg_id: &str,
    ) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({ "jobs": jobs }))?;
        self.submit(body, msg_id).await
    }

    /// Rows of two columns, such as `SELECT status, count(*) ... GROUP BY 1`.
    pub async fn pairs<A, B>(&self, sql: &str) -> anyhow::Result<Vec<(A, B)>>
    where
        A: for<'a> tokio_postgres::types::FromSql<'a>,
        B: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let rows = self.pool.get().await?.query(sql, &[]).await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// The one value of a query such as `SELECT count(*) ...` or `SELECT id ... LIMIT 1`.
    pub async fn one<T>(&self, sql: &str) -> anyhow::Result<T>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let row = self.pool.get().await?.query_one(sql, &[]).await?;
        Ok(row.try_get(0)?)
    }

    /// Fails when a service stopped (it died): waiting for its work would be in vain.
    fn check_services(&self) -> anyhow::Result<()> {
        if let Some((name, _)) = self.services.iter().find(|(_, task)| task.is_finished()) {
            anyhow::bail!("service {name} stopped while waiting for runs");
        }
        Ok(())
    }

    /// Counts runs by terminal or open state.
    pub async fn count_terminal(&self) -> anyhow::Result<i64> {
        self.count_terminal_since(None).await
    }

    /// Counts the terminal runs, all or those made since `since` (read from their days of
    /// history only, so a long history costs the count nothing).
    async fn count_terminal_since(&self, since: Option<DateTime<Utc>>) -> anyhow::Result<i64> {
        let client = self.pool.get().await?;
        let row =
            match since {
                None => client
                    .query_one(
                        "SELECT count(*) FROM runs WHERE status NOT IN ('pending', 'dispatched')",
                        &[],
                    )
                    .await?,
                Some(since) => {
                    client
                        .query_one(
                            "SELECT count(*) FROM runs
                          WHERE id >= faro_uuid_at($1) AND status NOT IN ('pending', 'dispatched')",
                            &[&since],
                        )
                        .await?
                }
            };
        Ok(row.get(0))
    }

    /// Waits until at least `runs` runs are terminal, for at most `limit`. It counts every
    /// 20 ms, less often the more runs it waits for: each count reads the whole `runs` table,
    /// and counting tens of thousands of runs 50 times a second would take a core from the
    /// system it measures.
    pub async fn wait_terminal(&self, runs: i64, limit: Duration) -> anyhow::Result<()> {
        self.wait_terminal_since(runs, limit, None).await
    }

    /// [`Self::wait_terminal`], counting only the runs made since `since` when given (on a
    /// database that holds a history).
    pub async fn wait_terminal_since(
        &self,
        runs: i64,
        limit: Duration,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        let every = (Duration::from_micros(4) * u32::try_from(runs.max(0)).unwrap_or(u32::MAX))
            .clamp(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            self.check_services()?;
            let done = self.count_terminal_since(since).await?;
            if done >= runs {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("only {done} of {runs} runs terminal after {limit:?}");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Waits until `sql` (a query returning one count) reaches `at_least`, checking every
    /// 20 ms, for at most `limit`.
    pub async fn wait_count(
        &self,
        sql: &str,
        at_least: i64,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some((name, _)) = self.services.iter().find(|(_, task)| task.is_finished()) {
                anyhow::bail!("service {name} stopped while waiting");
            }
            let count: i64 = self.pool.get().await?.query_one(sql, &[]).await?.get(0);
            if count >= at_least {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("{sql}: {count}, not {at_least}, after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until this process's `/metrics` has the exact line `line` (a gauge at a value),
    /// for at most `limit`; the error shows the metric's last value.
    pub async fn wait_metric(&self, line: &str, limit: Duration) -> anyhow::Result<()> {
        let name = line.split(' ').next().unwrap_or(line);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let metrics = faro_shared::http::metrics_handle().render();
            if metrics.lines().any(|l| l == line) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let last = metrics
                    .lines()
                    .find(|l| l.starts_with(&format!("{name} ")))
                    .unwrap_or("absent")
                    .to_owned();
                anyhow::bail!("{name} is {last:?}, not {line:?}, after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every service and reports the first that failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut first_error = None;
        for (name, process) in self.processes {
            let stopped = tokio::task::spawn_blocking(move || process.stop()).await?;
            if let Err(error) = stopped {
                first_error.get_or_insert(error.context(format!("{name} failed")));
            }
        }
        for (name, task) in self.services {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(error.context(format!("{name} failed")));
                }
                Err(error) => {
                    first_error.get_or_insert(anyhow::anyhow!("{name} panicked: {error}"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[derive(Debug, Default)]
struct SlotState {
    held: std::collections::BTreeMap<String, std::collections::HashSet<uuid::Uuid>>,
    peak: std::collections::BTreeMap<String, usize>,
}

/// The target slot leases as the leases bucket shows them, followed live.
#[derive(Debug)]
pub struct SlotWatch {
    state: std::sync::Arc<std::sync::Mutex<SlotState>>,
    changed: std::sync::Arc<tokio::sync::watch::Sender<()>>,
    task: JoinHandle<()>,
}

impl SlotWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most slot leases each target had at once.
    pub fn peaks(&self) -> std::collections::BTreeMap<String, usize> {
        self.lock().peak.clone()
    }

    /// Slot leases held now, over all targets.
    pub fn held(&self) -> usize {
        self.lock().held.values().map(|h| h.len()).sum()
    }

    /// Waits until no target slot lease is left, for at most `limit`.
    pub async fn wait_none_held(&self, limit: Duration) -> anyhow::Result<()> {
        let mut changed = self.changed.subscribe();
        let wait = async {
            while self.held() > 0 {
                if changed.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| anyhow::anyhow!("{} slot leases still held after {limit:?}", self.held()))
    }
}

impl Drop for SlotWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A service in its own process (`<exe> <service>`: `faro-bench dispatcher`), with the
/// system's settings; killed on drop.
#[derive(Debug)]
pub struct ServiceProcess(std::process::Child);

impl ServiceProcess {
    pub fn spawn(exe: &std::path::Path, service: &str, env: &Env) -> anyhow::Result<Self> {
        let child = std::process::Command::new(exe)
            .arg(service)
            .env_clear()
            .envs(env.faro_vars())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // Its logs on standard error when the bench's are asked for.
            .envs(std::env::var_os("RUST_LOG").map(|filter| ("RUST_LOG", filter)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start a {service} process from {}", exe.display()))?;
        Ok(Self(child))
    }

    /// Whether it has ended.
    fn ended(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }

    /// SIGKILL: no shutdown, no lease given back.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits for it to end (SIGKILL after 30 s); whether it ended well.
    fn stop(mut self) -> anyhow::Result<()> {
        let _ = faro_shared::testing::send_signal(self.0.id(), "-TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait()? {
                anyhow::ensure!(status.success(), "it ended with {status}");
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                self.0.kill()?;
                anyhow::bail!("it did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A worker in its own process (`faro-bench worker` of the given binary), with the system's
/// settings and `FARO_WORKER_ID`; killed on drop.
pub type WorkerProcess = ServiceProcess;

impl ServiceProcess {
    /// Starts `<exe> worker`.
    pub fn worker(exe: &std::path::Path, env: &Env) -> anyhow::Result<Self> {
        Self::spawn(exe, "worker", env)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}
