//! The README documents every `FARO_*` variable the code reads, its example files are valid,
//! and the dashboard plots only metrics the code exports.

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
    // The previous orchestrator's batch file: tasks of the example allow-list's commands.
    let batch = std::fs::read(root.join("examples/batch-file.json")).unwrap();
    let batch = faro_shared::jobfile::parse(&batch).unwrap();
    assert_eq!(batch.jobs.len(), 2);
    let targets = std::fs::read(root.join("examples/targets.json")).unwrap();
    assert_eq!(faro_shared::targetfile::parse(&targets).unwrap().len(), 3);

    let allowlist = std::fs::read(root.join("examples/exec-allowlist.json")).unwrap();
    let allowlist = faro_worker::exec::AllowList::parse(&allowlist).unwrap();
    let ping = faro_shared::messages::ExecParams {
        command: "ping".into(),
        args: [("count", "3"), ("host", "10.0.0.1")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
    };
    let (_, argv) = allowlist.expand(&ping).unwrap();
    assert_eq!(argv, ["-c", "3", "-W", "2", "10.0.0.1"]);
    for job in &batch.jobs {
        let faro_shared::messages::Task::Exec(exec) = &job.task else {
            panic!("{job:?}")
        };
        allowlist.expand(exec).unwrap();
    }

    // The compose fleet's targets are the ones the job templates poll, one chain each.
    let fleet = std::fs::read(root.join("examples/compose-fleet.json")).unwrap();
    let fleet: Vec<String> = faro_shared::targetfile::parse(&fleet)
        .unwrap()
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    // Every template is checked here: one made for a new vendor must be added to this list.
    let listed: std::collections::BTreeSet<String> =
        std::fs::read_dir(root.join("examples/templates"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    let templates = [
        ("huawei-ma5800", "olt-huawei-1"),
        ("zte-c300", "olt-zte-1"),
        ("zte-c600", "olt-zte-c600-1"),
        ("fiberhome-an5516", "olt-fiberhome-1"),
    ];
    assert_eq!(
        listed,
        templates.iter().map(|(t, _)| format!("{t}.json")).collect(),
        "examples/templates/"
    );
    for (template, target) in templates {
        assert!(fleet.contains(&target.to_owned()), "{fleet:?}");
        let file = std::fs::read(root.join(format!("examples/templates/{template}.json"))).unwrap();
        let jobs = faro_shared::jobfile::parse(&file).unwrap().jobs;
        assert_eq!(
            jobs.len(),
            3,
            "{template}: discovery, descriptions, optical power"
        );
        assert!(jobs
            .iter()
            .all(|j| j.target.as_ref().map(|t| t.as_str()) == Some(target)));
        assert!(
            jobs[0].interval.is_some()
                && jobs[1].after == jobs[0].id
                && jobs[2].after == jobs[1].id
        );
        // The simulated OLT has every column the template walks.
        let data = faro_shared::testing::read_snmprec(&faro_shared::testing::olt_snmprec(template))
            .unwrap();
        for job in &jobs {
            let faro_shared::messages::Task::SnmpWalk(walk) = &job.task else {
                panic!("{template}: templates walk");
            };
            for oid in walk.oids.iter() {
                let prefix = format!("{oid}.");
                assert!(
                    data.iter().any(|l| l.oid.starts_with(&prefix)),
                    "{template}: {oid}"
                );
            }
        }
    }
}

/// `scripts/olt-jobs` aims every template at another OLT: ids, targets and links renamed,
/// the interval replaced, the chain still valid.
#[test]
fn olt_jobs_aims_each_template_at_any_olt() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for template in ["huawei-ma5800", "zte-c300", "zte-c600", "fiberhome-an5516"] {
        let out = std::process::Command::new("python3")
            .arg(root.join("scripts/olt-jobs"))
            .arg(root.join(format!("examples/templates/{template}.json")))
            .args(["olt-pop-7", "--interval", "90s"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{template}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let jobs = faro_shared::jobfile::parse(&out.stdout).unwrap().jobs;
        assert_eq!(jobs.len(), 3, "{template}");
        let ids: Vec<String> = jobs
            .iter()
            .map(|j| j.id.as_ref().unwrap().as_str().to_owned())
            .collect();
        assert_eq!(
            ids,
            ["discovery", "descriptions", "optical"].map(|s| format!("olt-pop-7-{s}")),
            "{template}"
        );
        assert!(jobs
            .iter()
            .all(|j| j.target.as_ref().map(|t| t.as_str()) == Some("olt-pop-7")));
        assert_eq!(
            jobs[0].interval.map(|i| i.get()),
            Some(std::time::Duration::from_secs(90))
        );
        assert!(jobs[1].after == jobs[0].id && jobs[2].after == jobs[1].id);
    }
}

/// Every metric the Grafana dashboard plots is one the code exports.
#[test]
fn the_dashboard_plots_only_metrics_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for dir in ["shared/src", "services", "cli/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let code: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let dashboard =
        std::fs::read_to_string(root.join("deploy/grafana/dashboards/faro.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut plotted = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for prefix in ["faro_", "process_"] {
                let mut rest = expr;
                while let Some(at) = rest.find(prefix) {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                        .collect();
                    rest = &rest[at + name.len()..];
                    let name = name.strip_suffix("_bucket").unwrap_or(&name).to_owned();
                    plotted.push(name);
                }
            }
        }
    }
    assert!(plotted.len() >= 10, "{plotted:?}");
    let missing: Vec<_> = plotted
        .iter()
        .filter(|name| !code.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "plotted but never exported: {missing:?}"
    );
}

/// Every query of the dashboard parses: each panel's expressions, Grafana's interval variables
/// given a duration, go through `promtool check rules` as recording rules.
#[test]
fn every_dashboard_query_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dashboard =
        std::fs::read_to_string(root.join("deploy/grafana/dashboards/faro.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let variables = [
        ("${__rate_interval}", "1m"),
        ("$__rate_interval", "1m"),
        ("${__interval}", "1m"),
        ("$__interval", "1m"),
        ("${__range}", "1h"),
        ("$__range", "1h"),
    ];
    let mut rules = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let id = &panel["id"];
        for target in panel["targets"].as_array().unwrap() {
            let mut expr = target["expr"].as_str().unwrap().to_owned();
            for (variable, value) in variables {
                expr = expr.replace(variable, value);
            }
            assert!(
                !expr.contains('$'),
                "panel {id}: a variable this test does not know: {expr}"
            );
            let record = format!("dashboard:panel_{id}_{}", target["refId"].as_str().unwrap());
            rules.push(serde_json::json!({"record": record, "expr": expr}));
        }
    }
    assert!(rules.len() >= 20, "{rules:?}");
    // JSON is YAML: promtool reads it as a rules file.
    let file = tempfile::Builder::new().suffix(".yml").tempfile().unwrap();
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(file.path(), serde_json::to_vec_pretty(&groups).unwrap()).unwrap();
    let (parsed, printed) =
        crate::metrics::promtool(&["check", "rules", file.path().to_str().unwrap()], b"");
    assert!(parsed, "promtool check rules:\n{printed}");
}

/// An error is logged, printed or answered through `pg::error_text`, never with `{error:#}`:
/// that shows a PostgreSQL error's DETAIL, which repeats a refused row whole (a target's
/// SNMP credentials included).
#[test]
fn no_error_is_shown_with_its_postgresql_detail() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for dir in ["shared/src", "services", "cli/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut shown = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // The code, not its unit tests.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (number, line) in code.lines().enumerate() {
            // `{error:#}`, `{failure:#}`, `{:#}`: an error's chain with its causes' Display.
            if line.contains(":#}") && !line.trim_start().starts_with("//") {
                shown.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(files.len() > 50, "no source read: {files:?}");
    assert!(
        shown.is_empty(),
        "use pg::error_text:\n{}",
        shown.join("\n")
    );
}
