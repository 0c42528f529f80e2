//! Every NATS name faro uses, derived from one namespace.
//!
//! A subject, stream or bucket name is spelled here and nowhere else, so several deployments
//! (or tests) can share one server by choosing different namespaces. Message types say which
//! of these names they travel on (see `messages`).

use std::fmt;
use std::str::FromStr;

use crate::domain::{QueueName, TargetId, NO_TARGET};

/// The prefix of every subject, stream and bucket: `faro` by default.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("namespace {0:?} is not accepted; expected 1 to 32 characters of a-z 0-9 _, starting with a letter")]
pub struct NamespaceError(String);

impl Namespace {
    pub fn parse(value: &str) -> Result<Self, NamespaceError> {
        let ok = !value.is_empty()
            && value.len() <= 32
            && value.starts_with(|c: char| c.is_ascii_lowercase())
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(NamespaceError(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    // --- subjects ---

    /// Job submissions (one job or a batch).
    pub fn submit_subject(&self) -> String {
        format!("{}.submit", self.0)
    }

    /// Runs of `queue` against `target`; `None` for kinds that need no target.
    pub fn job_subject(&self, queue: &QueueName, target: Option<&TargetId>) -> String {
        let target = target.map_or(NO_TARGET, TargetId::as_str);
        format!("{}.jobs.{queue}.{target}", self.0)
    }

    /// All runs of one queue: the filter of that queue's consumer.
    pub fn job_filter(&self, queue: &QueueName) -> String {
        format!("{}.jobs.{queue}.>", self.0)
    }

    /// The outcome of a run of `queue` against `target`.
    pub fn result_subject(&self, queue: &QueueName, target: Option<&TargetId>) -> String {
        let target = target.map_or(NO_TARGET, TargetId::as_str);
        format!("{}.results.{queue}.{target}", self.0)
    }

    /// Values polled by a run of `queue` against `target`, sent before its result.
    pub fn values_subject(&self, queue: &QueueName, target: &TargetId) -> String {
        format!("{}.values.{queue}.{target}", self.0)
    }

    /// What every values subject starts with: tells a values chunk from a result on the
    /// results stream.
    pub fn values_prefix(&self) -> String {
        format!("{}.values.", self.0)
    }

    /// The latest demand snapshot of a queue.
    pub fn demand_subject(&self, queue: &QueueName) -> String {
        format!("{}.demand.{queue}", self.0)
    }

    /// The end of a run of `queue` against `target`, on the outcome feed.
    pub fn outcome_subject(&self, queue: &QueueName, target: Option<&TargetId>) -> String {
        let target = target.map_or(NO_TARGET, TargetId::as_str);
        format!("{}.outcomes.{queue}.{target}", self.0)
    }

    /// Audit events of one source (`balancer`, `workers`, `dispatcher`).
    pub fn event_subject(&self, source: &str) -> String {
        format!("{}.events.{source}", self.0)
    }

    /// Request/reply endpoint of a service verb, for the CLI.
    pub fn api_subject(&self, service: &str, verb: &str) -> String {
        format!("{}.api.{service}.{verb}", self.0)
    }

    /// A message from stream `source` (`submit`, `results`, `values`) set aside with its reason
    /// after it could not be recorded.
    pub fn dead_subject(&self, source: &str) -> String {
        format!("{}.dead.{source}", self.0)
    }

    fn wildcard(&self, root: &str) -> String {
        format!("{}.{root}.>", self.0)
    }

    // --- streams ---

    fn stream(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.0.to_ascii_uppercase())
    }

    pub fn submit_stream(&self) -> String {
        self.stream("SUBMIT")
    }

    pub fn jobs_stream(&self) -> String {
        self.stream("JOBS")
    }

    pub fn results_stream(&self) -> String {
        self.stream("RESULTS")
    }

    pub fn demand_stream(&self) -> String {
        self.stream("DEMAND")
    }

    pub fn events_stream(&self) -> String {
        self.stream("EVENTS")
    }

    pub fn dead_stream(&self) -> String {
        self.stream("DEAD")
    }

    pub fn outcomes_stream(&self) -> String {
        self.stream("OUTCOMES")
    }

    pub fn outcomes_wildcard(&self) -> String {
        self.wildcard("outcomes")
    }

    pub fn dead_wildcard(&self) -> String {
        self.wildcard("dead")
    }

    pub fn jobs_wildcard(&self) -> String {
        self.wildcard("jobs")
    }

    pub fn results_wildcard(&self) -> String {
        self.wildcard("results")
    }

    pub fn values_wildcard(&self) -> String {
        self.wildcard("values")
    }

    pub fn demand_wildcard(&self) -> String {
        self.wildcard("demand")
    }

    pub fn events_wildcard(&self) -> String {
        self.wildcard("events")
    }

    // --- consumers ---

    /// The dispatcher's durable consumer of the submissions stream and of the results stream
    /// (one name for both: a consumer belongs to its stream).
    pub fn dispatcher_consumer(&self) -> &'static str {
        "dispatcher"
    }

    /// The durable pull consumer of a queue, shared by every worker assigned to it.
    pub fn queue_consumer(&self, queue: &QueueName) -> String {
        format!("jobs-{queue}")
    }

    // --- KV buckets ---

    pub fn workers_bucket(&self) -> String {
        format!("{}_workers", self.0)
    }

    /// The stream JetStream keeps the workers bucket in (its size tells a replay's length).
    pub fn workers_bucket_stream(&self) -> String {
        format!("KV_{}", self.workers_bucket())
    }

    pub fn assignments_bucket(&self) -> String {
        format!("{}_assignments", self.0)
    }

    pub fn leases_bucket(&self) -> String {
        format!("{}_leases", self.0)
    }

    pub fn cooling_bucket(&self) -> String {
        format!("{}_cooling", self.0)
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self("faro".to_owned())
    }
}

impl FromStr for Namespace {
    type Err = NamespaceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_namespace_matches_the_design() {
        let ns = Namespace::default();
        let q = QueueName::parse("discovery").unwrap();
        let t = TargetId::parse("olt1").unwrap();
        assert_eq!(ns.job_subject(&q, Some(&t)), "faro.jobs.discovery.olt1");
        assert_eq!(ns.job_subject(&q, None), "faro.jobs.discovery._");
        assert_eq!(
            ns.result_subject(&q, Some(&t)),
            "faro.results.discovery.olt1"
        );
        assert_eq!(ns.demand_subject(&q), "faro.demand.discovery");
        assert_eq!(ns.jobs_stream(), "FARO_JOBS");
        assert_eq!(ns.workers_bucket(), "faro_workers");
        assert_eq!(ns.workers_bucket_stream(), "KV_faro_workers");
        assert!(ns
            .values_subject(&q, &t)
            .starts_with(ns.values_prefix().as_str()));
        assert!(!ns
            .result_subject(&q, Some(&t))
            .starts_with(ns.values_prefix().as_str()));
        assert_eq!(
            ns.api_subject("dispatcher", "status"),
            "faro.api.dispatcher.status"
        );
    }

    #[test]
    fn namespace_refuses_what_cannot_name_a_stream() {
        for bad in ["", "Faro", "a.b", "1abc", "a-b", &"x".repeat(33)] {
            assert!(Namespace::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Namespace::parse("t_42").unwrap().jobs_stream(), "T_42_JOBS");
    }
}
