//! One scan run in a temporary workspace: checkout, scanners, artifact bundle. Progress goes to
//! a [`ProgressSink`] the caller hands in; the result is a [`ScanReport`] or a [`ScanFailure`].
//! The pipeline never reads or writes job records and does not know jobs exist.

pub mod archive;
pub mod artifacts;
pub mod attestation;
pub mod checkout;
pub mod egress;
pub mod findings;
pub mod local_source;
pub mod osv;
pub mod profile;
pub mod redact;
pub mod sarif;
pub mod sbom;
pub mod scanners;
pub mod source;
pub mod tools;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;

use crate::metrics::Metrics;
use checkout::{Checkout, CloneError, CloneSpec};
use profile::{PolicyVerdict, Profile, SeverityCounts};
use scanners::{ScanContext, Scanner};
use source::{GitUrl, SourcePolicy};

/// One event of a scan's progress, as sent on the WebSocket stream (`type` is the tag).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScanEvent {
    Phase {
        phase: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
    },
    ToolStart {
        tool: String,
    },
    Log {
        tool: String,
        stream: String,
        line: String,
    },
    ToolComplete {
        tool: String,
        /// `succeeded`, `failed` or `skipped`.
        status: String,
        /// The tool's exit code; absent when the tool did not run (skipped) or has none.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        findings: u64,
    },
    FindingSummary {
        counts: SeverityCounts,
        by_scanner: BTreeMap<String, SeverityCounts>,
        policy_passed: bool,
    },
    Error {
        message: String,
    },
    /// The terminal event; emitted by the job engine once the outcome is recorded.
    ScanComplete {
        status: String,
        manifest_digest: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure_reason: Option<String>,
        /// Bundle file paths relative to the scan's artifact directory.
        bundle: Vec<String>,
    },
}

impl ScanEvent {
    fn tool_complete(tool: &str, status: &str, exit_code: Option<i32>, findings: u64) -> Self {
        ScanEvent::ToolComplete {
            tool: tool.to_string(),
            status: status.to_string(),
            exit_code,
            findings,
        }
    }

    /// Log lines may be dropped from bounded histories; every other event is kept.
    pub fn is_droppable(&self) -> bool {
        matches!(self, ScanEvent::Log { .. })
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, ScanEvent::ScanComplete { .. })
    }
}

/// Where a running scan reports progress. Called from async code only.
pub trait ProgressSink: Send + Sync {
    fn emit(&self, event: ScanEvent);
}

/// Where the tree to scan comes from.
#[derive(Debug, Clone)]
pub enum ScanSource {
    /// Cloned into the scan's workspace.
    Git {
        url: GitUrl,
        branch: Option<String>,
        commit: Option<String>,
    },
    /// A directory on the server, scanned in place (read only).
    Directory {
        /// As submitted (shown in `scan.json`).
        requested: String,
    },
    /// An archive stored by `upload-archive`, unpacked into the workspace.
    Archive {
        /// As submitted (`uploads/<sha256>.<ext>`).
        archive_path: String,
    },
}

impl ScanSource {
    pub fn type_name(&self) -> &'static str {
        match self {
            ScanSource::Git { .. } => "git",
            ScanSource::Directory { .. } => "directory",
            ScanSource::Archive { .. } => "archive",
        }
    }
}

/// What to scan and under which profile.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    pub test_id: String,
    pub workspace_id: String,
    pub component_id: String,
    pub assessment_id: String,
    pub requested_by: Option<String>,
    pub source: ScanSource,
    pub profile: Profile,
    pub manifest_digest: String,
    /// A manifest file inside the tree (relative path) that selects or overrides the profile.
    pub manifest_path: Option<String>,
    /// The scan's time limit; external tools are stopped when it runs out.
    pub timeout: Duration,
    /// Every scanner must succeed for the policy to pass (the profile's `optional` is ignored).
    pub strict: bool,
    /// A baseline file outside the tree (the CLI's `--baseline FILE`).
    pub baseline_file: Option<PathBuf>,
    pub submitted_at: f64,
}

/// What identifies the exact content a scan saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// `git_commit`, `directory_sha256` or `archive_sha256`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The commit id, or `sha256:<hex>` of the directory content or of the archive.
    pub id: String,
}

/// A finished, trustworthy scan.
#[derive(Debug, Clone)]
pub struct ScanReport {
    pub provenance: Provenance,
    /// The profile that ran (a `manifest_path` may have changed it).
    pub profile: Profile,
    pub manifest_digest: String,
    pub summary: serde_json::Value,
    pub policy: PolicyVerdict,
    pub artifacts: Vec<String>,
}

/// Why the pipeline could not produce a trustworthy result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    CloneFailed,
    SourceInvalid,
    ScannerFailed,
    Cancelled,
    Internal,
}

#[derive(Debug, Clone)]
pub struct ScanFailure {
    pub kind: FailureKind,
    /// What went wrong and what to do; free of credentials and server paths.
    pub message: String,
}

impl ScanFailure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        ScanFailure {
            kind,
            message: message.into(),
        }
    }

    fn internal(err: anyhow::Error) -> Self {
        tracing::error!(error = ?err, "scan pipeline failed");
        if crate::error::is_disk_full(&err) {
            return ScanFailure::new(
                FailureKind::Internal,
                "the server's disk is full: the scan's results could not be written to the \
                 artifact directory (CERTUS_ASSURANCE_ARTIFACT_ROOT) or its workspace \
                 (CERTUS_ASSURANCE_DATA_DIR); free space there (or delete old scans), then \
                 submit the scan again",
            );
        }
        ScanFailure::new(
            FailureKind::Internal,
            "the service could not write the scan's results; see the server log",
        )
    }
}

