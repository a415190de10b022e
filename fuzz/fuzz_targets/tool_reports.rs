//! Scanner reports converted to SARIF: bandit's JSON, detect-secrets' baseline, and the SARIF
//! that semgrep, ruff, gitleaks, trivy and osv-scanner write. Every finding has a 1-based
//! position, severity counts add up to the results, and no code snippet survives.
#![no_main]

use std::path::Path;

use certus_assurance::pipeline::scanners::external::{
    bandit_findings, converted, detect_secrets_findings, native_sarif,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn results(sarif: &Value) -> Vec<&Value> {
    sarif["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|run| run["results"].as_array().into_iter().flatten())
        .collect()
}

/// A detect-secrets report whose conversion builds the secret masker's rule set, which is built
/// once per process (seconds under the sanitizer); the warm-up runs it before the first timed input
/// so a loaded machine cannot turn that one-time cost into a per-input timeout.
const WARM_UP: &[u8] = br#"{"results": {"config.py": [{"type": "AWS Access Key",
    "filename": "config.py", "hashed_secret": "25910f981e85ca04baf359199dd0bd4a3ae738b6",
    "is_verified": false, "line_number": 2}]}}"#;

fuzz_target!(init: check(WARM_UP), |data: &[u8]| check(data));

fn check(data: &[u8]) {
    for (tool, findings) in [
        ("bandit", bandit_findings(data)),
        ("detect-secrets", detect_secrets_findings(data)),
    ] {
        let Ok(findings) = findings else { continue };
        for f in &findings {
            assert!(
                f.line >= 1 && f.column >= 1,
                "{tool}: position {}:{}",
                f.line,
                f.column
            );
        }
        let n = findings.len() as u64;
        let (sarif, counts) = converted(tool, &["security"], findings);
        assert_eq!(counts.total, n);
        assert_eq!(results(&sarif).len() as u64, n);
        serde_json::to_vec(&sarif).expect("SARIF serializes");
    }
    if let Ok((sarif, counts)) = native_sarif(data, Path::new("/work/scan/src")) {
        let results = results(&sarif);
        assert_eq!(counts.total, results.len() as u64);
        for result in results {
            for loc in result["locations"].as_array().into_iter().flatten() {
                for key in ["region", "contextRegion"] {
                    let region = &loc["physicalLocation"][key];
                    assert!(
                        region.get("snippet").is_none(),
                        "a snippet survived: {region}"
                    );
                }
            }
        }
    }
}
