//! The job engine's front: [`JobManager`] submits, looks up, claims, finishes and cancels scans
//! and publishes their events. It is the only code that calls the job store or changes a scan's
//! state, and every state change moves the metrics in the same code path.

mod admission;
mod archives;
pub mod counts;
pub mod events;
pub mod observer;
pub mod upload;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use crate::metrics::labels::RejectReason;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, ScanEvent};
use crate::scan::{
    now_secs, CredentialKeys, FailureReason, JobState, OpenError, SecretUrl, TestId, UploadStatus,
};
use crate::storage::{
    Admission, AdmissionBounds, Completion, JobStore, LeaseState, ListQuery, PrunePolicy,
    ScanRecord,
};
use crate::upload::artifact_store::ArtifactStore;
use events::{EventHub, Subscription};

/// A validated submission.
#[derive(Debug, Clone)]
pub struct NewScan {
    pub workspace_id: String,
    pub component_id: String,
    pub assessment_id: String,
    pub source_type: String,
    /// URL to clone, credentials included; stored only sealed (or, without a credential key,
    /// kept in this replica's memory).
    pub git_clone_url: Option<SecretUrl>,
    pub git_display_url: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub requested_by: Option<String>,
    pub profile: String,
    pub manifest_digest: String,
    pub timeout_seconds: u64,
    /// `directory` scans: the path as submitted (already checked against the source roots).
    pub directory_path: Option<String>,
    /// `archive` scans: the `archive_path` that `upload-archive` returned.
    pub archive_path: Option<String>,
    /// The effective profile when an inline manifest defined or changed it.
    pub manifest: Option<serde_json::Value>,
    /// A manifest file inside the source tree, read when the scan runs.
    pub manifest_path: Option<String>,
}

/// The `profile` metric label of a scan: the preset's name, or `custom` when a manifest
/// defined or changed its profile (caller-chosen names never become label values).
pub fn profile_label(record: &ScanRecord) -> &str {
    let builtin = crate::pipeline::profile::BUILTIN_PROFILES.contains(&record.profile.as_str());
    if builtin && record.manifest.is_none() && record.manifest_path.is_none() {
        &record.profile
    } else {
        "custom"
    }
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the scan queue is full ({0} scans waiting); retry later")]
    QueueFull(usize),
    #[error("the service is shutting down and accepts no new scans; retry on another replica or after the restart")]
    Draining,
    #[error("workspace {workspace} already has {limit} scans queued or running (the per-workspace limit); retry when some have finished")]
    WorkspaceLimit { workspace: String, limit: usize },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Result of a cancel request.
#[derive(Debug)]
pub enum CancelOutcome {
    NotFound,
    /// The scan had already finished; nothing changed.
    AlreadyFinished(ScanRecord),
    /// A queued scan was cancelled at once.
    Cancelled(ScanRecord),
    /// A running scan was told to stop; it ends FAILED (`cancelled`) shortly.
    Requested(ScanRecord),
}

/// What a stream subscriber gets for a scan.
pub enum EventSource {
    /// Live (or recently finished) channel of this replica.
    Live(Subscription),
    /// The scan's stored event log on a shared store, followed until the terminal event.
    Stored(StoredFeed),
    /// A finished scan whose channel is gone: its recorded events (may be empty).
    Recorded(Vec<String>),
}

/// Follows a scan's stored event log (shared store): replay, then new events as the replica
/// running the scan stores them, until the terminal event.
pub struct StoredFeed {
    jobs: JobManager,
    test_id: String,
    last_seq: i64,
    buffer: std::collections::VecDeque<Arc<events::StreamEvent>>,
    done: bool,
}

/// How often a stored feed looks for new events.
const STORED_FEED_POLL: Duration = Duration::from_millis(250);

impl StoredFeed {
    /// The next event, or `None` after the terminal event.
    pub async fn next(&mut self) -> anyhow::Result<Option<Arc<events::StreamEvent>>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.done |= event.terminal;
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            let store = &self.jobs.inner.store;
            let stored = store
                .events_after(self.test_id.clone(), self.last_seq)
                .await?;
            if !stored.is_empty() {
                for (seq, json) in stored {
                    self.last_seq = seq;
                    let terminal = json.contains("\"type\":\"scan_complete\"");
                    self.buffer.push_back(Arc::new(events::StreamEvent {
                        seq: seq as u64,
                        droppable: false,
                        terminal,
                        json: json.into(),
                    }));
                }
                continue;
            }
            // Nothing new: a finished scan whose log holds no terminal event (cancelled while
            // queued, or interrupted) ends with one made from its record.
            let record = self
                .jobs
                .get(&self.test_id)
                .await?
                .context("scan vanished")?;
            if record.status.is_terminal() {
                let again = store
                    .events_after(self.test_id.clone(), self.last_seq)
                    .await?;
                if again.is_empty() {
                    let at = record.finished_at.unwrap_or_else(now_secs);
                    let json = events::event_json(&terminal_event(&record), at);
                    self.buffer.push_back(Arc::new(events::StreamEvent {
                        seq: self.last_seq as u64 + 1,
                        droppable: false,
                        terminal: true,
                        json: json.into(),
                    }));
                }
                continue;
            }
            tokio::time::sleep(STORED_FEED_POLL).await;
        }
    }
}

