//! The scan as the API answers it: [`ScanResource`] (the full status document of `GET`, the
//! list, and cancel) and [`SubmittedScan`] (the answer to a submission and to each admitted batch
//! item). Plain serde structs over a [`ScanRecord`]; the field names are the earlier service's.

use serde::Serialize;
use serde_json::{json, Value};

use crate::api::paging::rfc3339;
use crate::scan::{FailureReason, JobState, UploadStatus};
use crate::storage::ScanRecord;

/// Where a scan's WebSocket stream is served.
pub fn stream_url(test_id: &str) -> String {
    format!("/v1/security-scans/{test_id}/stream")
}

/// The identifiers of a scan, first in every answer about it.
#[derive(Debug, Serialize)]
pub struct ScanIds<'a> {
    pub test_id: &'a str,
    pub workspace_id: &'a str,
    pub component_id: &'a str,
    pub assessment_id: &'a str,
}

impl<'a> ScanIds<'a> {
    pub fn of(r: &'a ScanRecord) -> ScanIds<'a> {
        ScanIds {
            test_id: &r.test_id,
            workspace_id: &r.workspace_id,
            component_id: &r.component_id,
            assessment_id: &r.assessment_id,
        }
    }
}

/// The full status document of one scan.
#[derive(Debug, Serialize)]
pub struct ScanResource<'a> {
    #[serde(flatten)]
    pub ids: ScanIds<'a>,
    pub status: JobState,
    pub failure_reason: Option<FailureReason>,
    pub errors: &'a [String],
    pub source_type: &'a str,
    pub git_url: Option<&'a str>,
    pub directory_path: Option<&'a str>,
    pub archive_path: Option<&'a str>,
    pub manifest_path: Option<&'a str>,
    /// What identifies the content the scan saw (see [`provenance`]).
    pub provenance: Value,
    pub branch: Option<&'a str>,
    pub commit: Option<&'a str>,
    pub resolved_commit: Option<&'a str>,
    pub resolved_branch: Option<&'a str>,
    pub requested_by: Option<&'a str>,
    pub profile: &'a str,
    pub manifest_digest: &'a str,
    /// Tools an earlier-service manifest named that no scanner here runs.
    pub unsupported_manifest_tools: Value,
    pub timeout_seconds: u64,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub attempts: u32,
    /// The summary's finding totals, once the scan succeeded.
    pub findings: Option<Value>,
    /// The summary's policy verdict, once the scan succeeded.
    pub policy: Option<Value>,
    /// How each scanner ended, once the scan succeeded.
    pub scanners: Option<Value>,
    pub artifacts: Option<&'a [String]>,
    pub upload_status: UploadStatus,
    pub upload_permission_id: Option<&'a str>,
    pub verification_proof: Option<&'a Value>,
    pub remote_artifacts: Option<&'a Value>,
    pub upload_reason: Option<&'a str>,
    pub upload_progress: Option<&'a Value>,
    pub upload_tier: Option<&'a str>,
    pub upload_in_progress: bool,
    pub stream_url: String,
}

impl<'a> ScanResource<'a> {
    pub fn of(r: &'a ScanRecord) -> ScanResource<'a> {
        let summary = |key: &str| r.summary.as_ref().and_then(|s| s.get(key)).cloned();
        ScanResource {
            ids: ScanIds::of(r),
            status: r.status,
            failure_reason: r.failure_reason,
            errors: &r.errors,
            source_type: &r.source_type,
            git_url: r.git_url.as_deref(),
            directory_path: r.directory_path.as_deref(),
            archive_path: r.archive_path.as_deref(),
            manifest_path: r.manifest_path.as_deref(),
            provenance: provenance(r),
            branch: r.branch.as_deref(),
            commit: r.requested_commit.as_deref(),
            resolved_commit: r.resolved_commit.as_deref(),
            resolved_branch: r.resolved_branch.as_deref(),
            requested_by: r.requested_by.as_deref(),
            profile: &r.profile,
            manifest_digest: &r.manifest_digest,
            unsupported_manifest_tools: unsupported_tools(r),
            timeout_seconds: r.timeout_seconds,
            submitted_at: rfc3339(r.submitted_at),
            started_at: r.started_at.map(rfc3339),
            completed_at: r.finished_at.map(rfc3339),
            attempts: r.attempts,
            findings: r
                .summary
                .as_ref()
                .and_then(|s| s.pointer("/findings/total"))
                .cloned(),
            policy: summary("policy"),
            scanners: summary("scanners"),
            artifacts: r.artifacts.as_deref(),
            upload_status: r.upload_status,
            upload_permission_id: r.upload_permission_id.as_deref(),
            verification_proof: r.verification_proof.as_ref(),
            remote_artifacts: r.remote_artifacts.as_ref(),
            upload_reason: r.upload_reason.as_deref(),
            upload_progress: r.upload_progress.as_ref(),
            upload_tier: r.upload_tier.as_deref(),
            upload_in_progress: r.upload_started_at.is_some(),
            stream_url: stream_url(&r.test_id),
        }
    }
}

/// Tools an earlier-service manifest named that no scanner here runs: from the summary once the
/// scan ran (a manifest_path is read then), else from the submitted manifest.
fn unsupported_tools(r: &ScanRecord) -> Value {
    r.summary
        .as_ref()
        .and_then(|s| s.get("unsupported_manifest_tools"))
        .or_else(|| {
            r.manifest
                .as_ref()
                .and_then(|m| m.get("unsupported_manifest_tools"))
        })
        .cloned()
        .unwrap_or_else(|| json!([]))
}

/// What identifies the content a scan saw: the resolved commit, the archive's sha256 (known at
/// submission) or the directory's content hash (known once the scan ran).
fn provenance(r: &ScanRecord) -> Value {
    let from_summary = r
        .summary
        .as_ref()
        .and_then(|s| s.get("provenance"))
        .cloned();
    if let Some(p) = from_summary.filter(|p| !p.is_null()) {
        return p;
    }
    match r.source_type.as_str() {
        "git" => match &r.resolved_commit {
            Some(c) => json!({"type": "git_commit", "id": c}),
            None => Value::Null,
        },
        "archive" => r
            .archive_path
            .as_deref()
            .and_then(|p| p.strip_prefix("uploads/"))
            .and_then(|p| p.split_once('.'))
            .map(|(sha, _)| json!({"type": "archive_sha256", "id": format!("sha256:{sha}")}))
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// The answer to an admitted submission.
#[derive(Debug, Serialize)]
pub struct SubmittedScan<'a> {
    #[serde(flatten)]
    pub ids: ScanIds<'a>,
    pub status: JobState,
    pub profile: &'a str,
    pub source_type: &'a str,
    pub manifest_digest: &'a str,
    pub upload_status: UploadStatus,
    pub stream_url: String,
}

impl<'a> SubmittedScan<'a> {
    pub fn of(record: &'a ScanRecord) -> SubmittedScan<'a> {
        SubmittedScan {
            ids: ScanIds::of(record),
            status: record.status,
            profile: &record.profile,
            source_type: &record.source_type,
            manifest_digest: &record.manifest_digest,
            upload_status: record.upload_status,
            stream_url: stream_url(&record.test_id),
        }
    }
}
