//! Targets (OLTs) as operators write them: one with `faro target add`, many in a JSON file
//! for `faro target import`.
//!
//! A file is `{"targets": [...]}` or a bare array. Each target has an `id`, an `address`
//! (`host`, `host:port`, `[v6]:port`; port 161 by default), optional `name`, `snmp`
//! credentials (v2c community `public` by default, or v3 user with authentication and
//! privacy), `max_concurrency` (the system default when absent) and `enabled`. A file is taken
//! whole or refused whole, and an error names the target's index and field.

use std::fmt;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use crate::domain::TargetId;
use crate::jobfile::{deserialize_list, Located};

/// Most targets one file may hold.
pub const MAX_TARGETS: usize = 100_000;

/// The SNMP port a target listens on unless its address says otherwise.
pub const SNMP_PORT: u16 = 161;

/// A target as stored and sent to the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    pub id: TargetId,
    #[serde(default)]
    pub name: String,
    /// `host:port` (`[v6]:port` for IPv6), the port always written out.
    pub address: String,
    #[serde(default)]
    pub snmp: Snmp,
    /// `None`: the system default (`target.max_concurrency`).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// SNMP credentials of a target. `Debug` never shows a community or password.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "version", deny_unknown_fields)]
pub enum Snmp {
    #[serde(rename = "2c")]
    V2c { community: String },
    #[serde(rename = "3")]
    V3 {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<SnmpAuth>,
        /// Needs `auth`: SNMPv3 has no privacy without authentication.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        privacy: Option<SnmpPrivacy>,
    },
}

impl Default for Snmp {
    fn default() -> Self {
        Snmp::V2c {
            community: "public".to_owned(),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpAuth {
    pub protocol: AuthProtocol,
    pub password: String,
}

#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpPrivacy {
    pub protocol: PrivProtocol,
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthProtocol {
    Md5,
    Sha,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivProtocol {
    Des,
    Aes,
    Aes192,
    Aes256,
}

/// What is shown of secrets.
const HIDDEN: &str = "***";

impl std::fmt::Debug for Snmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Snmp::V2c { .. } => f.debug_struct("V2c").field("community", &HIDDEN).finish(),
            Snmp::V3 {
                user,
                auth,
                privacy,
            } => f
                .debug_struct("V3")
                .field("user", user)
                .field("auth", auth)
                .field("privacy", privacy)
                .finish(),
        }
    }
}

impl std::fmt::Debug for SnmpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnmpAuth")
            .field("protocol", &self.protocol)
            .field("password", &HIDDEN)
            .finish()
    }
}

impl std::fmt::Debug for SnmpPrivacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnmpPrivacy")
            .field("protocol", &self.protocol)
            .field("password", &HIDDEN)
            .finish()
    }
}

