//! Upload state changes of the job engine: one upload-request becomes a claim in the store (so a
//! second request for the same scan is refused while one is in flight, in this process or
//! another), then a background task that asks Trust, records the decision, and uploads what was
//! permitted. Every change of `upload_status` is a conditional write on the stored status and
//! moves `uploads{status}` and `upload_transitions_total` in the same code path.
//!
//! The task runs apart from the HTTP request: a client that hangs up, or the request time limit,
//! cannot leave a claim behind. The request waits only for Trust's decision; S3 transfers continue
//! in the background and the scan resource shows their progress.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::JobManager;
use crate::scan::{now_secs, JobState, UploadStatus, UPLOAD_LEASE_SECONDS};
use crate::storage::{ScanRecord, UploadState};
use crate::upload::trust::{TrustDecision, TrustError};
use crate::upload::{ProgressReport, UploadProgress, UploadSubject, Uploader};

/// Signer named in the inner signature when the request names none.
pub const DEFAULT_SIGNER: &str = "certus-assurance";

/// Background uploads and their stop signal.
#[derive(Default)]
pub(super) struct UploadTasks {
    tracker: TaskTracker,
    /// Fires when the drain deadline passes: running uploads stop and end `failed`.
    stop: CancellationToken,
}

/// Verification tier asked of Trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadTier {
    Basic,
    Verified,
}

impl UploadTier {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadTier::Basic => "basic",
            UploadTier::Verified => "verified",
        }
    }

    pub fn parse(s: &str) -> Option<UploadTier> {
        match s {
            "basic" => Some(UploadTier::Basic),
            "verified" => Some(UploadTier::Verified),
            _ => None,
        }
    }
}

/// A validated upload-request.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub tier: UploadTier,
    /// Signer named in the inner signature ([`DEFAULT_SIGNER`] when absent).
    pub signer: Option<String>,
}

/// What became of an upload-request.
#[derive(Debug)]
pub enum UploadRequestOutcome {
    /// Uploads are disabled on this server.
    Disabled,
    NotFound,
    /// Only a SUCCEEDED scan may be uploaded.
    NotSucceeded(ScanRecord),
    /// Trust denied an earlier request; a denial is final.
    AlreadyDenied(ScanRecord),
    /// Another upload-request of this scan is being served.
    InFlight(ScanRecord),
    /// The scan was uploaded already; nothing was done.
    AlreadyUploaded(ScanRecord),
    /// The `verified` tier needs a signed declaration and no signing key is configured.
    SigningKeyMissing,
    /// The service is shutting down.
    Draining,
    /// Trust permitted; the upload continues in the background.
    Permitted(ScanRecord),
    /// Trust denied this request.
    Denied(ScanRecord),
    /// Trust gave no decision; the upload is `failed` and may be requested again.
    TrustFailed(ScanRecord, TrustError),
    /// The bundle could not be declared; the upload is `failed`.
    BundleUnusable(ScanRecord, String),
    /// The artifact store could not be read; the upload is `failed` and may be requested again.
    StoreUnavailable(ScanRecord, String),
}

/// What the background task tells the waiting request.
enum Decision {
    Permitted,
    Denied,
    TrustFailed(TrustError),
    BundleUnusable(String),
    StoreUnavailable(String),
    /// The decision could not be recorded; nothing was uploaded.
    Internal(String),
}

/// Outcomes that need no upload: already settled, or not possible.
fn settled(record: &ScanRecord) -> Option<UploadRequestOutcome> {
    if record.upload_status == UploadStatus::Uploaded {
        return Some(UploadRequestOutcome::AlreadyUploaded(record.clone()));
    }
    if record.status != JobState::Succeeded {
        return Some(UploadRequestOutcome::NotSucceeded(record.clone()));
    }
    if record.upload_status == UploadStatus::Denied {
        return Some(UploadRequestOutcome::AlreadyDenied(record.clone()));
    }
    None
}

