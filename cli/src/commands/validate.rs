//! `faro validate FILE`: checks a job file as `faro submit` would, sending nothing.

use std::path::Path;

use super::submit::read_job_file;

pub fn run(file: &Path) -> anyhow::Result<()> {
    let (submission, _) = read_job_file(file)?;
    println!("{}: {} jobs, valid", file.display(), submission.jobs.len());
    Ok(())
}
