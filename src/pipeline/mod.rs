//! One scan run in a temporary workspace: checkout, scanners, artifact bundle. Progress goes to
//! a [`ProgressSink`] the caller hands in; the result is a [`ScanReport`] or a [`ScanFailure`].
//! The pipeline never reads or writes job records and does not know jobs exist.

pub mod artifacts;
pub mod checkout;
pub mod profile;
pub mod scanners;
pub mod source;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

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
        exit_code: i32,
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

/// What to scan and under which profile.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    pub test_id: String,
    pub workspace_id: String,
    pub component_id: String,
    pub assessment_id: String,
    pub requested_by: Option<String>,
    pub git: GitUrl,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub profile: Profile,
    pub manifest_digest: String,
    pub submitted_at: f64,
}

/// A finished, trustworthy scan.
#[derive(Debug, Clone)]
pub struct ScanReport {
    pub checkout: Checkout,
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
        ScanFailure::new(
            FailureKind::Internal,
            "the service could not write the scan's results; see the server log",
        )
    }
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
    pub ssh_key: Option<PathBuf>,
    pub metrics: Metrics,
    pub scanners: Arc<Vec<Arc<dyn Scanner>>>,
}

/// The built-in scanners of this build.
pub fn builtin_scanners() -> Vec<Arc<dyn Scanner>> {
    vec![Arc::new(scanners::secrets::SecretsScanner::new())]
}

/// Names of the built-in scanners (metric label values).
pub const BUILTIN_SCANNERS: [&str; 1] = ["secrets"];

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
                exit_code,
                findings,
            } => {
                format!("[{tool}] finished with exit code {exit_code}, {findings} findings")
            }
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

