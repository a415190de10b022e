//! `GET /v1/security-scans/{test_id}/findings`: one page of the merged findings of a finished
//! scan, read from its bundle's `reports/findings.json` (written by the pipeline, one finding per
//! problem), with filters and the same opaque-cursor paging as the scan list.
//!
//! The file is read as a stream: each finding is decoded, tested against the filters and dropped
//! unless it belongs to the page, so memory stays bounded by the page size whatever the file
//! holds; the file itself is capped at [`MAX_FINDINGS_FILE_BYTES`]. The reader is plain file I/O
//! (it runs on the blocking pool) and the `scan` and `baseline` commands use it too.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use axum::extract::{Extension, Path as UrlPath, RawQuery, State};
use axum::Json;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};

use super::scans::visible_scan;
use super::AppState;
use crate::auth::Access;
use crate::error::{ApiError, FieldError};
use crate::pipeline::redact::mask_secrets;
use crate::scan::JobState;

/// Where the merged findings live in a bundle.
pub const FINDINGS_JSON: &str = "reports/findings.json";
/// The merged SARIF of a bundle (suppressed results carry SARIF `suppressions`).
pub const FINDINGS_SARIF: &str = "reports/findings.sarif.json";
/// The `version` of `findings.json` this reader understands.
pub const FINDINGS_VERSION: u64 = 1;
/// Largest `findings.json` the readers accept (64 MiB): a bound on the work of one request.
pub const MAX_FINDINGS_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Severities, highest first (the values of a finding's `severity`).
pub const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

/// Default and largest page size of the findings route (as the scan list).
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

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

/// An opaque cursor: the position of the last finding of a page (the list route's style: a
/// version tag, then the key in hex).
fn encode_cursor(position: u64) -> String {
    format!("f1{}", hex::encode(position.to_be_bytes()))
}

fn decode_cursor(cursor: &str) -> Option<u64> {
    let bytes = hex::decode(cursor.strip_prefix("f1")?).ok()?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The parsed query of the findings route.
#[derive(Debug)]
struct FindingsQuery {
    filter: FindingFilter,
    after: u64,
    limit: usize,
}

fn parse_query(raw: Option<&str>) -> Result<FindingsQuery, ApiError> {
    let mut query = FindingsQuery {
        filter: FindingFilter::default(),
        after: 0,
        limit: DEFAULT_PAGE,
    };
    let mut errors = Vec::new();
    let pairs = raw
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned())
        .into_iter()
        .flatten();
    for (key, value) in pairs {
        match key.as_str() {
            "severity" => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let s = s.to_ascii_lowercase();
                    if SEVERITIES.contains(&s.as_str()) {
                        query.filter.severities.insert(s);
                    } else {
                        errors.push(FieldError::query(
                            "severity",
                            "enum",
                            "Input should be one or a comma-separated list of 'critical', 'high', 'medium', 'low', 'info'",
                        ));
                        break;
                    }
                }
            }
            "scanner" => query.filter.scanner = Some(value),
            "rule" => query.filter.rule = Some(value),
            "suppressed" => match value.as_str() {
                "true" => query.filter.suppressed = Some(true),
                "false" => query.filter.suppressed = Some(false),
                _ => errors.push(FieldError::query(
                    "suppressed",
                    "bool_parsing",
                    "Input should be 'true' or 'false'",
                )),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => query.limit = n,
                _ => errors.push(FieldError::query(
                    "limit",
                    "int_range",
                    format!("Input should be a whole number from 1 to {MAX_PAGE}"),
                )),
            },
            "cursor" => match decode_cursor(&value) {
                Some(after) => query.after = after,
                None => errors.push(FieldError::query(
                    "cursor",
                    "value_error",
                    "cursor is not one this server issued; pass next_cursor from the previous page unchanged",
                )),
            },
            // Unknown parameters are ignored, as on the scan list.
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// The bundle directory of a scan on this server.
pub(super) fn bundle_dir(state: &AppState, test_id: &str) -> PathBuf {
    state.config.artifact_root().join(test_id)
}

/// `GET /v1/security-scans/{test_id}/findings`
pub async fn list_findings(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    UrlPath(test_id): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let record = visible_scan(&state, &access, &test_id).await?;
    let query = parse_query(raw.as_deref())?;
    match record.status {
        JobState::Queued | JobState::Running => {
            return Err(ApiError::Conflict(format!(
                "Scan {test_id} is {}: its findings can be read once it has finished; \
                 poll GET /v1/security-scans/{test_id} (or follow its stream) until status is SUCCEEDED",
                record.status.as_str()
            )))
        }
        JobState::Failed => {
            let reason = record
                .failure_reason
                .map(|r| format!(" ({})", r.as_str()))
                .unwrap_or_default();
            return Err(ApiError::NotFound(format!(
                "Scan {test_id} FAILED{reason} and has no findings; its `errors` and \
                 GET /v1/security-scans/{test_id}/artifacts/logs/runner.log say why"
            )));
        }
        JobState::Succeeded => {}
    }
    let bundle = bundle_dir(&state, &test_id);
    let page = tokio::task::spawn_blocking(move || {
        read_page(
            &bundle,
            &PageRequest {
                filter: &query.filter,
                after: query.after,
                limit: query.limit,
            },
        )
    })
    .await
    .map_err(|e| anyhow::anyhow!("the findings reader stopped: {e}"))?;
    let page = match page {
        Ok(page) => page,
        Err(ReadError::Missing) => {
            return Err(ApiError::NotFound(format!(
                "Scan {test_id} has no {FINDINGS_JSON} in its bundle: the bundle was written \
                 before this service merged findings, or was removed by retention; \
                 GET /v1/security-scans/{test_id}/artifacts lists what it holds"
            )))
        }
        Err(err @ ReadError::TooLarge { .. }) => {
            return Err(ApiError::Conflict(format!("Scan {test_id}: {err}")))
        }
        Err(err) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context(format!("reading the findings of {test_id}")),
            ))
        }
    };
    let next_cursor = page
        .more
        .then(|| page.findings.last().map(|(pos, _)| encode_cursor(*pos)))
        .flatten();
    let findings: Vec<Value> = page.findings.into_iter().map(|(_, f)| masked(f)).collect();
    Ok(Json(json!({
        "test_id": test_id,
        "findings": findings,
        "next_cursor": next_cursor,
        "total": page.total,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let cursor = encode_cursor(page.findings.last().unwrap().0);
            after = decode_cursor(&cursor).unwrap();
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        for n in [0, 1, 50, u64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(n)), Some(n));
        }
        for bad in [
            "",
            "f1",
            "f1zz",
            "c20000000000000001",
            "f100",
            "f1000000000000000001ff",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
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

    #[test]
    fn queries_are_validated_field_by_field() {
        let q = parse_query(Some(
            "severity=HIGH,low&scanner=ruff&rule=S101&suppressed=false&limit=5",
        ))
        .unwrap();
        assert_eq!(
            q.filter.severities,
            ["high", "low"].into_iter().map(String::from).collect()
        );
        assert_eq!(q.filter.scanner.as_deref(), Some("ruff"));
        assert_eq!(q.filter.suppressed, Some(false));
        assert_eq!(q.limit, 5);
        for (bad, field) in [
            ("severity=severe", "severity"),
            ("suppressed=yes", "suppressed"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("cursor=c2abc", "cursor"),
        ] {
            match parse_query(Some(bad)) {
                Err(ApiError::Validation(errors)) => {
                    assert_eq!(errors[0].loc, vec![json!("query"), json!(field)], "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
