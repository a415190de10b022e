//! Turning the environment into validated, typed settings. This is the only module that reads
//! environment variables: every setting is a `CERTUS_ASSURANCE_*` variable (the earlier service's
//! names are kept where they exist) or the matching command-line flag, documented in `--help` and
//! in docs/configuration.md. A bad value stops start-up with the variable's name in the message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable, coloured when writing to a terminal.
    Pretty,
}

/// What happens at start-up to a scan that was RUNNING when the previous process died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecoverRunning {
    /// Mark it FAILED with `failure_reason = interrupted` (the default).
    Fail,
    /// Put it back in the queue to run again.
    Requeue,
}

/// Command line of the `certus-assurance` binary.
#[derive(Debug, Parser)]
#[command(
    name = "certus-assurance",
    version,
    about = "Certus Assurance security-scan service",
    long_about = "Certus Assurance security-scan service.\n\nWith no subcommand, `serve` runs. Every \
                  setting can be given as a flag or as the CERTUS_ASSURANCE_* environment variable \
                  shown next to it (see docs/configuration.md)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Scan a directory, archive or git URL once, without the server; exits 1 when the
    /// policy fails and 2 when the scan cannot run.
    Scan(crate::cli::ScanArgs),
}

/// Every setting of the service. Field docs are the `--help` text.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address and port to listen on.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_LISTEN_ADDR",
        default_value = "127.0.0.1:8056",
        value_name = "ADDR"
    )]
    pub listen_addr: SocketAddr,

    /// Directory for the SQLite database and temporary scan workspaces (created if missing).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_DATA_DIR",
        default_value = "./certus-assurance-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Directory where each scan's artifact bundle is written [default: <DATA_DIR>/artifacts].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_ARTIFACT_ROOT",
        value_name = "DIR"
    )]
    pub artifact_root: Option<PathBuf>,

    /// Job store URL; `sqlite://<path>` (default: <DATA_DIR>/certus-assurance.db).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Number of scans that run at once (0 pauses the queue: scans are accepted but not run).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_MAX_WORKERS",
        default_value_t = 2,
        value_name = "N"
    )]
    pub max_workers: usize,

    /// Maximum number of QUEUED scans; further submissions get 503 with Retry-After.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_MAX_QUEUE",
        default_value_t = 1000,
        value_name = "N"
    )]
    pub max_queue: usize,

    /// Default per-scan time limit in seconds (a request may ask for less or more, up to 24 h).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_SCAN_TIMEOUT_SECONDS",
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    pub scan_timeout_seconds: u64,

    /// Time limit of one clone, in seconds (within the scan's own limit).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_CLONE_TIMEOUT_SECONDS",
        default_value_t = 300,
        value_name = "SECONDS"
    )]
    pub clone_timeout_seconds: u64,

    /// Maximum bytes a clone may transfer before it is stopped.
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_CLONE_MAX_BYTES", default_value_t = 2 * 1024 * 1024 * 1024, value_name = "BYTES")]
    pub clone_max_bytes: u64,

    /// Allow git hosts on loopback, private and link-local addresses.
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub allow_private_networks: bool,

    /// Allow `file://` git URLs and local repository paths.
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub allow_local_sources: bool,

    /// Private key file used for `ssh://` and `user@host:path` git URLs [default: the ssh agent].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_GIT_SSH_KEY_FILE",
        value_name = "FILE"
    )]
    pub git_ssh_key_file: Option<PathBuf>,

    /// Seconds a shutdown waits for running scans before they are put back in the queue.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub shutdown_grace_seconds: u64,

    /// What to do at start-up with scans left RUNNING by a process that died.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_RECOVER_RUNNING",
        value_enum,
        default_value = "fail",
        value_name = "POLICY"
    )]
    pub recover_running: RecoverRunning,

    /// Events kept per scan for late WebSocket subscribers (oldest log lines are dropped first).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_STREAM_HISTORY_LIMIT",
        default_value_t = 5000,
        value_name = "N"
    )]
    pub stream_history_limit: usize,

    /// Maximum request body size in bytes.
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_body_bytes: usize,

    /// Time limit for one HTTP request (not WebSocket streams), in seconds.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub request_timeout_seconds: u64,

    /// Log format: `json` or `pretty` [default: pretty on a terminal, json otherwise].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// Directories that `directory` scans may read, comma-separated (none: directory scans are
    /// refused). Symbolic links are resolved before a requested path is checked against them.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_SOURCE_ROOTS",
        value_delimiter = ',',
        value_name = "DIRS"
    )]
    pub source_roots: Vec<PathBuf>,

    /// Directory of OSV records (the osv.dev per-ecosystem exports, as JSON files or `all.zip`)
    /// the vulnerability scanner matches SBOM components against [default: none; the scanner
    /// reports itself skipped].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_OSV_DB_DIR",
        value_name = "DIR"
    )]
    pub osv_db_dir: Option<PathBuf>,

    /// ed25519 private key (PKCS#8 PEM, or a 32-byte seed as raw bytes, hex or base64) that
    /// signs each bundle's attestation as a DSSE envelope [default: unsigned statement].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_SIGNING_KEY_FILE",
        value_name = "FILE"
    )]
    pub signing_key_file: Option<PathBuf>,

    /// `PATH` on which external scanners (bandit, semgrep, ...) are looked up and run
    /// [default: the service's own PATH].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_TOOL_PATH",
        value_name = "DIRS"
    )]
    pub tool_path: Option<std::ffi::OsString>,

    /// Largest archive `upload-archive` accepts, in bytes.
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_ARCHIVE_MAX_BYTES", default_value_t = 512 * 1024 * 1024, value_name = "BYTES")]
    pub archive_max_bytes: u64,

    /// Largest total size an archive may unpack to, in bytes.
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_ARCHIVE_MAX_EXTRACTED_BYTES", default_value_t = 2 * 1024 * 1024 * 1024, value_name = "BYTES")]
    pub archive_max_extracted_bytes: u64,

    /// Largest number of entries (files, directories, links) an archive may hold.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_ARCHIVE_MAX_FILES",
        default_value_t = 100_000,
        value_name = "N"
    )]
    pub archive_max_files: u64,

    /// Log filter in `tracing` syntax, e.g. `info` or `certus_assurance=debug`.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_LOG_LEVEL",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log_level: String,
}

