//! The JSON job format: parsing a whole submission, or refusing it whole.
//!
//! A submission is `{"jobs": [...]}` (optionally with `submitted_at` and `batch`) or a bare
//! array of jobs. Each job has `queue`, `kind`, optional `target`, `params`, `priority`, `id`
//! and `description`. The previous orchestrator's batch files run as they are:
//! `{"metadata": {...}, "tasks": [{"task_id", "algorithm", "parameters", "priority",
//! "description"}]}`, each task an `exec` job of the allow-list's command `algorithm` with its
//! `parameters` as arguments, in the metadata's `queue` or [`ParseOptions::batch_queue`]. Any
//! error names the job's (or task's) index and field, so an operator can fix a file of 10,000
//! jobs; no part of a refused submission is ever applied, and an unknown field refuses it
//! whole. Both the CLI and the dispatcher parse with this module.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_path_to_error::Segment;

use crate::domain::{JobId, MaxAttempts, Priority, QueueName, Retryable, TargetId};
use crate::messages::{
    BatchMetadata, ExecParams, Interval, JobSpec, Kind, Overlap, RunIf, SimParams, Submission, Task,
};
use crate::snmp::{SnmpGetParams, SnmpWalkParams};

/// Most jobs one submission may hold.
pub const MAX_JOBS: usize = 1_000_000;

/// Why a submission was refused, precise enough to fix the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFileError {
    /// Index of the job in the `jobs` array (0-based), when the error is inside one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<usize>,
    /// The field inside the job (`priority`, `params.duration_ms`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub problem: String,
    /// Position in the text, for syntax errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl JobFileError {
    /// An error about the submission as a whole.
    pub fn whole(problem: impl Into<String>) -> Self {
        Self {
            job: None,
            field: None,
            problem: problem.into(),
            line: None,
            column: None,
        }
    }

    /// An error about `field` of job `job` (or of the submission, when `job` is unknown).
    pub fn in_job_field(job: Option<usize>, field: &str, problem: impl Into<String>) -> Self {
        Self {
            job,
            field: Some(field.to_owned()),
            ..Self::whole(problem)
        }
    }

    fn in_job(job: usize, field: &str, problem: impl Into<String>) -> Self {
        Self {
            job: Some(job),
            field: Some(field.to_owned()),
            ..Self::whole(problem)
        }
    }
}

impl fmt::Display for JobFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = Located {
            index: self.job,
            field: self.field.clone(),
            problem: self.problem.clone(),
            line: self.line,
            column: self.column,
        };
        at.write("job", f)
    }
}

impl std::error::Error for JobFileError {}

/// A job as written, before its kind and params are checked together.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobInput {
    #[serde(default)]
    id: Option<JobId>,
    queue: QueueName,
    kind: String,
    #[serde(default)]
    target: Option<TargetId>,
    #[serde(default)]
    params: Option<serde_json::Value>,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default)]
    max_attempts: Option<MaxAttempts>,
    #[serde(default)]
    retry_on: Option<Vec<Retryable>>,
    #[serde(default)]
    interval: Option<Interval>,
    #[serde(default)]
    after: Option<JobId>,
    #[serde(default)]
    run_if: Option<RunIf>,
    #[serde(default)]
    timeout: Option<Interval>,
    #[serde(default)]
    overlap: Option<Overlap>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmissionInput {
    jobs: Vec<JobInput>,
    #[serde(default)]
    submitted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    batch: Option<BatchMetadata>,
}

/// A batch file of the previous orchestrator.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchInput {
    #[serde(default)]
    metadata: Option<BatchMetadata>,
    tasks: Vec<TaskInput>,
}

/// One task of such a file: an `exec` job.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskInput {
    task_id: JobId,
    /// The name of the workers' allow-listed command.
    algorithm: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default)]
    description: Option<String>,
}

