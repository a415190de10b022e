//! The one error type of the HTTP edge and its single mapping to a status code and JSON body.
//!
//! Inside workers and the pipeline we use `anyhow` with context; handlers turn failures into an
//! [`ApiError`] here, and this is the only place that picks an HTTP status for a failure. The body
//! shapes are those the earlier FastAPI service's clients already parse: `{"detail": "..."}` and,
//! for validation failures, `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// One validation problem, located like FastAPI/pydantic does (`["body", "git_url"]`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub loc: Vec<serde_json::Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    /// A problem with a top-level body field.
    pub fn body(field: &str, kind: &str, msg: impl Into<String>) -> Self {
        FieldError {
            loc: vec![json!("body"), json!(field)],
            msg: msg.into(),
            kind: kind.to_string(),
        }
    }

    /// A problem with a query parameter.
    pub fn query(field: &str, kind: &str, msg: impl Into<String>) -> Self {
        FieldError {
            loc: vec![json!("query"), json!(field)],
            msg: msg.into(),
            kind: kind.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: the request is well-formed HTTP but its content is invalid; every field is named.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 404 with the given detail.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource is not in a state that allows the operation.
    #[error("{0}")]
    Conflict(String),
    /// 503 with `Retry-After`: the queue is full; the client should retry later.
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after_seconds: u64,
    },
    /// 401 with `WWW-Authenticate: Bearer`: no bearer token, or one the server does not know.
    #[error("{detail}")]
    Unauthorized {
        detail: String,
        /// A token was presented but is not valid (`error="invalid_token"` in the challenge).
        invalid_token: bool,
    },
    /// 429 with `Retry-After`: the caller is over a fair-use limit (request rate, or its
    /// workspace's active scans); other callers are still served.
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_seconds: u64,
    },
    /// 413: the request body exceeds the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 403: an authority the service asks refused the operation (Trust denied an upload).
    #[error("{0}")]
    Forbidden(String),
    /// 502: a service this one depends on failed or answered something unusable.
    #[error("{0}")]
    BadGateway(String),
    /// 504: a service this one depends on did not answer in time.
    #[error("{0}")]
    GatewayTimeout(String),
    /// 503 without `Retry-After`: the feature is not configured on this server; the detail names
    /// the setting to change.
    #[error("{0}")]
    NotConfigured(String),
    /// 500: details are logged here, once, and never sent to the client. A cause that is a full
    /// disk (see [`is_disk_full`]) answers 507 with a detail that says so instead.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Whether `err` (anywhere in its chain) says the storage is full: a file system out of space
/// or over quota, SQLite's `SQLITE_FULL`, or PostgreSQL's `disk_full`.
pub fn is_disk_full(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind;
    err.chain().any(|cause| {
        let io_kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        matches!(
            io_kind,
            Some(ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        ) || cause
            .downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
            == Some(rusqlite::ErrorCode::DiskFull)
            || cause
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(tokio_postgres::Error::code)
                == Some(&tokio_postgres::error::SqlState::DISK_FULL)
    })
}

/// The detail of a request that failed on a full disk.
const DISK_FULL_DETAIL: &str = "the server's disk is full, so nothing was stored; free space in \
     the data directory (CERTUS_ASSURANCE_DATA_DIR) or the database, then retry";

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(err) if is_disk_full(err) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn invalid(field: &str, kind: &str, msg: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::body(field, kind, msg)])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Validation(errors) => json!({ "detail": errors }),
            ApiError::Internal(err) if is_disk_full(err) => {
                tracing::error!(error = ?err, "request failed: the disk is full");
                json!({ "detail": DISK_FULL_DETAIL })
            }
            ApiError::Internal(err) => {
                tracing::error!(error = ?err, "request failed with an internal error");
                json!({ "detail": "Internal server error; the failure was logged. Retry, and report it if it persists." })
            }
            other => json!({ "detail": other.to_string() }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        match &self {
            ApiError::Unavailable {
                retry_after_seconds,
                ..
            }
            | ApiError::TooManyRequests {
                retry_after_seconds,
                ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            ApiError::Unauthorized { invalid_token, .. } => {
                let challenge = if *invalid_token {
                    r#"Bearer realm="certus-assurance", error="invalid_token""#
                } else {
                    r#"Bearer realm="certus-assurance""#
                };
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_use_the_fastapi_shape() {
        let err = ApiError::invalid("git_url", "missing", "Field required");
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn a_full_disk_answers_507_with_a_detail_that_says_so() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let err = ApiError::Internal(anyhow::Error::new(full).context("inserting a scan"));
        assert_eq!(err.status(), StatusCode::INSUFFICIENT_STORAGE);
        let io = std::io::Error::from_raw_os_error(28);
        let err = ApiError::Internal(anyhow::Error::new(io).context("/secret/path"));
        assert_eq!(err.status(), StatusCode::INSUFFICIENT_STORAGE);
        let body = err.into_response().into_body();
        let bytes = futures_util::FutureExt::now_or_never(axum::body::to_bytes(body, 4096))
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("disk is full") && text.contains("free space"),
            "{text}"
        );
        assert!(!text.contains("/secret/path"), "{text}");
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert_eq!(
            ApiError::Internal(busy.into()).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::Internal(anyhow::anyhow!("disk /secret/path failed"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
