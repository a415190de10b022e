//! The access middleware: authenticates the bearer token, applies the per-client rate limit, and
//! checks that the token's role allows the route. Handlers then receive an [`Access`] in the
//! request extensions and confine what they show to the token's workspaces.
//!
//! | route | needs |
//! |---|---|
//! | `GET /health`, `GET /health/ready`, `GET /openapi.json` | nothing (never rate limited: the health routes) |
//! | `GET /metrics`, `GET /stats` | nothing with `METRICS_AUTH=open`; role `metrics` or `admin` with `token` |
//! | `GET /v1/profiles`, `GET /v1/security-scans[/{id}]`, `GET .../{id}/stream`, `GET .../{id}/findings`, `GET .../{id}/artifacts[/{path}]` | role `read` (scoped to the token's workspaces) |
//! | `POST /v1/security-scans[/batch]`, `POST .../{id}/cancel`, `POST .../{id}/upload-request`, `POST .../upload-archive` | role `submit` |
//! | `GET /v1/audit-events` | role `admin` (scoped to the token's workspaces) |
//! | any other path | role `read` (then 404/405) |
//!
//! With authentication off every request gets [`Access::Open`] and behaves as before. The token is
//! read from `Authorization: Bearer <token>` only (WebSocket clients included): a token in a query
//! parameter would end up in proxy logs and browser history, so `?access_token=` is not accepted.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{header, Method, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::rate_limit::ClientKey;
use super::AppState;
use crate::auth::{Access, Permission};
use crate::config::MetricsAuth;
use crate::error::ApiError;
use crate::metrics::labels::RejectReason;

/// Routes that stay open and are never rate limited (liveness and readiness probes).
const HEALTH_ROUTES: [&str; 2] = ["/health", "/health/ready"];

/// What `method route` needs; `None` for open routes.
pub fn required_permission(
    method: &Method,
    route: Option<&str>,
    metrics_auth: MetricsAuth,
) -> Option<Permission> {
    match route {
        Some(r) if HEALTH_ROUTES.contains(&r) || r == "/openapi.json" => None,
        Some("/metrics" | "/stats") => {
            (metrics_auth == MetricsAuth::Token).then_some(Permission::Scrape)
        }
        Some("/v1/audit-events") => Some(Permission::Audit),
        // Reading a scan's findings and bundle files: workspace-scoped in the handlers.
        Some(
            "/v1/security-scans/{test_id}/findings"
            | "/v1/security-scans/{test_id}/artifacts"
            | "/v1/security-scans/{test_id}/artifacts/{*path}",
        ) if method == Method::GET => Some(Permission::Read),
        Some(
            "/v1/security-scans"
            | "/v1/security-scans/batch"
            | "/v1/security-scans/upload-archive"
            | "/v1/security-scans/{test_id}/cancel"
            | "/v1/security-scans/{test_id}/upload-request",
        ) if method == Method::POST => Some(Permission::Submit),
        _ => Some(Permission::Read),
    }
}

/// Whether the route submits scans (its refusals count in `scan_submissions_rejected_total`).
pub(super) fn is_submission(method: &Method, route: Option<&str>) -> bool {
    method == Method::POST
        && matches!(
            route,
            Some("/v1/security-scans" | "/v1/security-scans/batch")
        )
}

/// The presented bearer token: `None` without an `Authorization` header, `Some(None)` when the
/// header is not a usable `Bearer` credential.
fn bearer(req: &Request<Body>) -> Option<Option<&str>> {
    let value = req.headers().get(header::AUTHORIZATION)?;
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    });
    Some(token)
}

