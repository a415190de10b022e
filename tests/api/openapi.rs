//! The OpenAPI document served at `/openapi.json` against the real router: every route of the
//! router is documented with exactly the methods it answers, every documented path exists, and
//! real responses of every operation validate against the document's schemas (with
//! `tests/validate_schemas.py openapi`, which also checks the document's own examples).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, validate_schemas, GitServer, TestApp};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// A syntactically valid id of a scan that does not exist.
const UNKNOWN_SCAN: &str = "test_0123456789ab";

/// The route paths the router declares, read from `src/api/mod.rs`, in OpenAPI's `{param}` form
/// (which axum 0.8 uses too; its catch-all `{*param}` is OpenAPI's `{param}`).
fn router_paths() -> BTreeSet<String> {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/mod.rs"))
            .expect("src/api/mod.rs");
    let mut paths = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let start = rest.find('"').expect("route path literal") + 1;
        let end = start + rest[start..].find('"').expect("closing quote");
        paths.insert(rest[start..end].replace("{*", "{"));
    }
    paths
}

fn document() -> Value {
    serde_json::from_str(certus_assurance::api::ops::OPENAPI_DOCUMENT).expect("document is JSON")
}

async fn send(app: &TestApp, method: &str, path: &str) -> (u16, Value) {
    let response = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn every_route_is_documented_with_the_methods_it_answers() {
    let app = spawn_app().await;
    let doc = document();
    let served = app.get_json("/openapi.json").await;
    assert_eq!(served, doc, "/openapi.json serves src/api/openapi.json");

    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        router_paths(),
        documented,
        "the router's routes (src/api/mod.rs) and the paths of src/api/openapi.json differ"
    );

    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template
            .replace("{test_id}", UNKNOWN_SCAN)
            .replace("{path}", "summary.json");
        for method in METHODS {
            let is_documented = item.get(method.to_ascii_lowercase()).is_some();
            let (status, body) = send(&app, method, &path).await;
            if is_documented {
                assert_ne!(
                    status, 405,
                    "{method} {template} is documented but not routed"
                );
                assert!(
                    !(status == 404 && body["detail"] == "Not Found"),
                    "{method} {template} is documented but the router does not know the path"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {template} answers {status} but is not documented: {body}"
                );
                assert_eq!(body["detail"], "Method Not Allowed");
            }
        }
    }
    let (status, body) = send(&app, "GET", "/v1/no-such-route").await;
    assert_eq!((status, &body["detail"]), (404, &json!("Not Found")));
}

/// One observed response: which operation and status it answers, and its JSON body.
fn case(method: &str, path: &str, status: u16, body: Value) -> Value {
    json!({"method": method, "path": path, "status": status, "body": body})
}

/// Validates every observed response against the document's schema for its operation and
/// status (and the document's own examples), with `tests/validate_schemas.py openapi`.
fn assert_responses_match(cases: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let cases_file = dir.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(cases).unwrap()).unwrap();
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json");
    let (ok, text) = validate_schemas(&["openapi".into(), doc.into(), cases_file.into()]);
    assert!(ok, "responses do not match the document:\n{text}");
    assert!(
        text.contains(&format!("{} responses valid", cases.len())),
        "{text}"
    );
}

fn small_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let content = b"print('hello')\n";
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "app/main.py", &content[..])
        .unwrap();
    builder.into_inner().unwrap()
}

