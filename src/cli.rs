//! `certus-assurance scan <path-or-git-url>`: one scan through the same pipeline as the service,
//! without the server, the job store or the network (except to clone a remote git URL). Shows
//! progress on a terminal, prints a findings summary (table, JSON summary or merged SARIF), and
//! exits non-zero when the policy fails, so it can gate a CI job.
//!
//! Exit codes: 0 the policy passed, 1 the policy failed, 2 the scan could not run (bad
//! arguments, unreadable source, a scanner failure).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::profile::{self, Profile, SeverityCounts};
use crate::pipeline::source::{parse_git_url, SourcePolicy};
use crate::pipeline::{
    archive, builtin_scanners_with, osv::OsvStore, Pipeline, ProgressSink, ScanEvent, ScanSource,
    ScanSpec,
};

/// Output format of the findings summary on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table of findings per scanner and severity, the policy verdict and the bundle path.
    Table,
    /// The bundle's `summary.json`.
    Json,
    /// Every SARIF report of the bundle merged into one SARIF 2.1.0 log.
    Sarif,
}

/// Arguments of the `scan` command.
#[derive(Debug, Clone, Args)]
pub struct ScanArgs {
    /// A directory, an archive (tar, tar.gz, tar.bz2, zip), or a git URL to clone.
    pub target: String,
    /// Built-in profile, or a profile defined by --manifest.
    #[arg(long, default_value = "light")]
    pub profile: String,
    /// A JSON manifest that defines or overrides profiles (as the API's inline `manifest`).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Directory the bundle is written under (as `<DIR>/<test_id>/`).
    #[arg(long, default_value = "certus-assurance-scans", value_name = "DIR")]
    pub out: PathBuf,
    /// Format of the findings summary printed on standard output.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Git branch to check out (git URLs only).
    #[arg(long)]
    pub branch: Option<String>,
    /// Time limit of the whole scan, in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout_seconds: u64,
    /// Also show each tool's output lines in the progress display.
    #[arg(long)]
    pub verbose: bool,
    /// Every scanner of the profile must succeed for the policy to pass (no optional scanners).
    #[arg(long)]
    pub strict: bool,
    /// A baseline file (`{"version": 1, "fingerprints": [...]}`, as `baseline` writes it):
    /// findings it lists are reported as suppressed. Default: `.certus-baseline.json` in the tree.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
}

/// Progress on standard error (only when it is a terminal, or with --verbose) and every event
/// in the bundle's `stream.jsonl`.
struct TerminalSink {
    show: bool,
    verbose: bool,
    stream_file: Mutex<Option<std::fs::File>>,
}

impl ProgressSink for TerminalSink {
    fn emit(&self, event: ScanEvent) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        if let Some(f) = self
            .stream_file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            let _ = writeln!(f, "{}", crate::jobs::events::event_json(&event, now));
        }
        if !self.show {
            return;
        }
        let line = match &event {
            ScanEvent::Phase { phase, message, .. } => Some(format!("[{phase}] {message}")),
            ScanEvent::ToolStart { tool } => Some(format!("  {tool}: running")),
            ScanEvent::ToolComplete {
                tool,
                status,
                exit_code,
                findings,
            } => Some(match exit_code {
                Some(code) => format!("  {tool}: {status} (exit {code}, {findings} findings)"),
                None => format!("  {tool}: {status} ({findings} findings)"),
            }),
            ScanEvent::Log { tool, stream, line } if stream == "warning" => {
                Some(format!("  {tool}: {line}"))
            }
            ScanEvent::Log { tool, stream, line } if self.verbose => {
                Some(format!("    {tool} {stream}: {line}"))
            }
            ScanEvent::Error { message } => Some(format!("error: {message}")),
            _ => None,
        };
        if let Some(line) = line {
            eprintln!("{line}");
        }
    }
}

fn looks_like_git_url(target: &str) -> bool {
    target.contains("://")
        || (target.contains('@') && target.contains(':') && !Path::new(target).exists())
}

