//! The SARIF 2.1.0 writer shared by every built-in scanner and by the adapters that convert
//! an external tool's own output: one run per log, rules with their default level and
//! `security-severity`, results with a relative `SRCROOT` location, the already-redacted snippet
//! and a stable partial fingerprint.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::pipeline::finding::{Finding, Severity};

/// `$schema` of every SARIF log this crate writes.
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// Tool-level metadata for [`build_sarif`].
#[derive(Debug, Clone, Copy)]
pub struct SarifTool<'a> {
    /// `tool.driver.name`.
    pub name: &'a str,
    /// `tool.driver.version`.
    pub version: &'a str,
    /// `tool.driver.informationUri`; omitted when empty (SARIF requires an absolute URI).
    pub information_uri: &'a str,
    /// `properties.tags` of every rule, e.g. `["security", "secret"]`.
    pub rule_tags: &'a [&'a str],
    /// Key of each result's `partialFingerprints` entry holding `Finding::fingerprint`, e.g.
    /// `secretFingerprint/v1`.
    pub fingerprint_key: &'a str,
}

/// `properties.security-severity` for a severity: the CVSS-like score GitHub code scanning
/// buckets into critical (>= 9.0), high (>= 7.0), medium (>= 4.0) and low.
pub fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.0",
        Severity::High => "7.5",
        Severity::Medium => "5.0",
        Severity::Low => "3.0",
        Severity::Info => "1.0",
    }
}

/// Builds a complete SARIF 2.1.0 log with one run. Scanner-agnostic: any scanner producing
/// [`Finding`]s can call it with its own tool metadata and rule table.
///
/// `rules` is `(id, title, severity)`; a result's `ruleIndex` is its rule's position there (left
/// out if the finding's rule is not listed). Findings are written in the order given, with their
/// already-redacted snippets; paths are emitted as URIs relative to `SRCROOT`.
pub fn build_sarif(
    tool: &SarifTool<'_>,
    rules: &[(&str, &str, Severity)],
    findings: &[Finding],
) -> Value {
    let rule_index: HashMap<&str, usize> = rules
        .iter()
        .enumerate()
        .map(|(i, (id, _, _))| (*id, i))
        .collect();

    let sarif_rules: Vec<Value> = rules
        .iter()
        .map(|(id, title, severity)| {
            json!({
                "id": id,
                "name": pascal_case(id),
                "shortDescription": { "text": title },
                "defaultConfiguration": { "level": severity.sarif_level() },
                "properties": {
                    "security-severity": security_severity(*severity),
                    "tags": tool.rule_tags,
                },
            })
        })
        .collect();

    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut result = json!({
                "ruleId": f.rule_id,
                "level": f.severity.sarif_level(),
                "message": { "text": f.message },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {
                            "uri": percent_encode_path(&f.path),
                            "uriBaseId": "SRCROOT",
                        },
                        "region": {
                            "startLine": f.line,
                            "startColumn": f.column,
                            "snippet": { "text": f.snippet },
                        },
                    },
                }],
                "partialFingerprints": { tool.fingerprint_key: f.fingerprint },
                "properties": { "severity": f.severity.as_str() },
            });
            if let Some(index) = rule_index.get(f.rule_id.as_str()) {
                result["ruleIndex"] = json!(index);
            }
            result
        })
        .collect();

    let mut driver = json!({
        "name": tool.name,
        "version": tool.version,
        "rules": sarif_rules,
    });
    if !tool.information_uri.is_empty() {
        driver["informationUri"] = json!(tool.information_uri);
    }

    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": driver },
            "originalUriBaseIds": {
                "SRCROOT": { "description": { "text": "Root of the scanned source tree" } },
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

/// `aws-access-key-id` -> `AwsAccessKeyId`: SARIF wants `name` to be an identifier.
fn pascal_case(id: &str) -> String {
    id.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Percent-encodes a relative path for use as a URI reference (RFC 3986 unreserved kept).
pub fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_sarif_is_reusable() {
        let finding = Finding {
            rule_id: "other-rule".into(),
            severity: Severity::Info,
            message: "m".into(),
            path: "a.rs".into(),
            line: 1,
            column: 1,
            snippet: "s".into(),
            fingerprint: "f".into(),
        };
        let tool = SarifTool {
            name: "lint",
            version: "1.2.3",
            information_uri: "https://example.invalid/lint",
            rule_tags: &["security", "sast"],
            fingerprint_key: "lintFingerprint/v1",
        };
        let log = build_sarif(
            &tool,
            &[("known", "Known rule", Severity::High)],
            &[finding],
        );
        let run = &log["runs"][0];
        assert_eq!(
            run["tool"]["driver"]["informationUri"],
            "https://example.invalid/lint"
        );
        assert_eq!(
            run["tool"]["driver"]["rules"][0]["properties"]["tags"],
            json!(["security", "sast"])
        );
        assert_eq!(run["tool"]["driver"]["rules"][0]["name"], "Known");
        let result = &run["results"][0];
        assert!(
            result.get("ruleIndex").is_none(),
            "unknown rule gets no index"
        );
        assert_eq!(result["partialFingerprints"]["lintFingerprint/v1"], "f");
        assert_eq!(result["level"], "note");

        let no_uri = build_sarif(
            &SarifTool {
                information_uri: "",
                ..tool
            },
            &[],
            &[],
        );
        assert!(no_uri["runs"][0]["tool"]["driver"]
            .get("informationUri")
            .is_none());
        assert_eq!(no_uri["runs"][0]["results"], json!([]));
    }

    #[test]
    fn helpers() {
        assert_eq!(pascal_case("aws-access-key-id"), "AwsAccessKeyId");
        assert_eq!(
            percent_encode_path("dir name/ü.txt"),
            "dir%20name/%C3%BC.txt"
        );
    }
}
