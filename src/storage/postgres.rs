//! The multi-replica backend on PostgreSQL. A replica claims a scan with `FOR UPDATE SKIP LOCKED`,
//! records itself as owner with a lease, and renews the lease while the scan runs; a scan whose
//! replica died is reclaimed once its lease expires. Events go to a stored log so a stream works
//! from any replica, and counts by status are kept by a trigger so reading them costs O(1).

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::audit::{AuditEvent, AUDIT_COLUMNS};
use super::{
    Admission, AdmissionBounds, Completion, JobStore, LeaseState, ListCursor, ListQuery,
    PrunePolicy, PrunedScan, Recovered, ScanRecord, StoreCounts, UploadState,
};
use crate::scan::{FailureReason, JobState, UploadStatus, UPLOAD_LEASE_SECONDS};

/// Embedded migrations, applied in order under an advisory lock.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_scans.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_upload_state.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_scan_manifest.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_list_by_submission.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_sharded_counts.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_pinned_scans.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_audit_and_archives.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_sealed_credentials.sql"),
    ),
];

/// Advisory lock key that serializes migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x6365_7274_7573_0001;

/// Advisory lock key that serializes admission transactions of every replica, so the queue
/// bound read inside one holds exactly across the cluster.
const ADMISSION_LOCK: i64 = 0x6365_7274_7573_0002;

const COLUMNS: &str = "test_id, workspace_id, component_id, assessment_id, source_type, git_url, \
    branch, requested_commit, directory_path, archive_path, requested_by, profile, manifest_digest, \
    timeout_seconds, status, failure_reason, errors_json, resolved_commit, resolved_branch, \
    summary_json, artifacts_json, submitted_at, started_at, finished_at, attempts, upload_status, \
    upload_permission_id, verification_proof_json, remote_artifacts_json, upload_reason, \
    upload_progress_json, upload_tier, upload_started_at, manifest_json, manifest_path, \
    sealed_credentials";

/// Time limit of one statement, so a stuck database cannot hold a request or a worker forever.
const STATEMENT_TIMEOUT_MS: u64 = 15_000;

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// This replica's identity, recorded as the owner of the scans it runs.
    owner: String,
}

impl PgStore {
    /// Connects (with a bounded pool and timeouts) and applies pending migrations.
    pub async fn connect(url: &str, owner: String) -> anyhow::Result<PgStore> {
        // libpq's sslmode semantics: `prefer` (the default) and `require` encrypt without
        // verifying the server's certificate; `verify-full` encrypts and verifies it.
        let verify = url.contains("sslmode=verify-full") || url.contains("sslmode=verify-ca");
        let url = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let mut config: tokio_postgres::Config = url
            .parse()
            .context("CERTUS_ASSURANCE_DATABASE_URL is not a valid PostgreSQL URL")?;
        let options = match config.get_options() {
            Some(existing) => format!("{existing} -c statement_timeout={STATEMENT_TIMEOUT_MS}"),
            None => format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"),
        };
        config.options(&options);
        config.connect_timeout(Duration::from_secs(5));
        if config.get_application_name().is_none() {
            config.application_name("certus-assurance");
        }
        let tls = {
            let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
                .context("initialising TLS for PostgreSQL")?;
            if !verify {
                builder.set_verify(openssl::ssl::SslVerifyMode::NONE);
            }
            postgres_openssl::MakeTlsConnector::new(builder.build())
        };
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .context("building the PostgreSQL pool")?;
        let store = PgStore { pool, owner };
        store.migrate().await?;
        Ok(store)
    }

