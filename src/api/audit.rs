//! The audit trail of the API: [`record`] stores one event per state-changing request (submit,
//! each batch item, cancel, upload-request, upload-archive) with its actor, workspace, scan or
//! archive and outcome, whoever refused it (authentication, rate limit, origin checks, size
//! limits or the handler); `GET /v1/audit-events` lists the events to admin tokens.
//!
//! Handlers fill an [`AuditNote`] as they learn what the request is about; the middleware reads
//! it once the answer is known. The actor is a token's name, or the client's address when no
//! valid token came with the request (authentication off). No token, URL or request body is
//! ever recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

use super::paging::{list_scope, page_param, rfc3339, time_param, Page};
use super::routes::policy_of;
use super::AppState;
use crate::auth::Access;
use crate::error::{ApiError, FieldError};
use crate::scan::TestId;
use crate::storage::audit::{ActorKind, AuditAction, AuditEvent, AuditOutcome, AuditQuery};
use crate::storage::ListCursor;

/// One batch item as recorded.
#[derive(Debug, Clone)]
struct Item {
    workspace_id: Option<String>,
    test_id: Option<String>,
    status: u16,
}

#[derive(Debug, Default)]
struct Note {
    token: Option<String>,
    workspace_id: Option<String>,
    test_id: Option<String>,
    archive_sha256: Option<String>,
    items: Option<Vec<Item>>,
}

/// What a request is about, filled while it is served. A handler reached without the
/// middleware (never, in the router) gets a note nobody reads.
#[derive(Debug, Clone, Default)]
pub struct AuditNote(Arc<Mutex<Note>>);

impl AuditNote {
    fn with<T>(&self, f: impl FnOnce(&mut Note) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The request carried this valid token.
    pub fn token(&self, name: &str) {
        self.with(|n| n.token = Some(name.to_string()));
    }

    pub fn workspace(&self, workspace_id: &str) {
        self.with(|n| n.workspace_id = Some(workspace_id.to_string()));
    }

    /// The request is about this scan.
    pub fn scan(&self, workspace_id: &str, test_id: &str) {
        self.with(|n| {
            n.workspace_id = Some(workspace_id.to_string());
            n.test_id = Some(test_id.to_string());
        });
    }

    pub fn archive(&self, sha256: &str) {
        self.with(|n| n.archive_sha256 = Some(sha256.to_string()));
    }

    /// One batch item and the status it was answered with.
    pub fn item(&self, workspace_id: Option<&str>, test_id: Option<&str>, status: u16) {
        self.with(|n| {
            n.items.get_or_insert_with(Vec::new).push(Item {
                workspace_id: workspace_id.map(str::to_string),
                test_id: test_id.map(str::to_string),
                status,
            })
        });
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditNote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<AuditNote>()
            .cloned()
            .unwrap_or_default())
    }
}

/// Records every state-changing request once its answer is known (see the module docs).
pub async fn record(State(state): State<AppState>, mut req: Request<Body>, next: Next) -> Response {
    let Some(action) = policy_of(&req).audit else {
        return next.run(req).await;
    };
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    // `/v1/security-scans/{test_id}/...`: the id in the path, when it is one.
    let path_id = req
        .uri()
        .path()
        .split('/')
        .nth(3)
        .filter(|id| TestId::parse(id).is_some())
        .map(str::to_string);
    let note = AuditNote::default();
    req.extensions_mut().insert(note.clone());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let now = crate::scan::now_secs();
    let events = note.with(|n| {
        let (actor, actor_kind) = match &n.token {
            Some(name) => (name.clone(), ActorKind::Token),
            None => (address, ActorKind::Address),
        };
        let event =
            |action, workspace_id: Option<String>, test_id: Option<String>, status| AuditEvent {
                at: now,
                actor: actor.clone(),
                actor_kind,
                workspace_id,
                test_id,
                archive_sha256: n.archive_sha256.clone(),
                action,
                outcome: AuditOutcome::of_status(status),
                status: Some(status),
            };
        match &n.items {
            Some(items) if status < 300 => items
                .iter()
                .map(|i| {
                    event(
                        AuditAction::BatchItem,
                        i.workspace_id.clone(),
                        i.test_id.clone(),
                        i.status,
                    )
                })
                .collect(),
            _ => vec![event(
                action,
                n.workspace_id.clone(),
                n.test_id.clone().or(path_id),
                status,
            )],
        }
    });
    if let Err(err) = state.jobs.store().record_audit(events).await {
        tracing::error!(error = ?err, audit.action = action.as_str(), "could not record an audit event");
    }
    response
}

