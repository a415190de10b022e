//! The scan and upload status gauges as the store counts them. On the embedded store the process
//! moves them itself and the store's counts only rebuild them at start-up. On a shared store
//! other replicas change the counts too, so every reader (`/metrics`, `/stats`, readiness) gets
//! the store's counts as of at most [`COUNTS_MAX_AGE`] ago (and never older than this replica's
//! own last change), read by one trigger-kept query that readers arriving together share; a failed read keeps the last good counts and says so in
//! `store_counts_read_failures_total` and `store_counts_age_seconds`.

use std::time::{Duration, Instant};

use super::{now_secs, JobManager};
use crate::scan::{JobState, UploadStatus};
use crate::storage::StoreCounts;

/// How long one read of the shared store's counts serves readers.
pub const COUNTS_MAX_AGE: Duration = Duration::from_millis(250);

/// Time limit of one read of the counts at scrape time.
const COUNTS_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The last read of the shared store's counts. Its lock is the one read in flight: readers that
/// arrive during a read wait for it and use its answer.
#[derive(Default)]
pub(super) struct CountsCache {
    state: tokio::sync::Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// When the last read was tried (good or not): no other read starts for
    /// [`COUNTS_MAX_AGE`], so a store that does not answer is not asked by every reader in turn.
    tried_at: Option<Instant>,
    /// The metrics' counts generation when that read started.
    generation: u64,
    /// Unix time of the last good read.
    good_at: Option<f64>,
}

impl JobManager {
    /// Makes the status gauges current for a reader. On a shared store this reads the store's
    /// counts unless the last read is younger than [`COUNTS_MAX_AGE`] and no local transition
    /// happened since; on the embedded store the gauges are always current and nothing is read.
    pub async fn refresh_status_gauges(&self) {
        if !self.inner.metrics.counts_at_read() {
            return;
        }
        let _ = self.read_counts(false).await;
    }

    /// Sets the status gauges from the store's counts now (start-up and reconcile passes).
    pub async fn reconcile_gauges(&self) -> anyhow::Result<()> {
        if self.inner.metrics.counts_at_read() {
            return self.read_counts(true).await;
        }
        let counts = self.inner.store.counts().await?;
        self.set_status_gauges(&counts);
        Ok(())
    }

    async fn read_counts(&self, force: bool) -> anyhow::Result<()> {
        let m = &self.inner.metrics;
        let mut cache = self.inner.counts.state.lock().await;
        let generation = m.counts_generation();
        let fresh = cache.tried_at.is_some_and(|t| t.elapsed() < COUNTS_MAX_AGE)
            && cache.generation == generation;
        let result = if force || !fresh {
            cache.tried_at = Some(Instant::now());
            cache.generation = generation;
            match tokio::time::timeout(COUNTS_READ_TIMEOUT, self.inner.store.counts()).await {
                Ok(Ok(counts)) => {
                    self.set_status_gauges(&counts);
                    cache.good_at = Some(now_secs());
                    Ok(())
                }
                Ok(Err(err)) => Err(err),
                Err(_) => Err(anyhow::anyhow!(
                    "the store did not answer within {COUNTS_READ_TIMEOUT:?}"
                )),
            }
        } else {
            Ok(())
        };
        if let Err(err) = &result {
            m.store.counts_read_failures.inc();
            tracing::warn!(error = %err, "could not read the scan counts from the store; the status gauges keep the last counts read");
        }
        let age = cache.good_at.map_or(0.0, |t| (now_secs() - t).max(0.0));
        m.store.counts_age.set(age);
        result
    }

    fn set_status_gauges(&self, counts: &StoreCounts) {
        let scans: Vec<(JobState, i64)> = JobState::ALL
            .iter()
            .map(|&s| (s, counts.by_status.get(&s).copied().unwrap_or(0)))
            .collect();
        let uploads: Vec<(UploadStatus, i64)> = UploadStatus::ALL
            .iter()
            .map(|&u| (u, counts.by_upload_status.get(&u).copied().unwrap_or(0)))
            .collect();
        self.inner.metrics.set_status_counts(&scans, &uploads);
    }

    /// Whether the queue has reached `MAX_QUEUE`, as the status gauge says (read from a shared
    /// store first). Readiness asks this; admission decides from the store's own count, inside
    /// the transaction that inserts (`storage::decide_admission`).
    pub async fn queue_full(&self) -> bool {
        self.refresh_status_gauges().await;
        self.inner.metrics.scans.status.get(JobState::Queued).get()
            >= self.inner.settings.max_queue as i64
    }
}
