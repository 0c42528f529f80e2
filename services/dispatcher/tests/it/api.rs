//! The API of a service answers requests side by side: a slow one never holds up a cancel.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_never_holds_up_the_others() {
    let bus = faro_shared::testing::TestBus::start().await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let server = {
        let (client, subject) = (bus.client.clone(), bus.ns.api_subject("svc", "*"));
        let (started, release, shutdown) = (started.clone(), release.clone(), shutdown.clone());
        tokio::spawn(async move {
            faro_shared::nats::serve_api(&client, subject, "svc", shutdown, move |verb, _| {
                let (started, release) = (started.clone(), release.clone());
                async move {
                    if verb == "slow" {
                        started.notify_one();
                        release.notified().await;
                    }
                    Ok(verb.into_bytes())
                }
            })
            .await
        })
    };
    let ask = |verb: &str| {
        let (client, subject) = (bus.client.clone(), bus.ns.api_subject("svc", verb));
        async move { client.request(subject, "".into()).await }
    };
    // Serving once a request is answered: one sent before the server subscribed gets no
    // responder at once, and so would the slow one below, which the test would wait for forever.
    while !matches!(
        tokio::time::timeout(Duration::from_secs(1), ask("fast")).await,
        Ok(Ok(_))
    ) {}
    let slow = tokio::spawn(ask("slow"));
    started.notified().await;
    let fast = tokio::time::timeout(Duration::from_secs(5), ask("fast"))
        .await
        .expect("a request waited for a slow one")
        .unwrap();
    assert_eq!(&fast.payload[..], b"fast");
    release.notify_one();
    assert_eq!(&slow.await.unwrap().unwrap().payload[..], b"slow");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
