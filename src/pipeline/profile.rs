//! Scan profiles: which scanners run, which external tools must be present, and the policy
//! thresholds the findings are held to. The built-in presets keep the earlier service's
//! thresholds; an inline manifest on a request can define new profiles or override presets.
//!
//! A manifest is a JSON object. Either it overrides the requested profile directly
//! (`{"thresholds": {"high": 2}, "scanners": [...], "required": [...]}`) or it defines named
//! profiles (`{"profiles": {"gate": {"extends": "standard", "required": ["bandit"]}}}`) of which
//! the request's `profile` picks one. `manifest_digest` is the sha256 of the canonical JSON
//! (sorted keys, no whitespace) of the effective profile, so equal policies have equal digests
//! whatever the spelling of the request. The earlier service's forms (a `profiles` list of
//! `{name, tools, thresholds}`, or `{version, profile, tools}`) are accepted too; their tool ids
//! map through [`legacy_tool`], and their digest is the one of the manifest as sent.
//!
//! The policy fails closed: every scanner of the profile that is not `optional` must succeed.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::finding::{Severity, SeverityCounts};
use super::scanners::{names, registry};

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
    /// Scanners whose failure, skip or incomplete data does not fail the policy. Every other
    /// scanner of the profile must succeed for the policy to pass (the gate fails closed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<String>,
    /// Gitignore-syntax globs: findings in matching paths are listed as suppressed (`path`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// A baseline file inside the scanned tree (instead of `.certus-baseline.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_path: Option<String>,
    pub thresholds: Thresholds,
    /// True when an inline manifest defined or changed this profile.
    #[serde(default)]
    pub custom: bool,
    /// Tools an earlier-service manifest named that have no scanner here (`privacy`, `dast`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported_manifest_tools: Vec<String>,
    /// For the earlier service's manifest forms: the digest of the manifest as sent, which
    /// [`Self::manifest_digest`] returns instead of the digest of the effective profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_manifest_digest: Option<String>,
}

/// Names of the built-in presets.
pub const BUILTIN_PROFILES: [&str; 4] = ["light", "standard", "polyglot", "sbom-only"];

/// Values of the `profile` metric label: the presets, and `custom` for every profile an inline
/// manifest defined or changed (profile names chosen by callers never become labels).
pub const PROFILE_LABELS: [&str; 5] = ["light", "standard", "polyglot", "sbom-only", "custom"];

pub use super::scanners::registry::{BUILTIN_SCANNER_NAMES, EXTERNAL_TOOL_NAMES};

