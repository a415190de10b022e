//! Source locations as callers give them: git URL syntax, scheme and address checks, and the
//! redaction of credentials embedded in URLs. Pure functions, no I/O except name resolution in
//! [`check_resolved_host`], which runs when a clone connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

use url::Url;

/// What the configuration allows for git sources.
#[derive(Debug, Clone, Copy)]
pub struct SourcePolicy {
    /// Hosts on loopback, private, link-local or otherwise internal addresses are allowed.
    pub allow_private_networks: bool,
    /// `file://` URLs and local paths are allowed.
    pub allow_local_sources: bool,
}

/// A git URL that passed submit-time checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl {
    /// The URL to clone, credentials included (kept in memory only).
    pub clone_url: String,
    /// The URL with any credentials replaced by `***`; safe to show, log and store.
    pub display_url: String,
    /// Host to check when connecting (`None` for local sources).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// True for `file://` URLs and local paths.
    pub is_local: bool,
}

impl GitUrl {
    pub fn has_credentials(&self) -> bool {
        self.clone_url != self.display_url
    }
}

/// Checks a `git_url` at submit time: syntax, scheme, and literal addresses. Names are not
/// resolved here (a submit is accepted while DNS is down); see [`check_resolved_host`].
pub fn parse_git_url(raw: &str, policy: SourcePolicy) -> Result<GitUrl, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("git_url must not be empty".into());
    }
    if raw.len() > 2048 {
        return Err("git_url must be at most 2048 characters".into());
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("git_url must not contain spaces or control characters".into());
    }
    if raw.starts_with('-') {
        return Err("git_url must not start with '-'".into());
    }
    // scp-like ssh syntax: user@host:path
    if !raw.contains("://") {
        if let Some((userhost, path)) = raw.split_once(':') {
            let host = userhost.rsplit_once('@').map(|(_, h)| h).unwrap_or("");
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let path_ok = !path.is_empty()
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/~".contains(&b));
            if !userhost.contains('/') && host_ok && path_ok {
                check_literal_host(host, policy)?;
                return Ok(GitUrl {
                    clone_url: raw.to_string(),
                    display_url: raw.to_string(),
                    host: Some(host.to_string()),
                    port: Some(22),
                    is_local: false,
                });
            }
        }
        if raw.starts_with('/') || raw.starts_with("./") || raw.starts_with("../") {
            if !policy.allow_local_sources {
                return Err("local repository paths are not allowed on this server (set CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES=true to enable them)".into());
            }
            return Ok(GitUrl {
                clone_url: raw.to_string(),
                display_url: raw.to_string(),
                host: None,
                port: None,
                is_local: true,
            });
        }
        return Err(
            "git_url must be a URL such as https://host/org/repo.git or git@host:org/repo.git"
                .into(),
        );
    }
    let url = Url::parse(raw).map_err(|e| format!("git_url is not a valid URL: {e}"))?;
    let display_url = redact_url(&url);
    match url.scheme() {
        "https" | "http" | "ssh" | "git" => {}
        "file" => {
            if !policy.allow_local_sources {
                return Err("file:// URLs are not allowed on this server (set CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES=true to enable them)".into());
            }
            return Ok(GitUrl {
                clone_url: raw.to_string(),
                display_url,
                host: None,
                port: None,
                is_local: true,
            });
        }
        other => {
            return Err(format!(
                "git_url scheme `{other}` is not allowed; use https, ssh or git"
            ))
        }
    }
    if url.scheme() == "http" && !policy.allow_private_networks {
        return Err("plain http git URLs are not allowed; use https (plain http is accepted only with CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true, for internal git servers)".into());
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "git_url must name a host".to_string())?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    check_literal_host(&host, policy)?;
    if url.path().trim_matches('/').is_empty() {
        return Err("git_url must name a repository path".into());
    }
    Ok(GitUrl {
        clone_url: raw.to_string(),
        display_url,
        port: url.port_or_known_default(),
        host: Some(host),
        is_local: false,
    })
}

