//! The intake task: pulls submissions, plans and records their runs, offers them to admission.

use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use faro_shared::domain::JobId;
use faro_shared::jobfile;
use faro_shared::jobfile::JobFileError;
use faro_shared::messages::{SubmitReply, SubmittedRun};
use faro_shared::nats;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::chains::Child;
use crate::dead_letters;
use crate::metrics as m;
use crate::plan::plan_submission;
use crate::publisher::{dispatch, publish_outbox};
use crate::state::{Dispatcher, ScheduleEvent};
use crate::store::{self, Recorded};
use crate::timetable::JobDef;

pub(crate) async fn submissions_loop(
    d: Arc<Dispatcher>,
    consumer: PullConsumer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Runs recorded before a crash but never published go out first.
    publish_outbox(&d, None).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(16)
        .messages()
        .await
        .context("cannot pull submissions")?;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                tracing::warn!(%error, "submission pull failed; retrying");
                continue;
            }
            None => anyhow::bail!("the submission stream ended"),
        };
        count_redelivery(&message, "submit");
        let ack = settle(&d, &message, handle_submission(&d, &message).await).await;
        if let Err(error) = message.ack_with(ack).await {
            tracing::warn!(%error, "cannot acknowledge a submission");
        }
    }
}

/// What becomes of a submission whose handling failed: content PostgreSQL refuses is refused
/// with PostgreSQL's reason; any other failure (PostgreSQL down) is tried again later, until
/// its last delivery sets it aside in the dead-letter stream.
async fn settle(
    d: &Dispatcher,
    message: &jetstream::Message,
    handled: anyhow::Result<AckKind>,
) -> AckKind {
    let error = match handled {
        Ok(ack) => return ack,
        Err(error) => error,
    };
    let id = submission_id(message);
    if let Some(reason) = faro_shared::pg::refusal(&error) {
        let problem = format!("PostgreSQL cannot hold it: {reason}");
        return reject(d, message, JobFileError::whole(problem)).await;
    }
    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
    let error = faro_shared::pg::error_text(&error);
    if nats::is_last_delivery(delivered, nats::SERVICE_MAX_DELIVER) {
        let reason = format!("not recorded after {delivered} deliveries: {error}");
        return dead_letters::set_aside(d, "submit", message, &reason).await;
    }
    tracing::error!(submission = %id, error, delivered, "cannot process a submission; it will be retried");
    AckKind::Nak(Some(nats::retry_delay(delivered)))
}

/// Counts a message JetStream delivers again: its earlier delivery was not acknowledged in
/// time (a dispatcher failed over) or was given back (recording failed).
pub(crate) fn count_redelivery(message: &jetstream::Message, stream: &'static str) {
    if message.info().is_ok_and(|info| info.delivered > 1) {
        metrics::counter!(m::REDELIVERIES, "stream" => stream).increment(1);
    }
}

/// The id that deduplicates a submission: its `Nats-Msg-Id`, or for a message published
/// without one, an id made of when the server stored it and a digest of its content. Either
/// way a redelivered message gets the id of its first delivery; the stream sequence is never
/// used, since a stream made again starts counting from 1.
pub(crate) fn submission_id(message: &jetstream::Message) -> String {
    let header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    header.unwrap_or_else(|| {
        let stored = message
            .info()
            .map(|info| info.published.unix_timestamp_nanos())
            .unwrap_or_default();
        anonymous_id(&message.payload, stored)
    })
}

/// Pure: the id of a submission published without a `Nats-Msg-Id`, from its content and the
/// time the server stored it (nanoseconds since the epoch).
pub(crate) fn anonymous_id(payload: &[u8], stored_nanos: i128) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(payload);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("anon-{stored_nanos}-{hex}")
}

pub(crate) async fn handle_submission(
    d: &Dispatcher,
    message: &jetstream::Message,
) -> anyhow::Result<AckKind> {
    let id = submission_id(message);
    match take_in(d, &id, &message.payload).await? {
        Intake::New { .. } | Intake::Duplicate => Ok(AckKind::Ack),
        Intake::Refused(error) => Ok(reject(d, message, error).await),
    }
}

/// What became of a submission.
#[derive(Debug)]
pub(crate) enum Intake {
    /// Recorded now: the runs it made (offered for dispatch) and the jobs it defined.
    New {
        runs: Vec<SubmittedRun>,
        defined: Vec<JobId>,
    },
    /// Its id was recorded before: nothing recorded again.
    Duplicate,
    /// Refused whole, with why; nothing of it recorded.
    Refused(JobFileError),
}

