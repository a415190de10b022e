//! The HTTP server and the process: address, data directory, request limits, shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::{positive, seconds};

#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8056", value_name = "ADDR")]
    pub listen_addr: SocketAddr,

    /// Directory for the SQLite database and temporary scan workspaces (created if missing).
    #[arg(long, default_value = "./certus-assurance-data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Directory where each scan's artifact bundle is written [default: <DATA_DIR>/artifacts].
    #[arg(long, value_name = "DIR")]
    pub artifact_root: Option<PathBuf>,

    /// Maximum request body size in bytes.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_body_bytes: usize,

    /// Time limit for one HTTP request (not WebSocket streams), in seconds.
    #[arg(long = "request-timeout-seconds", default_value = "30", value_parser = seconds, value_name = "SECONDS")]
    pub request_timeout: Duration,

    /// Seconds a shutdown waits for running scans before they are put back in the queue.
    #[arg(long = "shutdown-grace-seconds", default_value = "30", value_parser = seconds, value_name = "SECONDS")]
    pub shutdown_grace: Duration,

    /// Most HTTP connections open at once; a further connection is answered 503 and closed.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,

    /// Most HTTP connections open at once from one client address (IPv6 by its /64); a further
    /// connection from it is answered 429 and closed (0: no limit; behind a reverse proxy every
    /// connection comes from the proxy's address).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections_per_client: usize,

    /// Seconds a client has to send the head of a request (line and headers): counted from the
    /// connection's opening, and from the first byte of each later request on a kept-alive
    /// connection. A connection that does not is closed.
    #[arg(long = "http-header-read-timeout-seconds", default_value = "10", value_parser = seconds, value_name = "SECONDS")]
    pub http_header_read_timeout: Duration,

    /// Seconds an HTTP connection may pass with no byte received or sent while no request is
    /// being handled (a kept-alive connection waiting for its next request, a response the
    /// client stopped reading, a silent WebSocket); it is then closed.
    #[arg(long = "http-idle-timeout-seconds", default_value = "75", value_parser = seconds, value_name = "SECONDS")]
    pub http_idle_timeout: Duration,
}

/// Caps and timeouts of HTTP connections (see `crate::api::connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client address (0: no limit).
    pub max_per_client: usize,
    /// Time to receive a request's head.
    pub header_read_timeout: Duration,
    /// Time without a byte either way while no request is being handled.
    pub idle_timeout: Duration,
}

impl ServerConfig {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        positive("REQUEST_TIMEOUT_SECONDS", self.request_timeout.as_secs())?;
        if self.max_body_bytes < 1024 {
            bail!("CERTUS_ASSURANCE_MAX_BODY_BYTES must be at least 1024");
        }
        positive("MAX_CONNECTIONS", self.max_connections as u64)?;
        positive(
            "HTTP_HEADER_READ_TIMEOUT_SECONDS",
            self.http_header_read_timeout.as_secs(),
        )?;
        positive(
            "HTTP_IDLE_TIMEOUT_SECONDS",
            self.http_idle_timeout.as_secs(),
        )?;
        Ok(())
    }

    /// The caps and timeouts of HTTP connections.
    pub fn connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            max_per_client: self.max_connections_per_client,
            header_read_timeout: self.http_header_read_timeout,
            idle_timeout: self.http_idle_timeout,
        }
    }
}
