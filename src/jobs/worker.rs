//! The worker loop: claim a scan through [`JobManager`], run the pipeline under the scan's time
//! limit, and record the outcome. A worker checks the shutdown token between scans, and a scan
//! still running when the drain deadline passes is stopped and put back in the queue. A panic
//! inside a scan fails that scan, not the worker. Knows nothing of HTTP.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::events::JobChannel;
use super::JobManager;
use crate::pipeline::bundle::artifacts::STREAM_JSONL;
use crate::pipeline::profile::Profile;
use crate::pipeline::source::parse_git_url;
use crate::pipeline::{FailureKind, ProgressSink, ScanEvent, ScanSource, ScanSpec};
use crate::scan::{now_secs, FailureReason, JobState};
use crate::storage::{Completion, LeaseState, ScanRecord};

/// How long a stopped pipeline may take to notice the stop before the worker records the outcome
/// and moves on. A clone blocked in a socket read only notices when libgit2's read timeout fires;
/// its task then finishes (and removes its workspace) in the background.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Fallback polling interval when no wake-up arrives.
const POLL: Duration = Duration::from_secs(1);

/// How one claimed scan ended, as seen by the loop.
enum Ended {
    Finished,
    Requeued,
}

/// Runs one worker until `stop_claiming` fires; `hard_stop` fires when the drain deadline passes.
pub async fn run_worker(
    jobs: JobManager,
    index: usize,
    stop_claiming: CancellationToken,
    hard_stop: CancellationToken,
) {
    tracing::debug!(worker = index, "worker started");
    loop {
        if stop_claiming.is_cancelled() {
            break;
        }
        let record = match jobs.claim().await {
            Ok(Some(record)) => record,
            Ok(None) => {
                tokio::select! {
                    _ = stop_claiming.cancelled() => break,
                    _ = jobs.wait_for_work(POLL) => continue,
                }
            }
            Err(err) => {
                tracing::error!(error = ?err, "claiming a scan failed; retrying shortly");
                tokio::select! {
                    _ = stop_claiming.cancelled() => break,
                    _ = tokio::time::sleep(POLL) => continue,
                }
            }
        };
        jobs.metrics().scans.workers_busy.inc();
        let span = scan_span(&record);
        let ended = run_one(&jobs, record, &hard_stop).instrument(span).await;
        jobs.metrics().scans.workers_busy.dec();
        if matches!(ended, Ended::Requeued) {
            break;
        }
    }
    tracing::debug!(worker = index, "worker stopped");
}

/// The root span of one scan run: the ids a caller knows, the profile, and (once known) the
/// outcome. Phases and scanners open child spans inside the pipeline.
fn scan_span(record: &ScanRecord) -> tracing::Span {
    let span = tracing::info_span!(
        "scan",
        otel.status_code = tracing::field::Empty,
        test_id = %record.test_id,
        workspace_id = %record.workspace_id,
        component_id = %record.component_id,
        assessment_id = %record.assessment_id,
        profile = %record.profile,
        scan.status = tracing::field::Empty,
        scan.failure_reason = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::record_trace_id(&span);
    span
}

/// Runs every queued scan to completion in this task (tests and benchmarks).
pub async fn drain_queue(jobs: &JobManager) -> usize {
    let never = CancellationToken::new();
    let mut n = 0;
    while let Ok(Some(record)) = jobs.claim().await {
        jobs.metrics().scans.workers_busy.inc();
        let span = scan_span(&record);
        run_one(jobs, record, &never).instrument(span).await;
        jobs.metrics().scans.workers_busy.dec();
        n += 1;
    }
    n
}

/// Forwards pipeline events to the job's channel and the bundle's `stream.jsonl`, and records the
/// resolved commit as soon as the clone reports it.
struct JobSink {
    jobs: JobManager,
    test_id: String,
    channel: Arc<JobChannel>,
    stream_file: StreamFile,
}

/// The bundle's `stream.jsonl` during a run: opened at the first event and kept open, each event
/// one line written with one call, in append mode (the terminal event, which the engine appends
/// after the run, lands after every line of the run). Best effort: a stream file that cannot be
/// written must not fail the scan; a finished scan's replay is completed from the store.
struct StreamFile {
    bundle_dir: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl StreamFile {
    fn new(bundle_dir: PathBuf) -> StreamFile {
        StreamFile {
            bundle_dir,
            file: Mutex::new(None),
        }
    }

    fn append(&self, json: &str) {
        let mut slot = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let _ = std::fs::create_dir_all(&self.bundle_dir);
            *slot = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.bundle_dir.join(STREAM_JSONL))
                .ok();
        }
        if let Some(file) = slot.as_mut() {
            let mut line = String::with_capacity(json.len() + 1);
            line.push_str(json);
            line.push('\n');
            let _ = file.write_all(line.as_bytes());
        }
    }
}

