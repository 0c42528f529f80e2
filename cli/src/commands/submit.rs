//! `faro submit FILE`: validates the whole file first (nothing is sent if any job is wrong),
//! then publishes it on `faro.submit` in chunks under the server's payload limit, each with a
//! `Nats-Msg-Id` derived from the file's content, so submitting the same file twice creates no
//! duplicate runs. With `--wait`, follows the runs until they end.

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use faro_shared::config::Env;
use faro_shared::jobfile::{self, ParseOptions};
use faro_shared::messages::{Request, Submission, SubmissionProgress, SubmissionQuery};
use faro_shared::{nats, CommonConfig};
use sha2::{Digest, Sha256};

use crate::ask::NoResponders;

pub async fn run(env: &Env, file: &Path, wait: bool, timeout: Option<u64>) -> anyhow::Result<()> {
    let (submission, digest) = read_job_file(file, &ParseOptions::from_env(env)?)?;
    let config = CommonConfig::from_env(env)?;
    let client = nats::connect(&config.nats, "faro-cli", nats::Retry::Never).await?;
    let sent = submit(&client, &config, &submission, &digest).await?;
    println!(
        "{}: {} jobs submitted in {} message(s) (submission {digest}){}",
        file.display(),
        submission.jobs.len(),
        sent.ids.len(),
        if sent.duplicates > 0 {
            format!("; {} already submitted, ignored", sent.duplicates)
        } else {
            String::new()
        }
    );
    if wait {
        let expected = i64::try_from(submission.jobs.len()).unwrap_or(i64::MAX);
        let limit = timeout.map(Duration::from_secs);
        wait_for(&client, &config, sent.ids, expected, limit).await?;
    }
    Ok(())
}

/// What a submission became on the wire.
#[derive(Debug)]
pub struct Sent {
    /// The `Nats-Msg-Id` (and submission id) of each message.
    pub ids: Vec<String>,
    /// Messages NATS had already (the same content submitted before).
    pub duplicates: usize,
}

/// How long a chunk of a submission is published again while JetStream cannot store it: the
/// submissions stream has no leader for a few seconds after a NATS cluster node dies ("no
/// stream found"), or its ack does not come in time. Republishing is safe: the chunk's
/// `Nats-Msg-Id` makes a second copy a duplicate.
const STORE_WAIT: Duration = Duration::from_secs(30);

