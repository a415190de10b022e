//! Secrets scanner: finds credentials committed to the source tree.
//!
//! This module owns
//! - the rule set (fixed-format tokens, private key blocks, JWTs, passwords in URLs and a generic
//!   high-entropy assignment rule), each with a stable id, title, severity and prefilter keywords;
//! - the tree walk (gitignore-aware, parallel, skipping binaries, oversized files, vendored
//!   directories, lockfiles and minified files);
//! - redaction: a clear secret value never leaves [`SecretsScanner::scan_content`]; findings carry
//!   a masked snippet and a one-way fingerprint only;
//! - the SARIF 2.1.0 log of its findings, written by the shared [`crate::pipeline::bundle::sarif`] writer.
//!
//! A file costs one pass of a keyword [`RegexSet`] when no keyword occurs in it; only the rules
//! whose keywords occur are run on it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use anyhow::anyhow;
use ignore::{DirEntry, WalkBuilder, WalkState};
use regex::bytes::{Captures, Regex};
use sha2::{Digest, Sha256};

use super::{ScanContext, Scanner, ScannerOutput};
use crate::pipeline::bundle::sarif::{build_sarif, SarifTool};
use crate::pipeline::finding::{Finding, Severity};
use crate::pipeline::redact::shapes;
use checks::*;
use rules::{Check, RuleSpec, Scope, RULES};

mod checks;
#[cfg(test)]
mod format_tests;
mod rules;

/// Files larger than this are skipped: secrets live in config and source, not in data dumps.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// A NUL byte in this many leading bytes marks a file as binary (the heuristic git uses).
const BINARY_SNIFF_BYTES: usize = 8 * 1024;

const SNIPPET_MAX_CHARS: usize = 200;

/// How many characters of context a long line keeps before the match in its snippet.
const SNIPPET_LEAD_CHARS: usize = 40;

/// Directory names never descended into: VCS metadata, vendored dependencies, build output.
const SKIPPED_DIRS: &[&str] = &[
    ".git",
    "node_modules",
    "vendor",
    "third_party",
    ".venv",
    "venv",
    "dist",
    "target",
    "__pycache__",
];

/// Generated files whose content is hashes and URLs, a constant source of false positives.
const SKIPPED_FILES: &[&str] = &[
    "package-lock.json",
    "yarn.lock",
    "Cargo.lock",
    "poetry.lock",
    "go.sum",
];

const SKIPPED_SUFFIXES: &[&str] = &[".min.js", ".min.css"];

/// Key under `partialFingerprints` for the fingerprints of this scanner's results.
pub const SECRET_FINGERPRINT_KEY: &str = "secretFingerprint/v1";

const TOOL_NAME: &str = "certus-assurance-secrets";

struct Rule {
    spec: &'static RuleSpec,
    regex: Regex,
}

/// One accepted match inside a file, before it becomes a [`Finding`].
#[derive(Debug, Clone, Copy)]
struct RawMatch {
    rule: usize,
    /// Byte span of the secret value.
    start: usize,
    end: usize,
    /// Where the part that must be masked begins: `start`, except for private key blocks whose
    /// `-----BEGIN ... PRIVATE KEY-----` header is not secret and is kept as the snippet.
    sensitive_start: usize,
    /// The value passed its format's checksum or structural verification.
    verified: bool,
}

/// Scanner for committed credentials. Cheap to share: rules are compiled once in [`Self::new`].
pub struct SecretsScanner {
    rules: Vec<Rule>,
    /// Every keyword of every rule, ASCII case-insensitive; one pass over a file finds where
    /// each occurs.
    prefilter: AhoCorasick,
    /// Keyword pattern `i` -> the rules it selects.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules whose match spans lines (armored keys, `.netrc`): run on the whole file; the
    /// others run only on the lines where one of their keywords occurs.
    whole_file: Vec<bool>,
    gcp_service_account: Regex,
}

/// One scanner for the whole process, for callers that scan a line at a time
/// (the redaction of any text, which runs the rules too); compiling the rules costs milliseconds.
static SHARED: LazyLock<SecretsScanner> = LazyLock::new(SecretsScanner::new);

impl Default for SecretsScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretsScanner {
    /// Compiles every rule and the keyword prefilter.
    ///
    /// Panics only if a built-in pattern is invalid, which the tests rule out.
    pub fn new() -> Self {
        let rules = RULES
            .iter()
            .map(|spec| Rule {
                spec,
                regex: Regex::new(&spec.pattern.regex())
                    .unwrap_or_else(|e| panic!("secrets rule {}: {e}", spec.id)),
            })
            .collect();
        let mut keywords: Vec<&'static str> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (idx, spec) in RULES.iter().enumerate() {
            for k in spec.keywords {
                match keywords.iter().position(|known| known == k) {
                    Some(i) => keyword_rules[i].push(idx),
                    None => {
                        keywords.push(k);
                        keyword_rules.push(vec![idx]);
                    }
                }
            }
        }
        let prefilter = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            // A few hundred short keywords: the DFA is a few hundred KB and the fastest search.
            .kind(Some(AhoCorasickKind::DFA))
            .build(&keywords)
            .expect("secrets keyword prefilter");
        let whole_file = RULES
            .iter()
            .map(|spec| {
                matches!(spec.check, Check::PrivateKey | Check::KeyBody)
                    || spec.id == "netrc-password"
            })
            .collect();
        let gcp_service_account =
            Regex::new(r#"(?-u)"type"\s*:\s*"service_account""#).expect("service account pattern");
        SecretsScanner {
            rules,
            prefilter,
            keyword_rules,
            whole_file,
            gcp_service_account,
        }
    }

