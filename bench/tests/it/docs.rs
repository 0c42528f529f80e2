//! The README documents every `FARO_*` variable the code reads, and its example files are valid.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with("tests") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_variable_the_code_reads_is_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut files = Vec::new();
    for dir in ["shared/src", "services", "cli/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut missing = Vec::new();
    let mut found = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests sit at the end of a file; their strings are not configuration.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (at, _) in text.match_indices("\"FARO_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            found += 1;
            if !readme.contains(&format!("`{name}`")) {
                missing.push(format!("{name} ({})", file.display()));
            }
        }
    }
    assert!(
        found > 20,
        "only {found} variables found: the scan is broken"
    );
    assert!(missing.is_empty(), "not in the README's table: {missing:?}");
}

#[test]
fn the_example_files_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let jobs = std::fs::read(root.join("examples/sim-batch.json")).unwrap();
    faro_shared::jobfile::parse(&jobs).unwrap();
    let targets = std::fs::read(root.join("examples/targets.json")).unwrap();
    assert_eq!(faro_shared::targetfile::parse(&targets).unwrap().len(), 3);
}