/// Publishes a validated submission in chunks under the server's payload limit, each with a
/// `Nats-Msg-Id` derived from the content's digest, and waits until NATS has stored them
/// (publishing a chunk again, for up to [`STORE_WAIT`], while JetStream cannot store it).
pub async fn submit(
    client: &async_nats::Client,
    config: &CommonConfig,
    submission: &Submission,
    digest: &str,
) -> anyhow::Result<Sent> {
    let js = nats::jetstream(client.clone());
    let limit = client.server_info().max_payload.max(64 * 1024);
    let chunks = chunk(submission, limit * 9 / 10)?;
    let ids: Vec<String> = (0..chunks.len())
        .map(|index| format!("file-{digest}-{index}"))
        .collect();
    let mut backoff = NoResponders::new(tokio::time::Instant::now() + STORE_WAIT);
    let mut duplicates = 0;
    for (body, id) in chunks.iter().zip(&ids) {
        let ack = loop {
            let stored = async {
                js.send_publish(
                    config.namespace.submit_subject(),
                    async_nats::jetstream::message::PublishMessage::build()
                        .payload(body.clone().into())
                        .message_id(id),
                )
                .await?
                .await
            };
            let error = match stored.await {
                Ok(ack) => break ack,
                Err(error) => error,
            };
            if nats::refused_as_full(&error) {
                return Err(error).with_context(|| {
                    format!(
                        "the submissions stream is full ({} of {} message(s) of this file \
                         stored): the dispatcher is not taking submissions (stopped, or far \
                         behind); nothing is lost, submit the file again later (what was \
                         stored is not submitted twice)",
                        ids.iter().position(|sent| sent == id).unwrap_or(0),
                        ids.len()
                    )
                });
            }
            use async_nats::jetstream::context::PublishErrorKind as Kind;
            let transient = matches!(
                error.kind(),
                Kind::StreamNotFound | Kind::TimedOut | Kind::BrokenPipe
            );
            match backoff.next() {
                Some((delay, first)) if transient => {
                    if first {
                        eprintln!(
                            "faro: NATS cannot store the submission yet ({error}); trying again for up to {} s",
                            STORE_WAIT.as_secs()
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
                Some(_) => return Err(error).context("cannot publish the submission"),
                None => {
                    return Err(error).with_context(|| {
                        format!(
                            "NATS did not store the submission within {} s",
                            STORE_WAIT.as_secs()
                        )
                    })
                }
            }
        };
        duplicates += usize::from(ack.duplicate);
    }
    Ok(Sent { ids, duplicates })
}

/// The digest that names a file's submission: the same content, the same ids.
pub fn digest(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Polls the dispatcher until `expected` runs of `ids` have ended, printing progress.
async fn wait_for(
    client: &async_nats::Client,
    config: &CommonConfig,
    ids: Vec<String>,
    expected: i64,
    limit: Option<Duration>,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let query = SubmissionQuery {
        submission_ids: ids,
    }
    .encode()?;
    let subject = SubmissionQuery::subject(&config.namespace);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last = None;
    let mut said_batch = false;
    loop {
        tick.tick().await;
        let reply = faro_shared::api::request(
            client,
            subject.clone(),
            query.clone().into(),
            Duration::from_secs(5),
        )
        .await;
        match reply {
            Ok(reply) => {
                let progress = SubmissionQuery::decode_reply(&reply)
                    .context("the dispatcher could not answer")?;
                // A refused part never finishes: say why instead of waiting for it.
                if !progress.rejected.is_empty() {
                    anyhow::bail!("{}", refusals(&progress));
                }
                if let (false, Some(batch)) = (said_batch, &progress.batch) {
                    eprintln!("{}", batch_line(batch));
                    said_batch = true;
                }
                let line = format!(
                    "{}/{expected} runs finished ({})",
                    progress.finished(),
                    summary(&progress)
                );
                if last.as_ref() != Some(&line) {
                    eprintln!("{line}");
                    last = Some(line);
                }
                if progress.finished() >= expected {
                    println!("done: {expected} runs ({})", summary(&progress));
                    return Ok(());
                }
            }
            Err(error) if error.kind() == async_nats::RequestErrorKind::TimedOut => {
                eprintln!("waiting for the dispatcher: no answer within 5 s");
            }
            Err(error) => eprintln!("waiting for the dispatcher: {error}"),
        }
        if let Some(limit) = limit {
            if started.elapsed() >= limit {
                anyhow::bail!(
                    "gave up after {} s: {}",
                    limit.as_secs(),
                    last.unwrap_or_else(|| "no progress reported".to_owned())
                );
            }
        }
    }
}

/// Pure: what the dispatcher refused, one line per submission.
fn refusals(progress: &SubmissionProgress) -> String {
    progress
        .rejected
        .iter()
        .map(|(id, reason)| format!("the dispatcher refused submission {id}: {reason}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn summary(progress: &SubmissionProgress) -> String {
    if progress.runs.is_empty() {
        return "not recorded yet".to_owned();
    }
    progress
        .runs
        .iter()
        .map(|(status, count)| format!("{count} {status}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads and validates a whole job file (or batch file); returns it with a digest of its
/// content.
pub(super) fn read_job_file(
    path: &Path,
    options: &ParseOptions,
) -> anyhow::Result<(Submission, String)> {
    let bytes = if path.as_os_str() == "-" {
        let mut buffer = Vec::new();
        std::io::stdin().read_to_end(&mut buffer)?;
        buffer
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let submission = jobfile::parse_with(&bytes, options)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    Ok((submission, digest(&bytes)))
}

/// What `faro submit --wait` says of a batch file's metadata.
fn batch_line(batch: &faro_shared::messages::BatchMetadata) -> String {
    let mut line = match &batch.description {
        Some(description) => format!("batch {description:?}"),
        None => "batch".to_owned(),
    };
    if let Some(by) = &batch.created_by {
        line.push_str(&format!(" by {by}"));
    }
    if let Some(at) = &batch.creation_date {
        line.push_str(&format!(", made {at}"));
    }
    if let Some(total) = batch.total_tasks {
        line.push_str(&format!(", {total} tasks"));
    }
    line
}

/// Splits a submission into bodies of at most `limit` bytes (a single huge job still goes alone).
fn chunk(submission: &Submission, limit: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let submitted_at = Some(chrono::Utc::now());
    // Every chunk carries the batch metadata.
    let base = 64 + serde_json::to_vec(&submission.batch)?.len();
    let mut bodies = Vec::new();
    let mut current = Vec::new();
    let mut size = base;
    for job in &submission.jobs {
        let job_size = serde_json::to_vec(job)?.len() + 1;
        if !current.is_empty() && size + job_size > limit {
            bodies.push(serde_json::to_vec(&Submission {
                jobs: std::mem::take(&mut current),
                submitted_at,
                batch: submission.batch.clone(),
            })?);
            size = base;
        }
        current.push(job.clone());
        size += job_size;
    }
    if !current.is_empty() {
        bodies.push(serde_json::to_vec(&Submission {
            jobs: current,
            submitted_at,
            batch: submission.batch.clone(),
        })?);
    }
    Ok(bodies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_said_with_what_it_says_of_itself() {
        let batch = faro_shared::messages::BatchMetadata {
            creation_date: Some("2025-03-01T10:00:00".to_owned()),
            description: Some("nightly ONT report".to_owned()),
            total_tasks: Some(2),
            created_by: Some("noc".to_owned()),
            queue: None,
        };
        assert_eq!(
            batch_line(&batch),
            "batch \"nightly ONT report\" by noc, made 2025-03-01T10:00:00, 2 tasks"
        );
        assert_eq!(batch_line(&Default::default()), "batch");
    }

    #[test]
    fn chunks_stay_under_the_limit_and_keep_every_job_in_order() {
        let jobs: Vec<_> = (0..500)
            .map(|i| serde_json::json!({"id": format!("j{i}"), "queue": "q", "kind": "sim"}))
            .collect();
        let text = serde_json::to_vec(&serde_json::json!({ "jobs": jobs })).unwrap();
        let submission = jobfile::parse(&text).unwrap();
        let bodies = chunk(&submission, 4096).unwrap();
        assert!(bodies.len() > 5);
        let mut ids = Vec::new();
        for body in &bodies {
            assert!(body.len() <= 4096, "{}", body.len());
            let back = jobfile::parse(body).unwrap();
            ids.extend(back.jobs.into_iter().map(|j| j.id.unwrap().to_string()));
        }
        let expected: Vec<_> = (0..500).map(|i| format!("j{i}")).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn a_refused_submission_is_reported_with_why() {
        let mut progress = SubmissionProgress::default();
        progress.rejected.insert(
            "file-1".to_owned(),
            "job 2: priority: expected 1-10".to_owned(),
        );
        assert_eq!(
            refusals(&progress),
            "the dispatcher refused submission file-1: job 2: priority: expected 1-10"
        );
    }
}
