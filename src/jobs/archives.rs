//! Whether a submission may name an uploaded archive: the store's ownership record and the
//! archive store's file, asked together so the API does neither itself.

use super::JobManager;
use crate::pipeline::{parse_archive_path, stored_archive};

impl JobManager {
    /// Whether `workspace_id` uploaded the archive `archive_path` names and it is still stored.
    /// An unknown hash and another workspace's hash give the same answer.
    pub async fn archive_available(
        &self,
        workspace_id: &str,
        archive_path: &str,
    ) -> anyhow::Result<bool> {
        let Ok((sha, _)) = parse_archive_path(archive_path) else {
            return Ok(false);
        };
        let owned = self
            .inner
            .store
            .archive_owned(sha, workspace_id.to_string())
            .await?;
        if !owned {
            return Ok(false);
        }
        let upload_dir = self.inner.pipeline.upload_dir.clone();
        let archive_path = archive_path.to_string();
        let stored =
            tokio::task::spawn_blocking(move || stored_archive(&upload_dir, &archive_path).is_ok())
                .await?;
        Ok(stored)
    }
}
