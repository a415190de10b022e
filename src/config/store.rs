//! The job store, and what replicas sharing a PostgreSQL store agree on (leases, attempts,
//! reconciliation, the replica's identity).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::{positive, seconds};

/// Where scans are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded SQLite file (one replica).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (several replicas may share it). Kept out of logs: it may hold a password.
    Postgres(String),
}

#[derive(Clone, Args)]
pub struct StoreConfig {
    /// Job store URL: `sqlite://<path>` (default: <DATA_DIR>/certus-assurance.db), or
    /// `postgres://user:password@host:5432/db` for several replicas sharing one queue.
    #[arg(long, value_parser = parse_database_url, value_name = "URL", hide_env_values = true)]
    pub database_url: Option<StoreLocation>,

    /// Shared store: seconds a running scan's lease lasts before other replicas may reclaim it.
    #[arg(long = "lease-seconds", default_value = "30", value_parser = seconds, value_name = "SECONDS")]
    pub lease: Duration,

    /// Shared store: runs of one scan (first run plus re-runs after a replica died) before it
    /// fails as `interrupted`.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_attempts: u32,

    /// Shared store: seconds between passes that reclaim expired leases and refresh the
    /// cluster-wide gauges.
    #[arg(long = "reconcile-interval-seconds", default_value = "5", value_parser = seconds, value_name = "SECONDS")]
    pub reconcile_interval: Duration,

    /// Shared store: this replica's identity as the owner of its scans [default: host-pid-random].
    #[arg(long, value_name = "ID")]
    pub replica_id: Option<String>,
}

impl std::fmt::Debug for StoreConfig {
    /// Without the database URL, which may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.database_url {
            None => "sqlite (default)",
            Some(StoreLocation::Sqlite(_)) => "sqlite",
            Some(StoreLocation::Postgres(_)) => "postgres",
        };
        f.debug_struct("StoreConfig")
            .field("backend", &backend)
            .field("lease", &self.lease)
            .field("max_attempts", &self.max_attempts)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("replica_id", &self.replica_id)
            .finish()
    }
}

impl StoreConfig {
    pub(super) fn check(&mut self) -> anyhow::Result<()> {
        positive("LEASE_SECONDS", self.lease.as_secs())?;
        positive("MAX_ATTEMPTS", u64::from(self.max_attempts))?;
        positive(
            "RECONCILE_INTERVAL_SECONDS",
            self.reconcile_interval.as_secs(),
        )?;
        self.replica_id.get_or_insert_with(default_replica_id);
        Ok(())
    }

    /// This replica's identity (the one given, else the one chosen at validation).
    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(default_replica_id)
    }
}

/// `<host>-<pid>-<random>`: unique per process, readable in `owner` columns and logs.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_string());
    let mut bytes = [0u8; 3];
    let _ = getrandom::fill(&mut bytes);
    format!("{host}-{}-{}", std::process::id(), hex::encode(bytes))
}

/// Value parser of `CERTUS_ASSURANCE_DATABASE_URL` (the command line masks the value in its
/// error, since it may hold a password).
fn parse_database_url(url: &str) -> Result<StoreLocation, String> {
    store_location(url).map_err(|e| format!("{e:#}"))
}

fn store_location(url: &str) -> anyhow::Result<StoreLocation> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            bail!("CERTUS_ASSURANCE_DATABASE_URL: `sqlite://` needs a file path, e.g. sqlite://./data/scans.db");
        }
        return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // `verify-full`/`verify-ca` are handled by the store itself (see storage/postgres.rs).
        let parseable = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        parseable.parse::<tokio_postgres::Config>().map_err(|e| {
            anyhow::anyhow!("CERTUS_ASSURANCE_DATABASE_URL is not a valid PostgreSQL URL: {e}")
        })?;
        return Ok(StoreLocation::Postgres(url.to_string()));
    }
    Err(anyhow::anyhow!("unsupported scheme"))
        .context("CERTUS_ASSURANCE_DATABASE_URL must start with sqlite:// or postgres://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_accept_the_verifying_ssl_modes() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u@db.example.com/scans?sslmode={mode}");
            assert_eq!(
                parse_database_url(&url).unwrap(),
                StoreLocation::Postgres(url.clone()),
                "{mode}"
            );
        }
    }
}
