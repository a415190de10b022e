//! One finding per problem, suppressed ones listed: after every scanner ran, reads each
//! scanner's SARIF log (`reports/sast/<scanner>.sarif.json`), masks every message and snippet
//! once more with [`mask_secrets`] (and rewrites the log so no file holds a secret in clear),
//! merges the results that are the same problem at the same place across scanners, applies the
//! suppressions (path excludes, inline markers, baseline) and writes `reports/findings.json`
//! and `reports/findings.sarif.json`. Plain data and file I/O; runs on the blocking pool.
//!
//! Merge rule (conservative): two results merge only when they come from different scanners,
//! sit at the same path and line, and either both are about a secret (a secrets scanner, or a
//! rule about hard-coded credentials: bandit B105-B107, ruff S105-S107, semgrep/trivy secret
//! rules) or both belong to the same rule family (bandit `B602` and ruff `S602`; one advisory id).
//! Results of one scanner are never merged with each other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::Context;
use regex::Regex;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::artifacts;
use crate::pipeline::finding::{Severity, SeverityCounts};
use crate::pipeline::redact::mask_secrets;
use crate::pipeline::scanners::names;

/// `reports/findings.json`
pub const FINDINGS_JSON: &str = "reports/findings.json";
/// `reports/findings.sarif.json`
pub const FINDINGS_SARIF: &str = "reports/findings.sarif.json";
/// The baseline read from the root of the scanned tree when no other one is named.
pub const DEFAULT_BASELINE: &str = ".certus-baseline.json";
/// Path excludes read from the root of the scanned tree (gitignore syntax).
pub const CERTUSIGNORE: &str = ".certusignore";

/// Suppression kinds: the `kind` label of `findings_suppressed_total`.
pub const SUPPRESSION_KINDS: [&str; 3] = ["inline", "baseline", "path"];

/// Largest source file read for snippets and inline markers.
const MAX_SOURCE_BYTES: u64 = 8 * 1024 * 1024;
/// Longest snippet written (characters).
const MAX_SNIPPET_CHARS: usize = 300;
/// Largest baseline or `.certusignore` file read.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Why a finding does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suppression {
    /// `inline`, `baseline` or `path`.
    pub kind: &'static str,
    pub detail: String,
}

/// One merged finding (an entry of `reports/findings.json`).
#[derive(Debug, Clone, Serialize)]
pub struct MergedFinding {
    pub id: u64,
    pub fingerprint: String,
    pub fingerprints: Vec<String>,
    pub rule_id: String,
    pub rules: BTreeMap<String, String>,
    pub severity: Severity,
    pub message: String,
    pub path: String,
    pub line: u64,
    pub column: u64,
    pub snippet: String,
    pub scanners: Vec<String>,
    pub suppressed: bool,
    pub suppression: Option<Suppression>,
}

/// What suppresses findings in one scan.
#[derive(Default)]
pub struct SuppressionRules {
    /// Profile `exclude` globs and `.certusignore`, as one gitignore matcher.
    excludes: Option<ignore::gitignore::Gitignore>,
    /// Fingerprints of the baseline, and where it came from.
    baseline: Option<(BTreeSet<String>, String)>,
    /// The baseline file's path in the tree, when it is inside it: its fingerprints are hex
    /// digests that entropy-based scanners (detect-secrets) report as secrets.
    baseline_in_tree: Option<String>,
}

impl SuppressionRules {
    /// The path excludes of the profile and the tree's `.certusignore`, and the baseline: the
    /// CLI's `--baseline FILE`, else the profile's `baseline_path` (inside the tree), else
    /// `.certus-baseline.json` at the root when present. Bad input is an error saying what to fix;
    /// unreadable `.certusignore` lines are reported as warnings.
    pub fn load(
        root: &Path,
        exclude: &[String],
        baseline_path: Option<&str>,
        baseline_file: Option<&Path>,
        warnings: &mut Vec<String>,
    ) -> Result<SuppressionRules, String> {
        let mut builder = ignore::gitignore::GitignoreBuilder::new("");
        let mut any = false;
        for glob in exclude {
            builder
                .add_line(None, glob)
                .map_err(|e| format!("exclude glob `{glob}` is invalid: {e}"))?;
            any = true;
        }
        let ignore_file = root.join(CERTUSIGNORE);
        if ignore_file.is_file() {
            let text = read_limited(&ignore_file)
                .map_err(|e| format!("{CERTUSIGNORE} cannot be read: {e}"))?;
            for (i, line) in String::from_utf8_lossy(&text).lines().enumerate() {
                if let Err(e) = builder.add_line(Some(PathBuf::from(CERTUSIGNORE)), line) {
                    warnings.push(format!(
                        "{CERTUSIGNORE} line {}: ignored, not a valid glob: {e}",
                        i + 1
                    ));
                } else {
                    any = true;
                }
            }
        }
        let excludes = if any {
            Some(
                builder
                    .build()
                    .map_err(|e| format!("the path excludes are invalid: {e}"))?,
            )
        } else {
            None
        };
        let baseline = match (baseline_file, baseline_path) {
            (Some(file), _) => Some((
                read_baseline(file).map_err(|e| format!("the baseline {}: {e}", file.display()))?,
                file.display().to_string(),
            )),
            (None, Some(rel)) => {
                let file = inside_tree(root, rel).ok_or_else(|| {
                    format!("baseline_path `{rel}` does not exist in the source tree (or resolves outside it); commit the baseline there or drop baseline_path")
                })?;
                Some((
                    read_baseline(&file)
                        .map_err(|e| format!("the baseline `{rel}` in the source tree: {e}"))?,
                    rel.to_string(),
                ))
            }
            (None, None) => match inside_tree(root, DEFAULT_BASELINE) {
                Some(file) => Some((
                    read_baseline(&file).map_err(|e| {
                        format!("the baseline `{DEFAULT_BASELINE}` in the source tree: {e}")
                    })?,
                    DEFAULT_BASELINE.to_string(),
                )),
                None => None,
            },
        };
        let baseline_in_tree = match (baseline_file, baseline_path) {
            (Some(file), _) => {
                let root = root.canonicalize().ok();
                file.canonicalize().ok().and_then(|real| {
                    let rel = real.strip_prefix(root?).ok()?;
                    Some(rel.to_string_lossy().replace('\\', "/"))
                })
            }
            (None, Some(rel)) => Some(rel.trim_start_matches("./").to_string()),
            (None, None) => baseline.as_ref().map(|_| DEFAULT_BASELINE.to_string()),
        };
        Ok(SuppressionRules {
            excludes,
            baseline,
            baseline_in_tree,
        })
    }

