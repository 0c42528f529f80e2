//! `faro target add|import|list|disable|enable`: targets (OLTs), defined through the leading
//! dispatcher, which applies every change at once (no restart).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use faro_shared::config::Env;
use faro_shared::messages::{TargetReply, TargetRequest};
use faro_shared::targetfile::{self, TargetSpec};

use crate::ask::ask;
use crate::table::{self, Column};

/// Targets sent in one request, well under the server's payload limit.
const TARGETS_PER_REQUEST: usize = 1000;

#[derive(Subcommand)]
pub enum TargetAction {
    /// Add a target, or replace the one with the same id.
    Add(Box<TargetArgs>),
    /// Add or replace every target of a JSON file ({"targets": [...]} or an array); a file
    /// with any error is refused whole.
    Import { file: PathBuf },
    /// Every target with its limit and the slots in use now (secrets hidden).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop polling a target: its jobs' slots pass without runs, its waiting runs wait.
    Disable { id: String },
    /// Poll a disabled target again.
    Enable { id: String },
}

#[derive(Args)]
pub struct TargetArgs {
    /// The target's id (letters, digits, '-' and '_').
    id: String,
    /// host, host:port or [IPv6]:port (SNMP port 161 by default).
    #[arg(long)]
    address: String,
    #[arg(long, default_value = "")]
    name: String,
    /// Runs in flight at most (default: the system's target.max_concurrency).
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u32>,
    /// SNMP version: 2c or 3.
    #[arg(long, default_value = "2c")]
    snmp_version: String,
    /// SNMP v2c community.
    #[arg(long, default_value = "public")]
    community: String,
    /// SNMPv3 user.
    #[arg(long)]
    user: Option<String>,
    /// SNMPv3 authentication: md5, sha, sha224, sha256, sha384 or sha512.
    #[arg(long)]
    auth_protocol: Option<String>,
    #[arg(long)]
    auth_password: Option<String>,
    /// SNMPv3 privacy: des, aes, aes192 or aes256.
    #[arg(long)]
    priv_protocol: Option<String>,
    #[arg(long)]
    priv_password: Option<String>,
    /// Add it disabled.
    #[arg(long)]
    disabled: bool,
}

impl TargetArgs {
    /// The target as the file format writes it, validated the same way.
    fn spec(&self) -> anyhow::Result<TargetSpec> {
        let snmp = if self.snmp_version == "3" {
            let mut v3 =
                serde_json::json!({"version": "3", "user": self.user.clone().unwrap_or_default()});
            if self.auth_protocol.is_some() || self.auth_password.is_some() {
                v3["auth"] = serde_json::json!({"protocol": self.auth_protocol, "password": self.auth_password});
            }
            if self.priv_protocol.is_some() || self.priv_password.is_some() {
                v3["privacy"] = serde_json::json!({"protocol": self.priv_protocol, "password": self.priv_password});
            }
            v3
        } else {
            serde_json::json!({"version": self.snmp_version, "community": self.community})
        };
        let target = serde_json::json!([{
            "id": self.id, "name": self.name, "address": self.address, "snmp": snmp,
            "max_concurrency": self.max_concurrency, "enabled": !self.disabled,
        }]);
        let mut targets = targetfile::parse(&serde_json::to_vec(&target)?).map_err(|e| {
            let field = e.field.map(|f| format!("{f}: ")).unwrap_or_default();
            anyhow::anyhow!("{field}{}", e.problem)
        })?;
        targets.pop().context("no target")
    }
}

pub async fn run(env: &Env, action: TargetAction) -> anyhow::Result<()> {
    match action {
        TargetAction::Add(args) => {
            let spec = args.spec()?;
            let id = spec.id.clone();
            put_targets(env, vec![spec]).await?;
            println!("target {id} saved");
        }
        TargetAction::Import { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let targets = targetfile::parse(&bytes)
                .map_err(|error| anyhow::anyhow!("{}: {error}", file.display()))?;
            let total = targets.len();
            let mut saved = 0;
            for chunk in targets.chunks(TARGETS_PER_REQUEST) {
                saved += put_targets(env, chunk.to_vec()).await?;
                if total > TARGETS_PER_REQUEST {
                    eprintln!("{saved}/{total} targets saved");
                }
            }
            println!("{}: {saved} targets saved", file.display());
        }
        TargetAction::List { json } => {
            let reply = ask(env, &TargetRequest::List).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
                return Ok(());
            }
            print!("{}", targets_table(&reply));
        }
        TargetAction::Disable { id } => set_target(env, &id, false).await?,
        TargetAction::Enable { id } => set_target(env, &id, true).await?,
    }
    Ok(())
}

const TARGET_COLUMNS: [Column; 8] = [
    Column::left("ID"),
    Column::left("NAME"),
    Column::left("ADDRESS"),
    Column::left("SNMP"),
    Column::right("LIMIT"),
    Column::left("ENABLED"),
    Column::right("IN FLIGHT"),
    Column::right("WAITING"),
];

