//! Scan resources: submit, get, cancel, and the list of profiles. Translates between HTTP and
//! [`crate::jobs`]; never touches storage, git or S3 directly.
//!
//! Validation reports every problem at once in the FastAPI shape the earlier service's clients
//! parse, naming each field in `loc`.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::audit::AuditNote;
use super::AppState;
use crate::auth::valid_workspace;
use crate::auth::Access;
use crate::config::{Config, MAX_SCAN_TIMEOUT_SECONDS};
use crate::error::{ApiError, FieldError};
use crate::jobs::{CancelOutcome, NewScan, SubmitError};
use crate::metrics::labels::RejectReason;
use crate::pipeline::local_source::resolve_directory;
use crate::pipeline::profile::{self, Profile, BUILTIN_PROFILES};
use crate::pipeline::source::{parse_git_url, SourcePolicy};
use crate::pipeline::{archive_not_stored, parse_archive_path};
use crate::scan::{JobState, TestId};
use crate::storage::{ListCursor, ListQuery, ScanRecord};

use super::paging::{list_scope, page_param, rfc3339, time_param, Page};

const ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";

fn stream_url(test_id: &str) -> String {
    format!("/v1/security-scans/{test_id}/stream")
}

/// What identifies the content a scan saw: the resolved commit, the archive's sha256 (known at
/// submission) or the directory's content hash (known once the scan ran).
fn provenance(r: &ScanRecord) -> Value {
    let from_summary = r
        .summary
        .as_ref()
        .and_then(|s| s.get("provenance"))
        .cloned();
    if let Some(p) = from_summary.filter(|p| !p.is_null()) {
        return p;
    }
    match r.source_type.as_str() {
        "git" => match &r.resolved_commit {
            Some(c) => json!({"type": "git_commit", "id": c}),
            None => Value::Null,
        },
        "archive" => r
            .archive_path
            .as_deref()
            .and_then(|p| p.strip_prefix("uploads/"))
            .and_then(|p| p.split_once('.'))
            .map(|(sha, _)| json!({"type": "archive_sha256", "id": format!("sha256:{sha}")}))
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// The full status document of one scan.
pub fn scan_resource(r: &ScanRecord) -> Value {
    let policy = r.summary.as_ref().and_then(|s| s.get("policy")).cloned();
    let findings = r
        .summary
        .as_ref()
        .and_then(|s| s.pointer("/findings/total"))
        .cloned();
    // How each scanner ended (once the scan succeeded); null before.
    let scanners = r.summary.as_ref().and_then(|s| s.get("scanners")).cloned();
    // Tools an earlier-service manifest named that no scanner here runs: from the summary once
    // the scan ran (a manifest_path is read then), else from the submitted manifest.
    let unsupported = r
        .summary
        .as_ref()
        .and_then(|s| s.get("unsupported_manifest_tools"))
        .or_else(|| {
            r.manifest
                .as_ref()
                .and_then(|m| m.get("unsupported_manifest_tools"))
        })
        .cloned()
        .unwrap_or_else(|| json!([]));
    json!({
        "test_id": r.test_id,
        "workspace_id": r.workspace_id,
        "component_id": r.component_id,
        "assessment_id": r.assessment_id,
        "status": r.status,
        "failure_reason": r.failure_reason,
        "errors": r.errors,
        "source_type": r.source_type,
        "git_url": r.git_url,
        "directory_path": r.directory_path,
        "archive_path": r.archive_path,
        "manifest_path": r.manifest_path,
        "provenance": provenance(r),
        "branch": r.branch,
        "commit": r.requested_commit,
        "resolved_commit": r.resolved_commit,
        "resolved_branch": r.resolved_branch,
        "requested_by": r.requested_by,
        "profile": r.profile,
        "manifest_digest": r.manifest_digest,
        "unsupported_manifest_tools": unsupported,
        "timeout_seconds": r.timeout_seconds,
        "submitted_at": rfc3339(r.submitted_at),
        "started_at": r.started_at.map(rfc3339),
        "completed_at": r.finished_at.map(rfc3339),
        "attempts": r.attempts,
        "findings": findings,
        "policy": policy,
        "scanners": scanners,
        "artifacts": r.artifacts,
        "upload_status": r.upload_status,
        "upload_permission_id": r.upload_permission_id,
        "verification_proof": r.verification_proof,
        "remote_artifacts": r.remote_artifacts,
        "upload_reason": r.upload_reason,
        "upload_progress": r.upload_progress,
        "upload_tier": r.upload_tier,
        "upload_in_progress": r.upload_started_at.is_some(),
        "stream_url": stream_url(&r.test_id),
    })
}

/// Field access that records a precise error per field.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn string(&mut self, name: &str, required: bool, max: usize) -> Option<String> {
        match self.body.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.errors
                        .push(FieldError::body(name, "missing", "Field required"));
                }
                None
            }
            Some(Value::String(s)) => {
                if s.chars().count() > max {
                    self.errors.push(FieldError::body(
                        name,
                        "string_too_long",
                        format!("String should have at most {max} characters"),
                    ));
                    None
                } else {
                    Some(s.clone())
                }
            }
            Some(_) => {
                self.errors.push(FieldError::body(
                    name,
                    "string_type",
                    "Input should be a valid string",
                ));
                None
            }
        }
    }

    fn identifier(&mut self, name: &str) -> Option<String> {
        let value = self.string(name, true, 128)?;
        if value.is_empty() {
            self.errors.push(FieldError::body(
                name,
                "string_too_short",
                "String should have at least 1 character",
            ));
            return None;
        }
        if !valid_workspace(&value) {
            self.errors.push(FieldError::body(
                name,
                "string_pattern_mismatch",
                format!("String should match pattern '{ID_PATTERN}' and not be '.' or '..'"),
            ));
            return None;
        }
        Some(value)
    }

    fn invalid(&mut self, name: &str, msg: impl Into<String>) {
        self.errors.push(FieldError::body(name, "value_error", msg));
    }
}

