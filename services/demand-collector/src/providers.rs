//! Demand providers behind one trait: each answers `(external name, pending count)` pairs.
//!
//! - `jetstream`: runs published to each queue's consumer and not yet acknowledged (waiting to
//!   be pulled, or running);
//! - `waiting`: runs the dispatcher holds back (a target's slots are full, a retry's backoff);
//! - `due`: runs of recurring jobs due within the horizon (each enabled recurring job counts
//!   horizon / interval);
//! - `http`: an external JSON API (the seeds' ticket API);
//! - `sql`: a read-only query on another PostgreSQL (the seeds' work-queue database).
//!
//! The first three answer with queue names; the external ones with their own names, which the
//! `demand_mappings` table maps to queues.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use deadpool_postgres::Pool;
use faro_shared::config::Secret;
use faro_shared::domain::QueueName;
use faro_shared::{nats, Namespace};
use futures::future::BoxFuture;

use crate::metrics as m;

/// One source of demand.
pub trait Provider: Send + Sync {
    /// A short fixed name, used in snapshots and metric labels.
    fn name(&self) -> &'static str;

    /// Pending work by external name. `queues` are the queues known now.
    fn collect<'a>(
        &'a self,
        queues: &'a [QueueName],
    ) -> BoxFuture<'a, anyhow::Result<Vec<(String, u64)>>>;
}

/// Runs waiting in each queue's consumer: not yet delivered plus delivered but not acked.
#[derive(Debug, Clone)]
pub struct JetStreamBacklog {
    pub js: jetstream::Context,
    pub ns: Namespace,
}

impl Provider for JetStreamBacklog {
    fn name(&self) -> &'static str {
        "jetstream"
    }

    fn collect<'a>(
        &'a self,
        queues: &'a [QueueName],
    ) -> BoxFuture<'a, anyhow::Result<Vec<(String, u64)>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(queues.len());
            for queue in queues {
                // No consumer yet: the dispatcher has published no run to the queue.
                let pending = match nats::bind_queue_consumer(&self.js, &self.ns, queue).await? {
                    Some(mut consumer) => {
                        let info = consumer
                            .info()
                            .await
                            .with_context(|| format!("cannot read the backlog of queue {queue}"))?;
                        info.num_pending + info.num_ack_pending as u64
                    }
                    None => 0,
                };
                metrics::gauge!(m::JETSTREAM_PENDING, "queue" => queue.to_string())
                    .set(pending as f64);
                out.push((queue.to_string(), pending));
            }
            Ok(out)
        })
    }
}

/// Runs the dispatcher has made but not published yet: their target's slots are taken, or a
/// retry waits for its backoff.
#[derive(Debug, Clone)]
pub struct DispatcherWaiting {
    pub pool: Pool,
}

impl Provider for DispatcherWaiting {
    fn name(&self) -> &'static str {
        "waiting"
    }

    fn collect<'a>(
        &'a self,
        _queues: &'a [QueueName],
    ) -> BoxFuture<'a, anyhow::Result<Vec<(String, u64)>>> {
        Box::pin(async move {
            let client = self.pool.get().await.context("no PostgreSQL connection")?;
            let rows = client
                .query(
                    "SELECT queue, count(*) FROM run_outbox WHERE queue IS NOT NULL
                      GROUP BY queue",
                    &[],
                )
                .await
                .context("cannot count the dispatcher's waiting runs")?;
            Ok(counts(&rows))
        })
    }
}

/// `(queue, count)` rows as pairs.
fn counts(rows: &[tokio_postgres::Row]) -> Vec<(String, u64)> {
    rows.iter()
        .map(|row| {
            let count: i64 = row.get(1);
            (row.get(0), u64::try_from(count).unwrap_or(0))
        })
        .collect()
}

