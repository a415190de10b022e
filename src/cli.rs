//! The command line of the `certus-assurance` binary ([`Cli`]: the subcommands around the
//! settings of [`crate::config::Config`], and [`explain_cli_error`]) and the commands that run
//! without the server.
//!
//! `certus-assurance scan <path-or-git-url>`: one scan through the same pipeline as the service,
//! without the server, the job store or the network (except to clone a remote git URL). Shows
//! progress on a terminal, prints a findings summary (table, JSON summary or merged SARIF), and
//! exits non-zero when the policy fails, so it can gate a CI job.
//!
//! Exit codes: 0 the policy passed, 1 the policy failed, 2 the scan could not run (bad
//! arguments, unreadable source, a scanner failure).
//!
//! `certus-assurance baseline --bundle <DIR> [-o FILE]` writes a baseline file from a bundle's
//! `reports/findings.json` (exit 0, or 2 when the bundle cannot be read).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::config::Config;
use crate::jobs::observer::MetricsObserver;
use crate::metrics::Metrics;
use crate::pipeline::bundle::read::{
    for_each_finding, is_suppressed, masked, ReadError, FINDINGS_JSON, FINDINGS_SARIF,
    FINDINGS_VERSION,
};
use crate::pipeline::finding::SeverityCounts;
use crate::pipeline::profile::{self, Profile};
use crate::pipeline::scanners::external::passthrough_env;
use crate::pipeline::scanners::registry::SCANNER_NAMES;
use crate::pipeline::source::{parse_git_url, SourcePolicy};
use crate::pipeline::{
    archive, builtin_scanners_with, osv::OsvStore, Pipeline, ProgressSink, ScanEvent, ScanSource,
    ScanSpec,
};

/// Command line of the `certus-assurance` binary.
#[derive(Debug, Parser)]
#[command(
    name = "certus-assurance",
    version,
    about = "Certus Assurance security-scan service",
    long_about = "Certus Assurance security-scan service.\n\nWith no subcommand, `serve` runs. Every \
                  setting can be given as a flag or as the CERTUS_ASSURANCE_* environment variable \
                  shown next to it (see docs/configuration.md)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Scan a directory, archive or git URL once, without the server; exits 1 when the
    /// policy fails and 2 when the scan cannot run.
    Scan(ScanArgs),
    /// Write a baseline file (the fingerprints of every finding of a scan's bundle) that later
    /// scans read to mark those findings suppressed.
    Baseline(BaselineArgs),
    /// Read an API token on standard input and print its SHA-256, the value to put in the
    /// token file's `sha256` field or in CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256.
    HashToken,
    /// Manage the offline OSV database (`osv sync` downloads and refreshes it).
    #[command(subcommand)]
    Osv(OsvCommand),
}

