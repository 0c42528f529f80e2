//! Following a JetStream watch that may die without a word.
//!
//! A KV watch or an ordered consumer is one ephemeral consumer that async-nats recreates when
//! it misses the server's heartbeats. After a NATS cluster node dies, that recreation can
//! fail for good: a create request that timed out on the client but succeeded on the server
//! leaves a consumer of the same name that every retry (with a new delivery subject) then
//! collides with, and the client retries it quietly forever. Found by the node-loss test:
//! the balancer's heartbeat watch went silent, every worker was declared lost, and no run was
//! pulled again. [`Follow`] opens the watch again, as a new consumer, when it ends, fails to
//! open, or says nothing for longer than its caller expects something.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use tokio::time::Instant;

/// First pause after a watch could not be opened; it doubles up to [`REOPEN_MAX_PAUSE`].
const REOPEN_PAUSE: Duration = Duration::from_millis(200);
const REOPEN_MAX_PAUSE: Duration = Duration::from_secs(5);

/// Why [`Follow`] opened its watch again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopened {
    /// Nothing arrived within the silence allowed.
    Silent,
    /// The watch ended.
    Ended,
}

/// A watch (any stream of results) opened by `open`, and opened again when it ends or is
/// silent too long. Entries replayed by a reopened watch are the caller's to deduplicate
/// (KV watches with history replay each key's latest value).
pub struct Follow<S, F, Fut> {
    what: &'static str,
    open: F,
    stream: Option<S>,
    /// An opening under way: kept across calls, so a caller that polls [`Follow::next`] in a
    /// `select!` beside a frequent timer still completes a slow opening.
    opening: Option<Pin<Box<Fut>>>,
    /// When the next opening may start, after one failed.
    retry_at: Option<Instant>,
    pause: Duration,
    last: Instant,
    reopened: u64,
}

impl<S, F, Fut> std::fmt::Debug for Follow<S, F, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow")
            .field("what", &self.what)
            .field("open", &self.stream.is_some())
            .field("opening", &self.opening.is_some())
            .field("reopened", &self.reopened)
            .finish_non_exhaustive()
    }
}

