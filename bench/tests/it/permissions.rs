//! The users of `nats/nats-server.conf` on a real nats-server: each may do what its part of
//! faro needs, through the same calls faro makes, and is refused everything else it could use
//! to harm the rest (delete or purge a stream, make or change another's consumer, write
//! another's bucket, read another's inbox or data, publish on another service's subjects).

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use faro_shared::config::{Env, NatsConfig};
use faro_shared::domain::{QueueName, TargetId};
use faro_shared::nats::{self, TopologySettings};
use faro_shared::testing::{NatsServer, TEST_JETSTREAM_MAX_BYTES};
use faro_shared::Namespace;
use futures::StreamExt as _;

const USERS: [&str; 7] = [
    "admin",
    "dispatcher",
    "worker",
    "balancer",
    "demand",
    "submitter",
    "operator",
];

fn password(user: &str) -> String {
    format!("pw-{user}")
}

fn server() -> NatsServer {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats/nats-server.conf");
    let vars: Vec<(String, String)> = USERS
        .iter()
        .chain(&["sys"])
        .map(|user| {
            (
                format!("FARO_NATS_{}_PASSWORD", user.to_uppercase()),
                password(user),
            )
        })
        .collect();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    NatsServer::start_with_config(&conf, &vars).unwrap()
}

/// A client of `user` as faro connects it (its inbox prefix from its name, unless `prefix`),
/// and the errors the server sends it.
async fn client(
    server: &NatsServer,
    user: &str,
    prefix: Option<&str>,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut pairs = vec![
        ("FARO_NATS_USER", user.to_owned()),
        ("FARO_NATS_PASSWORD", password(user)),
    ];
    if let Some(prefix) = prefix {
        pairs.push(("FARO_NATS_INBOX_PREFIX", prefix.to_owned()));
    }
    let config: NatsConfig = NatsConfig::from_env(&Env::from_pairs(
        pairs.iter().map(|(k, v)| (*k, v.as_str())),
    ))
    .unwrap();
    let (errors_tx, errors) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.to_owned(), password(user))
        .custom_inbox_prefix(&config.inbox_prefix)
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors_tx.send(error.to_string());
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    (client, errors)
}

