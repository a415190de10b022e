//! The job store: the `JobStore` interface, the scan record it keeps, the backend chosen from the
//! configuration, and the embedded migrations. It knows nothing of HTTP or scanning.

pub mod audit;
mod audit_postgres;
mod audit_sqlite;
pub mod group;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use self::audit::AuditStore;
use crate::scan::{FailureReason, JobState, SealedCredentials, UploadStatus};

/// One scan as stored. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRecord {
    pub test_id: String,
    pub workspace_id: String,
    pub component_id: String,
    pub assessment_id: String,
    pub source_type: String,
    /// The git URL with any credentials removed (credentials are never persisted).
    pub git_url: Option<String>,
    pub branch: Option<String>,
    pub requested_commit: Option<String>,
    pub directory_path: Option<String>,
    pub archive_path: Option<String>,
    pub requested_by: Option<String>,
    pub profile: String,
    pub manifest_digest: String,
    pub timeout_seconds: u64,
    pub status: JobState,
    pub failure_reason: Option<FailureReason>,
    pub errors: Vec<String>,
    pub resolved_commit: Option<String>,
    pub resolved_branch: Option<String>,
    /// `summary.json` content once the scan succeeded.
    pub summary: Option<serde_json::Value>,
    /// Bundle file paths relative to the scan's artifact directory.
    pub artifacts: Option<Vec<String>>,
    pub submitted_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub attempts: u32,
    pub upload_status: UploadStatus,
    pub upload_permission_id: Option<String>,
    pub verification_proof: Option<serde_json::Value>,
    pub remote_artifacts: Option<serde_json::Value>,
    /// Why the last upload attempt was denied or failed (Trust's reason or the S3 error).
    pub upload_reason: Option<String>,
    /// Files and bytes done by the current or last upload.
    pub upload_progress: Option<serde_json::Value>,
    /// Tier of the last upload-request (`basic` or `verified`).
    pub upload_tier: Option<String>,
    /// When the upload-request in flight started; `None` when none is in flight.
    pub upload_started_at: Option<f64>,
    /// The effective profile when an inline manifest defined or changed it (`None` for a
    /// built-in preset, which is looked up by name).
    pub manifest: Option<serde_json::Value>,
    /// A manifest file inside the source tree, read when the scan runs.
    pub manifest_path: Option<String>,
    /// The credentials of the submitted git_url, sealed with the credential key the replicas
    /// share; `None` without credentials, without a key (the scan is then pinned to the replica
    /// that holds them in memory), and once the scan has ended. Never in an answer.
    #[serde(skip)]
    pub sealed_credentials: Option<SealedCredentials>,
}

impl ScanRecord {
    /// Whether the submitted git_url carried credentials (`git_url` holds the redacted form,
    /// `***@`): they are in `sealed_credentials`, or, without a credential key, in the memory of
    /// the replica that accepted the scan.
    pub fn has_url_credentials(&self) -> bool {
        self.git_url.as_deref().is_some_and(|u| u.contains("***@"))
    }
}

/// The upload columns of a scan as written by [`JobStore::write_upload`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadState {
    pub status: UploadStatus,
    pub permission_id: Option<String>,
    pub verification_proof: Option<serde_json::Value>,
    pub remote_artifacts: Option<serde_json::Value>,
    pub progress: Option<serde_json::Value>,
    pub reason: Option<String>,
    /// The upload is still in flight after this write (the in-flight marker is kept).
    pub in_flight: bool,
}

/// How a running scan ended, as written by [`JobStore::finish`].
#[derive(Debug, Clone)]
pub struct Completion {
    pub status: JobState,
    pub failure_reason: Option<FailureReason>,
    pub errors: Vec<String>,
    pub summary: Option<serde_json::Value>,
    pub artifacts: Option<Vec<String>>,
    pub finished_at: f64,
    /// The digest of the profile that ran, when it differs from the submitted one (a
    /// `manifest_path` read at run time).
    pub manifest_digest: Option<String>,
}

/// Counts used to rebuild the state gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub by_status: HashMap<JobState, i64>,
    pub by_upload_status: HashMap<UploadStatus, i64>,
}

/// What start-up recovery did to scans left RUNNING by a dead process.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub failed: Vec<String>,
    pub requeued: Vec<String>,
}

/// Filters and page bounds of a list query; results are newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub workspace_id: Option<String>,
    /// Only scans in one of these workspaces (a token's scope); an empty list matches nothing.
    pub workspace_in: Option<Vec<String>>,
    pub component_id: Option<String>,
    pub assessment_id: Option<String>,
    pub status: Option<JobState>,
    pub profile: Option<String>,
    /// Only scans submitted at or after this Unix time.
    pub submitted_after: Option<f64>,
    /// Only scans submitted before this Unix time.
    pub submitted_before: Option<f64>,
    /// Keyset cursor: only scans that come after this one in list order.
    pub before: Option<ListCursor>,
    pub limit: usize,
}