/// `text` (a libgit2 message, which names the files it failed on) without the server path of
/// the scan's workspace.
fn scrub_workspace(text: &str, workspace: &Path) -> String {
    match workspace.to_str() {
        Some(path) if !path.is_empty() => text.replace(path, "<workspace>"),
        _ => text.to_string(),
    }
}

/// Whether an error message (libgit2 only hands back text) is the OS saying the disk is full.
fn is_disk_full_message(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Disk quota exceeded")
}

/// Everything a scan run needs from the service, built once at start-up.
#[derive(Clone)]
pub struct Pipeline {
    /// Parent of the per-scan temporary workspaces.
    pub work_root: PathBuf,
    /// Parent of the per-scan bundles.
    pub artifact_root: PathBuf,
    pub clone_timeout: Duration,
    pub clone_max_bytes: u64,
    pub source_policy: SourcePolicy,
    /// Resolves git hosts when a clone connects (the system resolver outside tests).
    pub resolver: Arc<dyn egress::Resolver>,
    pub ssh_key: Option<PathBuf>,
    pub metrics: Metrics,
    pub scanners: Arc<Vec<Arc<dyn Scanner>>>,
    /// Canonical directories that `directory` scans may read.
    pub source_roots: Arc<Vec<PathBuf>>,
    /// Where `upload-archive` stores archives (`<dir>/<sha256>.<ext>`).
    pub upload_dir: PathBuf,
    pub archive_limits: archive::Limits,
    /// Signs the attestation when set.
    pub signing_key: Option<attestation::AttestationKey>,
    /// `PATH` external tools are looked up on.
    pub tool_path: Option<std::ffi::OsString>,
}

/// The built-in scanners of this build, without an OSV database.
pub fn builtin_scanners() -> Vec<Arc<dyn Scanner>> {
    builtin_scanners_with(None)
}

/// The built-in scanners; `osv` is the vulnerability database, if one is configured.
pub fn builtin_scanners_with(osv: Option<Arc<osv::OsvStore>>) -> Vec<Arc<dyn Scanner>> {
    vec![
        Arc::new(scanners::secrets::SecretsScanner::new()),
        Arc::new(scanners::sbom::SbomScanner),
        Arc::new(scanners::vulnerabilities::VulnerabilityScanner::new(osv)),
    ]
}

/// Names of every scanner this build knows, built in and external (the `scanner` label values).
pub const BUILTIN_SCANNERS: [&str; 10] = [
    "secrets",
    "sbom",
    "vulnerabilities",
    "bandit",
    "semgrep",
    "detect-secrets",
    "ruff",
    "gitleaks",
    "trivy",
    "osv-scanner",
];

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Forwards events to the sink and appends a line per event to `logs/runner.log`.
struct Reporter {
    sink: Arc<dyn ProgressSink>,
    log: Mutex<Option<std::fs::File>>,
}

impl Reporter {
    fn emit(&self, event: ScanEvent) {
        let line = match &event {
            ScanEvent::Phase { phase, message, .. } => format!("[{phase}] {message}"),
            ScanEvent::ToolStart { tool } => format!("[{tool}] started"),
            ScanEvent::Log { tool, stream, line } => format!("[{tool}:{stream}] {line}"),
            ScanEvent::ToolComplete {
                tool,
                status,
                exit_code,
                findings,
            } => match exit_code {
                Some(code) => {
                    format!("[{tool}] {status} (exit code {code}), {findings} findings")
                }
                None => format!("[{tool}] {status}, {findings} findings"),
            },
            ScanEvent::FindingSummary {
                counts,
                policy_passed,
                ..
            } => format!(
                "[summary] {} findings (critical {}, high {}, medium {}, low {}); policy {}",
                counts.total,
                counts.critical,
                counts.high,
                counts.medium,
                counts.low,
                if *policy_passed { "passed" } else { "failed" }
            ),
            ScanEvent::Error { message } => format!("[error] {message}"),
            ScanEvent::ScanComplete { status, .. } => format!("[complete] {status}"),
        };
        if let Some(file) = self.log.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let stamp = humantime::format_rfc3339_millis(SystemTime::now());
            // The runner log is best effort: a full disk must not turn into a second failure.
            let _ = writeln!(file, "{stamp} {line}");
        }
        self.sink.emit(event);
    }

    fn phase(&self, phase: &str, message: String) {
        self.emit(ScanEvent::Phase {
            phase: phase.to_string(),
            message,
            commit: None,
            branch: None,
        });
    }
}

/// How one scanner run ended, for `scan.json`, `summary.json`, the scan resource and the policy.
struct ScannerRecord {
    name: String,
    kind: &'static str,
    /// `succeeded`, `failed` or `skipped`.
    status: &'static str,
    reason: Option<String>,
    duration_seconds: f64,
    /// Severity counts of a run that produced findings (an incomplete run too).
    counts: Option<SeverityCounts>,
    /// Scanner-specific fields (`exit_code`, `reports`, `files_scanned`, ...).
    extra: serde_json::Value,
}

impl ScannerRecord {
    fn new(
        name: &str,
        kind: &'static str,
        status: &'static str,
        reason: Option<String>,
        duration_seconds: f64,
    ) -> ScannerRecord {
        ScannerRecord {
            name: name.to_string(),
            kind,
            status,
            reason,
            duration_seconds,
            counts: None,
            extra: json!({}),
        }
    }

    /// The `scanners` entry (contract: name, kind, status, reason, required, duration_seconds,
    /// findings), plus the scanner-specific fields.
    fn entry(&self, required: bool) -> serde_json::Value {
        let mut entry = json!({
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "reason": self.reason,
            "required": required,
            "duration_seconds": self.duration_seconds,
            "findings": self.counts.as_ref().map(|c| c.total).unwrap_or(0),
        });
        if let (Some(entry), Some(extra)) = (entry.as_object_mut(), self.extra.as_object()) {
            for (k, v) in extra {
                entry.insert(k.clone(), v.clone());
            }
        }
        entry
    }
}

