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
pub mod extract;
pub mod findings;
pub mod ops;
pub mod paging;
pub mod per_client;
pub mod profiles;
pub mod rate_limit;
pub mod routes;
pub mod same_origin;
pub mod scans;
pub mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::auth::Permission;
use crate::config::Config;
use crate::jobs::JobManager;
use crate::metrics::labels::HttpMethod;
use crate::metrics::Metrics;
use crate::storage::audit::AuditAction;
use routes::Routes;

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

/// Every route of the API, each with the permission it needs and its other policy (see
/// `api/routes.rs`). `archive_limit` bounds the body of the archive upload.
pub fn routes(archive_limit: usize) -> Routes {
    use self::routes::{Need, RoutePolicy as P};
    use axum::http::Method;
    use AuditAction as A;
    const GET: Method = Method::GET;
    const POST: Method = Method::POST;
    const READ: P = P::token(Permission::Read);
    const SUBMIT: P = P::token(Permission::Submit);
    Routes::new(archive_limit)
        .route("/health", GET, Need::Probe, ops::health)
        .route("/health/ready", GET, Need::Probe, ops::ready)
        .route("/stats", GET, Need::Metrics, ops::stats)
        .route("/metrics", GET, Need::Metrics, ops::metrics)
        .route("/openapi.json", GET, Need::Nothing, ops::openapi)
        .route("/v1/profiles", GET, READ, profiles::list_profiles)
        .route(
            "/v1/audit-events",
            GET,
            Permission::Audit,
            audit::list_audit_events,
        )
        .route("/v1/security-scans", GET, READ, scans::list_scans)
        .route(
            "/v1/security-scans",
            POST,
            SUBMIT.audited(A::Submit).submits(),
            scans::submit_scan,
        )
        .route(
            "/v1/security-scans/batch",
            POST,
            SUBMIT.audited(A::Batch).submits(),
            scans::submit_batch,
        )
        .route(
            "/v1/security-scans/upload-archive",
            POST,
            SUBMIT.audited(A::UploadArchive).archive_body(),
            archives::upload_archive,
        )
        .route("/v1/security-scans/{test_id}", GET, READ, scans::get_scan)
        .route(
            "/v1/security-scans/{test_id}/cancel",
            POST,
            SUBMIT.audited(A::Cancel),
            scans::cancel_scan,
        )
        .route(
            "/v1/security-scans/{test_id}/stream",
            GET,
            READ,
            stream::stream_scan_events,
        )
        .route(
            "/v1/security-scans/{test_id}/findings",
            GET,
            READ,
            findings::list_findings,
        )
        .route(
            "/v1/security-scans/{test_id}/artifacts",
            GET,
            READ,
            artifacts::list_artifacts,
        )
        .route(
            "/v1/security-scans/{test_id}/artifacts/{*path}",
            GET,
            READ,
            artifacts::get_artifact,
        )
        .route(
            "/v1/security-scans/{test_id}/upload-request",
            POST,
            SUBMIT.audited(A::UploadRequest),
            scans::request_upload,
        )
}

pub fn router(state: AppState) -> Router {
    init_http_error_series(&state.metrics);
    let timeout = state.config.server.request_timeout;
    let body_limit = state.config.server.max_body_bytes;
    let archive_limit = body_limit::archive_limit(&state);
    let (router, table) = routes(usize::try_from(archive_limit).unwrap_or(usize::MAX)).finish();
    router
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
        .layer(middleware::from_fn_with_state(table, routes::declare))
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
    use crate::config::MetricsAuth;
    use axum::http::Method;
    use std::collections::BTreeSet;

    #[test]
    fn every_route_declares_a_policy_and_is_documented() {
        let declared: BTreeSet<(String, String)> = routes(0)
            .declared()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        let documented: BTreeSet<(String, String)> = operations().into_iter().collect();
        assert_eq!(
            declared, documented,
            "the routes declared in api::routes and the operations of src/api/openapi.json differ"
        );
    }

    #[test]
    fn routes_need_the_documented_permission() {
        let table = routes::RouteTable::new(routes(0).declared());
        let required = |method: &Method, route: Option<&str>, metrics_auth| {
            table.policy(method, route).permission(metrics_auth)
        };
        let open = MetricsAuth::Open;
        let get = Method::GET;
        let post = Method::POST;
        let read = Some(Permission::Read);
        let submit = Some(Permission::Submit);
        for (method, route, metrics_auth, expected) in [
            (&get, "/health", open, None),
            (&get, "/health/ready", open, None),
            (&post, "/health", MetricsAuth::Token, None),
            (&get, "/openapi.json", MetricsAuth::Token, None),
            (&get, "/metrics", open, None),
            (&get, "/stats", open, None),
            (
                &get,
                "/metrics",
                MetricsAuth::Token,
                Some(Permission::Scrape),
            ),
            (&get, "/stats", MetricsAuth::Token, Some(Permission::Scrape)),
            (&get, "/v1/profiles", open, read),
            (&get, "/v1/security-scans", open, read),
            (&get, "/v1/security-scans/{test_id}", open, read),
            (&get, "/v1/security-scans/{test_id}/stream", open, read),
            (&get, "/v1/security-scans/{test_id}/findings", open, read),
            (&get, "/v1/security-scans/{test_id}/artifacts", open, read),
            (
                &get,
                "/v1/security-scans/{test_id}/artifacts/{*path}",
                open,
                read,
            ),
            (&post, "/v1/security-scans", open, submit),
            (&post, "/v1/security-scans/batch", open, submit),
            (&post, "/v1/security-scans/upload-archive", open, submit),
            (&post, "/v1/security-scans/{test_id}/cancel", open, submit),
            (
                &post,
                "/v1/security-scans/{test_id}/upload-request",
                open,
                submit,
            ),
            (&get, "/v1/audit-events", open, Some(Permission::Audit)),
            // Methods a path does not serve (answered 405) and unknown paths (404).
            (&get, "/v1/security-scans/{test_id}/cancel", open, read),
            (&post, "/v1/security-scans/{test_id}", open, read),
            (&Method::HEAD, "/v1/security-scans", open, read),
        ] {
            assert_eq!(
                required(method, Some(route), metrics_auth),
                expected,
                "{method} {route}"
            );
        }
        assert_eq!(required(&get, None, open), read);
    }

    #[test]
    fn only_submissions_count_as_submissions_and_only_the_upload_takes_an_archive() {
        for route in routes(0).declared() {
            let submits = route.method == Method::POST
                && ["/v1/security-scans", "/v1/security-scans/batch"].contains(&route.path);
            assert_eq!(
                route.policy.submits, submits,
                "{} {}",
                route.method, route.path
            );
            let archive = route.path == "/v1/security-scans/upload-archive";
            assert_eq!(
                route.policy.body == routes::BodyKind::Archive,
                archive,
                "{} {}",
                route.method,
                route.path
            );
        }
    }

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
