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
    /// 500: details are logged here, once, and never sent to the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

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
    fn internal_errors_hide_their_cause() {
        let err = ApiError::Internal(anyhow::anyhow!("disk /secret/path failed"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
