//! Read-only operational views: `/health`, `/health/ready`, `/metrics`, `/stats` and
//! `/openapi.json`. `/metrics` and `/stats` are rendered from the same registry; neither walks
//! the stored scans.

use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

/// Liveness: cheap, no I/O.
pub async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "service": "certus-assurance",
        "version": env!("CARGO_PKG_VERSION"),
        "scanning_mode": "builtin",
        "workers": state.config.queue.max_workers,
        "draining": state.jobs.is_draining(),
    }))
}

/// Readiness: the store answers, the service is not draining, and the queue has room.
pub async fn ready(State(state): State<AppState>) -> Response {
    let store = state.jobs.store_ready().await;
    let draining = state.jobs.is_draining() || state.shutdown.is_cancelled();
    let queue_full = state.jobs.queue_full().await;
    let ready = store && !draining && !queue_full;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "store": if store { "ok" } else { "unreachable" },
            "draining": draining,
            "queue_full": queue_full,
        }
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Prometheus text exposition 0.0.4.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.jobs.refresh_scrape_gauges().await;
    let text = state.metrics.render_text();
    (
        [(header::CONTENT_TYPE, crate::metrics::TEXT_CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// The JSON stats, read through the handles of the gauges `/metrics` renders (on a shared
/// store, with the status gauges read from the store's counts first, as for `/metrics`).
pub async fn stats(State(state): State<AppState>) -> Json<crate::metrics::Stats> {
    state.jobs.refresh_status_gauges().await;
    Json(state.metrics.stats(SystemTime::now()))
}

/// The OpenAPI 3.1 document of the HTTP contract (`src/api/openapi.json`, written by hand and
/// checked against the router by the `openapi` integration tests).
pub const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");

/// `GET /openapi.json`
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI_DOCUMENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_document_is_json_with_paths() {
        let doc: serde_json::Value =
            serde_json::from_str(super::OPENAPI_DOCUMENT).expect("src/api/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/security-scans"]["post"].is_object());
    }
}