/// A relative path inside a tree: no absolute path, no `..`, no NUL.
fn valid_tree_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\0')
        && !p.contains('\\')
        && p.split('/').all(|c| c != "..")
}

fn valid_branch(b: &str) -> bool {
    !b.is_empty()
        && !b.starts_with('-')
        && !b.starts_with('/')
        && !b.ends_with('/')
        && !b.ends_with(".lock")
        && !b.contains("..")
        && !b.contains("//")
        && !b.contains("@{")
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._/-+".contains(&c))
}

/// The parts of the configuration that decide whether a submission is valid.
#[derive(Debug, Clone)]
pub struct SubmissionPolicy {
    /// Which git URLs are allowed.
    pub source: SourcePolicy,
    /// Directories that `directory` scans may read.
    pub source_roots: Vec<PathBuf>,
    /// Where `upload-archive` stores archives; `archive_path` must name one of them.
    pub upload_dir: PathBuf,
    /// `timeout_seconds` when the submission gives none.
    pub default_timeout_seconds: u64,
}

impl SubmissionPolicy {
    pub fn from_config(config: &Config) -> SubmissionPolicy {
        SubmissionPolicy {
            source: config.source.policy(),
            source_roots: config.source.source_roots.clone(),
            upload_dir: config.upload_dir(),
            default_timeout_seconds: config.queue.scan_timeout.as_secs(),
        }
    }
}

/// Parses and validates a submission body (the body of `POST /v1/security-scans`) without
/// touching the job store: every error is a [`ApiError::Validation`] naming its field.
pub fn validate_submission_json(
    body: &[u8],
    policy: &SubmissionPolicy,
) -> Result<NewScan, ApiError> {
    validate_submission(policy, &parse_json_body(body)?)
}

/// Decodes a JSON body, answering FastAPI's `json_invalid` error when it is not JSON.
fn parse_json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::Validation(vec![FieldError {
            loc: vec![json!("body"), json!(e.column())],
            msg: format!("JSON decode error: {e}"),
            kind: "json_invalid".into(),
        }])
    })
}