/// `certus-assurance osv ...`
#[derive(Debug, Subcommand)]
pub enum OsvCommand {
    /// Download the osv.dev export of each ecosystem into the OSV database directory (only what
    /// changed since the last sync), check it, and swap it in atomically. Exits 0 when every
    /// ecosystem is current, 1 when one failed (its previous data is kept), 2 on bad arguments.
    Sync(SyncArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Ecosystems to download, comma-separated, as OSV spells them (crates.io, npm, PyPI, Go,
    /// RubyGems, Packagist) [default: all of them].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub ecosystems: Vec<String>,
    /// Directory to write (created if missing) [default: CERTUS_ASSURANCE_OSV_DB_DIR].
    #[arg(long, value_name = "DIR")]
    pub db_dir: Option<PathBuf>,
    /// Time limit of each download, in seconds (connecting is limited to 30 s, and a download
    /// that receives nothing for 60 s is abandoned).
    #[arg(long, default_value_t = 1800, value_name = "N")]
    pub timeout_seconds: u64,
}

/// `osv sync`: run before the configuration is validated, since the sync creates the directory
/// the service requires.
pub fn run_osv(command: &OsvCommand, config: &Config) -> std::process::ExitCode {
    let OsvCommand::Sync(args) = command;
    crate::pipeline::osv::sync::main(
        &args.ecosystems,
        args.db_dir
            .clone()
            .or_else(|| config.scanning.osv_db_dir.clone()),
        config
            .scanning
            .osv_source_url
            .as_deref()
            .unwrap_or(crate::pipeline::osv::sync::DEFAULT_SOURCE_URL),
        args.timeout_seconds,
    )
}

/// Rewrites clap's "invalid value for '--max-workers <N>'" so that it also names the
/// environment variable, which is how most deployments set it. The value of a setting whose
/// value is secret (a database URL with a password, a token) is not repeated.
pub fn explain_cli_error(err: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if !matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return err;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let flag = arg
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches('-');
    let command = Cli::command();
    let Some(setting) = command
        .get_arguments()
        .find(|a| a.get_long() == Some(flag) && a.get_env().is_some())
    else {
        return err;
    };
    let var = setting.get_env().unwrap_or_default().to_string_lossy();
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if setting.is_hide_env_values_set() {
        if let Some(ContextValue::String(value)) = err.get(ContextKind::InvalidValue) {
            if !value.is_empty() {
                first = first.replace(value.as_str(), "[redacted]");
            }
        }
    }
    clap::Error::raw(err.kind(), format!("{first} (set by {var} or --{flag})\n"))
}

/// Output format of the findings summary on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table of findings per scanner and severity, the policy verdict and the bundle path.
    Table,
    /// The bundle's `summary.json`.
    Json,
    /// The bundle's merged SARIF 2.1.0 log (`reports/findings.sarif.json`, with suppressed
    /// results marked); for a bundle without it, every per-scanner SARIF report merged into one.
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
    let test_id = String::from(crate::scan::TestId::random());
    let work = tempfile::Builder::new()
        .prefix("certus-assurance-")
        .tempdir()
        .context("creating a temporary work directory")?;
    let osv = config
        .scanning
        .osv_db_dir
        .clone()
        .map(|d| Arc::new(OsvStore::new(d).with_max_age(config.scanning.osv_max_age)));
    let metrics = Metrics::new(&profile::PROFILE_LABELS, &SCANNER_NAMES);
    let mut pipeline = Pipeline::local(
        work.path().join("work"),
        args.out.clone(),
        Arc::new(MetricsObserver::new(metrics)),
        builtin_scanners_with(osv),
    );
    pipeline.signing_key = crate::app::load_signing_key(config)?;
    pipeline.tool_path = config.scanning.tool_path.clone();
    pipeline.tool_env = Arc::new(passthrough_env(crate::config::passthrough_env));
    pipeline.archive_limits = archive::Limits {
        max_bytes: config.archive.max_extracted_bytes,
        max_entries: config.archive.max_files,
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
            std::fs::File::create(bundle.join(crate::pipeline::bundle::artifacts::STREAM_JSONL))
                .ok(),
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
        OutputFormat::Sarif => write_sarif(&mut out, &bundle)?,
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
            if v["kind"] == "scanner" {
                // Fail closed: a scanner of the profile did not succeed.
                writeln!(
                    out,
                    "  scanner {} {}: {}",
                    cell(v["scanner"].as_str().unwrap_or("?"), 40),
                    v["status"].as_str().unwrap_or("?"),
                    cell(v["reason"].as_str().unwrap_or("no reason given"), 300)
                )?;
            } else {
                writeln!(
                    out,
                    "  {} findings: {} (allowed {})",
                    v["severity"].as_str().unwrap_or("?"),
                    v["count"],
                    v["threshold"]
                )?;
            }
        }
        write_policy_findings(out, policy, bundle)?;
    }
    for w in summary["warnings"].as_array().into_iter().flatten() {
        writeln!(out, "warning: {}", w.as_str().unwrap_or_default())?;
    }
    writeln!(out, "bundle: {}", bundle.display())?;
    Ok(())
}

/// Most findings the policy table lists; the rest are counted.
pub const POLICY_TABLE_ROWS: usize = 50;