/// The git URL without user information (the stored form has it masked already).
fn strip_credentials(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.has_host() {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            return parsed.to_string();
        }
    }
    url.replace("***@", "")
}

/// Records progress reports on the scan while its upload is `permitted`.
struct StoreProgress {
    jobs: JobManager,
    test_id: String,
    base: UploadState,
    last: Mutex<Option<serde_json::Value>>,
}

impl StoreProgress {
    fn last(&self) -> Option<serde_json::Value> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ProgressReport for StoreProgress {
    fn report(&self, progress: UploadProgress) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let value = serde_json::to_value(&progress).expect("plain data serializes");
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(value.clone());
            let state = UploadState {
                progress: Some(value),
                ..self.base.clone()
            };
            if let Err(err) = self
                .jobs
                .inner
                .store
                .write_upload(self.test_id.clone(), UploadStatus::Permitted, state)
                .await
            {
                tracing::warn!(error = %err, "could not record upload progress");
            }
        })
    }
}

impl JobManager {
    /// Whether upload-requests can be served.
    pub fn uploads_enabled(&self) -> bool {
        self.inner.uploader.is_some()
    }

    /// Serves one upload-request: claims the scan's upload, asks Trust in a background task and
    /// waits for its decision; a permitted upload continues in the background.
    pub async fn request_upload(
        &self,
        test_id: &str,
        request: UploadRequest,
    ) -> anyhow::Result<UploadRequestOutcome> {
        let Some(record) = self.get(test_id).await? else {
            return Ok(UploadRequestOutcome::NotFound);
        };
        let Some(uploader) = self.inner.uploader.clone() else {
            return Ok(UploadRequestOutcome::Disabled);
        };
        if let Some(outcome) = settled(&record) {
            return Ok(outcome);
        }
        if request.tier == UploadTier::Verified && !uploader.signs() {
            return Ok(UploadRequestOutcome::SigningKeyMissing);
        }
        if self.is_draining() {
            return Ok(UploadRequestOutcome::Draining);
        }
        let claimed = self
            .inner
            .store
            .claim_upload(
                test_id.to_string(),
                request.tier.as_str().to_string(),
                now_secs(),
            )
            .await?;
        let Some(from) = claimed else {
            let record = self.get(test_id).await?.context("scan vanished")?;
            return Ok(settled(&record).unwrap_or(UploadRequestOutcome::InFlight(record)));
        };
        let (tx, rx) = oneshot::channel();
        let jobs = self.clone();
        let span =
            tracing::info_span!("upload", job.id = %test_id, upload.tier = request.tier.as_str());
        self.inner.uploads.tracker.spawn(
            async move {
                jobs.supervise_upload(uploader, record, from, request, tx)
                    .await
            }
            .instrument(span),
        );
        let decision = rx.await;
        let record = self.get(test_id).await?.context("scan vanished")?;
        Ok(match decision {
            Ok(Decision::Permitted) => UploadRequestOutcome::Permitted(record),
            Ok(Decision::Denied) => UploadRequestOutcome::Denied(record),
            Ok(Decision::TrustFailed(err)) => UploadRequestOutcome::TrustFailed(record, err),
            Ok(Decision::BundleUnusable(reason)) => {
                UploadRequestOutcome::BundleUnusable(record, reason)
            }
            Ok(Decision::StoreUnavailable(reason)) => {
                UploadRequestOutcome::StoreUnavailable(record, reason)
            }
            Ok(Decision::Internal(message)) => anyhow::bail!("{message}"),
            Err(_) => anyhow::bail!("the upload task of {test_id} ended without a decision"),
        })
    }

