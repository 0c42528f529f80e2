//! `faro setup`: the one privileged step of a deploy. Applies the database migrations, then
//! declares every NATS JetStream stream, KV bucket and the dispatcher's durable consumers
//! (creating or updating them), and exits. It connects as a NATS user that may use the whole
//! JetStream API (`admin` in `nats/nats-server.conf`); the services' users may only use what it
//! declared. Idempotent: run it on every deploy, and after changing a setting it applies
//! (`FARO_JETSTREAM_REPLICAS`, `FARO_JETSTREAM_MAX_BYTES`, `FARO_OUTCOMES_MAX_AGE`).

use faro_shared::config::{Env, PgConfig};
use faro_shared::nats::{self, Declared, TopologySettings};
use faro_shared::{pg, CommonConfig};

pub async fn run(env: &Env) -> anyhow::Result<()> {
    // Every setting read before anything is changed: a typo fails the whole step.
    let pg_config = PgConfig::from_env(env)?;
    let common = CommonConfig::from_env(env)?;
    let settings = TopologySettings::from_env(env)?;
    pg::migrate(&pg_config).await?;
    println!("migrations applied");
    let client = nats::connect(&common.nats, "faro-setup", nats::Retry::Never).await?;
    let js = nats::jetstream(client);
    let provisioned = nats::provision(&js, &common.namespace, &settings, nats::SETUP_WAIT).await?;
    for declared in &provisioned.declared {
        println!("{}", line(declared));
    }
    println!(
        "NATS JetStream ready for namespace {} ({} replica{})",
        common.namespace,
        settings.replicas,
        if settings.replicas == 1 { "" } else { "s" }
    );
    Ok(())
}

/// What `faro setup` prints of one declaration.
fn line(declared: &Declared) -> String {
    if declared.max_bytes > 0 {
        format!(
            "{} {} declared (at most {} MiB)",
            declared.kind,
            declared.name,
            declared.max_bytes >> 20
        )
    } else {
        format!("{} {} declared", declared.kind, declared.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declaration_is_printed_with_its_limit_in_mebibytes_when_it_has_one() {
        let stream = Declared {
            kind: "stream",
            name: "FARO_JOBS".to_owned(),
            max_bytes: 3 << 30,
        };
        assert_eq!(
            line(&stream),
            "stream FARO_JOBS declared (at most 3072 MiB)"
        );
        let consumer = Declared {
            kind: "consumer",
            name: "FARO_SUBMIT > dispatcher".to_owned(),
            max_bytes: 0,
        };
        assert_eq!(
            line(&consumer),
            "consumer FARO_SUBMIT > dispatcher declared"
        );
    }
}
