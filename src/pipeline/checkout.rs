//! git2: clone and check out a repository into a scan's workspace. This is the only module that
//! imports git2. Everything here is blocking and runs on the blocking pool; progress callbacks
//! enforce the clone's byte and time limits and notice cancellation between packets.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use git2::build::{CheckoutBuilder, RepoBuilder};
use git2::{Cred, CredentialType, ErrorClass, FetchOptions, RemoteCallbacks, Repository};

use super::source::{check_resolved_host, redact_text, GitUrl, HostCheck, SourcePolicy};

/// Limits and inputs of one clone.
pub struct CloneSpec<'a> {
    pub url: &'a GitUrl,
    pub branch: Option<&'a str>,
    pub commit: Option<&'a str>,
    pub timeout: Duration,
    pub max_bytes: u64,
    pub policy: SourcePolicy,
    /// Private key for ssh URLs, when configured.
    pub ssh_key: Option<&'a Path>,
    pub cancel: &'a AtomicBool,
}

/// What the clone resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub commit: String,
    pub branch: Option<String>,
}

/// Why a clone failed; `message` is already free of credentials and says what to do.
#[derive(Debug)]
pub enum CloneError {
    /// The scan was cancelled (or timed out) while cloning.
    Cancelled,
    /// The source cannot be used: refused host, unknown branch or commit, limits exceeded.
    Invalid(String),
    /// The repository could not be fetched (network, authentication, server errors).
    Failed(String),
}

static GIT_TIMEOUTS: Once = Once::new();

/// Sets libgit2's socket timeouts so that a server that accepts and then stalls cannot hold a
/// worker forever (the transfer callback only runs when data arrives). They are process-wide:
/// the first call wins, before any clone starts.
pub fn init_git_timeouts(stall: Duration) {
    GIT_TIMEOUTS.call_once(|| {
        let millis = stall.as_millis().clamp(1_000, i32::MAX as u128) as i32;
        // SAFETY: runs once (guarded by Once) before any clone of this process reads the options.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis);
            let _ = git2::opts::set_server_timeout_in_milliseconds(millis);
        }
    });
}

/// Clones `spec.url` into `dest` (which must not exist or be empty) and checks out the requested
/// branch or commit. Transient network failures are retried a few times with backoff.
pub fn clone_repository(
    spec: &CloneSpec<'_>,
    dest: &Path,
    log: &mut dyn FnMut(String),
) -> Result<Checkout, CloneError> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if let (Some(host), false) = (&spec.url.host, spec.url.is_local) {
            match check_resolved_host(host, spec.url.port.unwrap_or(443), spec.policy) {
                Ok(()) => {}
                Err(HostCheck::Refused(message)) => return Err(CloneError::Invalid(message)),
                // DNS may be down for a moment: retry like any transient network failure.
                Err(HostCheck::Unresolved(message)) => {
                    if attempt < CLONE_ATTEMPTS && !spec.cancel.load(Ordering::Relaxed) {
                        log(format!("{message}; retrying"));
                        std::thread::sleep(backoff(attempt));
                        continue;
                    }
                    return Err(CloneError::Failed(format!(
                        "{message}. Check the host name and the server's DNS"
                    )));
                }
            }
        }
        if dest.exists() {
            let _ = std::fs::remove_dir_all(dest);
        }
        match clone_once(spec, dest, started, log) {
            Ok(repo) => return checkout(spec, &repo),
            Err(err) => {
                if spec.cancel.load(Ordering::Relaxed) {
                    return Err(CloneError::Cancelled);
                }
                let message = redact_text(err.message(), spec.url);
                let transient = matches!(
                    err.class(),
                    ErrorClass::Net | ErrorClass::Os | ErrorClass::Http
                ) && !is_permanent(&message);
                if let Some(limit) = limit_exceeded(spec, &message) {
                    return Err(limit);
                }
                if transient && attempt < CLONE_ATTEMPTS && started.elapsed() < spec.timeout {
                    let wait = backoff(attempt);
                    log(format!(
                        "clone attempt {attempt} failed ({message}); retrying in {wait:?}"
                    ));
                    std::thread::sleep(wait);
                    if spec.cancel.load(Ordering::Relaxed) {
                        return Err(CloneError::Cancelled);
                    }
                    continue;
                }
                return Err(classify(spec, &message));
            }
        }
    }
}

/// Attempts of one clone (the first plus retries of transient network failures).
const CLONE_ATTEMPTS: u32 = 3;

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 * (1 << (attempt - 1).min(4)))
}

