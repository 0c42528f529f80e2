//! `faro validate FILE`: checks a job file as `faro submit` would, sending nothing.

use std::path::Path;

use faro_shared::config::Env;
use faro_shared::jobfile::ParseOptions;

use super::submit::read_job_file;

pub fn run(env: &Env, file: &Path) -> anyhow::Result<()> {
    let (submission, _) = read_job_file(file, &ParseOptions::from_env(env)?)?;
    println!("{}: {} jobs, valid", file.display(), submission.jobs.len());
    Ok(())
}
