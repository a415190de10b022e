//! Cluster telemetry: three replicas of the real binary on one PostgreSQL database, with scans
//! and uploads (a real S3 server and the Trust stand-in) moving, one replica killed mid-run and
//! replicas restarted on the populated store. While work moves, every sample of each replica's
//! `/stats` and `/metrics` status gauges and of a `GROUP BY` on the database is never negative
//! and accounts for every stored scan; whenever the store is quiet, all of them agree on every
//! scan and upload status.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certus_assurance::jobs::counts::COUNTS_MAX_AGE;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::postgres::{pg_status_counts_in, server_url, PgSchema};
use crate::upload_helpers::*;

const TRUST_TOKEN: &str = "trust-test-token";
const SCAN_STATUSES: [&str; 4] = ["queued", "running", "succeeded", "failed"];
const UPLOAD_STATUSES: [&str; 5] = ["pending", "permitted", "uploaded", "denied", "failed"];

/// What the sampler checks while work moves.
#[derive(Default)]
struct Samples {
    /// Samples taken (one per replica answer and one per database read).
    taken: AtomicUsize,
    /// Everything found wrong, with the sample it was found in.
    problems: Mutex<Vec<String>>,
    /// Scans stored once every submission so far was answered, and since when; `None` while
    /// submissions are under way.
    settled: Mutex<Option<(i64, Instant)>>,
    /// Replica addresses to sample (a replica leaves the list before it is stopped).
    live: Mutex<Vec<String>>,
}

impl Samples {
    fn problem(&self, p: String) {
        self.problems.lock().unwrap().push(p);
    }

    /// The total every sample must show: the settled count, once every replica's read is
    /// younger than the last submission.
    fn expected_total(&self, started: Instant) -> Option<i64> {
        self.settled
            .lock()
            .unwrap()
            .filter(|(_, at)| started >= *at + COUNTS_MAX_AGE)
            .map(|(n, _)| n)
    }

    fn set_live(&self, live: Vec<String>) {
        *self.live.lock().unwrap() = live;
    }

    /// Checks one set of counts: none negative, scans and uploads both account for every
    /// stored scan, and (once settled) for exactly the scans submitted.
    fn check(&self, who: &str, scans: &[i64], uploads: &[i64], expected: Option<i64>) {
        self.taken.fetch_add(1, Ordering::SeqCst);
        if scans.iter().chain(uploads).any(|n| *n < 0) {
            self.problem(format!("{who}: a negative count: {scans:?} {uploads:?}"));
        }
        let (s, u) = (scans.iter().sum::<i64>(), uploads.iter().sum::<i64>());
        if s != u {
            self.problem(format!(
                "{who}: {s} scans by status but {u} by upload status: {scans:?} {uploads:?}"
            ));
        }
        if let Some(n) = expected.filter(|n| *n != s) {
            self.problem(format!(
                "{who}: {s} scans counted, {n} stored: {scans:?} {uploads:?}"
            ));
        }
    }
}

fn by_label(text: &str, metric: &str, statuses: &[&str]) -> Option<Vec<i64>> {
    statuses
        .iter()
        .map(|s| sample(text, metric, &[("status", s)]).map(|v| v as i64))
        .collect()
}

fn from_json(v: &Value, statuses: &[&str]) -> Option<Vec<i64>> {
    statuses.iter().map(|s| v[s].as_i64()).collect()
}

fn in_order(map: &HashMap<String, i64>, statuses: &[&str]) -> Vec<i64> {
    statuses
        .iter()
        .map(|s| map.get(*s).copied().unwrap_or(0))
        .collect()
}