/// Validates one submission object (a request body, or one item of a batch).
fn validate_submission(policy: &SubmissionPolicy, value: &Value) -> Result<NewScan, ApiError> {
    let Some(obj) = value.as_object() else {
        return Err(ApiError::Validation(vec![FieldError {
            loc: vec![json!("body")],
            msg: "Input should be a valid dictionary or object to extract fields from".into(),
            kind: "model_attributes_type".into(),
        }]));
    };
    let mut f = Fields {
        body: obj,
        errors: vec![],
    };
    let workspace_id = f.identifier("workspace_id");
    let component_id = f.identifier("component_id");
    let assessment_id = f.identifier("assessment_id");
    let source_type = f
        .string("source_type", false, 32)
        .unwrap_or_else(|| "git".into());
    if !["git", "directory", "archive"].contains(&source_type.as_str()) {
        f.errors.push(FieldError::body(
            "source_type",
            "enum",
            "Input should be 'git', 'directory' or 'archive'",
        ));
    }
    let is_git = source_type == "git";
    let git = match f.string("git_url", is_git, 2048) {
        Some(_) if !is_git => {
            f.invalid(
                "git_url",
                format!(
                    "git_url is only used with source_type 'git'; omit it for {source_type} scans"
                ),
            );
            None
        }
        Some(raw) => match parse_git_url(&raw, policy.source) {
            Ok(url) => Some(url),
            Err(msg) => {
                f.invalid("git_url", msg);
                None
            }
        },
        None => None,
    };
    let branch = f.string("branch", false, 255);
    if let Some(b) = &branch {
        if !is_git {
            f.invalid("branch", "branch is only used with source_type 'git'");
        } else if !valid_branch(b) {
            f.invalid(
                "branch",
                "branch must be a valid git branch name, e.g. main or release/1.2",
            );
        }
    }
    let commit = f.string("commit", false, 64);
    if let Some(c) = &commit {
        if !is_git {
            f.invalid("commit", "commit is only used with source_type 'git'");
        } else if c.len() < 4 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
            f.invalid(
                "commit",
                "commit must be a hexadecimal commit id (4 to 64 characters)",
            );
        }
    }
    let directory_path = f.string("directory_path", source_type == "directory", 4096);
    if let Some(dir) = &directory_path {
        if source_type != "directory" {
            f.invalid(
                "directory_path",
                "directory_path is only used with source_type 'directory'",
            );
        } else if let Err(msg) = resolve_directory(dir, &policy.source_roots) {
            f.invalid("directory_path", msg);
        }
    }
    let archive_path = f.string("archive_path", source_type == "archive", 256);
    if let Some(path) = &archive_path {
        if source_type != "archive" {
            f.invalid(
                "archive_path",
                "archive_path is only used with source_type 'archive'",
            );
        } else if let Err(msg) = parse_archive_path(path) {
            f.invalid("archive_path", msg);
        }
    }
    let requested_by = f.string("requested_by", false, 256);
    let profile_name = f
        .string("profile", false, 64)
        .unwrap_or_else(|| "light".into());
    let manifest = obj.get("manifest").filter(|v| !v.is_null());
    let manifest_path = f.string("manifest_path", false, 1024);
    if let Some(path) = &manifest_path {
        if manifest.is_some() {
            f.invalid(
                "manifest_path",
                "give either an inline manifest or manifest_path, not both",
            );
        } else if !valid_tree_path(path) {
            f.invalid(
                "manifest_path",
                "manifest_path must be a relative path inside the source tree, without '..'",
            );
        }
    }
    let profile = match profile::resolve(&profile_name, manifest) {
        Ok(p) => Some(p),
        Err(errors) => {
            for e in errors {
                if manifest.is_none() {
                    let names = BUILTIN_PROFILES
                        .iter()
                        .map(|p| format!("'{p}'"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    f.errors.push(FieldError::body(
                        "profile",
                        "enum",
                        format!("Input should be one of {names} (see GET /v1/profiles), or define it in an inline manifest"),
                    ));
                } else {
                    let mut loc = vec![json!("body"), json!("manifest")];
                    loc.extend(e.loc.iter().map(|l| json!(l)));
                    f.errors.push(FieldError {
                        loc,
                        msg: e.msg,
                        kind: "value_error".into(),
                    });
                }
            }
            None
        }
    };
    let timeout_seconds = match obj.get("timeout_seconds") {
        None | Some(Value::Null) => Some(policy.default_timeout_seconds),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_SCAN_TIMEOUT_SECONDS).contains(&n) => Some(n),
            Some(_) | None if v.is_number() => {
                f.errors.push(FieldError::body(
                    "timeout_seconds",
                    "int_range",
                    format!("Input should be a whole number from 1 to {MAX_SCAN_TIMEOUT_SECONDS}"),
                ));
                None
            }
            _ => {
                f.errors.push(FieldError::body(
                    "timeout_seconds",
                    "int_type",
                    "Input should be a valid integer",
                ));
                None
            }
        },
    };
    if !f.errors.is_empty() {
        return Err(ApiError::Validation(f.errors));
    }
    let profile = profile.expect("checked above");
    let (git_clone_url, git_display_url) = match git {
        Some(g) => (Some(g.clone_url), Some(g.display_url)),
        None => (None, None),
    };
    Ok(NewScan {
        workspace_id: workspace_id.expect("checked"),
        component_id: component_id.expect("checked"),
        assessment_id: assessment_id.expect("checked"),
        source_type,
        git_clone_url,
        git_display_url,
        branch,
        commit: commit.map(|c| c.to_ascii_lowercase()),
        requested_by,
        manifest_digest: profile.manifest_digest(),
        manifest: profile
            .custom
            .then(|| serde_json::to_value(&profile).expect("plain data serializes")),
        profile: profile.name,
        timeout_seconds: timeout_seconds.expect("checked"),
        directory_path,
        archive_path,
        manifest_path,
    })
}

