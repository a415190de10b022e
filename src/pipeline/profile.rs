//! Scan profiles: which scanners run and the policy thresholds their findings are held to.
//! The built-in presets keep the earlier service's thresholds.

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::scanners::Severity;

/// Maximum number of findings of each severity a scan may have and still pass its policy;
/// `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thresholds {
    pub critical: Option<u64>,
    pub high: Option<u64>,
    pub medium: Option<u64>,
    pub low: Option<u64>,
}

impl Thresholds {
    fn limit(&self, severity: Severity) -> Option<u64> {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Info => None,
        }
    }
}

/// A named set of scanners and thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub scanners: Vec<String>,
    pub thresholds: Thresholds,
}

/// Names of the built-in presets (closed set: these are metric label values).
pub const BUILTIN_PROFILES: [&str; 3] = ["light", "standard", "polyglot"];

impl Profile {
    pub fn builtin(name: &str) -> Option<Profile> {
        let (description, thresholds) = match name {
            "light" => (
                "Fast checks for every push: secrets.",
                Thresholds {
                    critical: Some(0),
                    high: Some(5),
                    medium: Some(50),
                    low: None,
                },
            ),
            "standard" => (
                "Release gate: secrets, with strict thresholds.",
                Thresholds {
                    critical: Some(0),
                    high: Some(0),
                    medium: Some(25),
                    low: None,
                },
            ),
            "polyglot" => (
                "Multi-language repositories: every built-in scanner, strict thresholds.",
                Thresholds {
                    critical: Some(0),
                    high: Some(0),
                    medium: Some(25),
                    low: None,
                },
            ),
            _ => return None,
        };
        Some(Profile {
            name: name.to_string(),
            description: description.to_string(),
            scanners: vec!["secrets".to_string()],
            thresholds,
        })
    }

    /// sha256 of the canonical JSON form (sorted keys, no whitespace) of the effective profile.
    pub fn manifest_digest(&self) -> String {
        let canonical = json!({
            "profile": self.name,
            "scanners": self.scanners,
            "thresholds": self.thresholds,
        });
        let text = serde_json::to_string(&canonical).expect("plain data serializes");
        format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
    }

    /// Evaluates total severity counts against the thresholds.
    pub fn evaluate(&self, counts: &SeverityCounts) -> PolicyVerdict {
        let violations = Severity::ALL
            .into_iter()
            .filter_map(|sev| {
                let limit = self.thresholds.limit(sev)?;
                let count = counts.get(sev);
                (count > limit).then_some(Violation {
                    severity: sev,
                    count,
                    threshold: limit,
                })
            })
            .collect::<Vec<_>>();
        PolicyVerdict {
            passed: violations.is_empty(),
            thresholds: self.thresholds.clone(),
            violations,
        }
    }
}

/// Finding counts per severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeverityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub info: u64,
    pub total: u64,
}

impl SeverityCounts {
    pub fn add(&mut self, severity: Severity, n: u64) {
        match severity {
            Severity::Critical => self.critical += n,
            Severity::High => self.high += n,
            Severity::Medium => self.medium += n,
            Severity::Low => self.low += n,
            Severity::Info => self.info += n,
        }
        self.total += n;
    }

    pub fn get(&self, severity: Severity) -> u64 {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Info => self.info,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub severity: Severity,
    pub count: u64,
    pub threshold: u64,
}

/// The policy verdict of a succeeded scan (`summary.json` and the scan resource's `policy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVerdict {
    pub passed: bool,
    pub thresholds: Thresholds,
    pub violations: Vec<Violation>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn light_allows_five_highs_but_no_critical() {
        let light = Profile::builtin("light").unwrap();
        let mut counts = SeverityCounts::default();
        counts.add(Severity::High, 5);
        assert!(light.evaluate(&counts).passed);
        counts.add(Severity::High, 1);
        let verdict = light.evaluate(&counts);
        assert!(!verdict.passed);
        assert_eq!(verdict.violations[0].severity, Severity::High);
        counts.add(Severity::Critical, 1);
        assert_eq!(light.evaluate(&counts).violations.len(), 2);
    }

    #[test]
    fn standard_allows_no_high() {
        let standard = Profile::builtin("standard").unwrap();
        let mut counts = SeverityCounts::default();
        counts.add(Severity::Medium, 25);
        assert!(standard.evaluate(&counts).passed);
        counts.add(Severity::High, 1);
        assert!(!standard.evaluate(&counts).passed);
    }

    #[test]
    fn digests_are_stable_and_distinct() {
        let a = Profile::builtin("light").unwrap().manifest_digest();
        assert_eq!(a, Profile::builtin("light").unwrap().manifest_digest());
        assert_ne!(a, Profile::builtin("standard").unwrap().manifest_digest());
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
        assert!(Profile::builtin("heavy").is_none());
    }
}