    /// Runs the upload task and, should it panic, ends the upload so no claim is left behind.
    async fn supervise_upload(
        self,
        uploader: std::sync::Arc<Uploader>,
        record: ScanRecord,
        from: UploadStatus,
        request: UploadRequest,
        decision: oneshot::Sender<Decision>,
    ) {
        let test_id = record.test_id.clone();
        let jobs = self.clone();
        let task = tokio::spawn(
            async move {
                jobs.run_upload(uploader, record, from, request, decision)
                    .await
            }
            .in_current_span(),
        );
        // On a shared store the upload holds a lease, renewed while it runs, so that another
        // replica can end it if this one dies.
        let mut task = task;
        let renewals = async {
            if !self.is_shared() {
                return std::future::pending::<()>().await;
            }
            let every = Duration::from_secs_f64(UPLOAD_LEASE_SECONDS / 4.0);
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = self
                    .inner
                    .store
                    .renew_upload(test_id.clone(), now_secs())
                    .await
                {
                    tracing::warn!(error = %err, "renewing the upload lease failed; retrying");
                }
            }
        };
        let joined = tokio::select! {
            joined = &mut task => joined,
            _ = renewals => unreachable!("renewals never end"),
        };
        if let Err(join) = joined {
            tracing::error!(error = %join, "the upload task ended abnormally");
            let reason = "the upload stopped on an internal error; request it again".to_string();
            match self.get(&test_id).await {
                Ok(Some(r)) if r.upload_started_at.is_some() => {
                    let to = if r.upload_status == UploadStatus::Permitted {
                        UploadStatus::Failed
                    } else {
                        r.upload_status
                    };
                    let state = UploadState {
                        status: to,
                        permission_id: r.upload_permission_id.clone(),
                        verification_proof: r.verification_proof.clone(),
                        remote_artifacts: None,
                        progress: r.upload_progress.clone(),
                        reason: Some(reason),
                        in_flight: false,
                    };
                    self.move_upload(&test_id, r.upload_status, state).await;
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(error = ?err, "could not read the scan to end its upload")
                }
            }
        }
    }

    async fn run_upload(
        self,
        uploader: std::sync::Arc<Uploader>,
        record: ScanRecord,
        from: UploadStatus,
        request: UploadRequest,
        decision: oneshot::Sender<Decision>,
    ) {
        let test_id = record.test_id.clone();
        let ended = |status: UploadStatus, reason: String| UploadState {
            status,
            permission_id: None,
            verification_proof: None,
            remote_artifacts: None,
            progress: None,
            reason: Some(reason),
            in_flight: false,
        };
        let (subject, files) = match self.declare_bundle(&uploader, &record).await {
            Ok(declared) => declared,
            Err((reason, refusal)) => {
                self.move_upload(&test_id, from, ended(UploadStatus::Failed, reason))
                    .await;
                let _ = decision.send(refusal);
                return;
            }
        };
        let signer = request.signer.as_deref().unwrap_or(DEFAULT_SIGNER);
        let permit_request =
            uploader.permit_request(&subject, request.tier.as_str(), signer, &files);
        let permit = match uploader.ask_trust(&permit_request).await {
            Ok(TrustDecision::Permitted(permit)) => permit,
            Ok(TrustDecision::Denied { reason }) => {
                tracing::info!(upload.reason = %reason, "Trust denied the upload");
                self.move_upload(
                    &test_id,
                    from,
                    ended(
                        UploadStatus::Denied,
                        format!("Trust denied the upload: {reason}"),
                    ),
                )
                .await;
                let _ = decision.send(Decision::Denied);
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "no decision from Trust; nothing was uploaded");
                self.move_upload(
                    &test_id,
                    from,
                    ended(
                        UploadStatus::Failed,
                        format!("{err}; nothing was uploaded, request the upload again"),
                    ),
                )
                .await;
                let _ = decision.send(Decision::TrustFailed(err));
                return;
            }
        };
        let permitted = UploadState {
            status: UploadStatus::Permitted,
            permission_id: Some(permit.upload_permission_id.clone()),
            verification_proof: permit.verification_proof.clone(),
            remote_artifacts: None,
            progress: None,
            reason: None,
            in_flight: true,
        };
        if !self.move_upload(&test_id, from, permitted.clone()).await {
            // Not recorded as permitted: nothing may be uploaded under this permit. Release the
            // claim (best effort) so the upload can be requested again.
            let release = UploadState {
                status: from,
                reason: Some(
                    "Trust's permit could not be recorded; request the upload again".into(),
                ),
                ..ended(from, String::new())
            };
            self.move_upload(&test_id, from, release).await;
            let _ = decision.send(Decision::Internal(format!(
                "the permit for {test_id} could not be recorded in the store"
            )));
            return;
        }
        tracing::info!(upload.permission_id = %permit.upload_permission_id, files = files.len(), "Trust permitted the upload");
        let _ = decision.send(Decision::Permitted);

        self.transfer(
            &uploader,
            &subject,
            &permit.upload_permission_id,
            &files,
            permitted,
        )
        .await;
    }

    /// The bundle's local copy (fetched from the artifact store when another replica ran the
    /// scan) and its files, hashed once. A refusal is the upload's failure reason and the
    /// decision to answer (`BundleUnusable` or `StoreUnavailable`).
    async fn declare_bundle(
        &self,
        uploader: &Uploader,
        record: &ScanRecord,
    ) -> Result<(UploadSubject, Vec<crate::upload::DeclaredFile>), (String, Decision)> {
        let bundle_dir = self.bundle_dir(record).await.map_err(|err| {
            tracing::warn!(error = %format!("{err:#}"), "the bundle could not be read from the artifact store; nothing was asked or uploaded");
            let reason = format!(
                "{err:#}; nothing was uploaded, request the upload again once the artifact store is reachable"
            );
            (reason.clone(), Decision::StoreUnavailable(reason))
        })?;
        let subject = self.upload_subject(record, bundle_dir);
        if subject.files.is_empty() {
            let reason = "the scan recorded no bundle files to upload".to_string();
            return Err((reason.clone(), Decision::BundleUnusable(reason)));
        }
        let files = uploader.declare(&subject).await.map_err(|err| {
            let reason = err.to_string();
            tracing::warn!(error = %reason, "the bundle could not be declared; nothing was asked or uploaded");
            (reason.clone(), Decision::BundleUnusable(reason))
        })?;
        Ok((subject, files))
    }

    /// Uploads what Trust permitted and records how it ended (`uploaded` or `failed`).
    async fn transfer(
        &self,
        uploader: &Uploader,
        subject: &UploadSubject,
        permission_id: &str,
        files: &[crate::upload::DeclaredFile],
        permitted: UploadState,
    ) {
        let test_id = subject.test_id.clone();
        let progress = StoreProgress {
            jobs: self.clone(),
            test_id: test_id.clone(),
            base: permitted.clone(),
            last: Mutex::new(None),
        };
        let stop = self.inner.uploads.stop.clone();
        let result = tokio::select! {
            result = uploader.upload(subject, permission_id, files, &progress, &stop) => result,
            _ = stop.cancelled() => Err(crate::upload::UploadFailure::Interrupted),
        };
        let done = match result {
            Ok(remote) => {
                tracing::info!(files = files.len(), "upload finished");
                UploadState {
                    status: UploadStatus::Uploaded,
                    remote_artifacts: Some(json!(remote)),
                    progress: progress.last(),
                    in_flight: false,
                    ..permitted
                }
            }
            Err(failure) => {
                tracing::warn!(error = %failure, "upload failed");
                UploadState {
                    status: UploadStatus::Failed,
                    progress: progress.last(),
                    reason: Some(failure.to_string()),
                    in_flight: false,
                    ..permitted
                }
            }
        };
        self.move_upload(&test_id, UploadStatus::Permitted, done)
            .await;
    }

    /// Writes the upload state if the stored status is still `from`; moves the metrics when the
    /// status changed. Returns whether the write happened.
    async fn move_upload(&self, test_id: &str, from: UploadStatus, state: UploadState) -> bool {
        let to = state.status;
        debug_assert!(
            from == to || from.can_transition_to(to),
            "{from:?} -> {to:?}"
        );
        match self
            .inner
            .store
            .write_upload(test_id.to_string(), from, state)
            .await
        {
            Ok(true) => {
                if from != to {
                    self.inner.metrics.upload_transition(from, to);
                }
                true
            }
            Ok(false) => {
                tracing::warn!(
                    upload.from = from.as_str(),
                    upload.to = to.as_str(),
                    "the upload status changed elsewhere; this change was not recorded"
                );
                false
            }
            Err(err) => {
                tracing::error!(error = ?err, "could not record the upload state");
                false
            }
        }
    }

    /// The uploader's view of a scan.
    fn upload_subject(&self, r: &ScanRecord, bundle_dir: std::path::PathBuf) -> UploadSubject {
        let mut provenance = json!({
            "source_type": r.source_type,
            "git_url": r.git_url.as_deref().map(strip_credentials),
            "branch": r.resolved_branch.clone().or_else(|| r.branch.clone()),
            "commit": r.resolved_commit,
            "workspace_id": r.workspace_id,
            "component_id": r.component_id,
            "assessment_id": r.assessment_id,
            "profile": r.profile,
            "manifest_digest": r.manifest_digest,
        });
        if let Some(dir) = &r.directory_path {
            provenance["directory_path"] = json!(dir);
        }
        if let Some(archive) = &r.archive_path {
            provenance["archive_path"] = json!(archive);
        }
        UploadSubject {
            test_id: r.test_id.clone(),
            workspace_id: r.workspace_id.clone(),
            component_id: r.component_id.clone(),
            assessment_id: r.assessment_id.clone(),
            manifest_digest: r.manifest_digest.clone(),
            provenance,
            bundle_dir,
            files: r.artifacts.clone().unwrap_or_default(),
        }
    }

    /// Uploads left in flight by a process that died end (`permitted` → `failed`): at start-up
    /// (`at_start`) every upload the store cannot have running any more, later (a shared
    /// store's reconcile pass) only those whose lease ran out — never this replica's live ones.
    pub(super) async fn recover_uploads(&self, at_start: bool) -> anyhow::Result<()> {
        let reason = "the service stopped while this upload ran; request the upload again";
        let store = &self.inner.store;
        let failed = if at_start {
            store.recover_uploads(reason.into()).await
        } else {
            store
                .reclaim_expired_uploads(reason.into(), super::now_secs())
                .await
        }
        .context("ending uploads left in flight")?;
        for id in failed {
            tracing::warn!(job.id = %id, "upload was running when its service stopped; marked failed");
            self.inner
                .metrics
                .uploads
                .transitions
                .get(UploadStatus::Permitted, UploadStatus::Failed)
                .inc();
        }
        Ok(())
    }

    /// Shutdown: lets background uploads finish until `grace`, then stops the rest (they end
    /// `failed` and can be requested again).
    pub async fn drain_uploads(&self, grace: Duration) {
        let tasks = &self.inner.uploads;
        tasks.tracker.close();
        if tokio::time::timeout(grace, tasks.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; stopping running uploads");
            tasks.stop.cancel();
            tasks.tracker.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_from_git_urls() {
        assert_eq!(
            strip_credentials("https://***@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            strip_credentials("https://user:pw@example.com/r"),
            "https://example.com/r"
        );
        assert_eq!(
            strip_credentials("git://127.0.0.1:9418/r"),
            "git://127.0.0.1:9418/r"
        );
    }

    #[test]
    fn tiers_parse() {
        assert_eq!(UploadTier::parse("basic"), Some(UploadTier::Basic));
        assert_eq!(UploadTier::parse("verified"), Some(UploadTier::Verified));
        assert_eq!(UploadTier::parse("gold"), None);
    }
}
