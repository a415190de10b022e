//! No secret in clear, anywhere: known secrets of many formats are planted in a repository, every
//! built-in profile scans it with every installed tool (the real binary, debug logging), each
//! bundle is uploaded to a real S3 server through the Trust stand-in, the `scan` command runs
//! with each output format, and every byte produced is searched for each secret: the bundles, the
//! data directory (the SQLite store included), the service's log, every API answer, the objects
//! in S3, what Trust was sent, `/metrics`, and the command's output. Zero hits.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{files_under, GitServer, ServiceProcess};
use crate::upload_helpers::{MotoServer, TrustMode, TrustStandIn, S3};

const RAW: &str = "leak-raw";
const GOLDEN: &str = "leak-golden";

/// One planted secret: where it goes and the exact value that must never appear.
struct Planted {
    file: &'static str,
    line: String,
    secret: String,
}

/// Values are assembled at run time, so this file holds no literal credential.
fn planted() -> Vec<Planted> {
    let j = |parts: &[&str]| parts.concat();
    let aws = j(&["AKIA", "Z7Q3W5E7R9T2Y4U6"]);
    let csrf = j(&["f3Kq9ZpL", "2mXv8RtY4wNc7"]);
    let github = j(&["ghp_", "Xb3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"]);
    let slack = j(&[
        "xoxb-",
        "223456789012-1234567890123-",
        "AbCdEfGhIjKlMnOpQrStUvWx",
    ]);
    let stripe = j(&["sk_live_", "51HqLyjK2eZvKYlo2C8nR4tZ"]);
    let openai = j(&[
        "sk-proj-",
        "Rq7vK2mQx9LwT4zN8bY3cF6hJ1pS5dG0aE7uW2iO4kM9nB6vC3xZ",
    ]);
    let anthropic = j(&[
        "sk-ant-api03-",
        "Zq8vW3nR6tY1uI4oP7aS2dF5gH8jK1lZ4xC7vB0nM3qW6eR9tY2uI5oP8aS1dF4gH7jK0lZ3xC6vB9nM2q-",
        "AbCdEfAA",
    ]);
    let env_password = j(&["Xk9mP2vL", "7qR4wZ8sT"]);
    let bandit_password = j(&["hunter2-", "Q8vN3kL5"]);
    let db_password = j(&["Zq8vW3n", "R6tY1pK"]);
    let bearer = j(&[
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",
        "eyJzdWIiOiJjaS1ib3QiLCJpYXQiOjE3MDAwMDAwMDB9.",
        "Qm9yZGVyQ29sbGllU2lnbmF0dXJlMTIzNDU2Nzg5MA",
    ]);
    let pem_line = j(&[
        "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi",
        "ZvVSezkGd1Kp7Q8vN3kL5Zq8vW3nR6tY1uI4oP",
    ]);
    vec![
        Planted {
            file: ".env",
            line: format!("DB_PASSWORD={env_password}"),
            secret: env_password,
        },
        Planted {
            file: "settings.py",
            line: format!("password = \"{bandit_password}\""),
            secret: bandit_password,
        },
        Planted {
            file: "config.py",
            line: format!("client(key=\"{aws}\", csrf=\"{csrf}\")"),
            secret: aws,
        },
        Planted {
            file: "config2.py",
            line: format!("client(csrf_token=\"{csrf}\")"),
            secret: csrf,
        },
        Planted {
            file: "scripts/release.sh",
            line: format!("export GITHUB_TOKEN={github}"),
            secret: github,
        },
        Planted {
            file: "web/app.js",
            line: format!("const slack = \"{slack}\";"),
            secret: slack,
        },
        Planted {
            file: "billing.rb",
            line: format!("Stripe.api_key = '{stripe}'"),
            secret: stripe,
        },
        Planted {
            file: "deploy/values.yaml",
            line: format!("openai:\n  api_key: {openai}"),
            secret: openai,
        },
        Planted {
            file: "ai.env",
            line: format!("ANTHROPIC_API_KEY={anthropic}"),
            secret: anthropic,
        },
        Planted {
            file: "database.ini",
            line: format!("[db]\nurl = postgres://app:{db_password}@db.internal:5432/app"),
            secret: db_password,
        },
        Planted {
            file: "call.http",
            line: format!("GET https://api.example.com/v1/me\nAuthorization: Bearer {bearer}"),
            secret: bearer,
        },
        Planted {
            file: "keys/deploy_key",
            line: format!(
                "-----BEGIN RSA PRIVATE KEY-----\n{pem_line}\n{}\n-----END RSA PRIVATE KEY-----",
                "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
            ),
            secret: pem_line,
        },
    ]
}

/// Every place `needle` (or its tail past a 4-character clear prefix) occurs in `haystack`.
fn hits(needle: &str, haystack: &[u8]) -> bool {
    let tail: String = needle.chars().skip(4).collect();
    let found = |n: &str| !n.is_empty() && haystack.windows(n.len()).any(|w| w == n.as_bytes());
    found(needle) || (tail.len() >= 8 && found(&tail))
}