/// `POST /v1/security-scans`: validate, admit, answer 202.
#[tracing::instrument(name = "submit_scan", skip_all)]
pub async fn submit_scan(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    note: AuditNote,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rejected = |reason: RejectReason| {
        state.metrics.scans.rejected.get(reason).inc();
    };
    let body = match read_body(&state, body) {
        Ok(b) => b,
        Err(e) => {
            rejected(RejectReason::Invalid);
            return Err(e);
        }
    };
    let new = match validate_submission_json(&body, &SubmissionPolicy::from_config(&state.config)) {
        Ok(n) => n,
        Err(e) => {
            rejected(RejectReason::Invalid);
            return Err(e);
        }
    };
    note.workspace(&new.workspace_id);
    if let Err(e) = check_workspace(&access, &new.workspace_id) {
        rejected(RejectReason::Unauthorized);
        return Err(e);
    }
    if let Err(e) = check_archive(&state, &new).await {
        rejected(RejectReason::Invalid);
        return Err(e);
    }
    let record = state.jobs.submit(new).await.map_err(|e| match e {
        SubmitError::QueueFull(_) => ApiError::Unavailable {
            detail: e.to_string(),
            retry_after_seconds: 30,
        },
        SubmitError::Draining => ApiError::Unavailable {
            detail: e.to_string(),
            retry_after_seconds: 10,
        },
        SubmitError::WorkspaceLimit { .. } => ApiError::TooManyRequests {
            detail: e.to_string(),
            retry_after_seconds: WORKSPACE_LIMIT_RETRY_SECONDS,
        },
        SubmitError::Internal(err) => ApiError::Internal(err),
    })?;
    note.scan(&record.workspace_id, &record.test_id);
    Ok((StatusCode::ACCEPTED, Json(submitted(&record))).into_response())
}

/// An `archive` scan may name only an archive its workspace uploaded and that is still stored.
/// An unknown hash and another workspace's hash get the same answer, so hashes cannot be
/// probed.
async fn check_archive(state: &AppState, new: &NewScan) -> Result<(), ApiError> {
    let Some(path) = &new.archive_path else {
        return Ok(());
    };
    let (sha, format) = parse_archive_path(path)
        .map_err(|msg| ApiError::invalid("archive_path", "value_error", msg))?;
    let file = state
        .config
        .upload_dir()
        .join(format!("{sha}.{}", format.extension()));
    let owned = state
        .jobs
        .store()
        .archive_owned(sha, new.workspace_id.clone())
        .await?;
    if owned && tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_file()) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "archive_path",
            "value_error",
            archive_not_stored(path),
        ))
    }
}

/// `Retry-After` of a submission over its workspace's limit of active scans.
const WORKSPACE_LIMIT_RETRY_SECONDS: u64 = 30;

