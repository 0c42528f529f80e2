//! The dispatcher's settings, from `FARO_*` variables.

use std::time::Duration;

use faro_shared::config::{ConfigError, Env, PgConfig};
use faro_shared::settings::RUNS_RETENTION_RANGE;
use faro_shared::CommonConfig;

use crate::deadlines::RunDeadline;
use crate::retry::RetryPolicy;

/// How long ended runs are kept unless `FARO_RUNS_RETENTION` or `runs.retention` say otherwise.
pub const DEFAULT_RUNS_RETENTION: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub pg: PgConfig,
    /// Most results recorded in one transaction (`FARO_DISPATCHER_RESULT_BATCH`).
    pub result_batch: usize,
    /// How submissions are read: the queue of batch files' tasks (`FARO_BATCH_QUEUE`).
    pub job_files: faro_shared::jobfile::ParseOptions,
    /// Runs of one target in flight at most, unless the target says otherwise
    /// (`FARO_TARGET_MAX_CONCURRENCY`, default 3).
    pub target_max_concurrency: u32,
    /// How long one attempt may take unless its job says otherwise (`FARO_RUN_TIMEOUT`, 10 m).
    pub run_timeout: Duration,
    /// Extra time after the timeout before the attempt is recorded `timed_out`
    /// (`FARO_RUN_TIMEOUT_GRACE`, 30 s): covers the result's way back.
    pub run_timeout_grace: Duration,
    /// Backoff between attempts (`FARO_RETRY_BASE_DELAY`, 1 s; `FARO_RETRY_MAX_DELAY`, 5 m).
    pub retry: RetryPolicy,
    /// How long in-flight work may take to finish at shutdown (`FARO_SHUTDOWN_GRACE`).
    pub shutdown_grace: Duration,
    /// This dispatcher's name in the leader lease and the logs (`FARO_DISPATCHER_ID`, default
    /// the host name and process id).
    pub instance: String,
    /// How long the leader lease lives without renewal (`FARO_LEADER_LEASE_TTL`, 5 s): a
    /// standby takes over within about this long after the leader dies.
    pub leader_lease_ttl: Duration,
    /// How long ended runs are kept (`FARO_RUNS_RETENTION`, 30 d; the hot setting
    /// `runs.retention` overrides it).
    pub runs_retention: Duration,
    /// How long submissions and the one-shot jobs they defined are kept
    /// (`FARO_SUBMISSIONS_RETENTION`, 30 d).
    pub submissions_retention: Duration,
    /// Whether each run's end goes on the outcome feed (`FARO_OUTCOME_FEED`, on): a
    /// JetStream message per run, a tenth or so of the throughput at full load.
    pub outcome_feed: bool,
}

impl Config {
    /// When an attempt must have a result by: its timeout plus the grace.
    pub fn run_deadline(&self) -> RunDeadline {
        RunDeadline {
            default_timeout: self.run_timeout,
            grace: self.run_timeout_grace,
        }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            pg: PgConfig::from_env(env)?,
            result_batch: env.parse(
                "FARO_DISPATCHER_RESULT_BATCH",
                2000,
                "a whole number of results, such as 2000",
            )?,
            target_max_concurrency: match env.parse(
                "FARO_TARGET_MAX_CONCURRENCY",
                3u32,
                "a whole number of runs from 1 to 1000",
            )? {
                n @ 1..=1000 => n,
                n => {
                    return Err(ConfigError {
                        var: "FARO_TARGET_MAX_CONCURRENCY".to_owned(),
                        value: n.to_string(),
                        expected: "a whole number of runs from 1 to 1000".to_owned(),
                    })
                }
            },
            run_timeout: env.duration("FARO_RUN_TIMEOUT", Duration::from_secs(600))?,
            run_timeout_grace: env.duration("FARO_RUN_TIMEOUT_GRACE", Duration::from_secs(30))?,
            retry: RetryPolicy {
                base: env.duration("FARO_RETRY_BASE_DELAY", Duration::from_secs(1))?,
                max: env.duration("FARO_RETRY_MAX_DELAY", Duration::from_secs(300))?,
            },
            shutdown_grace: env.duration("FARO_SHUTDOWN_GRACE", Duration::from_secs(30))?,
            instance: env
                .optional("FARO_DISPATCHER_ID")
                .map_or_else(default_instance, str::to_owned),
            leader_lease_ttl: match env.duration("FARO_LEADER_LEASE_TTL", Duration::from_secs(5))? {
                ttl if ttl >= Duration::from_secs(1) && ttl.subsec_nanos() == 0 => ttl,
                _ => {
                    return Err(ConfigError {
                        var: "FARO_LEADER_LEASE_TTL".to_owned(),
                        value: env.string("FARO_LEADER_LEASE_TTL", ""),
                        expected: "whole seconds, at least 1, such as 5s".to_owned(),
                    })
                }
            },
            runs_retention: retention(env, "FARO_RUNS_RETENTION")?,
            submissions_retention: retention(env, "FARO_SUBMISSIONS_RETENTION")?,
            outcome_feed: env.bool("FARO_OUTCOME_FEED", true)?,
            job_files: faro_shared::jobfile::ParseOptions::from_env(env)?,
        })
    }
}

/// A retention period from `var`: 30 days unless set, from 1d to 3650d.
fn retention(env: &Env, var: &str) -> Result<Duration, ConfigError> {
    match env.duration(var, DEFAULT_RUNS_RETENTION)? {
        d if RUNS_RETENTION_RANGE.contains(&d) => Ok(d),
        _ => Err(ConfigError {
            var: var.to_owned(),
            value: env.string(var, ""),
            expected: "a duration from 1d to 3650d, such as 30d".to_owned(),
        }),
    }
}

/// `host:pid`, from `HOSTNAME` (set in containers) or the kernel's host name.
fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "dispatcher".to_owned());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_lease_ttl_is_whole_seconds() {
        let env = Env::from_pairs([("FARO_LEADER_LEASE_TTL", "1500ms")]);
        let error = Config::from_env(&env).unwrap_err().to_string();
        assert!(error.contains("FARO_LEADER_LEASE_TTL") && error.contains("whole seconds"));
        let env = Env::from_pairs([
            ("FARO_LEADER_LEASE_TTL", "2s"),
            ("FARO_DISPATCHER_ID", "d1"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.leader_lease_ttl, Duration::from_secs(2));
        assert_eq!(config.runs_retention, DEFAULT_RUNS_RETENTION);
        assert_eq!(config.submissions_retention, DEFAULT_RUNS_RETENTION);
        assert_eq!(config.instance, "d1");
    }

    #[test]
    fn retentions_are_from_a_day_to_ten_years() {
        let env = Env::from_pairs([
            ("FARO_RUNS_RETENTION", "90d"),
            ("FARO_SUBMISSIONS_RETENTION", "7d"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.runs_retention, Duration::from_secs(90 * 86_400));
        assert_eq!(
            config.submissions_retention,
            Duration::from_secs(7 * 86_400)
        );
        for var in ["FARO_RUNS_RETENTION", "FARO_SUBMISSIONS_RETENTION"] {
            for bad in ["12h", "4000d", "forever"] {
                let env = Env::from_pairs([(var, bad)]);
                let error = Config::from_env(&env).unwrap_err().to_string();
                assert!(
                    error.contains(var) && error.contains("30d"),
                    "{bad}: {error}"
                );
            }
        }
    }
}
