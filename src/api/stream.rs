//! The WebSocket stream of one scan: replay of earlier events, then live events, then a close
//! frame after `scan_complete`. Unknown scans get close code 4404 after the handshake. A client
//! that disconnects is noticed at once, and shutdown closes every stream with 1001.
//!
//! Streams are capped in all (`MAX_STREAMS`, 503) and per client address
//! (`MAX_STREAMS_PER_CLIENT`, 429), both before the upgrade and only for a scan the caller may
//! see. A live stream is pinged every `STREAM_PING_INTERVAL_SECONDS` and closed (4408) when its
//! client has not answered the previous ping, or when neither an event nor a client message came
//! for `STREAM_IDLE_TIMEOUT_SECONDS`.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Access;
use crate::error::ApiError;
use crate::jobs::events::{StreamEvent, Subscription};
use crate::jobs::{EventSource, StoredFeed};
use crate::metrics::labels::StreamClosure;
use crate::metrics::Metrics;
use crate::scan::TestId;

/// Close code for an unknown scan id (4000-4999 are application codes).
pub const CLOSE_NOT_FOUND: u16 = 4404;
/// Close code for a stream ended by the server for being idle (no event and no client message
/// within the idle limit, or no pong to a ping).
pub const CLOSE_IDLE: u16 = 4408;

/// Keeps `active_streams` right however the connection ends.
struct StreamGuard(Metrics);

impl StreamGuard {
    fn new(metrics: &Metrics) -> StreamGuard {
        metrics.streams.active.inc();
        StreamGuard(metrics.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.active.dec();
    }
}

/// `GET /v1/security-scans/{test_id}/stream` (WebSocket).
pub async fn stream_scan_events(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
            Err(err)
                if err
                    .chain()
                    .any(|c| c.is::<crate::upload::artifact_store::StoreUnavailable>()) =>
            {
                // Refused before the upgrade: the client gets the 503 and its detail.
                return super::findings::store_error(err).into_response();
            }
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
    let slots = if source.is_some() {
        match take_stream_slots(&state, peer) {
            Ok(slots) => Some(slots),
            Err(refusal) => return refusal.into_response(),
        }
    } else {
        None
    };
    ws.on_upgrade(move |socket| async move {
        serve_stream(socket, state, source).await;
        drop(slots);
    })
}

/// A stream's places: one of `MAX_STREAMS` and one of its client's `MAX_STREAMS_PER_CLIENT`.
type StreamSlots = (
    tokio::sync::OwnedSemaphorePermit,
    super::per_client::PerClientSlot,
);

/// Counts a stream refused or ended by the server (`stream_closures_total`).
fn count_closure(state: &AppState, reason: StreamClosure) {
    state.metrics.streams.closures.get(reason).inc();
}

/// Takes a global and a per-client stream slot, or answers why not: 503 when the server is full,
/// 429 when this client address holds its share (other clients are still served).
fn take_stream_slots(state: &AppState, peer: SocketAddr) -> Result<StreamSlots, ApiError> {
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        count_closure(state, StreamClosure::GlobalLimit);
        return Err(ApiError::Unavailable {
            detail: format!(
                "this server already serves {} event streams (CERTUS_ASSURANCE_MAX_STREAMS); \
                 retry later, or poll GET /v1/security-scans/{{test_id}}",
                state.config.queue.max_streams
            ),
            retry_after_seconds: 5,
        });
    };
    let Some(slot) = state.stream_clients.try_take(peer.ip()) else {
        count_closure(state, StreamClosure::PerClientLimit);
        return Err(ApiError::TooManyRequests {
            detail: format!(
                "your address already has {} event streams open \
                 (CERTUS_ASSURANCE_MAX_STREAMS_PER_CLIENT); close one, or poll \
                 GET /v1/security-scans/{{test_id}}",
                state.stream_clients.cap()
            ),
            retry_after_seconds: 5,
        });
    };
    Ok((permit, slot))
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
    let sent = &state.metrics.streams.events_sent;
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

/// Ends a live stream the server gives up on (4408), counting why (`label`).
async fn give_up(socket: &mut WebSocket, state: &AppState, label: StreamClosure, reason: &str) {
    count_closure(state, label);
    close(socket, CLOSE_IDLE, reason).await;
}

/// Sends events until the terminal one (then a normal close), the client leaves, the stream
/// goes idle or stops answering pings (4408), or shutdown (1001).
async fn follow(socket: &mut WebSocket, state: &AppState, mut feed: Feed) {
    let sent = &state.metrics.streams.events_sent;
    let idle_limit = state.config.queue.stream_idle_timeout;
    let ping_every = state.config.queue.stream_ping_interval;
    let idle = tokio::time::sleep(idle_limit);
    tokio::pin!(idle);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
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
                idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // A pong proves the client alive, but is not traffic that keeps a stream open.
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                // Pings are answered by the protocol layer; any message is client traffic.
                Some(Ok(_)) => idle.as_mut().reset(tokio::time::Instant::now() + idle_limit),
            },
            _ = ping.tick() => {
                if awaiting_pong {
                    let reason = format!(
                        "no pong to the ping of {}s ago; reconnect to resume",
                        ping_every.as_secs()
                    );
                    return give_up(socket, state, StreamClosure::NoPong, &reason).await;
                }
                if socket.send(Message::Ping(axum::body::Bytes::new())).await.is_err() {
                    return;
                }
                awaiting_pong = true;
            }
            _ = &mut idle => {
                let reason = format!(
                    "no event for {}s (CERTUS_ASSURANCE_STREAM_IDLE_TIMEOUT_SECONDS); reconnect to resume",
                    idle_limit.as_secs()
                );
                return give_up(socket, state, StreamClosure::Idle, &reason).await;
            }
            _ = state.shutdown.cancelled() => {
                close(socket, close_code::AWAY, "server shutting down").await;
                return;
            }
        }
    }
}
