//! The history task, and the pure plan it follows: which days of run history to make ahead
//! and which to drop past retention.
//!
//! A day's partitions are made [`DAYS_AHEAD`] days before it starts, so the runs of a day
//! never wait for one; a day is dropped whole once all of it is older than the retention
//! (`runs.retention`, else `FARO_RUNS_RETENTION`), so runs are kept at least that long and at
//! most a day longer. Nothing is ever deleted row by row but the few runs held past their day.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::state::Dispatcher;
use crate::store;

/// Days made ahead of today.
pub const DAYS_AHEAD: u32 = 3;

/// How often the leader checks the history's days.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(600);

/// How often the leader folds the run tallies (each statement writing runs adds a few rows;
/// `faro status` sums them).
pub const TALLY_INTERVAL: Duration = Duration::from_secs(10);

/// What one check does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPlan {
    /// Days to make, oldest first.
    pub make: Vec<NaiveDate>,
    /// Days to drop, oldest first.
    pub drop: Vec<NaiveDate>,
}

/// Pure: the days to make and to drop at `now`, given the days that exist. Yesterday is made
/// too (a slot missed during a takeover is recorded in its own day); a day is dropped once
/// its end is at least `retention` ago, and a day that would be dropped is never made.
pub fn plan(existing: &[NaiveDate], now: DateTime<Utc>, retention: Duration) -> HistoryPlan {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let cutoff = now.checked_sub_signed(retention);
    let past = |day: NaiveDate| match (cutoff, day.succ_opt()) {
        (Some(cutoff), Some(next)) => next.and_time(chrono::NaiveTime::MIN).and_utc() <= cutoff,
        _ => false,
    };
    let today = now.date_naive();
    let wanted = today
        .pred_opt()
        .into_iter()
        .chain(today.iter_days().take(DAYS_AHEAD as usize + 1));
    HistoryPlan {
        make: wanted
            .filter(|day| !past(*day) && !existing.contains(day))
            .collect(),
        drop: existing.iter().copied().filter(|day| past(*day)).collect(),
    }
}

/// The retention in force: the hot setting, else the dispatcher's configuration.
pub fn retention(settings: &faro_shared::settings::HotSettings, configured: Duration) -> Duration {
    settings.runs_retention().unwrap_or(configured)
}

/// What one check did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintained {
    pub made: Vec<NaiveDate>,
    pub dropped: Vec<NaiveDate>,
    /// Runs moved to the held partition because they were open when their day dropped.
    pub held: u64,
    /// Held runs deleted: ended, and made before the retention.
    pub expired: u64,
    /// Days that could not be made or dropped (logged; tried again at the next check).
    pub failed: usize,
    /// Days held after the check.
    pub days: usize,
}

/// One check: makes the days ahead, drops the days past `retention`, and deletes the held
/// runs that ended past it. A day that fails is logged and left for the next check; the
/// others go on.
pub async fn maintain(
    pool: &Pool,
    now: DateTime<Utc>,
    retention: Duration,
) -> anyhow::Result<Maintained> {
    let existing = store::history_days(pool).await?;
    let plan = plan(&existing, now, retention);
    let mut done = Maintained::default();
    for day in plan.make {
        match store::make_history_day(pool, day).await {
            Ok(true) => done.made.push(day),
            Ok(false) => {}
            Err(error) => {
                done.failed += 1;
                tracing::error!(%day, error = faro_shared::pg::error_text(&error), "cannot make a day of run history; its runs are kept in runs_held until it is made");
            }
        }
    }
    for day in plan.drop {
        match store::drop_history_day(pool, day).await {
            Ok(held) => {
                tracing::info!(%day, held, "day of run history dropped past retention");
                done.dropped.push(day);
                done.held += held;
            }
            Err(error) => {
                done.failed += 1;
                tracing::error!(%day, error = faro_shared::pg::error_text(&error), "cannot drop a day of run history; tried again at the next check");
            }
        }
    }
    let before = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    done.expired = store::expire_held_runs(pool, before).await?;
    done.days = existing.len() + done.made.len() - done.dropped.len();
    Ok(done)
}

