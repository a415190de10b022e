//! The pipeline scope: phase and scanner durations, scanner outcomes, findings by severity and
//! scanner, and suppressed findings. `jobs/observer.rs` records them from what a run reports
//! through the pipeline's `ScanObserver`, whose enums give the label values; the lists below
//! create the series at 0 and are checked against those enums by the observer's tests.

use prometheus::{HistogramVec, IntCounterVec, Registry};

use super::{counter_vec, histogram_vec, STEP_BUCKETS};

/// Values of the `phase` label of `scan_phase_duration_seconds`.
pub const PHASES: [&str; 3] = ["clone", "scan", "bundle"];
/// Outcomes of one scanner run.
pub const SCANNER_OUTCOMES: [&str; 3] = ["success", "failure", "skipped"];
/// Kind label values of `findings_suppressed_total`.
pub const SUPPRESSION_KINDS: [&str; 3] = ["inline", "baseline", "path"];
/// Severity label values of `findings_total`.
pub const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

#[derive(Clone)]
pub struct PipelineMetrics {
    /// `scan_phase_duration_seconds{phase}`.
    pub phase_duration: HistogramVec,
    /// `scanner_runs_total{scanner, outcome}`.
    pub scanner_runs: IntCounterVec,
    /// `scanner_duration_seconds{scanner, outcome}`.
    pub scanner_duration: HistogramVec,
    /// `findings_total{severity, scanner}`.
    pub findings: IntCounterVec,
    /// `findings_suppressed_total{kind}`.
    pub findings_suppressed: IntCounterVec,
}

impl PipelineMetrics {
    pub(super) fn register(r: &Registry, scanners: &[&str]) -> PipelineMetrics {
        let m = PipelineMetrics {
            phase_duration: histogram_vec(
                r,
                "scan_phase_duration_seconds",
                "Duration of each phase of a scan run.",
                &["phase"],
                STEP_BUCKETS,
            ),
            scanner_runs: counter_vec(
                r,
                "scanner_runs_total",
                "Scanner runs by scanner and outcome.",
                &["scanner", "outcome"],
            ),
            scanner_duration: histogram_vec(
                r,
                "scanner_duration_seconds",
                "Duration of one scanner run.",
                &["scanner", "outcome"],
                STEP_BUCKETS,
            ),
            findings: counter_vec(
                r,
                "findings_total",
                "Findings reported by scanners, by severity.",
                &["severity", "scanner"],
            ),
            findings_suppressed: counter_vec(
                r,
                "findings_suppressed_total",
                "Merged findings listed as suppressed, by kind of suppression.",
                &["kind"],
            ),
        };
        for p in PHASES {
            m.phase_duration.with_label_values(&[p]);
        }
        for s in scanners {
            for o in SCANNER_OUTCOMES {
                m.scanner_runs.with_label_values(&[s, o]);
                m.scanner_duration.with_label_values(&[s, o]);
            }
            for sev in SEVERITIES {
                m.findings.with_label_values(&[sev, s]);
            }
        }
        for k in SUPPRESSION_KINDS {
            m.findings_suppressed.with_label_values(&[k]);
        }
        m
    }
}
