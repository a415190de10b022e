//! `GET /v1/security-scans/{test_id}/findings`: one page of the merged findings of a finished
//! scan, read from its bundle's `reports/findings.json` (written by the pipeline, one finding per
//! problem), with filters and the same opaque-cursor paging as the scan list.
//!
//! The reader is the pipeline's ([`crate::pipeline::bundle::read`]), which the `scan` and
//! `baseline` commands use too; this file holds the route's query, cursor and response.

use std::path::PathBuf;

use axum::extract::{Extension, Path as UrlPath, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};

use super::scans::visible_scan;
use super::AppState;
use crate::auth::Access;
use crate::error::{ApiError, FieldError};
use crate::pipeline::bundle::read::{
    masked, read_page, FindingFilter, PageRequest, ReadError, FINDINGS_JSON,
};
use crate::scan::JobState;

/// Severities, highest first (the values of a finding's `severity`).
pub const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

/// Default and largest page size of the findings route (as the scan list).
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

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

/// A local directory holding a scan's bundle (fetched from the artifact store when another
/// replica wrote it); 503 when the store cannot be read.
pub(super) async fn bundle_dir(
    state: &AppState,
    record: &crate::storage::ScanRecord,
) -> Result<PathBuf, ApiError> {
    state.jobs.bundle_dir(record).await.map_err(store_error)
}

/// `Retry-After` of a 503 answered while the artifact store cannot be read.
pub(super) const STORE_RETRY_AFTER_SECONDS: u64 = 30;

/// A failed read of the artifact store: 503 saying what failed when the store is unreachable,
/// else an internal error.
pub(super) fn store_error(err: anyhow::Error) -> ApiError {
    if err
        .chain()
        .any(|cause| cause.is::<crate::upload::artifact_store::StoreUnavailable>())
    {
        ApiError::Unavailable {
            detail: format!("{err:#}; retry later"),
            retry_after_seconds: STORE_RETRY_AFTER_SECONDS,
        }
    } else {
        ApiError::Internal(err)
    }
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
    let bundle = bundle_dir(&state, &record).await?;
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
