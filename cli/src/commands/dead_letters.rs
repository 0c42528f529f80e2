//! `faro dead-letters`: the messages set aside after they could not be recorded (a values chunk
//! PostgreSQL cannot hold, a result or submission still not recorded on its last delivery),
//! oldest first, with where each came from and why.

use faro_shared::config::Env;
use faro_shared::messages::dead::{self, DeadLetter};
use faro_shared::{nats, CommonConfig};

use crate::table::{self, Column};

pub async fn run(env: &Env, last: u64, json: bool) -> anyhow::Result<()> {
    let config = CommonConfig::from_env(env)?;
    let client = nats::connect(&config.nats, "faro-cli", nats::Retry::Never).await?;
    let js = nats::jetstream(client);
    let letters = dead::read_last(&js, &config.namespace, last).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
        return Ok(());
    }
    print!("{}", letters_table(&letters));
    Ok(())
}

const COLUMNS: [Column; 6] = [
    Column::right("SEQ"),
    Column::left("STORED"),
    Column::left("FROM"),
    Column::right("DELIVERIES"),
    Column::left("SUBJECT"),
    Column::left("REASON"),
];

/// What `faro dead-letters` prints: a letter a line (`--json` has the payloads).
fn letters_table(letters: &[DeadLetter]) -> String {
    if letters.is_empty() {
        return "no message has been set aside\n".to_owned();
    }
    let rows = letters.iter().map(|letter| {
        vec![
            letter.seq.to_string(),
            letter.stored_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            letter.source.clone(),
            letter.deliveries.to_string(),
            letter.subject.clone(),
            letter.reason.clone(),
        ]
    });
    table::render(&COLUMNS, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_letter_says_where_it_came_from_and_why() {
        assert_eq!(letters_table(&[]), "no message has been set aside\n");
        let letter = DeadLetter {
            seq: 4,
            stored_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            source: "values".to_owned(),
            subject: "faro.values.q.olt1".to_owned(),
            reason: "PostgreSQL cannot hold these values: timestamp out of range".to_owned(),
            deliveries: 1,
            payload: "{}".to_owned(),
        };
        let printed = letters_table(&[letter]);
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 2, "{printed}");
        assert!(lines[0].starts_with("SEQ"), "{printed}");
        for part in [
            "2027-01-15 08:00:00",
            "values",
            "faro.values.q.olt1",
            "timestamp out of range",
        ] {
            assert!(lines[1].contains(part), "{part} missing: {printed}");
        }
    }
}
