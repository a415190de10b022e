//! Credentials in a `git_url`, sealed with the credential keys the replicas share: real binaries
//! on one PostgreSQL. A scan submitted on a replica without workers (stopped before anything
//! claims it) is cloned by another replica from an https git server that demands the
//! credentials, after a key rotation; the sealed value leaves the store when the scan ends; a
//! replica with other key material under the same id, or with no keys, fails such a scan with a
//! clear reason; and the credential is in no answer, log line or table. Both stores take the
//! sealed value out with every ending of a scan, and a bad key list stops start-up.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use certus_assurance::scan::{CredentialKeys, JobState, SealedCredentials, SecretUrl};
use certus_assurance::storage::postgres::PgStore;
use certus_assurance::storage::sqlite::SqliteStore;
use certus_assurance::storage::{Completion, JobStore};
use serde_json::Value;

use crate::helpers::{scan_body, GitServer, ServiceProcess};
use crate::postgres::{psql as psql_text, PgSchema};
use crate::source_safety::start_https_git_server;

/// One line of a key list: `<id> <base64 of 32 random bytes>`.
fn key_line(id: &str) -> String {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    format!(
        "{id} {}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The test's cluster: one schema, one shared artifact root, each replica's log in a file.
struct Cluster {
    schema: PgSchema,
    dir: tempfile::TempDir,
    cert: PathBuf,
    logs: Vec<PathBuf>,
    answers: Vec<String>,
}

impl Cluster {
    /// Starts replica `name` with `workers` workers and `keys` (extra settings).
    fn replica(&mut self, name: &str, workers: &str, keys: &[(&str, &str)]) -> ServiceProcess {
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        self.logs.push(log_path);
        let url = self.schema.url();
        let artifacts = self.dir.path().join("artifacts");
        let artifacts = artifacts.display().to_string();
        let cert = self.cert.display().to_string();
        let mut env = vec![
            ("CERTUS_ASSURANCE_DATABASE_URL", url.as_str()),
            ("CERTUS_ASSURANCE_REPLICA_ID", name),
            ("CERTUS_ASSURANCE_MAX_WORKERS", workers),
            ("CERTUS_ASSURANCE_ARTIFACT_ROOT", artifacts.as_str()),
            ("CERTUS_ASSURANCE_RECONCILE_INTERVAL_SECONDS", "1"),
            ("CERTUS_ASSURANCE_LOG_LEVEL", "debug"),
            ("SSL_CERT_FILE", cert.as_str()),
        ];
        env.extend_from_slice(keys);
        ServiceProcess::start_with_stdout(&self.dir.path().join(name), &env, Stdio::from(log))
    }

    async fn submit(&mut self, replica: &ServiceProcess, git_url: &str) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/security-scans", replica.address))
            .json(&scan_body(git_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        self.answers.push(body.to_string());
        body["test_id"].as_str().unwrap().to_string()
    }

    /// Waits until the scan ends; returns it.
    async fn ended(&mut self, replica: &ServiceProcess, id: &str) -> Value {
        let scan = replica
            .wait_for_state(id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120))
            .await;
        self.answers.push(scan.to_string());
        scan
    }

    /// The stored sealed value of a scan (empty when NULL).
    fn sealed(&self, id: &str) -> String {
        psql_text(&format!(
            "SELECT coalesce(sealed_credentials, '') FROM {}.scans WHERE test_id = '{id}'",
            self.schema.name
        ))
    }
}

fn stop(mut replica: ServiceProcess) {
    assert!(replica.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_credentials_let_any_replica_clone_and_are_deleted_when_the_scan_ends() {
    let git = GitServer::start();
    let commit = git.create_repo("r", &[("app.py", "print(1)\n")]);
    let dir = tempfile::tempdir().unwrap();
    // Assembled at run time, so this file holds no literal of it.
    let secret = ["s3aled", "Tok", "9Qx7Lm2"].concat();
    let auth = format!("deploy:{secret}");
    let (port, cert, _server) = start_https_git_server(git.root.path(), dir.path(), Some(&auth));
    let plain_url = format!("https://127.0.0.1:{port}/r");
    let secret_url = format!("https://{auth}@127.0.0.1:{port}/r");
    let mut cluster = Cluster {
        schema: PgSchema::create(),
        dir,
        cert,
        logs: vec![],
        answers: vec![],
    };
    let (old, new) = (key_line("k1"), key_line("k2"));
    let old_file = cluster.dir.path().join("old.keys");
    std::fs::write(&old_file, format!("{old}\n")).unwrap();
    let rotated_file = cluster.dir.path().join("rotated.keys");
    std::fs::write(&rotated_file, format!("# rotation\n{new}\n{old}\n")).unwrap();
    let old_keys = old_file.display().to_string();
    let rotated_keys = rotated_file.display().to_string();
    let keys_file = "CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE";

    // Accepted on a replica without workers, sealed with its active key, not pinned; the
    // replica stops before anything claims the scan.
    let accepting = cluster.replica("accepting", "0", &[(keys_file, &old_keys)]);
    let first = cluster.submit(&accepting, &secret_url).await;
    stop(accepting);
    let stored = cluster.sealed(&first);
    assert!(stored.starts_with("v1.k1."), "{stored}");
    assert!(!stored.contains(&secret));
    let pinned = psql_text(&format!(
        "SELECT count(*) FROM {}.scans WHERE pinned_to IS NOT NULL",
        cluster.schema.name
    ));
    assert_eq!(pinned, "0", "sealed scans are not pinned");

    // A front replica, and a runner restarted with a new active key and the old one.
    let front = cluster.replica("front", "0", &[(keys_file, &rotated_keys)]);
    let second = cluster.submit(&front, &secret_url).await;
    let unauthenticated = cluster.submit(&front, &plain_url).await;
    assert!(cluster.sealed(&second).starts_with("v1.k2."));
    let runner = cluster.replica("runner", "1", &[(keys_file, &rotated_keys)]);
    for id in [&first, &second] {
        let scan = cluster.ended(&runner, id).await;
        assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
        assert_eq!(scan["resolved_commit"], commit, "{scan}");
        assert_eq!(cluster.sealed(id), "", "deleted when the scan ended");
    }
    // The server demands the credentials: without them the clone fails.
    let scan = cluster.ended(&runner, &unauthenticated).await;
    assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    stop(runner);

    // Other key material under the active id: the scan fails, saying which key.
    let wrong = key_line("k2");
    let mismatched = cluster.submit(&front, &secret_url).await;
    let impostor = cluster.replica(
        "impostor",
        "1",
        &[("CERTUS_ASSURANCE_CREDENTIAL_KEYS", &wrong)],
    );
    let scan = cluster.ended(&impostor, &mismatched).await;
    assert_clone_failed_saying(&scan, "do not open with credential key `k2`");
    stop(impostor);

    // No keys at all: the scan fails, naming the key it needs.
    let keyless_scan = cluster.submit(&front, &secret_url).await;
    let keyless = cluster.replica("keyless", "1", &[]);
    let scan = cluster.ended(&keyless, &keyless_scan).await;
    assert_clone_failed_saying(
        &scan,
        "sealed with credential key `k2`, which this replica does not have",
    );
    let list = reqwest::Client::new()
        .get(format!("{}/v1/security-scans", keyless.address))
        .send()
        .await
        .unwrap();
    cluster.answers.push(list.text().await.unwrap());
    stop(keyless);
    stop(front);

    let schema = &cluster.schema.name;
    assert_eq!(
        psql_text(&format!(
            "SELECT count(*) FROM {schema}.scans WHERE sealed_credentials IS NOT NULL"
        )),
        "0",
        "every ended scan's sealed credentials are deleted"
    );
    assert_no_trace(&cluster, &secret);
}

fn assert_clone_failed_saying(scan: &Value, message: &str) {
    assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    assert!(scan["errors"].to_string().contains(message), "{scan}");
}

/// The credential is in no answer, no log and no stored row or event, and neither is any key.
fn assert_no_trace(cluster: &Cluster, secret: &str) {
    for answer in &cluster.answers {
        assert!(!answer.contains(secret), "an answer holds it: {answer}");
    }
    for log in &cluster.logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("listening"), "{} was captured", log.display());
        assert!(!text.contains(secret), "{} holds it", log.display());
    }
    let schema = &cluster.schema.name;
    for table in ["scans", "scan_events", "audit_events"] {
        let rows = psql_text(&format!("SELECT t::text FROM {schema}.{table} t"));
        assert!(!rows.contains(secret), "{table} holds it");
    }
    for file in crate::helpers::files_under(cluster.dir.path()) {
        if is_test_input(&file) {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds it",
            file.display()
        );
    }
}

/// The key files the test wrote itself (they hold keys, not credentials).
fn is_test_input(file: &Path) -> bool {
    file.extension().is_some_and(|e| e == "keys")
}

/// A bad key list stops start-up as bad configuration (exit status 2) with the setting and the
/// line at fault, and prints nothing of the keys.
#[test]
fn bad_credential_keys_stop_start_up_without_printing_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = key_line("k1");
    let material = good.split_once(' ').unwrap().1.to_string();
    let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let file = dir.path().join("bad.keys");
    std::fs::write(&file, format!("# keys\n{material}\n")).unwrap();
    let file = file.display().to_string();
    let file_var = "CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE";
    let value_var = "CERTUS_ASSURANCE_CREDENTIAL_KEYS";
    let cases: [(Vec<(&str, String)>, &str); 4] = [
        (
            vec![(file_var, file.clone())],
            "CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE: line 2 is not `<key-id> <base64",
        ),
        (
            vec![(value_var, format!("k1 {short}"))],
            "CERTUS_ASSURANCE_CREDENTIAL_KEYS: line 1: the key is 16 bytes long",
        ),
        (
            vec![(value_var, format!("k1 {material}\nk!2 {material}"))],
            "CERTUS_ASSURANCE_CREDENTIAL_KEYS: line 2: the key id must be",
        ),
        (
            vec![(file_var, file.clone()), (value_var, good.clone())],
            "are both set; set one of them",
        ),
    ];
    for (env, expected) in cases {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_certus-assurance"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CERTUS_ASSURANCE_DATA_DIR", dir.path().join("data"))
            .env("CERTUS_ASSURANCE_LISTEN_ADDR", "127.0.0.1:0");
        for (k, v) in &env {
            command.env(k, v);
        }
        let out = command.output().expect("the binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{expected}: {text}");
        assert!(text.contains(expected), "{expected}: {text}");
        for key in [&material, &short] {
            assert!(!text.contains(key.as_str()), "key material printed: {text}");
        }
    }
}