    pub(super) async fn client(&self) -> anyhow::Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .context("could not get a PostgreSQL connection (check CERTUS_ASSURANCE_DATABASE_URL and the server)")
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .context("taking the migration lock")?;
        let result = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS certus_schema_migrations (
                        version INTEGER PRIMARY KEY,
                        applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .await?;
            for (version, sql) in MIGRATIONS {
                let done = client
                    .query_opt(
                        "SELECT 1 FROM certus_schema_migrations WHERE version = $1",
                        &[version],
                    )
                    .await?
                    .is_some();
                if done {
                    continue;
                }
                client.batch_execute("BEGIN").await?;
                let applied = async {
                    client.batch_execute(sql).await?;
                    client
                        .execute(
                            "INSERT INTO certus_schema_migrations (version) VALUES ($1)",
                            &[version],
                        )
                        .await?;
                    client.batch_execute("COMMIT").await
                }
                .await;
                if let Err(err) = applied {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(
                        anyhow::Error::new(err).context(format!("PostgreSQL migration {version}"))
                    );
                }
            }
            Ok(())
        }
        .await;
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        result
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Ends uploads in flight whose lease ran out before `now` and, with `own`, every upload
    /// of this replica: a `permitted` one becomes `failed` with `reason`, a `pending` one stays
    /// `pending`; the marker is cleared. Returns the ids moved to `failed`.
    async fn end_uploads(
        &self,
        reason: String,
        own: bool,
        now: f64,
    ) -> anyhow::Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH stale AS (
                    SELECT test_id, upload_status AS was FROM scans
                    WHERE upload_started_at IS NOT NULL
                      AND (($4 AND upload_owner = $2) OR upload_lease_expires_at < $3)
                    FOR UPDATE SKIP LOCKED)
                 UPDATE scans s SET
                    upload_status = CASE WHEN stale.was = 'permitted' THEN 'failed' ELSE stale.was END,
                    upload_reason = CASE WHEN stale.was = 'permitted' THEN $1 ELSE s.upload_reason END,
                    upload_started_at = NULL, upload_owner = NULL, upload_lease_expires_at = NULL
                 FROM stale WHERE s.test_id = stale.test_id
                 RETURNING s.test_id, stale.was",
                &[&reason, &self.owner, &now, &own],
            )
            .await
            .context("ending uploads whose replica is gone")?;
        Ok(rows
            .iter()
            .filter(|r| r.get::<_, String>(1) == "permitted")
            .map(|r| r.get(0))
            .collect())
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(s: Option<String>) -> anyhow::Result<Option<T>> {
    s.map(|s| serde_json::from_str(&s))
        .transpose()
        .context("a stored JSON column is malformed")
}

fn row_to_record(row: &Row, o: usize) -> anyhow::Result<ScanRecord> {
    let status: String = row.try_get(o + 14)?;
    let reason: Option<String> = row.try_get(o + 15)?;
    let upload: String = row.try_get(o + 25)?;
    Ok(ScanRecord {
        test_id: row.try_get(o)?,
        workspace_id: row.try_get(o + 1)?,
        component_id: row.try_get(o + 2)?,
        assessment_id: row.try_get(o + 3)?,
        source_type: row.try_get(o + 4)?,
        git_url: row.try_get(o + 5)?,
        branch: row.try_get(o + 6)?,
        requested_commit: row.try_get(o + 7)?,
        directory_path: row.try_get(o + 8)?,
        archive_path: row.try_get(o + 9)?,
        requested_by: row.try_get(o + 10)?,
        profile: row.try_get(o + 11)?,
        manifest_digest: row.try_get(o + 12)?,
        timeout_seconds: row.try_get::<_, i64>(o + 13)? as u64,
        status: status.parse::<JobState>().map_err(anyhow::Error::msg)?,
        failure_reason: reason
            .map(|r| r.parse::<FailureReason>().map_err(anyhow::Error::msg))
            .transpose()?,
        errors: parse_json(row.try_get(o + 16)?)?.unwrap_or_default(),
        resolved_commit: row.try_get(o + 17)?,
        resolved_branch: row.try_get(o + 18)?,
        summary: parse_json(row.try_get(o + 19)?)?,
        artifacts: parse_json(row.try_get(o + 20)?)?,
        submitted_at: row.try_get(o + 21)?,
        started_at: row.try_get(o + 22)?,
        finished_at: row.try_get(o + 23)?,
        attempts: row.try_get::<_, i32>(o + 24)? as u32,
        upload_status: upload.parse::<UploadStatus>().map_err(anyhow::Error::msg)?,
        upload_permission_id: row.try_get(o + 26)?,
        verification_proof: parse_json(row.try_get(o + 27)?)?,
        remote_artifacts: parse_json(row.try_get(o + 28)?)?,
        upload_reason: row.try_get(o + 29)?,
        upload_progress: parse_json(row.try_get(o + 30)?)?,
        upload_tier: row.try_get(o + 31)?,
        upload_started_at: row.try_get(o + 32)?,
        manifest: parse_json(row.try_get(o + 33)?)?,
        manifest_path: row.try_get(o + 34)?,
        sealed_credentials: row
            .try_get::<_, Option<String>>(o + 35)?
            .map(crate::scan::SealedCredentials::from_stored),
    })
}

