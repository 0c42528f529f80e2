//! The store's guarantees: a submission is recorded once, a result applies once and only to
//! the attempt it names.

use std::time::Duration;

use chrono::Utc;
use faro_dispatcher::chains::Chains;
use faro_dispatcher::plan::plan_submission;
use faro_dispatcher::retry::RetryPolicy;
use faro_dispatcher::store::{self, Recorded};
use faro_shared::domain::{Outcome, RunStatus, WorkerId};
use faro_shared::messages::RunResult;
use faro_shared::testing::TestDb;
use faro_shared::{jobfile, pg};

fn result_for(
    run: &faro_shared::messages::RunMessage,
    attempt: u32,
    outcome: Outcome,
) -> RunResult {
    RunResult {
        run_id: run.run_id,
        attempt,
        job_id: run.job_id.clone(),
        queue: run.queue.clone(),
        target: run.target.clone(),
        worker_id: WorkerId::parse("w1").unwrap(),
        outcome,
        simulated: true,
        started_at: Utc::now(),
        finished_at: Utc::now(),
        output: None,
        error: None,
    }
}

#[tokio::test]
async fn a_submission_is_recorded_once() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let submission = jobfile::parse(
        br#"[{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim", "target": "t"}]"#,
    )
    .unwrap();
    let first = plan_submission(&submission);
    assert_eq!(
        store::record_submission(&pool, "s1", None, None, &first)
            .await
            .unwrap(),
        Recorded::New
    );
    // Redelivered: planned again with new run ids, but nothing new is written.
    let again = plan_submission(&submission);
    assert_eq!(
        store::record_submission(&pool, "s1", None, None, &again)
            .await
            .unwrap(),
        Recorded::Duplicate
    );
    let client = pool.get().await.unwrap();
    let runs: i64 = client
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 2);
    let kinds: Vec<String> = client
        .query_one("SELECT kinds FROM queues WHERE name = 'q'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kinds, ["sim"]);
    // Both runs wait in the outbox until published.
    let unpublished = store::unpublished_runs(&pool, Some("s1"), 10)
        .await
        .unwrap();
    assert_eq!(unpublished.len(), 2);
    store::mark_published(&pool, &[(unpublished[0].run_id, 1)])
        .await
        .unwrap();
    assert_eq!(
        store::unpublished_runs(&pool, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_run_reported_before_its_publish_was_confirmed_is_never_published_again() {
    // Its publish was stored but not confirmed (a server that crashed), so its outbox row
    // stayed; a worker executed it and its result was recorded. A later start must not
    // publish it again: the server may no longer know its message id.
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let submission =
        jobfile::parse(br#"[{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim"}]"#)
            .unwrap();
    let runs = plan_submission(&submission);
    store::record_submission(&pool, "s", None, None, &runs)
        .await
        .unwrap();
    let (a, b) = (&runs[0].message, &runs[1].message);
    record(
        &pool,
        &[result_for(a, 1, Outcome::Succeeded)],
        &RetryPolicy::default(),
    )
    .await;
    let unpublished = store::unpublished_runs(&pool, None, 10).await.unwrap();
    let ids: Vec<_> = unpublished.iter().map(|r| r.run_id).collect();
    assert_eq!(ids, [b.run_id]);
}

const NO_JITTER: fn() -> f64 = || 0.0;
static NO_CHAINS: std::sync::LazyLock<Chains> = std::sync::LazyLock::new(Chains::default);

/// Retries a minute after a failure, at most ten minutes after.
const RETRY_AFTER_A_MINUTE: RetryPolicy = RetryPolicy {
    base: Duration::from_secs(60),
    max: Duration::from_secs(600),
};

/// Defines the recurring job `every-minute` of queue `polls`.
pub(crate) async fn define_every_minute_job(pool: &deadpool_postgres::Pool) {
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO queues (name) VALUES ('polls');
             INSERT INTO jobs (id, queue, kind, interval_ms) VALUES ('every-minute', 'polls', 'sim', 60000);",
        )
        .await
        .unwrap();
}

/// Records `results` as the results task does, without jitter or chains.
pub(crate) async fn record(
    pool: &deadpool_postgres::Pool,
    results: &[RunResult],
    policy: &RetryPolicy,
) -> store::Recording {
    store::record_results(pool, results, policy, NO_JITTER, &NO_CHAINS)
        .await
        .unwrap()
}

#[tokio::test]
async fn results_are_fenced_by_attempt_and_applied_once() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let policy = RetryPolicy::default();
    let submission =
        jobfile::parse(br#"[{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim"}]"#)
            .unwrap();
    let runs = plan_submission(&submission);
    store::record_submission(&pool, "s", None, None, &runs)
        .await
        .unwrap();
    let (a, b) = (&runs[0].message, &runs[1].message);

    // A result naming another attempt changes nothing, and is kept as late.
    let stale = record(&pool, &[result_for(a, 2, Outcome::Failed)], &policy).await;
    assert!(stale.ended.is_empty() && stale.retried.is_empty());
    assert_eq!(stale.late, [a.run_id]);
    assert_eq!(
        store::run_status(&pool, a.run_id).await.unwrap(),
        Some(RunStatus::Dispatched)
    );

    // The right attempt applies; a repeat of it, even with another outcome, does not.
    let (done_a, done_b) = (
        result_for(a, 1, Outcome::Succeeded),
        result_for(b, 1, Outcome::Interrupted),
    );
    let applied = record(&pool, &[done_a.clone(), done_b.clone()], &policy).await;
    assert_eq!(applied.ended.len(), 2);
    // The same results delivered again (their ack was lost): nothing changes, nothing kept.
    let again = record(&pool, &[done_a.clone(), done_b.clone(), done_a], &policy).await;
    assert!(again.ended.is_empty() && again.retried.is_empty());
    let repeat = record(&pool, &[result_for(a, 1, Outcome::Failed)], &policy).await;
    assert_eq!(repeat.late, [a.run_id]);
    assert_eq!(
        store::run_status(&pool, a.run_id).await.unwrap(),
        Some(RunStatus::Succeeded)
    );
    assert_eq!(
        store::run_status(&pool, b.run_id).await.unwrap(),
        Some(RunStatus::Interrupted)
    );

    let status = store::status(&pool).await.unwrap();
    assert_eq!(status.runs.get("succeeded"), Some(&1));
    assert_eq!(status.runs.get("interrupted"), Some(&1));
    assert!(status.queues.is_empty());
    let client = pool.get().await.unwrap();
    let late: i64 = client
        .query_one("SELECT count(*) FROM run_attempts WHERE late", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, 2);
}

#[tokio::test]
async fn a_failed_attempt_is_retried_and_its_late_result_changes_nothing() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let policy = RETRY_AFTER_A_MINUTE;
    let submission = jobfile::parse(
        br#"[{"queue": "q", "kind": "sim", "max_attempts": 2, "retry_on": ["failed"]}]"#,
    )
    .unwrap();
    let runs = plan_submission(&submission);
    store::record_submission(&pool, "s", None, None, &runs)
        .await
        .unwrap();
    let run = &runs[0].message;
    store::mark_published(&pool, &[(run.run_id, 1)])
        .await
        .unwrap();

    // Attempt 1 fails: attempt 2 is scheduled after the backoff, not published before.
    let first = record(&pool, &[result_for(run, 1, Outcome::Failed)], &policy).await;
    assert_eq!(first.retried.len(), 1);
    let (_, next, due) = first.retried[0];
    assert_eq!(next, 2);
    let wait = (due - chrono::Utc::now()).num_seconds();
    assert!((25..=30).contains(&wait), "{wait}");
    assert!(store::take_due_retries(&pool, 10).await.unwrap().is_empty());
    assert!(store::unpublished_runs(&pool, None, 10)
        .await
        .unwrap()
        .is_empty());
    let next_due = store::next_retry(&pool).await.unwrap().unwrap();
    assert_eq!(next_due.timestamp_micros(), due.timestamp_micros());

    // The publisher clearing attempt 1 late (after a fast failure) keeps the retry's row.
    store::mark_published(&pool, &[(run.run_id, 1)])
        .await
        .unwrap();
    let next_due = store::next_retry(&pool).await.unwrap();
    assert!(
        next_due.is_some(),
        "the retry's outbox row was cleared with attempt 1"
    );

    // A late copy of attempt 1 (say, from a worker presumed dead) changes nothing.
    let late = record(&pool, &[result_for(run, 1, Outcome::Succeeded)], &policy).await;
    assert_eq!(late.late, [run.run_id]);
    assert_eq!(
        store::run_status(&pool, run.run_id).await.unwrap(),
        Some(RunStatus::Dispatched)
    );

    // Attempt 2 fails too: attempts are used up, the run ends failed.
    let last = record(&pool, &[result_for(run, 2, Outcome::Failed)], &policy).await;
    assert_eq!(last.ended, [(run.run_id, RunStatus::Failed)]);
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT attempt, outcome, late FROM run_attempts ORDER BY recorded_at",
            &[],
        )
        .await
        .unwrap();
    let history: Vec<(i32, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        history,
        [
            (1, "failed".to_owned(), false),
            (1, "succeeded".to_owned(), true)
        ]
    );
    let attempt: i32 = client
        .query_one("SELECT attempt FROM runs WHERE id = $1", &[&run.run_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempt, 2);
}

/// PostgreSQL's text and jsonb cannot hold a NUL character: a result whose output or error
/// carries one (a program that printed it) is still recorded, the NUL replaced, and the rest
/// of its batch with it.
#[tokio::test]
async fn a_result_with_a_nul_character_is_recorded_with_its_batch() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let submission = jobfile::parse(
        br#"[{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim"},
            {"queue": "q", "kind": "sim", "max_attempts": 2}]"#,
    )
    .unwrap();
    let runs = plan_submission(&submission);
    store::record_submission(&pool, "s", None, None, &runs)
        .await
        .unwrap();
    let (a, b, c) = (&runs[0].message, &runs[1].message, &runs[2].message);
    let mut poisoned = result_for(a, 1, Outcome::Failed);
    poisoned.error = Some("exit 1: \u{0}bad".to_owned());
    poisoned.output = Some(faro_shared::messages::RunOutput::Exec {
        exit_code: Some(1),
        stdout: "before\u{0}after".to_owned(),
        stderr: String::new(),
        truncated: false,
    });
    let mut retried = result_for(c, 1, Outcome::Failed);
    retried.error = Some("\u{0}".to_owned());
    let recording = record(
        &pool,
        &[poisoned, result_for(b, 1, Outcome::Succeeded), retried],
        &RetryPolicy::default(),
    )
    .await;
    assert_eq!(recording.ended.len(), 2, "{recording:?}");
    assert_eq!(recording.retried.len(), 1, "{recording:?}");
    let row = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT error, output->>'stdout' FROM runs WHERE id = $1",
            &[&a.run_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "exit 1: \u{fffd}bad");
    assert_eq!(row.get::<_, String>(1), "before\u{fffd}after");
}

