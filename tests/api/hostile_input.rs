//! Hostile input against what the service emits: metric series must not grow with the values
//! callers send (label cardinality), and text a remote server controls must not forge log lines
//! or smuggle terminal escape sequences into logs, events or stored errors.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// The series of a scrape: every sample's name and labels, without its value.
fn series(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(key, _)| key).to_string())
        .collect()
}

/// One round of requests carrying `n` distinct caller-chosen values in every place a value
/// could end up in a label: ids, profiles, paths, query parameters, methods.
async fn round(app: &TestApp, tag: &str, n: usize) {
    for i in 0..n {
        let mut body = scan_body(&format!("git://127.0.0.1:9/{tag}-{i}.git"));
        body["workspace_id"] = json!(format!("ws-{tag}-{i}"));
        body["component_id"] = json!(format!("c-{tag}-{i}"));
        body["assessment_id"] = json!(format!("a-{tag}-{i}"));
        let r = app.post_json("/v1/security-scans", &body).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

        body["profile"] = json!(format!("profile-{tag}-{i}"));
        let r = app.post_json("/v1/security-scans", &body).await;
        assert_eq!(r.status(), 422);
        let r = app
            .post_json("/v1/security-scans/batch", &json!({ "scans": [body] }))
            .await;
        assert!(
            r.status().is_success() || r.status() == 422,
            "{}",
            r.status()
        );

        let r = app
            .get(&format!("/v1/security-scans/test_{tag}{i:08}"))
            .await;
        assert_eq!(r.status(), 404);
        let r = app.get(&format!("/no-such-route/{tag}/{i}")).await;
        assert_eq!(r.status(), 404);
        let r = app
            .get(&format!(
                "/v1/security-scans?workspace_id=ws-{tag}-{i}&profile=p-{tag}-{i}"
            ))
            .await;
        assert_eq!(r.status(), 200);
        let r = app
            .client
            .delete(app.url(&format!("/v1/profiles?x={tag}-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
}

#[tokio::test]
async fn metric_series_do_not_grow_with_the_values_callers_send() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_queue = 10_000;
    })
    .await;
    round(&app, "warm", 3).await;
    app.metrics_text().await; // the scrape's own series
    let before = series(&app.metrics_text().await);
    round(&app, "flood", 150).await;
    let text = app.metrics_text().await;
    let after = series(&text);
    let added: Vec<_> = after.difference(&before).collect();
    assert!(
        added.is_empty(),
        "150 distinct values per field added series: {added:?}"
    );
    assert!(!text.contains("flood"), "a caller's value became a label");
    // The scans were accepted and counted all the same.
    assert_eq!(
        sample(&text, "certus_assurance_scans", &[("status", "queued")]),
        Some(153.0)
    );
}

/// A git daemon that answers every request with an `ERR` packet carrying `message`, which
/// libgit2 quotes in its error ("remote error: …").
fn hostile_git_daemon(message: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let payload = format!("ERR {message}");
            let _ = stream.write_all(format!("{:04x}{payload}", payload.len() + 4).as_bytes());
        }
    });
    port
}

const FORGED: &str = "nope\n{\"level\":\"ERROR\",\"fields\":{\"message\":\"FORGED admin login\"}}\r\u{1b}[2J\u{1b}]0;owned\u{7}";

