//! Validation of a submission (the body of `POST /v1/security-scans`, or one item of a batch)
//! into a [`NewScan`], without touching the job store. Every problem is reported at once in the
//! FastAPI shape the earlier service's clients parse, naming each field in `loc`; the checks of
//! the source (git URL policy, directory roots, archive names) are the pipeline's.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::auth::valid_workspace;
use crate::config::{Config, MAX_SCAN_TIMEOUT_SECONDS};
use crate::error::{ApiError, FieldError};
use crate::jobs::NewScan;
use crate::pipeline::local_source::resolve_directory;
use crate::pipeline::parse_archive_path;
use crate::pipeline::profile::{self, Profile, BUILTIN_PROFILES};
use crate::pipeline::source::{parse_git_url, GitUrl, SourcePolicy};

const ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";

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
pub(crate) fn parse_json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::Validation(vec![FieldError {
            loc: vec![json!("body"), json!(e.column())],
            msg: format!("JSON decode error: {e}"),
            kind: "json_invalid".into(),
        }])
    })
}

/// The body as a JSON object, or FastAPI's `model_attributes_type` error.
pub(crate) fn json_object(value: &Value) -> Result<&Map<String, Value>, ApiError> {
    value.as_object().ok_or_else(|| {
        ApiError::Validation(vec![FieldError {
            loc: vec![json!("body")],
            msg: "Input should be a valid dictionary or object to extract fields from".into(),
            kind: "model_attributes_type".into(),
        }])
    })
}

/// Validates one submission object (a request body, or one item of a batch). The fields are
/// checked in the order of the body's documentation, so the errors come in that order.
pub(super) fn validate_submission(
    policy: &SubmissionPolicy,
    value: &Value,
) -> Result<NewScan, ApiError> {
    let obj = json_object(value)?;
    let mut f = Fields {
        body: obj,
        errors: vec![],
    };
    let workspace_id = f.identifier("workspace_id");
    let component_id = f.identifier("component_id");
    let assessment_id = f.identifier("assessment_id");
    let source = source_fields(&mut f, policy);
    let requested_by = f.string("requested_by", false, 256);
    let profile = profile_fields(&mut f);
    let timeout_seconds = timeout_field(&mut f, policy.default_timeout_seconds);
    if !f.errors.is_empty() {
        return Err(ApiError::Validation(f.errors));
    }
    let (profile, manifest_path) = profile.expect("checked above");
    let (git_clone_url, git_display_url) = match source.git {
        Some(g) => (Some(g.clone_url), Some(g.display_url)),
        None => (None, None),
    };
    Ok(NewScan {
        workspace_id: workspace_id.expect("checked"),
        component_id: component_id.expect("checked"),
        assessment_id: assessment_id.expect("checked"),
        source_type: source.source_type,
        git_clone_url,
        git_display_url,
        branch: source.branch,
        commit: source.commit.map(|c| c.to_ascii_lowercase()),
        requested_by,
        manifest_digest: profile.manifest_digest(),
        manifest: profile
            .custom
            .then(|| serde_json::to_value(&profile).expect("plain data serializes")),
        profile: profile.name,
        timeout_seconds: timeout_seconds.expect("checked"),
        directory_path: source.directory_path,
        archive_path: source.archive_path,
        manifest_path,
    })
}

/// What to scan, as submitted: the source type and the fields of each type.
struct SourceFields {
    source_type: String,
    git: Option<GitUrl>,
    branch: Option<String>,
    commit: Option<String>,
    directory_path: Option<String>,
    archive_path: Option<String>,
}

/// Checks `source_type` and the fields that belong to it (a field of another type is refused).
fn source_fields(f: &mut Fields<'_>, policy: &SubmissionPolicy) -> SourceFields {
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
    let git = git_url_field(f, &source_type, policy.source);
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
    SourceFields {
        source_type,
        git,
        branch,
        commit,
        directory_path,
        archive_path,
    }
}

/// `git_url`: required for, and only used with, `git` scans; parsed against the source policy.
fn git_url_field(f: &mut Fields<'_>, source_type: &str, policy: SourcePolicy) -> Option<GitUrl> {
    let is_git = source_type == "git";
    match f.string("git_url", is_git, 2048) {
        Some(_) if !is_git => {
            f.invalid(
                "git_url",
                format!(
                    "git_url is only used with source_type 'git'; omit it for {source_type} scans"
                ),
            );
            None
        }
        Some(raw) => match parse_git_url(&raw, policy) {
            Ok(url) => Some(url),
            Err(msg) => {
                f.invalid("git_url", msg);
                None
            }
        },
        None => None,
    }
}

/// `profile`, the inline `manifest` or `manifest_path`: the effective profile and the manifest
/// path, or `None` when one of them is invalid (the errors are recorded).
fn profile_fields(f: &mut Fields<'_>) -> Option<(Profile, Option<String>)> {
    let profile_name = f
        .string("profile", false, 64)
        .unwrap_or_else(|| "light".into());
    let body = f.body;
    let manifest = body.get("manifest").filter(|v| !v.is_null());
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
    match profile::resolve(&profile_name, manifest) {
        Ok(p) => Some((p, manifest_path)),
        Err(errors) => {
            for e in errors {
                let error = match manifest {
                    None => unknown_profile(),
                    Some(_) => {
                        let mut loc = vec![json!("body"), json!("manifest")];
                        loc.extend(e.loc.iter().map(|l| json!(l)));
                        FieldError {
                            loc,
                            msg: e.msg,
                            kind: "value_error".into(),
                        }
                    }
                };
                f.errors.push(error);
            }
            None
        }
    }
}

/// The refusal of a profile name that is no built-in preset (and no inline manifest defines).
fn unknown_profile() -> FieldError {
    let names = BUILTIN_PROFILES
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    FieldError::body(
        "profile",
        "enum",
        format!("Input should be one of {names} (see GET /v1/profiles), or define it in an inline manifest"),
    )
}

/// `timeout_seconds`: a whole number of seconds up to the largest scan time limit, or the
/// default when absent.
fn timeout_field(f: &mut Fields<'_>, default_seconds: u64) -> Option<u64> {
    let body = f.body;
    let value = match body.get("timeout_seconds") {
        None | Some(Value::Null) => return Some(default_seconds),
        Some(v) => v,
    };
    match value.as_u64() {
        Some(n) if (1..=MAX_SCAN_TIMEOUT_SECONDS).contains(&n) => Some(n),
        _ if value.is_number() => {
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
    }
}
