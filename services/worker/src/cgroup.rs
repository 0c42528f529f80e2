//! The worker's cgroup: which cgroup (v2, or v1 controllers) the process is in, where those are
//! mounted, and what their CPU and memory files say.
//!
//! Pure parsers over file contents and the path resolution, each error naming the file and what
//! is wrong with it. Reading the files and deciding which figures to use (cgroup or host) is
//! `load`'s.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// A v1 limit at or above this many bytes is "no limit": the kernel writes `PAGE_COUNTER_MAX`
/// pages (about 2^63 bytes, rounded down to a page) for an unlimited cgroup.
const UNLIMITED_BYTES: u64 = 1 << 62;

/// A cgroup or `/proc` file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupError {
    /// The file's name (`cpu.max`, `/proc/self/mountinfo`, ...).
    pub file: String,
    pub problem: String,
}

impl CgroupError {
    pub fn new(file: &str, problem: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for CgroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.problem)
    }
}

impl std::error::Error for CgroupError {}

/// Which cgroup hierarchy a controller's files belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The process's cgroups, from `/proc/self/cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// Its path in the v2 hierarchy (the `0::/path` line).
    pub unified: Option<String>,
    /// Its path in each v1 hierarchy, by controller (`cpu`, `cpuacct`, `memory`, ...).
    pub v1: BTreeMap<String, String>,
}

/// Reads `/proc/self/cgroup`: `hierarchy-id:controllers:path` lines.
pub fn parse_membership(text: &str) -> Result<Membership, CgroupError> {
    const FILE: &str = "/proc/self/cgroup";
    let mut membership = Membership::default();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CgroupError::new(
                FILE,
                format!("line {}: expected hierarchy-id:controllers:path", n + 1),
            ));
        };
        if id.parse::<u32>().is_err() || !path.starts_with('/') {
            return Err(CgroupError::new(
                FILE,
                format!("line {}: expected hierarchy-id:controllers:path", n + 1),
            ));
        }
        if id == "0" && controllers.is_empty() {
            membership.unified = Some(path.to_owned());
        } else {
            for controller in controllers.split(',').filter(|c| !c.is_empty()) {
                membership.v1.insert(controller.to_owned(), path.to_owned());
            }
        }
    }
    Ok(membership)
}

/// A cgroup hierarchy mounted in this mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The cgroup mounted there: `/` for the whole hierarchy (or a private cgroup namespace's
    /// root), a deeper path when only part of it is mounted.
    pub root: String,
    pub point: PathBuf,
    pub version: Version,
    /// v1: the hierarchy's options, which name its controllers (`cpu`, `cpuacct`, `memory`).
    pub options: Vec<String>,
}

/// Reads the cgroup mounts of `/proc/self/mountinfo`:
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
pub fn parse_mounts(text: &str) -> Result<Vec<Mount>, CgroupError> {
    const FILE: &str = "/proc/self/mountinfo";
    let mut mounts = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let Some((left, right)) = line.split_once(" - ") else {
            return Err(CgroupError::new(
                FILE,
                format!("line {}: no ' - ' before the filesystem type", n + 1),
            ));
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 3 {
            return Err(CgroupError::new(
                FILE,
                format!("line {}: too few fields", n + 1),
            ));
        }
        let version = match right[0] {
            "cgroup2" => Version::V2,
            "cgroup" => Version::V1,
            _ => continue,
        };
        mounts.push(Mount {
            root: unescape(left[3]),
            point: PathBuf::from(unescape(left[4])),
            version,
            options: right[2].split(',').map(str::to_owned).collect(),
        });
    }
    Ok(mounts)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the process's CPU files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuDirs {
    /// `cpu.max`, `cpu.stat`, `cpuset.cpus.effective`.
    V2(PathBuf),
    /// `cpu.cfs_quota_us` and `cpu.cfs_period_us` in one, `cpuacct.usage` in the other (often
    /// the same `cpu,cpuacct` directory).
    V1 { cpu: PathBuf, cpuacct: PathBuf },
}

/// Where the process's memory files are, and of which version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryDir {
    pub version: Version,
    pub dir: PathBuf,
}

/// The cgroup directories the worker reads its load from; `None` where the process has no
/// such controller mounted (then the host's figures are used).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub cpu: Option<CpuDirs>,
    pub memory: Option<MemoryDir>,
}

