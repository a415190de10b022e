//! Git URLs as callers give them: syntax, scheme and literal address checks at submit time, and
//! the redaction of credentials embedded in URLs. Pure functions, no I/O. Names are checked where
//! a clone connects ([`super::egress`]), not here: a submit is accepted while DNS is down, and a
//! name checked early could be rebound.
//!
//! Public entry points: [`parse_git_url`] (submit-time check of a `git_url`) and [`redact_url`] /
//! [`redact_text`]. The policy and the address classifier live in [`super::policy`].

use url::Url;

use crate::scan::SecretUrl;

use super::policy::{is_internal, literal_ip, GitScheme, SourcePolicy};

fn scheme_refused(scheme: GitScheme, policy: SourcePolicy) -> String {
    format!(
        "git_url scheme `{}` is not allowed on this server; use {} (allowed schemes are set by CERTUS_ASSURANCE_GIT_SCHEMES)",
        scheme.name(),
        policy.schemes.list()
    )
}

/// A git URL that passed submit-time checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl {
    /// The URL to clone, credentials included: never printed, stored only sealed.
    pub clone_url: SecretUrl,
    /// The URL with any credentials replaced by `***`; safe to show, log and store.
    pub display_url: String,
    /// Host to check when connecting (`None` for local sources).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// True for `file://` URLs and local paths.
    pub is_local: bool,
    /// The network scheme (`None` for local sources).
    pub scheme: Option<GitScheme>,
}

impl GitUrl {
    pub fn has_credentials(&self) -> bool {
        self.clone_url.expose() != self.display_url
    }
}

/// Checks a `git_url` at submit time: syntax, scheme, and literal addresses. Names are not
/// resolved here (a submit is accepted while DNS is down); see [`super::egress::resolve_checked`].
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
    // A backslash is a path separator to the URL parser of https URLs and part of the user
    // name to git: `https://example.com\@127.0.0.1/` would be checked as one host and cloned
    // from another.
    if raw.contains('\\') {
        return Err("git_url must not contain a backslash; use / in paths".into());
    }
    if !raw.contains("://") {
        return parse_scp_or_path(raw, policy);
    }
    parse_network_url(raw, policy)
}

/// A `scheme://` git URL.
fn parse_network_url(raw: &str, policy: SourcePolicy) -> Result<GitUrl, String> {
    let url = Url::parse(raw).map_err(|e| format!("git_url is not a valid URL: {e}"))?;
    // Git uses neither; credentials put there (`?access_token=`, `?private_token=`, signatures)
    // would be shown and stored as given, so the URL is refused rather than kept.
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "git_url must not have a query string or fragment (`?...`, `#...`): git does \
                    not use them, and credentials there would be shown and stored; put a token in \
                    the user-info (https://user:TOKEN@host/org/repo.git), where it is redacted, or \
                    use an ssh URL with CERTUS_ASSURANCE_GIT_SSH_KEY_FILE"
                .into(),
        );
    }
    let display_url = redact_url(&url);
    let scheme = match url.scheme() {
        "https" => GitScheme::Https,
        "http" => GitScheme::Http,
        "ssh" => GitScheme::Ssh,
        "git" => GitScheme::Git,
        "file" => {
            if !policy.allow_local_sources {
                return Err("file:// URLs are not allowed on this server (set CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES=true to enable them)".into());
            }
            return Ok(GitUrl {
                clone_url: SecretUrl::new(raw),
                display_url,
                host: None,
                port: None,
                is_local: true,
                scheme: None,
            });
        }
        other => {
            return Err(format!(
                "git_url scheme `{other}` is not allowed; use {}",
                policy.schemes.list()
            ))
        }
    };
    if scheme == GitScheme::Http && !(policy.schemes.http && policy.allow_private_networks) {
        return Err("plain http git URLs are not allowed; use https (plain http is accepted only for internal git servers, with CERTUS_ASSURANCE_GIT_SCHEMES including http and CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true)".into());
    }
    if !policy.schemes.allows(scheme) {
        return Err(scheme_refused(scheme, policy));
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
        clone_url: SecretUrl::new(raw),
        display_url,
        port: url.port_or_known_default(),
        host: Some(host),
        is_local: false,
        scheme: Some(scheme),
    })
}