impl Pipeline {
    /// The bundle directory of one scan.
    pub fn artifact_dir(&self, test_id: &str) -> PathBuf {
        self.artifact_root.join(test_id)
    }

    /// A pipeline for a one-off local run (the `scan` command): everything under `work_root`.
    pub fn local(
        work_root: PathBuf,
        artifact_root: PathBuf,
        metrics: Metrics,
        scanners: Vec<Arc<dyn Scanner>>,
    ) -> Pipeline {
        let source_defaults = crate::config::SourceConfig::default();
        let archive_defaults = crate::config::ArchiveConfig::default();
        Pipeline {
            upload_dir: work_root.join("uploads"),
            work_root,
            artifact_root,
            clone_timeout: source_defaults.clone_timeout,
            clone_max_bytes: source_defaults.clone_max_bytes,
            source_policy: SourcePolicy::OPEN,
            resolver: Arc::new(egress::SystemResolver),
            ssh_key: None,
            metrics,
            scanners: Arc::new(scanners),
            source_roots: Arc::new(vec![]),
            archive_limits: archive::Limits {
                max_bytes: archive_defaults.max_extracted_bytes,
                max_entries: archive_defaults.max_files,
            },
            signing_key: None,
            tool_path: crate::config::passthrough_env("PATH"),
        }
    }

    /// Runs one scan. The temporary workspace is removed whatever happens (success, failure,
    /// cancellation, or a panic unwinding through here).
    pub async fn run(
        &self,
        spec: &ScanSpec,
        sink: Arc<dyn ProgressSink>,
        cancel: Arc<AtomicBool>,
    ) -> Result<ScanReport, ScanFailure> {
        let bundle_dir = self.artifact_dir(&spec.test_id);
        prepare_bundle_dir(&bundle_dir).map_err(ScanFailure::internal)?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(bundle_dir.join(artifacts::RUNNER_LOG))
            .ok();
        let reporter = Arc::new(Reporter {
            sink,
            log: Mutex::new(log_file),
        });
        std::fs::create_dir_all(&self.work_root)
            .with_context(|| format!("creating the work directory {}", self.work_root.display()))
            .map_err(ScanFailure::internal)?;
        let workspace = tempfile::Builder::new()
            .prefix(&format!("{}-", spec.test_id))
            .tempdir_in(&self.work_root)
            .context("creating the scan workspace")
            .map_err(ScanFailure::internal)?;
        let result = self
            .run_in(spec, &reporter, &cancel, workspace.path(), &bundle_dir)
            .await;
        if let Err(failure) = &result {
            reporter.emit(ScanEvent::Error {
                message: failure.message.clone(),
            });
        }
        let workspace_path = workspace.path().to_path_buf();
        // Removing a large checkout is blocking work too.
        let _ = tokio::task::spawn_blocking(move || drop(workspace)).await;
        debug_assert!(!workspace_path.exists());
        result
    }