/// Collects (name, bytes) of everything to search.
struct Haystack(Vec<(String, Vec<u8>)>);

impl Haystack {
    fn add(&mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((name.into(), bytes.into()));
    }

    fn add_tree(&mut self, label: &str, dir: &Path) {
        for file in files_under(dir) {
            if let Ok(bytes) = std::fs::read(&file) {
                self.add(format!("{label}: {}", file.display()), bytes);
            }
        }
    }

    /// Panics with every (secret, place) pair found.
    fn assert_clean(&self, secrets: &[Planted]) {
        let mut found = Vec::new();
        for p in secrets {
            for (name, bytes) in &self.0 {
                if hits(&p.secret, bytes) {
                    found.push(format!("secret planted in {} found in {name}", p.file));
                }
            }
        }
        assert!(
            found.is_empty(),
            "secrets in clear ({} places searched):\n  {}",
            self.0.len(),
            found.join("\n  ")
        );
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let response = client.get(url).send().await.expect("the service answers");
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap_or_default().to_vec())
}

async fn wait_terminal(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, body) = get(client, &format!("{base}/v1/security-scans/{id}")).await;
        let scan: Value = serde_json::from_slice(&body).expect("a scan document");
        if scan["status"] == "SUCCEEDED" || scan["status"] == "FAILED" {
            return scan;
        }
        assert!(Instant::now() < deadline, "scan {id} did not end: {scan}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_uploaded(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = get(client, &format!("{base}/v1/security-scans/{id}")).await;
        let scan: Value = serde_json::from_slice(&body).expect("a scan document");
        if scan["upload_status"] == "uploaded" && scan["upload_in_progress"] == false {
            return scan;
        }
        assert!(
            scan["upload_status"] != "failed" && scan["upload_status"] != "denied",
            "upload of {id} did not succeed: {scan}"
        );
        assert!(
            Instant::now() < deadline,
            "upload of {id} did not end: {scan}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output_of_any_profile() {
    // Every external tool the suite installs (a missing one fails here, saying how to get it).
    let tools = crate::external_tools::tool_dir(&["bandit", "detect-secrets", "ruff", "semgrep"]);
    let tool_path = tools.path().display().to_string();
    let secrets = planted();
    let git = GitServer::start();
    let mut files: Vec<(String, String)> = Vec::new();
    for p in &secrets {
        files.push((p.file.to_string(), format!("{}\n", p.line)));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(f, c)| (f.as_str(), c.as_str()))
        .collect();
    git.create_repo("leaky", &refs);

    let moto = MotoServer::start();
    let s3 = S3::new(&moto.endpoint());
    s3.create_bucket(RAW).await;
    s3.create_bucket(GOLDEN).await;
    let trust = TrustStandIn::start(TrustMode::Permit).await;

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let log_path = dir.path().join("service.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let endpoint = moto.endpoint();
    let mut service = ServiceProcess::start_with_stdout(
        &data_dir,
        &[
            ("CERTUS_ASSURANCE_LOG_LEVEL", "debug"),
            ("CERTUS_ASSURANCE_TOOL_PATH", &tool_path),
            ("CERTUS_ASSURANCE_ENABLE_S3_UPLOAD", "true"),
            ("CERTUS_ASSURANCE_TRUST_BASE_URL", &trust.url),
            ("CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS", "10"),
            ("CERTUS_ASSURANCE_S3_ENDPOINT_URL", &endpoint),
            ("CERTUS_ASSURANCE_S3_ACCESS_KEY_ID", "testing"),
            ("CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY", "testing"),
            ("CERTUS_ASSURANCE_DATALAKE_RAW_BUCKET", RAW),
            ("CERTUS_ASSURANCE_DATALAKE_GOLDEN_BUCKET", GOLDEN),
        ],
        Stdio::from(log),
    );
    let base = service.address.clone();
    let client = reqwest::Client::new();
    let mut hay = Haystack(Vec::new());

    let mut ids = Vec::new();
    for profile in ["light", "standard", "polyglot", "sbom-only"] {
        let response = client
            .post(format!("{base}/v1/security-scans"))
            .json(&json!({
                "workspace_id": "leaks", "component_id": "leaky", "assessment_id": "a1",
                "git_url": git.url("leaky"), "branch": "main", "profile": profile,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202, "submit {profile}");
        let body = response.bytes().await.unwrap().to_vec();
        let id = serde_json::from_slice::<Value>(&body).unwrap()["test_id"]
            .as_str()
            .unwrap()
            .to_string();
        hay.add(format!("submit answer ({profile})"), body);
        ids.push((profile, id));
    }
    for (profile, id) in &ids {
        let scan = wait_terminal(&client, &base, id).await;
        assert_eq!(scan["status"], "SUCCEEDED", "{profile}: {scan}");
        if *profile == "standard" {
            // The external tools really ran over the secrets.
            let scanners = scan["scanners"].as_array().cloned().unwrap_or_else(|| {
                let summary: Value = serde_json::from_slice(
                    &std::fs::read(service_artifacts(&data_dir).join(id).join("summary.json"))
                        .unwrap(),
                )
                .unwrap();
                summary["scanners"].as_array().cloned().unwrap_or_default()
            });
            for tool in ["bandit", "detect-secrets", "ruff", "semgrep"] {
                let ran = scanners
                    .iter()
                    .any(|s| s["name"] == tool && s["status"] == "succeeded");
                assert!(
                    ran,
                    "{tool} did not run in the standard profile: {scanners:?}"
                );
            }
        }
        let upload = client
            .post(format!("{base}/v1/security-scans/{id}/upload-request"))
            .json(&json!({"tier": "basic"}))
            .send()
            .await
            .unwrap();
        let status = upload.status().as_u16();
        let body = upload.bytes().await.unwrap().to_vec();
        assert!(
            status == 202 || status == 200,
            "upload of {profile}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        hay.add(format!("upload answer ({profile})"), body);
        wait_uploaded(&client, &base, id).await;
        for path in [
            format!("/v1/security-scans/{id}"),
            format!("/v1/security-scans/{id}/findings?limit=500"),
            format!("/v1/security-scans/{id}/findings?suppressed=true&limit=500"),
            format!("/v1/security-scans/{id}/artifacts"),
        ] {
            let (_, body) = get(&client, &format!("{base}{path}")).await;
            hay.add(format!("GET {path}"), body);
        }
        // Every bundle file through the artifacts route too, where it exists.
        let (status, body) = get(&client, &format!("{base}/v1/security-scans/{id}")).await;
        assert_eq!(status, 200);
        let scan: Value = serde_json::from_slice(&body).unwrap();
        for file in scan["artifacts"].as_array().cloned().unwrap_or_default() {
            let file = file.as_str().unwrap_or_default();
            let path = format!("/v1/security-scans/{id}/artifacts/{file}");
            let (_, body) = get(&client, &format!("{base}{path}")).await;
            hay.add(format!("GET {path}"), body);
        }
    }
    let (_, list) = get(&client, &format!("{base}/v1/security-scans?limit=50")).await;
    hay.add("GET /v1/security-scans", list);
    let (_, metrics) = get(&client, &format!("{base}/metrics")).await;
    hay.add("GET /metrics", metrics);
    let (_, stats) = get(&client, &format!("{base}/stats")).await;
    hay.add("GET /stats", stats);
    // Every event as a WebSocket client receives it, for one finished scan of each profile.
    for (profile, id) in &ids {
        let ws = format!(
            "{}/v1/security-scans/{id}/stream",
            base.replacen("http://", "ws://", 1)
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.expect("stream");
        let mut frames = Vec::new();
        use futures_util::StreamExt;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(10), socket.next()).await
        {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                frames.extend_from_slice(text.as_bytes());
                frames.push(b'\n');
            }
        }
        assert!(!frames.is_empty(), "no events replayed for {profile}");
        hay.add(format!("WebSocket events ({profile})"), frames);
    }

    for bucket in [RAW, GOLDEN] {
        let objects = s3.objects(bucket).await;
        assert!(!objects.is_empty(), "nothing was uploaded to {bucket}");
        for (key, _) in objects {
            let bytes = s3.get(bucket, &key).await;
            hay.add(format!("s3://{bucket}/{key}"), bytes);
        }
    }
    for (_, request) in trust.requests() {
        hay.add("request sent to Trust", request.to_string());
    }

    service.terminate();
    hay.add_tree("data directory", &data_dir);
    hay.add("service log", std::fs::read(&log_path).unwrap());

    // The scan command over a checkout of the same tree, in each output format.
    let checkout = dir.path().join("checkout");
    let status = Command::new("git")
        .args(["clone", "-q", &git.repo_path("leaky").display().to_string()])
        .arg(&checkout)
        .status()
        .unwrap();
    assert!(status.success());
    for format in ["table", "json", "sarif"] {
        let out = dir.path().join(format!("cli-{format}"));
        let output = Command::new(env!("CARGO_BIN_EXE_certus-assurance"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CERTUS_ASSURANCE_TOOL_PATH", &tool_path)
            .args(["scan", checkout.to_str().unwrap(), "--profile", "standard"])
            .args(["--out", out.to_str().unwrap(), "--format", format])
            .output()
            .expect("the scan command runs");
        assert!(
            output.status.code().is_some_and(|c| c == 0 || c == 1),
            "scan --format {format}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        hay.add(format!("scan --format {format}: stdout"), output.stdout);
        hay.add(format!("scan --format {format}: stderr"), output.stderr);
        hay.add_tree(&format!("scan --format {format}: bundle"), &out);
    }

    hay.assert_clean(&secrets);
}

/// The artifact root of a service started with only a data directory.
fn service_artifacts(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("artifacts")
}
