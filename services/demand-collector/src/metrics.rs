//! Every metric the demand-collector exports, declared with its help text and unit in
//! [`METRICS`].
//!
//! The demand-collector describes them at start (`http::recorder().describe(METRICS)`);
//! recording happens where the work is done.

use faro_shared::http::Metric;
use metrics::Unit;

pub const DEMAND: &str = "faro_demand_pending_runs";
pub const JETSTREAM_PENDING: &str = "faro_demand_jetstream_pending_runs";
pub const PROVIDER_FAILURES: &str = "faro_demand_provider_failures_total";
pub const UNMAPPED: &str = "faro_demand_unmapped_names_total";
pub const UNMAPPED_RUNS: &str = "faro_demand_unmapped_runs_total";

/// Every metric above, with its kind, unit and help text.
pub const METRICS: &[Metric] = &[
    Metric::gauge(
        DEMAND,
        Unit::Count,
        "Pending runs per queue in the last snapshot.",
    ),
    Metric::gauge(
        JETSTREAM_PENDING,
        Unit::Count,
        "Runs in each queue's JetStream consumer not yet acknowledged (undelivered, or delivered and running), at the jetstream provider's last collection.",
    ),
    Metric::counter(
        PROVIDER_FAILURES,
        Unit::Count,
        "Provider collections that failed or timed out, by provider.",
    ),
    Metric::counter(
        UNMAPPED,
        Unit::Count,
        "Provider answers whose name maps to no queue.",
    ),
    Metric::counter(
        UNMAPPED_RUNS,
        Unit::Count,
        "Pending work reported under names that map to no queue, summed over collections.",
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
