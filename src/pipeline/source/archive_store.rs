//! The archive store: where `upload-archive` keeps archives (`<upload_dir>/<sha256>.<ext>`) and
//! how a scan's `archive_path` finds its stored file. Callers can only name a stored archive,
//! never a server path.

use std::path::{Path, PathBuf};

use super::archive::ArchiveFormat;

/// Parses an `archive_path` as `upload-archive` returned it (`uploads/<sha256>.<ext>`) and
/// finds the stored file. Any other value is refused: callers cannot name server paths.
pub fn stored_archive(
    upload_dir: &Path,
    archive_path: &str,
) -> Result<(PathBuf, String, ArchiveFormat), String> {
    let (sha, format) = parse_archive_path(archive_path)?;
    let file = upload_dir.join(format!("{sha}.{}", format.extension()));
    if !file.is_file() {
        return Err(archive_not_stored(archive_path));
    }
    Ok((file, sha, format))
}

/// The refusal of an `archive_path` naming no archive stored for the scan's workspace.
pub fn archive_not_stored(archive_path: &str) -> String {
    format!(
        "archive {archive_path} is not stored on this server; upload it again with POST /v1/security-scans/upload-archive"
    )
}

/// The sha256 and format an `archive_path` names (`uploads/<sha256>.<ext>`), without looking
/// for the file.
pub fn parse_archive_path(archive_path: &str) -> Result<(String, ArchiveFormat), String> {
    let invalid = || {
        "archive_path must be a value returned by POST /v1/security-scans/upload-archive, e.g. uploads/<sha256>.tar.gz".to_string()
    };
    let rest = archive_path.strip_prefix("uploads/").ok_or_else(invalid)?;
    let (sha, ext) = rest.split_once('.').ok_or_else(invalid)?;
    if sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid());
    }
    let format = ArchiveFormat::from_extension(ext).ok_or_else(invalid)?;
    Ok((sha.to_string(), format))
}