impl<S, F, Fut, T, E> Follow<S, F, Fut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<S>>,
    S: Stream<Item = Result<T, E>> + Unpin,
    E: Display,
{
    /// Opens the watch now; `what` names it in logs ("heartbeat watch").
    pub async fn open(what: &'static str, mut open: F) -> anyhow::Result<Self> {
        let stream = open().await?;
        Ok(Self {
            what,
            open,
            stream: Some(stream),
            opening: None,
            retry_at: None,
            pause: REOPEN_PAUSE,
            last: Instant::now(),
            reopened: 0,
        })
    }

    /// How many times the watch was opened again since [`Follow::open`].
    pub fn reopened(&self) -> u64 {
        self.reopened
    }

    /// The next entry. A watch that says nothing for `silence` (counted from the last entry or
    /// from its opening) or ends is opened again; an error it reports is logged and skipped
    /// (async-nats recovers from those itself). Cancel-safe: dropped while waiting, the next
    /// call goes on with the same watch, or the same opening.
    pub async fn next(&mut self, silence: Duration) -> T {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    if let Some(at) = self.retry_at {
                        tokio::time::sleep_until(at).await;
                        self.retry_at = None;
                    }
                    let open = &mut self.open;
                    let opening = self.opening.get_or_insert_with(|| Box::pin(open()));
                    let opened = opening.as_mut().await;
                    self.opening = None;
                    match opened {
                        Ok(stream) => {
                            self.last = Instant::now();
                            self.pause = REOPEN_PAUSE;
                            self.stream.insert(stream)
                        }
                        Err(error) => {
                            tracing::warn!(
                                watch = self.what,
                                error = crate::pg::error_text(&error),
                                retry_in_ms = self.pause.as_millis() as u64,
                                "cannot open the watch again; retrying"
                            );
                            self.retry_at = Some(Instant::now() + self.pause);
                            self.pause = (self.pause * 2).min(REOPEN_MAX_PAUSE);
                            continue;
                        }
                    }
                }
            };
            match tokio::time::timeout_at(self.last + silence, stream.next()).await {
                Ok(Some(Ok(entry))) => {
                    self.last = Instant::now();
                    return entry;
                }
                Ok(Some(Err(error))) => {
                    tracing::warn!(watch = self.what, %error, "watch error");
                }
                Ok(None) => self.reopen(Reopened::Ended, silence),
                Err(_) => self.reopen(Reopened::Silent, silence),
            }
        }
    }

    /// Drops the watch (its caller learned it missed something); the next call opens it
    /// again.
    pub fn restart(&mut self) {
        if self.stream.take().is_some() {
            self.reopened += 1;
        }
    }

    fn reopen(&mut self, why: Reopened, silence: Duration) {
        self.stream = None;
        self.reopened += 1;
        tracing::info!(
            watch = self.what,
            ?why,
            silence_ms = silence.as_millis() as u64,
            "opening the watch again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    type Item = Result<u32, String>;

    /// Opens watches whose senders the test keeps, one per opening.
    fn opener(
        senders: Arc<Mutex<Vec<mpsc::UnboundedSender<Item>>>>,
    ) -> impl FnMut() -> std::future::Ready<anyhow::Result<tokio_stream_like::Receiver<Item>>> {
        move || {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.lock().unwrap().push(tx);
            std::future::ready(Ok(tokio_stream_like::Receiver(rx)))
        }
    }

    mod tokio_stream_like {
        use std::pin::Pin;
        use std::task::{Context, Poll};

        /// An unbounded receiver as a `Stream`.
        pub struct Receiver<T>(pub tokio::sync::mpsc::UnboundedReceiver<T>);

        impl<T> futures::Stream for Receiver<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.0.poll_recv(cx)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_watch_is_opened_again_and_what_it_says_then_arrives() {
        let senders = Arc::new(Mutex::new(Vec::new()));
        let mut follow = Follow::open("test watch", opener(senders.clone()))
            .await
            .unwrap();
        senders.lock().unwrap()[0].send(Ok(1)).unwrap();
        assert_eq!(follow.next(Duration::from_secs(3)).await, 1);
        // The first watch goes quiet for good (its sender lives on, as a dead consumer's
        // subscription does); after 3 s of silence a second is opened and is heard.
        let second = {
            let senders = senders.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(tx) = senders.lock().unwrap().get(1) {
                        tx.send(Ok(2)).unwrap();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let started = Instant::now();
        assert_eq!(follow.next(Duration::from_secs(3)).await, 2);
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert_eq!(follow.reopened(), 1);
        second.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_skipped_and_an_ended_watch_is_opened_again() {
        let senders = Arc::new(Mutex::new(Vec::new()));
        let mut follow = Follow::open("test watch", opener(senders.clone()))
            .await
            .unwrap();
        {
            let first = senders.lock().unwrap().remove(0);
            first.send(Err("missed idle heartbeat".into())).unwrap();
            first.send(Ok(7)).unwrap();
            // Dropped: the watch ends after these two.
        }
        assert_eq!(follow.next(Duration::from_secs(60)).await, 7);
        assert_eq!(follow.reopened(), 0);
        let feeder = {
            let senders = senders.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(tx) = senders.lock().unwrap().first() {
                        tx.send(Ok(8)).unwrap();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        assert_eq!(follow.next(Duration::from_secs(60)).await, 8);
        assert_eq!(follow.reopened(), 1);
        feeder.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_cannot_be_opened_is_tried_again() {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let kept = attempts.clone();
        let open = move || {
            let mut kept = kept.lock().unwrap();
            let (tx, rx) = mpsc::unbounded_channel::<Item>();
            let result = match kept.len() {
                0 => Ok(tokio_stream_like::Receiver(rx)),
                1 | 2 => Err(anyhow::anyhow!("no responders")),
                _ => {
                    tx.send(Ok(42)).unwrap();
                    Ok(tokio_stream_like::Receiver(rx))
                }
            };
            kept.push(tx);
            std::future::ready(result)
        };
        let mut follow = Follow::open("test watch", open).await.unwrap();
        // The first watch is silent; opening it again fails twice, then the fourth says 42.
        assert_eq!(follow.next(Duration::from_secs(1)).await, 42);
        assert_eq!(attempts.lock().unwrap().len(), 4);
        assert_eq!(follow.reopened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_opening_survives_callers_that_give_up_waiting() {
        let opened = Arc::new(Mutex::new(Vec::new()));
        let kept = opened.clone();
        let open = move || {
            let kept = kept.clone();
            async move {
                let first = kept.lock().unwrap().is_empty();
                if !first {
                    // Opening again takes 2 s, as a create request to a struggling cluster can.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                let (tx, rx) = mpsc::unbounded_channel::<Item>();
                if !first {
                    tx.send(Ok(5)).unwrap();
                }
                kept.lock().unwrap().push(tx);
                anyhow::Ok(tokio_stream_like::Receiver(rx))
            }
        };
        let mut follow = Follow::open("test watch", open).await.unwrap();
        // A caller in a `select!` beside a 250 ms timer: each wait is cut short.
        let value = loop {
            if let Ok(value) = tokio::time::timeout(
                Duration::from_millis(250),
                follow.next(Duration::from_secs(1)),
            )
            .await
            {
                break value;
            }
        };
        assert_eq!(value, 5);
        assert_eq!(
            opened.lock().unwrap().len(),
            2,
            "opened once again, not once per wait"
        );
    }
}
