//! Build script: the commit this build comes from, for `faro_build_info{commit}`.
//!
//! `FARO_COMMIT` when set (Docker builds, where `.git` is not in the build context), else
//! `git rev-parse --short HEAD`, else `unknown`. Cargo reruns this script only when
//! `FARO_COMMIT` changes, HEAD moves (a commit, a checkout, a reset) or a migration changes,
//! not on every build.

// Cargo reads a build script's instructions from its standard output.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The migrations are embedded at compile time (`refinery::embed_migrations!`), and the
    // watches below replace Cargo's own: without this a new migration is not built in.
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-env-changed=FARO_COMMIT");
    let commit = std::env::var("FARO_COMMIT")
        .ok()
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BUILD_COMMIT={commit}");
}

/// The short commit of HEAD, watching the files that change when HEAD moves.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        // HEAD changes on a checkout or a detached commit; its reflog on every move of HEAD,
        // including a commit to the branch it points to.
        watch(&git_dir.join("HEAD"));
        watch(&git_dir.join("logs/HEAD"));
        // The branch itself, loose or packed, for a repository without reflogs.
        let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
            .map_or(git_dir, PathBuf::from);
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch(&common.join(branch));
        }
        watch(&common.join("packed-refs"));
    }
    Some(commit)
}

/// Reruns this script when `path` changes. Only existing files: Cargo reruns the script on
/// every build for a path that does not exist.
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}
