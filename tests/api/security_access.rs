//! Access control and fair use against the real application: bearer tokens with roles and
//! workspace scopes on every scan endpoint (stream and list and batch included), the metrics
//! switch, the per-workspace cap, body limits, the stream cap and the per-client rate limit; and
//! the real binary for start-up errors, `hash-token` and what the log says (and never says).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use certus_assurance::config::{Config, MetricsAuth};
use certus_assurance::storage::postgres::PgStore;
use certus_assurance::storage::sqlite::SqliteStore;
use certus_assurance::storage::{JobStore, ListQuery};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::postgres::{record, PgSchema};

const ALPHA_SUBMIT: &str = "alpha-submit-secret-000000000001";
const ALPHA_READ: &str = "alpha-read-secret-00000000000002";
const BETA_SUBMIT: &str = "beta-submit-secret-0000000000003";
const SCRAPER: &str = "scraper-secret-000000000000000004";
const ROOT: &str = "root-secret-00000000000000000005";

/// The token file the tests configure (TOML, digests only).
fn token_file() -> String {
    let entry = |name: &str, role: &str, workspaces: &str, secret: &str| {
        format!(
            "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nworkspaces = {workspaces}\nsha256 = \"{}\"\n\n",
            certus_assurance::auth::hash_token(secret)
        )
    };
    [
        entry("alpha-submit", "submit", "[\"alpha\"]", ALPHA_SUBMIT),
        entry("alpha-read", "read", "[\"alpha\"]", ALPHA_READ),
        entry("beta-submit", "submit", "[\"beta\"]", BETA_SUBMIT),
        entry("scraper", "metrics", "\"*\"", SCRAPER),
        entry("root", "admin", "\"*\"", ROOT),
    ]
    .concat()
}

fn with_tokens(config: &mut Config) {
    use_tokens(config, &token_file());
}

/// A submission into `workspace` that stays QUEUED (the test apps run no workers).
fn body_in(workspace: &str) -> Value {
    let mut body = scan_body("git://127.0.0.1:9/never-cloned.git");
    body["workspace_id"] = json!(workspace);
    body
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

pub(crate) async fn get_as(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, _, body) = send(app, reqwest::Method::GET, path, token, None).await;
    (status, body)
}

pub(crate) async fn post_as(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let (status, _, body) = send(app, reqwest::Method::POST, path, token, Some(body)).await;
    (status, body)
}

