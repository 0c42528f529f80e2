//! `snmp.get` and `snmp.walk`: SNMP v2c/v3 against the run's device, through async-snmp.
//!
//! Every client shares one UDP socket (requests are matched to answers by request id) and one
//! SNMPv3 engine cache; a client is kept per device and request settings, so v3 keys are
//! derived once, not per run. Values leave in chunks while a walk goes on (`Chunks`): the
//! worker holds at most one chunk of a table, never the whole table.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use async_snmp::{
    Auth, Client, EngineCache, ErrorKind, Oid, Retry, UdpHandle, UdpTransport, Value,
};
use chrono::Utc;
use faro_shared::domain::{Outcome, TargetId};
use faro_shared::messages::RunMessage;
use faro_shared::snmp::{
    hex, Device, Oids, SnmpGetParams, SnmpRetries, SnmpSummary, SnmpTimeout, SnmpValue,
    SnmpWalkParams, ValuesChunk, Varbind,
};
use faro_shared::targetfile::{self, Snmp};
use faro_shared::Namespace;
use tokio::sync::OnceCell;

use crate::hold::Hold;
use crate::metrics as m;
use crate::reach::{Change, Gate, Reachability};

/// Values per chunk at most.
const CHUNK_VALUES: usize = 2_000;
/// About this many bytes per chunk at most (far under NATS's 1 MB default payload).
const CHUNK_BYTES: usize = 256 * 1024;
/// Clients kept at most; past it the cache starts again (a client is cheap to rebuild).
const MAX_CLIENTS: usize = 10_000;

/// Why an SNMP run did not succeed: its outcome and a message naming the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollError {
    pub outcome: Outcome,
    pub message: String,
}

impl PollError {
    fn failed(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failed,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    device: Device,
    timeout: SnmpTimeout,
    retries: SnmpRetries,
}

/// The worker's SNMP side: one socket, clients per device, which agents answer.
pub struct Poller {
    transport: OnceCell<UdpTransport>,
    clients: Mutex<HashMap<ClientKey, Client<UdpHandle>>>,
    engines: Arc<EngineCache>,
    reach: Mutex<Reachability>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller").finish_non_exhaustive()
    }
}

/// One run's pass through the unreachable gate; a probe that ends without an answer or a
/// timeout (the run was cancelled) lets the next run probe.
struct Pass<'a> {
    poller: &'a Poller,
    address: &'a str,
    probe: bool,
    settled: bool,
}

impl Pass<'_> {
    fn settle(mut self, polled: &Result<(), PollError>) {
        self.settled = true;
        let mut reach = self.poller.reach();
        let change = match polled {
            Err(error) if error.outcome == Outcome::TimedOut => {
                reach.timed_out(self.address, Instant::now())
            }
            _ => reach.answered(self.address),
        };
        metrics::gauge!(m::SNMP_UNREACHABLE).set(reach.unreachable() as f64);
        match change {
            Some(Change::BecameUnreachable) => tracing::warn!(
                address = self.address,
                "SNMP agent unreachable: its runs fail at once until it answers a probe"
            ),
            Some(Change::BecameReachable) => {
                tracing::info!(address = self.address, "SNMP agent answers again")
            }
            None => {}
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.poller.reach().probe_abandoned(self.address);
        }
    }
}

impl Poller {
    /// `unreachable_after` timeouts in a row make an agent unreachable; while it is, one run
    /// every `probe_every` polls it.
    pub fn new(unreachable_after: u32, probe_every: Duration) -> Self {
        Self {
            transport: OnceCell::new(),
            clients: Mutex::default(),
            engines: Arc::default(),
            reach: Mutex::new(Reachability::new(unreachable_after, probe_every)),
        }
    }

