//! `GET /v1/security-scans/{test_id}`: one scan's full status.

use axum::response::{IntoResponse, Response};
use axum::Json;

use super::resource::ScanResource;
use crate::api::extract::VisibleScan;

/// `GET /v1/security-scans/{test_id}`
pub async fn get_scan(VisibleScan(record): VisibleScan) -> Response {
    Json(ScanResource::of(&record)).into_response()
}
