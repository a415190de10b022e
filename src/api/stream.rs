//! The WebSocket stream of one scan: replay of earlier events, then live events, then a close
//! frame after `scan_complete`. Unknown scans get close code 4404 after the handshake. A client
//! that disconnects is noticed at once, and shutdown closes every stream with 1001.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use std::sync::Arc;

use crate::auth::Access;
use crate::error::ApiError;
use crate::jobs::events::{StreamEvent, Subscription};
use crate::jobs::{EventSource, StoredFeed};
use crate::metrics::Metrics;
use crate::scan::TestId;

/// Close code for an unknown scan id (4000-4999 are application codes).
pub const CLOSE_NOT_FOUND: u16 = 4404;

/// Keeps `active_streams` right however the connection ends.
struct StreamGuard(Metrics);

impl StreamGuard {
    fn new(metrics: &Metrics) -> StreamGuard {
        metrics.active_streams.inc();
        StreamGuard(metrics.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active_streams.dec();
    }
}

/// `GET /v1/security-scans/{test_id}/stream` (WebSocket).
pub async fn stream_scan_events(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(test_id): Path<String>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return (
                rejection.status(),
                Json(json!({
                    "detail": format!(
                        "{}: this route is a WebSocket stream; connect with a WebSocket client (e.g. websocat ws://HOST/v1/security-scans/{{test_id}}/stream)",
                        rejection.body_text()
                    )
                })),
            )
                .into_response()
        }
    };
    // A token confined to other workspaces gets the same 4404 close as for an unknown id.
    let visible = match access.workspace_filter() {
        None => true,
        Some(_) if TestId::parse(&test_id).is_none() => false,
        Some(_) => match state.jobs.get(&test_id).await {
            Ok(record) => record.is_some_and(|r| access.may_see(&r.workspace_id)),
            Err(err) => {
                tracing::error!(job.id = %test_id, error = ?err, "could not look up a scan for its stream");
                false
            }
        },
    };
    let source = if visible && TestId::parse(&test_id).is_some() {
        match state.jobs.subscribe(&test_id).await {
            Ok(source) => source,
            Err(err) => {
                tracing::error!(job.id = %test_id, error = ?err, "could not open a scan's event stream");
                None
            }
        }
    } else {
        None
    };
    // An unknown or foreign scan gets its 4404 close without taking a stream slot: slots are for
    // streams that will carry events, and a full server must not answer 503 where it would
    // answer "not found". Refused before the upgrade, so the client sees a plain HTTP answer it
    // can retry.
    let permit = if source.is_some() {
        match state.streams.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return ApiError::Unavailable {
                    detail: format!(
                    "this server already serves {} event streams (CERTUS_ASSURANCE_MAX_STREAMS); \
                         retry later, or poll GET /v1/security-scans/{{test_id}}",
                    state.config.queue.max_streams
                ),
                    retry_after_seconds: 5,
                }
                .into_response()
            }
        }
    } else {
        None
    };
    ws.on_upgrade(move |socket| async move {
        serve_stream(socket, state, source).await;
        drop(permit);
    })
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn serve_stream(mut socket: WebSocket, state: AppState, source: Option<EventSource>) {
    let _guard = StreamGuard::new(&state.metrics);
    let sent = &state.metrics.stream_events_sent_total;
    match source {
        None => close(&mut socket, CLOSE_NOT_FOUND, "scan not found").await,
        Some(EventSource::Recorded(lines)) => {
            for line in lines {
                if socket.send(Message::Text(line.into())).await.is_err() {
                    return;
                }
                sent.inc();
            }
            close(&mut socket, close_code::NORMAL, "scan complete").await;
        }
        Some(EventSource::Live(subscription)) => {
            follow(&mut socket, &state, Feed::Local(subscription)).await
        }
        Some(EventSource::Stored(feed)) => follow(&mut socket, &state, Feed::Stored(feed)).await,
    }
}

/// A live source of events: this replica's channel, or the stored log of a shared store.
enum Feed {
    Local(Subscription),
    Stored(StoredFeed),
}

impl Feed {
    async fn next(&mut self) -> Option<Arc<StreamEvent>> {
        match self {
            Feed::Local(s) => s.next().await,
            Feed::Stored(f) => match f.next().await {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(error = %err, "reading stored events failed; closing the stream");
                    None
                }
            },
        }
    }
}

/// Sends events until the terminal one (then a normal close), the client leaves, or shutdown.
async fn follow(socket: &mut WebSocket, state: &AppState, mut feed: Feed) {
    let sent = &state.metrics.stream_events_sent_total;
    loop {
        tokio::select! {
            event = feed.next() => {
                let Some(event) = event else {
                    close(socket, close_code::ERROR, "event stream ended unexpectedly; reconnect to resume").await;
                    return;
                };
                if socket.send(Message::Text(event.json.as_ref().into())).await.is_err() {
                    return;
                }
                sent.inc();
                if event.terminal {
                    close(socket, close_code::NORMAL, "scan complete").await;
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // Clients have nothing to say; pings are answered by the protocol layer.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = state.shutdown.cancelled() => {
                close(socket, close_code::AWAY, "server shutting down").await;
                return;
            }
        }
    }
}