impl ProgressSink for JobSink {
    fn emit(&self, event: ScanEvent) {
        if let ScanEvent::Phase {
            commit: Some(commit),
            branch,
            ..
        } = &event
        {
            let jobs = self.jobs.clone();
            let id = self.test_id.clone();
            let (commit, branch) = (commit.clone(), branch.clone());
            tokio::spawn(async move { jobs.record_resolved(&id, commit, branch).await });
        }
        if let Some(published) = self.channel.publish(&event) {
            self.stream_file.append(&published.json);
        }
    }
}

fn spec_for(jobs: &JobManager, record: &ScanRecord) -> Result<ScanSpec, (FailureReason, String)> {
    let profile = match &record.manifest {
        Some(value) => serde_json::from_value::<Profile>(value.clone()).map_err(|e| {
            (
                FailureReason::Internal,
                format!("the stored profile of this scan cannot be read ({e}); submit it again"),
            )
        })?,
        None => Profile::builtin(&record.profile).ok_or_else(|| {
            (
                FailureReason::SourceInvalid,
                format!(
                    "profile `{}` is not known to this server version",
                    record.profile
                ),
            )
        })?,
    };
    let source = match record.source_type.as_str() {
        "directory" => ScanSource::Directory {
            requested: record.directory_path.clone().ok_or_else(|| {
                (
                    FailureReason::SourceInvalid,
                    "the scan has no directory_path".to_string(),
                )
            })?,
        },
        "archive" => ScanSource::Archive {
            archive_path: record.archive_path.clone().ok_or_else(|| {
                (
                    FailureReason::SourceInvalid,
                    "the scan has no archive_path".to_string(),
                )
            })?,
        },
        _ => {
            let display = record.git_url.clone().ok_or_else(|| {
                (
                    FailureReason::SourceInvalid,
                    "the scan has no git_url".to_string(),
                )
            })?;
            let policy = jobs.pipeline().source_policy;
            let credentials = jobs
                .clone_credentials(record)
                .map_err(|e| (FailureReason::CloneFailed, e.to_string()))?;
            let git = match credentials {
                Some(clone_url) => {
                    let mut parsed = parse_git_url(clone_url.expose(), policy)
                        .map_err(|e| (FailureReason::SourceInvalid, e))?;
                    parsed.display_url = display;
                    parsed
                }
                None if record.has_url_credentials() => {
                    return Err((
                        FailureReason::CloneFailed,
                        "the credentials in git_url are kept in memory only, by the replica that accepted the scan, and that replica restarted or stopped; submit the scan again (with a credential key shared by the replicas, CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE, any replica can run it)"
                            .to_string(),
                    ))
                }
                None => parse_git_url(&display, policy)
                    .map_err(|e| (FailureReason::SourceInvalid, e))?,
            };
            ScanSource::Git {
                url: git,
                branch: record.branch.clone(),
                commit: record.requested_commit.clone(),
            }
        }
    };
    Ok(ScanSpec {
        test_id: record.test_id.clone(),
        workspace_id: record.workspace_id.clone(),
        component_id: record.component_id.clone(),
        assessment_id: record.assessment_id.clone(),
        requested_by: record.requested_by.clone(),
        source,
        profile,
        manifest_digest: record.manifest_digest.clone(),
        manifest_path: record.manifest_path.clone(),
        timeout: Duration::from_secs(record.timeout_seconds),
        strict: false,
        baseline_file: None,
        submitted_at: record.submitted_at,
    })
}

