//! semgrep: the rules the service ships (`rules/semgrep/`, compiled into the binary and written
//! to the tool's scratch directory for each run) plus the scanned tree's own `.semgrep.yml`,
//! `.semgrep.yaml` or `.semgrep/` where present. semgrep runs offline (`--metrics=off`, no
//! registry config) and writes two reports in one run: JSON, for positions, severities and rule
//! metadata, and SARIF, only for each rule's message template. The message of a result is the
//! template, not semgrep's interpolated text: a metavariable (`$VALUE`) interpolated into a
//! message can carry a secret from the code. `extra.lines` and `extra.fingerprint` are never read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use super::{clean_path, fingerprint, position, severity};
use crate::pipeline::finding::Finding;
use crate::pipeline::redact::mask_secrets;
use crate::pipeline::scanners::names;

/// The rules the service ships, by file name.
pub const BUILTIN_RULES: [(&str, &str); 2] = [
    (
        "python.yml",
        include_str!("../../../../rules/semgrep/python.yml"),
    ),
    (
        "javascript.yml",
        include_str!("../../../../rules/semgrep/javascript.yml"),
    ),
];

/// The tree's own semgrep configuration, if it has one.
pub fn tree_config(source: &Path) -> Option<&'static str> {
    [".semgrep.yml", ".semgrep.yaml", ".semgrep"]
        .into_iter()
        .find(|c| source.join(c).exists())
}

/// Writes the shipped rules under `dir`; returns their paths.
pub fn write_builtin_rules(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, text) in BUILTIN_RULES {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        out.push(path);
    }
    Ok(out)
}

/// The prefix semgrep puts before the id of a rule loaded from a file in `dir`: the directory's
/// path with `/` turned into `.` (`/tmp/x/rules/a.yml` → `tmp.x.rules.`).
pub fn rule_prefix(dir: &Path) -> String {
    let mut p = dir
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', ".");
    if !p.is_empty() {
        p.push('.');
    }
    p
}

/// Message templates by rule id, from semgrep's SARIF (`fullDescription`, un-interpolated).
fn templates(sarif: Option<&[u8]>) -> HashMap<String, String> {
    let Some(doc) = sarif.and_then(|raw| serde_json::from_slice::<Value>(raw).ok()) else {
        return HashMap::new();
    };
    doc.pointer("/runs/0/tool/driver/rules")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
        .filter_map(|rule| {
            let id = rule.get("id")?.as_str()?;
            let text = rule
                .pointer("/fullDescription/text")
                .or_else(|| rule.pointer("/shortDescription/text"))?
                .as_str()?;
            Some((id.to_string(), text.to_string()))
        })
        .collect()
}

/// semgrep's JSON report as findings. `sarif` is the SARIF report of the same run (for the
/// message templates); `strip_prefix` is removed from the front of rule ids (the shipped rules'
/// directory, see [`rule_prefix`]).
pub fn findings(
    raw: &[u8],
    sarif: Option<&[u8]>,
    strip_prefix: &str,
) -> anyhow::Result<Vec<Finding>> {
    let doc: Value = serde_json::from_slice(raw).context("the report is not JSON")?;
    let results = doc
        .get("results")
        .and_then(|r| r.as_array())
        .context("the report has no `results`")?;
    let templates = templates(sarif);
    let mut out = Vec::new();
    for r in results {
        let check_id = r["check_id"].as_str().unwrap_or("semgrep");
        let rule_id = match check_id.strip_prefix(strip_prefix) {
            Some(rest) if !strip_prefix.is_empty() && !rest.is_empty() => rest,
            _ => check_id,
        };
        let extra = &r["extra"];
        let meta = &extra["metadata"];
        let sev = severity::semgrep(
            extra["severity"].as_str().unwrap_or("WARNING"),
            meta["confidence"].as_str(),
            meta["impact"].as_str(),
        );
        let message = match templates.get(check_id) {
            Some(template) => mask_secrets(template),
            // No template: the interpolated message, with every token-like value masked.
            None => mask_secrets(extra["message"].as_str().unwrap_or(rule_id)),
        };
        let path = clean_path(r["path"].as_str().unwrap_or(""));
        let line = position(&r["start"]["line"], 0);
        let column = position(&r["start"]["col"], 0);
        out.push(Finding {
            rule_id: rule_id.to_string(),
            severity: sev,
            message,
            path: path.clone(),
            line,
            column,
            snippet: String::new(),
            fingerprint: fingerprint(&[names::SEMGREP, rule_id, &path, &line.to_string()]),
        });
    }
    out.sort_by(|a, b| {
        (&a.path, a.line, a.column, &a.rule_id).cmp(&(&b.path, b.line, b.column, &b.rule_id))
    });
    Ok(out)
}

