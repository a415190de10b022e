//! `POST /v1/security-scans/upload-archive`: stores an archive for a later `archive` scan.
//!
//! The body is `multipart/form-data` with the archive in a field named `file`. The upload is
//! streamed to disk while it is hashed and counted (the size limit is
//! `CERTUS_ASSURANCE_ARCHIVE_MAX_BYTES`), its format is recognised from its content, and the
//! whole archive is walked once without writing anything, so a traversal, absolute path,
//! escaping link, or bomb is refused here with the entry named. Accepted archives are stored by
//! content (`uploads/<sha256>.<ext>`); that value is what a scan's `archive_path` names.

use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::AppState;
use crate::error::ApiError;
use crate::pipeline::archive::{self, Limits};

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

#[tracing::instrument(name = "upload_archive", skip_all)]
pub async fn upload_archive(
    State(state): State<AppState>,
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
    let limit = state.config.archive.max_bytes;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| multipart_error(&state, e))?;
        let Some(mut field) = field else {
            return Err(ApiError::invalid(
                "file",
                "missing",
                "no field named `file` in the multipart body; send the archive as `file`",
            ));
        };
        if field.name() != Some("file") {
            continue;
        }
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
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| multipart_error(&state, e))?
        {
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
            out.write_all(&chunk).await.map_err(|e| {
                ApiError::Internal(anyhow::Error::new(e).context("writing an upload"))
            })?;
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
        let inspected =
            tokio::task::spawn_blocking(move || archive::inspect(&path, format, limits))
                .await
                .map_err(|e| {
                    ApiError::Internal(anyhow::Error::new(e).context("inspecting an upload"))
                })?;
        let stats = inspected.map_err(|e| {
            ApiError::invalid(
                "file",
                "value_error",
                format!("the archive was refused: {e}"),
            )
        })?;
        let sha = hex::encode(hasher.finalize());
        let name = format!("{sha}.{}", format.extension());
        let stored = dir.join(&name);
        let mut part = part;
        if tokio::fs::metadata(&stored).await.is_err() {
            tokio::fs::rename(&part.path, &stored).await.map_err(|e| {
                ApiError::Internal(anyhow::Error::new(e).context("storing an upload"))
            })?;
            part.keep = true;
        }
        tracing::info!(archive.sha256 = %sha, archive.bytes = size, archive.files = stats.files, "archive stored");
        let body = json!({
            "archive_path": format!("uploads/{name}"),
            "sha256": sha,
            "size_bytes": size,
            "format": format.extension(),
            "files": stats.files,
            "unpacked_bytes": stats.bytes,
        });
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
}