async fn submit_as(app: &TestApp, token: &str, workspace: &str) -> String {
    let (status, body) = post_as(app, "/v1/security-scans", Some(token), &body_in(workspace)).await;
    assert_eq!(status, 202, "{body}");
    body["test_id"].as_str().unwrap().to_string()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_ws(
    app: &TestApp,
    id: &str,
    token: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = app
        .ws_url(&format!("/v1/security-scans/{id}/stream"))
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// Reads frames until the server closes; returns the event types and the close code.
async fn read_until_close(mut ws: Ws) -> (Vec<String>, Option<CloseCode>) {
    let mut types = vec![];
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the server closes the stream");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                types.push(event["type"].as_str().unwrap_or_default().to_string());
            }
            Some(Ok(Message::Close(frame))) => return (types, frame.map(|f| f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("stream error: {e}"),
            None => return (types, None),
        }
    }
}

fn rejected(text: &str, reason: &str) -> f64 {
    sample(
        text,
        "certus_assurance_scan_submissions_rejected_total",
        &[("reason", reason)],
    )
    .unwrap_or_else(|| panic!("rejection series for {reason}"))
}

#[tokio::test]
async fn missing_or_invalid_tokens_get_401_with_a_bearer_challenge() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        with_tokens(c);
    })
    .await;
    for (token, invalid) in [
        (None, false),
        (Some("not-a-configured-token-0000000000"), true),
        (Some(""), true),
    ] {
        let mut request = app.client.get(app.url("/v1/security-scans"));
        match token {
            Some("") => request = request.header("authorization", "Basic dXNlcjpwYXNz"),
            Some(t) => request = request.bearer_auth(t),
            None => {}
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert_eq!(challenge.contains("invalid_token"), invalid, "{challenge}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer"),
            "{body}"
        );
    }
    // Every scan route needs a token, including submit, cancel, upload and the stream.
    let id = submit_as(&app, ALPHA_SUBMIT, "alpha").await;
    for (method, path) in [
        (reqwest::Method::POST, "/v1/security-scans".to_string()),
        (reqwest::Method::POST, "/v1/security-scans/batch".into()),
        (reqwest::Method::GET, format!("/v1/security-scans/{id}")),
        (
            reqwest::Method::POST,
            format!("/v1/security-scans/{id}/cancel"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/security-scans/{id}/upload-request"),
        ),
        (
            reqwest::Method::POST,
            "/v1/security-scans/upload-archive".into(),
        ),
        (reqwest::Method::GET, "/v1/profiles".into()),
    ] {
        let (status, _, body) = send(&app, method.clone(), &path, None, Some(&json!({}))).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    match connect_ws(&app, &id, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("a stream without a token is refused: {:?}", other.is_ok()),
    }
    // Health stays open, and so do /metrics and /stats by default.
    for path in ["/health", "/health/ready", "/metrics", "/stats"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    // The refused submissions are counted as unauthorized.
    let text = app.metrics_text().await;
    assert_eq!(rejected(&text, "unauthorized"), 2.0);
    // The scan was not touched by the refused cancel.
    let (_, scan) = get_as(&app, &format!("/v1/security-scans/{id}"), Some(ROOT)).await;
    assert_eq!(scan["status"], "QUEUED");
}

#[tokio::test]
async fn tokens_cannot_cross_workspaces_on_any_scan_endpoint() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        with_tokens(c);
    })
    .await;
    let alpha = submit_as(&app, ALPHA_SUBMIT, "alpha").await;
    let alpha_done = submit_as(&app, ALPHA_SUBMIT, "alpha").await;
    let beta = submit_as(&app, BETA_SUBMIT, "beta").await;

    // Another workspace's scan answers exactly like an unknown id.
    let unknown = "test_0123456789ab";
    let (status, unknown_body) = get_as(
        &app,
        &format!("/v1/security-scans/{unknown}"),
        Some(BETA_SUBMIT),
    )
    .await;
    assert_eq!(status, 404);
    let same_as_unknown = |body: &Value, id: &str| {
        let expected = unknown_body["detail"]
            .as_str()
            .unwrap()
            .replace(unknown, id);
        assert_eq!(body, &json!({"detail": expected}));
    };
    let (status, body) = get_as(
        &app,
        &format!("/v1/security-scans/{alpha}"),
        Some(BETA_SUBMIT),
    )
    .await;
    assert_eq!(status, 404);
    same_as_unknown(&body, &alpha);
    for action in ["cancel", "upload-request"] {
        let (status, body) = post_as(
            &app,
            &format!("/v1/security-scans/{alpha}/{action}"),
            Some(BETA_SUBMIT),
            &json!({}),
        )
        .await;
        assert_eq!(status, 404, "{action}: {body}");
        same_as_unknown(&body, &alpha);
    }
    // The refused cancel left alpha's scan alone.
    let (_, scan) = get_as(
        &app,
        &format!("/v1/security-scans/{alpha}"),
        Some(ALPHA_READ),
    )
    .await;
    assert_eq!(scan["status"], "QUEUED");

    // The stream closes with 4404, as for an unknown id.
    let ws = connect_ws(&app, &alpha, Some(BETA_SUBMIT)).await.unwrap();
    let (events, code) = read_until_close(ws).await;
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(code, Some(CloseCode::from(4404)));
    // Its own workspace's token streams the scan (cancelled, so the stream ends).
    let (status, _) = post_as(
        &app,
        &format!("/v1/security-scans/{alpha_done}/cancel"),
        Some(ALPHA_SUBMIT),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let ws = connect_ws(&app, &alpha_done, Some(ALPHA_READ))
        .await
        .unwrap();
    let (events, code) = read_until_close(ws).await;
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(events.last().map(String::as_str), Some("scan_complete"));

    // Lists are confined to the token's workspaces; asking for another one finds nothing.
    let ids = |body: &Value| -> Vec<String> {
        body["scans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["test_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, body) = get_as(&app, "/v1/security-scans", Some(BETA_SUBMIT)).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), vec![beta.clone()]);
    let (status, body) = get_as(
        &app,
        "/v1/security-scans?workspace_id=alpha",
        Some(BETA_SUBMIT),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 0, "{body}");
    let (_, body) = get_as(&app, "/v1/security-scans?status=QUEUED", Some(ALPHA_READ)).await;
    assert_eq!(ids(&body), vec![alpha.clone()]);
    let (_, body) = get_as(&app, "/v1/security-scans", Some(ROOT)).await;
    assert_eq!(ids(&body).len(), 3, "an admin for every workspace sees all");

    // Submitting into another workspace is refused with a detail; batch items per item.
    let (status, body) = post_as(
        &app,
        "/v1/security-scans",
        Some(BETA_SUBMIT),
        &body_in("alpha"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["detail"].as_str().unwrap().contains("`alpha`"),
        "{body}"
    );
    let (status, body) = post_as(
        &app,
        "/v1/security-scans/batch",
        Some(BETA_SUBMIT),
        &json!({"scans": [body_in("alpha"), body_in("beta")]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], 403, "{body}");
    assert!(body["results"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("may not submit into workspace `alpha`"));
    assert_eq!(body["results"][1]["status"], 202, "{body}");
    assert_eq!(
        (body["accepted"].clone(), body["rejected"].clone()),
        (json!(1), json!(1))
    );
    let (_, body) = get_as(&app, "/v1/security-scans?workspace_id=alpha", Some(ROOT)).await;
    assert_eq!(
        ids(&body).len(),
        2,
        "nothing was submitted into alpha by beta"
    );
    assert_stats_match_metrics_and_store(&app).await;
}

#[tokio::test]
async fn a_token_may_do_only_what_its_role_allows() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        with_tokens(c);
    })
    .await;
    let id = submit_as(&app, ALPHA_SUBMIT, "alpha").await;
    // read: reads and streams, but cannot submit, cancel or upload.
    assert_eq!(
        get_as(&app, "/v1/security-scans", Some(ALPHA_READ)).await.0,
        200
    );
    assert_eq!(get_as(&app, "/v1/profiles", Some(ALPHA_READ)).await.0, 200);
    for path in [
        "/v1/security-scans".to_string(),
        "/v1/security-scans/batch".to_string(),
        format!("/v1/security-scans/{id}/cancel"),
        format!("/v1/security-scans/{id}/upload-request"),
        "/v1/security-scans/upload-archive".to_string(),
    ] {
        let (status, body) = post_as(&app, &path, Some(ALPHA_READ), &body_in("alpha")).await;
        assert_eq!(status, 403, "{path}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("role `read`") && detail.contains("needs role submit"),
            "{detail}"
        );
    }
    // metrics: only /metrics and /stats.
    let (status, body) = get_as(&app, "/v1/security-scans", Some(SCRAPER)).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = get_as(&app, &format!("/v1/security-scans/{id}"), Some(SCRAPER)).await;
    assert_eq!(status, 403);
    // submit: may cancel its own workspace's scan.
    let (status, body) = post_as(
        &app,
        &format!("/v1/security-scans/{id}/cancel"),
        Some(ALPHA_SUBMIT),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = app.metrics_text().await;
    assert_eq!(
        rejected(&text, "unauthorized"),
        2.0,
        "submit and batch by read"
    );
}