/// Runs the binary with `format` logs, lets one scan fail against the hostile daemon, and returns
/// the scan and everything the service logged.
async fn fail_a_scan_against(port: u16, format: &str) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut service = ServiceProcess::start_with_stdout(
        dir.path(),
        &[("CERTUS_ASSURANCE_LOG_FORMAT", format)],
        Stdio::piped(),
    );
    let mut stdout = service.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = stdout.read_to_end(&mut log);
        log
    });
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(format!("{}/v1/security-scans", service.address))
        .json(&scan_body(&format!("git://127.0.0.1:{port}/r.git")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["test_id"].as_str().expect("accepted").to_string();
    let scan = service
        .wait_for_state(&id, &["FAILED", "SUCCEEDED"], Duration::from_secs(60))
        .await;
    service.terminate();
    let log = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    (scan, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_a_hostile_git_server_cannot_forge_log_lines_or_escape_sequences() {
    let port = hostile_git_daemon(FORGED);

    let (scan, log) = fail_a_scan_against(port, "json").await;
    assert_eq!(scan["status"], "FAILED", "{scan}");
    assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    let errors = scan["errors"].to_string();
    // The server's text is kept (it explains the failure), with its controls escaped.
    assert!(errors.contains("FORGED admin login"), "{errors}");
    let stored: String = scan["errors"][0].as_str().unwrap().to_string();
    assert!(
        !stored.chars().any(|c| c.is_control() && c != '\t'),
        "{stored:?}"
    );
    assert!(
        log.contains("FORGED admin login"),
        "the failure was not logged: {log}"
    );
    for line in log.lines() {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not one JSON object ({e}): {line:?}"));
        assert!(
            entry["fields"]["message"] != "FORGED admin login",
            "forged entry: {line}"
        );
    }
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "{log:?}");

    let (scan, log) = fail_a_scan_against(port, "pretty").await;
    assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    assert!(
        log.contains("FORGED admin login"),
        "the failure was not logged: {log}"
    );
    for line in log.lines() {
        assert!(!line.starts_with("{\"level\""), "forged line: {line:?}");
    }
    // The service's own colours may be there; the server's screen-clear and title escapes not.
    assert!(
        !log.contains("\u{1b}[2J") && !log.contains("\u{1b}]0;"),
        "{log:?}"
    );
}

/// The number of scans the service has stored, from `/stats`.
async fn total_scans(app: &TestApp) -> i64 {
    app.stats().await["total_scans"].as_i64().unwrap()
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_refused_with_415() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let body = scan_body("git://127.0.0.1:9/repo.git").to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for path in ["/v1/security-scans", "/v1/security-scans/batch"] {
            let mut request = client.post(app.url(path)).body(body.clone());
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 415, "{path} with {content_type:?}");
            let answer: Value = response.json().await.unwrap();
            assert!(
                answer["detail"]
                    .as_str()
                    .unwrap()
                    .contains("application/json"),
                "{answer}"
            );
        }
    }
    assert_eq!(total_scans(&app).await, 0, "a refused body created a scan");
    // JSON with parameters is JSON; a POST without a body (cancel) needs no content type.
    let response = client
        .post(app.url("/v1/security-scans"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id: Value = response.json().await.unwrap();
    let response = client
        .post(app.url(&format!(
            "/v1/security-scans/{}/cancel",
            id["test_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn with_authentication_off_other_hosts_and_origins_are_refused() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let body = scan_body("git://127.0.0.1:9/repo.git");

    // DNS rebinding: the page's own name now points at 127.0.0.1.
    let response = client
        .post(app.url("/v1/security-scans"))
        .header("host", "rebound.attacker.example:8056")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 421);
    let response = client
        .get(app.url("/v1/security-scans"))
        .header("host", "rebound.attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 421);

    // A page of another origin posting to the service.
    let response = client
        .post(app.url("/v1/security-scans"))
        .header("origin", "https://attacker.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(total_scans(&app).await, 0);

    // ... or opening an event stream.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            app.ws_url("/v1/security-scans/test_000000000000/stream"),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://attacker.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("a foreign origin opened a stream: {:?}", other.map(|_| ())),
    }

    // Programs send no Origin; the service's own origin and loopback names are fine.
    let own = app.url("/").trim_end_matches('/').to_string();
    for origin in [None, Some(own.as_str())] {
        let mut request = client.post(app.url("/v1/security-scans")).json(&body);
        if let Some(o) = origin {
            request = request.header("origin", o);
        }
        assert_eq!(request.send().await.unwrap().status(), 202, "{origin:?}");
    }
    let port = own.rsplit(':').next().unwrap();
    let response = client
        .get(app.url("/health"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn listed_hosts_and_origins_are_accepted() {
    let app = spawn_app_with(|c| {
        c.auth.allowed_hosts = vec!["certus.example.com".into()];
        c.auth.allowed_origins = vec!["https://ci.example.com".into()];
    })
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(app.url("/v1/security-scans"))
        .header("host", "certus.example.com:8056")
        .header("origin", "https://ci.example.com")
        .json(&scan_body("git://127.0.0.1:9/repo.git"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // The list replaces the loopback default.
    let response = client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 421);
}
