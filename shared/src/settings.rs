//! Hot configuration: the `system_config` keys, their accepted values, and parsing.
//!
//! A setting is changed with `faro config set KEY VALUE` and takes effect without a restart.
//! Every key is listed here with the form it accepts, so a typo or a bad value is refused
//! with the list of what would have been accepted.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One hot setting and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "key", content = "value")]
pub enum Setting {
    /// Holds new dispatches (runs wait) while runs in flight finish.
    #[serde(rename = "maintenance_mode")]
    MaintenanceMode(bool),
    /// Runs of one target in flight at most, for targets without their own limit.
    #[serde(rename = "target.max_concurrency")]
    TargetMaxConcurrency(u32),
}

/// Every key with the form of its value, for help and error messages.
pub const KEYS: [(&str, &str, &str); 2] = [
    ("maintenance_mode", "true or false", "false"),
    (
        "target.max_concurrency",
        "a whole number from 1 to 1000",
        "3 (FARO_TARGET_MAX_CONCURRENCY)",
    ),
];

/// Why a setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown key {0:?}; accepted keys: {keys}", keys = accepted_keys())]
    UnknownKey(String),
    #[error("{key}={value:?} is not accepted; expected {expected}")]
    BadValue {
        key: &'static str,
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

impl Setting {
    /// Parses `KEY VALUE` as typed on the command line.
    pub fn parse(key: &str, value: &str) -> Result<Self, SettingError> {
        let bad = |key: &'static str, expected: &'static str| SettingError::BadValue {
            key,
            value: value.to_owned(),
            expected,
        };
        match key {
            "maintenance_mode" => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "on" | "1" | "yes" => Ok(Setting::MaintenanceMode(true)),
                "false" | "off" | "0" | "no" => Ok(Setting::MaintenanceMode(false)),
                _ => Err(bad("maintenance_mode", KEYS[0].1)),
            },
            "target.max_concurrency" => match value.trim().parse::<u32>() {
                Ok(n @ 1..=1000) => Ok(Setting::TargetMaxConcurrency(n)),
                _ => Err(bad("target.max_concurrency", KEYS[1].1)),
            },
            other => Err(SettingError::UnknownKey(other.to_owned())),
        }
    }

    pub fn key(&self) -> &'static str {
        match self {
            Setting::MaintenanceMode(_) => "maintenance_mode",
            Setting::TargetMaxConcurrency(_) => "target.max_concurrency",
        }
    }

    /// The value as stored in `system_config` (JSON).
    pub fn value(&self) -> serde_json::Value {
        match self {
            Setting::MaintenanceMode(on) => serde_json::Value::Bool(*on),
            Setting::TargetMaxConcurrency(n) => serde_json::Value::from(*n),
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

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key(), self.value())
    }
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
            Setting::parse("maintenance_mode", "on").unwrap(),
            Setting::MaintenanceMode(true)
        );
        assert_eq!(
            Setting::parse("target.max_concurrency", "5").unwrap(),
            Setting::TargetMaxConcurrency(5)
        );
        for (key, value) in KEYS.map(|(k, _, _)| k).iter().zip(["maybe", "0"]) {
            let err = Setting::parse(key, value).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("expected"), "{err}");
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
        ] {
            assert_eq!(
                Setting::from_stored(setting.key(), &setting.value()),
                Some(setting)
            );
        }
        assert_eq!(
            Setting::from_stored("retired.key", &serde_json::json!(1)),
            None
        );
    }
}
