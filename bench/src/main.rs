//! `faro-bench`: measures faro on this machine and prints one `key=value` line per figure.
//!
//! `faro-bench e2e --runs 100000`: zero-duration `sim` runs pushed through the whole system
//! (dispatcher, NATS, workers, PostgreSQL), from submission to terminal status recorded.
//! `faro-bench schedule`, `faro-bench scale`, `faro-bench failover`, `faro-bench history`, `faro-bench snmp --walks 10` and
//! `faro-bench balance --queues 1000 --workers 10000`: see each module.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use faro_bench::system::{Options, System};

#[derive(Parser)]
#[command(
    name = "faro-bench",
    about = "faro's benchmarks; one key=value line per figure"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs per second and latency, submission to recorded terminal status.
    E2e {
        /// Runs to push through.
        #[arg(long, default_value_t = 100_000)]
        runs: usize,
        /// Jobs per submission message.
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Workers, each a full worker service in this process.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Slots per worker.
        #[arg(long, default_value_t = 500)]
        capacity: u32,
        /// Targets the runs are spread over.
        #[arg(long, default_value_t = 50)]
        targets: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Recurring jobs on zero-duration workers: lag from slot to start, each slot run once.
    Schedule {
        /// Recurring jobs to define.
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        /// Their interval, in seconds.
        #[arg(long, default_value_t = 60)]
        interval: u64,
        /// Whole intervals to measure (at least two).
        #[arg(long, default_value_t = 2)]
        intervals: u32,
        /// Targets the jobs are spread over.
        #[arg(long, default_value_t = 1_000)]
        targets: usize,
    },
    /// A dispatcher starting over many recurring job definitions: time to the whole schedule
    /// loaded and its first runs published, and its peak memory.
    Scale {
        /// Job definitions in PostgreSQL.
        #[arg(long, default_value_t = 1_000_000)]
        jobs: usize,
        /// Their interval, in seconds.
        #[arg(long, default_value_t = 300)]
        interval: u64,
        /// Targets the jobs are spread over.
        #[arg(long, default_value_t = 10_000)]
        targets: usize,
    },
    /// The simulated MA5800's ONU columns walked through a worker process, against net-snmp's
    /// snmpbulkwalk on the same snmpsim agent: values per second, worker CPU per value.
    Snmp {
        /// Walks of the 7 ONU columns (7,168 values) through faro.
        #[arg(long, default_value_t = 10)]
        walks: usize,
        /// Values per GETBULK, on both sides.
        #[arg(long, default_value_t = 25)]
        max_repetitions: u32,
    },
    /// The balancer's decision alone over many queues and workers, cycle after cycle:
    /// its time per cycle.
    Balance {
        #[arg(long, default_value_t = 1_000)]
        queues: usize,
        #[arg(long, default_value_t = 10_000)]
        workers: usize,
        /// Pools (sites) the workers and the queues' home pools are spread over.
        #[arg(long, default_value_t = 20)]
        pools: usize,
        #[arg(long, default_value_t = 200)]
        cycles: usize,
        /// Strict isolation (default: flexible, with borrowing).
        #[arg(long)]
        strict: bool,
        /// Preemption off (default: on).
        #[arg(long)]
        no_preemption: bool,
    },
    /// The service binaries under faults (leader, worker, nats-server and PostgreSQL killed,
    /// frozen, restarted) while runs go through: runs lost, doubled, over their target's
    /// limit, recurring slots missed. Needs the binaries built beside this one.
    Chaos {
        /// One-shot runs submitted during the faults.
        #[arg(long, default_value_t = 20_000)]
        runs: usize,
        /// Targets (limit 3 each) the runs are spread over.
        #[arg(long, default_value_t = 200)]
        targets: usize,
        /// Recurring jobs.
        #[arg(long, default_value_t = 200)]
        recurring: usize,
        /// Their interval, in seconds.
        #[arg(long, default_value_t = 10)]
        interval: u64,
        /// How long PostgreSQL stays frozen, in seconds.
        #[arg(long, default_value_t = 60)]
        pg_pause: u64,
        /// Seconds of load between two faults.
        #[arg(long, default_value_t = 10)]
        settle: u64,
        /// Slots of each of the three workers.
        #[arg(long, default_value_t = 100)]
        capacity: u32,
        /// Where the service binaries are (default: beside this program).
        #[arg(long)]
        bin_dir: Option<std::path::PathBuf>,
        /// Keep logs and journals in this directory.
        #[arg(long)]
        logs: Option<std::path::PathBuf>,
    },
    /// A worker killed as the only worker of its queue while its pool cools: seconds from
    /// the kill to each of its runs started on another worker.
    Failover {
        /// Fresh systems, one kill each.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Runs the killed worker holds.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// How long each run lasts, in seconds.
        #[arg(long, default_value_t = 30)]
        run_secs: u64,
    },
    /// The system on top of a long run history: status, keyset lists, end-to-end throughput
    /// (beside an empty database's), a takeover and dropping a day.
    History {
        /// Ended runs written before measuring (COPY, not the hot path).
        #[arg(long, default_value_t = 20_000_000)]
        runs: usize,
        /// Days before today they are spread over.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Runs of each end-to-end measure.
        #[arg(long, default_value_t = 50_000)]
        e2e_runs: usize,
    },
    /// A worker service in this process, configured by FARO_* variables (used by `snmp` to
    /// measure a worker's own CPU).
    #[command(hide = true)]
    Worker,
    /// A dispatcher service in this process, configured by FARO_* variables (used by
    /// `history` to kill a leader for real).
    #[command(hide = true)]
    Dispatcher,
}