/// Text for one table cell: control characters (a terminal escape in a scanned file) become
/// spaces, and at most `max` characters are kept.
fn cell(text: &str, max: usize) -> String {
    let clean: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= max {
        clean
    } else {
        let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Lists the findings that break the policy: unsuppressed ones whose severity is over its
/// threshold, from `reports/findings.json`, as severity, file:line, rule, scanners and the
/// masked snippet (the first [`POLICY_TABLE_ROWS`], then how many more).
fn write_policy_findings(
    out: &mut impl Write,
    policy: &Value,
    bundle: &Path,
) -> anyhow::Result<()> {
    let violated: Vec<&str> = policy["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["severity"].as_str())
        .collect();
    if violated.is_empty() {
        return Ok(());
    }
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut more = 0u64;
    let read = for_each_finding(bundle, |_, finding| {
        let breaks = !is_suppressed(&finding)
            && finding["severity"]
                .as_str()
                .is_some_and(|s| violated.contains(&s));
        if !breaks {
            return;
        }
        if rows.len() >= POLICY_TABLE_ROWS {
            more += 1;
            return;
        }
        let f = masked(finding);
        let text = |k: &str| f[k].as_str().unwrap_or_default().to_string();
        let scanners: Vec<&str> = f["scanners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let shown = if text("snippet").trim().is_empty() {
            text("message")
        } else {
            text("snippet")
        };
        rows.push([
            cell(&text("severity"), 8),
            cell(&format!("{}:{}", text("path"), f["line"]), 60),
            cell(&text("rule_id"), 40),
            cell(&scanners.join(","), 40),
            cell(&shown, 100),
        ]);
    });
    match read {
        Ok(_) => {}
        Err(ReadError::Missing) => {
            writeln!(
                out,
                "  (this bundle has no {FINDINGS_JSON}; the findings are in reports/sast/*.sarif.json)"
            )?;
            return Ok(());
        }
        Err(err) => {
            writeln!(out, "  (the findings cannot be listed: {err})")?;
            return Ok(());
        }
    }
    let total = rows.len() as u64 + more;
    writeln!(out)?;
    writeln!(out, "findings that break the policy ({total}):")?;
    let header = [
        "severity".to_string(),
        "location".to_string(),
        "rule".to_string(),
        "scanners".to_string(),
        "snippet".to_string(),
    ];
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        writeln!(
            out,
            "  {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        )?;
    }
    if more > 0 {
        writeln!(
            out,
            "  … and {more} more (every finding: {FINDINGS_JSON} in the bundle)"
        )?;
    }
    Ok(())
}

/// Writes the bundle's merged SARIF: `reports/findings.sarif.json` as the pipeline wrote it, or,
/// for a bundle without it, the per-scanner reports merged by [`merged_sarif`].
pub fn write_sarif(out: &mut impl Write, bundle: &Path) -> anyhow::Result<()> {
    match std::fs::File::open(bundle.join(FINDINGS_SARIF)) {
        Ok(mut file) => {
            std::io::copy(&mut file, out).with_context(|| format!("writing {FINDINGS_SARIF}"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            serde_json::to_writer_pretty(&mut *out, &merged_sarif(bundle)?)?;
            writeln!(out)?;
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {FINDINGS_SARIF}"))),
    }
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
        "$schema": crate::pipeline::bundle::sarif::SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": runs,
    }))
}

/// Arguments of the `baseline` command.
#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// A scan's bundle directory (the `bundle:` path `scan` prints), holding
    /// reports/findings.json.
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// File to write, e.g. .certus-baseline.json at the root of the scanned tree (default:
    /// standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The baseline document of a bundle: `{"version": 1, "fingerprints": [...]}`, every
/// fingerprint of every finding (suppressed or not, so a baseline of a baselined scan is the
/// same), sorted and unique. Fails when the bundle has no readable `reports/findings.json` or a
/// fingerprint is not a hex SHA-256.
pub fn baseline_of(bundle: &Path) -> anyhow::Result<(Value, u64)> {
    let mut fingerprints = std::collections::BTreeSet::new();
    let mut bad: Option<String> = None;
    let mut findings = 0u64;
    let read = for_each_finding(bundle, |position, finding| {
        findings += 1;
        let valid = |v: &Value| {
            v.as_str()
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_ascii_lowercase)
        };
        // `fingerprint` is required; `fingerprints` (the primary one and the others) may be absent.
        let listed = finding["fingerprints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for fp in std::iter::once(&finding["fingerprint"]).chain(&listed) {
            match valid(fp) {
                Some(h) => {
                    fingerprints.insert(h);
                }
                None => {
                    bad.get_or_insert_with(|| {
                        format!("finding {position} has a fingerprint that is not a hex SHA-256")
                    });
                }
            }
        }
    });
    match read {
        Ok(_) => {}
        Err(ReadError::Missing) => bail!(
            "{} has no {FINDINGS_JSON}: give the bundle directory of a scan (the `bundle:` line \
             `certus-assurance scan` prints), written by this version",
            bundle.display()
        ),
        Err(err) => bail!("{}: {err}", bundle.display()),
    }
    if let Some(bad) = bad {
        bail!("{}/{FINDINGS_JSON}: {bad}", bundle.display());
    }
    Ok((
        json!({"version": FINDINGS_VERSION, "fingerprints": fingerprints}),
        findings,
    ))
}

/// `certus-assurance baseline`: writes the baseline of a bundle; returns the exit code.
pub fn run_baseline(args: &BaselineArgs) -> anyhow::Result<u8> {
    let (baseline, findings) = baseline_of(&args.bundle)?;
    let mut text = serde_json::to_string_pretty(&baseline)?;
    text.push('\n');
    let count = baseline["fingerprints"].as_array().map_or(0, Vec::len);
    match &args.output {
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing the baseline to standard output")?,
        Some(path) => {
            // Through a temporary file and a rename: a scan never reads half a baseline.
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            tmp.write_all(text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "certus-assurance: wrote {count} fingerprints of {findings} findings to {}",
                path.display()
            );
        }
    }
    Ok(0)
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
    use clap::CommandFactory;

    #[test]
    fn parsing_with_an_empty_environment_gives_the_defaults() {
        let command = Cli::command();
        let set: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .filter(|var| std::env::var_os(var).is_some())
            .map(|var| var.to_string_lossy().into_owned())
            .collect();
        assert!(
            set.is_empty(),
            "this test needs an environment without {set:?}; unset them to run it"
        );
        let cli = Cli::try_parse_from(["certus-assurance"]).unwrap();
        assert_eq!(
            format!("{:?}", cli.config),
            format!("{:?}", Config::defaults())
        );
        assert!(cli.config.server.listen_addr.ip().is_loopback());
    }

    #[test]
    fn a_local_pipeline_has_the_service_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = Pipeline::local(
            dir.path().join("work"),
            dir.path().join("out"),
            Arc::new(MetricsObserver::new(Metrics::new(
                &profile::PROFILE_LABELS,
                &SCANNER_NAMES,
            ))),
            vec![],
        );
        let defaults = Config::defaults();
        assert_eq!(
            pipeline.archive_limits.max_bytes,
            defaults.archive.max_extracted_bytes
        );
        assert_eq!(
            pipeline.archive_limits.max_entries,
            defaults.archive.max_files
        );
        assert_eq!(pipeline.clone_max_bytes, defaults.source.clone_max_bytes);
        assert_eq!(pipeline.clone_timeout, defaults.source.clone_timeout);
    }

    #[test]
    fn cli_errors_name_the_variable() {
        let err = Cli::try_parse_from(["certus-assurance", "--max-workers", "lots"]).unwrap_err();
        let text = explain_cli_error(err).to_string();
        assert!(text.contains("CERTUS_ASSURANCE_MAX_WORKERS"), "{text}");
        for (flag, value, var) in [
            ("--s3-max-attempts", "x", "CERTUS_ASSURANCE_S3_MAX_ATTEMPTS"),
            ("--git-schemes", "https,ftp", "CERTUS_ASSURANCE_GIT_SCHEMES"),
            ("--git-schemes", ",", "CERTUS_ASSURANCE_GIT_SCHEMES"),
            (
                "--scan-timeout-seconds",
                "ten",
                "CERTUS_ASSURANCE_SCAN_TIMEOUT_SECONDS",
            ),
            (
                "--retention-max-scans",
                "many",
                "CERTUS_ASSURANCE_RETENTION_MAX_SCANS",
            ),
        ] {
            let err = Cli::try_parse_from(["certus-assurance", flag, value]).unwrap_err();
            let text = explain_cli_error(err).to_string();
            assert!(text.contains(var), "{flag} {value}: {text}");
        }
        let err = Cli::try_parse_from([
            "certus-assurance",
            "--database-url",
            "mysql://u:hunter2@db/x",
        ])
        .unwrap_err();
        let text = explain_cli_error(err).to_string();
        assert!(text.contains("CERTUS_ASSURANCE_DATABASE_URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn upload_settings_come_from_the_environment_names() {
        let cli = Cli::try_parse_from([
            "certus-assurance",
            "--enable-s3-upload",
            "true",
            "--trust-base-url",
            "https://trust.example.com",
            "--s3-multipart-threshold-bytes",
            "5242880",
        ])
        .unwrap();
        let config = cli.config.validate().unwrap();
        assert!(config.upload.enabled);
        assert_eq!(config.upload.multipart_threshold, 5 * 1024 * 1024);
    }

    #[test]
    fn the_table_names_scanners_that_did_not_succeed() {
        let summary = json!({
            "profile": "standard",
            "findings": {"total": {"critical": 0, "high": 0, "medium": 0, "low": 0, "info": 0, "total": 0}, "by_scanner": {}},
            "policy": {"passed": false, "violations": [
                {"kind": "scanner", "scanner": "bandit", "status": "failed", "reason": "exit code 2"},
                {"kind": "threshold", "severity": "high", "count": 3, "threshold": 0}
            ]},
            "warnings": [],
        });
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        write_table(&mut out, &summary, dir.path()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("policy (standard): FAILED"), "{text}");
        assert!(
            text.contains("scanner bandit failed: exit code 2"),
            "{text}"
        );
        assert!(text.contains("high findings: 3 (allowed 0)"), "{text}");
        assert!(!text.contains("null"), "{text}");
    }

    #[test]
    fn git_urls_and_paths_are_told_apart() {
        assert!(looks_like_git_url("https://github.com/org/repo.git"));
        assert!(looks_like_git_url("git@github.com:org/repo.git"));
        assert!(!looks_like_git_url("./src"));
        assert!(!looks_like_git_url("/srv/code"));
        assert_eq!(component_name("https://github.com/org/repo.git"), "repo");
        assert_eq!(component_name("/srv/my code/"), "my-code");
    }

    /// A bundle whose reports/findings.json holds `findings` (the shape the pipeline writes).
    fn bundle_with(findings: Vec<Value>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("reports")).unwrap();
        let doc = json!({"version": 1, "test_id": "test_0123456789ab", "findings": findings});
        std::fs::write(dir.path().join(FINDINGS_JSON), doc.to_string()).unwrap();
        dir
    }

    fn finding(n: u64, severity: &str, suppressed: bool, snippet: &str) -> Value {
        json!({
            "id": n, "fingerprint": format!("{n:064x}"),
            "fingerprints": [format!("{n:064x}"), format!("{:064x}", n + 1000)],
            "rule_id": "generic-secret", "rules": {"secrets": "generic-secret"},
            "severity": severity, "message": "a secret", "path": format!("app/f{n}.py"),
            "line": n, "column": 0, "snippet": snippet, "scanners": ["detect-secrets", "secrets"],
            "suppressed": suppressed, "suppression": null,
        })
    }

    #[test]
    fn the_policy_table_lists_breaking_findings_masked_and_bounded() {
        let secret = "ghp_R7xQ2mVt9LkP4sW8nB3cY6dF1hJ5gZ0aE2uK";
        let mut findings = vec![
            finding(1, "high", false, &format!("token = \"{secret}\"\u{1b}[2J")),
            finding(2, "high", true, "suppressed = 1"),
            finding(3, "low", false, "low = 1"),
        ];
        findings.extend((4..=56).map(|n| finding(n, "high", false, "")));
        let bundle = bundle_with(findings);
        let policy = json!({"passed": false, "violations": [{"severity": "high", "count": 54, "threshold": 0}]});
        let mut out = Vec::new();
        write_policy_findings(&mut out, &policy, bundle.path()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("findings that break the policy (54):"),
            "{text}"
        );
        assert!(text.contains("app/f1.py:1 "), "{text}");
        assert!(text.contains("detect-secrets,secrets"), "{text}");
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains('\u{1b}'), "no terminal escapes: {text}");
        assert!(
            !text.contains("app/f2.py"),
            "suppressed findings are not listed"
        );
        assert!(!text.contains("app/f3.py"), "low is within its threshold");
        // A finding without a snippet shows its message.
        assert!(text.contains("a secret"), "{text}");
        let rows = text.lines().filter(|l| l.contains("app/f")).count();
        assert_eq!(rows, POLICY_TABLE_ROWS);
        assert!(text.contains("… and 4 more"), "{text}");

        // A passing policy, or a bundle without findings.json, lists nothing / says so.
        let mut out = Vec::new();
        write_policy_findings(
            &mut out,
            &json!({"passed": true, "violations": []}),
            bundle.path(),
        )
        .unwrap();
        assert!(out.is_empty());
        let empty = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        write_policy_findings(&mut out, &policy, empty.path()).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("has no reports/findings.json"));
    }

    #[test]
    fn a_baseline_holds_every_fingerprint_once_sorted() {
        let bundle = bundle_with(vec![
            finding(2, "high", false, ""),
            finding(1, "low", true, ""),
            finding(2, "high", false, ""),
        ]);
        let (baseline, findings) = baseline_of(bundle.path()).unwrap();
        assert_eq!(findings, 3);
        assert_eq!(baseline["version"], 1);
        let fps: Vec<String> = baseline["fingerprints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        let mut expected: Vec<String> = [1u64, 2, 1001, 1002]
            .iter()
            .map(|n| format!("{n:064x}"))
            .collect();
        expected.sort();
        assert_eq!(fps, expected, "suppressed ones included, sorted, unique");

        let mut bad = finding(1, "high", false, "");
        bad["fingerprint"] = json!("AKIA-not-a-digest");
        let err = baseline_of(bundle_with(vec![bad]).path()).unwrap_err();
        assert!(err.to_string().contains("finding 1"), "{err}");
        let err = baseline_of(tempfile::tempdir().unwrap().path()).unwrap_err();
        assert!(
            err.to_string().contains("has no reports/findings.json"),
            "{err}"
        );
    }

    #[test]
    fn sarif_output_is_the_bundle_merged_log_when_there_is_one() {
        let bundle = tempfile::tempdir().unwrap();
        let run = |tool: &str| json!({"tool": {"driver": {"name": tool}}, "results": []});
        crate::pipeline::bundle::artifacts::write_json(
            bundle.path(),
            &crate::pipeline::bundle::artifacts::sarif_path("secrets"),
            &json!({"version": "2.1.0", "runs": [run("secrets")]}),
        )
        .unwrap();
        let written = |bundle: &Path| {
            let mut out = Vec::new();
            write_sarif(&mut out, bundle).unwrap();
            serde_json::from_slice::<Value>(&out).unwrap()
        };
        // Without findings.sarif.json: the per-scanner reports merged.
        assert_eq!(written(bundle.path())["runs"], json!([run("secrets")]));
        let merged = json!({"version": "2.1.0", "runs": [run("secrets"), run("bandit")]});
        crate::pipeline::bundle::artifacts::write_json(bundle.path(), FINDINGS_SARIF, &merged)
            .unwrap();
        assert_eq!(written(bundle.path()), merged);
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
