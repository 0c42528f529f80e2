//! Polled values: the chunks SNMP runs send before their result become the latest value per
//! target and OID in `target_values`.
//!
//! A chunk counts only while its attempt is the run's current one and the run did not time
//! out, was not cancelled or skipped: values of a superseded attempt change nothing. An older
//! value never overwrites a newer one, whatever order chunks arrive in.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use faro_shared::snmp::ValuesChunk;
use uuid::Uuid;

/// One row of `target_values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest<'a> {
    pub target: &'a str,
    pub oid: &'a str,
    pub kind: &'static str,
    pub value: String,
    pub polled_at: DateTime<Utc>,
    pub run_id: Uuid,
}

/// Pure: the newest value per (target, OID) among `chunks`, so one statement never writes a
/// row twice. Ties go to the later chunk.
pub fn latest<'a>(chunks: impl IntoIterator<Item = &'a ValuesChunk>) -> Vec<Latest<'a>> {
    let mut newest: HashMap<(&str, &str), Latest<'a>> = HashMap::new();
    for chunk in chunks {
        for varbind in &chunk.values {
            let key = (chunk.target.as_str(), varbind.0.as_str());
            if newest
                .get(&key)
                .is_some_and(|kept| kept.polled_at > chunk.polled_at)
            {
                continue;
            }
            newest.insert(
                key,
                Latest {
                    target: chunk.target.as_str(),
                    oid: varbind.0.as_str(),
                    kind: varbind.1.type_name(),
                    value: varbind.1.text(),
                    polled_at: chunk.polled_at,
                    run_id: chunk.run_id,
                },
            );
        }
    }
    newest.into_values().collect()
}

/// What recording a batch of chunks did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Values written (or already newer in the table).
    pub values: usize,
    /// Values of attempts that are no longer current, dropped.
    pub late: usize,
    /// Values of a current attempt sent for another queue or target than its run's, dropped:
    /// a worker may only write what its run polled.
    pub mismatched: usize,
}

/// Records the chunks of current attempts, for their runs' own queue and target; drops the
/// others.
pub async fn record(pool: &Pool, chunks: &[ValuesChunk]) -> anyhow::Result<Recorded> {
    if chunks.is_empty() {
        return Ok(Recorded::default());
    }
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let attempts: HashSet<(Uuid, i32)> = chunks
        .iter()
        .map(|c| (c.run_id, i32::try_from(c.attempt).unwrap_or(i32::MAX)))
        .collect();
    let (ids, numbers): (Vec<Uuid>, Vec<i32>) = attempts.into_iter().unzip();
    let current: HashMap<(Uuid, i32), (String, Option<String>)> = client
        .query(
            "SELECT r.id, r.attempt, r.queue, r.target FROM runs r
             JOIN unnest($1::uuid[], $2::int[]) AS a(id, attempt)
               ON r.id = a.id AND r.attempt = a.attempt
             WHERE r.status NOT IN ('timed_out', 'cancelled', 'skipped')",
            &[&ids, &numbers],
        )
        .await
        .context("cannot check the attempts of polled values")?
        .into_iter()
        .map(|row| ((row.get(0), row.get(1)), (row.get(2), row.get(3))))
        .collect();
    let (mut kept, mut late, mut mismatched) = (Vec::new(), 0, 0);
    for chunk in chunks {
        let attempt = (
            chunk.run_id,
            i32::try_from(chunk.attempt).unwrap_or(i32::MAX),
        );
        match current.get(&attempt) {
            None => late += chunk.values.len(),
            Some((queue, target))
                if queue != chunk.queue.as_str()
                    || target.as_deref() != Some(chunk.target.as_str()) =>
            {
                tracing::warn!(
                    run.id = %chunk.run_id,
                    queue = %chunk.queue,
                    target = %chunk.target,
                    "values sent for another queue or target than their run's; dropped"
                );
                mismatched += chunk.values.len();
            }
            Some(_) => kept.push(chunk),
        }
    }
    let rows = latest(kept);
    if !rows.is_empty() {
        let targets: Vec<&str> = rows.iter().map(|r| r.target).collect();
        let oids: Vec<&str> = rows.iter().map(|r| r.oid).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind).collect();
        let values: Vec<&str> = rows.iter().map(|r| r.value.as_str()).collect();
        let polled: Vec<DateTime<Utc>> = rows.iter().map(|r| r.polled_at).collect();
        let runs: Vec<Uuid> = rows.iter().map(|r| r.run_id).collect();
        client
            .execute(
                "INSERT INTO target_values (target, oid, type, value, polled_at, run_id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                      $5::timestamptz[], $6::uuid[])
                 ON CONFLICT (target, oid) DO UPDATE
                    SET type = EXCLUDED.type, value = EXCLUDED.value,
                        polled_at = EXCLUDED.polled_at, run_id = EXCLUDED.run_id
                    WHERE target_values.polled_at <= EXCLUDED.polled_at",
                &[&targets, &oids, &kinds, &values, &polled, &runs],
            )
            .await
            .context("cannot record polled values")?;
    }
    Ok(Recorded {
        values: rows.len(),
        late,
        mismatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use faro_shared::domain::{JobId, QueueName, TargetId};
    use faro_shared::snmp::{SnmpValue, Varbind};

    fn chunk(target: &str, at: i64, values: &[(&str, i64)]) -> ValuesChunk {
        ValuesChunk {
            run_id: Uuid::now_v7(),
            attempt: 1,
            job_id: JobId::parse("j").unwrap(),
            queue: QueueName::parse("q").unwrap(),
            target: TargetId::parse(target).unwrap(),
            seq: 0,
            polled_at: DateTime::from_timestamp(at, 0).unwrap(),
            values: values
                .iter()
                .map(|(oid, v)| Varbind((*oid).to_owned(), SnmpValue::Integer(*v)))
                .collect(),
        }
    }

    #[test]
    fn the_newest_value_per_target_and_oid_wins_whatever_the_order() {
        let old = chunk("olt-1", 100, &[("1.3.1", 1), ("1.3.2", 2)]);
        let new = chunk("olt-1", 200, &[("1.3.1", 10)]);
        let other = chunk("olt-2", 50, &[("1.3.1", 7)]);
        for order in [
            vec![&old, &new, &other],
            vec![&new, &old, &other],
            vec![&other, &new, &old],
        ] {
            let mut rows: Vec<(String, String, String)> = latest(order)
                .into_iter()
                .map(|r| (r.target.to_owned(), r.oid.to_owned(), r.value))
                .collect();
            rows.sort();
            assert_eq!(
                rows,
                [
                    ("olt-1".into(), "1.3.1".into(), "10".into()),
                    ("olt-1".into(), "1.3.2".into(), "2".into()),
                    ("olt-2".into(), "1.3.1".into(), "7".into()),
                ]
            );
        }
    }
}
