//! `faro target` and `faro job`: the definitions operators manage, through the leading
//! dispatcher, which applies every change at once (no restart).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use faro_shared::config::Env;
use faro_shared::jobfile;
use faro_shared::messages::{JobReply, JobRequest, TargetReply, TargetRequest};
use faro_shared::targetfile::{self, TargetSpec};
use faro_shared::{nats, CommonConfig};

use crate::ask_dispatcher;
use crate::table::{self, Column};

/// Targets sent in one request, well under the server's payload limit.
const TARGETS_PER_REQUEST: usize = 1000;

#[derive(Subcommand)]
pub enum TargetAction {
    /// Add a target, or replace the one with the same id.
    Add(Box<TargetArgs>),
    /// Add or replace every target of a JSON file ({"targets": [...]} or an array); a file
    /// with any error is refused whole.
    Import { file: PathBuf },
    /// Every target with its limit and the slots in use now (secrets hidden).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop polling a target: its jobs' slots pass without runs, its waiting runs wait.
    Disable { id: String },
    /// Poll a disabled target again.
    Enable { id: String },
}

#[derive(Args)]
pub struct TargetArgs {
    /// The target's id (letters, digits, '-' and '_').
    id: String,
    /// host, host:port or [IPv6]:port (SNMP port 161 by default).
    #[arg(long)]
    address: String,
    #[arg(long, default_value = "")]
    name: String,
    /// Runs in flight at most (default: the system's target.max_concurrency).
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u32>,
    /// SNMP version: 2c or 3.
    #[arg(long, default_value = "2c")]
    snmp_version: String,
    /// SNMP v2c community.
    #[arg(long, default_value = "public")]
    community: String,
    /// SNMPv3 user.
    #[arg(long)]
    user: Option<String>,
    /// SNMPv3 authentication: md5, sha, sha224, sha256, sha384 or sha512.
    #[arg(long)]
    auth_protocol: Option<String>,
    #[arg(long)]
    auth_password: Option<String>,
    /// SNMPv3 privacy: des, aes, aes192 or aes256.
    #[arg(long)]
    priv_protocol: Option<String>,
    #[arg(long)]
    priv_password: Option<String>,
    /// Add it disabled.
    #[arg(long)]
    disabled: bool,
}

impl TargetArgs {
    /// The target as the file format writes it, validated the same way.
    fn spec(&self) -> anyhow::Result<TargetSpec> {
        let snmp = if self.snmp_version == "3" {
            let mut v3 =
                serde_json::json!({"version": "3", "user": self.user.clone().unwrap_or_default()});
            if self.auth_protocol.is_some() || self.auth_password.is_some() {
                v3["auth"] = serde_json::json!({"protocol": self.auth_protocol, "password": self.auth_password});
            }
            if self.priv_protocol.is_some() || self.priv_password.is_some() {
                v3["privacy"] = serde_json::json!({"protocol": self.priv_protocol, "password": self.priv_password});
            }
            v3
        } else {
            serde_json::json!({"version": self.snmp_version, "community": self.community})
        };
        let target = serde_json::json!([{
            "id": self.id, "name": self.name, "address": self.address, "snmp": snmp,
            "max_concurrency": self.max_concurrency, "enabled": !self.disabled,
        }]);
        let mut targets = targetfile::parse(&serde_json::to_vec(&target)?).map_err(|e| {
            let field = e.field.map(|f| format!("{f}: ")).unwrap_or_default();
            anyhow::anyhow!("{field}{}", e.problem)
        })?;
        targets.pop().context("no target")
    }
}

pub async fn target(env: &Env, action: TargetAction) -> anyhow::Result<()> {
    match action {
        TargetAction::Add(args) => {
            let spec = args.spec()?;
            let id = spec.id.clone();
            put_targets(env, vec![spec]).await?;
            println!("target {id} saved");
        }
        TargetAction::Import { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let targets = targetfile::parse(&bytes)
                .map_err(|error| anyhow::anyhow!("{}: {error}", file.display()))?;
            let total = targets.len();
            let mut saved = 0;
            for chunk in targets.chunks(TARGETS_PER_REQUEST) {
                saved += put_targets(env, chunk.to_vec()).await?;
                if total > TARGETS_PER_REQUEST {
                    eprintln!("{saved}/{total} targets saved");
                }
            }
            println!("{}: {saved} targets saved", file.display());
        }
        TargetAction::List { json } => {
            let reply = ask_dispatcher(env, "targets", &TargetRequest::List).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
                return Ok(());
            }
            print!("{}", targets_table(&serde_json::from_value(reply)?));
        }
        TargetAction::Disable { id } => set_target(env, &id, false).await?,
        TargetAction::Enable { id } => set_target(env, &id, true).await?,
    }
    Ok(())
}

const TARGET_COLUMNS: [Column; 8] = [
    Column::left("ID"),
    Column::left("NAME"),
    Column::left("ADDRESS"),
    Column::left("SNMP"),
    Column::right("LIMIT"),
    Column::left("ENABLED"),
    Column::right("IN FLIGHT"),
    Column::right("WAITING"),
];

