//! Reading a finished bundle's findings back: `reports/findings.json` (written by
//! [`super::findings`], one finding per problem) streamed one finding at a time, with filters and
//! pages, so memory stays bounded by the page size whatever the file holds; the file itself is
//! capped at [`MAX_FINDINGS_FILE_BYTES`]. Plain file I/O (callers run it on the blocking pool):
//! the findings route, the `scan` table and the `baseline` command use it.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

pub use super::findings::{FINDINGS_JSON, FINDINGS_SARIF};
use crate::pipeline::redact::mask_secrets;

/// The `version` of `findings.json` this reader understands.
pub const FINDINGS_VERSION: u64 = 1;
/// Largest `findings.json` the readers accept (64 MiB): a bound on the work of one request.
pub const MAX_FINDINGS_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Which findings a reader keeps. Empty sets and `None` match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilter {
    /// Any of these severities.
    pub severities: BTreeSet<String>,
    /// Seen by this scanner (one of the finding's `scanners`).
    pub scanner: Option<String>,
    /// This rule: the finding's `rule_id` or the rule any scanner gave it (`rules`).
    pub rule: Option<String>,
    /// Only suppressed (`true`) or only unsuppressed (`false`) findings.
    pub suppressed: Option<bool>,
}

impl FindingFilter {
    pub fn matches(&self, finding: &Value) -> bool {
        let str_of = |k: &str| finding.get(k).and_then(Value::as_str);
        if !self.severities.is_empty()
            && !str_of("severity").is_some_and(|s| self.severities.contains(s))
        {
            return false;
        }
        if let Some(scanner) = &self.scanner {
            let seen = finding
                .get("scanners")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(scanner)));
            if !seen {
                return false;
            }
        }
        if let Some(rule) = &self.rule {
            let by_any = finding
                .get("rules")
                .and_then(Value::as_object)
                .is_some_and(|m| m.values().any(|r| r.as_str() == Some(rule)));
            if str_of("rule_id") != Some(rule) && !by_any {
                return false;
            }
        }
        if let Some(want) = self.suppressed {
            if is_suppressed(finding) != want {
                return false;
            }
        }
        true
    }
}

/// Whether a finding is marked suppressed.
pub fn is_suppressed(finding: &Value) -> bool {
    finding.get("suppressed").and_then(Value::as_bool) == Some(true)
}

/// What a reader returns: the matching findings after the cursor (at most `limit`), their
/// positions, and how many findings match in the whole file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingsPage {
    /// `test_id` as the file records it.
    pub test_id: Option<String>,
    /// The page, in file order, each with its 1-based position in the file.
    pub findings: Vec<(u64, Value)>,
    /// Whether more matching findings follow the page.
    pub more: bool,
    /// Matching findings in the whole file (every page).
    pub total: u64,
}

/// Why a bundle's findings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the bundle has no {FINDINGS_JSON}")]
    Missing,
    #[error(
        "{FINDINGS_JSON} is {size} bytes, more than the {} MiB this reader accepts; \
         read the file itself (GET .../artifacts/{FINDINGS_JSON}, or open it in the bundle)",
        MAX_FINDINGS_FILE_BYTES / (1024 * 1024)
    )]
    TooLarge { size: u64 },
    #[error("{FINDINGS_JSON} is not a findings file of version {FINDINGS_VERSION}: {0}")]
    Invalid(String),
    #[error("reading {FINDINGS_JSON}: {0}")]
    Io(#[from] std::io::Error),
}

/// What to collect while streaming through the file.
#[derive(Debug, Clone)]
pub struct PageRequest<'a> {
    pub filter: &'a FindingFilter,
    /// Keep findings whose position is greater than this (0: from the start).
    pub after: u64,
    /// Largest page; `usize::MAX` for every match.
    pub limit: usize,
}

/// Reads one page of `bundle/reports/findings.json`.
pub fn read_page(bundle: &Path, request: &PageRequest<'_>) -> Result<FindingsPage, ReadError> {
    let mut findings = Vec::new();
    let (mut total, mut more) = (0, false);
    let test_id = for_each_finding(bundle, |position, finding| {
        if !request.filter.matches(&finding) {
            return;
        }
        total += 1;
        if position <= request.after {
            return;
        }
        if findings.len() < request.limit {
            findings.push((position, finding));
        } else {
            more = true;
        }
    })?;
    Ok(FindingsPage {
        test_id,
        findings,
        more,
        total,
    })
}