/// Reads, checks and records one submission named `id`, whichever way it came (a `faro.submit`
/// message or a `submit` request): the same checks, the same records. A refusal is returned,
/// not recorded: each way says it to its sender. An error is a failure to record (PostgreSQL
/// down, or refusing the content).
pub(crate) async fn take_in(d: &Dispatcher, id: &str, payload: &[u8]) -> anyhow::Result<Intake> {
    let submission = match jobfile::parse_with(payload, &d.config.job_files) {
        Ok(submission) => submission,
        Err(error) => return Ok(Intake::Refused(error)),
    };
    let runs = plan_submission(&submission);
    // One submission at a time from here to its chains defined (see `Dispatcher::intake`).
    let _one_at_a_time = d.intake.lock().await;
    // Chains must stay acyclic, counting the chains already defined.
    let edges: Vec<(JobId, JobId)> = runs
        .iter()
        .filter_map(|r| Some((r.message.job_id.clone(), r.after.clone()?)))
        .collect();
    if let Err(cycle) = d.chains.read().await.check(&edges) {
        let index = runs.iter().position(|r| r.message.job_id == cycle.job);
        return Ok(Intake::Refused(JobFileError::in_job_field(
            index,
            "after",
            cycle.to_string(),
        )));
    }
    let recorded = store::record_submission(
        &d.pool,
        id,
        submission.submitted_at,
        submission.batch.as_ref(),
        &runs,
    )
    .await?;
    match recorded {
        Recorded::New => {
            let mut once = Vec::new();
            let mut recurring = Vec::new();
            let mut not_recurring = Vec::new();
            let mut defined = Vec::new();
            let mut chains = d.chains.write().await;
            for run in runs {
                // A job redefined from recurring to chained (or back) leaves its old role.
                if run.is_definition() && run.interval.is_none() {
                    not_recurring.push(run.message.job_id.clone());
                }
                if run.after.is_none() {
                    chains.remove(&run.message.job_id);
                }
                if run.is_definition() {
                    defined.push(run.message.job_id.clone());
                }
                let def = JobDef {
                    interval: run.interval.map(|i| i.get()).unwrap_or_default(),
                    template: run.message.clone(),
                    max_attempts: run.max_attempts,
                    retry_on: run.retry_on.clone(),
                    last_slot: None,
                    overlap: run.overlap,
                };
                match (&run.interval, &run.after) {
                    (Some(_), _) => recurring.push(def.recurring()),
                    (None, Some(parent)) => chains.define(
                        parent.clone(),
                        Child {
                            def,
                            run_if: run.run_if,
                        },
                    ),
                    (None, None) => once.push(run.message),
                }
            }
            drop(chains);
            if !not_recurring.is_empty() {
                let _ = d.schedule.send(ScheduleEvent::Remove(not_recurring));
            }
            if !recurring.is_empty() {
                let _ = d.schedule.send(ScheduleEvent::Define(recurring));
            }
            let made: Vec<SubmittedRun> = once
                .iter()
                .map(|run| SubmittedRun {
                    job_id: run.job_id.clone(),
                    run_id: run.run_id,
                })
                .collect();
            dispatch(d, once);
            metrics::counter!(m::SUBMISSIONS, "outcome" => "accepted").increment(1);
            tracing::debug!(submission = %id, runs = made.len(), "submission accepted");
            Ok(Intake::New {
                runs: made,
                defined,
            })
        }
        Recorded::Duplicate => {
            // Seen before; publish whatever a crash left unpublished.
            publish_outbox(d, Some(id)).await?;
            metrics::counter!(m::SUBMISSIONS, "outcome" => "duplicate").increment(1);
            tracing::info!(submission = %id, "duplicate submission ignored");
            Ok(Intake::Duplicate)
        }
        Recorded::MissingParents(missing) => {
            let index = runs.iter().position(|r| {
                r.after
                    .as_ref()
                    .is_some_and(|p| missing.iter().any(|m| m == p.as_str()))
            });
            let problem = format!(
                "after names jobs that do not exist: {}; expected the id of a job in this submission or already defined",
                missing.join(", ")
            );
            Ok(Intake::Refused(JobFileError::in_job_field(
                index, "after", problem,
            )))
        }
    }
}

/// Longest submission id a `submit` request may name (its `Nats-Msg-Id`).
const MAX_SUBMISSION_ID: usize = 200;

/// Answers a `submit` request: the job file in `payload` recorded as the submission `named`
/// (the request's `Nats-Msg-Id`; a new id when it has none), or refused with why. A refusal
/// is told to the sender (and logged, counted and published as an event) but not recorded, so
/// the same id may be sent again once fixed. A submission already recorded under that id is
/// answered with what it recorded.
pub(crate) async fn submit_request(
    d: &Dispatcher,
    named: Option<String>,
    payload: &[u8],
) -> anyhow::Result<SubmitReply> {
    let id = match named {
        // Refused like a bad file (sending it again would not help), never recorded.
        Some(id) if id.is_empty() || id.len() > MAX_SUBMISSION_ID => {
            return Ok(SubmitReply::refused(
                String::new(),
                JobFileError::whole(format!(
                    "a Nats-Msg-Id of {} bytes cannot name a submission; expected 1 to \
                     {MAX_SUBMISSION_ID} bytes, or none",
                    id.len()
                )),
            ))
        }
        Some(id) => id,
        None => format!("api-{}", uuid::Uuid::now_v7()),
    };
    let taken =
        match take_in(d, &id, payload).await {
            Ok(taken) => taken,
            Err(error) => match faro_shared::pg::refusal(&error) {
                Some(reason) => Intake::Refused(JobFileError::whole(format!(
                    "PostgreSQL cannot hold it: {reason}"
                ))),
                None => return Err(error.context(
                    "the submission was not recorded; send it again (under the same Nats-Msg-Id \
                     it is never recorded twice)",
                )),
            },
        };
    Ok(match taken {
        Intake::New { runs, defined } => SubmitReply::accepted(id, runs, defined, false),
        Intake::Duplicate => match store::submission_record(&d.pool, &id).await? {
            // Refused when it came by `faro.submit` (a refusal here is never recorded).
            (Some(reason), _) => SubmitReply {
                duplicate: true,
                ..SubmitReply::refused(id, JobFileError::whole(reason))
            },
            (None, runs) => SubmitReply::accepted(id, runs, Vec::new(), true),
        },
        Intake::Refused(error) => {
            refused(d, &id, &error).await;
            SubmitReply::refused(id, error)
        }
    })
}

