//! `faro job add|list|disable|enable`: job definitions, through the leading dispatcher, which
//! applies every change at once (no restart).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use faro_shared::config::Env;
use faro_shared::jobfile;
use faro_shared::messages::{JobReply, JobRequest};
use faro_shared::{nats, CommonConfig};

use super::target::yes_no;
use crate::ask::ask;
use crate::table::{self, Column};

#[derive(Subcommand)]
pub enum JobAction {
    /// Define a job (recurring with --interval, chained with --after, else run once now).
    Add(Box<JobArgs>),
    /// Job definitions with their last run, success and failure.
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Most jobs listed, by id.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One-shot jobs too, not only recurring and chained ones.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop a job: no more slots (recurring) or chained runs.
    Disable { id: String },
    /// Schedule a disabled job again.
    Enable { id: String },
}

#[derive(Args)]
pub struct JobArgs {
    /// The job's id.
    id: String,
    #[arg(long)]
    queue: String,
    /// sim (snmp.get, snmp.walk and exec come with the workers that run them).
    #[arg(long, default_value = "sim")]
    kind: String,
    #[arg(long)]
    target: Option<String>,
    /// Run every this long (30s, 5m): a recurring job.
    #[arg(long)]
    interval: Option<String>,
    /// Run after each run of this job: a chained job.
    #[arg(long)]
    after: Option<String>,
    /// With --after: success (default) or always.
    #[arg(long)]
    run_if: Option<String>,
    /// What a recurring job does when its previous run is still going: skip (default) or
    /// queue_one.
    #[arg(long)]
    overlap: Option<String>,
    /// 1 (most urgent) to 10, or low, normal, high.
    #[arg(long)]
    priority: Option<String>,
    /// The kind's parameters, as JSON.
    #[arg(long)]
    params: Option<String>,
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Longest a run may take (30s, 5m).
    #[arg(long)]
    timeout: Option<String>,
}

impl JobArgs {
    fn job(&self) -> anyhow::Result<serde_json::Value> {
        let mut job = serde_json::json!({"id": self.id, "queue": self.queue, "kind": self.kind});
        let params = self
            .params
            .as_deref()
            .map(serde_json::from_str::<serde_json::Value>)
            .transpose()
            .context("--params: expected a JSON object")?;
        let priority = self.priority.as_ref().map(|p| match p.parse::<u8>() {
            Ok(n) => serde_json::json!(n),
            Err(_) => serde_json::json!(p),
        });
        let fields = [
            ("target", self.target.clone().map(serde_json::Value::from)),
            (
                "interval",
                self.interval.clone().map(serde_json::Value::from),
            ),
            ("after", self.after.clone().map(serde_json::Value::from)),
            ("run_if", self.run_if.clone().map(serde_json::Value::from)),
            ("overlap", self.overlap.clone().map(serde_json::Value::from)),
            ("priority", priority),
            ("params", params),
            (
                "max_attempts",
                self.max_attempts.map(serde_json::Value::from),
            ),
            ("timeout", self.timeout.clone().map(serde_json::Value::from)),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                job[name] = value;
            }
        }
        Ok(job)
    }
}

pub async fn run(env: &Env, action: JobAction) -> anyhow::Result<()> {
    match action {
        JobAction::Add(args) => {
            let body = serde_json::to_vec(&serde_json::json!({ "jobs": [args.job()?] }))?;
            let submission = jobfile::parse(&body).map_err(|e| {
                let field = e.field.map(|f| format!("{f}: ")).unwrap_or_default();
                anyhow::anyhow!("{field}{}", e.problem)
            })?;
            // Each add is applied, even the same definition again (it may re-enable the job).
            let mut stamped = body.clone();
            stamped.extend(chrono::Utc::now().to_rfc3339().as_bytes());
            let digest = super::submit::digest(&stamped);
            let config = CommonConfig::from_env(env)?;
            let client = nats::connect(&config.nats, "faro-cli", nats::Retry::Never).await?;
            super::submit::submit(&client, &config, &submission, &digest).await?;
            println!("job {} submitted (submission file-{digest}-0)", args.id);
        }
        JobAction::List {
            queue,
            target,
            limit,
            all,
            json,
        } => {
            let request = JobRequest::List {
                all,
                queue: queue
                    .map(faro_shared::domain::QueueName::parse)
                    .transpose()?,
                target: target
                    .map(faro_shared::domain::TargetId::parse)
                    .transpose()?,
                limit,
            };
            let reply = ask(env, &request).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
                return Ok(());
            }
            print!("{}", jobs_table(&reply));
        }
        JobAction::Disable { id } => set_job(env, &id, false).await?,
        JobAction::Enable { id } => set_job(env, &id, true).await?,
    }
    Ok(())
}

const JOB_COLUMNS: [Column; 9] = [
    Column::left("ID"),
    Column::left("QUEUE"),
    Column::left("KIND"),
    Column::left("TARGET"),
    Column::left("EVERY"),
    Column::left("ENABLED"),
    Column::left("LAST RUN"),
    Column::left("LAST SUCCESS"),
    Column::left("LAST FAILURE"),
];

