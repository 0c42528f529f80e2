//! The dispatcher's API: one function per verb, answered on `faro.api.dispatcher.<verb>`.

use std::sync::Arc;
use std::time::Duration;

use faro_shared::domain::JobId;
use faro_shared::domain::Outcome;
use faro_shared::messages::{
    reply, unknown_verb, CancelReply, CancelRequest, CancelState, ExplainReply, ExplainRequest,
    JobReply, JobRequest, Request, RunsReply, RunsRequest, Service, StatusRequest, SubmissionQuery,
    SubmitRequest, TargetReply, TargetRequest, TargetView, WorkerCancel, DISPATCHER_VERBS,
};
use faro_shared::settings::{ConfigReply, ConfigRequest, Setting};
use faro_shared::targetfile::Snmp;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::catalog;
use crate::chains::Child;
use crate::deadlines::own_result;
use crate::publisher::gauge_waiting;
use crate::results::apply_results;
use crate::settings::{apply_setting, reload_settings};
use crate::state::{Dispatcher, ScheduleEvent};
use crate::store;
use crate::{explain, schedule};

pub(crate) async fn api_loop(
    d: Arc<Dispatcher>,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let service = Service::Dispatcher.as_str();
    let subject = d.ns.api_subject(service, "*");
    faro_shared::api::serve_api(&client, subject, service, shutdown, |verb, request| {
        let d = d.clone();
        async move {
            // The name a submission is given by its sender, if any.
            let named = request
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|id| id.as_str().to_owned());
            answer(&d, &verb, &request.payload, named).await
        }
    })
    .await
}

/// How long a cancel waits for the worker executing the run to answer.
pub(crate) const CANCEL_ANSWER: Duration = Duration::from_millis(500);

/// Cancels a run: at once if it waits or no worker has started it, through its worker if one
/// executes it.
pub(crate) async fn cancel(d: &Dispatcher, run_id: uuid::Uuid) -> anyhow::Result<CancelReply> {
    let Some((run, status)) = store::run_message(&d.pool, run_id).await? else {
        anyhow::bail!("no run {run_id}; expected the id of a run, as faro explain job shows");
    };
    let reply = |state, status: &str, worker_id| CancelReply {
        run_id,
        state,
        status: status.to_owned(),
        worker_id,
    };
    if status.is_terminal() {
        return Ok(reply(CancelState::Ended, status.as_str(), None));
    }
    d.cancelled().insert(run_id);
    // Never published now: no schedule lag to record.
    d.slot_times().remove(&run_id);
    let waiting = {
        let mut admission = d.admission();
        admission.withdraw(run_id) || !admission.is_running(run_id)
    };
    if waiting {
        // Waiting for a slot, a queue, maintenance or a retry: it was never handed out.
        store::drop_from_outbox(&d.pool, run_id).await?;
        gauge_waiting(d);
        let result = own_result(
            &run,
            Outcome::Cancelled,
            "cancelled by an operator while it waited".to_owned(),
        );
        apply_results(d, &[result]).await?;
        tracing::info!(run.id = %run_id, "waiting run cancelled");
        return Ok(reply(CancelState::Waiting, "cancelled", None));
    }
    // Published: the worker executing it stops it; every worker skips it if pulled later.
    let body = WorkerCancel {
        run_id,
        attempt: run.attempt,
    }
    .encode()?;
    let inbox = d.client.new_inbox();
    let mut answers = d.client.subscribe(inbox.clone()).await?;
    d.client
        .publish_with_reply(WorkerCancel::subject(&d.ns), inbox, body.into())
        .await?;
    let answer = tokio::time::timeout(CANCEL_ANSWER, answers.next()).await;
    if let Ok(Some(message)) = answer {
        if let Ok(answer) = WorkerCancel::decode_reply(&message.payload) {
            tracing::info!(run.id = %run_id, worker = %answer.worker_id, "running run cancelled through its worker");
            return Ok(reply(
                CancelState::Running,
                status.as_str(),
                Some(answer.worker_id),
            ));
        }
    }
    let result = own_result(
        &run,
        Outcome::Cancelled,
        "cancelled by an operator before a worker started it".to_owned(),
    );
    apply_results(d, &[result]).await?;
    tracing::info!(run.id = %run_id, "queued run cancelled");
    Ok(reply(CancelState::Queued, "cancelled", None))
}

/// Why a run is where it is, or what a job has been doing.
pub(crate) async fn explain(
    d: &Dispatcher,
    request: ExplainRequest,
) -> anyhow::Result<ExplainReply> {
    let now = chrono::Utc::now();
    let lines = match request {
        ExplainRequest::Run(id) => {
            let Some(facts) = store::run_facts(&d.pool, id).await? else {
                anyhow::bail!("no run {id}; expected the id of a run, as faro explain job shows");
            };
            let live = explain::Live {
                wait: d.admission().why_waiting(id),
                deadline: d.deadlines().deadline_of(id),
            };
            explain::run(&facts, &live, now)
        }
        ExplainRequest::Job(id) => {
            let Some(facts) = store::job_facts(&d.pool, &id).await? else {
                anyhow::bail!("no job {id:?}; expected the id of a defined job");
            };
            let next = facts
                .interval_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .zip(JobId::parse(id.clone()).ok())
                .map(|(ms, job)| schedule::slot_at_or_after(&job, Duration::from_millis(ms), now));
            explain::job(&facts, next)
        }
    };
    Ok(ExplainReply { lines })
}

