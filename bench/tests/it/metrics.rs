//! Every service's `/metrics` passes `promtool check metrics`: the four services started for
//! real, each on its own HTTP port, made to emit their metrics, and scraped over HTTP.
//!
//! They share this process and so one recorder (with whatever the other tests of this binary
//! record): promtool checks what each port serves, and each service's own declared metrics,
//! taken from its `METRICS`, must be there with their help text and type.

use std::net::SocketAddr;
use std::time::Duration;

use faro_shared::config::Env;
use faro_shared::http::{Kind, Metric};
use faro_shared::testing::{TestBus, TestDb};
use faro_shared::{http, pg};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `promtool` with `input` on its standard input; returns whether it succeeded and all
/// it printed. Fails the test when promtool is not installed.
pub fn promtool(args: &[&str], input: &[u8]) -> (bool, String) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run promtool: install Debian's prometheus package (scripts/test does)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// A service under test: where it serves HTTP, the prefix of its metric names, and the
/// metrics it declares, some of which this test does not make it emit.
struct Service {
    name: &'static str,
    addr: SocketAddr,
    prefix: &'static str,
    declared: &'static [Metric],
    not_emitted_here: &'static [&'static str],
}

/// A free port on the loopback interface for a service's HTTP server.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `env` with the service's own HTTP address.
fn on_port(env: &Env, addr: SocketAddr) -> Env {
    let mut env = env.clone();
    env.set("FARO_HTTP_ADDR", addr.to_string());
    env
}

/// `GET path` over HTTP/1.1 on a fresh connection; the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Metric families in a text exposition, from their TYPE lines: name and type.
fn families(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_once(' '))
        .collect()
}

fn type_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

/// The declared metrics of `services` that `text` lacks, as `service: name`.
fn missing(services: &[Service], text: &str) -> Vec<String> {
    let present = families(text);
    services
        .iter()
        .flat_map(|s| {
            s.declared
                .iter()
                .filter(|m| !s.not_emitted_here.contains(&m.name))
                .filter(|m| !present.iter().any(|(name, _)| *name == m.name))
                .map(|m| format!("{}: {}", s.name, m.name))
        })
        .collect()
}

