//! Scan profiles: which scanners run, which external tools must be present, and the policy
//! thresholds the findings are held to. The built-in presets keep the earlier service's
//! thresholds; an inline manifest on a request can define new profiles or override presets.
//!
//! A manifest is a JSON object. Either it overrides the requested profile directly
//! (`{"thresholds": {"high": 2}, "scanners": [...], "required": [...]}`) or it defines named
//! profiles (`{"profiles": {"gate": {"extends": "standard", "required": ["bandit"]}}}`) of which
//! the request's `profile` picks one. `manifest_digest` is the sha256 of the canonical JSON
//! (sorted keys, no whitespace) of the effective profile, so equal policies have equal digests
//! whatever the spelling of the request.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::scanners::Severity;

/// Maximum number of findings of each severity a scan may have and still pass its policy;
/// `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Built-in scanners and external tools, run in this order.
    pub scanners: Vec<String>,
    /// External tools whose absence fails the scan (`scanner_failed`) instead of skipping them.
    #[serde(default)]
    pub required: Vec<String>,
    pub thresholds: Thresholds,
    /// True when an inline manifest defined or changed this profile.
    #[serde(default)]
    pub custom: bool,
}

/// Names of the built-in presets.
pub const BUILTIN_PROFILES: [&str; 4] = ["light", "standard", "polyglot", "sbom-only"];

/// Values of the `profile` metric label: the presets, and `custom` for every profile an inline
/// manifest defined or changed (profile names chosen by callers never become labels).
pub const PROFILE_LABELS: [&str; 5] = ["light", "standard", "polyglot", "sbom-only", "custom"];

/// Scanners that run inside the service.
pub const BUILTIN_SCANNER_NAMES: [&str; 3] = ["secrets", "sbom", "vulnerabilities"];
/// External tools with an adapter (run when installed).
pub const EXTERNAL_TOOL_NAMES: [&str; 7] = [
    "bandit",
    "semgrep",
    "detect-secrets",
    "ruff",
    "gitleaks",
    "trivy",
    "osv-scanner",
];

