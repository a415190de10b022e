//! What a scan is to the pipeline: what to scan ([`ScanSpec`]) and what a finished run hands
//! back ([`ScanReport`]).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::profile::{PolicyVerdict, Profile};
use super::source::prepare::Provenance;
use super::source::ScanSource;

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

/// Seconds since the Unix epoch (the times of `scan.json`).
pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
