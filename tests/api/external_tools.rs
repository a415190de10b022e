//! External tools run for real through the service: semgrep (offline, with the rules the
//! service ships and the tree's own), and the `standard` profile with bandit, detect-secrets,
//! ruff and semgrep over planted secrets, with every byte the scan produced searched for them.
//! The tools must be installed (scripts/install-test-deps.sh); a missing one fails the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    planted_aws_key, planted_github_token, scan_body, spawn_app_with, validate_schemas, GitServer,
    TestApp,
};
use crate::scanning::{read_json, results};

/// Where scripts/install-test-deps.sh puts semgrep (a virtualenv of its own).
fn semgrep_venv() -> PathBuf {
    std::env::var_os("CERTUS_TEST_SEMGREP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/certus-assurance/semgrep-venv")
        })
}

/// A directory holding wrappers for the named tools only, used as the service's tool PATH.
/// semgrep is looked for in its virtualenv first, then on PATH.
pub fn tool_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        let venv = semgrep_venv().join("bin").join(name);
        let real = (*name == "semgrep" && venv.is_file())
            .then_some(venv)
            .or_else(|| {
                std::env::split_paths(&path)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| {
                panic!("`{name}` is not installed; run scripts/install-test-deps.sh")
            });
        let wrapper = dir.path().join(name);
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec '{}' \"$@\"\n", real.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Every file under `dir` with its content.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    crate::helpers::files_under(dir)
        .into_iter()
        .map(|p| {
            let content = std::fs::read(&p).unwrap();
            (p, content)
        })
        .collect()
}

/// The scan's events as the stream replays them (the whole history: the limit is raised).
async fn events(app: &TestApp, id: &str) -> Vec<String> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(app.ws_url(&format!("/v1/security-scans/{id}/stream")))
            .await
            .expect("websocket handshake");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the stream ends in time")
        {
            Some(Ok(Message::Text(text))) => out.push(text.to_string()),
            Some(Ok(Message::Close(_))) | None => return out,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("stream error: {e}"),
        }
    }
}

fn spawn_with_tools(tools: &tempfile::TempDir) -> impl std::future::Future<Output = TestApp> {
    let tool_path = tools.path().as_os_str().to_owned();
    spawn_app_with(move |c| {
        c.scanning.tool_path = Some(tool_path);
        c.queue.stream_history_limit = 100_000;
    })
}

/// The tree's own semgrep rule: its message interpolates the matched value.
const TREE_SEMGREP_RULES: &str = r#"rules:
  - id: tree-hardcoded-secret
    languages: [python]
    severity: ERROR
    message: Hard-coded secret $VALUE
    metadata:
      confidence: HIGH
      impact: HIGH
    pattern: connect(..., password="$VALUE", ...)
"#;

