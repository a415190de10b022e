//! git2: clone and check out a repository into a scan's workspace. This is the only module that
//! imports git2. Everything here is blocking and runs on the blocking pool; progress callbacks
//! enforce the clone's byte and time limits and notice cancellation between packets.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use git2::build::{CheckoutBuilder, RepoBuilder};
use git2::{
    Cred, CredentialType, ErrorClass, FetchOptions, ProxyOptions, RemoteCallbacks, RemoteRedirect,
    Repository,
};

use super::egress::{self, ConnectProxy, Denial, ProxyTimeouts, Resolver};
use super::git_url::{neutralize_controls, redact_text, GitUrl};
use super::policy::{GitScheme, HostCheck, SourcePolicy};

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
    /// Resolves git hosts when the clone connects.
    pub resolver: Arc<dyn Resolver>,
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
///
/// Hosts are checked where the clone connects ([`egress`]): https goes through a CONNECT proxy
/// this clone owns (so redirects are checked too); git:// and ssh:// URLs are pinned to the
/// address that was checked.
pub fn clone_repository(
    spec: &CloneSpec<'_>,
    dest: &Path,
    log: &mut dyn FnMut(String),
) -> Result<Checkout, CloneError> {
    let started = Instant::now();
    let proxy = match spec.url.scheme {
        Some(GitScheme::Https) => Some(
            ConnectProxy::start(
                spec.policy,
                spec.resolver.clone(),
                ProxyTimeouts {
                    handshake: Duration::from_secs(10),
                    idle: spec.timeout,
                },
            )
            .map_err(|e| {
                CloneError::Failed(format!("could not start the clone's connection proxy: {e}"))
            })?,
        ),
        _ => None,
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        // A transient failure (DNS, network) is retried a few times within the time limit.
        let retry_or_fail = |message: String, log: &mut dyn FnMut(String)| {
            if attempt < CLONE_ATTEMPTS
                && started.elapsed() < spec.timeout
                && !spec.cancel.load(Ordering::Relaxed)
            {
                let wait = backoff(attempt);
                log(format!(
                    "clone attempt {attempt} failed ({message}); retrying in {wait:?}"
                ));
                std::thread::sleep(wait);
                if spec.cancel.load(Ordering::Relaxed) {
                    return Err(CloneError::Cancelled);
                }
                return Ok(());
            }
            Err(CloneError::Failed(format!(
                "{message}. Check the host name, the server's DNS and network access"
            )))
        };
        let pinned = match pin_to_checked_address(spec) {
            Ok(pinned) => pinned,
            Err(HostCheck::Refused(message)) => return Err(CloneError::Invalid(message)),
            Err(HostCheck::Unresolved(message)) => {
                retry_or_fail(message, log)?;
                continue;
            }
        };
        let url = pinned.as_ref().unwrap_or(spec.url);
        if dest.exists() {
            let _ = std::fs::remove_dir_all(dest);
        }
        let proxy_url = proxy.as_ref().map(ConnectProxy::url);
        match clone_once(spec, url, proxy_url.as_deref(), dest, started, log) {
            Ok(repo) => return checkout(spec, &repo),
            Err(err) => {
                if spec.cancel.load(Ordering::Relaxed) {
                    return Err(CloneError::Cancelled);
                }
                match proxy.as_ref().and_then(ConnectProxy::take_denial) {
                    Some(Denial::Refused(message)) => return Err(CloneError::Invalid(message)),
                    Some(Denial::Unresolved(message) | Denial::Unreachable(message)) => {
                        retry_or_fail(message, log)?;
                        continue;
                    }
                    None => {}
                }
                let message = redact_text(err.message(), url);
                let transient = matches!(
                    err.class(),
                    ErrorClass::Net | ErrorClass::Os | ErrorClass::Http
                ) && !is_permanent(&message);
                if let Some(limit) = limit_exceeded(spec, &message) {
                    return Err(limit);
                }
                if transient && attempt < CLONE_ATTEMPTS && started.elapsed() < spec.timeout {
                    retry_or_fail(message, log)?;
                    continue;
                }
                return Err(classify(spec, &message));
            }
        }
    }
}

/// For git:// and ssh:// URLs with private networks refused: the URL with its host replaced by
/// the address that passed the check (libgit2 has no proxy support for these transports).
/// `None`: use the URL as it is (https goes through the proxy; local sources; private networks
/// allowed, where nothing is refused and a name may matter to the server).
fn pin_to_checked_address(spec: &CloneSpec<'_>) -> Result<Option<GitUrl>, HostCheck> {
    let (Some(host), Some(scheme)) = (&spec.url.host, spec.url.scheme) else {
        return Ok(None);
    };
    if spec.policy.allow_private_networks || !matches!(scheme, GitScheme::Git | GitScheme::Ssh) {
        return Ok(None);
    }
    let default_port = if scheme == GitScheme::Git { 9418 } else { 22 };
    let port = spec.url.port.unwrap_or(default_port);
    let addrs = egress::resolve_checked(host, port, spec.policy, spec.resolver.as_ref())?;
    let pinned = egress::pin_url(spec.url.clone_url.expose(), addrs[0].ip()).ok_or_else(|| {
        HostCheck::Refused(format!(
            "the git URL {} cannot be pinned to the address of its host",
            spec.url.display_url
        ))
    })?;
    Ok(Some(GitUrl {
        clone_url: crate::scan::SecretUrl::new(pinned),
        ..spec.url.clone()
    }))
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
    url: &GitUrl,
    proxy_url: Option<&str>,
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
                lines.push(neutralize_controls(line));
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
    // Redirects are followed on the first request only (libgit2's default, set here so that it
    // stays so): a server can move a repository, but not send later requests elsewhere. Every
    // connection, redirected or not, goes through the proxy and is checked there.
    fetch.follow_redirects(RemoteRedirect::Initial);
    if let Some(proxy_url) = proxy_url {
        let mut proxy = ProxyOptions::new();
        proxy.url(proxy_url);
        fetch.proxy_options(proxy);
    }
    // A shallow clone is enough unless a specific commit must be found in the history; the
    // local transport does not support shallow fetches.
    if spec.commit.is_none() && !url.is_local {
        fetch.depth(1);
    }
    let mut builder = RepoBuilder::new();
    builder.fetch_options(fetch);
    if let Some(branch) = spec.branch {
        builder.branch(branch);
    }
    let source = match url.clone_url.expose().strip_prefix("file://") {
        Some(path) if url.is_local => path.to_string(),
        _ => url.clone_url.expose().to_string(),
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