/// What `faro job list` prints.
fn jobs_table(reply: &JobReply) -> String {
    let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".to_owned())
    };
    let rows = reply.jobs.iter().map(|j| {
        let every = match (&j.interval_ms, &j.after) {
            (Some(ms), _) => format!("{}s", *ms as f64 / 1000.0),
            (None, Some(parent)) => format!("after {parent}"),
            (None, None) => "once".to_owned(),
        };
        vec![
            j.id.to_string(),
            j.queue.to_string(),
            j.kind.clone(),
            j.target.as_ref().map_or("-", |t| t.as_str()).to_owned(),
            every,
            yes_no(j.enabled),
            at(j.last_run_at),
            at(j.last_success_at),
            at(j.last_failure_at),
        ]
    });
    let mut text = table::render(&JOB_COLUMNS, rows);
    if (reply.jobs.len() as u64) < reply.total {
        text += &format!(
            "({} of {} jobs; --limit shows more)\n",
            reply.jobs.len(),
            reply.total
        );
    }
    text
}

async fn set_job(env: &Env, id: &str, enabled: bool) -> anyhow::Result<()> {
    let id = faro_shared::domain::JobId::parse(id)?;
    let request = JobRequest::SetEnabled {
        id: id.clone(),
        enabled,
    };
    ask(env, &request).await?;
    println!("job {id} {}", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::misplaced;
    use clap::Parser as _;
    use faro_shared::domain::{JobId, QueueName, TargetId};
    use faro_shared::messages::JobView;

    #[derive(clap::Parser)]
    struct J {
        #[command(subcommand)]
        action: JobAction,
    }

    fn job(id: &str, interval_ms: Option<u64>, after: Option<&str>) -> JobView {
        let at =
            |m| chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 3, 1, 12, m, 5).unwrap();
        JobView {
            id: JobId::parse(id).unwrap(),
            queue: QueueName::parse("optical").unwrap(),
            kind: "snmp.walk".to_owned(),
            target: Some(TargetId::parse("olt-huawei-1").unwrap()),
            interval_ms,
            after: after.map(|a| JobId::parse(a).unwrap()),
            enabled: true,
            last_run_at: Some(at(2)),
            last_success_at: Some(at(1)),
            last_failure_at: None,
        }
    }

    #[test]
    fn jobs_line_up_after_a_long_chain_parent() {
        let mut once = job("j1", None, None);
        once.target = None;
        once.enabled = false;
        once.last_run_at = None;
        once.last_success_at = None;
        let reply = JobReply {
            changed: 0,
            jobs: vec![
                job("olt-huawei-1-optical", None, Some("olt-huawei-1-discovery")),
                job("poll-1", Some(300), None),
                once,
            ],
            total: 5,
        };
        let text = jobs_table(&reply);
        let cells = [
            vec![
                "olt-huawei-1-optical",
                "optical",
                "snmp.walk",
                "olt-huawei-1",
                "after olt-huawei-1-discovery",
                "yes",
                "2025-03-01 12:02:05",
                "2025-03-01 12:01:05",
                "-",
            ],
            vec![
                "poll-1",
                "optical",
                "snmp.walk",
                "olt-huawei-1",
                "0.3s",
                "yes",
                "2025-03-01 12:02:05",
                "2025-03-01 12:01:05",
                "-",
            ],
            vec![
                "j1",
                "optical",
                "snmp.walk",
                "-",
                "once",
                "no",
                "-",
                "-",
                "-",
            ],
        ];
        let table: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        assert_eq!(misplaced(&table, &JOB_COLUMNS, &cells), None, "\n{text}");
        assert_eq!(
            text,
            "\
ID                    QUEUE    KIND       TARGET        EVERY                         ENABLED  LAST RUN             LAST SUCCESS         LAST FAILURE
olt-huawei-1-optical  optical  snmp.walk  olt-huawei-1  after olt-huawei-1-discovery  yes      2025-03-01 12:02:05  2025-03-01 12:01:05  -
poll-1                optical  snmp.walk  olt-huawei-1  0.3s                          yes      2025-03-01 12:02:05  2025-03-01 12:01:05  -
j1                    optical  snmp.walk  -             once                          no       -                    -                    -
(3 of 5 jobs; --limit shows more)
"
        );
    }

    #[test]
    fn job_flags_become_a_job_of_the_file_format() {
        let J {
            action: JobAction::Add(args),
        } = J::parse_from([
            "j",
            "add",
            "poll-olt-1",
            "--queue",
            "get",
            "--target",
            "olt-1",
            "--interval",
            "30s",
            "--priority",
            "2",
            "--params",
            r#"{"duration_ms": [1, 5]}"#,
        ])
        else {
            unreachable!()
        };
        let job = args.job().unwrap();
        let parsed =
            jobfile::parse(&serde_json::to_vec(&serde_json::json!([job])).unwrap()).unwrap();
        assert_eq!(parsed.jobs[0].priority.get(), 2);
        assert!(parsed.jobs[0].interval.is_some());
    }
}
