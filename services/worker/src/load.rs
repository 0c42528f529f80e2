//! The worker's load: CPU and memory figures from `/proc` or from the worker's cgroup, and the
//! pure decisions made from them (which source applies, admission by load, the load score and
//! the state in the heartbeat). The files are read by `sampler`; the cgroup files are parsed by
//! `cgroup`.
//!
//! In a cgroup that limits CPU (a quota) or memory (a limit), that resource's percent is of the
//! limit: a container at its quota is busy even when the machine is idle, and a busy machine
//! does not close admission on a container well within its limits. A resource the cgroup does
//! not limit, or limits no tighter than the machine, is read from the whole machine, as before.
//!
//! Above `cpu_max` or `mem_max` (hot settings, `worker.cpu_max` and `worker.mem_max`) the
//! worker pulls no new runs; runs in flight go on. A worker that cannot read a figure never
//! closes admission on a reading it does not have.

use std::time::{Duration, Instant};

use faro_shared::messages::{LoadSource, WorkerSettings, WorkerState};

use crate::cgroup::CpuQuota;

/// Cumulative CPU time of the whole machine, from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Reads the first line of `/proc/stat`: user nice system idle iowait irq softirq steal ...
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    // Guest time is already counted in user and nice.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// CPU use in percent between two readings.
pub fn cpu_percent(before: CpuTimes, after: CpuTimes) -> Option<f32> {
    let total = after.total.checked_sub(before.total)?;
    let busy = after.busy.checked_sub(before.busy)?;
    if total == 0 {
        return None;
    }
    Some((busy as f64 * 100.0 / total as f64) as f32)
}

/// The machine's memory, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl MemInfo {
    /// Memory in use in percent: `1 - MemAvailable / MemTotal`.
    pub fn used_percent(self) -> Option<f32> {
        if self.total_bytes == 0 {
            return None;
        }
        Some((100.0 - self.available_bytes as f64 * 100.0 / self.total_bytes as f64) as f32)
    }
}

/// Reads `MemTotal` and `MemAvailable` (in kB) from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    };
    Some(MemInfo {
        total_bytes: field("MemTotal:")?,
        available_bytes: field("MemAvailable:")?,
    })
}

/// The CPUs' worth of time the cgroup may use, when its quota binds: a quota of at least the
/// CPUs the process may run on (`cpus_available`, when known) limits nothing, and the
/// machine's figure applies.
pub fn cpu_cap(quota: Option<CpuQuota>, cpus_available: Option<u32>) -> Option<f64> {
    let cpus = quota?.cpus();
    match cpus_available {
        Some(available) if cpus >= f64::from(available) => None,
        _ => Some(cpus),
    }
}

/// The cgroup's CPU use in percent of what it may use: the CPU time it used between two
/// readings over the wall-clock time between them times the CPUs allowed. `None` when the
/// counter went backwards (the cgroup was recreated) or no time passed. Capped at 100: the
/// kernel's counter and the worker's clock are read at slightly different moments, and a
/// quota with burst may run over for a while.
pub fn cgroup_cpu_percent(
    before: Duration,
    after: Duration,
    elapsed: Duration,
    cpus: f64,
) -> Option<f32> {
    let used = after.checked_sub(before)?;
    if elapsed.is_zero() || cpus <= 0.0 {
        return None;
    }
    let percent = used.as_secs_f64() * 100.0 / (elapsed.as_secs_f64() * cpus);
    Some(percent.min(100.0) as f32)
}

/// The cgroup's memory limit in bytes, when it binds: a limit of at least the machine's memory
/// (when known) limits nothing, and the machine's figure applies. A limit of 0 cannot be
/// measured against either.
pub fn memory_cap(limit: Option<u64>, host_total_bytes: Option<u64>) -> Option<u64> {
    let limit = limit.filter(|l| *l > 0)?;
    match host_total_bytes {
        Some(total) if limit >= total => None,
        _ => Some(limit),
    }
}

/// The cgroup's memory in use in percent of its limit, counted as docker and cAdvisor do: the
/// working set, usage less the inactive file cache the kernel reclaims before it would OOM.
pub fn working_set_percent(usage: u64, inactive_file: u64, limit: u64) -> Option<f32> {
    if limit == 0 {
        return None;
    }
    let working_set = usage.saturating_sub(inactive_file);
    Some((working_set as f64 * 100.0 / limit as f64) as f32)
}

/// One reading of a CPU counter, kept to measure the next one against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CpuMark {
    /// The machine's counters (`/proc/stat`).
    Host(CpuTimes),
    /// The cgroup's CPU time used so far, when it was read, and the CPUs it may use.
    Cgroup {
        source: LoadSource,
        used: Duration,
        at: Instant,
        cpus: f64,
    },
}

impl CpuMark {
    pub fn source(&self) -> LoadSource {
        match self {
            Self::Host(_) => LoadSource::Host,
            Self::Cgroup { source, .. } => *source,
        }
    }
}

