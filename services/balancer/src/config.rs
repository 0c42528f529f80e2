//! The balancer's settings, from `FARO_*` variables.

use std::time::Duration;

use faro_shared::config::{ConfigError, Env, PgConfig};
use faro_shared::CommonConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub pg: PgConfig,
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
    /// How long `worker_events` rows are kept (`FARO_BALANCER_WORKER_EVENTS_KEPT`, default 30
    /// days).
    pub worker_events_kept: Duration,
    /// How long the marker a gone worker's removed assignment leaves in the assignments bucket
    /// lives (`FARO_BALANCER_ASSIGNMENT_MARKER_TTL`, default 1 h): a worker watching sees the
    /// removal at once; then the marker goes, so workers that come and go leave nothing behind.
    pub assignment_marker_ttl: Duration,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            pg: PgConfig::from_env(env)?,
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
            worker_events_kept: env.duration(
                "FARO_BALANCER_WORKER_EVENTS_KEPT",
                Duration::from_secs(30 * 24 * 3600),
            )?,
            assignment_marker_ttl: match env.duration(
                "FARO_BALANCER_ASSIGNMENT_MARKER_TTL",
                Duration::from_secs(3600),
            )? {
                ttl if ttl >= Duration::from_secs(1) => ttl,
                _ => {
                    return Err(ConfigError {
                        var: "FARO_BALANCER_ASSIGNMENT_MARKER_TTL".to_owned(),
                        value: env.string("FARO_BALANCER_ASSIGNMENT_MARKER_TTL", ""),
                        expected: "a duration of at least 1s, such as 1h".to_owned(),
                    })
                }
            },
            shutdown_grace: env.duration("FARO_SHUTDOWN_GRACE", Duration::from_secs(30))?,
        })
    }
}
