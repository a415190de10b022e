//! Runs phase 1 for one scan: makes its tree available (cloned, read in place or unpacked) and
//! says what identifies the content ([`Provenance`]) and what `scan.json` records of the source.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use super::archive::{self, ArchiveError, Limits};
use super::archive_store::stored_archive;
use super::checkout::{self, Checkout, CloneError, CloneSpec};
use super::directory;
use super::egress::Resolver;
use super::git_url::GitUrl;
use super::policy::SourcePolicy;
use super::ScanSource;
use crate::pipeline::failure::{is_disk_full_message, scrub_workspace, FailureKind, ScanFailure};
use crate::pipeline::progress::{Reporter, ScanEvent};

/// What identifies the exact content a scan saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// `git_commit`, `directory_sha256` or `archive_sha256`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The commit id, or `sha256:<hex>` of the directory content or of the archive.
    pub id: String,
}

/// What preparing a source needs from the service's settings.
#[derive(Clone)]
pub struct SourceSettings {
    pub clone_timeout: Duration,
    pub clone_max_bytes: u64,
    pub policy: SourcePolicy,
    /// Resolves git hosts when a clone connects.
    pub resolver: Arc<dyn Resolver>,
    pub ssh_key: Option<PathBuf>,
    /// Canonical directories that `directory` scans may read.
    pub source_roots: Arc<Vec<PathBuf>>,
    /// Where `upload-archive` stores archives.
    pub upload_dir: PathBuf,
    pub archive_limits: Limits,
}

/// A source made available for the scanners.
pub struct PreparedSource {
    pub root: PathBuf,
    pub provenance: Provenance,
    /// The `source` object of `scan.json` and of the attestation.
    pub record: Value,
}

/// Prepares `source` in `workspace` (a clone or an unpacked archive goes to `<workspace>/src`).
pub(crate) async fn prepare(
    settings: &SourceSettings,
    source: &ScanSource,
    reporter: &Arc<Reporter>,
    cancel: &Arc<AtomicBool>,
    workspace: &Path,
) -> Result<PreparedSource, ScanFailure> {
    match source {
        ScanSource::Git {
            url,
            branch,
            commit,
        } => {
            let git = GitSource {
                url,
                branch: branch.as_deref(),
                commit: commit.as_deref(),
            };
            prepare_git(settings, &git, reporter, cancel, workspace).await
        }
        ScanSource::Directory { requested } => {
            prepare_directory(settings, requested, reporter, cancel).await
        }
        ScanSource::Archive { archive_path } => {
            prepare_archive(settings, archive_path, reporter, cancel, workspace).await
        }
    }
}

/// A git source as submitted.
struct GitSource<'a> {
    url: &'a GitUrl,
    branch: Option<&'a str>,
    commit: Option<&'a str>,
}

fn cancelled(message: &str) -> ScanFailure {
    ScanFailure::new(FailureKind::Cancelled, message)
}

fn task_failed(what: &str, err: tokio::task::JoinError) -> ScanFailure {
    ScanFailure::new(FailureKind::Internal, format!("{what} failed: {err}"))
}

async fn prepare_git(
    settings: &SourceSettings,
    git: &GitSource<'_>,
    reporter: &Arc<Reporter>,
    cancel: &Arc<AtomicBool>,
    workspace: &Path,
) -> Result<PreparedSource, ScanFailure> {
    let on_branch = git
        .branch
        .map(|b| format!(" (branch {b})"))
        .unwrap_or_default();
    reporter.phase(
        "clone",
        format!("Cloning {}{on_branch}", git.url.display_url),
    );
    let checkout_dir = workspace.join("src");
    let (result, lines) = clone_on_blocking_pool(settings, git, cancel, &checkout_dir).await?;
    for line in lines {
        reporter.emit(ScanEvent::Log {
            tool: "git".into(),
            stream: "stderr".into(),
            line: scrub_workspace(&line, workspace),
        });
    }
    let checkout = result.map_err(|e| clone_failure(e, workspace))?;
    let on_branch = checkout
        .branch
        .as_ref()
        .map(|b| format!(" on {b}"))
        .unwrap_or_default();
    reporter.emit(ScanEvent::Phase {
        phase: "clone".into(),
        message: format!("Checked out {}{on_branch}", checkout.commit),
        commit: Some(checkout.commit.clone()),
        branch: checkout.branch.clone(),
    });
    let provenance = Provenance {
        kind: "git_commit",
        id: checkout.commit.clone(),
    };
    let record = json!({
        "type": "git",
        "git_url": git.url.display_url,
        "branch": git.branch,
        "commit": git.commit,
        "resolved_commit": checkout.commit,
        "resolved_branch": checkout.branch,
        "provenance_id": provenance.id,
    });
    Ok(PreparedSource {
        root: checkout_dir,
        provenance,
        record,
    })
}

