//! The request/reply API on `faro.api.<service>.<verb>`: one request type per verb, each
//! naming its service, its verb and its reply ([`Request`]). The services answer through
//! [`reply`], the CLI asks with the request and gets the reply type back: a verb is spelled
//! once, here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{BalancerEvent, Kind};
use crate::domain::{JobId, PoolName, QueueName, RunStatus, TargetId, WorkerId};
use crate::names::Namespace;
use crate::settings::{ConfigReply, ConfigRequest};

/// A service that answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Dispatcher,
    Balancer,
    Worker,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Dispatcher => "dispatcher",
            Service::Balancer => "balancer",
            Service::Worker => "worker",
        }
    }

    /// Who answers, as an error message names it.
    pub fn who(self) -> &'static str {
        match self {
            Service::Dispatcher => "a leading dispatcher",
            Service::Balancer => "a balancer",
            Service::Worker => "a worker",
        }
    }
}

/// A request of the API: its service, its verb, the shape a refusal names, and its reply.
pub trait Request: Serialize + DeserializeOwned + Send {
    const SERVICE: Service;
    const VERB: &'static str;
    /// The request's JSON, as the error names it when a request cannot be read.
    const EXPECTED: &'static str;
    type Reply: Serialize + DeserializeOwned + Send;

    /// The subject the request is sent on.
    fn subject(ns: &Namespace) -> String {
        ns.api_subject(Self::SERVICE.as_str(), Self::VERB)
    }

    /// The request as sent: its JSON, or nothing for a request without fields.
    fn encode(&self) -> anyhow::Result<Vec<u8>> {
        let body = serde_json::to_vec(self)?;
        Ok(if body == b"null" { Vec::new() } else { body })
    }

    /// Reads a request; an empty payload is a request without fields.
    fn decode(payload: &[u8]) -> anyhow::Result<Self> {
        let payload = if payload.is_empty() { b"null" } else { payload };
        serde_json::from_slice(payload).map_err(|error| {
            anyhow::anyhow!(
                "cannot read a {} request: {error}; expected {}",
                Self::VERB,
                Self::EXPECTED
            )
        })
    }

    /// Reads a reply: an [`ApiError`] becomes the error, with the service's words.
    fn decode_reply(payload: &[u8]) -> anyhow::Result<Self::Reply> {
        if let Ok(ApiError { error }) = serde_json::from_slice(payload) {
            anyhow::bail!("{error}");
        }
        serde_json::from_slice(payload).map_err(|error| {
            anyhow::anyhow!(
                "the {}'s answer to {} is unreadable: {error}",
                Self::SERVICE.as_str(),
                Self::VERB
            )
        })
    }
}

/// Answers one request of type `R` with `answer`: reads the request, encodes the reply.
pub async fn reply<R, F, Fut>(payload: &[u8], answer: F) -> anyhow::Result<Vec<u8>>
where
    R: Request,
    F: FnOnce(R) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R::Reply>>,
{
    let request = R::decode(payload)?;
    Ok(serde_json::to_vec(&answer(request).await?)?)
}

/// The error of a request with a verb the service does not know, naming those it does.
pub fn unknown_verb(service: Service, verb: &str, verbs: &[&str]) -> anyhow::Error {
    anyhow::anyhow!(
        "unknown {} request {verb:?}; expected one of: {}",
        service.as_str(),
        verbs.join(", ")
    )
}

/// Binds a request type to its service, verb, expected shape and reply.
macro_rules! request {
    ($request:ty => $reply:ty, $service:ident, $verb:literal, $expected:literal) => {
        impl Request for $request {
            const SERVICE: Service = Service::$service;
            const VERB: &'static str = $verb;
            const EXPECTED: &'static str = $expected;
            type Reply = $reply;
        }
    };
}

/// A request without fields: sent as an empty payload, and any payload is taken as it.
macro_rules! bare_request {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct $name;

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                serde::de::IgnoredAny::deserialize(d)?;
                Ok($name)
            }
        }
    };
}