#[tokio::test]
async fn metrics_and_stats_need_a_scrape_token_when_switched_to_token() {
    let app = spawn_app_with(|c| {
        with_tokens(c);
        c.auth.metrics_auth = MetricsAuth::Token;
    })
    .await;
    for path in ["/metrics", "/stats"] {
        let (status, body) = get_as(&app, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        let (status, body) = get_as(&app, path, Some(ALPHA_SUBMIT)).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .contains("metrics or admin"));
        assert_eq!(get_as(&app, path, Some(SCRAPER)).await.0, 200, "{path}");
        assert_eq!(get_as(&app, path, Some(ROOT)).await.0, 200, "{path}");
    }
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(SCRAPER)
        .send()
        .await
        .unwrap();
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("certus_assurance_scans"));
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

#[tokio::test]
async fn a_workspace_over_its_cap_gets_429_while_others_are_served() {
    // Authentication off: the cap applies to the workspace named in the body.
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_active_per_workspace = 2;
    })
    .await;
    let first = app.submit_scan(body_in("flood")).await;
    app.submit_scan(body_in("flood")).await;
    let response = app.post_json("/v1/security-scans", &body_in("flood")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "30");
    let body: Value = response.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("workspace flood") && detail.contains("2 scans"),
        "{detail}"
    );
    // Another workspace is still served, one at a time and in a batch (per item).
    app.submit_scan(body_in("quiet")).await;
    let response = app
        .post_json(
            "/v1/security-scans/batch",
            &json!({"scans": [body_in("flood"), body_in("quiet"), body_in("quiet")]}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let statuses: Vec<i64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![429, 202, 429], "{body}");
    assert_eq!(body["results"][0]["retry_after_seconds"], 30);
    // A finished scan frees a place.
    let response = app
        .post_json(&format!("/v1/security-scans/{first}/cancel"), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    app.submit_scan(body_in("flood")).await;
    let text = app.metrics_text().await;
    assert_eq!(rejected(&text, "workspace_limit"), 3.0);
    assert_stats_match_metrics_and_store(&app).await;
}

/// Sends raw HTTP/1.1 and returns the status line and body of the answer.
async fn raw_request(app: &TestApp, head: &str, body: &[u8]) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before reading everything we send.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    status_and_body(&answer)
}