/// Fetches the archive an archive scan names from the artifact store when another replica
/// received it.
async fn fetch_source(
    jobs: &JobManager,
    spec: ScanSpec,
) -> Result<ScanSpec, (FailureReason, String)> {
    if let ScanSource::Archive { archive_path } = &spec.source {
        if let Err(err) = jobs.fetch_archive(archive_path).await {
            return Err((
                FailureReason::Internal,
                format!(
                    "the archive could not be fetched from the artifact store ({err:#}); check \
                     CERTUS_ASSURANCE_ARTIFACT_BUCKET and that S3 is reachable, then submit the scan again"
                ),
            ));
        }
    }
    Ok(spec)
}

/// Why a running scan was stopped before its pipeline ended.
enum Interrupt {
    Timeout,
    Cancel,
    Shutdown,
    /// Another replica reclaimed the scan (our lease expired): stop without recording.
    LeaseLost,
}

/// The pipeline task of one scan.
type PipelineTask =
    tokio::task::JoinHandle<Result<crate::pipeline::ScanReport, crate::pipeline::ScanFailure>>;

async fn run_one(jobs: &JobManager, record: ScanRecord, hard_stop: &CancellationToken) -> Ended {
    let test_id = record.test_id.clone();
    let (stop, cancel, cancel_requested) = jobs.register_running(&test_id);
    let bundle_dir = jobs.pipeline().artifact_dir(&test_id);
    let channel = jobs.events().channel(&test_id);
    // A re-run of a requeued scan starts a fresh stream file.
    let _ = std::fs::remove_file(bundle_dir.join(STREAM_JSONL));
    let sink = Arc::new(JobSink {
        jobs: jobs.clone(),
        test_id: test_id.clone(),
        channel,
        stream_file: StreamFile::new(bundle_dir),
    });
    tracing::info!("scan started");

    let spec = match spec_for(jobs, &record) {
        Ok(spec) => fetch_source(jobs, spec).await,
        Err(err) => Err(err),
    };
    let spec = match spec {
        Ok(spec) => spec,
        Err((reason, message)) => {
            sink.emit(ScanEvent::Error {
                message: message.clone(),
            });
            finish_failed(jobs, &record, reason, message).await;
            return Ended::Finished;
        }
    };
    let timeout = Duration::from_secs(record.timeout_seconds);
    let pipeline = jobs.pipeline().clone();
    let task_stop = stop.clone();
    let task_sink: Arc<dyn ProgressSink> = sink.clone();
    let mut task: PipelineTask = tokio::spawn(
        async move { pipeline.run(&spec, task_sink, task_stop).await }.in_current_span(),
    );

    let interrupt = tokio::select! {
        result = &mut task => {
            return complete(jobs, &record, result, &cancel_requested).await;
        }
        _ = tokio::time::sleep(timeout) => Interrupt::Timeout,
        _ = cancel.notified() => Interrupt::Cancel,
        _ = hard_stop.cancelled() => Interrupt::Shutdown,
        lost = lease_renewals(jobs, &test_id, &cancel_requested) => lost,
    };
    stop.store(true, Ordering::SeqCst);
    let_pipeline_stop(jobs, &test_id, &interrupt, task).await;
    record_interrupt(jobs, &record, sink.as_ref(), interrupt).await
}

