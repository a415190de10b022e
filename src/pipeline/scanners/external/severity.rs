//! The severity the service gives each external tool's result: one table per tool, documented in
//! docs/scanning.md ("Severity of external tools' results"). Tools rate their results on scales of
//! their own (bandit: severity × confidence; ruff: only rule codes; detect-secrets: plugin types;
//! semgrep: ERROR/WARNING/INFO plus `metadata.confidence`/`impact`); these tables bring them onto
//! the service's `critical`…`info` so that thresholds mean the same thing for every scanner.

use serde_json::Value;

use crate::pipeline::finding::Severity;
use crate::pipeline::osv::severity_for_score;
use crate::pipeline::scanners::names;

/// One step less severe (`info` stays `info`).
pub fn lower(s: Severity) -> Severity {
    match s {
        Severity::Critical => Severity::High,
        Severity::High => Severity::Medium,
        Severity::Medium => Severity::Low,
        Severity::Low | Severity::Info => Severity::Info,
    }
}

fn level_word(word: &str) -> Option<Severity> {
    match word.to_ascii_uppercase().as_str() {
        "CRITICAL" => Some(Severity::Critical),
        "HIGH" => Some(Severity::High),
        "MEDIUM" | "MODERATE" => Some(Severity::Medium),
        "LOW" => Some(Severity::Low),
        _ => None,
    }
}

/// bandit: `issue_severity` × `issue_confidence`.
///
/// | severity \ confidence | HIGH | MEDIUM | LOW |
/// |---|---|---|---|
/// | HIGH | high | medium | medium |
/// | MEDIUM | medium | medium | low |
/// | LOW | low | low | info |
///
/// B101 (`assert_used`) is `low` whatever bandit says.
pub fn bandit(test_id: &str, severity: &str, confidence: &str) -> Severity {
    if test_id == "B101" {
        return Severity::Low;
    }
    let base = match level_word(severity) {
        Some(Severity::Critical | Severity::High) => Severity::High,
        Some(Severity::Medium) => Severity::Medium,
        Some(_) => Severity::Low,
        None => Severity::Info,
    };
    match confidence.to_ascii_uppercase().as_str() {
        "HIGH" => base,
        "MEDIUM" if base == Severity::High => Severity::Medium,
        "MEDIUM" => base,
        _ => lower(base),
    }
}

/// ruff: by rule code. ruff's SARIF gives every result `level: error`, so the code decides.
/// The `S` family (flake8-bandit) follows bandit's own ratings of the same checks; every other
/// family is code quality, not security, and is `info`.
pub fn ruff(code: &str) -> Severity {
    let Some(n) = code.strip_prefix('S').and_then(|n| n.parse::<u32>().ok()) else {
        return Severity::Info;
    };
    match n {
        // Hard-coded passwords: a likely secret, rated medium; the value itself is rated by the
        // secret scanners.
        105..=107 => Severity::Medium,
        // exec, chmod to a permissive mode.
        102 | 103 => Severity::Medium,
        // try/except/pass and /continue.
        110 | 112 => Severity::Info,
        // assert, binding to all interfaces, temp files, requests without timeout, rest of S1xx.
        100..=199 => Severity::Low,
        // Flask debug mode.
        201 => Severity::High,
        200..=299 => Severity::Medium,
        // Pseudo-random generators used for security.
        311 => Severity::Low,
        // Deserialisation, weak hashes and ciphers, eval, XML parsers, insecure protocols.
        300..=399 => Severity::Medium,
        // Imports of insecure modules.
        400..=499 => Severity::Low,
        // yaml.load, paramiko host keys, SNMP.
        506..=509 => Severity::Medium,
        // TLS verification off, weak TLS versions, weak key sizes.
        500..=599 => Severity::High,
        // Shell injection: subprocess with shell=True, os.system-style calls.
        602 | 605 => Severity::High,
        // Processes started without a shell, partial executable paths.
        603 | 606 | 607 => Severity::Low,
        // Other injection: SQL, wildcards, Django extra/RawSQL, paramiko exec.
        600..=699 => Severity::Medium,
        // Jinja2 autoescape off.
        701 => Severity::High,
        700..=799 => Severity::Medium,
        _ => Severity::Low,
    }
}