fn terminal_event(record: &ScanRecord) -> ScanEvent {
    ScanEvent::ScanComplete {
        status: record.status.as_str().to_string(),
        manifest_digest: record.manifest_digest.clone(),
        failure_reason: record.failure_reason.map(|r| r.as_str().to_string()),
        bundle: record.artifacts.clone().unwrap_or_default(),
    }
}

/// Settings of the job engine.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub max_queue: usize,
    pub max_workers: usize,
    pub default_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Lease of a running scan on a shared store.
    pub lease: Duration,
    /// Runs of one scan before a replica death fails it.
    pub max_attempts: u32,
    /// Most QUEUED plus RUNNING scans per workspace (0: no limit).
    pub max_active_per_workspace: usize,
}

struct RunningJob {
    /// Set to stop the pipeline (checked between steps and inside long loops).
    stop: Arc<AtomicBool>,
    /// Woken when a cancel request arrives.
    cancel: Arc<Notify>,
    cancel_requested: Arc<AtomicBool>,
}

struct Inner {
    store: Arc<dyn JobStore>,
    metrics: Metrics,
    pipeline: Pipeline,
    events: EventHub,
    settings: JobSettings,
    /// Wakes idle workers when a scan is queued.
    wake: Arc<Notify>,
    /// Commits concurrent submissions in groups; started by the first submission.
    committer: std::sync::OnceLock<admission::GroupCommitter>,
    running: Mutex<HashMap<String, RunningJob>>,
    /// Clone URLs with credentials, by test id, when no credential key seals them; never
    /// persisted (the store pins such a scan to this replica).
    credentials: Mutex<HashMap<String, SecretUrl>>,
    /// The keys that seal clone credentials for the store and open them; `None`: none configured.
    credential_keys: Option<Arc<CredentialKeys>>,
    draining: AtomicBool,
    /// Uploads to Trust and S3; `None` when uploads are disabled.
    uploader: Option<Arc<crate::upload::Uploader>>,
    /// Background uploads, their stop signal (drain deadline passed).
    uploads: upload::UploadTasks,
    /// The last read of a shared store's status counts.
    counts: counts::CountsCache,
    /// Where finished bundles and uploaded archives are kept (local directories by default).
    artifacts: ArtifactStore,
}

/// Cheap-to-clone handle to the job engine.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

impl JobManager {
    pub fn new(
        store: Arc<dyn JobStore>,
        metrics: Metrics,
        pipeline: Pipeline,
        settings: JobSettings,
        history_limit: usize,
    ) -> JobManager {
        metrics.scans.workers.set(settings.max_workers as i64);
        if store.is_shared() {
            metrics.read_counts_at_scrape();
        }
        JobManager {
            inner: Arc::new(Inner {
                events: EventHub::new(history_limit, 64, metrics.clone()),
                store,
                metrics,
                settings,
                wake: Arc::new(Notify::new()),
                committer: std::sync::OnceLock::new(),
                running: Mutex::new(HashMap::new()),
                credentials: Mutex::new(HashMap::new()),
                credential_keys: None,
                draining: AtomicBool::new(false),
                uploader: None,
                uploads: upload::UploadTasks::default(),
                counts: counts::CountsCache::default(),
                artifacts: ArtifactStore::local(
                    pipeline.artifact_root.clone(),
                    pipeline.upload_dir.clone(),
                ),
                pipeline,
            }),
        }
    }

    /// Keeps bundles and archives in `artifacts` instead of this process's directories. Called
    /// right after [`JobManager::new`], before [`JobManager::with_uploader`].
    pub fn with_artifact_store(mut self, artifacts: ArtifactStore) -> JobManager {
        Arc::get_mut(&mut self.inner)
            .expect("with_artifact_store is called before the manager is shared")
            .artifacts = artifacts;
        self
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.inner.artifacts
    }

    /// A local directory holding a scan's bundle for reading (fetched from the artifact store
    /// when another replica wrote it); it does not exist when the scan has no bundle. Fails with
    /// [`crate::upload::artifact_store::StoreUnavailable`] in its chain when the store cannot be read.
    pub async fn bundle_dir(&self, record: &ScanRecord) -> anyhow::Result<std::path::PathBuf> {
        self.inner
            .artifacts
            .bundle_dir(&record.test_id, record.status.is_terminal())
            .await
    }