#[tokio::test]
async fn oversized_bodies_get_413_with_a_json_detail_on_every_route() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.server.max_body_bytes = 4096;
    })
    .await;
    let big = "x".repeat(10_000);
    let id = app.submit_scan(body_in("w")).await;
    let expect_413 = |status: u16, body: &Value, what: &str| {
        assert_eq!(status, 413, "{what}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("larger than 4096 bytes")),
            "{what}: {body}"
        );
    };
    let mut oversized = body_in("w");
    oversized["requested_by"] = json!(big);
    for path in [
        "/v1/security-scans".to_string(),
        "/v1/security-scans/batch".to_string(),
        format!("/v1/security-scans/{id}/upload-request"),
        format!("/v1/security-scans/{id}/cancel"),
    ] {
        let (status, body) = post_as(&app, &path, None, &oversized).await;
        expect_413(status, &body, &path);
    }
    // GET routes, which read no body, refuse a declared oversized one too.
    for path in [
        "/v1/security-scans".to_string(),
        format!("/v1/security-scans/{id}"),
        "/v1/profiles".to_string(),
    ] {
        let response = app
            .client
            .get(app.url(&path))
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        expect_413(status, &body, &path);
    }
    // A WebSocket upgrade with a body.
    let head = format!(
        "GET /v1/security-scans/{id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, close\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Content-Length: {}\r\n\r\n",
        big.len()
    );
    let (status, body) = raw_request(&app, &head, big.as_bytes()).await;
    assert!(status.contains(" 413 "), "{status}");
    expect_413(413, &serde_json::from_str(&body).unwrap(), "stream upgrade");
    // A chunked body declares no length; it is cut when read, still with a JSON detail.
    let chunk = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let head =
        "POST /v1/security-scans HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let (status, body) = raw_request(&app, head, chunk.as_bytes()).await;
    assert!(status.contains(" 413 "), "{status}");
    expect_413(413, &serde_json::from_str(&body).unwrap(), "chunked submit");
}

