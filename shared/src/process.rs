//! The standard process metrics of this process (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), read from `/proc/self` when `/metrics` is scraped and
//! written in the Prometheus text format.
//!
//! Written as text, not through the `metrics` recorder: its counters hold whole numbers, and CPU
//! time needs fractions of a second. Linux only: elsewhere, or when `/proc` cannot be read,
//! nothing is written. Serving them is `http`'s job.

use std::fmt::Write as _;
use std::sync::OnceLock;

/// The metrics written, with their type and help text, in the order written.
pub const METRICS: [(&str, &str, &str); 6] = [
    (
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    ),
    (
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    ),
    (
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
    ),
    (
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
    ),
    (
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
    ),
    (
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    ),
];

/// One reading of the process metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub open_fds: u64,
    /// The soft limit of open files; `None` when unlimited.
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

/// What the kernel reports in `/proc/[pid]/stat` that the metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// User and system time, in clock ticks.
    utime: u64,
    stime: u64,
    /// Since boot, in clock ticks.
    starttime: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

/// Parses `/proc/[pid]/stat`. The command name is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The soft limit of open files from `/proc/[pid]/limits`; `None` when unlimited or absent.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time in seconds since the epoch, from `/proc/stat`.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

impl Sample {
    /// A sample from the text of `/proc/self/stat`, `/proc/self/limits` and the boot time,
    /// with the open descriptors counted, the clock ticks per second and the page size.
    fn from_proc(
        stat: &str,
        limits: &str,
        boot_time: u64,
        open_fds: u64,
        ticks_per_second: u64,
        page_size: u64,
    ) -> Option<Self> {
        let stat = parse_stat(stat)?;
        let ticks = ticks_per_second.max(1) as f64;
        Some(Self {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_memory_bytes: stat.rss_pages.saturating_mul(page_size),
            virtual_memory_bytes: stat.vsize_bytes,
            open_fds,
            max_fds: parse_max_fds(limits),
            start_time_seconds: boot_time as f64 + stat.starttime as f64 / ticks,
        })
    }

    /// This process now; `None` where `/proc` cannot be read (not Linux).
    pub fn read() -> Option<Self> {
        // The boot time does not change; read once.
        static BOOT_TIME: OnceLock<Option<u64>> = OnceLock::new();
        let boot_time = (*BOOT_TIME
            .get_or_init(|| parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)))?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        // The directory's own descriptor is counted too, as other exporters do.
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Self::from_proc(
            &stat,
            &limits,
            boot_time,
            open_fds,
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
        )
    }

    /// Appends the metrics in the Prometheus text format, each with its HELP and TYPE.
    pub fn write(&self, out: &mut String) {
        let values = [
            Some(self.cpu_seconds),
            Some(self.resident_memory_bytes as f64),
            Some(self.virtual_memory_bytes as f64),
            Some(self.open_fds as f64),
            self.max_fds.map(|n| n as f64),
            Some(self.start_time_seconds),
        ];
        for ((name, kind, help), value) in METRICS.iter().zip(values) {
            let Some(value) = value else { continue };
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        }
    }
}

/// Appends this process's metrics to `out`, if they can be read.
pub fn write(out: &mut String) {
    if let Some(sample) = Sample::read() {
        sample.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokio service's `/proc/self/stat`, its command name holding a space and parentheses.
    const STAT: &str = "31337 (faro (d) 1) S 1 31337 31337 0 -1 4194560 52311 0 12 0 1234 567 \
        0 0 20 0 9 0 42281 1234567168 20480 18446744073709551615 94758856601600 94758856621481 \
        140735031550048 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94758856637488 94758856639104 \
        94759881396224 140735031552729 140735031552749 140735031552749 140735031554027 0\n";

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max stack size            8388608              unlimited            bytes     
Max processes             96365                96365                processes 
Max open files            20000                524288               files     
Max locked memory         8388608              8388608              bytes     
";

    const PROC_STAT: &str = "cpu  2255 34 2290 22625563 6290 127 456 0 0 0\n\
        cpu0 1132 34 1441 11311718 3675 127 438 0 0 0\n\
        intr 114930548 113199788 3 0 5 263 0 4 [2 more]\n\
        ctxt 1990473\n\
        btime 1796050775\n\
        processes 2915\n";

    #[test]
    fn a_recorded_proc_gives_the_standard_values() {
        let btime = parse_boot_time(PROC_STAT).unwrap();
        assert_eq!(btime, 1_796_050_775);
        let sample = Sample::from_proc(STAT, LIMITS, btime, 42, 100, 4096).unwrap();
        assert_eq!(
            sample,
            Sample {
                cpu_seconds: 18.01,
                resident_memory_bytes: 20480 * 4096,
                virtual_memory_bytes: 1_234_567_168,
                open_fds: 42,
                max_fds: Some(20000),
                start_time_seconds: 1_796_050_775.0 + 422.81,
            }
        );
    }

    #[test]
    fn unlimited_open_files_write_no_max() {
        let limits = LIMITS.replace(
            "Max open files            20000                524288",
            "Max open files            unlimited            unlimited",
        );
        let sample = Sample::from_proc(STAT, &limits, 0, 1, 100, 4096).unwrap();
        assert_eq!(sample.max_fds, None);
        let mut text = String::new();
        sample.write(&mut text);
        assert!(!text.contains("process_max_fds"), "{text}");
        assert!(text.contains("process_open_fds 1\n"), "{text}");
    }

    #[test]
    fn a_truncated_stat_is_no_sample() {
        assert_eq!(
            Sample::from_proc("31337 (faro) S 1 2 3", LIMITS, 0, 1, 100, 4096),
            None
        );
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn each_metric_has_help_type_and_a_value() {
        let sample = Sample::from_proc(STAT, LIMITS, 1_796_050_775, 42, 100, 4096).unwrap();
        let mut text = String::new();
        sample.write(&mut text);
        for (name, kind, help) in METRICS {
            assert!(text.contains(&format!("# HELP {name} {help}\n")), "{text}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{text}");
        }
        assert!(text.contains("process_cpu_seconds_total 18.01\n"), "{text}");
        assert!(
            text.contains("process_resident_memory_bytes 83886080\n"),
            "{text}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_plausibly() {
        let sample = Sample::read().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(sample.start_time_seconds <= now + 1.0, "{sample:?}");
        assert!(
            sample.start_time_seconds > now - 86_400.0 * 365.0,
            "{sample:?}"
        );
        assert!(sample.resident_memory_bytes > 0 && sample.virtual_memory_bytes > 0);
        assert!(sample.open_fds >= 3, "{sample:?}");
    }
}