fn is_known_scanner(name: &str) -> bool {
    registry::find(name).is_some()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Profile {
    /// A custom profile with nothing in it yet: no scanners, no thresholds.
    fn empty(name: &str) -> Profile {
        Profile {
            name: name.to_string(),
            description: String::new(),
            scanners: vec![],
            required: vec![],
            optional: vec![],
            exclude: vec![],
            baseline_path: None,
            thresholds: Thresholds {
                critical: None,
                high: None,
                medium: None,
                low: None,
            },
            custom: true,
            unsupported_manifest_tools: vec![],
            sent_manifest_digest: None,
        }
    }

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
                strings(&[names::SECRETS, names::SBOM, names::VULNERABILITIES]),
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
                    names::SECRETS,
                    names::SBOM,
                    names::VULNERABILITIES,
                    names::BANDIT,
                    names::DETECT_SECRETS,
                    names::RUFF,
                    names::SEMGREP,
                ]),
                strict.clone(),
            ),
            "polyglot" => (
                "Multi-language repositories: every built-in scanner and every external tool that is installed, strict thresholds.",
                strings(&[
                    names::SECRETS,
                    names::SBOM,
                    names::VULNERABILITIES,
                    names::BANDIT,
                    names::SEMGREP,
                    names::DETECT_SECRETS,
                    names::RUFF,
                    names::GITLEAKS,
                    names::TRIVY,
                    names::OSV_SCANNER,
                ]),
                strict,
            ),
            "sbom-only" => (
                "Inventory only: SPDX and CycloneDX SBOMs, no findings and no thresholds.",
                strings(&[names::SBOM]),
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
            optional: vec![],
            exclude: vec![],
            baseline_path: None,
            thresholds,
            custom: false,
            unsupported_manifest_tools: vec![],
            sent_manifest_digest: None,
        })
    }

    /// Whether a failed, skipped or incomplete run of `scanner` leaves the policy alone.
    pub fn is_optional(&self, scanner: &str) -> bool {
        self.optional.iter().any(|o| o == scanner)
    }

    /// The canonical form: sorted keys, no whitespace, only what decides the outcome. Fields
    /// added later (`optional`, `exclude`, `baseline_path`) appear only when set, so the digests
    /// of profiles that do not use them stay what they were.
    pub fn canonical_json(&self) -> String {
        let mut canonical = json!({
            "profile": self.name,
            "scanners": self.scanners,
            "required": self.required,
            "thresholds": self.thresholds,
        });
        if !self.optional.is_empty() {
            canonical["optional"] = json!(self.optional);
        }
        if !self.exclude.is_empty() {
            canonical["exclude"] = json!(self.exclude);
        }
        if let Some(b) = &self.baseline_path {
            canonical["baseline_path"] = json!(b);
        }
        serde_json::to_string(&canonical).expect("plain data serializes")
    }

    /// sha256 of [`Self::canonical_json`]; for a manifest in one of the earlier service's forms,
    /// sha256 of the canonical JSON of the manifest as sent.
    pub fn manifest_digest(&self) -> String {
        if let Some(d) = &self.sent_manifest_digest {
            return d.clone();
        }
        digest_of(&self.canonical_json())
    }

    /// The `profile` metric label: the preset's name, or `custom`.
    pub fn metric_label(&self) -> &str {
        if !self.custom && BUILTIN_PROFILES.contains(&self.name.as_str()) {
            &self.name
        } else {
            "custom"
        }
    }

    /// Evaluates the merged, unsuppressed finding counts against the thresholds, and the runs
    /// of the scanners: every scanner that did not succeed (failed, skipped, incomplete data)
    /// and is not optional is a violation, so a gate never passes on results it did not get.
    pub fn evaluate(&self, counts: &SeverityCounts, runs: &[ScannerProblem]) -> PolicyVerdict {
        let mut violations = runs
            .iter()
            .filter(|r| !self.is_optional(&r.scanner))
            .map(|r| Violation::Scanner {
                scanner: r.scanner.clone(),
                status: r.status.clone(),
                reason: r.reason.clone(),
            })
            .collect::<Vec<_>>();
        violations.extend(Severity::ALL.into_iter().filter_map(|sev| {
            let limit = self.thresholds.limit(sev)?;
            let count = counts.get(sev);
            (count > limit).then_some(Violation::Threshold {
                severity: sev,
                count,
                threshold: limit,
            })
        }));
        PolicyVerdict {
            passed: violations.is_empty(),
            thresholds: self.thresholds.clone(),
            violations,
        }
    }
}

fn digest_of(canonical: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
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
    if obj.get("profiles").is_some_and(Value::is_array)
        || (obj.get("profiles").is_none()
            && (obj.contains_key("tools") || obj.contains_key("version")))
    {
        return resolve_legacy(requested, manifest);
    }
    let mut errors = Vec::new();
    let Some((definition, loc)) = find_definition(requested, manifest, obj, &mut errors) else {
        return Err(errors);
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
            "optional",
            "thresholds",
            "exclude",
            "baseline_path",
        ]
        .contains(&key.as_str())
        {
            errors.push(err(
                &at(key),
                "unknown field; allowed: extends, description, scanners, required, optional, thresholds, exclude, baseline_path",
            ));
        }
    }
    let Some(mut profile) = base_profile(requested, def, &at, &mut errors) else {
        return Err(errors);
    };
    if !valid_profile_name(requested) {
        errors.push(err(
            &[] as &[&str],
            format!("profile `{requested}`: names are 1-64 characters of a-z, 0-9, '-' and '_'"),
        ));
    }
    apply_definition(&mut profile, def, &at, &mut errors);
    if errors.is_empty() {
        Ok(profile)
    } else {
        Err(errors)
    }
}