    /// Publishes a scan's bundle to the artifact store (every file but `stream.jsonl`, which
    /// [`JobManager::finish`] publishes once it holds the terminal event).
    pub(crate) async fn publish_bundle(&self, test_id: &str) -> anyhow::Result<usize> {
        if !self.inner.artifacts.is_remote() {
            return Ok(0);
        }
        let dir = self.inner.artifacts.scratch_dir(test_id);
        let files = tokio::task::spawn_blocking(move || {
            crate::pipeline::bundle::artifacts::list_files(&dir)
        })
        .await
        .context("listing the bundle stopped")??
        .into_iter()
        .filter(|f| f != crate::pipeline::bundle::artifacts::STREAM_JSONL)
        .collect();
        self.inner.artifacts.publish_bundle(test_id, files).await
    }

    /// Makes sure the archive a scan names is on this replica, fetching it from the artifact
    /// store when another replica received it. `Ok(false)`: stored nowhere (the pipeline then
    /// fails the scan as `source_invalid`).
    pub(crate) async fn fetch_archive(&self, archive_path: &str) -> anyhow::Result<bool> {
        let Ok((sha, format)) = crate::pipeline::parse_archive_path(archive_path) else {
            return Ok(false);
        };
        self.inner
            .artifacts
            .fetch_archive(&format!("{sha}.{}", format.extension()))
            .await
    }

    /// Enables uploads through `uploader`. Called once, right after [`JobManager::new`].
    pub fn with_uploader(mut self, uploader: crate::upload::Uploader) -> JobManager {
        Arc::get_mut(&mut self.inner)
            .expect("with_uploader is called before the manager is shared")
            .uploader = Some(Arc::new(uploader));
        self
    }

    /// Seals clone credentials with `keys` (any replica with the keys can then run the scan)
    /// instead of keeping them in memory. Called once, right after [`JobManager::new`].
    pub fn with_credential_keys(mut self, keys: Option<Arc<CredentialKeys>>) -> JobManager {
        Arc::get_mut(&mut self.inner)
            .expect("with_credential_keys is called before the manager is shared")
            .credential_keys = keys;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn settings(&self) -> &JobSettings {
        &self.inner.settings
    }

    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// Start-up: recover scans left RUNNING, then rebuild the state gauges from the store.
    pub async fn recover(&self, requeue: bool) -> anyhow::Result<()> {
        let recovered = self
            .inner
            .store
            .recover_running(requeue, now_secs())
            .await?;
        for id in &recovered.failed {
            tracing::warn!(job.id = %id, "scan was running when the service stopped; marked FAILED (interrupted)");
            self.inner
                .metrics
                .scans
                .failures
                .get(FailureReason::Interrupted)
                .inc();
            self.inner
                .metrics
                .scans
                .transitions
                .get(JobState::Running, JobState::Failed)
                .inc();
        }
        for id in &recovered.requeued {
            tracing::info!(job.id = %id, "scan was running when the service stopped; queued again");
            self.inner
                .metrics
                .scans
                .transitions
                .get(JobState::Running, JobState::Queued)
                .inc();
        }
        self.recover_uploads(true).await?;
        self.reconcile_gauges().await
    }

    /// Refreshes the gauges that are computed when scraped (oldest queued/running times, earliest
    /// running deadline). Each is one indexed lookup (the deadline reads only the RUNNING rows), so
    /// the cost does not grow with the number of stored scans.
    pub async fn refresh_scrape_gauges(&self) {
        self.refresh_status_gauges().await;
        match self.inner.store.oldest().await {
            Ok((queued, running)) => {
                let m = &self.inner.metrics;
                m.scans.queue_oldest_enqueued.set(queued.unwrap_or(0.0));
                m.scans.running_oldest_started.set(running.unwrap_or(0.0));
            }
            Err(err) => tracing::warn!(error = %err, "could not read queue ages from the store"),
        }
        match self.inner.store.running_earliest_deadline().await {
            Ok(deadline) => self
                .inner
                .metrics
                .scans
                .running_earliest_deadline
                .set(deadline.unwrap_or(0.0)),
            Err(err) => {
                tracing::warn!(error = %err, "could not read the running scans' deadlines from the store")
            }
        }
    }

    /// Whether the store answers.
    pub async fn store_ready(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(2), self.inner.store.oldest())
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Stops admitting scans and wakes idle workers so they notice the shutdown.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.wake.notify_waiters();
    }

