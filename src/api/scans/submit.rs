//! `POST /v1/security-scans`: validate, check the caller's workspace and the named archive,
//! admit, answer 202 with the [`SubmittedScan`]. Refusals before admission count in
//! `scan_submissions_rejected_total`.

use crate::metrics::labels::RejectReason;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::resource::SubmittedScan;
use super::validate::{validate_submission_json, SubmissionPolicy};
use crate::api::audit::AuditNote;
use crate::api::extract::check_workspace;
use crate::api::AppState;
use crate::auth::Access;
use crate::error::ApiError;
use crate::jobs::{NewScan, SubmitError};
use crate::pipeline::archive_not_stored;

/// `Retry-After` of a submission over its workspace's limit of active scans.
pub(super) const WORKSPACE_LIMIT_RETRY_SECONDS: u64 = 30;

/// `POST /v1/security-scans`: validate, admit, answer 202.
#[tracing::instrument(name = "submit_scan", skip_all)]
pub async fn submit_scan(
    State(state): State<AppState>,
    access: Access,
    note: AuditNote,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rejected = |reason: RejectReason| count_rejected(&state, reason);
    let body = match read_body(&state, body) {
        Ok(b) => b,
        Err(e) => {
            rejected(RejectReason::Invalid);
            return Err(e);
        }
    };
    let new = match validate_submission_json(&body, &SubmissionPolicy::from_config(&state.config)) {
        Ok(n) => n,
        Err(e) => {
            rejected(RejectReason::Invalid);
            return Err(e);
        }
    };
    note.workspace(&new.workspace_id);
    if let Err(e) = check_workspace(&access, &new.workspace_id) {
        rejected(RejectReason::Unauthorized);
        return Err(e);
    }
    if let Err(e) = check_archive(&state, &new).await {
        rejected(RejectReason::Invalid);
        return Err(e);
    }
    let record = state.jobs.submit(new).await.map_err(|e| match e {
        SubmitError::QueueFull(_) => ApiError::Unavailable {
            detail: e.to_string(),
            retry_after_seconds: 30,
        },
        SubmitError::Draining => ApiError::Unavailable {
            detail: e.to_string(),
            retry_after_seconds: 10,
        },
        SubmitError::WorkspaceLimit { .. } => ApiError::TooManyRequests {
            detail: e.to_string(),
            retry_after_seconds: WORKSPACE_LIMIT_RETRY_SECONDS,
        },
        SubmitError::Internal(err) => ApiError::Internal(err),
    })?;
    note.scan(&record.workspace_id, &record.test_id);
    Ok((StatusCode::ACCEPTED, Json(SubmittedScan::of(&record))).into_response())
}

/// Counts a submission refused before admission, by `reason`.
pub(super) fn count_rejected(state: &AppState, reason: RejectReason) {
    state.metrics.scans.rejected.get(reason).inc();
}

/// An `archive` scan may name only an archive its workspace uploaded and that is still stored.
/// An unknown hash and another workspace's hash get the same answer, so hashes cannot be
/// probed.
pub(super) async fn check_archive(state: &AppState, new: &NewScan) -> Result<(), ApiError> {
    let Some(path) = &new.archive_path else {
        return Ok(());
    };
    if state
        .jobs
        .archive_available(&new.workspace_id, path)
        .await
        .map_err(crate::api::findings::store_error)?
    {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "archive_path",
            "value_error",
            archive_not_stored(path),
        ))
    }
}

/// Reads a request body, mapping extractor failures (size limit, broken stream) to clean errors.
pub(crate) fn read_body(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "request body is larger than {} bytes; send a smaller body",
                state.config.server.max_body_bytes
            ))
        } else {
            ApiError::invalid("body", "body_error", rejection.body_text())
        }
    })
}