    /// Phase 1: makes the tree available. Returns its root and provenance, plus what
    /// `scan.json` says about the source.
    async fn prepare_source(
        &self,
        spec: &ScanSpec,
        reporter: &Arc<Reporter>,
        cancel: &Arc<AtomicBool>,
        workspace: &Path,
    ) -> Result<(PathBuf, Provenance, serde_json::Value), ScanFailure> {
        match &spec.source {
            ScanSource::Git {
                url,
                branch,
                commit,
            } => {
                reporter.phase(
                    "clone",
                    format!(
                        "Cloning {}{}",
                        url.display_url,
                        branch
                            .as_ref()
                            .map(|b| format!(" (branch {b})"))
                            .unwrap_or_default()
                    ),
                );
                let checkout_dir = workspace.join("src");
                let (result, lines) = {
                    let this = self.clone();
                    let (url, branch, commit) = (url.clone(), branch.clone(), commit.clone());
                    let cancel = cancel.clone();
                    let dest = checkout_dir.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut lines = Vec::new();
                        let clone_spec = CloneSpec {
                            url: &url,
                            branch: branch.as_deref(),
                            commit: commit.as_deref(),
                            timeout: this.clone_timeout,
                            max_bytes: this.clone_max_bytes,
                            policy: this.source_policy,
                            ssh_key: this.ssh_key.as_deref(),
                            cancel: &cancel,
                            resolver: this.resolver.clone(),
                        };
                        let result =
                            checkout::clone_repository(&clone_spec, &dest, &mut |l| lines.push(l));
                        (result, lines)
                    })
                    .await
                    .map_err(|e| {
                        ScanFailure::new(
                            FailureKind::Internal,
                            format!("the clone task failed: {e}"),
                        )
                    })?
                };
                for line in lines {
                    reporter.emit(ScanEvent::Log {
                        tool: "git".into(),
                        stream: "stderr".into(),
                        line: scrub_workspace(&line, workspace),
                    });
                }
                let checkout: Checkout = match result {
                    Ok(c) => c,
                    Err(CloneError::Cancelled) => {
                        return Err(ScanFailure::new(
                            FailureKind::Cancelled,
                            "cancelled during clone",
                        ))
                    }
                    Err(CloneError::Invalid(m)) => {
                        return Err(ScanFailure::new(
                            FailureKind::SourceInvalid,
                            scrub_workspace(&m, workspace),
                        ))
                    }
                    Err(CloneError::Failed(m)) if is_disk_full_message(&m) => {
                        return Err(ScanFailure::new(
                            FailureKind::CloneFailed,
                            "the server's disk is full: the clone could not be written to the \
                             scan's workspace (under CERTUS_ASSURANCE_DATA_DIR); free space there, \
                             then submit the scan again",
                        ))
                    }
                    Err(CloneError::Failed(m)) => {
                        return Err(ScanFailure::new(
                            FailureKind::CloneFailed,
                            scrub_workspace(&m, workspace),
                        ))
                    }
                };
                reporter.emit(ScanEvent::Phase {
                    phase: "clone".into(),
                    message: format!(
                        "Checked out {}{}",
                        checkout.commit,
                        checkout
                            .branch
                            .as_ref()
                            .map(|b| format!(" on {b}"))
                            .unwrap_or_default()
                    ),
                    commit: Some(checkout.commit.clone()),
                    branch: checkout.branch.clone(),
                });
                let provenance = Provenance {
                    kind: "git_commit",
                    id: checkout.commit.clone(),
                };
                let source = json!({
                    "type": "git",
                    "git_url": url.display_url,
                    "branch": branch,
                    "commit": commit,
                    "resolved_commit": checkout.commit,
                    "resolved_branch": checkout.branch,
                    "provenance_id": provenance.id,
                });
                Ok((checkout_dir, provenance, source))
            }
            ScanSource::Directory { requested } => {
                reporter.phase("clone", format!("Reading the directory {requested}"));
                // Checked again at run time: the tree may have changed since the submission.
                let root = local_source::resolve_directory(requested, &self.source_roots)
                    .map_err(|m| ScanFailure::new(FailureKind::SourceInvalid, m))?;
                let digest = {
                    let root = root.clone();
                    let cancel = cancel.clone();
                    tokio::task::spawn_blocking(move || {
                        local_source::hash_directory(&root, &cancel)
                    })
                    .await
                    .map_err(|e| {
                        ScanFailure::new(FailureKind::Internal, format!("hashing failed: {e}"))
                    })?
                };
                let digest = match digest {
                    Ok(d) => d,
                    Err(_) if cancel.load(Ordering::Relaxed) => {
                        return Err(ScanFailure::new(
                            FailureKind::Cancelled,
                            "cancelled while reading the directory",
                        ))
                    }
                    Err(e) => {
                        return Err(ScanFailure::new(
                            FailureKind::SourceInvalid,
                            format!("the directory could not be read completely: {e}"),
                        ))
                    }
                };
                reporter.phase(
                    "clone",
                    format!(
                        "Directory content {} ({} files, {} bytes)",
                        digest.id, digest.files, digest.bytes
                    ),
                );
                let provenance = Provenance {
                    kind: "directory_sha256",
                    id: digest.id.clone(),
                };
                let source = json!({
                    "type": "directory",
                    "directory_path": requested,
                    "files": digest.files,
                    "bytes": digest.bytes,
                    "provenance_id": provenance.id,
                });
                Ok((root, provenance, source))
            }
            ScanSource::Archive { archive_path } => {
                let (file, sha256, format) = stored_archive(&self.upload_dir, archive_path)
                    .map_err(|m| ScanFailure::new(FailureKind::SourceInvalid, m))?;
                reporter.phase(
                    "clone",
                    format!(
                        "Unpacking the {} archive sha256:{sha256}",
                        format.extension()
                    ),
                );
                let dest = workspace.join("src");
                std::fs::create_dir_all(&dest)
                    .context("creating the extraction directory")
                    .map_err(ScanFailure::internal)?;
                let stats = {
                    let dest = dest.clone();
                    let cancel = cancel.clone();
                    let limits = self.archive_limits;
                    tokio::task::spawn_blocking(move || {
                        archive::extract(&file, format, &dest, limits, &cancel)
                    })
                    .await
                    .map_err(|e| {
                        ScanFailure::new(FailureKind::Internal, format!("extraction failed: {e}"))
                    })?
                };
                let stats = match stats {
                    Ok(s) => s,
                    Err(archive::ArchiveError::Cancelled) => {
                        return Err(ScanFailure::new(
                            FailureKind::Cancelled,
                            "cancelled while unpacking the archive",
                        ))
                    }
                    Err(e) => {
                        return Err(ScanFailure::new(
                            FailureKind::SourceInvalid,
                            format!("the archive was refused: {e}"),
                        ))
                    }
                };
                reporter.phase(
                    "clone",
                    format!("Unpacked {} files, {} bytes", stats.files, stats.bytes),
                );
                let provenance = Provenance {
                    kind: "archive_sha256",
                    id: format!("sha256:{sha256}"),
                };
                let source = json!({
                    "type": "archive",
                    "archive_path": archive_path,
                    "format": format.extension(),
                    "files": stats.files,
                    "bytes": stats.bytes,
                    "provenance_id": provenance.id,
                });
                Ok((dest, provenance, source))
            }
        }
    }

    async fn run_in(
        &self,
        spec: &ScanSpec,
        reporter: &Arc<Reporter>,
        cancel: &Arc<AtomicBool>,
        workspace: &Path,
        bundle_dir: &Path,
    ) -> Result<ScanReport, ScanFailure> {
        let cancelled = || cancel.load(Ordering::Relaxed);
        let started_at = now_secs();
        let deadline = Instant::now() + spec.timeout;

        // Phase 1: the source.
        let phase_start = Instant::now();
        let phase_span = open_phase_span("clone");
        let prepared = self
            .prepare_source(spec, reporter, cancel, workspace)
            .instrument(phase_span.clone())
            .await;
        if prepared.is_err() {
            phase_span.record("otel.status_code", "error");
        }
        drop(phase_span);
        self.metrics
            .scan_phase_duration_seconds
            .with_label_values(&["clone"])
            .observe(phase_start.elapsed().as_secs_f64());
        let (source_root, provenance, source_json) = prepared?;
        if cancelled() {
            return Err(ScanFailure::new(
                FailureKind::Cancelled,
                "cancelled after the source was prepared",
            ));
        }
        let (profile, manifest_digest) = match &spec.manifest_path {
            None => (spec.profile.clone(), spec.manifest_digest.clone()),
            Some(rel) => {
                let profile = load_tree_manifest(&source_root, rel, &spec.profile.name)
                    .map_err(|m| ScanFailure::new(FailureKind::SourceInvalid, m))?;
                let digest = profile.manifest_digest();
                reporter.phase(
                    "clone",
                    format!(
                        "Manifest {rel} selects profile `{}` ({digest})",
                        profile.name
                    ),
                );
                (profile, digest)
            }
        };
        let mut profile = profile;
        if spec.strict {
            // Strict mode: the gate holds every scanner to success, whatever the profile says.
            profile.optional.clear();
        }
        let mut warnings: Vec<String> = Vec::new();
        if !profile.unsupported_manifest_tools.is_empty() {
            warnings.push(format!(
                "the manifest names tools this service has no scanner for, not run: {}",
                profile.unsupported_manifest_tools.join(", ")
            ));
        }
        let suppression_rules = {
            let root = source_root.clone();
            let exclude = profile.exclude.clone();
            let baseline_path = profile.baseline_path.clone();
            let baseline_file = spec.baseline_file.clone();
            let mut load_warnings = Vec::new();
            let rules = tokio::task::spawn_blocking(move || {
                findings::SuppressionRules::load(
                    &root,
                    &exclude,
                    baseline_path.as_deref(),
                    baseline_file.as_deref(),
                    &mut load_warnings,
                )
                .map(|r| (r, load_warnings))
            })
            .await
            .map_err(|e| ScanFailure::internal(anyhow::anyhow!("suppression task failed: {e}")))?
            .map_err(|m| ScanFailure::new(FailureKind::SourceInvalid, m))?;
            warnings.extend(rules.1);
            rules.0
        };

        // Phase 2: scanners.
        let phase_start = Instant::now();
        let phase = open_phase_span("scan");
        reporter.phase("scan", format!("Running profile `{}`", profile.name));
        let mut by_scanner = BTreeMap::new();
        let mut scanner_runs = Vec::new();
        let mut problems = Vec::new();
        let shared = Arc::new(
            scanners::SharedFacts::new(spec.component_id.clone(), spec.test_id.clone())
                .with_excludes(profile.exclude.clone()),
        );
        let scratch = workspace.join("tools");
        for name in &profile.scanners {
            let span = tracing::info_span!(
                parent: &phase,
                "scanner",
                otel.name = %format!("scanner {name}"),
                otel.status_code = tracing::field::Empty,
                scanner.name = %name,
                scanner.outcome = tracing::field::Empty,
                scanner.findings = tracing::field::Empty,
            );
            let record = async {
                if let Some(scanner) = self.scanners.iter().find(|s| s.name() == name).cloned() {
                    self.run_builtin(
                        scanner,
                        &source_root,
                        &shared,
                        reporter,
                        cancel,
                        bundle_dir,
                        &mut warnings,
                    )
                    .await
                } else if let Some(tool) = tools::spec(name) {
                    let run = tools::ToolRun {
                        source: &source_root,
                        scratch: &scratch,
                        path: self.tool_path.clone(),
                        deadline,
                        cancel,
                    };
                    let required = profile.required.iter().any(|r| r == name);
                    self.run_external(tool, &run, required, reporter, bundle_dir, &mut warnings)
                        .await
                } else {
                    Err(ScanFailure::new(
                        FailureKind::ScannerFailed,
                        format!(
                            "scanner `{name}` of profile `{}` is not available in this build",
                            profile.name
                        ),
                    ))
                }
            }
            .instrument(span.clone())
            .await;
            match &record {
                Ok(r) => {
                    // The span keeps the metric's outcome values (success, failure, skipped).
                    let outcome = match r.status {
                        "succeeded" => "success",
                        "failed" => "failure",
                        other => other,
                    };
                    span.record("scanner.outcome", outcome);
                    if let Some(counts) = &r.counts {
                        span.record("scanner.findings", counts.total);
                    }
                }
                Err(_) => {
                    span.record("scanner.outcome", "failure");
                    span.record("otel.status_code", "error");
                }
            }
            drop(span);
            let record = record?;
            if let Some(counts) = &record.counts {
                for sev in scanners::Severity::ALL {
                    let n = counts.get(sev);
                    if n > 0 {
                        self.metrics
                            .findings_total
                            .with_label_values(&[sev.as_str(), name])
                            .inc_by(n);
                    }
                }
                by_scanner.insert(name.clone(), counts.clone());
            }
            if record.status != "succeeded" {
                problems.push(profile::ScannerProblem {
                    scanner: name.clone(),
                    status: record.status.to_string(),
                    reason: record.reason.clone().unwrap_or_default(),
                });
            }
            scanner_runs.push(record.entry(!profile.is_optional(name)));
            if cancelled() {
                return Err(ScanFailure::new(
                    FailureKind::Cancelled,
                    "cancelled between scanners",
                ));
            }
        }
        self.metrics
            .scan_phase_duration_seconds
            .with_label_values(&["scan"])
            .observe(phase_start.elapsed().as_secs_f64());
        drop(phase);

        // Phase 3: bundle.
        let phase_start = Instant::now();
        let phase_span = open_phase_span("bundle");
        let merged = {
            let root = source_root.clone();
            let dir = bundle_dir.to_path_buf();
            let test_id = spec.test_id.clone();
            let names = profile.scanners.clone();
            tokio::task::spawn_blocking(move || {
                findings::process(&root, &dir, &test_id, &names, &suppression_rules)
            })
            .instrument(phase_span.clone())
            .await
            .map_err(|e| ScanFailure::internal(anyhow::anyhow!("findings task failed: {e}")))?
            .map_err(ScanFailure::internal)?
        };
        for (kind, n) in &merged.suppressed {
            self.metrics
                .findings_suppressed_total
                .with_label_values(&[kind])
                .inc_by(*n);
        }
        let totals = merged.counts.clone();
        let policy = profile.evaluate(&totals, &problems);
        reporter.emit(ScanEvent::FindingSummary {
            counts: totals.clone(),
            by_scanner: by_scanner.clone(),
            policy_passed: policy.passed,
        });
        reporter.phase("bundle", "Writing the artifact bundle".into());
        let summary = json!({
            "test_id": spec.test_id,
            "profile": profile.name,
            "manifest_digest": manifest_digest,
            "commit": source_json.get("resolved_commit"),
            "branch": source_json.get("resolved_branch"),
            "provenance": provenance,
            "findings": {
                "total": totals,
                "by_scanner": by_scanner,
                "suppressed": merged.suppressed_json(),
            },
            "policy": policy,
            "scanners": scanner_runs,
            "unsupported_manifest_tools": profile.unsupported_manifest_tools,
            "strict": spec.strict,
            "warnings": warnings,
        });
        let scan_json = json!({
            "test_id": spec.test_id,
            "workspace_id": spec.workspace_id,
            "component_id": spec.component_id,
            "assessment_id": spec.assessment_id,
            "requested_by": spec.requested_by,
            "source": source_json,
            "provenance": provenance,
            "profile": profile,
            "manifest_digest": manifest_digest,
            "manifest_path": spec.manifest_path,
            "submitted_at": spec.submitted_at,
            "started_at": started_at,
            "finished_at": now_secs(),
            "service": { "name": "certus-assurance", "version": env!("CARGO_PKG_VERSION"), "revision": crate::BUILD_REVISION },
            "scanners": scanner_runs,
            "unsupported_manifest_tools": profile.unsupported_manifest_tools,
            "strict": spec.strict,
            "warnings": warnings,
        });
        let predicate = json!({
            "test_id": spec.test_id,
            "workspace_id": spec.workspace_id,
            "component_id": spec.component_id,
            "assessment_id": spec.assessment_id,
            "source": source_json,
            "provenance": provenance,
            "profile": profile.name,
            "manifest_digest": manifest_digest,
            "policy": { "passed": policy.passed, "violations": policy.violations },
            "findings": totals,
            "service": { "name": "certus-assurance", "version": env!("CARGO_PKG_VERSION"), "revision": crate::BUILD_REVISION },
            "finished_at": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        });
        let dir = bundle_dir.to_path_buf();
        let key = self.signing_key.clone();
        let written_summary = summary.clone();
        let artifacts = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            artifacts::write_json(&dir, artifacts::SUMMARY_JSON, &written_summary)?;
            artifacts::write_json(&dir, artifacts::SCAN_JSON, &scan_json)?;
            attestation::write(&dir, predicate, key.as_ref())?;
            let mut files = artifacts::list_files(&dir)?;
            // stream.jsonl is completed by the job engine after the terminal event.
            if !files.iter().any(|f| f == artifacts::STREAM_JSONL) {
                files.push(artifacts::STREAM_JSONL.to_string());
                files.sort();
            }
            Ok(files)
        })
        .instrument(phase_span.clone())
        .await
        .map_err(|e| ScanFailure::internal(anyhow::anyhow!("bundle task failed: {e}")))?
        .map_err(ScanFailure::internal)?;
        drop(phase_span);
        self.metrics
            .scan_phase_duration_seconds
            .with_label_values(&["bundle"])
            .observe(phase_start.elapsed().as_secs_f64());
        Ok(ScanReport {
            provenance,
            profile,
            manifest_digest,
            summary,
            policy,
            artifacts,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_builtin(
        &self,
        scanner: Arc<dyn Scanner>,
        source_root: &Path,
        shared: &Arc<scanners::SharedFacts>,
        reporter: &Arc<Reporter>,
        cancel: &Arc<AtomicBool>,
        bundle_dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<ScannerRecord, ScanFailure> {
        let name = scanner.name().to_string();
        let cancelled = || cancel.load(Ordering::Relaxed);
        reporter.emit(ScanEvent::ToolStart { tool: name.clone() });
        let tool_start = Instant::now();
        let source = source_root.to_path_buf();
        let flag = cancel.clone();
        let shared = shared.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let reports = scanners::SideReports::default();
            let output = scanner.run(&ScanContext {
                source_root: &source,
                cancel: &flag,
                shared: &shared,
                reports: &reports,
            });
            output.map(|o| (o, reports))
        })
        .await;
        let elapsed = tool_start.elapsed().as_secs_f64();
        let (output, reports) = match outcome {
            Ok(Ok(output)) => output,
            Ok(Err(_)) | Err(_) if cancelled() => {
                return Err(ScanFailure::new(
                    FailureKind::Cancelled,
                    format!("cancelled while `{name}` ran"),
                ))
            }
            Ok(Err(err)) => {
                self.record_scanner(&name, "failure", elapsed);
                reporter.emit(ScanEvent::tool_complete(&name, "failed", Some(1), 0));
                return Err(ScanFailure::new(
                    FailureKind::ScannerFailed,
                    format!("scanner `{name}` failed: {err:#}"),
                ));
            }
            Err(join) => {
                self.record_scanner(&name, "failure", elapsed);
                tracing::error!(scanner = %name, error = %join, "scanner panicked");
                reporter.emit(ScanEvent::tool_complete(&name, "failed", Some(101), 0));
                return Err(ScanFailure::new(
                    FailureKind::ScannerFailed,
                    format!("scanner `{name}` crashed"),
                ));
            }
        };
        let own_warnings = reports.take_warnings();
        for w in &own_warnings {
            reporter.emit(ScanEvent::Log {
                tool: name.clone(),
                stream: "warning".into(),
                line: w.clone(),
            });
        }
        warnings.extend(own_warnings);
        if let Some(reason) = reports.skipped() {
            self.record_scanner(&name, "skipped", elapsed);
            reporter.emit(ScanEvent::Log {
                tool: name.clone(),
                stream: "warning".into(),
                line: format!("skipped: {reason}"),
            });
            warnings.push(format!("{name}: skipped: {reason}"));
            reporter.emit(ScanEvent::tool_complete(&name, "skipped", None, 0));
            return Ok(ScannerRecord::new(
                &name,
                "builtin",
                "skipped",
                Some(reason),
                elapsed,
            ));
        }
        let incomplete = reports.incomplete_reason();
        let mut counts = SeverityCounts::default();
        for finding in &output.findings {
            counts.add(finding.severity, 1);
        }
        let mut reports_written = Vec::new();
        if !output.sarif.is_null() {
            artifacts::write_json(bundle_dir, &artifacts::sarif_path(&name), &output.sarif)
                .map_err(ScanFailure::internal)?;
            reports_written.push(artifacts::sarif_path(&name));
        }
        for (rel, value) in reports.take_files() {
            artifacts::write_json(bundle_dir, &rel, &value).map_err(ScanFailure::internal)?;
            reports_written.push(rel);
        }
        // An incomplete run's findings stand, but the run counts as failed: the gate cannot
        // vouch for what the scanner could not look at.
        let (status, outcome) = match &incomplete {
            None => ("succeeded", "success"),
            Some(reason) => {
                reporter.emit(ScanEvent::Log {
                    tool: name.clone(),
                    stream: "warning".into(),
                    line: format!("incomplete: {reason}"),
                });
                warnings.push(format!("{name}: incomplete: {reason}"));
                ("failed", "failure")
            }
        };
        self.record_scanner(&name, outcome, elapsed);
        reporter.emit(ScanEvent::tool_complete(
            &name,
            status,
            incomplete.is_none().then_some(0),
            counts.total,
        ));
        let mut record = ScannerRecord::new(&name, "builtin", status, incomplete, elapsed);
        record.extra = json!({
            "files_scanned": output.files_scanned,
            "bytes_scanned": output.bytes_scanned,
            "reports": reports_written,
        });
        record.counts = Some(counts);
        Ok(record)
    }

    async fn run_external(
        &self,
        tool: &tools::ToolSpec,
        run: &tools::ToolRun<'_>,
        required: bool,
        reporter: &Arc<Reporter>,
        bundle_dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<ScannerRecord, ScanFailure> {
        let name = tool.name;
        let start = Instant::now();
        if tools::find_on_path(tool.binary, run.path.as_deref()).is_none() {
            let elapsed = start.elapsed().as_secs_f64();
            if required {
                self.record_scanner(name, "failure", elapsed);
                return Err(ScanFailure::new(
                    FailureKind::ScannerFailed,
                    format!(
                        "required tool `{name}` is not installed on this server (no `{}` executable on PATH); install it ({}) or remove it from the profile's required tools",
                        tool.binary, tool.install_hint
                    ),
                ));
            }
            self.record_scanner(name, "skipped", elapsed);
            let reason = format!(
                "not installed (no `{}` executable on PATH; {})",
                tool.binary, tool.install_hint
            );
            reporter.emit(ScanEvent::Log {
                tool: name.into(),
                stream: "warning".into(),
                line: format!("skipped: {reason}"),
            });
            reporter.emit(ScanEvent::tool_complete(name, "skipped", None, 0));
            warnings.push(format!("{name}: skipped: {reason}"));
            return Ok(ScannerRecord::new(
                name,
                "external",
                "skipped",
                Some(reason),
                elapsed,
            ));
        }
        reporter.emit(ScanEvent::ToolStart { tool: name.into() });
        let line_reporter = reporter.clone();
        let on_line = move |stream: &str, line: String| {
            line_reporter.emit(ScanEvent::Log {
                tool: name.into(),
                stream: stream.into(),
                line,
            });
        };
        let result = tools::run_tool(tool, run, &on_line).await;
        let elapsed = start.elapsed().as_secs_f64();
        match result {
            Ok(out) if out.skipped.is_some() => {
                let reason = out.skipped.unwrap_or_default();
                self.record_scanner(name, "skipped", elapsed);
                reporter.emit(ScanEvent::tool_complete(name, "skipped", None, 0));
                if required {
                    return Err(ScanFailure::new(
                        FailureKind::ScannerFailed,
                        format!("required tool `{name}` could not run: {reason}"),
                    ));
                }
                reporter.emit(ScanEvent::Log {
                    tool: name.into(),
                    stream: "warning".into(),
                    line: format!("skipped: {reason}"),
                });
                warnings.push(format!("{name}: skipped: {reason}"));
                Ok(ScannerRecord::new(
                    name,
                    "external",
                    "skipped",
                    Some(reason),
                    elapsed,
                ))
            }
            Ok(out) => {
                self.record_scanner(name, "success", elapsed);
                let rel = artifacts::sarif_path(name);
                artifacts::write_json(bundle_dir, &rel, &out.sarif)
                    .map_err(ScanFailure::internal)?;
                reporter.emit(ScanEvent::tool_complete(
                    name,
                    "succeeded",
                    Some(out.exit_code),
                    out.counts.total,
                ));
                let mut record = ScannerRecord::new(name, "external", "succeeded", None, elapsed);
                record.extra = json!({"exit_code": out.exit_code, "reports": [rel]});
                record.counts = Some(out.counts);
                Ok(record)
            }
            Err(tools::ToolError::Stopped) => Err(ScanFailure::new(
                FailureKind::Cancelled,
                format!("cancelled while `{name}` ran"),
            )),
            Err(err) => {
                self.record_scanner(name, "failure", elapsed);
                reporter.emit(ScanEvent::tool_complete(name, "failed", None, 0));
                let message = format!("tool `{name}` failed: {err}");
                if required {
                    return Err(ScanFailure::new(FailureKind::ScannerFailed, message));
                }
                // A tool that is not required and breaks does not stop the scan: the other
                // scanners' results stand, and the policy fails on this one unless the profile
                // makes it optional.
                reporter.emit(ScanEvent::Log {
                    tool: name.into(),
                    stream: "warning".into(),
                    line: message.clone(),
                });
                warnings.push(message);
                Ok(ScannerRecord::new(
                    name,
                    "external",
                    "failed",
                    Some(err.to_string()),
                    elapsed,
                ))
            }
        }
    }

    fn record_scanner(&self, name: &str, outcome: &str, seconds: f64) {
        self.metrics
            .scanner_runs_total
            .with_label_values(&[name, outcome])
            .inc();
        self.metrics
            .scanner_duration_seconds
            .with_label_values(&[name, outcome])
            .observe(seconds);
    }
}

/// Largest manifest file read from a tree.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Reads `manifest_path` inside the tree (never outside it, links resolved) and resolves the
/// profile it selects or overrides.
fn load_tree_manifest(root: &Path, rel: &str, requested: &str) -> Result<Profile, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("the source tree cannot be read: {e}"))?;
    let path = root.join(rel);
    let real = path
        .canonicalize()
        .map_err(|_| format!("manifest_path `{rel}` does not exist in the source tree"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "manifest_path `{rel}` resolves outside the source tree"
        ));
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("manifest_path `{rel}`: {e}"))?;
    if !meta.is_file() || meta.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "manifest_path `{rel}` must be a JSON file of at most 1 MiB"
        ));
    }
    let text = std::fs::read(&real).map_err(|e| format!("manifest_path `{rel}`: {e}"))?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| format!("manifest_path `{rel}` is not valid JSON: {e}"))?;
    profile::resolve(requested, Some(&value)).map_err(|errors| {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                if e.loc.is_empty() {
                    e.msg.clone()
                } else {
                    format!("{}: {}", e.loc.join("."), e.msg)
                }
            })
            .collect();
        format!("manifest_path `{rel}` is invalid: {}", parts.join("; "))
    })
}

