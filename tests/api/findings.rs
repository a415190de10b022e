//! Reading results over HTTP: `GET .../findings` (filters, cursor paging, states, size cap) and
//! `GET .../artifacts[/{path}]` (listing, content types, streaming, confinement to the bundle),
//! on real scans of the real application, with and without workspace-scoped tokens.
//!
//! The findings file the routes read is the pipeline's `reports/findings.json`; these tests write
//! a file of that shape (the contract) into the bundle of a finished scan, so that what the route
//! returns is known exactly.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A secret that must never come back in clear (a fake token of a real shape).
fn planted_token() -> String {
    format!("ghp_{}", "R7xQ2mVt9LkP4sW8nB3cY6dF1hJ5gZ0aE2uK")
}

fn fingerprint(n: u64) -> String {
    format!("{n:064x}")
}

/// Seven findings in the contract's order: unsuppressed first, then by severity.
fn contract_findings(test_id: &str) -> Value {
    let f = |id: u64,
             severity: &str,
             rule: &str,
             scanners: &[&str],
             path: &str,
             snippet: String,
             suppression: Value| {
        json!({
            "id": id,
            "fingerprint": fingerprint(id),
            "fingerprints": [fingerprint(id)],
            "rule_id": rule,
            "rules": scanners.iter().map(|s| (s.to_string(), json!(rule))).collect::<serde_json::Map<_, _>>(),
            "severity": severity,
            "message": format!("{rule} in {path}"),
            "path": path,
            "line": id * 10,
            "column": 0,
            "snippet": snippet,
            "scanners": scanners,
            "suppressed": !suppression.is_null(),
            "suppression": suppression,
        })
    };
    json!({
        "version": 1,
        "test_id": test_id,
        "findings": [
            f(1, "critical", "private-key", &["secrets"], "deploy/id_rsa", String::new(), Value::Null),
            // A snippet as an older writer might have left it: the route masks it again.
            f(2, "high", "github-token", &["detect-secrets", "secrets"], "ci/config.yml",
              format!("token: {}", planted_token()), Value::Null),
            f(3, "high", "B105", &["bandit", "ruff"], "app/settings.py", "PASSWORD = \"****\"".into(), Value::Null),
            f(4, "medium", "B608", &["bandit"], "app/db.py", "query = f\"...\"".into(), Value::Null),
            f(5, "low", "S101", &["ruff"], "tests/test_app.py", "assert ok".into(), Value::Null),
            f(6, "high", "aws-access-key-id", &["secrets"], "docs/example.env", "AWS_ACCESS_KEY_ID=****".into(),
              json!({"kind": "inline", "detail": "# certus:allow"})),
            f(7, "info", "B101", &["bandit"], "vendor/x.py", String::new(),
              json!({"kind": "path", "detail": "vendor/**"})),
        ],
    })
}

fn place_findings(app: &TestApp, id: &str, doc: &Value) {
    let path = app.artifact_dir(id).join("reports/findings.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
}

/// A scan of a small directory (with one planted secret) that has run to completion.
async fn finished_scan(app: &TestApp, project: &Path, workspace: &str) -> String {
    let body = json!({
        "workspace_id": workspace, "component_id": "svc", "assessment_id": "rel-1",
        "source_type": "directory", "directory_path": project.to_str().unwrap(), "profile": "light",
    });
    let id = app.submit_scan(body).await;
    let scan = app
        .wait_for_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120))
        .await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    id
}

