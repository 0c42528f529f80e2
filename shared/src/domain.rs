//! Validated identifiers and the small enums every service agrees on.
//!
//! Owns parsing of names that end up inside NATS subjects and KV keys (queues, targets,
//! workers, pools) and the vocabulary of run states. It does not know about SQL or JSON
//! layouts beyond serde; `store` modules convert states to SQL text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty; expected 1 to {max} characters of A-Z a-z 0-9 _ -")]
    Empty { what: &'static str, max: usize },
    #[error("{what} {value:?} is longer than {max} characters")]
    TooLong {
        what: &'static str,
        value: String,
        max: usize,
    },
    #[error("{what} {value:?} contains {bad:?}; expected only A-Z a-z 0-9 _ -")]
    BadChar {
        what: &'static str,
        value: String,
        bad: char,
    },
}

/// Longest accepted name: keeps subjects and KV keys well under server limits.
pub const MAX_NAME_LEN: usize = 64;

/// Checks that `value` can be one token of a NATS subject and a KV key.
fn check_token(what: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty {
            what,
            max: MAX_NAME_LEN,
        });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            value: value.to_owned(),
            max: MAX_NAME_LEN,
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(NameError::BadChar {
            what,
            value: value.to_owned(),
            bad,
        });
    }
    Ok(())
}

