//! Group-committed admission. Concurrent submissions (single scans and batches) share one store
//! transaction: the committer task (`storage::group`) takes every submission waiting when it is
//! free, the store admits them in one transaction (it counts the queue, and each workspace's
//! active scans, inside that transaction, so `MAX_QUEUE` and the per-workspace limit hold exactly
//! however many arrive together), the admission metrics move, and only then is each submitter
//! answered. An answer therefore means the row is committed; a group whose transaction fails
//! answers every member with the error and stores none of them.

use std::sync::Arc;

use tokio::sync::Notify;

use super::profile_label;
use crate::metrics::labels::RejectReason;
use crate::metrics::Metrics;
use crate::storage::group::GroupCommit;
use crate::storage::{Admission, AdmissionBounds, JobStore, ScanRecord};

/// Most scans in one group transaction (a batch larger than this is a group of its own).
const MAX_GROUP_SCANS: usize = 512;

/// Hands submissions to the committer task and waits for their group's commit.
pub(super) struct GroupCommitter {
    group: GroupCommit<ScanRecord, Admission>,
}

/// What the committer task needs: the store, and what an admission moves.
struct Committer {
    store: Arc<dyn JobStore>,
    bounds: AdmissionBounds,
    metrics: Metrics,
    /// Wakes idle workers when scans are queued.
    wake: Arc<Notify>,
    max_workers: usize,
}

impl GroupCommitter {
    /// Starts the committer task (on the current runtime); it ends when this handle is dropped.
    pub(super) fn start(
        store: Arc<dyn JobStore>,
        bounds: AdmissionBounds,
        metrics: Metrics,
        wake: Arc<Notify>,
        max_workers: usize,
    ) -> GroupCommitter {
        let committer = Arc::new(Committer {
            store,
            bounds,
            metrics,
            wake,
            max_workers,
        });
        let group = GroupCommit::start(MAX_GROUP_SCANS, move |scans| {
            let committer = committer.clone();
            async move { committer.commit(scans).await }
        });
        GroupCommitter { group }
    }

    /// Admits `scans` (in order) in the next group; the answer, one decision per scan, comes
    /// once the group's transaction committed.
    pub(super) async fn admit(&self, scans: Vec<ScanRecord>) -> anyhow::Result<Vec<Admission>> {
        self.group.write(scans).await
    }
}

impl Committer {
    /// One transaction for the whole group, then the metrics of what it admitted.
    async fn commit(&self, scans: Vec<ScanRecord>) -> anyhow::Result<Vec<Admission>> {
        let labels: Vec<(String, String)> = scans
            .iter()
            .map(|s| (profile_label(s).to_string(), s.source_type.clone()))
            .collect();
        let decisions = self.store.admit(scans, self.bounds).await?;
        self.record(&labels, &decisions);
        Ok(decisions)
    }

    /// Moves the gauges and counters of a committed group and wakes workers for its scans.
    fn record(&self, labels: &[(String, String)], decisions: &[Admission]) {
        let m = &self.metrics;
        let mut admitted = 0;
        for ((profile, source_type), decision) in labels.iter().zip(decisions) {
            let refused = match decision {
                Admission::Admitted => {
                    admitted += 1;
                    m.scans
                        .submitted
                        .with_label_values(&[profile, source_type])
                        .inc();
                    continue;
                }
                Admission::QueueFull { .. } => RejectReason::QueueFull,
                Admission::WorkspaceLimit => RejectReason::WorkspaceLimit,
            };
            m.scans.rejected.get(refused).inc();
        }
        if admitted > 0 {
            m.scans_inserted(admitted as i64);
        }
        for _ in 0..admitted.min(self.max_workers.max(1)) {
            self.wake.notify_one();
        }
    }
}