/// The leader's history task: a check at once, then every [`CHECK_INTERVAL`], each with the
/// retention then in force; and the tallies folded every [`TALLY_INTERVAL`].
pub(crate) async fn history_loop(
    d: Arc<Dispatcher>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    metrics::counter!(m::HISTORY_PARTITIONS_DROPPED).increment(0);
    metrics::counter!(m::HISTORY_ERRORS).increment(0);
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fold = tokio::time::interval(TALLY_INTERVAL);
    fold.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = fold.tick() => {
                if let Err(error) = store::compact_run_tallies(&d.pool).await {
                    metrics::counter!(m::HISTORY_ERRORS).increment(1);
                    tracing::warn!(
                        error = faro_shared::pg::error_text(&error),
                        "cannot fold the run tallies; tried again shortly"
                    );
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        if let Err(error) = check(&d).await {
            metrics::counter!(m::HISTORY_ERRORS).increment(1);
            tracing::warn!(
                error = faro_shared::pg::error_text(&error),
                "cannot check the days of run history; tried again at the next check"
            );
        }
    }
}

async fn check(d: &Dispatcher) -> anyhow::Result<()> {
    let settings = faro_shared::settings::load(&d.pool).await?;
    let retention = retention(&settings, d.config.runs_retention);
    let now = Utc::now();
    let done = maintain(&d.pool, now, retention).await?;
    metrics::counter!(m::HISTORY_PARTITIONS_DROPPED).increment(done.dropped.len() as u64);
    metrics::counter!(m::HISTORY_ERRORS).increment(done.failed as u64);
    if !done.made.is_empty() || done.expired > 0 {
        tracing::info!(made = ?done.made, expired = done.expired, "run history checked");
    }
    let (held, bytes) = store::history_size(&d.pool).await?;
    metrics::gauge!(m::HISTORY_PARTITIONS).set(done.days as f64);
    metrics::gauge!(m::HISTORY_HELD_RUNS).set(held as f64);
    metrics::gauge!(m::HISTORY_BYTES).set(bytes as f64);

    let before = now
        - chrono::Duration::from_std(d.config.submissions_retention)
            .unwrap_or(chrono::Duration::MAX);
    let expired = store::expire_submissions(&d.pool, before).await?;
    if expired != store::Expired::default() {
        tracing::info!(
            submissions = expired.submissions,
            jobs = expired.jobs,
            "submissions and one-shot jobs deleted past retention"
        );
    }
    for table in ["submissions", "jobs"] {
        let bytes = store::table_bytes(&d.pool, table).await?;
        metrics::gauge!(m::TABLE_BYTES, "table" => table).set(bytes as f64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_fresh_history_gets_yesterday_today_and_three_days_ahead() {
        let plan = plan(&[], at("2026-12-01T13:00:00Z"), 30 * DAY);
        assert_eq!(
            plan.make,
            [
                "2026-11-30",
                "2026-12-01",
                "2026-12-02",
                "2026-12-03",
                "2026-12-04"
            ]
            .map(day)
        );
        assert!(plan.drop.is_empty());
    }

    #[test]
    fn only_missing_days_are_made() {
        let existing = ["2026-11-30", "2026-12-01", "2026-12-03"].map(day);
        let plan = plan(&existing, at("2026-12-01T13:00:00Z"), 30 * DAY);
        assert_eq!(plan.make, ["2026-12-02", "2026-12-04"].map(day));
    }

    #[test]
    fn a_day_drops_once_all_of_it_is_past_retention() {
        let existing = ["2026-10-31", "2026-11-01", "2026-11-02"].map(day);
        // 30 days before 2026-12-02T00:00 is 2026-11-02T00:00: the end of November 1st.
        let plan_at = |now| plan(&existing, at(now), 30 * DAY).drop;
        assert_eq!(plan_at("2026-12-01T23:59:59Z"), [day("2026-10-31")]);
        assert_eq!(
            plan_at("2026-12-02T00:00:00Z"),
            ["2026-10-31", "2026-11-01"].map(day)
        );
        // A shorter retention (the hot setting) drops more at the next check.
        assert_eq!(
            plan(&existing, at("2026-12-02T00:00:00Z"), 29 * DAY).drop,
            existing
        );
    }

    #[test]
    fn with_a_day_of_retention_the_day_before_yesterday_drops_at_midnight() {
        let existing = ["2026-11-30", "2026-12-01"].map(day);
        let plan = plan(&existing, at("2026-12-02T00:00:00Z"), DAY);
        assert_eq!(plan.drop, [day("2026-11-30")]);
        assert_eq!(plan.make.first(), Some(&day("2026-12-02")));
        assert!(!plan.make.contains(&day("2026-11-30")));
    }

    #[test]
    fn the_setting_overrides_the_configuration() {
        use faro_shared::settings::{HotSettings, Setting};
        assert_eq!(retention(&HotSettings::default(), 30 * DAY), 30 * DAY);
        let set = HotSettings::new(vec![Setting::RunsRetention(7 * DAY)]);
        assert_eq!(retention(&set, 30 * DAY), 7 * DAY);
    }
}
