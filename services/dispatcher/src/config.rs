//! The dispatcher's settings, from `FARO_*` variables.

use std::time::Duration;

use faro_shared::config::{ConfigError, Env, PgConfig};
use faro_shared::nats::TopologySettings;
use faro_shared::CommonConfig;

use crate::retry::RetryPolicy;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub pg: PgConfig,
    pub topology: TopologySettings,
    /// Most results recorded in one transaction (`FARO_DISPATCHER_RESULT_BATCH`).
    pub result_batch: usize,
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
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            pg: PgConfig::from_env(env)?,
            topology: TopologySettings::default(),
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
        })
    }
}