fn to_json<T: serde::Serialize>(v: &Option<T>) -> Option<String> {
    v.as_ref()
        .map(|v| serde_json::to_string(v).expect("plain data serializes"))
}

const INSERT: &str = "INSERT INTO scans (test_id, workspace_id, component_id, assessment_id,
    source_type, git_url, branch, requested_commit, directory_path, archive_path, requested_by,
    profile, manifest_digest, timeout_seconds, status, errors_json, submitted_at, upload_status,
    manifest_json, manifest_path, pinned_to, sealed_credentials)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
    $21, $22)";

/// Inserts a new scan. A scan whose git_url carried credentials that are not sealed (no
/// credential key: they are in this replica's memory only) is pinned to `owner`.
async fn insert_row(
    client: &impl deadpool_postgres::GenericClient,
    s: &ScanRecord,
    owner: &str,
) -> anyhow::Result<()> {
    let timeout = s.timeout_seconds as i64;
    let pinned_to = (s.has_url_credentials() && s.sealed_credentials.is_none()).then_some(owner);
    let sealed = s.sealed_credentials.as_ref().map(|c| c.as_str());
    let errors = serde_json::to_string(&s.errors)?;
    let manifest = to_json(&s.manifest);
    client
        .execute(
            INSERT,
            &[
                &s.test_id,
                &s.workspace_id,
                &s.component_id,
                &s.assessment_id,
                &s.source_type,
                &s.git_url,
                &s.branch,
                &s.requested_commit,
                &s.directory_path,
                &s.archive_path,
                &s.requested_by,
                &s.profile,
                &s.manifest_digest,
                &timeout,
                &s.status.as_str(),
                &errors,
                &s.submitted_at,
                &s.upload_status.as_str(),
                &manifest,
                &s.manifest_path,
                &pinned_to,
                &sealed,
            ],
        )
        .await
        .context("inserting a scan")?;
    Ok(())
}

