//! The worker's load: CPU and memory from `/proc`, and the pure decisions made from them
//! (admission by load, the load score and the state in the heartbeat).
//!
//! Above `cpu_max` or `mem_max` (hot settings, `worker.cpu_max` and `worker.mem_max`) the
//! worker pulls no new runs; runs in flight go on. A machine where `/proc` cannot be read
//! never closes admission on a reading it does not have.

use faro_shared::messages::{WorkerSettings, WorkerState};

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

/// Memory in use in percent: `1 - MemAvailable / MemTotal` from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<f32> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    if total == 0 {
        return None;
    }
    Some((100.0 - available as f64 * 100.0 / total as f64) as f32)
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

/// One reading of this machine's CPU and memory, kept to measure the next one against.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Option<CpuTimes>,
}

impl Sampler {
    /// CPU use since the previous call (`None` on the first) and memory use now.
    pub fn sample(&mut self) -> (Option<f32>, Option<f32>) {
        let now = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_proc_stat);
        let cpu = match (self.last, now) {
            (Some(before), Some(after)) => cpu_percent(before, after),
            _ => None,
        };
        if now.is_some() {
            self.last = now;
        }
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(parse_meminfo);
        (cpu, mem)
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
        assert_eq!(parse_meminfo(meminfo), Some(75.0));
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB"), None);
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
