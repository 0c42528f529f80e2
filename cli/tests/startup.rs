//! Start-up order, as `docker compose up` meets it: `faro migrate` waits for a PostgreSQL that
//! does not answer yet, and a command waits for a dispatcher that has not taken the lead yet;
//! each gives up after its bound with an error naming what it waited for. `faro setup` makes
//! what the services then only bind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faro_shared::testing::{TestBus, TestDb};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP front on a free port that closes the first `refuse` connections at once (a database
/// still starting), then forwards every later one to `backend`.
struct FlakyFront {
    addr: SocketAddr,
    refused: Arc<AtomicUsize>,
}

impl FlakyFront {
    async fn start(refuse: usize, backend: Option<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let count = refused.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                match backend {
                    Some(backend) if count.load(Ordering::SeqCst) >= refuse => {
                        tokio::spawn(async move {
                            let mut outbound = TcpStream::connect(backend).await.unwrap();
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        });
                    }
                    _ => {
                        count.fetch_add(1, Ordering::SeqCst);
                        drop(inbound);
                    }
                }
            }
        });
        Self { addr, refused }
    }
}

/// The test database's URL, through `front`.
fn url_through(db: &TestDb, front: SocketAddr) -> String {
    let config: tokio_postgres::Config = db.url().parse().unwrap();
    let user = config.get_user().unwrap_or("postgres");
    format!("postgres://{user}@{front}/{}", db.name())
}

fn postgres_addr(db: &TestDb) -> SocketAddr {
    let config: tokio_postgres::Config = db.url().parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("the test database is not on TCP: {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A command's variables on `bus`, waiting at most `wait` for an answer.
fn cli_env(bus: &TestBus, wait: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = bus
        .env(None)
        .faro_vars()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    env.push(("FARO_API_WAIT".into(), wait.to_owned()));
    env
}

async fn faro(args: &[&str], env: Vec<(String, String)>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_faro"));
    command.args(args).env_clear().envs(env);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// `faro args` started, its output piped.
fn spawn_faro(args: &[&str], env: Vec<(String, String)>) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_faro"))
        .args(args)
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The first line a command writes on stderr (what it says it waits for), within 30 s.
async fn first_stderr_line(child: &mut std::process::Child) -> String {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            stderr.read_line(&mut line).unwrap();
            line
        }),
    )
    .await
    .expect("the command said nothing")
    .unwrap()
}

