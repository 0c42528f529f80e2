//! The request/reply API on core NATS (`faro.api.<service>.<verb>`): serving it, a few
//! requests at once ([`serve_api`]), and asking it ([`request`]).
//!
//! A reply is never dropped for its size: one larger than the server's `max_payload` is sent
//! as pages, each within it, in order on the requester's inbox, each with the header
//! [`REPLY_PAGE`] = `k/n`; [`request`] reads them back into the whole reply. A reply that fits
//! is one message without headers, as any NATS client reads it.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::{RequestError, RequestErrorKind};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;

/// How many requests one service instance answers at once: a slow one (a report over a long
/// history) never holds up a cancel or a maintenance switch, and a flood of them leaves most
/// of the PostgreSQL pool to the work itself. Requests beyond wait their turn.
pub const API_CONCURRENCY: usize = 4;

/// The header of each page of a reply sent in pages: `k/n`, `k` from 1 to `n`.
pub const REPLY_PAGE: &str = "Faro-Reply-Page";

/// Room kept in each page for its headers (`max_payload` counts them).
const PAGE_HEADROOM: usize = 1024;

/// Most pages a requester reads of one reply (4 GiB at nats' default 1 MiB `max_payload`):
/// more is a broken or hostile answer, not a reply.
const MAX_PAGES: usize = 4096;

/// Serves a request/reply API on `subject` (a `faro.api.<service>.*` wildcard) in queue group
/// `group` until `shutdown`, answering up to [`API_CONCURRENCY`] requests at once: each
/// request's last subject token is its verb, handed to `answer` with the request (its payload
/// and headers); `answer`'s error is sent back as `{"error": ..}` and logged, and never ends
/// the loop. A reply beyond `max_payload` goes in pages.
pub async fn serve_api<F, Fut>(
    client: &async_nats::Client,
    subject: String,
    group: &str,
    shutdown: tokio_util::sync::CancellationToken,
    answer: F,
) -> anyhow::Result<()>
where
    F: Fn(String, async_nats::Message) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<u8>>> + Send + 'static,
{
    let mut requests = client
        .queue_subscribe(subject.clone(), group.to_owned())
        .await
        .with_context(|| format!("cannot serve {subject}"))?;
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(API_CONCURRENCY));
    let mut answering = tokio::task::JoinSet::new();
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = answering.join_next(), if !answering.is_empty() => continue,
            request = requests.next() => request,
        };
        let Some(request) = request else {
            anyhow::bail!("the subscription to {subject} ended");
        };
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let verb = request
            .subject
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit?,
        };
        let answered = answer(verb.clone(), request);
        let client = client.clone();
        answering.spawn(async move {
            let _permit = permit;
            let body = match answered.await {
                Ok(body) => body,
                Err(error) => {
                    // Never a refused row: it may hold secrets the request brought.
                    let error = crate::pg::error_text(&error);
                    tracing::warn!(verb, error, "API request failed");
                    serde_json::to_vec(&crate::messages::ApiError { error }).unwrap_or_default()
                }
            };
            if let Err(error) = send_reply(&client, reply, body).await {
                tracing::warn!(
                    verb,
                    error = crate::pg::error_text(&error),
                    "cannot answer an API request"
                );
            }
        });
    }
    answering.abort_all();
    Ok(())
}

/// Sends `body` to `reply`: as it is when it fits in the server's `max_payload`, else in pages.
async fn send_reply(
    client: &async_nats::Client,
    reply: async_nats::Subject,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let room = page_room(client.server_info().max_payload);
    if body.len() <= room {
        return Ok(client.publish(reply, body.into()).await?);
    }
    let body = Bytes::from(body);
    let pages = page_ranges(body.len(), room);
    let n = pages.len();
    for (k, range) in pages.into_iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(REPLY_PAGE, format!("{}/{n}", k + 1).as_str());
        client
            .publish_with_headers(reply.clone(), headers, body.slice(range))
            .await
            .with_context(|| format!("cannot send page {} of {n} of a reply", k + 1))?;
    }
    Ok(())
}

/// The bytes of a reply a message may carry under `max_payload`, its headers aside.
fn page_room(max_payload: usize) -> usize {
    max_payload.saturating_sub(PAGE_HEADROOM).max(1)
}

