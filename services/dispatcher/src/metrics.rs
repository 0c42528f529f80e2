//! Every metric the dispatcher exports, declared with its help text.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const SUBMISSIONS: &str = "faro_dispatcher_submissions_total";
pub const RUNS_DISPATCHED: &str = "faro_dispatcher_runs_dispatched_total";
pub const RESULTS: &str = "faro_dispatcher_results_total";
pub const RESULTS_IGNORED: &str = "faro_dispatcher_results_ignored_total";
pub const BAD_MESSAGES: &str = "faro_dispatcher_bad_messages_total";
pub const RUNS_WATCHED: &str = "faro_dispatcher_runs_watched";
pub const MAINTENANCE: &str = "faro_dispatcher_maintenance_mode";
pub const TIMEOUTS: &str = "faro_dispatcher_timeouts_total";
pub const SLOTS: &str = "faro_dispatcher_slots_total";
pub const RUNS_WAITING: &str = "faro_dispatcher_runs_waiting";
pub const RETRIES: &str = "faro_dispatcher_retries_total";
pub const RESULT_BATCH_SECONDS: &str = "faro_dispatcher_result_batch_seconds";
pub const LEADER: &str = "faro_dispatcher_leader";
pub const LEADERSHIPS: &str = "faro_dispatcher_leaderships_total";
pub const SLOT_LEASE_ERRORS: &str = "faro_dispatcher_slot_lease_errors_total";
pub const RECURRING_JOBS: &str = "faro_dispatcher_recurring_jobs";
pub const VALUES: &str = "faro_dispatcher_values_total";

pub fn describe() {
    describe_counter!(
        VALUES,
        "Polled values received, by result (recorded: the latest per target and OID; late: of an attempt no longer current, dropped)."
    );
    describe_counter!(
        SUBMISSIONS,
        "Submissions received, by outcome (accepted, duplicate, rejected)."
    );
    describe_counter!(RUNS_DISPATCHED, "Runs published to their queue, by queue.");
    describe_counter!(RESULTS, "Runs ended by a result, by status.");
    describe_counter!(
        RESULTS_IGNORED,
        "Results that changed nothing: a late or repeated result of an attempt already ended."
    );
    describe_gauge!(
        RUNS_WATCHED,
        "Attempts published and watched for their deadline (no result yet)."
    );
    describe_gauge!(
        MAINTENANCE,
        "1 while maintenance mode holds new dispatches, else 0."
    );
    describe_counter!(
        TIMEOUTS,
        "Attempts recorded timed_out: no result by their timeout and grace."
    );
    describe_counter!(
        SLOTS,
        "Slots of recurring jobs, by result (fired, skipped: the previous run still going, failed)."
    );
    describe_gauge!(
        RUNS_WAITING,
        "Runs waiting for a free slot of their target (the per-target concurrency limit)."
    );
    describe_counter!(
        RETRIES,
        "Attempts that failed and were scheduled to run again."
    );
    describe_gauge!(
        LEADER,
        "1 while this dispatcher holds the leader lease and schedules, 0 while it stands by."
    );
    describe_counter!(LEADERSHIPS, "Times this dispatcher took the leader lease.");
    describe_gauge!(
        RECURRING_JOBS,
        "Recurring jobs in the schedule (set once the schedule is loaded, then on every change)."
    );
    describe_counter!(
        SLOT_LEASE_ERRORS,
        "Slot lease writes to the leases bucket that failed (the key then lives until its TTL)."
    );
    describe_counter!(BAD_MESSAGES, "Messages refused as malformed, by stream.");
    describe_histogram!(
        RESULT_BATCH_SECONDS,
        Unit::Seconds,
        "Time to record one batch of results in PostgreSQL."
    );
}