bare_request!(
    /// The request of `faro.api.dispatcher.status`.
    StatusRequest
);
bare_request!(
    /// The request of `faro.api.balancer.workers`.
    WorkersRequest
);
bare_request!(
    /// The request of `faro.api.balancer.queues`.
    QueuesRequest
);

request!(StatusRequest => StatusReply, Dispatcher, "status", "no body");
request!(SubmitRequest => SubmitReply, Dispatcher, "submit",
    "a job file, as published on faro.submit: {\"jobs\": [..]}");
request!(SubmissionQuery => SubmissionProgress, Dispatcher, "submission",
    "{\"submission_ids\": [..]}");
request!(ConfigRequest => ConfigReply, Dispatcher, "config",
    "{\"key\": .., \"value\": ..} or {}");
request!(CancelRequest => CancelReply, Dispatcher, "cancel", "{\"run_id\": \"<uuid>\"}");
request!(ExplainRequest => ExplainReply, Dispatcher, "explain",
    "{\"run\": \"<uuid>\"} or {\"job\": \"<job id>\"}");
request!(TargetRequest => TargetReply, Dispatcher, "targets",
    "{\"op\": \"put\", \"targets\": [..]}, {\"op\": \"set_enabled\", \"id\": .., \"enabled\": ..} or {\"op\": \"list\"}");
request!(JobRequest => JobReply, Dispatcher, "jobs",
    "{\"op\": \"list\", \"limit\": N} or {\"op\": \"set_enabled\", \"id\": .., \"enabled\": ..}");
request!(RunsRequest => RunsReply, Dispatcher, "runs",
    "{\"queue\": .., \"target\": .., \"job\": .., \"status\": .., \"before\": \"<run id>\", \"limit\": N}, each optional");
request!(WorkersRequest => WorkersReply, Balancer, "workers", "no body");
request!(QueuesRequest => QueuesReply, Balancer, "queues", "no body");
request!(BalanceExplainRequest => BalanceExplainReply, Balancer, "explain",
    "{\"queue\": NAME} or {\"pool\": NAME}");
request!(MappingRequest => MappingReply, Balancer, "mapping",
    "{\"action\": \"add\", \"name\": .., \"queue\": ..}, {\"action\": \"remove\", \"name\": ..} or {\"action\": \"list\"}");
request!(WorkerCancel => WorkerCancelReply, Worker, "cancel",
    "{\"run_id\": \"<uuid>\", \"attempt\": N}");

/// The verbs of each service, as an unknown verb's error lists them.
pub const DISPATCHER_VERBS: [&str; 9] = [
    StatusRequest::VERB,
    SubmitRequest::VERB,
    SubmissionQuery::VERB,
    ConfigRequest::VERB,
    CancelRequest::VERB,
    ExplainRequest::VERB,
    TargetRequest::VERB,
    JobRequest::VERB,
    RunsRequest::VERB,
];
pub const BALANCER_VERBS: [&str; 4] = [
    WorkersRequest::VERB,
    QueuesRequest::VERB,
    BalanceExplainRequest::VERB,
    MappingRequest::VERB,
];

/// One worker in the reply of `faro.api.balancer.workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    pub id: WorkerId,
    pub pool: Option<PoolName>,
    /// `active`, `unstable`, `lost` or `left`.
    pub state: String,
    pub queues: Vec<QueueName>,
    pub kinds: Vec<Kind>,
    pub capacity: u32,
    pub in_progress: u32,
    pub load_score: u8,
    pub cpu_percent: Option<f32>,
    pub mem_percent: Option<f32>,
    /// Why it takes no new runs, when it does not.
    pub admission_closed: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Since the worker process started.
    pub uptime_secs: Option<u64>,
    pub beats_received: u64,
    pub beats_missed: u64,
}

/// The reply of `faro.api.balancer.workers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkersReply {
    pub workers: Vec<WorkerRow>,
}

/// One queue in the reply of `faro.api.balancer.queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRow {
    pub name: QueueName,
    pub priority: u8,
    pub min_workers: u32,
    pub max_workers: Option<u32>,
    pub home_pools: Vec<PoolName>,
    /// Runs waiting or running, from the latest demand snapshot.
    pub pending: u64,
    /// Set when its demand is stale: since when (`None` inside: no snapshot yet).
    pub stale: bool,
    pub workers: u32,
    /// Slots of its workers.
    pub capacity: u64,
    /// Why it has fewer workers than it asks for.
    pub hold: Option<String>,
    /// Its home pools that are cooling, with the end of their cooling.
    pub cooling: BTreeMap<String, DateTime<Utc>>,
}