/// Refuses a whole submission: recorded with why (the submission API and `faro submit --wait`
/// say it), logged, counted, and published on `faro.events.dispatcher` with the job index and
/// field. When the refusal cannot be recorded (PostgreSQL down), the submission is delivered
/// again later and refused then.
pub(crate) async fn reject(
    d: &Dispatcher,
    message: &jetstream::Message,
    error: JobFileError,
) -> AckKind {
    let id = submission_id(message);
    if let Err(failure) = store::record_rejection(&d.pool, &id, &error.to_string()).await {
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        let failure = faro_shared::pg::error_text(&failure);
        tracing::warn!(submission = %id, error = failure, "cannot record a refused submission; it will be refused again");
        if nats::is_last_delivery(delivered, nats::SERVICE_MAX_DELIVER) {
            let reason =
                format!("refused ({error}), and the refusal could not be recorded: {failure}");
            return dead_letters::set_aside(d, "submit", message, &reason).await;
        }
        return AckKind::Nak(Some(nats::retry_delay(delivered)));
    }
    refused(d, &id, &error).await;
    AckKind::Term
}

/// Says a refusal: logged, counted, and published on `faro.events.dispatcher`.
async fn refused(d: &Dispatcher, id: &str, error: &JobFileError) {
    tracing::warn!(submission = %id, job = ?error.job, field = ?error.field, problem = %error.problem, "submission rejected");
    metrics::counter!(m::SUBMISSIONS, "outcome" => "rejected").increment(1);
    let rejected =
        serde_json::json!({"type": "submission_rejected", "submission_id": id, "error": error});
    faro_shared::service::Events::new(d.js.clone(), d.ns.clone())
        .publish("dispatcher", &rejected)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anonymous_submission_is_named_by_its_content_and_its_storing() {
        let id = anonymous_id(b"{\"jobs\": []}", 1_800_000_000_000_000_000);
        assert_eq!(
            id,
            anonymous_id(b"{\"jobs\": []}", 1_800_000_000_000_000_000)
        );
        assert!(id.starts_with("anon-1800000000000000000-"), "{id}");
        assert_ne!(
            id,
            anonymous_id(b"{\"jobs\": [ ]}", 1_800_000_000_000_000_000)
        );
        assert_ne!(
            id,
            anonymous_id(b"{\"jobs\": []}", 1_800_000_000_000_000_001)
        );
    }

    async fn fetch_one(
        js: &jetstream::Context,
        payload: &'static [u8],
    ) -> (jetstream::Message, jetstream::consumer::PullConsumer) {
        use futures::StreamExt as _;
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: "ANON".into(),
                subjects: vec!["anon.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        js.publish("anon.submit", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next())
            .await
            .expect("no message")
            .unwrap()
            .unwrap();
        (message, consumer)
    }

    /// A stream made again counts from 1: a new submission published without an id must not
    /// take the id of an old one (it would be dropped as a duplicate), while a redelivery
    /// keeps its id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_made_again_never_gives_a_new_submission_an_old_id() {
        use futures::StreamExt as _;
        let bus = faro_shared::testing::TestBus::start().await.unwrap();
        let js = faro_shared::nats::jetstream(bus.client.clone());
        let (first, consumer) = fetch_one(&js, b"{\"jobs\": [{\"id\": \"a\"}]}").await;
        let id = submission_id(&first);
        first.ack_with(jetstream::AckKind::Nak(None)).await.unwrap();
        let mut redelivered = consumer.messages().await.unwrap();
        let again = tokio::time::timeout(std::time::Duration::from_secs(10), redelivered.next())
            .await
            .expect("no redelivery")
            .unwrap()
            .unwrap();
        assert_eq!(again.info().unwrap().delivered, 2);
        assert_eq!(submission_id(&again), id, "a redelivery keeps its id");

        js.delete_stream("ANON").await.unwrap();
        let (second, _) = fetch_one(&js, b"{\"jobs\": [{\"id\": \"b\"}]}").await;
        assert_eq!(
            second.info().unwrap().stream_sequence,
            first.info().unwrap().stream_sequence
        );
        assert_ne!(submission_id(&second), id);
    }
}