    fn reach(&self) -> std::sync::MutexGuard<'_, Reachability> {
        self.reach
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets a run of `device` poll, or fails it at once when its agent is unreachable.
    fn pass<'a>(&'a self, device: &'a Device) -> Result<Pass<'a>, PollError> {
        let gate = self.reach().admit(&device.address, Instant::now());
        match gate {
            Gate::Go | Gate::Probe => Ok(Pass {
                poller: self,
                address: &device.address,
                probe: gate == Gate::Probe,
                settled: false,
            }),
            Gate::Unreachable {
                timeouts,
                for_how_long,
                next_probe,
            } => Err(PollError::failed(format!(
                "target_unreachable: {} did not answer its last {timeouts} requests (for {} s); its runs fail at once until it answers a probe, the next in {} s",
                device.address,
                for_how_long.as_secs(),
                next_probe.as_secs()
            ))),
        }
    }

    /// The shared socket: dual-stack where the host has IPv6, IPv4 otherwise.
    async fn transport(&self) -> Result<&UdpTransport, PollError> {
        self.transport
            .get_or_try_init(|| async {
                match UdpTransport::bind("[::]:0").await {
                    Ok(transport) => Ok(transport),
                    Err(_) => UdpTransport::bind("0.0.0.0:0").await,
                }
            })
            .await
            .map_err(|error| {
                PollError::failed(format!("cannot open a UDP socket for SNMP: {error}"))
            })
    }