/// Streams every finding of `bundle/reports/findings.json` to `visit` with its 1-based position,
/// one at a time; returns the file's `test_id`. The file is checked whole (version, shape,
/// nothing after it), so `visit` may have seen findings of a file that turns out invalid.
pub fn for_each_finding(
    bundle: &Path,
    mut visit: impl FnMut(u64, Value),
) -> Result<Option<String>, ReadError> {
    let path = bundle.join(FINDINGS_JSON);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let size = file.metadata()?.len();
    if size > MAX_FINDINGS_FILE_BYTES {
        return Err(ReadError::TooLarge { size });
    }
    // The file may grow between the check and the read: never read past the cap.
    let reader = std::io::BufReader::new(file.take(MAX_FINDINGS_FILE_BYTES + 1));
    let mut de = serde_json::Deserializer::from_reader(reader);
    FileSeed { visit: &mut visit }
        .deserialize(&mut de)
        .and_then(|test_id| de.end().map(|()| test_id))
        .map_err(|e| match e.io_error_kind() {
            Some(_) => ReadError::Io(std::io::Error::other(e.to_string())),
            None => ReadError::Invalid(e.to_string()),
        })
}

/// Decodes the top-level object, checking `version` and streaming `findings`.
struct FileSeed<'v> {
    visit: &'v mut dyn FnMut(u64, Value),
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_> {
    type Value = Option<String>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with version, test_id and findings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        let mut test_id = None;
        let mut version = None;
        let mut findings_seen = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => version = Some(map.next_value::<u64>()?),
                "test_id" => test_id = map.next_value::<Option<String>>()?,
                "findings" => {
                    findings_seen = true;
                    map.next_value_seed(FindingsSeed {
                        visit: &mut *self.visit,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match version {
            Some(FINDINGS_VERSION) => {}
            Some(v) => return Err(de::Error::custom(format!("version {v}"))),
            None => return Err(de::Error::missing_field("version")),
        }
        if !findings_seen {
            return Err(de::Error::missing_field("findings"));
        }
        Ok(test_id)
    }
}

/// Streams the `findings` array, one finding at a time.
struct FindingsSeed<'v> {
    visit: &'v mut dyn FnMut(u64, Value),
}

impl<'de> DeserializeSeed<'de> for FindingsSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FindingsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of findings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut position = 0u64;
        while let Some(finding) = seq.next_element::<Value>()? {
            position += 1;
            if !finding.is_object() {
                return Err(de::Error::custom(format!(
                    "finding {position} is not an object"
                )));
            }
            (self.visit)(position, finding);
        }
        Ok(())
    }
}

