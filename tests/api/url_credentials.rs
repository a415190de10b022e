//! Credentials in a `git_url`'s query string or fragment (`?access_token=`, `?private_token=`,
//! signatures): the real binary refuses them at submit with a 422 whose detail does not repeat
//! them, single and in a batch, and the value appears nowhere afterwards: not in any answer,
//! not in the log (debug level), not in any file of the data directory (the store included).
//! Credentials in the user-info, with a credential key, are stored only sealed, and only until
//! the scan ends.

use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::helpers::{files_under, scan_body, ServiceProcess};

#[tokio::test]
async fn git_urls_with_a_query_string_or_fragment_are_refused_and_never_stored_or_logged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("service.log");
    // Assembled at run time, so this file holds no literal of it.
    let secret = ["qs", "Secret", "7Hk2Lm9Pq4"].concat();
    let urls = [
        format!("https://git.example.com/org/repo.git?access_token={secret}"),
        format!("https://git.example.com/org/repo.git?private_token={secret}"),
        format!("https://git.example.com/org/repo.git?sv=2024-01-01&sig={secret}"),
        format!("https://git.example.com/org/repo.git#{secret}"),
        format!("ssh://git@git.example.com/org/repo.git?token={secret}"),
        format!("git://git.example.com/repo?token={secret}"),
    ];
    let mut answers = Vec::new();
    {
        let log = std::fs::File::create(&log_path).unwrap();
        let mut service = ServiceProcess::start_with_stdout(
            &data,
            &[
                ("CERTUS_ASSURANCE_MAX_WORKERS", "0"),
                ("CERTUS_ASSURANCE_LOG_LEVEL", "debug"),
            ],
            Stdio::from(log),
        );
        let client = reqwest::Client::new();
        let submit = format!("{}/v1/security-scans", service.address);
        for url in &urls {
            let response = client
                .post(&submit)
                .json(&scan_body(url))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 422, "{url}");
            let body: Value = response.json().await.unwrap();
            let detail = body.to_string();
            assert!(
                detail.contains("git_url") && detail.contains("query string or fragment"),
                "{detail}"
            );
            answers.push(detail);
        }
        // In a batch, the item is refused and the others are accepted.
        let response = client
            .post(format!("{submit}/batch"))
            .json(&json!({ "scans": [
                scan_body(&urls[0]),
                scan_body("https://git.example.com/org/repo.git"),
            ]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["accepted"], 1, "{body}");
        assert_eq!(body["results"][0]["status"], 422, "{body}");
        answers.push(body.to_string());
        let list = client.get(&submit).send().await.unwrap();
        answers.push(list.text().await.unwrap());
        assert!(service.terminate().success());
    }
    for answer in &answers {
        assert!(!answer.contains(&secret), "an answer repeats it: {answer}");
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("listening"), "the log was captured: {log}");
    assert!(!log.contains(&secret), "the log holds it");
    let files = files_under(&data);
    assert!(!files.is_empty(), "the data directory was written");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds it",
            file.display()
        );
    }
}

/// With a credential key, credentials in a `git_url` are stored sealed in SQLite: a queued scan
/// survives a restart and clones from a server that demands them, the stored value is gone when
/// the scan ends, and neither the data directory nor the log ever holds them in clear.
#[tokio::test]
async fn sealed_credentials_survive_a_restart_on_sqlite_and_leave_with_the_scan() {
    let git = crate::helpers::GitServer::start();
    let commit = git.create_repo("r", &[("a.txt", "hello\n")]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = ["sq", "Sealed", "4Vb8Nc1"].concat();
    let auth = format!("deploy:{secret}");
    let (port, cert, _server) =
        crate::source_safety::start_https_git_server(git.root.path(), dir.path(), Some(&auth));
    let keys = dir.path().join("credential.keys");
    std::fs::write(&keys, "k1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    let (keys, cert) = (keys.display().to_string(), cert.display().to_string());
    let start = |workers: &'static str, log: &Path| {
        ServiceProcess::start_with_stdout(
            &data,
            &[
                ("CERTUS_ASSURANCE_MAX_WORKERS", workers),
                ("CERTUS_ASSURANCE_LOG_LEVEL", "debug"),
                ("CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE", &keys),
                ("SSL_CERT_FILE", &cert),
            ],
            Stdio::from(std::fs::File::create(log).unwrap()),
        )
    };
    let stored = |id: &str| -> Option<String> {
        rusqlite::Connection::open(data.join("certus-assurance.db"))
            .unwrap()
            .query_row(
                "SELECT sealed_credentials FROM scans WHERE test_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
    };
    let logs = [dir.path().join("first.log"), dir.path().join("second.log")];
    let mut service = start("0", &logs[0]);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/security-scans", service.address))
        .json(&scan_body(&format!("https://{auth}@127.0.0.1:{port}/r")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["test_id"].as_str().unwrap().to_string();
    assert!(service.terminate().success());
    let sealed = stored(&id).expect("sealed while the scan waits");
    assert!(
        sealed.starts_with("v1.k1.") && !sealed.contains(&secret),
        "{sealed}"
    );

    let service = start("1", &logs[1]);
    let scan = service
        .wait_for_state(
            &id,
            &["SUCCEEDED", "FAILED"],
            std::time::Duration::from_secs(120),
        )
        .await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(scan["resolved_commit"], commit, "{scan}");
    assert!(!scan.to_string().contains(&secret), "{scan}");
    assert_eq!(stored(&id), None, "deleted when the scan ended");
    drop(service);
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("listening"), "the log was captured");
        assert!(!text.contains(&secret), "{} holds it", log.display());
    }
    for file in files_under(&data) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds it",
            file.display()
        );
    }
}
