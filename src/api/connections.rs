//! The HTTP server's connection layer: the accept loop, the caps on open connections (in all,
//! `MAX_CONNECTIONS`, and per client address, `MAX_CONNECTIONS_PER_CLIENT`), the header-read and
//! idle timeouts of each connection's socket, and the graceful close of every connection at
//! shutdown. Requests go to the router unchanged, with the peer address as `ConnectInfo`.
//!
//! A connection over a cap is answered at once, without reaching the router: `503` (every slot
//! taken) or `429` (this address holds its share), a JSON `detail`, `Retry-After`, then closed.
//! A connection that does not send a request head in time, or that passes the idle timeout with
//! no byte either way while no request is being handled, is closed without an answer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::per_client::{PerClient, PerClientSlot};
use crate::config::ConnectionLimits;
use crate::metrics::labels::{ConnectionRefusal, ConnectionTimeout};
use crate::metrics::Metrics;

/// Refused connections answered at once; beyond this many, a refused connection is closed
/// without an answer (a flood must not hold a task and a descriptor per refusal).
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection may take to send its request head and read the answer.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting, lets every
/// connection finish its request in flight, and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let global = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = PerClient::new(limits.max_per_client);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let tasks = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of descriptors, most likely: wait for some to close.
                    tracing::warn!(error = %err, "accepting a connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = match global.clone().try_acquire_owned() {
            Err(_) => Err(Refusal::Global(limits.max_connections)),
            Ok(permit) => match per_client.try_take(peer.ip()) {
                None => Err(Refusal::PerClient(limits.max_per_client)),
                Some(slot) => Ok((permit, slot)),
            },
        };
        match admitted {
            Ok((permit, slot)) => {
                let held = Held::new(permit, slot, &metrics);
                let io = TimedIo::new(stream, limits, metrics.clone(), held);
                tasks.spawn(serve_connection(io, peer, router.clone(), stop.clone()));
            }
            Err(refusal) => {
                metrics.http.connections_refused.get(refusal.reason()).inc();
                tracing::debug!(client = %peer.ip(), reason = refusal.reason().as_str(), "connection refused");
                if let Ok(turn) = refusals.clone().try_acquire_owned() {
                    tasks.spawn(async move {
                        refuse(stream, refusal).await;
                        drop(turn);
                    });
                }
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Global(usize),
    PerClient(usize),
}

impl Refusal {
    /// The `reason` label.
    fn reason(self) -> ConnectionRefusal {
        match self {
            Refusal::Global(_) => ConnectionRefusal::GlobalLimit,
            Refusal::PerClient(_) => ConnectionRefusal::PerClientLimit,
        }
    }

    fn status_line(self) -> &'static str {
        match self {
            Refusal::Global(_) => "503 Service Unavailable",
            Refusal::PerClient(_) => "429 Too Many Requests",
        }
    }

    fn detail(self) -> String {
        match self {
            Refusal::Global(n) => format!(
                "this server already holds {n} open connections (CERTUS_ASSURANCE_MAX_CONNECTIONS); retry later"
            ),
            Refusal::PerClient(n) => format!(
                "your address already holds {n} open connections (CERTUS_ASSURANCE_MAX_CONNECTIONS_PER_CLIENT); \
                 close idle ones or reuse them (keep-alive), then retry"
            ),
        }
    }
}

/// Answers a refused connection and closes it. The request head is read first (for a bounded
/// time), so that closing does not reset the connection before the client reads the answer.
async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let body = serde_json::json!({ "detail": refusal.detail() }).to_string();
    let answer = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        refusal.status_line(),
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        let mut buf = [0u8; 4096];
        let mut tail: Vec<u8> = Vec::new();
        let mut total = 0usize;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n;
                    tail.extend_from_slice(&buf[..n]);
                    if tail.windows(4).any(|w| w == b"\r\n\r\n") || total > 16 * 1024 {
                        break;
                    }
                    let keep = tail.len().saturating_sub(3);
                    tail.drain(..keep);
                }
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// One admitted connection, served by hyper until it closes.
async fn serve_connection(io: TimedIo, peer: SocketAddr, router: Router, stop: CancellationToken) {
    let activity = io.activity.clone();
    let tower = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let handling = Handling::start(&activity);
        let response = hyper::service::Service::call(&tower, req);
        async move {
            let response = response.await;
            if let Ok(answer) = &response {
                if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
                    handling.upgraded();
                }
            }
            drop(handling);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(client = %peer.ip(), error = %err, "connection ended with an error");
    }
}

/// What the requests of one connection tell its socket's timers.
#[derive(Default)]
struct Activity {
    /// Requests being handled now.
    handling: AtomicUsize,
    /// Requests whose head was received so far.
    started: AtomicU64,
    /// The connection was upgraded (WebSocket): no more request heads will come.
    upgraded: AtomicBool,
}