/// What semgrep's JSON report says went wrong (its `errors` of level `error`, at most three,
/// with the file they are about), masked; `None` when it says nothing.
pub fn error_summary(raw: &[u8]) -> Option<String> {
    let doc: Value = serde_json::from_slice(raw).ok()?;
    let parts: Vec<String> = doc
        .get("errors")?
        .as_array()?
        .iter()
        .filter(|e| e["level"].as_str().unwrap_or("error") == "error")
        .take(3)
        .filter_map(|e| {
            let text = e["long_msg"]
                .as_str()
                .or_else(|| e["message"].as_str())
                .or_else(|| e["short_msg"].as_str())?;
            let file = e
                .pointer("/spans/0/file")
                .or_else(|| e.get("path"))
                .and_then(|f| f.as_str());
            let text: String = text.chars().take(300).collect();
            Some(match file {
                Some(f) => format!("{}: {}", clean_path(f), mask_secrets(&text)),
                None => mask_secrets(&text),
            })
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::finding::Severity;

    fn recorded(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/tool-reports")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn recorded_semgrep_run_converts_with_templates_and_table_severities() {
        let json = recorded("semgrep.json");
        let sarif = recorded("semgrep.sarif.json");
        let findings = findings(&json, Some(&sarif), "tmp.certus-semgrep.rules.").unwrap();
        let by_rule = |id: &str| findings.iter().find(|f| f.rule_id == id).unwrap();
        // ERROR, confidence MEDIUM, impact HIGH.
        let shell = by_rule("python-subprocess-shell-true");
        assert_eq!(shell.severity, Severity::High);
        assert_eq!(
            (shell.path.as_str(), shell.line, shell.column),
            ("app.py", 5, 10)
        );
        // WARNING, confidence LOW, impact HIGH: one step lower.
        assert_eq!(by_rule("python-os-system").severity, Severity::Medium);
        // impact LOW.
        assert_eq!(by_rule("python-weak-hash").severity, Severity::Low);
        let cred = by_rule("python-hardcoded-credential-argument");
        assert!(
            cred.message.contains("`$KW`"),
            "the template: {}",
            cred.message
        );
        let text = serde_json::to_string(&findings).unwrap();
        for secret in ["Zq8xN2vLw4Kp9rTy", "requires login"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(findings.iter().all(|f| f.snippet.is_empty()));
        // Without the SARIF half, the interpolated message is masked.
        let bare = super::findings(&json, None, "tmp.certus-semgrep.rules.").unwrap();
        assert!(!serde_json::to_string(&bare)
            .unwrap()
            .contains("Zq8xN2vLw4Kp9rTy"));
        assert!(super::findings(b"[]", None, "").is_err());
    }

    #[test]
    fn errors_of_a_failed_run_are_summarised() {
        // Recorded from semgrep 1.185.0 with a tree rule that has no `message`.
        let raw = br#"{"version":"1.185.0","results":[],"errors":[{"code":4,"level":"error","type":"InvalidRuleSchemaError","long_msg":"One of these properties is missing: 'message'","short_msg":"Invalid rule schema","spans":[{"file":".semgrep.yml","start":{"line":2,"col":5,"offset":-1},"end":{"line":4,"col":1,"offset":-1}}]},{"code":7,"level":"error","type":"SemgrepError","message":"invalid configuration file found (1 configs were invalid)"}],"paths":{"scanned":[]}}"#;
        assert_eq!(
            error_summary(raw).unwrap(),
            ".semgrep.yml: One of these properties is missing: 'message'; invalid configuration file found (1 configs were invalid)"
        );
        assert_eq!(error_summary(br#"{"errors": []}"#), None);
        assert_eq!(error_summary(b"not json"), None);
    }

    #[test]
    fn rule_prefix_is_the_directory_in_dots() {
        assert_eq!(rule_prefix(Path::new("/tmp/x/rules")), "tmp.x.rules.");
        assert_eq!(rule_prefix(Path::new("")), "");
    }
}