/// Why a text holding a NUL is refused: PostgreSQL's text and jsonb cannot hold one, so it is
/// refused here, naming the field, not at recording.
const NUL_REFUSED: &str = "contains a NUL character (\\u0000); expected text without one";

/// What parsing takes from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// The queue of a batch file's tasks when its metadata names none (`FARO_BATCH_QUEUE`).
    pub batch_queue: QueueName,
}

/// The queue of batch files' tasks by default.
pub const DEFAULT_BATCH_QUEUE: &str = "batch";

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            batch_queue: QueueName::parse(DEFAULT_BATCH_QUEUE).expect("a valid queue name"),
        }
    }
}

impl ParseOptions {
    /// `FARO_BATCH_QUEUE` (`batch`): give the CLI and the dispatchers the same.
    pub fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            batch_queue: env.parse(
                "FARO_BATCH_QUEUE",
                Self::default().batch_queue,
                "a queue name: letters, digits, - and _",
            )?,
        })
    }
}

/// Parses and validates a whole submission, batch files' tasks going to queue `batch`.
pub fn parse(bytes: &[u8]) -> Result<Submission, JobFileError> {
    parse_with(bytes, &ParseOptions::default())
}

/// Parses and validates a whole submission: a job file, or a batch file of the previous
/// orchestrator.
pub fn parse_with(bytes: &[u8], options: &ParseOptions) -> Result<Submission, JobFileError> {
    let bare_array = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let batch_file = !bare_array && is_batch_file(bytes);
    let input = if bare_array {
        deserialize::<Vec<JobInput>>(bytes, Some("jobs")).map(|jobs| SubmissionInput {
            jobs,
            submitted_at: None,
            batch: None,
        })
    } else if batch_file {
        batch_jobs(bytes, options)
    } else {
        deserialize::<SubmissionInput>(bytes, None)
    }?;
    if input.jobs.is_empty() {
        let list = if batch_file { "tasks" } else { "jobs" };
        return Err(JobFileError {
            field: Some(list.to_owned()),
            ..JobFileError::whole(format!("no {list}; expected at least one"))
        });
    }
    if let Some(batch) = &input.batch {
        let part = if batch_file { "metadata" } else { "batch" };
        for (name, text) in [
            ("creation_date", &batch.creation_date),
            ("description", &batch.description),
            ("created_by", &batch.created_by),
        ] {
            if text.as_deref().is_some_and(|text| text.contains('\0')) {
                return Err(JobFileError {
                    field: Some(format!("{part}.{name}")),
                    ..JobFileError::whole(NUL_REFUSED)
                });
            }
        }
    }
    if input.jobs.len() > MAX_JOBS {
        return Err(JobFileError::whole(format!(
            "{} jobs; at most {MAX_JOBS} are accepted in one submission",
            input.jobs.len()
        )));
    }
    let jobs = input
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, job)| validate(index, job))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            if batch_file {
                as_task_error(error)
            } else {
                error
            }
        })?;
    let mut seen = std::collections::HashMap::new();
    for (index, job) in jobs.iter().enumerate() {
        if let Some(id) = &job.id {
            if let Some(first) = seen.insert(id, index) {
                let error = JobFileError::in_job(
                    index,
                    "id",
                    format!("id {id:?} is already used by job {first}; expected ids unique in one submission"),
                );
                return Err(if batch_file {
                    as_task_error(error)
                } else {
                    error
                });
            }
        }
    }
    Ok(Submission {
        jobs,
        submitted_at: input.submitted_at,
        batch: input.batch,
    })
}

/// An error about a job made from a batch file's task, naming the task's fields.
fn as_task_error(mut error: JobFileError) -> JobFileError {
    error.field = error.field.map(|field| {
        if field == "params.command" {
            "algorithm".to_owned()
        } else if let Some(arg) = field.strip_prefix("params.args.") {
            format!("parameters.{arg}")
        } else if field == "id" {
            "task_id".to_owned()
        } else {
            field
        }
    });
    error
}

