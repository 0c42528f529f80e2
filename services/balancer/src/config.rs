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
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            pg: PgConfig::from_env(env)?,
            topology: TopologySettings::default(),
            cycle_interval: env.duration("FARO_BALANCER_CYCLE", Duration::from_secs(5))?,
            shutdown_grace: env.duration("FARO_SHUTDOWN_GRACE", Duration::from_secs(30))?,
        })
    }
}
