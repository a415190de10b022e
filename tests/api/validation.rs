use serde_json::{json, Value};

use crate::helpers::{sample, spawn_app_with};

fn good() -> Value {
    json!({
        "workspace_id": "test",
        "component_id": "c",
        "assessment_id": "a",
        "git_url": "https://example.com/org/repo.git",
        "branch": "main",
        "profile": "light",
    })
}

fn with(field: &str, value: Value) -> Value {
    let mut body = good();
    body[field] = value;
    body
}

fn without(field: &str) -> Value {
    let mut body = good();
    body.as_object_mut().unwrap().remove(field);
    body
}

/// Every bad body gets a 422 naming the field, never a 500, and changes no count except the
/// rejected-submissions counter.
#[tokio::test]
async fn bad_submissions_get_422_naming_the_field() {
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing workspace", without("workspace_id"), "workspace_id"),
        ("missing component", without("component_id"), "component_id"),
        (
            "missing assessment",
            without("assessment_id"),
            "assessment_id",
        ),
        ("missing git_url", without("git_url"), "git_url"),
        (
            "traversal id",
            with("workspace_id", json!("../x")),
            "workspace_id",
        ),
        ("dot id", with("component_id", json!("..")), "component_id"),
        (
            "long id",
            with("assessment_id", json!("a".repeat(500))),
            "assessment_id",
        ),
        ("empty id", with("workspace_id", json!("")), "workspace_id"),
        (
            "slash id",
            with("workspace_id", json!("a/b")),
            "workspace_id",
        ),
        ("number id", with("workspace_id", json!(42)), "workspace_id"),
        ("null id", with("workspace_id", Value::Null), "workspace_id"),
        (
            "unknown profile",
            with("profile", json!("heavy")),
            "profile",
        ),
        ("profile type", with("profile", json!(["light"])), "profile"),
        (
            "unknown source type",
            with("source_type", json!("svn")),
            "source_type",
        ),
        (
            "git_url type",
            with("git_url", json!({"url": "x"})),
            "git_url",
        ),
        (
            "git_url scheme",
            with("git_url", json!("ftp://example.com/repo")),
            "git_url",
        ),
        (
            "git_url option injection",
            with("git_url", json!("--upload-pack=touch /tmp/x")),
            "git_url",
        ),
        (
            "git_url garbage",
            with("git_url", json!("not a url")),
            "git_url",
        ),
        ("bad branch", with("branch", json!("../../etc")), "branch"),
        ("bad commit", with("commit", json!("zzzz")), "commit"),
        (
            "timeout zero",
            with("timeout_seconds", json!(0)),
            "timeout_seconds",
        ),
        (
            "timeout string",
            with("timeout_seconds", json!("10")),
            "timeout_seconds",
        ),
        (
            "timeout huge",
            with("timeout_seconds", json!(10_000_000)),
            "timeout_seconds",
        ),
    ];
    for (name, body, field) in &cases {
        let response = app.post_json("/v1/security-scans", body).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 422, "{name}: {body}");
        let detail = body["detail"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {body}"));
        assert!(
            detail.iter().any(|d| d["loc"] == json!(["body", field])
                && d["msg"].is_string()
                && d["type"].is_string()),
            "{name}: expected an error for {field}: {body}"
        );
    }

    // Private addresses are refused by default.
    let strict = spawn_app_with(|c| {
        c.source.allow_private_networks = false;
        c.source.allow_local_sources = false;
    })
    .await;
    for url in [
        "git://127.0.0.1/repo",
        "https://10.1.2.3/repo.git",
        "file:///etc",
        "https://169.254.169.254/x",
    ] {
        let response = strict
            .post_json("/v1/security-scans", &with("git_url", json!(url)))
            .await;
        assert_eq!(response.status(), 422, "{url}");
    }

    // Malformed bodies.
    for (name, raw, content_type) in [
        ("not json", "this is not json", "application/json"),
        ("truncated", "{\"workspace_id\": ", "application/json"),
        ("array", "[1,2,3]", "application/json"),
        ("empty", "", "application/json"),
    ] {
        let response = app
            .client
            .post(app.url("/v1/security-scans"))
            .header("content-type", content_type)
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 422, "{name}: {body}");
        assert!(body["detail"].is_array(), "{name}: {body}");
    }
    // A body not declared as JSON is refused before it is read (a web page could send it
    // cross-site without a preflight).
    let response = app
        .client
        .post(app.url("/v1/security-scans"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    let stats = app.stats().await;
    assert_eq!(stats["total_scans"], 0);
    let text = app.metrics_text().await;
    let rejected = sample(
        &text,
        "certus_assurance_scan_submissions_rejected_total",
        &[("reason", "invalid")],
    )
    .unwrap();
    assert_eq!(rejected as usize, cases.len() + 5);
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scans_submitted_total",
            &[("profile", "light"), ("source_type", "git")]
        ),
        Some(0.0)
    );
    // Every route's 5xx series exists from start-up at 0; none may have moved.
    let answered_500: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("certus_assurance_http_requests_total{"))
        .filter(|l| l.contains("status=\"500\"") && !l.ends_with(" 0"))
        .collect();
    assert!(
        answered_500.is_empty(),
        "requests answered 500: {answered_500:?}"
    );
    assert_eq!(app.store_counts().0.values().sum::<i64>(), 0);
}

#[tokio::test]
async fn oversized_bodies_get_413_with_a_detail() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 4096).await;
    let body = with("requested_by", json!("x".repeat(10_000)));
    let response = app.post_json("/v1/security-scans", &body).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("4096"));
}

#[tokio::test]
async fn unknown_ids_routes_and_methods_get_clean_4xx() {
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    for path in [
        "/v1/security-scans/test_000000000000",
        "/v1/security-scans/not-an-id",
        "/v1/security-scans/..%2f..%2fetc",
        "/nope",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
    let response = app.get("/nope").await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"detail": "Not Found"})
    );
    let response = app
        .client
        .post(app.url("/v1/security-scans/test_000000000000/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = app.client.delete(app.url("/stats")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.json::<Value>().await.unwrap()["detail"].is_string());
    assert_eq!(app.stats().await["total_scans"], 0);
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_queue = 2;
    })
    .await;
    app.submit_scan(good()).await;
    app.submit_scan(good()).await;
    let response = app.post_json("/v1/security-scans", &good()).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("retry"));
    let ready = app.get("/health/ready").await;
    assert_eq!(
        ready.status(),
        503,
        "a full queue is not ready for more work"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scan_submissions_rejected_total",
            &[("reason", "queue_full")]
        ),
        Some(1.0)
    );
    assert_eq!(app.stats().await["scans_by_status"]["queued"], 2);
}

#[tokio::test]
async fn a_minimal_request_is_accepted_with_the_documented_answer() {
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    let response = app.post_json("/v1/security-scans", &good()).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["test_id"].as_str().unwrap();
    assert!(
        id.starts_with("test_")
            && id.len() == 17
            && id[5..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(body["status"], "QUEUED");
    assert_eq!(body["workspace_id"], "test");
    assert_eq!(body["component_id"], "c");
    assert_eq!(body["assessment_id"], "a");
    assert_eq!(body["profile"], "light");
    assert!(body["manifest_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(
        body["stream_url"],
        format!("/v1/security-scans/{id}/stream")
    );
    let scan = app.scan(id).await;
    assert_eq!(scan["status"], "QUEUED");
    assert_eq!(scan["upload_status"], "pending");
    assert_eq!(scan["timeout_seconds"], 600);
}
