//! `faro`: the operator's command. Reads the same `FARO_*` variables as the services.
//!
//! `main` parses the command line; each command is a module of `commands`; `ask` sends the
//! typed requests of the API; `table` lines up what the commands print.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use faro_shared::config::Env;

mod ask;
mod commands;
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
        action: commands::config::ConfigAction,
    },
    /// Cancel a run: at once if it waits or is still queued, through its worker if it runs.
    Cancel {
        /// The run's id (a UUID).
        run_id: uuid::Uuid,
    },
    /// Runs newest first, a page at a time: `faro run list --queue Q --status failed`.
    Run {
        #[command(subcommand)]
        action: commands::run::RunAction,
    },
    /// Why a run is waiting or did what it did; what a job has been doing.
    Explain {
        #[command(subcommand)]
        what: commands::explain::ExplainWhat,
    },
    /// Targets (OLTs): `faro target add|import|list|disable|enable`.
    Target {
        #[command(subcommand)]
        action: commands::target::TargetAction,
    },
    /// Job definitions: `faro job add|list|disable|enable`.
    Job {
        #[command(subcommand)]
        action: commands::job::JobAction,
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
        action: commands::mapping::MappingAction,
    },
    /// Messages set aside after they could not be recorded, oldest first, with why.
    DeadLetters {
        /// How many of the newest to show.
        #[arg(long, default_value_t = 50)]
        last: u64,
        /// Print JSON (with each original message) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply database migrations (FARO_DATABASE_URL) and exit.
    Migrate,
    /// The privileged step of a deploy: apply the database migrations, declare every NATS
    /// stream, bucket and the dispatcher's consumers (as the NATS admin user), and exit.
    Setup,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Never a PostgreSQL error's DETAIL: it repeats a refused row whole.
            eprintln!("faro: {}", faro_shared::pg::error_text(&error));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = Env::from_process();
    match cli.command {
        Command::Validate { file } => commands::validate::run(&env, &file),
        Command::Submit {
            file,
            wait,
            timeout,
        } => commands::submit::run(&env, &file, wait, timeout).await,
        Command::Status { json } => commands::status::run(&env, json).await,
        Command::DeadLetters { last, json } => commands::dead_letters::run(&env, last, json).await,
        Command::Ingest {
            watch,
            interval,
            settle,
            max_bytes,
            once,
        } => {
            let options = commands::ingest::Options {
                dir: watch,
                interval,
                settle,
                max_bytes,
                once,
                job_files: faro_shared::jobfile::ParseOptions::from_env(&env)?,
            };
            commands::ingest::run(&env, options).await
        }
        Command::Config { action } => commands::config::run(&env, action).await,
        Command::Cancel { run_id } => commands::cancel::run(&env, run_id).await,
        Command::Explain { what } => commands::explain::run(&env, what).await,
        Command::Run { action } => commands::run::run(&env, action).await,
        Command::Workers { json } => commands::workers::run(&env, json).await,
        Command::Queues { json } => commands::queues::run(&env, json).await,
        Command::Mapping { action } => commands::mapping::run(&env, action).await,
        Command::Target { action } => commands::target::run(&env, action).await,
        Command::Job { action } => commands::job::run(&env, action).await,
        Command::Migrate => commands::migrate::run(&env).await,
        Command::Setup => commands::setup::run(&env).await,
    }
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    faro_shared::config::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration; expected such as 500ms, 2s or 1m"))
}