    fn excluded(&self, path: &str) -> Option<String> {
        let matcher = self.excludes.as_ref()?;
        if path.is_empty() || path.starts_with('/') {
            return None;
        }
        match matcher.matched_path_or_any_parents(path, false) {
            ignore::Match::Ignore(glob) => Some(match glob.from() {
                Some(file) => format!("{} matches `{}`", file.display(), glob.original()),
                None => format!("profile exclude `{}`", glob.original()),
            }),
            _ => None,
        }
    }
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_CONFIG_BYTES / (1024 * 1024)
        )));
    }
    std::fs::read(path)
}

/// `rel` inside `root` (links resolved, never outside it), if it is a file.
fn inside_tree(root: &Path, rel: &str) -> Option<PathBuf> {
    let root = root.canonicalize().ok()?;
    let real = root.join(rel).canonicalize().ok()?;
    (real.starts_with(&root) && real.is_file()).then_some(real)
}

/// Reads a baseline file: `{"version": 1, "fingerprints": ["<hex>", ...]}`.
pub fn read_baseline(path: &Path) -> Result<BTreeSet<String>, String> {
    let text = read_limited(path).map_err(|e| format!("cannot be read: {e}"))?;
    parse_baseline(&text)
}

/// Parses a baseline document.
pub fn parse_baseline(text: &[u8]) -> Result<BTreeSet<String>, String> {
    const SHAPE: &str = "a baseline is {\"version\": 1, \"fingerprints\": [\"<hex sha256>\", ...]}, as `certus-assurance baseline` writes it";
    let value: Value =
        serde_json::from_slice(text).map_err(|e| format!("is not valid JSON ({e}); {SHAPE}"))?;
    if value.get("version").and_then(Value::as_u64) != Some(1) {
        return Err(format!("has no `version` 1; {SHAPE}"));
    }
    let list = value
        .get("fingerprints")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("has no `fingerprints` list; {SHAPE}"))?;
    list.iter()
        .map(|f| {
            f.as_str()
                .filter(|s| !s.is_empty() && s.len() <= 128)
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| format!("holds a fingerprint that is not a string; {SHAPE}"))
        })
        .collect()
}

/// One result of one scanner's SARIF log, masked.
#[derive(Debug, Clone)]
struct RawResult {
    scanner: String,
    run: usize,
    index: usize,
    rule_id: String,
    severity: Severity,
    message: String,
    path: String,
    line: u64,
    column: u64,
    snippet: String,
    fingerprints: Vec<String>,
}

/// What [`process`] produced for the summary, the policy and the metrics.
#[derive(Debug, Clone, Default)]
pub struct FindingsOutcome {
    /// Merged findings that count (not suppressed), by severity.
    pub counts: SeverityCounts,
    /// Suppressed merged findings by kind (`inline`, `baseline`, `path`).
    pub suppressed: BTreeMap<&'static str, u64>,
    pub findings: Vec<MergedFinding>,
}

impl FindingsOutcome {
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed.values().sum()
    }

    /// `findings.suppressed` of `summary.json`.
    pub fn suppressed_json(&self) -> Value {
        let mut v = json!({"total": self.suppressed_total()});
        for kind in SUPPRESSION_KINDS {
            v[kind] = json!(self.suppressed.get(kind).copied().unwrap_or(0));
        }
        v
    }
}