/// Whether `bytes` is an object with `tasks` and no `jobs`: a batch file of the previous
/// orchestrator. Its values are skipped, not built.
/// The top-level keys are read up to the first error, so a batch file with a syntax error is
/// still read as one (and its error then given with its line and column).
fn is_batch_file(bytes: &[u8]) -> bool {
    let mut keys = Vec::new();
    let _ = serde::de::DeserializeSeed::deserialize(
        TopKeys(&mut keys),
        &mut serde_json::Deserializer::from_slice(bytes),
    );
    keys.iter().any(|key| key == "tasks" || key == "metadata")
        && !keys.iter().any(|key| key == "jobs")
}

/// Records the keys of a JSON object as they are read, its values skipped.
struct TopKeys<'a>(&'a mut Vec<String>);

impl<'de> serde::de::DeserializeSeed<'de> for TopKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            self.0.push(key);
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

/// A batch file's tasks as jobs: `exec` of `algorithm` with `parameters` as arguments (a
/// number or a boolean as its JSON text), in the metadata's queue or the default.
fn batch_jobs(bytes: &[u8], options: &ParseOptions) -> Result<SubmissionInput, JobFileError> {
    let input: BatchInput = deserialize_list(bytes, "tasks", false).map_err(|at| JobFileError {
        job: at.index,
        field: at.field,
        problem: at.problem,
        line: at.line,
        column: at.column,
    })?;
    if let Some(total) = input.metadata.as_ref().and_then(|m| m.total_tasks) {
        if total != input.tasks.len() as u64 {
            return Err(JobFileError {
                field: Some("metadata.total_tasks".to_owned()),
                ..JobFileError::whole(format!(
                    "says {total} tasks, the file has {}; expected the number of tasks",
                    input.tasks.len()
                ))
            });
        }
    }
    let queue = input
        .metadata
        .as_ref()
        .and_then(|m| m.queue.clone())
        .unwrap_or_else(|| options.batch_queue.clone());
    let mut jobs = Vec::with_capacity(input.tasks.len());
    for (index, task) in input.tasks.into_iter().enumerate() {
        let mut args = serde_json::Map::new();
        for (name, value) in task.parameters.unwrap_or_default() {
            let text = match value {
                serde_json::Value::String(text) => text,
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => value.to_string(),
                other => {
                    return Err(JobFileError::in_job(
                        index,
                        &format!("parameters.{name}"),
                        format!(
                            "{other} is not an argument; expected a string, a number or a boolean"
                        ),
                    ))
                }
            };
            args.insert(name, serde_json::Value::String(text));
        }
        jobs.push(JobInput {
            id: Some(task.task_id),
            queue: queue.clone(),
            kind: Kind::Exec.to_string(),
            target: None,
            params: Some(serde_json::json!({"command": task.algorithm, "args": args})),
            priority: task.priority,
            max_attempts: None,
            retry_on: None,
            interval: None,
            after: None,
            run_if: None,
            timeout: None,
            overlap: None,
            description: task.description,
        });
    }
    Ok(SubmissionInput {
        jobs,
        submitted_at: None,
        batch: Some(input.metadata.unwrap_or_default()),
    })
}

