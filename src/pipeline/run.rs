//! One scan run, phase by phase: the [`Pipeline`] the service builds once, and [`Pipeline::run`],
//! which prepares the bundle directory and a temporary workspace, then runs the source phase
//! ([`super::source::prepare`]), the scanners ([`super::scanners::run`]) and the bundle
//! ([`super::bundle`]), reporting progress to the sink and measures to the observer it is handed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::Instrument;

use super::bundle::artifacts;
use super::bundle::attestation::AttestationKey;
use super::bundle::findings::{self, FindingsOutcome, SuppressionRules};
use super::bundle::summary::{self, RunRecord};
use super::failure::{FailureKind, ScanFailure};
use super::finding::SeverityCounts;
use super::observer::ScannerStatus;
use super::observer::{Phase, ScanObserver};
use super::osv::OsvStore;
use super::profile::{self, Profile, ScannerProblem};
use super::progress::{ProgressSink, Reporter, ScanEvent};
use super::scan::{now_secs, ScanReport, ScanSpec};
use super::scanners::registry;
use super::scanners::run::{run_scanner, RunContext};
use super::scanners::{Scanner, SharedFacts};
use super::source::archive::Limits;
use super::source::egress::{Resolver, SystemResolver};
use super::source::policy::SourcePolicy;
use super::source::prepare::{prepare, PreparedSource, SourceSettings};

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
    pub resolver: Arc<dyn Resolver>,
    pub ssh_key: Option<PathBuf>,
    /// Receives what runs measure (phase and scanner times, findings, suppressions).
    pub observer: Arc<dyn ScanObserver>,
    pub scanners: Arc<Vec<Arc<dyn Scanner>>>,
    /// Canonical directories that `directory` scans may read.
    pub source_roots: Arc<Vec<PathBuf>>,
    /// Where `upload-archive` stores archives (`<dir>/<sha256>.<ext>`).
    pub upload_dir: PathBuf,
    pub archive_limits: Limits,
    /// Signs the attestation when set.
    pub signing_key: Option<AttestationKey>,
    /// `PATH` external tools are looked up on.
    pub tool_path: Option<OsString>,
    /// Variables of the service's environment external tools also get
    /// ([`super::scanners::external::PASSTHROUGH_ENV`]).
    pub tool_env: Arc<Vec<(&'static str, OsString)>>,
}

/// The built-in scanners of this build, without an OSV database.
pub fn builtin_scanners() -> Vec<Arc<dyn Scanner>> {
    builtin_scanners_with(None)
}

/// The built-in scanners; `osv` is the vulnerability database, if one is configured.
pub fn builtin_scanners_with(osv: Option<Arc<OsvStore>>) -> Vec<Arc<dyn Scanner>> {
    registry::builtin_scanners(osv)
}

/// The profile a run uses and its digest, after the tree's manifest (if any) had its say.
struct Resolved {
    profile: Profile,
    manifest_digest: String,
    warnings: Vec<String>,
}

impl Pipeline {
    /// The bundle directory of one scan.
    pub fn artifact_dir(&self, test_id: &str) -> PathBuf {
        self.artifact_root.join(test_id)
    }

