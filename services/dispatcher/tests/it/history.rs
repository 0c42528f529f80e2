//! The run history by day: days made ahead, dropped past retention without losing a run still
//! open, and one run per recurring slot without a unique index on slots.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use faro_dispatcher::history::{maintain, DAYS_AHEAD};
use faro_dispatcher::retry::RetryPolicy;
use faro_dispatcher::store;
use faro_dispatcher::timetable::Fire;
use faro_shared::domain::JobId;
use faro_shared::messages::RunResult;
use faro_shared::pg;
use faro_shared::testing::TestDb;
use uuid::Uuid;

use crate::store::{define_every_minute_job, record};

const DAY: Duration = Duration::from_secs(86_400);

/// A run id made at `at`, as the dispatcher's clock would have made it then.
fn id_at(at: DateTime<Utc>) -> Uuid {
    let random: [u8; 10] = Uuid::new_v4().as_bytes()[..10].try_into().unwrap();
    uuid::Builder::from_unix_timestamp_millis(
        u64::try_from(at.timestamp_millis()).unwrap(),
        &random,
    )
    .into_uuid()
}

/// Inserts a run of queue `q` made at `at` with `status`; returns its id.
async fn insert_run(pool: &deadpool_postgres::Pool, at: DateTime<Utc>, status: &str) -> Uuid {
    let id = id_at(at);
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO runs (id, job_id, queue, kind, params, priority, status, created_at)
             VALUES ($1, 'j', 'q', 'sim', '{}', 5, $2, $3)",
            &[&id, &status, &at],
        )
        .await
        .unwrap();
    id
}

