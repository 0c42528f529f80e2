//! One run: decode, execute its kind, publish the result, then acknowledge the message.
//!
//! The order is the contract: a run is acked only after its result is stored, so a worker that
//! dies mid-run leaves the message to be redelivered, never a run without a result.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, AckKind};
use chrono::Utc;
use faro_shared::domain::{Outcome, WorkerId};
use faro_shared::messages::{slots, RunMessage, RunOutput, RunResult, Task};
use faro_shared::nats::RUN_PROGRESS_EVERY;
use faro_shared::Namespace;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cancel::Cancels;
use crate::hold::{Hold, Lost};
use crate::journal::{Delivery, Journal};
use crate::metrics as m;
use crate::sim;
use crate::snmp::{Chunks, Poller};

/// What a worker needs to execute runs.
#[derive(Debug, Clone)]
pub struct Executor {
    pub js: jetstream::Context,
    pub ns: Namespace,
    pub worker_id: WorkerId,
    /// Cancelled when the shutdown grace period is over: unfinished runs are given back.
    pub abort: CancellationToken,
    /// Attempts an operator cancelled.
    pub cancels: Arc<Cancels>,
    pub snmp: Arc<Poller>,
    /// The commands `exec` runs may ask for.
    pub exec: Arc<crate::exec::AllowList>,
    /// The leases bucket, where the leader records which runs hold each target's slots.
    pub leases: kv::Store,
    /// Where every execution's start and end is written (`FARO_WORKER_JOURNAL`).
    pub journal: Arc<Journal>,
    /// Runs executed since start, by outcome (for the heartbeat).
    pub outcomes: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

impl Executor {
    /// Runs executed since start, by outcome.
    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        self.outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Executes one pulled message to the end; never panics on bad input.
    pub async fn handle(&self, message: jetstream::Message) {
        // The hold on the run counts from here (the server delivered it a little earlier:
        // the margin covers that).
        let received = Instant::now();
        let run: RunMessage = match serde_json::from_slice(&message.payload) {
            Ok(run) => run,
            Err(error) => {
                tracing::warn!(subject = %message.subject, %error, "malformed run refused");
                metrics::counter!(m::BAD_MESSAGES).increment(1);
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%error, "cannot refuse a malformed run");
                }
                return;
            }
        };
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        if delivered > 1 {
            // Its earlier delivery was not acknowledged in time, or was given back.
            metrics::counter!(m::REDELIVERIES, "queue" => run.queue.to_string()).increment(1);
        }
        let span = tracing::info_span!("run", run.id = %run.run_id, attempt = run.attempt, queue = %run.queue, kind = %run.task.kind());
        if may_have_ended(delivered, &message) && !self.still_holds_its_slot(&run).await {
            // Its result was recorded (and its slot given to another run) but the ack never
            // reached JetStream: its worker froze or died in between, or the server lost it.
            // Executing it again would poll the OLT next to the run that took its slot.
            let _span = span.enter();
            tracing::info!(delivered, "given again after it ended; not executed again");
            metrics::counter!(m::RUNS_ALREADY_ENDED, "queue" => run.queue.to_string()).increment(1);
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, "cannot acknowledge a run that already ended");
            }
            return;
        }
        if faro_shared::nats::is_last_delivery(delivered, faro_shared::nats::RUN_MAX_DELIVER) {
            self.set_aside(run, message, delivered)
                .instrument(span)
                .await;
            return;
        }
        self.run(run, message, received, delivered)
            .instrument(span)
            .await;
    }

    /// Whether a run that may have ended still holds its target's slot, as the leader records
    /// it in `slot.<target>`. Only a record the leader took after it sent the run (both times
    /// on the leader's clock) and that lacks it says its attempt ended or was superseded. A run
    /// without a target, a record that cannot tell, or one that cannot be read says nothing,
    /// and the run is executed as before.
    async fn still_holds_its_slot(&self, run: &RunMessage) -> bool {
        let Some(target) = &run.target else {
            return true;
        };
        let read = tokio::time::timeout(
            RUN_PROGRESS_EVERY * 2,
            self.leases.entry(slots::key(target)),
        )
        .await;
        let entry = match read {
            Ok(Ok(Some(entry))) if entry.operation == kv::Operation::Put => entry,
            // No record, or one left by a dispatcher older than the stamped records.
            Ok(Ok(_)) => return true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read the target's slots; the run is executed");
                return true;
            }
            Err(_) => {
                tracing::warn!("the target's slots did not come in time; the run is executed");
                return true;
            }
        };
        let Ok(held) = serde_json::from_slice::<slots::TargetSlots>(&entry.value) else {
            return true;
        };
        match held.holds(run.run_id, run.sent_at) {
            Some(false) => {
                tracing::info!(holder = %held.holder, runs = ?held.runs.keys().collect::<Vec<_>>(), at = ?held.at, revision = entry.revision, "the target's slots are held by other runs");
                false
            }
            Some(true) | None => true,
        }
    }

    /// A run on its last delivery is not executed: every worker that took it before died,
    /// stalled or gave it back, and one more try would leave it unseen in its queue for good.
    /// It ends `failed` with the reason, so its history says what happened.
    async fn set_aside(&self, run: RunMessage, message: jetstream::Message, delivered: i64) {
        let now = Utc::now();
        let error = format!(
            "set aside after {delivered} deliveries without an outcome: every worker that took it died, stalled or gave it back"
        );
        tracing::warn!(delivered, "run set aside without executing it");
        metrics::counter!(m::RUNS_SET_ASIDE, "queue" => run.queue.to_string()).increment(1);
        let result = self.result(&run, Outcome::Failed, now, None, Some(error));
        self.finish(&result, message).await;
    }

    /// Executes a decoded run, publishes its result, then acks (or gives it back, or lets it
    /// go when its hold ended).
    async fn run(
        &self,
        run: RunMessage,
        message: jetstream::Message,
        received: Instant,
        delivered: i64,
    ) {
        let started_at = Utc::now();
        let delivery = Delivery {
            count: delivered,
            stream_seq: message.info().map_or(0, |info| info.stream_sequence),
        };
        let remaining = until_deadline(run.deadline, started_at);
        let ended = match self.cancels.start(run.run_id, run.attempt) {
            None => {
                tracing::info!("cancelled before it started; skipped");
                Ended::Done(cancelled("cancelled by an operator before it started"))
            }
            Some(_) if remaining == Remaining::Passed => {
                self.cancels.finish(run.run_id, run.attempt);
                tracing::info!("its deadline passed before it started; not started");
                Ended::Done(timed_out(format!(
                    "not started: its deadline ({}) passed before a worker took it",
                    run.deadline.map(|d| d.to_rfc3339()).unwrap_or_default()
                )))
            }
            Some(stop) => {
                metrics::gauge!(m::RUNS_IN_PROGRESS).increment(1.0);
                self.journal
                    .started(&run, &self.worker_id, delivery, started_at);
                let hold = Hold::new(received);
                let deadline = match remaining {
                    Remaining::Left(left) => Some(Instant::now() + left),
                    Remaining::Unbounded | Remaining::Passed => None,
                };
                let ended = tokio::select! {
                    // The work first: a run done at once never arms a timer.
                    biased;
                    executed = self.execute(&run, &hold) => Ended::Done(executed),
                    stopped = self.guard(&message, &hold, deadline) => match stopped {
                        Stop::Deadline => {
                            tracing::info!("stopped at its deadline");
                            Ended::Done(timed_out(format!(
                                "stopped at its deadline ({})",
                                run.deadline.map(|d| d.to_rfc3339()).unwrap_or_default()
                            )))
                        }
                        Stop::HoldLost(lost) => Ended::Abandoned(lost),
                    },
                    _ = stop.cancelled() => {
                        tracing::info!("cancelled by an operator; stopped");
                        Ended::Done(cancelled("cancelled by an operator while it ran"))
                    }
                    _ = self.abort.cancelled() => Ended::GivenBack,
                };
                // A worker frozen or cut off past its hold reports nothing: the run may be
                // executing elsewhere, and its result would free the target's slot under it.
                let ended = match (ended, hold.check()) {
                    (Ended::Done(_), Err(lost)) => Ended::Abandoned(lost),
                    (ended, _) => ended,
                };
                metrics::gauge!(m::RUNS_IN_PROGRESS).decrement(1.0);
                self.cancels.finish(run.run_id, run.attempt);
                match &ended {
                    Ended::Done((outcome, _, _)) => {
                        self.journal.ended(
                            &run,
                            &self.worker_id,
                            delivery,
                            Utc::now(),
                            *outcome,
                            None,
                        );
                    }
                    Ended::Abandoned(lost) => {
                        let why = "its hold on the run ended: no in-progress ack confirmed in time (cut off from NATS, or frozen)";
                        tracing::warn!(
                            reason = why,
                            "run abandoned without a result; JetStream gives it to another worker"
                        );
                        metrics::counter!(m::RUNS_ABANDONED, "queue" => run.queue.to_string())
                            .increment(1);
                        let at = Utc::now() - lost.ended.elapsed();
                        self.journal.ended(
                            &run,
                            &self.worker_id,
                            delivery,
                            at,
                            Outcome::Interrupted,
                            Some(why),
                        );
                    }
                    Ended::GivenBack => {
                        self.journal.ended(
                            &run,
                            &self.worker_id,
                            delivery,
                            Utc::now(),
                            Outcome::Interrupted,
                            Some("given back at shutdown"),
                        );
                    }
                }
                ended
            }
        };
        let (outcome, output, error) = match ended {
            Ended::Done(executed) => executed,
            // Not acked, not given back: a nak would hand the run out again while it may
            // already be executing elsewhere. JetStream redelivers it when the hold ends.
            Ended::Abandoned(_) => return,
            Ended::GivenBack => {
                tracing::info!("shutdown grace over; run given back to its queue");
                let _ = message.ack_with(AckKind::Nak(None)).await;
                return;
            }
        };
        let result = self.result(&run, outcome, started_at, output, error);
        let labels = [
            ("queue", run.queue.to_string()),
            ("kind", run.task.kind().as_str().to_owned()),
            ("outcome", outcome.as_str().to_owned()),
        ];
        metrics::counter!(m::RUNS, &labels).increment(1);
        *self
            .outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(outcome.as_str().to_owned())
            .or_default() += 1;
        metrics::histogram!(m::RUN_SECONDS, &labels).record(received.elapsed().as_secs_f64());
        self.finish(&result, message).await;
    }

    /// Keeps the hold on a running attempt with in-progress acks the server confirms, and
    /// returns when the attempt must stop: at its deadline, or when its hold ended.
    async fn guard(
        &self,
        message: &jetstream::Message,
        hold: &Hold,
        deadline: Option<Instant>,
    ) -> Stop {
        let client = self.js.client();
        let reply = message.reply.clone();
        let mut next_progress = Instant::now() + RUN_PROGRESS_EVERY;
        let mut confirming = None;
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Stop::Deadline;
            }
            if let Err(lost) = hold.check_at(now) {
                return Stop::HoldLost(lost);
            }
            if now >= next_progress && confirming.is_none() {
                if let Some(reply) = &reply {
                    confirming = Some(Box::pin(confirm_progress(client.clone(), reply.clone())));
                }
                next_progress = now + RUN_PROGRESS_EVERY;
            }
            let wake = [Some(next_progress), Some(hold.ends_at()), deadline]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_progress);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                sent = async { confirming.as_mut().expect("guarded by the condition").await },
                    if confirming.is_some() =>
                {
                    confirming = None;
                    if let Some(sent) = sent {
                        hold.confirm(sent);
                    }
                }
            }
        }
    }

    /// The result of `run` as this worker reports it, finished now.
    fn result(
        &self,
        run: &RunMessage,
        outcome: Outcome,
        started_at: chrono::DateTime<Utc>,
        output: Option<RunOutput>,
        error: Option<String>,
    ) -> RunResult {
        RunResult {
            run_id: run.run_id,
            attempt: run.attempt,
            job_id: run.job_id.clone(),
            queue: run.queue.clone(),
            target: run.target.clone(),
            worker_id: self.worker_id.clone(),
            outcome,
            simulated: matches!(run.task, Task::Sim(_)) || run.simulate,
            started_at,
            finished_at: Utc::now(),
            output,
            error,
        }
    }

    /// Publishes a result, then acks its run; a result not stored gives the run back. A
    /// result the results stream refuses as full is kept and stored again every
    /// [`FULL_RETRY`], the run held meanwhile, for up to [`FULL_PATIENCE`]: the dispatcher
    /// drains the stream at thousands of results a second once it runs, and a run given back
    /// is executed again (an OLT polled twice).
    async fn finish(&self, result: &RunResult, message: jetstream::Message) {
        let kept = tokio::time::Instant::now();
        let mut warned = false;
        let stored = loop {
            let error = match self.publish_result(result).await {
                Ok(()) => break Ok(()),
                Err(error) => error,
            };
            let full = error
                .downcast_ref::<jetstream::context::PublishError>()
                .is_some_and(faro_shared::nats::refused_as_full);
            if !full || kept.elapsed() >= FULL_PATIENCE || self.abort.is_cancelled() {
                break Err((error, full));
            }
            if !warned {
                warned = true;
                tracing::warn!(
                    run.id = %result.run_id,
                    "the results stream is full; the result is kept and stored again every second"
                );
            }
            // Held meanwhile: the server confirms the run is still this worker's.
            if message.double_ack_with(AckKind::Progress).await.is_err() {
                break Err((error, full));
            }
            tokio::select! {
                () = tokio::time::sleep(FULL_RETRY) => {}
                () = self.abort.cancelled() => {}
            }
        };
        if let Err((error, full)) = stored {
            // Not stored: give the run back so another attempt records it; after a full
            // stream, once it has had time to drain.
            tracing::warn!(
                error = faro_shared::pg::error_text(&error),
                "result not stored; run given back"
            );
            let delay = if full {
                FULL_PATIENCE
            } else {
                Duration::from_secs(1)
            };
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            return;
        }
        if let Err(error) = message.ack().await {
            tracing::warn!(%error, "cannot acknowledge a run; it may run again (its result is fenced)");
        }
    }

    async fn publish_result(&self, result: &RunResult) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(result)?;
        // One attempt's result is stored once, however often it is published: a publish
        // retried, or an attempt executed again after its ack was lost.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            result.msg_id().as_str(),
        );
        self.js
            .publish_with_headers(result.subject(&self.ns), headers, payload.into())
            .await?
            .into_future()
            .await?;
        Ok(())
    }
}

