//! The default embedded backend: one SQLite file in WAL mode. All statements run on the blocking
//! pool through one connection; a claim is a single conditional `UPDATE ... RETURNING` inside the
//! write lock, so two workers can never claim the same scan.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use futures_util::future::BoxFuture;
use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::audit::{AuditEvent, AUDIT_COLUMNS};
use super::group::GroupCommit;
use super::{
    Admission, AdmissionBounds, Completion, JobStore, ListCursor, ListQuery, PrunePolicy,
    PrunedScan, Recovered, ScanRecord, StoreCounts, UploadState,
};
use crate::scan::{FailureReason, JobState, UploadStatus};

/// Embedded migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_scans.sql"),
    include_str!("../../migrations/sqlite/0002_upload_state.sql"),
    include_str!("../../migrations/sqlite/0003_list_indexes.sql"),
    include_str!("../../migrations/sqlite/0004_scan_manifest.sql"),
    include_str!("../../migrations/sqlite/0005_list_by_submission.sql"),
    include_str!("../../migrations/sqlite/0006_audit_and_archives.sql"),
    include_str!("../../migrations/sqlite/0007_status_counts.sql"),
    include_str!("../../migrations/sqlite/0008_sealed_credentials.sql"),
];

const COLUMNS: &str = "test_id, workspace_id, component_id, assessment_id, source_type, git_url, \
    branch, requested_commit, directory_path, archive_path, requested_by, profile, manifest_digest, \
    timeout_seconds, status, failure_reason, errors_json, resolved_commit, resolved_branch, \
    summary_json, artifacts_json, submitted_at, started_at, finished_at, attempts, upload_status, \
    upload_permission_id, verification_proof_json, remote_artifacts_json, upload_reason, \
    upload_progress_json, upload_tier, upload_started_at, manifest_json, manifest_path, \
    sealed_credentials";

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Audit events of concurrent requests, committed in groups (started on first use).
    pub(super) audit: Arc<OnceLock<GroupCommit<AuditEvent, ()>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the database directory {}", parent.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening the SQLite database {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn).context("applying SQLite migrations")?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
            audit: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    pub(super) fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> BoxFuture<'_, anyhow::Result<T>> {
        Box::pin(on_connection(self.conn.clone(), f))
    }

    /// The connection itself, for a task that outlives no store handle (the audit group commit).
    pub(super) fn connection(&self) -> Arc<Mutex<Connection>> {
        self.conn.clone()
    }
}

/// Runs `f` with `conn` on the blocking pool.
pub(super) async fn on_connection<T: Send + 'static>(
    conn: Arc<Mutex<Connection>>,
    f: impl FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(move || {
        let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    })
    .await
    .context("store task panicked")?
}

fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .with_context(|| format!("migration {}", i + 1))?;
    }
    Ok(())
}

fn parse_json<T: serde::de::DeserializeOwned>(s: Option<String>) -> rusqlite::Result<Option<T>> {
    match s {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s).map(Some).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        }),
    }
}

