//! Dead letters: messages set aside on `faro.dead.<source>` (stream FARO_DEAD) after they could
//! not be recorded. The payload is the original message, unchanged; these headers say where it
//! came from and why.

use serde::{Deserialize, Serialize};

/// The stream it came from: `submit`, `results` or `values`.
pub const DEAD_SOURCE: &str = "Faro-Dead-Source";
/// The subject it was published on.
pub const DEAD_SUBJECT: &str = "Faro-Dead-Subject";
/// Why it was set aside.
pub const DEAD_REASON: &str = "Faro-Dead-Reason";
/// How many times it had been delivered.
pub const DEAD_DELIVERIES: &str = "Faro-Dead-Deliveries";
/// A reason longer than this is cut.
pub const REASON_MAX_CHARS: usize = 1000;

/// One dead letter as `faro dead-letters` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream.
    pub seq: u64,
    pub stored_at: chrono::DateTime<chrono::Utc>,
    pub source: String,
    pub subject: String,
    pub reason: String,
    pub deliveries: u64,
    /// The original message, as text (lossy where it is not UTF-8).
    pub payload: String,
}

impl DeadLetter {
    /// Reads one from its headers and payload; a header missing reads as empty.
    pub fn read(
        seq: u64,
        stored_at: chrono::DateTime<chrono::Utc>,
        headers: Option<&async_nats::HeaderMap>,
        payload: &[u8],
    ) -> Self {
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        Self {
            seq,
            stored_at,
            source: header(DEAD_SOURCE),
            subject: header(DEAD_SUBJECT),
            reason: header(DEAD_REASON),
            deliveries: header(DEAD_DELIVERIES).parse().unwrap_or_default(),
            payload: String::from_utf8_lossy(payload).into_owned(),
        }
    }
}

/// The last `count` dead letters of namespace `ns`, oldest first.
pub async fn read_last(
    js: &async_nats::jetstream::Context,
    ns: &crate::names::Namespace,
    count: u64,
) -> anyhow::Result<Vec<DeadLetter>> {
    use anyhow::Context as _;
    let name = ns.dead_stream();
    let mut stream = js
        .get_stream(&name)
        .await
        .with_context(|| format!("cannot open stream {name} (has a faro service started?)"))?;
    let state = stream
        .info()
        .await
        .with_context(|| format!("cannot read stream {name}"))?
        .state
        .clone();
    if state.messages == 0 || count == 0 {
        return Ok(Vec::new());
    }
    let first = state
        .last_sequence
        .saturating_sub(count - 1)
        .max(state.first_sequence);
    let mut letters = Vec::new();
    for seq in first..=state.last_sequence {
        match stream.get_raw_message(seq).await {
            Ok(message) => {
                let nanos = i64::try_from(message.time.unix_timestamp_nanos()).unwrap_or_default();
                letters.push(DeadLetter::read(
                    seq,
                    chrono::DateTime::from_timestamp_nanos(nanos),
                    Some(&message.headers),
                    &message.payload,
                ));
            }
            // Aged out or deleted between the two reads.
            Err(error)
                if error.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read message {seq} of {name}"))
            }
        }
    }
    Ok(letters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_reads_its_headers_and_tolerates_missing_ones() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(DEAD_SOURCE, "results");
        headers.insert(DEAD_SUBJECT, "faro.results.q.olt1");
        headers.insert(DEAD_REASON, "timestamp out of range (SQLSTATE 22008)");
        headers.insert(DEAD_DELIVERIES, "3");
        let now = chrono::Utc::now();
        let letter = DeadLetter::read(7, now, Some(&headers), b"{\"run_id\": 1}");
        assert_eq!(letter.source, "results");
        assert_eq!(letter.subject, "faro.results.q.olt1");
        assert_eq!(letter.deliveries, 3);
        assert_eq!(letter.payload, "{\"run_id\": 1}");
        let bare = DeadLetter::read(8, now, None, &[0xff]);
        assert_eq!((bare.source.as_str(), bare.deliveries), ("", 0));
        assert_eq!(bare.payload, "\u{fffd}");
    }
}
