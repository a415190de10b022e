//! Where scans read their source: git clones (limits, allowed schemes and hosts, the ssh key) and
//! the directories `directory` scans may read. [`SourcePolicy`] and [`GitSchemes`] are the plain
//! data the source checks of `pipeline::source` apply.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::{positive, seconds, Secret};

#[derive(Debug, Clone, Args)]
pub struct SourceConfig {
    /// Time limit of one clone, in seconds (within the scan's own limit).
    #[arg(long = "clone-timeout-seconds", default_value = "300", value_parser = seconds, value_name = "SECONDS")]
    pub clone_timeout: Duration,

    /// Maximum bytes a clone may transfer before it is stopped.
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024, value_name = "BYTES")]
    pub clone_max_bytes: u64,

    /// Seconds a git server may stay silent (connecting or mid-transfer) before the clone
    /// attempt fails; process-wide.
    #[arg(long = "clone-stall-timeout-seconds", default_value = "20", value_parser = seconds, value_name = "SECONDS")]
    pub clone_stall_timeout: Duration,

    /// Allow git hosts on loopback, private and link-local addresses (and plain http:// URLs,
    /// which internal git servers often use).
    #[arg(long, default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub allow_private_networks: bool,

    /// Allow `file://` git URLs and local repository paths.
    #[arg(long, default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub allow_local_sources: bool,

    /// Network schemes allowed in `git_url`, comma-separated: https, ssh, git, http (plain http
    /// also needs CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true).
    #[arg(long, default_value = "https,ssh,git", value_parser = GitSchemes::parse, value_name = "LIST")]
    pub git_schemes: GitSchemes,

    /// Private key file used for `ssh://` and `user@host:path` git URLs [default: the ssh agent].
    #[arg(long, value_name = "FILE")]
    pub git_ssh_key_file: Option<PathBuf>,

    /// Directories that `directory` scans may read, comma-separated (none: directory scans are
    /// refused). Symbolic links are resolved before a requested path is checked against them.
    #[arg(long, value_delimiter = ',', value_name = "DIRS")]
    pub source_roots: Vec<PathBuf>,

    /// Keys that seal the credentials of a `git_url` for the store, one per line:
    /// `<key-id> <base64 of 32 random bytes>`; the first seals, every one opens. Replicas with the
    /// same keys can each run any scan [default: none; credentials stay in the memory of the
    /// replica that accepted the scan, which alone runs it].
    #[arg(long, value_name = "PATH")]
    pub credential_keys_file: Option<PathBuf>,

    /// The credential keys themselves, in the format of CREDENTIAL_KEYS_FILE (for a secret
    /// passed as a variable); set one of the two.
    #[arg(long, value_name = "KEYS", hide_env_values = true)]
    pub credential_keys: Option<Secret>,
}

impl SourceConfig {
    /// Checks the limits and the key file, and resolves the source roots to canonical
    /// directories.
    pub(super) fn check(&mut self) -> anyhow::Result<()> {
        positive("CLONE_TIMEOUT_SECONDS", self.clone_timeout.as_secs())?;
        positive("CLONE_MAX_BYTES", self.clone_max_bytes)?;
        positive(
            "CLONE_STALL_TIMEOUT_SECONDS",
            self.clone_stall_timeout.as_secs(),
        )?;
        if let Some(key) = &self.git_ssh_key_file {
            if !key.is_file() {
                bail!(
                    "CERTUS_ASSURANCE_GIT_SSH_KEY_FILE: {} is not a file",
                    key.display()
                );
            }
        }
        if let Some(file) = &self.credential_keys_file {
            if self.credential_keys.is_some() {
                bail!("CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE and CERTUS_ASSURANCE_CREDENTIAL_KEYS are both set; set one of them");
            }
            if !file.is_file() {
                bail!(
                    "CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE: {} is not a file",
                    file.display()
                );
            }
        }
        if self.git_schemes.http && !self.allow_private_networks {
            bail!("CERTUS_ASSURANCE_GIT_SCHEMES: http needs CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true (plain http connections cannot be checked when they connect, so they are only for internal git servers)");
        }
        let mut roots = Vec::new();
        for root in &self.source_roots {
            if root.as_os_str().is_empty() {
                continue;
            }
            let real = root
                .canonicalize()
                .ok()
                .filter(|p| p.is_dir())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "CERTUS_ASSURANCE_SOURCE_ROOTS: {} is not an existing directory",
                        root.display()
                    )
                })?;
            roots.push(real);
        }
        self.source_roots = roots;
        Ok(())
    }

    /// What git sources are allowed (submit-time checks and clones).
    pub fn policy(&self) -> SourcePolicy {
        SourcePolicy {
            allow_private_networks: self.allow_private_networks,
            allow_local_sources: self.allow_local_sources,
            schemes: self.git_schemes,
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        super::defaults_of()
    }
}

/// What the configuration allows for git sources.
#[derive(Debug, Clone, Copy)]
pub struct SourcePolicy {
    /// Hosts on loopback, private, link-local or otherwise internal addresses are allowed.
    pub allow_private_networks: bool,
    /// `file://` URLs and local paths are allowed.
    pub allow_local_sources: bool,
    /// Network schemes allowed (`CERTUS_ASSURANCE_GIT_SCHEMES`).
    pub schemes: GitSchemes,
}

impl SourcePolicy {
    /// The defaults: public hosts only, no local sources, https, ssh and git.
    pub const STRICT: SourcePolicy = SourcePolicy {
        allow_private_networks: false,
        allow_local_sources: false,
        schemes: GitSchemes::DEFAULT,
    };
    /// Everything allowed (the local `scan` command, which runs as the user who calls it).
    pub const OPEN: SourcePolicy = SourcePolicy {
        allow_private_networks: true,
        allow_local_sources: true,
        schemes: GitSchemes::ALL,
    };
}

impl Default for SourcePolicy {
    fn default() -> Self {
        SourcePolicy::STRICT
    }
}

/// The set of allowed network schemes (`pipeline::source` says which scheme a URL has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GitSchemes {
    pub https: bool,
    pub http: bool,
    pub ssh: bool,
    pub git: bool,
}

impl GitSchemes {
    /// `https,ssh,git`.
    pub const DEFAULT: GitSchemes = GitSchemes {
        https: true,
        http: false,
        ssh: true,
        git: true,
    };
    pub const ALL: GitSchemes = GitSchemes {
        https: true,
        http: true,
        ssh: true,
        git: true,
    };
    const NONE: GitSchemes = GitSchemes {
        https: false,
        http: false,
        ssh: false,
        git: false,
    };

    /// Parses a comma-separated list such as `https,ssh`. `file` is not a value: local sources
    /// are switched by `CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES`.
    pub fn parse(list: &str) -> Result<GitSchemes, String> {
        let mut set = GitSchemes::NONE;
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "https" => set.https = true,
                "http" => set.http = true,
                "ssh" => set.ssh = true,
                "git" => set.git = true,
                "file" => return Err("`file` is not a git scheme setting; local sources are enabled by CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES=true".into()),
                other => return Err(format!("unknown git scheme `{other}`; use a comma-separated list of https, ssh, git and http")),
            }
        }
        if set == GitSchemes::NONE {
            return Err("at least one git scheme is needed (https, ssh, git or http)".into());
        }
        Ok(set)
    }
}
