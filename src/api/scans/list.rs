//! `GET /v1/security-scans`: filters, newest first, keyset pagination with an opaque cursor,
//! confined to the caller's workspaces.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::resource::ScanResource;
use crate::api::paging::{list_scope, page_param, time_param, Page};
use crate::api::AppState;
use crate::auth::Access;
use crate::error::{ApiError, FieldError};
use crate::scan::JobState;
use crate::storage::{ListCursor, ListQuery};

/// Default and largest page size of `GET /v1/security-scans`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// One page of scans.
#[derive(Debug, Serialize)]
pub struct ScanPage<'a> {
    pub scans: Vec<ScanResource<'a>>,
    pub count: usize,
    pub limit: usize,
    pub next_cursor: Option<String>,
}

/// `GET /v1/security-scans`: filters, newest first, keyset pagination with an opaque cursor.
pub async fn list_scans(
    State(state): State<AppState>,
    access: Access,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (mut query, page) = parse_query(raw.as_deref())?;
    let outside_scope;
    (query.workspace_in, outside_scope) = list_scope(&access, query.workspace_id.as_deref());
    let rows = if outside_scope {
        Vec::new()
    } else {
        state.jobs.list(query).await?
    };
    let (rows, next_cursor) = page.split(rows, |(seq, record)| ListCursor {
        submitted_at: record.submitted_at,
        seq: *seq,
    });
    let scans: Vec<ScanResource<'_>> = rows.iter().map(|(_, r)| ScanResource::of(r)).collect();
    let body = ScanPage {
        count: scans.len(),
        scans,
        limit: page.limit,
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// The filters and the page of a list query; unknown parameters are ignored, as the earlier
/// service did.
fn parse_query(raw: Option<&str>) -> Result<(ListQuery, Page), ApiError> {
    let pairs = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned();
    let mut query = ListQuery::default();
    let mut page = Page::new(DEFAULT_PAGE, MAX_PAGE);
    let mut errors = Vec::new();
    for (key, value) in pairs {
        if page_param(&mut page, &key, &value, &mut errors) {
            continue;
        }
        match key.as_str() {
            "workspace_id" => query.workspace_id = Some(value),
            "component_id" => query.component_id = Some(value),
            "assessment_id" => query.assessment_id = Some(value),
            "profile" => query.profile = Some(value),
            "status" => match value.parse::<JobState>() {
                Ok(s) => query.status = Some(s),
                Err(_) => errors.push(FieldError::query(
                    "status",
                    "enum",
                    "Input should be 'QUEUED', 'RUNNING', 'SUCCEEDED' or 'FAILED'",
                )),
            },
            "submitted_after" => query.submitted_after = time_param(&key, &value, &mut errors),
            "submitted_before" => query.submitted_before = time_param(&key, &value, &mut errors),
            _ => {}
        }
    }
    (query.before, query.limit) = page.bounds(errors)?;
    Ok((query, page))
}