/// CPU use in percent between two readings of the same source (`None` across a change of
/// source: the counters do not compare).
pub fn cpu_between(before: CpuMark, after: CpuMark) -> Option<f32> {
    match (before, after) {
        (CpuMark::Host(before), CpuMark::Host(after)) => cpu_percent(before, after),
        (
            CpuMark::Cgroup {
                source: was,
                used: before,
                at: then,
                ..
            },
            CpuMark::Cgroup {
                source,
                used: after,
                at: now,
                cpus,
            },
        ) if was == source => {
            cgroup_cpu_percent(before, after, now.saturating_duration_since(then), cpus)
        }
        _ => None,
    }
}

/// Why the worker must take no new runs, if it must.
pub fn closed_by(cpu: Option<f32>, mem: Option<f32>, limits: &WorkerSettings) -> Option<String> {
    if let Some(cpu) = cpu.filter(|c| *c > f32::from(limits.cpu_max)) {
        return Some(format!(
            "CPU at {cpu:.0}%, above worker.cpu_max {}%",
            limits.cpu_max
        ));
    }
    if let Some(mem) = mem.filter(|m| *m > f32::from(limits.mem_max)) {
        return Some(format!(
            "memory at {mem:.0}%, above worker.mem_max {}%",
            limits.mem_max
        ));
    }
    None
}