    /// Admits one scan: QUEUED in the store (committed with the other submissions of its group),
    /// gauges and counters moved, a worker woken.
    pub async fn submit(&self, new: NewScan) -> Result<ScanRecord, SubmitError> {
        if self.is_draining() {
            self.inner
                .metrics
                .scans
                .rejected
                .get(RejectReason::Draining)
                .inc();
            return Err(SubmitError::Draining);
        }
        let mut record = new_record(&new);
        self.keep_credentials(&mut record, &new);
        let decision = match self.admit(vec![record.clone()]).await {
            Ok(decisions) => decisions.into_iter().next(),
            Err(err) => {
                self.forget_credentials(&record.test_id);
                return Err(SubmitError::Internal(err));
            }
        };
        let record = self.admitted(record, decision)?;
        tracing::info!(job.id = %record.test_id, workspace.id = %record.workspace_id, profile = %record.profile, "scan queued");
        Ok(record)
    }

    /// Hands scans to the group committer (started on first use) and waits for their group.
    async fn admit(&self, scans: Vec<ScanRecord>) -> anyhow::Result<Vec<Admission>> {
        let inner = &self.inner;
        let committer = inner.committer.get_or_init(|| {
            let bounds = AdmissionBounds {
                max_queue: inner.settings.max_queue,
                max_active_per_workspace: inner.settings.max_active_per_workspace,
            };
            admission::GroupCommitter::start(
                inner.store.clone(),
                bounds,
                inner.metrics.clone(),
                inner.wake.clone(),
                inner.settings.max_workers,
            )
        });
        let n = scans.len();
        let decisions = committer.admit(scans).await?;
        anyhow::ensure!(
            decisions.len() == n,
            "the store decided {} of {n} submissions",
            decisions.len()
        );
        Ok(decisions)
    }

    /// The answer to one scan of a committed group (its credentials are forgotten if refused).
    fn admitted(
        &self,
        record: ScanRecord,
        decision: Option<Admission>,
    ) -> Result<ScanRecord, SubmitError> {
        let refusal = match decision {
            Some(Admission::Admitted) => return Ok(record),
            Some(Admission::QueueFull { queued }) => SubmitError::QueueFull(queued),
            Some(Admission::WorkspaceLimit) => self.workspace_limit(&record.workspace_id),
            None => SubmitError::Internal(anyhow::anyhow!("the store did not decide a submission")),
        };
        self.forget_credentials(&record.test_id);
        Err(refusal)
    }

    /// Where the credentials of a new scan's git_url go: sealed into the record with the active
    /// credential key, or, without a key, into this replica's memory (the store then pins the
    /// scan to this replica).
    fn keep_credentials(&self, record: &mut ScanRecord, new: &NewScan) {
        let (Some(clone), Some(display)) = (&new.git_clone_url, &new.git_display_url) else {
            return;
        };
        if clone.expose() == display {
            return;
        }
        match &self.inner.credential_keys {
            Some(keys) => record.sealed_credentials = Some(keys.seal(&record.test_id, clone)),
            None => {
                self.inner
                    .credentials
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(record.test_id.clone(), clone.clone());
            }
        }
    }

    fn workspace_limit(&self, workspace: &str) -> SubmitError {
        SubmitError::WorkspaceLimit {
            workspace: workspace.to_string(),
            limit: self.inner.settings.max_active_per_workspace,
        }
    }

    /// Admits several scans at once: in order, each item is admitted while the queue and its
    /// workspace have room (all admitted items are committed in one store transaction, with the
    /// other submissions of their group); the others are refused as queue-full or over their
    /// workspace's limit. The answer is per item, in order.
    pub async fn submit_batch(
        &self,
        items: Vec<NewScan>,
    ) -> anyhow::Result<Vec<Result<ScanRecord, SubmitError>>> {
        if self.is_draining() {
            self.inner
                .metrics
                .scans
                .rejected
                .get(RejectReason::Draining)
                .inc_by(items.len() as u64);
            return Ok(items.iter().map(|_| Err(SubmitError::Draining)).collect());
        }
        let mut records: Vec<ScanRecord> = items.iter().map(new_record).collect();
        for (record, new) in records.iter_mut().zip(&items) {
            self.keep_credentials(record, new);
        }
        let decisions = match self.admit(records.clone()).await {
            Ok(decisions) => decisions,
            Err(err) => {
                for record in &records {
                    self.forget_credentials(&record.test_id);
                }
                return Err(err);
            }
        };
        let answers: Vec<Result<ScanRecord, SubmitError>> = records
            .into_iter()
            .zip(decisions)
            .map(|(record, decision)| self.admitted(record, Some(decision)))
            .collect();
        let refused = answers.iter().filter(|a| a.is_err()).count();
        tracing::info!(
            admitted = answers.len() - refused,
            refused,
            "batch submitted"
        );
        Ok(answers)
    }

    /// Scans matching the query, newest first, with their keyset positions.
    pub async fn list(&self, query: ListQuery) -> anyhow::Result<Vec<(i64, ScanRecord)>> {
        self.inner.store.list(query).await
    }