impl JobStore for PgStore {
    fn insert(&self, scan: ScanRecord) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { insert_row(&self.client().await?, &scan, &self.owner).await })
    }

    fn insert_many(&self, scans: Vec<ScanRecord>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            for scan in &scans {
                insert_row(&tx, scan, &self.owner).await?;
            }
            tx.commit().await.context("committing a batch of scans")
        })
    }

    fn get(&self, test_id: String) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM scans WHERE test_id = $1"),
                    &[&test_id],
                )
                .await
                .context("reading a scan")?;
            row.map(|r| row_to_record(&r, 0)).transpose()
        })
    }

    fn claim_next(&self, now: f64) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>> {
        // Without an explicit lease, a claim still records one so a dead replica's scan comes back.
        self.claim_leased(now, now + 60.0)
    }

    fn claim_leased(
        &self,
        now: f64,
        lease_until: f64,
    ) -> BoxFuture<'_, anyhow::Result<Option<ScanRecord>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!(
                        "UPDATE scans SET status = 'RUNNING', started_at = $1, attempts = attempts + 1,
                            owner = $2, lease_expires_at = $3, cancel_requested = FALSE
                         WHERE seq = (SELECT seq FROM scans WHERE status = 'QUEUED'
                                        AND (pinned_to IS NULL OR pinned_to = $2 OR NOT EXISTS (
                                            SELECT 1 FROM replicas r
                                            WHERE r.owner = scans.pinned_to AND r.alive_until > $1))
                                      ORDER BY submitted_at, seq FOR UPDATE SKIP LOCKED LIMIT 1)
                         RETURNING {COLUMNS}"
                    ),
                    &[&now, &self.owner, &lease_until],
                )
                .await
                .context("claiming the next queued scan")?;
            let record = row.map(|r| row_to_record(&r, 0)).transpose()?;
            if let Some(r) = &record {
                // A re-run (after a reclaim or a requeue) starts a fresh event log.
                client
                    .execute("DELETE FROM scan_events WHERE test_id = $1", &[&r.test_id])
                    .await
                    .context("clearing the event log of a re-run")?;
            }
            Ok(record)
        })
    }

    fn renew_lease(
        &self,
        test_id: String,
        lease_until: f64,
    ) -> BoxFuture<'_, anyhow::Result<LeaseState>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "UPDATE scans SET lease_expires_at = $3
                     WHERE test_id = $1 AND owner = $2 AND status = 'RUNNING'
                     RETURNING cancel_requested",
                    &[&test_id, &self.owner, &lease_until],
                )
                .await
                .context("renewing a lease")?;
            Ok(match row {
                None => LeaseState::Lost,
                Some(r) if r.try_get::<_, bool>(0)? => LeaseState::CancelRequested,
                Some(_) => LeaseState::Held,
            })
        })
    }

    fn set_resolved(
        &self,
        test_id: String,
        commit: String,
        branch: Option<String>,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE scans SET resolved_commit = $2, resolved_branch = $3 WHERE test_id = $1",
                    &[&test_id, &commit, &branch],
                )
                .await
                .context("recording the resolved commit")?;
            Ok(())
        })
    }

    fn finish(&self, test_id: String, done: Completion) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move {
            let client = self.client().await?;
            let errors = serde_json::to_string(&done.errors)?;
            let changed = client
                .execute(
                    "UPDATE scans SET status = $2, failure_reason = $3, errors_json = $4,
                        summary_json = $5, artifacts_json = $6, finished_at = $7,
                        manifest_digest = COALESCE($9, manifest_digest),
                        owner = NULL, lease_expires_at = NULL, sealed_credentials = NULL
                     WHERE test_id = $1 AND status = 'RUNNING' AND owner = $8",
                    &[
                        &test_id,
                        &done.status.as_str(),
                        &done.failure_reason.map(|r| r.as_str()),
                        &errors,
                        &to_json(&done.summary),
                        &to_json(&done.artifacts),
                        &done.finished_at,
                        &self.owner,
                        &done.manifest_digest,
                    ],
                )
                .await
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
        Box::pin(async move {
            let client = self.client().await?;
            let errors = serde_json::to_string(&[message])?;
            let changed = client
                .execute(
                    "UPDATE scans SET status = 'FAILED', failure_reason = 'cancelled',
                        errors_json = $3, finished_at = $2, sealed_credentials = NULL
                     WHERE test_id = $1 AND status = 'QUEUED'",
                    &[&test_id, &now, &errors],
                )
                .await
                .context("cancelling a queued scan")?;
            Ok(changed == 1)
        })
    }

    fn request_cancel(&self, test_id: String) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move {
            let client = self.client().await?;
            let changed = client
                .execute(
                    "UPDATE scans SET cancel_requested = TRUE WHERE test_id = $1 AND status = 'RUNNING'",
                    &[&test_id],
                )
                .await
                .context("requesting cancellation")?;
            Ok(changed == 1)
        })
    }

    fn requeue(&self, test_id: String, message: String) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move {
            let client = self.client().await?;
            let errors = serde_json::to_string(&[message])?;
            let changed = client
                .execute(
                    "UPDATE scans SET status = 'QUEUED', started_at = NULL, errors_json = $2,
                        owner = NULL, lease_expires_at = NULL
                     WHERE test_id = $1 AND status = 'RUNNING' AND owner = $3",
                    &[&test_id, &errors, &self.owner],
                )
                .await
                .context("putting a scan back in the queue")?;
            Ok(changed == 1)
        })
    }

    fn recover_running(
        &self,
        _requeue: bool,
        _now: f64,
    ) -> BoxFuture<'_, anyhow::Result<Recovered>> {
        // Other replicas may be running scans right now: nothing is recovered by a start-up alone.
        // Scans of dead replicas come back through `reclaim_expired` once their lease runs out.
        Box::pin(async { Ok(Recovered::default()) })
    }

    fn reclaim_expired(
        &self,
        now: f64,
        max_attempts: u32,
    ) -> BoxFuture<'_, anyhow::Result<Recovered>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let max = max_attempts as i32;
            let requeued = tx
                .query(
                    "UPDATE scans SET status = 'QUEUED', started_at = NULL, owner = NULL,
                        lease_expires_at = NULL,
                        errors_json = '[\"The replica running this scan stopped; it was queued again.\"]'
                     WHERE status = 'RUNNING' AND lease_expires_at < $1 AND attempts < $2
                     RETURNING test_id",
                    &[&now, &max],
                )
                .await?;
            let failed = tx
                .query(
                    "UPDATE scans SET status = 'FAILED', failure_reason = 'interrupted',
                        finished_at = $1, owner = NULL, lease_expires_at = NULL, sealed_credentials = NULL,
                        errors_json = '[\"The replica running this scan stopped, and the scan has used all its attempts; submit it again.\"]'
                     WHERE status = 'RUNNING' AND lease_expires_at < $1 AND attempts >= $2
                     RETURNING test_id",
                    &[&now, &max],
                )
                .await?;
            tx.commit().await.context("reclaiming expired leases")?;
            Ok(Recovered {
                requeued: requeued.iter().map(|r| r.get(0)).collect(),
                failed: failed.iter().map(|r| r.get(0)).collect(),
            })
        })
    }

    fn counts(&self) -> BoxFuture<'_, anyhow::Result<StoreCounts>> {
        Box::pin(async move {
            let client = self.client().await?;
            let mut counts = StoreCounts::default();
            for row in client
                .query(
                    "SELECT kind, value, sum(n)::BIGINT FROM scan_counts GROUP BY kind, value",
                    &[],
                )
                .await?
            {
                let (kind, value, n): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
                match kind.as_str() {
                    "status" => {
                        counts
                            .by_status
                            .insert(value.parse().map_err(anyhow::Error::msg)?, n);
                    }
                    "upload" => {
                        counts
                            .by_upload_status
                            .insert(value.parse().map_err(anyhow::Error::msg)?, n);
                    }
                    _ => {}
                }
            }
            Ok(counts)
        })
    }

    fn oldest(&self) -> BoxFuture<'_, anyhow::Result<(Option<f64>, Option<f64>)>> {
        Box::pin(async move {
            let client = self.client().await?;
            let queued = client
                .query_opt(
                    "SELECT submitted_at FROM scans WHERE status = 'QUEUED' ORDER BY submitted_at, seq LIMIT 1",
                    &[],
                )
                .await?
                .map(|r| r.get::<_, f64>(0));
            let running = client
                .query_opt(
                    "SELECT started_at FROM scans WHERE status = 'RUNNING' ORDER BY started_at LIMIT 1",
                    &[],
                )
                .await?
                .and_then(|r| r.get::<_, Option<f64>>(0));
            Ok((queued, running))
        })
    }

    fn count_active(
        &self,
        workspace_ids: Vec<String>,
    ) -> BoxFuture<'_, anyhow::Result<std::collections::HashMap<String, i64>>> {
        Box::pin(async move { count_active_in(&self.client().await?, workspace_ids).await })
    }

    fn admit(
        &self,
        scans: Vec<ScanRecord>,
        bounds: AdmissionBounds,
    ) -> BoxFuture<'_, anyhow::Result<Vec<Admission>>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Taken before the counts are read, so they include every group admitted before.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADMISSION_LOCK])
                .await
                .context("taking the admission lock")?;
            let queued: i64 = tx
                .query_one(
                    "SELECT COALESCE(sum(n), 0)::BIGINT FROM scan_counts \
                     WHERE kind = 'status' AND value = 'QUEUED'",
                    &[],
                )
                .await
                .context("counting the queued scans")?
                .get(0);
            let active = if bounds.max_active_per_workspace > 0 {
                count_active_in(&tx, super::workspaces_of(&scans)).await?
            } else {
                std::collections::HashMap::new()
            };
            let decisions = super::decide_admission(
                scans.iter().map(|s| s.workspace_id.as_str()),
                queued,
                active,
                bounds,
            );
            for (scan, decision) in scans.iter().zip(&decisions) {
                if *decision == Admission::Admitted {
                    insert_row(&tx, scan, &self.owner).await?;
                }
            }
            tx.commit()
                .await
                .context("committing a group of submissions")?;
            Ok(decisions)
        })
    }

    fn list(&self, q: ListQuery) -> BoxFuture<'_, anyhow::Result<Vec<(i64, ScanRecord)>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let mut sql = format!("SELECT seq, {COLUMNS} FROM scans WHERE TRUE");
            let status = q.status.map(|s| s.as_str().to_string());
            let limit = q.limit as i64;
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
            for (column, value) in [
                ("workspace_id", &q.workspace_id),
                ("component_id", &q.component_id),
                ("assessment_id", &q.assessment_id),
                ("profile", &q.profile),
                ("status", &status),
            ] {
                if let Some(v) = value {
                    params.push(v);
                    sql.push_str(&format!(" AND {column} = ${}", params.len()));
                }
            }
            if let Some(allowed) = &q.workspace_in {
                params.push(allowed);
                sql.push_str(&format!(" AND workspace_id = ANY(${})", params.len()));
            }
            if let Some(t) = &q.submitted_after {
                params.push(t);
                sql.push_str(&format!(" AND submitted_at >= ${}", params.len()));
            }
            let upper = q.upper_bound();
            if let Some(ListCursor { submitted_at, seq }) = &upper {
                params.push(submitted_at);
                params.push(seq);
                let n = params.len();
                sql.push_str(&format!(" AND (submitted_at, seq) < (${}, ${n})", n - 1));
            }
            params.push(&limit);
            sql.push_str(&format!(
                " ORDER BY submitted_at DESC, seq DESC LIMIT ${}",
                params.len()
            ));
            let rows = client.query(&sql, &params).await.context("listing scans")?;
            rows.iter()
                .map(|r| Ok((r.try_get::<_, i64>(0)?, row_to_record(r, 1)?)))
                .collect()
        })
    }

    fn prune(&self, policy: PrunePolicy) -> BoxFuture<'_, anyhow::Result<Vec<PrunedScan>>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let prunable = "status IN ('SUCCEEDED', 'FAILED') AND upload_status <> 'permitted' \
                            AND upload_started_at IS NULL";
            let batch = policy.batch as i64;
            let mut seqs: Vec<i64> = Vec::new();
            if let Some(cutoff) = policy.finished_before {
                for r in tx
                    .query(
                        &format!("SELECT seq FROM scans WHERE finished_at < $1 AND {prunable} ORDER BY finished_at LIMIT $2"),
                        &[&cutoff, &batch],
                    )
                    .await?
                {
                    seqs.push(r.get(0));
                }
            }
            if let Some(keep) = policy.keep_latest {
                let room = batch - seqs.len() as i64;
                let offset = keep.saturating_sub(1) as i64;
                for r in tx
                    .query(
                        &format!(
                            "SELECT seq FROM scans WHERE {prunable}
                               AND seq < COALESCE((SELECT seq FROM scans ORDER BY seq DESC LIMIT 1 OFFSET $1), 0)
                             ORDER BY seq LIMIT $2"
                        ),
                        &[&offset, &room.max(0)],
                    )
                    .await?
                {
                    seqs.push(r.get(0));
                }
            }
            seqs.sort_unstable();
            seqs.dedup();
            let rows = tx
                .query(
                    &format!(
                        "DELETE FROM scans WHERE seq = ANY($1) AND {prunable}
                         RETURNING test_id, status, upload_status, workspace_id"
                    ),
                    &[&seqs],
                )
                .await
                .context("pruning scans")?;
            let pruned = rows
                .iter()
                .map(|r| {
                    Ok(PrunedScan {
                        test_id: r.get(0),
                        workspace_id: r.get(3),
                        status: r.get::<_, String>(1).parse().map_err(anyhow::Error::msg)?,
                        upload_status: r.get::<_, String>(2).parse().map_err(anyhow::Error::msg)?,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            insert_events(&tx, &super::audit::retention_events(&pruned)).await?;
            tx.commit().await?;
            Ok(pruned)
        })
    }

    fn running_earliest_deadline(&self) -> BoxFuture<'_, anyhow::Result<Option<f64>>> {
        // Reads only the RUNNING rows (partial lease index): as many as there are busy workers.
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT MIN(started_at + timeout_seconds) FROM scans WHERE status = 'RUNNING'",
                    &[],
                )
                .await
                .context("reading the earliest running deadline")?;
            Ok(row.get::<_, Option<f64>>(0))
        })
    }

    fn heartbeat(&self, now: f64, alive_until: f64) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO replicas (owner, alive_until) VALUES ($1, $2)
                     ON CONFLICT (owner) DO UPDATE SET alive_until = EXCLUDED.alive_until",
                    &[&self.owner, &alive_until],
                )
                .await
                .context("renewing this replica's liveness")?;
            // Rows of replicas gone for a day are forgotten, so the table stays small.
            client
                .execute(
                    "DELETE FROM replicas WHERE alive_until < $1",
                    &[&(now - 86_400.0)],
                )
                .await?;
            Ok(())
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn claim_upload(
        &self,
        test_id: String,
        tier: String,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<Option<UploadStatus>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let until = now + UPLOAD_LEASE_SECONDS;
            let row = client
                .query_opt(
                    "UPDATE scans SET upload_started_at = $2, upload_tier = $3, upload_owner = $4,
                        upload_lease_expires_at = $5
                     WHERE test_id = $1 AND status = 'SUCCEEDED'
                       AND upload_status IN ('pending', 'failed') AND upload_started_at IS NULL
                     RETURNING upload_status",
                    &[&test_id, &now, &tier, &self.owner, &until],
                )
                .await
                .context("marking an upload in flight")?;
            row.map(|r| {
                r.get::<_, String>(0)
                    .parse::<UploadStatus>()
                    .map_err(anyhow::Error::msg)
            })
            .transpose()
        })
    }

    fn write_upload(
        &self,
        test_id: String,
        expected: UploadStatus,
        state: UploadState,
    ) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move {
            let client = self.client().await?;
            let changed = client
                .execute(
                    "UPDATE scans SET upload_status = $3, upload_permission_id = $4,
                        verification_proof_json = $5, remote_artifacts_json = $6,
                        upload_progress_json = $7, upload_reason = $8,
                        upload_started_at = CASE WHEN $9 THEN upload_started_at ELSE NULL END,
                        upload_owner = CASE WHEN $9 THEN upload_owner ELSE NULL END,
                        upload_lease_expires_at = CASE WHEN $9 THEN upload_lease_expires_at ELSE NULL END
                     WHERE test_id = $1 AND upload_status = $2",
                    &[
                        &test_id,
                        &expected.as_str(),
                        &state.status.as_str(),
                        &state.permission_id,
                        &to_json(&state.verification_proof),
                        &to_json(&state.remote_artifacts),
                        &to_json(&state.progress),
                        &state.reason,
                        &state.in_flight,
                    ],
                )
                .await
                .context("recording the upload state")?;
            Ok(changed == 1)
        })
    }

    fn recover_uploads(&self, reason: String) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        // At start-up: this replica's own (it restarted under the same identity) and those
        // whose lease ran out. Other replicas' live uploads are left alone.
        Box::pin(self.end_uploads(reason, true, crate::scan::now_secs()))
    }

    fn reclaim_expired_uploads(
        &self,
        reason: String,
        now: f64,
    ) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(self.end_uploads(reason, false, now))
    }

    fn renew_upload(&self, test_id: String, now: f64) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move {
            let client = self.client().await?;
            let until = now + UPLOAD_LEASE_SECONDS;
            let changed = client
                .execute(
                    "UPDATE scans SET upload_lease_expires_at = $3
                     WHERE test_id = $1 AND upload_owner = $2 AND upload_started_at IS NOT NULL",
                    &[&test_id, &self.owner, &until],
                )
                .await
                .context("renewing an upload lease")?;
            Ok(changed == 1)
        })
    }

    fn append_events(
        &self,
        test_id: String,
        events: Vec<(i64, String)>,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            let client = self.client().await?;
            let (seqs, jsons): (Vec<i64>, Vec<String>) = events.into_iter().unzip();
            client
                .execute(
                    "INSERT INTO scan_events (test_id, seq, json)
                     SELECT $1, s, j FROM UNNEST($2::BIGINT[], $3::TEXT[]) AS e(s, j)
                     ON CONFLICT (test_id, seq) DO NOTHING",
                    &[&test_id, &seqs, &jsons],
                )
                .await
                .context("storing scan events")?;
            Ok(())
        })
    }

    fn events_after(
        &self,
        test_id: String,
        after_seq: i64,
    ) -> BoxFuture<'_, anyhow::Result<Vec<(i64, String)>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT seq, json FROM scan_events WHERE test_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000",
                    &[&test_id, &after_seq],
                )
                .await
                .context("reading scan events")?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