/// The sealed credentials a store holds for a scan.
async fn sealed_of(store: &dyn JobStore, id: &str) -> Option<SealedCredentials> {
    store
        .get(id.to_string())
        .await
        .unwrap()
        .expect("the scan is stored")
        .sealed_credentials
}

/// On both backends, a claim hands the sealed credentials to the worker, and every way a scan
/// ends takes them out of the store: a finish, a cancel while queued, and the failure of its last
/// attempt (reclaim on PostgreSQL, start-up recovery on SQLite). Retention deletes the row.
#[tokio::test]
async fn every_ending_deletes_the_sealed_credentials_on_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let schema = PgSchema::create();
    let stores: [(Arc<dyn JobStore>, bool); 2] = [
        (
            Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap()),
            false,
        ),
        (
            Arc::new(
                PgStore::connect(&schema.url(), "replica-a".into())
                    .await
                    .unwrap(),
            ),
            true,
        ),
    ];
    let keys = CredentialKeys::parse(&key_line("k1")).unwrap();
    let url = SecretUrl::new(["https://deploy:", "st0re", "Tok@git.example.com/r.git"].concat());
    let ids = [
        "test_00000000000a",
        "test_00000000000b",
        "test_00000000000c",
    ];
    for (store, shared) in stores {
        for (i, id) in ids.iter().enumerate() {
            let mut scan = crate::postgres::record(id, "w", 1000.0 + i as f64);
            scan.sealed_credentials = Some(keys.seal(id, &url));
            store.insert(scan).await.unwrap();
        }
        let claimed = store.claim_next(2000.0).await.unwrap().unwrap();
        assert_eq!(claimed.test_id, ids[0]);
        let sealed = claimed.sealed_credentials.expect("a claim carries them");
        assert_eq!(keys.open(ids[0], &sealed).unwrap(), url);
        let done = Completion {
            status: JobState::Succeeded,
            failure_reason: None,
            errors: vec![],
            summary: None,
            artifacts: None,
            finished_at: 2001.0,
            manifest_digest: None,
        };
        assert!(store.finish(ids[0].into(), done).await.unwrap());
        assert_eq!(sealed_of(&*store, ids[0]).await, None, "finished");
        let cancelled = store
            .cancel_queued(ids[1].into(), 2002.0, "cancelled".into())
            .await
            .unwrap();
        assert!(cancelled);
        assert_eq!(sealed_of(&*store, ids[1]).await, None, "cancelled");
        let failed = if shared {
            store.claim_leased(2003.0, 2004.0).await.unwrap().unwrap();
            store.reclaim_expired(3000.0, 1).await.unwrap().failed
        } else {
            store.claim_next(2003.0).await.unwrap().unwrap();
            store.recover_running(false, 3000.0).await.unwrap().failed
        };
        assert_eq!(failed, vec![ids[2].to_string()]);
        assert_eq!(
            sealed_of(&*store, ids[2]).await,
            None,
            "last attempt failed"
        );
    }
}