/// The outbox rows by queue, as the demand collector counts the runs waiting.
async fn outbox_queues(pool: &deadpool_postgres::Pool) -> Vec<(Option<String>, i64)> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT queue, count(*) FROM run_outbox GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

#[tokio::test]
async fn every_outbox_row_names_its_queue() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let waiting = |pairs: &[(&str, i64)]| -> Vec<(Option<String>, i64)> {
        pairs
            .iter()
            .map(|(q, n)| (Some((*q).to_owned()), *n))
            .collect()
    };
    // Submitted runs.
    let submission = jobfile::parse(
        br#"[{"queue": "q", "kind": "sim", "max_attempts": 2, "retry_on": ["failed"]},
             {"queue": "p", "kind": "sim"}]"#,
    )
    .unwrap();
    let runs = plan_submission(&submission);
    store::record_submission(&pool, "s", None, None, &runs)
        .await
        .unwrap();
    assert_eq!(outbox_queues(&pool).await, waiting(&[("p", 1), ("q", 1)]));
    // A retry waiting for its backoff.
    let run = &runs[0].message;
    store::mark_published(&pool, &[(run.run_id, 1)])
        .await
        .unwrap();
    let first = record(
        &pool,
        &[result_for(run, 1, Outcome::Failed)],
        &RETRY_AFTER_A_MINUTE,
    )
    .await;
    assert_eq!(first.retried.len(), 1);
    assert_eq!(outbox_queues(&pool).await, waiting(&[("p", 1), ("q", 1)]));
    // A recurring job's slot.
    define_every_minute_job(&pool).await;
    let fire = faro_dispatcher::timetable::Fire {
        job: faro_shared::domain::JobId::parse("every-minute").unwrap(),
        slot: Utc::now(),
        overlaps: None,
        missed: Vec::new(),
    };
    let (fired, skipped) = store::record_slots(&pool, &[fire]).await.unwrap();
    assert_eq!((fired.len(), skipped.len()), (1, 0));
    assert_eq!(
        outbox_queues(&pool).await,
        waiting(&[("p", 1), ("polls", 1), ("q", 1)])
    );
}

