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
}

impl ServerConfig {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        positive("REQUEST_TIMEOUT_SECONDS", self.request_timeout.as_secs())?;
        if self.max_body_bytes < 1024 {
            bail!("CERTUS_ASSURANCE_MAX_BODY_BYTES must be at least 1024");
        }
        Ok(())
    }
}
