//! Slow and greedy clients at the connection level: a client that sends half a request head is
//! dropped after the header-read timeout, a silent connection after the idle timeout, and
//! connections over the per-client or global cap are answered (429, 503) and closed while other
//! clients are still served. Other client addresses are other loopback addresses (127.0.0.2).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

const OTHER_CLIENT: &str = "127.0.0.2";

/// A TCP connection to the app from the given loopback address.
pub async fn connect_from(app: &TestApp, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .expect("binding a loopback source address");
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], app.port)))
        .await
        .expect("connects")
}

/// An HTTP client whose connections come from `from`.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Sends one `GET /health` with `Connection: close` and reads the whole answer:
/// (status line, body).
async fn raw_get(mut stream: TcpStream) -> (String, String) {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .expect("reads the answer");
    status_and_body(&answer)
}

/// Polls until a request from `from` is served (a closed connection's slot comes back a moment
/// after the close).
async fn wait_until_served(app: &TestApp, from: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = raw_get(connect_from(app, from).await).await;
        if status.contains(" 200 ") {
            return;
        }
        assert!(Instant::now() < deadline, "still refused: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server closes `stream` (EOF or reset), reading and discarding what comes.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The head of a WebSocket upgrade request for the scan's stream.
pub fn websocket_upgrade(id: &str) -> String {
    format!(
        "GET /v1/security-scans/{id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

async fn assert_closed(stream: &mut TcpStream, what: &str) {
    assert!(
        closed_by_server(stream, Duration::from_secs(20)).await,
        "{what} is still open"
    );
}

/// Polls until `http_connections_timed_out_total{reason}` reaches `n`.
async fn wait_for_timeouts(app: &TestApp, reason: &str, n: u32) {
    let series =
        format!("certus_assurance_http_connections_timed_out_total{{reason=\"{reason}\"}}");
    wait_for_metric(app, "127.0.0.1", &series, f64::from(n)).await;
}

/// The value of one series of `/metrics` (read by a client of `from`); `None` while the
/// connection is refused (a closed connection's slot comes back a moment after the close).
async fn metric(app: &TestApp, from: &str, series: &str) -> Option<f64> {
    let response = client_from(from)
        .get(app.url("/metrics"))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let text = response.text().await.ok()?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()));
    Some(value.unwrap_or_else(|| panic!("{series} is not in /metrics")))
}

/// Polls until the series reaches at least `n`.
async fn wait_for_metric(app: &TestApp, from: &str, series: &str, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = metric(app, from, series).await;
        if value.is_some_and(|v| v >= n) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {value:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_sending_half_a_header_is_dropped_after_the_header_read_timeout() {
    let app = spawn_app_with(|c| {
        c.server.http_header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut half = connect_from(&app, "127.0.0.1").await;
    half.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaa")
        .await
        .unwrap();
    let mut silent = connect_from(&app, "127.0.0.1").await;
    // Meanwhile other requests are served.
    assert_eq!(app.get("/health").await.status(), 200);
    assert_closed(&mut half, "a connection with half a request head").await;
    assert_closed(&mut silent, "a connection that sent nothing").await;
    wait_for_timeouts(&app, "header_read", 2).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.server.http_idle_timeout = Duration::from_secs(1);
        // Pings would be traffic; this test wants a stream that sends nothing.
        c.queue.stream_ping_interval = Duration::from_secs(3600);
    })
    .await;
    let id = app
        .submit_scan(scan_body("git://127.0.0.1:9/never-cloned.git"))
        .await;
    // An upgraded connection on a queued scan: no request in flight, no byte either way.
    let mut stream = connect_from(&app, "127.0.0.1").await;
    stream
        .write_all(websocket_upgrade(&id).as_bytes())
        .await
        .unwrap();
    assert_closed(&mut stream, "a silent upgraded connection").await;
    wait_for_timeouts(&app, "idle", 1).await;
}

#[tokio::test]
async fn connections_over_the_per_client_cap_get_429_while_another_client_is_served() {
    let app = spawn_app_with(|c| {
        c.server.max_connections_per_client = 2;
        c.server.http_header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let first = connect_from(&app, "127.0.0.1").await;
    let _second = connect_from(&app, "127.0.0.1").await;
    let (status, body) = raw_get(connect_from(&app, "127.0.0.1").await).await;
    assert!(status.contains(" 429 "), "{status}");
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("CERTUS_ASSURANCE_MAX_CONNECTIONS_PER_CLIENT"),
        "{body}"
    );
    // Another address is served meanwhile.
    let other = client_from(OTHER_CLIENT);
    let health = other.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    wait_for_metric(
        &app,
        OTHER_CLIENT,
        "certus_assurance_http_connections_refused_total{reason=\"per_client_limit\"}",
        1.0,
    )
    .await;
    // A closed connection gives its place back.
    drop(first);
    wait_until_served(&app, "127.0.0.1").await;
}

#[tokio::test]
async fn connections_over_the_global_cap_get_503_and_are_served_once_one_closes() {
    let app = spawn_app_with(|c| {
        c.server.max_connections = 2;
        c.server.max_connections_per_client = 0;
        c.server.http_header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let first = connect_from(&app, "127.0.0.1").await;
    let _second = connect_from(&app, "127.0.0.1").await;
    let (status, body) = raw_get(connect_from(&app, OTHER_CLIENT).await).await;
    assert!(status.contains(" 503 "), "{status}");
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("CERTUS_ASSURANCE_MAX_CONNECTIONS"),
        "{body}"
    );
    drop(first);
    wait_until_served(&app, OTHER_CLIENT).await;
    // Every refusal was counted (read on a connection of its own: one slot is free now).
    drop(_second);
    wait_for_metric(
        &app,
        OTHER_CLIENT,
        "certus_assurance_http_connections_refused_total{reason=\"global_limit\"}",
        1.0,
    )
    .await;
}
