//! Adapters for external scanners: bandit, semgrep, detect-secrets, ruff, gitleaks, trivy and
//! osv-scanner. Each runs when its executable is on `PATH`, as a `tokio::process` child with a
//! minimal environment (no service settings or credentials), inside the scan's time limit, with
//! its stdout/stderr streamed line by line as `log` events (bounded, every line masked with
//! [`mask_secrets`]) and its report read back with a size cap. Reports become SARIF 2.1.0:
//! native SARIF is kept with code snippets removed, every message masked, tool fingerprints
//! replaced by our own and each result's `properties.severity` set from the tool's table in
//! [`severity`]; tools whose own format says more (bandit, detect-secrets, semgrep) are
//! converted with the shared writer. No secret value a tool hands back reaches a report or a log
//! line in clear: bandit's B105–B107 and ruff's S105–S107 messages lose the quoted value
//! entirely, semgrep's messages are the rules' templates (no interpolated metavariables).
//!
//! Each tool runs in a process group of its own. When the tool exits, is cancelled or reaches
//! the time limit, the whole group is killed: a helper process it left behind (which would also
//! hold its output pipes open) does not outlive it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::pipeline::bundle::sarif::{build_sarif, SarifTool};
use crate::pipeline::finding::{Finding, Severity, SeverityCounts};
use crate::pipeline::redact::mask_secrets;

pub mod semgrep;
pub mod severity;
pub mod spec;

use super::names;
use super::registry::EXTERNAL_TOOL_NAMES;
pub use spec::{Report, ToolSpec, REPORT_ARG};

/// Largest report (file or captured stdout) read back from a tool.
pub const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;
/// Log lines forwarded per stream of one tool run; the rest are counted, not sent.
pub const MAX_LOG_LINES: usize = 1000;
/// Longest log line forwarded (longer lines are cut).
const MAX_LINE_CHARS: usize = 2000;