/// Samples the database and every live replica until `stop`.
async fn sampler(samples: Arc<Samples>, schema: String, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let settled = *samples.settled.lock().unwrap();
        // (who, scans by status, uploads by status) of this round.
        let mut round: Vec<(String, Vec<i64>, Vec<i64>)> = Vec::new();
        let schema = schema.clone();
        match tokio::task::spawn_blocking(move || pg_status_counts_in(&schema)).await {
            Ok((scans, uploads)) => round.push((
                "database".into(),
                in_order(&scans, &SCAN_STATUSES),
                in_order(&uploads, &UPLOAD_STATUSES),
            )),
            Err(err) => samples.problem(format!("reading the database: {err}")),
        }
        let live = samples.live.lock().unwrap().clone();
        for addr in live {
            // A replica being stopped may not answer: only answers are checked.
            if let Ok(r) = client.get(format!("{addr}/stats")).send().await {
                if let Ok(stats) = r.json::<Value>().await {
                    match (
                        from_json(&stats["scans_by_status"], &SCAN_STATUSES),
                        from_json(&stats["upload_stats"], &UPLOAD_STATUSES),
                    ) {
                        (Some(scans), Some(uploads)) => {
                            if stats["total_scans"].as_i64() != Some(scans.iter().sum()) {
                                samples.problem(format!("{addr} /stats total: {stats}"));
                            }
                            round.push((format!("{addr} /stats"), scans, uploads));
                        }
                        _ => samples.problem(format!("{addr} /stats shape: {stats}")),
                    }
                }
            }
            if let Ok(r) = client.get(format!("{addr}/metrics")).send().await {
                if let Ok(text) = r.text().await {
                    match (
                        by_label(&text, "certus_assurance_scans", &SCAN_STATUSES),
                        by_label(&text, "certus_assurance_uploads", &UPLOAD_STATUSES),
                    ) {
                        (Some(scans), Some(uploads)) => {
                            round.push((format!("{addr} /metrics"), scans, uploads))
                        }
                        _ => samples.problem(format!("{addr} /metrics lacks a status gauge")),
                    }
                }
            }
        }
        // The stored total is known only when no submission started during the round.
        let expected = if *samples.settled.lock().unwrap() == settled {
            samples.expected_total(started)
        } else {
            None
        };
        for (who, scans, uploads) in &round {
            samples.check(who, scans, uploads, expected);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one number a query answers.
fn psql_number(sql: &str) -> i64 {
    let out = std::process::Command::new("psql")
        .args([&server_url(), "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs (Debian postgresql-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{sql}: {text} {}", String::from_utf8_lossy(&out.stderr)))
}

/// Stops the sampler when dropped, also when the test fails (before the schema goes).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One replica process of the test cluster and what it needs to start again.
struct Replica {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    process: Option<ServiceProcess>,
}

impl Replica {
    fn start(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.process = Some(ServiceProcess::start(self.dir.path(), &env));
    }

    fn address(&self) -> String {
        self.process.as_ref().expect("replica runs").address.clone()
    }
}

struct Cluster {
    client: reqwest::Client,
    replicas: Vec<Replica>,
    samples: Arc<Samples>,
    schema_name: String,
}

impl Cluster {
    fn live(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter(|r| r.process.is_some())
            .map(Replica::address)
            .collect()
    }

    fn update_live(&self) {
        self.samples.set_live(self.live());
    }

    async fn submit(&self, replica: usize, body: Value) -> String {
        submit_at(&self.client, &self.replicas[replica].address(), &body).await
    }

    async fn scan(&self, replica: usize, id: &str) -> Value {
        let addr = self.replicas[replica].address();
        get_json_at(&self.client, &format!("{addr}/v1/security-scans/{id}")).await
    }

    async fn wait_for(&self, replica: usize, id: &str, what: &str, done: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let scan = self.scan(replica, id).await;
            if done(&scan) {
                return;
            }
            assert!(Instant::now() < deadline, "scan {id} never {what}: {scan}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks for the upload of a scan once it succeeded (through `replica`); a failed scan is
    /// left `pending`.
    async fn upload_when_done(&self, replica: usize, id: &str, expect: u16) {
        self.wait_for(replica, id, "finished", |s| {
            s["status"] == "SUCCEEDED" || s["status"] == "FAILED"
        })
        .await;
        if self.scan(replica, id).await["status"] != "SUCCEEDED" {
            return;
        }
        let r = self
            .client
            .post(format!(
                "{}/v1/security-scans/{id}/upload-request",
                self.replicas[replica].address()
            ))
            .json(&json!({"tier": "basic"}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(status, expect, "upload-request of {id}: {body}");
    }

    /// Scans queued, running or with an upload in flight, from the database.
    fn moving(&self) -> i64 {
        psql_number(&format!(
            "SELECT count(*) FROM {}.scans WHERE lower(status) IN ('queued', 'running') \
             OR upload_started_at IS NOT NULL",
            self.schema_name
        ))
    }

    /// Waits until nothing moves, then asserts that every live replica's `/stats` and
    /// `/metrics` and the database agree on every scan and upload status; returns the counts.
    async fn assert_quiet_agreement(
        &self,
        checkpoint: &str,
    ) -> (HashMap<String, i64>, HashMap<String, i64>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.moving() > 0 {
            assert!(
                Instant::now() < deadline,
                "{checkpoint}: work never stopped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("{checkpoint}: quiet");
        // Every replica's next read is younger than the last change.
        tokio::time::sleep(COUNTS_MAX_AGE).await;
        let db = pg_status_counts_in(&self.schema_name);
        for addr in self.live() {
            let stats = get_json_at(&self.client, &format!("{addr}/stats")).await;
            let text = metrics_text_at(&self.client, &addr).await;
            eprintln!("{checkpoint}: {addr} {stats} vs the database {db:?}");
            assert_counts_agree_with(&stats, &text, &db);
        }
        assert_eq!(
            db,
            pg_status_counts_in(&self.schema_name),
            "{checkpoint}: the store moved"
        );
        db
    }
}

/// Three replicas, 24 scans and their uploads: a replica killed mid-run (its scan reclaimed), a
/// replica restarted on the populated store, another stopped with SIGTERM and started again.
/// Sampled all along; compared exactly whenever the store is quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_and_the_database_agree_on_the_cluster_counts() {
    let t0 = Instant::now();
    let moto = MotoServer::start();
    let s3 = S3::new(&moto.endpoint());
    s3.create_bucket("raw").await;
    s3.create_bucket("golden").await;
    s3.create_bucket(crate::artifact_store::BUCKET).await;
    let trust = TrustStandIn::start(TrustMode::Permit).await;
    // Uploads stay in flight a little while, so samples see them there.
    trust.set_delay(Duration::from_millis(150));
    let git = GitServer::start();
    git.create_repo("r", &[("a.txt", "hello\n")]);
    let stall = StallingServer::start();
    let schema = PgSchema::create();
    let endpoint = moto.endpoint();
    // No shared directory: each replica has its own data directory (and artifact root), and
    // bundles go through the S3 artifact store.
    let env = |id: usize| -> Vec<(String, String)> {
        [
            ("CERTUS_ASSURANCE_DATABASE_URL", schema.url()),
            ("CERTUS_ASSURANCE_ARTIFACT_STORE", "s3".into()),
            (
                "CERTUS_ASSURANCE_ARTIFACT_BUCKET",
                crate::artifact_store::BUCKET.into(),
            ),
            ("CERTUS_ASSURANCE_REPLICA_ID", format!("replica-{id}")),
            ("CERTUS_ASSURANCE_MAX_WORKERS", "1".into()),
            // The killed replica's scan is reclaimed within seconds.
            ("CERTUS_ASSURANCE_LEASE_SECONDS", "6".into()),
            ("CERTUS_ASSURANCE_RECONCILE_INTERVAL_SECONDS", "1".into()),
            ("CERTUS_ASSURANCE_ENABLE_S3_UPLOAD", "true".into()),
            ("CERTUS_ASSURANCE_TRUST_BASE_URL", trust.url.clone()),
            ("CERTUS_ASSURANCE_TRUST_TOKEN", TRUST_TOKEN.into()),
            ("CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS", "5".into()),
            ("CERTUS_ASSURANCE_S3_ENDPOINT_URL", endpoint.clone()),
            ("CERTUS_ASSURANCE_S3_ACCESS_KEY_ID", "testing".into()),
            ("CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY", "testing".into()),
            ("CERTUS_ASSURANCE_S3_TIMEOUT_SECONDS", "20".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let samples = Arc::new(Samples::default());
    let mut cluster = Cluster {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        replicas: (0..3)
            .map(|i| Replica {
                dir: tempfile::tempdir().unwrap(),
                env: env(i),
                process: None,
            })
            .collect(),
        samples: samples.clone(),
        schema_name: schema.name.clone(),
    };
    for r in &mut cluster.replicas {
        r.start();
    }
    eprintln!("{:?}: replicas started", t0.elapsed());
    cluster.update_live();
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let sampling = tokio::spawn(sampler(
        samples.clone(),
        schema.name.clone(),
        stop.0.clone(),
    ));

    // Phase 1: one slow scan per replica (each replica has one worker, so each runs one), then
    // quick scans on every replica; replica 0 is killed while it runs its slow scan.
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut body = scan_body(&stall.url());
        body["timeout_seconds"] = json!(4);
        ids.push(cluster.submit(i, body).await);
    }
    for id in &ids {
        cluster
            .wait_for(1, id, "running", |s| s["status"] == "RUNNING")
            .await;
    }
    for i in 0..15 {
        ids.push(cluster.submit(i % 3, scan_body(&git.url("r"))).await);
    }
    *samples.settled.lock().unwrap() = Some((ids.len() as i64, Instant::now()));
    let mut killed = cluster.replicas[0].process.take().unwrap();
    cluster.update_live();
    killed.kill9();
    eprintln!("{:?}: replica 0 killed", t0.elapsed());
    // Uploads of the scans as they succeed, through the survivors, while the rest still run.
    // The quick scans first: the slow ones end last (one only after its reclaim and re-run).
    for (n, id) in ids[3..].iter().chain(&ids[..3]).enumerate() {
        cluster.upload_when_done(1 + n % 2, id, 202).await;
    }
    cluster.assert_quiet_agreement("after the kill").await;
    eprintln!("{:?}: phase 1 done", t0.elapsed());

    // Phase 2: replica 0 starts again on the populated store and agrees at once.
    cluster.replicas[0].start();
    cluster.update_live();
    cluster
        .assert_quiet_agreement("after the restart of the killed replica")
        .await;

    // Phase 3: more scans; replica 1 stops with SIGTERM while they run and starts again.
    // Every other upload is denied.
    *samples.settled.lock().unwrap() = None;
    let mut more = Vec::new();
    for i in 0..6 {
        more.push(cluster.submit(i % 3, scan_body(&git.url("r"))).await);
    }
    *samples.settled.lock().unwrap() = Some(((ids.len() + more.len()) as i64, Instant::now()));
    let mut stopped = cluster.replicas[1].process.take().unwrap();
    cluster.update_live();
    let status = stopped.terminate();
    assert!(
        status.success(),
        "SIGTERM ends the replica cleanly: {status}"
    );
    eprintln!("{:?}: replica 1 stopped", t0.elapsed());
    for (n, id) in more.iter().enumerate() {
        let deny = n % 2 == 1;
        trust.set_mode(if deny {
            TrustMode::Deny("policy refused".into())
        } else {
            TrustMode::Permit
        });
        let through = if n % 2 == 0 { 0 } else { 2 };
        cluster
            .upload_when_done(through, id, if deny { 403 } else { 202 })
            .await;
    }
    cluster.replicas[1].start();
    cluster.update_live();
    let (scans, uploads) = cluster
        .assert_quiet_agreement("after a SIGTERM and a start")
        .await;

    drop(stop);
    sampling.await.unwrap();
    let problems = samples.problems.lock().unwrap().clone();
    assert!(
        problems.is_empty(),
        "{} of {} samples were wrong; the first: {:#?}",
        problems.len(),
        samples.taken.load(Ordering::SeqCst),
        &problems[..problems.len().min(10)]
    );
    assert!(
        samples.taken.load(Ordering::SeqCst) >= 50,
        "too few samples to say anything"
    );
    // The run covered what it claims: reclaimed work, uploads both ways, failed scans.
    let total = (ids.len() + more.len()) as i64;
    assert_eq!(scans.values().sum::<i64>(), total);
    assert_eq!(scans.get("failed"), Some(&3), "{scans:?}");
    let uploaded = (ids.len() - 3 + more.len() / 2) as i64;
    assert_eq!(uploads.get("uploaded"), Some(&uploaded), "{uploads:?}");
    assert_eq!(
        uploads.get("denied"),
        Some(&(more.len() as i64 / 2)),
        "{uploads:?}"
    );
    let max_attempts = psql_number(&format!("SELECT max(attempts) FROM {}.scans", schema.name));
    assert!(
        max_attempts >= 2,
        "the killed replica's scan ran again elsewhere"
    );
    // Every bundle, the reclaimed scan's included, is whole in the artifact store.
    for id in ids.iter().chain(&more) {
        let scan = cluster.scan(0, id).await;
        crate::artifact_store::assert_bundle_complete(&s3, &scan).await;
    }
}