/// The reply of `faro.api.balancer.queues`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuesReply {
    pub queues: Vec<QueueRow>,
}

/// The request of `faro.api.balancer.explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceExplainRequest {
    Queue(QueueName),
    Pool(PoolName),
}

/// The reply of `faro.api.balancer.explain`: the facts that decide, and the latest decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceExplainReply {
    pub facts: Vec<String>,
    /// The latest decisions about it, the newest first.
    pub decisions: Vec<BalancerEvent>,
}

/// The request of `faro.api.balancer.mapping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum MappingRequest {
    Add { name: String, queue: QueueName },
    Remove { name: String },
    List,
}

/// One mapping of an external demand name to a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub name: String,
    pub queue: QueueName,
}

/// The reply of `faro.api.balancer.mapping`: every mapping after the change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingReply {
    pub mappings: Vec<Mapping>,
    /// For a removal: whether the name was mapped.
    #[serde(default)]
    pub removed: bool,
}

/// The reply of `faro.api.dispatcher.status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Run counts by status name.
    pub runs: BTreeMap<String, i64>,
    /// Queue name to runs not yet terminal.
    pub queues: BTreeMap<String, i64>,
    /// Runs not yet published: waiting for a slot of their target, or for a retry's backoff.
    #[serde(default)]
    pub waiting: i64,
}

/// The request of `faro.api.dispatcher.submit`: a job file, the same JSON as a `faro.submit`
/// message's, read by [`crate::jobfile::parse`] (an error names the job's index and field).
/// A `Nats-Msg-Id` header names the submission: sent again with the same id (a request
/// that timed out), it is answered as the first was and records nothing twice. Without one,
/// each request is a submission of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubmitRequest(pub serde_json::Value);

/// A run a submission made: one per job that runs once (neither recurring nor chained), in
/// the file's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedRun {
    pub job_id: JobId,
    pub run_id: Uuid,
}

/// The reply of `faro.api.dispatcher.submit`: the submission accepted with its runs, or
/// refused whole with why (nothing of it recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    pub submission_id: String,
    pub accepted: bool,
    /// The id was submitted before: this is what the first submission recorded.
    #[serde(default)]
    pub duplicate: bool,
    /// The runs it made.
    #[serde(default)]
    pub runs: Vec<SubmittedRun>,
    /// The recurring and chained jobs it defined (their runs come at their slots and after
    /// their parents).
    #[serde(default)]
    pub defined: Vec<JobId>,
    /// Why it was refused: the job's index and field, when the problem is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::jobfile::JobFileError>,
}

impl SubmitReply {
    /// Submission `id` accepted with `runs` (of the first submission, for a `duplicate`).
    pub fn accepted(
        id: String,
        runs: Vec<SubmittedRun>,
        defined: Vec<JobId>,
        duplicate: bool,
    ) -> Self {
        Self {
            submission_id: id,
            accepted: true,
            duplicate,
            runs,
            defined,
            error: None,
        }
    }

    /// Submission `id` refused whole, with why.
    pub fn refused(id: String, error: crate::jobfile::JobFileError) -> Self {
        Self {
            submission_id: id,
            accepted: false,
            duplicate: false,
            runs: Vec::new(),
            defined: Vec::new(),
            error: Some(error),
        }
    }
}

/// The request of `faro.api.dispatcher.submission`: how far these submissions are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionQuery {
    pub submission_ids: Vec<String>,
}

/// The reply of `faro.api.dispatcher.submission`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionProgress {
    /// Run counts by status name, over the submissions asked for.
    pub runs: BTreeMap<String, i64>,
    /// Submissions the dispatcher has recorded (accepted or refused), of those asked for.
    pub recorded: usize,
    /// The refused ones among them, with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<String, String>,
    /// What the batch file says of itself, when the submission is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<super::BatchMetadata>,
}

