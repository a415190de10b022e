//! The PostgreSQL store: the store contract on both backends, several replicas sharing one
//! queue, a replica killed mid-run, and streams and cancellation across replicas. Each test
//! works in a schema of its own in the `test` database and drops it afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certus_assurance::config::StoreLocation;
use certus_assurance::jobs::counts::COUNTS_MAX_AGE;
use certus_assurance::scan::{FailureReason, JobState, UploadStatus};
use certus_assurance::storage::postgres::PgStore;
use certus_assurance::storage::sqlite::SqliteStore;
use certus_assurance::storage::{
    Completion, JobStore, LeaseState, ListCursor, ListQuery, PrunePolicy, ScanRecord, UploadState,
};
use serde_json::{json, Value};

use crate::helpers::*;

/// Server of the machine's PostgreSQL (trust authentication); override with
/// CERTUS_ASSURANCE_TEST_POSTGRES_URL.
pub fn server_url() -> String {
    std::env::var("CERTUS_ASSURANCE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A schema of its own, dropped on drop.
pub struct PgSchema {
    pub name: String,
}

/// Runs `sql`; returns what it printed, unaligned and without headers.
pub fn psql(sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            &server_url(),
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs (Debian postgresql-client)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl PgSchema {
    pub fn create() -> PgSchema {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).unwrap();
        let name = format!("certus_test_{}", hex::encode(bytes));
        psql(&format!("CREATE SCHEMA {name}"));
        PgSchema { name }
    }

    /// The database URL whose connections use this schema.
    pub fn url(&self) -> String {
        let base = server_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-csearch_path%3D{}", self.name)
    }
}

impl Drop for PgSchema {
    /// Ends the sessions still using the schema first: an app of the test may still be running
    /// a transaction on this very thread's runtime (its tasks cannot finish while this blocks),
    /// and `DROP SCHEMA` would wait for its locks for ever.
    fn drop(&mut self) {
        let name = &self.name;
        psql(&format!(
            "SET lock_timeout = '10s';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE pid <> pg_backend_pid() AND query NOT ILIKE '%pg_terminate_backend%'
                AND pid IN (SELECT l.pid FROM pg_locks l
                              JOIN pg_class c ON c.oid = l.relation
                              JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname = '{name}');
             DROP SCHEMA IF EXISTS {name} CASCADE"
        ));
    }
}

pub fn record(id: &str, workspace: &str, submitted_at: f64) -> ScanRecord {
    ScanRecord {
        test_id: id.to_string(),
        workspace_id: workspace.to_string(),
        component_id: "c".into(),
        assessment_id: "a".into(),
        source_type: "git".into(),
        git_url: Some("https://example.com/r.git".into()),
        branch: Some("main".into()),
        requested_commit: None,
        directory_path: None,
        archive_path: None,
        requested_by: None,
        profile: "light".into(),
        manifest_digest: "sha256:x".into(),
        timeout_seconds: 600,
        status: JobState::Queued,
        failure_reason: None,
        errors: vec![],
        resolved_commit: None,
        resolved_branch: None,
        summary: None,
        artifacts: None,
        submitted_at,
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
        manifest: None,
        manifest_path: None,
        sealed_credentials: None,
    }
}

/// The behaviour every backend must have.
async fn store_contract(store: Arc<dyn JobStore>) {
    store
        .insert(record("test_000000000001", "a", 1.0))
        .await
        .unwrap();
    store
        .insert_many(vec![
            record("test_000000000002", "b", 2.0),
            record("test_000000000003", "a", 3.0),
        ])
        .await
        .unwrap();
    assert!(
        store
            .insert(record("test_000000000001", "a", 1.0))
            .await
            .is_err(),
        "ids are unique"
    );
    let got = store
        .get("test_000000000002".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.workspace_id, "b");
    assert!(store
        .get("test_00000000000f".into())
        .await
        .unwrap()
        .is_none());

    // Oldest first; a claimed scan is not claimed again.
    let first = store.claim_next(10.0).await.unwrap().unwrap();
    assert_eq!(first.test_id, "test_000000000001");
    assert_eq!(first.status, JobState::Running);
    assert_eq!(first.attempts, 1);
    assert_eq!(store.oldest().await.unwrap(), (Some(2.0), Some(10.0)));
    // A queued scan can be cancelled once; a running one cannot be cancelled as queued.
    assert!(store
        .cancel_queued("test_000000000002".into(), 11.0, "stop".into())
        .await
        .unwrap());
    assert!(!store
        .cancel_queued("test_000000000002".into(), 11.0, "stop".into())
        .await
        .unwrap());
    assert!(!store
        .cancel_queued("test_000000000001".into(), 11.0, "stop".into())
        .await
        .unwrap());
    store
        .set_resolved(
            "test_000000000001".into(),
            "abc".into(),
            Some("main".into()),
        )
        .await
        .unwrap();
    let done = Completion {
        status: JobState::Succeeded,
        failure_reason: None,
        errors: vec![],
        summary: Some(json!({"policy": {"passed": true}})),
        artifacts: Some(vec!["summary.json".into()]),
        finished_at: 12.0,
        manifest_digest: None,
    };
    assert!(store
        .finish("test_000000000001".into(), done.clone())
        .await
        .unwrap());
    assert!(
        !store
            .finish("test_000000000001".into(), done)
            .await
            .unwrap(),
        "only a RUNNING scan finishes"
    );
    let finished = store
        .get("test_000000000001".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.resolved_commit.as_deref(), Some("abc"));
    assert_eq!(finished.summary.unwrap()["policy"]["passed"], true);

    // Requeue puts a running scan back.
    let third = store.claim_next(13.0).await.unwrap().unwrap();
    assert_eq!(third.test_id, "test_000000000003");
    assert!(store
        .requeue(third.test_id.clone(), "shutdown".into())
        .await
        .unwrap());
    assert_eq!(store.claim_next(14.0).await.unwrap().unwrap().attempts, 2);
    assert!(store.claim_next(15.0).await.unwrap().is_none());
    let failed = Completion {
        status: JobState::Failed,
        failure_reason: Some(FailureReason::Timeout),
        errors: vec!["too slow".into()],
        summary: None,
        artifacts: None,
        finished_at: 16.0,
        manifest_digest: None,
    };
    assert!(store
        .finish("test_000000000003".into(), failed)
        .await
        .unwrap());

    let counts = store.counts().await.unwrap();
    assert_eq!(counts.by_status.get(&JobState::Succeeded), Some(&1));
    assert_eq!(counts.by_status.get(&JobState::Failed), Some(&2));
    assert_eq!(
        counts
            .by_status
            .get(&JobState::Queued)
            .copied()
            .unwrap_or(0),
        0
    );
    assert_eq!(
        counts.by_upload_status.get(&UploadStatus::Pending),
        Some(&3)
    );

    // Lists: newest first, filters, keyset.
    let all = store
        .list(ListQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = all.iter().map(|(_, r)| r.test_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "test_000000000003",
            "test_000000000002",
            "test_000000000001"
        ]
    );
    let page = store
        .list(ListQuery {
            limit: 10,
            before: Some(ListCursor {
                submitted_at: all[0].1.submitted_at,
                seq: all[0].0,
            }),
            workspace_id: Some("a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].1.test_id, "test_000000000001");
    let failed = store
        .list(ListQuery {
            limit: 10,
            status: Some(JobState::Failed),
            submitted_after: Some(2.5),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);

    // Retention keeps the newest one.
    let pruned = store
        .prune(PrunePolicy {
            finished_before: None,
            keep_latest: Some(1),
            batch: 100,
        })
        .await
        .unwrap();
    assert_eq!(pruned.len(), 2);
    assert_eq!(
        store
            .list(ListQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        1
    );
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.by_status.values().sum::<i64>(), 1);
}

#[tokio::test]
async fn the_store_contract_holds_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    store_contract(Arc::new(store)).await;
}

#[tokio::test]
async fn the_store_contract_holds_on_postgres() {
    let schema = PgSchema::create();
    let store = PgStore::connect(&schema.url(), "replica-a".into())
        .await
        .unwrap();
    store_contract(Arc::new(store)).await;
}

/// A run that succeeded at `t`.
fn succeeded_at(t: f64) -> Completion {
    Completion {
        status: JobState::Succeeded,
        failure_reason: None,
        errors: vec![],
        summary: None,
        artifacts: None,
        finished_at: t,
        manifest_digest: None,
    }
}

/// Two stores on the schema, as replicas `replica-a` and `replica-b`.
async fn two_replicas(schema: &PgSchema) -> (PgStore, PgStore) {
    let connect = |owner: &'static str| {
        let url = schema.url();
        async move { PgStore::connect(&url, owner.into()).await }
    };
    let (a, b) = tokio::join!(connect("replica-a"), connect("replica-b"));
    (a.unwrap(), b.unwrap())
}

#[tokio::test]
async fn leases_expire_and_cancels_reach_the_owner() {
    let schema = PgSchema::create();
    let (a, b) = two_replicas(&schema).await;
    a.insert(record("test_000000000001", "w", 1.0))
        .await
        .unwrap();
    a.insert(record("test_000000000002", "w", 2.0))
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(a.claim_leased(10.0, 20.0), b.claim_leased(10.0, 20.0));
    let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
    assert_ne!(
        ra.test_id, rb.test_id,
        "SKIP LOCKED: two replicas never claim the same scan"
    );
    assert_eq!(
        a.renew_lease(ra.test_id.clone(), 30.0).await.unwrap(),
        LeaseState::Held
    );
    assert_eq!(
        b.renew_lease(ra.test_id.clone(), 30.0).await.unwrap(),
        LeaseState::Lost,
        "not b's scan"
    );
    assert!(b.request_cancel(ra.test_id.clone()).await.unwrap());
    assert_eq!(
        a.renew_lease(ra.test_id.clone(), 30.0).await.unwrap(),
        LeaseState::CancelRequested
    );
    // b's lease (until 20) expires; a reclaims it: back to the queue (attempt 1 of 2).
    let reclaimed = a.reclaim_expired(25.0, 2).await.unwrap();
    assert_eq!(reclaimed.requeued, vec![rb.test_id.clone()]);
    assert_eq!(
        b.renew_lease(rb.test_id.clone(), 40.0).await.unwrap(),
        LeaseState::Lost
    );
    assert!(
        !b.finish(rb.test_id.clone(), succeeded_at(26.0))
            .await
            .unwrap(),
        "a replica that lost its lease cannot record"
    );
    // Second run also dies: attempts are used up.
    let again = a.claim_leased(30.0, 31.0).await.unwrap().unwrap();
    assert_eq!(again.attempts, 2);
    let reclaimed = b.reclaim_expired(40.0, 2).await.unwrap();
    assert_eq!(reclaimed.failed, vec![again.test_id.clone()]);
    let failed = a.get(again.test_id).await.unwrap().unwrap();
    assert_eq!(failed.failure_reason, Some(FailureReason::Interrupted));
}

/// A reconcile pass ends only the uploads whose lease ran out (their replica stopped): the live
/// uploads of the replica that runs the pass stay in flight. Only a start under the same
/// identity ends that replica's own uploads.
#[tokio::test]
async fn a_reconcile_pass_leaves_live_uploads_alone() {
    let schema = PgSchema::create();
    let (a, b) = two_replicas(&schema).await;
    let (live, dead) = ("test_000000000001", "test_000000000002");
    for (i, id) in [live, dead].into_iter().enumerate() {
        a.insert(record(id, "w", i as f64)).await.unwrap();
        let claimed = a.claim_leased(10.0, 20.0).await.unwrap().unwrap();
        assert!(a.finish(claimed.test_id, succeeded_at(11.0)).await.unwrap());
    }
    let permitted = UploadState {
        status: UploadStatus::Permitted,
        in_flight: true,
        ..Default::default()
    };
    let now = certus_assurance::scan::now_secs();
    // a's upload started now; b's started long ago and its lease was never renewed.
    for (store, id, started) in [(&a, live, now), (&b, dead, now - 1000.0)] {
        let from = store
            .claim_upload(id.into(), "basic".into(), started)
            .await
            .unwrap();
        assert_eq!(from, Some(UploadStatus::Pending));
        assert!(store
            .write_upload(id.into(), UploadStatus::Pending, permitted.clone())
            .await
            .unwrap());
    }
    let ended = a.reclaim_expired_uploads("gone".into(), now).await.unwrap();
    assert_eq!(ended, vec![dead.to_string()]);
    let still = a.get(live.into()).await.unwrap().unwrap();
    assert_eq!(still.upload_status, UploadStatus::Permitted);
    assert!(still.upload_started_at.is_some(), "{still:?}");
    let gone = a.get(dead.into()).await.unwrap().unwrap();
    assert_eq!(gone.upload_status, UploadStatus::Failed);
    assert_eq!(gone.upload_reason.as_deref(), Some("gone"));
    // A start under a's identity: a's uploads cannot be running any more.
    assert_eq!(
        a.recover_uploads("restarted".into()).await.unwrap(),
        vec![live.to_string()]
    );
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pg_counts(schema: &PgSchema) -> std::collections::HashMap<String, i64> {
    pg_status_counts(schema).0
}

/// Rows of the schema's `scans` by status and by upload status (lower case), read in one
/// statement (one snapshot) with `GROUP BY`, not from the trigger-kept counts.
pub fn pg_status_counts(
    schema: &PgSchema,
) -> (
    std::collections::HashMap<String, i64>,
    std::collections::HashMap<String, i64>,
) {
    pg_status_counts_in(&schema.name)
}

/// [`pg_status_counts`] of the schema named `schema`.
pub fn pg_status_counts_in(
    schema: &str,
) -> (
    std::collections::HashMap<String, i64>,
    std::collections::HashMap<String, i64>,
) {
    let out = std::process::Command::new("psql")
        .args([
            &server_url(),
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &status_counts_sql(schema),
        ])
        .output()
        .expect("psql runs (Debian postgresql-client)");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_status_counts(&String::from_utf8_lossy(&out.stdout))
}

/// The one-snapshot `GROUP BY` of [`pg_status_counts`] on the schema `s`.
fn status_counts_sql(s: &str) -> String {
    format!(
        "SELECT 'scan', lower(status), count(*) FROM {s}.scans GROUP BY status \
         UNION ALL SELECT 'upload', lower(upload_status), count(*) FROM {s}.scans GROUP BY upload_status"
    )
}

/// Parses `psql -At` output of [`status_counts_sql`].
fn parse_status_counts(
    text: &str,
) -> (
    std::collections::HashMap<String, i64>,
    std::collections::HashMap<String, i64>,
) {
    let (mut scans, mut uploads) = (Default::default(), Default::default());
    for line in text.lines() {
        let mut parts = line.split('|');
        let (Some(kind), Some(status), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let target: &mut std::collections::HashMap<String, i64> = if kind == "scan" {
            &mut scans
        } else {
            &mut uploads
        };
        target.insert(status.to_string(), n.parse().unwrap());
    }
    (scans, uploads)
}

/// The status gauges of every replica are the store's counts when read, not the replica's own
/// history: a change made through one replica shows at once on the others (no reconcile pass
/// runs in this test), a cancel through a replica that never counted the scan does not drive
/// its gauge below zero, and a store that cannot be read is reported while the last good counts
/// stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_reads_the_status_gauges_from_the_store() {
    let git = GitServer::start();
    git.create_repo("r", &[("a.txt", "hello\n")]);
    let schema = PgSchema::create();
    let artifacts = tempfile::tempdir().unwrap();
    let mk = |id: &'static str| {
        let base = replica(&schema, artifacts.path(), 0, id, 30.0);
        move |c: &mut certus_assurance::Config| {
            base(c);
            c.store.reconcile_interval = Duration::from_secs(3600);
        }
    };
    let a = spawn_app_with(mk("a")).await;
    let b = spawn_app_with(mk("b")).await;
    let agree = |who: &str, stats: &Value, text: &str| {
        let db = pg_status_counts(&schema);
        eprintln!("{who}: {stats} vs {db:?}");
        assert_counts_agree_with(stats, text, &db);
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(a.submit_scan(scan_body(&git.url("r"))).await);
    }
    // A replica answers from a read at most this old (its own changes always read afresh).
    tokio::time::sleep(COUNTS_MAX_AGE).await;
    for (who, app) in [("a", &a), ("b", &b)] {
        agree(who, &app.stats().await, &app.metrics_text().await);
    }
    assert_eq!(b.stats().await["scans_by_status"]["queued"], 3);

    // b never counted these scans: cancelling one through it must not take b's queue below 0.
    let r = b
        .client
        .post(b.url(&format!("/v1/security-scans/{}/cancel", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(COUNTS_MAX_AGE).await;
    for (who, app) in [("b", &b), ("a", &a)] {
        let stats = app.stats().await;
        assert_eq!(stats["scans_by_status"]["queued"], 2, "{who}: {stats}");
        assert_eq!(stats["scans_by_status"]["failed"], 1, "{who}: {stats}");
        agree(who, &stats, &app.metrics_text().await);
    }

    // The counts cannot be read: the gauges keep the last good counts and say how old they are.
    let good = a.stats().await;
    psql(&format!(
        "ALTER TABLE {}.scan_counts RENAME TO scan_counts_away",
        schema.name
    ));
    let failures = |text: &str| {
        sample(
            text,
            "certus_assurance_store_counts_read_failures_total",
            &[],
        )
        .unwrap()
    };
    let age = |text: &str| sample(text, "certus_assurance_store_counts_age_seconds", &[]).unwrap();
    wait_until(
        "a failed read to be counted",
        Duration::from_secs(20),
        || async { failures(&a.metrics_text().await) >= 1.0 },
    )
    .await;
    wait_until(
        "the counts' age to grow",
        Duration::from_secs(20),
        || async { age(&a.metrics_text().await) >= 1.0 },
    )
    .await;
    let stale = a.stats().await;
    assert_eq!(stale["scans_by_status"], good["scans_by_status"]);
    assert_eq!(stale["upload_stats"], good["upload_stats"]);
    psql(&format!(
        "ALTER TABLE {}.scan_counts_away RENAME TO scan_counts",
        schema.name
    ));
    wait_until("fresh counts again", Duration::from_secs(20), || async {
        age(&a.metrics_text().await) < 1.0
    })
    .await;
    agree("a", &a.stats().await, &a.metrics_text().await);
}

/// Three replicas share one queue: 300 scans submitted round-robin all finish exactly once, and
/// `/stats` on every replica equals the database's counts.
#[tokio::test]
async fn three_replicas_share_the_queue_and_run_each_scan_once() {
    let git = GitServer::start();
    git.create_repo("r", &[("a.txt", "hello\n")]);
    let schema = PgSchema::create();
    let artifacts = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for i in 0..3 {
        let url = schema.url();
        let shared = artifacts.path().to_path_buf();
        replicas.push(
            spawn_app_with(move |c| {
                c.store.database_url = Some(StoreLocation::Postgres(url));
                c.server.artifact_root = Some(shared);
                c.store.replica_id = Some(format!("replica-{i}"));
                c.queue.max_workers = 2;
                c.queue.max_queue = 1000;
                c.store.reconcile_interval = Duration::from_millis(500);
            })
            .await,
        );
    }
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(replicas[i % 3].submit_scan(scan_body(&git.url("r"))).await);
    }
    for id in &ids {
        let scan = replicas[0].wait_for_terminal(id).await;
        assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
        assert_eq!(scan["attempts"], 1, "run exactly once: {scan}");
    }
    let mut runs = 0.0;
    for app in &replicas {
        let text = app.metrics_text().await;
        runs += sample(
            &text,
            "certus_assurance_scanner_runs_total",
            &[("scanner", "secrets"), ("outcome", "success")],
        )
        .unwrap();
    }
    assert_eq!(
        runs, 300.0,
        "the scanners ran once per scan across the cluster"
    );
    let db = pg_counts(&schema);
    assert_eq!(db.get("succeeded"), Some(&300));
    for app in &replicas {
        wait_until("cluster gauges", Duration::from_secs(10), || async {
            let stats = app.stats().await;
            stats["scans_by_status"]["succeeded"] == 300 && stats["total_scans"] == 300
        })
        .await;
    }
}

/// The configuration of one replica of a test cluster: the schema's store, a shared artifact
/// root, `workers` workers, a lease of `lease` seconds and a reconcile pass every sixth of it.
fn replica(
    schema: &PgSchema,
    artifacts: &std::path::Path,
    workers: usize,
    id: &'static str,
    lease: f64,
) -> impl FnOnce(&mut certus_assurance::Config) {
    let url = schema.url();
    let shared = artifacts.to_path_buf();
    move |c: &mut certus_assurance::Config| {
        c.store.database_url = Some(StoreLocation::Postgres(url));
        c.server.artifact_root = Some(shared);
        c.store.replica_id = Some(id.to_string());
        c.queue.max_workers = workers;
        c.store.lease = Duration::from_secs_f64(lease);
        c.store.reconcile_interval = Duration::from_secs_f64(lease / 6.0);
    }
}

/// A scan submitted on one replica streams, and is cancelled, through another.
#[tokio::test]
async fn streams_and_cancellation_work_from_any_replica() {
    let git = GitServer::start();
    git.create_repo("r", &[("a.txt", "hello\n")]);
    let stall = StallingServer::start();
    let schema = PgSchema::create();
    let artifacts = tempfile::tempdir().unwrap();
    let mk = |workers, id| replica(&schema, artifacts.path(), workers, id, 3.0);
    let runner = spawn_app_with(mk(1, "runner")).await;
    let front = spawn_app_with(mk(0, "front")).await;

    let id = front.submit_scan(scan_body(&git.url("r"))).await;
    let (ws, _) =
        tokio_tungstenite::connect_async(front.ws_url(&format!("/v1/security-scans/{id}/stream")))
            .await
            .unwrap();
    let events = read_events(ws).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"phase"));
    assert_eq!(kinds.last(), Some(&"scan_complete"));
    assert_eq!(events.last().unwrap()["status"], "SUCCEEDED");

    let stalled = front.submit_scan(scan_body(&stall.url())).await;
    front
        .wait_for_state(&stalled, &["RUNNING"], Duration::from_secs(10))
        .await;
    let r = front
        .client
        .post(front.url(&format!("/v1/security-scans/{stalled}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let scan = front
        .wait_for_state(&stalled, &["FAILED"], Duration::from_secs(15))
        .await;
    assert_eq!(scan["failure_reason"], "cancelled", "{scan}");
    drop(runner);
}

/// A scan that times out while its clone hangs is recorded as `timeout` by the replica that ran
/// it, also with a lease not much longer than the time the worker gives the pipeline to stop:
/// the lease is renewed when the stop begins, so no other replica reclaims and re-runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_scan_is_recorded_before_its_lease_runs_out() {
    let stall = StallingServer::start();
    let schema = PgSchema::create();
    let artifacts = tempfile::tempdir().unwrap();
    // A lease of 3 s: the worker waits up to 3 s for the pipeline to stop after a timeout.
    let runner = spawn_app_with(replica(&schema, artifacts.path(), 1, "runner", 3.0)).await;
    let other = spawn_app_with(replica(&schema, artifacts.path(), 1, "other", 3.0)).await;
    let mut body = scan_body(&stall.url());
    body["timeout_seconds"] = json!(4);
    let id = runner.submit_scan(body).await;
    let scan = runner
        .wait_for_state(&id, &["FAILED", "SUCCEEDED"], Duration::from_secs(60))
        .await;
    assert_eq!(scan["failure_reason"], "timeout", "{scan}");
    assert_eq!(scan["attempts"], 1, "{scan}");
    drop(other);
}

async fn read_events(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Vec<Value> {
    use futures_util::StreamExt;
    let mut events = vec![];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("events in time")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                events.push(serde_json::from_str(&t).unwrap())
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None => return events,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{e}"),
        }
    }
}

/// kill -9 of a replica running a scan: once its lease expires another replica takes the scan
/// over, and every scan ends in a terminal state; `/stats` equals the database on the survivors.
#[tokio::test]
async fn a_killed_replica_loses_its_scans_to_the_others() {
    let git = GitServer::start();
    git.create_repo("r", &[("a.txt", "hello\n")]);
    let stall = StallingServer::start();
    let schema = PgSchema::create();
    let artifacts = tempfile::tempdir().unwrap();
    let env = |id: &str| {
        vec![
            ("CERTUS_ASSURANCE_DATABASE_URL".to_string(), schema.url()),
            (
                "CERTUS_ASSURANCE_ARTIFACT_ROOT".to_string(),
                artifacts.path().display().to_string(),
            ),
            ("CERTUS_ASSURANCE_REPLICA_ID".to_string(), id.to_string()),
            ("CERTUS_ASSURANCE_MAX_WORKERS".to_string(), "1".to_string()),
            (
                "CERTUS_ASSURANCE_LEASE_SECONDS".to_string(),
                "3".to_string(),
            ),
            (
                "CERTUS_ASSURANCE_RECONCILE_INTERVAL_SECONDS".to_string(),
                "1".to_string(),
            ),
        ]
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut procs: Vec<ServiceProcess> = (0..3)
        .map(|i| {
            let e = env(&format!("replica-{i}"));
            let refs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ServiceProcess::start(dirs[i].path(), &refs)
        })
        .collect();
    let client = reqwest::Client::new();
    // Three slow scans first (one per replica), then quick ones.
    let mut ids = Vec::new();
    for p in &procs {
        let mut body = scan_body(&stall.url());
        body["timeout_seconds"] = json!(6);
        ids.push(submit_at(&client, &p.address, &body).await);
    }
    // One worker per replica: three RUNNING slow scans means each replica holds one, so the
    // replica killed below is running a scan.
    for id in &ids {
        procs[0]
            .wait_for_state(id, &["RUNNING"], Duration::from_secs(30))
            .await;
    }
    for i in 0..12 {
        ids.push(submit_at(&client, &procs[i % 3].address, &scan_body(&git.url("r"))).await);
    }
    procs[0].kill9();
    let survivor = procs[1].address.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    for id in &ids {
        loop {
            let scan: Value = client
                .get(format!("{survivor}/v1/security-scans/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if scan["status"] == "SUCCEEDED" || scan["status"] == "FAILED" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "scan {id} never finished: {scan}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let out = std::process::Command::new("psql")
        .args([
            &server_url(),
            "-At",
            "-c",
            &format!("SELECT max(attempts) FROM {}.scans", schema.name),
        ])
        .output()
        .unwrap();
    let max_attempts: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        max_attempts >= 2,
        "the killed replica's scan ran again elsewhere"
    );
    let db = pg_counts(&schema);
    for p in &procs[1..] {
        let addr = p.address.clone();
        wait_until(
            "cluster gauges on a survivor",
            Duration::from_secs(10),
            || {
                let client = client.clone();
                let addr = addr.clone();
                let db = db.clone();
                async move {
                    let stats: Value = client
                        .get(format!("{addr}/stats"))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    ["queued", "running", "succeeded", "failed"]
                        .iter()
                        .all(|s| {
                            stats["scans_by_status"][s].as_i64().unwrap()
                                == db.get(*s).copied().unwrap_or(0)
                        })
                }
            },
        )
        .await;
    }
}

/// Credentials in a git_url live only in the memory of the replica that accepted the scan: other
/// replicas leave such a scan to it while it is alive, and fail it with a clear message (instead
/// of leaving it queued forever) once it has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_with_url_credentials_stay_with_the_replica_that_holds_them() {
    let git = GitServer::start();
    git.create_repo("r", &[("a.txt", "hello\n")]);
    let schema = PgSchema::create();
    let artifacts = tempfile::tempdir().unwrap();
    let mk = |workers, id| replica(&schema, artifacts.path(), workers, id, 2.0);
    let mut front = spawn_app_with(mk(0, "front")).await;
    let runner = spawn_app_with(mk(1, "runner")).await;

    let secret_url = git.url("r").replacen("://", "://deploy:s3cr3t-t0ken@", 1);
    let pinned = front.submit_scan(scan_body(&secret_url)).await;
    let plain = front.submit_scan(scan_body(&git.url("r"))).await;
    // The runner takes the later, plain scan and leaves the earlier, pinned one alone.
    let done = runner.wait_for_terminal(&plain).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = runner.scan(&pinned).await;
    assert_eq!(waiting["status"], "QUEUED", "{waiting}");
    assert!(!waiting.to_string().contains("s3cr3t"), "{waiting}");

    // The accepting replica stops: once its liveness runs out, the runner fails the scan.
    front.stop().await;
    let failed = runner
        .wait_for_state(&pinned, &["FAILED"], Duration::from_secs(30))
        .await;
    assert_eq!(failed["failure_reason"], "clone_failed", "{failed}");
    let errors = failed["errors"].to_string();
    assert!(
        errors.contains("replica that accepted the scan"),
        "{errors}"
    );
    assert!(!failed.to_string().contains("s3cr3t"), "{failed}");
}
