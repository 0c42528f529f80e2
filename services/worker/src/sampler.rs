//! Reads the worker's load: the I/O edge of `load` and `cgroup`, which parse and decide.
//!
//! At start it finds the process's cgroup (`/proc/self/cgroup`, `/proc/self/mountinfo`); every
//! sample then reads, per resource, the cgroup's files when the cgroup limits that resource
//! (a CPU quota below the CPUs the process may run on, a memory limit below the machine's
//! memory), and `/proc/stat` or `/proc/meminfo` when it does not. A cgroup file that cannot be
//! read or parsed gives the machine's figure instead (logged once per change, never closing
//! admission on a figure the worker does not have); a limit file that does not exist (the
//! root cgroup has none) is no limit. Limits are read at every sample, so `docker update`
//! applies; the cgroup itself is found once.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use faro_shared::messages::{LoadSource, LoadSources};

use crate::cgroup::{self, CgroupError, CpuDirs, Layout, MemoryDir, Version};
use crate::load::{self, CpuMark};

/// One sample: CPU since the previous one (`None` on the first, or across a change of
/// source), memory now, and where each came from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub cpu: Option<f32>,
    pub mem: Option<f32>,
    pub source: LoadSources,
}

/// Reads the load files, keeping the previous CPU counter to measure the next one against.
#[derive(Debug)]
pub struct Sampler {
    /// `/`, or a recorded tree in tests: every path read is taken below it.
    root: PathBuf,
    layout: Layout,
    last_cpu: Option<CpuMark>,
    /// The sources and cgroup problems last logged, so only changes are.
    logged: Option<(LoadSources, Vec<String>)>,
}

/// The cgroup's CPU counter and the CPUs it may use, when its quota binds.
struct CgroupCpu {
    source: LoadSource,
    used: Duration,
    cpus: f64,
}

impl Sampler {
    /// Finds this process's cgroup.
    pub fn new() -> Self {
        Self::under("/")
    }

    /// Finds the cgroup with `/proc` and the cgroup mounts taken below `root`.
    pub fn under(root: impl Into<PathBuf>) -> Self {
        let mut sampler = Self {
            root: root.into(),
            layout: Layout::default(),
            last_cpu: None,
            logged: None,
        };
        match sampler.locate() {
            Ok(layout) => {
                tracing::debug!(?layout, "cgroup directories");
                sampler.layout = layout;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot find the worker's cgroup; reading the machine's load");
            }
        }
        sampler
    }

    /// Reads the load now.
    pub fn sample(&mut self) -> Reading {
        self.sample_at(Instant::now())
    }

    /// Reads the load, `now` being the time of the reading (given by tests).
    pub fn sample_at(&mut self, now: Instant) -> Reading {
        let mut problems = Vec::new();
        let mark = match self.cgroup_cpu() {
            Ok(Some(c)) => Some(CpuMark::Cgroup {
                source: c.source,
                used: c.used,
                at: now,
                cpus: c.cpus,
            }),
            Ok(None) => self.host_cpu(),
            Err(error) => {
                problems.push(error.to_string());
                self.host_cpu()
            }
        };
        let cpu = match (self.last_cpu, mark) {
            (Some(before), Some(after)) => load::cpu_between(before, after),
            _ => None,
        };
        if mark.is_some() {
            self.last_cpu = mark;
        }
        let cpu_source = mark.map_or(LoadSource::Host, |m| m.source());

        let meminfo = self
            .read_proc("proc/meminfo")
            .as_deref()
            .and_then(load::parse_meminfo);
        let host_mem = || meminfo.and_then(load::MemInfo::used_percent);
        let (mem, mem_source) = match self.cgroup_memory(meminfo.map(|m| m.total_bytes)) {
            Ok(Some((source, percent))) => (Some(percent), source),
            Ok(None) => (host_mem(), LoadSource::Host),
            Err(error) => {
                problems.push(error.to_string());
                (host_mem(), LoadSource::Host)
            }
        };

        let source = LoadSources {
            cpu: cpu_source,
            mem: mem_source,
        };
        self.log_change(source, problems);
        Reading { cpu, mem, source }
    }

