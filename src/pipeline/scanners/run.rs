//! The one run path of phase 2, for every scanner of a profile: a scanner is looked up in the
//! scan's built-in instances first, then in the registry's external tools; either way its run
//! ends as one [`Ended`], which [`finish`] turns into the same events, warnings, observer call
//! and `scanners` entry.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::external::{self as tools, ToolRun};
use super::registry;
use super::{ScanContext, Scanner, SeverityCounts, SharedFacts, SideReports};
use crate::pipeline::bundle::artifacts;
use crate::pipeline::failure::{FailureKind, ScanFailure};
use crate::pipeline::observer::{ScanObserver, ScannerStatus};
use crate::pipeline::progress::{Reporter, ScanEvent};

/// Everything a scanner run needs from its scan.
pub(crate) struct RunContext<'a> {
    pub source_root: &'a Path,
    /// Scratch space of the external tools (reports, `HOME`, `TMPDIR`).
    pub scratch: &'a Path,
    pub bundle_dir: &'a Path,
    pub shared: Arc<SharedFacts>,
    pub reporter: &'a Arc<Reporter>,
    pub cancel: &'a Arc<AtomicBool>,
    /// When external tools are stopped (the scan's own deadline).
    pub deadline: Instant,
    pub tool_path: Option<OsString>,
    pub tool_env: &'a [(&'static str, OsString)],
    pub observer: &'a dyn ScanObserver,
    /// The scan's built-in scanner instances (tests may replace some).
    pub builtin: &'a [Arc<dyn Scanner>],
}

/// How one scanner run ended, for `scan.json`, `summary.json`, the scan resource and the policy.
pub(crate) struct ScannerRecord {
    name: String,
    kind: &'static str,
    pub status: ScannerStatus,
    pub reason: Option<String>,
    duration_seconds: f64,
    /// Severity counts of a run that produced findings (an incomplete run too).
    pub counts: Option<SeverityCounts>,
    /// Scanner-specific fields (`exit_code`, `reports`, `files_scanned`, ...).
    extra: Value,
}