impl Snmp {
    /// The version as operators write it.
    pub fn version(&self) -> &'static str {
        match self {
            Snmp::V2c { .. } => "2c",
            Snmp::V3 { .. } => "3",
        }
    }

    /// The same credentials with every community and password hidden, for listings and logs.
    pub fn redacted(&self) -> Snmp {
        match self {
            Snmp::V2c { .. } => Snmp::V2c {
                community: HIDDEN.to_owned(),
            },
            Snmp::V3 {
                user,
                auth,
                privacy,
            } => Snmp::V3 {
                user: user.clone(),
                auth: auth.as_ref().map(|a| SnmpAuth {
                    protocol: a.protocol,
                    password: HIDDEN.to_owned(),
                }),
                privacy: privacy.as_ref().map(|p| SnmpPrivacy {
                    protocol: p.protocol,
                    password: HIDDEN.to_owned(),
                }),
            },
        }
    }

    /// Checks what the types cannot say; the error names the field.
    fn check(&self) -> Result<(), (&'static str, String)> {
        match self {
            Snmp::V2c { community } if community.is_empty() => Err((
                "snmp.community",
                "empty community; expected the SNMP v2c community string".to_owned(),
            )),
            Snmp::V2c { .. } => Ok(()),
            Snmp::V3 {
                user,
                auth,
                privacy,
            } => {
                if user.is_empty() {
                    return Err((
                        "snmp.user",
                        "empty user; expected the SNMPv3 user name".into(),
                    ));
                }
                if privacy.is_some() && auth.is_none() {
                    return Err((
                        "snmp.privacy",
                        "privacy needs auth: SNMPv3 has no encryption without authentication"
                            .into(),
                    ));
                }
                // RFC 3414 keys are derived from passwords of at least 8 characters.
                if auth
                    .as_ref()
                    .is_some_and(|a| a.password.chars().count() < 8)
                {
                    return Err((
                        "snmp.auth.password",
                        "too short; expected at least 8 characters".into(),
                    ));
                }
                if privacy
                    .as_ref()
                    .is_some_and(|p| p.password.chars().count() < 8)
                {
                    return Err((
                        "snmp.privacy.password",
                        "too short; expected at least 8 characters".into(),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Why a target file (or one target) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFileError {
    /// Index of the target in the file (0-based), when the error is inside one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub problem: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl TargetFileError {
    fn whole(problem: impl Into<String>) -> Self {
        Self {
            target: None,
            field: None,
            problem: problem.into(),
            line: None,
            column: None,
        }
    }

    fn in_target(index: usize, field: &str, problem: impl Into<String>) -> Self {
        Self {
            target: Some(index),
            field: Some(field.to_owned()),
            ..Self::whole(problem)
        }
    }
}

impl From<Located> for TargetFileError {
    fn from(at: Located) -> Self {
        Self {
            target: at.index,
            field: at.field,
            problem: at.problem,
            line: at.line,
            column: at.column,
        }
    }
}

impl fmt::Display for TargetFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = Located {
            index: self.target,
            field: self.field.clone(),
            problem: self.problem.clone(),
            line: self.line,
            column: self.column,
        };
        at.write("target", f)
    }
}

impl std::error::Error for TargetFileError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetInput {
    id: TargetId,
    #[serde(default)]
    name: String,
    address: String,
    #[serde(default)]
    snmp: Snmp,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInput {
    targets: Vec<TargetInput>,
}

/// Parses and validates a whole file of targets.
pub fn parse(bytes: &[u8]) -> Result<Vec<TargetSpec>, TargetFileError> {
    let bare = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let inputs = if bare {
        deserialize_list::<Vec<TargetInput>>(bytes, "targets", true)?
    } else {
        deserialize_list::<FileInput>(bytes, "targets", false)?.targets
    };
    if inputs.is_empty() {
        return Err(TargetFileError {
            field: Some("targets".to_owned()),
            ..TargetFileError::whole("no targets; expected at least one")
        });
    }
    if inputs.len() > MAX_TARGETS {
        return Err(TargetFileError::whole(format!(
            "{} targets; at most {MAX_TARGETS} are accepted in one file",
            inputs.len()
        )));
    }
    validate_all(inputs)
}

/// Checks targets that arrive already parsed (the `targets` API request) as a file's are:
/// the same errors, before anything reaches the database.
pub fn check(targets: Vec<TargetSpec>) -> Result<Vec<TargetSpec>, TargetFileError> {
    if targets.len() > MAX_TARGETS {
        return Err(TargetFileError::whole(format!(
            "{} targets; at most {MAX_TARGETS} are accepted at once",
            targets.len()
        )));
    }
    validate_all(
        targets
            .into_iter()
            .map(|t| TargetInput {
                id: t.id,
                name: t.name,
                address: t.address,
                snmp: t.snmp,
                max_concurrency: t.max_concurrency,
                enabled: t.enabled,
            })
            .collect(),
    )
}

/// Validates each target and that no id is used twice.
fn validate_all(inputs: Vec<TargetInput>) -> Result<Vec<TargetSpec>, TargetFileError> {
    let mut seen = std::collections::HashMap::new();
    let mut targets = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        if let Some(first) = seen.insert(input.id.clone(), index) {
            return Err(TargetFileError::in_target(
                index,
                "id",
                format!(
                    "id {:?} is already used by target {first}; expected ids unique in one file",
                    input.id.as_str()
                ),
            ));
        }
        targets.push(validate(index, input)?);
    }
    Ok(targets)
}

fn validate(index: usize, input: TargetInput) -> Result<TargetSpec, TargetFileError> {
    let address = normalize_address(&input.address)
        .map_err(|problem| TargetFileError::in_target(index, "address", problem))?;
    if input.max_concurrency == Some(0) {
        return Err(TargetFileError::in_target(
            index,
            "max_concurrency",
            "0; expected at least 1 (leave it out for the system default)",
        ));
    }
    input
        .snmp
        .check()
        .map_err(|(field, problem)| TargetFileError::in_target(index, field, problem))?;
    Ok(TargetSpec {
        id: input.id,
        name: input.name,
        address,
        snmp: input.snmp,
        max_concurrency: input.max_concurrency,
        enabled: input.enabled,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address, as `host:port`.
pub fn normalize_address(address: &str) -> Result<String, String> {
    let expected = "expected host, host:port or [IPv6]:port";
    let address = address.trim();
    if address.is_empty() {
        return Err(format!("empty address; {expected}"));
    }
    if let Ok(v6) = address.parse::<Ipv6Addr>() {
        return Ok(format!("[{v6}]:{SNMP_PORT}"));
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{address:?} has no closing ']'; {expected}"))?;
        let v6: Ipv6Addr = v6
            .parse()
            .map_err(|_| format!("{v6:?} is not an IPv6 address; {expected}"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| {
                format!("{address:?}: unexpected {after:?} after ']'; {expected}")
            })?),
        };
        (format!("[{v6}]"), port)
    } else {
        match address.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (address.to_owned(), None),
        }
    };
    let valid_host = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    if !valid_host {
        return Err(format!(
            "{host:?} is not a host name or IP address; {expected}"
        ));
    }
    let port = match port {
        None => SNMP_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port {port:?} is not 1 to 65535; {expected}"))?,
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> TargetFileError {
        parse(text.as_bytes()).expect_err("was accepted")
    }

    #[test]
    fn both_shapes_with_defaults() {
        let a = parse(br#"{"targets": [{"id": "olt-1", "address": "10.0.0.1"}]}"#).unwrap();
        let b = parse(br#"[{"id": "olt-1", "address": "10.0.0.1:161"}]"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].address, "10.0.0.1:161");
        assert_eq!(a[0].snmp, Snmp::default());
        assert!(a[0].enabled);
        assert_eq!(a[0].max_concurrency, None);
    }

    #[test]
    fn v3_credentials_are_read_and_hidden_in_listings() {
        let t = parse(
            br#"[{"id": "olt-2", "name": "Huawei MA5800 POP-1", "address": "[::1]:1161",
                  "max_concurrency": 2, "enabled": false,
                  "snmp": {"version": "3", "user": "faro",
                           "auth": {"protocol": "sha256", "password": "authpass1"},
                           "privacy": {"protocol": "aes", "password": "privpass1"}}}]"#,
        )
        .unwrap();
        assert_eq!(t[0].address, "[::1]:1161");
        assert!(!t[0].enabled);
        let shown = serde_json::to_string(&t[0].snmp.redacted()).unwrap();
        assert!(
            !shown.contains("authpass1") && !shown.contains("privpass1"),
            "{shown}"
        );
        assert!(
            shown.contains("sha256") && shown.contains("faro"),
            "{shown}"
        );
        // Nor in Debug, wherever a target or its credentials are logged.
        let debug = format!("{:?} {:?}", t[0], Snmp::default());
        for secret in ["authpass1", "privpass1", "public"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(
            debug.contains("Sha256") && debug.contains("faro"),
            "{debug}"
        );
        // Stored and read back unchanged.
        let back: TargetSpec =
            serde_json::from_value(serde_json::to_value(&t[0]).unwrap()).unwrap();
        assert_eq!(back, t[0]);
    }

    #[test]
    fn errors_name_the_target_and_field() {
        let e = err(r#"[{"id": "a", "address": "h"}, {"id": "b", "address": "h:99999"}]"#);
        assert_eq!((e.target, e.field.as_deref()), (Some(1), Some("address")));
        assert!(
            e.to_string().starts_with("target 1, field `address`: port"),
            "{e}"
        );

        let e = err(r#"[{"id": "a b", "address": "h"}]"#);
        assert_eq!((e.target, e.field.as_deref()), (Some(0), Some("id")));

        let e = err(r#"{"targets": [{"id": "a", "address": "h", "snmp": {"version": "1"}}]}"#);
        assert_eq!(
            (e.target, e.field.as_deref()),
            (Some(0), Some("snmp.version"))
        );
        assert!(e.problem.contains("2c"), "{e}");

        let e = err(
            r#"[{"id": "a", "address": "h", "snmp": {"version": "3", "user": "u",
                 "privacy": {"protocol": "aes", "password": "longenough"}}}]"#,
        );
        assert_eq!(e.field.as_deref(), Some("snmp.privacy"));

        let e = err(
            r#"[{"id": "a", "address": "h", "snmp": {"version": "3", "user": "u",
                 "auth": {"protocol": "sha", "password": "short"}}}]"#,
        );
        assert_eq!(e.field.as_deref(), Some("snmp.auth.password"));

        let e = err(r#"[{"id": "a", "address": "h", "max_concurrency": 0}]"#);
        assert_eq!(e.field.as_deref(), Some("max_concurrency"));

        let e = err(r#"[{"id": "a", "address": "h"}, {"id": "a", "address": "g"}]"#);
        assert_eq!((e.target, e.field.as_deref()), (Some(1), Some("id")));

        let e = err(r#"[{"id": "a", "address": "h", "colour": "red"}]"#);
        assert!(e.problem.contains("colour"), "{e}");

        let e = err(r#"{"targets": []}"#);
        assert_eq!(e.field.as_deref(), Some("targets"));

        let e = err(r#"[{"id": "a", "address": "h""#);
        assert!(e.line.is_some(), "{e:?}");
    }

    #[test]
    fn addresses_are_normalized_or_refused() {
        assert_eq!(normalize_address("olt-1.pop").unwrap(), "olt-1.pop:161");
        assert_eq!(
            normalize_address(" 192.0.2.7:1161 ").unwrap(),
            "192.0.2.7:1161"
        );
        assert_eq!(normalize_address("::1").unwrap(), "[::1]:161");
        assert_eq!(
            normalize_address("[2001:db8::1]").unwrap(),
            "[2001:db8::1]:161"
        );
        for bad in [
            "", "h:0", "h:x", "h p", "[::1", "[zz]:1", "[::1]x", "a:b:c:",
        ] {
            assert!(normalize_address(bad).is_err(), "{bad:?} accepted");
        }
    }
}
