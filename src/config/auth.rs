//! Who may call the service: API tokens, who may read metrics, the hosts and origins accepted
//! while authentication is off, and the per-client rate limit. The token file itself is read by
//! `App::build` (through `crate::auth::TokenSet`), not here.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::{positive, Secret};

/// Who may read `/metrics` and `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricsAuth {
    /// Anyone who can reach the port (the default; Prometheus scrapes without credentials).
    Open,
    /// Only a bearer token with role `metrics` or `admin`.
    Token,
}

/// Per-client request rate limit: a token bucket per client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added to a client's bucket per second.
    pub per_second: f64,
    /// Bucket size: requests a client may send at once after being idle.
    pub burst: u32,
}

#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// API tokens file (TOML, or JSON when the name ends in `.json`): each token's `name`, `role`
    /// (read, submit, admin, metrics), `workspaces` (a list or "*") and `sha256` of its secret
    /// [default: none; without any token, authentication is off].
    #[arg(long, value_name = "FILE")]
    pub api_tokens_file: Option<PathBuf>,

    /// SHA-256 (64 hex digits) of one admin token valid for every workspace, named `admin`
    /// (make it with `certus-assurance hash-token`).
    #[arg(long, value_name = "HEX", hide_env_values = true)]
    pub admin_token_sha256: Option<Secret>,

    /// Who may read `/metrics` and `/stats`: `open`, or `token` (role metrics or admin).
    #[arg(long, value_enum, default_value = "open", value_name = "MODE")]
    pub metrics_auth: MetricsAuth,

    /// Host names (with or without a port) the service answers to while authentication is off,
    /// comma-separated; a request with another `Host` gets 421. Default: when listening on
    /// loopback, loopback names and addresses only (a web page that rebinds its own name to
    /// 127.0.0.1 cannot reach the service); beyond loopback, any host. `*`: any host.
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub allowed_hosts: Vec<String>,

    /// Web origins (`scheme://host[:port]`) whose pages may send state-changing requests and open
    /// event streams while authentication is off, comma-separated. Default: none besides the
    /// service's own origin; a POST or WebSocket with another `Origin` gets 403.
    #[arg(long, value_delimiter = ',', value_name = "ORIGINS")]
    pub allowed_origins: Vec<String>,

    /// Requests per second each client (token name, or IP address without a token) may send
    /// on average; over it, 429 with Retry-After (0: no limit; fractions allowed).
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub rate_limit_per_second: f64,

    /// Requests a client may send in a burst on top of the rate.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub rate_limit_burst: u32,
}

/// The host names a loopback listener answers to by default.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl AuthConfig {
    /// Checks the values and normalises the host and origin lists; `listen_addr` decides the
    /// default host list.
    pub(super) fn check(&mut self, listen_addr: SocketAddr) -> anyhow::Result<()> {
        if self.allowed_hosts.iter().any(|h| h.trim() == "*") {
            self.allowed_hosts = vec!["*".to_string()];
        } else if !self.allowed_hosts.is_empty() {
            let mut hosts = Vec::new();
            for h in &self.allowed_hosts {
                let h = h.trim().to_ascii_lowercase();
                if h.is_empty() || h.contains(['/', ' ', '@']) {
                    bail!("CERTUS_ASSURANCE_ALLOWED_HOSTS: `{h}` is not a host name (e.g. certus.example.com or certus.example.com:8056)");
                }
                hosts.push(h);
            }
            self.allowed_hosts = hosts;
        } else if listen_addr.ip().is_loopback() {
            self.allowed_hosts = LOOPBACK_HOSTS.map(String::from).to_vec();
        } else {
            self.allowed_hosts = vec!["*".to_string()];
        }
        let mut origins = Vec::new();
        for o in &self.allowed_origins {
            let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
            let valid = url::Url::parse(&o)
                .ok()
                .is_some_and(|u| u.host_str().is_some() && u.path() == "/");
            if !valid {
                bail!("CERTUS_ASSURANCE_ALLOWED_ORIGINS: `{o}` is not an origin (scheme://host[:port], e.g. https://ci.example.com)");
            }
            origins.push(o);
        }
        self.allowed_origins = origins;
        if self.metrics_auth == MetricsAuth::Token && !self.tokens_configured() {
            bail!(
                "CERTUS_ASSURANCE_METRICS_AUTH=token needs tokens: set CERTUS_ASSURANCE_API_TOKENS_FILE \
                 (with a token of role metrics or admin) or CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256"
            );
        }
        if !self.rate_limit_per_second.is_finite() || self.rate_limit_per_second < 0.0 {
            bail!("CERTUS_ASSURANCE_RATE_LIMIT_PER_SECOND must be 0 (off) or a positive number of requests per second");
        }
        if self.rate_limit_per_second > 0.0 {
            positive("RATE_LIMIT_BURST", u64::from(self.rate_limit_burst))?;
        }
        Ok(())
    }

    /// Whether a token source is set (the tokens themselves are loaded at start-up).
    pub fn tokens_configured(&self) -> bool {
        self.api_tokens_file.is_some()
            || self
                .admin_token_sha256
                .as_ref()
                .is_some_and(|d| !d.expose().trim().is_empty())
    }

    /// `Host` values accepted while authentication is off (lower case); `None`: any host.
    pub fn allowed_hosts(&self) -> Option<&[String]> {
        (!self.allowed_hosts.iter().any(|h| h == "*")).then_some(self.allowed_hosts.as_slice())
    }

    /// The per-client request rate limit (`None`: off).
    pub fn rate_limit(&self) -> Option<RateLimit> {
        (self.rate_limit_per_second > 0.0).then_some(RateLimit {
            per_second: self.rate_limit_per_second,
            burst: self.rate_limit_burst,
        })
    }
}
