//! Hot configuration: the `system_config` keys, their accepted values, and parsing.
//!
//! A setting is changed with `faro config set KEY VALUE` and takes effect without a restart.
//! Every key is listed here with the form it accepts, so a typo or a bad value is refused
//! with the list of what would have been accepted.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::parse_duration;
use crate::domain::QueueName;

/// One hot setting and its value. Stored and sent as `{"key": .., "value": ..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// Holds new dispatches (runs wait) while runs in flight finish.
    MaintenanceMode(bool),
    /// Runs of one target in flight at most, for targets without their own limit.
    TargetMaxConcurrency(u32),
    /// Runs of one queue in flight at most (`queue.<name>.max_in_flight`); `None`: no limit
    /// beyond the queue's own definition.
    QueueMaxInFlight(QueueName, Option<u32>),
    /// The log filter of every service, as `RUST_LOG` writes it (`info,faro_dispatcher=debug`).
    LogLevel(String),
    /// Every SNMP run is simulated (a `sim` draw, marked `simulated`): nothing polls a device.
    SnmpTestMode(bool),
    /// CPU use (percent; of the cgroup quota in a limited container, else of the machine)
    /// above which a worker pulls no new runs.
    WorkerCpuMax(u8),
    /// Memory use (percent) above which a worker pulls no new runs.
    WorkerMemMax(u8),
    /// Workers serve only queues whose home pools include their pool (`false`: idle workers of
    /// a pool without demand are lent to other pools' queues).
    StrictIsolation(bool),
    /// A more urgent queue with unmet demand may take workers from less urgent queues.
    PreemptionMode(bool),
    /// How long a pool whose workers moved stays frozen.
    CoolingPeriod(Duration),
    /// Time between two balancing decisions.
    CycleInterval(Duration),
    /// How long ended runs are kept: the leader drops each day of history once all of it is
    /// older than this.
    RunsRetention(Duration),
}

/// Every key with the form of its value and its default, for help and error messages.
pub const KEYS: [(&str, &str, &str); 12] = [
    ("maintenance_mode", "true or false", "false"),
    (
        "target.max_concurrency",
        "a whole number from 1 to 1000",
        "3 (FARO_TARGET_MAX_CONCURRENCY)",
    ),
    (
        "queue.<name>.max_in_flight",
        "a whole number from 1 to 100000, or none",
        "the queue's max_in_flight, else none",
    ),
    (
        "log.level",
        "a log filter such as info, debug or info,faro_dispatcher=debug",
        "RUST_LOG, else info",
    ),
    ("snmp.test_mode", "true or false", "false"),
    ("worker.cpu_max", "a whole percent from 1 to 100", "80"),
    ("worker.mem_max", "a whole percent from 1 to 100", "85"),
    ("strict_isolation", "true or false", "true"),
    ("preemption_mode", "true or false", "false"),
    (
        "cooling_period",
        "a duration from 0s to 1h such as 30s or 2m",
        "30s",
    ),
    (
        "cycle_interval",
        "a duration from 100ms to 5m such as 5s",
        "FARO_BALANCER_CYCLE, else 5s",
    ),
    (
        "runs.retention",
        "a duration from 1d to 3650d such as 30d",
        "FARO_RUNS_RETENTION, else 30d",
    ),
];

/// The shortest and longest run history `runs.retention` and `FARO_RUNS_RETENTION` accept: at
/// least a day (history is dropped a day at a time), at most ten years.
pub const RUNS_RETENTION_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(86_400)..=Duration::from_secs(3650 * 86_400);

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Some(true),
        "false" | "off" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// A duration as settings store it: whole days as `30d`, whole seconds as `30s`, else
/// milliseconds.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms > 0 && ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Why a setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown key {0:?}; accepted keys: {keys}", keys = accepted_keys())]
    UnknownKey(String),
    #[error("{key}={value:?} is not accepted; expected {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