    /// Applies the retention policy until nothing more is prunable; removes each pruned scan's
    /// bundle and moves the gauges. Returns how many scans were pruned.
    pub async fn prune(&self, policy: PrunePolicy) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let pruned = self.inner.store.prune(policy).await?;
            let m = &self.inner.metrics;
            for p in &pruned {
                m.scan_pruned(p.status, p.upload_status);
                self.inner.events.remove(&p.test_id);
            }
            for p in &pruned {
                if let Err(err) = self.inner.artifacts.delete_bundle(&p.test_id).await {
                    // The row is gone: nothing refers to these files any more.
                    tracing::warn!(job.id = %p.test_id, error = %format!("{err:#}"), "could not delete a pruned scan's bundle from the artifact store; remove it by hand");
                }
            }
            total += pruned.len();
            if pruned.len() < policy.batch as usize {
                break;
            }
        }
        if total > 0 {
            tracing::info!(pruned = total, "retention pruned finished scans");
        }
        self.prune_archives_and_audit(policy).await?;
        Ok(total)
    }

    /// Retention of the archive store and the audit trail: archives uploaded before the age
    /// cut-off that no retained scan of their workspace names (the file goes with its last
    /// owner), then audit events older than the cut-off or than every retained scan.
    async fn prune_archives_and_audit(&self, policy: PrunePolicy) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let batch = policy.batch.max(1);
        if let Some(cutoff) = policy.finished_before {
            let archives = crate::storage::audit::ArchivePrune {
                uploaded_before: cutoff,
                batch,
            };
            loop {
                let pruned = store.prune_archives(archives, now_secs()).await?;
                for p in pruned.iter().filter(|p| p.orphaned) {
                    let name = format!("{}.{}", p.sha256, p.ext);
                    if let Err(err) = self.inner.artifacts.delete_archive(&name).await {
                        tracing::warn!(archive = %name, error = %format!("{err:#}"), "could not delete a pruned archive from the artifact store; remove it by hand");
                    }
                }
                if !pruned.is_empty() {
                    tracing::info!(pruned = pruned.len(), "retention pruned stored archives");
                }
                if pruned.len() < batch as usize {
                    break;
                }
            }
        }
        while store
            .prune_audit(policy.finished_before, policy.keep_latest.is_some(), batch)
            .await?
            >= u64::from(batch)
        {}
        Ok(())
    }

    /// The store (its audit trail and archive ownership, for the API).
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    pub async fn get(&self, test_id: &str) -> anyhow::Result<Option<ScanRecord>> {
        self.inner.store.get(test_id.to_string()).await
    }

    /// Cancels a queued scan at once, or asks a running one to stop.
    pub async fn cancel(&self, test_id: &str) -> anyhow::Result<CancelOutcome> {
        let Some(record) = self.get(test_id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        match record.status {
            JobState::Succeeded | JobState::Failed => Ok(CancelOutcome::AlreadyFinished(record)),
            JobState::Queued => {
                let message = "Cancelled by request before it started.".to_string();
                if self
                    .inner
                    .store
                    .cancel_queued(test_id.to_string(), now_secs(), message)
                    .await?
                {
                    let m = &self.inner.metrics;
                    m.scan_transition(JobState::Queued, JobState::Failed);
                    m.scans.failures.get(FailureReason::Cancelled).inc();
                    self.forget_credentials(test_id);
                    self.publish_terminal(
                        test_id,
                        JobState::Failed,
                        &record.manifest_digest,
                        Some(FailureReason::Cancelled),
                        vec![],
                    );
                    tracing::info!(job.id = %test_id, "queued scan cancelled");
                    let record = self
                        .get(test_id)
                        .await?
                        .context("cancelled scan vanished")?;
                    return Ok(CancelOutcome::Cancelled(record));
                }
                // A worker claimed it in the meantime: cancel the running scan instead.
                self.request_running_cancel(test_id).await
            }
            JobState::Running => self.request_running_cancel(test_id).await,
        }
    }

    async fn request_running_cancel(&self, test_id: &str) -> anyhow::Result<CancelOutcome> {
        let found = {
            let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            running.get(test_id).map(|job| {
                job.cancel_requested.store(true, Ordering::SeqCst);
                job.stop.store(true, Ordering::SeqCst);
                job.cancel.notify_one();
            })
        };
        let record = self.get(test_id).await?.context("scan vanished")?;
        if found.is_some() {
            tracing::info!(job.id = %test_id, "cancellation requested for a running scan");
            return Ok(CancelOutcome::Requested(record));
        }
        // Another replica runs it: it sees the request when it next renews its lease.
        let store = &self.inner.store;
        if store.is_shared() && store.request_cancel(test_id.to_string()).await? {
            tracing::info!(job.id = %test_id, "cancellation requested for a scan running on another replica");
            return Ok(CancelOutcome::Requested(record));
        }
        if record.status.is_terminal() {
            return Ok(CancelOutcome::AlreadyFinished(record));
        }
        // Running but not in this process (it finished between the reads, or another replica
        // runs it); report the request as accepted so the caller polls the status.
        Ok(CancelOutcome::Requested(record))
    }

    /// Subscribes to a scan's events; `None` for an unknown scan.
    pub async fn subscribe(&self, test_id: &str) -> anyhow::Result<Option<EventSource>> {
        if let Some(channel) = self.inner.events.existing(test_id) {
            return Ok(Some(EventSource::Live(channel.subscribe())));
        }
        let Some(record) = self.get(test_id).await? else {
            return Ok(None);
        };
        if self.inner.store.is_shared() {
            return Ok(Some(EventSource::Stored(StoredFeed {
                jobs: self.clone(),
                test_id: test_id.to_string(),
                last_seq: 0,
                buffer: Default::default(),
                done: false,
            })));
        }
        if !record.status.is_terminal() {
            let channel = self.inner.events.channel(test_id);
            // The scan may have finished between the read and the subscription.
            let record = self.get(test_id).await?.context("scan vanished")?;
            if !record.status.is_terminal() || channel.is_finished() {
                return Ok(Some(EventSource::Live(channel.subscribe())));
            }
            self.inner.events.remove(test_id);
        }
        let path = self
            .bundle_dir(&record)
            .await?
            .join(crate::pipeline::bundle::artifacts::STREAM_JSONL);
        let mut lines: Vec<String> = tokio::fs::read_to_string(&path)
            .await
            .map(|text| {
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let has_terminal = lines
            .last()
            .is_some_and(|l| l.contains("\"type\":\"scan_complete\""));
        if !has_terminal {
            lines.push(events::event_json(
                &terminal_event(&record),
                record.finished_at.unwrap_or_else(now_secs),
            ));
        }
        Ok(Some(EventSource::Recorded(lines)))
    }

    /// Claims the next queued scan for this process, moving the metrics.
    pub(crate) async fn claim(&self) -> anyhow::Result<Option<ScanRecord>> {
        let started = now_secs();
        let store = &self.inner.store;
        let claimed = if store.is_shared() {
            let lease_until = started + self.inner.settings.lease.as_secs_f64();
            store.claim_leased(started, lease_until).await?
        } else {
            store.claim_next(started).await?
        };
        let Some(record) = claimed else {
            return Ok(None);
        };
        if store.is_shared() {
            self.mirror_events(&record.test_id);
        }
        let m = &self.inner.metrics;
        m.scan_transition(JobState::Queued, JobState::Running);
        m.scans
            .queue_wait
            .observe((started - record.submitted_at).max(0.0));
        Ok(Some(record))
    }

    /// The clone credentials of a claimed scan: from this replica's memory, or opened from the
    /// sealed value stored with the scan. `Ok(None)`: neither is here. The error says what to do
    /// and holds nothing of the credentials or the keys.
    pub(crate) fn clone_credentials(
        &self,
        record: &ScanRecord,
    ) -> Result<Option<SecretUrl>, OpenError> {
        let remembered = self
            .inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&record.test_id)
            .cloned();
        if remembered.is_some() {
            return Ok(remembered);
        }
        let Some(sealed) = &record.sealed_credentials else {
            return Ok(None);
        };
        match &self.inner.credential_keys {
            Some(keys) => keys.open(&record.test_id, sealed).map(Some),
            None => Err(OpenError::UnknownKey(
                sealed.key_id().unwrap_or("unknown").to_string(),
            )),
        }
    }

    fn forget_credentials(&self, test_id: &str) {
        self.inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(test_id);
    }

    /// Registers a running scan so cancel requests can reach it.
    pub(crate) fn register_running(
        &self,
        test_id: &str,
    ) -> (Arc<AtomicBool>, Arc<Notify>, Arc<AtomicBool>) {
        let job = RunningJob {
            stop: Arc::new(AtomicBool::new(false)),
            cancel: Arc::new(Notify::new()),
            cancel_requested: Arc::new(AtomicBool::new(false)),
        };
        let handles = (
            job.stop.clone(),
            job.cancel.clone(),
            job.cancel_requested.clone(),
        );
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(test_id.to_string(), job);
        handles
    }

    /// Forgets a scan this replica stopped running without recording an outcome (its lease was
    /// lost: another replica owns it now).
    pub(crate) fn abandon(&self, test_id: &str) {
        self.unregister_running(test_id);
        self.forget_credentials(test_id);
        self.inner.events.remove(test_id);
    }

    fn unregister_running(&self, test_id: &str) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(test_id);
    }

    pub(crate) fn events(&self) -> &EventHub {
        &self.inner.events
    }

    pub(crate) async fn record_resolved(
        &self,
        test_id: &str,
        commit: String,
        branch: Option<String>,
    ) {
        if let Err(err) = self
            .inner
            .store
            .set_resolved(test_id.to_string(), commit, branch)
            .await
        {
            tracing::warn!(job.id = %test_id, error = %err, "could not record the resolved commit");
        }
    }

    /// RUNNING → SUCCEEDED/FAILED: store, metrics, terminal event. Returns false if the scan was
    /// no longer RUNNING (it is then left as it is).
    pub(crate) async fn finish(
        &self,
        record: &ScanRecord,
        done: Completion,
    ) -> anyhow::Result<bool> {
        let status = done.status;
        let reason = done.failure_reason;
        let artifacts = done.artifacts.clone().unwrap_or_default();
        let duration = (done.finished_at - record.started_at.unwrap_or(done.finished_at)).max(0.0);
        let manifest_digest = done
            .manifest_digest
            .clone()
            .unwrap_or_else(|| record.manifest_digest.clone());
        let policy_passed = done
            .summary
            .as_ref()
            .and_then(|s| s.pointer("/policy/passed"))
            .and_then(|v| v.as_bool());
        // The terminal event goes out (to subscribers and the bundle's stream.jsonl) before the
        // outcome is stored: once a scan reads SUCCEEDED its bundle no longer changes, which an
        // upload relies on when it hashes the files. A retried call publishes nothing twice.
        self.publish_terminal(&record.test_id, status, &manifest_digest, reason, artifacts);
        self.publish_stream_file(&record.test_id).await?;
        let changed = self
            .inner
            .store
            .finish(record.test_id.clone(), done)
            .await?;
        self.inner.artifacts.drop_scratch(&record.test_id).await;
        self.unregister_running(&record.test_id);
        self.forget_credentials(&record.test_id);
        if !changed {
            return Ok(false);
        }
        let m = &self.inner.metrics;
        m.scan_transition(JobState::Running, status);
        m.scans
            .duration
            .with_label_values(&[profile_label(record), status.label()])
            .observe(duration);
        if let Some(reason) = reason {
            m.scans.failures.get(reason).inc();
        }
        if let Some(passed) = policy_passed {
            m.scans.policy_evaluated(profile_label(record), passed);
        }
        Ok(true)
    }

    /// Stores a finished scan's `stream.jsonl` in the artifact store (which holds the rest of
    /// the bundle already), retrying a few times: the outcome is recorded only once it is
    /// stored, so a SUCCEEDED scan's bundle is whole for every reader.
    async fn publish_stream_file(&self, test_id: &str) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .inner
                .artifacts
                .publish_bundle_file(test_id, crate::pipeline::bundle::artifacts::STREAM_JSONL)
                .await
            {
                Ok(()) => return Ok(()),
                Err(err) if attempt >= 3 => {
                    return Err(err.context("storing the scan's stream.jsonl in the artifact store"))
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), attempt, "could not store the scan's stream.jsonl in the artifact store; retrying");
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                }
            }
        }
    }

    /// RUNNING → QUEUED (the shutdown deadline passed while it ran).
    pub(crate) async fn requeue(&self, record: &ScanRecord) -> anyhow::Result<()> {
        let message = "The service shut down while this scan ran; it was queued again.".to_string();
        let changed = self
            .inner
            .store
            .requeue(record.test_id.clone(), message)
            .await?;
        self.unregister_running(&record.test_id);
        self.inner.events.remove(&record.test_id);
        if changed {
            self.inner
                .metrics
                .scan_transition(JobState::Running, JobState::Queued);
        }
        Ok(())
    }

    fn publish_terminal(
        &self,
        test_id: &str,
        status: JobState,
        manifest_digest: &str,
        reason: Option<FailureReason>,
        bundle: Vec<String>,
    ) {
        let event = ScanEvent::ScanComplete {
            status: status.as_str().to_string(),
            manifest_digest: manifest_digest.to_string(),
            failure_reason: reason.map(|r| r.as_str().to_string()),
            bundle,
        };
        if let Some(channel) = self.inner.events.existing(test_id) {
            if let Some(published) = channel.publish(&event) {
                append_stream_line(&self.inner.pipeline.artifact_dir(test_id), &published.json);
            }
        }
        self.inner.events.finish(test_id);
    }

    /// Whether several replicas share the store.
    pub fn is_shared(&self) -> bool {
        self.inner.store.is_shared()
    }

    /// Renews the lease of a scan this replica runs (shared store).
    pub(crate) async fn renew(&self, test_id: &str) -> anyhow::Result<LeaseState> {
        let until = now_secs() + self.inner.settings.lease.as_secs_f64();
        self.inner
            .store
            .renew_lease(test_id.to_string(), until)
            .await
    }

    /// Shared store: re-queues (or fails) scans whose replica died, then sets the store-derived
    /// gauges to the cluster's counts.
    /// Shared store: declares this replica alive for `alive_for`, so the scans whose credentials
    /// only it holds are left to it (see `JobStore::heartbeat`).
    pub async fn heartbeat(&self, alive_for: Duration) -> anyhow::Result<()> {
        let now = now_secs();
        self.inner
            .store
            .heartbeat(now, now + alive_for.as_secs_f64())
            .await
    }

    pub async fn reconcile_cluster(&self) -> anyhow::Result<()> {
        let reclaimed = self
            .inner
            .store
            .reclaim_expired(now_secs(), self.inner.settings.max_attempts)
            .await?;
        let m = &self.inner.metrics;
        for id in &reclaimed.requeued {
            tracing::warn!(job.id = %id, "lease expired (its replica stopped); scan queued again");
            m.scans
                .transitions
                .get(JobState::Running, JobState::Queued)
                .inc();
        }
        for id in &reclaimed.failed {
            tracing::warn!(job.id = %id, "lease expired and attempts are used up; scan FAILED (interrupted)");
            m.scans
                .transitions
                .get(JobState::Running, JobState::Failed)
                .inc();
            m.scans.failures.get(FailureReason::Interrupted).inc();
        }
        if !reclaimed.requeued.is_empty() {
            self.inner.wake.notify_waiters();
        }
        // Uploads whose replica died (their lease ran out) end `failed` and can be requested again.
        self.recover_uploads(false).await?;
        self.reconcile_gauges().await
    }

    /// Shared store: copies every event of a scan run here into the stored event log, in order,
    /// so streams on other replicas can follow it. Ends after the terminal event.
    fn mirror_events(&self, test_id: &str) {
        let mut subscription = self.inner.events.channel(test_id).subscribe();
        let store = self.inner.store.clone();
        let id = test_id.to_string();
        tokio::spawn(async move {
            loop {
                let Some(event) = subscription.next().await else {
                    break;
                };
                let mut batch = vec![(event.seq as i64, event.json.to_string())];
                let mut finished = event.terminal;
                // Gather what is already waiting into one insert.
                while batch.len() < 200 && !finished {
                    match tokio::time::timeout(Duration::from_millis(20), subscription.next()).await
                    {
                        Ok(Some(more)) => {
                            finished = more.terminal;
                            batch.push((more.seq as i64, more.json.to_string()));
                        }
                        _ => break,
                    }
                }
                let mut delay = Duration::from_millis(100);
                for attempt in 1..=5 {
                    match store.append_events(id.clone(), batch.clone()).await {
                        Ok(()) => break,
                        Err(err) if attempt < 5 => {
                            tracing::warn!(job.id = %id, error = %err, "storing events failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                        Err(err) => {
                            tracing::error!(job.id = %id, error = %err, "storing events failed; streams on other replicas miss them")
                        }
                    }
                }
                if finished {
                    break;
                }
            }
        });
    }

    /// Waits until a scan may be queued or shutdown starts.
    pub(crate) async fn wait_for_work(&self, poll: Duration) {
        let _ = tokio::time::timeout(poll, self.inner.wake.notified()).await;
    }
}