/// The definition of `requested` in a manifest's `profiles` (`None` inside when it has none),
/// or the manifest itself as the definition, with its location; `None` when `profiles` is not
/// an object.
fn find_definition<'m>(
    requested: &str,
    manifest: &'m Value,
    obj: &'m serde_json::Map<String, Value>,
    errors: &mut Vec<ManifestError>,
) -> Option<(Option<&'m Value>, Vec<String>)> {
    if let Some(profiles) = obj.get("profiles") {
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
                "profiles must be an object mapping profile names to definitions (or the earlier service's list of {name, tools, thresholds})",
            ));
            return None;
        };
        for name in profiles.keys() {
            if !valid_profile_name(name) {
                errors.push(err(&["profiles", name], "profile names are 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"));
            }
        }
        Some((
            profiles.get(requested),
            vec!["profiles".to_string(), requested.to_string()],
        ))
    } else {
        Some((Some(manifest), vec![]))
    }
}

/// The profile a definition starts from: the preset it extends (or of its own name), or an
/// empty one; `None` when `extends` names no preset.
fn base_profile(
    requested: &str,
    def: &serde_json::Map<String, Value>,
    at: &dyn Fn(&str) -> Vec<String>,
    errors: &mut Vec<ManifestError>,
) -> Option<Profile> {
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
            return None;
        }
        // A new profile with no base starts empty: it must list its scanners.
        None => Profile::empty(requested),
    };
    Some(Profile {
        name: requested.to_string(),
        custom: true,
        ..base
    })
}

/// Applies a definition's fields (description, scanners, required, thresholds, optional,
/// excludes, baseline) to `profile`.
fn apply_definition(
    profile: &mut Profile,
    def: &serde_json::Map<String, Value>,
    at: &dyn Fn(&str) -> Vec<String>,
    errors: &mut Vec<ManifestError>,
) {
    match def.get("description") {
        None => {}
        Some(Value::String(d)) if d.chars().count() <= 512 => profile.description = d.clone(),
        Some(_) => errors.push(err(
            &at("description"),
            "description must be a string of at most 512 characters",
        )),
    }
    if let Some(list) = scanner_list(def, "scanners", at, errors) {
        profile.scanners = list;
    }
    if let Some(list) = scanner_list(def, "required", at, errors) {
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
        apply_thresholds(t, &mut profile.thresholds, &at("thresholds"), errors);
    }
    if let Some(list) = scanner_list(def, "optional", at, errors) {
        for name in &list {
            if profile.required.contains(name) {
                errors.push(err(
                    &at("optional"),
                    format!("`{name}` is both required and optional; list it in one of them"),
                ));
            } else if !profile.scanners.contains(name) {
                errors.push(err(
                    &at("optional"),
                    format!("`{name}` is not one of the profile's scanners; add it to `scanners` or drop it here"),
                ));
            }
        }
        profile.optional = list;
    }
    if let Some(v) = def.get("exclude") {
        match parse_excludes(v) {
            Ok(list) => profile.exclude = list,
            Err(msg) => errors.push(err(&at("exclude"), msg)),
        }
    }
    match def.get("baseline_path") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if valid_tree_path(p) => profile.baseline_path = Some(p.clone()),
        Some(_) => errors.push(err(
            &at("baseline_path"),
            "baseline_path must be a relative path inside the source tree (at most 1024 characters, without '..'), e.g. security/baseline.json",
        )),
    }
}

/// The list of scanner names in `field` of a definition, known names only, each once.
fn scanner_list(
    def: &serde_json::Map<String, Value>,
    field: &str,
    at: &dyn Fn(&str) -> Vec<String>,
    errors: &mut Vec<ManifestError>,
) -> Option<Vec<String>> {
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
}

