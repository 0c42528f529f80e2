//! Every metric the dispatcher exports, declared with its help text and unit in [`METRICS`].
//!
//! The dispatcher describes them at start (`http::recorder().describe(METRICS)`); recording
//! happens where the work is done.

use faro_shared::http::Metric;
use metrics::Unit;

pub const SUBMISSIONS: &str = "faro_dispatcher_submissions_total";
pub const RUNS_DISPATCHED: &str = "faro_dispatcher_runs_dispatched_total";
pub const RESULTS: &str = "faro_dispatcher_results_total";
pub const RESULTS_IGNORED: &str = "faro_dispatcher_results_ignored_total";
pub const BAD_MESSAGES: &str = "faro_dispatcher_bad_messages_total";
pub const REDELIVERIES: &str = "faro_dispatcher_redeliveries_total";
pub const RUNS_WATCHED: &str = "faro_dispatcher_runs_watched";
pub const MAINTENANCE: &str = "faro_dispatcher_maintenance_mode";
pub const TIMEOUTS: &str = "faro_dispatcher_timeouts_total";
pub const SLOTS: &str = "faro_dispatcher_slots_total";
pub const SCHEDULE_LAG_SECONDS: &str = "faro_dispatcher_schedule_lag_seconds";
pub const RUNS_WAITING: &str = "faro_dispatcher_runs_waiting";
pub const RETRIES: &str = "faro_dispatcher_retries_total";
pub const RESULT_BATCH_SECONDS: &str = "faro_dispatcher_result_batch_seconds";
pub const LEADER: &str = "faro_dispatcher_leader";
pub const LEADERSHIPS: &str = "faro_dispatcher_leaderships_total";
pub const SLOT_LEASE_ERRORS: &str = "faro_dispatcher_slot_lease_errors_total";
pub const RECURRING_JOBS: &str = "faro_dispatcher_recurring_jobs";
pub const VALUES: &str = "faro_dispatcher_values_total";
pub const DEAD_LETTERS: &str = "faro_dispatcher_dead_letters_total";
pub const RESULTS_UNREADABLE: &str = "faro_dispatcher_results_unreadable_total";
pub const HISTORY_PARTITIONS: &str = "faro_dispatcher_history_partitions";
pub const HISTORY_BYTES: &str = "faro_dispatcher_history_bytes";
pub const HISTORY_HELD_RUNS: &str = "faro_dispatcher_history_held_runs";
pub const HISTORY_PARTITIONS_DROPPED: &str = "faro_dispatcher_history_partitions_dropped_total";
pub const HISTORY_ERRORS: &str = "faro_dispatcher_history_errors_total";
pub const TABLE_BYTES: &str = "faro_dispatcher_table_bytes";
pub const OUTCOMES: &str = "faro_dispatcher_outcomes_total";