/// Refuses literal internal addresses and `localhost` unless private networks are allowed.
fn check_literal_host(host: &str, policy: SourcePolicy) -> Result<(), String> {
    if policy.allow_private_networks {
        return Ok(());
    }
    let lower = host.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Err(format!(
            "git host `{host}` is a loopback name; internal hosts are refused unless CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true"
        ));
    }
    if let Ok(ip) = lower.parse::<IpAddr>() {
        if is_internal(ip) {
            return Err(format!(
                "git host `{host}` is an internal address; internal hosts are refused unless CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true"
            ));
        }
    }
    Ok(())
}

/// Why a host check at connect time did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCheck {
    /// The host resolves to an internal address (permanent).
    Refused(String),
    /// The name did not resolve (possibly transient).
    Unresolved(String),
}

/// Resolves `host` and refuses it if any address is internal (called when the clone connects).
pub fn check_resolved_host(host: &str, port: u16, policy: SourcePolicy) -> Result<(), HostCheck> {
    if policy.allow_private_networks {
        return Ok(());
    }
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| HostCheck::Unresolved(format!("could not resolve git host `{host}`: {e}")))?;
    for addr in addrs {
        if is_internal(addr.ip()) {
            return Err(HostCheck::Refused(format!(
                "git host `{host}` resolves to an internal address; internal hosts are refused unless CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true"
            )));
        }
    }
    Ok(())
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, multicast, documentation and
/// unique-local addresses: anything that is not a public unicast address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local
                || (seg0 & 0xffc0) == 0xfe80 // link local
                || v6 == Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared address space
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
}

/// The URL with its user-info (user and password) replaced by `***`.
pub fn redact_url(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut clean = url.clone();
    let _ = clean.set_password(None);
    let _ = clean.set_username("***");
    clean.to_string()
}

/// Replaces every occurrence of the credentialed URL (and its user-info) in `text` with the
/// display form; used on error messages coming back from git.
pub fn redact_text(text: &str, git: &GitUrl) -> String {
    if !git.has_credentials() {
        return text.to_string();
    }
    let mut out = text.replace(&git.clone_url, &git.display_url);
    if let Ok(url) = Url::parse(&git.clone_url) {
        for secret in [url.password().unwrap_or(""), url.username()] {
            if secret.len() >= 4 {
                out = out.replace(secret, "***");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: SourcePolicy = SourcePolicy {
        allow_private_networks: false,
        allow_local_sources: false,
    };
    const OPEN: SourcePolicy = SourcePolicy {
        allow_private_networks: true,
        allow_local_sources: true,
    };

    #[test]
    fn accepts_public_urls() {
        for ok in [
            "https://github.com/org/repo.git",
            "ssh://git@example.com/org/repo.git",
            "git://example.com/repo",
            "git@github.com:org/repo.git",
        ] {
            assert!(parse_git_url(ok, STRICT).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_internal_and_local_sources_by_default() {
        for bad in [
            "https://127.0.0.1/repo.git",
            "git://10.0.0.8/repo",
            "https://[::1]/repo",
            "https://169.254.169.254/latest",
            "https://localhost/x",
            "file:///etc",
            "/srv/repo",
            "ftp://example.com/repo",
            "javascript:alert(1)",
            "--upload-pack=touch /tmp/x",
            "https://example.com/",
            "",
        ] {
            assert!(parse_git_url(bad, STRICT).is_err(), "{bad}");
        }
        assert!(parse_git_url("git://127.0.0.1:9418/repo", OPEN).is_ok());
        assert!(parse_git_url("file:///tmp/repo", OPEN).unwrap().is_local);
    }

    #[test]
    fn credentials_are_redacted() {
        let url =
            parse_git_url("https://user:s3cr3t-token@example.com/org/repo.git", STRICT).unwrap();
        assert_eq!(url.display_url, "https://***@example.com/org/repo.git");
        assert!(url.has_credentials());
        let msg = redact_text(
            "failed to fetch https://user:s3cr3t-token@example.com/org/repo.git: s3cr3t-token rejected",
            &url,
        );
        assert!(!msg.contains("s3cr3t"), "{msg}");
    }

    #[test]
    fn internal_ranges() {
        for ip in [
            "100.64.1.1",
            "192.168.1.1",
            "::ffff:127.0.0.1",
            "fd00::1",
            "fe80::1",
            "0.1.2.3",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
