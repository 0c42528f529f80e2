//! Every metric the worker exports, declared with its help text.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const RUNS: &str = "faro_worker_runs_total";
pub const RUNS_IN_PROGRESS: &str = "faro_worker_runs_in_progress";
pub const RUN_SECONDS: &str = "faro_worker_run_duration_seconds";
pub const BAD_MESSAGES: &str = "faro_worker_bad_messages_total";
pub const HEARTBEATS: &str = "faro_worker_heartbeats_total";
pub const SNMP_REQUESTS: &str = "faro_worker_snmp_operations_total";
pub const SNMP_TIMEOUTS: &str = "faro_worker_snmp_timeouts_total";
pub const SNMP_VALUES: &str = "faro_worker_snmp_values_total";
pub const SNMP_UNREACHABLE: &str = "faro_worker_snmp_unreachable_targets";
pub const CPU_PERCENT: &str = "faro_worker_cpu_percent";
pub const MEM_PERCENT: &str = "faro_worker_memory_percent";
pub const ADMISSION_CLOSED: &str = "faro_worker_admission_closed";

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
    describe_counter!(
        SNMP_REQUESTS,
        "SNMP operations started, by op (get: one GET of a job's OIDs; walk: one GETBULK walk of one OID)."
    );
    describe_counter!(
        SNMP_TIMEOUTS,
        "SNMP operations that got no answer after their retries."
    );
    describe_counter!(SNMP_VALUES, "SNMP values polled and sent on.");
    describe_gauge!(CPU_PERCENT, "Whole-machine CPU use, percent.");
    describe_gauge!(MEM_PERCENT, "Memory in use, percent.");
    describe_gauge!(
        ADMISSION_CLOSED,
        "1 while CPU or memory is above worker.cpu_max / worker.mem_max and no new run is pulled."
    );
    describe_gauge!(
        SNMP_UNREACHABLE,
        "SNMP agents this worker holds unreachable (their runs fail at once until a probe is answered)."
    );
}
