//! `exec`: programs from the worker's own allow-list, never a shell.
//!
//! The allow-list file (`FARO_WORKER_EXEC_ALLOWLIST`) names each command a job may ask for:
//!
//! ```json
//! {"commands": {
//!   "ping": {"program": "/usr/bin/ping", "args": ["-c", "{count}", "{host}"],
//!            "params": {"count": "int", "host": "host"}, "timeout": "30s",
//!            "env": ["PATH", "LANG"]}
//! }}
//! ```
//!
//! A `{name}` argument is replaced by the job's parameter of that name, whole: one parameter is
//! always exactly one argument. Parameters are typed: `int` (digits), `host` (a host name or
//! IP address) and `word` (letters, digits and `. _ : / = + -`, no `..`), none may start with
//! `-`, so a parameter can neither be read as an option, nor climb up a path the template
//! starts, nor reach a shell (a `word` may still be a whole absolute path: a template that
//! takes a file names its directory itself). A job that names an unknown command, misses a parameter, adds one the
//! template does not have, or gives a value of the wrong form is refused with an error saying
//! which.
//!
//! A program starts with an empty environment plus the worker's own variables its entry names
//! in `env` (never the worker's NATS password, nor anything else not named), in a process group
//! of its own: at its timeout, or when its run is cancelled, the whole group is killed, and
//! whatever it left running in it when it ended too (a child that made a session of its own,
//! `setsid`, has left the group and is not).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use faro_shared::config::parse_duration;
use faro_shared::domain::Outcome;
use faro_shared::messages::{ExecParams, RunOutput};
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;

/// Bytes kept of each of stdout and stderr; the rest is dropped and the output marked
/// truncated.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// The form a parameter must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Int,
    Host,
    Word,
}

