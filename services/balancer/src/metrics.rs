//! Every metric the balancer exports, declared with its help text.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const CYCLES: &str = "faro_balancer_cycles_total";
pub const CYCLE_SECONDS: &str = "faro_balancer_cycle_duration_seconds";
pub const WORKERS: &str = "faro_balancer_workers";
pub const ASSIGNMENT_CHANGES: &str = "faro_balancer_assignment_changes_total";

pub fn describe() {
    describe_counter!(CYCLES, "Balancing cycles, by result (ok, failed).");
    describe_histogram!(
        CYCLE_SECONDS,
        Unit::Seconds,
        "Time of one balancing cycle, I/O included."
    );
    describe_gauge!(WORKERS, "Workers with a live heartbeat.");
    describe_counter!(
        ASSIGNMENT_CHANGES,
        "Assignments written because they changed."
    );
}