#[tokio::test]
async fn real_responses_validate_against_the_document() {
    let git = GitServer::start();
    git.create_repo("svc", &[("README.md", "hello\n")]);
    let url = git.url("svc");
    let app = spawn_app().await;
    let mut cases = Vec::new();
    let mut record = |method: &str, path: &str, status: u16, body: Value| {
        cases.push(case(method, path, status, body));
    };

    for path in ["/health", "/health/ready", "/stats", "/v1/profiles"] {
        let (status, body) = send(&app, "GET", path).await;
        assert_eq!(status, 200, "{path}: {body}");
        record("GET", path, status, body);
    }
    let metrics = app.get("/metrics").await;
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));

    let submission = json!({
        "workspace_id": "ws", "component_id": "svc", "assessment_id": "rel-1",
        "git_url": url, "branch": "main", "profile": "light",
    });
    let response = app.post_json("/v1/security-scans", &submission).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    let id = body["test_id"].as_str().unwrap().to_string();
    record("POST", "/v1/security-scans", status, body);

    let response = app
        .post_json("/v1/security-scans", &json!({"workspace_id": "../x"}))
        .await;
    let status = response.status().as_u16();
    assert_eq!(status, 422);
    record(
        "POST",
        "/v1/security-scans",
        status,
        response.json().await.unwrap(),
    );

    let response = app
        .post_json(
            "/v1/security-scans/batch",
            &json!({"scans": [submission, {"workspace_id": "ws"}]}),
        )
        .await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    record("POST", "/v1/security-scans/batch", status, body);

    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    record("GET", "/v1/security-scans/{test_id}", 200, scan);
    let (status, body) = send(&app, "GET", &format!("/v1/security-scans/{UNKNOWN_SCAN}")).await;
    record("GET", "/v1/security-scans/{test_id}", status, body);

    for query in ["?limit=1", "?workspace_id=ws&status=SUCCEEDED", "?limit=0"] {
        let (status, body) = send(&app, "GET", &format!("/v1/security-scans{query}")).await;
        record("GET", "/v1/security-scans", status, body);
    }

    // Findings and bundle files of the finished scan (a findings.json of the pipeline's shape).
    let finding = json!({
        "id": 1, "fingerprint": "ab".repeat(32), "fingerprints": ["ab".repeat(32)],
        "rule_id": "generic-secret", "rules": {"secrets": "generic-secret"}, "severity": "high",
        "message": "Generic secret", "path": "README.md", "line": 1, "column": 0, "snippet": "",
        "scanners": ["secrets"], "suppressed": false, "suppression": null,
    });
    let findings_file = app.artifact_dir(&id).join("reports/findings.json");
    std::fs::create_dir_all(findings_file.parent().unwrap()).unwrap();
    std::fs::write(
        &findings_file,
        json!({"version": 1, "test_id": id, "findings": [finding]}).to_string(),
    )
    .unwrap();
    let findings_route = "/v1/security-scans/{test_id}/findings";
    for query in ["", "?severity=high&limit=1", "?cursor=bad"] {
        let (status, body) = send(
            &app,
            "GET",
            &format!("/v1/security-scans/{id}/findings{query}"),
        )
        .await;
        record("GET", findings_route, status, body);
    }
    let (status, body) = send(
        &app,
        "GET",
        &format!("/v1/security-scans/{UNKNOWN_SCAN}/findings"),
    )
    .await;
    record("GET", findings_route, status, body);
    let (status, body) = send(&app, "GET", &format!("/v1/security-scans/{id}/artifacts")).await;
    assert_eq!(status, 200, "{body}");
    record(
        "GET",
        "/v1/security-scans/{test_id}/artifacts",
        status,
        body,
    );
    for file in ["summary.json", "missing.json"] {
        let (status, body) = send(
            &app,
            "GET",
            &format!("/v1/security-scans/{id}/artifacts/{file}"),
        )
        .await;
        record(
            "GET",
            "/v1/security-scans/{test_id}/artifacts/{path}",
            status,
            body,
        );
    }

    let (status, body) = send(&app, "POST", &format!("/v1/security-scans/{id}/cancel")).await;
    assert_eq!(status, 409, "{body}");
    record("POST", "/v1/security-scans/{test_id}/cancel", status, body);

    // Uploads are not configured on the test app: a clean 503 that says so.
    let (status, body) = send(
        &app,
        "POST",
        &format!("/v1/security-scans/{id}/upload-request"),
    )
    .await;
    record(
        "POST",
        "/v1/security-scans/{test_id}/upload-request",
        status,
        body,
    );

    let (status, body) = send(&app, "GET", &format!("/v1/security-scans/{id}/stream")).await;
    assert!((400..500).contains(&status), "{status}: {body}");
    record("GET", "/v1/security-scans/{test_id}/stream", status, body);

    let (content_type, multipart) = crate::scanning::multipart(&small_tar(), "src.tar");
    let response = app
        .client
        .post(app.url("/v1/security-scans/upload-archive"))
        .header("content-type", content_type)
        .body(multipart)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    record("POST", "/v1/security-scans/upload-archive", status, body);
    // The audit trail of the requests above.
    let response = app.get("/v1/audit-events?limit=5").await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 5, "{body}");
    record("GET", "/v1/audit-events", status, body);

    assert_responses_match(&cases);
}

