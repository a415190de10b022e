//! `GET /v1/security-scans/{test_id}/artifacts[/{path}]`: the files of a scan's bundle on this
//! server, listed or served one at a time, to callers that may see the scan.
//!
//! A path is confined to the bundle twice: it must be a plain relative path (no `..`, `.`, empty
//! or absolute components, backslashes or NUL: a 422), and the file it names, with every symlink
//! resolved, must still lie inside the bundle directory and be a regular file (else a 404, the
//! same as a missing file). Files are streamed from disk, never read whole.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::findings::bundle_dir;
use super::scans::visible_scan;
use super::AppState;
use crate::auth::Access;
use crate::error::{ApiError, FieldError};

/// Content type of a bundle file, from its extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    match ext.to_ascii_lowercase().as_str() {
        "json" => "application/json",
        "jsonl" => "application/x-ndjson",
        "log" | "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// Whether `rel` is a plain relative path: components separated by `/`, none empty, `.` or
/// `..`, and no backslash or NUL anywhere.
pub fn is_plain_relative(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains(['\\', '\0'])
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Resolves `rel` inside `bundle`: `None` unless the target, symlinks resolved, is a regular file
/// inside the (resolved) bundle directory.
pub fn resolve_in_bundle(bundle: &Path, rel: &str) -> Option<PathBuf> {
    if !is_plain_relative(rel) {
        return None;
    }
    let root = bundle.canonicalize().ok()?;
    let target = root.join(rel).canonicalize().ok()?;
    (target.starts_with(&root) && target.is_file()).then_some(target)
}

fn no_bundle(test_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Scan {test_id} has no bundle on this server: it has not started yet, or its bundle was \
         removed by retention (an uploaded scan's files stay in object storage)"
    ))
}

/// `GET /v1/security-scans/{test_id}/artifacts`: every file of the bundle with its size.
pub async fn list_artifacts(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    UrlPath(test_id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let record = visible_scan(&state, &access, &test_id).await?;
    let bundle = bundle_dir(&state, &record).await?;
    let listed = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Vec<Value>>> {
        if !bundle.is_dir() {
            return Ok(None);
        }
        let mut files = Vec::new();
        for rel in crate::pipeline::bundle::artifacts::list_files(&bundle)? {
            // Files being written (renamed into place when complete).
            if rel.ends_with(".tmp") {
                continue;
            }
            // Gone between the listing and now: the bundle is being written or removed.
            let Ok(meta) = std::fs::symlink_metadata(bundle.join(&rel)) else {
                continue;
            };
            files.push(json!({
                "path": rel,
                "size_bytes": meta.len(),
                "content_type": content_type(&rel),
            }));
        }
        Ok(Some(files))
    })
    .await
    .map_err(|e| anyhow::anyhow!("listing a bundle stopped: {e}"))??;
    let Some(files) = listed else {
        return Err(no_bundle(&test_id));
    };
    Ok(Json(json!({ "test_id": test_id, "files": files })))
}

/// `GET /v1/security-scans/{test_id}/artifacts/{*path}`: one bundle file, streamed.
pub async fn get_artifact(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    UrlPath((test_id, rel)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let record = visible_scan(&state, &access, &test_id).await?;
    if !is_plain_relative(&rel) {
        return Err(ApiError::Validation(vec![FieldError {
            loc: vec![json!("path"), json!("path")],
            kind: "value_error".into(),
            msg: format!(
                "path must be a file's path relative to the bundle, such as reports/findings.json \
                 (no '..', '.', empty or absolute components, no backslashes); \
                 GET /v1/security-scans/{test_id}/artifacts lists the files"
            ),
        }]));
    }
    let bundle = bundle_dir(&state, &record).await?;
    let lookup = rel.clone();
    let target = tokio::task::spawn_blocking(move || resolve_in_bundle(&bundle, &lookup))
        .await
        .map_err(|e| anyhow::anyhow!("resolving a bundle path stopped: {e}"))?;
    let not_found = || {
        ApiError::NotFound(format!(
            "Scan {test_id} has no file {rel} in its bundle; \
             GET /v1/security-scans/{test_id}/artifacts lists the files"
        ))
    };
    let Some(target) = target else {
        return Err(not_found());
    };
    let file = match tokio::fs::File::open(&target).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(e).context(format!("opening {rel} of {test_id}")),
            ))
        }
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("reading {rel} of {test_id}")))?
        .len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&rel)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("summary.json"), "application/json");
        assert_eq!(
            content_type("reports/sast/bandit.sarif.json"),
            "application/json"
        );
        assert_eq!(content_type("stream.jsonl"), "application/x-ndjson");
        assert_eq!(content_type("logs/runner.log"), "text/plain; charset=utf-8");
        assert_eq!(content_type("sbom/x.bin"), "application/octet-stream");
        assert_eq!(content_type("README"), "application/octet-stream");
    }

    #[test]
    fn paths_stay_inside_the_bundle() {
        let root = tempfile::tempdir().unwrap();
        let bundle = root.path().join("bundle");
        std::fs::create_dir_all(bundle.join("reports")).unwrap();
        std::fs::write(bundle.join("reports/findings.json"), "{}").unwrap();
        std::fs::write(root.path().join("outside.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(root.path().join("outside.txt"), bundle.join("out.json"))
            .unwrap();
        std::os::unix::fs::symlink("/etc", bundle.join("etc")).unwrap();
        std::os::unix::fs::symlink("findings.json", bundle.join("reports/alias.json")).unwrap();

        assert!(resolve_in_bundle(&bundle, "reports/findings.json").is_some());
        // A symlink that stays inside the bundle resolves to its target.
        assert_eq!(
            resolve_in_bundle(&bundle, "reports/alias.json"),
            resolve_in_bundle(&bundle, "reports/findings.json")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../outside.txt",
            "reports/../../outside.txt",
            "./reports/findings.json",
            "reports//findings.json",
            "reports\\findings.json",
            "reports/findings.json\0",
            "out.json",
            "etc/passwd",
            "reports",
            "missing.json",
        ] {
            assert_eq!(resolve_in_bundle(&bundle, bad), None, "{bad:?}");
        }
    }
}
