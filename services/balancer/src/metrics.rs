//! Every metric the balancer exports, declared with its help text and unit in [`METRICS`].
//!
//! The balancer describes them at start (`http::recorder().describe(METRICS)`); recording
//! happens where the work is done.

use faro_shared::http::Metric;
use metrics::Unit;

pub const CYCLES: &str = "faro_balancer_cycles_total";
pub const CYCLE_SECONDS: &str = "faro_balancer_cycle_duration_seconds";
pub const WORKERS: &str = "faro_balancer_workers";
pub const ASSIGNMENT_CHANGES: &str = "faro_balancer_assignment_changes_total";
pub const DECIDE_SECONDS: &str = "faro_balancer_decide_duration_seconds";
pub const MOVES: &str = "faro_balancer_moves_total";
pub const QUEUE_WORKERS: &str = "faro_balancer_queue_workers";
pub const QUEUE_HELD: &str = "faro_balancer_queue_held";
pub const WORKERS_BY_STATE: &str = "faro_balancer_registry_workers";
pub const OLDEST_HEARTBEAT_SECONDS: &str = "faro_balancer_oldest_heartbeat_age_seconds";
pub const TABLE_BYTES: &str = "faro_balancer_table_bytes";
pub const ASSIGNMENTS_STORED: &str = "faro_balancer_assignments_stored";

/// Every metric above, with its kind, unit and help text.
pub const METRICS: &[Metric] = &[
    Metric::gauge(
        TABLE_BYTES,
        Unit::Bytes,
        "Size on disk of the balancer's history (label `table`: `balancer_decisions`, kept `FARO_BALANCER_DECISIONS_KEPT`; `worker_events`, kept `FARO_BALANCER_WORKER_EVENTS_KEPT`), indexes included.",
    ),
    Metric::gauge(
        ASSIGNMENTS_STORED,
        Unit::Count,
        "Entries in the assignments bucket: one per worker, and the markers of removed assignments until `FARO_BALANCER_ASSIGNMENT_MARKER_TTL`.",
    ),
    Metric::counter(
        CYCLES,
        Unit::Count,
        "Balancing cycles, by result (ok, failed).",
    ),
    Metric::histogram(
        CYCLE_SECONDS,
        Unit::Seconds,
        "Time of one balancing cycle, I/O included.",
    ),
    Metric::histogram(
        DECIDE_SECONDS,
        Unit::Seconds,
        "Time of the decision alone (the pure function), without I/O.",
    ),
    Metric::gauge(
        WORKERS,
        Unit::Count,
        "Workers active or unstable in the registry.",
    ),
    Metric::counter(
        MOVES,
        Unit::Count,
        "Workers moved, by reason (scale_out, scale_in, preempted, borrowed, returned, unfit).",
    ),
    Metric::gauge(QUEUE_WORKERS, Unit::Count, "Workers serving each queue."),
    Metric::gauge(
        QUEUE_HELD,
        Unit::Count,
        "1 when a queue has fewer workers than its demand or minimum asks for.",
    ),
    Metric::gauge(
        WORKERS_BY_STATE,
        Unit::Count,
        "Workers in the registry, by state (active, unstable, lost, left).",
    ),
    Metric::gauge(
        OLDEST_HEARTBEAT_SECONDS,
        Unit::Seconds,
        "Age of the oldest last heartbeat among active and unstable workers at the last cycle (0 with none): past a few intervals, a worker is about to be lost.",
    ),
    Metric::counter(
        ASSIGNMENT_CHANGES,
        Unit::Count,
        "Assignments written because they changed.",
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