/// Runs of recurring jobs due within `horizon`: a job every `interval` has horizon / interval
/// runs due in it, so a queue keeps the workers its next slots need between two bursts.
#[derive(Debug, Clone)]
pub struct DueSoon {
    pub pool: Pool,
    pub horizon: Duration,
}

impl Provider for DueSoon {
    fn name(&self) -> &'static str {
        "due"
    }

    fn collect<'a>(
        &'a self,
        _queues: &'a [QueueName],
    ) -> BoxFuture<'a, anyhow::Result<Vec<(String, u64)>>> {
        Box::pin(async move {
            let client = self.pool.get().await.context("no PostgreSQL connection")?;
            let horizon_ms = self.horizon.as_secs_f64() * 1000.0;
            let rows = client
                .query(
                    "SELECT j.queue, ceil(sum($1::float8 / j.interval_ms))::int8
                       FROM jobs j LEFT JOIN targets t ON t.id = j.target
                      WHERE j.enabled AND j.interval_ms IS NOT NULL AND coalesce(t.enabled, true)
                      GROUP BY j.queue",
                    &[&horizon_ms],
                )
                .await
                .context("cannot count the runs due soon")?;
            Ok(counts(&rows))
        })
    }
}

/// Where in an HTTP source's JSON the names and counts are, as JSON pointers (RFC 6901).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPaths {
    /// The array of items: `""` for a top-level array, `/data/queues` for a nested one.
    pub items: String,
    /// The name inside an item, such as `/name`.
    pub name: String,
    /// The count inside an item, such as `/count`: a whole number or a string of one.
    pub count: String,
}

/// Reads `(name, count)` pairs from a JSON document; every item that does not fit is named in
/// the error, with what was expected.
pub fn read_json(doc: &serde_json::Value, paths: &JsonPaths) -> anyhow::Result<Vec<(String, u64)>> {
    let items = doc
        .pointer(&paths.items)
        .with_context(|| format!("no value at {:?} in the answer", paths.items))?
        .as_array()
        .with_context(|| format!("the value at {:?} is not an array", paths.items))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = match item.pointer(&paths.name) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            other => anyhow::bail!(
                "item {i}: expected a name (text) at {:?}, found {}",
                paths.name,
                other.map_or("nothing".to_owned(), ToString::to_string)
            ),
        };
        let count = match item.pointer(&paths.count) {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .with_context(|| {
            format!(
                "item {i} ({name}): expected a whole count at {:?}, found {}",
                paths.count,
                item.pointer(&paths.count)
                    .map_or("nothing".to_owned(), ToString::to_string)
            )
        })?;
        out.push((name, count));
    }
    Ok(out)
}

/// An external JSON API answering pending work by name.
#[derive(Debug, Clone)]
pub struct HttpSource {
    pub client: reqwest::Client,
    pub url: String,
    /// Sent as the `Authorization` header (read from a variable, never logged).
    pub authorization: Option<Secret>,
    pub paths: JsonPaths,
}

impl Provider for HttpSource {
    fn name(&self) -> &'static str {
        "http"
    }

    fn collect<'a>(
        &'a self,
        _queues: &'a [QueueName],
    ) -> BoxFuture<'a, anyhow::Result<Vec<(String, u64)>>> {
        Box::pin(async move {
            // Shown without credentials or query (where a token may be); reqwest's errors
            // without the URL at all.
            let shown = faro_shared::config::url_for_logs(&self.url);
            let mut request = self.client.get(&self.url);
            if let Some(auth) = &self.authorization {
                request = request.header(reqwest::header::AUTHORIZATION, auth.expose());
            }
            let response = request
                .send()
                .await
                .map_err(reqwest::Error::without_url)
                .with_context(|| format!("cannot reach {shown}"))?;
            let status = response.status();
            if !status.is_success() {
                anyhow::bail!("{shown} answered {status}");
            }
            let body = response
                .bytes()
                .await
                .map_err(reqwest::Error::without_url)
                .with_context(|| format!("cannot read the answer of {shown}"))?;
            let doc: serde_json::Value = serde_json::from_slice(&body)
                .with_context(|| format!("the answer of {shown} is not JSON"))?;
            read_json(&doc, &self.paths).with_context(|| format!("the answer of {shown}"))
        })
    }
}