/// Validated settings the application runs with. Built from [`Settings`] by the binary, or
/// directly by tests.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; port 0 picks a free port (tests).
    pub listen_addr: SocketAddr,
    /// Holds the SQLite database and `work/` (temporary scan workspaces).
    pub data_dir: PathBuf,
    /// Root of per-scan artifact bundles (`<artifact_root>/<test_id>/`).
    pub artifact_root: PathBuf,
    /// Path of the SQLite database file.
    pub database_path: PathBuf,
    /// Concurrent scans; 0 accepts scans without running them.
    pub max_workers: usize,
    /// Bound of the QUEUED set.
    pub max_queue: usize,
    /// Default per-scan time limit.
    pub scan_timeout: Duration,
    /// Time limit of one clone.
    pub clone_timeout: Duration,
    /// Transfer limit of one clone.
    pub clone_max_bytes: u64,
    /// Git hosts on private addresses are allowed.
    pub allow_private_networks: bool,
    /// `file://` URLs and local paths are allowed as git sources.
    pub allow_local_sources: bool,
    /// Private key for ssh git URLs.
    pub git_ssh_key_file: Option<PathBuf>,
    /// How long shutdown waits for running scans.
    pub shutdown_grace: Duration,
    /// Start-up policy for scans left RUNNING.
    pub recover_running: RecoverRunning,
    /// Per-scan event history bound.
    pub stream_history_limit: usize,
    /// Request body size limit.
    pub max_body_bytes: usize,
    /// HTTP request time limit.
    pub request_timeout: Duration,
    /// Canonical directories `directory` scans may read (empty: directory scans refused).
    pub source_roots: Vec<PathBuf>,
    /// OSV database directory for the vulnerability scanner.
    pub osv_db_dir: Option<PathBuf>,
    /// Key that signs attestations.
    pub signing_key: Option<crate::pipeline::attestation::AttestationKey>,
    /// `PATH` for external scanners.
    pub tool_path: Option<std::ffi::OsString>,
    /// Upload size limit of `upload-archive`.
    pub archive_max_bytes: u64,
    /// Unpacked-size limit of an archive.
    pub archive_max_extracted_bytes: u64,
    /// Entry-count limit of an archive.
    pub archive_max_files: u64,
}

/// A variable passed through unchanged to external scanners (`PATH` and pyenv's variables).
/// This module is the only one that reads the environment, so the tool runner asks here.
pub fn passthrough_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}

/// Longest per-scan timeout a request may ask for.
pub const MAX_SCAN_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;