/// Parses an `archive_path` as `upload-archive` returned it (`uploads/<sha256>.<ext>`) and
/// finds the stored file. Any other value is refused: callers cannot name server paths.
pub fn stored_archive(
    upload_dir: &Path,
    archive_path: &str,
) -> Result<(PathBuf, String, archive::ArchiveFormat), String> {
    let (sha, format) = parse_archive_path(archive_path)?;
    let file = upload_dir.join(format!("{sha}.{}", format.extension()));
    if !file.is_file() {
        return Err(archive_not_stored(archive_path));
    }
    Ok((file, sha, format))
}

/// The refusal of an `archive_path` naming no archive stored for the scan's workspace.
pub fn archive_not_stored(archive_path: &str) -> String {
    format!(
        "archive {archive_path} is not stored on this server; upload it again with POST /v1/security-scans/upload-archive"
    )
}

/// The sha256 and format an `archive_path` names (`uploads/<sha256>.<ext>`), without looking
/// for the file.
pub fn parse_archive_path(archive_path: &str) -> Result<(String, archive::ArchiveFormat), String> {
    let invalid = || {
        "archive_path must be a value returned by POST /v1/security-scans/upload-archive, e.g. uploads/<sha256>.tar.gz".to_string()
    };
    let rest = archive_path.strip_prefix("uploads/").ok_or_else(invalid)?;
    let (sha, ext) = rest.split_once('.').ok_or_else(invalid)?;
    if sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid());
    }
    let format = archive::ArchiveFormat::from_extension(ext).ok_or_else(invalid)?;
    Ok((sha.to_string(), format))
}