impl ParamType {
    fn check(self, value: &str) -> Result<(), &'static str> {
        let ok = !value.is_empty()
            && !value.starts_with('-')
            && match self {
                ParamType::Int => value.len() <= 18 && value.bytes().all(|b| b.is_ascii_digit()),
                ParamType::Host => {
                    value.len() <= 253
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".:-".contains(&b))
                }
                ParamType::Word => {
                    value.len() <= 256
                        && !value.contains("..")
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._:/=+-".contains(&b))
                }
            };
        if ok {
            Ok(())
        } else {
            Err(match self {
                ParamType::Int => "digits only (at most 18)",
                ParamType::Host => "a host name or IP address (letters, digits, . : -)",
                ParamType::Word => "letters, digits and . _ : / = + - (at most 256, no ..)",
            })
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandInput {
    program: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    params: BTreeMap<String, ParamType>,
    #[serde(default)]
    timeout: Option<String>,
    /// The worker's variables the program gets; it gets no other.
    #[serde(default)]
    env: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInput {
    commands: BTreeMap<String, CommandInput>,
}

/// One allowed command.
#[derive(Debug, Clone)]
pub struct Allowed {
    program: PathBuf,
    args: Vec<Arg>,
    params: BTreeMap<String, ParamType>,
    timeout: Duration,
    /// Names of the worker's variables passed on.
    env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Fixed(String),
    Param(String),
}

/// The worker's allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    commands: BTreeMap<String, Allowed>,
}

/// The default timeout of a command whose entry names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl AllowList {
    /// Reads and checks the file; an error names the command and what is wrong.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!("cannot read the exec allow-list {}: {e}", path.display())
        })?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("exec allow-list {}: {e}", path.display()))
    }

    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let input: FileInput = serde_json::from_slice(text).map_err(|e| {
            format!("{e}; expected {{\"commands\": {{\"name\": {{\"program\": \"/path\", \"args\": [..], \"params\": {{..}}}}}}}}")
        })?;
        let mut commands = BTreeMap::new();
        for (name, command) in input.commands {
            if !command.program.is_absolute() {
                return Err(format!(
                    "command {name}: program {} is not an absolute path",
                    command.program.display()
                ));
            }
            let mut args = Vec::with_capacity(command.args.len());
            for arg in command.args {
                match arg.strip_prefix('{').and_then(|a| a.strip_suffix('}')) {
                    Some(param) if command.params.contains_key(param) => {
                        args.push(Arg::Param(param.to_owned()));
                    }
                    Some(param) => {
                        return Err(format!(
                            "command {name}: argument {{{param}}} names no parameter in params"
                        ))
                    }
                    None if arg.contains('{') || arg.contains('}') => {
                        return Err(format!(
                            "command {name}: argument {arg:?} mixes text and a parameter; a parameter must be a whole argument"
                        ))
                    }
                    None => args.push(Arg::Fixed(arg)),
                }
            }
            if let Some(bad) = command.env.iter().find(|name| {
                name.is_empty()
                    || name.starts_with(|c: char| c.is_ascii_digit())
                    || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }) {
                return Err(format!(
                    "command {name}: env {bad:?} is not a variable name; expected letters, digits and _"
                ));
            }
            let timeout = match &command.timeout {
                None => DEFAULT_TIMEOUT,
                Some(text) => parse_duration(text).ok_or_else(|| {
                    format!("command {name}: timeout {text:?} is not a duration such as 30s")
                })?,
            };
            commands.insert(
                name,
                Allowed {
                    program: command.program,
                    args,
                    params: command.params,
                    timeout,
                    env: command.env,
                },
            );
        }
        Ok(Self { commands })
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Pure: the program and arguments a job's params make, or why they are refused.
    pub fn expand(&self, params: &ExecParams) -> Result<(&Allowed, Vec<String>), String> {
        let allowed = self.commands.get(&params.command).ok_or_else(|| {
            format!(
                "command {:?} is not in this worker's allow-list; allowed: {}",
                params.command,
                self.commands.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        if let Some(extra) = params
            .args
            .keys()
            .find(|k| !allowed.params.contains_key(*k))
        {
            return Err(format!(
                "command {}: parameter {extra:?} is not in its template; expected {}",
                params.command,
                allowed
                    .params
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut argv = Vec::with_capacity(allowed.args.len());
        for arg in &allowed.args {
            match arg {
                Arg::Fixed(text) => argv.push(text.clone()),
                Arg::Param(name) => {
                    let value = params.args.get(name).ok_or_else(|| {
                        format!("command {}: parameter {name:?} is missing", params.command)
                    })?;
                    allowed.params[name].check(value).map_err(|expected| {
                        format!(
                            "command {}: parameter {name}={value:?} is refused; expected {expected}",
                            params.command
                        )
                    })?;
                    argv.push(value.clone());
                }
            }
        }
        Ok((allowed, argv))
    }
}

/// A program's process group, killed whole when this is dropped: at the end of its run, at
/// its timeout, or when the run is cancelled or aborted (its future dropped).
struct Group(Option<nix::unistd::Pid>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // Gone already (ESRCH) is what is hoped for.
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Runs an allowed program to its end or its timeout (the shorter of the command's and the
/// run's); its output is captured up to `OUTPUT_LIMIT` bytes each.
pub async fn run(
    allowed: &Allowed,
    argv: Vec<String>,
    run_timeout: Option<Duration>,
) -> (Outcome, Option<RunOutput>, Option<String>) {
    let timeout = run_timeout.map_or(allowed.timeout, |t| t.min(allowed.timeout));
    let env = allowed
        .env
        .iter()
        .filter_map(|name| std::env::var_os(name).map(|value| (name, value)));
    let mut child = match tokio::process::Command::new(&allowed.program)
        .args(&argv)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, led by it: what it starts is killed with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            return (
                Outcome::Failed,
                None,
                Some(format!(
                    "cannot start {}: {error}",
                    allowed.program.display()
                )),
            )
        }
    };
    let group = Group(
        child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(nix::unistd::Pid::from_raw),
    );
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let capture =
        |stream: Option<tokio::process::ChildStdout>| async move { read_limited(stream).await };
    let out = tokio::spawn(capture(stdout));
    let err = tokio::spawn(async move { read_limited(stderr).await });
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // Ended or timed out, nothing of it runs on: a child it left holding its output open would
    // also keep the output below from ending.
    drop(group);
    if waited.is_err() {
        let _ = child.kill().await;
    }
    let (stdout, out_cut) = out.await.unwrap_or_default();
    let (stderr, err_cut) = err.await.unwrap_or_default();
    let exit_code = match &waited {
        Ok(Ok(status)) => status.code(),
        _ => None,
    };
    let output = Some(RunOutput::Exec {
        exit_code,
        stdout,
        stderr,
        truncated: out_cut || err_cut,
    });
    match waited {
        Err(_) => (
            Outcome::TimedOut,
            output,
            Some(format!(
                "{} killed after its timeout of {} ms",
                allowed.program.display(),
                timeout.as_millis()
            )),
        ),
        Ok(Err(error)) => (
            Outcome::Failed,
            output,
            Some(format!("cannot wait for the program: {error}")),
        ),
        Ok(Ok(status)) if status.success() => (Outcome::Succeeded, output, None),
        Ok(Ok(status)) => (
            Outcome::Failed,
            output,
            Some(format!(
                "{} exited with {status}",
                allowed.program.display()
            )),
        ),
    }
}

/// Reads a stream to its end, keeping at most `OUTPUT_LIMIT` bytes (lossy UTF-8).
async fn read_limited<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>) -> (String, bool) {
    let Some(mut stream) = stream else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> AllowList {
        AllowList::parse(
            br#"{"commands": {
                "ping": {"program": "/usr/bin/ping", "args": ["-c", "{count}", "{host}"],
                         "params": {"count": "int", "host": "host"}, "timeout": "30s"},
                "echo": {"program": "/bin/echo", "args": ["{text}"], "params": {"text": "word"}}
            }}"#,
        )
        .unwrap()
    }

    fn params(command: &str, args: &[(&str, &str)]) -> ExecParams {
        ExecParams {
            command: command.to_owned(),
            args: args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn parameters_become_whole_arguments() {
        let list = list();
        let (allowed, argv) = list
            .expand(&params("ping", &[("count", "3"), ("host", "10.0.0.1")]))
            .unwrap();
        assert_eq!(argv, ["-c", "3", "10.0.0.1"]);
        assert_eq!(allowed.timeout, Duration::from_secs(30));
    }

    #[test]
    fn unknown_names_missing_extra_and_bad_values_are_refused_with_the_reason() {
        let list = list();
        let e = list.expand(&params("rm", &[])).unwrap_err();
        assert!(
            e.contains("not in this worker's allow-list; allowed: echo, ping"),
            "{e}"
        );
        let e = list.expand(&params("ping", &[("count", "3")])).unwrap_err();
        assert!(e.contains("parameter \"host\" is missing"), "{e}");
        let e = list
            .expand(&params(
                "ping",
                &[("count", "3"), ("host", "a"), ("flood", "1")],
            ))
            .unwrap_err();
        assert!(e.contains("\"flood\" is not in its template"), "{e}");
        for evil in [
            "a;reboot",
            "$(reboot)",
            "a b",
            "`id`",
            "-f",
            "a|b",
            "a&&b",
            "x>y",
            "a\nb",
        ] {
            let e = list.expand(&params("echo", &[("text", evil)])).unwrap_err();
            assert!(e.contains("is refused; expected letters"), "{evil:?}: {e}");
        }
        // No user@host, no climbing out of a directory; a plain path still goes.
        for evil in ["root@10.0.0.1", "../../etc/shadow", "logs/../../x", ".."] {
            let e = list.expand(&params("echo", &[("text", evil)])).unwrap_err();
            assert!(e.contains("no ..)"), "{evil:?}: {e}");
        }
        assert!(list
            .expand(&params("echo", &[("text", "olt-1/ports.v2")]))
            .is_ok());
        let e = list
            .expand(&params("ping", &[("count", "3x"), ("host", "h")]))
            .unwrap_err();
        assert!(
            e.contains("count=\"3x\" is refused; expected digits"),
            "{e}"
        );
    }

    #[test]
    fn bad_allow_lists_name_the_command_and_the_problem() {
        let e = AllowList::parse(br#"{"commands": {"x": {"program": "ping"}}}"#).unwrap_err();
        assert!(
            e.contains("command x: program ping is not an absolute path"),
            "{e}"
        );
        let e = AllowList::parse(br#"{"commands": {"x": {"program": "/bin/x", "args": ["{y}"]}}}"#)
            .unwrap_err();
        assert!(e.contains("{y} names no parameter"), "{e}");
        let e = AllowList::parse(
            br#"{"commands": {"x": {"program": "/bin/x", "args": ["--n={n}"], "params": {"n": "int"}}}}"#,
        )
        .unwrap_err();
        assert!(e.contains("must be a whole argument"), "{e}");
        let e = AllowList::parse(br#"{"commands": {"x": {"program": "/bin/x", "shell": true}}}"#)
            .unwrap_err();
        assert!(e.contains("shell"), "{e}");
        let e = AllowList::parse(br#"{"commands": {"x": {"program": "/bin/x", "env": ["A=1"]}}}"#)
            .unwrap_err();
        assert!(e.contains("env \"A=1\" is not a variable name"), "{e}");
    }

    #[tokio::test]
    async fn a_program_gets_only_the_variables_its_entry_names() {
        let list = AllowList::parse(
            br#"{"commands": {
                "env": {"program": "/usr/bin/env", "env": ["PATH", "FARO_NOT_SET_ANYWHERE"]},
                "bare": {"program": "/usr/bin/env"}
            }}"#,
        )
        .unwrap();
        // The test's own environment (cargo's, nextest's) is the worker's here.
        assert!(std::env::vars().count() > 1);
        let path = std::env::var("PATH").unwrap();
        for (command, expected) in [("env", format!("PATH={path}\n")), ("bare", String::new())] {
            let (allowed, argv) = list.expand(&params(command, &[])).unwrap();
            let (outcome, output, _) = run(allowed, argv, None).await;
            assert_eq!(outcome, Outcome::Succeeded);
            let Some(RunOutput::Exec { stdout, .. }) = output else {
                panic!("no output");
            };
            assert_eq!(stdout, expected, "{command}");
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_what_the_program_started_too() {
        let list = AllowList::parse(
            br#"{"commands": {
                "spawner": {"program": "/bin/sh", "args": ["-c", "sleep 30 & echo $!; wait"],
                            "timeout": "300ms"}
            }}"#,
        )
        .unwrap();
        let started = std::time::Instant::now();
        let (allowed, argv) = list.expand(&params("spawner", &[])).unwrap();
        let (outcome, output, _) = run(allowed, argv, None).await;
        assert_eq!(outcome, Outcome::TimedOut);
        // Its child held the output open: the run would have waited for it.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let Some(RunOutput::Exec { stdout, .. }) = output else {
            panic!("no output");
        };
        let child: u32 = stdout.trim().parse().unwrap();
        // Killed: gone, or a zombie no one has reaped yet, once the kernel has finished its
        // exit (its output closes a moment before its state changes).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or_default()
                .trim_start()
                .chars()
                .next();
            if matches!(state, None | Some('Z' | 'X')) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{child} still runs: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_program_runs_its_output_is_kept_and_a_hung_one_is_killed() {
        let list = AllowList::parse(
            br#"{"commands": {
                "echo": {"program": "/bin/echo", "args": ["{text}"], "params": {"text": "word"}},
                "sleep": {"program": "/bin/sleep", "args": ["{secs}"], "params": {"secs": "int"},
                          "timeout": "300ms"},
                "false": {"program": "/bin/false"}
            }}"#,
        )
        .unwrap();
        let (allowed, argv) = list.expand(&params("echo", &[("text", "hola")])).unwrap();
        let (outcome, output, error) = run(allowed, argv, None).await;
        assert_eq!((outcome, error), (Outcome::Succeeded, None));
        assert_eq!(
            output,
            Some(RunOutput::Exec {
                exit_code: Some(0),
                stdout: "hola\n".into(),
                stderr: String::new(),
                truncated: false
            })
        );
        let started = std::time::Instant::now();
        let (allowed, argv) = list.expand(&params("sleep", &[("secs", "30")])).unwrap();
        let (outcome, _, error) = run(allowed, argv, None).await;
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(error
            .unwrap()
            .contains("killed after its timeout of 300 ms"));
        assert!(started.elapsed() < Duration::from_secs(5));
        let (allowed, argv) = list.expand(&params("false", &[])).unwrap();
        let (outcome, _, error) = run(allowed, argv, None).await;
        assert_eq!(outcome, Outcome::Failed);
        assert!(error.unwrap().contains("exited with exit status: 1"));
    }
}
