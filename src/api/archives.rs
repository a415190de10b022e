//! `POST /v1/security-scans/upload-archive`: stores an archive for a later `archive` scan.
//!
//! The body is `multipart/form-data` with the archive in a field named `file`. The upload is
//! streamed to disk while it is hashed and counted (the size limit is
//! `CERTUS_ASSURANCE_ARCHIVE_MAX_BYTES`), its format is recognised from its content, and the
//! whole archive is walked once without writing anything, so a traversal, absolute path,
//! escaping link, or bomb is refused here with the entry named. Accepted archives are stored by
//! content (`uploads/<sha256>.<ext>`); that value is what a scan's `archive_path` names.
//!
//! An archive belongs to the workspaces that uploaded it (the `workspace_id` field, or the only
//! workspace of the caller's token): a scan may name it only from one of them. With
//! authentication off, an upload without `workspace_id` (the earlier service's form) may be
//! scanned from any workspace. Each workspace's
//! stored archives are bounded by `CERTUS_ASSURANCE_ARCHIVE_QUOTA_BYTES` (an archive it already
//! owns is not counted twice); retention removes archives no retained scan names.

use axum::extract::multipart::Field;
use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::audit::AuditNote;
use super::scans::check_workspace;
use super::AppState;
use crate::auth::{valid_workspace, Access, WorkspaceScope};
use crate::error::ApiError;
use crate::pipeline::archive::{self, ArchiveFormat, Limits};
use crate::storage::audit::{ArchiveClaim, ArchiveUpload, ANY_WORKSPACE};

fn multipart_error(state: &AppState, err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!(
            "the archive is larger than {} bytes (CERTUS_ASSURANCE_ARCHIVE_MAX_BYTES); send a smaller archive",
            state.config.archive.max_bytes
        ))
    } else {
        ApiError::invalid(
            "file",
            "multipart",
            format!("the multipart body could not be read: {}", err.body_text()),
        )
    }
}

/// Removes a partial upload when dropped (unless kept).
struct PartFile {
    path: std::path::PathBuf,
    keep: bool,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// An archive received and checked, not yet stored.
struct Received {
    part: PartFile,
    sha256: String,
    size: u64,
    format: ArchiveFormat,
    stats: archive::Stats,
}

/// Streams the `file` field to a partial file while hashing and counting it, then recognises and
/// inspects it.
async fn receive(
    state: &AppState,
    dir: &std::path::Path,
    mut field: Field<'_>,
) -> Result<Received, ApiError> {
    let limit = state.config.archive.max_bytes;
    let part = PartFile {
        path: dir.join(format!(".upload-{}.part", crate::scan::TestId::random())),
        keep: false,
    };
    let mut out = tokio::fs::File::create(&part.path).await.map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context("creating an upload file"))
    })?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::with_capacity(512);
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(state, e))? {
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the archive is larger than {limit} bytes (CERTUS_ASSURANCE_ARCHIVE_MAX_BYTES); send a smaller archive"
            )));
        }
        if head.len() < 512 {
            let take = (512 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("writing an upload")))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("writing an upload")))?;
    drop(out);
    if size == 0 {
        return Err(ApiError::invalid(
            "file",
            "value_error",
            "the archive is empty",
        ));
    }
    let Some(format) = archive::sniff(&head) else {
        return Err(ApiError::invalid(
            "file",
            "value_error",
            "the upload is not a tar, tar.gz/tgz, tar.bz2 or zip archive (checked by content, not by name)",
        ));
    };
    let limits = Limits {
        max_bytes: state.config.archive.max_extracted_bytes,
        max_entries: state.config.archive.max_files,
    };
    let path = part.path.clone();
    let inspected = tokio::task::spawn_blocking(move || archive::inspect(&path, format, limits))
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("inspecting an upload")))?;
    let stats = inspected.map_err(|e| {
        ApiError::invalid(
            "file",
            "value_error",
            format!("the archive was refused: {e}"),
        )
    })?;
    Ok(Received {
        part,
        sha256: hex::encode(hasher.finalize()),
        size,
        format,
        stats,
    })
}

/// Reads the short `workspace_id` field.
async fn read_workspace(state: &AppState, mut field: Field<'_>) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "workspace_id",
            "string_pattern_mismatch",
            "workspace_id must be 1-128 of [A-Za-z0-9._-] (not '.' or '..'): the workspace whose scans will use the archive",
        )
    };
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(state, e))? {
        value.extend_from_slice(&chunk);
        if value.len() > 128 {
            return Err(invalid());
        }
    }
    String::from_utf8(value)
        .ok()
        .filter(|w| valid_workspace(w))
        .ok_or_else(invalid)
}

