//! The native path end to end: `scripts/dev` starts every service from its built binary, with
//! the per-service NATS users of `nats/nats-server.conf`, and the `faro` command submits,
//! waits and reads status against it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faro_shared::testing::TestDb;

const SERVICES: [&str; 4] = [
    "faro-dispatcher",
    "faro-worker",
    "faro-balancer",
    "faro-demand-collector",
];

/// The simulated fleet `scripts/dev --olts 4` runs: one OLT of each vendor, its target and
/// the last job of its chain.
const FLEET: [(&str, &str); 4] = [
    ("olt-huawei-1", "olt-huawei-1-optical"),
    ("olt-zte-1", "olt-zte-1-optical"),
    ("olt-zte-c600-1", "olt-zte-c600-1-optical"),
    ("olt-fiberhome-1", "olt-fiberhome-1-optical"),
];

/// A NATS port (three from there with `--nats-cluster`, their route ports from base+5), a base
/// for the metrics ports (base+1 .. base+12) and one for the simulated OLTs' UDP ports
/// (base+1 .. base+4), all free, below the ephemeral range that every other
/// test's servers draw from (port 0), so they cannot collide.
fn quiet_ports() -> (u16, u16, u16) {
    let seed = std::process::id() as u64
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    for attempt in 0..200u64 {
        let base = 20_000
            + ((seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(attempt * 7919))
                % 12_000) as u16;
        // base .. base+2: NATS client ports (three with --nats-cluster), base+5 .. base+7
        // their route ports.
        let ports: Vec<u16> = (base..=base + 2)
            .chain(base + 5..=base + 7)
            .chain(base + 21..=base + 33)
            .collect();
        if ports
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
            && (base + 41..=base + 40 + FLEET.len() as u16)
                .all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
        {
            return (base, base + 20, base + 40);
        }
    }
    panic!("no free ports between 20000 and 32000");
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// An HTTP demand source on loopback that answers no demand, fails every second and third
/// request (a connection closed unanswered, then a 500) and notes whether the credentials
/// came with them.
struct DemandSource {
    port: u16,
    authorized: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DemandSource {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let authorized = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = authorized.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(read) => request.extend_from_slice(&buf[..read]),
                    }
                }
                let request = String::from_utf8_lossy(&request).to_lowercase();
                if request.contains("authorization: bearer auth-header-lp4") {
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                let answer = match n % 3 {
                    0 => "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]",
                    1 => continue,
                    _ => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Self { port, authorized }
    }
}

/// Stops `scripts/dev` (SIGTERM) when the test ends, even on failure.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

struct Cli {
    bin: PathBuf,
    env: Vec<(String, String)>,
    /// Everything the commands printed (the API's replies as shown), checked for secrets.
    said: std::sync::Mutex<String>,
}

impl Cli {
    /// Waits (30 s at most) until `faro job list` shows a last success for `job`; its row.
    fn wait_listed_success(&self, job: &str, target: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run(&["job", "list", "--target", target]);
            let listed = String::from_utf8_lossy(&out.stdout).into_owned();
            let header = listed.lines().next().unwrap_or_default();
            let row = listed
                .lines()
                .find(|l| l.split_whitespace().next() == Some(job))
                .unwrap_or_default()
                .to_owned();
            // Cells may hold spaces (`after PARENT`, dates): read them where their column starts.
            let last_run = cell(header, &row, "LAST RUN");
            let last_success = cell(header, &row, "LAST SUCCESS");
            if last_run.is_some_and(|c| c != "-") && last_success.is_some_and(|c| c != "-") {
                return row;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no success of {job} listed: {listed}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.bin)
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .unwrap();
        let mut said = self.said.lock().unwrap();
        said.push_str(&String::from_utf8_lossy(&out.stdout));
        said.push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }
}

/// The cell of `row` under the left-aligned `column` of a table of the CLI: it starts where
/// its header starts and ends before the next header.
fn cell<'a>(header: &str, row: &'a str, column: &str) -> Option<&'a str> {
    let start = header.find(column)?;
    let after = start + column.len();
    let text = match header[after..].find(|c: char| c != ' ') {
        Some(next) => row.get(start..(after + next).min(row.len()))?,
        None => row.get(start..)?,
    };
    Some(text.trim())
}