/// On a shared store, renews the lease every third of its length until it is lost or a cancel
/// request made through another replica arrives (a renewal carries those); never ends on a
/// local store.
async fn lease_renewals(
    jobs: &JobManager,
    test_id: &str,
    cancel_requested: &std::sync::atomic::AtomicBool,
) -> Interrupt {
    if !jobs.is_shared() {
        return std::future::pending::<Interrupt>().await;
    }
    let every = jobs.settings().lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match jobs.renew(test_id).await {
            Ok(LeaseState::Held) => {}
            Ok(LeaseState::CancelRequested) => {
                cancel_requested.store(true, Ordering::SeqCst);
                return Interrupt::Cancel;
            }
            Ok(LeaseState::Lost) => return Interrupt::LeaseLost,
            Err(err) => tracing::warn!(error = %err, "renewing the lease failed; retrying"),
        }
    }
}

/// Lets a stopped pipeline notice the stop and remove its workspace, for at most
/// [`STOP_GRACE`]; a task still running then finishes in the background.
async fn let_pipeline_stop(
    jobs: &JobManager,
    test_id: &str,
    interrupt: &Interrupt,
    mut task: PipelineTask,
) {
    // The renewals ended with the select: keep the lease while the pipeline stops, so the
    // outcome can still be recorded (a lease shorter than this wait would otherwise run out,
    // and another replica would run the scan again).
    let keep_lease = async {
        if !jobs.is_shared() || matches!(interrupt, Interrupt::LeaseLost) {
            return std::future::pending::<()>().await;
        }
        loop {
            if let Err(err) = jobs.renew(test_id).await {
                tracing::warn!(error = %err, "renewing the lease while the scan stops failed");
            }
            tokio::time::sleep(jobs.settings().lease / 3).await;
        }
    };
    let stopped = tokio::select! {
        stopped = tokio::time::timeout(STOP_GRACE, &mut task) => stopped.is_ok(),
        _ = keep_lease => unreachable!("keeping the lease never ends"),
    };
    if !stopped {
        tracing::warn!(
            "scan did not stop within {STOP_GRACE:?}; it finishes cleaning up in the background"
        );
        tokio::spawn(async move {
            let _ = task.await;
        });
    }
}

/// Records how an interrupted scan ended.
async fn record_interrupt(
    jobs: &JobManager,
    record: &ScanRecord,
    sink: &JobSink,
    interrupt: Interrupt,
) -> Ended {
    match interrupt {
        Interrupt::LeaseLost => {
            tracing::warn!(
                "lease lost to another replica; this replica stops the scan without recording it"
            );
            jobs.abandon(&record.test_id);
            Ended::Finished
        }
        Interrupt::Timeout => {
            let message = format!(
                "the scan exceeded its time limit of {}s; raise timeout_seconds or use a lighter profile",
                record.timeout_seconds
            );
            sink.emit(ScanEvent::Error {
                message: message.clone(),
            });
            finish_failed(jobs, record, FailureReason::Timeout, message).await;
            Ended::Finished
        }
        Interrupt::Cancel => {
            finish_failed(
                jobs,
                record,
                FailureReason::Cancelled,
                "Cancelled by request while running.".into(),
            )
            .await;
            Ended::Finished
        }
        Interrupt::Shutdown => {
            tracing::Span::current().record("scan.status", "requeued");
            if let Err(err) = jobs.requeue(record).await {
                tracing::error!(error = ?err, "could not put the scan back in the queue");
            } else {
                tracing::warn!("shutdown deadline passed; scan queued again");
            }
            Ended::Requeued
        }
    }
}