#[tracing::instrument(name = "upload_archive", skip_all)]
pub async fn upload_archive(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    note: AuditNote,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::invalid(
            "file",
            "multipart",
            format!(
                "{}; send multipart/form-data with the archive in a field named `file`",
                e.body_text()
            ),
        )
    })?;
    let dir = state.config.upload_dir();
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context(format!("creating {}", dir.display())))
    })?;
    let mut workspace: Option<String> = None;
    let mut received: Option<Received> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&state, e))?
    {
        match field.name() {
            Some("file") if received.is_none() => {
                received = Some(receive(&state, &dir, field).await?)
            }
            Some("workspace_id") => workspace = Some(read_workspace(&state, field).await?),
            _ => {}
        }
    }
    let Some(received) = received else {
        return Err(ApiError::invalid(
            "file",
            "missing",
            "no field named `file` in the multipart body; send the archive as `file`",
        ));
    };
    note.archive(&received.sha256);
    let workspace = uploading_workspace(workspace, &access, &note)?;
    let Received {
        mut part,
        sha256,
        size,
        format,
        stats,
    } = received;
    let quota = state.config.archive.quota_bytes;
    let claim = state
        .jobs
        .store()
        .claim_archive(
            ArchiveUpload {
                sha256: sha256.clone(),
                ext: format.extension().to_string(),
                workspace_id: workspace.clone(),
                size_bytes: size,
            },
            quota,
            crate::scan::now_secs(),
        )
        .await?;
    if let ArchiveClaim::OverQuota { stored_bytes } = claim {
        return Err(ApiError::PayloadTooLarge(format!(
            "workspace `{workspace}` already stores {stored_bytes} bytes of archives, and this one ({size} bytes) would pass its quota of {} bytes (CERTUS_ASSURANCE_ARCHIVE_QUOTA_BYTES); scan from archives already uploaded, wait for retention to remove the ones no scan uses any more, or ask the operator to raise the quota",
            quota.unwrap_or_default()
        )));
    }
    let name = format!("{sha256}.{}", format.extension());
    store_archive(&state, &mut part, &dir, &name).await?;
    tracing::info!(archive.sha256 = %sha256, archive.bytes = size, archive.files = stats.files, workspace.id = %workspace, "archive stored");
    let body = json!({
        "archive_path": format!("uploads/{name}"),
        "sha256": sha256,
        // `null`: any workspace may scan it (authentication off, no `workspace_id` sent).
        "workspace_id": (workspace != ANY_WORKSPACE).then_some(&workspace),
        "size_bytes": size,
        "format": format.extension(),
        "files": stats.files,
        "unpacked_bytes": stats.bytes,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The workspace an upload is for: the one sent, else the only one of the caller's token; with
/// authentication off and none sent, any workspace ([`ANY_WORKSPACE`]).
fn uploading_workspace(
    sent: Option<String>,
    access: &Access,
    note: &AuditNote,
) -> Result<String, ApiError> {
    // A token of a single workspace may leave it out.
    let workspace = match (sent, access) {
        (Some(w), _) => w,
        (None, Access::Token(t)) => match &t.workspaces {
            WorkspaceScope::Only(set) if set.len() == 1 => {
                set.first().expect("one workspace").clone()
            }
            _ => return Err(missing_workspace()),
        },
        // With authentication off every caller reaches every workspace: an upload without a
        // workspace (the earlier service's form) may be scanned from any of them.
        (None, Access::Open) => ANY_WORKSPACE.to_string(),
    };
    if workspace != ANY_WORKSPACE {
        note.workspace(&workspace);
        check_workspace(access, &workspace)?;
    }
    Ok(workspace)
}

/// Moves a received archive into `<dir>/<name>` and publishes it to the artifact store, so any
/// replica can scan it (503 when the store cannot take it).
async fn store_archive(
    state: &AppState,
    part: &mut PartFile,
    dir: &std::path::Path,
    name: &str,
) -> Result<(), ApiError> {
    // Same name, same bytes: replacing a stored copy changes nothing a scan reads.
    tokio::fs::rename(&part.path, dir.join(name))
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("storing an upload")))?;
    part.keep = true;
    state
        .jobs
        .artifacts()
        .publish_archive(name)
        .await
        .map_err(super::findings::store_error)
}

fn missing_workspace() -> ApiError {
    ApiError::invalid(
        "workspace_id",
        "missing",
        "send the workspace whose scans will use the archive as a multipart field `workspace_id` (a token of a single workspace may leave it out)",
    )
}
