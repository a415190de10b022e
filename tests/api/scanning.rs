//! The scanning engine end to end: generated corpora scanned through the real service, with
//! exact detection, schema-valid reports, a verifiable attestation, real external tools, and
//! the three source types.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::corpus::{self, lockfile_corpus, secrets_corpus, write_osv_fixture, write_tree, PINS};
use crate::helpers::{
    files_under, sample, scan_body, spawn_app_with, validate_schemas, GitServer, TestApp,
};

pub(crate) fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

async fn finish(app: &TestApp, id: &str) -> Value {
    app.wait_for_state(id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120))
        .await
}

pub(crate) fn results(sarif: &Value) -> Vec<Value> {
    sarif["runs"][0]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every file of a bundle with its content.
pub(crate) fn bundle_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = files_under(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let content = std::fs::read(&p).unwrap();
            (rel, content)
        })
        .collect::<Vec<_>>();
    out.sort();
    out
}

/// Runs the vendored-schema validator on `files`; returns (success, output).
fn validate(kind: &str, files: &[PathBuf]) -> (bool, String) {
    let mut args = vec![std::ffi::OsString::from(kind)];
    args.extend(files.iter().map(|f| f.clone().into_os_string()));
    validate_schemas(&args)
}

/// A directory holding wrappers for the named tools only (they must be installed: see
/// scripts/install-test-deps.sh), used as the service's tool PATH.
fn tool_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        let real = std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
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

