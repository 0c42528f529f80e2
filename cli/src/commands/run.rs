//! `faro run list`: pages of runs newest first, of a queue, a target, a job and a status, each
//! or none, through the leading dispatcher. A page ends with the `--before` of the next one.

use clap::Subcommand;
use faro_shared::config::Env;
use faro_shared::domain::{JobId, QueueName, RunStatus, TargetId};
use faro_shared::messages::{RunsReply, RunsRequest};

use crate::ask::ask;
use crate::table::{self, Column};

#[derive(Subcommand)]
pub enum RunAction {
    /// Runs newest first: the failed runs of a queue, the runs of a target, a job's runs.
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        job: Option<String>,
        /// dispatched (every open run: stored so from when it is recorded until it ends, as
        /// `faro status` counts them), succeeded, failed, interrupted, timed_out, cancelled or
        /// skipped (pending: only runs recorded by versions before).
        #[arg(long, value_parser = parse_status)]
        status: Option<RunStatus>,
        /// Only runs made before this run: the id a page ends with, for the next page.
        #[arg(long, value_name = "RUN_ID")]
        before: Option<uuid::Uuid>,
        /// Runs in the page, 1 to 1000.
        #[arg(long, default_value_t = RunsRequest::DEFAULT_LIMIT)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_status(text: &str) -> Result<RunStatus, String> {
    text.parse::<RunStatus>().map_err(|_| {
        let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "{text:?} is not a run status; expected one of {}",
            all.join(", ")
        )
    })
}

pub async fn run(env: &Env, action: RunAction) -> anyhow::Result<()> {
    let RunAction::List {
        queue,
        target,
        job,
        status,
        before,
        limit,
        json,
    } = action;
    let request = RunsRequest {
        queue: queue.map(QueueName::parse).transpose()?,
        target: target.map(TargetId::parse).transpose()?,
        job: job.map(JobId::parse).transpose()?,
        status,
        before,
        limit,
    };
    request.page_size()?;
    let reply = ask(env, &request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", runs_table(&reply));
    }
    Ok(())
}

const RUN_COLUMNS: [Column; 8] = [
    Column::left("RUN"),
    Column::left("JOB"),
    Column::left("QUEUE"),
    Column::left("TARGET"),
    Column::left("STATUS"),
    Column::right("ATTEMPT"),
    Column::left("MADE"),
    Column::left("ERROR"),
];

/// What `faro run list` prints: a line per run, then how to ask for the next page.
fn runs_table(reply: &RunsReply) -> String {
    let rows = reply.runs.iter().map(|r| {
        vec![
            r.id.to_string(),
            r.job_id.clone(),
            r.queue.clone(),
            r.target.clone().unwrap_or_default(),
            r.status.as_str().to_owned(),
            r.attempt.to_string(),
            r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.error.clone().unwrap_or_default(),
        ]
    });
    let mut text = table::render(&RUN_COLUMNS, rows);
    if let Some(next) = reply.next {
        text += &format!("(older runs: the same command with --before {next})\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use faro_shared::messages::RunView;

    #[derive(clap::Parser)]
    struct R {
        #[command(subcommand)]
        action: RunAction,
    }

    #[test]
    fn a_status_is_named_or_refused_with_the_statuses_there_are() {
        let parsed = R::try_parse_from(["r", "list", "--status", "timed_out", "--queue", "q"]);
        assert!(matches!(
            parsed.map(|r| r.action),
            Ok(RunAction::List {
                status: Some(RunStatus::TimedOut),
                ..
            })
        ));
        let error = R::try_parse_from(["r", "list", "--status", "broken"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("\"broken\" is not a run status"), "{error}");
        assert!(error.contains("timed_out, cancelled, skipped"), "{error}");
    }

    #[test]
    fn a_full_page_says_how_to_ask_for_the_next() {
        let at = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 12, 1, 8, 0, 0).unwrap();
        let run = |n: u128, error: Option<&str>| RunView {
            id: uuid::Uuid::from_u128(n),
            job_id: "poll-olt-1".to_owned(),
            queue: "optical".to_owned(),
            target: Some("olt-1".to_owned()),
            status: RunStatus::Failed,
            attempt: 2,
            created_at: at,
            finished_at: None,
            worker_id: None,
            error: error.map(str::to_owned),
        };
        let reply = RunsReply {
            runs: vec![run(2, Some("timeout\nafter 5 s")), run(1, None)],
            next: Some(uuid::Uuid::from_u128(1)),
        };
        let text = runs_table(&reply);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].contains("failed") && lines[1].ends_with("timeout after 5 s"));
        assert!(lines[1].contains("2026-12-01 08:00:00"), "{text}");
        assert_eq!(
            lines[3],
            "(older runs: the same command with --before 00000000-0000-0000-0000-000000000001)"
        );
        let last = runs_table(&RunsReply {
            next: None,
            ..reply
        });
        assert_eq!(last.lines().count(), 3, "{last}");
    }
}
