//! The job engine: workers, the queue bound, scan time limits, recovery, event history.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::{positive, seconds};

/// Longest per-scan timeout a request may ask for.
pub const MAX_SCAN_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;

/// What happens at start-up to a scan that was RUNNING when the previous process died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecoverRunning {
    /// Mark it FAILED with `failure_reason = interrupted` (the default).
    Fail,
    /// Put it back in the queue to run again.
    Requeue,
}

#[derive(Debug, Clone, Args)]
pub struct QueueConfig {
    /// Number of scans that run at once (0 pauses the queue: scans are accepted but not run).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_workers: usize,

    /// Maximum number of QUEUED scans; further submissions get 503 with Retry-After.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_queue: usize,

    /// Default per-scan time limit in seconds (a request may ask for less or more, up to 24 h).
    #[arg(long = "scan-timeout-seconds", default_value = "600", value_parser = seconds, value_name = "SECONDS")]
    pub scan_timeout: Duration,

    /// What to do at start-up with scans left RUNNING by a process that died.
    #[arg(long, value_enum, default_value = "fail", value_name = "POLICY")]
    pub recover_running: RecoverRunning,

    /// Events kept per scan for late WebSocket subscribers (oldest log lines are dropped first).
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub stream_history_limit: usize,

    /// Most submissions accepted in one `POST /v1/security-scans/batch`.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub batch_max_items: usize,

    /// Most QUEUED plus RUNNING scans one workspace may have; further submissions into it get
    /// 429 with Retry-After (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_active_per_workspace: usize,

    /// Most WebSocket streams open at once; further connections get 503 before the upgrade.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_streams: usize,

    /// Most WebSocket streams open at once from one client address (IPv6 by its /64); further
    /// connections from it get 429 before the upgrade (0: no limit).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_streams_per_client: usize,

    /// Seconds a stream may go without an event and without a message from its client before
    /// it is closed (code 4408; the client reconnects and gets the history replayed).
    #[arg(long = "stream-idle-timeout-seconds", default_value = "300", value_parser = seconds, value_name = "SECONDS")]
    pub stream_idle_timeout: Duration,

    /// Seconds between WebSocket pings on a stream; a stream whose client has not answered the
    /// previous ping with a pong by the next one is closed.
    #[arg(long = "stream-ping-interval-seconds", default_value = "20", value_parser = seconds, value_name = "SECONDS")]
    pub stream_ping_interval: Duration,
}

impl QueueConfig {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.max_workers > 256 {
            bail!(
                "CERTUS_ASSURANCE_MAX_WORKERS must be at most 256 (got {})",
                self.max_workers
            );
        }
        positive("MAX_QUEUE", self.max_queue as u64)?;
        positive("SCAN_TIMEOUT_SECONDS", self.scan_timeout.as_secs())?;
        if self.scan_timeout.as_secs() > MAX_SCAN_TIMEOUT_SECONDS {
            bail!(
                "CERTUS_ASSURANCE_SCAN_TIMEOUT_SECONDS must be at most {MAX_SCAN_TIMEOUT_SECONDS}"
            );
        }
        positive("BATCH_MAX_ITEMS", self.batch_max_items as u64)?;
        if self.batch_max_items > 10_000 {
            bail!("CERTUS_ASSURANCE_BATCH_MAX_ITEMS must be at most 10000");
        }
        if self.stream_history_limit < 8 {
            bail!("CERTUS_ASSURANCE_STREAM_HISTORY_LIMIT must be at least 8");
        }
        positive("MAX_STREAMS", self.max_streams as u64)?;
        positive(
            "STREAM_IDLE_TIMEOUT_SECONDS",
            self.stream_idle_timeout.as_secs(),
        )?;
        positive(
            "STREAM_PING_INTERVAL_SECONDS",
            self.stream_ping_interval.as_secs(),
        )?;
        Ok(())
    }
}