/// A multipart upload of `bytes` for workspace `ws` (the workspace of [`ids`]).
pub(crate) fn multipart(bytes: &[u8], filename: &str) -> (String, Vec<u8>) {
    let boundary = "certus-test-boundary-7d2f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"workspace_id\"\r\n\r\nws\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(app: &TestApp, bytes: &[u8], filename: &str) -> (u16, Value) {
    let (content_type, body) = multipart(bytes, filename);
    let response = app
        .client
        .post(app.url("/v1/security-scans/upload-archive"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn ids(body: Value) -> Value {
    let mut b = json!({"workspace_id": "ws", "component_id": "svc", "assessment_id": "rel-1"});
    for (k, v) in body.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

// ----- Secrets ----------------------------------------------------------------------------------

#[tokio::test]
async fn planted_secrets_of_every_family_are_found_exactly_and_never_written_in_clear() {
    let corpus = secrets_corpus(11);
    let git = GitServer::start();
    let files: Vec<(&str, &str)> = corpus
        .files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    git.create_repo("planted", &files);
    let app = spawn_app_with(|_| {}).await;
    let id = app.submit_scan(scan_body(&git.url("planted"))).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");

    let dir = app.artifact_dir(&id);
    let sarif = read_json(&dir.join("reports/sast/secrets.sarif.json"));
    let found: BTreeSet<(String, String, u32)> = results(&sarif)
        .iter()
        .map(|r| {
            let loc = &r["locations"][0]["physicalLocation"];
            (
                r["ruleId"].as_str().unwrap().to_string(),
                loc["artifactLocation"]["uri"].as_str().unwrap().to_string(),
                loc["region"]["startLine"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    let expected = corpus.expected();
    let missed: Vec<_> = expected.difference(&found).collect();
    let extra: Vec<_> = found.difference(&expected).collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "missed {missed:?}\nreported but not planted {extra:?}"
    );
    // Every rule family is covered by the corpus.
    let families: BTreeSet<&str> = corpus.planted.iter().map(|p| p.rule).collect();
    for (rule, _, _) in certus_assurance::pipeline::scanners::secrets::SecretsScanner::rules() {
        assert!(families.contains(rule), "no planted secret for {rule}");
    }
    // No planted value appears in clear anywhere in the bundle.
    for (name, content) in bundle_files(&dir) {
        let text = String::from_utf8_lossy(&content);
        for p in &corpus.planted {
            assert!(
                !text.contains(&p.value),
                "{name} holds the {} secret in clear",
                p.rule
            );
        }
    }
    // Without an OSV database the vulnerability scanner says so instead of reporting 0.
    let scan_json = read_json(&dir.join("scan.json"));
    let vulns = scan_json["scanners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "vulnerabilities")
        .unwrap()
        .clone();
    assert_eq!(vulns["status"], "skipped", "{vulns}");
    assert!(scan_json["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("CERTUS_ASSURANCE_OSV_DB_DIR")));
    assert!(!dir.join("reports/sast/vulnerabilities.sarif.json").exists());
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(
        summary["findings"]["by_scanner"]["secrets"]["total"],
        corpus.planted.len()
    );
    assert!(summary["findings"]["by_scanner"]
        .get("vulnerabilities")
        .is_none());
    let text = app.metrics_text().await;
    let runs = |scanner: &str, outcome: &str| {
        sample(
            &text,
            "certus_assurance_scanner_runs_total",
            &[("scanner", scanner), ("outcome", outcome)],
        )
    };
    assert_eq!(runs("secrets", "success"), Some(1.0));
    assert_eq!(runs("sbom", "success"), Some(1.0));
    assert_eq!(runs("vulnerabilities", "skipped"), Some(1.0));
    assert_eq!(runs("vulnerabilities", "success"), Some(0.0));
    assert_eq!(
        runs("bandit", "skipped"),
        Some(0.0),
        "light runs no external tool"
    );
    for (scanner, outcome) in [("secrets", "success"), ("vulnerabilities", "skipped")] {
        assert_eq!(
            sample(
                &text,
                "certus_assurance_scanner_duration_seconds_count",
                &[("scanner", scanner), ("outcome", outcome)]
            ),
            Some(1.0),
            "{scanner} {outcome}"
        );
    }
    for phase in ["clone", "scan", "bundle"] {
        assert_eq!(
            sample(
                &text,
                "certus_assurance_scan_phase_duration_seconds_count",
                &[("phase", phase)]
            ),
            Some(1.0),
            "{phase}"
        );
    }
    let secrets_total: f64 = ["critical", "high", "medium", "low", "info"]
        .iter()
        .map(|sev| {
            sample(
                &text,
                "certus_assurance_findings_total",
                &[("severity", sev), ("scanner", "secrets")],
            )
            .unwrap()
        })
        .sum();
    assert_eq!(secrets_total, corpus.planted.len() as f64);
}

// ----- SBOM and known vulnerabilities -------------------------------------------------------

#[tokio::test]
async fn lockfiles_of_every_ecosystem_are_matched_against_the_osv_fixture_exactly() {
    let roots = tempfile::tempdir().unwrap();
    let project = roots.path().join("project");
    write_tree(&project, &lockfile_corpus());
    let osv = tempfile::tempdir().unwrap();
    write_osv_fixture(osv.path());
    let root = roots.path().canonicalize().unwrap();
    let osv_dir = osv.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.source.source_roots = vec![root];
        c.scanning.osv_db_dir = Some(osv_dir);
    })
    .await;
    let body = ids(
        json!({"source_type": "directory", "directory_path": project.to_str().unwrap(), "profile": "light"}),
    );
    let id = app.submit_scan(body).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let dir = app.artifact_dir(&id);

    // The SBOM lists every pinned package with its purl, and nothing else.
    let cdx = read_json(&dir.join("reports/sbom/sbom.cyclonedx.json"));
    let purls: BTreeSet<String> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["purl"].as_str().unwrap().to_string())
        .collect();
    let expected_purls: BTreeSet<String> = PINS
        .iter()
        .map(|p| {
            let eco =
                certus_assurance::pipeline::sbom::Ecosystem::from_osv_name(p.ecosystem).unwrap();
            certus_assurance::pipeline::sbom::purl(eco, p.name, p.version)
        })
        .collect();
    assert_eq!(purls, expected_purls);
    let spdx = read_json(&dir.join("reports/sbom/sbom.spdx.json"));
    assert_eq!(spdx["packages"].as_array().unwrap().len(), PINS.len() + 1);

    // Every vulnerable version is flagged by its advisory; no fixed version is.
    let sarif = read_json(&dir.join("reports/sast/vulnerabilities.sarif.json"));
    let found: BTreeSet<(String, String, String)> = results(&sarif)
        .iter()
        .map(|r| {
            (
                r["ruleId"].as_str().unwrap().to_string(),
                r["properties"]["package"].as_str().unwrap().to_string(),
                r["properties"]["installed_version"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = PINS
        .iter()
        .filter_map(|p| {
            p.advisory
                .map(|a| (a.to_string(), p.name.to_string(), p.version.to_string()))
        })
        .collect();
    assert_eq!(found, expected);
    let lodash = results(&sarif)
        .into_iter()
        .find(|r| r["ruleId"] == "GHSA-35jh-r3h4-6jhm")
        .unwrap();
    assert_eq!(lodash["properties"]["aliases"], json!(["CVE-2021-23337"]));
    assert_eq!(lodash["properties"]["fixed_versions"], json!(["4.17.21"]));
    assert_eq!(lodash["properties"]["severity"], "high");
    assert_eq!(
        lodash["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "web/package-lock.json"
    );
    assert!(lodash["message"]["text"]
        .as_str()
        .unwrap()
        .contains("CVE-2021-23337"));
    let time = results(&sarif)
        .into_iter()
        .find(|r| r["ruleId"] == "RUSTSEC-2020-0071")
        .unwrap();
    assert_eq!(
        time["properties"]["severity"], "medium",
        "CVSS 5.9 from the vector"
    );

    // Provenance of a directory scan: the content hash of what was scanned.
    let expected_hash = certus_assurance::pipeline::source::directory::hash_directory(
        &project,
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap()
    .id;
    let scan = app.scan(&id).await;
    assert_eq!(scan["provenance"]["type"], "directory_sha256");
    assert_eq!(scan["provenance"]["id"], expected_hash);
    assert_eq!(
        read_json(&dir.join("scan.json"))["source"]["provenance_id"],
        expected_hash
    );
    // Nine critical/high/medium findings exceed light's thresholds: SUCCEEDED, policy failed.
    assert_eq!(scan["policy"]["passed"], false, "{}", scan["policy"]);
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scans_submitted_total",
            &[("profile", "light"), ("source_type", "directory")]
        ),
        Some(1.0)
    );
}

// ----- Bundle formats and attestation -------------------------------------------------------

#[tokio::test]
async fn bundle_reports_validate_against_their_schemas_and_the_attestation_verifies() {
    let corpus = secrets_corpus(5);
    let mut files = corpus.files.clone();
    files.extend(lockfile_corpus());
    files.push((
        "app/handlers.py".into(),
        "import subprocess\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n".into(),
    ));
    let git = GitServer::start();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    git.create_repo("bundle", &refs);
    let osv = tempfile::tempdir().unwrap();
    write_osv_fixture(osv.path());
    let keys = tempfile::tempdir().unwrap();
    let seed = [42u8; 32];
    std::fs::write(keys.path().join("signing.key"), hex::encode(seed)).unwrap();
    let tools = tool_dir(&["bandit", "detect-secrets"]);
    let (osv_dir, key_file, tool_path) = (
        osv.path().to_path_buf(),
        keys.path().join("signing.key"),
        tools.path().as_os_str().to_owned(),
    );
    let app = spawn_app_with(move |c| {
        c.scanning.osv_db_dir = Some(osv_dir);
        c.upload.signing_key_file = Some(key_file);
        c.scanning.tool_path = Some(tool_path);
    })
    .await;
    let mut body = scan_body(&git.url("bundle"));
    body["profile"] = json!("standard");
    let id = app.submit_scan(body).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let dir = app.artifact_dir(&id);

    let sarifs: Vec<PathBuf> = ["secrets", "vulnerabilities", "bandit", "detect-secrets"]
        .iter()
        .map(|s| dir.join(format!("reports/sast/{s}.sarif.json")))
        .collect();
    for s in &sarifs {
        assert!(s.exists(), "{} missing", s.display());
    }
    let (ok, out) = validate("sarif", &sarifs);
    assert!(ok, "SARIF schema violations:\n{out}");
    let (ok, out) = validate("spdx", &[dir.join("reports/sbom/sbom.spdx.json")]);
    assert!(ok, "SPDX schema violations:\n{out}");
    let (ok, out) = validate("cyclonedx", &[dir.join("reports/sbom/sbom.cyclonedx.json")]);
    assert!(ok, "CycloneDX schema violations:\n{out}");
    // The validator does reject a broken document, so the checks above can fail.
    let broken = dir.parent().unwrap().join("broken.spdx.json");
    let mut doc = read_json(&dir.join("reports/sbom/sbom.spdx.json"));
    doc.as_object_mut().unwrap().remove("spdxVersion");
    doc["packages"][1]["SPDXID"] = json!("not an id");
    std::fs::write(&broken, doc.to_string()).unwrap();
    assert!(!validate("spdx", &[broken]).0);

    // The attestation: a DSSE envelope over an in-toto statement naming every bundle file.
    let env = read_json(&dir.join("reports/signing/attestation.intoto.json"));
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(env["payload"].as_str().unwrap()).unwrap();
    let sig = b64
        .decode(env["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    use ring::signature::KeyPair;
    let signing = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let verifying = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        signing.public_key().as_ref().to_vec(),
    );
    assert_eq!(
        env["signatures"][0]["keyid"],
        hex::encode(Sha256::digest(signing.public_key().as_ref()))
    );
    let mut pae = format!(
        "DSSEv1 {} application/vnd.in-toto+json {} ",
        "application/vnd.in-toto+json".len(),
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(&payload);
    verifying
        .verify(&pae, &sig)
        .expect("the signature verifies with the configured key's public half");
    let statement: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicate"]["test_id"], id);
    let subjects: Vec<(String, String)> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["digest"]["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let on_disk: Vec<(String, String)> = bundle_files(&dir)
        .into_iter()
        .filter(|(n, _)| n != "stream.jsonl" && n != "reports/signing/attestation.intoto.json")
        .map(|(n, c)| (n, hex::encode(Sha256::digest(&c))))
        .collect();
    assert_eq!(
        subjects, on_disk,
        "subjects are every bundle file with its digest"
    );
    for expected in [
        "scan.json",
        "summary.json",
        "logs/runner.log",
        "reports/sbom/sbom.spdx.json",
        "reports/sbom/sbom.cyclonedx.json",
        "reports/sast/bandit.sarif.json",
    ] {
        assert!(subjects.iter().any(|(n, _)| n == expected), "{expected}");
    }
    // The scan resource lists the attestation among the artifacts.
    let artifacts = scan["artifacts"].as_array().unwrap();
    assert!(artifacts
        .iter()
        .any(|a| a == "reports/signing/attestation.intoto.json"));
    // Every file of this full bundle is in docs/scanning.md's bundle table.
    crate::docs::assert_bundle_documented(&dir);
}

// ----- External tools -----------------------------------------------------------------------

#[tokio::test]
async fn installed_tools_run_for_real_and_missing_ones_are_skipped_with_a_warning() {
    let git = GitServer::start();
    let key = corpus::Rng::new(3).string(16, corpus::UPPER_DIGITS);
    let aws = format!("AKIA{key}");
    git.create_repo(
        "py",
        &[
            (
                "app.py",
                &format!("import subprocess\n\nAWS_KEY = \"{aws}\"\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n"),
            ),
            ("README.md", "demo"),
        ],
    );
    let tools = tool_dir(&["bandit", "detect-secrets"]);
    let tool_path = tools.path().as_os_str().to_owned();
    let app = spawn_app_with(move |c| c.scanning.tool_path = Some(tool_path)).await;
    let mut body = scan_body(&git.url("py"));
    body["profile"] = json!("standard");
    let id = app.submit_scan(body).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let dir = app.artifact_dir(&id);

    let bandit = read_json(&dir.join("reports/sast/bandit.sarif.json"));
    let rules: BTreeSet<String> = results(&bandit)
        .iter()
        .map(|r| r["ruleId"].as_str().unwrap().to_string())
        .collect();
    assert!(
        rules.contains("B602"),
        "subprocess with shell=True: {rules:?}"
    );
    assert!(rules.contains("B404"), "{rules:?}");
    let ds = read_json(&dir.join("reports/sast/detect-secrets.sarif.json"));
    let ds_results = results(&ds);
    assert!(
        ds_results.iter().any(|r| r["ruleId"] == "aws-access-key"
            && r["locations"][0]["physicalLocation"]["region"]["startLine"] == 3),
        "{ds_results:?}"
    );
    for (name, content) in bundle_files(&dir) {
        assert!(
            !String::from_utf8_lossy(&content).contains(&key),
            "{name} holds the secret in clear"
        );
    }
    let scan_json = read_json(&dir.join("scan.json"));
    let status_of = |n: &str| {
        scan_json["scanners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .map(|s| s["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status_of("bandit").as_deref(), Some("succeeded"));
    assert_eq!(status_of("detect-secrets").as_deref(), Some("succeeded"));
    assert_eq!(status_of("ruff").as_deref(), Some("skipped"));
    assert_eq!(status_of("semgrep").as_deref(), Some("skipped"));
    let warnings = scan_json["warnings"].to_string();
    assert!(
        warnings.contains("ruff: skipped: not installed"),
        "{warnings}"
    );
    assert!(warnings.contains("semgrep: skipped"), "{warnings}");
    let summary = read_json(&dir.join("summary.json"));
    assert!(
        summary["findings"]["by_scanner"]["bandit"]["total"]
            .as_u64()
            .unwrap()
            >= 2
    );

    // The gate fails closed: `standard` holds every scanner to success, so the tools that are
    // not installed (and the vulnerability scanner without a database) fail its policy.
    assert_eq!(scan["policy"]["passed"], false, "{}", scan["policy"]);
    let violations = scan["policy"]["violations"].as_array().unwrap();
    for skipped in ["ruff", "semgrep", "vulnerabilities"] {
        assert!(
            violations.iter().any(|v| v["kind"] == "scanner"
                && v["scanner"] == skipped
                && v["status"] == "skipped"
                && !v["reason"].as_str().unwrap().is_empty()),
            "{skipped}: {violations:?}"
        );
    }
    // The scan resource says how each scanner ended.
    let runs_listed = scan["scanners"].as_array().unwrap();
    let names: Vec<&str> = runs_listed
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "secrets",
            "sbom",
            "vulnerabilities",
            "bandit",
            "detect-secrets",
            "ruff",
            "semgrep"
        ],
        "run order"
    );
    for r in runs_listed {
        for field in [
            "kind",
            "status",
            "reason",
            "required",
            "duration_seconds",
            "findings",
        ] {
            assert!(r.get(field).is_some(), "{field} missing: {r}");
        }
        assert_eq!(r["required"], true, "no optional scanner in standard: {r}");
    }
    assert_eq!(summary["scanners"], scan["scanners"]);

    // The AWS key on line 3 is one finding seen by both secret scanners.
    let findings = read_json(&dir.join("reports/findings.json"));
    assert_eq!(findings["version"], 1);
    assert_eq!(findings["test_id"].as_str(), Some(id.as_str()));
    let at_line_3: Vec<&Value> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"] == "app.py" && f["line"] == 3)
        .collect();
    assert_eq!(at_line_3.len(), 1, "{at_line_3:?}");
    let aws_finding = at_line_3[0];
    assert_eq!(
        aws_finding["scanners"],
        json!(["detect-secrets", "secrets"])
    );
    assert_eq!(aws_finding["rules"]["detect-secrets"], "aws-access-key");
    assert!(aws_finding["fingerprints"].as_array().unwrap().len() >= 2);
    assert!(aws_finding["fingerprints"]
        .as_array()
        .unwrap()
        .contains(&aws_finding["fingerprint"]));
    assert_eq!(aws_finding["suppressed"], false);
    assert!(aws_finding["snippet"].as_str().unwrap().contains("AWS_KEY"));
    for (i, f) in findings["findings"].as_array().unwrap().iter().enumerate() {
        assert_eq!(f["id"], i + 1);
        for field in [
            "fingerprint",
            "rule_id",
            "severity",
            "message",
            "path",
            "line",
            "column",
            "snippet",
            "scanners",
            "suppressed",
            "suppression",
        ] {
            assert!(f.get(field).is_some(), "{field} missing: {f}");
        }
    }
    // The policy counts merged findings; by_scanner keeps every scanner's own count.
    let merged_total = summary["findings"]["total"]["total"].as_u64().unwrap();
    let per_scanner: u64 = summary["findings"]["by_scanner"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["total"].as_u64().unwrap())
        .sum();
    assert_eq!(
        merged_total,
        findings["findings"].as_array().unwrap().len() as u64
    );
    assert!(
        merged_total < per_scanner,
        "{merged_total} vs {per_scanner}"
    );
    let merged_sarif = read_json(&dir.join("reports/findings.sarif.json"));
    assert_eq!(
        merged_sarif["runs"].as_array().unwrap().len(),
        3,
        "secrets, bandit, detect-secrets"
    );

    // Tool output is streamed as events, and recorded in the bundle's stream.
    let stream = std::fs::read_to_string(dir.join("stream.jsonl")).unwrap();
    let events: Vec<Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for tool in ["bandit", "detect-secrets"] {
        assert!(events
            .iter()
            .any(|e| e["type"] == "tool_start" && e["tool"] == tool));
        assert!(events.iter().any(|e| e["type"] == "tool_complete"
            && e["tool"] == tool
            && e["status"] == "succeeded"
            && e["exit_code"] == 0));
    }
    // A skipped scanner's completion says so, and claims no exit code.
    for tool in ["ruff", "semgrep", "vulnerabilities"] {
        let done: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "tool_complete" && e["tool"] == tool)
            .collect();
        assert_eq!(done.len(), 1, "{tool}");
        assert_eq!(done[0]["status"], "skipped", "{tool}");
        assert!(done[0].get("exit_code").is_none(), "{tool}: {}", done[0]);
    }
    assert!(events.iter().any(|e| e["type"] == "log"
        && e["tool"] == "ruff"
        && e["line"].as_str().unwrap().contains("skipped")));

    let text = app.metrics_text().await;
    let runs = |scanner: &str, outcome: &str| {
        sample(
            &text,
            "certus_assurance_scanner_runs_total",
            &[("scanner", scanner), ("outcome", outcome)],
        )
    };
    assert_eq!(runs("bandit", "success"), Some(1.0));
    assert_eq!(runs("detect-secrets", "success"), Some(1.0));
    assert_eq!(runs("ruff", "skipped"), Some(1.0));
    assert_eq!(runs("semgrep", "skipped"), Some(1.0));
    assert!(
        sample(
            &text,
            "certus_assurance_findings_total",
            &[("severity", "high"), ("scanner", "detect-secrets")]
        )
        .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn a_required_tool_that_is_missing_fails_the_scan_naming_the_tool() {
    let git = GitServer::start();
    git.create_repo("r", &[("a.py", "print(1)\n")]);
    let empty = tempfile::tempdir().unwrap();
    let tool_path = empty.path().as_os_str().to_owned();
    let app = spawn_app_with(move |c| c.scanning.tool_path = Some(tool_path)).await;
    let mut body = scan_body(&git.url("r"));
    body["profile"] = json!("gate");
    body["manifest"] =
        json!({"profiles": {"gate": {"extends": "light", "required": ["gitleaks"]}}});
    let id = app.submit_scan(body).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "FAILED");
    assert_eq!(scan["failure_reason"], "scanner_failed");
    let error = scan["errors"][0].as_str().unwrap();
    assert!(error.contains("required tool `gitleaks`"), "{error}");
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scans_submitted_total",
            &[("profile", "custom"), ("source_type", "git")]
        ),
        Some(1.0),
        "caller-chosen profile names map to the `custom` label"
    );
    assert!(!text.contains("profile=\"gate\""));
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scanner_runs_total",
            &[("scanner", "gitleaks"), ("outcome", "failure")]
        ),
        Some(1.0)
    );
}

// ----- Profiles and policy ------------------------------------------------------------------

#[tokio::test]
async fn profiles_are_listed_and_inline_manifests_override_thresholds() {
    let app = spawn_app_with(|_| {}).await;
    let profiles = app.get_json("/v1/profiles").await;
    let by_name = |n: &str| {
        profiles["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} missing: {profiles}"))
    };
    assert_eq!(
        by_name("light")["thresholds"],
        json!({"critical": 0, "high": 5, "medium": 50, "low": null})
    );
    assert_eq!(
        by_name("standard")["thresholds"],
        json!({"critical": 0, "high": 0, "medium": 25, "low": null})
    );
    assert_eq!(by_name("sbom-only")["scanners"], json!(["sbom"]));
    assert!(by_name("polyglot")["scanners"].as_array().unwrap().len() >= 10);

    let git = GitServer::start();
    let corpus = secrets_corpus(8);
    let files: Vec<(&str, &str)> = corpus
        .files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    git.create_repo("s", &files);

    // The preset fails its policy on these findings; the scan still SUCCEEDS.
    let light = app.submit_scan(scan_body(&git.url("s"))).await;
    let light = finish(&app, &light).await;
    assert_eq!(light["status"], "SUCCEEDED");
    assert_eq!(light["policy"]["passed"], false);
    assert!(!light["policy"]["violations"].as_array().unwrap().is_empty());

    // An inline manifest raises the limits: same findings, policy passes.
    // (No OSV database here: the vulnerability scanner is made optional, or it fails the gate.)
    let lax = json!({"thresholds": {"critical": 1000, "high": 1000, "medium": null}, "optional": ["vulnerabilities"]});
    let mut body = scan_body(&git.url("s"));
    body["manifest"] = lax.clone();
    let response = app.post_json("/v1/security-scans", &body).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let custom = finish(&app, accepted["test_id"].as_str().unwrap()).await;
    assert_eq!(custom["status"], "SUCCEEDED");
    assert_eq!(custom["policy"]["passed"], true, "{}", custom["policy"]);
    assert_eq!(custom["policy"]["thresholds"]["critical"], 1000);
    assert_ne!(
        accepted["manifest_digest"],
        by_name("light")["manifest_digest"]
    );
    // The digest is over the canonical form: spelling does not matter.
    let mut respelled = scan_body(&git.url("s"));
    respelled["manifest"] = serde_json::from_str(
        r#"{ "optional": ["vulnerabilities"], "thresholds" : { "medium": null, "high": 1000, "critical": 1000 } }"#,
    )
    .unwrap();
    let again: Value = app
        .post_json("/v1/security-scans", &respelled)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["manifest_digest"], accepted["manifest_digest"]);
    finish(&app, again["test_id"].as_str().unwrap()).await;

    let text = app.metrics_text().await;
    let evals = |p: &str, r: &str| {
        sample(
            &text,
            "certus_assurance_policy_evaluations_total",
            &[("profile", p), ("result", r)],
        )
    };
    assert_eq!(evals("light", "fail"), Some(1.0));
    assert_eq!(evals("custom", "pass"), Some(2.0));
    assert_eq!(
        evals("sbom-only", "pass"),
        Some(0.0),
        "every preset's series exists"
    );

    // Bad manifests are refused, the problem located inside the manifest.
    for (manifest, loc_tail, needle) in [
        (json!({"scanners": ["nmap"]}), "scanners", "unknown scanner"),
        (
            json!({"thresholds": {"high": -1}}),
            "thresholds",
            "whole number",
        ),
        (json!("light"), "", "JSON object"),
    ] {
        let mut body = scan_body(&git.url("s"));
        body["manifest"] = manifest.clone();
        let response = app.post_json("/v1/security-scans", &body).await;
        assert_eq!(response.status(), 422, "{manifest}");
        let detail: Value = response.json().await.unwrap();
        let d = &detail["detail"][0];
        let loc = d["loc"].as_array().unwrap();
        assert_eq!(loc[..2], [json!("body"), json!("manifest")], "{detail}");
        if !loc_tail.is_empty() {
            assert_eq!(loc.last().unwrap(), loc_tail, "{detail}");
        }
        assert!(d["msg"].as_str().unwrap().contains(needle), "{detail}");
    }
}

#[tokio::test]
async fn a_manifest_file_in_the_tree_selects_the_profile_at_run_time() {
    let git = GitServer::start();
    let corpus = secrets_corpus(9);
    let mut files = corpus.files.clone();
    files.push((
        ".certus/manifest.json".into(),
        r#"{"thresholds": {"critical": 1000, "high": 1000}, "optional": ["vulnerabilities"]}"#
            .into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    git.create_repo("m", &refs);
    let app = spawn_app_with(|_| {}).await;
    let mut body = scan_body(&git.url("m"));
    body["manifest_path"] = json!(".certus/manifest.json");
    let response = app.post_json("/v1/security-scans", &body).await;
    let accepted: Value = response.json().await.unwrap();
    let scan = finish(&app, accepted["test_id"].as_str().unwrap()).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(scan["policy"]["passed"], true);
    assert_ne!(
        scan["manifest_digest"], accepted["manifest_digest"],
        "the digest of what ran"
    );
    assert_eq!(scan["manifest_path"], ".certus/manifest.json");

    for bad in ["../outside.json", "/etc/passwd"] {
        let mut body = scan_body(&git.url("m"));
        body["manifest_path"] = json!(bad);
        let response = app.post_json("/v1/security-scans", &body).await;
        assert_eq!(response.status(), 422, "{bad}");
    }
    let mut body = scan_body(&git.url("m"));
    body["manifest_path"] = json!("missing.json");
    let id = app.submit_scan(body).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "FAILED");
    assert_eq!(scan["failure_reason"], "source_invalid");
    assert!(scan["errors"][0].as_str().unwrap().contains("missing.json"));
}

// ----- Directory sources --------------------------------------------------------------------

#[tokio::test]
async fn directory_scans_are_confined_to_the_source_roots() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(root.join("proj")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("proj/app.py"), "print('hi')\n").unwrap();
    std::fs::write(outside.join("secret.txt"), "not yours\n").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    let canonical = root.canonicalize().unwrap();
    let app = spawn_app_with(move |c| c.source.source_roots = vec![canonical]).await;
    let dir_body = |path: &Path| {
        ids(json!({"source_type": "directory", "directory_path": path.to_str().unwrap()}))
    };
    let id = app.submit_scan(dir_body(&root.join("proj"))).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(scan["source_type"], "directory");
    assert!(scan["provenance"]["id"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    // Outside the roots and missing (inside or outside them) answer the same: no path oracle.
    let mut answers = BTreeSet::new();
    for bad in [
        outside.clone(),
        root.join("escape"),
        root.join("proj/../../outside"),
        root.join("missing"),
        PathBuf::from("/etc"),
        PathBuf::from("/etc/no-such-directory"),
    ] {
        let response = app.post_json("/v1/security-scans", &dir_body(&bad)).await;
        assert_eq!(response.status(), 422, "{}", bad.display());
        let detail: Value = response.json().await.unwrap();
        assert_eq!(
            detail["detail"][0]["loc"],
            json!(["body", "directory_path"]),
            "{detail}"
        );
        answers.insert(detail["detail"][0]["msg"].to_string());
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
    // A git_url on a directory scan, or no directory_path, is a clear 422 too.
    let mut mixed = dir_body(&root.join("proj"));
    mixed["git_url"] = json!("https://example.com/x.git");
    assert_eq!(
        app.post_json("/v1/security-scans", &mixed).await.status(),
        422
    );
    let missing = ids(json!({"source_type": "directory"}));
    assert_eq!(
        app.post_json("/v1/security-scans", &missing).await.status(),
        422
    );

    // Without source roots, directory scans are refused and the message says how to enable them.
    let strict = spawn_app_with(|_| {}).await;
    let response = strict
        .post_json("/v1/security-scans", &dir_body(&root.join("proj")))
        .await;
    assert_eq!(response.status(), 422);
    let detail: Value = response.json().await.unwrap();
    assert!(
        detail.to_string().contains("CERTUS_ASSURANCE_SOURCE_ROOTS"),
        "{detail}"
    );
}

// ----- Archive sources ----------------------------------------------------------------------

fn tar_of(files: &[(String, String)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, text.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn bzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(bytes).unwrap();
    bz.finish().unwrap()
}

fn zip_of(files: &[(String, String)]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, text) in files {
        zip.start_file(path.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A tar with a raw header name (the tar crate's builder refuses hostile names itself).
fn raw_tar(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    {
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

#[tokio::test]
async fn archives_in_every_format_are_uploaded_and_scanned() {
    let corpus = secrets_corpus(21);
    let app = spawn_app_with(|_| {}).await;
    let tar = tar_of(&corpus.files);
    for (bytes, name, format) in [
        (tar.clone(), "src.tar", "tar"),
        (gzip(&tar), "src.tgz", "tar.gz"),
        (bzip(&tar), "src.tar.bz2", "tar.bz2"),
        (zip_of(&corpus.files), "src.zip", "zip"),
        // The name does not decide the format: the content does.
        (gzip(&tar), "misleading.zip", "tar.gz"),
    ] {
        let (status, stored) = upload(&app, &bytes, name).await;
        assert_eq!(status, 201, "{name}: {stored}");
        assert_eq!(stored["format"], format, "{name}");
        let sha = hex::encode(Sha256::digest(&bytes));
        assert_eq!(stored["sha256"], sha);
        assert_eq!(stored["archive_path"], format!("uploads/{sha}.{format}"));
        assert_eq!(stored["files"], corpus.files.len());
        let body = ids(json!({"source_type": "archive", "archive_path": stored["archive_path"]}));
        let id = app.submit_scan(body).await;
        let scan = finish(&app, &id).await;
        assert_eq!(scan["status"], "SUCCEEDED", "{name}: {scan}");
        assert_eq!(
            scan["provenance"],
            json!({"type": "archive_sha256", "id": format!("sha256:{sha}")})
        );
        assert_eq!(scan["archive_path"], stored["archive_path"]);
        let sarif = read_json(
            &app.artifact_dir(&id)
                .join("reports/sast/secrets.sarif.json"),
        );
        assert_eq!(results(&sarif).len(), corpus.planted.len(), "{name}");
    }
    // Only values upload-archive returned are accepted as archive_path.
    for bad in [
        "/etc/passwd",
        "uploads/../../x.tar",
        &format!("uploads/{}.tar", "0".repeat(64)),
    ] {
        let body = ids(json!({"source_type": "archive", "archive_path": bad}));
        let response = app.post_json("/v1/security-scans", &body).await;
        assert_eq!(response.status(), 422, "{bad}");
    }
    // Not multipart, or no `file` field, or an empty file: 422 saying what to send.
    let response = app
        .post_json("/v1/security-scans/upload-archive", &json!({"file": "x"}))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(body.to_string().contains("multipart/form-data"), "{body}");
    let (status, body) = upload(&app, b"", "empty.tar").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("empty"), "{body}");
    let (status, body) = upload(
        &app,
        b"#!/bin/sh\necho this is not an archive\n",
        "x.tar.gz",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("not a tar"), "{body}");
}

#[tokio::test]
async fn hostile_archives_are_refused_with_a_clear_error_and_write_nothing_outside() {
    use tar::EntryType as T;
    let app = spawn_app_with(|c| {
        c.archive.max_bytes = 256 * 1024;
        c.archive.max_extracted_bytes = 1024 * 1024;
        c.archive.max_files = 50;
    })
    .await;
    let many: Vec<(String, String)> = (0..60).map(|i| (format!("f{i}.txt"), "x".into())).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            raw_tar("../../evil.txt", T::Regular, "", b"pwned"),
            "`..`",
        ),
        (
            "absolute path",
            raw_tar("/tmp/certus-evil.txt", T::Regular, "", b"pwned"),
            "absolute path",
        ),
        (
            "symlink escape",
            raw_tar("escape", T::Symlink, "../../../../etc", b""),
            "outside the archive",
        ),
        (
            "bomb",
            gzip(&raw_tar(
                "zeros.bin",
                T::Regular,
                "",
                &vec![0u8; 8 * 1024 * 1024],
            )),
            "unpacks to more than",
        ),
        ("too many files", tar_of(&many), "more than 50 entries"),
    ];
    for (name, bytes, needle) in &cases {
        let (status, body) = upload(&app, bytes, "a.tar.gz").await;
        assert_eq!(status, 422, "{name}: {body}");
        let detail = body["detail"][0]["msg"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{name}: {detail}");
    }
    assert!(!Path::new("/tmp/certus-evil.txt").exists());
    assert!(!app.data_dir.join("evil.txt").exists());
    assert!(!app.data_dir.parent().unwrap().join("evil.txt").exists());
    let stored: Vec<_> = std::fs::read_dir(app.data_dir.join("uploads"))
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        stored.is_empty(),
        "refused uploads are not kept: {stored:?}"
    );

    // Over the upload size limit: 413 with a detail.
    let big = vec![7u8; 300 * 1024];
    let (status, body) = upload(&app, &big, "big.tar").await;
    assert_eq!(status, 413, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("CERTUS_ASSURANCE_ARCHIVE_MAX_BYTES"));

    // An archive that reached the store without inspection is still refused when unpacked,
    // and the scan fails as source_invalid with nothing written outside its workspace.
    let hostile = raw_tar("../../../evil.txt", T::Regular, "", b"pwned");
    let sha = hex::encode(Sha256::digest(&hostile));
    std::fs::create_dir_all(app.data_dir.join("uploads")).unwrap();
    std::fs::write(app.data_dir.join(format!("uploads/{sha}.tar")), &hostile).unwrap();
    let owner = certus_assurance::storage::audit::ArchiveUpload {
        sha256: sha.clone(),
        ext: "tar".into(),
        workspace_id: "ws".into(),
        size_bytes: hostile.len() as u64,
    };
    app.jobs
        .store()
        .claim_archive(owner, None, certus_assurance::scan::now_secs())
        .await
        .unwrap();
    let body = ids(json!({"source_type": "archive", "archive_path": format!("uploads/{sha}.tar")}));
    let id = app.submit_scan(body).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "FAILED");
    assert_eq!(scan["failure_reason"], "source_invalid");
    assert!(
        scan["errors"][0].as_str().unwrap().contains("`..`"),
        "{scan}"
    );
    assert!(!app.data_dir.join("evil.txt").exists());
    assert!(!app.data_dir.join("work/evil.txt").exists());
    assert!(app.leftover_workspaces().is_empty());
}

// ----- Fail closed, suppression, earlier manifest forms -------------------------------------

fn aws_key(seed: u64) -> String {
    format!(
        "AKIA{}",
        corpus::Rng::new(seed).string(16, corpus::UPPER_DIGITS)
    )
}

fn findings_of(app: &TestApp, id: &str) -> Vec<Value> {
    read_json(&app.artifact_dir(id).join("reports/findings.json"))["findings"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn the_policy_fails_closed_unless_the_profile_makes_a_scanner_optional() {
    let git = GitServer::start();
    git.create_repo("clean", &[("main.py", "print('hello')\n")]);
    let empty = tempfile::tempdir().unwrap();
    let tool_path = empty.path().as_os_str().to_owned();
    let app = spawn_app_with(move |c| c.scanning.tool_path = Some(tool_path)).await;

    // light without an OSV database: the vulnerability scanner is skipped, the policy fails
    // (the scan itself succeeds).
    let id = app.submit_scan(scan_body(&git.url("clean"))).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(scan["policy"]["passed"], false, "{}", scan["policy"]);
    assert_eq!(
        scan["policy"]["violations"],
        json!([{
            "kind": "scanner",
            "scanner": "vulnerabilities",
            "status": "skipped",
            "reason": scan["scanners"][2]["reason"],
        }])
    );
    assert!(scan["scanners"][2]["reason"]
        .as_str()
        .unwrap()
        .contains("CERTUS_ASSURANCE_OSV_DB_DIR"));
    assert_eq!(scan["scanners"][2]["required"], true);

    // An external tool that is not installed and not optional fails the policy too; made
    // optional, neither does.
    let mut body = scan_body(&git.url("clean"));
    body["profile"] = json!("gate");
    body["manifest"] = json!({"profiles": {"gate": {"extends": "light", "scanners": ["secrets", "vulnerabilities", "bandit"]}}});
    let strict_gate = finish(&app, &app.submit_scan(body.clone()).await).await;
    assert_eq!(strict_gate["policy"]["passed"], false);
    let failed: BTreeSet<String> = strict_gate["policy"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["scanner"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        failed,
        BTreeSet::from(["bandit".to_string(), "vulnerabilities".to_string()])
    );
    body["manifest"]["profiles"]["gate"]["optional"] = json!(["bandit", "vulnerabilities"]);
    let relaxed = finish(&app, &app.submit_scan(body).await).await;
    assert_eq!(relaxed["policy"]["passed"], true, "{}", relaxed["policy"]);
    let bandit = relaxed["scanners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "bandit")
        .unwrap()
        .clone();
    assert_eq!(bandit["status"], "skipped");
    assert_eq!(bandit["required"], false);
    assert_eq!(bandit["kind"], "external");
    assert_ne!(relaxed["manifest_digest"], strict_gate["manifest_digest"]);
}

#[tokio::test]
async fn suppressed_findings_are_listed_and_counted_never_dropped() {
    let git = GitServer::start();
    let keys: Vec<String> = (0..5).map(|i| aws_key(100 + i)).collect();
    let files = [
        ("app.py".to_string(), format!("AWS_KEY = \"{}\"\n", keys[0])),
        (
            "allowed.py".to_string(),
            format!(
                "A = \"{}\"  # pragma: allowlist secret\n# certus:allow\nB = \"{}\"\n",
                keys[1], keys[2]
            ),
        ),
        (
            "tests/fixtures/keys.py".to_string(),
            format!("K = \"{}\"\n", keys[3]),
        ),
        (
            "generated/lib.py".to_string(),
            format!("V = \"{}\"\n", keys[4]),
        ),
        (
            ".certusignore".to_string(),
            "# generated code\ngenerated/\n".to_string(),
        ),
        // The same excludes keep a fixture's lockfile out of the SBOM.
        (
            "requirements.txt".to_string(),
            "realpkg==2.0.0\n".to_string(),
        ),
        (
            "tests/fixtures/requirements.txt".to_string(),
            "fixturepkg==1.0.0\n".to_string(),
        ),
    ];
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    git.create_repo("s", &refs);
    let app = spawn_app_with(|_| {}).await;
    let manifest = json!({"optional": ["vulnerabilities"], "exclude": ["tests/fixtures/"]});
    let mut body = scan_body(&git.url("s"));
    body["manifest"] = manifest.clone();
    let id = app.submit_scan(body).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let findings = findings_of(&app, &id);
    assert_eq!(findings.len(), 5, "every finding is listed: {findings:?}");
    let by_path = |p: &str| -> Vec<&Value> { findings.iter().filter(|f| f["path"] == p).collect() };
    assert_eq!(by_path("app.py")[0]["suppressed"], false);
    assert_eq!(
        findings[0]["path"], "app.py",
        "unsuppressed findings come first"
    );
    for f in by_path("allowed.py") {
        assert_eq!(f["suppressed"], true, "{f}");
        assert_eq!(f["suppression"]["kind"], "inline", "{f}");
    }
    let fixture = by_path("tests/fixtures/keys.py")[0];
    assert_eq!(fixture["suppression"]["kind"], "path");
    let vendor = by_path("generated/lib.py")[0];
    assert_eq!(vendor["suppression"]["kind"], "path");
    assert!(vendor["suppression"]["detail"]
        .as_str()
        .unwrap()
        .contains(".certusignore"));
    let sbom = read_json(
        &app.artifact_dir(&id)
            .join("reports/sbom/sbom.cyclonedx.json"),
    );
    let names: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"realpkg"), "{names:?}");
    assert!(
        !names.contains(&"fixturepkg"),
        "an excluded fixture's lockfile is in the SBOM: {names:?}"
    );
    let summary = read_json(&app.artifact_dir(&id).join("summary.json"));
    assert_eq!(
        summary["findings"]["suppressed"],
        json!({"total": 4, "inline": 2, "path": 2, "baseline": 0})
    );
    assert_eq!(
        summary["findings"]["total"]["total"], 1,
        "the policy counts what is not suppressed"
    );
    assert_eq!(scan["findings"]["total"], 1);
    assert_eq!(summary["findings"]["by_scanner"]["secrets"]["total"], 5);
    let sarif = read_json(&app.artifact_dir(&id).join("reports/findings.sarif.json"));
    let suppressed_results = results(&sarif)
        .iter()
        .filter(|r| r.get("suppressions").is_some())
        .count();
    assert_eq!(suppressed_results, 4);

    // A baseline of the first scan's findings (as `certus-assurance baseline` writes it) at the
    // root of the tree suppresses what is left.
    let mut fingerprints: Vec<String> = findings
        .iter()
        .flat_map(|f| f["fingerprints"].as_array().unwrap().iter())
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    fingerprints.sort();
    fingerprints.dedup();
    let baseline = json!({"version": 1, "fingerprints": fingerprints}).to_string();
    let mut with_baseline = refs.clone();
    with_baseline.push((".certus-baseline.json", baseline.as_str()));
    git.create_repo("b", &with_baseline);
    let mut body = scan_body(&git.url("b"));
    body["manifest"] = manifest.clone();
    let id = app.submit_scan(body).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["findings"]["total"], 0, "{scan}");
    assert_eq!(scan["policy"]["passed"], true, "{}", scan["policy"]);
    let findings = findings_of(&app, &id);
    assert_eq!(findings.len(), 5);
    let app_py = findings.iter().find(|f| f["path"] == "app.py").unwrap();
    assert_eq!(app_py["suppression"]["kind"], "baseline");

    // A baseline_path that is not in the tree fails the scan with what to do.
    let mut body = scan_body(&git.url("s"));
    body["manifest"] = json!({"baseline_path": "security/baseline.json"});
    let scan = finish(&app, &app.submit_scan(body).await).await;
    assert_eq!(scan["status"], "FAILED");
    assert_eq!(scan["failure_reason"], "source_invalid");
    assert!(
        scan["errors"][0]
            .as_str()
            .unwrap()
            .contains("baseline_path"),
        "{scan}"
    );

    let text = app.metrics_text().await;
    let suppressed = |kind: &str| {
        sample(
            &text,
            "certus_assurance_findings_suppressed_total",
            &[("kind", kind)],
        )
    };
    assert_eq!(suppressed("inline"), Some(4.0));
    assert_eq!(suppressed("path"), Some(4.0));
    assert_eq!(suppressed("baseline"), Some(1.0));
}

#[tokio::test]
async fn the_earlier_services_manifest_forms_are_accepted() {
    let git = GitServer::start();
    git.create_repo("r", &[("main.py", "print('hello')\n")]);
    let app = spawn_app_with(|_| {}).await;
    let list = json!({"profiles": [{
        "name": "release",
        "tools": ["secrets", {"id": "opengrep"}, {"name": "sbom"}, "attestation", "privacy", "dast"],
        "thresholds": {"critical": 0, "high": 0}
    }]});
    let flat = json!({"version": "1.0", "profile": "light", "tools": ["secrets", "sbom", "eslint-security", "retire-js"]});
    for (profile, manifest, scanners, unsupported) in [
        (
            "release",
            list,
            json!(["secrets", "semgrep", "sbom"]),
            json!(["privacy", "dast"]),
        ),
        (
            "light",
            flat,
            json!(["secrets", "sbom"]),
            json!(["eslint-security", "retire-js"]),
        ),
    ] {
        let mut body = scan_body(&git.url("r"));
        body["profile"] = json!(profile);
        body["manifest"] = manifest.clone();
        let response = app.post_json("/v1/security-scans", &body).await;
        assert_eq!(response.status(), 202, "{manifest}");
        let accepted: Value = response.json().await.unwrap();
        let sent = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(serde_json::to_string(&manifest).unwrap()))
        );
        assert_eq!(
            accepted["manifest_digest"], sent,
            "the digest of the manifest as sent"
        );
        let id = accepted["test_id"].as_str().unwrap().to_string();
        let pending = app.get_json(&format!("/v1/security-scans/{id}")).await;
        assert_eq!(pending["unsupported_manifest_tools"], unsupported);
        let scan = finish(&app, &id).await;
        assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
        assert_eq!(scan["unsupported_manifest_tools"], unsupported);
        assert_eq!(scan["manifest_digest"], sent);
        let scan_json = read_json(&app.artifact_dir(&id).join("scan.json"));
        assert_eq!(scan_json["profile"]["scanners"], scanners);
        assert_eq!(scan_json["unsupported_manifest_tools"], unsupported);
        assert!(
            scan_json["warnings"].to_string().contains("no scanner for"),
            "{}",
            scan_json["warnings"]
        );
    }
}

/// A scanner that finds one problem but reports its data as incomplete, as the vulnerability
/// scanner does when the OSV database lacks an ecosystem of the tree.
struct IncompleteScanner;

impl certus_assurance::pipeline::scanners::Scanner for IncompleteScanner {
    fn name(&self) -> &'static str {
        "vulnerabilities"
    }
    fn run(
        &self,
        ctx: &certus_assurance::pipeline::scanners::ScanContext<'_>,
    ) -> anyhow::Result<certus_assurance::pipeline::scanners::ScannerOutput> {
        ctx.reports
            .incomplete("no OSV data for the PyPI packages of the tree; run `osv sync`");
        let sarif = json!({
            "version": "2.1.0",
            "runs": [{"tool": {"driver": {"name": "vulnerabilities"}}, "results": [{
                "ruleId": "GHSA-aaaa-bbbb-cccc",
                "level": "warning",
                "message": {"text": "lodash 4.17.20 is affected"},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": "main.py", "uriBaseId": "SRCROOT"}, "region": {"startLine": 1}}}],
                "partialFingerprints": {"vuln/v1": "f00d"},
                "properties": {"severity": "medium"},
            }]}],
        });
        Ok(certus_assurance::pipeline::scanners::ScannerOutput {
            findings: vec![certus_assurance::pipeline::scanners::Finding {
                rule_id: "GHSA-aaaa-bbbb-cccc".into(),
                severity: certus_assurance::pipeline::scanners::Severity::Medium,
                message: "lodash 4.17.20 is affected".into(),
                path: "main.py".into(),
                line: 1,
                column: 1,
                snippet: String::new(),
                fingerprint: "f00d".into(),
            }],
            sarif,
            files_scanned: 1,
            bytes_scanned: 1,
        })
    }
}

#[tokio::test]
async fn a_scanner_with_incomplete_data_counts_as_failed_but_its_findings_stand() {
    let git = GitServer::start();
    git.create_repo("r", &[("main.py", "print('hello')\n")]);
    let dir = tempfile::tempdir().unwrap();
    let config = crate::helpers::test_config(dir.path());
    let app =
        crate::helpers::start(config, Some(vec![std::sync::Arc::new(IncompleteScanner)])).await;
    let mut body = scan_body(&git.url("r"));
    body["profile"] = json!("vulns");
    body["manifest"] = json!({"profiles": {"vulns": {"scanners": ["vulnerabilities"]}}});
    let id = app.submit_scan(body.clone()).await;
    let scan = finish(&app, &id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let run = &scan["scanners"][0];
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["reason"].as_str().unwrap().contains("osv sync"),
        "{run}"
    );
    assert_eq!(run["findings"], 1);
    assert_eq!(scan["findings"]["medium"], 1, "the findings stand");
    assert_eq!(scan["policy"]["passed"], false);
    assert_eq!(scan["policy"]["violations"][0]["kind"], "scanner");
    assert_eq!(scan["policy"]["violations"][0]["status"], "failed");
    let stream = std::fs::read_to_string(app.artifact_dir(&id).join("stream.jsonl")).unwrap();
    let done: Value = stream
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "tool_complete")
        .unwrap();
    assert_eq!(done["status"], "failed");
    assert!(done.get("exit_code").is_none(), "{done}");
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scanner_runs_total",
            &[("scanner", "vulnerabilities"), ("outcome", "failure")]
        ),
        Some(1.0)
    );

    body["manifest"]["profiles"]["vulns"]["optional"] = json!(["vulnerabilities"]);
    let scan = finish(&app, &app.submit_scan(body).await).await;
    assert_eq!(scan["policy"]["passed"], true, "{}", scan["policy"]);
    assert_eq!(scan["scanners"][0]["required"], false);
    drop(dir);
}

#[tokio::test]
async fn partial_archive_uploads_left_by_a_crash_are_removed_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let uploads = dir.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    let partial = uploads.join(".upload-test_0123456789ab.part");
    std::fs::write(&partial, b"half of an archive").unwrap();
    let stored = uploads.join(format!("{}.tar", "a".repeat(64)));
    std::fs::write(&stored, b"a stored archive").unwrap();
    let app = crate::helpers::start(crate::helpers::test_config(dir.path()), None).await;
    assert!(
        !partial.exists(),
        "the partial upload is removed at start-up"
    );
    assert!(stored.exists(), "stored archives are kept");
    drop(app);
}