#[tokio::test]
async fn semgrep_runs_offline_with_the_shipped_rules_and_the_trees_own() {
    // Low entropy on purpose: mask_secrets alone would not hide it; the rule template does.
    let password = format!("{}-{}", "correct-horse", "battery-staple");
    let app_py = format!(
        "import hashlib\nimport subprocess\n\nsubprocess.call(\"ls \" + user_dir, shell=True)\ndigest = hashlib.md5(data)\nconn = connect(host=\"db\", password=\"{password}\")\n"
    );
    let git = GitServer::start();
    git.create_repo(
        "sem",
        &[
            ("app.py", app_py.as_str()),
            (
                "web/run.js",
                "const cp = require('child_process');\ncp.exec('ls ' + dir);\n",
            ),
            (".semgrep.yml", TREE_SEMGREP_RULES),
        ],
    );
    let tools = tool_dir(&["semgrep"]);
    let app = spawn_with_tools(&tools).await;
    let mut body = scan_body(&git.url("sem"));
    body["profile"] = json!("sem");
    body["manifest"] = json!({"profiles": {"sem": {"extends": "light", "scanners": ["semgrep"], "required": ["semgrep"]}}});
    let id = app.submit_scan(body).await;
    let scan = app
        .wait_for_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(300))
        .await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let dir = app.artifact_dir(&id);

    let sarif = read_json(&dir.join("reports/sast/semgrep.sarif.json"));
    let found: Vec<(String, String, u64, String)> = results(&sarif)
        .iter()
        .map(|r| {
            let loc = &r["locations"][0]["physicalLocation"];
            (
                r["ruleId"].as_str().unwrap().to_string(),
                loc["artifactLocation"]["uri"].as_str().unwrap().to_string(),
                loc["region"]["startLine"].as_u64().unwrap(),
                r["properties"]["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |rule: &str, path: &str, line: u64, severity: &str| {
        assert!(
            found
                .iter()
                .any(|f| f == &(rule.into(), path.into(), line, severity.into())),
            "{rule} at {path}:{line} ({severity}) in {found:?}"
        );
    };
    // Shipped rules, ids without the scratch directory's prefix; severity from the table
    // (ERROR + impact HIGH = high; impact LOW = low).
    expect("python-subprocess-shell-true", "app.py", 4, "high");
    expect("python-weak-hash", "app.py", 5, "low");
    expect("python-hardcoded-credential-argument", "app.py", 6, "high");
    expect("js-child-process-exec", "web/run.js", 2, "high");
    // The tree's own rule.
    expect("tree-hardcoded-secret", "app.py", 6, "high");
    let tree_rule = results(&sarif)
        .into_iter()
        .find(|r| r["ruleId"] == "tree-hardcoded-secret")
        .unwrap();
    assert_eq!(
        tree_rule["message"]["text"], "Hard-coded secret $VALUE",
        "the template, not the interpolated value"
    );
    for r in results(&sarif) {
        let fp = r["partialFingerprints"]["semgrepFingerprint/v1"]
            .as_str()
            .unwrap();
        assert_eq!(fp.len(), 64);
    }
    let text = sarif.to_string();
    assert!(
        !text.contains("requires login"),
        "semgrep's placeholder fingerprint"
    );
    assert!(
        !text.contains("/work") && !text.contains("/tmp"),
        "a server path: {text}"
    );

    for (path, content) in all_files(&dir) {
        assert!(
            !String::from_utf8_lossy(&content).contains(&password),
            "{} holds the password in clear",
            path.display()
        );
    }
    let scan_json = read_json(&dir.join("scan.json"));
    let semgrep = scan_json["scanners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "semgrep")
        .cloned()
        .unwrap();
    assert_eq!(semgrep["status"], "succeeded", "{semgrep}");
    assert_eq!(semgrep["findings"], json!(found.len()), "{semgrep}");
}

#[tokio::test]
async fn planted_secrets_never_leave_the_standard_profile_in_clear() {
    // Secrets of several shapes, each where bandit (B105–B107), detect-secrets, ruff (S105–S107),
    // semgrep (a tree rule interpolating the value) or the built-in scanner reports it. All are
    // assembled at run time: this file holds no literal credential.
    let aws = planted_aws_key();
    let github = planted_github_token();
    let variable_password = format!("{}{}", "Wq7rTz2m", "Kx9pLs4v");
    let weak_token = format!("{}{}", "hunter2", "hunter2");
    let default_password = format!("{}{}", "Fj3kLm8n", "Pq2rSt6u");
    let argument_password = format!("{}-{}", "correct-horse", "battery-staple");
    let env_password = format!("{}{}", "pl41nT3xt", "Passw0rd");
    let url_password = format!("{}{}", "Sup3rS3cret", "UrlPw");
    let key_body = format!(
        "{}{}",
        "MIIEowIBAAKCAQEAr7QmV2xP9sLk3Hn8Tq4Wz6Yb1Uc5Rd0Ef",
        "Jg2Kh7Li3Mj8Nk4Ol9Pm5Qn0Ro6Sp1Tq7Ur2Vs8Wt3Xu9Yv4Zw"
    );
    let secrets = [
        aws.clone(),
        github.clone(),
        variable_password.clone(),
        weak_token.clone(),
        default_password.clone(),
        argument_password.clone(),
        env_password.clone(),
        url_password.clone(),
        key_body.clone(),
    ];
    let creds_py = format!(
        "import subprocess\n\npassword = \"{variable_password}\"\nDB_TOKEN = \"{weak_token}\"\n\n\ndef login(user, passwd=\"{default_password}\"):\n    assert user\n    return connect(host=\"db\", password=\"{argument_password}\")\n\n\nsubprocess.call(\"ls \" + user, shell=True)\n"
    );
    let settings_py = format!(
        "AWS_ACCESS_KEY_ID = \"{aws}\"\nGITHUB_TOKEN = \"{github}\"\nDATABASE_URL = \"postgres://app:{url_password}@db:5432/prod\"\n"
    );
    let env = format!("DB_PASSWORD={env_password}\n");
    let pem =
        format!("-----BEGIN RSA PRIVATE KEY-----\n{key_body}\n-----END RSA PRIVATE KEY-----\n");
    let git = GitServer::start();
    git.create_repo(
        "planted",
        &[
            ("app/creds.py", creds_py.as_str()),
            ("app/settings.py", settings_py.as_str()),
            (".env", env.as_str()),
            ("deploy/key.pem", pem.as_str()),
            (".semgrep.yml", TREE_SEMGREP_RULES),
        ],
    );
    let tools = tool_dir(&["bandit", "detect-secrets", "ruff", "semgrep"]);
    let app = spawn_with_tools(&tools).await;
    let mut body = scan_body(&git.url("planted"));
    body["profile"] = json!("standard");
    let id = app.submit_scan(body).await;
    let scan = app
        .wait_for_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(300))
        .await;
    let dir = app.artifact_dir(&id);

    // Every tool ran and found something: the search below looks at real output.
    let scan_json = read_json(&dir.join("scan.json"));
    for tool in ["bandit", "detect-secrets", "ruff", "semgrep"] {
        let entry = scan_json["scanners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == tool)
            .cloned()
            .unwrap_or_else(|| panic!("{tool} missing: {scan_json}"));
        assert_eq!(entry["status"], "succeeded", "{entry}");
        assert!(entry["findings"].as_u64().unwrap() >= 1, "{entry}");
    }
    let bandit = read_json(&dir.join("reports/sast/bandit.sarif.json"));
    for rule in ["B105", "B106", "B107"] {
        assert!(
            results(&bandit).iter().any(|r| r["ruleId"] == rule),
            "bandit reports {rule}"
        );
    }
    let ruff = read_json(&dir.join("reports/sast/ruff.sarif.json"));
    for rule in ["S105", "S106", "S107"] {
        assert!(
            results(&ruff).iter().any(|r| r["ruleId"] == rule),
            "ruff reports {rule}"
        );
    }
    let mut args = vec![std::ffi::OsString::from("sarif")];
    for tool in ["bandit", "detect-secrets", "ruff", "semgrep"] {
        args.push(
            dir.join(format!("reports/sast/{tool}.sarif.json"))
                .into_os_string(),
        );
    }
    let (ok, out) = validate_schemas(&args);
    assert!(ok, "SARIF schema violations:\n{out}");
    let ds = read_json(&dir.join("reports/sast/detect-secrets.sarif.json"));
    let ds_rules: Vec<String> = results(&ds)
        .iter()
        .map(|r| r["ruleId"].as_str().unwrap().to_string())
        .collect();
    for rule in ["aws-access-key", "private-key", "secret-keyword"] {
        assert!(ds_rules.iter().any(|r| r == rule), "{rule}: {ds_rules:?}");
    }
    let severity_of = |rule: &str| {
        results(&ds)
            .into_iter()
            .find(|r| r["ruleId"] == rule)
            .map(|r| r["properties"]["severity"].clone())
    };
    assert_eq!(severity_of("private-key"), Some(json!("critical")));
    assert_eq!(severity_of("aws-access-key"), Some(json!("high")));

    // Every byte the scan produced: the bundle (all files, including stream.jsonl and
    // logs/runner.log), the events as the stream replays them, the scan resource, the metrics.
    let mut haystacks: Vec<(String, String)> = all_files(&dir)
        .into_iter()
        .map(|(p, c)| {
            (
                p.display().to_string(),
                String::from_utf8_lossy(&c).into_owned(),
            )
        })
        .collect();
    assert!(haystacks.iter().any(|(p, _)| p.ends_with("stream.jsonl")));
    assert!(haystacks
        .iter()
        .any(|(p, _)| p.ends_with("logs/runner.log")));
    let events = events(&app, &id).await;
    assert!(events.iter().any(|e| e.contains("\"tool_complete\"")));
    haystacks.push(("events".into(), events.join("\n")));
    haystacks.push(("scan resource".into(), scan.to_string()));
    haystacks.push(("metrics".into(), app.metrics_text().await));
    for (name, text) in &haystacks {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{name} holds a planted secret in clear"
            );
        }
        // Neither any long-enough part of one (a secret cut by a snippet limit).
        for secret in &secrets {
            let chars: Vec<char> = secret.chars().collect();
            for window in chars.windows(12) {
                let part: String = window.iter().collect();
                assert!(
                    !text.contains(&part),
                    "{name} holds part of a planted secret: {part}"
                );
            }
        }
    }
}

/// gitleaks, trivy and osv-scanner cannot be installed here: their adapters are checked against
/// reports recorded after each tool's documented SARIF output (tests/data/tool-reports/).
#[test]
fn recorded_reports_of_tools_not_installable_here_become_schema_valid_sarif() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tool-reports");
    let out_dir = tempfile::tempdir().unwrap();
    let mut args = vec![std::ffi::OsString::from("sarif")];
    for tool in ["gitleaks", "trivy", "osv-scanner", "ruff"] {
        let raw = std::fs::read(data.join(format!("{tool}.sarif.json"))).unwrap();
        let source = if tool == "ruff" {
            "/tmp/certus-semgrep/src"
        } else {
            "/work/scan/src"
        };
        let (sarif, counts) = certus_assurance::pipeline::scanners::external::tool_sarif(
            Some(tool),
            &raw,
            Path::new(source),
        )
        .unwrap_or_else(|e| panic!("{tool}: {e:#}"));
        assert_eq!(counts.total, results(&sarif).len() as u64, "{tool}");
        assert!(counts.total >= 2, "{tool}");
        let path = out_dir.path().join(format!("{tool}.sarif.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&sarif).unwrap()).unwrap();
        args.push(path.into_os_string());
    }
    let (ok, out) = validate_schemas(&args);
    assert!(ok, "SARIF schema violations:\n{out}");
}

#[tokio::test]
async fn an_invalid_semgrep_rule_in_the_tree_fails_semgrep_saying_what_is_wrong() {
    let git = GitServer::start();
    git.create_repo(
        "badrules",
        &[
            ("a.py", "foo(1)\n"),
            (".semgrep.yml", "rules:\n  - id: x\n    pattern: foo(...)\n"),
        ],
    );
    let tools = tool_dir(&["semgrep"]);
    let app = spawn_with_tools(&tools).await;
    let mut body = scan_body(&git.url("badrules"));
    body["profile"] = json!("sem");
    body["manifest"] = json!({"profiles": {"sem": {"extends": "light", "scanners": ["semgrep"], "required": ["semgrep"]}}});
    let id = app.submit_scan(body).await;
    let scan = app
        .wait_for_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(300))
        .await;
    assert_eq!(scan["status"], "FAILED", "{scan}");
    assert_eq!(scan["failure_reason"], "scanner_failed", "{scan}");
    let error = scan["errors"][0].as_str().unwrap();
    assert!(
        error.contains("tool `semgrep` failed")
            && error.contains(".semgrep.yml: One of these properties is missing: 'message'"),
        "{error}"
    );
}