impl ScannerRecord {
    /// The `scanners` entry (contract: name, kind, status, reason, required, duration_seconds,
    /// findings), plus the scanner-specific fields.
    pub fn entry(&self, required: bool) -> Value {
        let mut entry = json!({
            "name": self.name,
            "kind": self.kind,
            "status": self.status.as_str(),
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

/// How a scanner's run ended, before it is recorded.
enum Ended {
    /// Ran to completion; `exit_code` of a tool (0 for a built-in scanner).
    Succeeded {
        exit_code: Option<i32>,
        counts: SeverityCounts,
        extra: Value,
    },
    /// A built-in scanner that could not look at everything: its findings stand, the run
    /// counts as failed.
    Incomplete {
        reason: String,
        counts: SeverityCounts,
        extra: Value,
    },
    /// Did not run (tool not installed, nothing to do without its data).
    Skipped { reason: String },
    /// A tool that is not required broke: the scan goes on, the policy fails on it unless the
    /// profile makes it optional.
    Failed { message: String, reason: String },
    /// Broke in a way that fails the scan; `tool_complete` carries `exit_code` when set.
    Broke {
        failure: ScanFailure,
        tool_complete: Option<Option<i32>>,
    },
    /// Cancelled, or not a scanner of this build: fails the scan, nothing is counted.
    Aborted(ScanFailure),
}

/// The one run path: runs scanner `name` of profile `profile` and records how it ended.
pub(crate) async fn run_scanner(
    name: &str,
    profile: &str,
    required: bool,
    ctx: &RunContext<'_>,
    warnings: &mut Vec<String>,
) -> Result<ScannerRecord, ScanFailure> {
    let start = Instant::now();
    let (kind, ended) =
        if let Some(scanner) = ctx.builtin.iter().find(|s| s.name() == name).cloned() {
            ("builtin", run_builtin(scanner, ctx, warnings).await?)
        } else if let Some(tool) = registry::tool_spec(name) {
            ("external", run_external(tool, required, ctx).await?)
        } else {
            let message =
                format!("scanner `{name}` of profile `{profile}` is not available in this build");
            let failure = ScanFailure::new(FailureKind::ScannerFailed, message);
            ("builtin", Ended::Aborted(failure))
        };
    finish(
        name,
        kind,
        ended,
        start.elapsed().as_secs_f64(),
        ctx,
        warnings,
    )
}

/// Emits the events, warnings and observer call of a run that ended, and builds its record.
fn finish(
    name: &str,
    kind: &'static str,
    ended: Ended,
    elapsed: f64,
    ctx: &RunContext<'_>,
    warnings: &mut Vec<String>,
) -> Result<ScannerRecord, ScanFailure> {
    let warn = |line: String| {
        ctx.reporter.emit(ScanEvent::Log {
            tool: name.into(),
            stream: "warning".into(),
            line,
        })
    };
    let complete = |status: ScannerStatus, exit_code: Option<i32>, findings: u64| {
        ctx.reporter.emit(ScanEvent::tool_complete(
            name,
            status.as_str(),
            exit_code,
            findings,
        ))
    };
    let observe = |status: ScannerStatus, counts: Option<&SeverityCounts>| {
        ctx.observer.scanner_finished(name, status, elapsed, counts)
    };
    let record = |status, reason, counts, extra| ScannerRecord {
        name: name.to_string(),
        kind,
        status,
        reason,
        duration_seconds: elapsed,
        counts,
        extra,
    };
    match ended {
        Ended::Aborted(failure) => Err(failure),
        Ended::Broke {
            failure,
            tool_complete,
        } => {
            observe(ScannerStatus::Failed, None);
            if let Some(exit_code) = tool_complete {
                complete(ScannerStatus::Failed, exit_code, 0);
            }
            Err(failure)
        }
        Ended::Skipped { reason } => {
            observe(ScannerStatus::Skipped, None);
            warn(format!("skipped: {reason}"));
            warnings.push(format!("{name}: skipped: {reason}"));
            complete(ScannerStatus::Skipped, None, 0);
            Ok(record(
                ScannerStatus::Skipped,
                Some(reason),
                None,
                json!({}),
            ))
        }
        Ended::Failed { message, reason } => {
            observe(ScannerStatus::Failed, None);
            complete(ScannerStatus::Failed, None, 0);
            warn(message.clone());
            warnings.push(message);
            Ok(record(ScannerStatus::Failed, Some(reason), None, json!({})))
        }
        Ended::Incomplete {
            reason,
            counts,
            extra,
        } => {
            warn(format!("incomplete: {reason}"));
            warnings.push(format!("{name}: incomplete: {reason}"));
            observe(ScannerStatus::Failed, Some(&counts));
            complete(ScannerStatus::Failed, None, counts.total);
            Ok(record(
                ScannerStatus::Failed,
                Some(reason),
                Some(counts),
                extra,
            ))
        }
        Ended::Succeeded {
            exit_code,
            counts,
            extra,
        } => {
            observe(ScannerStatus::Succeeded, Some(&counts));
            complete(ScannerStatus::Succeeded, exit_code, counts.total);
            Ok(record(ScannerStatus::Succeeded, None, Some(counts), extra))
        }
    }
}

/// A built-in scanner on the blocking pool; its SARIF log and side reports go to the bundle.
async fn run_builtin(
    scanner: Arc<dyn Scanner>,
    ctx: &RunContext<'_>,
    warnings: &mut Vec<String>,
) -> Result<Ended, ScanFailure> {
    let name = scanner.name();
    ctx.reporter
        .emit(ScanEvent::ToolStart { tool: name.into() });
    let source = ctx.source_root.to_path_buf();
    let flag = ctx.cancel.clone();
    let shared = ctx.shared.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let reports = SideReports::default();
        let output = scanner.run(&ScanContext {
            source_root: &source,
            cancel: &flag,
            shared: &shared,
            reports: &reports,
        });
        output.map(|o| (o, reports))
    })
    .await;
    let (output, reports) = match outcome {
        Ok(Ok(output)) => output,
        Ok(Err(_)) | Err(_) if ctx.cancel.load(Ordering::Relaxed) => {
            let message = format!("cancelled while `{name}` ran");
            return Ok(Ended::Aborted(ScanFailure::new(
                FailureKind::Cancelled,
                message,
            )));
        }
        Ok(Err(err)) => {
            let message = format!("scanner `{name}` failed: {err:#}");
            return Ok(Ended::Broke {
                failure: ScanFailure::new(FailureKind::ScannerFailed, message),
                tool_complete: Some(Some(1)),
            });
        }
        Err(join) => {
            tracing::error!(scanner = %name, error = %join, "scanner panicked");
            let message = format!("scanner `{name}` crashed");
            return Ok(Ended::Broke {
                failure: ScanFailure::new(FailureKind::ScannerFailed, message),
                tool_complete: Some(Some(101)),
            });
        }
    };
    let own_warnings = reports.take_warnings();
    for w in &own_warnings {
        ctx.reporter.emit(ScanEvent::Log {
            tool: name.into(),
            stream: "warning".into(),
            line: w.clone(),
        });
    }
    warnings.extend(own_warnings);
    if let Some(reason) = reports.skipped() {
        return Ok(Ended::Skipped { reason });
    }
    let mut counts = SeverityCounts::default();
    for finding in &output.findings {
        counts.add(finding.severity, 1);
    }
    let mut reports_written = Vec::new();
    if !output.sarif.is_null() {
        let rel = artifacts::sarif_path(name);
        artifacts::write_json(ctx.bundle_dir, &rel, &output.sarif)
            .map_err(ScanFailure::internal)?;
        reports_written.push(rel);
    }
    for (rel, value) in reports.take_files() {
        artifacts::write_json(ctx.bundle_dir, &rel, &value).map_err(ScanFailure::internal)?;
        reports_written.push(rel);
    }
    let extra = json!({
        "files_scanned": output.files_scanned,
        "bytes_scanned": output.bytes_scanned,
        "reports": reports_written,
    });
    Ok(match reports.incomplete_reason() {
        None => Ended::Succeeded {
            exit_code: Some(0),
            counts,
            extra,
        },
        Some(reason) => Ended::Incomplete {
            reason,
            counts,
            extra,
        },
    })
}

/// An external tool as a child process, when it is installed; its SARIF goes to the bundle.
async fn run_external(
    tool: &tools::ToolSpec,
    required: bool,
    ctx: &RunContext<'_>,
) -> Result<Ended, ScanFailure> {
    let name = tool.name;
    if tools::find_on_path(tool.binary, ctx.tool_path.as_deref()).is_none() {
        if required {
            let message = format!(
                "required tool `{name}` is not installed on this server (no `{}` executable on PATH); install it ({}) or remove it from the profile's required tools",
                tool.binary, tool.install_hint
            );
            return Ok(Ended::Broke {
                failure: ScanFailure::new(FailureKind::ScannerFailed, message),
                tool_complete: None,
            });
        }
        let reason = format!(
            "not installed (no `{}` executable on PATH; {})",
            tool.binary, tool.install_hint
        );
        return Ok(Ended::Skipped { reason });
    }
    ctx.reporter
        .emit(ScanEvent::ToolStart { tool: name.into() });
    let line_reporter = ctx.reporter.clone();
    let on_line = move |stream: &str, line: String| {
        line_reporter.emit(ScanEvent::Log {
            tool: name.into(),
            stream: stream.into(),
            line,
        });
    };
    let run = ToolRun {
        source: ctx.source_root,
        scratch: ctx.scratch,
        path: ctx.tool_path.clone(),
        env: ctx.tool_env,
        deadline: ctx.deadline,
        cancel: ctx.cancel,
    };
    Ok(match tools::run_tool(tool, &run, &on_line).await {
        Ok(out) => match out.skipped {
            Some(reason) if required => {
                let message = format!("required tool `{name}` could not run: {reason}");
                Ended::Broke {
                    failure: ScanFailure::new(FailureKind::ScannerFailed, message),
                    tool_complete: Some(None),
                }
            }
            Some(reason) => Ended::Skipped { reason },
            None => {
                let rel = artifacts::sarif_path(name);
                artifacts::write_json(ctx.bundle_dir, &rel, &out.sarif)
                    .map_err(ScanFailure::internal)?;
                Ended::Succeeded {
                    exit_code: Some(out.exit_code),
                    counts: out.counts,
                    extra: json!({"exit_code": out.exit_code, "reports": [rel]}),
                }
            }
        },
        Err(tools::ToolError::Stopped) => Ended::Aborted(ScanFailure::new(
            FailureKind::Cancelled,
            format!("cancelled while `{name}` ran"),
        )),
        Err(err) => {
            let message = format!("tool `{name}` failed: {err}");
            if required {
                Ended::Broke {
                    failure: ScanFailure::new(FailureKind::ScannerFailed, message),
                    tool_complete: Some(None),
                }
            } else {
                Ended::Failed {
                    message,
                    reason: err.to_string(),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::pipeline::progress::ProgressSink;
    use crate::pipeline::sbom::Ecosystem;
    use crate::pipeline::scanners::ScannerOutput;

    #[derive(Default)]
    struct Events(Mutex<Vec<ScanEvent>>);

    impl ProgressSink for Events {
        fn emit(&self, event: ScanEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    #[derive(Default)]
    struct Runs(Mutex<Vec<(String, ScannerStatus)>>);

    impl ScanObserver for Runs {
        fn phase_finished(&self, _: crate::pipeline::Phase, _: f64) {}
        fn scanner_finished(
            &self,
            name: &str,
            status: ScannerStatus,
            _: f64,
            _: Option<&SeverityCounts>,
        ) {
            self.0.lock().unwrap().push((name.to_string(), status));
        }
        fn findings_suppressed(&self, _: &str, _: u64) {}
        fn osv_max_age(&self, _: f64) {}
        fn osv_ecosystem(&self, _: Ecosystem, _: u64, _: Option<std::time::SystemTime>) {}
    }

    /// A built-in scanner with nothing to do.
    struct Idle;

    impl Scanner for Idle {
        fn name(&self) -> &'static str {
            "secrets"
        }
        fn run(&self, ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput> {
            ctx.reports.skip("nothing to read");
            Ok(ScannerOutput {
                findings: vec![],
                sarif: Value::Null,
                files_scanned: 0,
                bytes_scanned: 0,
            })
        }
    }

    /// A skipped built-in scanner and an external tool that is not installed go through the
    /// same path: the same events, warnings, observer call and `scanners` entry.
    #[tokio::test]
    async fn built_in_and_external_scanners_end_the_same_way() {
        let dir = tempfile::tempdir().unwrap();
        let (source, bundle, empty_path) = (
            dir.path().join("src"),
            dir.path().join("bundle"),
            dir.path().join("bin"),
        );
        for d in [&source, &bundle, &empty_path] {
            std::fs::create_dir_all(d).unwrap();
        }
        let events = Arc::new(Events::default());
        let reporter = Arc::new(Reporter {
            sink: events.clone(),
            log: std::sync::Mutex::new(None),
        });
        let observer = Runs::default();
        let cancel = Arc::new(AtomicBool::new(false));
        let builtin: Vec<Arc<dyn Scanner>> = vec![Arc::new(Idle)];
        let ctx = RunContext {
            source_root: &source,
            scratch: &dir.path().join("tools"),
            bundle_dir: &bundle,
            shared: Arc::new(SharedFacts::new("component", "test")),
            reporter: &reporter,
            cancel: &cancel,
            deadline: Instant::now() + std::time::Duration::from_secs(60),
            tool_path: Some(empty_path.into_os_string()),
            tool_env: &[],
            observer: &observer,
            builtin: &builtin,
        };
        let mut warnings = Vec::new();
        let mut records = Vec::new();
        for name in ["secrets", "bandit"] {
            let record = run_scanner(name, "x", false, &ctx, &mut warnings).await;
            records.push(record.unwrap().entry(true));
        }
        let entries: Vec<(&str, &str, &str)> = records
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap(),
                    e["kind"].as_str().unwrap(),
                    e["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("secrets", "builtin", "skipped"),
                ("bandit", "external", "skipped")
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("secrets: skipped: nothing to read"));
        assert!(warnings[1].starts_with("bandit: skipped: not installed"));
        assert_eq!(
            *observer.0.lock().unwrap(),
            [
                ("secrets".to_string(), ScannerStatus::Skipped),
                ("bandit".to_string(), ScannerStatus::Skipped)
            ]
        );
        let ends: Vec<ScanEvent> = events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, ScanEvent::ToolComplete { .. }))
            .cloned()
            .collect();
        assert_eq!(
            ends,
            [
                ScanEvent::tool_complete("secrets", "skipped", None, 0),
                ScanEvent::tool_complete("bandit", "skipped", None, 0)
            ]
        );
    }
}