/// How long a result refused by a full results stream is kept and stored again before its
/// run is given back (and, given back, how long before it may run again).
pub const FULL_PATIENCE: Duration = Duration::from_secs(20);

/// Between two tries of a result refused by a full results stream: the run's hold is renewed
/// before each, well within its ack wait.
pub const FULL_RETRY: Duration = Duration::from_secs(1);

/// Whether a run may have ended already, its acknowledgement lost: it was delivered before
/// (its worker froze or died after reporting it), or it was stored before this worker's
/// latest connection to NATS (a server that crashed and restarted may have lost the ack and
/// delivers it as new). Only those are checked against the slot record: a fresh run is not.
fn may_have_ended(delivered: i64, message: &jetstream::Message) -> bool {
    delivered > 1
        || message.info().is_ok_and(|info| {
            info.published.unix_timestamp_nanos() / 1_000_000
                <= i128::from(faro_shared::nats::last_connected().timestamp_millis())
        })
}

/// How an executing attempt ended.
enum Ended {
    Done(Executed),
    /// Its hold ended first: no result, no ack.
    Abandoned(Lost),
    /// The shutdown grace was over.
    GivenBack,
}

/// Why the guard stopped an attempt.
enum Stop {
    Deadline,
    HoldLost(Lost),
}

/// Sends one in-progress ack and waits for the server to confirm it; the time it was sent
/// when confirmed.
async fn confirm_progress(
    client: async_nats::Client,
    reply: async_nats::Subject,
) -> Option<Instant> {
    let sent = Instant::now();
    match tokio::time::timeout(
        RUN_PROGRESS_EVERY,
        client.request(reply, AckKind::Progress.into()),
    )
    .await
    {
        Ok(Ok(_)) => Some(sent),
        Ok(Err(error)) => {
            tracing::warn!(%error, "an in-progress ack was not confirmed");
            None
        }
        Err(_) => {
            tracing::warn!("an in-progress ack was not confirmed within {RUN_PROGRESS_EVERY:?}");
            None
        }
    }
}