/// A run's values are written for its own queue and target only: a chunk naming another target
/// (a worker writing what it did not poll) is dropped and counted, as is one of an attempt that
/// is no longer current.
#[tokio::test]
async fn values_are_kept_only_for_the_current_attempt_of_their_runs_own_target() {
    use faro_dispatcher::values;
    use faro_shared::domain::{JobId, QueueName, TargetId};
    use faro_shared::snmp::{SnmpValue, ValuesChunk, Varbind};
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let run = uuid::Uuid::now_v7();
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO runs (id, job_id, queue, target, kind, params, priority, status)
             VALUES ($1, 'walk', 'optical', 'olt-1', 'snmp.walk', '{}', 5, 'dispatched')",
            &[&run],
        )
        .await
        .unwrap();
    let chunk = |attempt: u32, queue: &str, target: &str, oid: &str| ValuesChunk {
        run_id: run,
        attempt,
        job_id: JobId::parse("walk").unwrap(),
        queue: QueueName::parse(queue).unwrap(),
        target: TargetId::parse(target).unwrap(),
        seq: 0,
        polled_at: Utc::now(),
        values: vec![Varbind(oid.to_owned(), SnmpValue::Integer(-2150))],
    };
    let recorded = values::record(
        &pool,
        &[
            chunk(1, "optical", "olt-1", "1.3.6.1.1"),
            chunk(1, "optical", "olt-2", "1.3.6.1.2"),
            chunk(1, "other", "olt-1", "1.3.6.1.3"),
            chunk(2, "optical", "olt-1", "1.3.6.1.4"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        recorded,
        values::Recorded {
            values: 1,
            late: 1,
            mismatched: 2,
        }
    );
    let stored: Vec<(String, String)> = pool
        .get()
        .await
        .unwrap()
        .query("SELECT target, oid FROM target_values ORDER BY 1, 2", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(stored, [("olt-1".to_owned(), "1.3.6.1.1".to_owned())]);
}
