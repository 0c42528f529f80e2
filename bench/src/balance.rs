//! `faro-bench balance --queues 1000 --workers 10000`: the balancer's decision alone (the pure
//! `decide`), cycle after cycle over a moving demand, as the balancer runs it: each cycle's
//! assignment is applied, the clock moves one cycle on, pools that moved cool down.
//!
//! Reference, in the same run: one pass of the policy the balancer had before (every worker
//! serves every queue whose kinds it supports), the cost of looking at each worker-queue pair
//! once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use faro_balancer::decide::{decide, Demand, Inputs, Policy, QueueSpec, WorkerSpec};
use faro_shared::domain::{PoolName, QueueName, WorkerId};
use faro_shared::messages::Kind;

#[derive(Debug, Clone)]
pub struct BalanceBench {
    pub queues: usize,
    pub workers: usize,
    pub pools: usize,
    pub cycles: usize,
    pub strict: bool,
    pub preemption: bool,
}

/// A small deterministic generator: the same figures on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn name<T: std::str::FromStr>(text: String) -> anyhow::Result<T> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("bad generated name {text}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn run(bench: &BalanceBench) -> anyhow::Result<Vec<String>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pools: Vec<PoolName> = (0..bench.pools.max(1))
        .map(|p| name(format!("site-{p}")))
        .collect::<anyhow::Result<_>>()?;
    let kinds = [
        vec![Kind::SnmpGet, Kind::SnmpWalk],
        vec![Kind::SnmpWalk],
        vec![Kind::Sim],
        vec![Kind::Exec],
    ];
    let queues: Vec<QueueSpec> = (0..bench.queues)
        .map(|i| {
            let min = rng.below(3) as u32;
            let home: BTreeSet<PoolName> = (0..1 + rng.below(2))
                .map(|_| pools[rng.below(pools.len() as u64) as usize].clone())
                .collect();
            Ok(QueueSpec {
                name: name(format!("q{i:04}"))?,
                priority: 1 + rng.below(10) as u8,
                min_workers: min,
                max_workers: (rng.below(4) > 0).then(|| min + 5 + rng.below(40) as u32),
                home_pools: home,
                kinds: kinds[rng.below(3) as usize].iter().copied().collect(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut workers: Vec<WorkerSpec> = (0..bench.workers)
        .map(|i| {
            Ok(WorkerSpec {
                id: name(format!("w{i:05}"))?,
                pool: pools[rng.below(pools.len() as u64) as usize].clone(),
                capacity: 8 << rng.below(4),
                kinds: if rng.below(5) == 0 {
                    [Kind::Sim].into()
                } else {
                    [Kind::SnmpGet, Kind::SnmpWalk, Kind::Sim].into()
                },
                in_progress: 0,
                usable: rng.below(50) != 0,
                current: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    // Demand a bit above the fleet's slots, so priorities and preemption have work to do.
    let slots: u64 = workers.iter().map(|w| u64::from(w.capacity)).sum();
    let mean = (slots * 12 / 10) / bench.queues.max(1) as u64;
    let mut demand: BTreeMap<QueueName, Demand> = queues
        .iter()
        .map(|q| {
            (
                q.name.clone(),
                Demand {
                    pending: rng.below(2 * mean + 1),
                    stale_since: None,
                },
            )
        })
        .collect();
    let policy = Policy {
        strict_isolation: bench.strict,
        preemption: bench.preemption,
        cooling_period: chrono::Duration::seconds(30),
        maintenance: false,
    };
    let mut cooling: BTreeMap<PoolName, DateTime<Utc>> = BTreeMap::new();
    let mut now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let mut times = Vec::with_capacity(bench.cycles);
    let mut changes = 0usize;
    let mut holds = 0usize;
    for cycle in 0..bench.cycles {
        // A tenth of the queues change demand each cycle; one in fifty goes stale.
        for (i, d) in demand.values_mut().enumerate() {
            if (i + cycle) % 10 == 0 {
                d.pending = rng.below(2 * mean + 1);
                d.stale_since = (rng.below(50) == 0).then_some(now);
            }
        }
        let started = Instant::now();
        let decision = decide(Inputs {
            queues: &queues,
            workers: &workers,
            demand: &demand,
            cooling: &cooling,
            policy,
            now,
        });
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        changes += decision.changes.len();
        holds += decision.queues.iter().filter(|q| q.hold.is_some()).count();
        for w in &mut workers {
            w.current = decision.assignment.get(&w.id).cloned().flatten();
            w.in_progress = w.current.as_ref().map_or(0, |_| w.capacity / 2);
        }
        cooling.retain(|_, until| *until > now);
        cooling.extend(decision.cooling);
        now += chrono::Duration::seconds(5);
    }
    // The reference: every worker against every queue, once.
    let mut reference = Vec::with_capacity(bench.cycles);
    for _ in 0..bench.cycles.min(10) {
        let started = Instant::now();
        let served: BTreeMap<&WorkerId, Vec<&QueueName>> = workers
            .iter()
            .map(|w| {
                let queues = queues
                    .iter()
                    .filter(|q| !q.kinds.is_empty() && q.kinds.is_subset(&w.kinds))
                    .map(|q| &q.name)
                    .collect();
                (&w.id, queues)
            })
            .collect();
        std::hint::black_box(&served);
        reference.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    reference.sort_by(f64::total_cmp);
    let p50 = percentile(&times, 50.0);
    let reference_p50 = percentile(&reference, 50.0);
    Ok(vec![
        format!("balance_queues={}", bench.queues),
        format!("balance_workers={}", bench.workers),
        format!("balance_cycles={}", bench.cycles),
        format!(
            "balance_changes_per_cycle={:.1}",
            changes as f64 / bench.cycles.max(1) as f64
        ),
        format!(
            "balance_held_queues_per_cycle={:.1}",
            holds as f64 / bench.cycles.max(1) as f64
        ),
        format!("balance_cycle_p50_ms={p50:.2}"),
        format!("balance_cycle_p99_ms={:.2}", percentile(&times, 99.0)),
        format!(
            "balance_cycle_max_ms={:.2}",
            times.last().copied().unwrap_or(0.0)
        ),
        format!("reference_every_pair_p50_ms={reference_p50:.2}"),
        format!("balance_vs_reference={:.2}", p50 / reference_p50.max(1e-9)),
    ])
}