fn write_project(root: &Path) -> std::path::PathBuf {
    let project = root.join("project");
    std::fs::create_dir_all(project.join("app")).unwrap();
    std::fs::write(
        project.join("app/settings.py"),
        format!("AWS_ACCESS_KEY_ID = \"{}\"\n", planted_aws_key()),
    )
    .unwrap();
    std::fs::write(project.join("app/main.py"), "print('hello')\n").unwrap();
    project
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn ids_of(page: &Value) -> Vec<u64> {
    page["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings list: {page}"))
        .iter()
        .map(|f| f["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn findings_are_filtered_and_paged_with_the_list_cursor_scheme() {
    let roots = tempfile::tempdir().unwrap();
    let project = write_project(roots.path());
    let root = roots.path().canonicalize().unwrap();
    let app = spawn_app_with(move |c| c.source.source_roots = vec![root]).await;
    let id = finished_scan(&app, &project, "ws").await;
    place_findings(&app, &id, &contract_findings(&id));
    let base = format!("/v1/security-scans/{id}/findings");

    // Everything, in file order, with the contract's fields.
    let (status, page) = get(&app, &base).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["test_id"], id.as_str());
    assert_eq!(page["total"], 7);
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(ids_of(&page), [1, 2, 3, 4, 5, 6, 7]);
    let third = &page["findings"][2];
    assert_eq!(third["path"], "app/settings.py");
    assert_eq!(third["line"], 30);
    assert_eq!(third["rule_id"], "B105");
    assert_eq!(third["severity"], "high");
    assert_eq!(third["scanners"], json!(["bandit", "ruff"]));
    assert_eq!(third["fingerprint"], fingerprint(3));
    assert_eq!(third["snippet"], "PASSWORD = \"****\"");
    assert!(
        !page.to_string().contains(&planted_token()),
        "a secret in a snippet is masked: {page}"
    );

    // Filters, alone and together.
    for (query, expected) in [
        ("severity=high", vec![2, 3, 6]),
        ("severity=critical,high", vec![1, 2, 3, 6]),
        ("severity=LOW", vec![5]),
        ("scanner=bandit", vec![3, 4, 7]),
        ("scanner=detect-secrets", vec![2]),
        ("rule=B105", vec![3]),
        ("rule=nope", vec![]),
        ("suppressed=true", vec![6, 7]),
        ("suppressed=false", vec![1, 2, 3, 4, 5]),
        ("severity=high&suppressed=false&scanner=secrets", vec![2]),
        ("unknown=ignored", vec![1, 2, 3, 4, 5, 6, 7]),
    ] {
        let (status, page) = get(&app, &format!("{base}?{query}")).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(ids_of(&page), expected, "{query}");
        assert_eq!(page["total"], expected.len(), "{query}");
    }

    // Pages of two follow next_cursor to the end; total is the same on every page.
    for (filter, expected) in [
        ("", vec![1, 2, 3, 4, 5, 6, 7]),
        ("&scanner=bandit", vec![3, 4, 7]),
    ] {
        let mut seen = vec![];
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("{base}?limit=2{filter}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = get(&app, &path).await;
            assert_eq!(status, 200, "{path}: {page}");
            assert_eq!(page["total"], expected.len());
            assert!(ids_of(&page).len() <= 2);
            seen.extend(ids_of(&page));
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{filter}");
        assert_eq!(pages, expected.len().div_ceil(2), "{filter}");
    }

    // Bad parameters: 422 naming each.
    for (query, field) in [
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=c2000000000000000000000000000001", "cursor"),
        ("severity=urgent", "severity"),
        ("suppressed=maybe", "suppressed"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
    ] {
        let (status, body) = get(&app, &format!("{base}?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["query", field]), "{body}");
        assert!(body["detail"][0]["msg"].as_str().unwrap().len() > 10);
    }

    // Unknown scans: the uniform 404.
    let (status, body) = get(&app, "/v1/security-scans/test_0123456789ab/findings").await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"detail": "Scan test_0123456789ab not found"}));
    let (status, _) = get(&app, "/v1/security-scans/nope/findings").await;
    assert_eq!(status, 404);

    // A file larger than the route reads: refused from its size, saying so.
    let path = app.artifact_dir(&id).join("reports/findings.json");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(64 * 1024 * 1024 + 1)
        .unwrap();
    let (status, body) = get(&app, &base).await;
    assert_eq!(status, 409, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("64 MiB"), "{detail}");
    assert!(detail.contains("artifacts"), "{detail}");

    // A bundle without findings.json: 404 that says why.
    std::fs::remove_file(&path).unwrap();
    let (status, body) = get(&app, &base).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("has no reports/findings.json"),
        "{body}"
    );
}

#[tokio::test]
async fn findings_of_unfinished_and_failed_scans_say_why_they_are_missing() {
    // No workers: the scan stays QUEUED.
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    let id = app
        .submit_scan(scan_body("git://127.0.0.1:9/never-cloned.git"))
        .await;
    let (status, body) = get(&app, &format!("/v1/security-scans/{id}/findings")).await;
    assert_eq!(status, 409, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("QUEUED") && detail.contains("SUCCEEDED"),
        "{detail}"
    );

    // A clone that cannot connect fails the scan.
    let app = spawn_app().await;
    let id = app
        .submit_scan(scan_body("git://127.0.0.1:9/never-cloned.git"))
        .await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "FAILED", "{scan}");
    let (status, body) = get(&app, &format!("/v1/security-scans/{id}/findings")).await;
    assert_eq!(status, 404, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("FAILED") && detail.contains("runner.log"),
        "{detail}"
    );
    // Its runner log is readable, as the detail says.
    let (status, log) = get(
        &app,
        &format!("/v1/security-scans/{id}/artifacts/logs/runner.log"),
    )
    .await;
    assert_eq!(status, 200, "{log}");
    assert!(log.as_str().unwrap().contains("[error]"), "{log}");
}

