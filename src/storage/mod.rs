//! The job store: the `JobStore` interface, the scan record it keeps, the backend chosen from the
//! configuration, and the embedded migrations. It knows nothing of HTTP or scanning.

pub mod sqlite;

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::jobs::state::{FailureReason, JobState, UploadStatus};

/// One scan as stored. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRecord {
    pub test_id: String,
    pub workspace_id: String,
    pub component_id: String,
    pub assessment_id: String,
    pub source_type: String,
    /// The git URL with any credentials removed (credentials are never persisted).
    pub git_url: Option<String>,
    pub branch: Option<String>,
    pub requested_commit: Option<String>,
    pub directory_path: Option<String>,
    pub archive_path: Option<String>,
    pub requested_by: Option<String>,
    pub profile: String,
    pub manifest_digest: String,
    pub timeout_seconds: u64,
    pub status: JobState,
    pub failure_reason: Option<FailureReason>,
    pub errors: Vec<String>,
    pub resolved_commit: Option<String>,
    pub resolved_branch: Option<String>,
    /// `summary.json` content once the scan succeeded.
    pub summary: Option<serde_json::Value>,
    /// Bundle file paths relative to the scan's artifact directory.
    pub artifacts: Option<Vec<String>>,
    pub submitted_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub attempts: u32,
    pub upload_status: UploadStatus,
    pub upload_permission_id: Option<String>,
    pub verification_proof: Option<serde_json::Value>,
    pub remote_artifacts: Option<serde_json::Value>,
    /// The effective profile when an inline manifest defined or changed it (`None` for a
    /// built-in preset, which is looked up by name).
    pub manifest: Option<serde_json::Value>,
    /// A manifest file inside the source tree, read when the scan runs.
    pub manifest_path: Option<String>,
}

/// How a running scan ended, as written by [`JobStore::finish`].
#[derive(Debug, Clone)]
pub struct Completion {
    pub status: JobState,
    pub failure_reason: Option<FailureReason>,
    pub errors: Vec<String>,
    pub summary: Option<serde_json::Value>,
    pub artifacts: Option<Vec<String>>,
    pub finished_at: f64,
    /// The digest of the profile that ran, when it differs from the submitted one (a
    /// `manifest_path` read at run time).
    pub manifest_digest: Option<String>,
}

/// Counts used to rebuild the state gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub by_status: HashMap<JobState, i64>,
    pub by_upload_status: HashMap<UploadStatus, i64>,
}

/// What start-up recovery did to scans left RUNNING by a dead process.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub failed: Vec<String>,
    pub requeued: Vec<String>,
}

/// The storage interface the job manager uses. Every state change is a conditional update on
/// the stored status, so a change that lost a race reports `false` instead of overwriting.
pub trait JobStore: Send + Sync + 'static {
    /// Inserts a new QUEUED scan.
    fn insert(&self, scan: ScanRecord) -> BoxFuture<'_, anyhow::Result<()>>;
    fn get(&self, test_id: String) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>>;
    /// Atomically moves the oldest QUEUED scan to RUNNING and returns it.
    fn claim_next(&self, now: f64) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>>;
    /// Records the commit and branch a clone resolved to.
    fn set_resolved(
        &self,
        test_id: String,
        commit: String,
        branch: Option<String>,
    ) -> BoxFuture<'_, anyhow::Result<()>>;
    /// RUNNING → SUCCEEDED/FAILED; `false` if the scan was not RUNNING.
    fn finish(&self, test_id: String, done: Completion) -> BoxFuture<'_, anyhow::Result<bool>>;
    /// QUEUED → FAILED (`cancelled`); `false` if the scan was not QUEUED.
    fn cancel_queued(
        &self,
        test_id: String,
        now: f64,
        message: String,
    ) -> BoxFuture<'_, anyhow::Result<bool>>;
    /// RUNNING → QUEUED (shutdown deadline); `false` if the scan was not RUNNING.
    fn requeue(&self, test_id: String, message: String) -> BoxFuture<'_, anyhow::Result<bool>>;
    /// At start-up, every RUNNING scan becomes FAILED (`interrupted`) or QUEUED again.
    fn recover_running(&self, requeue: bool, now: f64) -> BoxFuture<'_, anyhow::Result<Recovered>>;
    fn counts(&self) -> BoxFuture<'_, anyhow::Result<StoreCounts>>;
    /// Submission time of the oldest QUEUED scan and start time of the oldest RUNNING one.
    fn oldest(&self) -> BoxFuture<'_, anyhow::Result<(Option<f64>, Option<f64>)>>;
}