#[tokio::main]
#[allow(clippy::print_stdout, clippy::print_stderr)]
async fn main() -> anyhow::Result<()> {
    // The services' logs, when asked for (RUST_LOG=info), on standard error.
    if std::env::var_os("RUST_LOG").is_some() {
        faro_shared::telemetry::init("faro-bench", faro_shared::config::LogFormat::Text);
    }
    match Cli::parse().command {
        Command::Dispatcher => {
            let env = faro_shared::Env::from_process();
            let config =
                faro_dispatcher::Config::from_env(&env).context("invalid configuration")?;
            faro_dispatcher::run(config, faro_shared::shutdown::on_signal()).await
        }
        Command::Worker => {
            let env = faro_shared::Env::from_process();
            let config = faro_worker::Config::from_env(&env).context("invalid configuration")?;
            faro_worker::run(config, faro_shared::shutdown::on_signal()).await
        }
        Command::Chaos {
            runs,
            targets,
            recurring,
            interval,
            pg_pause,
            settle,
            capacity,
            bin_dir,
            logs,
        } => {
            let bin_dir = match bin_dir {
                Some(dir) => dir,
                None => std::env::current_exe()
                    .context("cannot find this program")?
                    .parent()
                    .context("this program has no directory")?
                    .to_owned(),
            };
            let bench = faro_bench::chaos::ChaosBench {
                runs,
                targets: targets.max(1),
                recurring,
                interval: Duration::from_secs(interval.max(1)),
                pg_pause: Duration::from_secs(pg_pause),
                settle: Duration::from_secs(settle),
                capacity: capacity.max(1),
                bin_dir,
                logs,
                drain_limit: Duration::from_secs(900),
            };
            let figures = faro_bench::chaos::run(&bench).await?;
            for line in &figures.details {
                eprintln!("{line}");
            }
            for line in figures.lines() {
                println!("{line}");
            }
            Ok(())
        }
        Command::Failover {
            rounds,
            runs,
            run_secs,
        } => {
            let bench = faro_bench::failover::FailoverBench {
                rounds,
                runs,
                run_secs: run_secs.max(15),
                exe: std::env::current_exe().context("cannot find this program to run workers")?,
            };
            for line in faro_bench::failover::run(&bench).await?.lines() {
                println!("{line}");
            }
            Ok(())
        }
        Command::History {
            runs,
            days,
            e2e_runs,
        } => {
            let bench = faro_bench::history::HistoryBench {
                runs,
                days: days.max(2),
                e2e_runs: e2e_runs.max(1),
                exe: std::env::current_exe().context("cannot find this program")?,
            };
            faro_bench::history::run(&bench, |line| println!("{line}")).await
        }
        Command::Balance {
            queues,
            workers,
            pools,
            cycles,
            strict,
            no_preemption,
        } => {
            let bench = faro_bench::balance::BalanceBench {
                queues: queues.max(1),
                workers,
                pools: pools.max(1),
                cycles: cycles.max(1),
                strict,
                preemption: !no_preemption,
            };
            for line in faro_bench::balance::run(&bench)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Snmp {
            walks,
            max_repetitions,
        } => {
            let bench = faro_bench::snmp::SnmpBench {
                walks: walks.max(2),
                max_repetitions: max_repetitions.max(1),
            };
            for line in faro_bench::snmp::run(&bench).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::E2e {
            runs,
            batch,
            workers,
            capacity,
            targets,
            timeout,
        } => {
            e2e(
                runs,
                batch.max(1),
                workers,
                capacity,
                targets.max(1),
                timeout,
            )
            .await
        }
        Command::Schedule {
            jobs,
            interval,
            intervals,
            targets,
        } => {
            let bench = faro_bench::schedule::ScheduleBench {
                jobs,
                interval: Duration::from_secs(interval.max(1)),
                intervals: intervals.max(2),
                targets: targets.max(1),
            };
            for line in faro_bench::schedule::run(&bench).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Scale {
            jobs,
            interval,
            targets,
        } => {
            let bench = faro_bench::scale::ScaleBench {
                jobs,
                interval: Duration::from_secs(interval.max(1)),
                targets,
            };
            for line in faro_bench::scale::run(&bench).await? {
                println!("{line}");
            }
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout)]
async fn e2e(
    runs: usize,
    batch: usize,
    workers: usize,
    capacity: u32,
    targets: usize,
    timeout: u64,
) -> anyhow::Result<()> {
    let system = System::start(Options {
        workers,
        capacity,
        ..Options::default()
    })
    .await?;
    let measured = faro_bench::e2e::measure(
        &system,
        &faro_bench::e2e::E2e {
            runs,
            batch,
            targets,
            limit: Duration::from_secs(timeout),
            on_history: false,
        },
    )
    .await;
    system.stop().await?;
    for line in measured?.lines() {
        println!("{line}");
    }
    Ok(())
}
