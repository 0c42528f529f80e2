//! A worker's own record of every execution it started and ended, one JSON object per line in
//! the file `FARO_WORKER_JOURNAL` names: what an audit (and the chaos suite) counts executions
//! from, superseded and abandoned attempts included, independent of what the dispatcher
//! recorded.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Outcome, QueueName, TargetId, WorkerId};

/// One line of a worker's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub event: Event,
    pub run_id: Uuid,
    pub attempt: u32,
    pub queue: QueueName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetId>,
    pub worker_id: WorkerId,
    /// JetStream's delivery count of the message it executes.
    pub delivery: i64,
    /// The message's sequence in the jobs stream: two sequences for one attempt mean it was
    /// stored twice.
    #[serde(default)]
    pub stream_seq: u64,
    /// When it started or ended. An abandoned execution ends when its hold on the run ended,
    /// however much later the worker noticed (it was frozen or cut off): from then on the run
    /// may be another worker's.
    pub at: DateTime<Utc>,
    /// How it ended (`end` only); `interrupted` for an abandoned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why it was abandoned without a result (`end` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Start,
    End,
}

/// Pure: the journal's lines read back; a line cut short by a kill is skipped.
pub fn parse(text: &str) -> Vec<Execution> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_and_a_torn_last_line_is_skipped() {
        let start = Execution {
            event: Event::Start,
            run_id: Uuid::nil(),
            attempt: 1,
            queue: QueueName::parse("q").unwrap(),
            target: Some(TargetId::parse("olt-1").unwrap()),
            worker_id: WorkerId::parse("w1").unwrap(),
            delivery: 2,
            stream_seq: 7,
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            outcome: None,
            abandoned: None,
        };
        let end = Execution {
            event: Event::End,
            outcome: Some(Outcome::Interrupted),
            abandoned: Some("hold lost".to_owned()),
            ..start.clone()
        };
        let mut text = String::new();
        for e in [&start, &end] {
            text.push_str(&serde_json::to_string(e).unwrap());
            text.push('\n');
        }
        text.push_str(r#"{"event":"start","run_id":"#);
        assert_eq!(parse(&text), [start, end]);
    }
}
