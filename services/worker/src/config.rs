//! The worker's settings, from `FARO_*` variables.

use std::time::Duration;

use faro_shared::config::{ConfigError, Env};
use faro_shared::domain::{PoolName, WorkerId};
use faro_shared::messages::Kind;
use faro_shared::CommonConfig;

use crate::exec::AllowList;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `FARO_WORKER_ID`; default: the host name and a random suffix, unique per process.
    pub worker_id: WorkerId,
    /// `FARO_WORKER_POOL`, default `default`.
    pub pool: PoolName,
    /// Runs executed at once (`FARO_WORKER_CAPACITY`, default 10).
    pub capacity: u32,
    /// Kinds this worker executes: sim, snmp.get and snmp.walk, and exec with an allow-list.
    pub kinds: Vec<Kind>,
    /// `FARO_HEARTBEAT_INTERVAL`, default 5 s.
    pub heartbeat_interval: Duration,
    /// How long one pull request waits for runs (`FARO_WORKER_FETCH_EXPIRY`, default 2 s).
    pub fetch_expiry: Duration,
    /// How long in-flight runs may take to finish at shutdown (`FARO_SHUTDOWN_GRACE`, 30 s).
    pub shutdown_grace: Duration,
    /// SNMP requests in a row without an answer (retries included) after which an agent is
    /// unreachable and its runs fail at once (`FARO_SNMP_UNREACHABLE_AFTER`, default 3).
    pub unreachable_after: u32,
    /// While an agent is unreachable, one run polls it every this long
    /// (`FARO_SNMP_UNREACHABLE_DELAY`, default 30 s).
    pub unreachable_delay: Duration,
    /// The commands `exec` runs may ask for, from the JSON file `FARO_WORKER_EXEC_ALLOWLIST`;
    /// empty (and `exec` not offered) without it.
    pub exec: AllowList,
    /// A file where every execution's start and end is appended, one JSON line each
    /// (`FARO_WORKER_JOURNAL`); none without it.
    pub journal: Option<std::path::PathBuf>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let worker_id = match env.optional("FARO_WORKER_ID") {
            Some(id) => WorkerId::parse(id).map_err(|e| ConfigError {
                var: "FARO_WORKER_ID".to_owned(),
                value: id.to_owned(),
                expected: e.to_string(),
            })?,
            None => default_worker_id(env),
        };
        let capacity: u32 = env.parse(
            "FARO_WORKER_CAPACITY",
            10,
            "a whole number of slots from 1 to 10000",
        )?;
        if !(1..=10_000).contains(&capacity) {
            return Err(ConfigError {
                var: "FARO_WORKER_CAPACITY".to_owned(),
                value: capacity.to_string(),
                expected: "a whole number of slots from 1 to 10000".to_owned(),
            });
        }
        let exec = match env.optional("FARO_WORKER_EXEC_ALLOWLIST") {
            None => AllowList::default(),
            Some(path) => AllowList::load(std::path::Path::new(path)).map_err(|e| ConfigError {
                var: "FARO_WORKER_EXEC_ALLOWLIST".to_owned(),
                value: path.to_owned(),
                expected: format!(
                    "a readable allow-list file ({})",
                    faro_shared::pg::error_text(&e)
                ),
            })?,
        };
        let mut kinds = vec![Kind::Sim, Kind::SnmpGet, Kind::SnmpWalk];
        if !exec.is_empty() {
            kinds.push(Kind::Exec);
        }
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            worker_id,
            pool: env.parse(
                "FARO_WORKER_POOL",
                PoolName::parse("default").expect("valid pool name"),
                "a pool name of A-Z a-z 0-9 _ -",
            )?,
            capacity,
            kinds,
            heartbeat_interval: env.duration("FARO_HEARTBEAT_INTERVAL", Duration::from_secs(5))?,
            fetch_expiry: env.duration("FARO_WORKER_FETCH_EXPIRY", Duration::from_secs(2))?,
            shutdown_grace: env.duration("FARO_SHUTDOWN_GRACE", Duration::from_secs(30))?,
            unreachable_after: unreachable_after(env)?,
            unreachable_delay: env
                .duration("FARO_SNMP_UNREACHABLE_DELAY", Duration::from_secs(30))?,
            exec,
            journal: env
                .optional("FARO_WORKER_JOURNAL")
                .map(std::path::PathBuf::from),
        })
    }
}

fn unreachable_after(env: &Env) -> Result<u32, ConfigError> {
    const EXPECTED: &str = "a whole number of timeouts from 1 to 100";
    let after: u32 = env.parse("FARO_SNMP_UNREACHABLE_AFTER", 3, EXPECTED)?;
    if !(1..=100).contains(&after) {
        return Err(ConfigError {
            var: "FARO_SNMP_UNREACHABLE_AFTER".to_owned(),
            value: after.to_string(),
            expected: EXPECTED.to_owned(),
        });
    }
    Ok(after)
}

/// `<host>-<random>`: unique even with several workers per host (`docker compose --scale`).
fn default_worker_id(env: &Env) -> WorkerId {
    let host = env
        .optional("HOSTNAME")
        .map(str::to_owned)
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_else(|| "worker".to_owned());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let host = if host.is_empty() {
        "worker".to_owned()
    } else {
        host
    };
    WorkerId::parse(format!("{host}-{suffix}")).expect("sanitized worker id is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_are_unique_and_valid() {
        let env = Env::from_pairs([("HOSTNAME", "olt poller.example")]);
        let a = Config::from_env(&env).unwrap().worker_id;
        let b = Config::from_env(&env).unwrap().worker_id;
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("olt-poller-example-"), "{a}");
    }

    #[test]
    fn capacity_is_bounded() {
        let env = Env::from_pairs([("FARO_WORKER_CAPACITY", "0")]);
        let err = Config::from_env(&env).unwrap_err();
        assert_eq!(err.var, "FARO_WORKER_CAPACITY");
    }
}