/// How long an attempt may still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remaining {
    /// Its message carries no deadline (published by an older dispatcher).
    Unbounded,
    Left(Duration),
    Passed,
}

/// Pure: how long an attempt with `deadline` may still run at `now`.
fn until_deadline(
    deadline: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) -> Remaining {
    match deadline {
        None => Remaining::Unbounded,
        Some(deadline) => match (deadline - now).to_std() {
            Ok(left) if !left.is_zero() => Remaining::Left(left),
            _ => Remaining::Passed,
        },
    }
}

/// The result of an attempt not started, or stopped, at its deadline.
fn timed_out(why: String) -> (Outcome, Option<RunOutput>, Option<String>) {
    (Outcome::TimedOut, None, Some(why))
}

/// The result of an attempt stopped by `faro cancel`.
fn cancelled(why: &str) -> (Outcome, Option<RunOutput>, Option<String>) {
    (Outcome::Cancelled, None, Some(why.to_owned()))
}

type Executed = (Outcome, Option<RunOutput>, Option<String>);

impl Executor {
    async fn execute(&self, run: &RunMessage, hold: &Hold) -> Executed {
        match &run.task {
            Task::Sim(params) => simulate(run, params).await,
            Task::SnmpGet(_) | Task::SnmpWalk(_) => self.poll(run, hold).await,
            Task::Exec(params) => match self.exec.expand(params) {
                Ok((allowed, argv)) => {
                    crate::exec::run(allowed, argv, run.timeout_ms.map(Duration::from_millis)).await
                }
                Err(refused) => failed(refused),
            },
        }
    }

