//! Every metric the worker exports, declared with its help text and unit in [`METRICS`].
//!
//! The worker describes them at start (`http::recorder().describe(METRICS)`); recording
//! happens where the work is done.

use faro_shared::http::Metric;
use metrics::Unit;

pub const RUNS: &str = "faro_worker_runs_total";
pub const RUNS_IN_PROGRESS: &str = "faro_worker_runs_in_progress";
pub const RUN_SECONDS: &str = "faro_worker_run_duration_seconds";
pub const BAD_MESSAGES: &str = "faro_worker_bad_messages_total";
pub const REDELIVERIES: &str = "faro_worker_redeliveries_total";
pub const RUNS_SET_ASIDE: &str = "faro_worker_runs_set_aside_total";
pub const RUNS_ABANDONED: &str = "faro_worker_runs_abandoned_total";
pub const RUNS_ALREADY_ENDED: &str = "faro_worker_runs_already_ended_total";
pub const HEARTBEATS: &str = "faro_worker_heartbeats_total";
pub const SNMP_REQUESTS: &str = "faro_worker_snmp_operations_total";
pub const SNMP_TIMEOUTS: &str = "faro_worker_snmp_timeouts_total";
pub const SNMP_VALUES: &str = "faro_worker_snmp_values_total";
pub const SNMP_UNREACHABLE: &str = "faro_worker_snmp_unreachable_targets";
pub const CPU_PERCENT: &str = "faro_worker_cpu_percent";
pub const MEM_PERCENT: &str = "faro_worker_memory_percent";
pub const ADMISSION_CLOSED: &str = "faro_worker_admission_closed";

/// Every metric above, with its kind, unit and help text.
pub const METRICS: &[Metric] = &[
    Metric::counter(
        RUNS_ALREADY_ENDED,
        Unit::Count,
        "Runs given again after they ended (their result recorded, their ack lost to a frozen or dead worker or a server crash), acknowledged without executing them again, by queue.",
    ),
    Metric::counter(
        RUNS_ABANDONED,
        Unit::Count,
        "Runs let go without a result because the worker could not confirm its hold on them in time (cut off from NATS, or frozen): JetStream gives each to another worker, by queue.",
    ),
    Metric::counter(
        RUNS_SET_ASIDE,
        Unit::Count,
        "Runs on their last delivery, ended failed without executing (every worker that took one before died, stalled or gave it back), by queue.",
    ),
    Metric::counter(
        RUNS,
        Unit::Count,
        "Runs executed, by queue, kind and outcome.",
    ),
    Metric::gauge(RUNS_IN_PROGRESS, Unit::Count, "Runs executing now."),
    Metric::histogram(
        RUN_SECONDS,
        Unit::Seconds,
        "Run duration, by queue, kind and outcome.",
    ),
    Metric::counter(
        BAD_MESSAGES,
        Unit::Count,
        "Run messages refused as malformed.",
    ),
    Metric::counter(
        REDELIVERIES,
        Unit::Count,
        "Runs JetStream delivered again (not acknowledged in time: the worker that had them died, stalled or gave them back), by queue.",
    ),
    Metric::counter(
        HEARTBEATS,
        Unit::Count,
        "Heartbeats written, by result (ok, failed).",
    ),
    Metric::counter(
        SNMP_REQUESTS,
        Unit::Count,
        "SNMP operations started, by op (get: one GET of a job's OIDs; walk: one GETBULK walk of one OID).",
    ),
    Metric::counter(
        SNMP_TIMEOUTS,
        Unit::Count,
        "SNMP operations that got no answer after their retries.",
    ),
    Metric::counter(
        SNMP_VALUES,
        Unit::Count,
        "SNMP values polled and sent on.",
    ),
    Metric::gauge(
        SNMP_UNREACHABLE,
        Unit::Count,
        "SNMP agents this worker holds unreachable (their runs fail at once until a probe is answered).",
    ),
    Metric::gauge(CPU_PERCENT, Unit::Percent, "CPU use, percent: of the worker's cgroup CPU quota when it has one (v2 or v1), else of the whole machine."),
    Metric::gauge(MEM_PERCENT, Unit::Percent, "Memory in use, percent: the worker's cgroup working set (usage less inactive file cache) of its memory limit when it has one, else the whole machine's."),
    Metric::gauge(
        ADMISSION_CLOSED,
        Unit::Count,
        "1 while CPU or memory is above worker.cpu_max / worker.mem_max and no new run is pulled.",
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