impl ListQuery {
    /// `submitted_before` and the cursor as one bound on the list key `(submitted_at, seq)`:
    /// whichever ends the range first. One range on the key lets the store read a single index
    /// range (two separate bounds can mislead the planner into a wider index).
    pub fn upper_bound(&self) -> Option<ListCursor> {
        upper_bound(self.submitted_before, self.before)
    }
}

/// A time bound (`before`: only keys of earlier times) and a cursor as one bound on a list key
/// `(time, seq)`: whichever ends the range first.
pub fn upper_bound(before: Option<f64>, cursor: Option<ListCursor>) -> Option<ListCursor> {
    let before = before.map(|t| ListCursor {
        submitted_at: t,
        seq: i64::MIN,
    });
    match (before, cursor) {
        (Some(a), Some(b)) => Some(if (a.submitted_at, a.seq) <= (b.submitted_at, b.seq) {
            a
        } else {
            b
        }),
        (a, b) => a.or(b),
    }
}

/// A position in list order: newest first by submission time, ties broken by the store's
/// sequence number (which never repeats), so pages neither skip nor repeat a scan while others
/// are inserted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListCursor {
    pub submitted_at: f64,
    pub seq: i64,
}

/// What retention may delete: finished scans older than a cut-off, and finished scans beyond
/// the newest `keep_latest`. Running scans and scans with an upload in flight are never pruned.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrunePolicy {
    pub finished_before: Option<f64>,
    pub keep_latest: Option<u64>,
    /// Most rows deleted in one pass (keeps each write transaction short).
    pub batch: u32,
}

/// One scan removed by retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedScan {
    pub test_id: String,
    pub workspace_id: String,
    pub status: JobState,
    pub upload_status: UploadStatus,
}

/// The bounds a group of submissions is admitted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionBounds {
    /// Most QUEUED scans.
    pub max_queue: usize,
    /// Most QUEUED plus RUNNING scans per workspace (0: no limit).
    pub max_active_per_workspace: usize,
}

/// What admission decided for one scan of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Inserted QUEUED (committed when [`JobStore::admit`] returns).
    Admitted,
    /// The queue was full: `queued` scans waiting once the group's admitted scans are counted.
    QueueFull { queued: usize },
    /// Its workspace already had its most active scans.
    WorkspaceLimit,
}

/// The admission decisions of a group (its scans' workspaces), in order: each scan is admitted
/// while the queue
/// (`queued` scans waiting before the group) and its workspace (`active` scans, read only when
/// there is a per-workspace limit) have room. Both stores call this inside the transaction that
/// read the counts and inserts the admitted scans.
pub fn decide_admission<'a>(
    workspaces: impl Iterator<Item = &'a str>,
    queued: i64,
    mut active: HashMap<String, i64>,
    bounds: AdmissionBounds,
) -> Vec<Admission> {
    let mut queued = queued.max(0) as usize;
    let per_workspace = bounds.max_active_per_workspace as i64;
    let mut decisions: Vec<Admission> = workspaces
        .map(|workspace| {
            if queued >= bounds.max_queue {
                return Admission::QueueFull { queued: 0 };
            }
            if per_workspace > 0 {
                let n = active.entry(workspace.to_string()).or_insert(0);
                if *n >= per_workspace {
                    return Admission::WorkspaceLimit;
                }
                *n += 1;
            }
            queued += 1;
            Admission::Admitted
        })
        .collect();
    for d in &mut decisions {
        if let Admission::QueueFull { queued: waiting } = d {
            *waiting = queued;
        }
    }
    decisions
}