    fn locate(&self) -> Result<Layout, CgroupError> {
        let (Some(membership), Some(mountinfo)) = (
            self.read_optional(Path::new("/proc/self/cgroup"), "/proc/self/cgroup")?,
            self.read_optional(Path::new("/proc/self/mountinfo"), "/proc/self/mountinfo")?,
        ) else {
            return Ok(Layout::default());
        };
        let membership = cgroup::parse_membership(&membership)?;
        let mounts = cgroup::parse_mounts(&mountinfo)?;
        Ok(cgroup::locate(&membership, &mounts))
    }

    fn host_cpu(&self) -> Option<CpuMark> {
        self.read_proc("proc/stat")
            .as_deref()
            .and_then(load::parse_proc_stat)
            .map(CpuMark::Host)
    }

    /// The cgroup's CPU counter, when the cgroup has a quota that binds.
    fn cgroup_cpu(&self) -> Result<Option<CgroupCpu>, CgroupError> {
        let Some(dirs) = &self.layout.cpu else {
            return Ok(None);
        };
        let quota = match dirs {
            CpuDirs::V2(dir) => match self.read_optional(&dir.join("cpu.max"), "cpu.max")? {
                Some(max) => cgroup::parse_cpu_max(&max)?,
                None => None,
            },
            CpuDirs::V1 { cpu, .. } => {
                let quota =
                    self.read_optional(&cpu.join("cpu.cfs_quota_us"), "cpu.cfs_quota_us")?;
                match quota {
                    Some(quota) => {
                        let period = self
                            .read_optional(&cpu.join("cpu.cfs_period_us"), "cpu.cfs_period_us")?
                            .unwrap_or_default();
                        cgroup::parse_cfs_quota(&quota, &period)?
                    }
                    None => None,
                }
            }
        };
        let Some(cpus) = load::cpu_cap(quota, self.cpus_available(dirs)) else {
            return Ok(None);
        };
        let (source, used) = match dirs {
            CpuDirs::V2(dir) => (
                LoadSource::CgroupV2,
                cgroup::parse_cpu_stat_usage(
                    &self.read_required(&dir.join("cpu.stat"), "cpu.stat")?,
                )?,
            ),
            CpuDirs::V1 { cpuacct, .. } => (
                LoadSource::CgroupV1,
                cgroup::parse_cpuacct_usage(
                    &self.read_required(&cpuacct.join("cpuacct.usage"), "cpuacct.usage")?,
                )?,
            ),
        };
        Ok(Some(CgroupCpu { source, used, cpus }))
    }

    /// The CPUs the process may run on: its affinity (`Cpus_allowed_list`, which a v1 cpuset
    /// narrows) and, in v2, the cgroup's `cpuset.cpus.effective`; the fewer of those that can
    /// be read. Unknown, a quota always binds.
    fn cpus_available(&self, dirs: &CpuDirs) -> Option<u32> {
        let affinity = self
            .read_proc("proc/self/status")
            .and_then(|status| cgroup::parse_cpus_allowed(&status).ok());
        let cpuset = match dirs {
            CpuDirs::V2(dir) => self
                .read_optional(&dir.join("cpuset.cpus.effective"), "cpuset.cpus.effective")
                .ok()
                .flatten()
                .and_then(|list| cgroup::count_cpu_list("cpuset.cpus.effective", &list).ok()),
            CpuDirs::V1 { .. } => None,
        };
        affinity.into_iter().chain(cpuset).min()
    }