/// scp-like ssh syntax (`user@host:path`), or a local path.
fn parse_scp_or_path(raw: &str, policy: SourcePolicy) -> Result<GitUrl, String> {
    if let Some((userhost, path)) = raw.split_once(':') {
        let host = userhost.rsplit_once('@').map(|(_, h)| h).unwrap_or("");
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
        let path_ok = !path.is_empty()
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/~".contains(&b));
        if !userhost.contains('/') && host_ok && path_ok {
            if !policy.schemes.ssh {
                return Err(scheme_refused(GitScheme::Ssh, policy));
            }
            check_literal_host(host, policy)?;
            return Ok(GitUrl {
                clone_url: SecretUrl::new(raw),
                display_url: raw.to_string(),
                host: Some(host.to_string()),
                port: Some(22),
                is_local: false,
                scheme: Some(GitScheme::Ssh),
            });
        }
    }
    if raw.starts_with('/') || raw.starts_with("./") || raw.starts_with("../") {
        if !policy.allow_local_sources {
            return Err("local repository paths are not allowed on this server (set CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES=true to enable them)".into());
        }
        return Ok(GitUrl {
            clone_url: SecretUrl::new(raw),
            display_url: raw.to_string(),
            host: None,
            port: None,
            is_local: true,
            scheme: None,
        });
    }
    Err("git_url must be a URL such as https://host/org/repo.git or git@host:org/repo.git".into())
}

/// Refuses what cannot be a git host (empty, starting with `-`, which a command line would read
/// as an option, or characters no host name has), then, unless private networks are allowed,
/// literal internal addresses in any spelling ([`literal_ip`]) and loopback names (`localhost`,
/// `*.localhost`, with or without a trailing dot).
fn check_literal_host(host: &str, policy: SourcePolicy) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() {
        return Err("git_url must name a host".into());
    }
    if bare.starts_with('-') {
        return Err(format!("git host `{host}` must not start with '-'"));
    }
    if !bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b))
    {
        return Err(format!(
            "git host `{host}` is not a valid host name or address"
        ));
    }
    if policy.allow_private_networks {
        return Ok(());
    }
    let lower = bare.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name == "localhost" || name.ends_with(".localhost") {
        return Err(format!(
            "git host `{host}` is a loopback name; internal hosts are refused unless CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true"
        ));
    }
    if let Some(ip) = literal_ip(&lower) {
        if is_internal(ip) {
            return Err(format!(
                "git host `{host}` is an internal address ({ip}); internal hosts are refused unless CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true"
            ));
        }
    }
    Ok(())
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

