//! What the pipeline tells whoever counts: a narrow [`ScanObserver`] the caller hands in (the
//! service and the `scan` command turn it into metrics), so the pipeline knows nothing of how
//! it is measured. Label values come from the enums declared here and in the modules that own
//! them ([`Phase`], [`ScannerStatus`], the severities, the suppression kinds, the ecosystems).

use std::time::SystemTime;

use super::finding::SeverityCounts;
use super::sbom::Ecosystem;

/// The phases of a run (the `phase` label of `scan_phase_duration_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Clone,
    Scan,
    Bundle,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Clone, Phase::Scan, Phase::Bundle];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Clone => "clone",
            Phase::Scan => "scan",
            Phase::Bundle => "bundle",
        }
    }
}

/// How one scanner run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScannerStatus {
    Succeeded,
    Failed,
    Skipped,
}

impl ScannerStatus {
    pub const ALL: [ScannerStatus; 3] = [
        ScannerStatus::Succeeded,
        ScannerStatus::Failed,
        ScannerStatus::Skipped,
    ];

    /// The `status` of the `scanners` entries and of `tool_complete` events.
    pub fn as_str(self) -> &'static str {
        match self {
            ScannerStatus::Succeeded => "succeeded",
            ScannerStatus::Failed => "failed",
            ScannerStatus::Skipped => "skipped",
        }
    }

    /// The `outcome` label of the scanner metrics and of the scanner span.
    pub fn outcome(self) -> &'static str {
        match self {
            ScannerStatus::Succeeded => "success",
            ScannerStatus::Failed => "failure",
            ScannerStatus::Skipped => "skipped",
        }
    }
}

/// Receives what a run measured. Every method is called from the run's own task and must not
/// block.
pub trait ScanObserver: Send + Sync {
    /// A phase ended (successfully or not) after `seconds`.
    fn phase_finished(&self, phase: Phase, seconds: f64);
    /// A scanner ended; `findings` are its counts by severity when it produced any.
    fn scanner_finished(
        &self,
        scanner: &str,
        status: ScannerStatus,
        seconds: f64,
        findings: Option<&SeverityCounts>,
    );
    /// `count` findings were suppressed by `kind` (one of
    /// [`super::bundle::findings::SUPPRESSION_KINDS`]).
    fn findings_suppressed(&self, kind: &str, count: u64);
    /// The configured maximum age of the OSV data (0 when none is configured).
    fn osv_max_age(&self, seconds: f64);
    /// What the OSV database holds for one ecosystem and when it was last updated.
    fn osv_ecosystem(&self, ecosystem: Ecosystem, records: u64, updated_at: Option<SystemTime>);
}
