//! How a run fails: the [`FailureKind`] the job engine records and a [`ScanFailure`] whose
//! message says what went wrong and what to do, free of credentials and server paths.

use std::path::Path;

/// Why the pipeline could not produce a trustworthy result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    CloneFailed,
    SourceInvalid,
    ScannerFailed,
    Cancelled,
    Internal,
}

#[derive(Debug, Clone)]
pub struct ScanFailure {
    pub kind: FailureKind,
    /// What went wrong and what to do; free of credentials and server paths.
    pub message: String,
}

impl ScanFailure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        ScanFailure {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn internal(err: anyhow::Error) -> Self {
        tracing::error!(error = ?err, "scan pipeline failed");
        if crate::error::is_disk_full(&err) {
            return ScanFailure::new(
                FailureKind::Internal,
                "the server's disk is full: the scan's results could not be written to the \
                 artifact directory (CERTUS_ASSURANCE_ARTIFACT_ROOT) or its workspace \
                 (CERTUS_ASSURANCE_DATA_DIR); free space there (or delete old scans), then \
                 submit the scan again",
            );
        }
        ScanFailure::new(
            FailureKind::Internal,
            "the service could not write the scan's results; see the server log",
        )
    }
}

/// `text` (a libgit2 message, which names the files it failed on) without the server path of
/// the scan's workspace.
pub(crate) fn scrub_workspace(text: &str, workspace: &Path) -> String {
    match workspace.to_str() {
        Some(path) if !path.is_empty() => text.replace(path, "<workspace>"),
        _ => text.to_string(),
    }
}

/// Whether an error message (libgit2 only hands back text) is the OS saying the disk is full.
pub(crate) fn is_disk_full_message(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Disk quota exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A writer on a full file system.
    struct FullDisk;

    impl std::io::Write for FullDisk {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_write_failures() {
        let io = anyhow::Error::new(std::io::Error::from_raw_os_error(28)).context("writing x");
        assert!(crate::error::is_disk_full(&io));
        let json = serde_json::to_writer(FullDisk, &json!({"a": 1})).unwrap_err();
        let json = anyhow::Error::new(json).context("writing y");
        assert!(crate::error::is_disk_full(&json));
        let denied = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(!crate::error::is_disk_full(&denied));

        let failure = ScanFailure::internal(io);
        assert_eq!(failure.kind, FailureKind::Internal);
        assert!(
            failure.message.contains("disk is full"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("free space"),
            "{}",
            failure.message
        );
        let other = ScanFailure::internal(denied);
        assert!(!other.message.contains("disk"), "{}", other.message);

        let git = "cannot extend packfile '/data/work/test_1-x/src/.git/objects/pack/p': No space left on device";
        assert!(is_disk_full_message(git));
        assert!(!is_disk_full_message("early EOF"));
    }

    #[test]
    fn clone_messages_do_not_show_the_workspace_path() {
        let workspace = Path::new("/data/work/test_1-x");
        let message = "failed to write '/data/work/test_1-x/src/.git/config': read-only";
        let scrubbed = scrub_workspace(message, workspace);
        assert_eq!(
            scrubbed,
            "failed to write '<workspace>/src/.git/config': read-only"
        );
    }
}
