//! What the scanners run with: the `PATH` of external tools and the offline OSV database.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::{hours_or_off, passthrough_env, ZeroIsOff};

#[derive(Debug, Clone, Args)]
pub struct ScanningConfig {
    /// Directory of OSV records (the osv.dev per-ecosystem exports, as JSON files or `all.zip`)
    /// the vulnerability scanner matches SBOM components against [default: none; the scanner
    /// reports itself skipped].
    #[arg(long, value_name = "DIR")]
    pub osv_db_dir: Option<PathBuf>,

    /// Base URL `osv sync` downloads `<URL>/<Ecosystem>/all.zip` from (osv.dev's export bucket,
    /// or a mirror with the same layout) [default: https://osv-vulnerabilities.storage.googleapis.com].
    #[arg(long, value_name = "URL")]
    pub osv_source_url: Option<String>,

    /// Oldest OSV data, in hours, the vulnerability scanner accepts: older data (or no data for
    /// an ecosystem of the SBOM) makes its run incomplete, and `CertusAssuranceOsvDatabaseStale` fires
    /// (0: no limit).
    #[arg(long = "osv-max-age-hours", default_value = "168", value_parser = hours_or_off, value_name = "HOURS")]
    pub osv_max_age: ZeroIsOff<Duration>,

    /// `PATH` on which external scanners (bandit, semgrep, ...) are looked up and run
    /// [default: the service's own PATH].
    #[arg(long, value_name = "DIRS")]
    pub tool_path: Option<OsString>,
}

impl ScanningConfig {
    /// Checks the OSV directory and fills in the tool `PATH` from the service's own.
    pub(super) fn check(&mut self) -> anyhow::Result<()> {
        if let Some(dir) = &self.osv_db_dir {
            if !dir.is_dir() {
                bail!(
                    "CERTUS_ASSURANCE_OSV_DB_DIR: {} is not a directory",
                    dir.display()
                );
            }
        }
        if self.tool_path.is_none() {
            self.tool_path = passthrough_env("PATH");
        }
        Ok(())
    }
}