/// 403 unless the caller's token may submit into `workspace_id`.
pub(super) fn check_workspace(access: &Access, workspace_id: &str) -> Result<(), ApiError> {
    if access.may_see(workspace_id) {
        return Ok(());
    }
    let name = access.name().unwrap_or_default();
    tracing::warn!(token.name = %name, "submission refused: workspace outside the token's scope");
    let allowed = access
        .workspace_filter()
        .map(|set| {
            set.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Err(ApiError::Forbidden(format!(
        "token `{name}` may not submit into workspace `{workspace_id}`; its workspaces are: {allowed}"
    )))
}

/// The scan, when it exists and the caller may see its workspace; otherwise the same 404 as an
/// unknown id, so a token cannot tell another workspace's scans from missing ones.
pub(super) async fn visible_scan(
    state: &AppState,
    access: &Access,
    test_id: &str,
) -> Result<ScanRecord, ApiError> {
    if TestId::parse(test_id).is_none() {
        return Err(not_found(test_id));
    }
    match state.jobs.get(test_id).await? {
        Some(record) if access.may_see(&record.workspace_id) => Ok(record),
        _ => Err(not_found(test_id)),
    }
}

pub(super) fn not_found(test_id: &str) -> ApiError {
    if TestId::parse(test_id).is_some() {
        ApiError::NotFound(format!("Scan {test_id} not found"))
    } else {
        ApiError::NotFound("Scan not found: test ids look like test_0123456789ab".into())
    }
}

/// `GET /v1/security-scans/{test_id}`
pub async fn get_scan(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(test_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = visible_scan(&state, &access, &test_id).await?;
    Ok(Json(scan_resource(&record)))
}

/// `POST /v1/security-scans/{test_id}/cancel`: 200 when a queued scan was cancelled, 202 when a
/// running scan was asked to stop, 409 when it had already finished.
pub async fn cancel_scan(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    note: AuditNote,
    Path(test_id): Path<String>,
) -> Result<Response, ApiError> {
    if access.workspace_filter().is_some() {
        let record = visible_scan(&state, &access, &test_id).await?;
        note.scan(&record.workspace_id, &record.test_id);
    } else if TestId::parse(&test_id).is_none() {
        return Err(not_found(&test_id));
    }
    let outcome = state.jobs.cancel(&test_id).await?;
    if let CancelOutcome::AlreadyFinished(r)
    | CancelOutcome::Cancelled(r)
    | CancelOutcome::Requested(r) = &outcome
    {
        note.scan(&r.workspace_id, &r.test_id);
    }
    match outcome {
        CancelOutcome::NotFound => Err(not_found(&test_id)),
        CancelOutcome::AlreadyFinished(r) => Err(ApiError::Conflict(format!(
            "Scan {} already finished with status {}; there is nothing to cancel",
            r.test_id,
            r.status.as_str()
        ))),
        CancelOutcome::Cancelled(r) => {
            Ok((StatusCode::OK, Json(scan_resource(&r))).into_response())
        }
        CancelOutcome::Requested(r) => {
            let mut body = scan_resource(&r);
            body["cancel_requested"] = json!(true);
            debug_assert!(r.status != JobState::Succeeded);
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
    }
}

/// `GET /v1/profiles`: the built-in presets with their scanners, thresholds and digests, and
/// which external tools are installed on this server.
pub async fn list_profiles(State(state): State<AppState>) -> Json<Value> {
    let path = state.config.scanning.tool_path.clone();
    let installed = |name: &str| {
        crate::pipeline::tools::spec(name)
            .map(|t| crate::pipeline::tools::find_on_path(t.binary, path.as_deref()).is_some())
    };
    let profiles: Vec<Value> = BUILTIN_PROFILES
        .iter()
        .filter_map(|name| Profile::builtin(name))
        .map(|p| {
            json!({
                "name": p.name,
                "description": p.description,
                "scanners": p.scanners,
                "required": p.required,
                "thresholds": p.thresholds,
                "manifest_digest": p.manifest_digest(),
            })
        })
        .collect();
    let scanners: Vec<Value> = profile::BUILTIN_SCANNER_NAMES
        .iter()
        .map(|n| json!({"name": n, "kind": "builtin", "available": true}))
        .chain(profile::EXTERNAL_TOOL_NAMES.iter().map(
            |n| json!({"name": n, "kind": "external", "available": installed(n).unwrap_or(false)}),
        ))
        .collect();
    Json(json!({ "profiles": profiles, "default": "light", "scanners": scanners }))
}

/// Reads a request body, mapping extractor failures (size limit, broken stream) to clean errors.
fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "request body is larger than {} bytes; send a smaller body",
                state.config.server.max_body_bytes
            ))
        } else {
            ApiError::invalid("body", "body_error", rejection.body_text())
        }
    })
}

fn submitted(record: &ScanRecord) -> Value {
    json!({
        "test_id": record.test_id,
        "workspace_id": record.workspace_id,
        "component_id": record.component_id,
        "assessment_id": record.assessment_id,
        "status": record.status,
        "profile": record.profile,
        "source_type": record.source_type,
        "manifest_digest": record.manifest_digest,
        "upload_status": record.upload_status,
        "stream_url": stream_url(&record.test_id),
    })
}