    /// The process-wide scanner.
    pub fn shared() -> &'static SecretsScanner {
        &SHARED
    }

    /// Byte spans of every credential the rules find in `text` (as in a configuration file, so
    /// unquoted assignments count), for masking a line that did not come from a scan.
    pub fn secret_spans(&self, text: &str) -> Vec<(usize, usize)> {
        let mut service_account = None;
        let content = text.as_bytes();
        let mut spans = Vec::new();
        for (idx, windows) in self.candidates(content) {
            let rule = &self.rules[idx];
            for (from, to) in windows {
                for caps in rule.regex.captures_iter(&content[from..to]) {
                    let Some(secret) = caps.name("secret") else {
                        continue;
                    };
                    let accepted = self.accept(
                        rule.spec.check,
                        &caps,
                        from,
                        secret.as_bytes(),
                        content,
                        &mut service_account,
                    );
                    if accepted.is_some() {
                        spans.push((from + secret.start(), from + secret.end()));
                    }
                }
            }
        }
        spans
    }

    /// `(id, title, severity)` of every rule, in rule order; the input of
    /// [`crate::pipeline::bundle::sarif::build_sarif`].
    pub fn rules() -> Vec<(&'static str, &'static str, Severity)> {
        RULES.iter().map(|r| (r.id, r.title, r.severity)).collect()
    }

    /// Scans one file's content. `rel_path` is used only for the findings' `path` and
    /// fingerprints. Findings are sorted by line and column; they never overlap (where two rules
    /// match the same text, the earlier, more specific rule is reported).
    ///
    /// `column` is where the secret value starts (for assignments, the value, not the name).
    pub fn scan_content(&self, rel_path: &str, content: &[u8]) -> Vec<Finding> {
        let candidates = self.candidates(content);
        if candidates.is_empty() {
            return Vec::new();
        }

        // Accepted matches by start offset. They never overlap, so the only one that can overlap
        // a new span is the last one starting before the new span's end.
        let mut kept: BTreeMap<usize, RawMatch> = BTreeMap::new();
        let mut service_account: Option<bool> = None;
        let config_file = is_config_path(rel_path);
        // Candidates are in rule priority order.
        for (idx, windows) in candidates {
            let rule = &self.rules[idx];
            let mut all_captures = Vec::new();
            for (from, to) in windows {
                // The haystack ends with the window so `$` matches there, and starts with the
                // file so look-behind (`\b`, `^`) sees the real context.
                let haystack = &content[..to];
                let mut at = from;
                while at <= to {
                    let Some(caps) = rule.regex.captures_at(haystack, at) else {
                        break;
                    };
                    let Some(whole) = caps.get(0) else {
                        break;
                    };
                    at = whole.end().max(whole.start() + 1);
                    all_captures.push(caps);
                }
            }
            for caps in all_captures {
                let Some(secret) = caps.name("secret") else {
                    continue;
                };
                if rule.spec.scope == Scope::Config && !config_file {
                    let first = caps.get(0).map_or(secret.start(), |m| m.start());
                    let line_start = content[..first]
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(0, |i| i + 1);
                    if !is_assignment_line(&content[line_start..first]) {
                        continue;
                    }
                }
                let Some(verified) = self.accept(
                    rule.spec.check,
                    &caps,
                    0,
                    secret.as_bytes(),
                    content,
                    &mut service_account,
                ) else {
                    continue;
                };
                let (start, end) = (secret.start(), secret.end());
                if kept
                    .range(..end)
                    .next_back()
                    .is_some_and(|(_, m)| m.end > start)
                {
                    continue;
                }
                let sensitive_start = if rule.spec.check == Check::PrivateKey {
                    start + armor_header_len(secret.as_bytes())
                } else {
                    start
                };
                kept.insert(
                    start,
                    RawMatch {
                        rule: idx,
                        start,
                        end,
                        sensitive_start,
                        verified,
                    },
                );
            }
        }
        if kept.is_empty() {
            return Vec::new();
        }

        // Sorted by start, hence also by (line, column); columns are counted incrementally so a
        // file that is one long line full of matches stays linear.
        let matches: Vec<RawMatch> = kept.into_values().collect();
        let lines = LineIndex::new(content);
        let mut cursor = (usize::MAX, 0usize, 0usize); // (line, byte offset, chars before it)
        let mut findings = Vec::with_capacity(matches.len());
        for m in &matches {
            let line = lines.line_of(m.start);
            let (line_start, line_end) = lines.bounds(line, content);
            if cursor.0 != line {
                cursor = (line, line_start, 0);
            }
            cursor.2 += count_chars(&content[cursor.1..m.start]);
            cursor.1 = m.start;
            findings.push(self.to_finding(
                rel_path,
                content,
                (line, line_start, line_end),
                cursor.2 + 1,
                m,
                &matches,
            ));
        }
        findings
    }

    /// The rules to run on `content`, in priority order, each with the byte windows to run it
    /// on: the whole file for multi-line rules, else every line holding one of its keywords
    /// (lines without `\n`, so a window never runs into the next line).
    fn candidates(&self, content: &[u8]) -> Vec<(usize, Vec<(usize, usize)>)> {
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        let mut line = (usize::MAX, 0usize); // bounds of the line of the previous hit
        for hit in self.prefilter.find_overlapping_iter(content) {
            if !(hit.start() >= line.0 && hit.start() < line.1) {
                let start = content[..hit.start()]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = content[hit.start()..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(content.len(), |i| hit.start() + i);
                line = (start, end);
            }
            for &rule in &self.keyword_rules[hit.pattern().as_usize()] {
                let w = &mut windows[rule];
                if self.whole_file[rule] {
                    if w.is_empty() {
                        w.push((0, content.len()));
                    }
                } else if w.last() != Some(&line) {
                    w.push(line);
                }
            }
        }
        windows
            .into_iter()
            .enumerate()
            .filter(|(_, w)| !w.is_empty())
            .collect()
    }

    /// Validates one match: `None` to drop it, `Some(verified)` to keep it, `verified` when the
    /// value passed its format's checksum or structural check.
    ///
    /// `offset` is where the haystack of `caps` starts in `content` (the line around the match is
    /// read from `content` for checks that depend on it).
    fn accept(
        &self,
        check: Check,
        caps: &Captures<'_>,
        offset: usize,
        value: &[u8],
        content: &[u8],
        service_account: &mut Option<bool>,
    ) -> Option<bool> {
        let text = || String::from_utf8_lossy(value);
        let keep = |ok: bool| ok.then_some(false);
        match check {
            Check::Token => keep(token_looks_real(&text())),
            Check::AwsSecret => keep(token_looks_real(&text()) && has_letter_and_digit(&text())),
            Check::AwsKeyId => {
                let t = text();
                token_looks_real(&t).then(|| aws_key_id_alphabet_ok(&t))
            }
            Check::Crc32Base62 => {
                let t = text();
                // A valid checksum is proof enough. Every token of these formats carries one, so
                // a value that fails it is a look-alike (a fixture, an edited or truncated
                // value): it is reported only where the line itself says it holds a credential
                // (`GITHUB_TOKEN=…`, `"auth": …`), never as a bare value in neutral code.
                if crc32_base62_ok(&t) {
                    Some(true)
                } else {
                    let at = offset + caps.get(0).map_or(0, |m| m.start());
                    keep(token_looks_real(&t) && line_names_a_credential(content, at, value))
                }
            }
            Check::PypiMacaroon => {
                let t = text();
                token_looks_real(&t).then(|| pypi_macaroon_ok(&t))
            }
            Check::PrivateKey => keep(armor_body_is_real(value)),
            Check::KeyBody => keep(key_body_is_real(value)),
            Check::GcpServiceAccount => {
                let is_sa = *service_account
                    .get_or_insert_with(|| self.gcp_service_account.is_match(content));
                keep(is_sa && armor_body_is_real(value))
            }
            Check::Jwt => keep(jwt_is_valid(value)),
            Check::UrlPassword => keep(!is_url_password_placeholder(&text())),
            Check::Generic => {
                let name = caps
                    .name("name")
                    .or_else(|| caps.name("name2"))
                    .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
                    .unwrap_or_default();
                let t = text();
                keep(!has_vendor_prefix(&t) && generic_ok(&name, &t))
            }
            Check::Password => keep(password_value_ok(&text(), 4)),
            Check::Bearer => keep(bearer_ok(&text())),
            Check::BasicAuth => basic_auth_ok(&text()).then_some(true),
        }
    }

    fn to_finding(
        &self,
        rel_path: &str,
        content: &[u8],
        (line, line_start, line_end): (usize, usize, usize),
        column: usize,
        m: &RawMatch,
        all: &[RawMatch],
    ) -> Finding {
        let spec = self.rules[m.rule].spec;
        // A private key finding shows its BEGIN header and nothing after it.
        let cut = if spec.check == Check::PrivateKey {
            line_end.min(m.sensitive_start)
        } else {
            line_end
        };
        let snippet = render_snippet(content, line_start, cut, m.start, all);
        Finding {
            rule_id: spec.id.to_string(),
            severity: spec.severity,
            message: if m.verified {
                format!("{} (checksum verified)", capitalize(spec.title))
            } else {
                format!("Possible {}", spec.title)
            },
            path: rel_path.to_string(),
            line: to_u32(line + 1),
            column: to_u32(column),
            snippet,
            fingerprint: fingerprint(spec.id, rel_path, &content[m.start..m.end]),
        }
    }

    /// Reads and scans one file; `None` when it is skipped (unreadable, too large, binary).
    fn scan_file(&self, rel_path: &str, path: &Path) -> Option<(Vec<Finding>, u64)> {
        let file = File::open(path).ok()?;
        if file.metadata().ok()?.len() > MAX_FILE_BYTES {
            return None;
        }
        // Bounded read: the file may have grown since the size check.
        let mut content = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut content)
            .ok()?;
        if content.len() as u64 > MAX_FILE_BYTES || is_binary(&content) {
            return None;
        }
        let len = content.len() as u64;
        Some((self.scan_content(rel_path, &content), len))
    }
}

