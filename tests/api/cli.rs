//! The `scan` command as a CI gate: the real binary on generated trees, archives and a git
//! repository, checking exit codes, output formats and the bundle it writes.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::corpus::{lockfile_corpus, secrets_corpus, write_osv_fixture, write_tree};

fn scan(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certus-assurance"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("scan")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_scan_command_gates_on_the_policy() {
    let work = tempfile::tempdir().unwrap();
    let dirty = work.path().join("dirty");
    write_tree(&dirty, &secrets_corpus(4).files);
    let clean = work.path().join("clean");
    write_tree(
        &clean,
        &[("main.py".to_string(), "print('hello')\n".to_string())],
    );
    let out_dir = work.path().join("out");
    let out = out_dir.to_str().unwrap();

    // Planted secrets exceed light's thresholds: exit 1, with the table and the violations.
    let o = scan(&[dirty.to_str().unwrap(), "--out", out], &[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let table = stdout(&o);
    assert!(table.contains("policy (light): FAILED"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("secrets ")), "{table}");
    let bundle = table
        .lines()
        .find_map(|l| l.strip_prefix("bundle: "))
        .expect("the bundle path is printed");
    for f in [
        "scan.json",
        "summary.json",
        "reports/sast/secrets.sarif.json",
        "reports/signing/attestation.intoto.json",
        "stream.jsonl",
    ] {
        assert!(Path::new(bundle).join(f).exists(), "{f}");
    }

    // A clean tree passes (with an OSV database: without one, the vulnerability scanner is
    // skipped and the gate fails closed): exit 0. JSON output is the summary.
    let osv = work.path().join("osv");
    write_osv_fixture(&osv);
    let o = scan(
        &[clean.to_str().unwrap(), "--out", out, "--format", "json"],
        &[("CERTUS_ASSURANCE_OSV_DB_DIR", &osv)],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["policy"]["passed"], true);
    assert_eq!(summary["provenance"]["type"], "directory_sha256");

    // SARIF output merges every report into one log.
    let o = scan(
        &[
            dirty.to_str().unwrap(),
            "--out",
            out,
            "--format",
            "sarif",
            "--profile",
            "sbom-only",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "sbom-only has no thresholds");
    let sarif: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");

    // Unusable input: exit 2 with a message on stderr.
    let o = scan(
        &[work.path().join("missing").to_str().unwrap(), "--out", out],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    let o = scan(
        &[clean.to_str().unwrap(), "--out", out, "--profile", "heavy"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown profile"));
    assert!(
        !Path::new("certus-assurance-scans").exists(),
        "nothing written to the default directory"
    );
}

#[test]
fn the_scan_command_reads_archives_git_urls_manifests_and_the_osv_database() {
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("project");
    write_tree(&project, &lockfile_corpus());
    let osv = work.path().join("osv");
    write_osv_fixture(&osv);
    let out = work.path().join("out");

    // A tarball of the lockfiles, with the OSV database from the environment.
    let tarball = work.path().join("project.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&project)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let o = scan(
        &[
            tarball.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[("CERTUS_ASSURANCE_OSV_DB_DIR", &osv)],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["provenance"]["type"], "archive_sha256");
    let vulns = summary["findings"]["by_scanner"]["vulnerabilities"]["total"]
        .as_u64()
        .unwrap();
    assert_eq!(
        vulns as usize,
        crate::corpus::PINS
            .iter()
            .filter(|p| p.advisory.is_some())
            .count()
    );

    // A git repository by file:// URL, with a manifest that relaxes the thresholds.
    let repo = work.path().join("repo");
    write_tree(&repo, &secrets_corpus(6).files);
    for args in [
        vec!["init", "-q", "-b", "main"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=T",
            "commit",
            "-q",
            "-m",
            "x",
        ],
    ] {
        assert!(Command::new("git")
            .args(&args)
            .current_dir(&repo)
            .status()
            .unwrap()
            .success());
    }
    let manifest = work.path().join("manifest.json");
    std::fs::write(&manifest, r#"{"profiles": {"lenient": {"extends": "light", "optional": ["vulnerabilities"], "thresholds": {"critical": null, "high": null}}}}"#).unwrap();
    let url = format!("file://{}", repo.display());
    let o = scan(
        &[
            &url,
            "--out",
            out.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--profile",
            "lenient",
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout(&o).contains("policy (lenient): PASSED"));
}

fn baseline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certus-assurance"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("baseline")
        .args(args)
        .output()
        .expect("the binary runs")
}

/// A bundle holding a reports/findings.json of the pipeline's shape (contract B).
fn bundle_with_findings(dir: &Path, findings: Value) -> std::path::PathBuf {
    let bundle = dir.join("test_0123456789ab");
    std::fs::create_dir_all(bundle.join("reports")).unwrap();
    let doc =
        serde_json::json!({"version": 1, "test_id": "test_0123456789ab", "findings": findings});
    std::fs::write(bundle.join("reports/findings.json"), doc.to_string()).unwrap();
    bundle
}

#[test]
fn the_baseline_command_writes_every_fingerprint_of_a_bundle() {
    let work = tempfile::tempdir().unwrap();
    let fp = |n: u32| format!("{n:064x}");
    let finding = |n: u32, others: &[u32], suppressed: bool| {
        serde_json::json!({
            "id": n, "fingerprint": fp(n),
            "fingerprints": std::iter::once(n).chain(others.iter().copied()).map(fp).collect::<Vec<_>>(),
            "rule_id": "generic-secret", "rules": {"secrets": "generic-secret"}, "severity": "high",
            "message": "m", "path": "a.py", "line": n, "column": 0, "snippet": "",
            "scanners": ["secrets"], "suppressed": suppressed,
            "suppression": if suppressed { serde_json::json!({"kind": "baseline", "detail": ".certus-baseline.json"}) } else { Value::Null },
        })
    };
    let bundle = bundle_with_findings(
        work.path(),
        serde_json::json!([
            finding(9, &[3], false),
            finding(2, &[], true),
            finding(9, &[], false)
        ]),
    );
    let out = work.path().join("tree/.certus-baseline.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();

    let o = baseline(&[
        "--bundle",
        bundle.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("wrote 3 fingerprints of 3 findings"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let written = std::fs::read(&out).unwrap();
    let doc: Value = serde_json::from_slice(&written).unwrap();
    // Contract D: version 1, sorted and unique, suppressed findings included.
    assert_eq!(
        doc,
        serde_json::json!({"version": 1, "fingerprints": [fp(2), fp(3), fp(9)]})
    );
    // Stable: the same bundle gives the same bytes, on standard output too.
    let o = baseline(&["--bundle", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(o.stdout, written);

    // Unusable bundles: exit 2 with what to do.
    let o = baseline(&["--bundle", work.path().join("missing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "has no reports/findings.json: give the bundle directory of a scan (the `bundle:` \
             line `certus-assurance scan` prints)"
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(
        bundle.join("reports/findings.json"),
        r#"{"version": 7, "findings": []}"#,
    )
    .unwrap();
    let o = baseline(&[
        "--bundle",
        bundle.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("version 7"));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        written,
        "a failed run leaves the file alone"
    );
}

#[test]
fn strict_mode_and_baselines_in_the_scan_command() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write_tree(&tree, &secrets_corpus(12).files);
    let out_dir = work.path().join("out");
    let out = out_dir.to_str().unwrap();
    let manifest = work.path().join("manifest.json");
    std::fs::write(
        &manifest,
        r#"{"optional": ["vulnerabilities"], "thresholds": {"critical": null, "high": null, "medium": null}}"#,
    )
    .unwrap();
    let run = |extra: &[&str]| -> (Option<i32>, Value) {
        let mut args = vec![
            tree.to_str().unwrap(),
            "--out",
            out,
            "--format",
            "json",
            "--manifest",
            manifest.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = scan(&args, &[]);
        let summary = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("no JSON summary: {}", String::from_utf8_lossy(&o.stderr)));
        (o.status.code(), summary)
    };

    // No OSV database: the optional vulnerability scanner is skipped and the policy passes...
    let (code, summary) = run(&[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["policy"]["passed"], true);
    assert_eq!(summary["strict"], false);
    // ... unless --strict holds every scanner to success.
    let (code, summary) = run(&["--strict"]);
    assert_eq!(code, Some(1), "{summary}");
    assert_eq!(summary["strict"], true);
    let violation = &summary["policy"]["violations"][0];
    assert_eq!(violation["kind"], "scanner");
    assert_eq!(violation["scanner"], "vulnerabilities");
    assert_eq!(violation["status"], "skipped");

    // A baseline of every fingerprint of the first run suppresses every finding of the next.
    let first = out_dir.join(summary["test_id"].as_str().unwrap());
    let findings: Value =
        serde_json::from_slice(&std::fs::read(first.join("reports/findings.json")).unwrap())
            .unwrap();
    let total = findings["findings"].as_array().unwrap().len();
    assert!(total > 0);
    let mut fingerprints: Vec<&str> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["fingerprints"].as_array().unwrap())
        .map(|f| f.as_str().unwrap())
        .collect();
    fingerprints.sort();
    fingerprints.dedup();
    let baseline = work.path().join("baseline.json");
    std::fs::write(
        &baseline,
        serde_json::json!({"version": 1, "fingerprints": fingerprints}).to_string(),
    )
    .unwrap();
    let (code, summary) = run(&["--baseline", baseline.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["findings"]["total"]["total"], 0);
    assert_eq!(summary["findings"]["suppressed"]["baseline"], total);

    // A baseline that is not one is refused with what to do.
    std::fs::write(&baseline, "[]").unwrap();
    let o = scan(
        &[
            tree.to_str().unwrap(),
            "--out",
            out,
            "--baseline",
            baseline.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certus-assurance baseline"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
