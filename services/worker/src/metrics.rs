//! Every metric the worker exports, declared with its help text.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const RUNS: &str = "faro_worker_runs_total";
pub const RUNS_IN_PROGRESS: &str = "faro_worker_runs_in_progress";
pub const RUN_SECONDS: &str = "faro_worker_run_duration_seconds";
pub const BAD_MESSAGES: &str = "faro_worker_bad_messages_total";
pub const HEARTBEATS: &str = "faro_worker_heartbeats_total";

pub fn describe() {
    describe_counter!(RUNS, "Runs executed, by queue, kind and outcome.");
    describe_gauge!(RUNS_IN_PROGRESS, "Runs executing now.");
    describe_histogram!(
        RUN_SECONDS,
        Unit::Seconds,
        "Run duration, by queue, kind and outcome."
    );
    describe_counter!(BAD_MESSAGES, "Run messages refused as malformed.");
    describe_counter!(HEARTBEATS, "Heartbeats written, by result (ok, failed).");
}