impl SubmissionProgress {
    pub fn total(&self) -> i64 {
        self.runs.values().sum()
    }

    /// Runs that reached a terminal status.
    pub fn finished(&self) -> i64 {
        self.runs
            .iter()
            .filter(|(status, _)| {
                status
                    .parse::<crate::domain::RunStatus>()
                    .is_ok_and(|s| s.is_terminal())
            })
            .map(|(_, count)| count)
            .sum()
    }
}

/// The request of `faro.api.dispatcher.cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub run_id: Uuid,
}

/// Where a run was when it was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelState {
    /// It waited (for a slot, a queue, maintenance or a retry's backoff): cancelled at once.
    Waiting,
    /// It was published and no worker had started it: cancelled at once; a worker that pulls
    /// it later skips it.
    Queued,
    /// A worker was executing it: the worker stops it and reports it cancelled.
    Running,
    /// It had already ended; nothing changed.
    Ended,
}

/// The reply of `faro.api.dispatcher.cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    pub run_id: Uuid,
    pub state: CancelState,
    /// The run's status after the request (`cancelled`, or how it had ended; `dispatched`
    /// while a worker stops it).
    pub status: String,
    /// The worker executing it, when `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
}

/// The broadcast on `faro.api.worker.cancel`: every worker stops this attempt if it executes
/// it, and skips it if it pulls it later. A worker executing it replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCancel {
    pub run_id: Uuid,
    pub attempt: u32,
}

/// A worker's reply to [`WorkerCancel`]: it was executing the run and is stopping it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCancelReply {
    pub worker_id: WorkerId,
}

/// The request of `faro.api.dispatcher.explain`: one run or one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainRequest {
    Run(Uuid),
    Job(String),
}

/// The reply of `faro.api.dispatcher.explain`: sentences, most important last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainReply {
    pub lines: Vec<String>,
}

/// The request of `faro.api.dispatcher.targets`: define, switch or list targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TargetRequest {
    /// Adds the targets or replaces those with the same id (`faro target add|import`).
    Put {
        targets: Vec<crate::targetfile::TargetSpec>,
    },
    /// `faro target enable|disable`.
    SetEnabled {
        id: TargetId,
        enabled: bool,
    },
    List,
}

/// A target as listed: no secrets, with its slots in use now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    pub id: TargetId,
    pub name: String,
    pub address: Option<String>,
    /// Credentials with every community and password hidden.
    pub snmp: serde_json::Value,
    /// Its own limit; `None` for the system default.
    pub max_concurrency: Option<u32>,
    /// The limit in force (its own or the default).
    pub limit: u32,
    pub enabled: bool,
    pub in_flight: usize,
    pub waiting: usize,
}

/// The reply of `faro.api.dispatcher.targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetReply {
    /// Targets added, replaced or switched.
    pub changed: usize,
    #[serde(default)]
    pub targets: Vec<TargetView>,
}

/// The request of `faro.api.dispatcher.jobs`: list or switch job definitions (adding one is a
/// submission on `faro.submit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum JobRequest {
    List {
        #[serde(default)]
        queue: Option<QueueName>,
        #[serde(default)]
        target: Option<TargetId>,
        /// Most jobs listed, ordered by id.
        limit: u32,
        /// One-shot jobs too, not only definitions (recurring and chained).
        #[serde(default)]
        all: bool,
    },
    /// `faro job enable|disable`.
    SetEnabled { id: JobId, enabled: bool },
}

/// A job definition as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub queue: QueueName,
    pub kind: String,
    pub target: Option<TargetId>,
    pub interval_ms: Option<u64>,
    pub after: Option<JobId>,
    pub enabled: bool,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
}

/// The reply of `faro.api.dispatcher.jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReply {
    pub changed: usize,
    #[serde(default)]
    pub jobs: Vec<JobView>,
    /// Jobs matching the filter, listed or not.
    pub total: u64,
}