    /// An SNMP run: its values go out in chunks, its result counts them.
    async fn poll(&self, run: &RunMessage, hold: &Hold) -> Executed {
        if run.simulate {
            // SNMP test mode: a simulated run's draw, no device touched, no values.
            return simulate(run, &faro_shared::messages::SimParams::default()).await;
        }
        let kind = run.task.kind();
        let Some(target) = run.target.clone() else {
            return failed(format!("a {kind} run needs a target"));
        };
        let Some(device) = &run.device else {
            return failed(format!(
                "target {target} has no address: define it with `faro target add {target} ADDRESS`"
            ));
        };
        let mut chunks = Chunks::new(self.js.clone(), &self.ns, run, target);
        let polled = match &run.task {
            Task::SnmpGet(params) => self.snmp.get(device, params, hold, &mut chunks).await,
            Task::SnmpWalk(params) => self.snmp.walk(device, params, hold, &mut chunks).await,
            Task::Sim(_) | Task::Exec(_) => unreachable!("only SNMP runs are polled"),
        };
        // Values polled before a failure are still sent: they are real.
        let sent = chunks.finish().await;
        match (polled, sent) {
            (Ok(()), Ok(summary)) => (Outcome::Succeeded, Some(RunOutput::Snmp(summary)), None),
            (Err(error), Ok(summary)) => (
                error.outcome,
                Some(RunOutput::Snmp(summary)),
                Some(error.message),
            ),
            (Ok(()), Err(error)) | (Err(_), Err(error)) => {
                (error.outcome, None, Some(error.message))
            }
        }
    }
}