/// Finds the process's controller directories. A v1 controller wins over v2 when both are
/// there: on a "hybrid" host the v2 hierarchy is mounted too but holds no controller.
pub fn locate(membership: &Membership, mounts: &[Mount]) -> Layout {
    let v1 = |controller: &str| {
        let path = membership.v1.get(controller)?;
        mounts
            .iter()
            .filter(|m| m.version == Version::V1 && m.options.iter().any(|o| o == controller))
            .find_map(|m| dir_in(m, path))
    };
    let v2 = || {
        let path = membership.unified.as_ref()?;
        mounts
            .iter()
            .filter(|m| m.version == Version::V2)
            .find_map(|m| dir_in(m, path))
    };
    let cpu = match (v1("cpu"), v1("cpuacct")) {
        (Some(cpu), Some(cpuacct)) => Some(CpuDirs::V1 { cpu, cpuacct }),
        _ => v2().map(CpuDirs::V2),
    };
    let memory = v1("memory")
        .map(|dir| MemoryDir {
            version: Version::V1,
            dir,
        })
        .or_else(|| {
            v2().map(|dir| MemoryDir {
                version: Version::V2,
                dir,
            })
        });
    Layout { cpu, memory }
}

/// The directory of cgroup `path` under `mount`, when the mount shows it: the path must lie at
/// or below the mount's root (component by component), and not above a cgroup namespace's root
/// (`/..`).
fn dir_in(mount: &Mount, path: &str) -> Option<PathBuf> {
    let below = Path::new(path).strip_prefix(&mount.root).ok()?;
    if below
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    if below.as_os_str().is_empty() {
        Some(mount.point.clone())
    } else {
        Some(mount.point.join(below))
    }
}

/// A CPU quota: `quota` of CPU time in every `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota: Duration,
    pub period: Duration,
}

impl CpuQuota {
    /// How many CPUs' worth of time the quota allows.
    pub fn cpus(self) -> f64 {
        // In whole nanoseconds, so 150000/100000 is exactly 1.5.
        self.quota.as_nanos() as f64 / self.period.as_nanos() as f64
    }
}

/// v2 `cpu.max`: `max <period>` (no quota) or `<quota> <period>`, in microseconds.
pub fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, CgroupError> {
    const FILE: &str = "cpu.max";
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [quota, period] = fields[..] else {
        return Err(CgroupError::new(
            FILE,
            format!("expected '<quota|max> <period>', got {:?}", text.trim()),
        ));
    };
    let period = positive_micros(FILE, "period", period)?;
    if quota == "max" {
        return Ok(None);
    }
    let quota = positive_micros(FILE, "quota", quota)?;
    Ok(Some(CpuQuota { quota, period }))
}

/// v1 `cpu.cfs_quota_us` (`-1`: no quota) and `cpu.cfs_period_us`, in microseconds.
pub fn parse_cfs_quota(quota: &str, period: &str) -> Result<Option<CpuQuota>, CgroupError> {
    let quota_us: i64 = quota.trim().parse().map_err(|_| {
        CgroupError::new(
            "cpu.cfs_quota_us",
            format!("expected an integer, got {:?}", quota.trim()),
        )
    })?;
    if quota_us < 0 {
        return Ok(None);
    }
    let period = positive_micros("cpu.cfs_period_us", "period", period)?;
    let quota = positive_micros("cpu.cfs_quota_us", "quota", quota)?;
    Ok(Some(CpuQuota { quota, period }))
}

fn positive_micros(file: &str, what: &str, text: &str) -> Result<Duration, CgroupError> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err(CgroupError::new(file, format!("{what} is 0"))),
        Ok(us) => Ok(Duration::from_micros(us)),
        Err(_) => Err(CgroupError::new(
            file,
            format!("{what}: expected microseconds, got {:?}", text.trim()),
        )),
    }
}

/// v2 `cpu.stat`: the CPU time used by the cgroup so far (`usage_usec`).
pub fn parse_cpu_stat_usage(text: &str) -> Result<Duration, CgroupError> {
    stat_field("cpu.stat", text, "usage_usec").map(Duration::from_micros)
}

/// v1 `cpuacct.usage`: the CPU time used by the cgroup so far, in nanoseconds.
pub fn parse_cpuacct_usage(text: &str) -> Result<Duration, CgroupError> {
    parse_u64("cpuacct.usage", text).map(Duration::from_nanos)
}