fn is_permanent(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "not found",
        "not exported",
        "does not appear",
        "authentication",
        "401",
        "403",
        "404",
        "invalid",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// Markers the transfer callback leaves in the error message when it stopped the clone.
const TOO_LARGE: &str = "clone exceeded the size limit";
const TOO_SLOW: &str = "clone exceeded the time limit";

/// A repository over the size limit cannot be scanned as it is (`source_invalid`); a clone over
/// its time limit may succeed later or with a higher limit (`clone_failed`).
fn limit_exceeded(spec: &CloneSpec<'_>, message: &str) -> Option<CloneError> {
    if message.contains(TOO_LARGE) {
        return Some(CloneError::Invalid(format!(
            "the repository is larger than the clone limit of {} bytes (CERTUS_ASSURANCE_CLONE_MAX_BYTES)",
            spec.max_bytes
        )));
    }
    if message.contains(TOO_SLOW) {
        return Some(CloneError::Failed(format!(
            "the clone took longer than {}s (CERTUS_ASSURANCE_CLONE_TIMEOUT_SECONDS); retry, or raise the limit for large repositories",
            spec.timeout.as_secs()
        )));
    }
    None
}

fn classify(spec: &CloneSpec<'_>, message: &str) -> CloneError {
    let m = message.to_ascii_lowercase();
    if let Some(branch) = spec.branch {
        if m.contains("reference") && m.contains(&branch.to_ascii_lowercase())
            || m.contains("remote branch")
        {
            return CloneError::Invalid(format!(
                "branch `{branch}` does not exist in the repository; check the branch name"
            ));
        }
    }
    CloneError::Failed(format!(
        "could not clone {}: {message}. Check that the URL is right and reachable from the server, and that the repository is public or credentials are configured",
        spec.url.display_url
    ))
}

fn clone_once(
    spec: &CloneSpec<'_>,
    dest: &Path,
    started: Instant,
    log: &mut dyn FnMut(String),
) -> Result<Repository, git2::Error> {
    let cancel = spec.cancel;
    let max_bytes = spec.max_bytes;
    let timeout = spec.timeout;
    let stop_reason = std::cell::Cell::new(None::<&'static str>);
    let remote_lines = std::cell::RefCell::new(Vec::<String>::new());
    let mut callbacks = RemoteCallbacks::new();
    callbacks.transfer_progress(|progress| {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        if progress.received_bytes() as u64 > max_bytes {
            stop_reason.set(Some(TOO_LARGE));
            return false;
        }
        if started.elapsed() > timeout {
            stop_reason.set(Some(TOO_SLOW));
            return false;
        }
        true
    });
    callbacks.sideband_progress(|data| {
        let mut lines = remote_lines.borrow_mut();
        if lines.len() < 200 {
            let text = String::from_utf8_lossy(data);
            // Keep the final line of each progress counter, not every percentage step.
            let keep = |l: &&str| !l.is_empty() && (!l.contains('%') || l.ends_with("done."));
            for line in text.split(['\r', '\n']).map(str::trim).filter(keep) {
                lines.push(line.to_string());
            }
        }
        !cancel.load(Ordering::Relaxed)
    });
    let ssh_key = spec.ssh_key;
    callbacks.credentials(move |url, username, allowed| {
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = username.unwrap_or("git");
            return match ssh_key {
                Some(key) => Cred::ssh_key(user, None, key, None),
                None => Cred::ssh_key_from_agent(user),
            };
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let Ok(parsed) = url::Url::parse(url) {
                if let Some(password) = parsed.password() {
                    return Cred::userpass_plaintext(parsed.username(), password);
                }
            }
        }
        Err(git2::Error::from_str(
            "authentication required but no credentials are configured",
        ))
    });

    let mut fetch = FetchOptions::new();
    fetch.remote_callbacks(callbacks);
    // A shallow clone is enough unless a specific commit must be found in the history; the
    // local transport does not support shallow fetches.
    if spec.commit.is_none() && !spec.url.is_local {
        fetch.depth(1);
    }
    let mut builder = RepoBuilder::new();
    builder.fetch_options(fetch);
    if let Some(branch) = spec.branch {
        builder.branch(branch);
    }
    let source = match spec.url.clone_url.strip_prefix("file://") {
        Some(path) if spec.url.is_local => path.to_string(),
        _ => spec.url.clone_url.clone(),
    };
    let result = builder.clone(&source, dest);
    for line in remote_lines.borrow_mut().drain(..) {
        log(format!("remote: {line}"));
    }
    match (result, stop_reason.get()) {
        (Err(_), Some(reason)) => Err(git2::Error::from_str(reason)),
        (r, _) => r,
    }
}

fn checkout(spec: &CloneSpec<'_>, repo: &Repository) -> Result<Checkout, CloneError> {
    let branch = spec.branch.map(str::to_string).or_else(|| {
        repo.head()
            .ok()
            .filter(|h| h.is_branch())
            .and_then(|h| h.shorthand().ok().map(str::to_string))
    });
    if let Some(commit) = spec.commit {
        let object = repo
            .revparse_single(commit)
            .and_then(|o| o.peel_to_commit())
            .map_err(|_| {
                CloneError::Invalid(format!(
                    "commit `{commit}` was not found{}; check the commit id",
                    spec.branch
                        .map(|b| format!(" on branch `{b}`"))
                        .unwrap_or_default()
                ))
            })?;
        repo.checkout_tree(object.as_object(), Some(CheckoutBuilder::new().force()))
            .and_then(|_| repo.set_head_detached(object.id()))
            .map_err(|e| {
                CloneError::Failed(format!(
                    "checking out commit `{commit}` failed: {}",
                    e.message()
                ))
            })?;
        return Ok(Checkout {
            commit: object.id().to_string(),
            branch,
        });
    }
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|_| CloneError::Invalid("the repository has no commits to scan".into()))?;
    Ok(Checkout {
        commit: head.id().to_string(),
        branch,
    })
}