/// Sets the thresholds a manifest gives (`{"critical": 0, "high": null}`) on `thresholds`.
fn apply_thresholds(
    t: &Value,
    thresholds: &mut Thresholds,
    loc: &[String],
    errors: &mut Vec<ManifestError>,
) {
    let Some(t) = t.as_object() else {
        errors.push(err(
            loc,
            "thresholds must be an object such as {\"critical\": 0, \"high\": 5}",
        ));
        return;
    };
    for (key, value) in t {
        let slot = match key.as_str() {
            "critical" => &mut thresholds.critical,
            "high" => &mut thresholds.high,
            "medium" => &mut thresholds.medium,
            "low" => &mut thresholds.low,
            _ => {
                errors.push(err(
                    loc,
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
                None => errors.push(err(
                    loc,
                    format!("thresholds.{key} must be a whole number >= 0, or null for no limit"),
                )),
            },
        }
    }
}

/// Most `exclude` globs a profile may have.
const MAX_EXCLUDES: usize = 200;

/// `exclude`: a list of gitignore-syntax globs, each checked.
fn parse_excludes(v: &Value) -> Result<Vec<String>, String> {
    let Some(list) = v.as_array() else {
        return Err("exclude must be a list of gitignore-style globs, e.g. [\"tests/fixtures/\", \"*.min.js\"]".into());
    };
    if list.len() > MAX_EXCLUDES {
        return Err(format!("exclude has more than {MAX_EXCLUDES} globs"));
    }
    let mut out = Vec::new();
    for item in list {
        let Some(glob) = item
            .as_str()
            .filter(|g| !g.trim().is_empty() && g.len() <= 256)
        else {
            return Err("exclude globs must be non-empty strings of at most 256 characters".into());
        };
        let mut builder = ignore::gitignore::GitignoreBuilder::new("");
        if let Err(e) = builder.add_line(None, glob) {
            return Err(format!("exclude glob `{glob}` is invalid: {e}"));
        }
        if !out.iter().any(|o| o == glob) {
            out.push(glob.to_string());
        }
    }
    Ok(out)
}

/// A relative path inside a tree: no leading `/`, no `..`, at most 1024 characters.
fn valid_tree_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/').all(|c| c != "..")
}

/// What a tool id of the earlier service's manifests stands for here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyTool {
    /// Runs as this scanner.
    Scanner(&'static str),
    /// Always done by the service (the attestation): nothing to run, nothing missing.
    Always,
    /// No scanner here does it: recorded in `unsupported_manifest_tools`.
    Unsupported,
}

/// The mapping of the earlier service's tool ids (docs/scanning.md has the same table).
pub fn legacy_tool(id: &str) -> LegacyTool {
    match id.trim().to_ascii_lowercase().as_str() {
        "syft" => LegacyTool::Scanner(names::SBOM),
        "osv" => LegacyTool::Scanner(names::VULNERABILITIES),
        "detect_secrets" => LegacyTool::Scanner(names::DETECT_SECRETS),
        "opengrep" => LegacyTool::Scanner(names::SEMGREP),
        "osv_scanner" => LegacyTool::Scanner(names::OSV_SCANNER),
        "attestation" | "provenance" | "in-toto" => LegacyTool::Always,
        // Every scanner's own name is a tool id too.
        other => {
            registry::find(other).map_or(LegacyTool::Unsupported, |s| LegacyTool::Scanner(s.name))
        }
    }
}

/// The earlier service's manifests: a `profiles` list of `{name, tools, thresholds}`, or one
/// `{"version", "profile", "tools"}`. Tool ids map through [`legacy_tool`]; the rest is kept in
/// `unsupported_manifest_tools`. The digest is the one of the manifest as sent.
fn resolve_legacy(requested: &str, manifest: &Value) -> Result<Profile, Vec<ManifestError>> {
    let obj = manifest.as_object().expect("checked by the caller");
    let mut errors = Vec::new();
    let (entry, loc) = find_legacy_entry(requested, obj, &mut errors);
    let name = match entry.and_then(|e| e.get("profile")) {
        None => requested.to_string(),
        Some(Value::String(p)) if valid_profile_name(p) => p.clone(),
        Some(_) => {
            errors.push(err(
                &["profile"],
                "profile must be a profile name (1-64 characters of a-z, 0-9, '-' and '_')",
            ));
            requested.to_string()
        }
    };
    let at = |field: &str| -> Vec<String> {
        let mut l = loc.clone();
        l.push(field.to_string());
        l
    };
    let Some(entry) = entry else {
        if Profile::builtin(requested).is_none() {
            errors.push(err(&loc, format!("the manifest defines no profile `{requested}` and it is not a built-in profile")));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut profile = Profile::builtin(requested).expect("checked");
        profile.custom = true;
        profile.sent_manifest_digest = Some(sent_digest(manifest));
        return Ok(profile);
    };
    let top_level = loc.is_empty();
    for key in entry.keys() {
        let allowed: &[&str] = if top_level {
            &["version", "profile", "tools", "thresholds", "description"]
        } else {
            &["name", "tools", "thresholds", "description"]
        };
        if !allowed.contains(&key.as_str()) {
            errors.push(err(
                &at(key),
                format!("unknown field; allowed: {}", allowed.join(", ")),
            ));
        }
    }
    let mut profile = Profile::builtin(&name).unwrap_or_else(|| Profile::empty(&name));
    profile.custom = true;
    match entry.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) if d.chars().count() <= 512 => profile.description = d.clone(),
        Some(_) => errors.push(err(
            &at("description"),
            "description must be a string of at most 512 characters",
        )),
    }
    if let Some(tools) = entry.get("tools") {
        match tools.as_array() {
            None => errors.push(err(
                &at("tools"),
                "tools must be a list of tool ids (strings, or objects with `id` or `name`)",
            )),
            Some(list) => {
                let (scanners, unsupported) = legacy_tools(list, &at, &mut errors);
                profile.scanners = scanners;
                profile.unsupported_manifest_tools = unsupported;
            }
        }
    }
    if let Some(t) = entry.get("thresholds") {
        apply_thresholds(t, &mut profile.thresholds, &at("thresholds"), &mut errors);
    }
    if errors.is_empty() {
        profile.sent_manifest_digest = Some(sent_digest(manifest));
        Ok(profile)
    } else {
        Err(errors)
    }
}

