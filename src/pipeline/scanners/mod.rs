//! Scanners: the `Scanner` trait and one file per scanner. A scanner reads a checked-out source
//! tree and returns findings plus its SARIF log; it never uploads, never touches the job store and
//! never knows which job it runs for.

pub mod secrets;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Severity of one finding, in the order used by policy thresholds (most severe first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    /// Every severity, most severe first; the metric label values.
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }

    /// SARIF `level` for this severity.
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::Critical | Severity::High => "error",
            Severity::Medium => "warning",
            Severity::Low | Severity::Info => "note",
        }
    }
}

/// One problem found in the source tree. `snippet` is already redacted: no scanner ever hands a
/// secret value in clear to the rest of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule identifier, e.g. `aws-access-key-id`.
    pub rule_id: String,
    pub severity: Severity,
    /// Human-readable message (never contains the secret).
    pub message: String,
    /// Path relative to the source root, with `/` separators.
    pub path: String,
    /// 1-based line number.
    pub line: u32,
    /// 1-based column (in characters) where the match starts.
    pub column: u32,
    /// The matched line with the secret value masked.
    pub snippet: String,
    /// Stable fingerprint: hex sha256 of rule id, path and secret value (not reversible to the value).
    pub fingerprint: String,
}

/// What a scanner needs from the pipeline.
pub struct ScanContext<'a> {
    /// Root of the checked-out source tree.
    pub source_root: &'a Path,
    /// Set when the scan is cancelled or timed out; long loops check it and stop early.
    pub cancel: &'a AtomicBool,
}

impl ScanContext<'_> {
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// What one scanner run produced.
#[derive(Debug)]
pub struct ScannerOutput {
    pub findings: Vec<Finding>,
    /// The complete SARIF 2.1.0 log, written to `reports/sast/<scanner>.sarif.json`.
    pub sarif: serde_json::Value,
    pub files_scanned: u64,
    pub bytes_scanned: u64,
}

/// A scanner that runs synchronously on the blocking pool.
pub trait Scanner: Send + Sync {
    /// Stable scanner name; used as file name and as the `scanner` metric label.
    fn name(&self) -> &'static str;
    fn run(&self, ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput>;
}