/// A read-only query on another PostgreSQL returning `(name text, count bigint)` rows.
#[derive(Debug, Clone)]
pub struct SqlSource {
    pub pool: Pool,
    pub query: String,
    /// The query's own limit on the server (`statement_timeout`).
    pub timeout: Duration,
}

impl Provider for SqlSource {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn collect<'a>(
        &'a self,
        _queues: &'a [QueueName],
    ) -> BoxFuture<'a, anyhow::Result<Vec<(String, u64)>>> {
        Box::pin(async move {
            let mut client = self
                .pool
                .get()
                .await
                .context("cannot connect to the demand database")?;
            // Read-only whatever the query says, and bounded on the server too.
            let tx = client
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .context("cannot start a read-only transaction")?;
            tx.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                self.timeout.as_millis().max(1)
            ))
            .await?;
            let rows = tx
                .query(self.query.as_str(), &[])
                .await
                .context("the demand query failed")?;
            let mut out = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let name: String = row.try_get(0).with_context(|| {
                    format!("row {i}: the first column must be the name (text)")
                })?;
                let count = row
                    .try_get::<_, i64>(1)
                    .or_else(|_| row.try_get::<_, i32>(1).map(i64::from))
                    .with_context(|| {
                        format!("row {i} ({name}): the second column must be the count (a whole number)")
                    })?;
                out.push((name, u64::try_from(count).unwrap_or(0)));
            }
            tx.commit().await?;
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(items: &str) -> JsonPaths {
        JsonPaths {
            items: items.into(),
            name: "/name".into(),
            count: "/open".into(),
        }
    }

    #[test]
    fn json_items_are_read_by_pointer() {
        let doc = serde_json::json!({"data": {"types": [
            {"name": "olt-discovery", "open": 4},
            {"name": "optical", "open": "12"},
        ]}});
        assert_eq!(
            read_json(&doc, &paths("/data/types")).unwrap(),
            [("olt-discovery".to_owned(), 4), ("optical".to_owned(), 12)]
        );
        let top = serde_json::json!([{"name": "a", "open": 0}]);
        assert_eq!(read_json(&top, &paths("")).unwrap(), [("a".to_owned(), 0)]);
    }

    #[tokio::test]
    async fn an_unreachable_api_is_named_without_its_credentials_or_token() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let source = HttpSource {
            client: reqwest::Client::new(),
            url: format!("http://demand:pa55word@127.0.0.1:{port}/open?token=t0ken"),
            authorization: None,
            paths: paths(""),
        };
        let error = format!("{:#}", source.collect(&[]).await.unwrap_err());
        assert!(
            error.contains(&format!("cannot reach http://127.0.0.1:{port}/open?…")),
            "{error}"
        );
        for secret in ["pa55word", "t0ken", "demand:"] {
            assert!(!error.contains(secret), "{secret} in {error}");
        }
    }

    #[test]
    fn a_bad_answer_says_what_is_wrong_and_where() {
        let doc = serde_json::json!({"data": [{"name": "a", "open": -3}]});
        let error = format!("{:#}", read_json(&doc, &paths("/data")).unwrap_err());
        assert!(
            error.contains("item 0 (a): expected a whole count at \"/open\", found -3"),
            "{error}"
        );
        let error = format!("{:#}", read_json(&doc, &paths("/items")).unwrap_err());
        assert!(error.contains("no value at \"/items\""), "{error}");
        let doc = serde_json::json!({"data": {"name": "a"}});
        let error = format!("{:#}", read_json(&doc, &paths("/data")).unwrap_err());
        assert!(error.contains("is not an array"), "{error}");
    }
}
