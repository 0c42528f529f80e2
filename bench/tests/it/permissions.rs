//! The users of `nats/nats-server.conf` on a real nats-server: each reads its own replies
//! (on `_INBOX_<user>`, the prefix faro's clients use) and no one else's.

use std::time::Duration;

use faro_shared::config::{Env, NatsConfig};
use faro_shared::testing::NatsServer;
use futures::StreamExt as _;

const USERS: [&str; 5] = ["dispatcher", "worker", "balancer", "demand", "cli"];

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
/// and the permission errors the server sends it.
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

/// Waits for the server to refuse a subscription to `subject`.
async fn refused(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>, subject: &str) {
    let wait = async {
        while let Some(error) = errors.recv().await {
            if error.contains("Permissions Violation") && error.contains(subject) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("subscribing to {subject} was not refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_reads_its_own_replies_and_no_one_elses() {
    let server = server();
    // The dispatcher answers requests on its API.
    let (dispatcher, _) = client(&server, "dispatcher", None).await;
    let mut api = dispatcher
        .subscribe("faro.api.dispatcher.status")
        .await
        .unwrap();
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
    dispatcher.flush().await.unwrap();

    for user in USERS {
        let (client, mut errors) = client(&server, user, None).await;
        // Its own replies reach it: JetStream's, and for the CLI a service's.
        let info = client.request("$JS.API.INFO", "".into()).await.unwrap();
        assert!(
            String::from_utf8_lossy(&info.payload)
                .contains("io.nats.jetstream.api.v1.account_info_response"),
            "{user}: {info:?}"
        );
        if user == "cli" {
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
            refused(&mut errors, &theirs).await;
        }
        let _all = client.subscribe("_INBOX.>").await.unwrap();
        refused(&mut errors, "_INBOX.>").await;
    }

    // A client that keeps the default prefix (`_INBOX`) is refused its reply inbox, so its
    // requests get no answer: an integrator sets the prefix of the user it connects as.
    let (plain, mut errors) = client(&server, "cli", Some("_INBOX")).await;
    let asked = tokio::time::timeout(
        Duration::from_secs(2),
        plain.request("faro.api.dispatcher.status", "".into()),
    )
    .await;
    assert!(
        !matches!(asked, Ok(Ok(_))),
        "a reply reached an inbox the cli user may not read"
    );
    refused(&mut errors, "_INBOX.").await;
    answering.abort();
}