/// Authenticates, rate-limits and authorizes one request (see the module docs).
pub async fn guard(State(state): State<AppState>, mut req: Request<Body>, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let route = route.as_deref();
    if route.is_some_and(|r| HEALTH_ROUTES.contains(&r)) {
        req.extensions_mut().insert(Access::Open);
        return next.run(req).await;
    }
    let method = req.method().clone();
    let rejected = |reason: RejectReason| {
        if is_submission(&method, route) {
            state.metrics.scans.rejected.get(reason).inc();
        }
    };

    // Who is calling: `Ok(access)`, or `Err(invalid)` when no valid token was presented.
    let identity: Result<Access, bool> = match &state.tokens {
        None => Ok(Access::Open),
        Some(tokens) => match bearer(&req) {
            None => Err(false),
            Some(None) => Err(true),
            Some(Some(presented)) => tokens
                .authenticate(presented)
                .map(Access::Token)
                .ok_or(true),
        },
    };

    if let Some(limiter) = &state.rate_limiter {
        let key = match &identity {
            Ok(Access::Token(t)) => ClientKey::Token(t.name.clone()),
            _ => {
                let ip = req
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip())
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
                ClientKey::for_ip(ip)
            }
        };
        if let Err(retry_after_seconds) = limiter.check(key, Instant::now()) {
            rejected(RejectReason::RateLimited);
            return ApiError::TooManyRequests {
                detail: format!(
                    "too many requests from this client (limit: {} per second, bursts of {}); retry after {retry_after_seconds}s",
                    state.config.auth.rate_limit().map(|r| r.per_second).unwrap_or_default(),
                    state.config.auth.rate_limit().map(|r| r.burst).unwrap_or_default(),
                ),
                retry_after_seconds,
            }
            .into_response();
        }
    }

    if let (Ok(Access::Token(token)), Some(note)) =
        (&identity, req.extensions().get::<super::audit::AuditNote>())
    {
        note.token(&token.name);
    }
    let needed = required_permission(&method, route, state.config.auth.metrics_auth);
    let access = match (identity, needed) {
        (Ok(access), None) => access,
        // An open route ignores whatever credential came with the request.
        (Err(_), None) => Access::Open,
        (Ok(access), Some(needed)) => {
            if let Access::Token(token) = &access {
                if !token.role.allows(needed) {
                    tracing::warn!(
                        token.name = %token.name,
                        token.role = token.role.as_str(),
                        http.route = route.unwrap_or("unmatched"),
                        "request refused: the token's role does not allow it"
                    );
                    rejected(RejectReason::Unauthorized);
                    return ApiError::Forbidden(format!(
                        "token `{}` has role `{}`, and this request needs role {}; use a token with that role",
                        token.name,
                        token.role.as_str(),
                        needed.least_role()
                    ))
                    .into_response();
                }
            }
            access
        }
        (Err(invalid_token), Some(_)) => {
            rejected(RejectReason::Unauthorized);
            let detail = if invalid_token {
                tracing::info!(
                    http.route = route.unwrap_or("unmatched"),
                    "request refused: unknown or malformed bearer token"
                );
                "the bearer token is not valid: send `Authorization: Bearer <token>` with a token \
                 configured on this server"
            } else {
                "authentication required: send `Authorization: Bearer <token>` with a token \
                 configured on this server"
            };
            return ApiError::Unauthorized {
                detail: detail.into(),
                invalid_token,
            }
            .into_response();
        }
    };
    req.extensions_mut().insert(access);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_documented_permission() {
        let open = MetricsAuth::Open;
        let get = Method::GET;
        let post = Method::POST;
        for (method, route, metrics_auth, expected) in [
            (&get, "/health", open, None),
            (&get, "/health/ready", open, None),
            (&get, "/metrics", open, None),
            (&get, "/stats", open, None),
            (
                &get,
                "/metrics",
                MetricsAuth::Token,
                Some(Permission::Scrape),
            ),
            (&get, "/stats", MetricsAuth::Token, Some(Permission::Scrape)),
            (&get, "/v1/profiles", open, Some(Permission::Read)),
            (&get, "/v1/security-scans", open, Some(Permission::Read)),
            (
                &get,
                "/v1/security-scans/{test_id}",
                open,
                Some(Permission::Read),
            ),
            (
                &get,
                "/v1/security-scans/{test_id}/stream",
                open,
                Some(Permission::Read),
            ),
            (
                &get,
                "/v1/security-scans/{test_id}/findings",
                open,
                Some(Permission::Read),
            ),
            (
                &get,
                "/v1/security-scans/{test_id}/artifacts",
                open,
                Some(Permission::Read),
            ),
            (
                &get,
                "/v1/security-scans/{test_id}/artifacts/{*path}",
                open,
                Some(Permission::Read),
            ),
            (&post, "/v1/security-scans", open, Some(Permission::Submit)),
            (
                &post,
                "/v1/security-scans/batch",
                open,
                Some(Permission::Submit),
            ),
            (
                &post,
                "/v1/security-scans/upload-archive",
                open,
                Some(Permission::Submit),
            ),
            (
                &post,
                "/v1/security-scans/{test_id}/cancel",
                open,
                Some(Permission::Submit),
            ),
            (
                &post,
                "/v1/security-scans/{test_id}/upload-request",
                open,
                Some(Permission::Submit),
            ),
            (&get, "/v1/audit-events", open, Some(Permission::Audit)),
        ] {
            assert_eq!(
                required_permission(method, Some(route), metrics_auth),
                expected,
                "{method} {route}"
            );
        }
        assert_eq!(
            required_permission(&get, None, open),
            Some(Permission::Read)
        );
    }
}
