//! Archive sources: the upload size and the limits of unpacking.

use clap::Args;

use super::{count_or_off, positive, ZeroIsOff};

#[derive(Debug, Clone, Args)]
pub struct ArchiveConfig {
    /// Largest archive `upload-archive` accepts, in bytes.
    #[arg(long = "archive-max-bytes", default_value_t = 512 * 1024 * 1024, value_name = "BYTES")]
    pub max_bytes: u64,

    /// Most bytes of uploaded archives one workspace may keep stored; 0: no quota.
    #[arg(long = "archive-quota-bytes", default_value = "10737418240", value_parser = count_or_off, value_name = "BYTES")]
    pub quota_bytes: ZeroIsOff<u64>,

    /// Largest total size an archive may unpack to, in bytes.
    #[arg(long = "archive-max-extracted-bytes", default_value_t = 2 * 1024 * 1024 * 1024, value_name = "BYTES")]
    pub max_extracted_bytes: u64,

    /// Largest number of entries (files, directories, links) an archive may hold.
    #[arg(
        long = "archive-max-files",
        default_value_t = 100_000,
        value_name = "N"
    )]
    pub max_files: u64,
}

impl ArchiveConfig {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        positive("ARCHIVE_MAX_BYTES", self.max_bytes)?;
        positive("ARCHIVE_MAX_EXTRACTED_BYTES", self.max_extracted_bytes)?;
        positive("ARCHIVE_MAX_FILES", self.max_files)
    }
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        super::defaults_of()
    }
}