fn parse_enum<T: std::str::FromStr<Err = String>>(s: String) -> rusqlite::Result<T> {
    s.parse::<T>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn row_to_record(row: &Row<'_>) -> rusqlite::Result<ScanRecord> {
    row_to_record_at(row, 0)
}

/// Reads a record whose columns start at index `o` (list queries put `seq` first).
fn row_to_record_at(row: &Row<'_>, o: usize) -> rusqlite::Result<ScanRecord> {
    Ok(ScanRecord {
        test_id: row.get(o)?,
        workspace_id: row.get(o + 1)?,
        component_id: row.get(o + 2)?,
        assessment_id: row.get(o + 3)?,
        source_type: row.get(o + 4)?,
        git_url: row.get(o + 5)?,
        branch: row.get(o + 6)?,
        requested_commit: row.get(o + 7)?,
        directory_path: row.get(o + 8)?,
        archive_path: row.get(o + 9)?,
        requested_by: row.get(o + 10)?,
        profile: row.get(o + 11)?,
        manifest_digest: row.get(o + 12)?,
        timeout_seconds: row.get::<_, i64>(o + 13)? as u64,
        status: parse_enum::<JobState>(row.get(o + 14)?)?,
        failure_reason: match row.get::<_, Option<String>>(o + 15)? {
            Some(r) => Some(parse_enum::<FailureReason>(r)?),
            None => None,
        },
        errors: parse_json(row.get(o + 16)?)?.unwrap_or_default(),
        resolved_commit: row.get(o + 17)?,
        resolved_branch: row.get(o + 18)?,
        summary: parse_json(row.get(o + 19)?)?,
        artifacts: parse_json(row.get(o + 20)?)?,
        submitted_at: row.get(o + 21)?,
        started_at: row.get(o + 22)?,
        finished_at: row.get(o + 23)?,
        attempts: row.get::<_, i64>(o + 24)? as u32,
        upload_status: parse_enum::<UploadStatus>(row.get(o + 25)?)?,
        upload_permission_id: row.get(o + 26)?,
        verification_proof: parse_json(row.get(o + 27)?)?,
        remote_artifacts: parse_json(row.get(o + 28)?)?,
        upload_reason: row.get(o + 29)?,
        upload_progress: parse_json(row.get(o + 30)?)?,
        upload_tier: row.get(o + 31)?,
        upload_started_at: row.get(o + 32)?,
        manifest: parse_json(row.get(o + 33)?)?,
        manifest_path: row.get(o + 34)?,
        sealed_credentials: row
            .get::<_, Option<String>>(o + 35)?
            .map(crate::scan::SealedCredentials::from_stored),
    })
}

fn to_json<T: serde::Serialize>(v: &Option<T>) -> Option<String> {
    v.as_ref()
        .map(|v| serde_json::to_string(v).expect("plain data serializes"))
}

fn insert_row(conn: &Connection, s: &ScanRecord) -> anyhow::Result<()> {
    conn.execute(
        "INSERT INTO scans (test_id, workspace_id, component_id, assessment_id, source_type,
                    git_url, branch, requested_commit, directory_path, archive_path, requested_by,
                    profile, manifest_digest, timeout_seconds, status, errors_json, submitted_at,
                    upload_status, manifest_json, manifest_path, sealed_credentials)
                 VALUES (:test_id, :workspace_id, :component_id, :assessment_id, :source_type,
                    :git_url, :branch, :requested_commit, :directory_path, :archive_path,
                    :requested_by, :profile, :manifest_digest, :timeout_seconds, :status, :errors,
                    :submitted_at, :upload_status, :manifest_json, :manifest_path,
                    :sealed_credentials)",
        named_params! {
            ":test_id": &s.test_id,
            ":workspace_id": &s.workspace_id,
            ":component_id": &s.component_id,
            ":assessment_id": &s.assessment_id,
            ":source_type": &s.source_type,
            ":git_url": &s.git_url,
            ":branch": &s.branch,
            ":requested_commit": &s.requested_commit,
            ":directory_path": &s.directory_path,
            ":archive_path": &s.archive_path,
            ":requested_by": &s.requested_by,
            ":profile": &s.profile,
            ":manifest_digest": &s.manifest_digest,
            ":timeout_seconds": s.timeout_seconds as i64,
            ":status": s.status.as_str(),
            ":errors": serde_json::to_string(&s.errors)?,
            ":submitted_at": s.submitted_at,
            ":upload_status": s.upload_status.as_str(),
            ":manifest_json": to_json(&s.manifest),
            ":manifest_path": &s.manifest_path,
            ":sealed_credentials": s.sealed_credentials.as_ref().map(|c| c.as_str()),
        },
    )
    .context("inserting a scan")?;
    Ok(())
}

