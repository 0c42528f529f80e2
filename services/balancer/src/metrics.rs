//! Every metric the balancer exports, declared with its help text.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const CYCLES: &str = "faro_balancer_cycles_total";
pub const CYCLE_SECONDS: &str = "faro_balancer_cycle_duration_seconds";
pub const WORKERS: &str = "faro_balancer_workers";
pub const ASSIGNMENT_CHANGES: &str = "faro_balancer_assignment_changes_total";
pub const DECIDE_SECONDS: &str = "faro_balancer_decide_duration_seconds";
pub const MOVES: &str = "faro_balancer_moves_total";
pub const QUEUE_WORKERS: &str = "faro_balancer_queue_workers";
pub const QUEUE_HELD: &str = "faro_balancer_queue_held";
pub const WORKERS_BY_STATE: &str = "faro_balancer_registry_workers";

pub fn describe() {
    describe_counter!(CYCLES, "Balancing cycles, by result (ok, failed).");
    describe_histogram!(
        CYCLE_SECONDS,
        Unit::Seconds,
        "Time of one balancing cycle, I/O included."
    );
    describe_histogram!(
        DECIDE_SECONDS,
        Unit::Seconds,
        "Time of the decision alone (the pure function), without I/O."
    );
    describe_gauge!(WORKERS, "Workers active or unstable in the registry.");
    describe_counter!(
        MOVES,
        "Workers moved, by reason (scale_out, scale_in, preempted, borrowed, returned, unfit)."
    );
    describe_gauge!(QUEUE_WORKERS, "Workers serving each queue.");
    describe_gauge!(
        QUEUE_HELD,
        "1 when a queue has fewer workers than its demand or minimum asks for."
    );
    describe_gauge!(
        WORKERS_BY_STATE,
        "Workers in the registry, by state (active, unstable, lost, left)."
    );
    describe_counter!(
        ASSIGNMENT_CHANGES,
        "Assignments written because they changed."
    );
}
