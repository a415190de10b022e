//! Phase 1 of a scan, the source: where the tree to scan comes from and how it is made
//! available in the scan's workspace. Git URLs are checked at submit time ([`git_url`], against
//! the [`policy`]) and again where the clone connects ([`egress`]); [`checkout`] clones; a
//! `directory` source is read in place ([`directory`]); an uploaded archive is found in the
//! archive store ([`archive_store`]) and unpacked ([`archive`]). [`prepare`] runs the phase
//! for one scan.

pub mod archive;
pub mod archive_store;
pub mod checkout;
pub mod directory;
pub mod egress;
pub mod git_url;
pub mod policy;
pub mod prepare;

pub use git_url::{neutralize_controls, parse_git_url, redact_text, redact_url, GitUrl};
pub use policy::{is_internal, literal_ip, GitScheme, GitSchemes, HostCheck, SourcePolicy};

/// Where the tree to scan comes from.
#[derive(Debug, Clone)]
pub enum ScanSource {
    /// Cloned into the scan's workspace.
    Git {
        url: GitUrl,
        branch: Option<String>,
        commit: Option<String>,
    },
    /// A directory on the server, scanned in place (read only).
    Directory {
        /// As submitted (shown in `scan.json`).
        requested: String,
    },
    /// An archive stored by `upload-archive`, unpacked into the workspace.
    Archive {
        /// As submitted (`uploads/<sha256>.<ext>`).
        archive_path: String,
    },
}

impl ScanSource {
    pub fn type_name(&self) -> &'static str {
        match self {
            ScanSource::Git { .. } => "git",
            ScanSource::Directory { .. } => "directory",
            ScanSource::Archive { .. } => "archive",
        }
    }
}