impl JobStore for SqliteStore {
    fn insert(&self, s: ScanRecord) -> BoxFuture<'_, anyhow::Result<()>> {
        self.with_conn(move |conn| insert_row(conn, &s))
    }

    fn get(&self, test_id: String) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>> {
        self.with_conn(move |conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM scans WHERE test_id = ?1"))?
                .query_row([test_id], row_to_record)
                .optional()
                .context("reading a scan")
        })
    }

    fn claim_next(&self, now: f64) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>> {
        self.with_conn(move |conn| {
            conn.prepare_cached(&format!(
                "UPDATE scans SET status = 'RUNNING', started_at = ?1, attempts = attempts + 1
                 WHERE seq = (SELECT seq FROM scans WHERE status = 'QUEUED' ORDER BY submitted_at, seq LIMIT 1)
                   AND status = 'QUEUED'
                 RETURNING {COLUMNS}"
            ))?
            .query_row([now], row_to_record)
            .optional()
            .context("claiming the next queued scan")
        })
    }

    fn set_resolved(
        &self,
        test_id: String,
        commit: String,
        branch: Option<String>,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE scans SET resolved_commit = ?2, resolved_branch = ?3 WHERE test_id = ?1",
                rusqlite::params![test_id, commit, branch],
            )
            .context("recording the resolved commit")?;
            Ok(())
        })
    }

    fn finish(&self, test_id: String, done: Completion) -> BoxFuture<'_, anyhow::Result<bool>> {
        self.with_conn(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE scans SET status = ?2, failure_reason = ?3, errors_json = ?4,
                        summary_json = ?5, artifacts_json = ?6, finished_at = ?7,
                        manifest_digest = COALESCE(?8, manifest_digest), sealed_credentials = NULL
                     WHERE test_id = ?1 AND status = 'RUNNING'",
                    rusqlite::params![
                        test_id,
                        done.status.as_str(),
                        done.failure_reason.map(|r| r.as_str()),
                        serde_json::to_string(&done.errors)?,
                        to_json(&done.summary),
                        to_json(&done.artifacts),
                        done.finished_at,
                        done.manifest_digest,
                    ],
                )
                .context("recording the end of a scan")?;
            Ok(changed == 1)
        })
    }

    fn cancel_queued(
        &self,
        test_id: String,
        now: f64,
        message: String,
    ) -> BoxFuture<'_, anyhow::Result<bool>> {
        self.with_conn(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE scans SET status = 'FAILED', failure_reason = 'cancelled',
                        errors_json = ?3, finished_at = ?2, sealed_credentials = NULL
                     WHERE test_id = ?1 AND status = 'QUEUED'",
                    rusqlite::params![test_id, now, serde_json::to_string(&[message])?],
                )
                .context("cancelling a queued scan")?;
            Ok(changed == 1)
        })
    }

    fn requeue(&self, test_id: String, message: String) -> BoxFuture<'_, anyhow::Result<bool>> {
        self.with_conn(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE scans SET status = 'QUEUED', started_at = NULL, errors_json = ?2
                     WHERE test_id = ?1 AND status = 'RUNNING'",
                    rusqlite::params![test_id, serde_json::to_string(&[message])?],
                )
                .context("putting a scan back in the queue")?;
            Ok(changed == 1)
        })
    }

    fn recover_running(&self, requeue: bool, now: f64) -> BoxFuture<'_, anyhow::Result<Recovered>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let ids: Vec<String> = tx
                .prepare("SELECT test_id FROM scans WHERE status = 'RUNNING' ORDER BY seq")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut out = Recovered::default();
            if requeue {
                tx.execute(
                    "UPDATE scans SET status = 'QUEUED', started_at = NULL WHERE status = 'RUNNING'",
                    [],
                )?;
                out.requeued = ids;
            } else {
                let errors = serde_json::to_string(&[
                    "The service stopped while this scan was running; submit it again.",
                ])?;
                tx.execute(
                    "UPDATE scans SET status = 'FAILED', failure_reason = 'interrupted',
                        errors_json = ?1, finished_at = ?2, sealed_credentials = NULL
                     WHERE status = 'RUNNING'",
                    rusqlite::params![errors, now],
                )?;
                out.failed = ids;
            }
            tx.commit().context("recovering interrupted scans")?;
            Ok(out)
        })
    }

    fn counts(&self) -> BoxFuture<'_, anyhow::Result<StoreCounts>> {
        self.with_conn(move |conn| {
            let mut counts = StoreCounts::default();
            let mut stmt =
                conn.prepare_cached("SELECT status, COUNT(*) FROM scans GROUP BY status")?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (status, n) = row?;
                let status: JobState = status.parse().map_err(anyhow::Error::msg)?;
                counts.by_status.insert(status, n);
            }
            let mut stmt = conn.prepare_cached(
                "SELECT upload_status, COUNT(*) FROM scans GROUP BY upload_status",
            )?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (status, n) = row?;
                let status: UploadStatus = status.parse().map_err(anyhow::Error::msg)?;
                counts.by_upload_status.insert(status, n);
            }
            Ok(counts)
        })
    }

    fn oldest(&self) -> BoxFuture<'_, anyhow::Result<(Option<f64>, Option<f64>)>> {
        self.with_conn(move |conn| {
            let queued: Option<f64> = conn
                .prepare_cached(
                    "SELECT submitted_at FROM scans WHERE status = 'QUEUED' ORDER BY submitted_at, seq LIMIT 1",
                )?
                .query_row([], |r| r.get(0))
                .optional()?;
            let running: Option<f64> = conn
                .prepare_cached(
                    "SELECT started_at FROM scans WHERE status = 'RUNNING' ORDER BY started_at LIMIT 1",
                )?
                .query_row([], |r| r.get(0))
                .optional()?;
            Ok((queued, running))
        })
    }

    fn count_active(
        &self,
        workspace_ids: Vec<String>,
    ) -> BoxFuture<'_, anyhow::Result<HashMap<String, i64>>> {
        self.with_conn(move |conn| count_active_in(conn, workspace_ids))
    }

    fn admit(
        &self,
        scans: Vec<ScanRecord>,
        bounds: AdmissionBounds,
    ) -> BoxFuture<'_, anyhow::Result<Vec<Admission>>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            // Kept by the triggers of migration 0007, in this same transaction's snapshot.
            let queued: i64 = tx
                .prepare_cached("SELECT n FROM scan_status_counts WHERE status = 'QUEUED'")?
                .query_row([], |r| r.get(0))
                .context("counting the queued scans")?;
            let active = if bounds.max_active_per_workspace > 0 {
                count_active_in(&tx, super::workspaces_of(&scans))?
            } else {
                HashMap::new()
            };
            let decisions = super::decide_admission(
                scans.iter().map(|s| s.workspace_id.as_str()),
                queued,
                active,
                bounds,
            );
            for (scan, decision) in scans.iter().zip(&decisions) {
                if *decision == Admission::Admitted {
                    insert_row(&tx, scan)?;
                }
            }
            tx.commit().context("committing a group of submissions")?;
            Ok(decisions)
        })
    }

    fn insert_many(&self, scans: Vec<ScanRecord>) -> BoxFuture<'_, anyhow::Result<()>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            for scan in &scans {
                insert_row(&tx, scan)?;
            }
            tx.commit().context("committing a batch of scans")?;
            Ok(())
        })
    }

    fn list(&self, q: ListQuery) -> BoxFuture<'_, anyhow::Result<Vec<(i64, ScanRecord)>>> {
        self.with_conn(move |conn| {
            let (sql, params) = list_statement(&q);
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |row| {
                    let seq: i64 = row.get(0)?;
                    let record = row_to_record_at(row, 1)?;
                    Ok((seq, record))
                })?
                .collect::<Result<Vec<_>, _>>()
                .context("listing scans")?;
            Ok(rows)
        })
    }

    fn prune(&self, policy: PrunePolicy) -> BoxFuture<'_, anyhow::Result<Vec<PrunedScan>>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            // Finished, and no upload in flight ('permitted' means an upload is under way).
            let prunable = "status IN ('SUCCEEDED', 'FAILED') AND upload_status <> 'permitted' \
                            AND upload_started_at IS NULL";
            let mut seqs: Vec<i64> = Vec::new();
            if let Some(cutoff) = policy.finished_before {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT seq FROM scans WHERE finished_at < ?1 AND {prunable} ORDER BY finished_at LIMIT ?2"
                ))?;
                for seq in stmt.query_map(rusqlite::params![cutoff, policy.batch], |r| r.get(0))? {
                    seqs.push(seq?);
                }
            }
            if let Some(keep) = policy.keep_latest {
                let room = (policy.batch as usize).saturating_sub(seqs.len());
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT seq FROM scans WHERE {prunable}
                       AND seq < COALESCE((SELECT seq FROM scans ORDER BY seq DESC LIMIT 1 OFFSET ?1), 0)
                     ORDER BY seq LIMIT ?2"
                ))?;
                for seq in stmt.query_map(rusqlite::params![keep.saturating_sub(1) as i64, room as i64], |r| r.get(0))? {
                    seqs.push(seq?);
                }
            }
            seqs.sort_unstable();
            seqs.dedup();
            let mut pruned = Vec::with_capacity(seqs.len());
            {
                let mut delete = tx.prepare_cached(
                    "DELETE FROM scans WHERE seq = ?1 RETURNING test_id, status, upload_status, workspace_id",
                )?;
                for seq in seqs {
                    let row = delete
                        .query_row([seq], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)))
                        .optional()?;
                    if let Some((test_id, status, upload, workspace_id)) = row {
                        pruned.push(PrunedScan {
                            test_id,
                            workspace_id,
                            status: status.parse().map_err(anyhow::Error::msg)?,
                            upload_status: upload.parse().map_err(anyhow::Error::msg)?,
                        });
                    }
                }
            }
            insert_events(&tx, &super::audit::retention_events(&pruned))?;
            tx.commit().context("pruning scans")?;
            Ok(pruned)
        })
    }

    fn running_earliest_deadline(&self) -> BoxFuture<'_, anyhow::Result<Option<f64>>> {
        // Reads only the RUNNING rows (status index): as many as there are busy workers.
        self.with_conn(move |conn| {
            let deadline: Option<f64> = conn
                .prepare_cached(
                    "SELECT MIN(started_at + timeout_seconds) FROM scans WHERE status = 'RUNNING'",
                )?
                .query_row([], |r| r.get(0))?;
            Ok(deadline)
        })
    }

    fn claim_upload(
        &self,
        test_id: String,
        tier: String,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<Option<UploadStatus>>> {
        self.with_conn(move |conn| {
            let from: Option<String> = conn
                .prepare_cached(
                    "UPDATE scans SET upload_started_at = ?2, upload_tier = ?3
                     WHERE test_id = ?1 AND status = 'SUCCEEDED'
                       AND upload_status IN ('pending', 'failed') AND upload_started_at IS NULL
                     RETURNING upload_status",
                )?
                .query_row(rusqlite::params![test_id, now, tier], |r| r.get(0))
                .optional()
                .context("marking an upload in flight")?;
            from.map(parse_enum::<UploadStatus>)
                .transpose()
                .context("reading the upload status")
        })
    }

    fn write_upload(
        &self,
        test_id: String,
        expected: UploadStatus,
        state: UploadState,
    ) -> BoxFuture<'_, anyhow::Result<bool>> {
        self.with_conn(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE scans SET upload_status = ?3, upload_permission_id = ?4,
                        verification_proof_json = ?5, remote_artifacts_json = ?6,
                        upload_progress_json = ?7, upload_reason = ?8,
                        upload_started_at = CASE WHEN ?9 THEN upload_started_at ELSE NULL END
                     WHERE test_id = ?1 AND upload_status = ?2",
                )?
                .execute(rusqlite::params![
                    test_id,
                    expected.as_str(),
                    state.status.as_str(),
                    state.permission_id,
                    to_json(&state.verification_proof),
                    to_json(&state.remote_artifacts),
                    to_json(&state.progress),
                    state.reason,
                    state.in_flight,
                ])
                .context("recording the upload state")?;
            Ok(changed == 1)
        })
    }

    fn recover_uploads(&self, reason: String) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let failed: Vec<String> = tx
                .prepare(
                    "UPDATE scans SET upload_status = 'failed', upload_reason = ?1,
                        upload_started_at = NULL
                     WHERE upload_started_at IS NOT NULL AND upload_status = 'permitted'
                     RETURNING test_id",
                )?
                .query_map([reason], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            tx.execute(
                "UPDATE scans SET upload_started_at = NULL WHERE upload_started_at IS NOT NULL",
                [],
            )?;
            tx.commit().context("ending uploads left in flight")?;
            Ok(failed)
        })
    }
}

