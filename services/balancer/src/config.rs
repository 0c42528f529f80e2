//! The balancer's settings, from `FARO_*` variables.

use std::time::Duration;

use faro_shared::config::{ConfigError, Env, PgConfig};
use faro_shared::nats::TopologySettings;
use faro_shared::CommonConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub pg: PgConfig,
    pub topology: TopologySettings,
    /// Time between two decisions (`FARO_BALANCER_CYCLE`, default 5 s); a worker joining or
    /// leaving triggers one at once.
    pub cycle_interval: Duration,
    /// Beats missed before a worker is lost (`FARO_BALANCER_MAX_MISSED`, default 5).
    pub max_missed: u64,
    /// A demand snapshot older than this is stale (`FARO_BALANCER_DEMAND_MAX_AGE`, default
    /// 30 s): a demand-collector that stopped never scales a queue in.
    pub demand_max_age: Duration,
    /// How long decisions are kept in `balancer_decisions` (`FARO_BALANCER_DECISIONS_KEPT`,
    /// default 30 days).
    pub decisions_kept: Duration,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            pg: PgConfig::from_env(env)?,
            topology: TopologySettings::from_env(env)?,
            cycle_interval: env.duration("FARO_BALANCER_CYCLE", Duration::from_secs(5))?,
            max_missed: env.parse(
                "FARO_BALANCER_MAX_MISSED",
                5u64,
                "a whole number of heartbeats, such as 5",
            )?,
            demand_max_age: env
                .duration("FARO_BALANCER_DEMAND_MAX_AGE", Duration::from_secs(30))?,
            decisions_kept: env.duration(
                "FARO_BALANCER_DECISIONS_KEPT",
                Duration::from_secs(30 * 24 * 3600),
            )?,
            shutdown_grace: env.duration("FARO_SHUTDOWN_GRACE", Duration::from_secs(30))?,
        })
    }
}