#[tokio::test]
async fn streams_over_the_cap_get_503_before_the_upgrade() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_streams = 1;
    })
    .await;
    let id = app.submit_scan(body_in("w")).await;
    let first = connect_ws(&app, &id, None)
        .await
        .expect("first stream opens");
    match connect_ws(&app, &id, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("CERTUS_ASSURANCE_MAX_STREAMS"),
                "{body}"
            );
            // The contract says so: the OpenAPI document (and the README's route table, which
            // docs.rs holds to it) lists this 503.
            let document: Value =
                serde_json::from_str(certus_assurance::api::ops::OPENAPI_DOCUMENT).unwrap();
            assert!(
                document["paths"]["/v1/security-scans/{test_id}/stream"]["get"]["responses"]
                    .get("503")
                    .is_some(),
                "openapi.json documents the stream route's 503"
            );
        }
        other => panic!("the second stream is refused: {:?}", other.is_ok()),
    }
    // With every slot taken, an unknown scan still gets its 4404 close, not a 503: no slot is
    // taken before the scan is known to be visible.
    let unknown = connect_ws(&app, "test_000000000000", None)
        .await
        .expect("an unknown scan is answered after the upgrade");
    let (_, code) = read_until_close(unknown).await;
    assert_eq!(code, Some(CloseCode::from(4404)));
    // The gauge moves once the upgraded connection is served, just after the handshake.
    let mut polls = 0;
    while app.stats().await["active_streams"] != 1 {
        polls += 1;
        assert!(polls < 200, "active_streams reaches 1");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Once the first stream is gone, a new one is accepted.
    drop(first);
    let mut attempts = 0;
    let second = loop {
        match connect_ws(&app, &id, None).await {
            Ok(ws) => break ws,
            Err(_) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the freed place is reused: {e}"),
        }
    };
    drop(second);
}

#[tokio::test]
async fn clients_over_the_rate_limit_get_429_then_recover() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        with_tokens(c);
        c.auth.rate_limit_per_second = 1.0;
        c.auth.rate_limit_burst = 3;
    })
    .await;
    let mut throttled = None;
    for _ in 0..50 {
        let (status, headers, body) = send(
            &app,
            reqwest::Method::GET,
            "/v1/security-scans",
            Some(ALPHA_READ),
            None,
        )
        .await;
        if status == 429 {
            throttled = Some((headers, body));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (headers, body) = throttled.expect("a client over its rate gets 429");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("too many requests"),
        "{body}"
    );
    // Other clients (another token; the health probe) are still served.
    assert_eq!(
        get_as(&app, "/v1/security-scans", Some(BETA_SUBMIT))
            .await
            .0,
        200
    );
    for _ in 0..10 {
        assert_eq!(app.get("/health").await.status(), 200);
    }
    // After the advertised wait, the client is served again.
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100)).await;
    assert_eq!(
        get_as(&app, "/v1/security-scans", Some(ALPHA_READ)).await.0,
        200
    );
}

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certus-assurance"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

#[test]
fn token_file_errors_stop_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let plain = "plain-secret-in-the-wrong-field-1234";
    for (name, text) in [
        (
            "plain.toml",
            format!("[[tokens]]\nname = \"ci\"\nrole = \"submit\"\nworkspaces = \"*\"\nsha256 = \"{plain}\"\n"),
        ),
        (
            "role.toml",
            format!(
                "[[tokens]]\nname = \"ci\"\nrole = \"owner\"\nworkspaces = \"*\"\nsha256 = \"{}\"\n",
                certus_assurance::auth::hash_token(plain)
            ),
        ),
        ("broken.json", "{\"tokens\": [".to_string()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = binary()
            .env("CERTUS_ASSURANCE_DATA_DIR", dir.path().join("data"))
            .env("CERTUS_ASSURANCE_API_TOKENS_FILE", &path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("CERTUS_ASSURANCE_API_TOKENS_FILE"),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains(plain), "{name}: {stderr}");
    }
    let output = binary()
        .env("CERTUS_ASSURANCE_DATA_DIR", dir.path().join("data"))
        .env("CERTUS_ASSURANCE_METRICS_AUTH", "token")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("CERTUS_ASSURANCE_METRICS_AUTH"));
}