/// The stored form of a new submission (QUEUED, upload pending).
fn new_record(new: &NewScan) -> ScanRecord {
    ScanRecord {
        test_id: TestId::random().into(),
        workspace_id: new.workspace_id.clone(),
        component_id: new.component_id.clone(),
        assessment_id: new.assessment_id.clone(),
        source_type: new.source_type.clone(),
        git_url: new.git_display_url.clone(),
        branch: new.branch.clone(),
        requested_commit: new.commit.clone(),
        directory_path: new.directory_path.clone(),
        archive_path: new.archive_path.clone(),
        requested_by: new.requested_by.clone(),
        profile: new.profile.clone(),
        manifest_digest: new.manifest_digest.clone(),
        timeout_seconds: new.timeout_seconds,
        status: JobState::Queued,
        failure_reason: None,
        errors: vec![],
        resolved_commit: None,
        resolved_branch: None,
        summary: None,
        artifacts: None,
        submitted_at: now_secs(),
        started_at: None,
        finished_at: None,
        attempts: 0,
        upload_status: UploadStatus::Pending,
        upload_permission_id: None,
        verification_proof: None,
        remote_artifacts: None,
        upload_reason: None,
        upload_progress: None,
        upload_tier: None,
        upload_started_at: None,
        manifest: new.manifest.clone(),
        manifest_path: new.manifest_path.clone(),
        sealed_credentials: None,
    }
}

/// Appends one event line to the bundle's `stream.jsonl` (best effort: a stream file that cannot
/// be written must not fail the scan).
pub(crate) fn append_stream_line(bundle_dir: &std::path::Path, json: &str) {
    use std::io::Write;
    if std::fs::create_dir_all(bundle_dir).is_err() {
        return;
    }
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle_dir.join(crate::pipeline::bundle::artifacts::STREAM_JSONL))
    {
        let _ = writeln!(file, "{json}");
    }
}
