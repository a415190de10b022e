//! [`AuditStore`] on the embedded SQLite store: the audit trail and archive ownership. Every
//! statement runs on the store's one connection, so a quota check and the ownership it records
//! cannot interleave with another upload's.

use anyhow::Context;
use futures_util::future::BoxFuture;
use rusqlite::OptionalExtension;

use super::audit::{
    archive_retention_events, audit_cutoff, ArchiveClaim, ArchivePrune, ArchiveUpload, AuditEvent,
    AuditQuery, AuditStore, PrunedArchive, AUDIT_COLUMNS,
};
use super::group::GroupCommit;
use super::sqlite::{insert_events, on_connection, SqliteStore};
use super::ListCursor;

/// Most audit events in one group transaction.
const MAX_GROUP_EVENTS: usize = 1024;

fn row_to_event(row: &rusqlite::Row<'_>) -> anyhow::Result<(i64, AuditEvent)> {
    let event = AuditEvent::from_columns(
        row.get(1)?,
        row.get(2)?,
        &row.get::<_, String>(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        &row.get::<_, String>(7)?,
        &row.get::<_, String>(8)?,
        row.get(9)?,
    )?;
    Ok((row.get(0)?, event))
}

impl AuditStore for SqliteStore {
    /// Events of concurrent requests share one transaction (a group commit); each call returns
    /// once its events are committed.
    fn record_audit(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let group = self.audit.get_or_init(|| {
                let conn = self.connection();
                GroupCommit::start(MAX_GROUP_EVENTS, move |events: Vec<AuditEvent>| {
                    on_connection(conn.clone(), move |conn| {
                        let tx = conn.transaction()?;
                        insert_events(&tx, &events)?;
                        tx.commit().context("recording audit events")?;
                        Ok(vec![(); events.len()])
                    })
                })
            });
            group.write(events).await.map(|_| ())
        })
    }

    fn list_audit(&self, q: AuditQuery) -> BoxFuture<'_, anyhow::Result<Vec<(i64, AuditEvent)>>> {
        self.with_conn(move |conn| {
            use rusqlite::types::Value;
            let mut sql = format!("SELECT seq, {AUDIT_COLUMNS} FROM audit_events WHERE 1 = 1");
            let mut params: Vec<Value> = Vec::new();
            for (column, value) in q.equalities() {
                params.push(Value::Text(value));
                sql.push_str(&format!(" AND {column} = ?{}", params.len()));
            }
            if let Some(allowed) = &q.workspace_in {
                let marks: Vec<String> = allowed
                    .iter()
                    .map(|w| {
                        params.push(Value::Text(w.clone()));
                        format!("?{}", params.len())
                    })
                    .collect();
                sql.push_str(&format!(" AND workspace_id IN ({})", marks.join(", ")));
            }
            if let Some(t) = q.since {
                params.push(Value::Real(t));
                sql.push_str(&format!(" AND at >= ?{}", params.len()));
            }
            if let Some(ListCursor { submitted_at, seq }) = q.upper_bound() {
                params.push(Value::Real(submitted_at));
                params.push(Value::Integer(seq));
                let n = params.len();
                sql.push_str(&format!(" AND (at, seq) < (?{}, ?{n})", n - 1));
            }
            params.push(Value::Integer(q.limit as i64));
            sql.push_str(&format!(
                " ORDER BY at DESC, seq DESC LIMIT ?{}",
                params.len()
            ));
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(row_to_event(row).context("listing audit events")?);
            }
            Ok(out)
        })
    }

    fn prune_audit(
        &self,
        before: Option<f64>,
        older_than_scans: bool,
        batch: u32,
    ) -> BoxFuture<'_, anyhow::Result<u64>> {
        self.with_conn(move |conn| {
            let oldest_scan: Option<f64> = if older_than_scans {
                conn.prepare_cached("SELECT MIN(submitted_at) FROM scans")?
                    .query_row([], |r| r.get(0))?
            } else {
                None
            };
            let Some(cutoff) = audit_cutoff(before, oldest_scan) else {
                return Ok(0);
            };
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM audit_events WHERE seq IN
                       (SELECT seq FROM audit_events WHERE at < ?1 ORDER BY at LIMIT ?2)",
                )?
                .execute(rusqlite::params![cutoff, batch])
                .context("pruning audit events")?;
            Ok(deleted as u64)
        })
    }

    fn claim_archive(
        &self,
        upload: ArchiveUpload,
        quota_bytes: Option<u64>,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<ArchiveClaim>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let refreshed = tx
                .prepare_cached(
                    "UPDATE archive_owners SET uploaded_at = ?3 WHERE sha256 = ?1 AND workspace_id = ?2",
                )?
                .execute(rusqlite::params![upload.sha256, upload.workspace_id, now])?;
            if refreshed == 0 {
                let stored: i64 = tx
                    .prepare_cached(
                        "SELECT COALESCE(SUM(size_bytes), 0) FROM archive_owners WHERE workspace_id = ?1",
                    )?
                    .query_row([&upload.workspace_id], |r| r.get(0))?;
                let stored = stored.max(0) as u64;
                if quota_bytes.is_some_and(|q| stored.saturating_add(upload.size_bytes) > q) {
                    return Ok(ArchiveClaim::OverQuota {
                        stored_bytes: stored,
                    });
                }
                tx.prepare_cached(
                    "INSERT INTO archive_owners (sha256, workspace_id, ext, size_bytes, uploaded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(rusqlite::params![
                    upload.sha256,
                    upload.workspace_id,
                    upload.ext,
                    upload.size_bytes as i64,
                    now
                ])?;
            }
            tx.commit().context("recording an archive's owner")?;
            Ok(ArchiveClaim::Recorded)
        })
    }

    fn archive_owned(
        &self,
        sha256: String,
        workspace_id: String,
    ) -> BoxFuture<'_, anyhow::Result<bool>> {
        self.with_conn(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT 1 FROM archive_owners WHERE sha256 = ?1 AND workspace_id IN (?2, '*') LIMIT 1",
                )?
                .query_row([&sha256, &workspace_id], |_| Ok(()))
                .optional()?;
            Ok(found.is_some())
        })
    }

    fn prune_archives(
        &self,
        policy: ArchivePrune,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<Vec<PrunedArchive>>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let candidates: Vec<(String, String, String)> = tx
                .prepare_cached(
                    "SELECT a.sha256, a.workspace_id, a.ext FROM archive_owners a
                      WHERE a.uploaded_at < ?1
                        AND NOT EXISTS (SELECT 1 FROM scans s
                                         WHERE (a.workspace_id = '*' OR s.workspace_id = a.workspace_id)
                                           AND s.archive_path = 'uploads/' || a.sha256 || '.' || a.ext)
                      ORDER BY a.uploaded_at LIMIT ?2",
                )?
                .query_map(rusqlite::params![policy.uploaded_before, policy.batch], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut pruned = Vec::with_capacity(candidates.len());
            for (sha256, workspace_id, ext) in candidates {
                tx.prepare_cached(
                    "DELETE FROM archive_owners WHERE sha256 = ?1 AND workspace_id = ?2",
                )?
                .execute([&sha256, &workspace_id])?;
                let left = tx
                    .prepare_cached("SELECT 1 FROM archive_owners WHERE sha256 = ?1 LIMIT 1")?
                    .query_row([&sha256], |_| Ok(()))
                    .optional()?;
                pruned.push(PrunedArchive {
                    sha256,
                    ext,
                    workspace_id,
                    orphaned: left.is_none(),
                });
            }
            insert_events(&tx, &archive_retention_events(&pruned, now))?;
            tx.commit().context("pruning archives")?;
            Ok(pruned)
        })
    }
}