/// detect-secrets: by the plugin's secret type (the `type` field of its report).
pub fn detect_secrets(kind: &str) -> Severity {
    match kind {
        "Private Key" => Severity::Critical,
        "AWS Access Key"
        | "Azure Storage Account access key"
        | "Artifactory Credentials"
        | "Basic Auth Credentials"
        | "Cloudant Credentials"
        | "Discord Bot Token"
        | "GitHub Token"
        | "GitLab Token"
        | "IBM COS HMAC Credentials"
        | "IBM Cloud IAM Key"
        | "Mailchimp Access Key"
        | "NPM tokens"
        | "OpenAI Token"
        | "PyPI Token"
        | "SendGrid API Key"
        | "Slack Token"
        | "SoftLayer Credentials"
        | "Square OAuth Secret"
        | "Stripe Access Key"
        | "Telegram Bot Token"
        | "Twilio API Key" => Severity::High,
        "Secret Keyword" | "JSON Web Token" => Severity::Medium,
        "Base64 High Entropy String" | "Hex High Entropy String" => Severity::Low,
        "Public IP (ipv4)" => Severity::Info,
        // A plugin this table does not know (a newer detect-secrets): a credential format.
        _ => Severity::Medium,
    }
}

/// semgrep: the rule's `severity`, then its `metadata.impact` and `metadata.confidence`.
///
/// The base is `impact` where the rule has it (HIGH → high, MEDIUM → medium, LOW → low), else
/// the severity (ERROR → high, WARNING → medium, INFO → low; `CRITICAL`/`HIGH`/`MEDIUM`/`LOW`
/// as their names say). `confidence: LOW` lowers it one step.
pub fn semgrep(severity: &str, confidence: Option<&str>, impact: Option<&str>) -> Severity {
    let from_severity = match severity.to_ascii_uppercase().as_str() {
        "ERROR" => Severity::High,
        "WARNING" => Severity::Medium,
        "INFO" | "INVENTORY" | "EXPERIMENT" => Severity::Low,
        other => level_word(other).unwrap_or(Severity::Medium),
    };
    let base = impact
        .and_then(level_word)
        .map(|s| {
            if s == Severity::Critical {
                Severity::High
            } else {
                s
            }
        })
        .unwrap_or(from_severity);
    match confidence.map(|c| c.to_ascii_uppercase()) {
        Some(c) if c == "LOW" => lower(base),
        _ => base,
    }
}

/// gitleaks: every rule finds a credential, so `high`; private keys are `critical`.
pub fn gitleaks(rule_id: &str) -> Severity {
    if rule_id.contains("private-key") {
        Severity::Critical
    } else {
        Severity::High
    }
}

/// A `security-severity` score (CVSS-like) of the result or of its rule.
pub fn security_severity_score(result: &Value, rule: Option<&Value>) -> Option<f64> {
    let score = |v: &Value| -> Option<f64> {
        let s = v.pointer("/properties/security-severity")?;
        s.as_str()
            .and_then(|s| s.trim().parse().ok())
            .or_else(|| s.as_f64())
            .filter(|f: &f64| f.is_finite())
    };
    score(result).or_else(|| rule.and_then(score))
}

/// trivy: its own severity, which its SARIF carries as a tag of the rule (`CRITICAL`, `HIGH`,
/// `MEDIUM`, `LOW`, `UNKNOWN`) and as a `Severity:` line of the message; else the score.
pub fn trivy(result: &Value, rule: Option<&Value>) -> Option<Severity> {
    if let Some(tags) = rule
        .and_then(|r| r.pointer("/properties/tags"))
        .and_then(|t| t.as_array())
    {
        for tag in tags.iter().filter_map(|t| t.as_str()) {
            if tag == "UNKNOWN" {
                return Some(Severity::Info);
            }
            if tag.chars().all(|c| c.is_ascii_uppercase()) {
                if let Some(s) = level_word(tag) {
                    return Some(s);
                }
            }
        }
    }
    let text = result.pointer("/message/text").and_then(|t| t.as_str())?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Severity:"))
        .map(str::trim)
        .and_then(|w| {
            if w == "UNKNOWN" {
                Some(Severity::Info)
            } else {
                level_word(w)
            }
        })
}

/// A SARIF result of a tool without a table of its own (and osv-scanner): the CVSS-like
/// `security-severity` where present, else the level (`error` → high, `warning` → medium,
/// `note` → low, `none` → info).
pub fn sarif_default(result: &Value, rule: Option<&Value>) -> Severity {
    if let Some(score) = security_severity_score(result, rule) {
        return severity_for_score(score);
    }
    let level = result
        .get("level")
        .and_then(|l| l.as_str())
        .or_else(|| rule.and_then(|r| r.pointer("/defaultConfiguration/level")?.as_str()))
        .unwrap_or("warning");
    match level {
        "error" => Severity::High,
        "warning" => Severity::Medium,
        "note" => Severity::Low,
        _ => Severity::Info,
    }
}