/// 0 to 100: the larger of slot use, CPU and memory.
pub fn load_score(in_progress: u32, capacity: u32, cpu: Option<f32>, mem: Option<f32>) -> u8 {
    let slots = f64::from(in_progress) * 100.0 / f64::from(capacity.max(1));
    let highest = [
        slots,
        f64::from(cpu.unwrap_or(0.0)),
        f64::from(mem.unwrap_or(0.0)),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    highest.clamp(0.0, 100.0).round() as u8
}

/// The state a heartbeat reports.
pub fn state(in_progress: u32, capacity: u32, admission_closed: bool) -> WorkerState {
    if admission_closed || in_progress >= capacity {
        WorkerState::Busy
    } else if in_progress == 0 {
        WorkerState::Idle
    } else {
        WorkerState::Available
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn proc_files_are_read() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(
            parse_proc_stat(stat),
            Some(CpuTimes {
                busy: 150,
                total: 1000
            })
        );
        let later = CpuTimes {
            busy: 250,
            total: 1200,
        };
        let before = parse_proc_stat(stat).unwrap();
        assert_eq!(cpu_percent(before, later), Some(50.0));
        assert_eq!(cpu_percent(later, before), None);
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        let info = parse_meminfo(meminfo).unwrap();
        assert_eq!(info.total_bytes, 1_024_000);
        assert_eq!(info.used_percent(), Some(75.0));
        assert_eq!(parse_proc_stat("garbage"), None);
        let empty = parse_meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB").unwrap();
        assert_eq!(empty.used_percent(), None);
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), None);
    }

    fn quota(cpus_x10: u64) -> Option<CpuQuota> {
        Some(CpuQuota {
            quota: Duration::from_millis(10 * cpus_x10),
            period: Duration::from_millis(100),
        })
    }

    #[test]
    fn a_cpu_quota_binds_below_the_cpus_available() {
        assert_eq!(cpu_cap(None, Some(4)), None);
        assert_eq!(cpu_cap(quota(15), Some(4)), Some(1.5));
        assert_eq!(cpu_cap(quota(15), None), Some(1.5));
        // --cpus=4 on a machine (or cpuset) of 4 CPUs limits nothing.
        assert_eq!(cpu_cap(quota(40), Some(4)), None);
        assert_eq!(cpu_cap(quota(80), Some(4)), None);
    }

    #[test]
    fn cgroup_cpu_is_a_share_of_the_quota() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // 750 ms of CPU in 1 s with 1.5 CPUs allowed: half of it.
        assert_eq!(
            cgroup_cpu_percent(s(10), s(10) + ms(750), s(1), 1.5),
            Some(50.0)
        );
        // Idle.
        assert_eq!(cgroup_cpu_percent(s(10), s(10), s(1), 1.5), Some(0.0));
        // The counter went backwards (cgroup recreated): no reading.
        assert_eq!(cgroup_cpu_percent(s(10), s(9), s(1), 1.5), None);
        // No time passed: no reading.
        assert_eq!(cgroup_cpu_percent(s(10), s(11), Duration::ZERO, 1.5), None);
        assert_eq!(cgroup_cpu_percent(s(10), s(11), s(1), 0.0), None);
        // Over the quota (burst, skew between the two clocks): 100.
        assert_eq!(cgroup_cpu_percent(s(10), s(12), s(1), 1.5), Some(100.0));
    }

    #[test]
    fn cpu_marks_compare_only_with_their_own_source() {
        let t0 = Instant::now();
        let cgroup = |used_ms: u64, after: Duration, source: LoadSource| CpuMark::Cgroup {
            source,
            used: Duration::from_millis(used_ms),
            at: t0 + after,
            cpus: 0.5,
        };
        let v2 = LoadSource::CgroupV2;
        let before = cgroup(1000, Duration::ZERO, v2);
        let after = cgroup(1250, Duration::from_secs(1), v2);
        assert_eq!(cpu_between(before, after), Some(50.0));
        assert_eq!(after.source(), v2);
        // Readings at the same instant, or out of order: no reading.
        assert_eq!(cpu_between(before, cgroup(1250, Duration::ZERO, v2)), None);
        assert_eq!(cpu_between(after, before), None);
        let host = CpuMark::Host(CpuTimes {
            busy: 10,
            total: 100,
        });
        assert_eq!(host.source(), LoadSource::Host);
        assert_eq!(cpu_between(host, after), None);
        assert_eq!(cpu_between(before, host), None);
        let v1 = cgroup(1250, Duration::from_secs(1), LoadSource::CgroupV1);
        assert_eq!(cpu_between(before, v1), None);
    }

    #[test]
    fn a_memory_limit_binds_below_the_machine() {
        let gib = 1u64 << 30;
        assert_eq!(memory_cap(None, Some(16 * gib)), None);
        assert_eq!(memory_cap(Some(gib), Some(16 * gib)), Some(gib));
        assert_eq!(memory_cap(Some(gib), None), Some(gib));
        assert_eq!(memory_cap(Some(16 * gib), Some(16 * gib)), None);
        assert_eq!(memory_cap(Some(64 * gib), Some(16 * gib)), None);
        assert_eq!(memory_cap(Some(0), Some(16 * gib)), None);
    }

    #[test]
    fn memory_in_a_cgroup_is_its_working_set_of_its_limit() {
        // 300 of usage, 100 of it inactive file cache, limit 400: 50%.
        assert_eq!(working_set_percent(300, 100, 400), Some(50.0));
        // Cache larger than usage (the two are read apart): 0, not an underflow.
        assert_eq!(working_set_percent(100, 300, 400), Some(0.0));
        assert_eq!(working_set_percent(100, 0, 0), None);
    }

    #[test]
    fn admission_closes_above_either_limit_and_says_which() {
        let limits = WorkerSettings::default();
        assert_eq!(closed_by(Some(80.0), Some(85.0), &limits), None);
        let cpu = closed_by(Some(93.0), Some(10.0), &limits).unwrap();
        assert!(
            cpu.contains("CPU at 93%") && cpu.contains("cpu_max 80%"),
            "{cpu}"
        );
        let mem = closed_by(Some(10.0), Some(90.0), &limits).unwrap();
        assert!(mem.contains("memory at 90%"), "{mem}");
        assert_eq!(closed_by(None, None, &limits), None);
    }

    #[test]
    fn state_follows_slots_and_admission() {
        assert_eq!(state(0, 10, false), WorkerState::Idle);
        assert_eq!(state(3, 10, false), WorkerState::Available);
        assert_eq!(state(10, 10, false), WorkerState::Busy);
        assert_eq!(state(0, 10, true), WorkerState::Busy);
    }

    proptest! {
        #[test]
        fn cgroup_cpu_is_a_percent_or_nothing(
            before in 0u64..1 << 40, after in 0u64..1 << 40, elapsed in 0u64..10_000_000,
            cpus in 0.01f64..256.0,
        ) {
            let us = Duration::from_micros;
            let percent = cgroup_cpu_percent(us(before), us(after), us(elapsed), cpus);
            prop_assert_eq!(percent.is_some(), after >= before && elapsed > 0);
            if let Some(percent) = percent {
                prop_assert!((0.0..=100.0).contains(&percent), "{}", percent);
            }
        }

        #[test]
        fn a_binding_limit_is_below_the_machine(
            limit in proptest::option::of(0u64..1 << 40), total in proptest::option::of(1u64..1 << 40),
        ) {
            if let Some(cap) = memory_cap(limit, total) {
                prop_assert!(cap > 0 && Some(cap) == limit);
                prop_assert!(total.is_none_or(|t| cap < t));
            }
        }

        #[test]
        fn the_load_score_is_the_highest_pressure(
            in_progress in 0u32..200, capacity in 1u32..100,
            cpu in proptest::option::of(0f32..100.0), mem in proptest::option::of(0f32..100.0),
        ) {
            let score = load_score(in_progress, capacity, cpu, mem);
            prop_assert!(score <= 100);
            prop_assert!(f32::from(score) + 0.5 >= cpu.unwrap_or(0.0));
            prop_assert!(f32::from(score) + 0.5 >= mem.unwrap_or(0.0));
            let slots = (f64::from(in_progress) * 100.0 / f64::from(capacity)).min(100.0);
            prop_assert!(f64::from(score) + 0.5 >= slots);
        }
    }
}
