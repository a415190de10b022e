//! [`AuditStore`] on PostgreSQL: the audit trail and archive ownership shared by every replica.
//! A quota check and the ownership it records run under a per-workspace transaction lock, so two
//! replicas storing archives of one workspace at once cannot both pass the quota.

use anyhow::Context;
use futures_util::future::BoxFuture;
use tokio_postgres::types::ToSql;

use super::audit::{
    archive_retention_events, audit_cutoff, ArchiveClaim, ArchivePrune, ArchiveUpload, AuditEvent,
    AuditQuery, AuditStore, PrunedArchive, AUDIT_COLUMNS,
};
use super::postgres::{insert_events, PgStore};
use super::ListCursor;

fn row_to_event(row: &tokio_postgres::Row) -> anyhow::Result<(i64, AuditEvent)> {
    let event = AuditEvent::from_columns(
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
        row.try_get(7)?,
        row.try_get(8)?,
        row.try_get::<_, Option<i32>>(9)?.map(i64::from),
    )?;
    Ok((row.try_get(0)?, event))
}

impl AuditStore for PgStore {
    fn record_audit(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            insert_events(&tx, &events).await?;
            tx.commit().await.context("recording audit events")
        })
    }

    fn list_audit(&self, q: AuditQuery) -> BoxFuture<'_, anyhow::Result<Vec<(i64, AuditEvent)>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let equalities = q.equalities();
            let upper = q.upper_bound();
            let limit = q.limit as i64;
            let mut sql = format!("SELECT seq, {AUDIT_COLUMNS} FROM audit_events WHERE TRUE");
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
            for (column, value) in &equalities {
                params.push(value);
                sql.push_str(&format!(" AND {column} = ${}", params.len()));
            }
            if let Some(allowed) = &q.workspace_in {
                params.push(allowed);
                sql.push_str(&format!(" AND workspace_id = ANY(${})", params.len()));
            }
            if let Some(t) = &q.since {
                params.push(t);
                sql.push_str(&format!(" AND at >= ${}", params.len()));
            }
            if let Some(ListCursor { submitted_at, seq }) = &upper {
                params.push(submitted_at);
                params.push(seq);
                let n = params.len();
                sql.push_str(&format!(" AND (at, seq) < (${}, ${n})", n - 1));
            }
            params.push(&limit);
            sql.push_str(&format!(
                " ORDER BY at DESC, seq DESC LIMIT ${}",
                params.len()
            ));
            let rows = client
                .query(&sql, &params)
                .await
                .context("listing audit events")?;
            rows.iter().map(row_to_event).collect()
        })
    }

    fn prune_audit(
        &self,
        before: Option<f64>,
        older_than_scans: bool,
        batch: u32,
    ) -> BoxFuture<'_, anyhow::Result<u64>> {
        Box::pin(async move {
            let client = self.client().await?;
            let oldest_scan: Option<f64> = if older_than_scans {
                client
                    .query_one("SELECT MIN(submitted_at) FROM scans", &[])
                    .await?
                    .try_get(0)?
            } else {
                None
            };
            let Some(cutoff) = audit_cutoff(before, oldest_scan) else {
                return Ok(0);
            };
            let deleted = client
                .execute(
                    "DELETE FROM audit_events WHERE seq IN
                       (SELECT seq FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
                    &[&cutoff, &i64::from(batch)],
                )
                .await
                .context("pruning audit events")?;
            Ok(deleted)
        })
    }

    fn claim_archive(
        &self,
        upload: ArchiveUpload,
        quota_bytes: Option<u64>,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<ArchiveClaim>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Serializes the quota check of one workspace across replicas until commit.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('archive_owners:' || $1, 0))",
                &[&upload.workspace_id],
            )
            .await?;
            let refreshed = tx
                .execute(
                    "UPDATE archive_owners SET uploaded_at = $3 WHERE sha256 = $1 AND workspace_id = $2",
                    &[&upload.sha256, &upload.workspace_id, &now],
                )
                .await?;
            if refreshed == 0 {
                let stored: i64 = tx
                    .query_one(
                        "SELECT COALESCE(SUM(size_bytes), 0)::BIGINT FROM archive_owners WHERE workspace_id = $1",
                        &[&upload.workspace_id],
                    )
                    .await?
                    .try_get(0)?;
                let stored = stored.max(0) as u64;
                if quota_bytes.is_some_and(|q| stored.saturating_add(upload.size_bytes) > q) {
                    return Ok(ArchiveClaim::OverQuota {
                        stored_bytes: stored,
                    });
                }
                tx.execute(
                    "INSERT INTO archive_owners (sha256, workspace_id, ext, size_bytes, uploaded_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &upload.sha256,
                        &upload.workspace_id,
                        &upload.ext,
                        &(upload.size_bytes as i64),
                        &now,
                    ],
                )
                .await?;
            }
            tx.commit().await.context("recording an archive's owner")?;
            Ok(ArchiveClaim::Recorded)
        })
    }

    fn archive_owned(
        &self,
        sha256: String,
        workspace_id: String,
    ) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT 1 FROM archive_owners WHERE sha256 = $1 AND workspace_id IN ($2, '*') LIMIT 1",
                    &[&sha256, &workspace_id],
                )
                .await?;
            Ok(row.is_some())
        })
    }

    fn prune_archives(
        &self,
        policy: ArchivePrune,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<Vec<PrunedArchive>>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let rows = tx
                .query(
                    "DELETE FROM archive_owners d USING (
                        SELECT a.sha256, a.workspace_id FROM archive_owners a
                         WHERE a.uploaded_at < $1
                           AND NOT EXISTS (SELECT 1 FROM scans s
                                            WHERE (a.workspace_id = '*' OR s.workspace_id = a.workspace_id)
                                              AND s.archive_path = 'uploads/' || a.sha256 || '.' || a.ext)
                         ORDER BY a.uploaded_at LIMIT $2
                         FOR UPDATE SKIP LOCKED) p
                      WHERE d.sha256 = p.sha256 AND d.workspace_id = p.workspace_id
                      RETURNING d.sha256, d.workspace_id, d.ext",
                    &[&policy.uploaded_before, &i64::from(policy.batch)],
                )
                .await
                .context("pruning archives")?;
            let shas: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let kept: std::collections::HashSet<String> = tx
                .query(
                    "SELECT DISTINCT sha256 FROM archive_owners WHERE sha256 = ANY($1)",
                    &[&shas],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut pruned: Vec<PrunedArchive> = Vec::with_capacity(rows.len());
            for r in &rows {
                let sha256: String = r.get(0);
                // One file, however many of its owners went in this pass.
                let orphaned =
                    !kept.contains(&sha256) && !pruned.iter().any(|p| p.sha256 == sha256);
                pruned.push(PrunedArchive {
                    orphaned,
                    sha256,
                    workspace_id: r.get(1),
                    ext: r.get(2),
                });
            }
            insert_events(&tx, &archive_retention_events(&pruned, now)).await?;
            tx.commit().await.context("pruning archives")?;
            Ok(pruned)
        })
    }
}