    /// The cgroup's memory in use, in percent of its limit, when it has a limit that binds.
    fn cgroup_memory(
        &self,
        host_total_bytes: Option<u64>,
    ) -> Result<Option<(LoadSource, f32)>, CgroupError> {
        let Some(MemoryDir { version, dir }) = &self.layout.memory else {
            return Ok(None);
        };
        let (source, limit_file, usage_file, inactive_file) = match version {
            Version::V2 => (
                LoadSource::CgroupV2,
                "memory.max",
                "memory.current",
                "inactive_file",
            ),
            // The hierarchical figure, as the limit covers the cgroups below too.
            Version::V1 => (
                LoadSource::CgroupV1,
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            ),
        };
        let Some(limit) = self.read_optional(&dir.join(limit_file), limit_file)? else {
            return Ok(None);
        };
        let limit = cgroup::parse_memory_limit(limit_file, &limit)?;
        let Some(limit) = load::memory_cap(limit, host_total_bytes) else {
            return Ok(None);
        };
        let usage = cgroup::parse_u64(
            usage_file,
            &self.read_required(&dir.join(usage_file), usage_file)?,
        )?;
        let stat = self.read_required(&dir.join("memory.stat"), "memory.stat")?;
        let inactive = cgroup::stat_field("memory.stat", &stat, inactive_file)?;
        Ok(load::working_set_percent(usage, inactive, limit).map(|percent| (source, percent)))
    }

    fn log_change(&mut self, source: LoadSources, problems: Vec<String>) {
        let now = (source, problems);
        if self.logged.as_ref() == Some(&now) {
            return;
        }
        if now.1.is_empty() {
            tracing::info!(cpu = %source.cpu, mem = %source.mem, "load source");
        } else {
            tracing::warn!(
                cpu = %source.cpu,
                mem = %source.mem,
                problem = %now.1.join("; "),
                "cgroup load unreadable; using the machine's"
            );
        }
        self.logged = Some(now);
    }

    fn path(&self, absolute: &Path) -> PathBuf {
        self.root
            .join(absolute.strip_prefix("/").unwrap_or(absolute))
    }