#[tokio::test]
async fn bundle_files_are_listed_and_streamed_with_their_content_type() {
    let roots = tempfile::tempdir().unwrap();
    let project = write_project(roots.path());
    let root = roots.path().canonicalize().unwrap();
    let app = spawn_app_with(move |c| c.source.source_roots = vec![root]).await;
    let id = finished_scan(&app, &project, "ws").await;
    let bundle = app.artifact_dir(&id);
    place_findings(&app, &id, &contract_findings(&id));
    std::fs::write(bundle.join("extra.jsonl"), "{\"a\":1}\n{\"a\":2}\n").unwrap();

    let (status, listing) = get(&app, &format!("/v1/security-scans/{id}/artifacts")).await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["test_id"], id.as_str());
    let files = listing["files"].as_array().unwrap();
    let listed: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    for expected in [
        "scan.json",
        "summary.json",
        "logs/runner.log",
        "reports/findings.json",
        "reports/sast/secrets.sarif.json",
        "extra.jsonl",
    ] {
        assert!(listed.contains(&expected), "{expected} in {listed:?}");
    }
    for f in files {
        let on_disk = std::fs::metadata(bundle.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["size_bytes"], on_disk.len(), "{f}");
    }

    for (rel, content_type) in [
        ("summary.json", "application/json"),
        ("reports/sast/secrets.sarif.json", "application/json"),
        ("reports/findings.json", "application/json"),
        ("logs/runner.log", "text/plain; charset=utf-8"),
        ("extra.jsonl", "application/x-ndjson"),
    ] {
        let response = app
            .get(&format!("/v1/security-scans/{id}/artifacts/{rel}"))
            .await;
        assert_eq!(response.status(), 200, "{rel}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            content_type,
            "{rel}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(bytes, std::fs::read(bundle.join(rel)).unwrap(), "{rel}");
    }

    // A file larger than a read buffer comes back whole.
    let big: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(bundle.join("logs/big.log"), &big).unwrap();
    let response = app
        .get(&format!("/v1/security-scans/{id}/artifacts/logs/big.log"))
        .await;
    assert_eq!(
        response.headers()["content-length"].to_str().unwrap(),
        big.len().to_string()
    );
    assert_eq!(response.text().await.unwrap(), big);

    let (status, body) = get(
        &app,
        &format!("/v1/security-scans/{id}/artifacts/reports/missing.json"),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body["detail"].as_str().unwrap().contains("artifacts lists"),
        "{body}"
    );
    let (status, body) = get(&app, "/v1/security-scans/test_0123456789ab/artifacts").await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "Scan test_0123456789ab not found"}))
    );
    let (status, _) = get(
        &app,
        "/v1/security-scans/test_0123456789ab/artifacts/summary.json",
    )
    .await;
    assert_eq!(status, 404);
}

/// Sends `GET <target>` exactly as written (an HTTP client would normalise `..` and `%2e%2e`).
async fn raw_get(app: &TestApp, target: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    (status, text)
}

