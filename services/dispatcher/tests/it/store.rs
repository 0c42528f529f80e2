//! The store's guarantees: a submission is recorded once, a result applies once and only to
//! the attempt it names.

use chrono::Utc;
use faro_dispatcher::plan::plan_submission;
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
        store::record_submission(&pool, "s1", None, &first)
            .await
            .unwrap(),
        Recorded::New
    );
    // Redelivered: planned again with new run ids, but nothing new is written.
    let again = plan_submission(&submission);
    assert_eq!(
        store::record_submission(&pool, "s1", None, &again)
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
    store::mark_published(&pool, &[unpublished[0].run_id])
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
async fn results_are_fenced_by_attempt_and_applied_once() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    let submission =
        jobfile::parse(br#"[{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim"}]"#)
            .unwrap();
    let runs = plan_submission(&submission);
    store::record_submission(&pool, "s", None, &runs)
        .await
        .unwrap();
    let (a, b) = (&runs[0].message, &runs[1].message);

    // A result naming another attempt changes nothing.
    let stale = store::record_results(&pool, &[result_for(a, 2, Outcome::Failed)])
        .await
        .unwrap();
    assert!(stale.is_empty());
    assert_eq!(
        store::run_status(&pool, a.run_id).await.unwrap(),
        Some(RunStatus::Dispatched)
    );

    // The right attempt applies; a repeat of it, even with another outcome, does not.
    let applied = store::record_results(
        &pool,
        &[
            result_for(a, 1, Outcome::Succeeded),
            result_for(b, 1, Outcome::Interrupted),
        ],
    )
    .await
    .unwrap();
    assert_eq!(applied.len(), 2);
    let repeat = store::record_results(&pool, &[result_for(a, 1, Outcome::Failed)])
        .await
        .unwrap();
    assert!(repeat.is_empty());
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
}