/// Where each run is: the partition that holds it, or `None` when it is gone.
async fn partition_of(pool: &deadpool_postgres::Pool, id: Uuid) -> Option<String> {
    pool.get()
        .await
        .unwrap()
        .query_opt(
            "SELECT tableoid::regclass::text FROM runs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

async fn attempts_of(pool: &deadpool_postgres::Pool, id: Uuid) -> i64 {
    pool.get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM run_attempts WHERE run_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

/// `faro status`'s counts, read from the tallies, are the runs' counts; and still are once the
/// tallies are folded, one row per day, queue and status. The failures `faro run list` reads
/// are the runs that ended other than succeeded.
async fn assert_tallied(pool: &deadpool_postgres::Pool) {
    let client = pool.get().await.unwrap();
    let counted = || async {
        let mut runs = std::collections::BTreeMap::new();
        let mut queues = std::collections::BTreeMap::new();
        for row in client
            .query(
                "SELECT status, queue, count(*) FROM runs GROUP BY 1, 2",
                &[],
            )
            .await
            .unwrap()
        {
            let (status, queue, count) = (
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                row.get::<_, i64>(2),
            );
            if status == "pending" || status == "dispatched" {
                *queues.entry(queue).or_insert(0) += count;
            }
            *runs.entry(status).or_insert(0) += count;
        }
        (runs, queues)
    };
    let status = store::status(pool).await.unwrap();
    assert_eq!((status.runs, status.queues), counted().await, "tallies");
    store::compact_run_tallies(pool).await.unwrap();
    let status = store::status(pool).await.unwrap();
    assert_eq!(
        (status.runs, status.queues),
        counted().await,
        "folded tallies"
    );
    // The failures a list reads are the runs that ended other than succeeded, each in the
    // partition of the same day as its run (or held with it).
    let failures = "SELECT f.id::text, f.queue, f.target, f.job_id, f.status,
                           replace(f.tableoid::regclass::text, 'run_failures_', 'runs_')
                      FROM run_failures f ORDER BY 1";
    let failed_runs = "SELECT r.id::text, r.queue, r.target, r.job_id, r.status,
                              r.tableoid::regclass::text
                         FROM runs r
                        WHERE r.status NOT IN ('pending', 'dispatched', 'succeeded') ORDER BY 1";
    let rows = |sql| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|row| {
                    (0..6)
                        .map(|i| row.get::<_, Option<String>>(i).unwrap_or_default())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        }
    };
    let (listed, failed) = (rows(failures).await, rows(failed_runs).await);
    assert_eq!(listed, failed, "failures listed");
    let (rows, groups): (i64, i64) = client
        .query_one(
            "SELECT count(*), count(DISTINCT (day, queue, status)) FROM run_tallies",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!(
        rows, groups,
        "one row per day, queue and status once folded"
    );
}

/// A failure of the first attempt of a run inserted by `insert_run`, which has no retry.
fn failed(id: Uuid) -> RunResult {
    serde_json::from_value(serde_json::json!({
        "run_id": id, "attempt": 1, "job_id": "j", "queue": "q", "worker_id": "w1",
        "outcome": "failed", "error": "sim: failed", "simulated": true,
        "started_at": Utc::now(), "finished_at": Utc::now(),
    }))
    .unwrap()
}

/// The partition of `run_failures` that lists a run, or `None`.
async fn failure_in(pool: &deadpool_postgres::Pool, id: Uuid) -> Option<String> {
    pool.get()
        .await
        .unwrap()
        .query_opt(
            "SELECT tableoid::regclass::text FROM run_failures WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

/// A success of the first attempt of a run inserted by `insert_run`.
fn succeeded(id: Uuid) -> RunResult {
    serde_json::from_value(serde_json::json!({
        "run_id": id, "attempt": 1, "job_id": "j", "queue": "q", "worker_id": "w1",
        "outcome": "succeeded", "simulated": true,
        "started_at": Utc::now(), "finished_at": Utc::now(),
    }))
    .unwrap()
}

#[tokio::test]
async fn a_dropped_day_keeps_the_runs_still_open_until_they_end_and_pass_retention() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let now = Utc::now();
    let old = now - chrono::Duration::days(40);
    assert!(store::make_history_day(&pool, old.date_naive())
        .await
        .unwrap());
    let ended = insert_run(&pool, old, "succeeded").await;
    let timed_out = insert_run(&pool, old, "timed_out").await;
    let going = insert_run(&pool, old, "dispatched").await;
    let waiting = insert_run(&pool, old, "pending").await;
    let recent = insert_run(&pool, now, "succeeded").await;
    let today = insert_run(&pool, now, "dispatched").await;
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO run_attempts (run_id, attempt, outcome) VALUES ($1, 1, 'failed'), ($2, 1, 'failed')",
            &[&ended, &going],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO run_outbox (run_id, queue) VALUES ($1, 'q')",
            &[&waiting],
        )
        .await
        .unwrap();
    let old_day = format!("runs_d{}", old.format("%Y%m%d"));
    assert_eq!(
        partition_of(&pool, going).await.as_deref(),
        Some(old_day.as_str())
    );

    assert_tallied(&pool).await;
    let done = maintain(&pool, now, 30 * DAY).await.unwrap();
    assert_eq!(done.dropped, [old.date_naive()]);
    assert_tallied(&pool).await;
    assert_eq!((done.held, done.failed), (2, 0));
    // The ended run went with its day; the open ones and their attempts are held.
    assert_eq!(partition_of(&pool, ended).await, None);
    assert_eq!(attempts_of(&pool, ended).await, 0);
    assert_eq!(failure_in(&pool, timed_out).await, None);
    assert_eq!(
        partition_of(&pool, going).await.as_deref(),
        Some("runs_held")
    );
    assert_eq!(attempts_of(&pool, going).await, 1);
    assert_eq!(
        partition_of(&pool, waiting).await.as_deref(),
        Some("runs_held")
    );
    assert!(partition_of(&pool, recent).await.is_some());
    let unpublished = store::unpublished_runs(&pool, None, 10).await.unwrap();
    assert_eq!(
        unpublished.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        [waiting]
    );
    // Today and the days ahead are there.
    let days = store::history_days(&pool).await.unwrap();
    for ahead in 0..=DAYS_AHEAD {
        let day = now.date_naive() + chrono::Days::new(u64::from(ahead));
        assert!(days.contains(&day), "{day} missing from {days:?}");
    }
    assert!(!days.contains(&old.date_naive()));

    // The held run still takes its result, like any other; so does a run of today (written
    // to today's partition by name).
    let recording = record(&pool, &[failed(going)], &RetryPolicy::default()).await;
    assert_eq!(recording.ended.len(), 1, "{recording:?}");
    assert_eq!(
        failure_in(&pool, going).await.as_deref(),
        Some("run_failures_held")
    );
    let recording = record(&pool, &[succeeded(today)], &RetryPolicy::default()).await;
    assert_eq!(recording.ended.len(), 1, "{recording:?}");
    assert_tallied(&pool).await;
    // Ended and past retention: deleted at the next check, with its attempts; the run still
    // waiting stays.
    let done = maintain(&pool, now, 30 * DAY).await.unwrap();
    assert_eq!((done.expired, done.dropped.len()), (1, 0));
    assert_eq!(partition_of(&pool, going).await, None);
    assert_eq!(attempts_of(&pool, going).await, 0);
    assert_eq!(failure_in(&pool, going).await, None);
    assert_eq!(
        partition_of(&pool, waiting).await.as_deref(),
        Some("runs_held")
    );
    let (held, bytes) = store::history_size(&pool).await.unwrap();
    assert_eq!(held, 1);
    assert!(bytes > 0);
    assert_tallied(&pool).await;
}

#[tokio::test]
async fn a_day_made_late_takes_its_runs_back_from_the_held_partition() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let later = Utc::now() + chrono::Duration::days(10);
    let run = insert_run(&pool, later, "pending").await;
    assert_eq!(partition_of(&pool, run).await.as_deref(), Some("runs_held"));
    // Ended while held (a skipped slot, inserted ended): listed among the held failures.
    let skipped = insert_run(&pool, later, "skipped").await;
    assert_eq!(
        failure_in(&pool, skipped).await.as_deref(),
        Some("run_failures_held")
    );
    assert_tallied(&pool).await;
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO run_attempts (run_id, attempt, outcome) VALUES ($1, 1, 'failed')",
            &[&run],
        )
        .await
        .unwrap();
    let day: NaiveDate = later.date_naive();
    assert!(store::make_history_day(&pool, day).await.unwrap());
    assert!(!store::make_history_day(&pool, day).await.unwrap());
    let expected = format!("runs_d{}", day.format("%Y%m%d"));
    assert_eq!(partition_of(&pool, run).await, Some(expected));
    assert_eq!(
        failure_in(&pool, skipped).await,
        Some(format!("run_failures_d{}", day.format("%Y%m%d")))
    );
    assert_tallied(&pool).await;
    let attempts_in: String = client
        .query_one(
            "SELECT tableoid::regclass::text FROM run_attempts WHERE run_id = $1",
            &[&run],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attempts_in,
        format!("run_attempts_d{}", day.format("%Y%m%d"))
    );
}

#[tokio::test]
async fn a_slot_is_recorded_once_however_many_times_it_fires() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    define_every_minute_job(&pool).await;
    let job = JobId::parse("every-minute").unwrap();
    let slot = Utc::now();
    let missed = slot - chrono::Duration::minutes(1);
    let fire = Fire {
        job: job.clone(),
        slot,
        overlaps: None,
        missed: vec![missed],
    };
    let (runs, skipped) = store::record_slots(&pool, std::slice::from_ref(&fire))
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        skipped,
        [faro_dispatcher::schedule::slot_run_id(&fire.job, missed)]
    );
    // Another dispatcher fires the same slots (a leader change), and a later fire counts the
    // first slot as missed: nothing new is recorded.
    let (runs, skipped) = store::record_slots(&pool, &[fire]).await.unwrap();
    assert!(
        runs.is_empty() && skipped.is_empty(),
        "{runs:?} {skipped:?}"
    );
    let later = Fire {
        job,
        slot: slot + chrono::Duration::minutes(1),
        overlaps: None,
        missed: vec![missed, slot],
    };
    let (runs, skipped) = store::record_slots(&pool, &[later]).await.unwrap();
    assert_eq!(
        (runs.len(), skipped.len()),
        (1, 0),
        "the missed slots were recorded before"
    );
    let rows: Vec<(String, i64)> = pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT status, count(*) FROM runs WHERE job_id = 'every-minute' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        rows,
        [("dispatched".to_owned(), 2), ("skipped".to_owned(), 1)]
    );
    assert_tallied(&pool).await;
}