fn validate(index: usize, job: JobInput) -> Result<JobSpec, JobFileError> {
    let kind: Kind = job
        .kind
        .parse()
        .map_err(|problem| JobFileError::in_job(index, "kind", problem))?;
    let params = job
        .params
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let task = match kind {
        Kind::Sim => Task::Sim(params_of::<SimParams>(index, params)?),
        Kind::SnmpGet => Task::SnmpGet(params_of::<SnmpGetParams>(index, params)?),
        Kind::SnmpWalk => Task::SnmpWalk(params_of::<SnmpWalkParams>(index, params)?),
        Kind::Exec => {
            let exec = params_of::<ExecParams>(index, params)?;
            if exec.command.is_empty()
                || !exec
                    .command
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            {
                return Err(JobFileError::in_job(
                    index,
                    "params.command",
                    format!(
                        "command {:?} is not a name of the workers' allow-list; expected letters, digits, _ - .",
                        exec.command
                    ),
                ));
            }
            // PostgreSQL's text and jsonb cannot hold a NUL: refused here, not at recording.
            if let Some((name, _)) = exec
                .args
                .iter()
                .find(|(name, value)| name.contains('\0') || value.contains('\0'))
            {
                return Err(JobFileError::in_job(
                    index,
                    &format!("params.args.{}", name.replace('\0', "\\0")),
                    NUL_REFUSED,
                ));
            }
            Task::Exec(exec)
        }
    };
    if job
        .description
        .as_deref()
        .is_some_and(|text| text.contains('\0'))
    {
        return Err(JobFileError::in_job(index, "description", NUL_REFUSED));
    }
    if job.after.is_some() && job.interval.is_some() {
        return Err(JobFileError::in_job(
            index,
            "after",
            "a job runs either on an interval or after another job, not both",
        ));
    }
    if job.run_if.is_some() && job.after.is_none() {
        return Err(JobFileError::in_job(
            index,
            "run_if",
            "run_if needs after: the job it follows",
        ));
    }
    if job.after.is_some() && job.after == job.id {
        return Err(JobFileError::in_job(
            index,
            "after",
            "a job cannot follow itself",
        ));
    }
    if job.overlap.is_some() && job.interval.is_none() {
        return Err(JobFileError::in_job(
            index,
            "overlap",
            "overlap needs interval: only a recurring job has slots that can overlap",
        ));
    }
    if job.interval.is_some() && job.id.is_none() {
        return Err(JobFileError::in_job(
            index,
            "id",
            "a recurring job (with interval) needs an id: it names the job across submissions",
        ));
    }
    if kind.needs_target() && job.target.is_none() {
        return Err(JobFileError::in_job(
            index,
            "target",
            format!("kind {kind} needs a target"),
        ));
    }
    Ok(JobSpec {
        id: job.id,
        queue: job.queue,
        target: job.target,
        task,
        priority: job.priority.unwrap_or_default(),
        max_attempts: job.max_attempts.unwrap_or_default(),
        retry_on: job.retry_on.unwrap_or_else(|| Retryable::DEFAULT.to_vec()),
        interval: job.interval,
        after: job.after,
        run_if: job.run_if.unwrap_or_default(),
        timeout: job.timeout,
        overlap: job.overlap.unwrap_or_default(),
        description: job.description,
    })
}

fn params_of<T: serde::de::DeserializeOwned>(
    index: usize,
    params: serde_json::Value,
) -> Result<T, JobFileError> {
    serde_path_to_error::deserialize(params).map_err(|err| {
        let path = field_path(err.path().iter());
        let field = if path.is_empty() {
            "params".to_owned()
        } else {
            format!("params.{path}")
        };
        JobFileError::in_job(index, &field, err.inner().to_string())
    })
}

fn deserialize<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    root: Option<&str>,
) -> Result<T, JobFileError> {
    deserialize_list(bytes, "jobs", root.is_some()).map_err(|at| JobFileError {
        job: at.index,
        field: at.field,
        problem: at.problem,
        line: at.line,
        column: at.column,
    })
}

/// Where reading a file of entries (`{"<list>": [...]}`, or a bare array) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// Index of the entry in the list.
    pub index: Option<usize>,
    /// The field inside the entry, or of the file when `index` is unknown.
    pub field: Option<String>,
    pub problem: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl Located {
    /// `<entry> 3, field `x`: line L column C: problem`, leaving out what is unknown.
    pub(crate) fn write(&self, entry: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(index) = self.index {
            write!(f, "{entry} {index}")?;
            if let Some(field) = &self.field {
                write!(f, ", field `{field}`")?;
            }
            f.write_str(": ")?;
        } else if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line} column {column}: ")?;
        }
        f.write_str(&self.problem)
    }
}