/// A finding as the API and the CLI show it: the file's fields, with `message` and `snippet`
/// masked once more (the pipeline masks them; this keeps a file from an older or foreign writer
/// from putting a secret in a response).
pub fn masked(mut finding: Value) -> Value {
    for key in ["message", "snippet"] {
        if let Some(Value::String(text)) = finding.get(key) {
            let text = mask_secrets(text);
            finding[key] = Value::String(text);
        }
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A contract-shaped finding.
    fn finding(id: u64, severity: &str, scanners: &[&str], rule: &str, suppressed: bool) -> Value {
        json!({
            "id": id,
            "fingerprint": format!("{id:064x}"),
            "fingerprints": [format!("{id:064x}")],
            "rule_id": rule,
            "rules": {scanners[0]: rule},
            "severity": severity,
            "message": "Possible hardcoded password",
            "path": format!("src/f{id}.py"),
            "line": id,
            "column": 0,
            "snippet": "",
            "scanners": scanners,
            "suppressed": suppressed,
            "suppression": if suppressed { json!({"kind": "inline", "detail": "# nosec"}) } else { Value::Null },
        })
    }

    fn bundle_with(findings: &[Value]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let doc = json!({"version": 1, "test_id": "test_0123456789ab", "findings": findings});
        std::fs::create_dir_all(dir.path().join("reports")).unwrap();
        std::fs::write(
            dir.path().join(FINDINGS_JSON),
            serde_json::to_vec(&doc).unwrap(),
        )
        .unwrap();
        dir
    }

    fn all(filter: &FindingFilter) -> PageRequest<'_> {
        PageRequest {
            filter,
            after: 0,
            limit: usize::MAX,
        }
    }

    #[test]
    fn filters_select_by_severity_scanner_rule_and_suppression() {
        let dir = bundle_with(&[
            finding(1, "high", &["secrets"], "aws-access-key-id", false),
            finding(2, "medium", &["bandit", "ruff"], "B105", false),
            finding(3, "low", &["ruff"], "S101", false),
            finding(4, "high", &["detect-secrets"], "Secret Keyword", true),
        ]);
        let ids = |filter: FindingFilter| -> Vec<u64> {
            let page = read_page(dir.path(), &all(&filter)).unwrap();
            assert_eq!(page.total as usize, page.findings.len());
            page.findings.iter().map(|(p, _)| *p).collect()
        };
        assert_eq!(ids(FindingFilter::default()), [1, 2, 3, 4]);
        let sev = |s: &[&str]| FindingFilter {
            severities: s.iter().map(|s| s.to_string()).collect(),
            ..FindingFilter::default()
        };
        assert_eq!(ids(sev(&["high"])), [1, 4]);
        assert_eq!(ids(sev(&["medium", "low"])), [2, 3]);
        let scanner = FindingFilter {
            scanner: Some("ruff".into()),
            ..FindingFilter::default()
        };
        assert_eq!(ids(scanner), [2, 3]);
        let rule = FindingFilter {
            rule: Some("B105".into()),
            ..FindingFilter::default()
        };
        assert_eq!(ids(rule), [2]);
        let suppressed = |s| FindingFilter {
            suppressed: Some(s),
            ..FindingFilter::default()
        };
        assert_eq!(ids(suppressed(true)), [4]);
        assert_eq!(ids(suppressed(false)), [1, 2, 3]);
        let combined = FindingFilter {
            suppressed: Some(false),
            ..sev(&["high"])
        };
        assert_eq!(ids(combined), [1]);
    }

    #[test]
    fn pages_follow_the_cursor_and_count_every_match() {
        let findings: Vec<Value> = (1..=7)
            .map(|i| {
                finding(
                    i,
                    if i % 2 == 0 { "high" } else { "low" },
                    &["secrets"],
                    "r",
                    false,
                )
            })
            .collect();
        let dir = bundle_with(&findings);
        let filter = FindingFilter::default();
        let mut after = 0;
        let mut seen = vec![];
        loop {
            let page = read_page(
                dir.path(),
                &PageRequest {
                    filter: &filter,
                    after,
                    limit: 3,
                },
            )
            .unwrap();
            assert_eq!(page.total, 7);
            assert_eq!(page.test_id.as_deref(), Some("test_0123456789ab"));
            seen.extend(page.findings.iter().map(|(p, _)| *p));
            if !page.more {
                break;
            }
            // The route's cursor encodes this position.
            after = page.findings.last().unwrap().0;
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn unreadable_files_say_why() {
        let empty = tempfile::tempdir().unwrap();
        let filter = FindingFilter::default();
        assert!(matches!(
            read_page(empty.path(), &all(&filter)),
            Err(ReadError::Missing)
        ));
        std::fs::create_dir_all(empty.path().join("reports")).unwrap();
        for (text, expected) in [
            (r#"{"version": 2, "findings": []}"#, "version 2"),
            (r#"{"findings": []}"#, "version"),
            (r#"{"version": 1}"#, "findings"),
            (r#"{"version": 1, "findings": [1]}"#, "not an object"),
            (r#"{"version": 1, "findings": [] } x"#, "trailing"),
        ] {
            std::fs::write(empty.path().join(FINDINGS_JSON), text).unwrap();
            match read_page(empty.path(), &all(&filter)) {
                Err(ReadError::Invalid(msg)) => assert!(msg.contains(expected), "{text}: {msg}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // Larger than the cap: refused from its size, without reading it (a sparse file).
        let file = std::fs::File::create(empty.path().join(FINDINGS_JSON)).unwrap();
        file.set_len(MAX_FINDINGS_FILE_BYTES + 1).unwrap();
        let err = read_page(empty.path(), &all(&filter)).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("64 MiB"), "{err}");
    }

    #[test]
    fn shown_findings_are_masked_again() {
        let mut f = finding(1, "high", &["secrets"], "generic", false);
        let secret = "ghp_R7xQ2mVt9LkP4sW8nB3cY6dF1hJ5gZ0aE2uK";
        f["snippet"] = json!(format!("token = \"{secret}\""));
        f["message"] = json!(format!("found {secret}"));
        let shown = masked(f).to_string();
        assert!(!shown.contains(secret), "{shown}");
    }
}