/// The list statement of a query: equality filters, the time window and the keyset cursor all
/// bound one index range read newest first (see migration 0005), stopped by the limit.
fn list_statement(q: &ListQuery) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = format!("SELECT seq, {COLUMNS} FROM scans WHERE 1 = 1");
    let mut params: Vec<rusqlite::types::Value> = Vec::new();
    let status = q.status.map(|s| s.as_str().to_string());
    for (column, value) in [
        ("workspace_id", &q.workspace_id),
        ("component_id", &q.component_id),
        ("assessment_id", &q.assessment_id),
        ("profile", &q.profile),
        ("status", &status),
    ] {
        if let Some(v) = value {
            params.push(v.clone().into());
            sql.push_str(&format!(" AND {column} = ?{}", params.len()));
        }
    }
    if let Some(allowed) = &q.workspace_in {
        // A token's workspaces: no workspace at all matches nothing.
        let mut placeholders = Vec::new();
        for w in allowed {
            params.push(w.clone().into());
            placeholders.push(format!("?{}", params.len()));
        }
        if placeholders.is_empty() {
            sql.push_str(" AND 0 = 1");
        } else {
            sql.push_str(&format!(
                " AND workspace_id IN ({})",
                placeholders.join(", ")
            ));
        }
    }
    if let Some(t) = q.submitted_after {
        params.push(t.into());
        sql.push_str(&format!(" AND submitted_at >= ?{}", params.len()));
    }
    if let Some(ListCursor { submitted_at, seq }) = q.upper_bound() {
        params.push(submitted_at.into());
        params.push(seq.into());
        let n = params.len();
        sql.push_str(&format!(" AND (submitted_at, seq) < (?{}, ?{n})", n - 1));
    }
    params.push((q.limit as i64).into());
    sql.push_str(&format!(
        " ORDER BY submitted_at DESC, seq DESC LIMIT ?{}",
        params.len()
    ));
    (sql, params)
}