/// Runs one scan; returns the process exit code.
pub async fn run_scan(args: &ScanArgs, config: &Config) -> anyhow::Result<u8> {
    let profile = match &args.manifest {
        None => Profile::builtin(&args.profile),
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("reading the manifest {}", path.display()))?;
            let value: Value = serde_json::from_slice(&text)
                .with_context(|| format!("the manifest {} is not JSON", path.display()))?;
            match profile::resolve(&args.profile, Some(&value)) {
                Ok(p) => Some(p),
                Err(errors) => {
                    let parts: Vec<String> = errors
                        .iter()
                        .map(|e| format!("{}: {}", e.loc.join("."), e.msg))
                        .collect();
                    bail!(
                        "the manifest {} is invalid: {}",
                        path.display(),
                        parts.join("; ")
                    );
                }
            }
        }
    };
    let Some(profile) = profile else {
        bail!(
            "unknown profile `{}`; built-in profiles: {} (or define it with --manifest)",
            args.profile,
            profile::BUILTIN_PROFILES.join(", ")
        );
    };
    let test_id = crate::jobs::new_test_id();
    let work = tempfile::Builder::new()
        .prefix("certus-assurance-")
        .tempdir()
        .context("creating a temporary work directory")?;
    let osv = config
        .osv_db_dir
        .clone()
        .map(|d| Arc::new(OsvStore::new(d)));
    let metrics = Metrics::new(&profile::PROFILE_LABELS, &crate::pipeline::BUILTIN_SCANNERS);
    let mut pipeline = Pipeline::local(
        work.path().join("work"),
        args.out.clone(),
        metrics,
        builtin_scanners_with(osv),
    );
    pipeline.signing_key = config.signing_key.clone();
    pipeline.tool_path = config.tool_path.clone();
    pipeline.archive_limits = archive::Limits {
        max_bytes: config.archive_max_extracted_bytes,
        max_entries: config.archive_max_files,
    };
    pipeline.upload_dir = work.path().join("uploads");

    let source = if looks_like_git_url(&args.target) {
        let url =
            parse_git_url(&args.target, SourcePolicy::OPEN).map_err(|e| anyhow::anyhow!(e))?;
        ScanSource::Git {
            url,
            branch: args.branch.clone(),
            commit: None,
        }
    } else {
        let path = Path::new(&args.target);
        let real = path
            .canonicalize()
            .with_context(|| format!("{} does not exist", args.target))?;
        if real.is_dir() {
            pipeline.source_roots = Arc::new(vec![real.clone()]);
            ScanSource::Directory {
                requested: real.to_string_lossy().into_owned(),
            }
        } else {
            let mut head = [0u8; 512];
            let n = std::io::Read::read(&mut std::fs::File::open(&real)?, &mut head)?;
            let format = archive::sniff(&head[..n]).with_context(|| {
                format!(
                    "{} is neither a directory nor a tar, tar.gz, tar.bz2 or zip archive",
                    args.target
                )
            })?;
            let bytes = std::fs::read(&real)?;
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            std::fs::create_dir_all(&pipeline.upload_dir)?;
            let name = format!("{sha}.{}", format.extension());
            std::fs::write(pipeline.upload_dir.join(&name), &bytes)?;
            ScanSource::Archive {
                archive_path: format!("uploads/{name}"),
            }
        }
    };
    let spec = ScanSpec {
        test_id: test_id.clone(),
        workspace_id: "local".into(),
        component_id: component_name(&args.target),
        assessment_id: "cli".into(),
        requested_by: None,
        source,
        manifest_digest: profile.manifest_digest(),
        profile,
        manifest_path: None,
        timeout: Duration::from_secs(args.timeout_seconds.max(1)),
        strict: args.strict,
        baseline_file: args.baseline.clone(),
        submitted_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default(),
    };
    let bundle = pipeline.artifact_dir(&test_id);
    std::fs::create_dir_all(&bundle)
        .with_context(|| format!("creating the output directory {}", bundle.display()))?;
    let sink = Arc::new(TerminalSink {
        show: std::io::stderr().is_terminal() || args.verbose,
        verbose: args.verbose,
        stream_file: Mutex::new(
            std::fs::File::create(bundle.join(crate::pipeline::artifacts::STREAM_JSONL)).ok(),
        ),
    });
    let cancel = Arc::new(AtomicBool::new(false));
    let run = pipeline.run(&spec, sink, cancel.clone());
    let result = match tokio::time::timeout(spec.timeout, run).await {
        Ok(r) => r,
        Err(_) => {
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!(
                "certus-assurance: the scan exceeded --timeout-seconds {}",
                args.timeout_seconds
            );
            return Ok(2);
        }
    };
    let report = match result {
        Ok(r) => r,
        Err(failure) => {
            eprintln!("certus-assurance: scan failed: {}", failure.message);
            eprintln!("bundle (partial): {}", bundle.display());
            return Ok(2);
        }
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Table => write_table(&mut out, &report.summary, &bundle)?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report.summary)?;
            writeln!(out)?;
        }
        OutputFormat::Sarif => {
            serde_json::to_writer_pretty(&mut out, &merged_sarif(&bundle)?)?;
            writeln!(out)?;
        }
    }
    Ok(if report.policy.passed { 0 } else { 1 })
}