/// The distinct workspaces of a group (for the per-workspace count).
pub fn workspaces_of(scans: &[ScanRecord]) -> Vec<String> {
    let mut ids: Vec<String> = scans.iter().map(|s| s.workspace_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The storage interface the job manager uses. Every state change is a conditional update on
/// the stored status, so a change that lost a race reports `false` instead of overwriting.
/// Every store keeps the audit trail and archive ownership too ([`AuditStore`]).
pub trait JobStore: AuditStore {
    /// Inserts a new QUEUED scan.
    fn insert(&self, scan: ScanRecord) -> BoxFuture<'_, anyhow::Result<()>>;
    fn get(&self, test_id: String) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>>;
    /// Atomically moves the oldest QUEUED scan to RUNNING and returns it.
    fn claim_next(&self, now: f64) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>>;
    /// Records the commit and branch a clone resolved to.
    fn set_resolved(
        &self,
        test_id: String,
        commit: String,
        branch: Option<String>,
    ) -> BoxFuture<'_, anyhow::Result<()>>;
    /// RUNNING → SUCCEEDED/FAILED; `false` if the scan was not RUNNING.
    fn finish(&self, test_id: String, done: Completion) -> BoxFuture<'_, anyhow::Result<bool>>;
    /// QUEUED → FAILED (`cancelled`); `false` if the scan was not QUEUED.
    fn cancel_queued(
        &self,
        test_id: String,
        now: f64,
        message: String,
    ) -> BoxFuture<'_, anyhow::Result<bool>>;
    /// RUNNING → QUEUED (shutdown deadline); `false` if the scan was not RUNNING.
    fn requeue(&self, test_id: String, message: String) -> BoxFuture<'_, anyhow::Result<bool>>;
    /// At start-up, every RUNNING scan becomes FAILED (`interrupted`) or QUEUED again.
    fn recover_running(&self, requeue: bool, now: f64) -> BoxFuture<'_, anyhow::Result<Recovered>>;
    fn counts(&self) -> BoxFuture<'_, anyhow::Result<StoreCounts>>;
    /// Submission time of the oldest QUEUED scan and start time of the oldest RUNNING one.
    fn oldest(&self) -> BoxFuture<'_, anyhow::Result<(Option<f64>, Option<f64>)>>;
    /// QUEUED plus RUNNING scans of each of `workspace_ids` (every id is in the answer), from
    /// the `(workspace_id, status)` index.
    fn count_active(
        &self,
        workspace_ids: Vec<String>,
    ) -> BoxFuture<'_, anyhow::Result<HashMap<String, i64>>>;
    /// Inserts several new QUEUED scans in one transaction: all or none.
    fn insert_many(&self, scans: Vec<ScanRecord>) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Admits a group of new QUEUED scans in one transaction: the queue's length (and, with a
    /// per-workspace limit, each workspace's active scans) is counted by the store inside that
    /// transaction, [`decide_admission`] decides each scan in order, and the admitted ones are
    /// inserted. All or none: an error means nothing of the group was stored.
    fn admit(
        &self,
        scans: Vec<ScanRecord>,
        bounds: AdmissionBounds,
    ) -> BoxFuture<'_, anyhow::Result<Vec<Admission>>>;
    /// Scans matching `query`, newest first, with their sequence numbers (the keyset).
    fn list(&self, query: ListQuery) -> BoxFuture<'_, anyhow::Result<Vec<(i64, ScanRecord)>>>;
    /// Deletes finished scans selected by `policy`, recording each deletion in the audit trail
    /// in the same transaction; returns what was deleted.
    fn prune(&self, policy: PrunePolicy) -> BoxFuture<'_, anyhow::Result<Vec<PrunedScan>>>;

    // Several replicas sharing one store. The embedded store serves one process, so its defaults
    // say "not shared": leases never expire behind its back, cancellation and events stay in
    // memory, and start-up recovery handles a dead process.

    /// Whether several replicas may share this store.
    fn is_shared(&self) -> bool {
        false
    }
    /// Claims like [`JobStore::claim_next`], recording this replica as owner with a lease
    /// until `lease_until`.
    fn claim_leased(
        &self,
        now: f64,
        _lease_until: f64,
    ) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>> {
        self.claim_next(now)
    }
    /// Records that this replica is alive until `alive_until`: scans pinned to it (their
    /// credentials are in its memory) are left to it until then.
    fn heartbeat(&self, _now: f64, _alive_until: f64) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Extends the lease of a running scan this replica owns.
    fn renew_lease(
        &self,
        _test_id: String,
        _lease_until: f64,
    ) -> BoxFuture<'_, anyhow::Result<LeaseState>> {
        Box::pin(async { Ok(LeaseState::Held) })
    }
    /// Asks whichever replica runs the scan to stop it; `false` if it is not RUNNING.
    fn request_cancel(&self, _test_id: String) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    /// Scans whose lease expired (their replica died): re-queued while `attempts < max_attempts`,
    /// else FAILED (`interrupted`).
    fn reclaim_expired(
        &self,
        _now: f64,
        _max_attempts: u32,
    ) -> BoxFuture<'_, anyhow::Result<Recovered>> {
        Box::pin(async { Ok(Recovered::default()) })
    }
    /// Appends published events (`(seq, json)`) to the scan's stored event log.
    fn append_events(
        &self,
        _test_id: String,
        _events: Vec<(i64, String)>,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Stored events of a scan after `after_seq`, in order.
    fn events_after(
        &self,
        _test_id: String,
        _after_seq: i64,
    ) -> BoxFuture<'_, anyhow::Result<Vec<(i64, String)>>> {
        Box::pin(async { Ok(vec![]) })
    }
    /// Earliest deadline (`started_at + timeout_seconds`) of the RUNNING scans.
    fn running_earliest_deadline(&self) -> BoxFuture<'_, anyhow::Result<Option<f64>>>;
    /// Marks an upload in flight for a SUCCEEDED scan whose upload status is `pending` or
    /// `failed` and that has none in flight; returns the upload status it starts from, or `None`
    /// when the scan cannot start an upload now.
    fn claim_upload(
        &self,
        test_id: String,
        tier: String,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<Option<UploadStatus>>>;
    /// Writes the upload columns if the stored upload status is still `expected`.
    fn write_upload(
        &self,
        test_id: String,
        expected: UploadStatus,
        state: UploadState,
    ) -> BoxFuture<'_, anyhow::Result<bool>>;
    /// Uploads left in flight by a dead process end: a `permitted` one becomes `failed` with
    /// `reason`; returns the ids moved so. The embedded store runs this at start-up (every
    /// in-flight upload is then dead); a shared store only ends uploads whose replica is gone.
    fn recover_uploads(&self, reason: String) -> BoxFuture<'_, anyhow::Result<Vec<String>>>;
    /// Shared store, each reconcile pass: uploads whose lease ran out (their replica stopped
    /// without ending them) end as in [`JobStore::recover_uploads`]; live uploads, this
    /// replica's own included, are left alone. The embedded store has no other process.
    fn reclaim_expired_uploads(
        &self,
        _reason: String,
        _now: f64,
    ) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(async { Ok(vec![]) })
    }
    /// Shared store: extends the lease of an upload this replica serves.
    fn renew_upload(&self, _test_id: String, _now: f64) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async { Ok(true) })
    }
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Still ours; keep running.
    Held,
    /// Still ours, and a cancel was requested (possibly through another replica).
    CancelRequested,
    /// No longer ours (reclaimed after an expiry, or finished elsewhere): stop without recording.
    Lost,
}

