//! `faro`: the operator's command. Reads the same `FARO_*` variables as the services.
//!
//! `faro submit FILE` validates the whole file first (nothing is sent if any job is wrong),
//! then publishes it on `faro.submit` in chunks under the server's payload limit, each with a
//! `Nats-Msg-Id` derived from the file's content, so submitting the same file twice creates no
//! duplicate runs.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use faro_shared::config::{Env, PgConfig};
use faro_shared::jobfile;
use faro_shared::messages::{
    ApiError, CancelReply, CancelRequest, CancelState, ExplainReply, ExplainRequest, StatusReply,
    Submission, SubmissionProgress, SubmissionQuery,
};
use faro_shared::settings::{self, ConfigReply, ConfigRequest, Setting};
use faro_shared::{nats, pg, CommonConfig};
use sha2::{Digest, Sha256};

mod balance;
mod defs;
mod ingest;
mod table;

#[derive(Parser)]
#[command(
    name = "faro",
    version,
    about = "faro: a distributed job orchestrator for OLT polling and batch jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a JSON job file and submit it (`-` reads standard input).
    Submit {
        file: PathBuf,
        /// Wait until every run of the file has ended, showing progress.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit status 1).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Validate a JSON job file without submitting it.
    Validate { file: PathBuf },
    /// Run counts by status and open runs by queue.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Watch a directory for JSON job files: each new *.json is validated whole and submitted,
    /// then moved to DIR/processed/ (or DIR/rejected/ beside a .error.json saying why).
    Ingest {
        /// The directory to watch.
        #[arg(long, value_name = "DIR")]
        watch: PathBuf,
        /// Time between two looks at the directory.
        #[arg(long, default_value = "1s", value_parser = parse_duration_arg)]
        interval: Duration,
        /// A file is taken once unchanged for this long (it may still be being written).
        #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
        settle: Duration,
        /// Largest file accepted, in bytes.
        #[arg(long, default_value_t = 64 * 1024 * 1024)]
        max_bytes: u64,
        /// Take the files that are ready now, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Hot configuration: `faro config set KEY VALUE`, `faro config list`.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Cancel a run: at once if it waits or is still queued, through its worker if it runs.
    Cancel {
        /// The run's id (a UUID).
        run_id: uuid::Uuid,
    },
    /// Why a run is waiting or did what it did; what a job has been doing.
    Explain {
        #[command(subcommand)]
        what: ExplainWhat,
    },
    /// Targets (OLTs): `faro target add|import|list|disable|enable`.
    Target {
        #[command(subcommand)]
        action: defs::TargetAction,
    },
    /// Job definitions: `faro job add|list|disable|enable`.
    Job {
        #[command(subcommand)]
        action: defs::JobAction,
    },
    /// Workers: pool, state, queue, load, runs in progress, CPU and memory.
    Workers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Queues: demand, capacity, workers, cooling and why a queue is held.
    Queues {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// External demand names (ticket types, work-queue rows) mapped to queues:
    /// `faro mapping add|list|remove`.
    Mapping {
        #[command(subcommand)]
        action: balance::MappingAction,
    },
    /// Apply database migrations (FARO_DATABASE_URL) and exit.
    Migrate,
}

#[derive(Subcommand)]
enum ExplainWhat {
    /// A run, by id (a UUID).
    Run { id: uuid::Uuid },
    /// A job, by id.
    Job { id: String },
    /// Why a queue has the workers it has, and why it did not get more.
    Queue {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A pool's workers: what each serves, lent or not, and its cooling.
    Pool {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Change a setting; it takes effect at once, without a restart.
    Set { key: String, value: String },
    /// The settings in force.
    List,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("faro: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = Env::from_process();
    match cli.command {
        Command::Validate { file } => {
            let (submission, _) = read_job_file(&file)?;
            println!("{}: {} jobs, valid", file.display(), submission.jobs.len());
            Ok(())
        }
        Command::Submit {
            file,
            wait,
            timeout,
        } => {
            let (submission, digest) = read_job_file(&file)?;
            let config = CommonConfig::from_env(&env)?;
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
            let ids = sent.ids;
            if wait {
                let expected = i64::try_from(submission.jobs.len()).unwrap_or(i64::MAX);
                let limit = timeout.map(Duration::from_secs);
                wait_for(&client, &config, ids, expected, limit).await?;
            }
            Ok(())
        }
        Command::Status { json } => {
            let value = ask_dispatcher(&env, "status", &serde_json::Value::Null).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(());
            }
            print!("{}", status_tables(&serde_json::from_value(value)?));
            Ok(())
        }
        Command::Ingest {
            watch,
            interval,
            settle,
            max_bytes,
            once,
        } => {
            let config = CommonConfig::from_env(&env)?;
            let client = nats::connect(&config.nats, "faro-ingest", nats::Retry::Never).await?;
            let options = ingest::Options {
                dir: watch,
                interval,
                settle,
                max_bytes,
                once,
            };
            ingest::run(&client, &config, &options).await
        }
        Command::Config { action } => {
            let request = match &action {
                ConfigAction::Set { key, value } => {
                    // Refused here already, with the accepted form, before anything is sent.
                    Setting::parse(key, value)?;
                    ConfigRequest {
                        key: Some(key.clone()),
                        value: Some(value.clone()),
                    }
                }
                ConfigAction::List => ConfigRequest {
                    key: None,
                    value: None,
                },
            };
            let reply = ask_dispatcher(&env, "config", &request).await?;
            let reply: ConfigReply = serde_json::from_value(reply)?;
            if let ConfigAction::Set { key, .. } = &action {
                println!("{key} set");
            }
            for (key, form, default) in settings::KEYS {
                let set: Vec<&Setting> = reply
                    .settings
                    .iter()
                    .filter(|s| key_matches(key, &s.key()))
                    .collect();
                if set.is_empty() {
                    println!("{key} = {default} (default; {form})");
                }
                for setting in set {
                    println!("{} = {}", setting.key(), setting.value());
                }
            }
            Ok(())
        }
        Command::Cancel { run_id } => {
            let reply = ask_dispatcher(&env, "cancel", &CancelRequest { run_id }).await?;
            let reply: CancelReply = serde_json::from_value(reply)?;
            match reply.state {
                CancelState::Waiting => println!("run {run_id} was waiting; cancelled"),
                CancelState::Queued => println!(
                    "run {run_id} was queued, not started; cancelled (a worker that pulls it skips it)"
                ),
                CancelState::Running => println!(
                    "run {run_id} is running on worker {}; it is being stopped and will end cancelled",
                    reply
                        .worker_id
                        .map(|w| w.to_string())
                        .unwrap_or_else(|| "?".to_owned())
                ),
                CancelState::Ended => {
                    println!("run {run_id} had already ended ({}); nothing changed", reply.status)
                }
            }
            Ok(())
        }
        Command::Explain { what } => {
            let request = match what {
                ExplainWhat::Run { id } => ExplainRequest::Run(id),
                ExplainWhat::Job { id } => ExplainRequest::Job(id),
                ExplainWhat::Queue { name, json } => {
                    return balance::explain_queue(&env, &name, json).await
                }
                ExplainWhat::Pool { name, json } => {
                    return balance::explain_pool(&env, &name, json).await
                }
            };
            let reply: ExplainReply =
                serde_json::from_value(ask_dispatcher(&env, "explain", &request).await?)?;
            for line in reply.lines {
                println!("{line}");
            }
            Ok(())
        }
        Command::Workers { json } => balance::workers(&env, json).await,
        Command::Queues { json } => balance::queues(&env, json).await,
        Command::Mapping { action } => balance::mapping(&env, action).await,
        Command::Target { action } => defs::target(&env, action).await,
        Command::Job { action } => defs::job(&env, action).await,
        Command::Migrate => {
            pg::migrate(&PgConfig::from_env(&env)?).await?;
            println!("migrations applied");
            Ok(())
        }
    }
}

/// What `faro status` prints: run counts by status, then open runs by queue if any.
fn status_tables(status: &StatusReply) -> String {
    let counts = |counts: &std::collections::BTreeMap<String, i64>| {
        counts
            .iter()
            .map(|(name, count)| [name.clone(), count.to_string()])
            .collect::<Vec<_>>()
    };
    let mut text = table::render(
        &[table::Column::left("STATUS"), table::Column::right("RUNS")],
        counts(&status.runs),
    );
    if !status.queues.is_empty() {
        text.push('\n');
        text += &table::render(
            &[
                table::Column::left("QUEUE"),
                table::Column::right("OPEN RUNS"),
            ],
            counts(&status.queues),
        );
    }
    text
}

/// Whether a stored key is an instance of a listed key (`queue.<name>.max_in_flight`).
fn key_matches(listed: &str, key: &str) -> bool {
    match listed.split_once("<name>") {
        Some((prefix, suffix)) => {
            key.len() > prefix.len() + suffix.len()
                && key.starts_with(prefix)
                && key.ends_with(suffix)
        }
        None => listed == key,
    }
}

/// Sends a request to the leading dispatcher's API and returns its JSON answer; an answer
/// that is an error becomes this command's error.
async fn ask_dispatcher(
    env: &Env,
    verb: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<serde_json::Value> {
    ask(env, "dispatcher", verb, body).await
}

/// Sends a request to a service's API (`faro.api.<service>.<verb>`) and returns its JSON
/// answer; an answer that is an error becomes this command's error.
///
/// While nobody answers (a dispatcher standing by does not, and one that just started has not
/// taken the lease yet), it waits up to `FARO_API_WAIT` (30 s), saying once that it waits.
async fn ask(
    env: &Env,
    service: &str,
    verb: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<serde_json::Value> {
    let config = CommonConfig::from_env(env)?;
    let wait = env.duration("FARO_API_WAIT", Duration::from_secs(30))?;
    let client = nats::connect(&config.nats, "faro-cli", nats::Retry::Never).await?;
    let payload = match serde_json::to_value(body)? {
        serde_json::Value::Null => Vec::new(),
        value => serde_json::to_vec(&value)?,
    };
    let subject = config.namespace.api_subject(service, verb);
    let nobody = if service == "dispatcher" {
        "a leading dispatcher".to_owned()
    } else {
        format!("a {service}")
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = NoResponders::new(deadline);
    let reply = loop {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            client.request(subject.clone(), payload.clone().into()),
        )
        .await
        .with_context(|| format!("no {service} answered within 10 s"))?;
        match answer {
            Ok(reply) => break reply,
            Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
                match backoff.next() {
                    Some((delay, first)) => {
                        if first {
                            eprintln!(
                                "faro: waiting for {nobody} to answer (none does yet; giving up after {} s, FARO_API_WAIT)",
                                wait.as_secs()
                            );
                        }
                        tokio::time::sleep(delay).await;
                    }
                    None => anyhow::bail!(
                        "no {service} answered within {} s (FARO_API_WAIT): is {nobody} running?",
                        wait.as_secs()
                    ),
                }
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot ask the {service}"));
            }
        }
    };
    if let Ok(ApiError { error }) = serde_json::from_slice(&reply.payload) {
        anyhow::bail!("{error}");
    }
    Ok(serde_json::from_slice(&reply.payload)?)
}

/// The pauses between requests nobody answered: 100 ms doubling to 1 s, until a deadline.
#[derive(Debug)]
struct NoResponders {
    deadline: tokio::time::Instant,
    delay: Duration,
    tries: u32,
}

impl NoResponders {
    fn new(deadline: tokio::time::Instant) -> Self {
        Self {
            deadline,
            delay: Duration::from_millis(100),
            tries: 0,
        }
    }

    /// The next pause and whether it is the first, or `None` once the deadline would pass.
    fn next(&mut self) -> Option<(Duration, bool)> {
        if tokio::time::Instant::now() + self.delay > self.deadline {
            return None;
        }
        let pause = self.delay;
        self.delay = (self.delay * 2).min(Duration::from_secs(1));
        self.tries += 1;
        Some((pause, self.tries == 1))
    }
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
    let query = serde_json::to_vec(&SubmissionQuery {
        submission_ids: ids,
    })?;
    let subject = config.namespace.api_subject("dispatcher", "submission");
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last = None;
    loop {
        tick.tick().await;
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(subject.clone(), query.clone().into()),
        )
        .await;
        match reply {
            Ok(Ok(reply)) => {
                if let Ok(ApiError { error }) = serde_json::from_slice(&reply.payload) {
                    anyhow::bail!("the dispatcher could not answer: {error}");
                }
                let progress: SubmissionProgress = serde_json::from_slice(&reply.payload)?;
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
            Ok(Err(error)) => eprintln!("waiting for the dispatcher: {error}"),
            Err(_) => eprintln!("waiting for the dispatcher: no answer within 5 s"),
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

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    faro_shared::config::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration; expected such as 500ms, 2s or 1m"))
}

/// Reads and validates a whole job file; returns it with a digest of its content.
fn read_job_file(path: &PathBuf) -> anyhow::Result<(Submission, String)> {
    let bytes = if path.as_os_str() == "-" {
        let mut buffer = Vec::new();
        std::io::stdin().read_to_end(&mut buffer)?;
        buffer
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let submission =
        jobfile::parse(&bytes).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    Ok((submission, digest(&bytes)))
}

/// Splits a submission into bodies of at most `limit` bytes (a single huge job still goes alone).
fn chunk(submission: &Submission, limit: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let submitted_at = Some(chrono::Utc::now());
    let mut bodies = Vec::new();
    let mut current = Vec::new();
    let mut size = 64;
    for job in &submission.jobs {
        let job_size = serde_json::to_vec(job)?.len() + 1;
        if !current.is_empty() && size + job_size > limit {
            bodies.push(serde_json::to_vec(&Submission {
                jobs: std::mem::take(&mut current),
                submitted_at,
            })?);
            size = 64;
        }
        current.push(job.clone());
        size += job_size;
    }
    if !current.is_empty() {
        bodies.push(serde_json::to_vec(&Submission {
            jobs: current,
            submitted_at,
        })?);
    }
    Ok(bodies)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn status_counts_are_right_aligned_under_their_headers() {
        let status = StatusReply {
            runs: [("cancelled", 3), ("succeeded", 1_234_567), ("timed_out", 0)]
                .map(|(name, count)| (name.to_owned(), count))
                .into(),
            queues: [("get", 12), ("olt-huawei-1-discovery-and-descriptions", 7)]
                .map(|(name, count)| (name.to_owned(), count))
                .into(),
            waiting: 0,
        };
        assert_eq!(
            status_tables(&status),
            "\
STATUS        RUNS
cancelled        3
succeeded  1234567
timed_out        0

QUEUE                                    OPEN RUNS
get                                             12
olt-huawei-1-discovery-and-descriptions          7
"
        );
        let idle = StatusReply::default();
        assert_eq!(status_tables(&idle), "STATUS  RUNS\n");
    }
}