    async fn client(
        &self,
        device: &Device,
        timeout: SnmpTimeout,
        retries: SnmpRetries,
    ) -> Result<Client<UdpHandle>, PollError> {
        let key = ClientKey {
            device: device.clone(),
            timeout,
            retries,
        };
        if let Some(client) = self.lock().get(&key) {
            return Ok(client.clone());
        }
        let transport = self.transport().await?;
        let client = Client::builder(device.address.as_str(), auth(&device.snmp)?)
            .request_timeout(Duration::from_millis(timeout.as_millis()))
            .retry(
                Retry::fixed(retries.get(), Duration::ZERO)
                    .map_err(|e| PollError::failed(format!("retries {}: {e}", retries.get())))?,
            )
            .engine_cache(self.engines.clone())
            .build_with(transport)
            .await
            .map_err(|error| {
                PollError::failed(format!("cannot reach {}: {error}", device.address))
            })?;
        let mut clients = self.lock();
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, Client<UdpHandle>>> {
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// GETs the job's OIDs in as few requests as the agent allows.
    pub async fn get(
        &self,
        device: &Device,
        params: &SnmpGetParams,
        hold: &Hold,
        chunks: &mut Chunks,
    ) -> Result<(), PollError> {
        self.guarded(device, self.get_values(device, params, hold, chunks))
            .await
    }

    /// Walks every OID of the job with GETBULK, sending values on as they come.
    pub async fn walk(
        &self,
        device: &Device,
        params: &SnmpWalkParams,
        hold: &Hold,
        chunks: &mut Chunks,
    ) -> Result<(), PollError> {
        self.guarded(device, self.walk_values(device, params, hold, chunks))
            .await
    }

    /// Polls through the unreachable gate, explains a v3 timeout, and tells the gate how the
    /// agent answered. (`work` is lazy: nothing is sent when the gate says no.)
    async fn guarded(
        &self,
        device: &Device,
        work: impl std::future::Future<Output = Result<(), PollError>>,
    ) -> Result<(), PollError> {
        let pass = self.pass(device)?;
        let polled = self.explained(device, work.await).await;
        pass.settle(&polled);
        polled
    }

    /// An SNMPv3 agent drops a request it cannot authenticate, or answers with a Report that
    /// is itself unauthenticated (and so ignored, as RFC 3414 allows): wrong credentials look
    /// like a timeout. After an authenticated v3 request times out, one unauthenticated probe
    /// tells the two apart: an agent that answers it is alive and refuses the credentials.
    async fn explained(
        &self,
        device: &Device,
        outcome: Result<(), PollError>,
    ) -> Result<(), PollError> {
        let Err(error) = outcome else { return outcome };
        let Snmp::V3 {
            user,
            auth: Some(_),
            ..
        } = &device.snmp
        else {
            return Err(error);
        };
        if error.outcome != Outcome::TimedOut {
            return Err(error);
        }
        let probe = async {
            let transport = self.transport().await.ok()?;
            let client = Client::builder(
                device.address.as_str(),
                Auth::from(async_snmp::UsmConfig::new(user.clone().into_bytes())),
            )
            .request_timeout(Duration::from_secs(1))
            .retry(Retry::none())
            .build_with(transport)
            .await
            .ok()?;
            let sys_uptime = Oid::parse("1.3.6.1.2.1.1.3.0").ok()?;
            match client.get(&sys_uptime).await {
                Ok(_) => Some("it answers without authentication".to_owned()),
                Err(e) if e.kind() == ErrorKind::Timeout => None,
                Err(e) => Some(format!("it answers an unauthenticated probe with: {e}")),
            }
        };
        match probe.await {
            Some(answer) => Err(PollError::failed(format!(
                "SNMP authentication with {} failed: the agent is up but ignored user {user}'s authenticated request (check the user, protocols and passwords; {answer})",
                device.address
            ))),
            None => Err(error),
        }
    }

    async fn get_values(
        &self,
        device: &Device,
        params: &SnmpGetParams,
        hold: &Hold,
        chunks: &mut Chunks,
    ) -> Result<(), PollError> {
        let client = self
            .client(device, params.timeout_ms, params.retries)
            .await?;
        let oids = oids(&params.oids)?;
        held(hold)?;
        metrics::counter!(m::SNMP_REQUESTS, "op" => "get").increment(1);
        let response = client
            .get_many(&oids)
            .await
            .map_err(|error| poll_error(device, &error))?;
        for varbind in response.varbinds {
            chunks.push(convert(varbind.oid, varbind.value)).await?;
        }
        Ok(())
    }

    async fn walk_values(
        &self,
        device: &Device,
        params: &SnmpWalkParams,
        hold: &Hold,
        chunks: &mut Chunks,
    ) -> Result<(), PollError> {
        let client = self
            .client(device, params.timeout_ms, params.retries)
            .await?;
        for root in oids(&params.oids)? {
            metrics::counter!(m::SNMP_REQUESTS, "op" => "walk").increment(1);
            let mut walk = client
                .bulk_walk(root, params.max_repetitions.get())
                .map_err(|error| poll_error(device, &error))?;
            // Each step may send the next GETBULK: never once the hold on the run ended.
            while let Some(varbind) = {
                held(hold)?;
                walk.next().await
            } {
                let varbind = varbind.map_err(|error| poll_error(device, &error))?;
                chunks.push(convert(varbind.oid, varbind.value)).await?;
            }
        }
        Ok(())
    }
}

/// No device request once the worker's hold on its run ended (it was frozen, or cut off
/// from NATS): the run may be polling from another worker by now.
fn held(hold: &Hold) -> Result<(), PollError> {
    hold.check().map_err(|_| PollError {
        outcome: Outcome::Interrupted,
        message: "stopped: the worker's hold on the run ended".to_owned(),
    })
}

fn oids(oids: &Oids) -> Result<Vec<Oid>, PollError> {
    oids.iter()
        .map(|oid| {
            Oid::parse(oid.as_str())
                .map_err(|error| PollError::failed(format!("OID {oid}: {error}")))
        })
        .collect()
}

/// async-snmp's credentials from a target's.
fn auth(snmp: &Snmp) -> Result<Auth, PollError> {
    match snmp {
        Snmp::V2c { community } => Ok(Auth::v2c(community.as_str())),
        Snmp::V3 {
            user,
            auth,
            privacy,
        } => {
            let config = async_snmp::UsmConfig::new(user.clone().into_bytes());
            let config = match (auth, privacy) {
                (None, _) => Ok(config),
                (Some(a), None) => config.auth(auth_protocol(a.protocol), &a.password),
                (Some(a), Some(p)) => config.auth_priv(
                    auth_protocol(a.protocol),
                    &a.password,
                    priv_protocol(p.protocol),
                    &p.password,
                ),
            }
            .map_err(|error| PollError::failed(format!("SNMPv3 user {user}: {error}")))?;
            Ok(Auth::from(config))
        }
    }
}

fn auth_protocol(protocol: targetfile::AuthProtocol) -> async_snmp::AuthProtocol {
    use targetfile::AuthProtocol as A;
    match protocol {
        A::Md5 => async_snmp::AuthProtocol::Md5,
        A::Sha => async_snmp::AuthProtocol::Sha1,
        A::Sha224 => async_snmp::AuthProtocol::Sha224,
        A::Sha256 => async_snmp::AuthProtocol::Sha256,
        A::Sha384 => async_snmp::AuthProtocol::Sha384,
        A::Sha512 => async_snmp::AuthProtocol::Sha512,
    }
}

/// AES-192 and AES-256 as net-snmp and most agents key them (Blumenthal).
fn priv_protocol(protocol: targetfile::PrivProtocol) -> async_snmp::PrivProtocol {
    use targetfile::PrivProtocol as P;
    match protocol {
        P::Des => async_snmp::PrivProtocol::Des,
        P::Aes => async_snmp::PrivProtocol::Aes128,
        P::Aes192 => async_snmp::PrivProtocol::Aes192Blumenthal,
        P::Aes256 => async_snmp::PrivProtocol::Aes256Blumenthal,
    }
}

/// The outcome and message of an SNMP failure: no answer is `timed_out` (worth a retry),
/// anything the agent said (wrong credentials, an error status) is `failed`.
fn poll_error(device: &Device, error: &async_snmp::Error) -> PollError {
    match error.kind() {
        ErrorKind::Timeout => {
            metrics::counter!(m::SNMP_TIMEOUTS).increment(1);
            PollError {
                outcome: Outcome::TimedOut,
                message: format!("no SNMP answer from {}: {error}", device.address),
            }
        }
        ErrorKind::Auth | ErrorKind::Report => PollError::failed(format!(
            "SNMP authentication with {} failed (check the target's credentials): {error}",
            device.address
        )),
        _ => PollError::failed(format!("SNMP with {}: {error}", device.address)),
    }
}

/// A varbind as faro sends it.
pub fn convert(oid: Oid, value: Value) -> Varbind {
    let value = match value {
        Value::Integer(n) => SnmpValue::Integer(i64::from(n)),
        Value::OctetString(bytes) => SnmpValue::octets(&bytes),
        Value::Null => SnmpValue::Null,
        Value::ObjectIdentifier(oid) => SnmpValue::Oid(oid.to_string()),
        Value::IpAddress([a, b, c, d]) => SnmpValue::IpAddress(format!("{a}.{b}.{c}.{d}")),
        Value::Counter32(n) => SnmpValue::Counter32(n),
        Value::Gauge32(n) | Value::UInteger32(n) => SnmpValue::Gauge32(n),
        Value::TimeTicks(n) => SnmpValue::Timeticks(n),
        Value::Opaque(bytes) => SnmpValue::Opaque(hex(&bytes)),
        Value::Nsap(bytes) => SnmpValue::Hex(hex(&bytes)),
        Value::Counter64(n) => SnmpValue::Counter64(n),
        Value::NoSuchObject => SnmpValue::NoSuchObject,
        Value::NoSuchInstance => SnmpValue::NoSuchInstance,
        Value::EndOfMibView => SnmpValue::EndOfMibView,
        Value::Unknown { data, .. } => SnmpValue::Opaque(hex(&data)),
        other => SnmpValue::Opaque(format!("{other:?}")),
    };
    Varbind(oid.to_string(), value)
}

/// The values of one attempt, sent in chunks on `faro.values.<queue>.<target>`, each stored
/// by JetStream before the next is sent (and before the run's result).
#[derive(Debug)]
pub struct Chunks {
    js: jetstream::Context,
    subject: String,
    template: ValuesChunk,
    bytes: usize,
    values: u64,
}

impl Chunks {
    pub fn new(js: jetstream::Context, ns: &Namespace, run: &RunMessage, target: TargetId) -> Self {
        let template = ValuesChunk {
            run_id: run.run_id,
            attempt: run.attempt,
            job_id: run.job_id.clone(),
            queue: run.queue.clone(),
            target,
            seq: 0,
            polled_at: Utc::now(),
            values: Vec::new(),
        };
        Self {
            js,
            subject: template.subject(ns),
            template,
            bytes: 0,
            values: 0,
        }
    }

    async fn push(&mut self, varbind: Varbind) -> Result<(), PollError> {
        self.bytes += varbind.0.len() + varbind.1.wire_len();
        self.template.values.push(varbind);
        self.values += 1;
        if self.template.values.len() >= CHUNK_VALUES || self.bytes >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PollError> {
        if self.template.values.is_empty() {
            return Ok(());
        }
        let sent = self.template.values.len();
        self.send().await.map_err(|error| {
            PollError::failed(format!(
                "cannot send polled values: {}",
                faro_shared::pg::error_text(&error)
            ))
        })?;
        metrics::counter!(m::SNMP_VALUES).increment(sent as u64);
        self.template.values.clear();
        self.template.seq += 1;
        self.template.polled_at = Utc::now();
        self.bytes = 0;
        Ok(())
    }

    async fn send(&self) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(&self.template)?;
        self.js
            .publish(self.subject.clone(), payload.into())
            .await?
            .into_future()
            .await
            .context("JetStream did not store the values")?;
        Ok(())
    }

    /// Sends what is left and says what went.
    pub async fn finish(mut self) -> Result<SnmpSummary, PollError> {
        self.flush().await?;
        Ok(SnmpSummary {
            values: self.values,
            chunks: self.template.seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_to_their_wire_types() {
        let oid = Oid::parse("1.3.6.1.2.1.1.5.0").unwrap();
        let cases = [
            (Value::Integer(-2150), SnmpValue::Integer(-2150)),
            (
                Value::OctetString(bytes::Bytes::from_static(b"HG8245H")),
                SnmpValue::String("HG8245H".into()),
            ),
            (
                Value::OctetString(bytes::Bytes::from_static(&[0x48, 0x57, 0x54, 0x43, 0x9f])),
                SnmpValue::Hex("485754439f".into()),
            ),
            (
                Value::IpAddress([10, 0, 0, 1]),
                SnmpValue::IpAddress("10.0.0.1".into()),
            ),
            (Value::Counter64(1 << 40), SnmpValue::Counter64(1 << 40)),
            (Value::NoSuchInstance, SnmpValue::NoSuchInstance),
        ];
        for (value, expected) in cases {
            assert_eq!(convert(oid.clone(), value).1, expected);
        }
        assert_eq!(convert(oid, Value::Null).0, "1.3.6.1.2.1.1.5.0");
    }

    #[test]
    fn v3_credentials_map_and_bad_ones_are_named() {
        let snmp: Snmp = serde_json::from_str(
            r#"{"version": "3", "user": "faro", "auth": {"protocol": "sha", "password": "authpass1"},
                "privacy": {"protocol": "aes", "password": "privpass1"}}"#,
        )
        .unwrap();
        assert!(auth(&snmp).is_ok());
        let short: Snmp = serde_json::from_str(
            r#"{"version": "3", "user": "faro", "auth": {"protocol": "sha", "password": "x"}}"#,
        )
        .unwrap();
        let e = auth(&short).unwrap_err();
        assert!(e.message.contains("SNMPv3 user faro"), "{e:?}");
    }
}
