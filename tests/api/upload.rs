//! The upload workflow against a real S3 server (moto) and a Trust stand-in: permission first,
//! then raw and golden buckets; fail closed on every Trust failure; observable in `/stats` and
//! `/metrics`; recoverable after an S3 outage; refusing files changed after permission.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use certus_assurance::config::Config;
use certus_assurance::pipeline::scanners::{ScanContext, Scanner, ScannerOutput};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;
use crate::upload_helpers::*;

const TRUST_TOKEN: &str = "trust-test-token";
const RAW: &str = "raw";
const GOLDEN: &str = "golden";
const RAW_PREFIX: &str = "security-scans";
const GOLDEN_PREFIX: &str = "promoted";
const THRESHOLD: u64 = 5 * 1024 * 1024;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Turns uploads on against `trust_url` and the S3 endpoint, with this file's prefixes and
/// multipart threshold.
fn enable_uploads(c: &mut Config, trust_url: &str, s3_endpoint: &str) {
    enable_uploads_with(c, trust_url, TRUST_TOKEN, s3_endpoint);
    let u = &mut c.upload;
    u.raw_prefix = RAW_PREFIX.into();
    u.golden_prefix = GOLDEN_PREFIX.into();
    u.multipart_threshold = THRESHOLD;
}

/// A scanner that writes a SARIF report larger than the multipart threshold.
struct LargeReportScanner;

impl Scanner for LargeReportScanner {
    fn name(&self) -> &'static str {
        "secrets"
    }
    fn run(&self, _ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput> {
        // About 12 MiB: three parts at the 5 MiB threshold.
        let results: Vec<Value> = (0..2_800)
            .map(|i| {
                let detail: String = (0..150).map(|j| format!("{:x}", (i * 31 + j) % 4099)).collect::<Vec<_>>().join("-");
                json!({
                    "ruleId": "synthetic-note",
                    "level": "note",
                    "message": {"text": format!("synthetic result {i} of a report larger than one S3 part: {detail} {detail} {detail} {detail} {detail} {detail}")},
                    "locations": [{"physicalLocation": {"artifactLocation": {"uri": format!("src/file{}.txt", i % 97)}, "region": {"startLine": i % 500 + 1}}}],
                })
            })
            .collect();
        Ok(ScannerOutput {
            findings: vec![],
            sarif: json!({
                "version": "2.1.0",
                "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
                "runs": [{"tool": {"driver": {"name": "synthetic"}}, "results": results}],
            }),
            files_scanned: 1,
            bytes_scanned: 1,
        })
    }
}

/// Everything an upload test runs against.
struct Env {
    app: TestApp,
    /// Looks into S3 directly (not through a proxy the app may use).
    s3: S3,
    trust: TrustStandIn,
    git: GitServer,
    _moto: MotoServer,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(large: bool, tweak: impl FnOnce(&mut Config)) -> Env {
        Env::start_with(MotoServer::start(), large, tweak).await
    }