/// Reads the SARIF logs of `scanners` (run order) in `bundle_dir`, re-masks and rewrites them,
/// merges and suppresses, and writes `reports/findings.json` and `reports/findings.sarif.json`.
pub fn process(
    source_root: &Path,
    bundle_dir: &Path,
    test_id: &str,
    scanners: &[String],
    rules: &SuppressionRules,
) -> anyhow::Result<FindingsOutcome> {
    let mut sources = SourceLines::new(source_root);
    let (mut runs, raw) = read_scanner_logs(bundle_dir, scanners, &mut sources)?;
    let groups = merge(&raw);
    let mut findings: Vec<(MergedFinding, Vec<usize>)> = groups
        .into_iter()
        .map(|members| (merged(&raw, &members), members))
        .collect();
    for (finding, _) in findings.iter_mut() {
        let suppression = suppression_of_finding(rules, &mut sources, finding);
        finding.suppressed = suppression.is_some();
        finding.suppression = suppression;
    }
    findings.sort_by(|(a, _), (b, _)| {
        (a.suppressed, a.severity, &a.path, a.line, &a.rule_id).cmp(&(
            b.suppressed,
            b.severity,
            &b.path,
            b.line,
            &b.rule_id,
        ))
    });
    let mut outcome = FindingsOutcome::default();
    let mut suppression_of: HashMap<(usize, usize), Suppression> = HashMap::new();
    for (i, (finding, members)) in findings.iter_mut().enumerate() {
        finding.id = i as u64 + 1;
        match &finding.suppression {
            None => outcome.counts.add(finding.severity, 1),
            Some(s) => {
                *outcome.suppressed.entry(s.kind).or_insert(0) += 1;
                for &m in members.iter() {
                    suppression_of.insert((raw[m].run, raw[m].index), s.clone());
                }
            }
        }
    }
    outcome.findings = findings.into_iter().map(|(f, _)| f).collect();
    artifacts::write_json(
        bundle_dir,
        FINDINGS_JSON,
        &json!({"version": 1, "test_id": test_id, "findings": outcome.findings}),
    )?;
    mark_suppressed_results(&mut runs, &suppression_of);
    artifacts::write_json(
        bundle_dir,
        FINDINGS_SARIF,
        &json!({"$schema": super::sarif::SARIF_SCHEMA, "version": "2.1.0", "runs": runs}),
    )?;
    Ok(outcome)
}

/// Every run of every scanner's log, in run order (a tool may write several runs), each log
/// scrubbed and written back, and every result of those runs.
fn read_scanner_logs(
    bundle_dir: &Path,
    scanners: &[String],
    sources: &mut SourceLines,
) -> anyhow::Result<(Vec<Value>, Vec<RawResult>)> {
    let mut runs: Vec<Value> = Vec::new();
    let mut raw: Vec<RawResult> = Vec::new();
    for scanner in scanners {
        let rel = artifacts::sarif_path(scanner);
        let path = bundle_dir.join(&rel);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read(&path).with_context(|| format!("reading {rel}"))?;
        let mut log: Value =
            serde_json::from_slice(&text).with_context(|| format!("{rel} is not JSON"))?;
        scrub_log(&mut log);
        artifacts::write_json(bundle_dir, &rel, &log)?;
        let log_runs = match log.get_mut("runs").and_then(Value::as_array_mut) {
            Some(list) => std::mem::take(list),
            None => continue,
        };
        for r in log_runs {
            let run = runs.len();
            if let Some(results) = r.get("results").and_then(Value::as_array) {
                for (index, result) in results.iter().enumerate() {
                    let mut found = raw_result(scanner, run, index, result);
                    if found.snippet.is_empty() && found.line > 0 {
                        if let Some(line) = sources.line(&found.path, found.line) {
                            found.snippet = snippet_of(line);
                        }
                    }
                    raw.push(found);
                }
            }
            runs.push(r);
        }
    }
    Ok((runs, raw))
}

/// What suppresses a finding, first match wins: a path exclude, an inline marker, the baseline.
fn suppression_of_finding(
    rules: &SuppressionRules,
    sources: &mut SourceLines,
    finding: &MergedFinding,
) -> Option<Suppression> {
    rules
        .excluded(&finding.path)
        .map(|detail| Suppression {
            kind: "path",
            detail,
        })
        .or_else(|| {
            inline_marker(sources, finding).map(|detail| Suppression {
                kind: "inline",
                detail,
            })
        })
        .or_else(|| {
            let file = rules.baseline_in_tree.as_deref()?;
            (finding.path == file).then(|| Suppression {
                kind: "baseline",
                detail: format!("inside the baseline {file}, which holds only fingerprints"),
            })
        })
        .or_else(|| {
            let (set, source) = rules.baseline.as_ref()?;
            finding
                .fingerprints
                .iter()
                .any(|f| set.contains(f))
                .then(|| Suppression {
                    kind: "baseline",
                    detail: format!("fingerprint listed in the baseline {source}"),
                })
        })
}

/// Gives the SARIF results of suppressed findings their `suppressions`.
fn mark_suppressed_results(
    runs: &mut [Value],
    suppression_of: &HashMap<(usize, usize), Suppression>,
) {
    for (run, r) in runs.iter_mut().enumerate() {
        if let Some(results) = r.get_mut("results").and_then(Value::as_array_mut) {
            for (index, result) in results.iter_mut().enumerate() {
                if let Some(s) = suppression_of.get(&(run, index)) {
                    result["suppressions"] = json!([{
                        "kind": if s.kind == "inline" { "inSource" } else { "external" },
                        "status": "accepted",
                        "justification": format!("{}: {}", s.kind, s.detail),
                    }]);
                }
            }
        }
    }
}

/// Masks every result's message and snippet, and every notification message of a log.
fn scrub_log(log: &mut Value) {
    let Some(runs) = log.get_mut("runs").and_then(Value::as_array_mut) else {
        return;
    };
    for run in runs {
        if let Some(results) = run.get_mut("results").and_then(Value::as_array_mut) {
            for result in results {
                scrub_text(result.pointer_mut("/message/text"));
                scrub_text(result.pointer_mut("/message/markdown"));
                if let Some(locations) = result.get_mut("locations").and_then(Value::as_array_mut) {
                    for loc in locations {
                        scrub_text(loc.pointer_mut("/physicalLocation/region/snippet/text"));
                        scrub_text(loc.pointer_mut("/physicalLocation/contextRegion/snippet/text"));
                    }
                }
            }
        }
        if let Some(invocations) = run.get_mut("invocations").and_then(Value::as_array_mut) {
            for inv in invocations {
                for key in [
                    "toolExecutionNotifications",
                    "toolConfigurationNotifications",
                ] {
                    if let Some(list) = inv.get_mut(key).and_then(Value::as_array_mut) {
                        for n in list {
                            scrub_text(n.pointer_mut("/message/text"));
                        }
                    }
                }
            }
        }
    }
}

