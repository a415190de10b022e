//! What a finding is, for every phase: its [`Severity`], the [`Finding`] a scanner reports and
//! [`SeverityCounts`]. Plain data; imports nothing of the pipeline.

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

/// Finding counts per severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeverityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub info: u64,
    pub total: u64,
}

impl SeverityCounts {
    pub fn add(&mut self, severity: Severity, n: u64) {
        match severity {
            Severity::Critical => self.critical += n,
            Severity::High => self.high += n,
            Severity::Medium => self.medium += n,
            Severity::Low => self.low += n,
            Severity::Info => self.info += n,
        }
        self.total += n;
    }

    pub fn get(&self, severity: Severity) -> u64 {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Info => self.info,
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