impl Pipeline {
    /// The bundle directory of one scan.
    pub fn artifact_dir(&self, test_id: &str) -> PathBuf {
        self.artifact_root.join(test_id)
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

        // Phase 1: clone.
        let phase_start = Instant::now();
        let phase_span = open_phase_span("clone");
        reporter.phase(
            "clone",
            format!(
                "Cloning {}{}",
                spec.git.display_url,
                spec.branch
                    .as_ref()
                    .map(|b| format!(" (branch {b})"))
                    .unwrap_or_default()
            ),
        );
        let checkout_dir = workspace.join("src");
        let (result, lines) = {
            let this = self.clone();
            let spec = spec.clone();
            let cancel = cancel.clone();
            let dest = checkout_dir.clone();
            let span = phase_span.clone();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let mut lines = Vec::new();
                let clone_spec = CloneSpec {
                    url: &spec.git,
                    branch: spec.branch.as_deref(),
                    commit: spec.commit.as_deref(),
                    timeout: this.clone_timeout,
                    max_bytes: this.clone_max_bytes,
                    policy: this.source_policy,
                    ssh_key: this.ssh_key.as_deref(),
                    cancel: &cancel,
                };
                let result = checkout::clone_repository(&clone_spec, &dest, &mut |l| lines.push(l));
                (result, lines)
            })
            .await
            .map_err(|e| {
                ScanFailure::new(FailureKind::Internal, format!("the clone task failed: {e}"))
            })?
        };
        for line in lines {
            reporter.emit(ScanEvent::Log {
                tool: "git".into(),
                stream: "stderr".into(),
                line,
            });
        }
        self.metrics
            .scan_phase_duration_seconds
            .with_label_values(&["clone"])
            .observe(phase_start.elapsed().as_secs_f64());
        if result.is_err() {
            phase_span.record("otel.status_code", "error");
        }
        drop(phase_span);
        let checkout = match result {
            Ok(c) => c,
            Err(CloneError::Cancelled) => {
                return Err(ScanFailure::new(
                    FailureKind::Cancelled,
                    "cancelled during clone",
                ))
            }
            Err(CloneError::Invalid(m)) => {
                return Err(ScanFailure::new(FailureKind::SourceInvalid, m))
            }
            Err(CloneError::Failed(m)) => {
                return Err(ScanFailure::new(FailureKind::CloneFailed, m))
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
        if cancelled() {
            return Err(ScanFailure::new(
                FailureKind::Cancelled,
                "cancelled after clone",
            ));
        }

        // Phase 2: scanners.
        let phase_start = Instant::now();
        let phase = open_phase_span("scan");
        reporter.phase("scan", format!("Running profile `{}`", spec.profile.name));
        let mut totals = SeverityCounts::default();
        let mut by_scanner = BTreeMap::new();
        let mut scanner_runs = Vec::new();
        for name in &spec.profile.scanners {
            let Some(scanner) = self.scanners.iter().find(|s| s.name() == name).cloned() else {
                return Err(ScanFailure::new(
                    FailureKind::ScannerFailed,
                    format!(
                        "scanner `{name}` of profile `{}` is not available in this build",
                        spec.profile.name
                    ),
                ));
            };
            reporter.emit(ScanEvent::ToolStart { tool: name.clone() });
            let tool_start = Instant::now();
            let source = checkout_dir.clone();
            let flag = cancel.clone();
            let span = tracing::info_span!(
                parent: &phase,
                "scanner",
                otel.name = %format!("scanner {name}"),
                otel.status_code = tracing::field::Empty,
                scanner.name = %name,
                scanner.outcome = tracing::field::Empty,
                scanner.findings = tracing::field::Empty,
            );
            let scanner_span = span.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    scanner.run(&ScanContext {
                        source_root: &source,
                        cancel: &flag,
                    })
                })
            })
            .await;
            match &outcome {
                Ok(Ok(output)) => {
                    scanner_span.record("scanner.outcome", "success");
                    scanner_span.record("scanner.findings", output.findings.len() as u64);
                }
                _ => {
                    scanner_span.record("scanner.outcome", "failure");
                    scanner_span.record("otel.status_code", "error");
                }
            }
            drop(scanner_span);
            let elapsed = tool_start.elapsed().as_secs_f64();
            let output = match outcome {
                Ok(Ok(output)) => output,
                Ok(Err(_)) | Err(_) if cancelled() => {
                    return Err(ScanFailure::new(
                        FailureKind::Cancelled,
                        format!("cancelled while `{name}` ran"),
                    ))
                }
                Ok(Err(err)) => {
                    self.record_scanner(name, "failure", elapsed);
                    reporter.emit(ScanEvent::ToolComplete {
                        tool: name.clone(),
                        exit_code: 1,
                        findings: 0,
                    });
                    return Err(ScanFailure::new(
                        FailureKind::ScannerFailed,
                        format!("scanner `{name}` failed: {err:#}"),
                    ));
                }
                Err(join) => {
                    self.record_scanner(name, "failure", elapsed);
                    tracing::error!(scanner = %name, error = %join, "scanner panicked");
                    reporter.emit(ScanEvent::ToolComplete {
                        tool: name.clone(),
                        exit_code: 101,
                        findings: 0,
                    });
                    return Err(ScanFailure::new(
                        FailureKind::ScannerFailed,
                        format!("scanner `{name}` crashed"),
                    ));
                }
            };
            self.record_scanner(name, "success", elapsed);
            let mut counts = SeverityCounts::default();
            for finding in &output.findings {
                counts.add(finding.severity, 1);
            }
            for sev in scanners::Severity::ALL {
                let n = counts.get(sev);
                if n > 0 {
                    self.metrics
                        .findings_total
                        .with_label_values(&[sev.as_str(), name])
                        .inc_by(n);
                    totals.add(sev, n);
                }
            }
            artifacts::write_json(bundle_dir, &artifacts::sarif_path(name), &output.sarif)
                .map_err(ScanFailure::internal)?;
            reporter.emit(ScanEvent::ToolComplete {
                tool: name.clone(),
                exit_code: 0,
                findings: counts.total,
            });
            scanner_runs.push(json!({
                "name": name,
                "status": "success",
                "findings": counts.total,
                "duration_seconds": elapsed,
                "files_scanned": output.files_scanned,
                "bytes_scanned": output.bytes_scanned,
                "report": artifacts::sarif_path(name),
            }));
            by_scanner.insert(name.clone(), counts);
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
        let policy = spec.profile.evaluate(&totals);
        reporter.emit(ScanEvent::FindingSummary {
            counts: totals.clone(),
            by_scanner: by_scanner.clone(),
            policy_passed: policy.passed,
        });
        reporter.phase("bundle", "Writing the artifact bundle".into());
        let summary = json!({
            "test_id": spec.test_id,
            "profile": spec.profile.name,
            "manifest_digest": spec.manifest_digest,
            "commit": checkout.commit,
            "branch": checkout.branch,
            "findings": { "total": totals, "by_scanner": by_scanner },
            "policy": policy,
            "scanners": scanner_runs,
        });
        let scan_json = json!({
            "test_id": spec.test_id,
            "workspace_id": spec.workspace_id,
            "component_id": spec.component_id,
            "assessment_id": spec.assessment_id,
            "requested_by": spec.requested_by,
            "source": {
                "type": "git",
                "git_url": spec.git.display_url,
                "branch": spec.branch,
                "commit": spec.commit,
                "resolved_commit": checkout.commit,
                "resolved_branch": checkout.branch,
            },
            "profile": spec.profile,
            "manifest_digest": spec.manifest_digest,
            "submitted_at": spec.submitted_at,
            "started_at": started_at,
            "finished_at": now_secs(),
            "service": { "name": "certus-assurance", "version": env!("CARGO_PKG_VERSION"), "revision": crate::BUILD_REVISION },
            "scanners": scanner_runs,
            "warnings": [],
        });
        let dir = bundle_dir.to_path_buf();
        let span = phase_span.clone();
        let artifacts = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            let _entered = span.enter();
            artifacts::write_json(&dir, artifacts::SUMMARY_JSON, &summary)?;
            artifacts::write_json(&dir, artifacts::SCAN_JSON, &scan_json)?;
            let mut files = artifacts::list_files(&dir)?;
            // stream.jsonl is completed by the job engine after the terminal event.
            if !files.iter().any(|f| f == artifacts::STREAM_JSONL) {
                files.push(artifacts::STREAM_JSONL.to_string());
                files.sort();
            }
            Ok(files)
        })
        .await
        .map_err(|e| ScanFailure::internal(anyhow::anyhow!("bundle task failed: {e}")))?
        .map_err(ScanFailure::internal)?;
        self.metrics
            .scan_phase_duration_seconds
            .with_label_values(&["bundle"])
            .observe(phase_start.elapsed().as_secs_f64());
        drop(phase_span);
        let summary = std::fs::read(bundle_dir.join(artifacts::SUMMARY_JSON))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok(ScanReport {
            checkout,
            summary,
            policy,
            artifacts,
        })
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
