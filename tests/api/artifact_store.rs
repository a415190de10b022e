//! The S3 artifact store (`ARTIFACT_STORE=s3`) against a real S3 server (moto): replicas that
//! share nothing but PostgreSQL and the bucket, and one process on SQLite. Bundles are published
//! by the replica that runs the scan and read by any other (artifacts, findings, the stream, the
//! Trust/S3 upload, retention); uploaded archives are fetched by whichever replica claims the
//! scan; an unreachable store answers 503 with a detail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::postgres::PgSchema;
use crate::upload_helpers::*;

pub const BUCKET: &str = "artifacts";
const PREFIX: &str = "certus-assurance";
const TRUST_TOKEN: &str = "trust-test-token";

/// Uploads `bytes` as an archive through `addr`; returns the answer's JSON.
async fn upload_archive(client: &reqwest::Client, addr: &str, bytes: &[u8]) -> Value {
    let boundary = "certus-artifact-store-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"workspace_id\"\r\n\r\nws\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tar\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = client
        .post(format!("{addr}/v1/security-scans/upload-archive"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "upload-archive through {addr}: {answer}");
    answer
}

/// The scan's events as the stream at `addr` replays them, up to the close.
async fn stream_events(addr: &str, id: &str) -> Vec<Value> {
    let ws = addr.replace("http://", "ws://");
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{ws}/v1/security-scans/{id}/stream"))
            .await
            .expect("websocket handshake");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the stream ends in time")
        {
            Some(Ok(Message::Text(text))) => out.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None => return out,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("stream error: {e}"),
        }
    }
}

/// The stored objects of a scan's bundle: relative path → content.
async fn stored_bundle(s3: &S3, id: &str) -> BTreeMap<String, Vec<u8>> {
    let prefix = format!("{PREFIX}/bundles/{id}/");
    let mut out = BTreeMap::new();
    for (key, _) in s3.objects(BUCKET).await {
        if let Some(rel) = key.strip_prefix(&prefix) {
            out.insert(rel.to_string(), s3.get(BUCKET, &key).await);
        }
    }
    out
}

/// Checks that a stored bundle is whole and consistent: the files the scan recorded, the
/// attestation's subjects with their digests, and one terminal event at the end of
/// `stream.jsonl`.
pub async fn assert_bundle_complete(s3: &S3, scan: &Value) {
    let id = scan["test_id"].as_str().unwrap();
    let stored = stored_bundle(s3, id).await;
    let recorded: Vec<String> =
        serde_json::from_value(scan["artifacts"].clone()).unwrap_or_default();
    for rel in &recorded {
        assert!(
            stored.contains_key(rel),
            "{id}: {rel} recorded but not stored: {:?}",
            stored.keys()
        );
    }
    assert!(
        stored.contains_key("stream.jsonl"),
        "{id}: {:?}",
        stored.keys()
    );
    let stream = String::from_utf8(stored["stream.jsonl"].clone()).unwrap();
    let terminals = stream
        .lines()
        .filter(|l| l.contains("\"type\":\"scan_complete\""))
        .count();
    assert_eq!(
        terminals, 1,
        "{id}: one terminal event in stream.jsonl:\n{stream}"
    );
    assert!(stream
        .trim_end()
        .lines()
        .last()
        .unwrap()
        .contains("scan_complete"));
    if scan["status"] == "SUCCEEDED" {
        // Unsigned (no key configured): the statement itself.
        let statement: Value =
            serde_json::from_slice(&stored["reports/signing/attestation.intoto.json"]).unwrap();
        let subjects = statement["subject"].as_array().cloned().expect("subjects");
        assert!(!subjects.is_empty(), "{statement}");
        for subject in subjects {
            let name = subject["name"].as_str().unwrap();
            let digest = hex::encode(Sha256::digest(&stored[name]));
            assert_eq!(subject["digest"]["sha256"], json!(digest), "{id}: {name}");
        }
    }
}