/// The entry of `requested` in an earlier service's manifest: the `profiles` list's entry of
/// that name (`None` when it has none), or the manifest itself, with its location.
fn find_legacy_entry<'m>(
    requested: &str,
    obj: &'m serde_json::Map<String, Value>,
    errors: &mut Vec<ManifestError>,
) -> (Option<&'m serde_json::Map<String, Value>>, Vec<String>) {
    if let Some(list) = obj.get("profiles").and_then(Value::as_array) {
        for key in obj.keys() {
            if key != "profiles" && key != "version" {
                errors.push(err(
                        &[key],
                        "unknown field; a manifest with a `profiles` list has no other top-level fields but `version`",
                    ));
            }
        }
        let mut found = None;
        for (i, item) in list.iter().enumerate() {
            let here = vec!["profiles".to_string(), i.to_string()];
            let Some(def) = item.as_object() else {
                errors.push(err(&here, "each entry of `profiles` must be an object {\"name\", \"tools\", \"thresholds\"}"));
                continue;
            };
            match def.get("name").and_then(Value::as_str) {
                Some(n) if valid_profile_name(n) => {
                    if n == requested && found.is_none() {
                        found = Some((def, here));
                    }
                }
                _ => errors.push(err(
                    &[here[0].as_str(), here[1].as_str(), "name"],
                    "each profile needs a `name` of 1-64 characters of a-z, 0-9, '-' and '_'",
                )),
            }
        }
        match found {
            Some((def, here)) => (Some(def), here),
            None => (None, vec!["profiles".to_string()]),
        }
    } else {
        (Some(obj), vec![])
    }
}