fn scrub_text(slot: Option<&mut Value>) {
    if let Some(v) = slot {
        if let Some(text) = v.as_str() {
            *v = Value::String(mask_secrets(text));
        }
    }
}

fn snippet_of(line: &str) -> String {
    let masked = mask_secrets(line.trim());
    if masked.chars().count() > MAX_SNIPPET_CHARS {
        masked.chars().take(MAX_SNIPPET_CHARS).collect::<String>() + "…"
    } else {
        masked
    }
}

fn severity_of(result: &Value) -> Severity {
    match result
        .pointer("/properties/severity")
        .and_then(Value::as_str)
    {
        Some("critical") => Severity::Critical,
        Some("high") => Severity::High,
        Some("medium") => Severity::Medium,
        Some("low") => Severity::Low,
        Some("info") => Severity::Info,
        _ => match result.get("level").and_then(Value::as_str) {
            Some("error") => Severity::High,
            Some("warning") | None => Severity::Medium,
            Some("note") => Severity::Low,
            Some(_) => Severity::Info,
        },
    }
}

/// `%XX`-decoded URI path relative to the source root.
fn decode_uri(uri: &str) -> String {
    let uri = uri.strip_prefix("file://").unwrap_or(uri);
    let bytes = uri.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = uri
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    let path = String::from_utf8_lossy(&out).into_owned();
    path.trim_start_matches("./").to_string()
}