macro_rules! token_newtype {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates the name.
            pub fn parse(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check_token($what, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        // `pad`, not `write_str`: a width (`{:<12}`) or precision in a format applies.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}

token_newtype!(
    /// A queue: a class of work with a priority and its own JetStream consumer.
    QueueName,
    "queue name"
);
token_newtype!(
    /// A target (usually an OLT); one subject token, so runs of a target stay ordered.
    TargetId,
    "target id"
);
token_newtype!(
    /// A worker process; the key of its heartbeat and assignment.
    WorkerId,
    "worker id"
);
token_newtype!(
    /// A named group of workers.
    PoolName,
    "pool name"
);
token_newtype!(
    /// A job definition's id, given by the submitter or generated.
    JobId,
    "job id"
);

/// The subject token used for runs whose kind needs no target.
pub const NO_TARGET: &str = "_";

/// Urgency of a job or queue: 1 is the most urgent, 10 the least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "PriorityInput", into = "u8")]
pub struct Priority(u8);

impl Priority {
    pub const MOST_URGENT: Priority = Priority(1);
    pub const LEAST_URGENT: Priority = Priority(10);

    pub fn new(value: u8) -> Result<Self, PriorityError> {
        if (1..=10).contains(&value) {
            Ok(Self(value))
        } else {
            Err(PriorityError(value.to_string()))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority(5)
    }
}

impl From<Priority> for u8 {
    fn from(value: Priority) -> u8 {
        value.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("priority {0} is not accepted; expected a whole number from 1 (most urgent) to 10, or high, medium, low")]
pub struct PriorityError(String);

/// What a submitter may write for a priority: a number or a word.
#[derive(Deserialize)]
#[serde(untagged)]
enum PriorityInput {
    Number(i64),
    Word(String),
}

impl TryFrom<PriorityInput> for Priority {
    type Error = PriorityError;
    fn try_from(value: PriorityInput) -> Result<Self, Self::Error> {
        match value {
            PriorityInput::Number(n) => u8::try_from(n)
                .ok()
                .and_then(|n| Priority::new(n).ok())
                .ok_or_else(|| PriorityError(n.to_string())),
            PriorityInput::Word(w) => w.parse(),
        }
    }
}

impl FromStr for Priority {
    type Err = PriorityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Ok(Priority(1)),
            "medium" => Ok(Priority(5)),
            "low" => Ok(Priority(10)),
            other => other
                .parse::<u8>()
                .ok()
                .and_then(|n| Priority::new(n).ok())
                .ok_or_else(|| PriorityError(format!("{s:?}"))),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Interrupted,
    /// No result by the run's deadline and grace: recorded by the dispatcher.
    TimedOut,
    /// Stopped on an operator's request (`faro cancel`); never retried.
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }

    /// The run status this outcome records.
    pub fn status(self) -> RunStatus {
        match self {
            Outcome::Succeeded => RunStatus::Succeeded,
            Outcome::Failed => RunStatus::Failed,
            Outcome::Interrupted => RunStatus::Interrupted,
            Outcome::TimedOut => RunStatus::TimedOut,
            Outcome::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// Where a run is in its life. The last six are terminal: a run reaches exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Recorded by the dispatcher, not yet published to a queue.
    Pending,
    /// Published to its queue's stream, waiting for or in a worker.
    Dispatched,
    Succeeded,
    Failed,
    Interrupted,
    TimedOut,
    Cancelled,
    Skipped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Pending,
        RunStatus::Dispatched,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::TimedOut,
        RunStatus::Cancelled,
        RunStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Dispatched => "dispatched",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Dispatched)
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An outcome after which another attempt may be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retryable {
    Failed,
    Interrupted,
    TimedOut,
}

impl Retryable {
    /// Retried by default: every outcome but success.
    pub const DEFAULT: [Retryable; 3] = [
        Retryable::Failed,
        Retryable::Interrupted,
        Retryable::TimedOut,
    ];

    pub fn status(self) -> RunStatus {
        match self {
            Retryable::Failed => RunStatus::Failed,
            Retryable::Interrupted => RunStatus::Interrupted,
            Retryable::TimedOut => RunStatus::TimedOut,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }
}

impl FromStr for Retryable {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Retryable::DEFAULT
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} cannot be retried; expected failed, interrupted or timed_out")
            })
    }
}

/// Attempts a run may make in all: 1 (no retry) to [`MaxAttempts::LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct MaxAttempts(u32);

impl MaxAttempts {
    pub const LIMIT: u32 = 20;

    pub fn new(value: u32) -> Result<Self, String> {
        if (1..=Self::LIMIT).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!(
                "max_attempts {value} is not accepted; expected a whole number from 1 to {}",
                Self::LIMIT
            ))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaxAttempts {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<i64> for MaxAttempts {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        u32::try_from(value)
            .map_err(|_| {
                format!(
                    "max_attempts {value} is not accepted; expected a whole number from 1 to {}",
                    Self::LIMIT
                )
            })
            .and_then(Self::new)
    }
}

impl From<MaxAttempts> for u32 {
    fn from(value: MaxAttempts) -> u32 {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_statuses_and_priorities_honour_a_width() {
        let queue = QueueName::parse("get").unwrap();
        assert_eq!(format!("[{queue:<6}]"), "[get   ]");
        assert_eq!(format!("[{queue:>6}]"), "[   get]");
        assert_eq!(format!("[{:<11}]", RunStatus::Succeeded), "[succeeded  ]");
        assert_eq!(format!("[{:>3}]", Priority::new(5).unwrap()), "[  5]");
    }

    #[test]
    fn names_refuse_subject_metacharacters() {
        for bad in ["", "a.b", "a b", "a*", ">", "olt/1"] {
            assert!(QueueName::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(TargetId::parse("olt-01_ma5800").is_ok());
        assert!(TargetId::parse("x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn name_errors_say_what_and_expected_form() {
        let err = QueueName::parse("a.b").unwrap_err().to_string();
        assert!(err.contains("queue name") && err.contains("'.'") && err.contains("A-Z"));
    }

    #[test]
    fn priority_accepts_numbers_and_words() {
        let p: Priority = serde_json::from_str("3").unwrap();
        assert_eq!(p.get(), 3);
        let p: Priority = serde_json::from_str("\"high\"").unwrap();
        assert_eq!(p, Priority::MOST_URGENT);
        let p: Priority = serde_json::from_str("\"low\"").unwrap();
        assert_eq!(p, Priority::LEAST_URGENT);
        for bad in ["0", "11", "-1", "\"urgent\"", "2.5"] {
            assert!(
                serde_json::from_str::<Priority>(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>().unwrap(), status);
        }
        assert_eq!(RunStatus::ALL.iter().filter(|s| s.is_terminal()).count(), 6);
    }

    #[test]
    fn retry_settings_are_bounded() {
        assert!(serde_json::from_str::<MaxAttempts>("0").is_err());
        assert!(serde_json::from_str::<MaxAttempts>("21").is_err());
        assert_eq!(serde_json::from_str::<MaxAttempts>("3").unwrap().get(), 3);
        assert!(serde_json::from_str::<Retryable>("\"succeeded\"").is_err());
        assert_eq!(
            "timed_out".parse::<Retryable>().unwrap(),
            Retryable::TimedOut
        );
    }
}