fn failed(message: String) -> Executed {
    (Outcome::Failed, None, Some(message))
}

async fn simulate(run: &RunMessage, params: &faro_shared::messages::SimParams) -> Executed {
    let entropy = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or_default(),
    );
    let plan = sim::plan(params, &run.job_id, run.attempt, entropy);
    if !plan.duration.is_zero() {
        tokio::time::sleep(plan.duration).await;
    }
    let error = match plan.outcome {
        Outcome::Succeeded => None,
        Outcome::Failed => Some("simulated failure".to_owned()),
        Outcome::Interrupted => Some("simulated interruption".to_owned()),
        Outcome::TimedOut => Some("simulated timeout".to_owned()),
        Outcome::Cancelled => Some("simulated cancel".to_owned()),
    };
    let duration_ms = u64::try_from(plan.duration.as_millis()).unwrap_or(u64::MAX);
    (plan.outcome, Some(RunOutput::Sim { duration_ms }), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_runs_until_its_deadline_and_never_after() {
        let now = Utc::now();
        assert_eq!(until_deadline(None, now), Remaining::Unbounded);
        assert_eq!(
            until_deadline(Some(now + chrono::Duration::milliseconds(1500)), now),
            Remaining::Left(Duration::from_millis(1500))
        );
        assert_eq!(until_deadline(Some(now), now), Remaining::Passed);
        assert_eq!(
            until_deadline(Some(now - chrono::Duration::seconds(1)), now),
            Remaining::Passed
        );
    }
}