impl Activity {
    fn busy(&self) -> bool {
        self.handling.load(Ordering::SeqCst) > 0
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
}

/// Marks a request as being handled on its connection (no connection timer runs then: the
/// request time limit does).
struct Handling(Arc<Activity>);

impl Handling {
    fn start(activity: &Arc<Activity>) -> Handling {
        activity.started.fetch_add(1, Ordering::SeqCst);
        activity.handling.fetch_add(1, Ordering::SeqCst);
        Handling(activity.clone())
    }

    fn upgraded(&self) {
        self.0.upgraded.store(true, Ordering::SeqCst);
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What an open connection holds: its global slot, its client's slot, and its place in the
/// `http_connections_open` gauge; all given back when the connection's socket is dropped (after
/// an upgrade, when the WebSocket ends).
struct Held {
    _permit: OwnedSemaphorePermit,
    _slot: PerClientSlot,
    metrics: Metrics,
}

impl Held {
    fn new(permit: OwnedSemaphorePermit, slot: PerClientSlot, metrics: &Metrics) -> Held {
        metrics.http.connections_open.inc();
        Held {
            _permit: permit,
            _slot: slot,
            metrics: metrics.clone(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.http.connections_open.dec();
    }
}

/// The socket of one connection with its two timers; once one expires, reads and writes fail
/// with `TimedOut` and hyper closes the connection.
///
/// - header read: a request head must be received within `header_read_timeout` of the
///   connection's opening, and of the first byte of each later request;
/// - idle: no byte either way for `idle_timeout` while no request is being handled (a kept-alive
///   connection waiting for its next request, a response the client stopped reading, a silent
///   WebSocket).
struct TimedIo {
    inner: TcpStream,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
    idle_at: Instant,
    /// The deadline of the request head being received, and `Activity::started` when it was set.
    head_at: Option<(Instant, u64)>,
    activity: Arc<Activity>,
    expired: Option<ConnectionTimeout>,
    metrics: Metrics,
    _held: Held,
}

impl TimedIo {
    fn new(inner: TcpStream, limits: ConnectionLimits, metrics: Metrics, held: Held) -> TimedIo {
        let now = Instant::now();
        let head_at = now + limits.header_read_timeout;
        TimedIo {
            inner,
            limits,
            timer: Box::pin(tokio::time::sleep_until(head_at)),
            idle_at: now + limits.idle_timeout,
            head_at: Some((head_at, 0)),
            activity: Arc::new(Activity::default()),
            expired: None,
            metrics,
            _held: held,
        }
    }

    /// Forgets the head deadline once its request was handed to the router.
    fn settle_head(&mut self) {
        if let Some((_, started)) = self.head_at {
            if self.activity.started() != started {
                self.head_at = None;
            }
        }
    }

    fn received(&mut self) {
        self.settle_head();
        let now = Instant::now();
        self.idle_at = now + self.limits.idle_timeout;
        let upgraded = self.activity.upgraded.load(Ordering::SeqCst);
        if self.head_at.is_none() && !upgraded && !self.activity.busy() {
            self.head_at = Some((
                now + self.limits.header_read_timeout,
                self.activity.started(),
            ));
        }
    }

    fn sent(&mut self) {
        self.idle_at = Instant::now() + self.limits.idle_timeout;
    }

    /// Called when the socket has nothing to give or take: ready with an error once a timer
    /// expired.
    fn poll_expiry(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if let Some(reason) = self.expired {
            return Poll::Ready(expired_error(reason));
        }
        self.settle_head();
        if self.activity.busy() {
            self.idle_at = Instant::now() + self.limits.idle_timeout;
            return Poll::Pending;
        }
        let (deadline, reason) = match self.head_at {
            Some((head_at, _)) if head_at <= self.idle_at => {
                (head_at, ConnectionTimeout::HeaderRead)
            }
            _ => (self.idle_at, ConnectionTimeout::Idle),
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired = Some(reason);
                self.metrics.http.connections_timed_out.get(reason).inc();
                Poll::Ready(expired_error(reason))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes through `write`: bytes written keep the connection alive; a blocked write counts
    /// toward the timers.
    fn write_with(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if let Some(reason) = self.expired {
            return Poll::Ready(Err(expired_error(reason)));
        }
        match write(Pin::new(&mut self.inner), cx) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.sent();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => self.poll_expiry(cx).map(Err),
        }
    }
}

fn expired_error(reason: ConnectionTimeout) -> io::Error {
    let setting = if reason == ConnectionTimeout::Idle {
        "CERTUS_ASSURANCE_HTTP_IDLE_TIMEOUT_SECONDS"
    } else {
        "CERTUS_ASSURANCE_HTTP_HEADER_READ_TIMEOUT_SECONDS"
    };
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connection closed: {} timeout ({setting})", reason.as_str()),
    )
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(reason) = this.expired {
            return Poll::Ready(Err(expired_error(reason)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => this.poll_expiry(cx).map(Err),
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