/// The request of `faro.api.dispatcher.runs`: a page of runs, newest first, of a queue, a
/// target, a job and a status, each or none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunsRequest {
    #[serde(default)]
    pub queue: Option<QueueName>,
    #[serde(default)]
    pub target: Option<TargetId>,
    #[serde(default)]
    pub job: Option<JobId>,
    #[serde(default)]
    pub status: Option<RunStatus>,
    /// Only runs made before this one: the `next` of the page before.
    #[serde(default)]
    pub before: Option<Uuid>,
    /// Most runs in the page: 1 to [`RunsRequest::MAX_LIMIT`]; 0 or absent for
    /// [`RunsRequest::DEFAULT_LIMIT`].
    #[serde(default)]
    pub limit: u32,
}

impl RunsRequest {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 1_000;

    /// The page size asked for, or why it cannot be given.
    pub fn page_size(&self) -> anyhow::Result<u32> {
        match self.limit {
            0 => Ok(Self::DEFAULT_LIMIT),
            n if n <= Self::MAX_LIMIT => Ok(n),
            n => anyhow::bail!(
                "a page of {n} runs is too many; expected a limit of 1 to {}",
                Self::MAX_LIMIT
            ),
        }
    }
}

/// A run as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunView {
    pub id: Uuid,
    pub job_id: String,
    pub queue: String,
    pub target: Option<String>,
    pub status: RunStatus,
    pub attempt: u32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub error: Option<String>,
}

/// The reply of `faro.api.dispatcher.runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunsReply {
    pub runs: Vec<RunView>,
    /// The `before` of the next page; `None` when this page is the last.
    pub next: Option<Uuid>,
}

/// The body of an API reply that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_travels_on_its_service_and_verb() {
        let ns = Namespace::default();
        assert_eq!(StatusRequest::subject(&ns), "faro.api.dispatcher.status");
        assert_eq!(MappingRequest::subject(&ns), "faro.api.balancer.mapping");
        assert_eq!(WorkerCancel::subject(&ns), "faro.api.worker.cancel");
    }

    #[test]
    fn a_request_without_fields_is_an_empty_payload_and_takes_any() {
        assert!(StatusRequest.encode().unwrap().is_empty());
        assert_eq!(StatusRequest::decode(b"").unwrap(), StatusRequest);
        assert_eq!(WorkersRequest::decode(b"{}").unwrap(), WorkersRequest);
    }

    #[test]
    fn a_request_round_trips_and_a_bad_one_names_the_shape_expected() {
        let request = CancelRequest {
            run_id: Uuid::now_v7(),
        };
        let back = CancelRequest::decode(&request.encode().unwrap()).unwrap();
        assert_eq!(back, request);
        let error = CancelRequest::decode(b"{\"run\": 1}")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cancel request") && error.contains("{\"run_id\": \"<uuid>\"}"),
            "{error}"
        );
    }

    #[test]
    fn a_reply_that_is_an_error_becomes_the_error() {
        let error = serde_json::to_vec(&ApiError {
            error: "no run 42".to_owned(),
        })
        .unwrap();
        let refused = StatusRequest::decode_reply(&error).unwrap_err();
        assert_eq!(refused.to_string(), "no run 42");
        let reply = serde_json::to_vec(&StatusReply::default()).unwrap();
        assert_eq!(
            StatusRequest::decode_reply(&reply).unwrap(),
            StatusReply::default()
        );
    }

    #[tokio::test]
    async fn a_service_answers_through_the_request_type() {
        let body = reply::<CancelRequest, _, _>(
            b"{\"run_id\": \"0192e0a4-0000-7000-8000-000000000001\"}",
            |r| async move {
                Ok(CancelReply {
                    run_id: r.run_id,
                    state: CancelState::Ended,
                    status: "succeeded".to_owned(),
                    worker_id: None,
                })
            },
        )
        .await
        .unwrap();
        let answer = CancelRequest::decode_reply(&body).unwrap();
        assert_eq!(answer.state, CancelState::Ended);
        let unknown = unknown_verb(Service::Dispatcher, "stauts", &DISPATCHER_VERBS).to_string();
        assert!(
            unknown.contains("\"stauts\"") && unknown.contains("status, submit, submission"),
            "{unknown}"
        );
    }
}