#[cfg(test)]
mod list_bound_tests {
    use super::*;

    #[test]
    fn the_upper_bound_is_whichever_of_time_and_cursor_ends_first() {
        let cursor = ListCursor {
            submitted_at: 100.0,
            seq: 7,
        };
        let q = |before: Option<f64>, c: Option<ListCursor>| ListQuery {
            submitted_before: before,
            before: c,
            ..Default::default()
        };
        let time = |t: f64| ListCursor {
            submitted_at: t,
            seq: i64::MIN,
        };
        assert_eq!(q(None, None).upper_bound(), None);
        assert_eq!(q(Some(50.0), None).upper_bound(), Some(time(50.0)));
        assert_eq!(q(None, Some(cursor)).upper_bound(), Some(cursor));
        assert_eq!(q(Some(50.0), Some(cursor)).upper_bound(), Some(time(50.0)));
        assert_eq!(q(Some(200.0), Some(cursor)).upper_bound(), Some(cursor));
        // Same second: the time bound excludes every scan of that second, the cursor only some.
        assert_eq!(
            q(Some(100.0), Some(cursor)).upper_bound(),
            Some(time(100.0))
        );
    }
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    #[test]
    fn scans_are_admitted_in_order_while_the_queue_and_their_workspace_have_room() {
        let bounds = AdmissionBounds {
            max_queue: 4,
            max_active_per_workspace: 2,
        };
        let scans = ["a", "b", "b", "a", "c", "a"];
        let active = HashMap::from([("b".to_string(), 1)]);
        use Admission::*;
        assert_eq!(
            decide_admission(scans.into_iter(), 1, active, bounds),
            vec![
                Admitted,
                Admitted,
                WorkspaceLimit,
                Admitted,
                QueueFull { queued: 4 },
                QueueFull { queued: 4 },
            ]
        );
        // A full queue refuses everything; no limit per workspace when it is 0.
        let unlimited = AdmissionBounds {
            max_queue: 2,
            max_active_per_workspace: 0,
        };
        assert_eq!(
            decide_admission(scans[..3].iter().copied(), 0, HashMap::new(), unlimited),
            vec![Admitted, Admitted, QueueFull { queued: 2 }]
        );
        assert_eq!(
            decide_admission(scans[..1].iter().copied(), 7, HashMap::new(), unlimited),
            vec![QueueFull { queued: 7 }]
        );
    }
}