    /// A `/proc` file (path relative to the root), `None` when it cannot be read.
    fn read_proc(&self, relative: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(relative)).ok()
    }

    /// A file that may be absent (`None` then), such as a limit the root cgroup does not have.
    fn read_optional(&self, absolute: &Path, file: &str) -> Result<Option<String>, CgroupError> {
        match std::fs::read_to_string(self.path(absolute)) {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(CgroupError::new(
                file,
                format!("cannot read {}: {error}", absolute.display()),
            )),
        }
    }

    fn read_required(&self, absolute: &Path, file: &str) -> Result<String, CgroupError> {
        std::fs::read_to_string(self.path(absolute)).map_err(|error| {
            CgroupError::new(file, format!("cannot read {}: {error}", absolute.display()))
        })
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn recorded(case: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/cgroup")
            .join(case)
    }

    /// A copy of a recorded tree whose files a test may change, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn of(case: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "faro-worker-cgroup-{}-{}-{case}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            copy_tree(&recorded(case), &dir);
            Self(dir)
        }

        fn write(&self, file: &str, text: &str) {
            std::fs::write(self.0.join(file), text).unwrap();
        }

        fn remove(&self, file: &str) {
            std::fs::remove_file(self.0.join(file)).unwrap();
        }

        fn sampler(&self) -> Sampler {
            Sampler::under(&self.0)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    fn sources(cpu: LoadSource, mem: LoadSource) -> LoadSources {
        LoadSources { cpu, mem }
    }

    fn close(actual: Option<f32>, expected: f64) {
        let actual = actual.expect("a reading");
        assert!(
            (f64::from(actual) - expected).abs() < 1e-3,
            "{actual} != {expected}"
        );
    }

    /// `MemTotal` and `MemAvailable` of a recorded `/proc/meminfo`, as a used percent.
    fn host_mem(case: &str) -> f64 {
        let text = std::fs::read_to_string(recorded(case).join("proc/meminfo")).unwrap();
        let info = load::parse_meminfo(&text).unwrap();
        100.0 - info.available_bytes as f64 * 100.0 / info.total_bytes as f64
    }

    const V2_CPU_STAT: &str = "usage_usec {}\nuser_usec 40112408\nsystem_usec 8101109\n";

    #[test]
    fn a_v2_container_with_a_quota_and_a_limit_reads_its_cgroup() {
        let tree = Scratch::of("v2-limited");
        let mut sampler = tree.sampler();
        assert_eq!(
            sampler.layout,
            Layout {
                cpu: Some(CpuDirs::V2("/sys/fs/cgroup".into())),
                memory: Some(MemoryDir {
                    version: Version::V2,
                    dir: "/sys/fs/cgroup".into()
                }),
            }
        );
        let t0 = Instant::now();
        let first = sampler.sample_at(t0);
        let v2 = sources(LoadSource::CgroupV2, LoadSource::CgroupV2);
        assert_eq!(first.source, v2);
        assert_eq!(first.cpu, None, "no CPU figure before a second reading");
        // (memory.current - inactive_file) / memory.max, not the 8 GiB machine's use.
        close(
            first.mem,
            (241_172_480.0 - 26_214_400.0) * 100.0 / 536_870_912.0,
        );

        // 750 ms of CPU in one second with --cpus=1.5: half of the quota.
        let usage = 48_213_517 + 750_000;
        tree.write(
            "sys/fs/cgroup/cpu.stat",
            &V2_CPU_STAT.replace("{}", &usage.to_string()),
        );
        let second = sampler.sample_at(t0 + Duration::from_secs(1));
        assert_eq!(second.cpu, Some(50.0));
        assert_eq!(second.source, v2);

        // No time passed: no figure, and admission is not closed on one.
        assert_eq!(sampler.sample_at(t0 + Duration::from_secs(1)).cpu, None);
        // The counter went backwards (the cgroup was recreated): no figure, then it resumes
        // from the new count.
        tree.write("sys/fs/cgroup/cpu.stat", &V2_CPU_STAT.replace("{}", "1000"));
        assert_eq!(sampler.sample_at(t0 + Duration::from_secs(2)).cpu, None);
        tree.write(
            "sys/fs/cgroup/cpu.stat",
            &V2_CPU_STAT.replace("{}", "301000"),
        );
        close(sampler.sample_at(t0 + Duration::from_secs(3)).cpu, 20.0);
    }

    #[test]
    fn a_v2_container_without_limits_reads_the_machine() {
        let tree = Scratch::of("v2-max");
        let mut sampler = tree.sampler();
        assert!(sampler.layout.cpu.is_some() && sampler.layout.memory.is_some());
        let first = sampler.sample_at(Instant::now());
        assert_eq!(first.source, LoadSources::default());
        close(first.mem, host_mem("v2-max"));
        // The machine's CPU counters: 300 of 400 ticks busy.
        tree.write("proc/stat", "cpu  100 0 0 100 0 0 0 0 0 0\n");
        sampler.sample_at(Instant::now());
        tree.write("proc/stat", "cpu  400 0 0 200 0 0 0 0 0 0\n");
        let reading = sampler.sample_at(Instant::now());
        assert_eq!(reading.cpu, Some(75.0));
        assert_eq!(reading.source.cpu, LoadSource::Host);
    }

    #[test]
    fn a_v1_container_with_a_quota_and_a_limit_reads_its_cgroup() {
        let tree = Scratch::of("v1-limited");
        let mut sampler = tree.sampler();
        // The hierarchies are mounted at the container's cgroup (mount root /docker/<id>).
        let dir = PathBuf::from("/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(
            sampler.layout,
            Layout {
                cpu: Some(CpuDirs::V1 {
                    cpu: dir.clone(),
                    cpuacct: dir
                }),
                memory: Some(MemoryDir {
                    version: Version::V1,
                    dir: "/sys/fs/cgroup/memory".into()
                }),
            }
        );
        let t0 = Instant::now();
        let first = sampler.sample_at(t0);
        let v1 = sources(LoadSource::CgroupV1, LoadSource::CgroupV1);
        assert_eq!(first.source, v1);
        // (usage_in_bytes - total_inactive_file) / limit_in_bytes.
        close(
            first.mem,
            (503_316_480.0 - 62_914_560.0) * 100.0 / 1_073_741_824.0,
        );
        // One CPU-second (in ns) in a second with --cpus=2.
        tree.write(
            "sys/fs/cgroup/cpu,cpuacct/cpuacct.usage",
            &format!("{}\n", 731_004_118_733u64 + 1_000_000_000),
        );
        let second = sampler.sample_at(t0 + Duration::from_secs(1));
        assert_eq!(second.cpu, Some(50.0));
        assert_eq!(second.source, v1);
    }

    #[test]
    fn v1_without_limits_on_a_hybrid_host_reads_the_machine() {
        let mut sampler = Sampler::under(recorded("v1-unlimited"));
        // cpu and cpuacct mounted apart; the empty cgroup2 at .../unified is not used.
        assert_eq!(
            sampler.layout,
            Layout {
                cpu: Some(CpuDirs::V1 {
                    cpu: "/sys/fs/cgroup/cpu".into(),
                    cpuacct: "/sys/fs/cgroup/cpuacct".into()
                }),
                memory: Some(MemoryDir {
                    version: Version::V1,
                    dir: "/sys/fs/cgroup/memory/worker/faro-worker-1".into()
                }),
            }
        );
        let reading = sampler.sample_at(Instant::now());
        assert_eq!(reading.source, LoadSources::default());
        close(reading.mem, host_mem("v1-unlimited"));
    }

    #[test]
    fn without_cgroup_mounts_the_machine_is_read() {
        let mut sampler = Sampler::under(recorded("host-no-cgroup"));
        assert_eq!(sampler.layout, Layout::default());
        let reading = sampler.sample_at(Instant::now());
        assert_eq!(reading.source, LoadSources::default());
        close(reading.mem, host_mem("host-no-cgroup"));
    }

    #[test]
    fn a_service_limiting_only_memory_reads_each_from_its_own_source() {
        let mut sampler = Sampler::under(recorded("v2-nested"));
        let dir = PathBuf::from("/sys/fs/cgroup/system.slice/faro-worker.service");
        assert_eq!(sampler.layout.cpu, Some(CpuDirs::V2(dir.clone())));
        let reading = sampler.sample_at(Instant::now());
        // cpu.max is "max": the machine's CPU; MemoryMax=2G: the service's memory.
        assert_eq!(
            reading.source,
            sources(LoadSource::Host, LoadSource::CgroupV2)
        );
        close(
            reading.mem,
            (912_261_120.0 - 318_767_104.0) * 100.0 / 2_147_483_648.0,
        );
    }

    #[test]
    fn unusable_cgroup_files_fall_back_to_the_machine() {
        let tree = Scratch::of("v2-limited");
        tree.write("sys/fs/cgroup/memory.stat", "anon 1\nfile 2\n");
        tree.write("sys/fs/cgroup/cpu.max", "150000\n");
        let mut sampler = tree.sampler();
        let reading = sampler.sample_at(Instant::now());
        assert_eq!(reading.source, LoadSources::default());
        close(reading.mem, host_mem("v2-limited"));
        let (_, problems) = sampler.logged.clone().unwrap();
        assert_eq!(
            problems,
            vec![
                "cpu.max: expected '<quota|max> <period>', got \"150000\"".to_owned(),
                "memory.stat: no inactive_file line".to_owned(),
            ]
        );

        // A limit file that is not there (the root cgroup has none) is no limit, quietly.
        tree.remove("sys/fs/cgroup/cpu.max");
        tree.remove("sys/fs/cgroup/memory.max");
        let reading = sampler.sample_at(Instant::now());
        assert_eq!(reading.source, LoadSources::default());
        assert_eq!(sampler.logged.clone().unwrap().1, Vec::<String>::new());

        // A quota of all four CPUs, or a limit above the machine's memory, limits nothing.
        tree.write("sys/fs/cgroup/cpu.max", "400000 100000\n");
        tree.write("sys/fs/cgroup/memory.max", "17179869184\n");
        assert_eq!(
            sampler.sample_at(Instant::now()).source,
            LoadSources::default()
        );
        // A cpuset of two CPUs makes a quota of three no limit either; one of 1.5 binds.
        tree.write("sys/fs/cgroup/cpuset.cpus.effective", "0-1\n");
        tree.write("sys/fs/cgroup/cpu.max", "300000 100000\n");
        assert_eq!(
            sampler.sample_at(Instant::now()).source.cpu,
            LoadSource::Host
        );
        tree.write("sys/fs/cgroup/cpu.max", "150000 100000\n");
        assert_eq!(
            sampler.sample_at(Instant::now()).source.cpu,
            LoadSource::CgroupV2
        );
    }

    #[test]
    fn a_malformed_mountinfo_reads_the_machine() {
        let tree = Scratch::of("v2-limited");
        tree.write(
            "proc/self/mountinfo",
            "1289 1288 0:29 / /sys/fs/cgroup ro cgroup2\n",
        );
        let mut sampler = tree.sampler();
        assert_eq!(sampler.layout, Layout::default());
        assert_eq!(
            sampler.sample_at(Instant::now()).source,
            LoadSources::default()
        );
    }

    #[test]
    fn nothing_readable_gives_no_figure_and_no_closed_admission() {
        let mut sampler = Sampler::under(recorded("no-such-tree"));
        let t0 = Instant::now();
        sampler.sample_at(t0);
        let reading = sampler.sample_at(t0 + Duration::from_secs(1));
        assert_eq!(reading, Reading::default());
        let limits = faro_shared::messages::WorkerSettings {
            cpu_max: 0,
            mem_max: 0,
            log_level: None,
        };
        assert_eq!(load::closed_by(reading.cpu, reading.mem, &limits), None);
    }

    /// This machine's own files, whatever its limits: figures in range, no panic.
    #[test]
    fn this_machine_is_read() {
        let mut sampler = Sampler::new();
        let t0 = Instant::now();
        sampler.sample_at(t0);
        let reading = sampler.sample_at(t0 + Duration::from_millis(100));
        for figure in [reading.cpu, reading.mem].into_iter().flatten() {
            assert!((0.0..=100.0).contains(&figure), "{reading:?}");
        }
    }

    #[test]
    fn a_heartbeat_without_a_load_source_reads_as_host() {
        let old = serde_json::json!({
            "worker_id": "w1", "pool": "default", "capacity": 4, "kinds": [],
            "in_progress": 0, "cpu_percent": 12.5, "load_score": 13, "version": "0.1.0",
            "started_at": "2026-01-01T00:00:00Z", "sent_at": "2026-01-01T00:00:05Z",
        });
        let beat: faro_shared::messages::Heartbeat = serde_json::from_value(old).unwrap();
        assert_eq!(beat.load_source, LoadSources::default());
        let mut new = serde_json::to_value(&beat).unwrap();
        assert_eq!(
            new["load_source"],
            serde_json::json!({"cpu": "host", "mem": "host"})
        );
        new["load_source"] = serde_json::json!({"cpu": "cgroup_v1", "mem": "cgroup_v2"});
        let beat: faro_shared::messages::Heartbeat = serde_json::from_value(new).unwrap();
        assert_eq!(
            beat.load_source,
            sources(LoadSource::CgroupV1, LoadSource::CgroupV2)
        );
    }
}