/// The span of one phase of a run (`clone`, `scan`, `bundle`: the `phase` label of
/// `scan_phase_duration_seconds`), a child of the current (scan) span.
fn open_phase_span(phase: &'static str) -> tracing::Span {
    tracing::info_span!(
        "phase",
        otel.name = %format!("phase {phase}"),
        otel.status_code = tracing::field::Empty,
        scan.phase = phase,
    )
}

/// Creates the bundle directory; a re-run of a requeued scan starts from a clean bundle.
fn prepare_bundle_dir(dir: &Path) -> anyhow::Result<()> {
    for sub in ["reports", "logs"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("clearing {}", p.display()))?;
        }
    }
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating the bundle directory {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer on a full file system.
    struct FullDisk;

    impl std::io::Write for FullDisk {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_write_failures() {
        let io = anyhow::Error::new(std::io::Error::from_raw_os_error(28)).context("writing x");
        assert!(crate::error::is_disk_full(&io));
        let json = serde_json::to_writer(FullDisk, &json!({"a": 1})).unwrap_err();
        let json = anyhow::Error::new(json).context("writing y");
        assert!(crate::error::is_disk_full(&json));
        let denied = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(!crate::error::is_disk_full(&denied));

        let failure = ScanFailure::internal(io);
        assert_eq!(failure.kind, FailureKind::Internal);
        assert!(
            failure.message.contains("disk is full"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("free space"),
            "{}",
            failure.message
        );
        let other = ScanFailure::internal(denied);
        assert!(!other.message.contains("disk"), "{}", other.message);

        let git = "cannot extend packfile '/data/work/test_1-x/src/.git/objects/pack/p': No space left on device";
        assert!(is_disk_full_message(git));
        assert!(!is_disk_full_message("early EOF"));
    }

    #[test]
    fn clone_messages_do_not_show_the_workspace_path() {
        let workspace = Path::new("/data/work/test_1-x");
        let message = "failed to write '/data/work/test_1-x/src/.git/config': read-only";
        let scrubbed = scrub_workspace(message, workspace);
        assert_eq!(
            scrubbed,
            "failed to write '<workspace>/src/.git/config': read-only"
        );
    }
}