fn accepted_keys() -> String {
    KEYS.iter()
        .map(|(key, form, _)| format!("{key} ({form})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `filter` reads as a log filter: comma-separated `level` or `target=level`.
fn is_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    !filter.trim().is_empty()
        && filter.split(',').all(|directive| {
            let level = directive.rsplit('=').next().unwrap_or_default().trim();
            let target = directive.split('=').next().unwrap_or_default().trim();
            let target_ok = !directive.contains('=')
                || (!target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_:-".contains(c)));
            directive.matches('=').count() <= 1
                && target_ok
                && LEVELS.contains(&level.to_ascii_lowercase().as_str())
        })
}

impl Setting {
    /// Parses `KEY VALUE` as typed on the command line.
    pub fn parse(key: &str, value: &str) -> Result<Self, SettingError> {
        let bad = |key: &str, expected: &'static str| SettingError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            expected,
        };
        let trimmed = value.trim();
        match key {
            "maintenance_mode" => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "on" | "1" | "yes" => Ok(Setting::MaintenanceMode(true)),
                "false" | "off" | "0" | "no" => Ok(Setting::MaintenanceMode(false)),
                _ => Err(bad(key, KEYS[0].1)),
            },
            "target.max_concurrency" => match trimmed.parse::<u32>() {
                Ok(n @ 1..=1000) => Ok(Setting::TargetMaxConcurrency(n)),
                _ => Err(bad(key, KEYS[1].1)),
            },
            "snmp.test_mode" => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "on" | "1" | "yes" => Ok(Setting::SnmpTestMode(true)),
                "false" | "off" | "0" | "no" => Ok(Setting::SnmpTestMode(false)),
                _ => Err(bad(key, KEYS[4].1)),
            },
            "worker.cpu_max" | "worker.mem_max" => {
                let index = if key == "worker.cpu_max" { 5 } else { 6 };
                match trimmed.trim_end_matches('%').parse::<u8>() {
                    Ok(n @ 1..=100) if index == 5 => Ok(Setting::WorkerCpuMax(n)),
                    Ok(n @ 1..=100) => Ok(Setting::WorkerMemMax(n)),
                    _ => Err(bad(key, KEYS[index].1)),
                }
            }
            "strict_isolation" => parse_bool(trimmed)
                .map(Setting::StrictIsolation)
                .ok_or_else(|| bad(key, KEYS[7].1)),
            "preemption_mode" => parse_bool(trimmed)
                .map(Setting::PreemptionMode)
                .ok_or_else(|| bad(key, KEYS[8].1)),
            "cooling_period" => match parse_duration(trimmed) {
                Some(d) if d <= Duration::from_secs(3600) => Ok(Setting::CoolingPeriod(d)),
                _ => Err(bad(key, KEYS[9].1)),
            },
            "cycle_interval" => match parse_duration(trimmed) {
                Some(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(300) => {
                    Ok(Setting::CycleInterval(d))
                }
                _ => Err(bad(key, KEYS[10].1)),
            },
            "runs.retention" => match parse_duration(trimmed) {
                Some(d) if RUNS_RETENTION_RANGE.contains(&d) => Ok(Setting::RunsRetention(d)),
                _ => Err(bad(key, KEYS[11].1)),
            },
            "log.level" if is_log_filter(trimmed) => Ok(Setting::LogLevel(trimmed.to_owned())),
            "log.level" => Err(bad(key, KEYS[3].1)),
            _ => {
                let queue = key
                    .strip_prefix("queue.")
                    .and_then(|rest| rest.strip_suffix(".max_in_flight"))
                    .ok_or_else(|| SettingError::UnknownKey(key.to_owned()))?;
                let queue = QueueName::parse(queue).map_err(|_| SettingError::BadValue {
                    key: key.to_owned(),
                    value: value.to_owned(),
                    expected:
                        "queue.<name>.max_in_flight with a queue name of letters, digits, - and _",
                })?;
                match trimmed.to_ascii_lowercase().as_str() {
                    "none" | "off" | "unlimited" => Ok(Setting::QueueMaxInFlight(queue, None)),
                    number => match number.parse::<u32>() {
                        Ok(n @ 1..=100_000) => Ok(Setting::QueueMaxInFlight(queue, Some(n))),
                        _ => Err(bad(key, KEYS[2].1)),
                    },
                }
            }
        }
    }

    pub fn key(&self) -> String {
        match self {
            Setting::MaintenanceMode(_) => "maintenance_mode".to_owned(),
            Setting::TargetMaxConcurrency(_) => "target.max_concurrency".to_owned(),
            Setting::QueueMaxInFlight(queue, _) => format!("queue.{queue}.max_in_flight"),
            Setting::LogLevel(_) => "log.level".to_owned(),
            Setting::SnmpTestMode(_) => "snmp.test_mode".to_owned(),
            Setting::WorkerCpuMax(_) => "worker.cpu_max".to_owned(),
            Setting::WorkerMemMax(_) => "worker.mem_max".to_owned(),
            Setting::StrictIsolation(_) => "strict_isolation".to_owned(),
            Setting::PreemptionMode(_) => "preemption_mode".to_owned(),
            Setting::CoolingPeriod(_) => "cooling_period".to_owned(),
            Setting::CycleInterval(_) => "cycle_interval".to_owned(),
            Setting::RunsRetention(_) => "runs.retention".to_owned(),
        }
    }

    /// The value as stored in `system_config` (JSON).
    pub fn value(&self) -> serde_json::Value {
        match self {
            Setting::MaintenanceMode(on)
            | Setting::SnmpTestMode(on)
            | Setting::StrictIsolation(on)
            | Setting::PreemptionMode(on) => serde_json::Value::Bool(*on),
            Setting::CoolingPeriod(d) | Setting::CycleInterval(d) | Setting::RunsRetention(d) => {
                serde_json::Value::from(format_duration(*d))
            }
            Setting::TargetMaxConcurrency(n) => serde_json::Value::from(*n),
            Setting::WorkerCpuMax(n) | Setting::WorkerMemMax(n) => serde_json::Value::from(*n),
            Setting::QueueMaxInFlight(_, Some(n)) => serde_json::Value::from(*n),
            Setting::QueueMaxInFlight(_, None) => serde_json::Value::from("none"),
            Setting::LogLevel(filter) => serde_json::Value::from(filter.as_str()),
        }
    }

    /// Reads a stored row back; `None` for a key this version does not know.
    pub fn from_stored(key: &str, value: &serde_json::Value) -> Option<Self> {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Setting::parse(key, &text).ok()
    }
}

/// The wire form of a setting.
#[derive(Serialize, Deserialize)]
struct Stored {
    key: String,
    value: serde_json::Value,
}

impl Serialize for Setting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Stored {
            key: self.key(),
            value: self.value(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = Stored::deserialize(deserializer)?;
        let text = match &stored.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Setting::parse(&stored.key, &text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key(), self.value())
    }
}

/// Every hot setting stored, as [`load`] read it: a key not stored takes its default, which
/// the service that follows it knows (see [`KEYS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HotSettings {
    stored: Vec<Setting>,
}

