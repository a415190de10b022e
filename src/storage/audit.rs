//! The audit trail and archive ownership as stored: the events the API and retention record,
//! the query of `GET /v1/audit-events`, and which workspaces own an uploaded archive. Both
//! stores implement [`AuditStore`] (`audit_sqlite.rs`, `audit_postgres.rs`); nothing here ever
//! holds a secret.

use futures_util::future::BoxFuture;
use serde::Serialize;

use super::ListCursor;

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// `POST /v1/security-scans`.
    Submit,
    /// `POST /v1/security-scans/batch` refused as a whole (no item was read).
    Batch,
    /// One item of a batch.
    BatchItem,
    /// `POST /v1/security-scans/{test_id}/cancel`.
    Cancel,
    /// `POST /v1/security-scans/{test_id}/upload-request`.
    UploadRequest,
    /// `POST /v1/security-scans/upload-archive`.
    UploadArchive,
    /// Retention deleted a finished scan and its bundle.
    RetentionDeleteScan,
    /// Retention deleted a workspace's ownership of an archive (and the file with its last owner).
    RetentionDeleteArchive,
}

impl AuditAction {
    pub const ALL: [AuditAction; 8] = [
        AuditAction::Submit,
        AuditAction::Batch,
        AuditAction::BatchItem,
        AuditAction::Cancel,
        AuditAction::UploadRequest,
        AuditAction::UploadArchive,
        AuditAction::RetentionDeleteScan,
        AuditAction::RetentionDeleteArchive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Submit => "submit",
            AuditAction::Batch => "batch",
            AuditAction::BatchItem => "batch_item",
            AuditAction::Cancel => "cancel",
            AuditAction::UploadRequest => "upload_request",
            AuditAction::UploadArchive => "upload_archive",
            AuditAction::RetentionDeleteScan => "retention_delete_scan",
            AuditAction::RetentionDeleteArchive => "retention_delete_archive",
        }
    }

    pub fn parse(s: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// How the recorded action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Done (a 2xx answer, or a retention deletion).
    Accepted,
    /// Refused with a 4xx answer (its status is recorded).
    Refused,
    /// Failed on the server's side (a 5xx answer).
    Error,
}

impl AuditOutcome {
    pub const ALL: [AuditOutcome; 3] = [
        AuditOutcome::Accepted,
        AuditOutcome::Refused,
        AuditOutcome::Error,
    ];