/// Every metric above, with its kind, unit and help text.
pub const METRICS: &[Metric] = &[
    Metric::gauge(
        HISTORY_PARTITIONS,
        Unit::Count,
        "Days of run history held in PostgreSQL (partitions of `runs`, including those made ahead).",
    ),
    Metric::gauge(
        HISTORY_BYTES,
        Unit::Bytes,
        "Size on disk of the run history (`runs`, `run_attempts` and `run_failures`, indexes included).",
    ),
    Metric::gauge(
        TABLE_BYTES,
        Unit::Bytes,
        "Size on disk of the tables kept for `FARO_SUBMISSIONS_RETENTION` (label `table`: `submissions`, `jobs`), indexes included.",
    ),
    Metric::gauge(
        HISTORY_HELD_RUNS,
        Unit::Count,
        "Runs kept past their day's drop because they were still open then (`runs_held`), until they end and pass retention.",
    ),
    Metric::counter(
        HISTORY_PARTITIONS_DROPPED,
        Unit::Count,
        "Days of run history dropped past `runs.retention`.",
    ),
    Metric::counter(
        HISTORY_ERRORS,
        Unit::Count,
        "Failures to make or drop a day of history (logged with the reason; tried again at the next check).",
    ),
    Metric::counter(
        DEAD_LETTERS,
        Unit::Count,
        "Messages set aside in the dead-letter stream (`faro dead-letters` lists them), by the stream they came from (submit, results, values).",
    ),
    Metric::counter(
        RESULTS_UNREADABLE,
        Unit::Count,
        "Results PostgreSQL refused, recorded instead as a failed attempt with `result unreadable: <reason>`.",
    ),
    Metric::counter(
        SUBMISSIONS,
        Unit::Count,
        "Submissions received, by outcome (accepted, duplicate, rejected).",
    ),
    Metric::counter(
        RUNS_DISPATCHED,
        Unit::Count,
        "Runs published to their queue, by queue.",
    ),
    Metric::counter(
        RESULTS,
        Unit::Count,
        "Runs ended by a result recorded, by outcome (the run's final status).",
    ),
    Metric::counter(
        OUTCOMES,
        Unit::Count,
        "Run outcomes put on the outcome feed (`result`: `published`, or `failed` when NATS did not store one; the run's record has it either way).",
    ),
    Metric::counter(
        RESULTS_IGNORED,
        Unit::Count,
        "Results that changed nothing: a late or repeated result of an attempt already ended.",
    ),
    Metric::counter(
        BAD_MESSAGES,
        Unit::Count,
        "Messages refused as malformed, by stream.",
    ),
    Metric::counter(
        REDELIVERIES,
        Unit::Count,
        "Messages JetStream delivered again (not acknowledged in time: a dispatcher failed over, or recording failed), by stream (submit, results).",
    ),
    Metric::gauge(
        RUNS_WATCHED,
        Unit::Count,
        "Attempts published and watched for their deadline (no result yet).",
    ),
    Metric::gauge(
        MAINTENANCE,
        Unit::Count,
        "1 while maintenance mode holds new dispatches, else 0.",
    ),
    Metric::counter(
        TIMEOUTS,
        Unit::Count,
        "Attempts recorded timed_out: no result by their timeout and grace.",
    ),
    Metric::counter(
        SLOTS,
        Unit::Count,
        "Slots of recurring jobs, by result (fired, skipped: the previous run still going, failed).",
    ),
    Metric::histogram(
        SCHEDULE_LAG_SECONDS,
        Unit::Seconds,
        "Time from a recurring job's slot to its run stored in its queue's stream (a run that waits for a target slot or a queue limit waits in it too).",
    ),
    Metric::gauge(
        RUNS_WAITING,
        Unit::Count,
        "Runs held by admission, by reason (target: its target's slots are all taken; queue: its queue's limit is reached; target_disabled; maintenance).",
    ),
    Metric::counter(
        RETRIES,
        Unit::Count,
        "Attempts that failed and were scheduled to run again.",
    ),
    Metric::histogram(
        RESULT_BATCH_SECONDS,
        Unit::Seconds,
        "Time to record one batch of results in PostgreSQL.",
    ),
    Metric::gauge(
        LEADER,
        Unit::Count,
        "1 while this dispatcher holds the leader lease and schedules, 0 while it stands by.",
    ),
    Metric::counter(
        LEADERSHIPS,
        Unit::Count,
        "Times this dispatcher took the leader lease.",
    ),
    Metric::counter(
        SLOT_LEASE_ERRORS,
        Unit::Count,
        "Slot lease writes to the leases bucket that failed (the key then lives until its TTL).",
    ),
    Metric::gauge(
        RECURRING_JOBS,
        Unit::Count,
        "Recurring jobs in the schedule (set once the schedule is loaded, then on every change).",
    ),
    Metric::counter(
        VALUES,
        Unit::Count,
        "Polled values received, by result (recorded: the latest per target and OID; late: of an attempt no longer current, dropped; mismatched: sent for another queue or target than their run's, dropped).",
    ),
];

#[cfg(test)]
mod tests {
    /// Every name this file declares is in `METRICS`, so none goes without help text.
    #[test]
    fn every_metric_is_described() {
        faro_shared::http::assert_all_declared(include_str!("metrics.rs"), super::METRICS);
    }
}
