use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::{sample, spawn_app};

#[tokio::test]
async fn stats_have_exactly_the_spec_keys_and_types_on_a_fresh_start() {
    let app = spawn_app().await;
    let stats = app.stats().await;
    let obj = stats.as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "active_streams",
            "scans_by_status",
            "timestamp",
            "total_scans",
            "upload_stats"
        ]
    );
    assert_eq!(stats["total_scans"], 0);
    assert_eq!(stats["active_streams"], 0);
    let by_status = stats["scans_by_status"].as_object().unwrap();
    for key in ["queued", "running", "succeeded", "failed"] {
        assert_eq!(by_status[key], 0, "{key}");
    }
    assert_eq!(by_status.len(), 4);
    let uploads = stats["upload_stats"].as_object().unwrap();
    for key in ["pending", "permitted", "uploaded", "denied"] {
        assert!(uploads[key].is_i64(), "{key} must be an integer");
    }
    let ts = stats["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == 20,
        "RFC 3339 UTC seconds: {ts}"
    );
    assert!(humantime::parse_rfc3339(ts).is_ok());
}

#[tokio::test]
async fn health_is_ok_and_ready_when_the_store_answers() {
    let app = spawn_app().await;
    let health = app.get_json("/health").await;
    assert_eq!(health["status"], "ok");
    assert!(health.get("scanning_mode").is_some());
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["store"], "ok");
}

#[tokio::test]
async fn metrics_use_the_prometheus_text_format_and_pass_promtool() {
    let app = spawn_app().await;
    // Touch a route and an unknown path so HTTP series exist.
    app.get("/stats").await;
    app.get("/no/such/path").await;
    let response = app.get("/metrics").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    for status in ["queued", "running", "succeeded", "failed"] {
        assert_eq!(
            sample(&text, "certus_assurance_scans", &[("status", status)]),
            Some(0.0)
        );
    }
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scan_failures_total",
            &[("reason", "timeout")]
        ),
        Some(0.0),
        "every known label combination exists at 0"
    );
    assert_eq!(
        sample(
            &text,
            "certus_assurance_http_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "certus_assurance_http_requests_total",
            &[("method", "GET"), ("route", "/stats"), ("status", "200")]
        ),
        Some(1.0)
    );
    assert!(text.contains("certus_assurance_build_info{"));
    assert!(text.contains("process_resident_memory_bytes"));

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/install-test-deps.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn profiles_are_listed_with_their_thresholds() {
    let app = spawn_app().await;
    let body = app.get_json("/v1/profiles").await;
    let names: Vec<_> = body["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"light".to_string()) && names.contains(&"standard".to_string()));
    let light = &body["profiles"][0];
    assert_eq!(light["thresholds"]["critical"], 0);
    assert_eq!(light["thresholds"]["high"], 5);
    assert_eq!(light["thresholds"]["medium"], 50);
}