/// A memory limit in bytes: v2 `memory.max` (`max`: none) or v1 `memory.limit_in_bytes` (a
/// value near 2^63: none).
pub fn parse_memory_limit(file: &str, text: &str) -> Result<Option<u64>, CgroupError> {
    if text.trim() == "max" {
        return Ok(None);
    }
    let bytes = parse_u64(file, text)?;
    Ok(Some(bytes).filter(|b| *b < UNLIMITED_BYTES))
}

/// A file holding one count of bytes (`memory.current`, `memory.usage_in_bytes`).
pub fn parse_u64(file: &str, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| {
        CgroupError::new(
            file,
            format!("expected one unsigned integer, got {:?}", text.trim()),
        )
    })
}

/// One `key value` line of a flat-keyed file (`memory.stat`, `cpu.stat`).
pub fn stat_field(file: &str, text: &str, key: &str) -> Result<u64, CgroupError> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .ok_or_else(|| CgroupError::new(file, format!("no {key} line")))?;
    let value = line.split_whitespace().nth(1).unwrap_or_default();
    value.parse().map_err(|_| {
        CgroupError::new(
            file,
            format!("{key}: expected an unsigned integer, got {value:?}"),
        )
    })
}

/// How many CPUs a list such as `0-3,8,10-11` names (`cpuset.cpus.effective`,
/// `Cpus_allowed_list`).
pub fn count_cpu_list(file: &str, list: &str) -> Result<u32, CgroupError> {
    let bad = || {
        CgroupError::new(
            file,
            format!("expected a CPU list like 0-3,8, got {list:?}"),
        )
    };
    let mut count = 0u32;
    for range in list.trim().split(',').filter(|r| !r.is_empty()) {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let first: u32 = first.parse().map_err(|_| bad())?;
        let last: u32 = last.parse().map_err(|_| bad())?;
        if last < first {
            return Err(bad());
        }
        count = count.saturating_add(last - first + 1);
    }
    if count == 0 {
        return Err(bad());
    }
    Ok(count)
}

