//! Defences for the browser, which attaches nothing a bearer token would need but can still be
//! made to send requests: while authentication is off (no token to forge), a web page the
//! operator visits must not be able to submit, cancel or upload scans, or read event streams.
//!
//! - **JSON only.** A POST with a body must say `Content-Type: application/json` (or a `+json`
//!   type); anything else gets 415. A page can send `text/plain` or a form without asking the
//!   server first (a CORS "simple request"); it cannot send JSON cross-site without a preflight,
//!   which this service never answers. Archive uploads are multipart by contract and are
//!   covered by the origin check below. This holds with authentication on too.
//! - **Host.** With authentication off, the `Host` header must be one of
//!   `CERTUS_ASSURANCE_ALLOWED_HOSTS` (421 otherwise). On loopback the default is loopback names
//!   and addresses, so a page whose own name is rebound to 127.0.0.1 (DNS rebinding), which the
//!   browser treats as same-origin, is refused.
//! - **Origin.** With authentication off, a POST or a WebSocket upgrade that carries an `Origin`
//!   other than the service's own and `CERTUS_ASSURANCE_ALLOWED_ORIGINS` gets 403. Browsers send
//!   `Origin` on every cross-site POST and WebSocket; curl, CI jobs and other programs send none
//!   and are not affected.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::routes::{policy_of, BodyKind};
use super::AppState;
use crate::metrics::labels::RejectReason;

fn refuse(status: StatusCode, detail: String) -> Response {
    (status, Json(json!({ "detail": detail }))).into_response()
}

/// Whether a `Content-Type` value is JSON (`application/json`, `application/*+json`, with
/// parameters or not).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether the request carries a body (declared length above 0, or a chunked body).
fn has_body(req: &Request<Body>) -> bool {
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`), lower case.
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .map(|(v6, _)| format!("[{v6}]"))
            .unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => host,
    }
}

/// Whether `host` (a `Host` header value) is allowed by `allowed` (names, `name:port`, or the
/// loopback default, which admits every loopback address and `localhost`).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let full = host.trim().to_ascii_lowercase();
    let name = host_name(&full);
    let name = name.strip_suffix('.').unwrap_or(&name);
    if allowed.iter().any(|a| *a == full || *a == name) {
        return true;
    }
    let loopback_default = allowed.iter().any(|a| a == "127.0.0.1" || a == "localhost");
    loopback_default
        && (name == "localhost"
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

/// Whether `origin` is this service's own origin (its host equals the request's `Host`) or one
/// of `allowed`.
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if allowed.contains(&origin) {
        return true;
    }
    let Some(host) = host else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    origin
        .split_once("://")
        .is_some_and(|(scheme, rest)| (scheme == "http" || scheme == "https") && rest == host)
}

/// The middleware: content type always; host and origin while authentication is off.
pub async fn guard(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let is_post = req.method() == Method::POST;
    let policy = policy_of(&req);
    let submission = policy.submits;
    // A refused submission is counted like the other refusals before a scan exists.
    let rejected = |reason: RejectReason| {
        if submission {
            state.metrics.scans.rejected.get(reason).inc();
        }
    };
    // An archive upload is multipart by contract.
    if is_post && policy.body != BodyKind::Archive && has_body(&req) {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            rejected(RejectReason::Invalid);
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "the request body must be JSON sent with `Content-Type: application/json` \
                     (got `{}`); e.g. curl -H 'Content-Type: application/json' -d '{{...}}'",
                    if content_type.is_empty() {
                        "no Content-Type"
                    } else {
                        content_type
                    }
                    .escape_debug()
                ),
            );
        }
    }
    if state.tokens.is_some() {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(allowed) = state.config.auth.allowed_hosts() {
        let ok = host.as_deref().is_some_and(|h| host_allowed(h, allowed));
        if !ok {
            rejected(RejectReason::Unauthorized);
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "this server does not answer to that Host; use its address, or add the name to \
                 CERTUS_ASSURANCE_ALLOWED_HOSTS (or turn authentication on)"
                    .to_string(),
            );
        }
    }
    let is_upgrade = req.headers().contains_key(header::UPGRADE);
    if is_post || is_upgrade {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !origin_allowed(origin, host.as_deref(), &state.config.auth.allowed_origins) {
                rejected(RejectReason::Unauthorized);
                return refuse(
                    StatusCode::FORBIDDEN,
                    "requests from web pages of other origins are refused while authentication \
                     is off; add the page's origin to CERTUS_ASSURANCE_ALLOWED_ORIGINS, or turn \
                     authentication on"
                        .to_string(),
                );
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("multipart/form-data; boundary=x"));
        assert!(!is_json(""));
    }

    #[test]
    fn hosts_by_name_port_and_loopback_default() {
        let loopback = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "[::1]".to_string(),
        ];
        for ok in [
            "127.0.0.1:8056",
            "localhost:8056",
            "[::1]:8056",
            "127.0.0.2",
            "localhost.",
        ] {
            assert!(host_allowed(ok, &loopback), "{ok}");
        }
        for bad in [
            "evil.example:8056",
            "127.0.0.1.nip.io:8056",
            "10.0.0.1:8056",
            "",
        ] {
            assert!(!host_allowed(bad, &loopback), "{bad}");
        }
        let named = vec!["certus.example.com".to_string(), "ci:9000".to_string()];
        assert!(host_allowed("certus.example.com:8056", &named));
        assert!(host_allowed("ci:9000", &named));
        assert!(!host_allowed("ci:9001", &named));
        assert!(!host_allowed("127.0.0.1", &named));
    }

    #[test]
    fn origins_own_or_listed() {
        let allowed = vec!["https://ci.example.com".to_string()];
        assert!(origin_allowed(
            "http://127.0.0.1:8056",
            Some("127.0.0.1:8056"),
            &[]
        ));
        assert!(origin_allowed("https://ci.example.com/", None, &allowed));
        assert!(!origin_allowed(
            "http://evil.example",
            Some("127.0.0.1:8056"),
            &allowed
        ));
        assert!(!origin_allowed("null", Some("127.0.0.1:8056"), &allowed));
    }
}