impl Scanner for SecretsScanner {
    fn name(&self) -> &'static str {
        super::names::SECRETS
    }

    fn run(&self, ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput> {
        let root = ctx.source_root;
        let findings = Mutex::new(Vec::new());
        let files_scanned = AtomicU64::new(0);
        let bytes_scanned = AtomicU64::new(0);
        let cancelled = AtomicBool::new(false);

        let walker = WalkBuilder::new(root)
            .hidden(false)
            // Only the tree's own ignore files count: not those of directories above the
            // checkout, nor the host user's global gitignore.
            .parents(false)
            .git_global(false)
            .git_ignore(true)
            .git_exclude(true)
            .ignore(true)
            // A tree fetched without its `.git` directory still has its `.gitignore` honoured.
            .require_git(false)
            .follow_links(false)
            .filter_entry(|entry| !is_skipped_dir(entry))
            .build_parallel();

        walker.run(|| {
            Box::new(|entry| {
                if ctx.is_cancelled() {
                    cancelled.store(true, Ordering::Relaxed);
                    return WalkState::Quit;
                }
                // Unreadable entries are skipped rather than failing the whole scan.
                let Ok(entry) = entry else {
                    return WalkState::Continue;
                };
                // Symlinks are reported as symlinks (not followed), so they fail this test too.
                if !entry.file_type().is_some_and(|t| t.is_file()) || is_skipped_file(&entry) {
                    return WalkState::Continue;
                }
                let rel_path = relative_path(root, entry.path());
                if let Some((file_findings, len)) = self.scan_file(&rel_path, entry.path()) {
                    files_scanned.fetch_add(1, Ordering::Relaxed);
                    bytes_scanned.fetch_add(len, Ordering::Relaxed);
                    if !file_findings.is_empty() {
                        findings
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .extend(file_findings);
                    }
                }
                WalkState::Continue
            })
        });

        if cancelled.load(Ordering::Relaxed) || ctx.is_cancelled() {
            return Err(anyhow!("cancelled"));
        }

        let mut findings = findings
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The parallel walk visits files in any order.
        findings.sort_by(|a, b| {
            (&a.path, a.line, a.column, &a.rule_id, &a.fingerprint).cmp(&(
                &b.path,
                b.line,
                b.column,
                &b.rule_id,
                &b.fingerprint,
            ))
        });

        let sarif = build_sarif(
            &SarifTool {
                name: TOOL_NAME,
                version: env!("CARGO_PKG_VERSION"),
                information_uri: env!("CARGO_PKG_HOMEPAGE"),
                rule_tags: &["security", "secret"],
                fingerprint_key: SECRET_FINGERPRINT_KEY,
            },
            &Self::rules(),
            &findings,
        );
        Ok(ScannerOutput {
            findings,
            sarif,
            files_scanned: files_scanned.into_inner(),
            bytes_scanned: bytes_scanned.into_inner(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Tree walking helpers

fn is_skipped_dir(entry: &DirEntry) -> bool {
    if entry.depth() == 0 {
        return false;
    }
    let name = entry.file_name().to_string_lossy();
    // `.git` may also be a file (worktrees, submodules); never scan it either way.
    name == ".git"
        || (entry.file_type().is_some_and(|t| t.is_dir()) && SKIPPED_DIRS.contains(&name.as_ref()))
}

fn is_skipped_file(entry: &DirEntry) -> bool {
    let name = entry.file_name().to_string_lossy();
    SKIPPED_FILES.contains(&name.as_ref()) || SKIPPED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn is_binary(content: &[u8]) -> bool {
    content[..content.len().min(BINARY_SNIFF_BYTES)].contains(&0)
}

fn relative_path(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------------------------
// Positions, snippets, fingerprints

/// Byte offsets of line starts, for offset -> (line, column) lookups.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(content: &[u8]) -> Self {
        let mut starts = vec![0];
        starts.extend(
            content
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// 0-based line containing `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset) - 1
    }

    /// Byte range of a line, without its `\n` or `\r\n`.
    fn bounds(&self, line: usize, content: &[u8]) -> (usize, usize) {
        let start = self.starts[line];
        let mut end = self
            .starts
            .get(line + 1)
            .map_or(content.len(), |next| next - 1);
        if end > start && content[end - 1] == b'\r' {
            end -= 1;
        }
        (start, end)
    }
}

/// The line `content[line_start..line_end]` with every secret on it masked (not only the one
/// being reported: a line may hold several), trimmed, and cut to at most
/// [`SNIPPET_MAX_CHARS`] characters around `focus`. `all` is sorted by start and disjoint.
fn render_snippet(
    content: &[u8],
    line_start: usize,
    line_end: usize,
    focus: usize,
    all: &[RawMatch],
) -> String {
    // Only this many bytes either side of the focus can reach the snippet (a char is at most
    // 4 bytes); bounding the work keeps a file that is one huge line linear.
    let reach = SNIPPET_MAX_CHARS * 4;
    let from = next_char_boundary(content, line_start.max(focus.saturating_sub(reach)), focus);
    let to = prev_char_boundary(content, line_end.min(focus.saturating_add(reach)), focus);

    let mut chars: Vec<char> = Vec::new();
    let mut focus_char = None;
    let mut pos = from;
    let first = all.partition_point(|m| m.end <= from);
    for m in &all[first..] {
        if m.sensitive_start >= to {
            break;
        }
        let span_from = m.sensitive_start.max(from);
        let span_to = m.end.min(to);
        if span_from < pos || span_from >= span_to {
            continue;
        }
        if focus >= pos && focus <= span_from && focus_char.is_none() {
            focus_char = Some(chars.len() + count_chars(&content[pos..focus]));
        }
        chars.extend(clear_text(&content[pos..span_from]));
        let total = count_chars(&content[m.sensitive_start..m.end]);
        // The clear prefix is shown only where the value begins, never on continuation lines
        // nor when the window cuts the value's start off.
        let keep = if span_from == m.sensitive_start && total >= 12 {
            4
        } else {
            0
        };
        let masked = String::from_utf8_lossy(&content[span_from..span_to]);
        chars.extend(
            masked
                .chars()
                .enumerate()
                .map(|(i, c)| if i < keep { c } else { '*' }),
        );
        pos = span_to;
    }
    if focus_char.is_none() && focus >= pos {
        focus_char = Some(chars.len() + count_chars(&content[pos..focus.min(to).max(pos)]));
    }
    if pos < to {
        chars.extend(clear_text(&content[pos..to]));
    }

    let lead = chars.iter().take_while(|c| c.is_whitespace()).count();
    let trail = chars.iter().rev().take_while(|c| c.is_whitespace()).count();
    let trimmed = &chars[lead..chars.len().saturating_sub(trail).max(lead)];
    if trimmed.len() <= SNIPPET_MAX_CHARS {
        return trimmed.iter().collect();
    }
    let focus = focus_char.unwrap_or(0).saturating_sub(lead);
    let start = focus
        .saturating_sub(SNIPPET_LEAD_CHARS)
        .min(trimmed.len() - SNIPPET_MAX_CHARS);
    trimmed[start..start + SNIPPET_MAX_CHARS].iter().collect()
}

/// The characters of a part of a line that no finding covers, with every token-like value in it
/// masked all the same (the shapes of [`shapes::generic_spans`] and every rule match, as
/// the redaction of any text masks): a CSRF token, a card number, a password no
/// rule accepted. Masking keeps the number of characters, so columns stay right.
fn clear_text(bytes: &[u8]) -> Vec<char> {
    let text = String::from_utf8_lossy(bytes);
    let mut ranges = shapes::generic_spans(&text);
    ranges.extend(SecretsScanner::shared().secret_spans(&text));
    shapes::apply(&text, ranges).chars().collect()
}

/// Words that say a line holds a credential, matched in lower case outside the value itself.
const CREDENTIAL_WORDS: &[&str] = &[
    "token",
    "secret",
    "passw",
    "pwd",
    "auth",
    "credential",
    "bearer",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "private",
    "_pat",
    "pat_",
    "npmrc",
    "_key",
    "-key",
    "key\"",
    "key=",
    "key:",
    "key ",
];

/// Whether the line around byte `at` of `content`, without `value`, names a credential.
fn line_names_a_credential(content: &[u8], at: usize, value: &[u8]) -> bool {
    let at = at.min(content.len());
    let start = content[..at]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let end = content[at..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(content.len(), |i| at + i);
    let line = String::from_utf8_lossy(&content[start..end]).to_ascii_lowercase();
    let value = String::from_utf8_lossy(value).to_ascii_lowercase();
    let rest = line.replacen(&value, " ", 1);
    CREDENTIAL_WORDS.iter().any(|w| rest.contains(w))
}

/// Characters in a UTF-8 byte run: bytes that do not continue a multi-byte sequence. Exact for
/// valid UTF-8, and additive over adjacent runs split at char boundaries.
fn count_chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| (**b & 0xC0) != 0x80).count()
}

/// `offset`, moved forward (not past `limit`) off the middle of a multi-byte char.
fn next_char_boundary(content: &[u8], mut offset: usize, limit: usize) -> usize {
    while offset < limit && (content[offset] & 0xC0) == 0x80 {
        offset += 1;
    }
    offset
}

/// `offset`, moved back (not before `limit`) off the middle of a multi-byte char.
fn prev_char_boundary(content: &[u8], mut offset: usize, limit: usize) -> usize {
    while offset > limit && offset < content.len() && (content[offset] & 0xC0) == 0x80 {
        offset -= 1;
    }
    offset
}

/// Hex sha256 of `rule_id \0 path \0 value`: stable across runs, not reversible to the value.
fn fingerprint(rule_id: &str, path: &str, value: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rule_id.as_bytes());
    hasher.update([0u8]);
    hasher.update(path.as_bytes());
    hasher.update([0u8]);
    hasher.update(value);
    hex::encode(hasher.finalize())
}

/// `title` with its first letter in upper case.
fn capitalize(title: &str) -> String {
    let mut chars = title.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    //! Every secret-looking value here is generated at run time (prefix + pseudo-random body) so
    //! this file never contains a token verbatim.

    use super::*;

    /// A token of a CRC32-checked format (GitHub, npm) with a valid checksum: every real one has
    /// it, and a look-alike without it is reported only where the line names a credential.
    fn checksummed(prefix: &str, seed: u64) -> String {
        let body = random(seed, 30, ALNUM);
        format!(
            "{prefix}{body}{}",
            super::checks::base62(super::checks::crc32(body.as_bytes()), 6)
        )
    }
    use crate::pipeline::bundle::sarif::SARIF_SCHEMA;
    use serde_json::json;
    use std::fs;

    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const DIGITS: &[u8] = b"0123456789";
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const PRIVATE_KEY: &str = concat!("PRIVATE", " KEY");

    /// Deterministic pseudo-random string over `alphabet` (64-bit LCG, high bits).
    fn random(seed: u64, len: usize, alphabet: &[u8]) -> String {
        let mut state = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                alphabet[((state >> 33) as usize) % alphabet.len()] as char
            })
            .collect()
    }

    fn b64_encode(bytes: &[u8], alphabet: &[u8], pad: bool) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut acc = 0u32;
            for (i, b) in chunk.iter().enumerate() {
                acc |= u32::from(*b) << (16 - 8 * i);
            }
            for i in 0..=chunk.len() {
                out.push(alphabet[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            }
            if pad {
                out.push_str(&"=".repeat(3 - chunk.len()));
            }
        }
        out
    }

    fn pem(kind: &str, seed: u64, lines: usize) -> String {
        let mut body = String::new();
        for i in 0..lines {
            body.push_str(&random(seed + i as u64, 64, B64));
            body.push('\n');
        }
        format!("-----BEGIN {kind}{PRIVATE_KEY}-----\n{body}-----END {kind}{PRIVATE_KEY}-----")
    }

    fn jwt(seed: u64) -> String {
        let header = b64_encode(br#"{"alg":"HS256","typ":"JWT"}"#, B64URL, false);
        let payload = b64_encode(br#"{"sub":"svc-4821","iat":1700000000}"#, B64URL, false);
        format!("{header}.{payload}.{}", random(seed, 43, B64URL))
    }

    /// Three lines of preamble, then `prefix + value + suffix` on line 4.
    fn planted(prefix: &str, value: &str, suffix: &str) -> String {
        format!("# settings\n\nuse_defaults = true\n{prefix}{value}{suffix}\ntrailer = 1\n")
    }

    fn assert_redacted(f: &Finding, value: &str) {
        assert!(
            !f.snippet.contains(value),
            "clear value in snippet {:?}",
            f.snippet
        );
        assert!(
            !f.message.contains(value),
            "clear value in message {:?}",
            f.message
        );
        assert!(!f.fingerprint.contains(value));
        // Nothing past the 4-char clear prefix may leak.
        let tail: String = value.chars().skip(4).collect();
        if tail.len() >= 4 {
            assert!(
                !f.snippet.contains(&tail),
                "secret tail in snippet {:?}",
                f.snippet
            );
        }
    }

    /// Scans `prefix + value + suffix` planted on line 4 and expects exactly one finding of
    /// `rule` at the value's first character.
    fn expect_one(rule: &str, prefix: &str, value: &str, suffix: &str) -> Finding {
        let scanner = SecretsScanner::shared();
        let findings =
            scanner.scan_content("conf/app.cfg", planted(prefix, value, suffix).as_bytes());
        assert_eq!(findings.len(), 1, "{rule}: {findings:#?}");
        let f = findings.into_iter().next().unwrap();
        assert_eq!(f.rule_id, rule);
        assert_eq!(f.line, 4, "{rule}");
        assert_eq!(f.column as usize, prefix.chars().count() + 1, "{rule}");
        assert_eq!(f.path, "conf/app.cfg");
        assert!(
            f.message.starts_with("Possible ") || f.message.ends_with(" (checksum verified)"),
            "{}",
            f.message
        );
        assert_redacted(&f, value);
        f
    }

    fn expect_none(content: &str) {
        let findings = SecretsScanner::shared().scan_content("x.txt", content.as_bytes());
        assert!(
            findings.is_empty(),
            "unexpected findings for {content:?}: {findings:#?}"
        );
    }

    fn severity_of(rule: &str) -> Severity {
        RULES.iter().find(|r| r.id == rule).unwrap().severity
    }

    // ----- rule table ---------------------------------------------------------------------

    #[test]
    fn rules_compile_and_are_well_formed() {
        let scanner = SecretsScanner::shared();
        assert_eq!(scanner.rules.len(), RULES.len());
        let mut ids: Vec<&str> = RULES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len(), "duplicate rule id");
        for rule in &scanner.rules {
            assert!(
                rule.regex.capture_names().flatten().any(|n| n == "secret"),
                "{} has no `secret` group",
                rule.spec.id
            );
            assert!(!rule.spec.keywords.is_empty(), "{}", rule.spec.id);
            for k in rule.spec.keywords {
                assert!(
                    k.is_ascii() && *k == k.to_ascii_lowercase(),
                    "{}: {k}",
                    rule.spec.id
                );
            }
        }
        assert_eq!(scanner.name(), "secrets");
    }

    #[test]
    fn prefilter_skips_files_without_keywords() {
        let scanner = SecretsScanner::shared();
        let plain = "fn main() {\n    println!(\"hello, world\");\n}\n";
        assert!(!scanner.prefilter.is_match(plain.as_bytes()));
        assert!(scanner.candidates(plain.as_bytes()).is_empty());
        assert!(scanner.scan_content("main.rs", plain.as_bytes()).is_empty());
        // A keyword alone selects its rules, on its line only, but does not make a finding.
        let only_keyword = "fn main() {}\nlet token = read_token();\n";
        let selected = scanner.candidates(only_keyword.as_bytes());
        let ids: Vec<&str> = selected.iter().map(|(i, _)| RULES[*i].id).collect();
        assert!(ids.contains(&"generic-secret-assignment"), "{ids:?}");
        for (_, windows) in &selected {
            assert_eq!(windows, &vec![(13, only_keyword.len() - 1)]);
        }
        assert!(scanner
            .scan_content("a.rs", only_keyword.as_bytes())
            .is_empty());
        // Multi-line rules get the whole file.
        let key = "x\n-----BEGIN PRIVATE KEY-----\n";
        let selected = scanner.candidates(key.as_bytes());
        let pk = selected
            .iter()
            .find(|(i, _)| RULES[*i].id == "private-key")
            .expect("private-key selected");
        assert_eq!(pk.1, vec![(0, key.len())]);
    }

    #[test]
    fn severities_follow_policy() {
        for id in [
            "private-key",
            "aws-access-key-id",
            "aws-secret-access-key",
            "gcp-service-account-key",
            "stripe-live-key",
            "github-pat",
            "github-fine-grained-pat",
            "github-oauth-token",
            "github-app-token",
            "github-refresh-token",
            "gitlab-pat",
        ] {
            assert_eq!(severity_of(id), Severity::Critical, "{id}");
        }
        for id in [
            "slack-token",
            "slack-webhook-url",
            "npm-access-token",
            "pypi-upload-token",
            "google-api-key",
        ] {
            assert_eq!(severity_of(id), Severity::High, "{id}");
        }
        for id in ["jwt", "url-password", "generic-secret-assignment"] {
            assert_eq!(severity_of(id), Severity::Medium, "{id}");
        }
        assert_eq!(severity_of("stripe-test-key"), Severity::Low);
    }

    // ----- AWS ----------------------------------------------------------------------------

    #[test]
    fn aws_access_key_id() {
        let key = format!("AKIA{}", random(1, 16, UPPER_DIGITS));
        let f = expect_one("aws-access-key-id", "aws_access_key_id = \"", &key, "\"");
        assert_eq!(f.severity, Severity::Critical);
        assert!(
            f.snippet.starts_with("aws_access_key_id = \"AKIA****"),
            "{}",
            f.snippet
        );
        expect_one(
            "aws-access-key-id",
            "id: ",
            &format!("ASIA{}", random(2, 16, UPPER_DIGITS)),
            "",
        );

        expect_none(&format!("id: AKIB{}\n", random(1, 16, UPPER_DIGITS)));
        expect_none(&format!("id: AKIA{}\n", random(1, 15, UPPER_DIGITS)));
        expect_none(&format!(
            "id: akia{}\n",
            random(1, 16, UPPER_DIGITS).to_lowercase()
        ));
        expect_none(&format!("id: AKIA{}{}\n", "IOSFODNN7", "EXAMPLE"));
        expect_none(&format!("id: AKIA{}\n", "0".repeat(16)));
    }

    #[test]
    fn aws_secret_access_key() {
        let secret = format!(
            "{}/{}+{}7q",
            random(3, 20, ALNUM),
            random(4, 10, ALNUM),
            random(5, 6, ALNUM)
        );
        assert_eq!(secret.len(), 40);
        let f = expect_one(
            "aws-secret-access-key",
            "aws_secret_access_key = ",
            &secret,
            "",
        );
        assert_eq!(f.severity, Severity::Critical);
        expect_one(
            "aws-secret-access-key",
            "  \"AWS_SECRET_ACCESS_KEY\": \"",
            &secret,
            "\",",
        );
        expect_one("aws-secret-access-key", "SecretAccessKey: ", &secret, "");

        expect_none(&format!("aws_secret_access_key = {}\n", &secret[..39]));
        expect_none(&format!("aws_secret_access_key = {}Z\n", secret));
        expect_none(&format!(
            "aws_secret_access_key = {}\n",
            random(6, 40, UPPER)
        ));
        expect_none(&format!(
            "aws_secret_access_key = {}{}{}\n",
            "wJalrXUtnFEMI/K7MDENG/", "bPxRfiCY", "EXAMPLEKEY"
        ));
        // The value alone, without the assignment, is too generic to report.
        expect_none(&format!("blob: {secret}\n"));
    }

    // ----- GCP / Google -------------------------------------------------------------------

    fn service_account_json(kind: &str) -> (String, String) {
        let body: String = (0..12)
            .map(|i| random(40 + i, 64, B64))
            .collect::<Vec<_>>()
            .join("\\n");
        let key =
            format!("-----BEGIN {PRIVATE_KEY}-----\\n{body}\\n-----END {PRIVATE_KEY}-----\\n");
        let json = format!(
            "{{\n  \"type\": \"{kind}\",\n  \"project_id\": \"demo-proj\",\n  \"private_key_id\": \"{}\",\n  \"private_key\": \"{key}\",\n  \"client_email\": \"svc@demo-proj.iam.gserviceaccount.com\"\n}}\n",
            random(7, 40, b"0123456789abcdef")
        );
        (json, key)
    }

    #[test]
    fn gcp_service_account_key() {
        let (json, key) = service_account_json("service_account");
        let findings = SecretsScanner::shared().scan_content("sa.json", json.as_bytes());
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.rule_id, "gcp-service-account-key");
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!((f.line, f.column), (5, 19));
        assert_redacted(f, &key);
        assert!(
            f.snippet.starts_with("\"private_key\": \"----*"),
            "{}",
            f.snippet
        );
        assert!(f.snippet.chars().count() <= SNIPPET_MAX_CHARS);

        // Same key in a JSON that is not a service account: a plain private key finding.
        let (other, _) = service_account_json("authorized_user");
        let findings = SecretsScanner::shared().scan_content("other.json", other.as_bytes());
        let ids: Vec<&str> = findings.iter().map(|f| f.rule_id.as_str()).collect();
        assert_eq!(ids, ["private-key"]);

        // A service account file whose key is elided.
        let elided = format!(
            "{{\"type\": \"service_account\", \"private_key\": \"-----BEGIN {PRIVATE_KEY}-----\\n...\\n-----END {PRIVATE_KEY}-----\\n\"}}"
        );
        expect_none(&elided);
    }

    #[test]
    fn google_api_key() {
        let key = format!("AIza{}", random(8, 35, B64URL));
        let f = expect_one("google-api-key", "const MAPS_KEY = '", &key, "';");
        assert_eq!(f.severity, Severity::High);
        expect_one("google-api-key", "maps=", &key, "");

        expect_none(&format!("k = AIza{}\n", random(8, 30, ALNUM)));
        expect_none(&format!("k = AIzb{}\n", random(8, 35, ALNUM)));
    }

    // ----- GitHub / GitLab ----------------------------------------------------------------

    #[test]
    fn github_tokens() {
        for (prefix, rule, seed) in [
            ("ghp", "github-pat", 10),
            ("gho", "github-oauth-token", 11),
            ("ghu", "github-app-token", 12),
            ("ghs", "github-app-token", 13),
            ("ghr", "github-refresh-token", 14),
        ] {
            let token = format!("{prefix}_{}", random(seed, 36, ALNUM));
            let f = expect_one(rule, "GITHUB_TOKEN=", &token, "");
            assert_eq!(f.severity, Severity::Critical);
            assert!(
                f.snippet.starts_with(&format!("GITHUB_TOKEN={prefix}_*")),
                "{}",
                f.snippet
            );
        }
        let fine = format!(
            "github_pat_{}_{}",
            random(15, 22, ALNUM),
            random(16, 59, ALNUM)
        );
        expect_one("github-fine-grained-pat", "token: ", &fine, "");

        expect_none(&format!("t = ghx_{}\n", random(10, 36, ALNUM)));
        expect_none(&format!("t = ghp_{}\n", random(10, 35, ALNUM)));
        expect_none(&format!("t = ghp_{}\n", "x".repeat(36)));
        expect_none(&format!("t = github_pat_{}\n", random(15, 40, ALNUM)));
    }

    #[test]
    fn gitlab_pat() {
        let token = format!("glpat-{}", random(17, 20, B64URL));
        let f = expect_one("gitlab-pat", "export GITLAB_TOKEN=", &token, "");
        assert_eq!(f.severity, Severity::Critical);

        expect_none(&format!(
            "export GITLAB_TOKEN=glpat-{}\n",
            random(17, 19, ALNUM)
        ));
        expect_none(&format!("export GITLAB_TOKEN=glpat-{}\n", "x".repeat(20)));
        expect_none(&format!(
            "export GITLAB_TOKEN=glpaT-{}\n",
            random(17, 20, ALNUM)
        ));
    }

    // ----- Slack ---------------------------------------------------------------------------

    #[test]
    fn slack_tokens_and_webhooks() {
        let token = format!(
            "xoxb-{}-{}-{}",
            random(18, 12, DIGITS),
            random(19, 13, DIGITS),
            random(20, 24, ALNUM)
        );
        let f = expect_one("slack-token", "  bot_token: ", &token, "");
        assert_eq!(f.severity, Severity::High);

        let hook = format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            random(21, 8, UPPER_DIGITS),
            random(22, 8, UPPER_DIGITS),
            random(23, 24, ALNUM)
        );
        let f = expect_one("slack-webhook-url", "WEBHOOK = \"", &hook, "\"");
        assert_eq!(f.severity, Severity::High);

        expect_none("SLACK_TOKEN=xoxb-your-token-here\n");
        expect_none(&format!(
            "SLACK_TOKEN=xoxq-{}-{}\n",
            random(18, 12, DIGITS),
            random(20, 24, ALNUM)
        ));
        expect_none("WEBHOOK=https://hooks.slack.com/services/T000/B000/XXXX\n");
    }

    // ----- Stripe, npm, PyPI ------------------------------------------------------------

    #[test]
    fn stripe_keys() {
        let live = format!("sk_live_{}", random(24, 24, ALNUM));
        let f = expect_one("stripe-live-key", "stripe.api_key = \"", &live, "\"");
        assert_eq!(f.severity, Severity::Critical);
        let restricted = format!("rk_live_{}", random(25, 99, ALNUM));
        expect_one("stripe-live-key", "STRIPE_KEY=", &restricted, "");
        let test = format!("sk_test_{}", random(26, 24, ALNUM));
        let f = expect_one("stripe-test-key", "STRIPE_KEY=", &test, "");
        assert_eq!(f.severity, Severity::Low);

        expect_none(&format!("STRIPE_KEY=sk_live_{}\n", random(24, 10, ALNUM)));
        expect_none(&format!("STRIPE_KEY=pk_live_{}\n", random(24, 24, ALNUM)));
    }

    #[test]
    fn npm_token() {
        let token = checksummed("npm_", 27);
        let f = expect_one(
            "npm-access-token",
            "//registry.npmjs.org/:_authToken=",
            &token,
            "",
        );
        assert_eq!(f.severity, Severity::High);

        expect_none(&format!(
            "//registry.npmjs.org/:_authToken=npm_{}\n",
            random(27, 30, ALNUM)
        ));
        expect_none(&format!(
            "//registry.npmjs.org/:_authToken=nmp_{}\n",
            random(27, 36, ALNUM)
        ));
    }

    #[test]
    fn pypi_token() {
        let token = format!("pypi-{}{}", "AgEIcHlwaS5vcmc", random(28, 80, B64URL));
        let f = expect_one("pypi-upload-token", "password = ", &token, "");
        assert_eq!(f.severity, Severity::High);

        expect_none(&format!(
            "password = pypi-{}{}\n",
            "AgEIcHlwaS5vcmc",
            random(28, 20, ALNUM)
        ));
        expect_none(&format!(
            "password = pypi-{}{}\n",
            "AgEIcHlwaS5jb20",
            random(28, 80, ALNUM)
        ));
    }

    // ----- Private keys --------------------------------------------------------------------

    #[test]
    fn private_key_blocks() {
        for (kind, seed) in [
            ("RSA ", 30),
            ("EC ", 31),
            ("DSA ", 32),
            ("OPENSSH ", 33),
            ("ENCRYPTED ", 34),
            ("", 35),
        ] {
            let block = pem(kind, seed, 8);
            let f = expect_one("private-key", "    ", &block, "");
            assert_eq!(f.severity, Severity::Critical);
            assert_eq!(f.snippet, format!("-----BEGIN {kind}{PRIVATE_KEY}-----"));
        }

        // PGP armor with a header line before the body.
        let pgp = format!(
            "-----BEGIN PGP {PRIVATE_KEY} BLOCK-----\nVersion: GnuPG v2 (GNU/Linux)\n\n{}\n{}\n=AbCd\n-----END PGP {PRIVATE_KEY} BLOCK-----",
            random(36, 64, B64),
            random(37, 64, B64)
        );
        let f = expect_one("private-key", "", &pgp, "");
        assert_eq!(
            f.snippet,
            format!("-----BEGIN PGP {PRIVATE_KEY} BLOCK-----")
        );

        // Code that only mentions the header, a public key, and an elided body.
        expect_none(&format!(
            "if pem.starts_with(\"-----BEGIN RSA {PRIVATE_KEY}-----\") {{ parse(pem) }}\n"
        ));
        expect_none(&format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            random(38, 64, B64)
        ));
        expect_none(&format!(
            "-----BEGIN RSA {PRIVATE_KEY}-----\nMIIEpAIBAAKCAQEA...\n-----END RSA {PRIVATE_KEY}-----\n"
        ));
    }

    #[test]
    fn private_key_body_lines_never_leak() {
        let block = pem("RSA ", 39, 6);
        let content = format!("key = \"\"\"\n{block}\n\"\"\"\n");
        let findings = SecretsScanner::shared().scan_content("k.py", content.as_bytes());
        assert_eq!(findings.len(), 1);
        for line in block.lines().skip(1) {
            assert!(!findings[0].snippet.contains(line));
        }
        assert_eq!((findings[0].line, findings[0].column), (2, 1));
    }

    // ----- JWT -----------------------------------------------------------------------------

    #[test]
    fn jwt_tokens() {
        let token = jwt(40);
        let f = expect_one("jwt", "Authorization: Bearer ", &token, "");
        assert_eq!(f.severity, Severity::Medium);
        assert!(jwt_is_valid(token.as_bytes()));

        let two_segments: String = token.rsplit_once('.').unwrap().0.to_string();
        expect_none(&format!("Authorization: Bearer {two_segments}\n"));
        // `eyJ` followed by bytes that do not decode to a JSON object.
        expect_none(&format!(
            "Authorization: Bearer eyJ{}.{}.{}\n",
            random(41, 30, ALNUM),
            random(42, 30, ALNUM),
            random(43, 43, ALNUM)
        ));
        expect_none(&format!(
            "Authorization: Bearer {}..{}\n",
            &token[..20],
            random(43, 43, ALNUM)
        ));
    }

    // ----- URL passwords -------------------------------------------------------------------

    #[test]
    fn url_password() {
        let password = random(44, 14, ALNUM);
        let f = expect_one(
            "url-password",
            "DATABASE_URL=postgres://app_user:",
            &password,
            "@db.internal:5432/app",
        );
        assert_eq!(f.severity, Severity::Medium);
        assert!(
            f.snippet
                .contains(&format!("{}**********@db.internal", &password[..4])),
            "{}",
            f.snippet
        );

        // Short passwords are masked entirely.
        let short = random(45, 8, ALNUM);
        let f = expect_one("url-password", "redis: redis://:", &short, "@cache:6379/0");
        assert_eq!(f.snippet, "redis: redis://:********@cache:6379/0");

        for placeholder in [
            "password",
            "<password>",
            "${DB_PASSWORD}",
            "***",
            "xxx",
            "{{ db_pass }}",
            "$PASS",
            "%(pw)s",
        ] {
            expect_none(&format!(
                "url = postgres://user:{placeholder}@db:5432/app\n"
            ));
        }
        expect_none("see http://localhost:8080/path and https://user@example.org/x\n");
    }

    // ----- Generic assignments -------------------------------------------------------------

    #[test]
    fn generic_assignment() {
        let value = format!(
            "{}9{}",
            random(46, 12, ALNUM),
            random(47, 11, b"abcdefXYZ0123!#%")
        );
        let f = expect_one(
            "generic-secret-assignment",
            "db_password = \"",
            &value,
            "\"",
        );
        assert_eq!(f.severity, Severity::Medium);
        expect_one(
            "generic-secret-assignment",
            "  \"apiKey\": \"",
            &value,
            "\",",
        );
        expect_one("generic-secret-assignment", "client_secret: '", &value, "'");
        expect_one("generic-secret-assignment", "AUTH_TOKEN := `", &value, "`");

        for line in [
            "password = \"changeme-changeme-123\"".to_string(),
            "secret = \"aaaaaaaaaaaaaaaaaaaaaaaa\"".to_string(),
            "api_key = \"${API_KEY_FROM_ENVIRONMENT}\"".to_string(),
            "token = os.environ[\"GITHUB_TOKEN_VALUE_1\"]".to_string(),
            "password = os.getenv(\"DB_PASSWORD_LONG_NAME_1\")".to_string(),
            "password = \"short1\"".to_string(),
            format!(
                "token = \"{}\"",
                random(48, 24, b"abcdefghijklmnopqrstuvwxyz")
            ),
            "password = \"1234567890123456\"".to_string(),
            "secret: \"this is a sentence with 123 in it\"".to_string(),
            "token_url = \"https://login.acme.io/oauth2/v2.0/token\"".to_string(),
            format!("author = \"{}\"", random(49, 24, ALNUM)),
            format!("if password == \"{value}\" {{}}"),
            format!("greeting = \"{value}\""),
        ] {
            expect_none(&format!("{line}\n"));
        }
    }

    #[test]
    fn specific_rule_wins_over_generic() {
        let token = checksummed("ghp_", 50);
        expect_one("github-pat", "github_token = \"", &token, "\"");
        let jwt = jwt(51);
        expect_one("jwt", "access_token: \"", &jwt, "\"");
        // A token used as the password of a clone URL is reported as the token.
        let token = checksummed("ghp_", 57);
        expect_one(
            "github-pat",
            "url = https://x-access-token:",
            &token,
            "@github.com/org/repo.git",
        );
    }

    // ----- Redaction, positions, fingerprints ----------------------------------------------

    #[test]
    fn every_secret_on_a_line_is_masked_in_every_snippet() {
        let gh = checksummed("ghp_", 52);
        let npm = checksummed("npm_", 53);
        let content = format!("export GH={gh} NPM={npm}\n");
        let findings = SecretsScanner::shared().scan_content(".env", content.as_bytes());
        assert_eq!(findings.len(), 2);
        assert_eq!(
            (findings[0].rule_id.as_str(), findings[0].column),
            ("github-pat", 11)
        );
        assert_eq!(
            (findings[1].rule_id.as_str(), findings[1].column),
            ("npm-access-token", 56)
        );
        for f in &findings {
            assert_redacted(f, &gh);
            assert_redacted(f, &npm);
        }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let token = checksummed("ghp_", 54);
        let f = expect_one("github-pat", "// clé € ", &token, "");
        assert_eq!(f.column, 10);
    }

    #[test]
    fn crlf_lines_and_long_lines() {
        let token = checksummed("npm_", 55);
        let content = format!(
            "a\r\nb\r\n{}{token}{}\r\n",
            "x ".repeat(300),
            " y".repeat(300)
        );
        let findings = SecretsScanner::shared().scan_content("long.txt", content.as_bytes());
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!((f.line, f.column), (3, 601));
        assert_eq!(f.snippet.chars().count(), SNIPPET_MAX_CHARS);
        assert!(f.snippet.contains("npm_****"), "{}", f.snippet);
        assert!(!f.snippet.contains('\r'));
        assert_redacted(f, &token);
    }

    #[test]
    fn fingerprint_is_sha256_of_rule_path_value() {
        let token = checksummed("gho_", 56);
        let content = format!("t={token}\n");
        let scanner = SecretsScanner::shared();
        let a = scanner.scan_content("a/b.txt", content.as_bytes());
        let b = scanner.scan_content("a/c.txt", content.as_bytes());
        let expected = hex::encode(Sha256::digest(format!(
            "github-oauth-token\0a/b.txt\0{token}"
        )));
        assert_eq!(a[0].fingerprint, expected);
        assert_ne!(a[0].fingerprint, b[0].fingerprint);
        // Moving the secret within the file does not change it.
        let moved = scanner.scan_content("a/b.txt", format!("\n\n  t={token}\n").as_bytes());
        assert_eq!(moved[0].fingerprint, expected);
    }

    #[test]
    fn filler_is_a_placeholder_but_mixed_case_runs_are_not() {
        assert!(is_placeholder("ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
        assert!(is_placeholder("AKIAXXXXXXXXXXXXXXXX"));
        // A random token that happens to hold `xXxX` is still a token.
        assert!(!is_placeholder("ghp_6AgzlOyxGY39qxXxXMr1oQLyNlmJdPhltcX0"));
    }

    #[test]
    fn helpers() {
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
        assert_eq!(base64url_decode(b"eyJ9"), Some(b"{\"}".to_vec()));
        assert_eq!(base64url_decode(b"abcde"), None);
        assert_eq!(base64url_decode(b"ab*d"), None);
        assert_eq!(armor_header_len(b"-----BEGIN X-----body"), 17);
    }

    // ----- Tree walking --------------------------------------------------------------------

    fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn run_on(root: &Path) -> anyhow::Result<ScannerOutput> {
        let cancel = AtomicBool::new(false);
        SecretsScanner::shared().run(&ScanContext {
            source_root: root,
            cancel: &cancel,
            shared: &Default::default(),
            reports: &Default::default(),
        })
    }

    /// A tree with one secret in each file that must be scanned and each that must be skipped.
    fn build_tree(root: &Path) -> (Vec<String>, u64, Vec<String>) {
        let line = |seed: u64| format!("token: ghp_{}\n", random(seed, 36, ALNUM));
        let mut scanned = vec![
            (".gitignore", "ignored.env\nbuild-output/\n".to_string()),
            (
                "src/deep/nested/config.py",
                format!("# config\n{}", line(60)),
            ),
            (".hidden/settings.yml", line(61)),
            ("README.md", "nothing to see\n".to_string()),
        ];
        scanned.sort();
        let mut values = Vec::new();
        for (rel, content) in &scanned {
            write(root, rel, content);
            values.push(content.clone());
        }
        for (rel, seed) in [
            ("ignored.env", 62),
            ("build-output/x.txt", 63),
            ("node_modules/pkg/index.js", 64),
            ("web/vendor/lib.js", 65),
            ("target/debug/out.txt", 66),
            (".git/config", 67),
            ("package-lock.json", 68),
            ("static/app.min.js", 69),
        ] {
            let content = line(seed);
            write(root, rel, &content);
            values.push(content);
        }
        let mut binary = b"\x7fELF\0\0\0".to_vec();
        binary.extend_from_slice(line(70).as_bytes());
        write(root, "bin/tool", &binary);
        let mut big = line(71).into_bytes();
        big.resize(MAX_FILE_BYTES as usize + 1, b'a');
        write(root, "data/big.txt", &big);
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("src/deep/nested/config.py"), root.join("link.py"))
            .unwrap();

        let bytes: u64 = scanned.iter().map(|(_, c)| c.len() as u64).sum();
        let paths = vec![
            ".hidden/settings.yml".to_string(),
            "src/deep/nested/config.py".to_string(),
        ];
        (paths, bytes, values)
    }

    #[test]
    fn tree_walk_respects_skips() {
        let dir = tempfile::tempdir().unwrap();
        let (expected_paths, expected_bytes, values) = build_tree(dir.path());
        let out = run_on(dir.path()).unwrap();
        let paths: Vec<&str> = out.findings.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, expected_paths);
        assert_eq!(out.files_scanned, 4);
        assert_eq!(out.bytes_scanned, expected_bytes);
        let f = &out.findings[1];
        assert_eq!((f.rule_id.as_str(), f.line, f.column), ("github-pat", 2, 8));

        // Deterministic across runs despite the parallel walk.
        let again = run_on(dir.path()).unwrap();
        assert_eq!(again.findings, out.findings);

        let serialized = serde_json::to_string(&out.sarif).unwrap()
            + &serde_json::to_string(&out.findings).unwrap();
        for content in values {
            let token = content
                .trim()
                .trim_start_matches("token: ")
                .trim_start_matches("# config\n");
            assert!(!serialized.contains(token), "clear token in output");
        }
    }

    #[test]
    fn cancellation_returns_error() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let cancel = AtomicBool::new(true);
        let err = SecretsScanner::shared()
            .run(&ScanContext {
                source_root: dir.path(),
                cancel: &cancel,
                shared: &Default::default(),
                reports: &Default::default(),
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "cancelled");
    }

    // ----- SARIF ---------------------------------------------------------------------------

    #[test]
    fn sarif_log_shape_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let stripe = format!("sk_test_{}", random(80, 24, ALNUM));
        let gh = checksummed("ghp_", 81);
        write(
            dir.path(),
            "my app/conf.env",
            format!("STRIPE={stripe}\nGH={gh}\n"),
        );
        let out = run_on(dir.path()).unwrap();
        assert_eq!(out.findings.len(), 2);
        let sarif = &out.sarif;
        let text = serde_json::to_string(sarif).unwrap();
        assert!(!text.contains(&stripe) && !text.contains(&gh));

        assert_eq!(sarif["$schema"], SARIF_SCHEMA);
        assert_eq!(sarif["version"], "2.1.0");
        let runs = sarif["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        assert_eq!(run["columnKind"], "unicodeCodePoints");
        let driver = &run["tool"]["driver"];
        assert_eq!(driver["name"], TOOL_NAME);
        assert_eq!(driver["version"], env!("CARGO_PKG_VERSION"));
        let rules = driver["rules"].as_array().unwrap();
        assert_eq!(rules.len(), RULES.len());
        for (i, rule) in rules.iter().enumerate() {
            assert_eq!(rule["id"], RULES[i].id);
            assert_eq!(rule["shortDescription"]["text"], RULES[i].title);
            assert_eq!(
                rule["defaultConfiguration"]["level"],
                RULES[i].severity.sarif_level()
            );
            let score: f64 = rule["properties"]["security-severity"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1.0..=10.0).contains(&score));
            assert_eq!(rule["properties"]["tags"], json!(["security", "secret"]));
        }

        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        let first = &results[0];
        assert_eq!(first["ruleId"], "stripe-test-key");
        let index = first["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], "stripe-test-key");
        assert_eq!(rules[index]["properties"]["security-severity"], "3.0");
        assert_eq!(first["level"], "note");
        assert_eq!(first["properties"]["severity"], "low");
        assert_eq!(first["message"]["text"], "Possible Stripe test secret key");
        let loc = &first["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "my%20app/conf.env");
        assert_eq!(loc["artifactLocation"]["uriBaseId"], "SRCROOT");
        assert_eq!(loc["region"]["startLine"], 1);
        assert_eq!(loc["region"]["startColumn"], 8);
        assert_eq!(loc["region"]["snippet"]["text"], out.findings[0].snippet);
        assert_eq!(
            first["partialFingerprints"][SECRET_FINGERPRINT_KEY],
            out.findings[0].fingerprint
        );
        assert_eq!(results[1]["level"], "error");
        assert_eq!(results[1]["properties"]["severity"], "critical");
    }
}
