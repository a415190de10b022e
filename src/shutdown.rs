//! Shutdown: the stop signal, the tokens that order the drain, and the task tracker of the
//! workers. Other modules only ever receive a token.
//!
//! The order is: refuse new scans and stop claiming (`stop_claiming`; submissions get 503 and
//! readiness turns false while status reads and streams keep working), let running scans finish
//! until the grace deadline, then stop the rest and put them back in the queue (`hard_stop`),
//! close the WebSocket streams (`close_streams`), and finally stop the HTTP server (`stop_http`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the last step of the drain waits for open connections to close before the process
/// stops anyway (the deploy manifests' termination grace period counts it).
pub const CONNECTIONS_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tokens of one application instance.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Stop claiming scans (submissions are refused and readiness is false from here on).
    pub stop_claiming: CancellationToken,
    /// Stop accepting HTTP connections and finish the open ones.
    pub stop_http: CancellationToken,
    /// The drain deadline passed: running scans are stopped and queued again.
    pub hard_stop: CancellationToken,
    /// Close open WebSocket streams with 1001.
    pub close_streams: CancellationToken,
    /// Tracks the worker tasks.
    pub workers: TaskTracker,
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "could not listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT; shutting down"),
        _ = terminate => tracing::info!("received SIGTERM; shutting down"),
    }
}