/// Clones on the blocking pool; returns the result and git's progress lines.
async fn clone_on_blocking_pool(
    settings: &SourceSettings,
    git: &GitSource<'_>,
    cancel: &Arc<AtomicBool>,
    dest: &Path,
) -> Result<(Result<Checkout, CloneError>, Vec<String>), ScanFailure> {
    let settings = settings.clone();
    let url = git.url.clone();
    let (branch, commit) = (git.branch.map(String::from), git.commit.map(String::from));
    let cancel = cancel.clone();
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let clone_spec = CloneSpec {
            url: &url,
            branch: branch.as_deref(),
            commit: commit.as_deref(),
            timeout: settings.clone_timeout,
            max_bytes: settings.clone_max_bytes,
            policy: settings.policy,
            ssh_key: settings.ssh_key.as_deref(),
            cancel: &cancel,
            resolver: settings.resolver.clone(),
        };
        let result = checkout::clone_repository(&clone_spec, &dest, &mut |l| lines.push(l));
        (result, lines)
    })
    .await
    .map_err(|e| task_failed("the clone task", e))
}

/// The scan failure of a clone that did not succeed, without the workspace's server path.
fn clone_failure(err: CloneError, workspace: &Path) -> ScanFailure {
    match err {
        CloneError::Cancelled => cancelled("cancelled during clone"),
        CloneError::Invalid(m) => {
            ScanFailure::new(FailureKind::SourceInvalid, scrub_workspace(&m, workspace))
        }
        CloneError::Failed(m) if is_disk_full_message(&m) => ScanFailure::new(
            FailureKind::CloneFailed,
            "the server's disk is full: the clone could not be written to the \
             scan's workspace (under CERTUS_ASSURANCE_DATA_DIR); free space there, \
             then submit the scan again",
        ),
        CloneError::Failed(m) => {
            ScanFailure::new(FailureKind::CloneFailed, scrub_workspace(&m, workspace))
        }
    }
}

async fn prepare_directory(
    settings: &SourceSettings,
    requested: &str,
    reporter: &Arc<Reporter>,
    cancel: &Arc<AtomicBool>,
) -> Result<PreparedSource, ScanFailure> {
    reporter.phase("clone", format!("Reading the directory {requested}"));
    // Checked again at run time: the tree may have changed since the submission.
    let root = directory::resolve_directory(requested, &settings.source_roots)
        .map_err(|m| ScanFailure::new(FailureKind::SourceInvalid, m))?;
    let digest = {
        let root = root.clone();
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || directory::hash_directory(&root, &cancel))
            .await
            .map_err(|e| task_failed("hashing", e))?
    };
    let digest = match digest {
        Ok(d) => d,
        Err(_) if cancel.load(Ordering::Relaxed) => {
            return Err(cancelled("cancelled while reading the directory"))
        }
        Err(e) => {
            return Err(ScanFailure::new(
                FailureKind::SourceInvalid,
                format!("the directory could not be read completely: {e}"),
            ))
        }
    };
    reporter.phase(
        "clone",
        format!(
            "Directory content {} ({} files, {} bytes)",
            digest.id, digest.files, digest.bytes
        ),
    );
    let provenance = Provenance {
        kind: "directory_sha256",
        id: digest.id.clone(),
    };
    let record = json!({
        "type": "directory",
        "directory_path": requested,
        "files": digest.files,
        "bytes": digest.bytes,
        "provenance_id": provenance.id,
    });
    Ok(PreparedSource {
        root,
        provenance,
        record,
    })
}

async fn prepare_archive(
    settings: &SourceSettings,
    archive_path: &str,
    reporter: &Arc<Reporter>,
    cancel: &Arc<AtomicBool>,
    workspace: &Path,
) -> Result<PreparedSource, ScanFailure> {
    let (file, sha256, format) = stored_archive(&settings.upload_dir, archive_path)
        .map_err(|m| ScanFailure::new(FailureKind::SourceInvalid, m))?;
    reporter.phase(
        "clone",
        format!(
            "Unpacking the {} archive sha256:{sha256}",
            format.extension()
        ),
    );
    let dest = workspace.join("src");
    std::fs::create_dir_all(&dest)
        .context("creating the extraction directory")
        .map_err(ScanFailure::internal)?;
    let stats = {
        let dest = dest.clone();
        let cancel = cancel.clone();
        let limits = settings.archive_limits;
        tokio::task::spawn_blocking(move || archive::extract(&file, format, &dest, limits, &cancel))
            .await
            .map_err(|e| task_failed("extraction", e))?
    };
    let stats = match stats {
        Ok(s) => s,
        Err(ArchiveError::Cancelled) => {
            return Err(cancelled("cancelled while unpacking the archive"))
        }
        Err(e) => {
            return Err(ScanFailure::new(
                FailureKind::SourceInvalid,
                format!("the archive was refused: {e}"),
            ))
        }
    };
    reporter.phase(
        "clone",
        format!("Unpacked {} files, {} bytes", stats.files, stats.bytes),
    );
    let provenance = Provenance {
        kind: "archive_sha256",
        id: format!("sha256:{sha256}"),
    };
    let record = json!({
        "type": "archive",
        "archive_path": archive_path,
        "format": format.extension(),
        "files": stats.files,
        "bytes": stats.bytes,
        "provenance_id": provenance.id,
    });
    Ok(PreparedSource {
        root: dest,
        provenance,
        record,
    })
}