/// QUEUED plus RUNNING scans of each of `workspace_ids` (every id is in the answer).
async fn count_active_in(
    client: &impl deadpool_postgres::GenericClient,
    workspace_ids: Vec<String>,
) -> anyhow::Result<std::collections::HashMap<String, i64>> {
    let rows = client
        .query(
            "SELECT workspace_id, count(*) FROM scans \
             WHERE workspace_id = ANY($1) AND status IN ('QUEUED', 'RUNNING') \
             GROUP BY workspace_id",
            &[&workspace_ids],
        )
        .await
        .context("counting a workspace's active scans")?;
    let mut counts: std::collections::HashMap<String, i64> =
        workspace_ids.into_iter().map(|w| (w, 0)).collect();
    for row in rows {
        counts.insert(row.try_get(0)?, row.try_get(1)?);
    }
    Ok(counts)
}

/// Appends `events` inside the caller's transaction, in one statement.
pub(super) async fn insert_events(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[AuditEvent],
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let at: Vec<f64> = events.iter().map(|e| e.at).collect();
    let actor: Vec<&str> = events.iter().map(|e| e.actor.as_str()).collect();
    let kind: Vec<&str> = events.iter().map(|e| e.actor_kind.as_str()).collect();
    let workspace: Vec<Option<&str>> = events.iter().map(|e| e.workspace_id.as_deref()).collect();
    let test_id: Vec<Option<&str>> = events.iter().map(|e| e.test_id.as_deref()).collect();
    let sha: Vec<Option<&str>> = events.iter().map(|e| e.archive_sha256.as_deref()).collect();
    let action: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    let outcome: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    let status: Vec<Option<i32>> = events.iter().map(|e| e.status.map(i32::from)).collect();
    tx.execute(
        &format!(
            "INSERT INTO audit_events ({AUDIT_COLUMNS})
             SELECT * FROM UNNEST($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::int4[])"
        ),
        &[
            &at, &actor, &kind, &workspace, &test_id, &sha, &action, &outcome, &status,
        ],
    )
    .await
    .context("recording audit events")?;
    Ok(())
}