/// The scanners an earlier service's tool ids map to, and the ids with no scanner here.
fn legacy_tools(
    list: &[Value],
    at: &dyn Fn(&str) -> Vec<String>,
    errors: &mut Vec<ManifestError>,
) -> (Vec<String>, Vec<String>) {
    let mut scanners = Vec::new();
    let mut unsupported = Vec::new();
    for item in list {
        let id = match item {
            Value::String(s) => Some(s.as_str()),
            Value::Object(o) => o
                .get("id")
                .or_else(|| o.get("name"))
                .and_then(Value::as_str),
            _ => None,
        };
        let Some(id) = id.filter(|i| !i.trim().is_empty() && i.len() <= 64) else {
            errors.push(err(&at("tools"), "each tool is a string id or an object with a string `id` or `name` (at most 64 characters)"));
            continue;
        };
        match legacy_tool(id) {
            LegacyTool::Scanner(s) => {
                if !scanners.iter().any(|o: &String| o == s) {
                    scanners.push(s.to_string());
                }
            }
            LegacyTool::Always => {}
            LegacyTool::Unsupported => {
                if !unsupported.iter().any(|o: &String| o == id) {
                    unsupported.push(id.to_string());
                }
            }
        }
    }
    if scanners.is_empty() {
        errors.push(err(
            &at("tools"),
            format!(
                "none of the tools has a scanner here{}; name at least one of: {}, opengrep",
                if unsupported.is_empty() {
                    String::new()
                } else {
                    format!(" (not supported: {})", unsupported.join(", "))
                },
                registry::SCANNER_NAMES.join(", ")
            ),
        ));
    }
    (scanners, unsupported)
}

/// sha256 of the manifest as sent, in canonical JSON (sorted keys, no whitespace).
fn sent_digest(manifest: &Value) -> String {
    digest_of(&serde_json::to_string(manifest).expect("plain data serializes"))
}

/// A scanner run that did not succeed: `status` is `failed` or `skipped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannerProblem {
    pub scanner: String,
    pub status: String,
    pub reason: String,
}