#[tokio::test]
async fn artifact_paths_cannot_leave_the_bundle() {
    let roots = tempfile::tempdir().unwrap();
    let project = write_project(roots.path());
    let root = roots.path().canonicalize().unwrap();
    let app = spawn_app_with(move |c| c.source.source_roots = vec![root]).await;
    let id = finished_scan(&app, &project, "ws").await;
    let bundle = app.artifact_dir(&id);

    // Files outside the bundle, reachable by traversal or through symlinks inside it.
    let outside = app.data_dir.join("outside-secret.txt");
    std::fs::write(&outside, "OUTSIDE-THE-BUNDLE").unwrap();
    std::os::unix::fs::symlink(&outside, bundle.join("link.json")).unwrap();
    std::os::unix::fs::symlink(&app.data_dir, bundle.join("datadir")).unwrap();
    std::os::unix::fs::symlink("/etc", bundle.join("etc")).unwrap();
    // The scan's sibling bundle (another scan's files) is outside too.
    let sibling = app.data_dir.join("artifacts/test_00000000abcd");
    std::fs::create_dir_all(&sibling).unwrap();
    std::fs::write(sibling.join("summary.json"), "OUTSIDE-THE-BUNDLE").unwrap();

    let prefix = format!("/v1/security-scans/{id}/artifacts");
    for (target, expected) in [
        (format!("{prefix}/../../../../etc/passwd"), 422),
        (format!("{prefix}/../test_00000000abcd/summary.json"), 422),
        (format!("{prefix}/%2e%2e/%2e%2e/outside-secret.txt"), 422),
        (
            format!("{prefix}/%2E%2E%2F%2E%2E%2Foutside-secret.txt"),
            422,
        ),
        (
            format!("{prefix}/reports/..%2f..%2f..%2foutside-secret.txt"),
            422,
        ),
        (format!("{prefix}/%2Fetc%2Fpasswd"), 422),
        (format!("{prefix}//etc/passwd"), 422),
        (format!("{prefix}/./summary.json"), 422),
        (format!("{prefix}/summary.json%00.txt"), 422),
        (format!("{prefix}/..%5c..%5coutside-secret.txt"), 422),
        (format!("{prefix}/link.json"), 404),
        (format!("{prefix}/datadir/outside-secret.txt"), 404),
        (format!("{prefix}/etc/passwd"), 404),
        (format!("{prefix}/reports"), 404),
    ] {
        let (status, text) = raw_get(&app, &target).await;
        assert_eq!(status, expected, "{target}: {text}");
        assert!(text.contains("\"detail\""), "{target}: {text}");
        assert!(!text.contains("OUTSIDE-THE-BUNDLE"), "{target}: {text}");
        assert!(!text.contains("root:"), "{target}: {text}");
    }
    // A path that is not UTF-8 once decoded is refused before the handler.
    let (status, text) = raw_get(&app, &format!("{prefix}/%ff%fe.json")).await;
    assert_eq!(status, 400, "{text}");
    // The listing does not show the symlinks.
    let (_, listing) = get(&app, &prefix).await;
    let text = listing.to_string();
    assert!(
        !text.contains("link.json") && !text.contains("passwd"),
        "{text}"
    );
    // The same file by its plain path is served.
    let (status, _) = raw_get(&app, &format!("{prefix}/summary.json")).await;
    assert_eq!(status, 200);
}

const ALPHA_SUBMIT: &str = "alpha-submit-findings-00000000001";
const ALPHA_READ: &str = "alpha-read-findings-0000000000002";
const BETA_READ: &str = "beta-read-findings-00000000000003";

fn token_file() -> String {
    let entry = |name: &str, role: &str, workspace: &str, secret: &str| {
        format!(
            "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nworkspaces = [\"{workspace}\"]\nsha256 = \"{}\"\n\n",
            certus_assurance::auth::hash_token(secret)
        )
    };
    [
        entry("alpha-submit", "submit", "alpha", ALPHA_SUBMIT),
        entry("alpha-read", "read", "alpha", ALPHA_READ),
        entry("beta-read", "read", "beta", BETA_READ),
    ]
    .concat()
}

#[tokio::test]
async fn findings_and_bundle_files_are_confined_to_the_token_workspaces() {
    let roots = tempfile::tempdir().unwrap();
    let project = write_project(roots.path());
    let root = roots.path().canonicalize().unwrap();
    let app = spawn_app_with(move |c| {
        c.source.source_roots = vec![root];
        use_tokens(c, &token_file());
    })
    .await;
    let response = app
        .client
        .post(app.url("/v1/security-scans"))
        .bearer_auth(ALPHA_SUBMIT)
        .json(&json!({
            "workspace_id": "alpha", "component_id": "svc", "assessment_id": "rel-1",
            "source_type": "directory", "directory_path": project.to_str().unwrap(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["test_id"]
        .as_str()
        .unwrap()
        .to_string();
    let status_of = |token: Option<&'static str>, path: String| {
        let mut request = app.client.get(app.url(&path));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, scan) = status_of(Some(ALPHA_READ), format!("/v1/security-scans/{id}")).await;
        if scan["status"] == "SUCCEEDED" {
            break;
        }
        assert!(scan["status"] != "FAILED", "{scan}");
        assert!(std::time::Instant::now() < deadline, "{scan}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    place_findings(&app, &id, &contract_findings(&id));

    for route in [
        "findings",
        "artifacts",
        "artifacts/summary.json",
        "artifacts/reports/findings.json",
    ] {
        let path = format!("/v1/security-scans/{id}/{route}");
        let (status, body) = status_of(Some(ALPHA_READ), path.clone()).await;
        assert_eq!(status, 200, "{route}: {body}");
        // Another workspace's token: exactly the answer for an unknown scan.
        let (status, body) = status_of(Some(BETA_READ), path.clone()).await;
        assert_eq!(
            (status, body),
            (404, json!({"detail": format!("Scan {id} not found")})),
            "{route}"
        );
        let (status, _) = status_of(None, path).await;
        assert_eq!(status, 401, "{route}");
    }
}