/// Defines, switches or lists targets; a change applies to admission and the schedule at once.
pub(crate) async fn targets(d: &Dispatcher, request: TargetRequest) -> anyhow::Result<TargetReply> {
    let changed = match request {
        TargetRequest::Put { targets } => {
            // As a file's would be, before anything reaches the database.
            let targets = faro_shared::targetfile::check(targets)?;
            let changed = catalog::put_targets(&d.pool, &targets).await?;
            tracing::info!(targets = changed, "targets defined");
            changed
        }
        TargetRequest::SetEnabled { id, enabled } => {
            if !catalog::set_target_enabled(&d.pool, &id, enabled).await? {
                anyhow::bail!("no target {id}; `faro target list` shows them");
            }
            tracing::info!(target = %id, enabled, "target switched");
            1
        }
        TargetRequest::List => {
            let stored = catalog::targets(&d.pool).await?;
            let admission = d.admission();
            let targets = stored
                .into_iter()
                .map(|t| {
                    let (in_flight, waiting) = admission.load(&t.id);
                    let snmp = serde_json::from_value::<Snmp>(t.snmp)
                        .map(|s| serde_json::to_value(s.redacted()).unwrap_or_default())
                        .unwrap_or_else(|e| serde_json::json!({"unreadable": e.to_string()}));
                    TargetView {
                        limit: admission.limits().of(&t.id),
                        id: t.id,
                        name: t.name,
                        address: t.address,
                        snmp,
                        max_concurrency: t.max_concurrency,
                        enabled: t.enabled,
                        in_flight,
                        waiting,
                    }
                })
                .collect();
            return Ok(TargetReply {
                changed: 0,
                targets,
            });
        }
    };
    // The same reread as every few seconds, now: limits and switches apply at once.
    reload_settings(d).await?;
    Ok(TargetReply {
        changed,
        targets: Vec::new(),
    })
}

/// Lists or switches job definitions; a switched job joins or leaves the schedule and its
/// chain at once.
pub(crate) async fn jobs(d: &Dispatcher, request: JobRequest) -> anyhow::Result<JobReply> {
    match request {
        JobRequest::List {
            queue,
            target,
            limit,
            all,
        } => {
            let (jobs, total) =
                catalog::jobs(&d.pool, queue.as_ref(), target.as_ref(), limit, all).await?;
            Ok(JobReply {
                changed: 0,
                jobs,
                total,
            })
        }
        JobRequest::SetEnabled { id, enabled } => {
            if !catalog::set_job_enabled(&d.pool, &id, enabled).await? {
                anyhow::bail!("no job {id}; `faro job list` shows them");
            }
            tracing::info!(job = %id, enabled, "job switched");
            let definition = if enabled {
                store::definition(&d.pool, &id).await?
            } else {
                None
            };
            let mut chains = d.chains.write().await;
            chains.remove(&id);
            match definition {
                Some((def, Some(parent), run_if)) => chains.define(parent, Child { def, run_if }),
                Some((def, None, _)) if !def.interval.is_zero() => {
                    let _ = d
                        .schedule
                        .send(ScheduleEvent::Define(vec![def.recurring()]));
                }
                _ => {
                    let _ = d.schedule.send(ScheduleEvent::Remove(vec![id]));
                }
            }
            Ok(JobReply {
                changed: 1,
                jobs: Vec::new(),
                total: 1,
            })
        }
    }
}

/// A page of runs, newest first.
pub(crate) async fn runs(d: &Dispatcher, request: RunsRequest) -> anyhow::Result<RunsReply> {
    let in_flight = d.admission().running_ids();
    let (runs, next) = store::runs_page(&d.pool, &request, &in_flight).await?;
    Ok(RunsReply { runs, next })
}

/// Answers one API request by verb, through its request type; `named`: the request's
/// `Nats-Msg-Id`.
pub(crate) async fn answer(
    d: &Dispatcher,
    verb: &str,
    payload: &[u8],
    named: Option<String>,
) -> anyhow::Result<Vec<u8>> {
    match verb {
        StatusRequest::VERB => reply(payload, |_: StatusRequest| store::status(&d.pool)).await,
        // A submission is read as a job file, whose errors name the job and field.
        SubmitRequest::VERB => Ok(serde_json::to_vec(
            &crate::intake::submit_request(d, named, payload).await?,
        )?),
        SubmissionQuery::VERB => {
            reply(payload, |query: SubmissionQuery| async move {
                store::submission_progress(&d.pool, &query.submission_ids).await
            })
            .await
        }
        ConfigRequest::VERB => reply(payload, |request| config(d, request)).await,
        CancelRequest::VERB => {
            reply(payload, |request: CancelRequest| cancel(d, request.run_id)).await
        }
        ExplainRequest::VERB => reply(payload, |request| explain(d, request)).await,
        TargetRequest::VERB => reply(payload, |request| targets(d, request)).await,
        JobRequest::VERB => reply(payload, |request| jobs(d, request)).await,
        RunsRequest::VERB => reply(payload, |request| runs(d, request)).await,
        other => Err(unknown_verb(Service::Dispatcher, other, &DISPATCHER_VERBS)),
    }
}

/// Changes a hot setting if the request names one; the settings in force.
pub(crate) async fn config(d: &Dispatcher, request: ConfigRequest) -> anyhow::Result<ConfigReply> {
    if let (Some(key), Some(value)) = (&request.key, &request.value) {
        let setting = Setting::parse(key, value)?;
        let _serialized = d.settings.lock().await;
        faro_shared::settings::store(&d.pool, &setting).await?;
        apply_setting(d, &setting);
        tracing::info!(%setting, "setting changed");
    }
    let settings = faro_shared::settings::load(&d.pool).await?.all().to_vec();
    Ok(ConfigReply { settings })
}