    /// The outcome of an HTTP answer.
    pub fn of_status(status: u16) -> AuditOutcome {
        match status {
            0..=399 => AuditOutcome::Accepted,
            400..=499 => AuditOutcome::Refused,
            _ => AuditOutcome::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Accepted => "accepted",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<AuditOutcome> {
        AuditOutcome::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Who acted: a token (by name), a client address (authentication off, or no valid token), or
/// the service itself (retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Token,
    Address,
    Service,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Token => "token",
            ActorKind::Address => "address",
            ActorKind::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<ActorKind> {
        [ActorKind::Token, ActorKind::Address, ActorKind::Service]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// The actor of retention deletions.
pub const RETENTION_ACTOR: &str = "retention";

/// One audit event. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub at: f64,
    pub actor: String,
    pub actor_kind: ActorKind,
    pub workspace_id: Option<String>,
    pub test_id: Option<String>,
    pub archive_sha256: Option<String>,
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    /// The HTTP status answered (`None` for retention).
    pub status: Option<u16>,
}

impl AuditEvent {
    /// A retention deletion.
    pub fn retention(
        at: f64,
        action: AuditAction,
        workspace_id: &str,
        test_id: Option<&str>,
        archive_sha256: Option<&str>,
    ) -> AuditEvent {
        AuditEvent {
            at,
            actor: RETENTION_ACTOR.into(),
            actor_kind: ActorKind::Service,
            workspace_id: Some(workspace_id.into()),
            test_id: test_id.map(Into::into),
            archive_sha256: archive_sha256.map(Into::into),
            action,
            outcome: AuditOutcome::Accepted,
            status: None,
        }
    }

    /// Rebuilds an event from its stored columns.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_columns(
        at: f64,
        actor: String,
        actor_kind: &str,
        workspace_id: Option<String>,
        test_id: Option<String>,
        archive_sha256: Option<String>,
        action: &str,
        outcome: &str,
        status: Option<i64>,
    ) -> anyhow::Result<AuditEvent> {
        let bad = |what: &str, v: &str| anyhow::anyhow!("stored audit event has {what} `{v}`");
        Ok(AuditEvent {
            at,
            actor,
            actor_kind: ActorKind::parse(actor_kind)
                .ok_or_else(|| bad("actor kind", actor_kind))?,
            workspace_id,
            test_id,
            archive_sha256,
            action: AuditAction::parse(action).ok_or_else(|| bad("action", action))?,
            outcome: AuditOutcome::parse(outcome).ok_or_else(|| bad("outcome", outcome))?,
            status: status.and_then(|s| u16::try_from(s).ok()),
        })
    }
}

/// Filters and page bounds of `GET /v1/audit-events`; results are newest first by `(at, seq)`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub workspace_id: Option<String>,
    /// Only events in one of these workspaces (a token's scope); an empty list matches nothing.
    pub workspace_in: Option<Vec<String>>,
    pub action: Option<AuditAction>,
    pub outcome: Option<AuditOutcome>,
    pub actor: Option<String>,
    pub test_id: Option<String>,
    pub archive_sha256: Option<String>,
    /// Only events at or after this Unix time.
    pub since: Option<f64>,
    /// Only events before this Unix time.
    pub until: Option<f64>,
    /// Keyset cursor: only events that come after this one in list order.
    pub before: Option<ListCursor>,
    pub limit: usize,
}

impl AuditQuery {
    /// `until` and the cursor as one bound on the key `(at, seq)`.
    pub fn upper_bound(&self) -> Option<ListCursor> {
        super::upper_bound(self.until, self.before)
    }

    /// The equality filters as `(column, value)` pairs.
    pub(super) fn equalities(&self) -> Vec<(&'static str, String)> {
        [
            ("workspace_id", self.workspace_id.clone()),
            ("action", self.action.map(|a| a.as_str().to_string())),
            ("outcome", self.outcome.map(|o| o.as_str().to_string())),
            ("actor", self.actor.clone()),
            ("test_id", self.test_id.clone()),
            ("archive_sha256", self.archive_sha256.clone()),
        ]
        .into_iter()
        .filter_map(|(c, v)| v.map(|v| (c, v)))
        .collect()
    }
}

/// The columns of `audit_events` after `seq`, in the order every statement uses.
pub(super) const AUDIT_COLUMNS: &str =
    "at, actor, actor_kind, workspace_id, test_id, archive_sha256, action, outcome, status";

/// The owner recorded for an archive uploaded with authentication off and no `workspace_id` (the
/// earlier service's form): every workspace may scan it, as every caller may reach every
/// workspace while authentication is off. Not a valid workspace id, so it names no workspace.
pub const ANY_WORKSPACE: &str = "*";

/// An archive a workspace uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveUpload {
    pub sha256: String,
    /// The stored file's extension (`tar.gz`, `zip`, ...).
    pub ext: String,
    pub workspace_id: String,
    pub size_bytes: u64,
}

/// What recording an upload's ownership found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveClaim {
    /// Recorded (or refreshed, when the workspace already owned it).
    Recorded,
    /// Refused: the workspace's archives already hold `stored_bytes`, and this one would pass
    /// the quota.
    OverQuota { stored_bytes: u64 },
}

/// What retention may delete from the archive store.
#[derive(Debug, Clone, Copy)]
pub struct ArchivePrune {
    /// Ownership recorded (uploaded last) before this Unix time, by a workspace none of whose
    /// retained scans names the archive.
    pub uploaded_before: f64,
    pub batch: u32,
}

