use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, id: &str) -> Ws {
    let (ws, _) =
        tokio_tungstenite::connect_async(app.ws_url(&format!("/v1/security-scans/{id}/stream")))
            .await
            .expect("websocket handshake");
    ws
}

/// Reads events until the server closes; returns the events and the close code.
async fn read_all(mut ws: Ws) -> (Vec<Value>, Option<CloseCode>) {
    let mut events = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("stream ends in time");
        match msg {
            Some(Ok(Message::Text(text))) => {
                events.push(serde_json::from_str(&text).expect("each frame is JSON"))
            }
            Some(Ok(Message::Close(frame))) => return (events, frame.map(|f| f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("stream error: {e}"),
            None => return (events, None),
        }
    }
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn subscribers_get_every_event_once_then_a_close_frame() {
    let git = GitServer::start();
    git.create_repo(
        "demo",
        &[("a.py", &format!("key = \"{}\"\n", planted_aws_key()))],
    );
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    let id = app.submit_scan(scan_body(&git.url("demo"))).await;
    // Two live subscribers connect before the scan runs.
    let first = connect(&app, &id).await;
    let second = connect(&app, &id).await;
    wait_for_streams(&app, 2).await;
    let readers = (
        tokio::spawn(read_all(first)),
        tokio::spawn(read_all(second)),
    );
    let drained = certus_assurance::jobs::worker::drain_queue(&app.jobs).await;
    assert_eq!(drained, 1);
    let (a, code_a) = readers.0.await.unwrap();
    let (b, code_b) = readers.1.await.unwrap();
    assert_eq!(code_a, Some(CloseCode::Normal));
    assert_eq!(code_b, Some(CloseCode::Normal));
    assert_eq!(a, b, "every subscriber gets every event");
    let kinds = types(&a);
    assert_eq!(kinds.first().map(String::as_str), Some("phase"));
    assert_eq!(kinds.last().map(String::as_str), Some("scan_complete"));
    for expected in [
        "phase",
        "tool_start",
        "tool_complete",
        "finding_summary",
        "scan_complete",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "missing {expected}: {kinds:?}"
        );
    }
    assert_eq!(kinds.iter().filter(|k| *k == "scan_complete").count(), 1);
    let clone_done = a
        .iter()
        .find(|e| e["type"] == "phase" && e.get("commit").is_some())
        .expect("phase with commit");
    assert_eq!(clone_done["branch"], "main");
    let complete = a.last().unwrap();
    assert_eq!(complete["status"], "SUCCEEDED");
    assert!(complete["manifest_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(complete["bundle"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "summary.json"));
    assert!(a.iter().all(|e| e["timestamp"].is_number()));

    // A late subscriber gets the full history and a close frame.
    let (late, code) = read_all(connect(&app, &id).await).await;
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(late, a);

    wait_for_streams(&app, 0).await;
}

/// Polls `/stats` until `active_streams` is `n` (subscriptions registered or gone).
async fn wait_for_streams(app: &TestApp, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if app.stats().await["active_streams"] == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "active_streams did not return to {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unknown_scans_get_close_code_4404() {
    let app = spawn_app().await;
    for id in ["test_000000000000", "nonsense"] {
        let (events, code) = read_all(connect(&app, id).await).await;
        assert!(events.is_empty());
        assert_eq!(code, Some(CloseCode::from(4404)), "{id}");
    }
    wait_for_streams(&app, 0).await;
}

#[tokio::test]
async fn disconnects_are_noticed_and_the_gauge_goes_back_down() {
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    let id = app
        .submit_scan(scan_body("https://example.com/org/repo.git"))
        .await;
    let mut streams = vec![];
    for _ in 0..3 {
        streams.push(connect(&app, &id).await);
    }
    wait_for_streams(&app, 3).await;
    let text = app.metrics_text().await;
    assert_eq!(
        sample(&text, "certus_assurance_active_streams", &[]),
        Some(3.0)
    );
    let mut first = streams.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    wait_for_streams(&app, 2).await;
    drop(streams); // dropped without a close frame
    wait_for_streams(&app, 0).await;
}

#[tokio::test]
async fn a_cancelled_queued_scan_ends_its_stream() {
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    let id = app
        .submit_scan(scan_body("https://example.com/org/repo.git"))
        .await;
    let reader = tokio::spawn(read_all(connect(&app, &id).await));
    wait_for_streams(&app, 1).await;
    let r = app
        .client
        .post(app.url(&format!("/v1/security-scans/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (events, code) = reader.await.unwrap();
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(events.last().unwrap()["type"], "scan_complete");
    assert_eq!(events.last().unwrap()["status"], "FAILED");
    assert_eq!(events.last().unwrap()["failure_reason"], "cancelled");
}

#[tokio::test]
async fn history_survives_a_restart_through_the_bundle() {
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "hello")]);
    let app = spawn_app().await;
    let id = app.submit_scan(scan_body(&git.url("demo"))).await;
    app.wait_for_terminal(&id).await;
    let (before, _) = read_all(connect(&app, &id).await).await;
    let app = app.restart_with(|_| {}).await;
    let (after, code) = read_all(connect(&app, &id).await).await;
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(after, before);
}

#[tokio::test]
async fn history_is_bounded_but_keeps_phases_and_the_terminal_event() {
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "hello")]);
    // Eight events of a scan are never droppable (four phases, tool start and end, the summary,
    // the terminal event); the git log lines are.
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.stream_history_limit = 8;
    })
    .await;
    let mut body = scan_body(&git.url("demo"));
    body["profile"] = "sbom-only".into(); // one scanner: one start and one end event
    let id = app.submit_scan(body).await;
    certus_assurance::jobs::worker::drain_queue(&app.jobs).await;
    let (events, _) = read_all(connect(&app, &id).await).await;
    let kinds = types(&events);
    assert_eq!(events.len(), 8, "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "log"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "phase").count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("scan_complete"));
    let text = app.metrics_text().await;
    assert!(sample(&text, "certus_assurance_stream_events_dropped_total", &[]).unwrap() > 0.0);
    // The bundle's stream.jsonl still holds every event.
    let recorded = std::fs::read_to_string(app.artifact_dir(&id).join("stream.jsonl")).unwrap();
    assert!(recorded.lines().count() > 8);
}

#[tokio::test]
async fn plain_http_requests_to_the_stream_get_a_json_error() {
    let app = spawn_app().await;
    let response = app.get("/v1/security-scans/test_000000000000/stream").await;
    assert!(response.status().is_client_error());
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("WebSocket"));
}