fn s3_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("CERTUS_ASSURANCE_ARTIFACT_STORE", "s3".to_string()),
        ("CERTUS_ASSURANCE_ARTIFACT_BUCKET", BUCKET.into()),
        ("CERTUS_ASSURANCE_ARTIFACT_PREFIX", format!("{PREFIX}/")),
        ("CERTUS_ASSURANCE_S3_ENDPOINT_URL", endpoint.into()),
        ("CERTUS_ASSURANCE_S3_ACCESS_KEY_ID", "testing".into()),
        ("CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY", "testing".into()),
        ("CERTUS_ASSURANCE_S3_TIMEOUT_SECONDS", "10".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// One replica process with its own data directory (and so its own artifact root).
fn replica(
    dir: &tempfile::TempDir,
    common: &[(String, String)],
    extra: &[(&str, &str)],
) -> ServiceProcess {
    let mut env: Vec<(&str, &str)> = common
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend_from_slice(extra);
    ServiceProcess::start(dir.path(), &env)
}

/// Three replicas with no shared directory: replica 0 accepts (no workers), replica 1 runs,
/// replica 2 reads, uploads and prunes. A git scan and an archive scan go all the way; the
/// bucket then holds nothing of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_only_postgres_and_s3_serve_each_others_bundles_and_archives() {
    let moto = MotoServer::start();
    let s3 = S3::new(&moto.endpoint());
    for bucket in [BUCKET, "raw", "golden"] {
        s3.create_bucket(bucket).await;
    }
    let trust = TrustStandIn::start(TrustMode::Permit).await;
    let git = GitServer::start();
    git.create_repo("r", &[("a.py", "password = 'hunter2'\n")]);
    let schema = PgSchema::create();
    let mut common = s3_env(&moto.endpoint());
    for (k, v) in [
        ("CERTUS_ASSURANCE_DATABASE_URL", schema.url()),
        ("CERTUS_ASSURANCE_ENABLE_S3_UPLOAD", "true".into()),
        ("CERTUS_ASSURANCE_TRUST_BASE_URL", trust.url.clone()),
        ("CERTUS_ASSURANCE_TRUST_TOKEN", TRUST_TOKEN.into()),
        ("CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS", "5".into()),
        ("CERTUS_ASSURANCE_RECONCILE_INTERVAL_SECONDS", "1".into()),
    ] {
        common.push((k.to_string(), v));
    }
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let accepting = replica(
        &dirs[0],
        &common,
        &[
            ("CERTUS_ASSURANCE_REPLICA_ID", "accepting"),
            ("CERTUS_ASSURANCE_MAX_WORKERS", "0"),
        ],
    );
    let running = replica(
        &dirs[1],
        &common,
        &[
            ("CERTUS_ASSURANCE_REPLICA_ID", "running"),
            ("CERTUS_ASSURANCE_MAX_WORKERS", "2"),
        ],
    );
    let mut reading = replica(
        &dirs[2],
        &common,
        &[
            ("CERTUS_ASSURANCE_REPLICA_ID", "reading"),
            ("CERTUS_ASSURANCE_MAX_WORKERS", "0"),
        ],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let archive = upload_archive(
        &client,
        &accepting.address,
        &crate::audit::tar_archive("artifact-store"),
    )
    .await;
    let archive_name = archive["archive_path"]
        .as_str()
        .unwrap()
        .trim_start_matches("uploads/")
        .to_string();
    assert!(
        s3.objects(BUCKET)
            .await
            .iter()
            .any(|(k, _)| *k == format!("{PREFIX}/archives/{archive_name}")),
        "the archive is in the bucket"
    );
    let git_scan = submit_at(&client, &accepting.address, &scan_body(&git.url("r"))).await;
    let archive_scan = submit_at(
        &client,
        &accepting.address,
        &json!({"workspace_id": "ws", "component_id": "c", "assessment_id": "a",
                "source_type": "archive", "archive_path": archive["archive_path"]}),
    )
    .await;

    for id in [&git_scan, &archive_scan] {
        let scan = reading
            .wait_for_state(id, &["SUCCEEDED", "FAILED"], Duration::from_secs(90))
            .await;
        assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
        assert_bundle_complete(&s3, &scan).await;
        // Nothing of it on the accepting or the reading replica's disk but fetched copies.
        assert!(!dirs[0].path().join("artifacts").join(id).exists());
        assert!(!dirs[2].path().join("artifacts").join(id).exists());

        let addr = &reading.address;
        let listed =
            get_json_at(&client, &format!("{addr}/v1/security-scans/{id}/artifacts")).await;
        let names: Vec<&str> = listed["files"]
            .as_array()
            .expect("a file list")
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        let stored = stored_bundle(&s3, id).await;
        assert_eq!(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            stored.keys().cloned().collect::<Vec<_>>(),
            "{listed}"
        );
        let summary = client
            .get(format!(
                "{addr}/v1/security-scans/{id}/artifacts/summary.json"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(summary.status(), 200);
        assert_eq!(
            summary.bytes().await.unwrap().to_vec(),
            stored["summary.json"]
        );
        let findings =
            get_json_at(&client, &format!("{addr}/v1/security-scans/{id}/findings")).await;
        assert!(findings["findings"].is_array(), "{findings}");

        let events = stream_events(addr, id).await;
        assert_eq!(
            events.last().unwrap()["type"],
            "scan_complete",
            "{events:?}"
        );
        assert_eq!(events.last().unwrap()["status"], "SUCCEEDED");

        let r = client
            .post(format!("{addr}/v1/security-scans/{id}/upload-request"))
            .json(&json!({"tier": "basic"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let scan = get_json_at(&client, &format!("{addr}/v1/security-scans/{id}")).await;
            if scan["upload_status"] == "uploaded" {
                break;
            }
            assert!(
                scan["upload_status"] == "permitted" && Instant::now() < deadline,
                "{scan}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let golden: Vec<String> = s3
            .objects("golden")
            .await
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.contains(id.as_str()))
            .collect();
        let recorded = scan["artifacts"]
            .as_array()
            .expect("the recorded files")
            .len();
        assert_eq!(
            golden.len(),
            recorded,
            "every recorded file is in golden: {golden:?}"
        );
    }

    // Retention through the reading replica: the scans, their bundles and the archive go.
    reading.terminate();
    let mut pruning = common.clone();
    pruning.push((
        "CERTUS_ASSURANCE_RETENTION_MAX_AGE_SECONDS".into(),
        "1".into(),
    ));
    pruning.push((
        "CERTUS_ASSURANCE_RETENTION_INTERVAL_SECONDS".into(),
        "1".into(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    reading = replica(
        &dirs[2],
        &pruning,
        &[
            ("CERTUS_ASSURANCE_REPLICA_ID", "reading"),
            ("CERTUS_ASSURANCE_MAX_WORKERS", "0"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = s3
            .objects(BUCKET)
            .await
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention left objects behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = client
        .get(format!("{}/v1/security-scans/{git_scan}", reading.address))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    drop((accepting, running, reading));
}

/// One process on SQLite with the S3 store: the bundle is in the bucket, read back after a
/// restart (the artifact root is then empty), answered 503 with a detail while S3 is
/// unreachable, and removed by retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_on_sqlite_keeps_its_bundles_in_s3() {
    let moto = MotoServer::start();
    let s3 = S3::new(&moto.endpoint());
    s3.create_bucket(BUCKET).await;
    let git = GitServer::start();
    git.create_repo("r", &[("a.py", "password = 'hunter2'\n")]);
    let endpoint = moto.endpoint();
    let use_s3 = |c: &mut certus_assurance::config::Config, endpoint: &str| {
        c.artifacts.backend = certus_assurance::config::ArtifactBackend::S3;
        c.artifacts.bucket = Some(BUCKET.into());
        c.artifacts.prefix = PREFIX.into();
        c.upload.s3_endpoint_url = Some(endpoint.to_string());
        c.upload.s3_access_key_id = Some("testing".into());
        c.upload.s3_secret_access_key = Some(certus_assurance::config::Secret::new("testing"));
        c.upload.s3_timeout = Duration::from_secs(2);
        c.upload.s3_max_attempts = 1;
    };
    let app = spawn_app_with(|c| use_s3(c, &endpoint)).await;
    let id = app.submit_scan(scan_body(&git.url("r"))).await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_bundle_complete(&s3, &scan).await;
    assert!(
        !app.artifact_dir(&id).exists(),
        "the scratch bundle is gone once published"
    );

    // After a restart the channel is gone: the stream is replayed from the stored stream.jsonl.
    let app = app.restart_with(|_| {}).await;
    let events = stream_events(&app.address, &id).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "scan_complete",
        "{events:?}"
    );
    let findings = app.get(&format!("/v1/security-scans/{id}/findings")).await;
    assert_eq!(findings.status(), 200);

    // S3 unreachable: the reads answer 503 and say what failed.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let app = app
        .restart_with(|c| c.upload.s3_endpoint_url = Some(dead.clone()))
        .await;
    for path in [
        format!("/v1/security-scans/{id}/artifacts"),
        format!("/v1/security-scans/{id}/findings"),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status().as_u16(), 503, "{path}");
        let body: Value = r.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("artifact store")
                && detail.contains("CERTUS_ASSURANCE_S3_ENDPOINT_URL"),
            "{detail}"
        );
        assert!(
            !detail.contains("testing"),
            "no credential in the detail: {detail}"
        );
    }

    // Retention removes the stored bundle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let app = app
        .restart_with(|c| {
            c.upload.s3_endpoint_url = Some(endpoint.clone());
            c.retention.max_age = Some(Duration::from_secs(1));
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s3.objects(BUCKET).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "retention left {:?}",
            s3.objects(BUCKET).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.get(&format!("/v1/security-scans/{id}")).await.status(),
        404
    );
}
