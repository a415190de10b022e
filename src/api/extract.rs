//! The extractors every handler starts from: the caller's [`Access`] (what its token may do and
//! see, established by the access middleware in `api/auth.rs`) and a [`VisibleScan`], the scan
//! of the path's `{test_id}` when the caller may see it. [`visible_scan`] is the one place that
//! answers the uniform 404, which does not tell another workspace's scans from missing ones.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::audit::AuditNote;
use super::AppState;
use crate::auth::Access;
use crate::error::ApiError;
use crate::scan::TestId;
use crate::storage::ScanRecord;

/// The caller's access, as the access middleware established it. A request that did not pass
/// through the middleware (never, in the router) is refused rather than served as open.
impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Access>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "the route was served without the access middleware"
            ))
        })
    }
}

/// The scan named by the path's `{test_id}`, when it exists and the caller may see its
/// workspace; otherwise the request is answered with the uniform 404 of [`visible_scan`]. The
/// scan is noted in the request's audit record.
#[derive(Debug, Clone)]
pub struct VisibleScan(pub ScanRecord);

impl FromRequestParts<AppState> for VisibleScan {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let access = Access::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found(""))?;
        let test_id = params
            .iter()
            .find_map(|(name, value)| (name == "test_id").then_some(value))
            .unwrap_or_default();
        let record = visible_scan(state, &access, test_id).await?;
        if let Some(note) = parts.extensions.get::<AuditNote>() {
            note.scan(&record.workspace_id, &record.test_id);
        }
        Ok(VisibleScan(record))
    }
}

/// The scan, when it exists and the caller may see its workspace; otherwise the same 404 as an
/// unknown id, so a token cannot tell another workspace's scans from missing ones.
pub async fn visible_scan(
    state: &AppState,
    access: &Access,
    test_id: &str,
) -> Result<ScanRecord, ApiError> {
    if TestId::parse(test_id).is_none() {
        return Err(not_found(test_id));
    }
    match state.jobs.get(test_id).await? {
        Some(record) if access.may_see(&record.workspace_id) => Ok(record),
        _ => Err(not_found(test_id)),
    }
}

/// The 404 of a scan that does not exist or that the caller may not see.
pub fn not_found(test_id: &str) -> ApiError {
    if TestId::parse(test_id).is_some() {
        ApiError::NotFound(format!("Scan {test_id} not found"))
    } else {
        ApiError::NotFound("Scan not found: test ids look like test_0123456789ab".into())
    }
}

/// 403 unless the caller's token may submit into `workspace_id`.
pub fn check_workspace(access: &Access, workspace_id: &str) -> Result<(), ApiError> {
    if access.may_see(workspace_id) {
        return Ok(());
    }
    let name = access.name().unwrap_or_default();
    tracing::warn!(token.name = %name, "submission refused: workspace outside the token's scope");
    let allowed = access
        .workspace_filter()
        .map(|set| {
            set.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Err(ApiError::Forbidden(format!(
        "token `{name}` may not submit into workspace `{workspace_id}`; its workspaces are: {allowed}"
    )))
}
