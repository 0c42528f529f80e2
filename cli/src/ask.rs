//! Asking a service: `ask(&env, &request)` sends a typed request on its subject and returns
//! its typed reply; an answer that is an error becomes the command's error.

use std::time::Duration;

use anyhow::Context as _;
use faro_shared::config::Env;
use faro_shared::messages::Request;
use faro_shared::{api, nats, CommonConfig};

/// Sends `request` to its service (`faro.api.<service>.<verb>`) and returns the reply.
///
/// While nobody answers (a dispatcher standing by does not, and one that just started has not
/// taken the lease yet), it waits up to `FARO_API_WAIT` (30 s), saying once that it waits.
pub async fn ask<R: Request>(env: &Env, request: &R) -> anyhow::Result<R::Reply> {
    let config = CommonConfig::from_env(env)?;
    let wait = env.duration("FARO_API_WAIT", Duration::from_secs(30))?;
    let client = nats::connect(&config.nats, "faro-cli", nats::Retry::Never).await?;
    let payload = request.encode()?;
    let subject = R::subject(&config.namespace);
    let service = R::SERVICE.as_str();
    let nobody = R::SERVICE.who();
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = NoResponders::new(deadline);
    let reply = loop {
        // A reply larger than the server's max_payload comes in pages, each within 10 s.
        let answer = api::request(
            &client,
            subject.clone(),
            payload.clone().into(),
            Duration::from_secs(10),
        )
        .await;
        match answer {
            Ok(reply) => break reply,
            Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
                match backoff.next() {
                    Some((delay, first)) => {
                        if first {
                            eprintln!(
                                "faro: waiting for {nobody} to answer (none does yet; giving up after {} s, FARO_API_WAIT)",
                                wait.as_secs()
                            );
                        }
                        tokio::time::sleep(delay).await;
                    }
                    None => anyhow::bail!(
                        "no {service} answered within {} s (FARO_API_WAIT): is {nobody} running?",
                        wait.as_secs()
                    ),
                }
            }
            Err(error) if error.kind() == async_nats::RequestErrorKind::TimedOut => {
                anyhow::bail!("no {service} answered within 10 s");
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot ask the {service}"));
            }
        }
    };
    R::decode_reply(&reply)
}

/// The pauses between requests nobody answered: 100 ms doubling to 1 s, until a deadline.
#[derive(Debug)]
pub struct NoResponders {
    deadline: tokio::time::Instant,
    delay: Duration,
    tries: u32,
}

impl NoResponders {
    pub fn new(deadline: tokio::time::Instant) -> Self {
        Self {
            deadline,
            delay: Duration::from_millis(100),
            tries: 0,
        }
    }

    /// The next pause and whether it is the first, or `None` once the deadline would pass.
    pub fn next(&mut self) -> Option<(Duration, bool)> {
        if tokio::time::Instant::now() + self.delay > self.deadline {
            return None;
        }
        let pause = self.delay;
        self.delay = (self.delay * 2).min(Duration::from_secs(1));
        self.tries += 1;
        Some((pause, self.tries == 1))
    }
}