/// Default and largest page size of `GET /v1/audit-events`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

fn event_resource(e: &AuditEvent) -> Value {
    json!({
        "at": rfc3339(e.at),
        "actor": e.actor,
        "actor_kind": e.actor_kind,
        "workspace_id": e.workspace_id,
        "test_id": e.test_id,
        "archive_sha256": e.archive_sha256,
        "action": e.action,
        "outcome": e.outcome,
        "status": e.status,
    })
}

fn enum_error(field: &str, values: &[&str]) -> FieldError {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    FieldError::query(
        field,
        "enum",
        format!("Input should be one of {}", quoted.join(", ")),
    )
}

/// `GET /v1/audit-events`: filters, newest first, keyset pagination with the scans list's
/// opaque cursor. Admin tokens only; a scoped admin token sees its workspaces' events.
pub async fn list_audit_events(
    State(state): State<AppState>,
    access: Access,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut query = AuditQuery::default();
    let mut page = Page::new(DEFAULT_PAGE, MAX_PAGE);
    let mut errors = Vec::new();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let (key, value) = (key.into_owned(), value.into_owned());
        if page_param(&mut page, &key, &value, &mut errors) {
            continue;
        }
        match key.as_str() {
            "workspace_id" => query.workspace_id = Some(value),
            "actor" => query.actor = Some(value),
            "test_id" => query.test_id = Some(value),
            "archive_sha256" => query.archive_sha256 = Some(value.to_ascii_lowercase()),
            "action" => match AuditAction::parse(&value) {
                Some(a) => query.action = Some(a),
                None => errors.push(enum_error(
                    "action",
                    &AuditAction::ALL.map(AuditAction::as_str),
                )),
            },
            "outcome" => match AuditOutcome::parse(&value) {
                Some(o) => query.outcome = Some(o),
                None => errors.push(enum_error(
                    "outcome",
                    &AuditOutcome::ALL.map(AuditOutcome::as_str),
                )),
            },
            "since" => query.since = time_param(&key, &value, &mut errors),
            "until" => query.until = time_param(&key, &value, &mut errors),
            // Unknown parameters are ignored, as on the scans list.
            _ => {}
        }
    }
    (query.before, query.limit) = page.bounds(errors)?;
    let outside_scope;
    (query.workspace_in, outside_scope) = list_scope(&access, query.workspace_id.as_deref());
    let rows = if outside_scope {
        Vec::new()
    } else {
        state.jobs.store().list_audit(query).await?
    };
    let (rows, next_cursor) = page.split(rows, |(seq, e)| ListCursor {
        submitted_at: e.at,
        seq: *seq,
    });
    let events: Vec<Value> = rows.iter().map(|(_, e)| event_resource(e)).collect();
    Ok(Json(json!({
        "events": events,
        "count": events.len(),
        "limit": page.limit,
        "next_cursor": next_cursor,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn only_state_changing_routes_are_audited() {
        let table = crate::api::routes::RouteTable::new(crate::api::routes(0).declared());
        let action_of = |method: &Method, route: &str| table.policy(method, Some(route)).audit;
        let post = Method::POST;
        for (route, action) in [
            ("/v1/security-scans", AuditAction::Submit),
            ("/v1/security-scans/batch", AuditAction::Batch),
            ("/v1/security-scans/{test_id}/cancel", AuditAction::Cancel),
            (
                "/v1/security-scans/{test_id}/upload-request",
                AuditAction::UploadRequest,
            ),
            (
                "/v1/security-scans/upload-archive",
                AuditAction::UploadArchive,
            ),
        ] {
            assert_eq!(action_of(&post, route), Some(action), "{route}");
            assert_eq!(action_of(&Method::GET, route), None, "{route}");
        }
        for route in [
            "/v1/security-scans/{test_id}",
            "/v1/audit-events",
            "/health",
        ] {
            assert_eq!(action_of(&post, route), None, "{route}");
        }
    }
}
