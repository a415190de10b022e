//! The default embedded backend: one SQLite file in WAL mode. All statements run on the blocking
//! pool through one connection; a claim is a single conditional `UPDATE ... RETURNING` inside the
//! write lock, so two workers can never claim the same scan.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::future::BoxFuture;
use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::{Completion, JobStore, Recovered, ScanRecord, StoreCounts};
use crate::jobs::state::{FailureReason, JobState, UploadStatus};

/// Embedded migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_scans.sql"),
    include_str!("../../migrations/sqlite/0004_scan_manifest.sql"),
];

const COLUMNS: &str = "test_id, workspace_id, component_id, assessment_id, source_type, git_url, \
    branch, requested_commit, directory_path, archive_path, requested_by, profile, manifest_digest, \
    timeout_seconds, status, failure_reason, errors_json, resolved_commit, resolved_branch, \
    summary_json, artifacts_json, submitted_at, started_at, finished_at, attempts, upload_status, \
    upload_permission_id, verification_proof_json, remote_artifacts_json, manifest_json, \
    manifest_path";

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
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
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> BoxFuture<'_, anyhow::Result<T>> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut guard)
            })
            .await
            .context("store task panicked")?
        })
    }
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
    Ok(ScanRecord {
        test_id: row.get(0)?,
        workspace_id: row.get(1)?,
        component_id: row.get(2)?,
        assessment_id: row.get(3)?,
        source_type: row.get(4)?,
        git_url: row.get(5)?,
        branch: row.get(6)?,
        requested_commit: row.get(7)?,
        directory_path: row.get(8)?,
        archive_path: row.get(9)?,
        requested_by: row.get(10)?,
        profile: row.get(11)?,
        manifest_digest: row.get(12)?,
        timeout_seconds: row.get::<_, i64>(13)? as u64,
        status: parse_enum::<JobState>(row.get(14)?)?,
        failure_reason: match row.get::<_, Option<String>>(15)? {
            Some(r) => Some(parse_enum::<FailureReason>(r)?),
            None => None,
        },
        errors: parse_json(row.get(16)?)?.unwrap_or_default(),
        resolved_commit: row.get(17)?,
        resolved_branch: row.get(18)?,
        summary: parse_json(row.get(19)?)?,
        artifacts: parse_json(row.get(20)?)?,
        submitted_at: row.get(21)?,
        started_at: row.get(22)?,
        finished_at: row.get(23)?,
        attempts: row.get::<_, i64>(24)? as u32,
        upload_status: parse_enum::<UploadStatus>(row.get(25)?)?,
        upload_permission_id: row.get(26)?,
        verification_proof: parse_json(row.get(27)?)?,
        remote_artifacts: parse_json(row.get(28)?)?,
        manifest: parse_json(row.get(29)?)?,
        manifest_path: row.get(30)?,
    })
}

fn to_json<T: serde::Serialize>(v: &Option<T>) -> Option<String> {
    v.as_ref()
        .map(|v| serde_json::to_string(v).expect("plain data serializes"))
}

impl JobStore for SqliteStore {
    fn insert(&self, s: ScanRecord) -> BoxFuture<'_, anyhow::Result<()>> {
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO scans (test_id, workspace_id, component_id, assessment_id, source_type,
                    git_url, branch, requested_commit, directory_path, archive_path, requested_by,
                    profile, manifest_digest, timeout_seconds, status, errors_json, submitted_at,
                    upload_status, manifest_json, manifest_path)
                 VALUES (:test_id, :workspace_id, :component_id, :assessment_id, :source_type,
                    :git_url, :branch, :requested_commit, :directory_path, :archive_path,
                    :requested_by, :profile, :manifest_digest, :timeout_seconds, :status, :errors,
                    :submitted_at, :upload_status, :manifest_json, :manifest_path)",
                named_params! {
                    ":test_id": s.test_id,
                    ":workspace_id": s.workspace_id,
                    ":component_id": s.component_id,
                    ":assessment_id": s.assessment_id,
                    ":source_type": s.source_type,
                    ":git_url": s.git_url,
                    ":branch": s.branch,
                    ":requested_commit": s.requested_commit,
                    ":directory_path": s.directory_path,
                    ":archive_path": s.archive_path,
                    ":requested_by": s.requested_by,
                    ":profile": s.profile,
                    ":manifest_digest": s.manifest_digest,
                    ":timeout_seconds": s.timeout_seconds as i64,
                    ":status": s.status.as_str(),
                    ":errors": serde_json::to_string(&s.errors)?,
                    ":submitted_at": s.submitted_at,
                    ":upload_status": s.upload_status.as_str(),
                    ":manifest_json": to_json(&s.manifest),
                    ":manifest_path": s.manifest_path,
                },
            )
            .context("inserting a scan")?;
            Ok(())
        })
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
                 WHERE seq = (SELECT seq FROM scans WHERE status = 'QUEUED' ORDER BY seq LIMIT 1)
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
                        manifest_digest = COALESCE(?8, manifest_digest)
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
                        errors_json = ?3, finished_at = ?2
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
                        errors_json = ?1, finished_at = ?2
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
                    "SELECT submitted_at FROM scans WHERE status = 'QUEUED' ORDER BY seq LIMIT 1",
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
}
