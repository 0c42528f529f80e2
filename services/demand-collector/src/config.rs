//! The demand-collector's settings, from `FARO_*` variables.

use std::time::Duration;

use faro_shared::config::{ConfigError, Env, PgConfig};
use faro_shared::nats::TopologySettings;
use faro_shared::CommonConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub pg: PgConfig,
    pub topology: TopologySettings,
    /// Time between two collections (`FARO_DEMAND_INTERVAL`, default 5 s).
    pub interval: Duration,
    /// Longest a provider may take before its queues are marked stale
    /// (`FARO_DEMAND_PROVIDER_TIMEOUT`, default 3 s).
    pub provider_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            pg: PgConfig::from_env(env)?,
            topology: TopologySettings::default(),
            interval: env.duration("FARO_DEMAND_INTERVAL", Duration::from_secs(5))?,
            provider_timeout: env
                .duration("FARO_DEMAND_PROVIDER_TIMEOUT", Duration::from_secs(3))?,
            shutdown_grace: env.duration("FARO_SHUTDOWN_GRACE", Duration::from_secs(30))?,
        })
    }
}
