//! Whether a submission may name an uploaded archive: the store's ownership record and the
//! artifact store's file (this replica's upload directory or the bucket), asked together so the
//! API does neither itself.

use super::JobManager;
use crate::pipeline::parse_archive_path;

impl JobManager {
    /// Whether `workspace_id` uploaded the archive `archive_path` names and it is still stored.
    /// An unknown hash and another workspace's hash give the same answer.
    pub async fn archive_available(
        &self,
        workspace_id: &str,
        archive_path: &str,
    ) -> anyhow::Result<bool> {
        let Ok((sha, format)) = parse_archive_path(archive_path) else {
            return Ok(false);
        };
        let name = format!("{sha}.{}", format.extension());
        let owned = self
            .inner
            .store
            .archive_owned(sha, workspace_id.to_string())
            .await?;
        if !owned {
            return Ok(false);
        }
        // Either here or, with the s3 artifact store, in the bucket (uploaded through another
        // replica); the worker that claims the scan fetches it.
        self.inner.artifacts.archive_stored(&name).await
    }
}