async fn complete(
    jobs: &JobManager,
    record: &ScanRecord,
    result: Result<
        Result<crate::pipeline::ScanReport, crate::pipeline::ScanFailure>,
        tokio::task::JoinError,
    >,
    cancel_requested: &std::sync::atomic::AtomicBool,
) -> Ended {
    match result {
        Ok(Ok(report)) => {
            if let Err(err) = jobs.publish_bundle(&record.test_id).await {
                let message = format!(
                    "the bundle could not be stored in the artifact store ({err:#}); check \
                     CERTUS_ASSURANCE_ARTIFACT_BUCKET and that S3 is reachable, then submit the scan again"
                );
                finish_failed(jobs, record, FailureReason::Internal, message).await;
                return Ended::Finished;
            }
            let changed_digest = (report.manifest_digest != record.manifest_digest)
                .then_some(report.manifest_digest);
            let done = Completion {
                status: JobState::Succeeded,
                failure_reason: None,
                errors: vec![],
                summary: Some(report.summary),
                artifacts: Some(report.artifacts),
                finished_at: now_secs(),
                manifest_digest: changed_digest,
            };
            tracing::Span::current().record("scan.status", "succeeded");
            if record_end(jobs, record, done).await {
                tracing::info!(policy.passed = report.policy.passed, "scan succeeded");
            }
        }
        Ok(Err(failure)) => {
            let reason = match failure.kind {
                FailureKind::CloneFailed => FailureReason::CloneFailed,
                FailureKind::SourceInvalid => FailureReason::SourceInvalid,
                FailureKind::ScannerFailed => FailureReason::ScannerFailed,
                FailureKind::Internal => FailureReason::Internal,
                FailureKind::Cancelled if cancel_requested.load(Ordering::SeqCst) => {
                    FailureReason::Cancelled
                }
                FailureKind::Cancelled => FailureReason::Timeout,
            };
            finish_failed(jobs, record, reason, failure.message).await;
        }
        Err(join) => {
            let message = if join.is_panic() {
                "the scan crashed inside the service; the failure was logged".to_string()
            } else {
                "the scan task was aborted".to_string()
            };
            tracing::error!(error = %join, "scan task ended abnormally");
            finish_failed(jobs, record, FailureReason::Internal, message).await;
        }
    }
    Ended::Finished
}

async fn finish_failed(
    jobs: &JobManager,
    record: &ScanRecord,
    reason: FailureReason,
    message: String,
) {
    let span = tracing::Span::current();
    span.record("scan.status", "failed");
    span.record("scan.failure_reason", reason.as_str());
    span.record("otel.status_code", "error");
    tracing::warn!(failure_reason = reason.as_str(), error = %message, "scan failed");
    let bundle_dir = jobs.pipeline().artifact_dir(&record.test_id);
    let artifacts = crate::pipeline::bundle::artifacts::list_files(&bundle_dir).ok();
    // What the failed run wrote (its log above all) is kept, as the local store keeps it.
    if let Err(err) = jobs.publish_bundle(&record.test_id).await {
        tracing::warn!(error = %format!("{err:#}"), "could not store the failed scan's bundle in the artifact store");
    }
    let done = Completion {
        status: JobState::Failed,
        failure_reason: Some(reason),
        errors: vec![message],
        summary: None,
        artifacts,
        finished_at: now_secs(),
        manifest_digest: None,
    };
    record_end(jobs, record, done).await;
}

/// Longest pause between two attempts to record an outcome.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// Records a scan's outcome, retrying a failing store (a full disk, a database restarting) until
/// it succeeds: an outcome given up on would leave the scan RUNNING until the next start. Once
/// the service shuts down it stops trying; the next start then recovers the scan.
async fn record_end(jobs: &JobManager, record: &ScanRecord, done: Completion) -> bool {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match jobs.finish(record, done.clone()).await {
            Ok(_) => {
                if attempt > 1 {
                    tracing::info!(attempt, "recorded the end of the scan after retrying");
                }
                return true;
            }
            Err(err) if jobs.is_draining() => {
                tracing::error!(error = ?err, "could not record the end of a scan while shutting down; the next start recovers it");
                return false;
            }
            Err(err) => {
                // The first failures, then every tenth: a full disk can last a while.
                if attempt <= 3 || attempt.is_multiple_of(10) {
                    tracing::warn!(error = ?err, attempt, "could not record the end of a scan; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RECORD_RETRY_MAX);
            }
        }
    }
}
