//! Test fixtures shared by the unit tests of the pure modules.

use chrono::{DateTime, Utc};
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::messages::{Assignment, DemandSnapshot, Heartbeat, Kind, WorkerSettings};

/// `seconds` after a fixed instant.
pub fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
}

pub fn worker(id: &str) -> WorkerId {
    WorkerId::parse(id).expect("valid worker id")
}

pub fn queue(name: &str) -> QueueName {
    QueueName::parse(name).expect("valid queue")
}

pub fn pool(name: &str) -> PoolName {
    PoolName::parse(name).expect("valid pool")
}

/// A heartbeat of `id` in `pool` with 2 slots for `sim`, sent at `at`.
pub fn beat(id: &str, pool_name: &str, at: DateTime<Utc>) -> Heartbeat {
    Heartbeat {
        worker_id: worker(id),
        pool: pool(pool_name),
        capacity: 2,
        kinds: vec![Kind::Sim],
        in_progress: 0,
        cpu_percent: None,
        mem_percent: None,
        load_source: Default::default(),
        load_score: 0,
        state: Default::default(),
        admission_closed: None,
        runs: Default::default(),
        interval_ms: 5000,
        version: "test".into(),
        started_at: at,
        sent_at: at,
    }
}

/// The assignment of `id` to `queues` with default settings.
pub fn assignment(id: &str, queues: &[&str]) -> Assignment {
    Assignment {
        worker_id: worker(id),
        queues: queues.iter().map(|q| queue(q)).collect(),
        settings: WorkerSettings::default(),
        updated_at: t(0),
    }
}

/// A snapshot of `pending` runs of `name` collected at `at`.
pub fn snapshot(name: &str, pending: u64, at: DateTime<Utc>) -> DemandSnapshot {
    DemandSnapshot {
        queue: queue(name),
        pending,
        stale: false,
        sources: Default::default(),
        collected_at: at,
    }
}