/// What `faro target list` prints.
fn targets_table(reply: &TargetReply) -> String {
    let rows = reply.targets.iter().map(|t| {
        let limit = match t.max_concurrency {
            Some(n) => n.to_string(),
            None => format!("{}*", t.limit),
        };
        vec![
            t.id.to_string(),
            t.name.clone(),
            t.address.clone().unwrap_or_default(),
            t.snmp["version"].as_str().unwrap_or("?").to_owned(),
            limit,
            yes_no(t.enabled),
            t.in_flight.to_string(),
            t.waiting.to_string(),
        ]
    });
    let mut text = table::render(&TARGET_COLUMNS, rows);
    text += "(* the system default, target.max_concurrency)\n";
    text
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

async fn put_targets(env: &Env, targets: Vec<TargetSpec>) -> anyhow::Result<usize> {
    let reply = ask_dispatcher(env, "targets", &TargetRequest::Put { targets }).await?;
    Ok(serde_json::from_value::<TargetReply>(reply)?.changed)
}

async fn set_target(env: &Env, id: &str, enabled: bool) -> anyhow::Result<()> {
    let id = faro_shared::domain::TargetId::parse(id)?;
    let request = TargetRequest::SetEnabled {
        id: id.clone(),
        enabled,
    };
    ask_dispatcher(env, "targets", &request).await?;
    println!(
        "target {id} {}",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

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

pub async fn job(env: &Env, action: JobAction) -> anyhow::Result<()> {
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
            let digest = crate::digest(&stamped);
            let config = CommonConfig::from_env(env)?;
            let client = nats::connect(&config.nats, "faro-cli", nats::Retry::Never).await?;
            crate::submit(&client, &config, &submission, &digest).await?;
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
            let reply = ask_dispatcher(env, "jobs", &request).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
                return Ok(());
            }
            print!("{}", jobs_table(&serde_json::from_value(reply)?));
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
    ask_dispatcher(env, "jobs", &request).await?;
    println!("job {id} {}", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::misplaced;
    use clap::Parser as _;
    use faro_shared::domain::{JobId, QueueName, TargetId};
    use faro_shared::messages::{JobView, TargetView};

    #[derive(clap::Parser)]
    struct T {
        #[command(subcommand)]
        action: TargetAction,
    }

    #[derive(clap::Parser)]
    struct J {
        #[command(subcommand)]
        action: JobAction,
    }

    fn target_args(args: &[&str]) -> TargetArgs {
        let mut argv = vec!["t", "add"];
        argv.extend(args);
        match T::parse_from(argv).action {
            TargetAction::Add(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn target_flags_become_a_validated_target() {
        let spec = target_args(&["olt-1", "--address", "192.0.2.1", "--max-concurrency", "2"])
            .spec()
            .unwrap();
        assert_eq!(spec.address, "192.0.2.1:161");
        assert_eq!(spec.max_concurrency, Some(2));
        assert_eq!(spec.snmp.version(), "2c");

        let v3 = target_args(&[
            "olt-2",
            "--address",
            "[::1]:1161",
            "--snmp-version",
            "3",
            "--user",
            "faro",
            "--auth-protocol",
            "sha",
            "--auth-password",
            "12345678",
        ])
        .spec()
        .unwrap();
        assert_eq!(v3.snmp.version(), "3");

        let bad = target_args(&["olt-3", "--address", "h:0"])
            .spec()
            .unwrap_err();
        assert!(bad.to_string().starts_with("address: port"), "{bad}");
        let bad = target_args(&["olt-3", "--address", "h", "--snmp-version", "3"])
            .spec()
            .unwrap_err();
        assert!(bad.to_string().contains("snmp.user"), "{bad}");
    }

    fn target(id: &str, name: &str, address: Option<&str>, limit: Option<u32>) -> TargetView {
        TargetView {
            id: TargetId::parse(id).unwrap(),
            name: name.to_owned(),
            address: address.map(str::to_owned),
            snmp: serde_json::json!({"version": "2c", "community": "***"}),
            max_concurrency: limit,
            limit: limit.unwrap_or(4),
            enabled: limit.is_none(),
            in_flight: 1,
            waiting: 0,
        }
    }

    #[test]
    fn targets_line_up_with_long_names_and_missing_fields() {
        let reply = TargetReply {
            changed: 0,
            targets: vec![
                target("olt-1", "POP 1", Some("192.0.2.1:161"), None),
                target(
                    "olt-huawei-1",
                    "Central office, rack 12, shelf 3",
                    Some("[2001:db8::1]:1161"),
                    Some(12),
                ),
                target("olt-2", "", None, Some(2)),
            ],
        };
        let text = targets_table(&reply);
        let cells = [
            vec![
                "olt-1",
                "POP 1",
                "192.0.2.1:161",
                "2c",
                "4*",
                "yes",
                "1",
                "0",
            ],
            vec![
                "olt-huawei-1",
                "Central office, rack 12, shelf 3",
                "[2001:db8::1]:1161",
                "2c",
                "12",
                "no",
                "1",
                "0",
            ],
            vec!["olt-2", "-", "-", "2c", "2", "no", "1", "0"],
        ];
        let table: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        assert_eq!(misplaced(&table, &TARGET_COLUMNS, &cells), None, "\n{text}");
        assert_eq!(
            text,
            "\
ID            NAME                              ADDRESS             SNMP  LIMIT  ENABLED  IN FLIGHT  WAITING
olt-1         POP 1                             192.0.2.1:161       2c       4*  yes              1        0
olt-huawei-1  Central office, rack 12, shelf 3  [2001:db8::1]:1161  2c       12  no               1        0
olt-2         -                                 -                   2c        2  no               1        0
(* the system default, target.max_concurrency)
"
        );
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