#[tokio::test]
async fn with_tokens_the_document_stays_open_and_refusals_match_it() {
    const SECRET: &str = "alpha-submit-openapi-000000000001";
    let file = format!(
        "[[tokens]]\nname = \"alpha-submit\"\nrole = \"submit\"\nworkspaces = [\"alpha\"]\nsha256 = \"{}\"\n",
        certus_assurance::auth::hash_token(SECRET)
    );
    let app = crate::helpers::spawn_app_with(|c| crate::helpers::use_tokens(c, &file)).await;
    assert_eq!(app.get_json("/openapi.json").await, document());

    let mut cases = Vec::new();
    let (status, body) = send(&app, "GET", "/v1/security-scans").await;
    assert_eq!(status, 401, "{body}");
    cases.push(case("GET", "/v1/security-scans", status, body));

    let submission = |workspace: &str| {
        json!({"workspace_id": workspace, "component_id": "c", "assessment_id": "a",
               "git_url": "https://example.com/org/repo.git"})
    };
    let post = |path: &str, body: Value| {
        app.client
            .post(app.url(path))
            .bearer_auth(SECRET)
            .json(&body)
            .send()
    };
    let response = post("/v1/security-scans", submission("beta"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 403);
    cases.push(case(
        "POST",
        "/v1/security-scans",
        status,
        response.json().await.unwrap(),
    ));
    let batch = json!({"scans": [submission("beta")]});
    let response = post("/v1/security-scans/batch", batch).await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], 403, "{body}");
    cases.push(case("POST", "/v1/security-scans/batch", status, body));

    assert_responses_match(&cases);
}

/// scripts/api-fuzz.sh accepts a 503 only from the operations whose documented answers include
/// 503: the operations scripts/schemathesis.toml lists are exactly those.
#[test]
fn the_api_fuzzing_accepts_503_only_where_the_document_has_it() {
    let mut documented = BTreeSet::new();
    for (path, operations) in document()["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation["responses"].get("503").is_some() {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/schemathesis.toml"),
    )
    .unwrap();
    let config: toml::Table = toml::from_str(&text).expect("scripts/schemathesis.toml parses");
    let statuses = |checks: &toml::Value| -> Vec<String> {
        checks["not_a_server_error"]["expected-statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let global = statuses(&config["checks"]);
    assert!(
        !global.iter().any(|s| s.starts_with('5')),
        "no 5xx accepted for every operation: {global:?}"
    );
    let mut accepted = BTreeSet::new();
    for operation in config["operations"].as_array().unwrap() {
        let name = format!(
            "{} {}",
            operation["include-method"].as_str().unwrap(),
            operation["include-path"].as_str().unwrap()
        );
        let expected = statuses(&operation["checks"]);
        assert_eq!(
            expected
                .iter()
                .filter(|s| s.starts_with('5'))
                .collect::<Vec<_>>(),
            vec!["503"],
            "{name}"
        );
        accepted.insert(name);
    }
    assert_eq!(accepted, documented);
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/api-fuzz.sh"))
            .unwrap();
    assert!(
        script.contains("--checks not_a_server_error,response_schema_conformance"),
        "scripts/api-fuzz.sh checks server errors and response schemas"
    );
}
