//! Retention: which finished scans (and their bundles) are deleted, and how often.

use std::time::Duration;

use clap::Args;

use super::{count_or_off, positive, seconds, seconds_or_off, ZeroIsOff};

#[derive(Debug, Clone, Args)]
pub struct RetentionConfig {
    /// Retention: delete finished scans (and their bundles) older than this many seconds; 0 keeps them.
    #[arg(long = "retention-max-age-seconds", default_value = "0", value_parser = seconds_or_off, value_name = "SECONDS")]
    pub max_age: ZeroIsOff<Duration>,

    /// Retention: keep at most this many most recent scans; older finished ones are deleted; 0 keeps all.
    #[arg(long = "retention-max-scans", default_value = "0", value_parser = count_or_off, value_name = "N")]
    pub max_scans: ZeroIsOff<u64>,

    /// Seconds between retention passes.
    #[arg(long = "retention-interval-seconds", default_value = "3600", value_parser = seconds, value_name = "SECONDS")]
    pub interval: Duration,
}

impl RetentionConfig {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        positive("RETENTION_INTERVAL_SECONDS", self.interval.as_secs())
    }

    /// Whether any retention rule is set (otherwise no pass runs).
    pub fn enabled(&self) -> bool {
        self.max_age.is_some() || self.max_scans.is_some()
    }
}