/// `POST /v1/security-scans/batch`: up to `BATCH_MAX_ITEMS` submissions, each validated on its
/// own. As many valid items as the queue has room for are admitted together; the answer lists,
/// per item and in order, the created scan (`status` 202) or the error (`422` or `503`).
#[tracing::instrument(name = "submit_batch", skip_all)]
pub async fn submit_batch(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    note: AuditNote,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rejected = |reason: RejectReason, n: u64| {
        state.metrics.scans.rejected.get(reason).inc_by(n);
    };
    let value = match read_body(&state, body).and_then(|b| parse_json_body(&b)) {
        Ok(v) => v,
        Err(e) => {
            rejected(RejectReason::Invalid, 1);
            return Err(e);
        }
    };
    let items = match &value {
        Value::Array(items) => items,
        Value::Object(obj) if obj.get("scans").is_some_and(Value::is_array) => {
            obj["scans"].as_array().expect("checked")
        }
        _ => {
            rejected(RejectReason::Invalid, 1);
            return Err(ApiError::invalid(
                "scans",
                "list_type",
                "send {\"scans\": [ ...submissions... ]} or a JSON array of submissions",
            ));
        }
    };
    let max = state.config.queue.batch_max_items;
    if items.is_empty() || items.len() > max {
        rejected(RejectReason::Invalid, 1);
        return Err(ApiError::invalid(
            "scans",
            "too_long",
            format!(
                "a batch holds 1 to {max} submissions (got {}); split it",
                items.len()
            ),
        ));
    }
    let policy = SubmissionPolicy::from_config(&state.config);
    let mut results: Vec<Option<Value>> = vec![None; items.len()];
    let mut valid = Vec::new();
    let mut valid_index = Vec::new();
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
    for (i, item) in items.iter().enumerate() {
        let checked = match validate_submission(&policy, item) {
            Ok(new) if check_workspace(&access, &new.workspace_id).is_ok() => {
                check_archive(&state, &new).await.map(|()| new)
            }
            other => other,
        };
        match checked {
            Ok(new) => {
                if let Err(e) = check_workspace(&access, &new.workspace_id) {
                    rejected(RejectReason::Unauthorized, 1);
                    results[i] = Some(json!({"index": i, "status": 403, "detail": e.to_string()}));
                    continue;
                }
                workspaces[i] = Some(new.workspace_id.clone());
                valid.push(new);
                valid_index.push(i);
            }
            Err(ApiError::Validation(errors)) => {
                rejected(RejectReason::Invalid, 1);
                let detail: Vec<FieldError> = errors
                    .into_iter()
                    .map(|mut e| {
                        // ["body", field] becomes ["body", "scans", i, field].
                        e.loc.splice(1..1, [json!("scans"), json!(i)]);
                        e
                    })
                    .collect();
                results[i] = Some(json!({"index": i, "status": 422, "detail": detail}));
            }
            Err(other) => return Err(other),
        }
    }
    let outcomes = state.jobs.submit_batch(valid).await?;
    for (i, outcome) in valid_index.into_iter().zip(outcomes) {
        results[i] = Some(match outcome {
            Ok(record) => json!({"index": i, "status": 202, "scan": submitted(&record)}),
            Err(err @ SubmitError::WorkspaceLimit { .. }) => json!({
                "index": i,
                "status": 429,
                "detail": err.to_string(),
                "retry_after_seconds": WORKSPACE_LIMIT_RETRY_SECONDS,
            }),
            Err(err) => json!({"index": i, "status": 503, "detail": err.to_string()}),
        });
    }
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| r.expect("every item answered"))
        .collect();
    for (result, workspace) in results.iter().zip(&workspaces) {
        note.item(
            workspace.as_deref(),
            result["scan"]["test_id"].as_str(),
            result["status"].as_u64().map_or(500, |s| s as u16),
        );
    }
    let accepted = results.iter().filter(|r| r["status"] == 202).count();
    Ok((
        StatusCode::OK,
        Json(json!({
            "accepted": accepted,
            "rejected": results.len() - accepted,
            "results": results,
        })),
    )
        .into_response())
}

/// Default and largest page size of `GET /v1/security-scans`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// `GET /v1/security-scans`: filters, newest first, keyset pagination with an opaque cursor.
pub async fn list_scans(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let pairs: Vec<(String, String)> = raw
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
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
            // Unknown parameters are ignored, as the earlier service did.
            _ => {}
        }
    }
    (query.before, query.limit) = page.bounds(errors)?;
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
    let scans: Vec<Value> = rows.iter().map(|(_, r)| scan_resource(r)).collect();
    Ok(Json(json!({
        "scans": scans,
        "count": scans.len(),
        "limit": page.limit,
        "next_cursor": next_cursor,
    })))
}
