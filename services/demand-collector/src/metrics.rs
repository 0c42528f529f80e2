//! Every metric the demand-collector exports, declared with its help text.

use metrics::{describe_counter, describe_gauge};

pub const DEMAND: &str = "faro_demand_pending_runs";
pub const PROVIDER_FAILURES: &str = "faro_demand_provider_failures_total";
pub const UNMAPPED: &str = "faro_demand_unmapped_names_total";
pub const UNMAPPED_RUNS: &str = "faro_demand_unmapped_runs_total";

pub fn describe() {
    describe_gauge!(DEMAND, "Pending runs per queue in the last snapshot.");
    describe_counter!(
        PROVIDER_FAILURES,
        "Provider collections that failed or timed out, by provider."
    );
    describe_counter!(UNMAPPED, "Provider answers whose name maps to no queue.");
    describe_counter!(
        UNMAPPED_RUNS,
        "Pending work reported under names that map to no queue, summed over collections."
    );
}