#[tokio::test]
async fn submissions_and_one_shot_jobs_go_past_retention_unless_still_needed() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let old = faro_shared::jobfile::parse(
        br#"[{"id": "done", "queue": "q", "kind": "sim"},
             {"id": "open", "queue": "q", "kind": "sim"},
             {"id": "parent", "queue": "q", "kind": "sim"},
             {"id": "child", "queue": "q", "kind": "sim", "after": "parent"},
             {"id": "every", "queue": "q", "kind": "sim", "interval": "1m"}]"#,
    )
    .unwrap();
    let planned = faro_dispatcher::plan::plan_submission(&old);
    store::record_submission(&pool, "old", None, None, &planned)
        .await
        .unwrap();
    let recent =
        faro_shared::jobfile::parse(br#"[{"id": "recent", "queue": "q", "kind": "sim"}]"#).unwrap();
    store::record_submission(
        &pool,
        "recent",
        None,
        None,
        &faro_dispatcher::plan::plan_submission(&recent),
    )
    .await
    .unwrap();
    let run_of = |job: &str| {
        planned
            .iter()
            .find(|run| run.message.job_id.as_str() == job)
            .map(|run| run.message.run_id)
            .unwrap()
    };
    record(
        &pool,
        &[succeeded(run_of("done")), succeeded(run_of("parent"))],
        &RetryPolicy::default(),
    )
    .await;
    let client = pool.get().await.unwrap();
    let long_ago = Utc::now() - chrono::Duration::days(40);
    client
        .execute(
            "UPDATE submissions SET received_at = $1 WHERE id = 'old'",
            &[&long_ago],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE jobs SET updated_at = $1 WHERE id <> 'recent'",
            &[&long_ago],
        )
        .await
        .unwrap();
    let jobs = || async {
        let rows = client
            .query("SELECT id FROM jobs ORDER BY id", &[])
            .await
            .unwrap();
        rows.iter().map(|row| row.get(0)).collect::<Vec<String>>()
    };

    let cutoff = Utc::now() - chrono::Duration::days(30);
    let expired = store::expire_submissions(&pool, cutoff).await.unwrap();
    assert_eq!((expired.submissions, expired.jobs), (1, 1));
    // Kept: a job whose run is still open, a job another is chained after, the chained and
    // the recurring definitions, and what is recent.
    assert_eq!(jobs().await, ["child", "every", "open", "parent", "recent"]);
    let submissions: Vec<String> = client
        .query("SELECT id FROM submissions", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(submissions, ["recent"]);
    // The runs stay for their own retention.
    assert_eq!(
        partition_of(&pool, run_of("done")).await.map(|_| ()),
        Some(())
    );

    // Once its run ends, the open one goes at the next check.
    record(&pool, &[succeeded(run_of("open"))], &RetryPolicy::default()).await;
    let expired = store::expire_submissions(&pool, cutoff).await.unwrap();
    assert_eq!((expired.submissions, expired.jobs), (0, 1));
    assert_eq!(jobs().await, ["child", "every", "parent", "recent"]);
    assert!(store::table_bytes(&pool, "submissions").await.unwrap() > 0);
    assert_eq!(store::table_bytes(&pool, "no_such_table").await.unwrap(), 0);
}

#[tokio::test]
async fn pages_of_runs_go_newest_first_across_days_whatever_their_status() {
    use faro_shared::domain::{QueueName, RunStatus};
    use faro_shared::messages::RunsRequest;
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let now = Utc::now();
    let mut failed = Vec::new();
    let mut all = Vec::new();
    // Failed runs among successes on three days, two of them held (their days not made).
    for (back, status) in (0..12).map(|i| (i % 3, ["failed", "succeeded"][i as usize % 2])) {
        let at = now
            - chrono::Duration::days(back * 20)
            - chrono::Duration::seconds(i64::try_from(all.len()).unwrap());
        let id = insert_run(&pool, at, status).await;
        all.push(id);
        if status == "failed" {
            failed.push(id);
        }
    }
    let dispatched = insert_run(&pool, now, "dispatched").await;
    let pending = insert_run(&pool, now, "pending").await;
    all.extend([dispatched, pending]);
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO run_outbox (run_id, queue) VALUES ($1, 'q')",
            &[&pending],
        )
        .await
        .unwrap();
    failed.sort_unstable_by(|a, b| b.cmp(a));
    all.sort_unstable_by(|a, b| b.cmp(a));

    // Every page full but the last, in order, each starting below the one before.
    let pages = |request: RunsRequest| {
        let pool = pool.clone();
        async move {
            let mut listed = Vec::new();
            let mut before = None;
            loop {
                let (runs, next) = store::runs_page(
                    &pool,
                    &RunsRequest {
                        before,
                        limit: 4,
                        ..request.clone()
                    },
                    &[dispatched],
                )
                .await
                .unwrap();
                assert!(runs.len() == 4 || next.is_none(), "{runs:?}");
                listed.extend(runs.iter().map(|r| (r.id, r.status)));
                match next {
                    Some(next) => before = Some(next),
                    None => return listed,
                }
            }
        }
    };
    let of_queue = pages(RunsRequest {
        queue: Some(QueueName::parse("q").unwrap()),
        status: Some(RunStatus::Failed),
        ..RunsRequest::default()
    })
    .await;
    assert_eq!(
        of_queue,
        failed
            .iter()
            .map(|id| (*id, RunStatus::Failed))
            .collect::<Vec<_>>()
    );
    let every = pages(RunsRequest::default()).await;
    assert_eq!(every.iter().map(|(id, _)| *id).collect::<Vec<_>>(), all);
    // Open runs: the one in the outbox and the one in flight.
    for (status, id) in [
        (RunStatus::Pending, pending),
        (RunStatus::Dispatched, dispatched),
    ] {
        let open = pages(RunsRequest {
            status: Some(status),
            ..RunsRequest::default()
        })
        .await;
        assert_eq!(open, [(id, status)]);
    }
    let none = pages(RunsRequest {
        status: Some(RunStatus::TimedOut),
        ..RunsRequest::default()
    })
    .await;
    assert!(none.is_empty());
}
