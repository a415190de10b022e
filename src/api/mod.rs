//! The router and its middleware order: trace, metrics, audit trail, same-origin checks (JSON bodies; Host
//! and Origin while authentication is off), access (authentication, rate limit, role), body
//! size, timeout, body limit. Holds no state of its own beyond the shared
//! [`AppState`].

pub mod archives;
pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod body_limit;
pub mod connections;
pub mod findings;
pub mod ops;
pub mod paging;
pub mod per_client;
pub mod rate_limit;
pub mod same_origin;
pub mod scans;
pub mod stream;
pub mod uploads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::jobs::JobManager;
use crate::metrics::labels::HttpMethod;
use crate::metrics::Metrics;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The job engine: the only way handlers reach scans.
    pub jobs: JobManager,
    /// The registry `/metrics` and `/stats` render.
    pub metrics: Metrics,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Cancelled when shutdown starts: streams close and readiness turns false.
    pub shutdown: CancellationToken,
    /// Per-client request buckets; `None` when the rate limit is off.
    pub rate_limiter: Option<Arc<rate_limit::RateLimiter>>,
    /// One permit per open WebSocket stream (`MAX_STREAMS`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The API tokens, loaded at start-up; `None` when authentication is off.
    pub tokens: Option<Arc<crate::auth::TokenSet>>,
    /// Open WebSocket streams per client address (`MAX_STREAMS_PER_CLIENT`).
    pub stream_clients: Arc<per_client::PerClient>,
}

pub fn router(state: AppState) -> Router {
    init_http_error_series(&state.metrics);
    let timeout = state.config.server.request_timeout;
    let body_limit = state.config.server.max_body_bytes;
    Router::new()
        .route("/health", get(ops::health))
        .route("/health/ready", get(ops::ready))
        .route("/stats", get(ops::stats))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/v1/profiles", get(scans::list_profiles))
        .route("/v1/audit-events", get(audit::list_audit_events))
        .route(
            "/v1/security-scans",
            post(scans::submit_scan).get(scans::list_scans),
        )
        .route("/v1/security-scans/batch", post(scans::submit_batch))
        .route(
            "/v1/security-scans/upload-archive",
            post(archives::upload_archive).layer(DefaultBodyLimit::max(
                usize::try_from(body_limit::limit_for(
                    &state,
                    Some(body_limit::ARCHIVE_ROUTE),
                ))
                .unwrap_or(usize::MAX),
            )),
        )
        .route("/v1/security-scans/{test_id}", get(scans::get_scan))
        .route(
            "/v1/security-scans/{test_id}/cancel",
            post(scans::cancel_scan),
        )
        .route(
            "/v1/security-scans/{test_id}/stream",
            get(stream::stream_scan_events),
        )
        .route(
            "/v1/security-scans/{test_id}/findings",
            get(findings::list_findings),
        )
        .route(
            "/v1/security-scans/{test_id}/artifacts",
            get(artifacts::list_artifacts),
        )
        .route(
            "/v1/security-scans/{test_id}/artifacts/{*path}",
            get(artifacts::get_artifact),
        )
        .route(
            "/v1/security-scans/{test_id}/upload-request",
            post(uploads::request_upload),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(timeout, limit_request_time))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            body_limit::limit_body_size,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            same_origin::guard,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            track_http_metrics,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "unmatched".into());
                    crate::telemetry::http_request_span(req, &route)
                })
                .on_response(|res: &Response, _latency: Duration, span: &tracing::Span| {
                    crate::telemetry::record_http_status(span, res.status().as_u16());
                }),
        )
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"detail": "Method Not Allowed"})),
    )
        .into_response()
}

/// Answers 503 with a JSON detail when a handler takes longer than the request time limit.
/// (A WebSocket handler returns as soon as the upgrade is accepted, so streams are not cut.)
async fn limit_request_time(
    State(limit): State<Duration>,
    req: Request<Body>,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "detail": format!("the request took longer than {}s and was stopped; retry later", limit.as_secs())
            })),
        )
            .into_response(),
    }
}

/// The 5xx statuses the service answers (see `crate::error::ApiError`, the request time limit
/// and the drain): the statuses the error-ratio and burn-rate rules count.
pub const ERROR_STATUSES: [&str; 5] = ["500", "502", "503", "504", "507"];

/// Every operation (method, route template) the router serves, read from the OpenAPI document
/// (which the `openapi` tests check against the router), in the route templates
/// `MatchedPath` reports: the document's `{path}` is the router's catch-all `{*path}`.
pub fn operations() -> Vec<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(ops::OPENAPI_DOCUMENT).expect("src/api/openapi.json is JSON");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let route = path.replace("{path}", "{*path}");
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            if method != "parameters" {
                operations.push((method.to_uppercase(), route.clone()));
            }
        }
    }
    operations
}

/// Creates the request counter of every operation at zero for each of [`ERROR_STATUSES`], so
/// `rate()` and `increase()` see the first error after a start (a series born at 1 reads as no
/// increase). Bounded: the route templates × their methods × five statuses.
fn init_http_error_series(metrics: &Metrics) {
    for (method, route) in operations() {
        for status in ERROR_STATUSES {
            metrics
                .http
                .requests
                .with_label_values(&[method.as_str(), route.as_str(), status]);
        }
    }
}

/// Counts and times every request by method, route template (`unmatched` when no route
/// matched) and status code, through the handles cached per route (no label lookup).
async fn track_http_metrics(
    State(state): State<AppState>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = HttpMethod::of(req.method());
    let response = next.run(req).await;
    state.metrics.http.record(
        method,
        route.as_ref().map_or("unmatched", |p| p.as_str()),
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_the_router_templates_of_every_documented_operation() {
        let operations = operations();
        for wanted in [
            ("GET", "/health"),
            ("POST", "/v1/security-scans"),
            ("GET", "/v1/security-scans"),
            ("POST", "/v1/security-scans/{test_id}/upload-request"),
            ("GET", "/v1/security-scans/{test_id}/artifacts/{*path}"),
        ] {
            assert!(
                operations
                    .iter()
                    .any(|(m, r)| (m.as_str(), r.as_str()) == wanted),
                "{wanted:?} in {operations:?}"
            );
        }
        assert!(operations.iter().all(|(m, _)| m == "GET" || m == "POST"));
    }

    #[test]
    fn every_error_series_exists_at_zero_before_the_first_request() {
        let metrics = Metrics::new(&["standard"], &["secrets"]);
        init_http_error_series(&metrics);
        let text = metrics.render_text();
        for (method, route) in operations() {
            for status in ERROR_STATUSES {
                let series = format!(
                    "certus_assurance_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} 0"
                );
                assert!(text.contains(&series), "{series} in\n{text}");
            }
        }
    }
}