impl HotSettings {
    /// From settings already read (tests, a setting just stored).
    pub fn new(stored: Vec<Setting>) -> Self {
        Self { stored }
    }

    /// Every setting stored, by key.
    pub fn all(&self) -> &[Setting] {
        &self.stored
    }

    /// `maintenance_mode`: false unless stored true.
    pub fn maintenance(&self) -> bool {
        self.stored.contains(&Setting::MaintenanceMode(true))
    }

    /// `log.level`, when stored.
    pub fn log_level(&self) -> Option<&str> {
        self.stored.iter().find_map(|setting| match setting {
            Setting::LogLevel(filter) => Some(filter.as_str()),
            _ => None,
        })
    }

    /// `runs.retention`, when stored.
    pub fn runs_retention(&self) -> Option<Duration> {
        self.stored.iter().find_map(|setting| match setting {
            Setting::RunsRetention(d) => Some(*d),
            _ => None,
        })
    }

    /// `target.max_concurrency`, when stored.
    pub fn target_max_concurrency(&self) -> Option<u32> {
        self.stored.iter().find_map(|setting| match setting {
            Setting::TargetMaxConcurrency(n) => Some(*n),
            _ => None,
        })
    }
}

/// Reads every hot setting from `system_config`: the one reader of that table, for every
/// service. A row this version cannot read (a key it does not know, a value out of range) is
/// skipped with a warning naming it, and its default applies.
pub async fn load(pool: &deadpool_postgres::Pool) -> anyhow::Result<HotSettings> {
    use anyhow::Context as _;
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let rows = client
        .query("SELECT key, value FROM system_config ORDER BY key", &[])
        .await
        .context("cannot read the hot settings (system_config)")?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in rows {
        let key: String = row.get(0);
        let value: serde_json::Value = row.get(1);
        match Setting::from_stored(&key, &value) {
            Some(setting) => stored.push(setting),
            None => tracing::warn!(%key, %value, "stored setting unreadable; its default applies"),
        }
    }
    Ok(HotSettings { stored })
}

/// Stores a hot setting (the dispatcher's `config` verb): with [`load`], the only SQL on
/// `system_config`.
pub async fn store(pool: &deadpool_postgres::Pool, setting: &Setting) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let client = pool.get().await.context("no PostgreSQL connection")?;
    client
        .execute(
            "INSERT INTO system_config (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            &[&setting.key(), &setting.value()],
        )
        .await
        .with_context(|| format!("cannot store the setting {}", setting.key()))?;
    Ok(())
}

