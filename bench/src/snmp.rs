//! `faro-bench snmp`: the simulated MA5800's ONU table walked through faro, against net-snmp's
//! `snmpbulkwalk` on the same agent in the same run.
//!
//! The worker runs as its own process (this binary, `faro-bench worker`), so its CPU is its
//! own: `snmp_cpu_us_per_value` is that process's user and system time over the values it
//! polled. Both sides walk one column at a time, one walk after another (the target's limit
//! is 1), with the same max-repetitions, so the ratio compares like with like: when it is
//! near 1, the agent (snmpsim) is the limit, not faro.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use faro_shared::messages::TargetRequest;
use faro_shared::targetfile;
use faro_shared::testing::{olt_snmprec, Snmpsim};

use crate::system::{Options, System, WorkerProcess};

const HUAWEI: &str = "1.3.6.1.4.1.2011.6.128.1.1.2";
const COLUMNS: [&str; 7] = [
    "43.1.3", "43.1.9", "45.1.4", "46.1.15", "46.1.20", "51.1.4", "51.1.6",
];

#[derive(Debug, Clone)]
pub struct SnmpBench {
    /// Walks of the 7 ONU columns (1,024 rows each) per side.
    pub walks: usize,
    pub max_repetitions: u32,
}

/// User plus system CPU time of a process so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unreadable /proc stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // Linux reports in USER_HZ, 100 per second on every common platform.
    Ok(Duration::from_millis(ticks * 10))
}

/// Values `snmpbulkwalk` prints for `walks` walks of the columns, and how long they took.
fn reference(address: &str, walks: usize, max_repetitions: u32) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut values = 0u64;
    for _ in 0..walks {
        for column in COLUMNS {
            let output = Command::new("snmpbulkwalk")
                .args(["-v2c", "-c", "public", "-On", "-Oq", "-t", "5", "-r", "1"])
                .arg(format!("-Cr{max_repetitions}"))
                .arg(address)
                .arg(format!("{HUAWEI}.{column}"))
                .env("MIBS", "")
                .output()
                .context(
                    "cannot run snmpbulkwalk: install net-snmp's tools (apt-get install -y snmp)",
                )?;
            if !output.status.success() {
                bail!(
                    "snmpbulkwalk failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            values += output
                .stdout
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"."))
                .count() as u64;
        }
    }
    Ok((values, started.elapsed()))
}

pub async fn run(bench: &SnmpBench) -> anyhow::Result<Vec<String>> {
    let agent = Snmpsim::start(&olt_snmprec("huawei-ma5800"))?;
    let system = System::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await?;
    let mut env = system.env.clone();
    env.set("FARO_WORKER_ID", "snmp-bench")
        .set("FARO_HTTP_ADDR", "127.0.0.1:0");
    let worker = WorkerProcess::worker(&std::env::current_exe()?, &env)?;
    let targets = targetfile::parse(
        serde_json::json!([{"id": "olt-bench", "address": agent.address(), "max_concurrency": 1}])
            .to_string()
            .as_bytes(),
    )?;
    system
        .ask("targets", &TargetRequest::Put { targets })
        .await?;
    let walk = |i: usize| {
        serde_json::json!({
            "id": format!("walk-{i}"), "queue": "discovery", "kind": "snmp.walk",
            "target": "olt-bench", "max_attempts": 1,
            "params": {
                "oids": COLUMNS.iter().map(|c| format!("{HUAWEI}.{c}")).collect::<Vec<_>>(),
                "max_repetitions": bench.max_repetitions,
            }
        })
    };
    // Warm-up: the worker has joined, its consumer exists and the agent's index is hot.
    system.submit_jobs(&[walk(0)], "warmup").await?;
    system.wait_terminal(1, Duration::from_secs(120)).await?;

    let (ref_values_1, ref_wall_1) = reference(
        &agent.address(),
        bench.walks.div_ceil(2),
        bench.max_repetitions,
    )?;

    let cpu_before = cpu_time(worker.pid())?;
    let started = Instant::now();
    let jobs: Vec<_> = (1..=bench.walks).map(walk).collect();
    system.submit_jobs(&jobs, "walks").await?;
    system
        .wait_terminal(1 + bench.walks as i64, Duration::from_secs(3_600))
        .await?;
    let wall = started.elapsed();
    let cpu = cpu_time(worker.pid())?.saturating_sub(cpu_before);

    let (ref_values_2, ref_wall_2) =
        reference(&agent.address(), bench.walks / 2, bench.max_repetitions)?;

    let failed: i64 = system
        .one("SELECT count(*) FROM runs WHERE job_id <> 'walk-0' AND status <> 'succeeded'")
        .await?;
    let values: i64 = system
        .one("SELECT coalesce(sum((output->>'values')::bigint), 0)::bigint FROM runs WHERE job_id <> 'walk-0'")
        .await?;
    let stored: i64 = system
        .one("SELECT count(*) FROM target_values WHERE target = 'olt-bench'")
        .await?;
    system.stop().await?;
    drop(worker);

    let values = u64::try_from(values).unwrap_or(0);
    let rate = values as f64 / wall.as_secs_f64();
    let ref_values = ref_values_1 + ref_values_2;
    let ref_rate = ref_values as f64 / (ref_wall_1 + ref_wall_2).as_secs_f64();
    Ok(vec![
        format!("snmp_walks={}", bench.walks),
        format!("snmp_values={values}"),
        format!("snmp_runs_failed={failed}"),
        format!("snmp_values_stored={stored}"),
        format!("snmp_values_per_sec={rate:.0}"),
        format!(
            "snmp_cpu_us_per_value={:.2}",
            cpu.as_secs_f64() * 1e6 / values.max(1) as f64
        ),
        format!("snmpbulkwalk_values={ref_values}"),
        format!("snmpbulkwalk_values_per_sec={ref_rate:.0}"),
        format!("snmp_vs_snmpbulkwalk={:.2}", rate / ref_rate),
    ])
}
