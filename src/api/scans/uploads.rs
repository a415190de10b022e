//! `POST /v1/security-scans/{test_id}/upload-request`: validates the request and translates the
//! job engine's [`UploadRequestOutcome`] into HTTP. Never touches Trust, S3 or storage directly.
//!
//! Answers: 202 when Trust permitted (the upload continues in the background; poll the scan),
//! 200 with the existing result when the scan was uploaded already, 403 when Trust denied, 502 or
//! 504 when Trust failed or did not answer (the upload is `failed` and may be requested again),
//! 404 for an unknown scan, 409 unless the scan SUCCEEDED or while another upload of it is in
//! flight, 422 for a bad body, 503 when uploads are not configured.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::submit::read_body;
use super::validate::{json_object, parse_json_body};
use crate::api::audit::AuditNote;
use crate::api::extract::{not_found, visible_scan};
use crate::api::AppState;
use crate::auth::Access;
use crate::error::{ApiError, FieldError};
use crate::jobs::upload::{UploadRequest, UploadRequestOutcome, UploadTier};
use crate::scan::{TestId, UploadStatus};
use crate::storage::ScanRecord;
use crate::upload::trust::TrustError;

/// The upload part of a scan, as answered by upload-request.
#[derive(Debug, Serialize)]
struct UploadBody<'a> {
    test_id: &'a str,
    upload_status: UploadStatus,
    upload_permission_id: Option<&'a str>,
    upload_tier: Option<&'a str>,
    verification_proof: Option<&'a Value>,
    remote_artifacts: Option<&'a Value>,
    upload_progress: Option<&'a Value>,
    upload_reason: Option<&'a str>,
    scan_url: String,
}

