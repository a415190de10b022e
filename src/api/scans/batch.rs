//! `POST /v1/security-scans/batch`: up to `BATCH_MAX_ITEMS` submissions, each validated on its
//! own. As many valid items as the queue has room for are admitted together; the answer lists,
//! per item and in order, the created scan (`status` 202) or the error (`403`, `422`, `429` or
//! `503`). Each item is recorded in the audit trail.

use crate::metrics::labels::RejectReason;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::resource::SubmittedScan;
use super::submit::{check_archive, count_rejected, read_body, WORKSPACE_LIMIT_RETRY_SECONDS};
use super::validate::{parse_json_body, validate_submission, SubmissionPolicy};
use crate::api::audit::AuditNote;
use crate::api::extract::check_workspace;
use crate::api::AppState;
use crate::auth::{valid_workspace, Access};
use crate::error::{ApiError, FieldError};
use crate::jobs::{NewScan, SubmitError};
use crate::storage::ScanRecord;

/// The answer to a batch.
#[derive(Debug, Serialize)]
struct BatchAnswer<'a> {
    accepted: usize,
    rejected: usize,
    results: Vec<ItemResult<'a>>,
}

/// The answer to one item, at its index in the request.
#[derive(Debug, Serialize)]
struct ItemResult<'a> {
    index: usize,
    status: u16,
    #[serde(flatten)]
    outcome: ItemOutcome<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ItemOutcome<'a> {
    /// 202: the scan was admitted.
    Admitted { scan: SubmittedScan<'a> },
    /// 422: the item's fields, located under `["body", "scans", index, ...]`.
    Invalid { detail: Vec<FieldError> },
    /// 403, 429 or 503.
    Refused {
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<u64>,
    },
}

/// One item after validation: admissible, or already answered.
enum Checked {
    Valid(Box<NewScan>),
    Answered(u16, ItemOutcome<'static>),
}

/// `POST /v1/security-scans/batch` (see the module docs).
#[tracing::instrument(name = "submit_batch", skip_all)]
pub async fn submit_batch(
    State(state): State<AppState>,
    access: Access,
    note: AuditNote,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rejected = |reason: RejectReason| count_rejected(&state, reason);
    let value = read_body(&state, body).and_then(|b| parse_json_body(&b));
    let items = match value.and_then(|v| batch_items(v, state.config.queue.batch_max_items)) {
        Ok(items) => items,
        Err(e) => {
            rejected(RejectReason::Invalid);
            return Err(e);
        }
    };
    let policy = SubmissionPolicy::from_config(&state.config);
    // The workspace of each item, for the audit trail.
    let mut workspaces: Vec<Option<String>> = items
        .iter()
        .map(|item| {
            item.get("workspace_id")
                .and_then(Value::as_str)
                .filter(|w| valid_workspace(w))
                .map(str::to_string)
        })
        .collect();
    let mut answered = Vec::new();
    let mut new_scans = Vec::new();
    let mut valid_index = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match check_item(&state, &access, &policy, index, item).await? {
            Checked::Valid(new) => {
                workspaces[index] = Some(new.workspace_id.clone());
                new_scans.push(*new);
                valid_index.push(index);
            }
            Checked::Answered(status, outcome) => {
                rejected(if status == 403 {
                    RejectReason::Unauthorized
                } else {
                    RejectReason::Invalid
                });
                answered.push(ItemResult {
                    index,
                    status,
                    outcome,
                });
            }
        }
    }
    let outcomes = state.jobs.submit_batch(new_scans).await?;
    let answer = answer(answered, valid_index.into_iter().zip(&outcomes));
    for (result, workspace) in answer.results.iter().zip(&workspaces) {
        let test_id = match &result.outcome {
            ItemOutcome::Admitted { scan } => Some(scan.ids.test_id),
            _ => None,
        };
        note.item(workspace.as_deref(), test_id, result.status);
    }
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// The submissions of a batch body (`{"scans": [...]}` or a bare array), 1 to `max` of them.
fn batch_items(value: Value, max: usize) -> Result<Vec<Value>, ApiError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut obj) if obj.get("scans").is_some_and(Value::is_array) => {
            match obj.remove("scans") {
                Some(Value::Array(items)) => items,
                _ => unreachable!("checked to be an array"),
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "scans",
                "list_type",
                "send {\"scans\": [ ...submissions... ]} or a JSON array of submissions",
            ))
        }
    };
    if items.is_empty() || items.len() > max {
        return Err(ApiError::invalid(
            "scans",
            "too_long",
            format!(
                "a batch holds 1 to {max} submissions (got {}); split it",
                items.len()
            ),
        ));
    }
    Ok(items)
}

/// Validates item `i`, then checks its workspace against the caller's token and the archive it
/// names. An error other than a validation error (the store failed) ends the whole request.
async fn check_item(
    state: &AppState,
    access: &Access,
    policy: &SubmissionPolicy,
    i: usize,
    item: &Value,
) -> Result<Checked, ApiError> {
    let checked = match validate_submission(policy, item) {
        Ok(new) if check_workspace(access, &new.workspace_id).is_ok() => {
            check_archive(state, &new).await.map(|()| new)
        }
        other => other,
    };
    match checked {
        Ok(new) => Ok(match check_workspace(access, &new.workspace_id) {
            Ok(()) => Checked::Valid(Box::new(new)),
            Err(e) => Checked::Answered(
                403,
                ItemOutcome::Refused {
                    detail: e.to_string(),
                    retry_after_seconds: None,
                },
            ),
        }),
        Err(ApiError::Validation(errors)) => {
            let detail = errors
                .into_iter()
                .map(|mut e| {
                    // ["body", field] becomes ["body", "scans", i, field].
                    e.loc.splice(1..1, [json!("scans"), json!(i)]);
                    e
                })
                .collect();
            Ok(Checked::Answered(422, ItemOutcome::Invalid { detail }))
        }
        Err(other) => Err(other),
    }
}

/// The answer: the items answered before admission and the admission outcome of the others,
/// in the order of the request.
fn answer<'a>(
    mut results: Vec<ItemResult<'a>>,
    admitted: impl Iterator<Item = (usize, &'a Result<ScanRecord, SubmitError>)>,
) -> BatchAnswer<'a> {
    results.extend(admitted.map(|(index, outcome)| {
        let (status, outcome) = match outcome {
            Ok(record) => (
                202,
                ItemOutcome::Admitted {
                    scan: SubmittedScan::of(record),
                },
            ),
            Err(err @ SubmitError::WorkspaceLimit { .. }) => (
                429,
                ItemOutcome::Refused {
                    detail: err.to_string(),
                    retry_after_seconds: Some(WORKSPACE_LIMIT_RETRY_SECONDS),
                },
            ),
            Err(err) => (
                503,
                ItemOutcome::Refused {
                    detail: err.to_string(),
                    retry_after_seconds: None,
                },
            ),
        };
        ItemResult {
            index,
            status,
            outcome,
        }
    }));
    results.sort_by_key(|r| r.index);
    let accepted = results.iter().filter(|r| r.status == 202).count();
    BatchAnswer {
        accepted,
        rejected: results.len() - accepted,
        results,
    }
}