fn raw_result(scanner: &str, run: usize, index: usize, result: &Value) -> RawResult {
    let rule_id = result
        .get("ruleId")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    // Read from a log that `scrub_log` already masked.
    let message = result
        .pointer("/message/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let physical = result.pointer("/locations/0/physicalLocation");
    let path = physical
        .and_then(|p| p.pointer("/artifactLocation/uri"))
        .and_then(Value::as_str)
        .map(decode_uri)
        .unwrap_or_default();
    let region = physical.and_then(|p| p.get("region"));
    let line = region
        .and_then(|r| r.get("startLine"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let column = region
        .and_then(|r| r.get("startColumn"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let snippet = region
        .and_then(|r| r.pointer("/snippet/text"))
        .and_then(Value::as_str)
        .map(|s| snippet_of(s.lines().next().unwrap_or_default()))
        .unwrap_or_default();
    let mut fingerprints: Vec<String> = result
        .get("partialFingerprints")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    if fingerprints.is_empty() {
        // A log without one (contract A says every result has one): derive it from what
        // identifies the result, never from a secret (the message is masked).
        let digest = Sha256::digest(format!("{scanner}\0{rule_id}\0{path}\0{line}\0{message}"));
        fingerprints.push(hex::encode(digest));
    }
    RawResult {
        scanner: scanner.to_string(),
        run,
        index,
        rule_id,
        severity: severity_of(result),
        message,
        path,
        line,
        column,
        snippet,
        fingerprints,
    }
}

static BANDIT_RULE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[BS](\d{3})$").expect("bandit rule pattern"));
static ADVISORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:CVE|GHSA|PYSEC|OSV|RUSTSEC|GO|GSD|MAL|RUBYSEC|NPM)-[\w-]+$")
        .expect("advisory pattern")
});

/// Scanners whose every result is about a secret.
const SECRET_SCANNERS: [&str; 3] = [names::SECRETS, names::DETECT_SECRETS, names::GITLEAKS];

/// The rule family of a result: bandit and ruff's flake8-bandit rules share `bandit:NNN`; an
/// advisory id stands for itself; any other rule is its own family within its scanner.
fn family(scanner: &str, rule: &str) -> String {
    if matches!(scanner, names::BANDIT | names::RUFF) {
        if let Some(c) = BANDIT_RULE.captures(rule) {
            // Ruff's S-rules are bandit's B-rules; bandit's own ids are all B.
            if scanner == names::RUFF && rule.starts_with('S') || scanner == names::BANDIT {
                return format!("bandit:{}", &c[1]);
            }
        }
    }
    let upper = rule.to_ascii_uppercase();
    if ADVISORY.is_match(&upper) {
        return format!("advisory:{upper}");
    }
    format!("{scanner}:{rule}")
}

/// Whether a result is about a hard-coded credential.
fn is_secret(scanner: &str, rule: &str) -> bool {
    if SECRET_SCANNERS.contains(&scanner) {
        return true;
    }
    let fam = family(scanner, rule);
    if matches!(fam.as_str(), "bandit:105" | "bandit:106" | "bandit:107") {
        return true;
    }
    let lower = rule.to_ascii_lowercase();
    match scanner {
        names::SEMGREP => [
            "secret",
            "password",
            "credential",
            "api-key",
            "apikey",
            "token",
        ]
        .iter()
        .any(|w| lower.contains(w)),
        // Trivy's secret rules are lower-case slugs (`aws-access-key-id`); its vulnerability
        // and misconfiguration ids are not.
        names::TRIVY => {
            !rule.is_empty()
                && rule
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ADVISORY.is_match(&rule.to_ascii_uppercase())
        }
        _ => false,
    }
}

fn same_problem(a: &RawResult, b: &RawResult) -> bool {
    (is_secret(&a.scanner, &a.rule_id) && is_secret(&b.scanner, &b.rule_id))
        || family(&a.scanner, &a.rule_id) == family(&b.scanner, &b.rule_id)
}

/// Groups of result indexes that are one problem (see the module documentation).
fn merge(raw: &[RawResult]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut at: HashMap<(&str, u64), Vec<usize>> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let slot = if r.line > 0 && !r.path.is_empty() {
            at.get(&(r.path.as_str(), r.line)).and_then(|candidates| {
                candidates.iter().copied().find(|&g| {
                    let members = &groups[g];
                    members.iter().all(|&m| raw[m].scanner != r.scanner)
                        && members.iter().any(|&m| same_problem(&raw[m], r))
                })
            })
        } else {
            None
        };
        match slot {
            Some(g) => groups[g].push(i),
            None => {
                groups.push(vec![i]);
                if r.line > 0 && !r.path.is_empty() {
                    at.entry((r.path.as_str(), r.line))
                        .or_default()
                        .push(groups.len() - 1);
                }
            }
        }
    }
    groups
}

fn merged(raw: &[RawResult], members: &[usize]) -> MergedFinding {
    let first = &raw[members[0]];
    let mut fingerprints: Vec<String> = Vec::new();
    let mut rules = BTreeMap::new();
    let mut scanners = BTreeSet::new();
    let mut severity = first.severity;
    for &m in members {
        let r = &raw[m];
        for f in &r.fingerprints {
            if !fingerprints.contains(f) {
                fingerprints.push(f.clone());
            }
        }
        rules
            .entry(r.scanner.clone())
            .or_insert_with(|| r.rule_id.clone());
        scanners.insert(r.scanner.clone());
        severity = severity.min(r.severity);
    }
    MergedFinding {
        id: 0,
        fingerprint: fingerprints[0].clone(),
        fingerprints,
        rule_id: first.rule_id.clone(),
        rules,
        severity,
        message: first.message.clone(),
        path: first.path.clone(),
        line: first.line,
        column: members
            .iter()
            .map(|&m| raw[m].column)
            .find(|&c| c > 0)
            .unwrap_or(0),
        snippet: members
            .iter()
            .map(|&m| raw[m].snippet.as_str())
            .find(|s| !s.is_empty())
            .unwrap_or_default()
            .to_string(),
        scanners: scanners.into_iter().collect(),
        suppressed: false,
        suppression: None,
    }
}

/// Lines of the scanned files, read once each.
struct SourceLines {
    /// The canonical root of the tree; `None` when it cannot be resolved (nothing is read).
    root: Option<PathBuf>,
    files: HashMap<String, Option<Vec<String>>>,
}

impl SourceLines {
    fn new(root: &Path) -> Self {
        SourceLines {
            root: root.canonicalize().ok(),
            files: HashMap::new(),
        }
    }

    /// Line `n` (1-based) of `rel`; `None` for paths outside the tree and large files.
    fn line(&mut self, rel: &str, n: u64) -> Option<&str> {
        let root = self.root.as_deref();
        let lines = self.files.entry(rel.to_string()).or_insert_with(|| {
            let root = root?;
            if rel.is_empty()
                || rel.starts_with('/')
                || rel.contains('\\')
                || rel.split('/').any(|c| c == "..")
            {
                return None;
            }
            // A path a tool reported may run through a link: only files inside the tree are read.
            let path = root.join(rel).canonicalize().ok()?;
            if !path.starts_with(root) {
                return None;
            }
            let meta = std::fs::metadata(&path).ok()?;
            if !meta.is_file() || meta.len() > MAX_SOURCE_BYTES {
                return None;
            }
            let bytes = std::fs::read(&path).ok()?;
            Some(
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .map(str::to_string)
                    .collect(),
            )
        });
        let index = usize::try_from(n).ok()?.checked_sub(1)?;
        lines.as_ref()?.get(index).map(String::as_str)
    }
}

/// What an inline marker applies to.
#[derive(Debug, PartialEq, Eq)]
enum MarkerScope {
    All,
    Secrets,
    /// Rule families (`bandit:105`).
    Families(Vec<String>),
    /// semgrep findings (all rules, or those named).
    Semgrep(Vec<String>),
}

static NOSEC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:#|//|/\*|--)\s*nosec\b([^\n]*)").expect("nosec pattern"));
static NOQA: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i-u)#\s*noqa\s*:\s*([A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*)").expect("noqa pattern")
});
static NOSEMGREP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"nosemgrep\b(?:\s*:\s*([\w.\-/]+(?:\s*,\s*[\w.\-/]+)*))?").expect("nosemgrep")
});
static CODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([BS])(\d{3})\b").expect("code pattern"));