/// Makes the kernel kill the tool when the service dies. `kill_on_drop` covers every way a scan
/// ends inside a living service; after a kill -9 (or any crash) nothing is dropped, and the tool
/// would run on, orphaned, in a workspace the next start removes.
///
/// The death signal is tied to the thread that spawns the child: tools are spawned from the
/// runtime's worker threads, which live as long as the service (nothing here uses
/// `block_in_place`, which could retire such a thread).
fn die_with_service(cmd: &mut tokio::process::Command) {
    let service = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the closure only makes async-signal-safe system calls
    // (prctl, getppid, _exit) and touches no memory shared with other threads.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The service may have died before the signal was armed.
            if libc::getppid() != service {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// The executable `binary` on `path` (a `PATH`-style list), if any.
pub fn find_on_path(binary: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = path?;
    std::env::split_paths(path).find_map(|dir| {
        let candidate = dir.join(binary);
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

/// Whether the external tool called `name` is installed: its executable is on `path`.
pub fn tool_installed(name: &str, path: Option<&std::ffi::OsStr>) -> bool {
    super::registry::tool_spec(name).is_some_and(|t| find_on_path(t.binary, path).is_some())
}

/// `PATH` of a tool's process: the tool path, then the system directories that interpreters
/// and launcher scripts (`#!/usr/bin/env bash`) rely on.
fn child_path(tool_path: Option<&std::ffi::OsStr>) -> OsString {
    let mut dirs: Vec<PathBuf> = tool_path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for sys in ["/usr/local/bin", "/usr/bin", "/bin"] {
        let sys = PathBuf::from(sys);
        if !dirs.contains(&sys) {
            dirs.push(sys);
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// The variables of the service's environment a tool also gets: tools installed with pyenv run
/// through shims that need to find their interpreter.
pub const PASSTHROUGH_ENV: [&str; 2] = ["PYENV_ROOT", "PYENV_VERSION"];

/// The [`PASSTHROUGH_ENV`] variables that `read` (the caller's view of the environment) has.
pub fn passthrough_env(read: impl Fn(&str) -> Option<OsString>) -> Vec<(&'static str, OsString)> {
    PASSTHROUGH_ENV
        .into_iter()
        .filter_map(|var| read(var).map(|value| (var, value)))
        .collect()
}

/// What the runner needs from the pipeline.
pub struct ToolRun<'a> {
    /// The tree to scan (the tool's working directory).
    pub source: &'a Path,
    /// A scratch directory for reports, `HOME` and `TMPDIR`.
    pub scratch: &'a Path,
    /// `PATH` the tools are looked up on and run with.
    pub path: Option<OsString>,
    /// Variables of the service's environment passed through unchanged ([`PASSTHROUGH_ENV`]).
    pub env: &'a [(&'static str, OsString)],
    /// When the tool is stopped (the scan's own deadline).
    pub deadline: Instant,
    pub cancel: &'a Arc<AtomicBool>,
}

/// Result of a tool that ran to completion.
#[derive(Debug)]
pub struct ToolOutput {
    pub exit_code: i32,
    pub sarif: Value,
    pub counts: SeverityCounts,
    /// Why the tool did nothing useful although installed (no adapter reports this today: semgrep
    /// always has the rules the service ships).
    pub skipped: Option<String>,
}

/// How a tool run failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("`{0}` is not installed (no executable on PATH)")]
    Missing(&'static str),
    #[error("stopped: the scan was cancelled or reached its time limit")]
    Stopped,
    #[error("{0}")]
    Failed(String),
}

/// Runs one tool; `on_line(stream, line)` receives its output lines as they arrive.
pub async fn run_tool(
    tool: &ToolSpec,
    run: &ToolRun<'_>,
    on_line: &(dyn Fn(&str, String) + Send + Sync),
) -> Result<ToolOutput, ToolError> {
    let Some(exe) = find_on_path(tool.binary, run.path.as_deref()) else {
        return Err(ToolError::Missing(tool.name));
    };
    let out_dir = run.scratch.join(tool.name);
    let home = out_dir.join("home");
    std::fs::create_dir_all(&home)
        .map_err(|e| ToolError::Failed(format!("cannot prepare a scratch directory: {e}")))?;
    let report_path = out_dir.join("report");
    let args = tool_args(tool, run.source, &out_dir, &report_path)?;
    let mut cmd = tool_command(&exe, &args, run, &out_dir, &home);
    let child = cmd
        .spawn()
        .map_err(|e| ToolError::Failed(format!("could not start `{}`: {e}", exe.display())))?;
    let capture_stdout = tool.report == Report::DetectSecretsStdout;
    let (captured, status) = wait_for_tool(child, capture_stdout, run, on_line).await?;
    let exit_code = checked_exit(tool, status, &report_path)?;
    let captured = captured
        .map_err(|e| ToolError::Failed(format!("reading the tool's output failed: {e}")))?;
    let (sarif, counts) = read_report(tool, run.source, &out_dir, &report_path, captured)?;
    Ok(ToolOutput {
        exit_code,
        sarif,
        counts,
        skipped: None,
    })
}

/// The tool's arguments: its registry template with `{report}` standing for the report file,
/// or, for semgrep, the shipped rules plus the tree's own configuration.
fn tool_args(
    tool: &ToolSpec,
    source: &Path,
    out_dir: &Path,
    report_path: &Path,
) -> Result<Vec<OsString>, ToolError> {
    if tool.report == Report::SemgrepJson {
        return semgrep_args(source, out_dir, report_path);
    }
    Ok(tool
        .args
        .iter()
        .map(|a| match *a {
            REPORT_ARG => report_path.as_os_str().to_owned(),
            a => OsString::from(a),
        })
        .collect())
}

/// semgrep's arguments: the shipped rules, plus the tree's own configuration where it has one.
/// No registry configuration (`--config auto`, `p/...`): the service runs offline.
fn semgrep_args(
    source: &Path,
    out_dir: &Path,
    report_path: &Path,
) -> Result<Vec<OsString>, ToolError> {
    let mut args: Vec<OsString> = vec!["scan".into()];
    let rule_files = semgrep::write_builtin_rules(&out_dir.join("rules"))
        .map_err(|e| ToolError::Failed(format!("cannot write the semgrep rules: {e}")))?;
    for file in rule_files {
        args.push("--config".into());
        args.push(file.into());
    }
    if let Some(config) = semgrep::tree_config(source) {
        args.push("--config".into());
        args.push(config.into());
    }
    for a in [
        "--json",
        "--metrics=off",
        "--disable-version-check",
        "--quiet",
    ] {
        args.push(a.into());
    }
    let mut sarif_arg = OsString::from("--sarif-output=");
    sarif_arg.push(report_path.with_extension("sarif"));
    args.push(sarif_arg);
    args.push("--output".into());
    args.push(report_path.as_os_str().to_owned());
    args.push(".".into());
    Ok(args)
}

/// The tool's process: in the tree, with a minimal environment, in a process group of its own
/// that dies with the service.
fn tool_command(
    exe: &Path,
    args: &[OsString],
    run: &ToolRun<'_>,
    out_dir: &Path,
    home: &Path,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .current_dir(run.source)
        .env_clear()
        .env("HOME", home)
        .env("TMPDIR", out_dir)
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("NO_COLOR", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SEMGREP_SEND_METRICS", "off")
        .env("SEMGREP_ENABLE_VERSION_CHECK", "0")
        .env("TRIVY_NO_PROGRESS", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    die_with_service(&mut cmd);
    cmd.env("PATH", child_path(run.path.as_deref()));
    for (var, value) in run.env {
        cmd.env(var, value);
    }
    cmd
}

/// Output of a tool's stdout when it is its report, and its exit status.
type Waited = (std::io::Result<Option<Vec<u8>>>, std::process::ExitStatus);

/// Streams the tool's output lines (or captures stdout when it is the report) until it exits,
/// then kills what it left in its process group; stops it when the scan is cancelled or its
/// deadline passes.
async fn wait_for_tool(
    mut child: tokio::process::Child,
    capture_stdout: bool,
    run: &ToolRun<'_>,
    on_line: &(dyn Fn(&str, String) + Send + Sync),
) -> Result<Waited, ToolError> {
    // Killed when this function returns, whichever way (declared after `child`, so it is
    // dropped first, while the group leader may still be unreaped).
    let group = ProcessGroup(child.id());
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let stdout_task = async {
        if capture_stdout {
            let mut buf = Vec::new();
            let read = stdout
                .take(MAX_REPORT_BYTES + 1)
                .read_to_end(&mut buf)
                .await;
            read.map(|_| Some(buf))
        } else {
            forward_lines(stdout, "stdout", on_line).await.map(|_| None)
        }
    };
    let stderr_task = forward_lines(stderr, "stderr", on_line);
    let exited = async {
        let status = child.wait().await;
        // Whatever the tool left running is stopped now; that also closes the output pipes
        // those processes inherited, so reading the output can finish.
        group.kill();
        status
    };
    let wait = async {
        let (out, _err, status) = tokio::join!(stdout_task, stderr_task, exited);
        (out, status)
    };
    let stopper = async {
        loop {
            if run.cancel.load(Ordering::Relaxed) || Instant::now() >= run.deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (captured, status) = tokio::select! {
        r = wait => r,
        _ = stopper => return Err(ToolError::Stopped),
    };
    let status =
        status.map_err(|e| ToolError::Failed(format!("waiting for the tool failed: {e}")))?;
    Ok((captured, status))
}

/// The exit code of a tool that ran to completion; any other exit is a failure that says why.
fn checked_exit(
    tool: &ToolSpec,
    status: std::process::ExitStatus,
    report_path: &Path,
) -> Result<i32, ToolError> {
    let exit_code = status.code().unwrap_or(-1);
    if tool.ok_exit_codes.contains(&exit_code) {
        return Ok(exit_code);
    }
    // semgrep says why in its JSON report (an invalid rule of the tree, …), not on stderr.
    let why = (tool.report == Report::SemgrepJson)
        .then(|| read_capped(report_path).ok())
        .flatten()
        .and_then(|raw| semgrep::error_summary(&raw))
        .map(|w| format!(": {w}"))
        .unwrap_or_default();
    Err(ToolError::Failed(format!(
        "`{}` exited with {}{why} (see its log lines in the stream and logs/runner.log)",
        tool.name,
        status
            .code()
            .map(|c| format!("code {c}"))
            .unwrap_or_else(|| "a signal".into())
    )))
}

/// Reads the tool's report back and turns it into SARIF with its counts.
fn read_report(
    tool: &ToolSpec,
    source: &Path,
    out_dir: &Path,
    report_path: &Path,
    captured: Option<Vec<u8>>,
) -> Result<(Value, SeverityCounts), ToolError> {
    Ok(match tool.report {
        Report::SarifFile => {
            let raw = read_capped(report_path)?;
            tool_sarif(Some(tool.name), &raw, source)
                .map_err(|e| ToolError::Failed(format!("{}: {e:#}", tool.name)))?
        }
        Report::BanditJson => {
            let raw = read_capped(report_path)?;
            let findings =
                bandit_findings(&raw).map_err(|e| ToolError::Failed(format!("bandit: {e:#}")))?;
            converted(names::BANDIT, &["security", "sast"], findings)
        }
        Report::SemgrepJson => {
            let raw = read_capped(report_path)?;
            // The SARIF half only supplies message templates; without it the messages are
            // masked instead.
            let sarif = read_capped(&report_path.with_extension("sarif")).ok();
            let prefix = semgrep::rule_prefix(&out_dir.join("rules"));
            let findings = semgrep::findings(&raw, sarif.as_deref(), &prefix)
                .map_err(|e| ToolError::Failed(format!("semgrep: {e:#}")))?;
            converted(names::SEMGREP, &["security", "sast"], findings)
        }
        Report::DetectSecretsStdout => {
            let raw = captured.unwrap_or_default();
            if raw.len() as u64 > MAX_REPORT_BYTES {
                return Err(ToolError::Failed(format!(
                    "detect-secrets: its report is larger than {} MiB",
                    MAX_REPORT_BYTES / (1024 * 1024)
                )));
            }
            let findings = detect_secrets_findings(&raw)
                .map_err(|e| ToolError::Failed(format!("detect-secrets: {e:#}")))?;
            converted(names::DETECT_SECRETS, &["security", "secret"], findings)
        }
    })
}

/// The process group of one tool run (its id is the tool's pid).
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    /// SIGKILL to every process of the group. Until the last member is gone the kernel keeps
    /// the group id reserved, so this cannot reach an unrelated process while any of the
    /// tool's processes remain; with none left it finds nothing (ESRCH).
    fn kill(&self) {
        if let Some(pgid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn forward_lines<R: AsyncRead + Unpin>(
    reader: R,
    stream: &str,
    on_line: &(dyn Fn(&str, String) + Send + Sync),
) -> std::io::Result<()> {
    // Lines are read with a byte cap, so a tool that writes gigabytes without a newline costs
    // bounded memory: the rest of an over-long line is read and thrown away.
    const MAX_LINE_BYTES: u64 = 8 * 1024;
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::with_capacity(1024);
    let mut sent = 0usize;
    let mut dropped = 0usize;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') && n as u64 == MAX_LINE_BYTES {
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = (&mut reader)
                    .take(MAX_LINE_BYTES)
                    .read_until(b'\n', &mut rest)
                    .await?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
        }
        if sent < MAX_LOG_LINES {
            let text = String::from_utf8_lossy(&buf);
            let line: String = text
                .trim_end_matches(['\n', '\r'])
                .chars()
                .take(MAX_LINE_CHARS)
                .collect();
            // Tools print what they found (semgrep's and gitleaks' text reports, verbose
            // modes): every token-like value is masked before the line goes anywhere.
            on_line(stream, mask_secrets(&line));
            sent += 1;
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        on_line(
            stream,
            format!("... {dropped} more lines not shown (limit {MAX_LOG_LINES})"),
        );
    }
    Ok(())
}

fn read_capped(path: &Path) -> Result<Vec<u8>, ToolError> {
    let meta = std::fs::metadata(path).map_err(|_| {
        ToolError::Failed("the tool finished without writing its report".to_string())
    })?;
    if meta.len() > MAX_REPORT_BYTES {
        return Err(ToolError::Failed(format!(
            "the tool's report is larger than {} MiB",
            MAX_REPORT_BYTES / (1024 * 1024)
        )));
    }
    std::fs::read(path).map_err(|e| ToolError::Failed(format!("reading the tool's report: {e}")))
}

/// Rewrites an absolute `file://` URI under the scanned tree as a path relative to `SRCROOT`,
/// so reports do not carry the server's workspace paths.
fn relativize(location: &mut Value, roots: &[String]) {
    let Some(uri) = location.get("uri").and_then(|u| u.as_str()) else {
        return;
    };
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    for root in roots {
        let Some(rel) = path.strip_prefix(root.as_str()) else {
            continue;
        };
        if rel.is_empty() || rel.starts_with('/') {
            let rel = rel.trim_start_matches('/').to_string();
            location["uri"] = json!(rel);
            location["uriBaseId"] = json!("SRCROOT");
            return;
        }
    }
}

/// Which adapter wrote a SARIF log, from its `tool.driver.name` (`Trivy`, `ruff`, …).
fn tool_of_driver(run: &Value) -> String {
    let name = run
        .pointer("/tool/driver/name")
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    EXTERNAL_TOOL_NAMES
        .into_iter()
        .find(|t| name.starts_with(t))
        .unwrap_or("sarif")
        .to_string()
}

/// The message of a result with what a tool quotes from the code taken out: ruff's S105–S107
/// name the variable or argument that holds a password (a dictionary key can be anything), and
/// trivy's secret results end with a `Match:` line holding the matched text. Every token-like
/// value left is masked.
pub fn scrub_message(tool: &str, rule_id: &str, text: &str) -> String {
    let fixed = match (tool, rule_id) {
        (names::RUFF, "S105") => Some("Possible hardcoded password assigned to a variable"),
        (names::RUFF, "S106") => Some("Possible hardcoded password assigned to an argument"),
        (names::RUFF, "S107") => Some("Possible hardcoded password assigned to a function default"),
        _ => None,
    };
    if let Some(fixed) = fixed {
        return fixed.to_string();
    }
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("Match:"))
        .collect();
    mask_secrets(&kept.join("\n"))
}

/// Removes code snippets and masks every message-like string (`text`, `markdown`) under `value`;
/// with `all_strings`, every string at all (a result's `properties`).
fn scrub_value(value: &mut Value, all_strings: bool) {
    match value {
        Value::Object(map) => {
            map.remove("snippet");
            map.remove("contextRegion");
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s) if all_strings || key == "text" || key == "markdown" => {
                        *s = mask_secrets(s);
                    }
                    _ => scrub_value(v, all_strings || key == "properties"),
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                if let Value::String(s) = v {
                    if all_strings {
                        *s = mask_secrets(s);
                    }
                } else {
                    scrub_value(v, all_strings);
                }
            }
        }
        _ => {}
    }
}

/// Checks a tool's own SARIF and makes it safe and uniform (see [`tool_sarif`]); the tool is
/// recognised by `tool.driver.name`.
pub fn native_sarif(raw: &[u8], source: &Path) -> anyhow::Result<(Value, SeverityCounts)> {
    tool_sarif(None, raw, source)
}

/// Checks `tool`'s own SARIF and makes it safe and uniform: code snippets removed, messages
/// scrubbed ([`scrub_message`]) and masked, the tool's fingerprints (which can be derived from
/// the matched text) replaced by one of ours (sha256 of tool, rule, location and masked
/// message), locations relative to `SRCROOT` with a `startLine` (1 where the tool gives none),
/// other base URIs dropped (they hold server paths), each result's `properties.severity` set
/// from the tool's table in [`severity`] and its `level` to match; results counted by severity.
pub fn tool_sarif(
    tool: Option<&str>,
    raw: &[u8],
    source: &Path,
) -> anyhow::Result<(Value, SeverityCounts)> {
    let mut roots = vec![source.to_string_lossy().into_owned()];
    if let Ok(real) = source.canonicalize() {
        roots.push(real.to_string_lossy().into_owned());
    }
    roots.retain(|r| r.len() > 1);
    let mut sarif: Value = serde_json::from_slice(raw).context("the report is not JSON")?;
    if sarif.get("version").and_then(|v| v.as_str()) != Some("2.1.0") {
        bail!("the report is not a SARIF 2.1.0 log");
    }
    let mut counts = SeverityCounts::default();
    let Some(runs) = sarif.get_mut("runs").and_then(|r| r.as_array_mut()) else {
        bail!("the SARIF log has no runs");
    };
    for run in runs {
        let tool = tool
            .map(str::to_string)
            .unwrap_or_else(|| tool_of_driver(run));
        for artifact in run
            .get_mut("artifacts")
            .and_then(|a| a.as_array_mut())
            .into_iter()
            .flatten()
        {
            if let Some(location) = artifact.get_mut("location") {
                relativize(location, &roots);
            }
            scrub_value(artifact, false);
        }
        if let Some(obj) = run.as_object_mut() {
            obj.insert(
                "originalUriBaseIds".into(),
                json!({"SRCROOT": {"description": {"text": "Root of the scanned source tree"}}}),
            );
        }
        for invocation in run
            .get_mut("invocations")
            .and_then(|a| a.as_array_mut())
            .into_iter()
            .flatten()
        {
            scrub_value(invocation, false);
        }
        scrub_rules(&tool, run);
        let rules: Vec<Value> = run
            .pointer("/tool/driver/rules")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default();
        for result in run
            .get_mut("results")
            .and_then(|r| r.as_array_mut())
            .into_iter()
            .flatten()
        {
            let sev = normalize_result(&tool, result, &rules, &roots);
            counts.add(sev, 1);
        }
    }
    Ok((sarif, counts))
}

/// Rules are the tool's own text, except where a tool puts the match into its rule: trivy's
/// secret rules carry the matched line as `fullDescription`.
fn scrub_rules(tool: &str, run: &mut Value) {
    if let Some(rules) = run
        .pointer_mut("/tool/driver/rules")
        .and_then(|r| r.as_array_mut())
    {
        for rule in rules.iter_mut() {
            if tool == names::TRIVY && rule.get("name").and_then(|n| n.as_str()) == Some("Secret") {
                if let Some(obj) = rule.as_object_mut() {
                    let short = obj.get("shortDescription").cloned();
                    obj.remove("help");
                    match short {
                        Some(s) => obj.insert("fullDescription".into(), s),
                        None => obj.remove("fullDescription"),
                    };
                }
            }
            if tool == names::TRIVY || tool == names::GITLEAKS {
                scrub_value(rule, false);
            }
        }
    }
}

/// Makes one result safe and uniform (see [`tool_sarif`]) and returns its severity.
fn normalize_result(tool: &str, result: &mut Value, rules: &[Value], roots: &[String]) -> Severity {
    let rule = result
        .get("ruleIndex")
        .and_then(|i| i.as_u64())
        .and_then(|i| rules.get(i as usize))
        .or_else(|| {
            let id = result.get("ruleId")?.as_str()?;
            rules.iter().find(|r| r["id"] == id)
        });
    let sev = severity::sarif_result(tool, result, rule);
    let rule_id = result
        .get("ruleId")
        .and_then(|r| r.as_str())
        .unwrap_or("")
        .to_string();
    if let Some(text) = result.pointer_mut("/message/text") {
        let scrubbed = scrub_message(tool, &rule_id, text.as_str().unwrap_or(""));
        *text = json!(scrubbed);
    }
    if let Some(obj) = result.as_object_mut() {
        obj.remove("fingerprints");
        obj.remove("partialFingerprints");
    }
    scrub_value(result, false);
    normalize_locations(result, roots);
    let location = result.pointer("/locations/0/physicalLocation");
    let uri = location
        .and_then(|l| l.pointer("/artifactLocation/uri"))
        .and_then(|u| u.as_str())
        .unwrap_or("");
    let line = location
        .and_then(|l| l.pointer("/region/startLine"))
        .and_then(|u| u.as_u64())
        .unwrap_or(1)
        .to_string();
    let message = result
        .pointer("/message/text")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let fp = fingerprint(&[tool, &rule_id, uri, &line, message]);
    if let Some(obj) = result.as_object_mut() {
        obj.insert(
            "partialFingerprints".into(),
            json!({ format!("{tool}Fingerprint/v1"): fp }),
        );
        let props = obj.entry("properties").or_insert_with(|| json!({}));
        if !props.is_object() {
            *props = json!({});
        }
        props["severity"] = json!(sev.as_str());
        // The level follows the service's severity (ruff says `error` for everything).
        obj.insert("level".into(), json!(sev.sarif_level()));
    }
    sev
}

/// Locations relative to `SRCROOT` where they are inside the tree, other base URIs dropped, and
/// a `startLine` on every region (1 where the tool gives none).
fn normalize_locations(result: &mut Value, roots: &[String]) {
    for loc in result
        .get_mut("locations")
        .and_then(|l| l.as_array_mut())
        .into_iter()
        .flatten()
    {
        if let Some(artifact) = loc.pointer_mut("/physicalLocation/artifactLocation") {
            relativize(artifact, roots);
            let relative = artifact
                .get("uri")
                .and_then(|u| u.as_str())
                .is_some_and(|u| !u.contains(':') && !u.starts_with('/'));
            if relative {
                artifact["uriBaseId"] = json!("SRCROOT");
            } else if let Some(a) = artifact.as_object_mut() {
                a.remove("uriBaseId");
            }
        }
        if let Some(phys) = loc
            .get_mut("physicalLocation")
            .and_then(|p| p.as_object_mut())
        {
            let region = phys.entry("region").or_insert_with(|| json!({}));
            let line = region
                .get("startLine")
                .and_then(|l| l.as_u64())
                .unwrap_or(0);
            if line == 0 {
                region["startLine"] = json!(1);
            }
        }
    }
}

/// Findings converted from a tool's own report format as a SARIF log, with their counts.
pub fn converted(tool: &str, tags: &[&str], findings: Vec<Finding>) -> (Value, SeverityCounts) {
    let mut counts = SeverityCounts::default();
    let mut rules: Vec<(String, String, Severity)> = Vec::new();
    for f in &findings {
        counts.add(f.severity, 1);
        if !rules.iter().any(|(id, _, _)| *id == f.rule_id) {
            rules.push((f.rule_id.clone(), f.message.clone(), f.severity));
        }
    }
    rules.sort();
    let rule_refs: Vec<(&str, &str, Severity)> = rules
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
        .collect();
    let key = format!("{tool}Fingerprint/v1");
    let sarif = build_sarif(
        &SarifTool {
            name: tool,
            version: "",
            information_uri: "",
            rule_tags: tags,
            fingerprint_key: &key,
        },
        &rule_refs,
        &findings,
    );
    (sarif, counts)
}

fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

fn clean_path(p: &str) -> String {
    p.trim_start_matches("./").replace('\\', "/")
}

/// A 1-based line or column from a report's number, whatever the report says: missing, zero or
/// negative values become 1, values past `u32::MAX` saturate. `offset` is 1 for 0-based fields.
fn position(value: &Value, offset: u64) -> u32 {
    let n = value.as_u64().unwrap_or(0).saturating_add(offset).max(1);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// bandit's `issue_text` without what it quotes from the code: the hard-coded password checks
/// (B105–B107) end with the password itself ("Possible hardcoded password: '…'"), which is cut
/// off; every other message is masked.
fn bandit_message(test_id: &str, text: &str) -> String {
    match test_id {
        "B105" | "B106" | "B107" => text
            .split_once(':')
            .map(|(head, _)| head)
            .unwrap_or("Possible hardcoded password")
            .to_string(),
        _ => mask_secrets(text),
    }
}

/// Bandit's JSON report as findings, with the service's severity ([`severity::bandit`]). The
/// code excerpt is not kept: for the hard-coded password checks it holds the password.
pub fn bandit_findings(raw: &[u8]) -> anyhow::Result<Vec<Finding>> {
    let doc: Value = serde_json::from_slice(raw).context("the report is not JSON")?;
    let results = doc
        .get("results")
        .and_then(|r| r.as_array())
        .context("the report has no `results`")?;
    let mut out = Vec::new();
    for r in results {
        let test_id = r["test_id"].as_str().unwrap_or("bandit");
        let test_name = r["test_name"].as_str().unwrap_or("");
        let path = clean_path(r["filename"].as_str().unwrap_or(""));
        let line = position(&r["line_number"], 0);
        let column = position(&r["col_offset"], 1);
        let severity = severity::bandit(
            test_id,
            r["issue_severity"].as_str().unwrap_or(""),
            r["issue_confidence"].as_str().unwrap_or(""),
        );
        let text = bandit_message(test_id, r["issue_text"].as_str().unwrap_or(""));
        out.push(Finding {
            rule_id: test_id.to_string(),
            severity,
            message: format!("{test_name}: {text}"),
            path: path.clone(),
            line,
            column,
            snippet: format!("[{test_id} {test_name}]"),
            fingerprint: fingerprint(&[names::BANDIT, test_id, &path, &line.to_string()]),
        });
    }
    out.sort_by(|a, b| (&a.path, a.line, &a.rule_id).cmp(&(&b.path, b.line, &b.rule_id)));
    Ok(out)
}

/// detect-secrets' baseline as findings. It stores only a hash of each secret; so do we.
pub fn detect_secrets_findings(raw: &[u8]) -> anyhow::Result<Vec<Finding>> {
    let doc: Value = serde_json::from_slice(raw).context("the output is not JSON")?;
    let results = doc
        .get("results")
        .and_then(|r| r.as_object())
        .context("the output has no `results`")?;
    let mut out = Vec::new();
    for (file, list) in results {
        for r in list.as_array().into_iter().flatten() {
            let kind = r["type"].as_str().unwrap_or("Secret");
            let rule_id = kind
                .to_ascii_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            let path = clean_path(r["filename"].as_str().unwrap_or(file));
            let line = position(&r["line_number"], 0);
            let hashed = r["hashed_secret"].as_str().unwrap_or("");
            out.push(Finding {
                rule_id: rule_id.clone(),
                severity: severity::detect_secrets(kind),
                message: format!("Potential secret: {}", mask_secrets(kind)),
                path: path.clone(),
                line,
                column: 1,
                snippet: "[redacted]".into(),
                fingerprint: fingerprint(&[names::DETECT_SECRETS, &rule_id, &path, hashed]),
            });
        }
    }
    out.sort_by(|a, b| (&a.path, a.line, &a.rule_id).cmp(&(&b.path, b.line, &b.rule_id)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn bandit_report_converts_without_code() {
        let raw = json!({"results": [{
            "filename": "./app/db.py", "line_number": 3, "col_offset": 4,
            "test_id": "B105", "test_name": "hardcoded_password_string",
            "issue_severity": "LOW", "issue_confidence": "MEDIUM",
            "issue_text": "Possible hardcoded password: 'hunter2'",
            "code": "3 password = 'hunter2'\n"
        }]});
        let findings = bandit_findings(raw.to_string().as_bytes()).unwrap();
        assert_eq!(findings[0].path, "app/db.py");
        assert_eq!((findings[0].line, findings[0].column), (3, 5));
        assert_eq!(findings[0].severity, Severity::Low);
        let (sarif, counts) = converted("bandit", &["security"], findings);
        assert_eq!(counts.low, 1);
        assert!(
            !sarif.to_string().contains("password = "),
            "no code excerpt"
        );
    }

    #[test]
    fn detect_secrets_output_converts() {
        let raw = json!({"results": {"config.py": [
            {"type": "AWS Access Key", "filename": "config.py", "hashed_secret": "abc", "is_verified": false, "line_number": 2}
        ]}});
        let findings = detect_secrets_findings(raw.to_string().as_bytes()).unwrap();
        assert_eq!(findings[0].rule_id, "aws-access-key");
        assert_eq!(findings[0].severity, Severity::High);
        assert!(detect_secrets_findings(b"not json").is_err());
    }

    fn recorded(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/tool-reports")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn sarif_results(sarif: &Value) -> Vec<Value> {
        sarif["runs"][0]["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// What every SARIF result must carry (CONTRACT A), and no snippet, no tool fingerprint.
    fn assert_contract(sarif: &Value) {
        for r in sarif_results(sarif) {
            assert!(r["ruleId"].is_string(), "{r}");
            assert!(r["message"]["text"].is_string(), "{r}");
            assert!(r["level"].is_string(), "{r}");
            let sev = r["properties"]["severity"].as_str().unwrap_or("");
            assert!(
                ["critical", "high", "medium", "low", "info"].contains(&sev),
                "{r}"
            );
            let loc = &r["locations"][0]["physicalLocation"];
            assert_eq!(loc["artifactLocation"]["uriBaseId"], "SRCROOT", "{r}");
            assert!(loc["region"]["startLine"].as_u64().unwrap_or(0) >= 1, "{r}");
            assert!(r.get("fingerprints").is_none(), "{r}");
            let fps = r["partialFingerprints"].as_object().unwrap();
            assert!(!fps.is_empty());
            for v in fps.values() {
                let v = v.as_str().unwrap();
                assert!(
                    v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{v}"
                );
            }
        }
    }

    /// The made-up credentials of the recorded reports (tests/data/tool-reports/README.md).
    const RECORDED_SECRETS: [&str; 8] = [
        "Zq8xN2vLw4Kp9rTy",
        "Wq7rTz2mKx9pLs4v",
        "hunter2hunter2",
        "Fj3kLm8nPq2rSt6u",
        "Yt5uIo9pAs3dFg7h",
        "AKIAIOSFODNN7EXAMPLE",
        "pk9Xw2LqR7tVn4ZsB8yH3mJc6",
        "DB_TOKEN",
    ];

    fn assert_no_recorded_secret(tool: &str, sarif: &Value) {
        let text = sarif.to_string();
        for secret in RECORDED_SECRETS {
            assert!(!text.contains(secret), "{tool}: {secret} in clear");
        }
        assert!(
            !text.contains("/tmp/certus-semgrep"),
            "{tool}: a server path"
        );
        assert!(!text.contains("/work/scan"), "{tool}: a server path");
    }

    #[test]
    fn recorded_bandit_run_gets_the_table_severities_and_no_password() {
        let findings = bandit_findings(&recorded("bandit.json")).unwrap();
        let sev = |id: &str| {
            findings
                .iter()
                .filter(|f| f.rule_id == id)
                .map(|f| f.severity)
                .collect::<Vec<_>>()
        };
        // HIGH x HIGH, LOW x HIGH, LOW x MEDIUM, LOW x HIGH (assert), MEDIUM x LOW.
        assert_eq!(sev("B602"), vec![Severity::High]);
        assert_eq!(sev("B605"), vec![Severity::High]);
        assert_eq!(sev("B404"), vec![Severity::Low]);
        assert!(sev("B105").iter().all(|s| *s == Severity::Low));
        assert_eq!(sev("B101"), vec![Severity::Low]);
        assert!(sev("B113").iter().all(|s| *s == Severity::Low));
        let b105 = findings.iter().find(|f| f.rule_id == "B105").unwrap();
        assert_eq!(
            b105.message,
            "hardcoded_password_string: Possible hardcoded password"
        );
        let (sarif, counts) = converted("bandit", &["security"], findings);
        assert_eq!(counts.total, sarif_results(&sarif).len() as u64);
        assert_contract(&sarif);
        assert_no_recorded_secret("bandit", &sarif);
    }

    #[test]
    fn recorded_detect_secrets_run_keeps_only_hashes() {
        let findings = detect_secrets_findings(&recorded("detect-secrets.json")).unwrap();
        assert!(!findings.is_empty());
        assert!(findings
            .iter()
            .all(|f| f.rule_id == "secret-keyword" && f.severity == Severity::Medium));
        let (sarif, _) = converted(names::DETECT_SECRETS, &["security", "secret"], findings);
        assert_contract(&sarif);
        assert_no_recorded_secret("detect-secrets", &sarif);
    }

    #[test]
    fn recorded_ruff_run_is_rated_by_rule_family_and_names_no_variable() {
        let (sarif, counts) = tool_sarif(
            Some("ruff"),
            &recorded("ruff.sarif.json"),
            Path::new("/tmp/certus-semgrep/src"),
        )
        .unwrap();
        assert_contract(&sarif);
        assert_no_recorded_secret("ruff", &sarif);
        let results = sarif_results(&sarif);
        let sev_of = |id: &str| {
            results
                .iter()
                .find(|r| r["ruleId"] == id)
                .map(|r| r["properties"]["severity"].as_str().unwrap().to_string())
                .unwrap()
        };
        assert_eq!(sev_of("S602"), "high");
        assert_eq!(sev_of("S105"), "medium");
        assert_eq!(sev_of("S101"), "low");
        assert_eq!(sev_of("S324"), "medium");
        let s101 = results.iter().find(|r| r["ruleId"] == "S101").unwrap();
        assert_eq!(s101["level"], "note", "the level follows the severity");
        let s105 = results.iter().find(|r| r["ruleId"] == "S105").unwrap();
        assert_eq!(
            s105["message"]["text"],
            "Possible hardcoded password assigned to a variable"
        );
        assert_eq!(
            s105["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "creds.py"
        );
        assert_eq!(counts.total, results.len() as u64);
        assert_eq!(counts.high, 2, "S602 and S605");
        assert!(!sarif.to_string().contains("snippet"));
    }

    #[test]
    fn recorded_gitleaks_report_loses_its_snippets_and_rates_keys() {
        let (sarif, counts) = tool_sarif(
            Some("gitleaks"),
            &recorded("gitleaks.sarif.json"),
            Path::new("/work/scan/src"),
        )
        .unwrap();
        assert_contract(&sarif);
        assert_no_recorded_secret("gitleaks", &sarif);
        assert_eq!((counts.critical, counts.high), (1, 2));
        assert!(!sarif.to_string().contains("snippet"));
        // The same report recognised by its driver name.
        let (again, _) = native_sarif(
            &recorded("gitleaks.sarif.json"),
            Path::new("/work/scan/src"),
        )
        .unwrap();
        assert_eq!(again, sarif);
    }

    #[test]
    fn recorded_trivy_report_uses_its_severity_and_drops_the_match() {
        let (sarif, counts) = tool_sarif(
            Some("trivy"),
            &recorded("trivy.sarif.json"),
            Path::new("/work/scan/src"),
        )
        .unwrap();
        assert_contract(&sarif);
        assert_no_recorded_secret("trivy", &sarif);
        // MEDIUM (score 6.1), HIGH (score 5.4: the tag wins), CRITICAL secret.
        assert_eq!((counts.critical, counts.high, counts.medium), (1, 1, 1));
        let text = sarif.to_string();
        assert!(!text.contains("Match:"), "{text}");
        assert!(
            !text.contains("ROOTPATH"),
            "the base URI with the server path is gone"
        );
        let vuln = &sarif_results(&sarif)[0];
        assert!(vuln["message"]["text"]
            .as_str()
            .unwrap()
            .contains("Installed Version: 2.25.0"));
    }

    #[test]
    fn recorded_osv_scanner_report_gets_lines_and_relative_paths() {
        let (sarif, counts) = tool_sarif(
            Some("osv-scanner"),
            &recorded("osv-scanner.sarif.json"),
            Path::new("/work/scan/src"),
        )
        .unwrap();
        assert_contract(&sarif);
        assert_no_recorded_secret("osv-scanner", &sarif);
        // No score in osv-scanner's SARIF: its `warning` level.
        assert_eq!(counts.medium, 2);
        let results = sarif_results(&sarif);
        assert_eq!(
            results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "requirements.txt"
        );
        let fps: BTreeSet<String> = results
            .iter()
            .map(|r| r["partialFingerprints"]["osv-scannerFingerprint/v1"].to_string())
            .collect();
        assert_eq!(
            fps.len(),
            2,
            "two packages in one lockfile: two fingerprints"
        );
        // The advisory texts stay readable.
        assert!(results[0]["message"]["text"]
            .as_str()
            .unwrap()
            .contains("GHSA-j8r2-6x86-q33q"));
        // Where a rule has a CVSS-like score, it decides.
        let mut scored: Value =
            serde_json::from_slice(&recorded("osv-scanner.sarif.json")).unwrap();
        scored["runs"][0]["tool"]["driver"]["rules"][0]["properties"] =
            json!({"security-severity": "9.8"});
        let (_, counts) = tool_sarif(
            Some("osv-scanner"),
            scored.to_string().as_bytes(),
            Path::new("/work/scan/src"),
        )
        .unwrap();
        assert_eq!((counts.critical, counts.medium), (1, 1));
    }

    #[test]
    fn messages_quoting_code_are_scrubbed() {
        assert_eq!(
            bandit_message("B106", "Possible hardcoded password: 'hunter2'"),
            "Possible hardcoded password"
        );
        assert!(!bandit_message("B608", "query: token=Zq8xN2vLw4Kp9rTy").contains("Zq8x"));
        let trivy = scrub_message(
            "trivy",
            "aws-access-key-id",
            "Artifact: a.py\nSeverity: CRITICAL\nMatch: key=\"hunter2\"",
        );
        assert_eq!(trivy, "Artifact: a.py\nSeverity: CRITICAL");
        let sem = scrub_message("semgrep", "x", "Hard-coded secret Zq8xN2vLw4Kp9rTy");
        assert!(!sem.contains("Zq8x"), "{sem}");
    }

    #[tokio::test]
    async fn forwarded_log_lines_are_masked() {
        let input = b"app.py:8 password=\"hunter2hunter2\" key AKIAIOSFODNN7EXAMPLE\nplain line\n";
        let lines = std::sync::Mutex::new(Vec::new());
        let collect = |_: &str, l: String| lines.lock().unwrap().push(l);
        forward_lines(&input[..], "stdout", &collect).await.unwrap();
        let lines = lines.into_inner().unwrap();
        assert_eq!(lines.len(), 2);
        assert!(!lines[0].contains("hunter2"), "{}", lines[0]);
        assert!(!lines[0].contains("AKIAIOSFODNN7EXAMPLE"), "{}", lines[0]);
        assert_eq!(lines[1], "plain line");
    }

    /// Inputs that fail the `tool_reports` fuzz target's 1-based-position invariant: a line
    /// number past `u32::MAX` became line 0, and a column offset of `u32::MAX` overflowed.
    #[test]
    fn out_of_range_positions_saturate_instead_of_wrapping() {
        let bandit = br#"{"results":[{"line_number":4294967296,"col_offset":4294967295},{"line_number":-3,"col_offset":-1},{"line_number":0}]}"#;
        let findings = bandit_findings(bandit).unwrap();
        let positions: Vec<(u32, u32)> = findings.iter().map(|f| (f.line, f.column)).collect();
        assert_eq!(positions, vec![(1, 1), (1, 1), (u32::MAX, u32::MAX)]);
        let secrets = br#"{"results":{"a":[{"line_number":4294967296},{"line_number":0}]}}"#;
        let lines: Vec<u32> = detect_secrets_findings(secrets)
            .unwrap()
            .iter()
            .map(|f| f.line)
            .collect();
        assert_eq!(lines, vec![1, u32::MAX]);
    }

    #[test]
    fn native_sarif_is_counted_and_snippets_removed() {
        let raw = json!({"version": "2.1.0", "runs": [{
            "tool": {"driver": {"name": "x", "rules": [
                {"id": "r1", "properties": {"security-severity": "9.1"}},
                {"id": "r2", "defaultConfiguration": {"level": "note"}}
            ]}},
            "results": [
                {"ruleId": "r1", "message": {"text": "m"}, "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": "a.py"}, "region": {"startLine": 1, "snippet": {"text": "secret=abc"}}}}]},
                {"ruleId": "r2", "ruleIndex": 1, "message": {"text": "m"}},
                {"ruleId": "r3", "level": "error", "message": {"text": "m"}}
            ]
        }]});
        let (sarif, counts) =
            native_sarif(raw.to_string().as_bytes(), Path::new("/work/scan/src")).unwrap();
        assert_eq!((counts.critical, counts.low, counts.high), (1, 1, 1));
        assert!(!sarif.to_string().contains("secret=abc"));
        assert!(native_sarif(b"{\"version\": \"1.0\"}", Path::new("/x")).is_err());
        // Absolute URIs inside the tree become relative (no server paths in reports).
        let ruff_like = json!({"version": "2.1.0", "runs": [{
            "tool": {"driver": {"name": "ruff"}},
            "results": [{"ruleId": "S105", "level": "error", "message": {"text": "m"},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": "file:///work/scan/src/app/db.py"}}}]}]
        }]});
        let (sarif, _) = native_sarif(
            ruff_like.to_string().as_bytes(),
            Path::new("/work/scan/src"),
        )
        .unwrap();
        let loc =
            &sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"];
        assert_eq!(loc["uri"], "app/db.py");
        assert_eq!(loc["uriBaseId"], "SRCROOT");
        assert!(!sarif.to_string().contains("/work/scan"));
    }

    #[tokio::test]
    async fn output_lines_are_capped_in_number_and_length() {
        let mut input = Vec::new();
        input.extend_from_slice(&vec![b'a'; 100_000]);
        input.extend_from_slice(b"\nsecond\r\n");
        for i in 0..(MAX_LOG_LINES + 5) {
            input.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let lines = std::sync::Mutex::new(Vec::new());
        let collect = |_: &str, l: String| lines.lock().unwrap().push(l);
        forward_lines(&input[..], "stdout", &collect).await.unwrap();
        let lines = lines.into_inner().unwrap();
        assert_eq!(lines.len(), MAX_LOG_LINES + 1);
        assert_eq!(lines[0].len(), MAX_LINE_CHARS, "an over-long line is cut");
        assert_eq!(lines[1], "second");
        assert!(
            lines.last().unwrap().starts_with("... 7 more lines"),
            "{:?}",
            lines.last()
        );
    }

    #[test]
    fn path_lookup_needs_an_executable() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        assert!(
            find_on_path("tool", Some(&path)).is_none(),
            "not executable"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on_path("tool", Some(&path)), Some(exe));
        assert!(find_on_path("other", Some(&path)).is_none());
    }

    /// A fake `bandit` in a directory of its own: `body` is shell run with `$REPORT` set to the
    /// report path (bandit's last argument).
    fn fake_bandit(body: &str) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("bandit");
        std::fs::write(
            &exe,
            format!("#!/bin/sh\nfor a; do REPORT=\"$a\"; done\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    async fn run_fake(
        tools: &Path,
        deadline: Duration,
        cancel: &Arc<AtomicBool>,
    ) -> Result<ToolOutput, ToolError> {
        let source = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let run = ToolRun {
            source: source.path(),
            scratch: scratch.path(),
            path: Some(tools.as_os_str().to_owned()),
            env: &[],
            deadline: Instant::now() + deadline,
            cancel,
        };
        let bandit = crate::pipeline::scanners::registry::tool_spec("bandit").unwrap();
        run_tool(bandit, &run, &|_, _| {}).await
    }

    /// Whether `pid` has ended (gone, or a zombie waiting for its new parent), waiting for it
    /// for a while: a SIGKILLed process takes a moment to be torn down.
    fn ended(pid: &str) -> bool {
        let stat = format!("/proc/{}/stat", pid.trim());
        for _ in 0..200 {
            match std::fs::read_to_string(&stat) {
                Err(_) => return true,
                Ok(s)
                    if s.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('Z')) =>
                {
                    return true
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }

    fn read_pid(path: &Path) -> String {
        for _ in 0..400 {
            if let Ok(pid) = std::fs::read_to_string(path) {
                if pid.ends_with('\n') {
                    return pid;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the fake tool did not write {}", path.display());
    }

    #[tokio::test]
    async fn a_process_the_tool_leaves_behind_is_killed_when_it_exits() {
        let pids = tempfile::tempdir().unwrap();
        let pidfile = pids.path().join("grandchild");
        let tools = fake_bandit(&format!(
            "sleep 1000 &\necho $! > {}\necho '{{\"results\": []}}' > \"$REPORT\"\nexit 0",
            pidfile.display()
        ));
        let cancel = Arc::new(AtomicBool::new(false));
        // The grandchild holds the tool's stdout open: without killing the group, the run
        // would only end at the deadline, as Stopped.
        let out = run_fake(tools.path(), Duration::from_secs(600), &cancel)
            .await
            .expect("the tool run completes");
        assert_eq!(out.exit_code, 0);
        assert!(
            ended(&read_pid(&pidfile)),
            "the grandchild is still running"
        );
    }

    #[tokio::test]
    async fn the_whole_process_group_is_killed_on_timeout_and_on_cancel() {
        let pids = tempfile::tempdir().unwrap();
        let tool_pid = pids.path().join("tool");
        let grandchild_pid = pids.path().join("grandchild");
        let tools = fake_bandit(&format!(
            "echo $$ > {}\nsleep 1000 &\necho $! > {}\nsleep 1000",
            tool_pid.display(),
            grandchild_pid.display()
        ));
        let cancel = Arc::new(AtomicBool::new(false));
        let err = run_fake(tools.path(), Duration::from_secs(2), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Stopped), "{err}");
        assert!(ended(&read_pid(&tool_pid)), "the tool is still running");
        assert!(
            ended(&read_pid(&grandchild_pid)),
            "the grandchild is still running"
        );

        for f in [&tool_pid, &grandchild_pid] {
            std::fs::remove_file(f).unwrap();
        }
        let flag = cancel.clone();
        let watch = grandchild_pid.clone();
        let canceller = tokio::task::spawn_blocking(move || {
            let pid = read_pid(&watch);
            flag.store(true, Ordering::Relaxed);
            pid
        });
        let err = run_fake(tools.path(), Duration::from_secs(600), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Stopped), "{err}");
        let grandchild = canceller.await.unwrap();
        assert!(ended(&read_pid(&tool_pid)), "the tool is still running");
        assert!(ended(&grandchild), "the grandchild is still running");
    }

    #[tokio::test]
    async fn the_tool_sees_only_its_minimal_environment() {
        let dump = tempfile::tempdir().unwrap();
        let env_file = dump.path().join("env");
        let tools = fake_bandit(&format!(
            "env > {}\necho '{{\"results\": []}}' > \"$REPORT\"",
            env_file.display()
        ));
        let cancel = Arc::new(AtomicBool::new(false));
        run_fake(tools.path(), Duration::from_secs(600), &cancel)
            .await
            .unwrap();
        let allowed = [
            "HOME",
            "TMPDIR",
            "LANG",
            "LC_ALL",
            "NO_COLOR",
            "PYTHONDONTWRITEBYTECODE",
            "SEMGREP_SEND_METRICS",
            "SEMGREP_ENABLE_VERSION_CHECK",
            "TRIVY_NO_PROGRESS",
            "PATH",
            "PYENV_ROOT",
            "PYENV_VERSION",
            // set by the shell itself
            "PWD",
            "OLDPWD",
            "SHLVL",
            "_",
        ];
        let env = std::fs::read_to_string(&env_file).unwrap();
        for line in env.lines() {
            let name = line.split('=').next().unwrap();
            assert!(
                allowed.contains(&name),
                "unexpected variable in the tool's environment: {name}"
            );
        }
        assert!(env.contains("HOME="), "{env}");
    }

    #[tokio::test]
    async fn a_report_over_the_size_cap_is_refused() {
        let tools = fake_bandit(&format!("truncate -s {} \"$REPORT\"", MAX_REPORT_BYTES + 1));
        let cancel = Arc::new(AtomicBool::new(false));
        let err = run_fake(tools.path(), Duration::from_secs(600), &cancel)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
    }
}
