//! `faro ingest --watch DIR`: batch files dropped into a directory (the seeds' manual mode).
//!
//! Each `*.json` is taken once it has settled (unchanged between two looks and older than the
//! settle time, so a file still being copied is never read half), validated whole, and
//! submitted with ids derived from its content: dropping the same file again creates no
//! duplicate runs. It then moves to `processed/` with a timestamp prefix, or to `rejected/`
//! beside a `.error.json` naming the job index, field and problem. A file that cannot be
//! submitted (NATS down) stays where it is and is tried again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use faro_shared::config::Env;
use faro_shared::jobfile::{self, JobFileError, ParseOptions};
use faro_shared::{nats, CommonConfig};

/// How to watch.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub interval: Duration,
    pub settle: Duration,
    pub max_bytes: u64,
    pub once: bool,
    /// How files are read (`FARO_BATCH_QUEUE`).
    pub job_files: ParseOptions,
}

/// Connects, then watches the directory.
pub async fn run(env: &Env, options: Options) -> anyhow::Result<()> {
    let config = CommonConfig::from_env(env)?;
    let client = nats::connect(&config.nats, "faro-ingest", nats::Retry::Never).await?;
    watch(&client, &config, &options).await
}

/// Watches `options.dir` until stopped (or, with `once`, takes what is ready and returns).
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn watch(
    client: &async_nats::Client,
    config: &CommonConfig,
    options: &Options,
) -> anyhow::Result<()> {
    let processed = options.dir.join("processed");
    let rejected = options.dir.join("rejected");
    for dir in [&processed, &rejected] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    eprintln!("watching {} for *.json job files", options.dir.display());
    let mut seen: HashMap<PathBuf, (u64, SystemTime)> = HashMap::new();
    loop {
        for (path, size, modified) in candidates(&options.dir)? {
            let settled = modified.elapsed().is_ok_and(|age| age >= options.settle);
            let unchanged = options.once || seen.get(&path) == Some(&(size, modified));
            if !(settled && unchanged) {
                seen.insert(path, (size, modified));
                continue;
            }
            seen.remove(&path);
            let name = file_name(&path);
            match take(client, config, &path, size, options).await {
                Ok(Taken::Submitted {
                    jobs,
                    submission,
                    duplicate,
                }) => {
                    let to = move_into(&path, &processed)?;
                    println!(
                        "processed {name}: {jobs} jobs (submission {submission}){} -> {}",
                        if duplicate {
                            ", already submitted before: no new runs"
                        } else {
                            ""
                        },
                        to.display()
                    );
                }
                Ok(Taken::Refused(error)) => {
                    let to = move_into(&path, &rejected)?;
                    let report = to.with_file_name(format!("{}.error.json", file_name(&to)));
                    let body = serde_json::json!({
                        "file": name,
                        "error": error,
                        "message": error.to_string(),
                        "rejected_at": chrono::Utc::now(),
                    });
                    std::fs::write(&report, serde_json::to_vec_pretty(&body)?)
                        .with_context(|| format!("cannot write {}", report.display()))?;
                    println!("rejected {name}: {error} -> {}", to.display());
                }
                Err(error) => {
                    // Left in place: the next look tries again.
                    eprintln!(
                        "cannot submit {name} now, will retry: {}",
                        faro_shared::pg::error_text(&error)
                    );
                }
            }
        }
        if options.once {
            return Ok(());
        }
        tokio::time::sleep(options.interval).await;
    }
}

/// What happened to one file.
enum Taken {
    Submitted {
        jobs: usize,
        submission: String,
        duplicate: bool,
    },
    Refused(JobFileError),
}

async fn take(
    client: &async_nats::Client,
    config: &CommonConfig,
    path: &Path,
    size: u64,
    options: &Options,
) -> anyhow::Result<Taken> {
    let max_bytes = options.max_bytes;
    if size > max_bytes {
        return Ok(Taken::Refused(JobFileError::whole(format!(
            "the file is {size} bytes; at most {max_bytes} are accepted (--max-bytes)"
        ))));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let submission = match jobfile::parse_with(&bytes, &options.job_files) {
        Ok(submission) => submission,
        Err(error) => return Ok(Taken::Refused(error)),
    };
    let digest = super::submit::digest(&bytes);
    let sent = super::submit::submit(client, config, &submission, &digest).await?;
    Ok(Taken::Submitted {
        jobs: submission.jobs.len(),
        submission: digest,
        duplicate: sent.duplicates == sent.ids.len(),
    })
}

/// `*.json` files directly in `dir`, with size and modification time.
fn candidates(dir: &Path) -> anyhow::Result<Vec<(PathBuf, u64, SystemTime)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let hidden = file_name(&path).starts_with('.');
        if hidden || path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_file() {
            out.push((path, meta.len(), meta.modified()?));
        }
    }
    out.sort();
    Ok(out)
}

/// Moves `path` into `dir` under a timestamp prefix; returns the new path.
fn move_into(path: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let to = dir.join(format!("{stamp}-{}", file_name(path)));
    std::fs::rename(path, &to)
        .with_context(|| format!("cannot move {} to {}", path.display(), to.display()))?;
    Ok(to)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
