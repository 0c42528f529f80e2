//! SNMP on the wire: the params of `snmp.get` and `snmp.walk`, the device a run polls, and the
//! typed values a poll returns.
//!
//! Values travel in chunks (`ValuesChunk` on `faro.values.<queue>.<target>`), published while a
//! walk goes on, so a table of 20,000 values is never held whole by the worker nor sent as one
//! message. Each chunk is stored in the results stream before the run's result, and the
//! dispatcher records it (the latest value per target and OID) only while that attempt is the
//! run's current one.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{JobId, QueueName, TargetId};
use crate::names::Namespace;
use crate::targetfile::Snmp;

/// Most OIDs one `snmp.get` or `snmp.walk` may name.
pub const MAX_OIDS: usize = 128;
/// The longest wait for one SNMP answer a job may ask for.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Most retries of one SNMP request a job may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Most repetitions one GETBULK may ask for.
pub const MAX_REPETITIONS: u32 = 1_000;

/// A numeric object identifier, written `1.3.6.1.2.1.1.5.0` (a leading dot is accepted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnmpOid(String);

impl SnmpOid {
    pub fn parse(input: &str) -> Result<Self, String> {
        let text = input.strip_prefix('.').unwrap_or(input);
        let arcs: Vec<&str> = text.split('.').collect();
        let numeric = |arc: &&str| {
            !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()) && arc.parse::<u32>().is_ok()
        };
        if !arcs.iter().all(numeric) {
            return Err(format!(
                "OID {input:?} is not numeric; expected numbers (0 to 4294967295) separated by dots, such as 1.3.6.1.2.1.1.5.0 (names like sysName are not resolved)"
            ));
        }
        if arcs.len() < 2 {
            return Err(format!(
                "OID {input:?} is too short; expected at least two numbers separated by dots, such as 1.3.6.1.2.1.1.5.0"
            ));
        }
        if arcs.len() > 128 {
            return Err(format!("OID {input:?} has more than 128 numbers"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SnmpOid {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SnmpOid> for String {
    fn from(oid: SnmpOid) -> Self {
        oid.0
    }
}

impl fmt::Display for SnmpOid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The OIDs of a job: one or more, at most `MAX_OIDS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<SnmpOid>")]
pub struct Oids(Vec<SnmpOid>);

impl Oids {
    pub fn iter(&self) -> impl Iterator<Item = &SnmpOid> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<SnmpOid>> for Oids {
    type Error = String;
    fn try_from(oids: Vec<SnmpOid>) -> Result<Self, Self::Error> {
        if oids.is_empty() {
            return Err(
                "no OIDs; expected at least one, such as [\"1.3.6.1.2.1.1.5.0\"]".to_owned(),
            );
        }
        if oids.len() > MAX_OIDS {
            return Err(format!(
                "{} OIDs; expected at most {MAX_OIDS} per job (split the job)",
                oids.len()
            ));
        }
        Ok(Self(oids))
    }
}

/// How long one SNMP request may wait for its answer, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct SnmpTimeout(u64);

impl SnmpTimeout {
    pub fn as_millis(self) -> u64 {
        self.0
    }
}

impl Default for SnmpTimeout {
    fn default() -> Self {
        Self(2_000)
    }
}

impl TryFrom<u64> for SnmpTimeout {
    type Error = String;
    fn try_from(ms: u64) -> Result<Self, Self::Error> {
        if ms == 0 || ms > MAX_TIMEOUT_MS {
            return Err(format!(
                "timeout_ms {ms} is out of range; expected 1 to {MAX_TIMEOUT_MS} milliseconds per request"
            ));
        }
        Ok(Self(ms))
    }
}

impl From<SnmpTimeout> for u64 {
    fn from(timeout: SnmpTimeout) -> Self {
        timeout.0
    }
}

/// How many times an unanswered request is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct SnmpRetries(u32);

impl SnmpRetries {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for SnmpRetries {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<u32> for SnmpRetries {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        if n > MAX_RETRIES {
            return Err(format!(
                "retries {n} is out of range; expected 0 to {MAX_RETRIES}"
            ));
        }
        Ok(Self(n))
    }
}

impl From<SnmpRetries> for u32 {
    fn from(retries: SnmpRetries) -> Self {
        retries.0
    }
}

/// `max_repetitions` of a GETBULK: values asked per request and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MaxRepetitions(u32);

impl MaxRepetitions {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaxRepetitions {
    fn default() -> Self {
        Self(25)
    }
}

impl TryFrom<u32> for MaxRepetitions {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        if n == 0 || n > MAX_REPETITIONS {
            return Err(format!(
                "max_repetitions {n} is out of range; expected 1 to {MAX_REPETITIONS}"
            ));
        }
        Ok(Self(n))
    }
}

impl From<MaxRepetitions> for u32 {
    fn from(n: MaxRepetitions) -> Self {
        n.0
    }
}

/// `snmp.get`: the values of the given OIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpGetParams {
    pub oids: Oids,
    #[serde(default)]
    pub timeout_ms: SnmpTimeout,
    #[serde(default)]
    pub retries: SnmpRetries,
}

/// `snmp.walk`: every value under each OID, by GETBULK (SNMP v2c and v3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpWalkParams {
    pub oids: Oids,
    #[serde(default)]
    pub max_repetitions: MaxRepetitions,
    #[serde(default)]
    pub timeout_ms: SnmpTimeout,
    #[serde(default)]
    pub retries: SnmpRetries,
}

/// What a worker needs to reach a target: the dispatcher attaches it to each SNMP run from the
/// `targets` table, so a changed address or credential applies to the next run.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Device {
    /// `host:port`, `[v6]:port`.
    pub address: String,
    pub snmp: Snmp,
}

impl fmt::Debug for Device {
    /// Never shows a community or password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("address", &self.address)
            .field("snmp", &self.snmp.redacted())
            .finish()
    }
}

/// A typed SNMP value, `{"type": "integer", "value": -2150}` on the wire.
///
/// An OCTET STRING that is printable UTF-8 is `string`; any other is `hex` (an ONT serial's
/// four binary bytes, a MAC address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum SnmpValue {
    Integer(i64),
    String(String),
    Hex(String),
    Oid(String),
    IpAddress(String),
    Counter32(u32),
    Gauge32(u32),
    Timeticks(u32),
    Counter64(u64),
    Opaque(String),
    Null,
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

impl SnmpValue {
    /// The type as stored in `target_values.type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            SnmpValue::Integer(_) => "integer",
            SnmpValue::String(_) => "string",
            SnmpValue::Hex(_) => "hex",
            SnmpValue::Oid(_) => "oid",
            SnmpValue::IpAddress(_) => "ip_address",
            SnmpValue::Counter32(_) => "counter32",
            SnmpValue::Gauge32(_) => "gauge32",
            SnmpValue::Timeticks(_) => "timeticks",
            SnmpValue::Counter64(_) => "counter64",
            SnmpValue::Opaque(_) => "opaque",
            SnmpValue::Null => "null",
            SnmpValue::NoSuchObject => "no_such_object",
            SnmpValue::NoSuchInstance => "no_such_instance",
            SnmpValue::EndOfMibView => "end_of_mib_view",
        }
    }

    /// The value as text, as stored in `target_values.value` (empty for the exceptions).
    pub fn text(&self) -> String {
        match self {
            SnmpValue::Integer(n) => n.to_string(),
            SnmpValue::String(s)
            | SnmpValue::Hex(s)
            | SnmpValue::Oid(s)
            | SnmpValue::IpAddress(s)
            | SnmpValue::Opaque(s) => s.clone(),
            SnmpValue::Counter32(n) | SnmpValue::Gauge32(n) | SnmpValue::Timeticks(n) => {
                n.to_string()
            }
            SnmpValue::Counter64(n) => n.to_string(),
            SnmpValue::Null
            | SnmpValue::NoSuchObject
            | SnmpValue::NoSuchInstance
            | SnmpValue::EndOfMibView => String::new(),
        }
    }

    /// An OCTET STRING's bytes: text when they are UTF-8 made of printable ASCII, whitespace
    /// and Latin letters (descriptions such as "Peñalolén 12"), hex otherwise. SNMP does not
    /// say which an OCTET STRING is; like net-snmp, binary data that happens to look like text
    /// (4 random serial bytes that are all printable) is shown as text.
    pub fn octets(bytes: &[u8]) -> SnmpValue {
        let text_like = |c: char| {
            matches!(c, ' '..='~' | '\n' | '\r' | '\t') || ('\u{a0}'..='\u{24f}').contains(&c)
        };
        match std::str::from_utf8(bytes) {
            Ok(text) if text.chars().all(text_like) => SnmpValue::String(text.to_owned()),
            _ => SnmpValue::Hex(hex(bytes)),
        }
    }

    /// About how many bytes the value takes on the wire, to size chunks.
    pub fn wire_len(&self) -> usize {
        match self {
            SnmpValue::String(s)
            | SnmpValue::Hex(s)
            | SnmpValue::Oid(s)
            | SnmpValue::IpAddress(s)
            | SnmpValue::Opaque(s) => s.len() + 32,
            _ => 40,
        }
    }
}

/// Lowercase hex of `bytes`, two digits per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// One polled value: `["1.3.6.1.2.1.1.5.0", {"type": "string", "value": "olt-1"}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Varbind(pub String, pub SnmpValue);

/// A slice of the values one attempt polled, on `faro.values.<queue>.<target>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValuesChunk {
    pub run_id: Uuid,
    pub attempt: u32,
    pub job_id: JobId,
    pub queue: QueueName,
    pub target: TargetId,
    /// 0, 1, ... within the attempt.
    pub seq: u32,
    pub polled_at: DateTime<Utc>,
    pub values: Vec<Varbind>,
}

impl ValuesChunk {
    pub fn subject(&self, ns: &Namespace) -> String {
        ns.values_subject(&self.queue, &self.target)
    }
}

/// What an SNMP run did, in its result (the values themselves went in chunks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnmpSummary {
    /// Values polled, exceptions (noSuchObject, ...) included.
    pub values: u64,
    /// Chunks the values were sent in.
    pub chunks: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_parse_and_refuse_with_the_expected_form() {
        assert_eq!(SnmpOid::parse(".1.3.6.1").unwrap().as_str(), "1.3.6.1");
        for bad in [
            "",
            "1",
            "sysName.0",
            "1..3",
            "1.3.x",
            "1.3.99999999999",
            "1.3.",
        ] {
            let e = SnmpOid::parse(bad).unwrap_err();
            assert!(e.contains("expected"), "{bad:?}: {e}");
        }
        let e = serde_json::from_str::<SnmpGetParams>(r#"{"oids": []}"#).unwrap_err();
        assert!(e.to_string().contains("no OIDs"), "{e}");
        let e =
            serde_json::from_str::<SnmpWalkParams>(r#"{"oids": ["1.3"], "max_repetitions": 0}"#)
                .unwrap_err();
        assert!(e.to_string().contains("max_repetitions 0"), "{e}");
        let e = serde_json::from_str::<SnmpGetParams>(r#"{"oids": ["1.3"], "timeout_ms": 0}"#)
            .unwrap_err();
        assert!(e.to_string().contains("timeout_ms 0"), "{e}");
        let p: SnmpWalkParams = serde_json::from_str(r#"{"oids": ["1.3.6"]}"#).unwrap();
        assert_eq!(
            (
                p.max_repetitions.get(),
                p.timeout_ms.as_millis(),
                p.retries.get()
            ),
            (25, 2_000, 1)
        );
    }

    #[test]
    fn octets_are_text_when_printable_and_hex_otherwise() {
        assert_eq!(
            SnmpValue::octets(b"HG8245H"),
            SnmpValue::String("HG8245H".into())
        );
        assert_eq!(
            SnmpValue::octets(&[0x48, 0x57, 0x54, 0x43, 0x73, 0x29, 0x9f, 0xbf]),
            SnmpValue::Hex("4857544373299fbf".into())
        );
        assert_eq!(
            SnmpValue::octets(b"a\x01b"),
            SnmpValue::Hex("610162".into())
        );
        assert_eq!(
            SnmpValue::octets("Peñalolén 12".as_bytes()),
            SnmpValue::String("Peñalolén 12".into())
        );
        // Valid UTF-8, but not text an OLT stores: "HWTC" and 4 binary bytes.
        assert_eq!(
            SnmpValue::octets("HWTC4ʖ&".as_bytes()),
            SnmpValue::Hex("4857544334ca9626".into())
        );
    }

    #[test]
    fn varbinds_are_compact_on_the_wire() {
        let v = Varbind("1.3.6.1.2.1.1.5.0".into(), SnmpValue::Integer(-2150));
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(
            text,
            r#"["1.3.6.1.2.1.1.5.0",{"type":"integer","value":-2150}]"#
        );
        assert_eq!(serde_json::from_str::<Varbind>(&text).unwrap(), v);
        let null = serde_json::to_string(&Varbind("1.3".into(), SnmpValue::NoSuchObject)).unwrap();
        assert_eq!(
            serde_json::from_str::<Varbind>(&null).unwrap().1,
            SnmpValue::NoSuchObject
        );
    }

    #[test]
    fn a_device_never_shows_its_secrets() {
        let device = Device {
            address: "10.0.0.1:161".into(),
            snmp: Snmp::V2c {
                community: "s3cret".into(),
            },
        };
        assert!(!format!("{device:?}").contains("s3cret"));
    }
}