impl Config {
    /// Validates settings, naming the offending variable in every error.
    pub fn from_settings(s: &Settings) -> anyhow::Result<Config> {
        fn positive(name: &str, v: u64) -> anyhow::Result<u64> {
            if v == 0 {
                bail!("CERTUS_ASSURANCE_{name} must be greater than 0");
            }
            Ok(v)
        }
        if s.max_workers > 256 {
            bail!(
                "CERTUS_ASSURANCE_MAX_WORKERS must be at most 256 (got {})",
                s.max_workers
            );
        }
        positive("MAX_QUEUE", s.max_queue as u64)?;
        let scan_timeout = positive("SCAN_TIMEOUT_SECONDS", s.scan_timeout_seconds)?;
        if scan_timeout > MAX_SCAN_TIMEOUT_SECONDS {
            bail!(
                "CERTUS_ASSURANCE_SCAN_TIMEOUT_SECONDS must be at most {MAX_SCAN_TIMEOUT_SECONDS}"
            );
        }
        positive("CLONE_TIMEOUT_SECONDS", s.clone_timeout_seconds)?;
        positive("CLONE_MAX_BYTES", s.clone_max_bytes)?;
        positive("REQUEST_TIMEOUT_SECONDS", s.request_timeout_seconds)?;
        if s.stream_history_limit < 8 {
            bail!("CERTUS_ASSURANCE_STREAM_HISTORY_LIMIT must be at least 8");
        }
        if s.max_body_bytes < 1024 {
            bail!("CERTUS_ASSURANCE_MAX_BODY_BYTES must be at least 1024");
        }
        if let Some(key) = &s.git_ssh_key_file {
            if !key.is_file() {
                bail!(
                    "CERTUS_ASSURANCE_GIT_SSH_KEY_FILE: {} is not a readable file",
                    key.display()
                );
            }
        }
        let mut source_roots = Vec::new();
        for root in &s.source_roots {
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
            source_roots.push(real);
        }
        if let Some(dir) = &s.osv_db_dir {
            if !dir.is_dir() {
                bail!(
                    "CERTUS_ASSURANCE_OSV_DB_DIR: {} is not a directory",
                    dir.display()
                );
            }
        }
        let signing_key = match &s.signing_key_file {
            None => None,
            Some(path) => Some(
                crate::pipeline::attestation::AttestationKey::from_file(path).with_context(
                    || {
                        format!(
                            "CERTUS_ASSURANCE_SIGNING_KEY_FILE: {} is not a usable ed25519 key",
                            path.display()
                        )
                    },
                )?,
            ),
        };
        positive("ARCHIVE_MAX_BYTES", s.archive_max_bytes)?;
        positive("ARCHIVE_MAX_EXTRACTED_BYTES", s.archive_max_extracted_bytes)?;
        positive("ARCHIVE_MAX_FILES", s.archive_max_files)?;
        let database_path = match &s.database_url {
            None => s.data_dir.join("certus-assurance.db"),
            Some(url) => parse_database_url(url)?,
        };
        Ok(Config {
            listen_addr: s.listen_addr,
            data_dir: s.data_dir.clone(),
            artifact_root: s
                .artifact_root
                .clone()
                .unwrap_or_else(|| s.data_dir.join("artifacts")),
            database_path,
            max_workers: s.max_workers,
            max_queue: s.max_queue,
            scan_timeout: Duration::from_secs(scan_timeout),
            clone_timeout: Duration::from_secs(s.clone_timeout_seconds),
            clone_max_bytes: s.clone_max_bytes,
            allow_private_networks: s.allow_private_networks,
            allow_local_sources: s.allow_local_sources,
            git_ssh_key_file: s.git_ssh_key_file.clone(),
            shutdown_grace: Duration::from_secs(s.shutdown_grace_seconds),
            recover_running: s.recover_running,
            stream_history_limit: s.stream_history_limit,
            max_body_bytes: s.max_body_bytes,
            request_timeout: Duration::from_secs(s.request_timeout_seconds),
            source_roots,
            osv_db_dir: s.osv_db_dir.clone(),
            signing_key,
            tool_path: s.tool_path.clone().or_else(|| passthrough_env("PATH")),
            archive_max_bytes: s.archive_max_bytes,
            archive_max_extracted_bytes: s.archive_max_extracted_bytes,
            archive_max_files: s.archive_max_files,
        })
    }

    /// Defaults for a service whose state lives under `data_dir` (used by tests and benches).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let settings = Settings::parse_from_defaults();
        let mut config = Config::from_settings(&settings).expect("defaults are valid");
        let data_dir = data_dir.into();
        config.artifact_root = data_dir.join("artifacts");
        config.database_path = data_dir.join("certus-assurance.db");
        config.data_dir = data_dir;
        config
    }

    /// Directory of temporary scan workspaces (cleared at start-up).
    pub fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }

    /// Directory where `upload-archive` stores archives until they are scanned.
    pub fn upload_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
}

