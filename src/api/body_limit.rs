//! Request body size limits on every route. Handlers that read a body are bounded by axum's
//! `DefaultBodyLimit` as they read it; this middleware also refuses, before any handler runs, a
//! request whose declared `Content-Length` is over the route's limit (GET and WebSocket upgrade
//! requests included), and turns any plain-text 413 into the JSON `detail` clients parse.

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{header, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::ApiError;

/// The route whose limit is the archive size limit instead of `MAX_BODY_BYTES`.
pub const ARCHIVE_ROUTE: &str = "/v1/security-scans/upload-archive";

/// Room for the multipart framing around an archive.
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// The body limit of `route`, in bytes.
pub fn limit_for(state: &AppState, route: Option<&str>) -> u64 {
    if route == Some(ARCHIVE_ROUTE) {
        state
            .config
            .archive
            .max_bytes
            .saturating_add(MULTIPART_OVERHEAD)
    } else {
        state.config.server.max_body_bytes as u64
    }
}

fn too_large(limit: u64) -> Response {
    ApiError::PayloadTooLarge(format!(
        "request body is larger than {limit} bytes; send a smaller body"
    ))
    .into_response()
}

pub async fn limit_body_size(
    State(state): State<AppState>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    let limit = limit_for(&state, route);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return too_large(limit);
    }
    let response = next.run(req).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return too_large(limit);
    }
    response
}