/// Text from a remote server (git's error messages quote what the server sent) with control
/// characters written as escapes (`\n`, `\u{1b}`): such text ends up in logs, events and stored
/// errors, and a newline or a terminal escape in it must not forge a log line or repaint a
/// terminal.
pub fn neutralize_controls(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Replaces every occurrence of the credentialed URL (and its user-info) in `text` with the
/// display form; used on error messages coming back from git.
pub fn redact_text(text: &str, git: &GitUrl) -> String {
    let text = neutralize_controls(text);
    if !git.has_credentials() {
        return text;
    }
    let clone_url = git.clone_url.expose();
    let mut out = text.replace(clone_url, &git.display_url);
    if let Ok(url) = Url::parse(clone_url) {
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
    use super::super::policy::GitSchemes;
    use super::*;

    const STRICT: SourcePolicy = SourcePolicy::STRICT;
    const OPEN: SourcePolicy = SourcePolicy::OPEN;

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
    fn query_strings_and_fragments_are_refused_for_every_scheme() {
        for bad in [
            "https://git.example.com/org/repo.git?access_token=abcd1234",
            "https://git.example.com/org/repo.git?private_token=abcd1234",
            "https://git.example.com/org/repo.git?sv=2024&sig=abcd1234",
            "https://git.example.com/org/repo.git?",
            "https://git.example.com/org/repo.git#token=abcd1234",
            "ssh://git@git.example.com/org/repo.git?token=abcd1234",
            "git://git.example.com/repo?token=abcd1234",
            "git@git.example.com:org/repo.git?token=abcd1234",
            "file:///srv/repo?token=abcd1234",
        ] {
            let err = parse_git_url(bad, OPEN).expect_err(bad);
            assert!(!err.contains("abcd1234"), "{err}");
        }
    }

    #[test]
    fn control_characters_from_servers_are_escaped() {
        let git = parse_git_url("https://git.example.com/r.git", SourcePolicy::STRICT).unwrap();
        let hostile = "remote error: no\n{\"level\":\"ERROR\",\"fields\":{}}\r\u{1b}[2J\u{7}\tend";
        let out = redact_text(hostile, &git);
        assert!(!out.chars().any(|c| c.is_control() && c != '\t'), "{out:?}");
        assert_eq!(
            out,
            "remote error: no\\n{\"level\":\"ERROR\",\"fields\":{}}\\r\\u{1b}[2J\\u{7}\tend"
        );
        assert_eq!(neutralize_controls("plain text"), "plain text");
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
    fn address_classifier_table() {
        let internal = [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254", // AWS, GCP, Azure metadata
            "169.254.0.1",
            "100.64.0.1",      // CGNAT
            "100.100.100.200", // Alibaba metadata (CGNAT range)
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "240.0.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "192.0.0.170",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "fd00::1",
            "fd00:ec2::254", // AWS metadata over IPv6
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1", // Teredo
            "64:ff9b::7f00:1",     // NAT64 of 127.0.0.1
            "64:ff9b::a9fe:a9fe",  // NAT64 of 169.254.169.254
            "64:ff9b:1::1",
            "2002:7f00:1::1", // 6to4 of 127.0.0.1
            "2002:a00:1::1",  // 6to4 of 10.0.0.1
            "100::1",
            "::2:3:4:5:6", // outside 2000::/3
        ];
        for ip in internal {
            assert!(is_internal(ip.parse().unwrap()), "{ip} should be internal");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.1.1",
            "223.255.255.254",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808", // NAT64 of 8.8.8.8
            "2002:808:808::1",  // 6to4 of 8.8.8.8
        ];
        for ip in public {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn schemes_follow_the_configuration() {
        assert_eq!(
            GitSchemes::parse("https,ssh,git").unwrap(),
            GitSchemes::DEFAULT
        );
        assert_eq!(
            GitSchemes::parse(" HTTPS , http,ssh,git ").unwrap(),
            GitSchemes::ALL
        );
        for bad in ["", ",", "ftp", "file", "https,gopher"] {
            assert!(GitSchemes::parse(bad).is_err(), "{bad:?}");
        }
        let https_only = SourcePolicy {
            schemes: GitSchemes::parse("https").unwrap(),
            ..SourcePolicy::STRICT
        };
        assert!(parse_git_url("https://example.com/org/repo.git", https_only).is_ok());
        for refused in [
            "git://example.com/repo",
            "ssh://git@example.com/org/repo.git",
            "git@example.com:org/repo.git",
        ] {
            let err = parse_git_url(refused, https_only).unwrap_err();
            assert!(
                err.contains("CERTUS_ASSURANCE_GIT_SCHEMES"),
                "{refused}: {err}"
            );
            assert!(err.contains("use https"), "{refused}: {err}");
        }
        // Plain http needs both the scheme and private networks.
        let url = "http://git.internal/org/repo.git";
        assert!(parse_git_url(url, STRICT).unwrap_err().contains("https"));
        let http_public = SourcePolicy {
            schemes: GitSchemes::ALL,
            ..SourcePolicy::STRICT
        };
        assert!(parse_git_url(url, http_public).is_err());
        let private_no_http = SourcePolicy {
            allow_private_networks: true,
            ..SourcePolicy::STRICT
        };
        assert!(parse_git_url(url, private_no_http).is_err());
        assert_eq!(
            parse_git_url(url, OPEN).unwrap().scheme,
            Some(GitScheme::Http)
        );
        // Local sources are switched separately, whatever the schemes.
        assert!(
            parse_git_url(
                "file:///srv/repo",
                SourcePolicy {
                    allow_local_sources: true,
                    ..SourcePolicy::STRICT
                }
            )
            .unwrap()
            .is_local
        );
    }

    #[test]
    fn literal_internal_addresses_are_refused_at_submit_naming_the_setting() {
        for url in [
            "git://127.0.0.1/repo",
            "https://[::ffff:127.0.0.1]/repo.git",
            "https://[fd00:ec2::254]/latest",
            "https://0.0.0.0/repo.git",
            "git@10.0.0.1:org/repo.git",
        ] {
            let err = parse_git_url(url, STRICT).unwrap_err();
            assert!(
                err.contains("CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS"),
                "{url}: {err}"
            );
        }
        // Names are not resolved at submit: a name that resolves to loopback passes here and
        // is refused where the clone connects.
        assert!(parse_git_url("https://vm.nip.io/org/repo.git", STRICT).is_ok());
    }

    #[test]
    fn every_spelling_of_an_internal_address_is_refused_at_submit_for_every_scheme() {
        for host in [
            "127.1",
            "0",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "0177.0.0.1",
            "127.0.0.1.",
            "localhost.",
            "LOCALHOST",
            "a.localhost.",
            "10.1",
            "169.254.169.254.",
        ] {
            for url in [
                format!("git://{host}/repo"),
                format!("ssh://git@{host}/org/repo.git"),
                format!("git@{host}:org/repo.git"),
                format!("https://{host}/org/repo.git"),
            ] {
                let err = parse_git_url(&url, STRICT)
                    .err()
                    .unwrap_or_else(|| panic!("{url} was accepted"));
                assert!(
                    err.contains("CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS"),
                    "{url}: {err}"
                );
            }
        }
        // Public addresses in the same spellings pass.
        for url in [
            "git://8.8.8.8/repo",
            "git://0x8080808/repo",
            "git@134744072:org/r.git",
        ] {
            assert!(parse_git_url(url, STRICT).is_ok(), "{url}");
        }
    }

    #[test]
    fn hosts_that_are_options_or_hide_another_host_are_refused() {
        for url in [
            "ssh://-oProxyCommand=x/repo",
            "git://-x/repo",
            "https://example.com\\@127.0.0.1/repo.git",
            "git://example.com\\@127.0.0.1/repo",
        ] {
            assert!(parse_git_url(url, SourcePolicy::OPEN).is_err(), "{url}");
        }
    }

    #[test]
    fn address_literals_read_as_resolvers_read_them() {
        let v4 = |s: &str| literal_ip(s).map(|ip| ip.to_string());
        assert_eq!(v4("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0").as_deref(), Some("0.0.0.0"));
        assert_eq!(v4("2130706433").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0x7f.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0177.0.0.01").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("10.0.258").as_deref(), Some("10.0.1.2"));
        assert_eq!(v4("[::1]").as_deref(), Some("::1"));
        assert_eq!(v4("256.1.1.1"), None);
        assert_eq!(v4("1.2.3.4.5"), None);
        assert_eq!(v4("08.1.1.1"), None);
        assert_eq!(v4("github.com"), None);
        assert_eq!(v4("deadbeef.com"), None);
    }
}