/// Waits until this process's recorder has every metric the services are made to emit.
async fn wait_emitted(services: &[Service]) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let missing = missing(services, &http::render());
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never emitted within {LIMIT:?}: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the leading dispatcher answers its API.
async fn wait_dispatcher(bus: &TestBus) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !faro_bench::system::dispatcher_answers(&bus.client, &bus.ns).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dispatcher did not answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one service serves on `/metrics` is clean for promtool, carries the build info and
/// the process metrics, and describes every metric of the service present.
async fn check_scrape(service: &Service) {
    let (status, text) = get(service.addr, "/metrics").await;
    let name = service.name;
    assert_eq!(status, 200, "{name}: {text}");
    let (clean, printed) = promtool(&["check", "metrics"], text.as_bytes());
    assert!(
        clean && printed.trim().is_empty(),
        "{name}: promtool check metrics:\n{printed}"
    );

    let build_info = format!(
        "{}{{version=\"{}\",commit=\"{}\"}} 1",
        http::BUILD_INFO,
        faro_shared::VERSION,
        http::COMMIT
    );
    let build_info_alt = format!(
        "{}{{commit=\"{}\",version=\"{}\"}} 1",
        http::BUILD_INFO,
        http::COMMIT,
        faro_shared::VERSION
    );
    assert!(
        text.lines().any(|l| l == build_info || l == build_info_alt),
        "{name}: no {build_info}"
    );
    for (process_metric, kind, _) in faro_shared::process::METRICS {
        assert!(
            text.contains(&format!("# TYPE {process_metric} {kind}\n")),
            "{name}: no {process_metric}"
        );
    }

    let present = families(&text);
    for metric in service.declared {
        let Some((_, kind)) = present.iter().find(|(n, _)| *n == metric.name) else {
            assert!(
                service.not_emitted_here.contains(&metric.name),
                "{name}: {} absent",
                metric.name
            );
            continue;
        };
        assert_eq!(*kind, type_of(metric.kind), "{name}: {}", metric.name);
        assert!(
            text.contains(&format!("# HELP {} {}\n", metric.name, metric.help)),
            "{name}: {} has not its help text",
            metric.name
        );
    }
    // Nothing of this service's is exported without being declared.
    for (family, _) in present {
        if family.starts_with(service.prefix) {
            assert!(
                service.declared.iter().any(|m| m.name == family),
                "{name}: {family} is not in its METRICS"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_metrics_that_promtool_accepts() {
    use faro_balancer::metrics as balancer;
    use faro_demand_collector::metrics as demand;
    use faro_dispatcher::metrics as dispatcher;
    use faro_worker::metrics as worker;

    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    // This machine's load must not close the worker's admission.
    faro_bench::system::seed_test_settings(&pg::pool(&db.config()).unwrap())
        .await
        .unwrap();
    let mut base = bus.env(Some(&db));
    base.set("FARO_BALANCER_CYCLE", "250ms")
        .set("FARO_DEMAND_INTERVAL", "250ms")
        .set("FARO_HEARTBEAT_INTERVAL", "500ms")
        .set("FARO_WORKER_FETCH_EXPIRY", "1s")
        .set("FARO_SHUTDOWN_GRACE", "10s")
        .set("FARO_DISPATCHER_ID", "d0")
        .set("FARO_WORKER_ID", "w0");

    let services = [
        Service {
            name: "dispatcher",
            addr: free_addr(),
            prefix: "faro_dispatcher_",
            declared: dispatcher::METRICS,
            not_emitted_here: &[
                dispatcher::REDELIVERIES,
                dispatcher::TIMEOUTS,
                dispatcher::SLOT_LEASE_ERRORS,
                // bad_input.rs makes PostgreSQL refuse a result and a values chunk
                dispatcher::DEAD_LETTERS,
                dispatcher::RESULTS_UNREADABLE,
            ],
        },
        Service {
            name: "worker",
            addr: free_addr(),
            prefix: "faro_worker_",
            declared: worker::METRICS,
            not_emitted_here: &[
                worker::REDELIVERIES,
                worker::RUNS_SET_ASIDE,
                worker::RUNS_ABANDONED,
                worker::RUNS_ALREADY_ENDED,
                worker::SNMP_REQUESTS,
                worker::SNMP_TIMEOUTS,
                worker::SNMP_VALUES,
                worker::SNMP_UNREACHABLE,
                worker::CPU_PERCENT,
                worker::MEM_PERCENT,
                worker::ADMISSION_CLOSED,
            ],
        },
        Service {
            name: "balancer",
            addr: free_addr(),
            prefix: "faro_balancer_",
            declared: balancer::METRICS,
            not_emitted_here: &[],
        },
        Service {
            name: "demand-collector",
            addr: free_addr(),
            prefix: "faro_demand_",
            declared: demand::METRICS,
            not_emitted_here: &[
                demand::PROVIDER_FAILURES,
                demand::UNMAPPED,
                demand::UNMAPPED_RUNS,
            ],
        },
    ];
    let shutdown = CancellationToken::new();
    let [d, w, b, c] = &services;
    let tasks = vec![
        tokio::spawn(faro_dispatcher::run(
            faro_dispatcher::Config::from_env(&on_port(&base, d.addr)).unwrap(),
            shutdown.child_token(),
        )),
        tokio::spawn(faro_worker::run(
            faro_worker::Config::from_env(&on_port(&base, w.addr)).unwrap(),
            shutdown.child_token(),
        )),
        tokio::spawn(faro_balancer::run(
            faro_balancer::Config::from_env(&on_port(&base, b.addr)).unwrap(),
            shutdown.child_token(),
        )),
        tokio::spawn(faro_demand_collector::run(
            faro_demand_collector::Config::from_env(&on_port(&base, c.addr)).unwrap(),
            shutdown.child_token(),
        )),
    ];
    wait_dispatcher(&bus).await;

    // Work of each kind: runs, a recurring job's slots, a refused submission, garbage where
    // results and runs travel, a hot setting.
    let jobs = serde_json::json!({"jobs": [
        {"queue": "q", "kind": "sim", "target": "t1", "params": {"duration_ms": 0}},
        {"queue": "q", "kind": "sim", "target": "t1", "params": {"duration_ms": 0}},
        {"id": "tick", "queue": "q", "kind": "sim", "target": "t2", "interval": "200ms",
         "params": {"duration_ms": 0}}
    ]});
    let ns = &bus.ns;
    for (body, id) in [
        (serde_json::to_vec(&jobs).unwrap(), "jobs"),
        (b"{not json".to_vec(), "refused"),
    ] {
        bus.js
            .send_publish(
                ns.submit_subject(),
                async_nats::jetstream::message::PublishMessage::build()
                    .payload(body.into())
                    .message_id(id),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for subject in [format!("{ns}.results.q.t1"), format!("{ns}.jobs.q.t1")] {
        bus.js
            .publish(subject, "garbage".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let setting = serde_json::json!({"key": "maintenance_mode", "value": "false"});
    bus.client
        .request(
            ns.api_subject("dispatcher", "config"),
            serde_json::to_vec(&setting).unwrap().into(),
        )
        .await
        .unwrap();

    wait_emitted(&services).await;
    for service in &services {
        check_scrape(service).await;
    }

    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}
