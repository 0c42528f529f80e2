//! Pages of runs, newest first by id (the time made), for `faro run list`: each read from an
//! index in id order and stopped at the page's end, whatever the size of the history.
//!
//! - a status a run ends with other than success: `run_failures` (migration V16), by queue,
//!   target, job and status, joined to `runs` by id;
//! - an open status: the outbox and the runs in flight, the only runs open (read whole and
//!   sorted: as many as wait, not as many as the history holds);
//! - otherwise `runs` itself, by `(queue, id)`, `(target, id)`, `(job_id, id)` or the id.
//!
//! Statuses are those stored, as `faro status` counts them: a run is stored `dispatched` from
//! when it is recorded (its outbox row is what says it is not published yet) until it ends.

use anyhow::Context as _;
use deadpool_postgres::Pool;
use faro_shared::domain::RunStatus;
use faro_shared::messages::{RunView, RunsRequest};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// Where a page is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Failures,
    Open,
    Runs,
}

impl Source {
    fn of(status: Option<RunStatus>) -> Self {
        match status {
            Some(RunStatus::Pending | RunStatus::Dispatched) => Source::Open,
            Some(RunStatus::Succeeded) | None => Source::Runs,
            Some(_) => Source::Failures,
        }
    }
}

/// The statement of a page: the named conditions only (a condition that may be absent,
/// `$1 IS NULL OR ...`, would keep the planner from the index), numbered in the order
/// [`page_params`] gives them.
fn page_sql(request: &RunsRequest) -> String {
    let source = Source::of(request.status);
    let (from, key) = match source {
        // `runs` first: its lock before the failures', in the order a day's drop takes them.
        Source::Failures => ("runs r JOIN run_failures f ON f.id = r.id", "f"),
        // One lookup by id per open run, never a scan of the history.
        Source::Open => (
            "(SELECT run_id FROM run_outbox UNION SELECT unnest($1::uuid[])) o(id)
               CROSS JOIN LATERAL (SELECT * FROM runs r WHERE r.id = o.id LIMIT 1) r",
            "r",
        ),
        Source::Runs => ("runs r", "r"),
    };
    let mut n = usize::from(source == Source::Open);
    let mut conditions = Vec::new();
    let mut condition = |present: bool, text: &str| {
        if present {
            n += 1;
            conditions.push(text.replace('$', &format!("${n}")));
        }
    };
    condition(request.status.is_some(), &format!("{key}.status = $"));
    condition(request.queue.is_some(), &format!("{key}.queue = $"));
    condition(request.target.is_some(), &format!("{key}.target = $"));
    condition(request.job.is_some(), &format!("{key}.job_id = $"));
    condition(request.before.is_some(), &format!("{key}.id < $"));
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "SELECT r.id, r.job_id, r.queue, r.target, r.status, r.attempt, r.created_at,
                r.finished_at, r.worker_id, r.error
           FROM {from}{filter}
          ORDER BY {key}.id DESC LIMIT ${}",
        n + 1
    )
}

/// One page of runs, newest first, and the `before` of the next page. `in_flight`: the runs
/// the leader has in flight (with the outbox, the open runs).
pub async fn runs_page(
    pool: &Pool,
    request: &RunsRequest,
    in_flight: &[Uuid],
) -> anyhow::Result<(Vec<RunView>, Option<Uuid>)> {
    let size = request.page_size()?;
    let status = request.status.map(RunStatus::as_str);
    let queue = request.queue.as_ref().map(|q| q.as_str());
    let target = request.target.as_ref().map(|t| t.as_str());
    let job = request.job.as_ref().map(|j| j.as_str());
    // One more than the page: whether another page follows.
    let limit = i64::from(size) + 1;
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if Source::of(request.status) == Source::Open {
        params.push(&in_flight);
    }
    for value in [&status, &queue, &target, &job].into_iter().flatten() {
        params.push(value);
    }
    if let Some(before) = &request.before {
        params.push(before);
    }
    params.push(&limit);
    let client = pool.get().await.context("no PostgreSQL connection")?;
    let statement = client
        .prepare_cached(&page_sql(request))
        .await
        .context("cannot list runs")?;
    let rows = client
        .query(&statement, &params)
        .await
        .context("cannot list runs")?;
    let mut runs = rows
        .iter()
        .map(|row| {
            Ok(RunView {
                id: row.get(0),
                job_id: row.get(1),
                queue: row.get(2),
                target: row.get(3),
                status: row
                    .get::<_, String>(4)
                    .parse()
                    .map_err(anyhow::Error::msg)?,
                attempt: u32::try_from(row.get::<_, i32>(5)).unwrap_or(1),
                created_at: row.get(6),
                finished_at: row.get(7),
                worker_id: row.get(8),
                error: row.get(9),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let next = if runs.len() > size as usize {
        runs.truncate(size as usize);
        runs.last().map(|run| run.id)
    } else {
        None
    };
    Ok((runs, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faro_shared::domain::{QueueName, TargetId};

    fn request(status: Option<RunStatus>) -> RunsRequest {
        RunsRequest {
            status,
            ..RunsRequest::default()
        }
    }

    #[test]
    fn each_status_reads_the_source_that_holds_it_in_id_order() {
        let failed = page_sql(&RunsRequest {
            queue: Some(QueueName::parse("q").unwrap()),
            before: Some(Uuid::nil()),
            ..request(Some(RunStatus::Failed))
        });
        assert!(
            failed.contains("FROM runs r JOIN run_failures f"),
            "{failed}"
        );
        assert!(
            failed.contains("WHERE f.status = $1 AND f.queue = $2 AND f.id < $3"),
            "{failed}"
        );
        assert!(failed.contains("ORDER BY f.id DESC LIMIT $4"), "{failed}");
        for status in [
            RunStatus::Skipped,
            RunStatus::TimedOut,
            RunStatus::Cancelled,
        ] {
            assert!(page_sql(&request(Some(status))).contains("run_failures"));
        }

        let open = page_sql(&RunsRequest {
            target: Some(TargetId::parse("olt-1").unwrap()),
            ..request(Some(RunStatus::Dispatched))
        });
        assert!(
            open.contains("FROM (SELECT run_id FROM run_outbox"),
            "{open}"
        );
        assert!(
            open.contains("WHERE r.status = $2 AND r.target = $3"),
            "{open}"
        );
        assert!(open.contains("LIMIT $4"), "{open}");

        let all = page_sql(&request(None));
        assert!(
            all.contains("FROM runs r\n") || all.contains("FROM runs r "),
            "{all}"
        );
        assert!(!all.contains("WHERE"), "{all}");
        assert!(all.contains("ORDER BY r.id DESC LIMIT $1"), "{all}");
        let succeeded = page_sql(&request(Some(RunStatus::Succeeded)));
        assert!(!succeeded.contains("run_failures"), "{succeeded}");
    }

    #[test]
    fn a_page_is_one_to_a_thousand_runs_and_fifty_unless_asked() {
        assert_eq!(request(None).page_size().unwrap(), 50);
        let sized = |limit| RunsRequest {
            limit,
            ..RunsRequest::default()
        };
        assert_eq!(sized(1).page_size().unwrap(), 1);
        assert_eq!(sized(1_000).page_size().unwrap(), 1_000);
        let error = sized(1_001).page_size().unwrap_err().to_string();
        assert!(error.contains("1 to 1000"), "{error}");
    }
}
