//! `faro status`: run counts by status, and open runs by queue.

use faro_shared::config::Env;
use faro_shared::messages::{StatusReply, StatusRequest};

use crate::ask::ask;
use crate::table;

pub async fn run(env: &Env, json: bool) -> anyhow::Result<()> {
    let status = ask(env, &StatusRequest).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status_tables(&status));
    }
    Ok(())
}

/// What `faro status` prints: run counts by status, then open runs by queue if any.
fn status_tables(status: &StatusReply) -> String {
    let counts = |counts: &std::collections::BTreeMap<String, i64>| {
        counts
            .iter()
            .map(|(name, count)| [name.clone(), count.to_string()])
            .collect::<Vec<_>>()
    };
    let mut text = table::render(
        &[table::Column::left("STATUS"), table::Column::right("RUNS")],
        counts(&status.runs),
    );
    if !status.queues.is_empty() {
        text.push('\n');
        text += &table::render(
            &[
                table::Column::left("QUEUE"),
                table::Column::right("OPEN RUNS"),
            ],
            counts(&status.queues),
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_are_right_aligned_under_their_headers() {
        let status = StatusReply {
            runs: [("cancelled", 3), ("succeeded", 1_234_567), ("timed_out", 0)]
                .map(|(name, count)| (name.to_owned(), count))
                .into(),
            queues: [("get", 12), ("olt-huawei-1-discovery-and-descriptions", 7)]
                .map(|(name, count)| (name.to_owned(), count))
                .into(),
            waiting: 0,
        };
        assert_eq!(
            status_tables(&status),
            "\
STATUS        RUNS
cancelled        3
succeeded  1234567
timed_out        0

QUEUE                                    OPEN RUNS
get                                             12
olt-huawei-1-discovery-and-descriptions          7
"
        );
        let idle = StatusReply::default();
        assert_eq!(status_tables(&idle), "STATUS  RUNS\n");
    }
}
