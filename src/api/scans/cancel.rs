//! `POST /v1/security-scans/{test_id}/cancel`: 200 when a queued scan was cancelled, 202 when a
//! running scan was asked to stop, 409 when it had already finished.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::resource::ScanResource;
use crate::api::audit::AuditNote;
use crate::api::extract::{not_found, VisibleScan};
use crate::api::AppState;
use crate::error::ApiError;
use crate::jobs::CancelOutcome;
use crate::scan::JobState;

/// The answer while a running scan stops: its status document and `cancel_requested`.
#[derive(Debug, Serialize)]
struct CancelRequested<'a> {
    #[serde(flatten)]
    scan: ScanResource<'a>,
    cancel_requested: bool,
}

/// `POST /v1/security-scans/{test_id}/cancel` (see the module docs).
pub async fn cancel_scan(
    State(state): State<AppState>,
    note: AuditNote,
    VisibleScan(scan): VisibleScan,
) -> Result<Response, ApiError> {
    let outcome = state.jobs.cancel(&scan.test_id).await?;
    if let CancelOutcome::AlreadyFinished(r)
    | CancelOutcome::Cancelled(r)
    | CancelOutcome::Requested(r) = &outcome
    {
        note.scan(&r.workspace_id, &r.test_id);
    }
    match outcome {
        CancelOutcome::NotFound => Err(not_found(&scan.test_id)),
        CancelOutcome::AlreadyFinished(r) => Err(ApiError::Conflict(format!(
            "Scan {} already finished with status {}; there is nothing to cancel",
            r.test_id,
            r.status.as_str()
        ))),
        CancelOutcome::Cancelled(r) => {
            Ok((StatusCode::OK, Json(ScanResource::of(&r))).into_response())
        }
        CancelOutcome::Requested(r) => {
            debug_assert!(r.status != JobState::Succeeded);
            let body = CancelRequested {
                scan: ScanResource::of(&r),
                cancel_requested: true,
            };
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
    }
}