/// QUEUED plus RUNNING scans of each workspace, from the `(workspace_id, status)` index.
fn count_active_in(
    conn: &Connection,
    workspace_ids: Vec<String>,
) -> anyhow::Result<HashMap<String, i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT count(*) FROM scans WHERE workspace_id = ?1 AND status IN ('QUEUED', 'RUNNING')",
    )?;
    let mut counts = HashMap::new();
    for w in workspace_ids {
        let n: i64 = stmt.query_row([&w], |r| r.get(0))?;
        counts.insert(w, n);
    }
    Ok(counts)
}

/// Appends `events` (inside the caller's transaction, when there is one).
pub(super) fn insert_events(conn: &Connection, events: &[AuditEvent]) -> anyhow::Result<()> {
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?;
    for e in events {
        stmt.execute(rusqlite::params![
            e.at,
            e.actor,
            e.actor_kind.as_str(),
            e.workspace_id,
            e.test_id,
            e.archive_sha256,
            e.action.as_str(),
            e.outcome.as_str(),
            e.status.map(i64::from),
        ])
        .context("recording an audit event")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every filter the list accepts alone, and workspace with status or component, reads one
    /// index range in list order: no full scan, no sort, so its cost does not grow with the store.
    #[test]
    fn list_statements_read_an_index_range_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let conn = store.conn.lock().unwrap();
        let cursor = Some(ListCursor {
            submitted_at: 1.0e9,
            seq: 7,
        });
        let s = |v: &str| Some(v.to_string());
        let cases: Vec<(&str, ListQuery)> = vec![
            ("scans_submitted", ListQuery::default()),
            (
                "scans_submitted",
                ListQuery {
                    submitted_after: Some(1.0),
                    ..Default::default()
                },
            ),
            (
                "scans_submitted",
                ListQuery {
                    submitted_before: Some(1.0),
                    before: cursor,
                    ..Default::default()
                },
            ),
            (
                "scans_workspace_submitted",
                ListQuery {
                    workspace_id: s("w"),
                    submitted_after: Some(1.0),
                    submitted_before: Some(2.0),
                    ..Default::default()
                },
            ),
            (
                "scans_component_submitted",
                ListQuery {
                    component_id: s("c"),
                    before: cursor,
                    ..Default::default()
                },
            ),
            (
                "scans_assessment_submitted",
                ListQuery {
                    assessment_id: s("a"),
                    ..Default::default()
                },
            ),
            (
                "scans_profile_submitted",
                ListQuery {
                    profile: s("p"),
                    ..Default::default()
                },
            ),
            (
                "scans_status_submitted",
                ListQuery {
                    status: Some(JobState::Failed),
                    before: cursor,
                    ..Default::default()
                },
            ),
            (
                "scans_workspace_status_submitted",
                ListQuery {
                    workspace_id: s("w"),
                    status: Some(JobState::Failed),
                    submitted_before: Some(2.0),
                    before: cursor,
                    ..Default::default()
                },
            ),
            (
                "scans_workspace_component_submitted",
                ListQuery {
                    workspace_id: s("w"),
                    component_id: s("c"),
                    before: cursor,
                    ..Default::default()
                },
            ),
        ];
        for (index, mut query) in cases {
            query.limit = 51;
            let (sql, params) = list_statement(&query);
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(params), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join(" | ");
            assert!(
                plan.contains(&format!("USING INDEX {index} ")) && plan.starts_with("SEARCH")
                    || index == "scans_submitted" && plan.contains(&format!("INDEX {index}")),
                "{query:?}: expected a range of {index}, got {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{query:?} sorts: {plan}");
        }
    }

    #[test]
    fn claims_take_the_oldest_queued_scan_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let conn = store.conn.lock().unwrap();
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT seq FROM scans WHERE status = 'QUEUED' ORDER BY submitted_at, seq LIMIT 1",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("scans_status_submitted"), "{plan}");
        // The per-workspace cap counts a workspace's active scans through an index prefix.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM scans WHERE workspace_id = 'w' AND status IN ('QUEUED', 'RUNNING')",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(
            plan.contains("scans_workspace_status_submitted (workspace_id=? AND status=?)"),
            "{plan}"
        );
    }
}