fn hash_with_binary(token: &str) -> std::process::Output {
    let mut child = binary()
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_binary_hashes_tokens_logs_whether_auth_is_on_and_never_logs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = "hashed-by-the-binary-0123456789abcdef";
    let output = hash_with_binary(&format!("{token}\n"));
    assert!(output.status.success());
    let digest = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(digest, certus_assurance::auth::hash_token(token));
    let weak = hash_with_binary("short\n");
    assert_eq!(weak.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("16 characters"));

    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        json!({"tokens": [{"name": "ci-bot", "role": "submit", "workspaces": ["w"], "sha256": digest}]})
            .to_string(),
    )
    .unwrap();
    let log_path = dir.path().join("service.log");
    let wrong = "wrong-token-that-must-not-be-logged-42";
    {
        let log = std::fs::File::create(&log_path).unwrap();
        let mut service = ServiceProcess::start_with_stdout(
            &dir.path().join("data"),
            &[
                ("CERTUS_ASSURANCE_API_TOKENS_FILE", tokens.to_str().unwrap()),
                ("CERTUS_ASSURANCE_MAX_WORKERS", "0"),
                ("CERTUS_ASSURANCE_LOG_LEVEL", "debug"),
            ],
            Stdio::from(log),
        );
        let client = reqwest::Client::new();
        let url = format!("{}/v1/security-scans", service.address);
        let response = client.get(&url).bearer_auth(wrong).send().await.unwrap();
        assert_eq!(response.status(), 401);
        let response = client
            .post(&url)
            .bearer_auth(token)
            .json(&body_in("w"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let response = client
            .post(&url)
            .bearer_auth(token)
            .json(&body_in("other"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        assert!(service.terminate().success());
    }
    let mut log = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("authentication is on"), "{log}");
    // METRICS_AUTH is open by default: the log must not claim that /metrics needs a token.
    assert!(
        log.contains("/metrics and /stats (open to scrapers"),
        "the start-up log says which routes stay open: {log}"
    );
    assert!(log.contains("ci-bot"), "token names may be logged: {log}");
    assert!(!log.contains(wrong) && !log.contains(token), "{log}");

    // Without tokens the log says authentication is off.
    let log_path = dir.path().join("open.log");
    {
        let log = std::fs::File::create(&log_path).unwrap();
        let mut service =
            ServiceProcess::start_with_stdout(&dir.path().join("data2"), &[], Stdio::from(log));
        // Answering requests means the stop signal is being listened for.
        let health = reqwest::get(format!("{}/health", service.address))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        assert!(service.terminate().success());
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("authentication is off"), "{log}");
}

/// Active counts per workspace and lists confined to a set of workspaces, on one store.
async fn workspace_queries(store: Arc<dyn JobStore>) {
    let id = |n: u32| format!("test_{n:012}");
    store
        .insert_many(vec![
            record(&id(1), "a", 1.0),
            record(&id(2), "a", 2.0),
            record(&id(3), "a", 3.0),
            record(&id(4), "b", 4.0),
            record(&id(5), "c", 5.0),
        ])
        .await
        .unwrap();
    // 1 RUNNING, 2 FAILED (cancelled), 3 QUEUED: "a" has two active scans.
    assert_eq!(
        store.claim_next(10.0).await.unwrap().unwrap().test_id,
        id(1)
    );
    assert!(store
        .cancel_queued(id(2), 11.0, "stop".into())
        .await
        .unwrap());
    let counts = store
        .count_active(vec!["a".into(), "b".into(), "empty".into()])
        .await
        .unwrap();
    assert_eq!(counts.get("a"), Some(&2));
    assert_eq!(counts.get("b"), Some(&1));
    assert_eq!(counts.get("empty"), Some(&0));

    let listed = |q: ListQuery| {
        let store = store.clone();
        async move {
            store
                .list(q)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, r)| r.test_id)
                .collect::<Vec<_>>()
        }
    };
    let scoped = |workspaces: &[&str]| ListQuery {
        limit: 10,
        workspace_in: Some(workspaces.iter().map(|w| w.to_string()).collect()),
        ..Default::default()
    };
    assert_eq!(
        listed(scoped(&["a", "c"])).await,
        [id(5), id(3), id(2), id(1)]
    );
    assert_eq!(listed(scoped(&["b"])).await, [id(4)]);
    assert!(listed(scoped(&[])).await.is_empty());
    let mut both = scoped(&["a", "b"]);
    both.workspace_id = Some("b".into());
    assert_eq!(listed(both).await, [id(4)]);
}

#[tokio::test]
async fn workspace_counts_and_scoped_lists_hold_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    workspace_queries(Arc::new(store)).await;
}

#[tokio::test]
async fn workspace_counts_and_scoped_lists_hold_on_postgres() {
    let schema = PgSchema::create();
    let store = PgStore::connect(&schema.url(), "replica-a".into())
        .await
        .unwrap();
    workspace_queries(Arc::new(store)).await;
}
