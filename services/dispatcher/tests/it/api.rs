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
            faro_shared::api::serve_api(&client, subject, "svc", shutdown, move |verb, _| {
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

/// A reply larger than the server's max_payload reaches the requester whole, in pages; one
/// that fits is a plain message; nobody serving is said at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_beyond_the_payload_limit_arrives_whole_in_pages() {
    let bus = faro_shared::testing::TestBus::start().await.unwrap();
    let max_payload = bus.client.server_info().max_payload;
    let big: Vec<u8> = (0..max_payload * 3 + 17).map(|i| (i % 251) as u8).collect();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = {
        let (client, subject) = (bus.client.clone(), bus.ns.api_subject("svc", "*"));
        let (big, shutdown) = (big.clone(), shutdown.clone());
        tokio::spawn(async move {
            faro_shared::api::serve_api(&client, subject, "svc", shutdown, move |verb, _| {
                let big = big.clone();
                async move {
                    Ok(if verb == "big" {
                        big
                    } else {
                        b"small".to_vec()
                    })
                }
            })
            .await
        })
    };
    let ask = |verb: &str| {
        faro_shared::api::request(
            &bus.client,
            bus.ns.api_subject("svc", verb),
            "".into(),
            Duration::from_secs(5),
        )
    };
    while !matches!(ask("small").await.as_deref(), Ok(b"small")) {}
    let whole = ask("big").await.unwrap();
    assert_eq!(whole.len(), big.len());
    assert!(whole[..] == big[..], "the pages came back in another order");

    // Fits: one message without headers, as a plain NATS request reads it.
    let plain = bus
        .client
        .request(bus.ns.api_subject("svc", "small"), "".into())
        .await
        .unwrap();
    assert_eq!(&plain.payload[..], b"small");
    assert!(plain.headers.is_none());
    // A plain request of the big one gets its first page, marked as such.
    let first = bus
        .client
        .request(bus.ns.api_subject("svc", "big"), "".into())
        .await
        .unwrap();
    let page = first
        .headers
        .as_ref()
        .and_then(|h| h.get(faro_shared::api::REPLY_PAGE));
    assert_eq!(page.map(|p| p.as_str()), Some("1/4"));
    assert!(first.payload.len() <= max_payload);

    let nobody = faro_shared::api::request(
        &bus.client,
        bus.ns.api_subject("none", "status"),
        "".into(),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(nobody.kind(), async_nats::RequestErrorKind::NoResponders);
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