impl Settings {
    /// The defaults, ignoring the environment.
    fn parse_from_defaults() -> Settings {
        Settings {
            listen_addr: "127.0.0.1:8056".parse().expect("valid default"),
            data_dir: "./certus-assurance-data".into(),
            artifact_root: None,
            database_url: None,
            max_workers: 2,
            max_queue: 1000,
            scan_timeout_seconds: 600,
            clone_timeout_seconds: 300,
            clone_max_bytes: 2 * 1024 * 1024 * 1024,
            allow_private_networks: false,
            allow_local_sources: false,
            git_ssh_key_file: None,
            shutdown_grace_seconds: 30,
            recover_running: RecoverRunning::Fail,
            stream_history_limit: 5000,
            max_body_bytes: 1024 * 1024,
            request_timeout_seconds: 30,
            source_roots: vec![],
            osv_db_dir: None,
            signing_key_file: None,
            tool_path: None,
            archive_max_bytes: 512 * 1024 * 1024,
            archive_max_extracted_bytes: 2 * 1024 * 1024 * 1024,
            archive_max_files: 100_000,
            log_format: None,
            log_level: "info".into(),
        }
    }
}

fn parse_database_url(url: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            bail!("CERTUS_ASSURANCE_DATABASE_URL: `sqlite://` needs a file path, e.g. sqlite://./data/scans.db");
        }
        return Ok(PathBuf::from(path));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!(
            "CERTUS_ASSURANCE_DATABASE_URL: the PostgreSQL backend is not available in this build; \
             unset the variable to use the embedded SQLite store"
        );
    }
    Err(anyhow::anyhow!("unsupported scheme"))
        .context("CERTUS_ASSURANCE_DATABASE_URL must start with sqlite://")
}

/// Rewrites clap's "invalid value for '--max-workers <N>'" so that it also names the
/// environment variable, which is how most deployments set it.
pub fn explain_cli_error(err: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return err;
    }
    if let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) {
        let flag = arg
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_start_matches('-');
        if !flag.is_empty() {
            let var = format!("CERTUS_ASSURANCE_{}", flag.replace('-', "_").to_uppercase());
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let message = format!("{first} (set by {var} or --{flag})\n");
            return clap::Error::raw(err.kind(), message);
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let config = Config::for_data_dir("/tmp/x");
        assert_eq!(config.max_workers, 2);
        assert_eq!(config.scan_timeout, Duration::from_secs(600));
        assert_eq!(config.listen_addr.port(), 8056);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut s = Settings::parse_from_defaults();
        s.max_queue = 0;
        let err = Config::from_settings(&s).unwrap_err().to_string();
        assert!(err.contains("CERTUS_ASSURANCE_MAX_QUEUE"), "{err}");

        let mut s = Settings::parse_from_defaults();
        s.database_url = Some("mysql://x".into());
        let err = format!("{:#}", Config::from_settings(&s).unwrap_err());
        assert!(err.contains("CERTUS_ASSURANCE_DATABASE_URL"), "{err}");
    }

    #[test]
    fn scanning_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings::parse_from_defaults();
        s.source_roots = vec![dir.path().join("missing")];
        let err = format!("{:#}", Config::from_settings(&s).unwrap_err());
        assert!(err.contains("CERTUS_ASSURANCE_SOURCE_ROOTS"), "{err}");

        let mut s = Settings::parse_from_defaults();
        s.osv_db_dir = Some(dir.path().join("nope"));
        let err = format!("{:#}", Config::from_settings(&s).unwrap_err());
        assert!(err.contains("CERTUS_ASSURANCE_OSV_DB_DIR"), "{err}");

        let key = dir.path().join("key");
        std::fs::write(&key, "not a key").unwrap();
        let mut s = Settings::parse_from_defaults();
        s.signing_key_file = Some(key.clone());
        let err = format!("{:#}", Config::from_settings(&s).unwrap_err());
        assert!(err.contains("CERTUS_ASSURANCE_SIGNING_KEY_FILE"), "{err}");
        assert!(
            !err.contains("not a key"),
            "the key's content is not echoed: {err}"
        );

        std::fs::write(&key, "11".repeat(32)).unwrap();
        let mut s = Settings::parse_from_defaults();
        s.signing_key_file = Some(key);
        s.source_roots = vec![dir.path().to_path_buf()];
        let config = Config::from_settings(&s).unwrap();
        assert!(config.signing_key.is_some());
        assert_eq!(
            config.source_roots,
            vec![dir.path().canonicalize().unwrap()]
        );

        let mut s = Settings::parse_from_defaults();
        s.archive_max_files = 0;
        let err = Config::from_settings(&s).unwrap_err().to_string();
        assert!(err.contains("CERTUS_ASSURANCE_ARCHIVE_MAX_FILES"), "{err}");
    }

    #[test]
    fn cli_errors_name_the_variable() {
        let err = Cli::try_parse_from(["certus-assurance", "--max-workers", "lots"]).unwrap_err();
        let text = explain_cli_error(err).to_string();
        assert!(text.contains("CERTUS_ASSURANCE_MAX_WORKERS"), "{text}");
    }
}