/// Pure: the byte ranges of the pages of a reply of `len` bytes, each at most `room`.
fn page_ranges(len: usize, room: usize) -> Vec<std::ops::Range<usize>> {
    let room = room.max(1);
    (0..len.div_ceil(room))
        .map(|k| k * room..((k + 1) * room).min(len))
        .collect()
}

/// Pure: the `k/n` of a page's header, or `None` for a reply in one message.
fn page_of(message: &async_nats::Message) -> Option<(usize, usize)> {
    let value = message.headers.as_ref()?.get(REPLY_PAGE)?.as_str();
    let (k, n) = value.split_once('/')?;
    Some((k.parse().ok()?, n.parse().ok()?))
}

/// Sends a request on `subject` and returns its reply whole, however many pages it came in,
/// each waited for at most `wait`. Nobody serving the subject is
/// [`RequestErrorKind::NoResponders`] at once, as with `Client::request`.
pub async fn request(
    client: &async_nats::Client,
    subject: String,
    payload: Bytes,
    wait: Duration,
) -> Result<Bytes, RequestError> {
    let other = |error: &dyn std::fmt::Display| {
        RequestError::with_source(RequestErrorKind::Other, error.to_string())
    };
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| other(&e))?;
    client
        .publish_with_reply(subject, inbox, payload)
        .await
        .map_err(|error| match error.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                RequestError::with_source(RequestErrorKind::MaxPayloadExceeded, error)
            }
            _ => other(&error),
        })?;
    let first = next_message(&mut replies, wait).await?;
    if first.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Err(RequestError::new(RequestErrorKind::NoResponders));
    }
    let n = match page_of(&first) {
        None => return Ok(first.payload),
        Some((1, n)) if n <= MAX_PAGES => n,
        Some((1, n)) => {
            return Err(other(&format!(
                "a reply in {n} pages; at most {MAX_PAGES} are read"
            )))
        }
        Some((k, n)) => {
            return Err(other(&format!(
                "page {k} of {n} of a reply came first (page 1 lost)"
            )))
        }
    };
    // Grown as the pages come: the count in a header is not trusted with memory.
    let mut body = BytesMut::with_capacity(first.payload.len() * n.min(8));
    body.extend_from_slice(&first.payload);
    for k in 2..=n {
        let page = next_message(&mut replies, wait).await.map_err(|error| {
            if error.kind() == RequestErrorKind::TimedOut {
                other(&format!(
                    "page {k} of {n} of a reply did not come within {wait:?}"
                ))
            } else {
                error
            }
        })?;
        match page_of(&page) {
            Some(seen) if seen == (k, n) => body.extend_from_slice(&page.payload),
            seen => {
                return Err(other(&format!(
                    "page {k} of {n} of a reply expected, {seen:?} came (a page lost)"
                )))
            }
        }
    }
    Ok(body.freeze())
}

/// The next message on a reply inbox, waited for at most `wait`.
async fn next_message(
    replies: &mut async_nats::Subscriber,
    wait: Duration,
) -> Result<async_nats::Message, RequestError> {
    tokio::time::timeout(wait, replies.next())
        .await
        .map_err(|_| RequestError::new(RequestErrorKind::TimedOut))?
        .ok_or_else(|| {
            RequestError::with_source(RequestErrorKind::Other, "the reply subscription ended")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_cut_in_pages_that_each_fit_and_together_are_all_of_it() {
        assert_eq!(page_ranges(0, 10), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(page_ranges(10, 10), vec![0..10]);
        assert_eq!(page_ranges(25, 10), vec![0..10, 10..20, 20..25]);
        for (len, room) in [(1, 1), (4_000_001, 1_047_552), (999, 7)] {
            let pages = page_ranges(len, room);
            assert!(pages.iter().all(|p| p.len() <= room && !p.is_empty()));
            assert_eq!(pages.iter().map(|p| p.len()).sum::<usize>(), len);
            assert!(pages.windows(2).all(|w| w[0].end == w[1].start));
        }
        // A page leaves room for its header under max_payload, and never has none.
        assert_eq!(page_room(1024 * 1024), 1024 * 1024 - PAGE_HEADROOM);
        assert_eq!(page_room(10), 1);
    }
}
