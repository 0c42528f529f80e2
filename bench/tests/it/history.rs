//! The history benchmark's loader: ended runs written into their days, which then drop whole.

use faro_shared::pg;
use faro_shared::testing::TestDb;

#[tokio::test]
async fn a_written_history_fills_its_days_and_the_oldest_drops_whole() {
    let db = TestDb::create().await.unwrap();
    let pool = pg::pool(&db.config()).unwrap();
    faro_bench::history::load(&pool, 3_000, 3).await.unwrap();
    let client = pool.get().await.unwrap();
    let days: Vec<(String, i64)> = client
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM runs GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let today = chrono::Utc::now().date_naive();
    let expected: Vec<(String, i64)> = (1..=3)
        .rev()
        .map(|back| {
            let day = today - chrono::Days::new(back);
            (format!("runs_d{}", day.format("%Y%m%d")), 1_000)
        })
        .collect();
    assert_eq!(days, expected);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'failed'),
                    count(*) FILTER (WHERE status IN ('pending', 'dispatched')),
                    count(DISTINCT queue), count(DISTINCT target)
               FROM runs",
            &[],
        )
        .await
        .unwrap();
    let (failed, open, queues, targets): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!((10..=60).contains(&failed), "{failed} of 3,000 failed");
    assert_eq!(open, 0);
    assert_eq!(queues, 20);
    assert!(targets > 900, "{targets} targets");

    let oldest = today - chrono::Days::new(3);
    assert_eq!(
        faro_dispatcher::store::drop_history_day(&pool, oldest)
            .await
            .unwrap(),
        0
    );
    let left: i64 = client
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 2_000);
}
