//! The access middleware: authenticates the bearer token, applies the per-client rate limit, and
//! checks that the token's role allows the route. Handlers then receive an [`Access`] in the
//! request extensions and confine what they show to the token's workspaces.
//!
//! What each route needs is declared with the route (`api/mod.rs`, see `api/routes.rs`): the
//! health probes are open and never rate limited, `/openapi.json` is open, `/metrics` and
//! `/stats` are open with `METRICS_AUTH=open` and need role `metrics` or `admin` with `token`,
//! reading scans needs role `read` (scoped to the token's workspaces), submitting, cancelling and
//! uploading need role `submit`, and the audit trail needs role `admin`. A request no route
//! serves needs role `read` (then 404/405).
//!
//! With authentication off every request gets [`Access::Open`] and behaves as before. The token is
//! read from `Authorization: Bearer <token>` only (WebSocket clients included): a token in a query
//! parameter would end up in proxy logs and browser history, so `?access_token=` is not accepted.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{header, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::rate_limit::ClientKey;
use super::routes::{policy_of, Need};
use super::AppState;
use crate::auth::{Access, Permission};
use crate::error::ApiError;
use crate::metrics::labels::RejectReason;

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
    let policy = policy_of(&req);
    if policy.need == Need::Probe {
        req.extensions_mut().insert(Access::Open);
        return next.run(req).await;
    }
    let rejected = |reason: RejectReason| {
        if policy.submits {
            state.metrics.scans.rejected.get(reason).inc();
        }
    };
    let identity = identify(&state, &req);
    if let Err(refusal) = check_rate(&state, &identity, &req) {
        rejected(RejectReason::RateLimited);
        return refusal.into_response();
    }
    if let (Ok(Access::Token(token)), Some(note)) =
        (&identity, req.extensions().get::<super::audit::AuditNote>())
    {
        note.token(&token.name);
    }
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    let needed = policy.permission(state.config.auth.metrics_auth);
    match authorize(identity, needed, route.unwrap_or("unmatched")) {
        Ok(access) => {
            req.extensions_mut().insert(access);
            next.run(req).await
        }
        Err(refusal) => {
            rejected(RejectReason::Unauthorized);
            refusal.into_response()
        }
    }
}

/// Who is calling: `Ok(access)`, or `Err(invalid)` when no valid token was presented (`invalid`
/// when one was presented but is not valid).
fn identify(state: &AppState, req: &Request<Body>) -> Result<Access, bool> {
    match &state.tokens {
        None => Ok(Access::Open),
        Some(tokens) => match bearer(req) {
            None => Err(false),
            Some(None) => Err(true),
            Some(Some(presented)) => tokens
                .authenticate(presented)
                .map(Access::Token)
                .ok_or(true),
        },
    }
}

/// The per-client rate limit: by token name, or by peer address when no valid token came.
fn check_rate(
    state: &AppState,
    identity: &Result<Access, bool>,
    req: &Request<Body>,
) -> Result<(), ApiError> {
    let Some(limiter) = &state.rate_limiter else {
        return Ok(());
    };
    let key = match identity {
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
    limiter.check(key, Instant::now()).map_err(|retry_after_seconds| {
        let limit = state.config.auth.rate_limit();
        ApiError::TooManyRequests {
            detail: format!(
                "too many requests from this client (limit: {} per second, bursts of {}); retry after {retry_after_seconds}s",
                limit.map(|r| r.per_second).unwrap_or_default(),
                limit.map(|r| r.burst).unwrap_or_default(),
            ),
            retry_after_seconds,
        }
    })
}

/// The caller's access when its identity has the permission the route needs (`None`: an open
/// route, which ignores whatever credential came with the request).
fn authorize(
    identity: Result<Access, bool>,
    needed: Option<Permission>,
    route: &str,
) -> Result<Access, ApiError> {
    let (access, needed) = match (identity, needed) {
        (Ok(access), None) => return Ok(access),
        (Err(_), None) => return Ok(Access::Open),
        (Ok(access), Some(needed)) => (access, needed),
        (Err(invalid_token), Some(_)) => return Err(unauthenticated(invalid_token, route)),
    };
    if let Access::Token(token) = &access {
        if !token.role.allows(needed) {
            tracing::warn!(
                token.name = %token.name,
                token.role = token.role.as_str(),
                http.route = route,
                "request refused: the token's role does not allow it"
            );
            return Err(ApiError::Forbidden(format!(
                "token `{}` has role `{}`, and this request needs role {}; use a token with that role",
                token.name,
                token.role.as_str(),
                needed.least_role()
            )));
        }
    }
    Ok(access)
}

/// The 401 of a request without a valid token.
fn unauthenticated(invalid_token: bool, route: &str) -> ApiError {
    let detail = if invalid_token {
        tracing::info!(
            http.route = route,
            "request refused: unknown or malformed bearer token"
        );
        "the bearer token is not valid: send `Authorization: Bearer <token>` with a token \
         configured on this server"
    } else {
        "authentication required: send `Authorization: Bearer <token>` with a token \
         configured on this server"
    };
    ApiError::Unauthorized {
        detail: detail.into(),
        invalid_token,
    }
}
