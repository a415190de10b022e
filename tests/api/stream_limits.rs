//! Streams that one client cannot hoard: a cap per client address (429 with a detail before the
//! upgrade, while another address still streams, and only for scans the caller may see), pings
//! that reach the client, and streams closed with 4408 when idle or when pongs stop.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::connections::{connect_from, websocket_upgrade};
use crate::helpers::*;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens the scan's stream from the given loopback address.
async fn stream_from(
    app: &TestApp,
    from: &str,
    id: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let request = app
        .ws_url(&format!("/v1/security-scans/{id}/stream"))
        .into_client_request()
        .unwrap();
    let tcp = connect_from(app, from).await;
    tokio_tungstenite::client_async(request, tcp)
        .await
        .map(|(ws, _)| ws)
}

/// Reads frames until the server closes: (pings seen, close code, close reason).
async fn read_to_close(ws: &mut Ws) -> (usize, Option<CloseCode>, String) {
    let mut pings = 0;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the server closes the stream");
        match frame {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(frame))) => {
                return (
                    pings,
                    frame.as_ref().map(|f| f.code),
                    frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                )
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("stream error: {err}"),
            None => return (pings, None, String::new()),
        }
    }
}

/// `stream_closures_total{reason}` is `n`.
async fn assert_closures(app: &TestApp, reason: &str, n: u64) {
    let metrics = app.metrics_text().await;
    let series = format!("certus_assurance_stream_closures_total{{reason=\"{reason}\"}} {n}");
    assert!(metrics.contains(&series), "{metrics}");
}

fn queued_scan() -> serde_json::Value {
    scan_body("git://127.0.0.1:9/never-cloned.git")
}

#[tokio::test]
async fn streams_over_the_per_client_cap_get_429_while_another_client_streams() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_streams_per_client = 1;
    })
    .await;
    let id = app.submit_scan(queued_scan()).await;
    let _held = stream_from(&app, "127.0.0.1", &id)
        .await
        .expect("the first stream opens");
    match stream_from(&app, "127.0.0.1", &id).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("CERTUS_ASSURANCE_MAX_STREAMS_PER_CLIENT"),
                "{body}"
            );
        }
        other => panic!("the second stream is refused: {:?}", other.is_ok()),
    }
    // Another address still streams.
    let _other = stream_from(&app, "127.0.0.2", &id)
        .await
        .expect("another client's stream opens");
    // A scan the client may not see takes no slot: its 4404 close comes despite the cap.
    let mut unknown = stream_from(&app, "127.0.0.1", "test_000000000000")
        .await
        .expect("an unknown scan is answered after the upgrade");
    let (_, code, _) = read_to_close(&mut unknown).await;
    assert_eq!(code, Some(CloseCode::from(4404)));
    assert_closures(&app, "per_client_limit", 1).await;
}

#[tokio::test]
async fn clients_receive_pings_and_an_idle_stream_is_closed_with_4408() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.stream_ping_interval = Duration::from_secs(1);
        c.queue.stream_idle_timeout = Duration::from_secs(3);
    })
    .await;
    let id = app.submit_scan(queued_scan()).await;
    let mut ws = stream_from(&app, "127.0.0.1", &id).await.unwrap();
    // The client answers every ping (tungstenite does), yet pongs do not keep a stream with no
    // event open.
    let (pings, code, reason) = read_to_close(&mut ws).await;
    assert!(pings >= 1, "no ping reached the client");
    assert_eq!(code, Some(CloseCode::from(4408)));
    assert!(
        reason.contains("CERTUS_ASSURANCE_STREAM_IDLE_TIMEOUT_SECONDS"),
        "{reason}"
    );
    assert_closures(&app, "idle", 1).await;
}

#[tokio::test]
async fn a_stream_whose_client_stops_answering_pings_is_closed() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.stream_ping_interval = Duration::from_secs(1);
    })
    .await;
    let id = app.submit_scan(queued_scan()).await;
    // A hand-made WebSocket client that never answers a ping.
    let mut tcp = connect_from(&app, "127.0.0.1").await;
    tcp.write_all(websocket_upgrade(&id).as_bytes())
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    // Server frames are unmasked: a close frame with code 4408 is 0x88, a length, 0x11 0x38.
    let close_4408 = |bytes: &[u8]| {
        bytes
            .windows(4)
            .any(|w| w[0] == 0x88 && w[2] == 0x11 && w[3] == 0x38)
    };
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
            .await
            .expect("the server closes the stream")
            .unwrap_or(0);
        received.extend_from_slice(&buf[..n]);
        if n == 0 || close_4408(&received) {
            break;
        }
    }
    assert!(
        received.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        received.windows(2).any(|w| w == [0x89, 0x00]),
        "a ping was sent first"
    );
    assert!(close_4408(&received), "closed with 4408");
    assert_closures(&app, "no_pong", 1).await;
}