/// One ownership deleted by retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedArchive {
    pub sha256: String,
    pub ext: String,
    pub workspace_id: String,
    /// No workspace owns the archive any more: its file is to be removed.
    pub orphaned: bool,
}

/// The audit trail and archive ownership of a store (a part of every [`super::JobStore`]).
pub trait AuditStore: Send + Sync + 'static {
    /// Appends events in one transaction.
    fn record_audit(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Events matching `query`, newest first, with their sequence numbers.
    fn list_audit(
        &self,
        query: AuditQuery,
    ) -> BoxFuture<'_, anyhow::Result<Vec<(i64, AuditEvent)>>>;
    /// Deletes up to `batch` events older than `before`; with `older_than_scans`, also those
    /// older than the oldest stored scan (the count-based retention). Returns how many.
    fn prune_audit(
        &self,
        before: Option<f64>,
        older_than_scans: bool,
        batch: u32,
    ) -> BoxFuture<'_, anyhow::Result<u64>>;
    /// Records that a workspace uploaded an archive, unless a new ownership would take the
    /// workspace past `quota_bytes` (an archive it already owns is never charged twice).
    fn claim_archive(
        &self,
        upload: ArchiveUpload,
        quota_bytes: Option<u64>,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<ArchiveClaim>>;
    /// Whether `workspace_id` uploaded the archive `sha256`.
    fn archive_owned(
        &self,
        sha256: String,
        workspace_id: String,
    ) -> BoxFuture<'_, anyhow::Result<bool>>;
    /// Deletes ownerships selected by `policy`, recording each deletion in the audit trail in
    /// the same transaction.
    fn prune_archives(
        &self,
        policy: ArchivePrune,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<Vec<PrunedArchive>>>;
}

/// The audit events of scans deleted by retention.
pub(super) fn retention_events(pruned: &[super::PrunedScan]) -> Vec<AuditEvent> {
    let now = crate::scan::now_secs();
    pruned
        .iter()
        .map(|p| {
            AuditEvent::retention(
                now,
                AuditAction::RetentionDeleteScan,
                &p.workspace_id,
                Some(&p.test_id),
                None,
            )
        })
        .collect()
}

/// The audit events of archive ownerships deleted by retention.
pub(super) fn archive_retention_events(pruned: &[PrunedArchive], now: f64) -> Vec<AuditEvent> {
    pruned
        .iter()
        .map(|p| {
            AuditEvent::retention(
                now,
                AuditAction::RetentionDeleteArchive,
                &p.workspace_id,
                None,
                Some(&p.sha256),
            )
        })
        .collect()
}

/// The cut-off of an audit pruning pass: the later of the age cut-off and, for the count-based
/// retention, the oldest stored scan; `None` when neither applies.
pub(super) fn audit_cutoff(before: Option<f64>, oldest_scan: Option<f64>) -> Option<f64> {
    before.into_iter().chain(oldest_scan).reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_cutoff_is_the_later_of_age_and_oldest_scan() {
        assert_eq!(audit_cutoff(None, None), None);
        assert_eq!(audit_cutoff(Some(10.0), None), Some(10.0));
        assert_eq!(audit_cutoff(None, Some(20.0)), Some(20.0));
        assert_eq!(audit_cutoff(Some(10.0), Some(20.0)), Some(20.0));
        assert_eq!(audit_cutoff(Some(30.0), Some(20.0)), Some(30.0));
    }

    #[test]
    fn outcomes_follow_the_status_class_and_names_round_trip() {
        assert_eq!(AuditOutcome::of_status(201), AuditOutcome::Accepted);
        assert_eq!(AuditOutcome::of_status(413), AuditOutcome::Refused);
        assert_eq!(AuditOutcome::of_status(503), AuditOutcome::Error);
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(a));
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for o in AuditOutcome::ALL {
            assert_eq!(AuditOutcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
