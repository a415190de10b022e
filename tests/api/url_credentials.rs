//! Credentials in a `git_url`'s query string or fragment (`?access_token=`, `?private_token=`,
//! signatures): the real binary refuses them at submit with a 422 whose detail does not repeat
//! them, single and in a batch, and the value appears nowhere afterwards: not in any answer,
//! not in the log (debug level), not in any file of the data directory (the store included).

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