#[test]
fn cell_reads_cells_that_hold_spaces() {
    let listed = "\
ID                      QUEUE      EVERY                         LAST RUN             LAST SUCCESS         LAST FAILURE
olt-huawei-1-optical    get        after olt-huawei-1-discovery  2026-11-30 15:21:38  -                    -
olt-huawei-1-discovery  discovery  2s                            2026-11-30 15:21:39  2026-11-30 15:21:38  -";
    let mut lines = listed.lines();
    let header = lines.next().unwrap();
    let (chained, recurring) = (lines.next().unwrap(), lines.next().unwrap());
    assert_eq!(
        cell(header, chained, "LAST RUN"),
        Some("2026-11-30 15:21:38")
    );
    assert_eq!(cell(header, chained, "LAST SUCCESS"), Some("-"));
    assert_eq!(
        cell(header, recurring, "LAST SUCCESS"),
        Some("2026-11-30 15:21:38")
    );
    assert_eq!(cell(header, recurring, "LAST FAILURE"), Some("-"));
    assert_eq!(cell(header, "", "LAST RUN"), None);
}

/// The other tests load this machine's CPU: the workers must not stop taking runs for it;
/// pools cool for `cooling`.
async fn seed_settings(db: &TestDb, cooling: &str) {
    let (seed, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    seed.execute(
        "INSERT INTO system_config (key, value)
         VALUES ('worker.cpu_max', '100'::jsonb), ('worker.mem_max', '100'::jsonb),
                ('cooling_period', to_jsonb($1::text))",
        &[&cooling],
    )
    .await
    .unwrap();
}

/// Starts `scripts/dev` with `args` and `env` in `root`; its standard output, line by line.
fn start_dev(root: &Path, args: &[&str], env: &[(&str, String)]) -> (Dev, mpsc::Receiver<String>) {
    let mut child = Command::new(root.join("scripts/dev"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let dev = Dev(child);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    (dev, lines)
}

/// The password scripts/dev made for NATS user `who` (`SUBMITTER`, ...).
fn dev_password(state: &std::path::Path, who: &str) -> String {
    let passwords = std::fs::read_to_string(state.join("passwords")).unwrap();
    let key = format!("FARO_NATS_{who}_PASSWORD=");
    passwords
        .lines()
        .find_map(|line| line.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in {passwords}"))
        .to_owned()
}

/// Reads `scripts/dev`'s output until it is ready; the NATS URL and operator password it
/// printed.
fn wait_ready(lines: &mpsc::Receiver<String>) -> (String, String) {
    let (mut url, mut password) = (None, None);
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(150))
            .expect("scripts/dev did not report ready within 150 s");
        if let Some(at) = line.find("FARO_NATS_URL=") {
            url = line[at + "FARO_NATS_URL=".len()..]
                .split_whitespace()
                .next()
                .map(str::to_owned);
        }
        if let Some(at) = line.find("FARO_NATS_PASSWORD=") {
            password = Some(line[at + "FARO_NATS_PASSWORD=".len()..].trim().to_owned());
        }
        if line.starts_with("Ctrl-C stops everything") {
            break;
        }
    }
    (
        url.expect("no NATS URL printed"),
        password.expect("no operator password printed"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_dev_runs_the_system_and_the_cli_drives_it() {
    let faro = PathBuf::from(env!("CARGO_BIN_EXE_faro"));
    let bin_dir = faro.parent().unwrap().to_owned();
    for service in SERVICES {
        assert!(
            bin_dir.join(service).exists(),
            "{service} is not built in {}: run `cargo build --bins` first (scripts/test does)",
            bin_dir.display()
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let db = TestDb::create().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let (nats_port, http_base, snmp_base) = quiet_ports();
    // Pools cool for 2 s, not 30: the smoke queue gets a worker soon after the fleet's.
    seed_settings(&db, "2s").await;
    // Secrets the services are given, none of which may reach a log or a reply: the
    // PostgreSQL password (trust auth ignores it), an HTTP demand source's credentials and
    // token (a source that fails now and then, and is logged when it does), a SQL source's password,
    // and below, SNMP v3 passwords of a target polled and a community.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let demand = DemandSource::start();
    let secrets = [
        "pg-secret-Xq7",
        "http-pass-Wt3",
        "http-token-Zr8",
        "auth-header-Lp4",
        "sql-pass-Hy6",
        "auth-secret-Kd2",
        "priv-secret-Jm5",
        "hidden1",
        "comm-secret-Vb9",
    ];

    let (dev, lines) = start_dev(
        root,
        &["--no-build", "--workers", "3", "--olts", "4"],
        &[
            (
                "FARO_DEV_PG",
                "postgres://postgres:pg-secret-Xq7@127.0.0.1:5432".to_owned(),
            ),
            (
                "FARO_DEMAND_HTTP_URL",
                format!(
                    "http://demand:http-pass-Wt3@127.0.0.1:{}/d?token=http-token-Zr8",
                    demand.port
                ),
            ),
            (
                "FARO_DEMAND_HTTP_AUTHORIZATION",
                "Bearer auth-header-Lp4".to_owned(),
            ),
            (
                "FARO_DEMAND_SQL_URL",
                format!(
                    "postgres://postgres:sql-pass-Hy6@127.0.0.1:5432/{}",
                    db.name()
                ),
            ),
            (
                "FARO_DEMAND_SQL_QUERY",
                "SELECT 'none'::text, 0::bigint WHERE false".to_owned(),
            ),
            ("FARO_DEV_SNMP_BASE", snmp_base.to_string()),
            // Not faster: the `due` demand counts 10 s / interval runs per OLT's discovery, and
            // at 2 s four OLTs would claim all three workers for `discovery` before `get` or
            // `smoke` had any demand, starving both (equal priorities, no preemption).
            ("FARO_DEV_OLT_INTERVAL", "5s".to_owned()),
            ("FARO_DEV_BIN_DIR", bin_dir.display().to_string()),
            ("FARO_DEV_STATE", state.path().display().to_string()),
            ("FARO_DEV_NATS_PORT", nats_port.to_string()),
            ("FARO_DEV_HTTP_BASE", http_base.to_string()),
            ("FARO_DEV_DATABASE", db.name().to_owned()),
        ],
    );
    let (_, password) = wait_ready(&lines);
    let cli = Cli {
        bin: faro,
        env: vec![
            (
                "FARO_NATS_URL".into(),
                format!("nats://127.0.0.1:{nats_port}"),
            ),
            ("FARO_NATS_USER".into(), "operator".into()),
            ("FARO_NATS_PASSWORD".into(), password),
        ],
        said: std::sync::Mutex::default(),
    };

    // A bad file is refused before anything is sent, naming job and field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim", "priority": 0}]"#,
    )
    .unwrap();
    let out = cli.run(&["submit", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("job 1, field `priority`"), "{stderr}");

    // A good one runs to the end (a third of it fails, once: listed below).
    let jobs: Vec<_> = (0..30)
        .map(|i| {
            let outcome = if i % 3 == 0 { "failed" } else { "succeeded" };
            serde_json::json!({"queue": "smoke", "kind": "sim", "target": format!("olt-{}", i % 4),
                               "max_attempts": 1,
                               "params": {"duration_ms": [0, 50], "outcomes": {outcome: 1}}})
        })
        .collect();
    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_vec(&jobs).unwrap()).unwrap();
    let out = cli.run(&[
        "submit",
        "--wait",
        "--timeout",
        "60",
        good.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("30 jobs submitted") && stdout.contains("done: 30 runs"),
        "{stdout}"
    );

    // The same file again creates nothing new.
    let out = cli.run(&["submit", good.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already submitted"));
    let out = cli.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["runs"]["succeeded"].as_i64().unwrap() > 0,
        "{status}"
    );
    // (The simulated fleet adds runs of its own; count the smoke queue's.)
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let smoke: i64 = client
        .query_one("SELECT count(*) FROM runs WHERE queue = 'smoke'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(smoke, 30);

    // Its runs, a page at a time, newest first; and its failures alone.
    let out = cli.run(&["run", "list", "--queue", "smoke", "--limit", "20"]);
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{first}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 22, "{first}");
    let before = lines[21]
        .strip_prefix("(older runs: the same command with --before ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no next page in {first}"));
    assert!(lines[20].starts_with(before), "{first}");
    let out = cli.run(&[
        "run", "list", "--queue", "smoke", "--limit", "20", "--before", before,
    ]);
    let second = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        second.lines().count(),
        11,
        "the last 10 and no next page: {second}"
    );
    let mut ids: Vec<&str> = lines[1..21]
        .iter()
        .chain(second.lines().skip(1).collect::<Vec<_>>().iter())
        .map(|line| line.split_whitespace().next().unwrap_or_default())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 30);
    let out = cli.run(&[
        "run", "list", "--queue", "smoke", "--status", "failed", "--json",
    ]);
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = page["runs"].as_array().unwrap();
    assert_eq!(failed.len(), 10, "{page}");
    assert!(failed
        .iter()
        .all(|r| r["status"] == "failed" && r["queue"] == "smoke"));
    assert!(page["next"].is_null(), "{page}");

    // Hot configuration: refused with the accepted form, or applied without a restart.
    let out = cli.run(&["config", "set", "maintenance_mode", "maybe"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("true or false"));
    let out = cli.run(&["config", "set", "target.max_concurrency", "5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("target.max_concurrency = 5"), "{stdout}");
    let out = cli.run(&["config", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("maintenance_mode = false (default"));

    // log.level reaches every service without a restart: the dispatcher at once, the
    // balancer and the workers (through their assignments) and the demand-collector within
    // a cycle.
    let out = cli.run(&[
        "config",
        "set",
        "log.level",
        "info,faro_worker=debug,faro_dispatcher=debug,faro_shared=debug",
    ]);
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for service in [
        "dispatcher",
        "balancer",
        "demand-collector",
        "worker-1",
        "worker-2",
    ] {
        let log = state.path().join(format!("logs/{service}.log"));
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("log level changed") && text.contains("faro_worker=debug") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{service} never followed log.level: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Targets and jobs managed from the command line, without a restart.
    let targets = dir.path().join("targets.json");
    std::fs::write(
        &targets,
        r#"{"targets": [{"id": "olt-1", "name": "POP 1", "address": "192.0.2.1",
                          "snmp": {"version": "2c", "community": "hidden1"}},
                         {"id": "olt-2", "address": "192.0.2.2:1161", "max_concurrency": 2}]}"#,
    )
    .unwrap();
    // An OLT on SNMP v3 that does not answer (a closed UDP port).
    let v3 = dir.path().join("v3.json");
    std::fs::write(
        &v3,
        serde_json::to_vec(&serde_json::json!({"targets": [{"id": "olt-v3",
            "address": format!("127.0.0.1:{closed}"),
            "snmp": {"version": "3", "user": "faro-v3",
                     "auth": {"protocol": "sha256", "password": "auth-secret-Kd2"},
                     "privacy": {"protocol": "aes", "password": "priv-secret-Jm5"}}}]}))
        .unwrap(),
    )
    .unwrap();
    let out = cli.run(&["target", "import", v3.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Refused before it is sent, its community never shown.
    let out = cli.run(&[
        "target",
        "add",
        "olt-bad",
        "--address",
        "h:0",
        "--community",
        "comm-secret-Vb9",
    ]);
    assert!(!out.status.success());
    let out = cli.run(&["target", "import", targets.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 targets saved"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli.run(&["target", "add", "olt-3", "--address", "h:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("address: port"));
    let out = cli.run(&["target", "disable", "olt-2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli.run(&["target", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("192.0.2.2:1161") && !listed.contains("hidden1"),
        "{listed}"
    );
    let olt_2 = listed.lines().find(|l| l.starts_with("olt-2")).unwrap();
    assert!(olt_2.contains(" no "), "{olt_2}");

    let out = cli.run(&[
        "job",
        "add",
        "poll-1",
        "--queue",
        "smoke",
        "--target",
        "olt-1",
        "--interval",
        "300ms",
        "--params",
        r#"{"duration_ms": 1}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli.run(&[
        "job",
        "add",
        "bad",
        "--queue",
        "smoke",
        "--overlap",
        "queue_one",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("overlap needs interval"));
    let row = cli.wait_listed_success("poll-1", "olt-1");
    assert!(row.contains("0.3s") && row.contains("yes"), "{row}");

    // The simulated fleet, one OLT of each vendor, is polled for real: each OLT's chain
    // (discovery, descriptions, optical power) through snmpsim, the worker's values
    // permission and the dispatcher.
    let out = cli.run(&["target", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    for (i, (target, _)) in FLEET.iter().enumerate() {
        let row = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(*target))
            .unwrap_or_else(|| panic!("{target} is not a target: {listed}"));
        let address = format!("127.0.0.1:{}", snmp_base + 1 + i as u16);
        assert!(row.contains(&address), "{target} not on {address}: {row}");
    }
    for (target, job) in FLEET {
        cli.wait_listed_success(job, target);
    }
    // Every OLT's values reached target_values, from each vendor's own MIB tree.
    for (target, tree) in [
        ("olt-huawei-1", "1.3.6.1.4.1.2011.6.128."),
        ("olt-zte-1", "1.3.6.1.4.1.3902.1012.3."),
        ("olt-zte-c600-1", "1.3.6.1.4.1.3902.1082.500."),
        ("olt-fiberhome-1", "1.3.6.1.4.1.5875.800.3."),
    ] {
        let values: i64 = client
            .query_one(
                "SELECT count(*) FROM target_values WHERE target = $1 AND oid LIKE $2 || '%'",
                &[&target, &tree],
            )
            .await
            .unwrap()
            .get(0);
        assert!(values > 0, "no values of {target} under {tree}");
    }
    let out = cli.run(&["job", "disable", "poll-1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("job poll-1 disabled"));
    let out = cli.run(&["job", "disable", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job nope"));

    // An integrator's program (nats-py, not faro's client) submits by request/reply as
    // user submitter and reads the answer (the runs made, or the refusal naming job and
    // field), then follows the outcome feed until its runs have ended. Its output: the
    // answer, then an outcome per line.
    let submitter = dev_password(state.path(), "SUBMITTER");
    let integrator = |args: &[&str]| {
        let out = Command::new("python3")
            .arg(root.join("examples/nats-submit.py"))
            .args(args)
            .envs(cli.env.iter().cloned())
            .env("FARO_NATS_USER", "submitter")
            .env("FARO_NATS_PASSWORD", &submitter)
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        // What it was answered is checked for secrets with the rest.
        cli.said.lock().unwrap().push_str(&printed);
        assert!(
            out.status.code() != Some(2),
            "{printed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = printed
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap());
        let answer = lines.next().unwrap_or_else(|| {
            panic!(
                "the integrator printed no answer: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), answer, lines.collect::<Vec<_>>())
    };
    let jobs = dir.path().join("integrator.json");
    std::fs::write(
        &jobs,
        r#"{"jobs": [{"id": "from-python", "queue": "get", "kind": "sim", "target": "olt-1",
                      "params": {"duration_ms": 5, "outcomes": {"succeeded": 1}}}]}"#,
    )
    .unwrap();
    let file = jobs.to_str().unwrap();
    let (accepted, answer, outcomes) = integrator(&["--follow", file, "integrator-1"]);
    assert!(accepted && answer["accepted"] == true, "{answer}");
    assert_eq!(answer["runs"][0]["job_id"], "from-python", "{answer}");
    let run = answer["runs"][0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(
        (
            &outcomes[0]["run_id"],
            &outcomes[0]["status"],
            &outcomes[0]["target"]
        ),
        (
            &serde_json::json!(run),
            &serde_json::json!("succeeded"),
            &serde_json::json!("olt-1")
        ),
        "{outcomes:?}"
    );
    let out = cli.run(&["explain", "run", &run]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("from-python"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (again, repeated, _) = integrator(&[file, "integrator-1"]);
    assert!(again && repeated["duplicate"] == true, "{repeated}");
    assert_eq!(repeated["runs"], answer["runs"]);
    std::fs::write(
        &jobs,
        r#"[{"queue": "get", "kind": "sim"}, {"queue": "get", "kind": "sim", "priority": 0}]"#,
    )
    .unwrap();
    let (accepted, answer, _) = integrator(&[file, "integrator-2"]);
    assert!(!accepted && answer["accepted"] == false, "{answer}");
    assert_eq!(
        (&answer["error"]["job"], &answer["error"]["field"]),
        (&serde_json::json!(1), &serde_json::json!("priority")),
        "{answer}"
    );

    // The v3 OLT polled once (after poll-1, whose demand would keep every worker from its
    // queue): the worker holds its credentials, logs at debug, and fails.
    let poll = dir.path().join("poll-v3.json");
    std::fs::write(
        &poll,
        serde_json::to_vec(&serde_json::json!([{"id": "poll-v3", "queue": "get",
            "kind": "snmp.get", "target": "olt-v3", "max_attempts": 1,
            "params": {"oids": ["1.3.6.1.2.1.1.3.0"], "timeout_ms": 200, "retries": 0}}]))
        .unwrap(),
    )
    .unwrap();
    let out = cli.run(&[
        "submit",
        "--wait",
        "--timeout",
        "60",
        poll.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done: 1 runs"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli.run(&["run", "list", "--job", "poll-v3", "--json"]);
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(page["runs"][0]["status"], "succeeded", "{page}");
    let run = page["runs"][0]["id"].as_str().unwrap().to_owned();
    cli.run(&["explain", "run", &run]);
    cli.run(&["target", "list", "--json"]);

    // The balancer's view: workers, queues, why a queue has its workers, demand mappings.
    let text = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = cli.run(&["workers"]);
    let listed = text(&out);
    assert!(
        out.status.success() && listed.contains("dev-worker-3") && listed.contains("active"),
        "{listed}"
    );
    let out = cli.run(&["queues"]);
    let listed = text(&out);
    assert!(
        listed.contains("discovery") && listed.contains("get"),
        "{listed}"
    );
    let out = cli.run(&["explain", "queue", "get"]);
    let explained = text(&out);
    assert!(
        explained.contains("queue get: priority 5")
            && explained.contains("demand: ")
            && explained.contains("workers: "),
        "{explained}"
    );
    let out = cli.run(&["explain", "pool", "default"]);
    assert!(
        text(&out).contains("pool default: 3 workers"),
        "{}",
        text(&out)
    );
    let out = cli.run(&["mapping", "add", "x", "no-such-queue"]);
    assert!(
        !out.status.success() && text(&out).contains("no queue named"),
        "{}",
        text(&out)
    );
    let out = cli.run(&["mapping", "add", "tickets-fiber", "smoke"]);
    assert!(
        text(&out).contains("tickets-fiber now counts as demand of smoke"),
        "{}",
        text(&out)
    );
    let out = cli.run(&["mapping", "list"]);
    assert!(text(&out).contains("tickets-fiber"), "{}", text(&out));
    let out = cli.run(&["mapping", "remove", "tickets-fiber"]);
    assert!(
        text(&out).contains("tickets-fiber is no longer mapped"),
        "{}",
        text(&out)
    );

    // Every service serves health and metrics.
    let dispatcher = http_base + 1;
    let health = http_get(dispatcher, "/health");
    assert!(
        health.lines().next().unwrap_or_default().contains(" 200 "),
        "{health}"
    );
    let metrics = http_get(dispatcher, "/metrics");
    assert!(
        metrics.contains("faro_dispatcher_submissions_total"),
        "{metrics}"
    );
    let worker_metrics = http_get(http_base + 11, "/metrics");
    assert!(
        worker_metrics.contains("faro_worker_runs_total"),
        "{worker_metrics}"
    );

    // SIGTERM stops everything cleanly; workers deregister.
    let mut dev = dev;
    let _ = Command::new("kill").arg(dev.0.id().to_string()).status();
    let status = dev.0.wait().unwrap();
    assert!(status.success(), "scripts/dev exited with {status}");
    let log = std::fs::read_to_string(state.path().join("logs/worker-1.log")).unwrap();
    assert!(log.contains("worker left"), "{log}");
    std::mem::forget(dev);

    // No secret in any service's log (the NATS servers' too) nor in anything shown. The
    // NATS passwords scripts/dev made are secrets as well.
    let passwords = std::fs::read_to_string(state.path().join("passwords")).unwrap();
    let mut secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
    secrets.extend(
        passwords
            .lines()
            .filter_map(|line| line.split_once('=').map(|(_, value)| value.to_owned())),
    );
    assert!(secrets.len() > 9, "no NATS password read: {passwords}");
    let mut texts = vec![(
        "the CLI's output".to_owned(),
        cli.said.lock().unwrap().clone(),
    )];
    for entry in std::fs::read_dir(state.path().join("logs")).unwrap() {
        let path = entry.unwrap().path();
        texts.push((
            path.display().to_string(),
            String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
        ));
    }
    for (name, text) in &texts {
        // Each user held what it needed: the NATS server refused none of its operations, and
        // no service was told so.
        if let Some(line) = text.lines().find(|line| line.contains("Violation")) {
            panic!("a permission refused, in {name}: {line}");
        }
        for secret in &secrets {
            if let Some(at) = text.find(secret.as_str()) {
                let line = text[..at].rfind('\n').map_or(0, |n| n + 1);
                let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
                panic!("secret {secret:?} in {name}: {}", &text[line..end]);
            }
        }
    }
    // The secrets went where they lead, and failed there: the demand source's failures are
    // logged, its URL shown without them.
    let demand_log = &texts
        .iter()
        .find(|(name, _)| name.ends_with("demand-collector.log"))
        .unwrap()
        .1;
    for shown in [
        format!("cannot reach http://127.0.0.1:{}/d?…", demand.port),
        format!("http://127.0.0.1:{}/d?… answered 500", demand.port),
    ] {
        assert!(demand_log.contains(&shown), "{shown} not in {demand_log}");
    }
    assert!(
        demand.authorized.load(std::sync::atomic::Ordering::SeqCst),
        "the demand source never got its Authorization header"
    );
}

// It found, under the load of the whole suite: services declaring the same streams at once
// on a forming cluster made each creation outlast the request timeout (the topology took
// minutes and a service gave up), so scripts/dev now starts the others after the dispatcher;
// and `faro submit` failing with "no stream found" while the stream elected a new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_dev_runs_on_a_three_node_nats_cluster_and_survives_losing_one() {
    let faro = PathBuf::from(env!("CARGO_BIN_EXE_faro"));
    let bin_dir = faro.parent().unwrap().to_owned();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let db = TestDb::create().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let (nats_port, http_base, _) = quiet_ports();
    seed_settings(&db, "0s").await;
    let (_dev, lines) = start_dev(
        root,
        &[
            "--no-build",
            "--workers",
            "1",
            "--olts",
            "0",
            "--nats-cluster",
        ],
        &[
            ("FARO_DEV_BIN_DIR", bin_dir.display().to_string()),
            ("FARO_DEV_STATE", state.path().display().to_string()),
            ("FARO_DEV_NATS_PORT", nats_port.to_string()),
            ("FARO_DEV_NATS_CLUSTER_PORT", (nats_port + 5).to_string()),
            ("FARO_DEV_HTTP_BASE", http_base.to_string()),
            ("FARO_DEV_DATABASE", db.name().to_owned()),
        ],
    );
    let (url, password) = wait_ready(&lines);
    let nodes: Vec<String> = (0..3)
        .map(|i| format!("nats://127.0.0.1:{}", nats_port + i))
        .collect();
    assert_eq!(url, nodes.join(","), "the services are given every node");
    let cli = Cli {
        bin: faro,
        env: vec![
            ("FARO_NATS_URL".into(), url),
            ("FARO_NATS_USER".into(), "operator".into()),
            ("FARO_NATS_PASSWORD".into(), password),
        ],
        said: std::sync::Mutex::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let submit = |name: &str| {
        let jobs: Vec<_> = (0..20)
            .map(|i| {
                serde_json::json!({"id": format!("{name}-{i}"), "queue": "smoke", "kind": "sim",
                                   "params": {"duration_ms": [0, 50], "outcomes": {"succeeded": 1}}})
            })
            .collect();
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_vec(&jobs).unwrap()).unwrap();
        let out = cli.run(&[
            "submit",
            "--wait",
            "--timeout",
            "90",
            file.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("done: 20 runs (20 succeeded)"),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    submit("before");

    // The first node dies (SIGKILL): the services move to the other two, which hold a copy
    // of every stream and bucket, and the next runs go through as before.
    let killed = Command::new("pkill")
        .args(["-KILL", "-f", &format!("nats-server .*-p {nats_port} ")])
        .status()
        .unwrap();
    assert!(
        killed.success(),
        "no nats-server on port {nats_port} to kill"
    );
    submit("after");
    // Moving to the other nodes, every service opened its watches and consumers again (an
    // ordered consumer made again deletes the one it had): each user still held what it
    // needed, and no NATS node refused any of it.
    for entry in std::fs::read_dir(state.path().join("logs")).unwrap() {
        let path = entry.unwrap().path();
        let log = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        if let Some(line) = log.lines().find(|line| line.contains("Violation")) {
            panic!("a permission refused, in {}: {line}", path.display());
        }
    }
}
