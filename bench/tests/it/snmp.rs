//! SNMP runs end to end: the simulated OLTs of `sim/olts` served by real snmpsim agents on
//! loopback, walked and read by the worker, recorded by the dispatcher in `target_values`.

use std::collections::BTreeMap;
use std::time::Duration;

use faro_bench::system::{Options, System};
use faro_shared::messages::{TargetReply, TargetRequest};
use faro_shared::snmp::SnmpValue;
use faro_shared::targetfile;
use faro_shared::testing::{olt_snmprec, read_snmprec, Snmpd, Snmpsim};

const HUAWEI: &str = "1.3.6.1.4.1.2011.6.128.1.1.2";
const HUAWEI_COLUMNS: [&str; 7] = [
    "43.1.3", "43.1.9", "45.1.4", "46.1.15", "46.1.20", "51.1.4", "51.1.6",
];
const ZTE: &str = "1.3.6.1.4.1.3902.1012.3";
const ZTE_COLUMNS: [&str; 5] = [
    "28.1.1.2",
    "28.1.1.3",
    "28.1.1.5",
    "28.2.1.4",
    "50.12.1.1.10",
];
/// The ZTE C600's ZXAN tree and the FiberHome AN5516's GEPON-OLT-COMMON-MIB tree.
const ZXAN: &str = "1.3.6.1.4.1.3902.1082.500";
const FIBERHOME: &str = "1.3.6.1.4.1.5875.800.3";

async fn define_targets(system: &System, targets: serde_json::Value) {
    let defined = targetfile::parse(targets.to_string().as_bytes()).unwrap();
    let reply = system
        .ask("targets", &TargetRequest::Put { targets: defined })
        .await
        .unwrap();
    let reply: TargetReply = serde_json::from_value(reply).unwrap();
    assert!(reply.changed > 0);
}

/// What `target_values` should hold for a `.snmprec` line: (type, value as text).
fn expected(tag: &str, value: &str) -> (String, String) {
    match tag {
        "2" => ("integer".into(), value.into()),
        "4" => ("string".into(), value.into()),
        // Binary bytes are hex unless they happen to read as text (see SnmpValue::octets).
        "4x" => {
            let bytes: Vec<u8> = (0..value.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&value[i..i + 2], 16).unwrap())
                .collect();
            let value = SnmpValue::octets(&bytes);
            (value.type_name().into(), value.text())
        }
        "6" => ("oid".into(), value.into()),
        "67" => ("timeticks".into(), value.into()),
        other => panic!("tag {other} not used by the simulated OLTs"),
    }
}

/// The `.snmprec` values under `root`'s columns: OID -> (type, value).
fn table(name: &str, root: &str, columns: &[&str]) -> BTreeMap<String, (String, String)> {
    let prefixes: Vec<String> = columns.iter().map(|c| format!("{root}.{c}.")).collect();
    read_snmprec(&olt_snmprec(name))
        .unwrap()
        .into_iter()
        .filter(|line| prefixes.iter().any(|p| line.oid.starts_with(p.as_str())))
        .map(|line| (line.oid, expected(&line.tag, &line.value)))
        .collect()
}

/// Every value of a simulated OLT, the system group included: OID -> (type, value).
fn every_value(name: &str) -> BTreeMap<String, (String, String)> {
    read_snmprec(&olt_snmprec(name))
        .unwrap()
        .into_iter()
        .map(|line| (line.oid, expected(&line.tag, &line.value)))
        .collect()
}

/// One column of a simulated OLT: row index (the OID after `column.`) -> value as written.
fn column(name: &str, column: &str) -> BTreeMap<String, String> {
    let prefix = format!("{column}.");
    read_snmprec(&olt_snmprec(name))
        .unwrap()
        .into_iter()
        .filter_map(|line| Some((line.oid.strip_prefix(&prefix)?.to_owned(), line.value)))
        .collect()
}