/// What `faro target list` prints.
fn targets_table(reply: &TargetReply) -> String {
    let rows = reply.targets.iter().map(|t| {
        let limit = match t.max_concurrency {
            Some(n) => n.to_string(),
            None => format!("{}*", t.limit),
        };
        vec![
            t.id.to_string(),
            t.name.clone(),
            t.address.clone().unwrap_or_default(),
            t.snmp["version"].as_str().unwrap_or("?").to_owned(),
            limit,
            yes_no(t.enabled),
            t.in_flight.to_string(),
            t.waiting.to_string(),
        ]
    });
    let mut text = table::render(&TARGET_COLUMNS, rows);
    text += "(* the system default, target.max_concurrency)\n";
    text
}

pub(super) fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

async fn put_targets(env: &Env, targets: Vec<TargetSpec>) -> anyhow::Result<usize> {
    Ok(ask(env, &TargetRequest::Put { targets }).await?.changed)
}

async fn set_target(env: &Env, id: &str, enabled: bool) -> anyhow::Result<()> {
    let id = faro_shared::domain::TargetId::parse(id)?;
    let request = TargetRequest::SetEnabled {
        id: id.clone(),
        enabled,
    };
    ask(env, &request).await?;
    println!(
        "target {id} {}",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::misplaced;
    use clap::Parser as _;
    use faro_shared::domain::TargetId;
    use faro_shared::messages::TargetView;

    #[derive(clap::Parser)]
    struct T {
        #[command(subcommand)]
        action: TargetAction,
    }

    fn target_args(args: &[&str]) -> TargetArgs {
        let mut argv = vec!["t", "add"];
        argv.extend(args);
        match T::parse_from(argv).action {
            TargetAction::Add(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn target_flags_become_a_validated_target() {
        let spec = target_args(&["olt-1", "--address", "192.0.2.1", "--max-concurrency", "2"])
            .spec()
            .unwrap();
        assert_eq!(spec.address, "192.0.2.1:161");
        assert_eq!(spec.max_concurrency, Some(2));
        assert_eq!(spec.snmp.version(), "2c");

        let v3 = target_args(&[
            "olt-2",
            "--address",
            "[::1]:1161",
            "--snmp-version",
            "3",
            "--user",
            "faro",
            "--auth-protocol",
            "sha",
            "--auth-password",
            "12345678",
        ])
        .spec()
        .unwrap();
        assert_eq!(v3.snmp.version(), "3");

        let bad = target_args(&["olt-3", "--address", "h:0"])
            .spec()
            .unwrap_err();
        assert!(bad.to_string().starts_with("address: port"), "{bad}");
        let bad = target_args(&["olt-3", "--address", "h", "--snmp-version", "3"])
            .spec()
            .unwrap_err();
        assert!(bad.to_string().contains("snmp.user"), "{bad}");
    }

    fn target(id: &str, name: &str, address: Option<&str>, limit: Option<u32>) -> TargetView {
        TargetView {
            id: TargetId::parse(id).unwrap(),
            name: name.to_owned(),
            address: address.map(str::to_owned),
            snmp: serde_json::json!({"version": "2c", "community": "***"}),
            max_concurrency: limit,
            limit: limit.unwrap_or(4),
            enabled: limit.is_none(),
            in_flight: 1,
            waiting: 0,
        }
    }

    #[test]
    fn targets_line_up_with_long_names_and_missing_fields() {
        let reply = TargetReply {
            changed: 0,
            targets: vec![
                target("olt-1", "POP 1", Some("192.0.2.1:161"), None),
                target(
                    "olt-huawei-1",
                    "Central office, rack 12, shelf 3",
                    Some("[2001:db8::1]:1161"),
                    Some(12),
                ),
                target("olt-2", "", None, Some(2)),
            ],
        };
        let text = targets_table(&reply);
        let cells = [
            vec![
                "olt-1",
                "POP 1",
                "192.0.2.1:161",
                "2c",
                "4*",
                "yes",
                "1",
                "0",
            ],
            vec![
                "olt-huawei-1",
                "Central office, rack 12, shelf 3",
                "[2001:db8::1]:1161",
                "2c",
                "12",
                "no",
                "1",
                "0",
            ],
            vec!["olt-2", "-", "-", "2c", "2", "no", "1", "0"],
        ];
        let table: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        assert_eq!(misplaced(&table, &TARGET_COLUMNS, &cells), None, "\n{text}");
        assert_eq!(
            text,
            "\
ID            NAME                              ADDRESS             SNMP  LIMIT  ENABLED  IN FLIGHT  WAITING
olt-1         POP 1                             192.0.2.1:161       2c       4*  yes              1        0
olt-huawei-1  Central office, rack 12, shelf 3  [2001:db8::1]:1161  2c       12  no               1        0
olt-2         -                                 -                   2c        2  no               1        0
(* the system default, target.max_concurrency)
"
        );
    }
}