impl<'a> UploadBody<'a> {
    fn of(r: &'a ScanRecord) -> UploadBody<'a> {
        UploadBody {
            test_id: &r.test_id,
            upload_status: r.upload_status,
            upload_permission_id: r.upload_permission_id.as_deref(),
            upload_tier: r.upload_tier.as_deref(),
            verification_proof: r.verification_proof.as_ref(),
            remote_artifacts: r.remote_artifacts.as_ref(),
            upload_progress: r.upload_progress.as_ref(),
            upload_reason: r.upload_reason.as_deref(),
            scan_url: format!("/v1/security-scans/{}", r.test_id),
        }
    }
}

/// Parses `{"tier": "basic"|"verified", "signer": optional}`; an empty body asks for `basic`.
fn parse_request(body: &[u8]) -> Result<UploadRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(UploadRequest {
            tier: UploadTier::Basic,
            signer: None,
        });
    }
    let value = parse_json_body(body)?;
    let obj = json_object(&value)?;
    let mut errors = Vec::new();
    let tier = match obj.get("tier") {
        None | Some(Value::Null) => Some(UploadTier::Basic),
        Some(Value::String(t)) => {
            let tier = UploadTier::parse(t);
            if tier.is_none() {
                errors.push(FieldError::body(
                    "tier",
                    "enum",
                    "Input should be 'basic' or 'verified'",
                ));
            }
            tier
        }
        Some(_) => {
            errors.push(FieldError::body(
                "tier",
                "enum",
                "Input should be 'basic' or 'verified'",
            ));
            None
        }
    };
    let signer = match obj.get("signer") {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if (1..=128).contains(&s.chars().count()) && !s.chars().any(char::is_control) =>
        {
            Some(s.clone())
        }
        Some(_) => {
            errors.push(FieldError::body(
                "signer",
                "string_type",
                "signer must be a string of 1 to 128 characters without control characters",
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(UploadRequest {
        tier: tier.expect("checked"),
        signer,
    })
}

/// `POST /v1/security-scans/{test_id}/upload-request`
#[tracing::instrument(name = "request_upload", skip_all, fields(job.id = %test_id))]
pub async fn request_upload(
    State(state): State<AppState>,
    access: Access,
    note: AuditNote,
    Path(test_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if access.workspace_filter().is_some() {
        let r = visible_scan(&state, &access, &test_id).await?;
        note.scan(&r.workspace_id, &r.test_id);
    } else if TestId::parse(&test_id).is_none() {
        return Err(not_found(&test_id));
    } else if let Some(r) = state.jobs.get(&test_id).await? {
        note.scan(&r.workspace_id, &r.test_id);
    }
    let body = read_body(&state, body)?;
    let request = parse_request(&body)?;
    use UploadRequestOutcome as O;
    match state.jobs.request_upload(&test_id, request).await? {
        O::Disabled => Err(ApiError::NotConfigured(
            "uploads are disabled on this server: set CERTUS_ASSURANCE_ENABLE_S3_UPLOAD=true \
             together with CERTUS_ASSURANCE_TRUST_BASE_URL and the CERTUS_ASSURANCE_DATALAKE_* \
             bucket settings (see docs/configuration.md)"
                .into(),
        )),
        O::NotFound => Err(not_found(&test_id)),
        O::NotSucceeded(r) => Err(ApiError::Conflict(format!(
            "Scan {} is {}; only a SUCCEEDED scan can be uploaded{}",
            r.test_id,
            r.status.as_str(),
            if r.status.is_terminal() {
                ""
            } else {
                ": wait until it finishes"
            }
        ))),
        O::AlreadyDenied(r) => Err(ApiError::Conflict(format!(
            "Trust denied the upload of scan {}{}; a denial is final: fix the cause and submit a new scan",
            r.test_id,
            r.upload_reason
                .as_deref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        ))),
        O::InFlight(r) => Err(ApiError::Conflict(format!(
            "an upload of scan {} is already in progress (upload_status {}); follow it with GET /v1/security-scans/{}",
            r.test_id,
            r.upload_status.as_str(),
            r.test_id
        ))),
        O::AlreadyUploaded(r) => Ok((StatusCode::OK, Json(UploadBody::of(&r))).into_response()),
        O::SigningKeyMissing => Err(ApiError::NotConfigured(
            "tier `verified` needs a signed declaration and this server has no signing key: set \
             CERTUS_ASSURANCE_SIGNING_KEY_FILE, or ask for tier `basic`"
                .into(),
        )),
        O::Draining => Err(ApiError::Unavailable {
            detail: "the service is shutting down and starts no upload; retry on another replica or after the restart".into(),
            retry_after_seconds: 10,
        }),
        O::Permitted(r) => Ok((StatusCode::ACCEPTED, Json(UploadBody::of(&r))).into_response()),
        O::Denied(r) => Err(ApiError::Forbidden(format!(
            "{}; upload_status is `denied` and nothing was uploaded",
            r.upload_reason
                .as_deref()
                .unwrap_or("Trust denied the upload")
        ))),
        O::TrustFailed(r, err) => {
            let detail = format!(
                "{err}; upload_status of {} is `failed` and nothing was uploaded: request the upload again later",
                r.test_id
            );
            Err(match err {
                TrustError::Timeout(_) => ApiError::GatewayTimeout(detail),
                _ => ApiError::BadGateway(detail),
            })
        }
        O::BundleUnusable(r, reason) => Err(ApiError::Conflict(format!(
            "the bundle of scan {} cannot be uploaded: {reason}",
            r.test_id
        ))),
        O::StoreUnavailable(r, reason) => Err(ApiError::Unavailable {
            detail: format!("the bundle of scan {} cannot be read: {reason}", r.test_id),
            retry_after_seconds: crate::api::findings::STORE_RETRY_AFTER_SECONDS,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_default_to_basic_and_reject_unknown_tiers() {
        assert_eq!(parse_request(b"").unwrap().tier, UploadTier::Basic);
        assert_eq!(
            parse_request(br#"{"tier":"verified","signer":"ci"}"#)
                .unwrap()
                .tier,
            UploadTier::Verified
        );
        for bad in [
            &br#"{"tier":"gold"}"#[..],
            br#"{"tier":3}"#,
            br#"{"signer":""}"#,
            br#"[1]"#,
            br#"{"#,
        ] {
            let err = parse_request(bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
    }
}