/// Why a policy failed: too many findings of a severity, or a scanner whose results are
/// missing or incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    Threshold {
        severity: Severity,
        count: u64,
        threshold: u64,
    },
    Scanner {
        scanner: String,
        status: String,
        reason: String,
    },
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
        assert!(light.evaluate(&counts, &[]).passed);
        counts.add(Severity::High, 1);
        let verdict = light.evaluate(&counts, &[]);
        assert!(!verdict.passed);
        assert!(matches!(
            verdict.violations[0],
            Violation::Threshold {
                severity: Severity::High,
                ..
            }
        ));
        counts.add(Severity::Critical, 1);
        assert_eq!(light.evaluate(&counts, &[]).violations.len(), 2);
    }

    #[test]
    fn standard_allows_no_high() {
        let standard = Profile::builtin("standard").unwrap();
        let mut counts = SeverityCounts::default();
        counts.add(Severity::Medium, 25);
        assert!(standard.evaluate(&counts, &[]).passed);
        counts.add(Severity::High, 1);
        assert!(!standard.evaluate(&counts, &[]).passed);
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
        assert!(sbom.evaluate(&counts, &[]).passed);
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
    fn a_scanner_that_did_not_succeed_fails_the_policy_unless_optional() {
        let problem = ScannerProblem {
            scanner: "bandit".into(),
            status: "skipped".into(),
            reason: "not installed".into(),
        };
        let standard = Profile::builtin("standard").unwrap();
        assert!(standard.optional.is_empty(), "presets fail closed");
        let verdict = standard.evaluate(&SeverityCounts::default(), std::slice::from_ref(&problem));
        assert!(!verdict.passed);
        assert_eq!(
            serde_json::to_value(&verdict.violations[0]).unwrap(),
            json!({"kind": "scanner", "scanner": "bandit", "status": "skipped", "reason": "not installed"})
        );
        let relaxed = resolve("standard", Some(&json!({"optional": ["bandit"]}))).unwrap();
        assert!(
            relaxed
                .evaluate(&SeverityCounts::default(), &[problem])
                .passed
        );
        assert_ne!(relaxed.manifest_digest(), standard.manifest_digest());
        let mut counts = SeverityCounts::default();
        counts.add(Severity::Critical, 1);
        assert_eq!(
            serde_json::to_value(&relaxed.evaluate(&counts, &[]).violations[0]).unwrap(),
            json!({"kind": "threshold", "severity": "critical", "count": 1, "threshold": 0})
        );
        for (manifest, needle) in [
            (
                json!({"optional": ["trivy"]}),
                "not one of the profile's scanners",
            ),
            (
                json!({"required": ["bandit"], "optional": ["bandit"]}),
                "both required and optional",
            ),
            (
                json!({"exclude": "tests/"}),
                "list of gitignore-style globs",
            ),
            (json!({"exclude": ["a/{b"]}), "invalid"),
            (json!({"baseline_path": "../b.json"}), "baseline_path"),
        ] {
            let errors = resolve("standard", Some(&manifest)).unwrap_err();
            assert!(
                errors.iter().any(|e| e.msg.contains(needle)),
                "{manifest}: {errors:?}"
            );
        }
        let p = resolve(
            "light",
            Some(&json!({"exclude": ["tests/fixtures/", "*.min.js"], "baseline_path": "sec/baseline.json"})),
        )
        .unwrap();
        assert_eq!(p.exclude, vec!["tests/fixtures/", "*.min.js"]);
        assert_eq!(p.baseline_path.as_deref(), Some("sec/baseline.json"));
        // Fields the profile does not use leave the digests of the presets unchanged.
        assert!(!Profile::builtin("light")
            .unwrap()
            .canonical_json()
            .contains("optional"));
    }

    #[test]
    fn the_earlier_services_manifest_forms_are_accepted() {
        let list = json!({"profiles": [
            {"name": "light", "tools": ["secrets"]},
            {"name": "gate", "tools": [
                "ruff", {"id": "bandit"}, {"name": "opengrep"}, "detect-secrets", "sbom",
                "attestation", "privacy", "eslint-security", "retire-js", "dast"
            ], "thresholds": {"critical": 0, "high": 2}}
        ]});
        let gate = resolve("gate", Some(&list)).unwrap();
        assert_eq!(
            gate.scanners,
            vec!["ruff", "bandit", "semgrep", "detect-secrets", "sbom"]
        );
        assert_eq!(
            gate.unsupported_manifest_tools,
            vec!["privacy", "eslint-security", "retire-js", "dast"]
        );
        assert_eq!(gate.thresholds.high, Some(2));
        assert_eq!(
            gate.thresholds.medium, None,
            "a new profile starts without limits"
        );
        assert!(gate.custom);
        let sent = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(serde_json::to_string(&list).unwrap()))
        );
        assert_eq!(
            gate.manifest_digest(),
            sent,
            "the digest covers the manifest as sent"
        );
        // The stored profile keeps the digest and the unsupported tools.
        let stored: Profile = serde_json::from_value(serde_json::to_value(&gate).unwrap()).unwrap();
        assert_eq!(stored, gate);
        let light = resolve("light", Some(&list)).unwrap();
        assert_eq!(light.scanners, vec!["secrets"]);
        assert_eq!(
            light.thresholds,
            Profile::builtin("light").unwrap().thresholds
        );

        let flat =
            json!({"version": "1", "profile": "standard", "tools": ["bandit", "trivy", "dast"]});
        let p = resolve("light", Some(&flat)).unwrap();
        assert_eq!(p.name, "standard");
        assert_eq!(p.scanners, vec!["bandit", "trivy"]);
        assert_eq!(p.unsupported_manifest_tools, vec!["dast"]);
        assert_eq!(
            p.thresholds,
            Profile::builtin("standard").unwrap().thresholds
        );
        assert!(p.manifest_digest().starts_with("sha256:"));

        for (manifest, needle) in [
            (json!({"profiles": [{"tools": ["ruff"]}]}), "needs a `name`"),
            (
                json!({"profiles": [{"name": "x", "tools": ["dast"]}]}),
                "none of the tools",
            ),
            (
                json!({"profiles": [{"name": "x", "tools": [3]}]}),
                "string id",
            ),
            (
                json!({"profiles": [{"name": "x", "tools": ["ruff"], "colour": 1}]}),
                "unknown field",
            ),
            (json!({"version": "1", "tools": "ruff"}), "list of tool ids"),
            (
                json!({"profiles": [{"name": "other", "tools": ["ruff"]}]}),
                "defines no profile",
            ),
        ] {
            let errors = resolve("x", Some(&manifest)).unwrap_err();
            assert!(
                errors.iter().any(|e| e.msg.contains(needle)),
                "{manifest}: {errors:?}"
            );
        }
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