    /// With a given S3 server (the app's endpoint may be changed by `tweak`).
    async fn start_with(moto: MotoServer, large: bool, tweak: impl FnOnce(&mut Config)) -> Env {
        let s3 = S3::new(&moto.endpoint());
        s3.create_bucket(RAW).await;
        s3.create_bucket(GOLDEN).await;
        let trust = TrustStandIn::start(TrustMode::Permit).await;
        let git = GitServer::start();
        git.create_repo(
            "demo",
            &[
                (
                    "config.py",
                    &format!("AWS_KEY = \"{}\"\n", planted_aws_key()),
                ),
                ("README.md", "# demo\n"),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        enable_uploads(&mut config, &trust.url, &moto.endpoint());
        tweak(&mut config);
        let scanners: Option<Vec<Arc<dyn Scanner>>> = if large {
            Some(vec![Arc::new(LargeReportScanner)])
        } else {
            None
        };
        let app = start(config, scanners).await;
        Env {
            app,
            s3,
            trust,
            git,
            _moto: moto,
            _dir: dir,
        }
    }

    /// Submits a scan of the demo repository and waits until it SUCCEEDED.
    async fn succeeded_scan(&self) -> String {
        let id = self.app.submit_scan(scan_body(&self.git.url("demo"))).await;
        let scan = self.app.wait_for_terminal(&id).await;
        assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
        id
    }
}

async fn request_upload(app: &TestApp, id: &str, body: Value) -> (u16, Value) {
    let response = app
        .post_json(&format!("/v1/security-scans/{id}/upload-request"), &body)
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

/// Polls the scan until its upload status is one of `states`.
async fn wait_for_upload(app: &TestApp, id: &str, states: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scan = app.scan(id).await;
        if states.iter().any(|s| scan["upload_status"] == *s) && scan["upload_in_progress"] == false
        {
            return scan;
        }
        assert!(
            Instant::now() < deadline,
            "upload of {id} did not reach {states:?}: {scan}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, &format!("certus_assurance_{name}"), labels)
        .unwrap_or_else(|| panic!("{name}{labels:?} missing"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The bundle's files (as the scan lists them) with their bytes.
fn bundle(app: &TestApp, scan: &Value) -> BTreeMap<String, Vec<u8>> {
    let dir = app.artifact_dir(scan["test_id"].as_str().unwrap());
    scan["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f.as_str().unwrap().to_string();
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Asserts both buckets hold exactly the bundle under the scan's keys, with the right bytes and
/// metadata, and no multipart upload is left.
async fn assert_bucket_contents(
    env: &Env,
    id: &str,
    files: &BTreeMap<String, Vec<u8>>,
    permission_id: &str,
) {
    assert_buckets_hold(&env.app, &env.s3, id, files, permission_id).await;
}

async fn assert_buckets_hold(
    app: &TestApp,
    s3: &S3,
    id: &str,
    files: &BTreeMap<String, Vec<u8>>,
    permission_id: &str,
) {
    let scan = app.scan(id).await;
    for (bucket, dir) in [
        (RAW, format!("{RAW_PREFIX}/{id}/incoming/")),
        (GOLDEN, format!("{GOLDEN_PREFIX}/{id}/golden/")),
    ] {
        let objects = s3.objects(bucket).await;
        let expected: Vec<(String, u64)> = files
            .iter()
            .map(|(name, bytes)| (format!("{dir}{name}"), bytes.len() as u64))
            .collect();
        assert_eq!(objects, expected, "objects in {bucket}");
        for (name, bytes) in files {
            let key = format!("{dir}{name}");
            let stored = s3.get(bucket, &key).await;
            assert_eq!(
                sha256_hex(&stored),
                sha256_hex(bytes),
                "bytes of {bucket}/{key}"
            );
            let (meta, _) = s3.head(bucket, &key).await;
            assert_eq!(
                meta["sha256"],
                sha256_hex(bytes),
                "sha256 metadata of {key}"
            );
            assert_eq!(meta["test_id"], id);
            assert_eq!(meta["workspace_id"], "test");
            assert_eq!(meta["component_id"], "c");
            assert_eq!(meta["assessment_id"], "a");
            assert_eq!(
                meta["manifest_digest"],
                scan["manifest_digest"].as_str().unwrap()
            );
            assert_eq!(meta["upload_permission_id"], permission_id);
            let remote_key = if bucket == RAW { "raw" } else { "golden" };
            assert_eq!(
                scan["remote_artifacts"][remote_key][name],
                format!("s3://{bucket}/{key}"),
                "remote_artifacts.{remote_key}.{name}"
            );
        }
        assert!(
            s3.multipart_uploads(bucket).await.is_empty(),
            "incomplete multipart uploads left in {bucket}"
        );
    }
}

async fn assert_s3_empty(env: &Env) {
    for bucket in [RAW, GOLDEN] {
        assert_eq!(env.s3.objects(bucket).await, vec![], "objects in {bucket}");
        assert!(env.s3.multipart_uploads(bucket).await.is_empty());
    }
}

/// An ed25519 key made as an operator would (`openssl genpkey`); returns its path and the raw
/// 32-byte public key (the end of the DER SubjectPublicKeyInfo).
fn signing_key(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("signing-key.pem");
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path)
        .status()
        .expect("openssl runs");
    assert!(made.success());
    let spki = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&path)
        .output()
        .expect("openssl runs");
    assert!(spki.status.success());
    let public = spki.stdout[spki.stdout.len() - 32..].to_vec();
    (path, public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permitted_upload_puts_every_declared_file_in_raw_and_golden() {
    let keys = tempfile::tempdir().unwrap();
    let (key_path, public_key) = signing_key(keys.path());
    let env = Env::start(false, |c| {
        c.upload.signing_key_file = Some(key_path.clone())
    })
    .await;
    let id = env.succeeded_scan().await;
    let scan = env.app.scan(&id).await;
    assert_eq!(scan["upload_status"], "pending");
    let files = bundle(&env.app, &scan);
    let before = env.app.metrics_text().await;
    let stats_before = env.app.stats().await;

    let (status, answer) = request_upload(
        &env.app,
        &id,
        json!({"tier": "verified", "signer": "ci@example.com"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["upload_status"], "permitted");
    assert_eq!(answer["upload_permission_id"], "perm-1");
    assert_eq!(answer["verification_proof"]["chain_verified"], true);

    // The Trust request: each file once with its digest and size, the provenance, a signature
    // that verifies, the bearer token.
    let requests = env.trust.requests();
    assert_eq!(requests.len(), 1);
    let (auth, request) = &requests[0];
    assert_eq!(
        auth.as_deref(),
        Some(format!("Bearer {TRUST_TOKEN}").as_str())
    );
    assert_eq!(request["scan_id"], id);
    assert_eq!(request["tier"], "verified");
    let declared: BTreeMap<String, (String, u64)> = request["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                (
                    a["hash"].as_str().unwrap().to_string(),
                    a["size"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        declared.len(),
        request["artifacts"].as_array().unwrap().len(),
        "each file once"
    );
    let expected: BTreeMap<String, (String, u64)> = files
        .iter()
        .map(|(n, b)| {
            (
                n.clone(),
                (format!("sha256:{}", sha256_hex(b)), b.len() as u64),
            )
        })
        .collect();
    assert_eq!(declared, expected);
    assert!(declared.contains_key("reports/sast/secrets.sarif.json"));
    assert_eq!(request["metadata"]["git_url"], env.git.url("demo"));
    assert_eq!(request["metadata"]["branch"], "main");
    assert_eq!(request["metadata"]["commit"], scan["resolved_commit"]);
    assert_eq!(
        request["storage_destinations"]["raw_s3"],
        format!("s3://{RAW}/{RAW_PREFIX}/{id}/incoming/")
    );
    let signature = &request["inner_signature"];
    assert_eq!(signature["signer"], "ci@example.com");
    assert_eq!(signature["algorithm"], "ed25519");
    assert_eq!(signature["certificate"], B64.encode(&public_key));
    let canonical: String = expected
        .iter()
        .map(|(name, (hash, _))| format!("{hash}  {name}\n"))
        .collect();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public_key)
        .verify(
            canonical.as_bytes(),
            &B64.decode(signature["signature"].as_str().unwrap())
                .unwrap(),
        )
        .expect("the inner signature verifies over the canonical digest list");

    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    assert_eq!(scan["upload_permission_id"], "perm-1");
    assert_eq!(scan["upload_progress"]["files_uploaded"], files.len());
    assert_eq!(scan["upload_progress"]["files_promoted"], files.len());
    assert_eq!(scan["upload_progress"]["phase"], "done");
    assert_bucket_contents(&env, &id, &files, "perm-1").await;

    // Stats and metrics moved by exactly one.
    let after = env.app.metrics_text().await;
    let stats = assert_stats_match_metrics_and_store(&env.app).await;
    assert_eq!(
        stats["upload_stats"]["uploaded"],
        stats_before["upload_stats"]["uploaded"].as_i64().unwrap() + 1
    );
    assert_eq!(
        stats["upload_stats"]["pending"],
        stats_before["upload_stats"]["pending"].as_i64().unwrap() - 1
    );
    assert_eq!(stats["upload_stats"]["permitted"], 0);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(
        moved(
            "upload_transitions_total",
            &[("from", "pending"), ("to", "permitted")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "upload_transitions_total",
            &[("from", "permitted"), ("to", "uploaded")]
        ),
        1.0
    );
    assert_eq!(moved("uploads", &[("status", "uploaded")]), 1.0);
    assert_eq!(
        moved("trust_requests_total", &[("outcome", "permitted")]),
        1.0
    );
    let total_bytes: usize = files.values().map(Vec::len).sum();
    assert_eq!(moved("s3_uploaded_bytes_total", &[]), total_bytes as f64);
    assert_eq!(
        moved(
            "s3_requests_total",
            &[("operation", "put_object"), ("outcome", "success")]
        ),
        files.len() as f64
    );
    assert_eq!(
        moved(
            "s3_requests_total",
            &[("operation", "copy_object"), ("outcome", "success")]
        ),
        files.len() as f64
    );
    assert_eq!(
        moved(
            "s3_requests_total",
            &[("operation", "put_object"), ("outcome", "error")]
        ),
        0.0
    );

    // Asking again answers the existing result and asks Trust nothing.
    let (status, again) = request_upload(&env.app, &id, json!({"tier": "basic"})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["upload_status"], "uploaded");
    assert_eq!(again["remote_artifacts"], scan["remote_artifacts"]);
    assert_eq!(env.trust.requests().len(), 1);

    // The counts survive a restart.
    let app = env.app.restart_with(|_| {}).await;
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["upload_stats"]["uploaded"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_upload_puts_nothing_in_s3() {
    let env = Env::start(false, |_| {}).await;
    env.trust
        .set_mode(TrustMode::Deny("critical findings exceed policy".into()));
    let id = env.succeeded_scan().await;
    let before = env.app.metrics_text().await;

    let (status, answer) = request_upload(&env.app, &id, json!({"tier": "basic"})).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("critical findings exceed policy"),
        "{answer}"
    );
    let scan = env.app.scan(&id).await;
    assert_eq!(scan["upload_status"], "denied");
    assert_eq!(scan["upload_permission_id"], Value::Null);
    assert!(scan["upload_reason"]
        .as_str()
        .unwrap()
        .contains("critical findings exceed policy"));
    assert_s3_empty(&env).await;

    let after = env.app.metrics_text().await;
    let stats = assert_stats_match_metrics_and_store(&env.app).await;
    assert_eq!(stats["upload_stats"]["denied"], 1);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(
        moved(
            "upload_transitions_total",
            &[("from", "pending"), ("to", "denied")]
        ),
        1.0
    );
    assert_eq!(moved("trust_requests_total", &[("outcome", "denied")]), 1.0);
    assert_eq!(moved("s3_uploaded_bytes_total", &[]), 0.0);

    // A denial is final.
    env.trust.set_mode(TrustMode::Permit);
    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(env.trust.requests().len(), 1);
    assert_s3_empty(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_errors_garbage_and_timeouts_fail_closed() {
    let env = Env::start(false, |_| {}).await;
    let mut ids = Vec::new();
    let cases = [
        (TrustMode::ServerError, 502, "error", "HTTP 500"),
        (
            TrustMode::Garbage,
            502,
            "invalid_response",
            "not a valid permit",
        ),
        (TrustMode::Hang, 504, "timeout", "did not answer"),
    ];
    for (mode, code, outcome, reason) in cases {
        env.trust.set_mode(mode.clone());
        let id = env.succeeded_scan().await;
        ids.push(id.clone());
        let before = env.app.metrics_text().await;
        let (status, answer) = request_upload(&env.app, &id, json!({"tier": "basic"})).await;
        assert_eq!(status, code, "{mode:?}: {answer}");
        let scan = env.app.scan(&id).await;
        assert_eq!(scan["upload_status"], "failed", "{mode:?}");
        assert!(
            scan["upload_reason"].as_str().unwrap().contains(reason),
            "{mode:?}: {scan}"
        );
        assert_eq!(scan["upload_in_progress"], false);
        let after = env.app.metrics_text().await;
        let moved = |name: &str, labels: &[(&str, &str)]| {
            metric(&after, name, labels) - metric(&before, name, labels)
        };
        assert_eq!(
            moved("trust_requests_total", &[("outcome", outcome)]),
            1.0,
            "{mode:?}"
        );
        assert_eq!(
            moved(
                "upload_transitions_total",
                &[("from", "pending"), ("to", "failed")]
            ),
            1.0
        );
        assert_s3_empty(&env).await;
    }
    let stats = assert_stats_match_metrics_and_store(&env.app).await;
    assert_eq!(stats["upload_stats"]["failed"], 3);
    assert_eq!(stats["upload_stats"]["uploaded"], 0);

    // A failed upload may be requested again; Trust now permits.
    env.trust.set_mode(TrustMode::Permit);
    let id = ids[0].clone();
    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    assert_eq!(scan["upload_reason"], Value::Null);
    let text = env.app.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "upload_transitions_total",
            &[("from", "failed"), ("to", "permitted")]
        ),
        1.0
    );
    assert_stats_match_metrics_and_store(&env.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_trust_fails_closed() {
    let moto = MotoServer::start();
    let s3 = S3::new(&moto.endpoint());
    s3.create_bucket(RAW).await;
    s3.create_bucket(GOLDEN).await;
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "# demo\n")]);
    let down = format!("http://127.0.0.1:{}", free_port());
    let app = spawn_app_with(|c| enable_uploads(c, &down, &moto.endpoint())).await;
    let id = app.submit_scan(scan_body(&git.url("demo"))).await;
    assert_eq!(app.wait_for_terminal(&id).await["status"], "SUCCEEDED");

    let (status, answer) = request_upload(&app, &id, json!({"tier": "basic"})).await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{answer}"
    );
    let scan = app.scan(&id).await;
    assert_eq!(scan["upload_status"], "failed");
    let text = app.metrics_text().await;
    assert_eq!(
        metric(&text, "trust_requests_total", &[("outcome", "unreachable")]),
        1.0
    );
    for bucket in [RAW, GOLDEN] {
        assert!(s3.objects(bucket).await.is_empty());
    }
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["upload_stats"]["failed"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_mid_upload_fails_and_a_new_request_completes_without_leftovers() {
    let moto = MotoServer::start();
    let proxy = S3Proxy::start(moto.port).await;
    let endpoint = proxy.endpoint();
    let env = Env::start_with(moto, true, move |c| {
        c.upload.s3_endpoint_url = Some(endpoint)
    })
    .await;
    let id = env.succeeded_scan().await;
    let scan = env.app.scan(&id).await;
    let files = bundle(&env.app, &scan);
    let sarif = &files["reports/sast/secrets.sarif.json"];
    assert!(
        sarif.len() as u64 > 2 * THRESHOLD,
        "report of {} bytes",
        sarif.len()
    );

    // S3 stops once 7 MiB went up: in the middle of a large report's second part.
    proxy.cut_after(7 * 1024 * 1024);
    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "failed", "{scan}");
    assert!(proxy.is_down());
    let reason = scan["upload_reason"].as_str().unwrap();
    assert!(
        reason.contains("S3") && reason.contains("request the upload again"),
        "{reason}"
    );
    // What the outage left: an incomplete multipart upload, nothing in golden.
    assert!(!env.s3.multipart_uploads(RAW).await.is_empty());
    assert!(env.s3.objects(GOLDEN).await.is_empty());
    let stats = assert_stats_match_metrics_and_store(&env.app).await;
    assert_eq!(stats["upload_stats"]["failed"], 1);

    // S3 is back: a new request completes, leaving exactly the bundle and no parts behind.
    proxy.restore();
    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["upload_permission_id"], "perm-2");
    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    assert_bucket_contents(&env, &id, &files, "perm-2").await;

    let text = env.app.metrics_text().await;
    for (from, to) in [
        ("pending", "permitted"),
        ("permitted", "failed"),
        ("failed", "permitted"),
        ("permitted", "uploaded"),
    ] {
        assert_eq!(
            metric(
                &text,
                "upload_transitions_total",
                &[("from", from), ("to", to)]
            ),
            1.0,
            "{from}->{to}"
        );
    }
    assert!(
        metric(
            &text,
            "s3_requests_total",
            &[
                ("operation", "abort_multipart_upload"),
                ("outcome", "success")
            ]
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "s3_requests_total",
            &[("operation", "upload_part"), ("outcome", "error")]
        ) >= 1.0
    );
    let stats = assert_stats_match_metrics_and_store(&env.app).await;
    assert_eq!(stats["upload_stats"]["uploaded"], 1);
    assert_eq!(stats["upload_stats"]["failed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_artifact_goes_up_in_parts() {
    let env = Env::start(true, |_| {}).await;
    let id = env.succeeded_scan().await;
    let scan = env.app.scan(&id).await;
    let files = bundle(&env.app, &scan);
    let sarif = &files["reports/sast/secrets.sarif.json"];
    let parts = sarif.len().div_ceil(THRESHOLD as usize);
    assert!(parts >= 3, "report of {} bytes", sarif.len());
    let before = env.app.metrics_text().await;

    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    assert_bucket_contents(&env, &id, &files, "perm-1").await;
    let (_, etag) = env
        .s3
        .head(
            RAW,
            &format!("{RAW_PREFIX}/{id}/incoming/reports/sast/secrets.sarif.json"),
        )
        .await;
    assert!(
        etag.trim_matches('"').ends_with(&format!("-{parts}")),
        "multipart ETag {etag}"
    );

    let after = env.app.metrics_text().await;
    let moved = |op: &str| {
        metric(
            &after,
            "s3_requests_total",
            &[("operation", op), ("outcome", "success")],
        ) - metric(
            &before,
            "s3_requests_total",
            &[("operation", op), ("outcome", "success")],
        )
    };
    // The merged findings (reports/findings.json, reports/findings.sarif.json) hold the large
    // report's results too: every file above the threshold goes up in parts.
    let large: Vec<usize> = files
        .values()
        .filter(|b| b.len() > THRESHOLD as usize)
        .map(|b| b.len().div_ceil(THRESHOLD as usize))
        .collect();
    assert!(large.len() >= 2, "{}", large.len());
    assert_eq!(moved("create_multipart_upload"), large.len() as f64);
    assert_eq!(moved("upload_part"), large.iter().sum::<usize>() as f64);
    assert_eq!(moved("complete_multipart_upload"), large.len() as f64);
    assert_eq!(moved("put_object"), (files.len() - large.len()) as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_modified_after_permission_is_refused() {
    let env = Env::start(false, |_| {}).await;
    let id = env.succeeded_scan().await;
    let summary = env.app.artifact_dir(&id).join("summary.json");
    let target = summary.clone();
    env.trust.before_answer(move |_| {
        let mut text = std::fs::read_to_string(&target).unwrap();
        text.push_str("\n{\"tampered\": true}\n");
        std::fs::write(&target, text).unwrap();
    });
    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "failed", "{scan}");
    let reason = scan["upload_reason"].as_str().unwrap();
    assert!(
        reason.contains("summary.json") && reason.contains("changed"),
        "{reason}"
    );
    let raw_keys: BTreeSet<String> = env
        .s3
        .objects(RAW)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        !raw_keys.iter().any(|k| k.ends_with("summary.json")),
        "{raw_keys:?}"
    );
    assert!(
        env.s3.objects(GOLDEN).await.is_empty(),
        "nothing is promoted"
    );

    // Asked again, the current files are declared and uploaded.
    env.trust.before_answer(|_| {});
    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    let files = bundle(&env.app, &scan);
    assert!(String::from_utf8_lossy(&files["summary.json"]).contains("tampered"));
    assert_bucket_contents(&env, &id, &files, "perm-2").await;
    assert_stats_match_metrics_and_store(&env.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_modified_after_permission_is_never_completed() {
    let env = Env::start(true, |_| {}).await;
    let id = env.succeeded_scan().await;
    let report = env
        .app
        .artifact_dir(&id)
        .join("reports/sast/secrets.sarif.json");
    env.trust.before_answer(move |_| {
        let mut bytes = std::fs::read(&report).unwrap();
        let last = bytes.len() - 2;
        bytes[last] = b' ';
        std::fs::write(&report, bytes).unwrap();
    });
    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "failed", "{scan}");
    assert!(
        scan["upload_reason"]
            .as_str()
            .unwrap()
            .contains("secrets.sarif.json"),
        "{scan}"
    );
    let raw_keys: Vec<String> = env
        .s3
        .objects(RAW)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        !raw_keys
            .iter()
            .any(|k| k.ends_with("sast/secrets.sarif.json")),
        "{raw_keys:?}"
    );
    assert!(
        env.s3.multipart_uploads(RAW).await.is_empty(),
        "the multipart upload was aborted"
    );
    assert!(env.s3.objects(GOLDEN).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upload_requests_start_one_upload() {
    let env = Env::start(false, |_| {}).await;
    let id = env.succeeded_scan().await;
    env.trust.set_delay(Duration::from_millis(700));
    let before = env.app.metrics_text().await;
    let requests = (0..6).map(|_| request_upload(&env.app, &id, json!({"tier": "basic"})));
    let answers = futures_util::future::join_all(requests).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    let conflicts = answers.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(accepted, 1, "{answers:?}");
    assert_eq!(conflicts, 5, "{answers:?}");
    for (_, body) in answers.iter().filter(|(s, _)| *s == 409) {
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("already in progress"),
            "{body}"
        );
    }
    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    assert_eq!(env.trust.requests().len(), 1);
    let files = bundle(&env.app, &scan);
    assert_bucket_contents(&env, &id, &files, "perm-1").await;
    let after = env.app.metrics_text().await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(
        moved(
            "upload_transitions_total",
            &[("from", "pending"), ("to", "permitted")]
        ),
        1.0
    );
    assert_eq!(
        moved("trust_requests_total", &[("outcome", "permitted")]),
        1.0
    );
    assert_eq!(
        moved(
            "s3_requests_total",
            &[("operation", "put_object"), ("outcome", "success")]
        ),
        files.len() as f64
    );
}

#[tokio::test]
async fn upload_requests_are_validated_and_refused_in_the_wrong_state() {
    let trust = TrustStandIn::start(TrustMode::Permit).await;
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "# demo\n")]);
    // S3 is never reached by these requests.
    let app = spawn_app_with(|c| {
        enable_uploads(c, &trust.url, "http://127.0.0.1:9");
        c.queue.max_workers = 0;
    })
    .await;

    let (status, body) = request_upload(&app, "test_0123456789ab", json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = request_upload(&app, "nonsense", json!({})).await;
    assert_eq!(status, 404);

    let id = app.submit_scan(scan_body(&git.url("demo"))).await;
    let (status, body) = request_upload(&app, &id, json!({"tier": "gold"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "tier"]));
    let (status, body) = request_upload(&app, &id, json!({"signer": 7})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = request_upload(&app, &id, json!({"tier": "basic"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("QUEUED"),
        "{body}"
    );
    let (status, body) = request_upload(&app, &id, json!({"tier": "verified"})).await;
    assert_eq!(status, 409, "{body}");

    // A failed scan cannot be uploaded either.
    app.post_json(&format!("/v1/security-scans/{id}/cancel"), &json!({}))
        .await;
    let (status, body) = request_upload(&app, &id, json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("FAILED"),
        "{body}"
    );
    assert!(
        trust.requests().is_empty(),
        "Trust is not asked for scans that cannot upload"
    );
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["upload_stats"]["pending"], 1);
}

#[tokio::test]
async fn upload_requests_name_the_setting_when_uploads_are_not_configured() {
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "# demo\n")]);
    let app = spawn_app().await;
    let id = app.submit_scan(scan_body(&git.url("demo"))).await;
    assert_eq!(app.wait_for_terminal(&id).await["status"], "SUCCEEDED");
    let (status, body) = request_upload(&app, &id, json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("CERTUS_ASSURANCE_ENABLE_S3_UPLOAD"),
        "{body}"
    );

    let trust = TrustStandIn::start(TrustMode::Permit).await;
    let app = app
        .restart_with(|c| enable_uploads(c, &trust.url, "http://127.0.0.1:9"))
        .await;
    let (status, body) = request_upload(&app, &id, json!({"tier": "verified"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("CERTUS_ASSURANCE_SIGNING_KEY_FILE"),
        "{body}"
    );
    assert!(trust.requests().is_empty());
    assert_eq!(app.scan(&id).await["upload_status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_stopped_by_shutdown_ends_failed_and_a_new_request_completes() {
    let moto = MotoServer::start();
    let proxy = S3Proxy::start(moto.port).await;
    let endpoint = proxy.endpoint();
    let env = Env::start_with(moto, false, move |c| {
        c.upload.s3_endpoint_url = Some(endpoint);
        c.server.shutdown_grace = Duration::from_secs(1);
    })
    .await;
    let id = env.succeeded_scan().await;
    let files = bundle(&env.app, &env.app.scan(&id).await);

    // S3 stops answering: the permitted upload hangs in its first S3 request.
    proxy.stall();
    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = env.app.scan(&id).await;
    assert_eq!(scan["upload_status"], "permitted");
    assert_eq!(scan["upload_in_progress"], true);
    let stats = assert_stats_match_metrics_and_store(&env.app).await;
    assert_eq!(stats["upload_stats"]["permitted"], 1);
    let (status, _) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 409, "one upload at a time");

    // A restart drains: the grace period passes, the upload stops and is recorded failed.
    let Env {
        app,
        s3,
        trust,
        git: _git,
        _moto,
        _dir,
    } = env;
    let app = app.restart_with(|_| {}).await;
    let scan = app.scan(&id).await;
    assert_eq!(scan["upload_status"], "failed", "{scan}");
    assert!(
        scan["upload_reason"].as_str().unwrap().contains("shutdown"),
        "{scan}"
    );
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["upload_stats"]["permitted"], 0);
    assert_eq!(stats["upload_stats"]["failed"], 1);

    proxy.restore();
    let (status, answer) = request_upload(&app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    assert_buckets_hold(&app, &s3, &id, &files, "perm-2").await;
    assert_eq!(trust.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_running_when_the_process_dies_ends_failed_at_the_next_start() {
    let moto = MotoServer::start();
    let s3 = S3::new(&moto.endpoint());
    s3.create_bucket(RAW).await;
    s3.create_bucket(GOLDEN).await;
    let proxy = S3Proxy::start(moto.port).await;
    let trust = TrustStandIn::start(TrustMode::Permit).await;
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "# demo\n")]);
    let dir = tempfile::tempdir().unwrap();

    // The real binary, configured through the environment.
    let endpoint = proxy.endpoint();
    let mut process = ServiceProcess::start(
        dir.path(),
        &[
            ("CERTUS_ASSURANCE_ENABLE_S3_UPLOAD", "true"),
            ("CERTUS_ASSURANCE_TRUST_BASE_URL", &trust.url),
            ("CERTUS_ASSURANCE_TRUST_TOKEN", TRUST_TOKEN),
            ("CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS", "3"),
            ("CERTUS_ASSURANCE_S3_ENDPOINT_URL", &endpoint),
            ("CERTUS_ASSURANCE_S3_ACCESS_KEY_ID", "testing"),
            ("CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY", "testing"),
            ("CERTUS_ASSURANCE_DATALAKE_RAW_PREFIX", RAW_PREFIX),
            ("CERTUS_ASSURANCE_DATALAKE_GOLDEN_PREFIX", GOLDEN_PREFIX),
            ("CERTUS_ASSURANCE_S3_TIMEOUT_SECONDS", "60"),
        ],
    );
    let client = reqwest::Client::new();
    let submitted: Value = client
        .post(format!("{}/v1/security-scans", process.address))
        .json(&scan_body(&git.url("demo")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["test_id"].as_str().expect("test_id").to_string();
    let scan_url = format!("{}/v1/security-scans/{id}", process.address);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scan: Value = client
            .get(&scan_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if scan["status"] == "SUCCEEDED" {
            break;
        }
        assert!(
            Instant::now() < deadline && scan["status"] != "FAILED",
            "{scan}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stall();
    let response = client
        .post(format!("{scan_url}/upload-request"))
        .json(&json!({"tier": "basic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        trust.requests()[0].0.as_deref(),
        Some(format!("Bearer {TRUST_TOKEN}").as_str())
    );
    let scan: Value = client
        .get(&scan_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scan["upload_status"], "permitted");
    process.kill9();

    // The next start ends the upload left in flight, and the gauges follow the store.
    let mut config = test_config(dir.path());
    enable_uploads(&mut config, &trust.url, &endpoint);
    let app = start(config, None).await;
    let scan = app.scan(&id).await;
    assert_eq!(scan["upload_status"], "failed", "{scan}");
    assert_eq!(scan["upload_in_progress"], false);
    assert!(
        scan["upload_reason"]
            .as_str()
            .unwrap()
            .contains("stopped while this upload ran"),
        "{scan}"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "upload_transitions_total",
            &[("from", "permitted"), ("to", "failed")]
        ),
        1.0
    );
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["upload_stats"]["failed"], 1);
    assert_eq!(stats["upload_stats"]["permitted"], 0);

    proxy.restore();
    let (status, answer) = request_upload(&app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    let files = bundle(&app, &scan);
    assert_buckets_hold(&app, &s3, &id, &files, "perm-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_service_whose_certificate_does_not_verify_gets_no_request() {
    let tls = UntrustedTlsServer::start();
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "# demo\n")]);
    let trust_url = format!("https://127.0.0.1:{}", tls.port);
    // S3 is never reached.
    let app = spawn_app_with(|c| enable_uploads(c, &trust_url, "http://127.0.0.1:9")).await;
    let id = app.submit_scan(scan_body(&git.url("demo"))).await;
    assert_eq!(app.wait_for_terminal(&id).await["status"], "SUCCEEDED");

    let (status, answer) = request_upload(&app, &id, json!({})).await;
    // Without verification, the server's HTML page would come back as an invalid answer.
    assert_eq!(status, 502, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("could not be reached") && detail.contains("certificate"),
        "{detail}"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric(&text, "trust_requests_total", &[("outcome", "unreachable")]),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "trust_requests_total",
            &[("outcome", "invalid_response")]
        ),
        0.0
    );
    assert_eq!(app.scan(&id).await["upload_status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_endpoint_whose_certificate_does_not_verify_gets_no_object() {
    let tls = UntrustedTlsServer::start();
    let trust = TrustStandIn::start(TrustMode::Permit).await;
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "# demo\n")]);
    let endpoint = format!("https://127.0.0.1:{}", tls.port);
    let app = spawn_app_with(|c| enable_uploads(c, &trust.url, &endpoint)).await;
    let id = app.submit_scan(scan_body(&git.url("demo"))).await;
    assert_eq!(app.wait_for_terminal(&id).await["status"], "SUCCEEDED");

    let (status, answer) = request_upload(&app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "failed", "{scan}");
    let reason = scan["upload_reason"].as_str().unwrap();
    assert!(reason.contains("certificate"), "{reason}");
    let text = app.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "s3_requests_total",
            &[
                ("operation", "list_multipart_uploads"),
                ("outcome", "error")
            ]
        ),
        1.0
    );
    assert_eq!(metric(&text, "s3_uploaded_bytes_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_s3_failures_are_retried() {
    let moto = MotoServer::start();
    let proxy = S3Proxy::start(moto.port).await;
    let endpoint = proxy.endpoint();
    let env = Env::start_with(moto, false, move |c| {
        c.upload.s3_endpoint_url = Some(endpoint);
        c.upload.s3_max_attempts = 3;
    })
    .await;
    let id = env.succeeded_scan().await;
    let files = bundle(&env.app, &env.app.scan(&id).await);
    // Two connections in a row are cut: the first request needs three attempts.
    proxy.drop_next_connections(2);
    let (status, answer) = request_upload(&env.app, &id, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload(&env.app, &id, &["uploaded", "failed"]).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    assert_bucket_contents(&env, &id, &files, "perm-1").await;
    let text = env.app.metrics_text().await;
    for op in [
        "list_multipart_uploads",
        "put_object",
        "head_object",
        "copy_object",
    ] {
        for outcome in ["error", "timeout"] {
            assert_eq!(
                metric(
                    &text,
                    "s3_requests_total",
                    &[("operation", op), ("outcome", outcome)]
                ),
                0.0,
                "{op} {outcome}"
            );
        }
    }
}