fn component_name(target: &str) -> String {
    let trimmed = target.trim_end_matches('/').trim_end_matches(".git");
    let last = trimmed
        .rsplit(['/', ':'])
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("source");
    last.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn write_table(out: &mut impl Write, summary: &Value, bundle: &Path) -> anyhow::Result<()> {
    let counts = |v: &Value| -> SeverityCounts {
        let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        SeverityCounts {
            critical: n("critical"),
            high: n("high"),
            medium: n("medium"),
            low: n("low"),
            info: n("info"),
            total: n("total"),
        }
    };
    writeln!(
        out,
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  status",
        "scanner", "critical", "high", "medium", "low", "info", "total"
    )?;
    let scanners = summary["scanners"].as_array().cloned().unwrap_or_default();
    for s in &scanners {
        let name = s["name"].as_str().unwrap_or("?");
        let status = s["status"].as_str().unwrap_or("?");
        match summary["findings"]["by_scanner"].get(name) {
            Some(c) => {
                let c = counts(c);
                writeln!(
                    out,
                    "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {status}",
                    name, c.critical, c.high, c.medium, c.low, c.info, c.total
                )?;
            }
            None => writeln!(
                out,
                "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {status}",
                name, "-", "-", "-", "-", "-", "-"
            )?,
        }
    }
    let t = counts(&summary["findings"]["total"]);
    writeln!(
        out,
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "TOTAL", t.critical, t.high, t.medium, t.low, t.info, t.total
    )?;
    writeln!(out)?;
    let policy = &summary["policy"];
    if policy["passed"].as_bool() == Some(true) {
        writeln!(
            out,
            "policy ({}): PASSED",
            summary["profile"].as_str().unwrap_or("?")
        )?;
    } else {
        writeln!(
            out,
            "policy ({}): FAILED",
            summary["profile"].as_str().unwrap_or("?")
        )?;
        for v in policy["violations"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {} findings: {} (allowed {})",
                v["severity"].as_str().unwrap_or("?"),
                v["count"],
                v["threshold"]
            )?;
        }
    }
    for w in summary["warnings"].as_array().into_iter().flatten() {
        writeln!(out, "warning: {}", w.as_str().unwrap_or_default())?;
    }
    writeln!(out, "bundle: {}", bundle.display())?;
    Ok(())
}

/// Every `reports/sast/*.sarif.json` of a bundle as one SARIF log (one run per report).
pub fn merged_sarif(bundle: &Path) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    let dir = bundle.join("reports/sast");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => vec![],
    };
    files.sort();
    for f in files {
        if f.to_string_lossy().ends_with(".sarif.json") {
            let log: Value = serde_json::from_slice(&std::fs::read(&f)?)
                .with_context(|| format!("reading {}", f.display()))?;
            runs.extend(log["runs"].as_array().cloned().unwrap_or_default());
        }
    }
    Ok(json!({
        "$schema": crate::pipeline::sarif::SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": runs,
    }))
}

/// Shortest token `hash-token` accepts: shorter secrets can be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

/// `certus-assurance hash-token`: reads one token from `input` (a trailing newline is ignored)
/// and returns its SHA-256 in hex, the value the token file's `sha256` field holds.
pub fn hash_token(input: impl std::io::Read) -> anyhow::Result<String> {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(input, 4097), &mut raw)
        .context("reading the token from standard input")?;
    if raw.len() > 4096 {
        bail!("the token is longer than 4096 bytes");
    }
    let text = String::from_utf8(raw).context("the token is not UTF-8 text")?;
    let token = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("the token contains spaces or control characters; use a single line of printable characters (e.g. `openssl rand -hex 32`)");
    }
    if token.chars().count() < MIN_TOKEN_CHARS {
        bail!("the token is shorter than {MIN_TOKEN_CHARS} characters; use a long random one (e.g. `openssl rand -hex 32`)");
    }
    Ok(crate::auth::hash_token(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_and_paths_are_told_apart() {
        assert!(looks_like_git_url("https://github.com/org/repo.git"));
        assert!(looks_like_git_url("git@github.com:org/repo.git"));
        assert!(!looks_like_git_url("./src"));
        assert!(!looks_like_git_url("/srv/code"));
        assert_eq!(component_name("https://github.com/org/repo.git"), "repo");
        assert_eq!(component_name("/srv/my code/"), "my-code");
    }

    #[test]
    fn hash_token_ignores_the_trailing_newline_and_refuses_weak_tokens() {
        let token = "0123456789abcdef0123";
        let expected = crate::auth::hash_token(token);
        assert_eq!(hash_token(token.as_bytes()).unwrap(), expected);
        assert_eq!(
            hash_token(format!("{token}\n").as_bytes()).unwrap(),
            expected
        );
        assert_eq!(
            hash_token(format!("{token}\r\n").as_bytes()).unwrap(),
            expected
        );
        for bad in [
            "",
            "\n",
            "short",
            "0123456789 abcdef0123",
            "0123456789abcdef\n\n",
        ] {
            assert!(hash_token(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