/// The request of `faro.api.dispatcher.config`: set a key (`value` given) or list all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The reply: every setting in force (stored ones; others are at their defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReply {
    pub settings: Vec<Setting>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_their_forms() {
        assert_eq!(
            Setting::parse("snmp.test_mode", "yes").unwrap(),
            Setting::SnmpTestMode(true)
        );
        assert_eq!(
            Setting::parse("worker.mem_max", "90%").unwrap(),
            Setting::WorkerMemMax(90)
        );
        let e = Setting::parse("worker.cpu_max", "0").unwrap_err();
        assert!(e.to_string().contains("from 1 to 100"), "{e}");
        let e = Setting::parse("snmp.test_mode", "maybe").unwrap_err();
        assert!(e.to_string().contains("true or false"), "{e}");
        assert_eq!(
            Setting::from_stored("snmp.test_mode", &serde_json::Value::Bool(false)),
            Some(Setting::SnmpTestMode(false))
        );
        assert_eq!(
            Setting::parse("maintenance_mode", "on").unwrap(),
            Setting::MaintenanceMode(true)
        );
        assert_eq!(
            Setting::parse("target.max_concurrency", "5").unwrap(),
            Setting::TargetMaxConcurrency(5)
        );
        assert_eq!(
            Setting::parse("queue.discovery.max_in_flight", "25").unwrap(),
            Setting::QueueMaxInFlight(QueueName::parse("discovery").unwrap(), Some(25))
        );
        assert_eq!(
            Setting::parse("queue.get.max_in_flight", "none").unwrap(),
            Setting::QueueMaxInFlight(QueueName::parse("get").unwrap(), None)
        );
        assert_eq!(
            Setting::parse("log.level", "info,faro_dispatcher=debug").unwrap(),
            Setting::LogLevel("info,faro_dispatcher=debug".to_owned())
        );
        assert_eq!(
            Setting::parse("runs.retention", "90d").unwrap(),
            Setting::RunsRetention(Duration::from_secs(90 * 86_400))
        );
        assert_eq!(
            Setting::parse("runs.retention", "36h").unwrap(),
            Setting::RunsRetention(Duration::from_secs(36 * 3600))
        );
        for (key, value) in [
            ("runs.retention", "12h"),
            ("runs.retention", "3651d"),
            ("runs.retention", "a month"),
            ("maintenance_mode", "maybe"),
            ("target.max_concurrency", "0"),
            ("queue.get.max_in_flight", "0"),
            ("queue.get.max_in_flight", "many"),
            ("queue.a.b.max_in_flight", "5"),
            ("log.level", "loud"),
            ("log.level", "faro=debug=info"),
            ("log.level", ""),
        ] {
            let err = Setting::parse(key, value).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("expected"),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn unknown_keys_list_the_accepted_ones() {
        let err = Setting::parse("maintenance", "true")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("maintenance_mode") && err.contains("target.max_concurrency"),
            "{err}"
        );
    }

    #[test]
    fn stored_values_read_back() {
        for setting in [
            Setting::MaintenanceMode(true),
            Setting::TargetMaxConcurrency(7),
            Setting::QueueMaxInFlight(QueueName::parse("get").unwrap(), Some(25)),
            Setting::QueueMaxInFlight(QueueName::parse("get").unwrap(), None),
            Setting::LogLevel("warn".to_owned()),
            Setting::RunsRetention(Duration::from_secs(30 * 86_400)),
            Setting::RunsRetention(Duration::from_secs(36 * 3600)),
            Setting::CoolingPeriod(Duration::from_millis(1500)),
        ] {
            assert_eq!(
                Setting::from_stored(&setting.key(), &setting.value()),
                Some(setting.clone())
            );
            let wire = serde_json::to_string(&setting).unwrap();
            assert_eq!(serde_json::from_str::<Setting>(&wire).unwrap(), setting);
        }
        assert_eq!(
            Setting::RunsRetention(Duration::from_secs(30 * 86_400)).value(),
            serde_json::json!("30d")
        );
        assert_eq!(
            Setting::from_stored("retired.key", &serde_json::json!(1)),
            None
        );
    }
}

#[cfg(all(test, feature = "test-util"))]
mod load_tests {
    use super::*;
    use crate::testing::TestDb;

    #[tokio::test]
    async fn load_reads_every_readable_row_and_skips_the_others_and_store_overwrites() {
        let db = TestDb::create().await.unwrap();
        let pool = crate::pg::pool(&db.config()).unwrap();
        let client = pool.get().await.unwrap();
        client
            .batch_execute(
                "INSERT INTO system_config (key, value) VALUES
                   ('maintenance_mode', 'true'),
                   ('target.max_concurrency', '7'),
                   ('log.level', '\"debug\"'),
                   ('worker.cpu_max', '900'),
                   ('retired.key', '1');",
            )
            .await
            .unwrap();
        let hot = load(&pool).await.unwrap();
        assert!(hot.maintenance());
        assert_eq!(hot.target_max_concurrency(), Some(7));
        assert_eq!(hot.log_level(), Some("debug"));
        // 900 % is out of range and the retired key unknown: both skipped, defaults apply.
        assert_eq!(hot.all().len(), 3, "{hot:?}");
        store(&pool, &Setting::TargetMaxConcurrency(2))
            .await
            .unwrap();
        assert_eq!(load(&pool).await.unwrap().target_max_concurrency(), Some(2));
        assert_eq!(HotSettings::default().target_max_concurrency(), None);
        assert!(!HotSettings::default().maintenance());
    }
}
