//! `faro config set KEY VALUE` and `faro config list`: the hot settings, changed without a
//! restart.

use clap::Subcommand;
use faro_shared::config::Env;
use faro_shared::settings::{self, ConfigRequest, Setting};

use crate::ask::ask;

#[derive(Subcommand)]
pub enum ConfigAction {
    /// Change a setting; it takes effect at once, without a restart.
    Set { key: String, value: String },
    /// The settings in force.
    List,
}

pub async fn run(env: &Env, action: ConfigAction) -> anyhow::Result<()> {
    let request = match &action {
        ConfigAction::Set { key, value } => {
            // Refused here already, with the accepted form, before anything is sent.
            Setting::parse(key, value)?;
            ConfigRequest {
                key: Some(key.clone()),
                value: Some(value.clone()),
            }
        }
        ConfigAction::List => ConfigRequest {
            key: None,
            value: None,
        },
    };
    let reply = ask(env, &request).await?;
    if let ConfigAction::Set { key, .. } = &action {
        println!("{key} set");
    }
    for (key, form, default) in settings::KEYS {
        let set: Vec<&Setting> = reply
            .settings
            .iter()
            .filter(|s| key_matches(key, &s.key()))
            .collect();
        if set.is_empty() {
            println!("{key} = {default} (default; {form})");
        }
        for setting in set {
            println!("{} = {}", setting.key(), setting.value());
        }
    }
    Ok(())
}

/// Whether a stored key is an instance of a listed key (`queue.<name>.max_in_flight`).
fn key_matches(listed: &str, key: &str) -> bool {
    match listed.split_once("<name>") {
        Some((prefix, suffix)) => {
            key.len() > prefix.len() + suffix.len()
                && key.starts_with(prefix)
                && key.ends_with(suffix)
        }
        None => listed == key,
    }
}