/// Waits for the server to refuse `what` (`Publish` or `Subscription`) to exactly `subject`.
async fn refused(
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    what: &str,
    subject: &str,
) {
    let quoted = format!("{what} to \"{subject}\"");
    let wait = async {
        while let Some(error) = errors.recv().await {
            if error.contains("Permissions Violation") && error.contains(&quoted) {
                return;
            }
            assert!(
                !error.contains("Permissions Violation"),
                "refused something it needs, or something not asked: {error}"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("{what} to {subject} was not refused"));
}

/// A user trying each of `subjects` with a plain publish (the JetStream API is requests on
/// subjects, so a refused publish is a refused operation) and each of `subscriptions`: every
/// one is refused, and the server reports nothing else refused before them.
async fn refuses_all(server: &NatsServer, user: &str, subjects: &[String], subscriptions: &[&str]) {
    let (client, mut errors) = client(server, user, None).await;
    for subject in subjects {
        client.publish(subject.clone(), "{}".into()).await.unwrap();
        client.flush().await.unwrap();
        refused(&mut errors, "Publish", subject).await;
    }
    for subject in subscriptions {
        let _subscription = client.subscribe(subject.to_string()).await.unwrap();
        refused(&mut errors, "Subscription", subject).await;
    }
}

/// Pulling the submissions or results from the dispatcher's consumer: no one but the dispatcher.
const DISPATCHERS_PULLS: [&str; 2] = [
    "$JS.API.CONSUMER.MSG.NEXT.FARO_SUBMIT.dispatcher",
    "$JS.API.CONSUMER.MSG.NEXT.FARO_RESULTS.dispatcher",
];

/// What no service or client user may do: change or remove a stream, bucket or the
/// dispatcher's consumers, make a consumer that reads submissions or results, read another's
/// replies or the submissions as they are published.
fn forbidden_to_all(ns: &Namespace) -> Vec<String> {
    let (submit, results, jobs) = (ns.submit_stream(), ns.results_stream(), ns.jobs_stream());
    let leases = format!("KV_{}", ns.leases_bucket());
    let mut subjects = Vec::new();
    for stream in [&submit, &results, &jobs, &ns.demand_stream(), &leases] {
        for action in ["DELETE", "PURGE", "UPDATE"] {
            subjects.push(format!("$JS.API.STREAM.{action}.{stream}"));
        }
    }
    subjects.extend([
        "$JS.API.STREAM.CREATE.FARO_MINE".to_owned(),
        format!("$JS.API.STREAM.MSG.DELETE.{results}"),
        format!("$JS.API.STREAM.MSG.GET.{submit}"),
        format!("$JS.API.CONSUMER.DELETE.{submit}.dispatcher"),
        format!("$JS.API.CONSUMER.DELETE.{jobs}.jobs-q"),
        // A consumer on the submissions or results: a new one, or the dispatcher's changed.
        format!("$JS.API.CONSUMER.CREATE.{submit}"),
        format!("$JS.API.CONSUMER.CREATE.{submit}.thief"),
        format!("$JS.API.CONSUMER.CREATE.{results}.dispatcher"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{results}.thief"),
    ]);
    subjects
}

const SUBSCRIPTIONS: [&str; 4] = ["faro.submit", "faro.results.>", "faro.values.>", "_INBOX.>"];

fn with(mut subjects: Vec<String>, more: &[&str]) -> Vec<String> {
    subjects.extend(more.iter().map(|subject| (*subject).to_owned()));
    subjects
}

type Errors = tokio::sync::mpsc::UnboundedReceiver<String>;

/// A subscription of `client` to `subject` the server has taken: a flush only sends it, so it
/// first hears a probe `asker` sends on it (a request sent before would find no one). Probes
/// carry no reply subject: what reads requests skips them.
async fn listening(
    client: &async_nats::Client,
    asker: &async_nats::Client,
    subject: &str,
) -> async_nats::Subscriber {
    let mut subscription = client.subscribe(subject.to_owned()).await.unwrap();
    within("the subscription", async {
        loop {
            asker
                .publish(subject.to_owned(), "probe".into())
                .await
                .unwrap();
            asker.flush().await.unwrap();
            let heard = tokio::time::timeout(Duration::from_millis(200), subscription.next()).await;
            if matches!(heard, Ok(Some(ref message)) if message.payload == "probe") {
                return;
            }
        }
    })
    .await;
    subscription
}

/// `what`, or a failure naming it after 20 s.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what} never came"))
}

/// A JetStream context of `user`, with a short timeout (a refused request fails soon), and
/// the errors the server sends it.
async fn jetstream_of(server: &NatsServer, user: &str) -> (jetstream::Context, Errors) {
    let (client, errors) = client(server, user, None).await;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client);
    (js, errors)
}

async fn stored(js: &jetstream::Context, subject: String, body: &'static str) {
    js.publish(subject.clone(), body.into())
        .await
        .unwrap_or_else(|error| panic!("{subject}: {error}"))
        .await
        .unwrap_or_else(|error| panic!("{subject}: {error}"));
}

/// Whether a request on `subject` was let through (no one answers it here: "no responders").
async fn let_through(client: &async_nats::Client, subject: &str) -> bool {
    matches!(
        client.request(subject.to_owned(), "{}".into()).await,
        Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_may_do_what_it_needs_and_is_refused_the_rest() {
    let server = server();
    let ns = Namespace::default();
    let queue = QueueName::parse("q").unwrap();
    let target = TargetId::parse("olt-1").unwrap();

    // `faro setup`, as admin: the only user that may declare.
    let (admin, admin_errors) = jetstream_of(&server, "admin").await;
    // The file's max_payload (4 MB) needs more room than the harness's usual store.
    let settings = TopologySettings {
        max_bytes: 4 * TEST_JETSTREAM_MAX_BYTES,
        ..Default::default()
    };
    nats::provision(&admin, &ns, &settings, Duration::from_secs(30))
        .await
        .unwrap();

    // A submitter submits, asks the submission API, and follows the outcome feed.
    let (submitter, submitter_errors) = jetstream_of(&server, "submitter").await;
    stored(&submitter, ns.submit_subject(), "[]").await;
    assert!(let_through(&submitter.client(), "faro.api.dispatcher.submit").await);
    assert!(let_through(&submitter.client(), "faro.api.dispatcher.submission").await);
    let mut feed = submitter
        .get_stream(ns.outcomes_stream())
        .await
        .unwrap()
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();

    // The dispatcher binds its consumers, reads the submission, makes the queue's consumer,
    // publishes a run and what ends it, and holds the leader lease.
    let (dispatcher, dispatcher_errors) = jetstream_of(&server, "dispatcher").await;
    let topology = nats::bind_topology(&dispatcher, &ns).await.unwrap();
    let submissions = nats::bind_service_consumer(&dispatcher, &ns.submit_stream(), "dispatcher")
        .await
        .unwrap();
    let mut batch = submissions
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .unwrap();
    let submission = within("the submission", batch.next())
        .await
        .unwrap()
        .unwrap();
    submission.double_ack().await.unwrap();
    nats::bind_service_consumer(&dispatcher, &ns.results_stream(), "dispatcher")
        .await
        .unwrap();
    nats::ensure_queue_consumer(&dispatcher, &ns, &queue)
        .await
        .unwrap();
    stored(&dispatcher, ns.job_subject(&queue, Some(&target)), "run").await;
    dispatcher
        .get_stream(ns.jobs_stream())
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    topology.leases.put("leader", "d1".into()).await.unwrap();
    topology.leases.entry("leader").await.unwrap().unwrap();
    stored(
        &dispatcher,
        ns.outcome_subject(&queue, Some(&target)),
        "outcome",
    )
    .await;
    stored(&dispatcher, ns.event_subject("dispatcher"), "event").await;
    stored(&dispatcher, ns.dead_subject("results"), "dead").await;
    assert_eq!(
        &within("the outcome", feed.next())
            .await
            .unwrap()
            .unwrap()
            .payload[..],
        b"outcome",
        "the submitter reads the feed"
    );

    // A worker opens the queue's consumer, takes the run, publishes its result and values,
    // beats, reads its assignment and its target's slot lease.
    let (worker, worker_errors) = jetstream_of(&server, "worker").await;
    let topology = nats::bind_topology(&worker, &ns).await.unwrap();
    let runs = nats::bind_queue_consumer(&worker, &ns, &queue)
        .await
        .unwrap()
        .expect("the dispatcher made the queue's consumer");
    let mut batch = runs.fetch().max_messages(1).messages().await.unwrap();
    let run = within("the run", batch.next()).await.unwrap().unwrap();
    run.double_ack().await.unwrap();
    stored(&worker, ns.values_subject(&queue, &target), "values").await;
    stored(&worker, ns.result_subject(&queue, Some(&target)), "result").await;
    topology.workers.put("w1", "beat".into()).await.unwrap();
    topology.leases.entry("leader").await.unwrap();
    topology.assignments.watch_with_history("w1").await.unwrap();

    // The balancer watches the workers and the demand, writes assignments and cooling.
    let (balancer, balancer_errors) = jetstream_of(&server, "balancer").await;
    let topology = nats::bind_topology(&balancer, &ns).await.unwrap();
    topology.workers.watch_with_history(">").await.unwrap();
    topology.assignments.put("w1", "q".into()).await.unwrap();
    topology.assignments.keys().await.unwrap();
    topology.assignments.get("w1").await.unwrap();
    topology.cooling.put("default", "now".into()).await.unwrap();
    topology.cooling.keys().await.unwrap();
    balancer
        .get_stream(ns.demand_stream())
        .await
        .unwrap()
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    stored(&balancer, ns.event_subject("balancer"), "event").await;

    // The demand-collector reads the queue's backlog and publishes its demand.
    let (demand, demand_errors) = jetstream_of(&server, "demand").await;
    nats::bind_topology(&demand, &ns).await.unwrap();
    let mut backlog = nats::bind_queue_consumer(&demand, &ns, &queue)
        .await
        .unwrap()
        .unwrap();
    backlog.info().await.unwrap();
    stored(&demand, ns.demand_subject(&queue), "7").await;

    // An operator uses the admin API and reads the dead letters.
    let (operator, operator_errors) = jetstream_of(&server, "operator").await;
    assert!(let_through(&operator.client(), "faro.api.dispatcher.config").await);
    assert!(let_through(&operator.client(), "faro.api.balancer.workers").await);
    let letters = faro_shared::messages::dead::read_last(&operator, &ns, 10)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    stored(&operator, ns.submit_subject(), "[]").await;

    // A watch looks at its consumer (its heartbeats missed, a node lost) and, made again,
    // deletes the one it had: each user that watches may do both on what it watches.
    for (js, stream) in [
        (&dispatcher, format!("KV_{}", ns.leases_bucket())),
        (&worker, format!("KV_{}", ns.assignments_bucket())),
        (&balancer, format!("KV_{}", ns.workers_bucket())),
        (&balancer, format!("KV_{}", ns.assignments_bucket())),
        (&balancer, format!("KV_{}", ns.cooling_bucket())),
        (&balancer, ns.demand_stream()),
        (&submitter, ns.outcomes_stream()),
        (&operator, ns.outcomes_stream()),
    ] {
        let stream = js.get_stream(&stream).await.unwrap();
        let name = format!("watch-{}", uuid::Uuid::new_v4().simple());
        stream
            .create_consumer(consumer::pull::Config {
                name: Some(name.clone()),
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .unwrap();
        stream.consumer_info(&name).await.unwrap();
        stream.delete_consumer(&name).await.unwrap();
    }

    // A reply larger than max_payload goes in pages, several messages to one request: the
    // dispatcher and the balancer may send them all.
    for (service, subject) in [
        (dispatcher.client(), "faro.api.dispatcher.runs"),
        (balancer.client(), "faro.api.balancer.workers"),
    ] {
        let mut requests = listening(&service, &operator.client(), subject).await;
        let asking = operator.client();
        let inbox = asking.new_inbox();
        let mut replies = asking.subscribe(inbox.clone()).await.unwrap();
        asking
            .publish_with_reply(subject, inbox, "{}".into())
            .await
            .unwrap();
        // Past any probe heard late.
        let request = within("the request", async {
            loop {
                let message = requests.next().await.unwrap();
                if message.reply.is_some() {
                    return message;
                }
            }
        })
        .await;
        for page in 0..3 {
            service
                .publish(
                    request.reply.clone().unwrap(),
                    format!("page {page}").into(),
                )
                .await
                .unwrap();
        }
        for page in 0..3 {
            let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
                .await
                .unwrap_or_else(|_| panic!("{subject}: page {page} of 3 never came"))
                .unwrap();
            assert_eq!(reply.payload, format!("page {page}"));
        }
    }

    // None of that was refused, in part or on the side (a flow-control reply, an ack): what
    // the server says comes within moments.
    for (user, mut errors) in [
        ("admin", admin_errors),
        ("submitter", submitter_errors),
        ("dispatcher", dispatcher_errors),
        ("worker", worker_errors),
        ("balancer", balancer_errors),
        ("demand", demand_errors),
        ("operator", operator_errors),
    ] {
        if let Ok(Some(error)) =
            tokio::time::timeout(Duration::from_millis(500), errors.recv()).await
        {
            panic!("{user} was refused what it needs: {error}");
        }
    }

    // And now what each may not do.
    let common = forbidden_to_all(&ns);
    refuses_all(
        &server,
        "dispatcher",
        &with(
            common.clone(),
            &[
                "$KV.faro_workers.w1",
                "$KV.faro_assignments.w1",
                "$KV.faro_cooling.default",
                "faro.results.q.olt-1",
                "faro.values.q.olt-1",
                "faro.demand.q",
            ],
        ),
        &SUBSCRIPTIONS,
    )
    .await;
    refuses_all(
        &server,
        "worker",
        &with(
            with(common.clone(), &DISPATCHERS_PULLS),
            &[
                // Neither the leases (the leader's above all), nor assignments, nor cooling.
                "$KV.faro_leases.leader",
                "$KV.faro_assignments.w1",
                "$KV.faro_cooling.default",
                // No consumer of its own on the runs, and no change to a queue's.
                "$JS.API.CONSUMER.CREATE.FARO_JOBS",
                "$JS.API.CONSUMER.CREATE.FARO_JOBS.jobs-q.faro.jobs.q.>",
                "$JS.API.CONSUMER.DURABLE.CREATE.FARO_JOBS.mine",
                "$JS.API.STREAM.MSG.GET.FARO_JOBS",
                "$JS.API.CONSUMER.CREATE.FARO_OUTCOMES",
                "$JS.API.DIRECT.GET.KV_faro_cooling.$KV.faro_cooling.default",
                "faro.jobs.q.olt-1",
                "faro.outcomes.q.olt-1",
                "faro.events.worker",
                "faro.demand.q",
                "faro.submit",
                "faro.api.dispatcher.config",
                "$KV.faro_workers",
            ],
        ),
        &with_subscriptions(&["faro.jobs.>", "faro.outcomes.>", "faro.api.dispatcher.>"]),
    )
    .await;
    refuses_all(
        &server,
        "balancer",
        &with(
            with(common.clone(), &DISPATCHERS_PULLS),
            &[
                "$KV.faro_leases.leader",
                "$KV.faro_workers.w1",
                "$JS.API.CONSUMER.MSG.NEXT.FARO_JOBS.jobs-q",
                "faro.jobs.q.olt-1",
                "faro.results.q.olt-1",
                "faro.submit",
            ],
        ),
        &SUBSCRIPTIONS,
    )
    .await;
    refuses_all(
        &server,
        "demand",
        &with(
            with(common.clone(), &DISPATCHERS_PULLS),
            &[
                "$KV.faro_leases.leader",
                "$KV.faro_workers.w1",
                "$KV.faro_assignments.w1",
                "$JS.API.CONSUMER.MSG.NEXT.FARO_JOBS.jobs-q",
                "faro.jobs.q.olt-1",
                "faro.results.q.olt-1",
                "faro.events.demand",
            ],
        ),
        &SUBSCRIPTIONS,
    )
    .await;
    refuses_all(
        &server,
        "submitter",
        &with(
            with(common.clone(), &DISPATCHERS_PULLS),
            &[
                // No admin API: configuration, cancel, targets, the balancer's.
                "faro.api.dispatcher.config",
                "faro.api.dispatcher.cancel",
                "faro.api.dispatcher.target",
                "faro.api.balancer.workers",
                // No dead letters (they hold what others submitted), no runs.
                "$JS.API.STREAM.INFO.FARO_DEAD",
                "$JS.API.STREAM.MSG.GET.FARO_DEAD",
                "$JS.API.CONSUMER.MSG.NEXT.FARO_JOBS.jobs-q",
                "$KV.faro_leases.leader",
                "faro.jobs.q.olt-1",
                "faro.results.q.olt-1",
                "faro.outcomes.q.olt-1",
            ],
        ),
        &with_subscriptions(&["faro.outcomes.>", "faro.api.dispatcher.>"]),
    )
    .await;
    refuses_all(
        &server,
        "operator",
        &with(
            with(common.clone(), &DISPATCHERS_PULLS),
            &[
                "$KV.faro_leases.leader",
                "$KV.faro_assignments.w1",
                "$JS.API.CONSUMER.MSG.NEXT.FARO_JOBS.jobs-q",
                "$JS.API.CONSUMER.MSG.NEXT.FARO_SUBMIT.dispatcher",
                "faro.jobs.q.olt-1",
                "faro.results.q.olt-1",
                "faro.outcomes.q.olt-1",
            ],
        ),
        &with_subscriptions(&["faro.api.dispatcher.>"]),
    )
    .await;

    // Nothing refused happened: the streams, their consumers and their messages are there.
    let mut results = admin.get_stream(ns.results_stream()).await.unwrap();
    assert_eq!(
        results.info().await.unwrap().state.messages,
        2,
        "result and values"
    );
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut listed = admin.stream_names();
    while let Some(name) = listed.next().await {
        names.insert(name.unwrap());
    }
    for stream in [
        ns.submit_stream(),
        ns.jobs_stream(),
        ns.results_stream(),
        ns.demand_stream(),
        format!("KV_{}", ns.leases_bucket()),
    ] {
        assert!(names.contains(&stream), "{stream} is gone: {names:?}");
    }
    assert!(!names.contains("FARO_MINE"));
    let leases = admin.get_key_value(ns.leases_bucket()).await.unwrap();
    assert_eq!(&leases.get("leader").await.unwrap().unwrap()[..], b"d1");
    admin
        .get_consumer_from_stream::<consumer::pull::Config, _, _>("dispatcher", ns.submit_stream())
        .await
        .unwrap();
}

fn with_subscriptions(more: &[&'static str]) -> Vec<&'static str> {
    SUBSCRIPTIONS.iter().chain(more).copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_reads_its_own_replies_and_no_one_elses() {
    let server = server();
    // The dispatcher answers requests on its API.
    let (dispatcher, _) = client(&server, "dispatcher", None).await;
    let (operator, _) = client(&server, "operator", None).await;
    let mut api = listening(&dispatcher, &operator, "faro.api.dispatcher.status").await;
    let answering = tokio::spawn({
        let dispatcher = dispatcher.clone();
        async move {
            while let Some(request) = api.next().await {
                if let Some(reply) = request.reply {
                    dispatcher.publish(reply, "ok".into()).await.unwrap();
                }
            }
        }
    });

    for user in USERS {
        let (client, mut errors) = client(&server, user, None).await;
        // Its own replies reach it: JetStream's (a stream it may look at), and for the
        // operator a service's.
        let stream = match user {
            "submitter" | "operator" | "admin" => "FARO_OUTCOMES",
            _ => "KV_faro_workers",
        };
        let info = client
            .request(format!("$JS.API.STREAM.INFO.{stream}"), "".into())
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&info.payload)
                .contains("io.nats.jetstream.api.v1.stream_info_response"),
            "{user}: {info:?}"
        );
        if user == "operator" {
            let answer = client
                .request("faro.api.dispatcher.status", "".into())
                .await
                .unwrap();
            assert_eq!(&answer.payload[..], b"ok");
        }
        // No one else's, and not every inbox.
        for other in USERS.iter().filter(|other| **other != user) {
            let theirs = format!("_INBOX_{other}.>");
            let _sub = client.subscribe(theirs.clone()).await.unwrap();
            refused(&mut errors, "Subscription", &theirs).await;
        }
        let _all = client.subscribe("_INBOX.>").await.unwrap();
        refused(&mut errors, "Subscription", "_INBOX.>").await;
    }

    // A client that keeps the default prefix (`_INBOX`) is refused its reply inbox, so its
    // requests get no answer: an integrator sets the prefix of the user it connects as.
    let (plain, mut errors) = client(&server, "operator", Some("_INBOX")).await;
    let asked = tokio::time::timeout(
        Duration::from_secs(2),
        plain.request("faro.api.dispatcher.status", "".into()),
    )
    .await;
    assert!(
        !matches!(asked, Ok(Ok(_))),
        "a reply reached an inbox the operator user may not read"
    );
    let wait = async {
        while let Some(error) = errors.recv().await {
            if error.contains("Permissions Violation for Subscription to \"_INBOX.") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("the default inbox was not refused");
    answering.abort();
}