/// Reads `T` from a file whose entries sit in the list `list` (`bare`: the file is that list),
/// locating any error at an entry's index and field.
pub(crate) fn deserialize_list<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    list: &str,
    bare: bool,
) -> Result<T, Located> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let inner = err.inner();
        let mut segments = err.path().iter().peekable();
        // `jobs[3].priority`: lift the index out of the path.
        let in_list = bare || matches!(segments.peek(), Some(Segment::Map { key }) if key == list);
        if !bare && in_list {
            segments.next();
        }
        let index = match segments.peek() {
            Some(Segment::Seq { index }) if in_list => {
                let index = *index;
                segments.next();
                Some(index)
            }
            _ => None,
        };
        let rest = field_path(segments);
        let field = match (index, rest.is_empty()) {
            (Some(_), true) => None,
            (Some(_), false) => Some(rest),
            (None, _) if in_list => Some(list.to_owned()),
            (None, true) => None,
            (None, false) => Some(rest),
        };
        let syntax = inner.is_syntax() || inner.is_eof();
        Located {
            index,
            field,
            problem: strip_position(&inner.to_string()),
            line: syntax.then(|| inner.line()),
            column: syntax.then(|| inner.column()),
        }
    })
}

pub(crate) fn field_path<'a>(segments: impl Iterator<Item = &'a Segment>) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// serde_json appends " at line L column C"; the error carries those separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> JobFileError {
        parse(text.as_bytes()).expect_err("was accepted")
    }

    #[test]
    fn accepts_both_shapes_with_defaults() {
        let a = parse(br#"{"jobs": [{"queue": "q", "kind": "sim"}]}"#).unwrap();
        let b = parse(br#" [{"queue": "q", "kind": "sim"}]"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.jobs[0].priority, Priority::default());
        assert_eq!(a.jobs[0].task, Task::Sim(SimParams::default()));
    }

    #[test]
    fn full_job_is_read() {
        let s = parse(
            br#"{"jobs": [
              {"queue": "q", "kind": "sim"},
              {"id": "j-2", "queue": "discovery", "kind": "sim", "target": "olt-1",
               "priority": "high", "params": {"duration_ms": [0, 10], "seed": 7}}]}"#,
        )
        .unwrap();
        let job = &s.jobs[1];
        assert_eq!(job.id.as_ref().unwrap().as_str(), "j-2");
        assert_eq!(job.target.as_ref().unwrap().as_str(), "olt-1");
        assert_eq!(job.priority, Priority::MOST_URGENT);
        let Task::Sim(params) = &job.task else {
            panic!("a sim job")
        };
        assert_eq!(params.seed, Some(7));
    }

    #[test]
    fn errors_name_job_index_and_field() {
        let e = err(
            r#"{"jobs": [{"queue": "q", "kind": "sim"}, {"queue": "q", "kind": "sim", "priority": 11}]}"#,
        );
        assert_eq!((e.job, e.field.as_deref()), (Some(1), Some("priority")));
        assert!(e.problem.contains("1 (most urgent) to 10"), "{e}");

        let e = err(
            r#"[{"queue": "q"}, {"queue": "q", "kind": "sim", "params": {"duration_ms": [9, 1]}}]"#,
        );
        assert_eq!(e.job, Some(0));
        assert!(e.problem.contains("kind"), "{e}");

        let e = err(r#"[{"queue": "q", "kind": "sim", "params": {"duration_ms": [9, 1]}}]"#);
        assert_eq!(
            (e.job, e.field.as_deref()),
            (Some(0), Some("params.duration_ms"))
        );

        let e = err(r#"[{"queue": "a.b", "kind": "sim"}]"#);
        assert_eq!((e.job, e.field.as_deref()), (Some(0), Some("queue")));

        let e = err(r#"[{"queue": "q", "kind": "ftp"}]"#);
        assert_eq!((e.job, e.field.as_deref()), (Some(0), Some("kind")));
        assert!(
            e.to_string()
                .starts_with("job 0, field `kind`: unknown kind"),
            "{e}"
        );

        let e = err(r#"[{"queue": "q", "kind": "exec", "params": {"command": "rm -rf /"}}]"#);
        assert_eq!(e.field.as_deref(), Some("params.command"));
        let e = err(r#"[{"queue": "q", "kind": "exec"}]"#);
        assert_eq!(e.field.as_deref(), Some("params"));
        assert!(e.problem.contains("command"), "{e}");
        let e = err(
            r#"[{"queue": "q", "kind": "exec", "params": {"command": "ping", "args": {"host": "a\u0000b"}}}]"#,
        );
        assert_eq!(e.field.as_deref(), Some("params.args.host"));
        assert!(e.problem.contains("NUL"), "{e}");

        let e = err(r#"[{"queue": "q", "kind": "snmp.get", "target": "olt-1"}]"#);
        assert_eq!(e.field.as_deref(), Some("params"));
        assert!(e.problem.contains("oids"), "{e}");
        let e = err(
            r#"[{"queue": "q", "kind": "snmp.walk", "target": "olt-1", "params": {"oids": ["1.3.6.1", "ifTable"]}}]"#,
        );
        assert_eq!(e.field.as_deref(), Some("params.oids[1]"));
        assert!(e.problem.contains("not numeric"), "{e}");
        let e = err(r#"[{"queue": "q", "kind": "snmp.walk", "params": {"oids": ["1.3.6.1"]}}]"#);
        assert_eq!(e.field.as_deref(), Some("target"));
        let ok = parse(
            br#"[{"queue": "q", "kind": "snmp.walk", "target": "olt-1", "params": {"oids": [".1.3.6.1.2.1.1"], "max_repetitions": 50}}]"#,
        )
        .unwrap();
        let Task::SnmpWalk(walk) = &ok.jobs[0].task else {
            panic!("a walk")
        };
        assert_eq!(walk.max_repetitions.get(), 50);

        let e = err(r#"[{"queue": "q", "kind": "sim", "colour": 1}]"#);
        assert!(e.problem.contains("colour"), "{e}");
    }

    #[test]
    fn retry_settings_are_read_and_checked() {
        let s = parse(br#"[{"queue": "q", "kind": "sim"},
                           {"queue": "q", "kind": "sim", "max_attempts": 4, "retry_on": ["failed"]}]"#)
            .unwrap();
        assert_eq!(s.jobs[0].max_attempts.get(), 1);
        assert_eq!(s.jobs[0].retry_on, Retryable::DEFAULT);
        assert_eq!(s.jobs[1].max_attempts.get(), 4);
        assert_eq!(s.jobs[1].retry_on, [Retryable::Failed]);
        let e = err(r#"[{"queue": "q", "kind": "sim", "max_attempts": 0}]"#);
        assert_eq!((e.job, e.field.as_deref()), (Some(0), Some("max_attempts")));
        let e = err(r#"[{"queue": "q", "kind": "sim", "retry_on": ["succeeded"]}]"#);
        assert_eq!(e.field.as_deref(), Some("retry_on[0]"));
        // What the CLI re-serializes in chunks parses back the same.
        let again = parse(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(again.jobs, s.jobs);
    }

    #[test]
    fn recurring_jobs_have_an_interval_and_an_id() {
        let s = parse(
            br#"[{"id": "poll", "queue": "q", "kind": "sim", "interval": "30s"},
                           {"id": "fast", "queue": "q", "kind": "sim", "interval": 0.5}]"#,
        )
        .unwrap();
        assert_eq!(
            s.jobs[0].interval.unwrap().get(),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            s.jobs[1].interval.unwrap().get(),
            std::time::Duration::from_millis(500)
        );
        let e = err(r#"[{"queue": "q", "kind": "sim", "interval": "30s"}]"#);
        assert_eq!((e.job, e.field.as_deref()), (Some(0), Some("id")));
        for bad in [r#""10ms""#, r#""2 days""#, "0", r#""soon""#, "-5"] {
            let text =
                format!(r#"[{{"id": "a", "queue": "q", "kind": "sim", "interval": {bad}}}]"#);
            let e = err(&text);
            assert_eq!(e.field.as_deref(), Some("interval"), "{bad}: {e}");
        }
        let again = parse(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(again.jobs, s.jobs);
    }

    #[test]
    fn chained_jobs_name_their_parent() {
        let s = parse(
            br#"[{"id": "disc", "queue": "q", "kind": "sim"},
                           {"id": "desc", "queue": "q", "kind": "sim", "after": "disc"},
                           {"queue": "q", "kind": "sim", "after": "desc", "run_if": "always"}]"#,
        )
        .unwrap();
        assert_eq!(s.jobs[1].after.as_ref().unwrap().as_str(), "disc");
        assert_eq!(s.jobs[1].run_if, RunIf::Success);
        assert_eq!(s.jobs[2].run_if, RunIf::Always);
        for (bad, field) in [
            (
                r#"{"id": "a", "queue": "q", "kind": "sim", "after": "b", "interval": "1m"}"#,
                "after",
            ),
            (
                r#"{"queue": "q", "kind": "sim", "run_if": "always"}"#,
                "run_if",
            ),
            (
                r#"{"id": "a", "queue": "q", "kind": "sim", "after": "a"}"#,
                "after",
            ),
            (
                r#"{"queue": "q", "kind": "sim", "after": "b", "run_if": "sometimes"}"#,
                "run_if",
            ),
        ] {
            let e = err(&format!("[{bad}]"));
            assert_eq!(e.field.as_deref(), Some(field), "{bad}: {e}");
        }
        let again = parse(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(again.jobs, s.jobs);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let e = err(
            r#"[{"id": "a", "queue": "q", "kind": "sim"}, {"id": "a", "queue": "q", "kind": "sim"}]"#,
        );
        assert_eq!((e.job, e.field.as_deref()), (Some(1), Some("id")));
    }

    #[test]
    fn syntax_errors_give_a_position() {
        let e = err("{\"jobs\": [\n{\"queue\": \"q\", \"kind\": \"sim\"}\n");
        assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
        let e = err("");
        assert!(e.line.is_some(), "{e:?}");
    }

    #[test]
    fn empty_and_wrong_shapes_are_refused() {
        assert_eq!(err(r#"{"jobs": []}"#).field.as_deref(), Some("jobs"));
        assert!(err(r#"{"job": []}"#).problem.contains("job"));
        assert!(err(r#""jobs""#).problem.contains("expected"));
    }

    /// The previous orchestrator's batch file, as it was written.
    const BATCH: &str = r#"{
        "metadata": {"creation_date": "2025-03-01T10:00:00", "description": "nightly ONT report",
                     "total_tasks": 2, "created_by": "noc"},
        "tasks": [
            {"task_id": "t-1", "algorithm": "ont-report", "parameters": {"olt": "olt-7", "slot": 3,
             "verbose": true}, "priority": "high", "description": "report of olt-7"},
            {"task_id": "t-2", "algorithm": "ont-report", "parameters": {"olt": "olt-8"},
             "priority": "low"}
        ]}"#;

    #[test]
    fn a_batch_file_of_the_previous_orchestrator_runs_as_it_is() {
        let submission = parse(BATCH.as_bytes()).unwrap();
        let first = &submission.jobs[0];
        assert_eq!(first.id.as_ref().map(JobId::as_str), Some("t-1"));
        assert_eq!(first.queue.as_str(), DEFAULT_BATCH_QUEUE);
        let Task::Exec(exec) = &first.task else {
            panic!("{first:?}")
        };
        assert_eq!(exec.command, "ont-report");
        let args: Vec<(&str, &str)> = exec
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(args, [("olt", "olt-7"), ("slot", "3"), ("verbose", "true")]);
        assert_eq!(first.priority, "high".parse().unwrap());
        assert_eq!(first.description.as_deref(), Some("report of olt-7"));
        assert_eq!(submission.jobs[1].priority, "low".parse().unwrap());
        assert_eq!(submission.jobs[1].description, None);
        let batch = submission.batch.unwrap();
        assert_eq!(batch.description.as_deref(), Some("nightly ONT report"));
        assert_eq!(batch.created_by.as_deref(), Some("noc"));
        assert_eq!(batch.total_tasks, Some(2));
    }

    #[test]
    fn a_batch_files_tasks_go_to_its_queue_or_the_configured_one() {
        let options = ParseOptions {
            batch_queue: QueueName::parse("reports").unwrap(),
        };
        let submission = parse_with(BATCH.as_bytes(), &options).unwrap();
        assert_eq!(submission.jobs[0].queue.as_str(), "reports");
        let named = BATCH.replace(
            r#""created_by": "noc""#,
            r#""created_by": "noc", "queue": "ont""#,
        );
        let submission = parse_with(named.as_bytes(), &options).unwrap();
        assert_eq!(submission.jobs[1].queue.as_str(), "ont");
        // Sent on as a job file (in chunks, by `faro submit`), it reads back the same.
        let again = parse(&serde_json::to_vec(&submission).unwrap()).unwrap();
        assert_eq!(again, submission);
    }

    #[test]
    fn a_batch_file_is_refused_whole_naming_the_task_and_field() {
        let unknown =
            err(&BATCH.replace(r#""priority": "low""#, r#""priority": "low", "owner": "x""#));
        assert_eq!(
            (unknown.job, unknown.field.as_deref()),
            (Some(1), Some("owner"))
        );
        let metadata = err(&BATCH.replace(r#""created_by""#, r#""author""#));
        assert!(metadata.problem.contains("author"), "{metadata:?}");
        let count = err(&BATCH.replace(r#""total_tasks": 2"#, r#""total_tasks": 3"#));
        assert_eq!(count.field.as_deref(), Some("metadata.total_tasks"));
        let nested = err(&BATCH.replace(r#""slot": 3"#, r#""slot": [3]"#));
        assert_eq!(
            (nested.job, nested.field.as_deref()),
            (Some(0), Some("parameters.slot"))
        );
        let command = err(&BATCH.replace(
            r#""algorithm": "ont-report", "parameters": {"olt": "olt-8"}"#,
            r#""algorithm": "rm -rf", "parameters": {"olt": "olt-8"}"#,
        ));
        assert_eq!(
            (command.job, command.field.as_deref()),
            (Some(1), Some("algorithm"))
        );
        let twice = err(&BATCH.replace(r#""task_id": "t-2""#, r#""task_id": "t-1""#));
        assert_eq!(
            (twice.job, twice.field.as_deref()),
            (Some(1), Some("task_id"))
        );
        let nul = err(&BATCH.replace("report of olt-7", "report\\u0000"));
        assert_eq!(
            (nul.job, nul.field.as_deref()),
            (Some(0), Some("description"))
        );
        let nul = err(&BATCH.replace("nightly ONT report", "nightly\\u0000"));
        assert_eq!(nul.field.as_deref(), Some("metadata.description"));
        let empty = err(r#"{"metadata": {}, "tasks": []}"#);
        assert_eq!(empty.field.as_deref(), Some("tasks"));
        // A syntax error in a batch file is given where it is, not as an unknown field.
        let broken = err(&BATCH.replace(r#""priority": "low""#, r#""priority": "low",,"#));
        assert!(
            broken.line.is_some() && !broken.problem.contains("unknown field"),
            "{broken:?}"
        );
        let priority = err(&BATCH.replace(r#""priority": "low""#, r#""priority": "soon""#));
        assert_eq!(
            (priority.job, priority.field.as_deref()),
            (Some(1), Some("priority"))
        );
    }
}
