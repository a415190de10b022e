//! Request body size limits on every route. Handlers that read a body are bounded by axum's
//! `DefaultBodyLimit` as they read it; this middleware also refuses, before any handler runs, a
//! request whose declared `Content-Length` is over the route's limit (GET and WebSocket upgrade
//! requests included), and turns any plain-text 413 into the JSON `detail` clients parse.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::routes::{policy_of, BodyKind};
use super::AppState;
use crate::error::ApiError;

/// Room for the multipart framing around an archive.
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// The body limit of an archive upload, in bytes: the archive size limit and the framing.
pub fn archive_limit(state: &AppState) -> u64 {
    state
        .config
        .archive
        .max_bytes
        .saturating_add(MULTIPART_OVERHEAD)
}

/// The body limit of a route whose body is `body`, in bytes.
pub fn limit_for(state: &AppState, body: BodyKind) -> u64 {
    match body {
        BodyKind::Archive => archive_limit(state),
        BodyKind::Json => state.config.server.max_body_bytes as u64,
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
    let limit = limit_for(&state, policy_of(&req).body);
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