async fn stored(system: &System, target: &str) -> BTreeMap<String, (String, String)> {
    let client = system.pool.get().await.unwrap();
    client
        .query(
            "SELECT oid, type, value FROM target_values WHERE target = $1 AND oid NOT LIKE '1.3.6.1.2.1.1.%'",
            &[&target],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_of_both_olts_match_their_snmprec_data_value_for_value() {
    let huawei = Snmpsim::start(&olt_snmprec("huawei-ma5800")).unwrap();
    let zte = Snmpsim::start(&olt_snmprec("zte-c300")).unwrap();
    let system = System::start(Options::default()).await.unwrap();
    define_targets(
        &system,
        serde_json::json!([
            {"id": "olt-huawei", "address": huawei.address()},
            {"id": "olt-zte", "address": zte.address(),
             "snmp": {"version": "2c", "community": "public"}},
        ]),
    )
    .await;
    let walk = |target: &str, root: &str, columns: &[&str], repetitions: u32| {
        serde_json::json!({
            "queue": "discovery", "kind": "snmp.walk", "target": target, "max_attempts": 1,
            "params": {
                "oids": columns.iter().map(|c| format!("{root}.{c}")).collect::<Vec<_>>(),
                "max_repetitions": repetitions,
            }
        })
    };
    let get = serde_json::json!({
        "queue": "get", "kind": "snmp.get", "target": "olt-huawei", "max_attempts": 1,
        "params": {"oids": ["1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.99.0"]}
    });
    system
        .submit_jobs(
            &[
                walk("olt-huawei", HUAWEI, &HUAWEI_COLUMNS, 40),
                walk("olt-zte", ZTE, &ZTE_COLUMNS, 25),
                get,
            ],
            "snmp-walks",
        )
        .await
        .unwrap();
    system
        .wait_terminal(3, Duration::from_secs(120))
        .await
        .unwrap();
    let outcomes: Vec<(String, String)> = system
        .pairs("SELECT kind || ' ' || target, status || ' ' || coalesce(error, '') FROM runs ORDER BY 1")
        .await
        .unwrap();
    for (run, outcome) in &outcomes {
        assert_eq!(outcome.trim(), "succeeded", "{run}: {outcome}");
    }

    let want = table("huawei-ma5800", HUAWEI, &HUAWEI_COLUMNS);
    assert_eq!(want.len(), 7 * 1024, "the MA5800 has 1,024 ONTs");
    let got = stored(&system, "olt-huawei").await;
    assert_eq!(got.len(), want.len(), "every MA5800 value recorded once");
    assert_eq!(got, want, "MA5800 values differ from the .snmprec data");
    let want = table("zte-c300", ZTE, &ZTE_COLUMNS);
    assert_eq!(stored(&system, "olt-zte").await, want, "C300 values differ");

    // The get: typed values, and an object the agent does not have.
    let sys: Vec<(String, String)> = system
        .pairs(
            "SELECT oid, type || '=' || value FROM target_values
             WHERE target = 'olt-huawei' AND oid LIKE '1.3.6.1.2.1.1.%' ORDER BY oid",
        )
        .await
        .unwrap();
    assert_eq!(
        sys,
        [
            ("1.3.6.1.2.1.1.3.0".into(), "timeticks=123456789".into()),
            ("1.3.6.1.2.1.1.5.0".into(), "string=olt-huawei-sim".into()),
            ("1.3.6.1.2.1.1.99.0".into(), "no_such_instance=".into()),
        ]
    );
    // The walk's result counts what it sent.
    let values: i64 = system
        .one("SELECT (output->>'values')::bigint FROM runs WHERE target = 'olt-huawei' AND kind = 'snmp.walk'")
        .await
        .unwrap();
    assert_eq!(values, 7 * 1024);
    system.stop().await.unwrap();
}

/// Runs the vendor's job template (`examples/templates/<vendor>.json`) once against its
/// simulated OLT served by snmpsim, with a walk of the system group beside it: the chain
/// (discovery, descriptions, optical power) must leave in `target_values` every value of the
/// `.snmprec` file, each with its type, and nothing else. A template column that walks
/// nothing, or a value the pipeline drops or alters, fails here.
async fn the_template_chain_reads_every_value(vendor: &str) {
    let agent = Snmpsim::start(&olt_snmprec(vendor)).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = std::fs::read(root.join(format!("examples/templates/{vendor}.json"))).unwrap();
    let template: serde_json::Value = serde_json::from_slice(&template).unwrap();
    let mut jobs = template["jobs"].as_array().unwrap().clone();
    assert_eq!(
        jobs.len(),
        3,
        "{vendor}: discovery, descriptions, optical power"
    );
    let target = jobs[0]["target"].as_str().unwrap().to_owned();
    // One round of the chain: its head runs once instead of every 5 minutes.
    assert!(jobs[0]
        .as_object_mut()
        .unwrap()
        .remove("interval")
        .is_some());
    jobs.push(serde_json::json!({
        "id": format!("{target}-system"), "queue": "discovery", "kind": "snmp.walk",
        "target": target, "max_attempts": 1, "params": {"oids": ["1.3.6.1.2.1.1"]}
    }));
    let system = System::start(Options::default()).await.unwrap();
    define_targets(
        &system,
        serde_json::json!([{"id": target, "address": agent.address(),
                            "snmp": {"version": "2c", "community": "public"}}]),
    )
    .await;
    system.submit_jobs(&jobs, vendor).await.unwrap();
    system
        .wait_terminal(4, Duration::from_secs(120))
        .await
        .unwrap();
    let outcomes: Vec<(String, String)> = system
        .pairs("SELECT job_id, status || ' ' || coalesce(error, '') FROM runs ORDER BY started_at")
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    for (job, outcome) in &outcomes {
        assert_eq!(outcome.trim(), "succeeded", "{job}: {outcome}");
    }

    let want = every_value(vendor);
    let got: BTreeMap<String, (String, String)> = system
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT oid, type, value FROM target_values WHERE target = $1",
            &[&target],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    let missing: Vec<_> = want.keys().filter(|oid| !got.contains_key(*oid)).collect();
    assert!(
        missing.is_empty(),
        "{vendor}: {} values never recorded, first {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(got, want, "{vendor}: values differ from the .snmprec data");
    // The runs' results count what they sent: each value once.
    let sent: i64 = system
        .one("SELECT sum((output->>'values')::bigint)::bigint FROM runs")
        .await
        .unwrap();
    assert_eq!(sent, want.len() as i64);
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zte_c600_template_reads_every_value_of_its_simulated_olt() {
    the_template_chain_reads_every_value("zte-c600").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fiberhome_an5516_template_reads_every_value_of_its_simulated_olt() {
    the_template_chain_reads_every_value("fiberhome-an5516").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_times_out_and_an_undefined_target_fails_with_its_cause() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let system = System::start(Options::default()).await.unwrap();
    define_targets(
        &system,
        serde_json::json!([{"id": "olt-silent", "address": silent.local_addr().unwrap().to_string()}]),
    )
    .await;
    let get = |target: &str| {
        serde_json::json!({
            "queue": "get", "kind": "snmp.get", "target": target, "max_attempts": 1,
            "params": {"oids": ["1.3.6.1.2.1.1.5.0"], "timeout_ms": 200, "retries": 1}
        })
    };
    system
        .submit_jobs(&[get("olt-silent"), get("olt-nowhere")], "snmp-failures")
        .await
        .unwrap();
    system
        .wait_terminal(2, Duration::from_secs(60))
        .await
        .unwrap();
    let outcomes: Vec<(String, String)> = system
        .pairs("SELECT target, status || ': ' || coalesce(error, '') FROM runs ORDER BY target")
        .await
        .unwrap();
    assert!(
        outcomes[0]
            .1
            .starts_with("failed: target olt-nowhere has no address"),
        "{outcomes:?}"
    );
    assert!(
        outcomes[1]
            .1
            .starts_with("timed_out: no SNMP answer from 127.0.0.1:"),
        "{outcomes:?}"
    );
    system.stop().await.unwrap();
}

/// The committed `.snmprec` files are exactly what `scripts/gen-snmprec` writes.
#[test]
fn the_simulated_olt_files_are_the_generators_output() {
    let out = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new("python3")
        .arg(root.join("scripts/gen-snmprec"))
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    for name in ["huawei-ma5800", "zte-c300", "zte-c600", "fiberhome-an5516"] {
        let file = format!("{name}.snmprec");
        let written = std::fs::read(out.path().join(&file)).unwrap();
        let committed = std::fs::read(root.join("sim/olts").join(&file)).unwrap();
        assert!(
            written == committed,
            "sim/olts/{file} differs from scripts/gen-snmprec's output: run scripts/gen-snmprec"
        );
    }
    let huawei = read_snmprec(&olt_snmprec("huawei-ma5800")).unwrap();
    let onts = huawei
        .iter()
        .filter(|l| l.oid.starts_with(&format!("{HUAWEI}.43.1.3.")))
        .count();
    assert_eq!(onts, 1024);

    // The ZTE C600: 384 ONUs indexed by the C600's ifIndex (gpon_olt-1/2/1 is 0x11010201),
    // and an ONU that is not working (phase state other than 4) has the rx power 65535.
    let states = column("zte-c600", &format!("{ZXAN}.10.2.3.8.1.4"));
    assert_eq!(states.len(), 384);
    assert_eq!(
        states.keys().next().map(String::as_str),
        Some("285278721.1")
    );
    let serials = column("zte-c600", &format!("{ZXAN}.10.2.3.3.1.18"));
    assert!(serials.values().all(|s| s.starts_with("1,ZTEG")));
    assert_eq!(
        serials.keys().collect::<Vec<_>>(),
        states.keys().collect::<Vec<_>>()
    );
    let rx = column("zte-c600", &format!("{ZXAN}.20.2.2.2.1.10"));
    assert_eq!(rx.len(), states.len());
    for (index, state) in &states {
        let power = &rx[&format!("{index}.1")];
        assert_eq!(
            state == "4",
            power != "65535",
            "C600 ONU {index}: {state} {power}"
        );
    }
    assert!(states.values().any(|s| s != "4"), "some C600 ONUs are down");

    // The FiberHome AN5516: 320 ONUs by signed index (slot 11, PON 1, ONU 1 is
    // 11 * 2^25 + 2^19 + 2^8), each column of the auth list on every ONU, and an ONU that is
    // not online (status other than 1) has the rx power 0.
    let auth = |c: &str| column("fiberhome-an5516", &format!("{FIBERHOME}.10.1.1.{c}"));
    let status = auth("11");
    assert_eq!(status.len(), 320);
    assert_eq!(status.keys().next().map(String::as_str), Some("369623296"));
    for c in ["2", "3", "4", "7", "10"] {
        assert_eq!(
            auth(c).keys().collect::<Vec<_>>(),
            status.keys().collect::<Vec<_>>()
        );
    }
    let (slots, pons, onus) = (auth("2"), auth("3"), auth("4"));
    for index in status.keys() {
        let i: u32 = index.parse().unwrap();
        let decoded = [i >> 25, (i >> 19) & 0x3f, (i >> 8) & 0x7ff].map(|n| n.to_string());
        assert_eq!(
            decoded,
            [&slots[index], &pons[index], &onus[index]].map(|s| s.clone())
        );
    }
    let rx = column("fiberhome-an5516", &format!("{FIBERHOME}.9.3.3.1.6"));
    assert_eq!(
        rx.keys().collect::<Vec<_>>(),
        status.keys().collect::<Vec<_>>()
    );
    for (index, state) in &status {
        let power = &rx[index];
        assert_eq!(
            state == "1",
            power != "0",
            "AN5516 ONU {index}: {state} {power}"
        );
    }
    assert!(
        status.values().any(|s| s != "1"),
        "some AN5516 ONUs are down"
    );
}

/// SNMPv3 with authentication and privacy against net-snmp's snmpd: the right credentials
/// read the value; a wrong password or an unknown user fail with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmp_v3_reads_with_the_right_credentials_and_names_wrong_ones() {
    let agent = Snmpd::start(
        "createUser faro SHA \"authpass123\" AES \"privpass123\"\nrouser faro priv\nsysName faro-snmpd",
    )
    .unwrap();
    let system = System::start(Options::default()).await.unwrap();
    let v3 = |user: &str, auth: &str| {
        serde_json::json!({"version": "3", "user": user,
            "auth": {"protocol": "sha", "password": auth},
            "privacy": {"protocol": "aes", "password": "privpass123"}})
    };
    define_targets(
        &system,
        serde_json::json!([
            {"id": "olt-v3", "address": agent.address(), "snmp": v3("faro", "authpass123")},
            {"id": "olt-badpass", "address": agent.address(), "snmp": v3("faro", "wrongpass1")},
            {"id": "olt-baduser", "address": agent.address(), "snmp": v3("nobody", "authpass123")},
        ]),
    )
    .await;
    let get = |target: &str| {
        serde_json::json!({
            "queue": "get", "kind": "snmp.get", "target": target, "max_attempts": 1,
            "params": {"oids": ["1.3.6.1.2.1.1.5.0"], "timeout_ms": 1000, "retries": 0}
        })
    };
    system
        .submit_jobs(
            &[get("olt-v3"), get("olt-badpass"), get("olt-baduser")],
            "snmp-v3",
        )
        .await
        .unwrap();
    system
        .wait_terminal(3, Duration::from_secs(60))
        .await
        .unwrap();
    let outcomes: BTreeMap<String, String> = system
        .pairs("SELECT target, status || ': ' || coalesce(error, '') FROM runs")
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(outcomes["olt-v3"], "succeeded: ", "{outcomes:?}");
    for bad in ["olt-badpass", "olt-baduser"] {
        assert!(
            outcomes[bad].starts_with("failed: SNMP authentication with 127.0.0.1:"),
            "{bad}: {outcomes:?}"
        );
    }
    let name: String = system
        .one(
            "SELECT value FROM target_values WHERE target = 'olt-v3' AND oid = '1.3.6.1.2.1.1.5.0'",
        )
        .await
        .unwrap();
    assert_eq!(name, "faro-snmpd");
    system.stop().await.unwrap();
}

/// An agent that stops answering becomes unreachable after its timeouts: its runs fail at
/// once instead of holding slots for full timeouts. When it answers again, a probe finds it
/// and its runs succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agent_fails_fast_and_recovers_on_the_first_answer() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let system = System::start(Options {
        workers: 1,
        env: [
            ("FARO_SNMP_UNREACHABLE_AFTER", "2"),
            ("FARO_SNMP_UNREACHABLE_DELAY", "2s"),
            ("FARO_RETRY_BASE_DELAY", "200ms"),
            ("FARO_RETRY_MAX_DELAY", "400ms"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec(),
        ..Options::default()
    })
    .await
    .unwrap();
    define_targets(
        &system,
        serde_json::json!([{"id": "olt-flaky", "address": format!("127.0.0.1:{port}")}]),
    )
    .await;
    let get = |id: &str, attempts: u32| {
        serde_json::json!({
            "id": id, "queue": "get", "kind": "snmp.get", "target": "olt-flaky",
            "max_attempts": attempts, "retry_on": ["failed", "timed_out"],
            "params": {"oids": ["1.3.6.1.2.1.1.5.0"], "timeout_ms": 300, "retries": 0}
        })
    };
    system
        .submit_jobs(&[get("silence-1", 1), get("silence-2", 1)], "silence")
        .await
        .unwrap();
    system
        .wait_terminal(2, Duration::from_secs(30))
        .await
        .unwrap();
    system
        .submit_jobs(
            &[get("fast-1", 1), get("fast-2", 1), get("fast-3", 1)],
            "fail-fast",
        )
        .await
        .unwrap();
    system
        .wait_terminal(5, Duration::from_secs(30))
        .await
        .unwrap();
    let fast: Vec<(String, f64)> = system
        .pairs(
            "SELECT status || ': ' || coalesce(error, ''),
                    extract(epoch FROM finished_at - started_at)::float8
             FROM runs WHERE job_id LIKE 'fast-%'",
        )
        .await
        .unwrap();
    let failed_fast = fast
        .iter()
        .filter(|(e, secs)| e.starts_with("failed: target_unreachable: 127.0.0.1:") && *secs < 0.25)
        .count();
    assert!(failed_fast >= 2, "{fast:?}");

    // The agent answers again: a probe finds it, then runs succeed at their first attempt.
    drop(silent);
    let agent = Snmpsim::start_on(&olt_snmprec("zte-c300"), port).unwrap();
    system
        .submit_jobs(&[get("recovery", 20)], "recovery")
        .await
        .unwrap();
    system
        .wait_terminal(6, Duration::from_secs(60))
        .await
        .unwrap();
    system
        .submit_jobs(&[get("after", 1)], "after")
        .await
        .unwrap();
    system
        .wait_terminal(7, Duration::from_secs(30))
        .await
        .unwrap();
    let ended: Vec<(String, String)> = system
        .pairs("SELECT job_id, status FROM runs WHERE job_id IN ('recovery', 'after') ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(
        ended,
        [
            ("after".to_owned(), "succeeded".to_owned()),
            ("recovery".to_owned(), "succeeded".to_owned())
        ]
    );
    drop(agent);
    system.stop().await.unwrap();
}

/// `snmp.test_mode` (the seeds' modo_prueba): SNMP runs are simulated and marked so, no
/// device is touched and no value recorded; switched off, runs poll for real again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_test_mode_snmp_runs_are_simulated_and_touch_nothing() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let system = System::start(Options::default()).await.unwrap();
    define_targets(
        &system,
        serde_json::json!([{"id": "olt-test", "address": silent.local_addr().unwrap().to_string()}]),
    )
    .await;
    let set = |on: bool| faro_shared::settings::ConfigRequest {
        key: Some("snmp.test_mode".into()),
        value: Some(on.to_string()),
    };
    system.ask("config", &set(true)).await.unwrap();
    let get = |id: &str| {
        serde_json::json!({
            "id": id, "queue": "get", "kind": "snmp.get", "target": "olt-test", "max_attempts": 1,
            "params": {"oids": ["1.3.6.1.2.1.1.5.0"], "timeout_ms": 300, "retries": 0}
        })
    };
    let jobs: Vec<_> = (0..3).map(|i| get(&format!("test-{i}"))).collect();
    system.submit_jobs(&jobs, "test-mode").await.unwrap();
    system
        .wait_terminal(3, Duration::from_secs(60))
        .await
        .unwrap();
    let runs: Vec<(String, bool)> = system
        .pairs("SELECT status || ': ' || coalesce(error, ''), simulated FROM runs")
        .await
        .unwrap();
    for (status, simulated) in &runs {
        assert!(*simulated, "{runs:?}");
        assert!(
            status == "succeeded: " || status.contains("simulated"),
            "a simulated outcome, never a real timeout: {runs:?}"
        );
    }
    let values: i64 = system
        .one("SELECT count(*) FROM target_values")
        .await
        .unwrap();
    assert_eq!(values, 0);

    system.ask("config", &set(false)).await.unwrap();
    system.submit_jobs(&[get("real")], "real").await.unwrap();
    system
        .wait_terminal(4, Duration::from_secs(60))
        .await
        .unwrap();
    let real: (String, bool) = system
        .pairs("SELECT status, simulated FROM runs WHERE job_id = 'real'")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(real, ("timed_out".to_owned(), false));
    system.stop().await.unwrap();
}