/// The command's end, within 60 s; `what` says what it waited for.
async fn ended(child: std::process::Child, what: &str) -> Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .unwrap_or_else(|_| panic!("the command did not end once {what}"))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_for_a_postgres_that_does_not_answer_yet() {
    let db = TestDb::create().await.unwrap();
    let front = FlakyFront::start(3, Some(postgres_addr(&db))).await;

    let output = faro(
        &["migrate"],
        vec![("FARO_DATABASE_URL".into(), url_through(&db, front.addr))],
    )
    .await;

    assert!(
        output.status.success(),
        "faro migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(front.refused.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_gives_up_after_faro_database_wait_naming_it() {
    let db = TestDb::create().await.unwrap();
    let front = FlakyFront::start(usize::MAX, None).await;

    let output = faro(
        &["migrate"],
        vec![
            ("FARO_DATABASE_URL".into(), url_through(&db, front.addr)),
            ("FARO_DATABASE_WAIT".into(), "1s".into()),
        ],
    )
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("did not answer within 1 s (FARO_DATABASE_WAIT)"),
        "{stderr}"
    );
    assert!(front.refused.load(Ordering::SeqCst) >= 2, "tried once only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_waits_for_a_leading_dispatcher() {
    let bus = TestBus::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let env = cli_env(&bus, "60s");
    let mut child = spawn_faro(&["target", "list"], env);

    // The command says it waits: only then does a dispatcher start and take the lead.
    let first = first_stderr_line(&mut child).await;
    assert!(
        first.contains("waiting for a leading dispatcher"),
        "{first}"
    );
    let shutdown = CancellationToken::new();
    let dispatcher = tokio::spawn(faro_dispatcher::run(
        faro_dispatcher::Config::from_env(&bus.env(Some(&db))).unwrap(),
        shutdown.clone(),
    ));

    let output = ended(child, "a dispatcher led").await;
    assert!(output.status.success(), "{first}");
    shutdown.cancel();
    dispatcher.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_gives_up_after_faro_api_wait_naming_it() {
    let bus = TestBus::start().await.unwrap();
    let output = faro(&["target", "list"], cli_env(&bus, "1s")).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no dispatcher answered within 1 s (FARO_API_WAIT)"),
        "{stderr}"
    );
}

/// While JetStream cannot store a submission (its stream has no leader for a moment after a
/// NATS node died; here the stream is missing until the test declares it again), `faro
/// submit` says so and publishes again, rather than fail with "no stream found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waits_while_nats_cannot_store_the_submission() {
    let bus = TestBus::start().await.unwrap();
    bus.js.delete_stream(bus.ns.submit_stream()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.json");
    std::fs::write(
        &file,
        r#"[{"id": "one", "queue": "q", "kind": "sim", "params": {}}]"#,
    )
    .unwrap();
    let mut child = spawn_faro(&["submit", file.to_str().unwrap()], cli_env(&bus, "1s"));

    // The command says it cannot store the submission yet: only then is the stream back.
    let first = first_stderr_line(&mut child).await;
    assert!(
        first.contains("NATS cannot store the submission yet"),
        "{first}"
    );
    faro_shared::nats::provision(
        &bus.js,
        &bus.ns,
        &faro_shared::nats::TopologySettings {
            max_bytes: faro_shared::testing::TEST_JETSTREAM_MAX_BYTES,
            ..Default::default()
        },
        faro_shared::nats::SETUP_WAIT,
    )
    .await
    .unwrap();

    let output = ended(child, "the stream was back").await;
    assert!(output.status.success(), "{first}");
    let mut stream = bus.js.get_stream(bus.ns.submit_stream()).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

/// `faro setup`, the privileged step of a deploy: a bad setting is refused before anything is
/// made; then the migrations, every stream, bucket and the dispatcher's consumers, each
/// printed; run again (every deploy), it applies a changed setting to what it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_declares_the_topology_and_applies_a_changed_setting_when_run_again() {
    let server = faro_shared::testing::NatsServer::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let ns = faro_shared::testing::namespace();
    let env = |max_age: &str| {
        vec![
            ("FARO_NAMESPACE".to_owned(), ns.to_string()),
            ("FARO_NATS_URL".to_owned(), server.url()),
            ("FARO_DATABASE_URL".to_owned(), db.url().to_owned()),
            (
                "FARO_JETSTREAM_MAX_BYTES".to_owned(),
                faro_shared::testing::TEST_JETSTREAM_MAX_BYTES.to_string(),
            ),
            ("FARO_OUTCOMES_MAX_AGE".to_owned(), max_age.to_owned()),
        ]
    };
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);

    let refused = faro(&["setup"], env("10s")).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("FARO_OUTCOMES_MAX_AGE"),
        "{stderr}"
    );
    assert!(
        js.get_stream(ns.submit_stream()).await.is_err(),
        "a refused setup made a stream"
    );
    assert!(
        !String::from_utf8_lossy(&refused.stdout).contains("migrations applied"),
        "a refused setup migrated first"
    );

    let made = faro(&["setup"], env("2h")).await;
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(
        made.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for said in [
        "migrations applied".to_owned(),
        format!("stream {} declared (at most", ns.jobs_stream()),
        format!("KV bucket {} declared", ns.leases_bucket()),
        format!("consumer {} > dispatcher declared", ns.results_stream()),
        format!("NATS JetStream ready for namespace {ns} (1 replica)"),
    ] {
        assert!(stdout.contains(&said), "{said:?} not in {stdout}");
    }
    let outcomes = ns.outcomes_stream();
    let max_age = || async {
        let mut stream = js.get_stream(&outcomes).await.unwrap();
        stream.info().await.unwrap().config.max_age
    };
    assert_eq!(max_age().await, Duration::from_secs(7200));
    js.get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
        "dispatcher",
        ns.submit_stream(),
    )
    .await
    .unwrap();

    let again = faro(&["setup"], env("3h")).await;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(max_age().await, Duration::from_secs(10800));
}