    /// A pipeline for a one-off local run (the `scan` command): everything under `work_root`.
    /// External tools are looked up on no `PATH` until the caller sets `tool_path`.
    pub fn local(
        work_root: PathBuf,
        artifact_root: PathBuf,
        observer: Arc<dyn ScanObserver>,
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
            resolver: Arc::new(SystemResolver),
            ssh_key: None,
            observer,
            scanners: Arc::new(scanners),
            source_roots: Arc::new(vec![]),
            archive_limits: Limits {
                max_bytes: archive_defaults.max_extracted_bytes,
                max_entries: archive_defaults.max_files,
            },
            signing_key: None,
            tool_path: None,
            tool_env: Arc::new(vec![]),
        }
    }

    /// What the source phase needs of these settings.
    fn source_settings(&self) -> SourceSettings {
        SourceSettings {
            clone_timeout: self.clone_timeout,
            clone_max_bytes: self.clone_max_bytes,
            policy: self.source_policy,
            resolver: self.resolver.clone(),
            ssh_key: self.ssh_key.clone(),
            source_roots: self.source_roots.clone(),
            upload_dir: self.upload_dir.clone(),
            archive_limits: self.archive_limits,
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

    /// The three phases, in the scan's workspace.
    async fn run_in(
        &self,
        spec: &ScanSpec,
        reporter: &Arc<Reporter>,
        cancel: &Arc<AtomicBool>,
        workspace: &Path,
        bundle_dir: &Path,
    ) -> Result<ScanReport, ScanFailure> {
        let started_at = now_secs();
        let deadline = Instant::now() + spec.timeout;
        let source = self.source_phase(spec, reporter, cancel, workspace).await?;
        if cancel.load(Ordering::Relaxed) {
            return Err(ScanFailure::new(
                FailureKind::Cancelled,
                "cancelled after the source was prepared",
            ));
        }
        let Resolved {
            profile,
            manifest_digest,
            mut warnings,
        } = resolve_profile(spec, &source.root, reporter)?;
        let suppression = load_suppression(spec, &profile, &source.root, &mut warnings).await?;

        let phase_start = Instant::now();
        let phase = open_phase_span(Phase::Scan);
        reporter.phase("scan", format!("Running profile `{}`", profile.name));
        let scratch = workspace.join("tools");
        let ctx = RunContext {
            source_root: &source.root,
            scratch: &scratch,
            bundle_dir,
            shared: Arc::new(
                SharedFacts::new(spec.component_id.clone(), spec.test_id.clone())
                    .with_excludes(profile.exclude.clone()),
            ),
            reporter,
            cancel,
            deadline,
            tool_path: self.tool_path.clone(),
            tool_env: &self.tool_env,
            observer: self.observer.as_ref(),
            builtin: &self.scanners,
        };
        let results = run_profile(&profile, &ctx, &phase, &mut warnings).await?;
        self.observer
            .phase_finished(Phase::Scan, phase_start.elapsed().as_secs_f64());
        drop(phase);

        let run = RunOutcome {
            source,
            profile,
            manifest_digest,
            results,
            warnings,
            started_at,
        };
        self.bundle_phase(spec, run, suppression, reporter, bundle_dir)
            .await
    }

    /// Phase 1: makes the tree available.
    async fn source_phase(
        &self,
        spec: &ScanSpec,
        reporter: &Arc<Reporter>,
        cancel: &Arc<AtomicBool>,
        workspace: &Path,
    ) -> Result<PreparedSource, ScanFailure> {
        let phase_start = Instant::now();
        let phase_span = open_phase_span(Phase::Clone);
        let prepared = prepare(
            &self.source_settings(),
            &spec.source,
            reporter,
            cancel,
            workspace,
        )
        .instrument(phase_span.clone())
        .await;
        if prepared.is_err() {
            phase_span.record("otel.status_code", "error");
        }
        drop(phase_span);
        self.observer
            .phase_finished(Phase::Clone, phase_start.elapsed().as_secs_f64());
        prepared
    }

    /// Phase 3: merges and suppresses the findings, evaluates the policy and writes the bundle.
    async fn bundle_phase(
        &self,
        spec: &ScanSpec,
        run: RunOutcome,
        suppression: SuppressionRules,
        reporter: &Arc<Reporter>,
        bundle_dir: &Path,
    ) -> Result<ScanReport, ScanFailure> {
        let phase_start = Instant::now();
        let phase_span = open_phase_span(Phase::Bundle);
        let merged = merge_findings(spec, &run, suppression, bundle_dir)
            .instrument(phase_span.clone())
            .await?;
        for (kind, n) in &merged.suppressed {
            self.observer.findings_suppressed(kind, *n);
        }
        let totals = merged.counts.clone();
        let policy = run.profile.evaluate(&totals, &run.results.problems);
        reporter.emit(ScanEvent::FindingSummary {
            counts: totals.clone(),
            by_scanner: run.results.by_scanner.clone(),
            policy_passed: policy.passed,
        });
        reporter.phase("bundle", "Writing the artifact bundle".into());
        let record = RunRecord {
            spec,
            profile: &run.profile,
            manifest_digest: &run.manifest_digest,
            source: &run.source.record,
            provenance: &run.source.provenance,
            totals: &totals,
            by_scanner: &run.results.by_scanner,
            suppressed: merged.suppressed_json(),
            policy: &policy,
            scanners: &run.results.entries,
            warnings: &run.warnings,
            started_at: run.started_at,
        };
        let summary_json = record.summary();
        let (scan, predicate) = (record.scan(), record.predicate());
        let dir = bundle_dir.to_path_buf();
        let key = self.signing_key.clone();
        let written = summary_json.clone();
        let artifacts = tokio::task::spawn_blocking(move || {
            summary::write(&dir, &written, &scan, predicate, key.as_ref())
        })
        .instrument(phase_span.clone())
        .await
        .map_err(|e| ScanFailure::internal(anyhow::anyhow!("bundle task failed: {e}")))?
        .map_err(ScanFailure::internal)?;
        drop(phase_span);
        self.observer
            .phase_finished(Phase::Bundle, phase_start.elapsed().as_secs_f64());
        Ok(ScanReport {
            provenance: run.source.provenance,
            profile: run.profile,
            manifest_digest: run.manifest_digest,
            summary: summary_json,
            policy,
            artifacts,
        })
    }
}

/// What the source and scanners phases hand to the bundle phase.
struct RunOutcome {
    source: PreparedSource,
    profile: Profile,
    manifest_digest: String,
    results: ScannerResults,
    warnings: Vec<String>,
    started_at: f64,
}

/// What the scanners phase hands to the bundle.
struct ScannerResults {
    by_scanner: BTreeMap<String, SeverityCounts>,
    /// Scanners that did not succeed, for the policy.
    problems: Vec<ScannerProblem>,
    /// The `scanners` entries of `summary.json` and `scan.json`.
    entries: Vec<serde_json::Value>,
}

/// Runs every scanner of `profile`, in order, each in a span under `phase`.
async fn run_profile(
    profile: &Profile,
    ctx: &RunContext<'_>,
    phase: &tracing::Span,
    warnings: &mut Vec<String>,
) -> Result<ScannerResults, ScanFailure> {
    let mut results = ScannerResults {
        by_scanner: BTreeMap::new(),
        problems: Vec::new(),
        entries: Vec::new(),
    };
    for name in &profile.scanners {
        let span = tracing::info_span!(
            parent: phase,
            "scanner",
            otel.name = %format!("scanner {name}"),
            otel.status_code = tracing::field::Empty,
            scanner.name = %name,
            scanner.outcome = tracing::field::Empty,
            scanner.findings = tracing::field::Empty,
        );
        let required = profile.required.iter().any(|r| r == name);
        let record = run_scanner(name, &profile.name, required, ctx, warnings)
            .instrument(span.clone())
            .await;
        match &record {
            Ok(r) => {
                span.record("scanner.outcome", r.status.outcome());
                if let Some(counts) = &r.counts {
                    span.record("scanner.findings", counts.total);
                }
            }
            Err(_) => {
                span.record("scanner.outcome", ScannerStatus::Failed.outcome());
                span.record("otel.status_code", "error");
            }
        }
        drop(span);
        let record = record?;
        if let Some(counts) = &record.counts {
            results.by_scanner.insert(name.clone(), counts.clone());
        }
        if record.status != ScannerStatus::Succeeded {
            results.problems.push(ScannerProblem {
                scanner: name.clone(),
                status: record.status.as_str().to_string(),
                reason: record.reason.clone().unwrap_or_default(),
            });
        }
        results
            .entries
            .push(record.entry(!profile.is_optional(name)));
        if ctx.cancel.load(Ordering::Relaxed) {
            return Err(ScanFailure::new(
                FailureKind::Cancelled,
                "cancelled between scanners",
            ));
        }
    }
    Ok(results)
}

/// The profile that runs: the submitted one, or the one the tree's `manifest_path` selects;
/// strict mode makes every scanner required.
fn resolve_profile(
    spec: &ScanSpec,
    source_root: &Path,
    reporter: &Reporter,
) -> Result<Resolved, ScanFailure> {
    let (mut profile, manifest_digest) = match &spec.manifest_path {
        None => (spec.profile.clone(), spec.manifest_digest.clone()),
        Some(rel) => {
            let profile = load_tree_manifest(source_root, rel, &spec.profile.name)
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
    if spec.strict {
        // Strict mode: the gate holds every scanner to success, whatever the profile says.
        profile.optional.clear();
    }
    let mut warnings = Vec::new();
    if !profile.unsupported_manifest_tools.is_empty() {
        warnings.push(format!(
            "the manifest names tools this service has no scanner for, not run: {}",
            profile.unsupported_manifest_tools.join(", ")
        ));
    }
    Ok(Resolved {
        profile,
        manifest_digest,
        warnings,
    })
}

/// Loads the suppression rules (path excludes, `.certusignore`, baseline) on the blocking pool.
async fn load_suppression(
    spec: &ScanSpec,
    profile: &Profile,
    source_root: &Path,
    warnings: &mut Vec<String>,
) -> Result<SuppressionRules, ScanFailure> {
    let root = source_root.to_path_buf();
    let exclude = profile.exclude.clone();
    let baseline_path = profile.baseline_path.clone();
    let baseline_file = spec.baseline_file.clone();
    let (rules, load_warnings) = tokio::task::spawn_blocking(move || {
        let mut load_warnings = Vec::new();
        SuppressionRules::load(
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
    warnings.extend(load_warnings);
    Ok(rules)
}

/// Merges every scanner's findings and applies the suppressions, on the blocking pool.
async fn merge_findings(
    spec: &ScanSpec,
    run: &RunOutcome,
    suppression: SuppressionRules,
    bundle_dir: &Path,
) -> Result<FindingsOutcome, ScanFailure> {
    let root = run.source.root.clone();
    let dir = bundle_dir.to_path_buf();
    let test_id = spec.test_id.clone();
    let names = run.profile.scanners.clone();
    tokio::task::spawn_blocking(move || {
        findings::process(&root, &dir, &test_id, &names, &suppression)
    })
    .await
    .map_err(|e| ScanFailure::internal(anyhow::anyhow!("findings task failed: {e}")))?
    .map_err(ScanFailure::internal)
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

/// The span of one phase of a run, a child of the current (scan) span.
fn open_phase_span(phase: Phase) -> tracing::Span {
    let phase = phase.as_str();
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