fn is_known_scanner(name: &str) -> bool {
    BUILTIN_SCANNER_NAMES.contains(&name) || EXTERNAL_TOOL_NAMES.contains(&name)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Profile {
    pub fn builtin(name: &str) -> Option<Profile> {
        let strict = Thresholds {
            critical: Some(0),
            high: Some(0),
            medium: Some(25),
            low: None,
        };
        let (description, scanners, thresholds) = match name {
            "light" => (
                "Fast built-in checks for every push: secrets, SBOM and known vulnerabilities.",
                strings(&["secrets", "sbom", "vulnerabilities"]),
                Thresholds {
                    critical: Some(0),
                    high: Some(5),
                    medium: Some(50),
                    low: None,
                },
            ),
            "standard" => (
                "Release gate: the built-in checks plus bandit, detect-secrets, ruff and semgrep where installed, with strict thresholds.",
                strings(&[
                    "secrets",
                    "sbom",
                    "vulnerabilities",
                    "bandit",
                    "detect-secrets",
                    "ruff",
                    "semgrep",
                ]),
                strict.clone(),
            ),
            "polyglot" => (
                "Multi-language repositories: every built-in scanner and every external tool that is installed, strict thresholds.",
                strings(&[
                    "secrets",
                    "sbom",
                    "vulnerabilities",
                    "bandit",
                    "semgrep",
                    "detect-secrets",
                    "ruff",
                    "gitleaks",
                    "trivy",
                    "osv-scanner",
                ]),
                strict,
            ),
            "sbom-only" => (
                "Inventory only: SPDX and CycloneDX SBOMs, no findings and no thresholds.",
                strings(&["sbom"]),
                Thresholds {
                    critical: None,
                    high: None,
                    medium: None,
                    low: None,
                },
            ),
            _ => return None,
        };
        Some(Profile {
            name: name.to_string(),
            description: description.to_string(),
            scanners,
            required: vec![],
            thresholds,
            custom: false,
        })
    }

    /// The canonical form: sorted keys, no whitespace, only what decides the outcome.
    pub fn canonical_json(&self) -> String {
        let canonical = json!({
            "profile": self.name,
            "scanners": self.scanners,
            "required": self.required,
            "thresholds": self.thresholds,
        });
        serde_json::to_string(&canonical).expect("plain data serializes")
    }

    /// sha256 of [`Self::canonical_json`].
    pub fn manifest_digest(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
        )
    }

    /// The `profile` metric label: the preset's name, or `custom`.
    pub fn metric_label(&self) -> &str {
        if !self.custom && BUILTIN_PROFILES.contains(&self.name.as_str()) {
            &self.name
        } else {
            "custom"
        }
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

/// One problem with a manifest: where (`loc` below `manifest`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub loc: Vec<String>,
    pub msg: String,
}

fn err<S: AsRef<str>>(loc: &[S], msg: impl Into<String>) -> ManifestError {
    ManifestError {
        loc: loc.iter().map(|s| s.as_ref().to_string()).collect(),
        msg: msg.into(),
    }
}

fn valid_profile_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The profile a request runs: the preset `requested`, or the one an inline `manifest` defines
/// or overrides. Every problem is reported, each located inside the manifest.
pub fn resolve(requested: &str, manifest: Option<&Value>) -> Result<Profile, Vec<ManifestError>> {
    let Some(manifest) = manifest else {
        return Profile::builtin(requested).ok_or_else(|| {
            vec![err(
                &[] as &[&str],
                format!(
                    "profile `{requested}` is not a built-in profile ({}); define it in an inline manifest or see GET /v1/profiles",
                    BUILTIN_PROFILES.join(", ")
                ),
            )]
        });
    };
    let Some(obj) = manifest.as_object() else {
        return Err(vec![err(&[] as &[&str], "manifest must be a JSON object")]);
    };
    let mut errors = Vec::new();
    let (definition, loc): (Option<&Value>, Vec<String>) = if let Some(profiles) =
        obj.get("profiles")
    {
        for key in obj.keys() {
            if key != "profiles" {
                errors.push(err(
                    &[key],
                    "unknown field; a manifest with `profiles` has no other top-level fields",
                ));
            }
        }
        let Some(profiles) = profiles.as_object() else {
            errors.push(err(
                &["profiles"],
                "profiles must be an object mapping profile names to definitions",
            ));
            return Err(errors);
        };
        for name in profiles.keys() {
            if !valid_profile_name(name) {
                errors.push(err(&["profiles", name], "profile names are 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"));
            }
        }
        (
            profiles.get(requested),
            vec!["profiles".to_string(), requested.to_string()],
        )
    } else {
        (Some(manifest), vec![])
    };
    let loc_ref: Vec<&str> = loc.iter().map(String::as_str).collect();
    let at = |field: &str| -> Vec<String> {
        let mut l = loc.clone();
        l.push(field.to_string());
        l
    };
    let Some(definition) = definition else {
        if Profile::builtin(requested).is_none() {
            errors.push(err(&["profiles"], format!("the manifest defines no profile `{requested}` and it is not a built-in profile")));
            return Err(errors);
        }
        // The manifest defines other profiles only: the preset runs unchanged.
        return if errors.is_empty() {
            Ok(Profile::builtin(requested).expect("checked"))
        } else {
            Err(errors)
        };
    };
    let Some(def) = definition.as_object() else {
        errors.push(err(&loc_ref, "a profile definition must be a JSON object"));
        return Err(errors);
    };
    for key in def.keys() {
        if ![
            "extends",
            "description",
            "scanners",
            "required",
            "thresholds",
        ]
        .contains(&key.as_str())
        {
            errors.push(err(
                &at(key),
                "unknown field; allowed: extends, description, scanners, required, thresholds",
            ));
        }
    }
    let base_name = match def.get("extends") {
        None => requested.to_string(),
        Some(Value::String(b)) => b.clone(),
        Some(_) => {
            errors.push(err(
                &at("extends"),
                "extends must be the name of a built-in profile",
            ));
            requested.to_string()
        }
    };
    let base = match Profile::builtin(&base_name) {
        Some(p) => p,
        None if def.get("extends").is_some() => {
            errors.push(err(
                &at("extends"),
                format!(
                    "`{base_name}` is not a built-in profile ({})",
                    BUILTIN_PROFILES.join(", ")
                ),
            ));
            return Err(errors);
        }
        // A new profile with no base starts empty: it must list its scanners.
        None => Profile {
            name: requested.to_string(),
            description: String::new(),
            scanners: vec![],
            required: vec![],
            thresholds: Thresholds {
                critical: None,
                high: None,
                medium: None,
                low: None,
            },
            custom: true,
        },
    };
    let mut profile = Profile {
        name: requested.to_string(),
        custom: true,
        ..base
    };
    if !valid_profile_name(requested) {
        errors.push(err(
            &[] as &[&str],
            format!("profile `{requested}`: names are 1-64 characters of a-z, 0-9, '-' and '_'"),
        ));
    }
    match def.get("description") {
        None => {}
        Some(Value::String(d)) if d.chars().count() <= 512 => profile.description = d.clone(),
        Some(_) => errors.push(err(
            &at("description"),
            "description must be a string of at most 512 characters",
        )),
    }
    let names = |field: &str, errors: &mut Vec<ManifestError>| -> Option<Vec<String>> {
        let v = def.get(field)?;
        let Some(list) = v.as_array() else {
            errors.push(err(
                &at(field),
                format!("{field} must be a list of scanner names"),
            ));
            return None;
        };
        let mut out = Vec::new();
        for item in list {
            match item.as_str() {
                Some(n) if is_known_scanner(n) => {
                    if !out.iter().any(|o: &String| o == n) {
                        out.push(n.to_string());
                    }
                }
                Some(n) => errors.push(err(
                    &at(field),
                    format!(
                        "unknown scanner `{}`; known: {}, {}",
                        n.chars().take(64).collect::<String>(),
                        BUILTIN_SCANNER_NAMES.join(", "),
                        EXTERNAL_TOOL_NAMES.join(", ")
                    ),
                )),
                None => errors.push(err(&at(field), "scanner names must be strings")),
            }
        }
        Some(out)
    };
    if let Some(list) = names("scanners", &mut errors) {
        profile.scanners = list;
    }
    if let Some(list) = names("required", &mut errors) {
        for tool in &list {
            if BUILTIN_SCANNER_NAMES.contains(&tool.as_str()) {
                errors.push(err(&at("required"), format!("`{tool}` is built in and always available; only external tools can be required")));
            }
        }
        profile.required = list;
    }
    for tool in &profile.required {
        if !profile.scanners.contains(tool) {
            profile.scanners.push(tool.clone());
        }
    }
    if profile.scanners.is_empty() {
        errors.push(err(
            &at("scanners"),
            "the profile runs no scanner; list at least one",
        ));
    }
    if let Some(t) = def.get("thresholds") {
        match t.as_object() {
            None => errors.push(err(
                &at("thresholds"),
                "thresholds must be an object such as {\"critical\": 0, \"high\": 5}",
            )),
            Some(t) => {
                for (key, value) in t {
                    let slot = match key.as_str() {
                        "critical" => &mut profile.thresholds.critical,
                        "high" => &mut profile.thresholds.high,
                        "medium" => &mut profile.thresholds.medium,
                        "low" => &mut profile.thresholds.low,
                        _ => {
                            errors.push(err(
                                &at("thresholds"),
                                format!(
                                    "unknown severity `{}`; use critical, high, medium or low",
                                    key.chars().take(32).collect::<String>()
                                ),
                            ));
                            continue;
                        }
                    };
                    match value {
                        Value::Null => *slot = None,
                        v => match v.as_u64() {
                            Some(n) => *slot = Some(n),
                            None => errors.push(err(&at("thresholds"), format!("thresholds.{key} must be a whole number >= 0, or null for no limit"))),
                        },
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(profile)
    } else {
        Err(errors)
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
    use serde_json::json;

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
    fn presets_and_labels() {
        for name in BUILTIN_PROFILES {
            let p = Profile::builtin(name).unwrap();
            assert_eq!(p.metric_label(), name);
            assert!(PROFILE_LABELS.contains(&name));
            for s in &p.scanners {
                assert!(is_known_scanner(s), "{s}");
            }
        }
        let sbom = Profile::builtin("sbom-only").unwrap();
        let mut counts = SeverityCounts::default();
        counts.add(Severity::Critical, 3);
        assert!(sbom.evaluate(&counts).passed);
    }

    #[test]
    fn manifests_override_and_define_profiles() {
        let p = resolve(
            "light",
            Some(&json!({"thresholds": {"high": 1, "medium": null}})),
        )
        .unwrap();
        assert_eq!(p.thresholds.high, Some(1));
        assert_eq!(p.thresholds.medium, None);
        assert_eq!(p.thresholds.critical, Some(0), "kept from the preset");
        assert_eq!(p.metric_label(), "custom");
        assert_ne!(
            p.manifest_digest(),
            Profile::builtin("light").unwrap().manifest_digest()
        );

        let m = json!({"profiles": {"gate": {"extends": "standard", "required": ["bandit"], "scanners": ["secrets", "bandit"]}}});
        let gate = resolve("gate", Some(&m)).unwrap();
        assert_eq!(gate.scanners, vec!["secrets", "bandit"]);
        assert_eq!(gate.required, vec!["bandit"]);
        assert_eq!(
            gate.thresholds,
            Profile::builtin("standard").unwrap().thresholds
        );
        // A preset not redefined by the manifest runs unchanged.
        assert_eq!(
            resolve("light", Some(&m)).unwrap(),
            Profile::builtin("light").unwrap()
        );

        // Key order and whitespace do not change the digest.
        let a = resolve("x", Some(&serde_json::from_str(r#"{"profiles":{"x":{"scanners":["secrets"],"thresholds":{"high":1,"critical":0}}}}"#).unwrap())).unwrap();
        let b = resolve("x", Some(&serde_json::from_str(r#"{ "profiles": { "x": { "thresholds": { "critical": 0, "high": 1 }, "scanners": [ "secrets" ] } } }"#).unwrap())).unwrap();
        assert_eq!(a.manifest_digest(), b.manifest_digest());
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!({"scanners": ["nmap"]}), "unknown scanner"),
            (json!({"thresholds": {"high": -1}}), "whole number"),
            (json!({"thresholds": {"severe": 1}}), "unknown severity"),
            (json!({"required": ["secrets"]}), "built in"),
            (json!({"colour": "blue"}), "unknown field"),
            (json!({"profiles": {"Bad Name!": {}}}), "profile names"),
            (
                json!({"profiles": {"other": {"scanners": ["sbom"]}}}),
                "defines no profile",
            ),
            (json!({"scanners": []}), "no scanner"),
        ];
        for (manifest, needle) in cases {
            let requested = if manifest.get("profiles").is_some() {
                "mine"
            } else {
                "light"
            };
            let errors = resolve(requested, Some(&manifest)).unwrap_err();
            assert!(
                errors.iter().any(|e| e.msg.contains(needle)),
                "{manifest}: {errors:?}"
            );
        }
        assert!(resolve("heavy", None).is_err());
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