/// The severity of one result of `tool`'s native SARIF.
pub fn sarif_result(tool: &str, result: &Value, rule: Option<&Value>) -> Severity {
    let rule_id = result.get("ruleId").and_then(|r| r.as_str()).unwrap_or("");
    match tool {
        names::RUFF => ruff(rule_id),
        names::GITLEAKS => gitleaks(rule_id),
        names::TRIVY => trivy(result, rule).unwrap_or_else(|| sarif_default(result, rule)),
        // osv-scanner writes `warning` for every result and a score only in newer versions.
        _ => sarif_default(result, rule),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bandit_table() {
        use Severity::*;
        let cases = [
            ("HIGH", "HIGH", High),
            ("HIGH", "MEDIUM", Medium),
            ("HIGH", "LOW", Medium),
            ("MEDIUM", "HIGH", Medium),
            ("MEDIUM", "MEDIUM", Medium),
            ("MEDIUM", "LOW", Low),
            ("LOW", "HIGH", Low),
            ("LOW", "MEDIUM", Low),
            ("LOW", "LOW", Info),
            ("UNDEFINED", "HIGH", Info),
        ];
        for (sev, conf, want) in cases {
            assert_eq!(bandit("B602", sev, conf), want, "{sev} x {conf}");
        }
        assert_eq!(bandit("B101", "HIGH", "HIGH"), Low, "assert_used is low");
    }

    #[test]
    fn ruff_families() {
        use Severity::*;
        for (code, want) in [
            ("S101", Low),
            ("S105", Medium),
            ("S106", Medium),
            ("S107", Medium),
            ("S110", Info),
            ("S113", Low),
            ("S201", High),
            ("S301", Medium),
            ("S311", Low),
            ("S324", Medium),
            ("S403", Low),
            ("S501", High),
            ("S506", Medium),
            ("S602", High),
            ("S603", Low),
            ("S608", Medium),
            ("S701", High),
            ("E501", Info),
            ("F401", Info),
            ("S", Info),
        ] {
            assert_eq!(ruff(code), want, "{code}");
        }
    }

    #[test]
    fn detect_secrets_plugins() {
        assert_eq!(detect_secrets("Private Key"), Severity::Critical);
        assert_eq!(detect_secrets("AWS Access Key"), Severity::High);
        assert_eq!(detect_secrets("Secret Keyword"), Severity::Medium);
        assert_eq!(detect_secrets("Hex High Entropy String"), Severity::Low);
        assert_eq!(detect_secrets("Public IP (ipv4)"), Severity::Info);
        assert_eq!(detect_secrets("Some Future Detector"), Severity::Medium);
    }

    #[test]
    fn semgrep_severity_impact_and_confidence() {
        use Severity::*;
        assert_eq!(semgrep("ERROR", None, None), High);
        assert_eq!(semgrep("WARNING", None, None), Medium);
        assert_eq!(semgrep("INFO", None, None), Low);
        assert_eq!(semgrep("WARNING", Some("HIGH"), Some("HIGH")), High);
        assert_eq!(semgrep("ERROR", Some("HIGH"), Some("LOW")), Low);
        assert_eq!(semgrep("ERROR", Some("LOW"), Some("HIGH")), Medium);
        assert_eq!(semgrep("WARNING", Some("LOW"), None), Low);
        assert_eq!(semgrep("INFO", Some("LOW"), Some("LOW")), Info);
    }

    #[test]
    fn gitleaks_trivy_and_default() {
        assert_eq!(gitleaks("generic-api-key"), Severity::High);
        assert_eq!(gitleaks("private-key"), Severity::Critical);
        let rule = json!({"properties": {"tags": ["vulnerability", "security", "CRITICAL"], "security-severity": "7.5"}});
        assert_eq!(trivy(&json!({}), Some(&rule)), Some(Severity::Critical));
        let result = json!({"message": {"text": "Artifact: a\nSeverity: LOW\nMatch: x"}});
        assert_eq!(trivy(&result, None), Some(Severity::Low));
        let scored = json!({"properties": {"security-severity": "9.8"}});
        assert_eq!(sarif_default(&json!({}), Some(&scored)), Severity::Critical);
        assert_eq!(
            sarif_default(&json!({"level": "warning"}), None),
            Severity::Medium
        );
        assert_eq!(sarif_default(&json!({}), None), Severity::Medium);
    }
}