/// The markers on one line: (marker text, scope). `next_line` selects the markers that apply to
/// the line below (`pragma: allowlist nextline secret`).
fn markers(line: &str, next_line: bool) -> Vec<(&'static str, MarkerScope)> {
    let mut out = Vec::new();
    let lower = line.to_ascii_lowercase();
    if next_line {
        if lower.contains("pragma: allowlist nextline secret") {
            out.push(("pragma: allowlist nextline secret", MarkerScope::Secrets));
        }
        return out;
    }
    if lower.contains("certus:allow") {
        out.push(("certus:allow", MarkerScope::All));
    }
    if lower.contains("pragma: allowlist secret") {
        out.push(("pragma: allowlist secret", MarkerScope::Secrets));
    }
    if lower.contains("gitleaks:allow") {
        out.push(("gitleaks:allow", MarkerScope::Secrets));
    }
    if let Some(c) = NOSEC.captures(line) {
        let codes: Vec<String> = CODE
            .captures_iter(&c[1])
            .filter(|m| &m[1] == "B")
            .map(|m| format!("bandit:{}", &m[2]))
            .collect();
        out.push((
            "nosec",
            if codes.is_empty() {
                MarkerScope::All
            } else {
                MarkerScope::Families(codes)
            },
        ));
    }
    if let Some(c) = NOQA.captures(line) {
        let codes: Vec<String> = CODE
            .captures_iter(&c[1].to_ascii_uppercase())
            .filter(|m| &m[1] == "S")
            .map(|m| format!("bandit:{}", &m[2]))
            .collect();
        if !codes.is_empty() {
            out.push(("noqa", MarkerScope::Families(codes)));
        }
    }
    if let Some(c) = NOSEMGREP.captures(line) {
        let rules = c
            .get(1)
            .map(|m| {
                m.as_str()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.push(("nosemgrep", MarkerScope::Semgrep(rules)));
    }
    out
}

fn applies(scope: &MarkerScope, f: &MergedFinding) -> bool {
    match scope {
        MarkerScope::All => true,
        MarkerScope::Secrets => f.rules.iter().any(|(s, r)| is_secret(s, r)),
        MarkerScope::Families(fams) => f.rules.iter().any(|(s, r)| fams.contains(&family(s, r))),
        MarkerScope::Semgrep(rules) => f.rules.get(names::SEMGREP).is_some_and(|r| {
            rules.is_empty()
                || rules
                    .iter()
                    .any(|n| r == n || r.ends_with(&format!(".{n}")))
        }),
    }
}

/// A line that holds only a comment.
fn is_comment_line(line: &str) -> bool {
    let t = line.trim_start();
    ["#", "//", "/*", "*", "--", ";", "<!--", "%", "'"]
        .iter()
        .any(|p| t.starts_with(p))
}

/// The inline marker that suppresses `f`: on its line, or on a comment-only line above it, or a
/// `pragma: allowlist nextline secret` on the line above.
fn inline_marker(sources: &mut SourceLines, f: &MergedFinding) -> Option<String> {
    if f.line == 0 {
        return None;
    }
    if let Some(line) = sources.line(&f.path, f.line) {
        for (marker, scope) in markers(line, false) {
            if applies(&scope, f) {
                return Some(format!("`{marker}` on line {}", f.line));
            }
        }
    }
    if f.line > 1 {
        if let Some(above) = sources.line(&f.path, f.line - 1) {
            let mut found = markers(above, true);
            if is_comment_line(above) {
                found.extend(markers(above, false));
            }
            for (marker, scope) in found {
                if applies(&scope, f) {
                    return Some(format!("`{marker}` on line {}", f.line - 1));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sarif(results: Value) -> Value {
        json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "t"}}, "results": results}]})
    }

    fn result(rule: &str, path: &str, line: u64, severity: &str, fp: &str, message: &str) -> Value {
        json!({
            "ruleId": rule,
            "level": "error",
            "message": {"text": message},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": path, "uriBaseId": "SRCROOT"}, "region": {"startLine": line, "startColumn": 3}}}],
            "partialFingerprints": {"fp/v1": fp},
            "properties": {"severity": severity},
        })
    }

    struct Tree {
        root: tempfile::TempDir,
        bundle: tempfile::TempDir,
    }

    fn tree(files: &[(&str, &str)], logs: &[(&str, Value)]) -> Tree {
        let root = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = root.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        let bundle = tempfile::tempdir().unwrap();
        for (scanner, log) in logs {
            artifacts::write_json(bundle.path(), &artifacts::sarif_path(scanner), log).unwrap();
        }
        Tree { root, bundle }
    }

    fn run(t: &Tree, scanners: &[&str], rules: &SuppressionRules) -> FindingsOutcome {
        let names: Vec<String> = scanners.iter().map(|s| s.to_string()).collect();
        process(t.root.path(), t.bundle.path(), "test_x", &names, rules).unwrap()
    }

    const SECRET: &str = "Zk29qPb7Lm4xRt8wVn3sYc6hJd1fGa5e";

    #[test]
    fn same_line_secrets_merge_across_scanners_and_nothing_is_written_in_clear() {
        let line = format!("db_password = \"{SECRET}\"  # other {SECRET}x\n");
        let t = tree(
            &[("app/settings.py", &format!("import os\n{line}"))],
            &[
                (
                    "secrets",
                    sarif(json!([result(
                        "generic-password",
                        "app/settings.py",
                        2,
                        "high",
                        "aa",
                        "Generic password"
                    )])),
                ),
                (
                    "detect-secrets",
                    sarif(json!([result(
                        "secret-keyword",
                        "app/settings.py",
                        2,
                        "medium",
                        "bb",
                        "Secret Keyword"
                    )])),
                ),
                (
                    "bandit",
                    sarif(json!([
                        result(
                            "B105",
                            "app/settings.py",
                            2,
                            "low",
                            "cc",
                            &format!("Possible hardcoded password: '{SECRET}'")
                        ),
                        result("B404", "app/settings.py", 1, "low", "dd", "subprocess"),
                    ])),
                ),
            ],
        );
        let out = run(
            &t,
            &["secrets", "detect-secrets", "bandit"],
            &SuppressionRules::default(),
        );
        assert_eq!(out.findings.len(), 2, "{:?}", out.findings);
        let f = &out.findings[0];
        assert_eq!(f.scanners, vec!["bandit", "detect-secrets", "secrets"]);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.rule_id, "generic-password");
        assert_eq!(f.fingerprints, vec!["aa", "bb", "cc"]);
        assert_eq!(f.rules["bandit"], "B105");
        assert!(f.snippet.contains("db_password"), "{}", f.snippet);
        assert_eq!(out.counts.total, 2);
        assert_eq!(out.counts.high, 1);
        for file in artifacts::list_files(t.bundle.path()).unwrap() {
            let text = std::fs::read_to_string(t.bundle.path().join(&file)).unwrap();
            assert!(!text.contains(SECRET), "{file} holds the secret in clear");
        }
        let doc: Value =
            serde_json::from_slice(&std::fs::read(t.bundle.path().join(FINDINGS_JSON)).unwrap())
                .unwrap();
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["test_id"], "test_x");
        assert_eq!(doc["findings"][0]["id"], 1);
        assert_eq!(doc["findings"][0]["suppression"], Value::Null);
        assert_eq!(doc["findings"][1]["rule_id"], "B404");
        let merged: Value =
            serde_json::from_slice(&std::fs::read(t.bundle.path().join(FINDINGS_SARIF)).unwrap())
                .unwrap();
        assert_eq!(merged["runs"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn different_problems_on_one_line_stay_apart() {
        let t = tree(
            &[("a.py", "subprocess.call(x, shell=True)\n")],
            &[
                (
                    "bandit",
                    sarif(json!([result("B602", "a.py", 1, "high", "a1", "shell")])),
                ),
                (
                    "ruff",
                    sarif(json!([
                        result("S602", "a.py", 1, "medium", "r1", "shell"),
                        result("S603", "a.py", 1, "low", "r2", "untrusted"),
                    ])),
                ),
                (
                    "semgrep",
                    sarif(json!([result(
                        "py.lang.exec",
                        "a.py",
                        1,
                        "medium",
                        "s1",
                        "exec"
                    )])),
                ),
            ],
        );
        let out = run(
            &t,
            &["bandit", "ruff", "semgrep"],
            &SuppressionRules::default(),
        );
        assert_eq!(out.findings.len(), 3, "{:?}", out.findings);
        let shell = out.findings.iter().find(|f| f.rule_id == "B602").unwrap();
        assert_eq!(shell.scanners, vec!["bandit", "ruff"]);
    }

    #[test]
    fn every_inline_marker_suppresses_what_it_names() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("x = 1  # certus:allow\n", "semgrep", "any.rule", true),
            (
                "t = \"v\"  # pragma: allowlist secret\n",
                "detect-secrets",
                "secret-keyword",
                true,
            ),
            (
                "t = \"v\"  # pragma: allowlist secret\n",
                "bandit",
                "B602",
                false,
            ),
            (
                "t = \"v\"  # gitleaks:allow\n",
                "secrets",
                "generic-password",
                true,
            ),
            ("p = \"v\"  # nosec\n", "bandit", "B105", true),
            ("p = \"v\"  # nosec B105\n", "bandit", "B105", true),
            ("p = \"v\"  # nosec B602\n", "bandit", "B105", false),
            ("p = \"v\"  # noqa: S105\n", "ruff", "S105", true),
            ("p = \"v\"  # noqa: S105\n", "bandit", "B105", true),
            ("p = \"v\"  # noqa: E501\n", "ruff", "S105", false),
            ("p = \"v\"  # noqa\n", "ruff", "S105", false),
            ("eval(x)  # nosemgrep\n", "semgrep", "python.eval", true),
            (
                "eval(x)  # nosemgrep: python.eval\n",
                "semgrep",
                "rules.python.eval",
                true,
            ),
            (
                "eval(x)  # nosemgrep: other\n",
                "semgrep",
                "python.eval",
                false,
            ),
        ];
        for (line, scanner, rule, suppressed) in cases {
            let t = tree(
                &[("f.py", line)],
                &[(
                    scanner,
                    sarif(json!([result(rule, "f.py", 1, "high", "f1", "m")])),
                )],
            );
            let out = run(&t, &[scanner], &SuppressionRules::default());
            assert_eq!(
                out.findings[0].suppressed, *suppressed,
                "{line} {scanner} {rule}"
            );
            if *suppressed {
                assert_eq!(out.findings[0].suppression.as_ref().unwrap().kind, "inline");
                assert_eq!(out.suppressed["inline"], 1);
                assert_eq!(out.counts.total, 0);
            }
        }
        // The line above: a comment-only line, or the nextline pragma.
        for (text, suppressed) in [
            ("# certus:allow\nk = \"v\"\n", true),
            ("# pragma: allowlist nextline secret\nk = \"v\"\n", true),
            ("x = 1  # certus:allow\nk = \"v\"\n", false),
        ] {
            let t = tree(
                &[("g.py", text)],
                &[(
                    "secrets",
                    sarif(json!([result(
                        "generic-password",
                        "g.py",
                        2,
                        "high",
                        "g1",
                        "m"
                    )])),
                )],
            );
            let out = run(&t, &["secrets"], &SuppressionRules::default());
            assert_eq!(out.findings[0].suppressed, suppressed, "{text}");
        }
    }

    #[test]
    fn path_excludes_and_baselines_suppress_and_keep_the_finding() {
        let t = tree(
            &[
                ("tests/fixtures/keys.py", "k = 1\n"),
                ("vendor/x.js", "k = 1\n"),
                ("src/app.py", "k = 1\nj = 2\n"),
                (CERTUSIGNORE, "# comment\nvendor/\n"),
                (
                    DEFAULT_BASELINE,
                    "{\"version\": 1, \"fingerprints\": [\"B1\"]}",
                ),
            ],
            &[(
                "secrets",
                sarif(json!([
                    result("r", "tests/fixtures/keys.py", 1, "high", "p1", "m"),
                    result("r", "vendor/x.js", 1, "high", "p2", "m"),
                    result("r", "src/app.py", 1, "high", "b1", "m"),
                    result("r", "src/app.py", 2, "high", "n1", "m"),
                ])),
            )],
        );
        let mut warnings = vec![];
        let rules = SuppressionRules::load(
            t.root.path(),
            &["tests/fixtures/".to_string()],
            None,
            None,
            &mut warnings,
        )
        .unwrap();
        let out = run(&t, &["secrets"], &rules);
        assert_eq!(out.findings.len(), 4);
        assert_eq!(out.counts.total, 1);
        assert_eq!(out.suppressed["path"], 2);
        assert_eq!(out.suppressed["baseline"], 1);
        assert!(!out.findings[0].suppressed, "unsuppressed first");
        assert_eq!(out.findings[0].line, 2);
        let vendor = out
            .findings
            .iter()
            .find(|f| f.path == "vendor/x.js")
            .unwrap();
        assert!(vendor
            .suppression
            .as_ref()
            .unwrap()
            .detail
            .contains(CERTUSIGNORE));
        assert_eq!(out.suppressed_json()["total"], 3);
        let merged: Value =
            serde_json::from_slice(&std::fs::read(t.bundle.path().join(FINDINGS_SARIF)).unwrap())
                .unwrap();
        let results = merged["runs"][0]["results"].as_array().unwrap();
        assert_eq!(
            results
                .iter()
                .filter(|r| r.get("suppressions").is_some())
                .count(),
            3
        );

        // A named baseline that does not exist, or is not a baseline, is an error to fix.
        let e = SuppressionRules::load(
            t.root.path(),
            &[],
            Some("missing.json"),
            None,
            &mut warnings,
        )
        .err()
        .unwrap();
        assert!(e.contains("does not exist"), "{e}");
        assert!(parse_baseline(b"{\"fingerprints\": []}")
            .unwrap_err()
            .contains("version"));
        assert!(parse_baseline(b"[]").is_err());
    }

    #[test]
    fn findings_inside_the_baseline_file_itself_are_suppressed_as_baseline() {
        let baseline = format!(
            "{{\"version\": 1, \"fingerprints\": [\"{}\"]}}\n",
            "ab".repeat(32)
        );
        for (file, baseline_path) in [
            (DEFAULT_BASELINE, None),
            ("ci/baseline.json", Some("ci/baseline.json")),
        ] {
            let t = tree(
                &[(file, baseline.as_str()), ("src/app.py", "k = 1\n")],
                &[(
                    "detect-secrets",
                    sarif(json!([
                        result("HexHighEntropyString", file, 1, "low", "h1", "m"),
                        result("HexHighEntropyString", "src/app.py", 1, "low", "h2", "m"),
                    ])),
                )],
            );
            let rules =
                SuppressionRules::load(t.root.path(), &[], baseline_path, None, &mut vec![])
                    .unwrap();
            let out = run(&t, &["detect-secrets"], &rules);
            assert_eq!(out.counts.total, 1, "{file}");
            let inside = out.findings.iter().find(|f| f.path == file).unwrap();
            assert_eq!(inside.suppression.as_ref().unwrap().kind, "baseline");
            // The CLI's --baseline FILE, when it lies in the tree, too.
            let named = t.root.path().join(file);
            let rules = SuppressionRules::load(t.root.path(), &[], None, Some(&named), &mut vec![])
                .unwrap();
            assert_eq!(
                run(&t, &["detect-secrets"], &rules).counts.total,
                1,
                "{file}"
            );
        }
    }

    #[test]
    fn snippets_are_read_only_from_inside_the_tree_and_every_run_is_kept() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("host.txt"), "server secret line\n").unwrap();
        let t = tree(
            &[("in.py", "count = 1\n")],
            &[(
                "trivy",
                json!({"version": "2.1.0", "runs": [
                    {"results": [result("r1", "in.py", 1, "low", "t1", "m")]},
                    {"results": [result("r2", "out/host.txt", 1, "low", "t2", "m")]},
                ]}),
            )],
        );
        std::os::unix::fs::symlink(outside.path(), t.root.path().join("out")).unwrap();
        let out = run(&t, &["trivy"], &SuppressionRules::default());
        let by_rule = |r: &str| out.findings.iter().find(|f| f.rule_id == r).unwrap();
        assert_eq!(by_rule("r1").snippet, "count = 1");
        assert_eq!(
            by_rule("r2").snippet,
            "",
            "a link out of the tree is not followed"
        );
        let merged: Value =
            serde_json::from_slice(&std::fs::read(t.bundle.path().join(FINDINGS_SARIF)).unwrap())
                .unwrap();
        assert_eq!(merged["runs"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn uris_are_decoded() {
        assert_eq!(decode_uri("dir%20name/%C3%BC.txt"), "dir name/ü.txt");
        assert_eq!(decode_uri("./a.py"), "a.py");
        assert_eq!(decode_uri("a%2"), "a%2");
    }
}