/// The CPUs this process may run on, from `/proc/self/status` (`Cpus_allowed_list`).
pub fn parse_cpus_allowed(status: &str) -> Result<u32, CgroupError> {
    const FILE: &str = "/proc/self/status";
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| CgroupError::new(FILE, "no Cpus_allowed_list line"))?;
    count_cpu_list(FILE, list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(root: &str, point: &str, version: Version, options: &str) -> Mount {
        Mount {
            root: root.into(),
            point: point.into(),
            version,
            options: options.split(',').map(str::to_owned).collect(),
        }
    }

    #[test]
    fn membership_reads_v2_and_v1_lines() {
        let m = parse_membership(
            "12:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n",
        )
        .unwrap();
        assert_eq!(m.unified.as_deref(), Some("/"));
        assert_eq!(m.v1["cpu"], "/docker/abc");
        assert_eq!(m.v1["cpuacct"], "/docker/abc");
        assert_eq!(m.v1["memory"], "/docker/abc");
        // A path may hold a colon; only the first two split.
        let m = parse_membership("0::/odd:name\n").unwrap();
        assert_eq!(m.unified.as_deref(), Some("/odd:name"));
        assert_eq!(parse_membership("").unwrap(), Membership::default());
    }

    #[test]
    fn malformed_membership_names_the_line() {
        let e = parse_membership("0::/\ngarbage\n").unwrap_err();
        assert_eq!(e.file, "/proc/self/cgroup");
        assert!(e.problem.contains("line 2"), "{e}");
        let e = parse_membership("x:memory:/a\n").unwrap_err();
        assert!(e.problem.contains("line 1"), "{e}");
        let e = parse_membership("4:memory:relative\n").unwrap_err();
        assert!(e.problem.contains("hierarchy-id:controllers:path"), "{e}");
    }

    #[test]
    fn mounts_keep_only_cgroup_filesystems_and_unescape_paths() {
        let text = "\
473 387 0:143 / / rw,relatime master:181 - overlay overlay rw,lowerdir=/l
486 477 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory
36 31 0:33 / /mnt/with\\040space rw - cgroup cgroup rw,cpu,cpuacct
";
        let mounts = parse_mounts(text).unwrap();
        assert_eq!(
            mounts,
            vec![
                mount("/", "/sys/fs/cgroup", Version::V2, "rw,nsdelegate"),
                mount(
                    "/docker/abc",
                    "/sys/fs/cgroup/memory",
                    Version::V1,
                    "rw,memory"
                ),
                mount("/", "/mnt/with space", Version::V1, "rw,cpu,cpuacct"),
            ]
        );
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn malformed_mountinfo_names_the_line() {
        let e = parse_mounts("31 23 0:28 / /sys/fs/cgroup rw cgroup2 cgroup2 rw\n").unwrap_err();
        assert_eq!(e.file, "/proc/self/mountinfo");
        assert!(
            e.problem.contains("line 1") && e.problem.contains("' - '"),
            "{e}"
        );
        let e = parse_mounts("22 27 0:21 / /proc rw - proc proc rw\n31 23 / - cgroup2 c rw\n")
            .unwrap_err();
        assert!(e.problem.contains("line 2: too few fields"), "{e}");
    }

    #[test]
    fn a_cgroup_path_resolves_below_its_mount_root() {
        let v2 = mount("/", "/sys/fs/cgroup", Version::V2, "rw");
        assert_eq!(dir_in(&v2, "/"), Some("/sys/fs/cgroup".into()));
        assert_eq!(
            dir_in(&v2, "/system.slice/faro.service"),
            Some("/sys/fs/cgroup/system.slice/faro.service".into())
        );
        // Only part of the hierarchy mounted (v1 Docker without a cgroup namespace, or a
        // Kubernetes pod's cgroup bind-mounted into its container).
        let pod = mount(
            "/kubepods/burstable/pod1",
            "/sys/fs/cgroup/memory",
            Version::V1,
            "rw,memory",
        );
        assert_eq!(
            dir_in(&pod, "/kubepods/burstable/pod1/ctr2"),
            Some("/sys/fs/cgroup/memory/ctr2".into())
        );
        assert_eq!(
            dir_in(&pod, "/kubepods/burstable/pod1"),
            Some("/sys/fs/cgroup/memory".into())
        );
        // A sibling sharing a prefix, or a path outside the namespace, is not below the root.
        assert_eq!(dir_in(&pod, "/kubepods/burstable/pod10"), None);
        assert_eq!(dir_in(&v2, "/../../user.slice"), None);
    }

    #[test]
    fn v1_controllers_win_over_an_empty_hybrid_v2_hierarchy() {
        let membership =
            parse_membership("4:memory:/a\n3:cpu,cpuacct:/a\n1:name=systemd:/a\n0::/a\n").unwrap();
        let mounts = vec![
            mount("/", "/sys/fs/cgroup/unified", Version::V2, "rw"),
            mount(
                "/",
                "/sys/fs/cgroup/cpu,cpuacct",
                Version::V1,
                "rw,cpu,cpuacct",
            ),
            mount("/", "/sys/fs/cgroup/memory", Version::V1, "rw,memory"),
        ];
        let layout = locate(&membership, &mounts);
        assert_eq!(
            layout.cpu,
            Some(CpuDirs::V1 {
                cpu: "/sys/fs/cgroup/cpu,cpuacct/a".into(),
                cpuacct: "/sys/fs/cgroup/cpu,cpuacct/a".into(),
            })
        );
        assert_eq!(
            layout.memory,
            Some(MemoryDir {
                version: Version::V1,
                dir: "/sys/fs/cgroup/memory/a".into()
            })
        );
        // Without the v1 memory mount, memory falls to v2; with no mounts at all, nothing.
        let layout = locate(&membership, &mounts[..2]);
        assert_eq!(layout.memory.map(|m| m.version), Some(Version::V2));
        assert_eq!(locate(&membership, &[]), Layout::default());
    }

    #[test]
    fn cpu_quotas_parse_from_both_versions() {
        let q = parse_cpu_max("150000 100000\n").unwrap().unwrap();
        assert_eq!(q.quota, Duration::from_millis(150));
        assert!((q.cpus() - 1.5).abs() < 1e-9);
        assert_eq!(parse_cpu_max("max 100000\n").unwrap(), None);
        let q = parse_cfs_quota("50000\n", "100000\n").unwrap().unwrap();
        assert!((q.cpus() - 0.5).abs() < 1e-9);
        assert_eq!(parse_cfs_quota("-1\n", "100000\n").unwrap(), None);
        // No quota: the period is not needed.
        assert_eq!(parse_cfs_quota("-1\n", "").unwrap(), None);
    }

    #[test]
    fn malformed_cpu_files_say_what_is_wrong() {
        let e = parse_cpu_max("max\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cpu.max: expected '<quota|max> <period>', got \"max\""
        );
        let e = parse_cpu_max("100000 0\n").unwrap_err();
        assert_eq!(e.to_string(), "cpu.max: period is 0");
        let e = parse_cpu_max("lots 100000\n").unwrap_err();
        assert!(e.problem.contains("quota"), "{e}");
        let e = parse_cpu_max("1 2 3\n").unwrap_err();
        assert!(e.problem.contains("expected"), "{e}");
        let e = parse_cfs_quota("none", "100000").unwrap_err();
        assert_eq!(e.file, "cpu.cfs_quota_us");
        let e = parse_cfs_quota("50000", "").unwrap_err();
        assert_eq!(e.file, "cpu.cfs_period_us");
        let e = parse_cpu_stat_usage("user_usec 5\nsystem_usec 6\n").unwrap_err();
        assert_eq!(e.to_string(), "cpu.stat: no usage_usec line");
        let e = parse_cpu_stat_usage("usage_usec -4\n").unwrap_err();
        assert!(e.problem.contains("usage_usec"), "{e}");
        let e = parse_cpuacct_usage("").unwrap_err();
        assert_eq!(e.file, "cpuacct.usage");
    }

    #[test]
    fn cpu_usage_reads_in_both_units() {
        let stat = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n";
        assert_eq!(
            parse_cpu_stat_usage(stat).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(
            parse_cpuacct_usage("2500000123\n").unwrap(),
            Duration::from_nanos(2_500_000_123)
        );
    }

    #[test]
    fn memory_limits_know_unlimited_in_both_versions() {
        assert_eq!(parse_memory_limit("memory.max", "max\n").unwrap(), None);
        assert_eq!(
            parse_memory_limit("memory.max", "536870912\n").unwrap(),
            Some(536_870_912)
        );
        // PAGE_COUNTER_MAX with 4 KiB and with 64 KiB pages.
        for unlimited in ["9223372036854771712", "9223372036854710272"] {
            assert_eq!(
                parse_memory_limit("memory.limit_in_bytes", unlimited).unwrap(),
                None
            );
        }
        let e = parse_memory_limit("memory.limit_in_bytes", "-1").unwrap_err();
        assert_eq!(e.file, "memory.limit_in_bytes");
        let e = parse_u64("memory.current", "12 kB").unwrap_err();
        assert_eq!(
            e.to_string(),
            "memory.current: expected one unsigned integer, got \"12 kB\""
        );
    }

    #[test]
    fn stat_fields_match_whole_keys() {
        let stat = "total_inactive_file 40\ninactive_file 7\nfile 9\n";
        assert_eq!(stat_field("memory.stat", stat, "inactive_file").unwrap(), 7);
        assert_eq!(
            stat_field("memory.stat", stat, "total_inactive_file").unwrap(),
            40
        );
        let e = stat_field("memory.stat", "anon 1\n", "inactive_file").unwrap_err();
        assert_eq!(e.to_string(), "memory.stat: no inactive_file line");
        let e = stat_field("memory.stat", "inactive_file\n", "inactive_file").unwrap_err();
        assert!(e.problem.contains("got \"\""), "{e}");
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("f", "0-3\n").unwrap(), 4);
        assert_eq!(count_cpu_list("f", "0-3,8,10-11").unwrap(), 7);
        assert_eq!(count_cpu_list("f", "5").unwrap(), 1);
        for bad in ["", "\n", "3-1", "a-b", "0-"] {
            let e = count_cpu_list("cpuset.cpus.effective", bad).unwrap_err();
            assert_eq!(e.file, "cpuset.cpus.effective", "{bad:?}");
        }
        let status = "Name:\tfaro-worker\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n";
        assert_eq!(parse_cpus_allowed(status).unwrap(), 2);
        let e = parse_cpus_allowed("Name:\tx\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/self/status: no Cpus_allowed_list line"
        );
    }
}
