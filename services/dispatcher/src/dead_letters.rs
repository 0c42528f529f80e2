//! Setting aside what cannot be recorded: the message is kept in the dead-letter stream with
//! where it came from and why, counted and logged, and terminated in its own stream, so it is
//! never delivered again and never holds up what comes after it.

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use faro_shared::messages::dead::{
    DEAD_DELIVERIES, DEAD_REASON, DEAD_SOURCE, DEAD_SUBJECT, REASON_MAX_CHARS,
};

use crate::metrics as m;
use crate::state::Dispatcher;

/// Sets `message` (from stream `source`: `submit`, `results`, `values`) aside for `reason` and
/// returns the ack that ends it in its stream; when the dead-letter stream does not take it,
/// the message is given back to be tried again later.
pub(crate) async fn set_aside(
    d: &Dispatcher,
    source: &'static str,
    message: &jetstream::Message,
    reason: &str,
) -> AckKind {
    match keep(d, source, message, reason).await {
        Ok(()) => {
            tracing::error!(
                source,
                subject = %message.subject,
                reason,
                "message set aside in the dead-letter stream (faro dead-letters lists it)"
            );
            metrics::counter!(m::DEAD_LETTERS, "stream" => source).increment(1);
            AckKind::Term
        }
        Err(error) => {
            let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
            tracing::warn!(
                source,
                error = faro_shared::pg::error_text(&error),
                "cannot set a message aside; it will be delivered again"
            );
            AckKind::Nak(Some(faro_shared::nats::retry_delay(delivered)))
        }
    }
}

async fn keep(
    d: &Dispatcher,
    source: &'static str,
    message: &jetstream::Message,
    reason: &str,
) -> anyhow::Result<()> {
    let info = message
        .info()
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("the message carries no delivery information")?;
    let mut headers = HeaderMap::new();
    // Setting the same delivery aside twice (an ack lost) keeps one copy.
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{}:{}", info.stream, info.stream_sequence).as_str(),
    );
    headers.insert(DEAD_SOURCE, source);
    headers.insert(DEAD_SUBJECT, message.subject.as_str());
    headers.insert(DEAD_REASON, header_text(reason).as_str());
    headers.insert(DEAD_DELIVERIES, info.delivered.to_string().as_str());
    d.js.publish_with_headers(d.ns.dead_subject(source), headers, message.payload.clone())
        .await
        .context("cannot publish to the dead-letter stream")?
        .await
        .context("the dead-letter stream did not store the message")?;
    Ok(())
}

/// Pure: a reason fit for a header value: one line, bounded.
fn header_text(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(REASON_MAX_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_becomes_one_bounded_line() {
        assert_eq!(
            header_text("invalid input\r\nsyntax\0here"),
            "invalid input  syntax here"
        );
        assert_eq!(
            header_text(&"x".repeat(5000)).chars().count(),
            REASON_MAX_CHARS
        );
    }
}
