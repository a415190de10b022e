//! Turning the environment into validated, typed settings. This is the only module that reads
//! environment variables: every setting is a `CERTUS_ASSURANCE_*` variable (the earlier service's
//! names are kept where they exist) or the matching command-line flag, documented in `--help` and
//! in docs/configuration.md. A bad value stops start-up with the variable's name in the message.
//!
//! One file per concern. Each concern is one struct that is both the clap arguments (flattened
//! into [`Config`]) and the validated section the module that owns the concern receives: a
//! setting is declared once, as a field with its doc (the `--help` text), its flag, its variable
//! and its default. [`Config::defaults`] reads the same declarations without the environment.
//! The command line around it (subcommands, `--help` wording) lives in `crate::cli`.
//!
//! This module imports nothing of the crate: configuration is usable from anywhere. Files named
//! by settings (token files, the signing key) are read by `App::build`, not here.
//!
//! Adding a setting: add one documented field to the section of its concern, with
//! `#[arg(long, default_value = "...")]`. Its doc comment is the `--help` text; its variable,
//! `CERTUS_ASSURANCE_` and the flag in upper case, is given to every setting by [`Config`]. A
//! `Duration` takes a `value_parser` such as `seconds` and `long = "<name>-seconds"`; an
//! `Option<T>` without a default is a setting that may stay unset. Add any rule it must satisfy
//! to that section's `check`, and its row to docs/configuration.md (a test compares the table
//! with the declarations). The owner of the concern reads `config.<section>.<field>`.

mod archive;
mod artifacts;
mod auth;
mod queue;
mod retention;
mod scanning;
mod server;
mod source;
mod store;
mod telemetry;
mod upload;

pub use archive::ArchiveConfig;
pub use artifacts::{ArtifactBackend, ArtifactConfig};
pub use auth::{AuthConfig, MetricsAuth, RateLimit};
pub use queue::{QueueConfig, RecoverRunning, MAX_SCAN_TIMEOUT_SECONDS};
pub use retention::RetentionConfig;
pub use scanning::ScanningConfig;
pub use server::{ConnectionLimits, ServerConfig};
pub use source::{GitSchemes, SourceConfig, SourcePolicy};
pub use store::{StoreConfig, StoreLocation};
pub use telemetry::{LogFormat, OtlpExport, OtlpProtocol, TelemetryConfig};
pub use upload::{UploadConfig, S3_MAX_SINGLE_OBJECT_BYTES, S3_MIN_PART_BYTES};

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, FromArgMatches};

/// Every setting of the service, one section per concern. Parsed by the command line
/// (`crate::cli::Cli` flattens it), checked by [`Config::validate`], or made from the defaults by
/// [`Config::defaults`] and [`Config::for_data_dir`] (tests and benches).
#[derive(Debug, Clone, Args)]
#[command(mut_args = with_variable)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub store: StoreConfig,
    #[command(flatten)]
    pub queue: QueueConfig,
    #[command(flatten)]
    pub source: SourceConfig,
    #[command(flatten)]
    pub archive: ArchiveConfig,
    #[command(flatten)]
    pub retention: RetentionConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub scanning: ScanningConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    #[command(flatten)]
    pub upload: UploadConfig,
    #[command(flatten)]
    pub artifacts: ArtifactConfig,
}

/// The prefix of every setting's environment variable.
pub const VARIABLE_PREFIX: &str = "CERTUS_ASSURANCE_";

/// Gives a setting its environment variable, the prefix and the flag in upper case with `_` for
/// `-` (`--max-workers`: `CERTUS_ASSURANCE_MAX_WORKERS`), and accepts the flag after a
/// subcommand too. Applied to every setting of [`Config`], so a declaration names neither.
fn with_variable(arg: clap::Arg) -> clap::Arg {
    match arg.get_long() {
        Some(long) if arg.get_env().is_none() => {
            let name = variable_name(long);
            arg.env(name).global(true)
        }
        _ => arg,
    }
}

/// `CERTUS_ASSURANCE_<FLAG>`, made once per flag (clap keeps variable names as `&'static str`).
fn variable_name(long: &str) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeMap<String, &'static str>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    names.entry(long.to_string()).or_insert_with(|| {
        let name = format!("{VARIABLE_PREFIX}{}", long.replace('-', "_").to_uppercase());
        Box::leak(name.into_boxed_str())
    })
}

/// A variable passed through unchanged to external scanners (`PATH` and pyenv's variables).
/// This module is the only one that reads the environment, so the tool runner asks here.
pub fn passthrough_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}

impl Config {
    /// Checks every section (and the rules between sections), naming the offending variable in
    /// every error, and fills in the defaults that depend on other settings.
    pub fn validate(mut self) -> anyhow::Result<Config> {
        self.server.check()?;
        self.store.check()?;
        self.queue.check()?;
        self.source.check()?;
        self.archive.check()?;
        self.retention.check()?;
        self.auth.check(self.server.listen_addr)?;
        self.scanning.check()?;
        self.upload.check()?;
        self.artifacts.check()?;
        if self.queue.stream_ping_interval >= self.server.http_idle_timeout {
            bail!(
                "CERTUS_ASSURANCE_STREAM_PING_INTERVAL_SECONDS ({}) must be less than \
                 CERTUS_ASSURANCE_HTTP_IDLE_TIMEOUT_SECONDS ({}): pings are what keeps a quiet \
                 stream's connection from being closed as idle",
                self.queue.stream_ping_interval.as_secs(),
                self.server.http_idle_timeout.as_secs()
            );
        }
        if self.upload.trust_timeout >= self.server.request_timeout {
            bail!(
                "CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS ({}) must be less than \
                 CERTUS_ASSURANCE_REQUEST_TIMEOUT_SECONDS ({}), since upload-request waits for \
                 Trust's answer",
                self.upload.trust_timeout.as_secs(),
                self.server.request_timeout.as_secs()
            );
        }
        Ok(self)
    }

    /// Every default, ignoring the environment and the command line (not yet validated).
    pub fn defaults() -> Config {
        defaults_of::<Config>()
    }

    /// Validated defaults for a service whose state lives under `data_dir` (tests and benches).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let mut config = Config::defaults();
        config.server.data_dir = data_dir.into();
        config.validate().expect("the defaults are valid")
    }

    /// Directory of temporary scan workspaces (cleared at start-up).
    pub fn work_dir(&self) -> PathBuf {
        self.server.data_dir.join("work")
    }

    /// Directory where `upload-archive` stores archives until they are scanned.
    pub fn upload_dir(&self) -> PathBuf {
        self.server.data_dir.join("uploads")
    }

    /// Root of per-scan artifact bundles (`<artifact_root>/<test_id>/`).
    pub fn artifact_root(&self) -> PathBuf {
        self.server
            .artifact_root
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("artifacts"))
    }

    /// Where scans are stored: the URL given, else the SQLite file under the data directory.
    pub fn store_location(&self) -> StoreLocation {
        self.store.database_url.clone().unwrap_or_else(|| {
            StoreLocation::Sqlite(self.server.data_dir.join("certus-assurance.db"))
        })
    }
}

/// The defaults of a group of settings: its declarations parsed from an empty command line with
/// every environment variable ignored.
pub fn defaults_of<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every setting has a default or is optional");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

/// A setting that `0` turns off: `None` when off. (A type alias, so that the command line reads
/// the whole value through the setting's parser instead of treating it as an optional flag.)
pub type ZeroIsOff<T> = Option<T>;

/// Value parser: whole seconds.
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("{e} (a whole number of seconds)"))
}

/// Value parser: whole seconds, `0` for off.
pub(crate) fn seconds_or_off(text: &str) -> Result<ZeroIsOff<Duration>, String> {
    Ok(Some(seconds(text)?).filter(|d| !d.is_zero()))
}

/// Value parser: whole hours, `0` for off.
pub(crate) fn hours_or_off(text: &str) -> Result<ZeroIsOff<Duration>, String> {
    let hours = text
        .parse::<u64>()
        .map_err(|e| format!("{e} (a whole number of hours)"))?;
    Ok((hours > 0).then(|| Duration::from_secs(hours.saturating_mul(3600))))
}

/// Value parser: a count, `0` for off.
pub(crate) fn count_or_off(text: &str) -> Result<ZeroIsOff<u64>, String> {
    let n = text.parse::<u64>().map_err(|e| e.to_string())?;
    Ok((n > 0).then_some(n))
}

/// `CERTUS_ASSURANCE_<name> must be greater than 0` unless `value` is.
pub(crate) fn positive(name: &str, value: u64) -> anyhow::Result<()> {
    if value == 0 {
        bail!("CERTUS_ASSURANCE_{name} must be greater than 0");
    }
    Ok(())
}

/// A secret setting (token, key): never printed by `Debug`, only read through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults with `change` applied, validated.
    fn with(change: impl FnOnce(&mut Config)) -> anyhow::Result<Config> {
        let mut config = Config::defaults();
        change(&mut config);
        config.validate()
    }

    /// `change` makes the configuration invalid, and the error names `var`.
    fn bad(change: impl FnOnce(&mut Config), var: &str) {
        let err = format!("{:#}", with(change).unwrap_err());
        assert!(err.contains(var), "{var}: {err}");
    }

    #[test]
    fn defaults_validate() {
        let config = Config::for_data_dir("/tmp/x");
        assert_eq!(config.queue.max_workers, 2);
        assert_eq!(config.queue.scan_timeout, Duration::from_secs(600));
        assert_eq!(config.server.listen_addr.port(), 8056);
        assert_eq!(config.artifact_root(), PathBuf::from("/tmp/x/artifacts"));
        assert_eq!(
            config.store_location(),
            StoreLocation::Sqlite("/tmp/x/certus-assurance.db".into())
        );
        assert!(config.store.replica_id.is_some());
        assert_eq!(config.retention.max_age, None);
        assert_eq!(
            config.scanning.osv_max_age,
            Some(Duration::from_secs(168 * 3600))
        );
    }

    #[test]
    fn one_default_per_setting_whatever_asks_for_it() {
        // The archive limits a local pipeline uses are the service's.
        assert_eq!(
            ArchiveConfig::default().max_extracted_bytes,
            Config::defaults().archive.max_extracted_bytes
        );
        assert_eq!(ArchiveConfig::default().max_extracted_bytes, 2 << 30);
        assert_eq!(SourceConfig::default().clone_max_bytes, 2 << 30);
    }

    #[test]
    fn bad_values_name_the_variable() {
        bad(|c| c.queue.max_queue = 0, "CERTUS_ASSURANCE_MAX_QUEUE");
        bad(
            |c| c.queue.max_workers = 257,
            "CERTUS_ASSURANCE_MAX_WORKERS",
        );
        bad(
            |c| c.queue.scan_timeout = Duration::from_secs(MAX_SCAN_TIMEOUT_SECONDS + 1),
            "CERTUS_ASSURANCE_SCAN_TIMEOUT_SECONDS",
        );
        bad(
            |c| c.server.max_body_bytes = 10,
            "CERTUS_ASSURANCE_MAX_BODY_BYTES",
        );
        bad(
            |c| c.store.max_attempts = 0,
            "CERTUS_ASSURANCE_MAX_ATTEMPTS",
        );
        bad(
            |c| c.retention.interval = Duration::ZERO,
            "CERTUS_ASSURANCE_RETENTION_INTERVAL_SECONDS",
        );
    }

    #[test]
    fn upload_settings_are_checked_and_name_their_variable() {
        bad(
            |c| c.upload.enabled = true,
            "CERTUS_ASSURANCE_TRUST_BASE_URL",
        );
        bad(
            |c| c.upload.trust_base_url = Some("ftp://trust".into()),
            "CERTUS_ASSURANCE_TRUST_BASE_URL",
        );
        bad(
            |c| c.upload.trust_base_url = Some("https://u:p@trust.example.com".into()),
            "CERTUS_ASSURANCE_TRUST_BASE_URL",
        );
        bad(
            |c| c.upload.trust_base_url = Some("https://trust.example.com/?access_token=x".into()),
            "CERTUS_ASSURANCE_TRUST_BASE_URL",
        );
        bad(
            |c| c.upload.s3_endpoint_url = Some("https://s3.example.com/#sig=x".into()),
            "CERTUS_ASSURANCE_S3_ENDPOINT_URL",
        );
        bad(
            |c| c.upload.trust_timeout = Duration::from_secs(30),
            "CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS",
        );
        bad(
            |c| c.upload.s3_endpoint_url = Some("localhost:9000".into()),
            "CERTUS_ASSURANCE_S3_ENDPOINT_URL",
        );
        bad(
            |c| c.upload.s3_access_key_id = Some("AKID".into()),
            "CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY",
        );
        bad(
            |c| c.upload.raw_bucket = "Raw_Bucket".into(),
            "CERTUS_ASSURANCE_DATALAKE_RAW_BUCKET",
        );
        bad(
            |c| c.upload.golden_prefix = "a/../b".into(),
            "CERTUS_ASSURANCE_DATALAKE_GOLDEN_PREFIX",
        );
        bad(
            |c| c.upload.multipart_threshold = 1024,
            "CERTUS_ASSURANCE_S3_MULTIPART_THRESHOLD_BYTES",
        );
        bad(
            |c| c.upload.s3_max_attempts = 0,
            "CERTUS_ASSURANCE_S3_MAX_ATTEMPTS",
        );
        bad(
            |c| c.upload.signing_key_file = Some("/nonexistent/key.pem".into()),
            "CERTUS_ASSURANCE_SIGNING_KEY_FILE",
        );
        bad(
            |c| c.source.git_schemes = GitSchemes::ALL,
            "CERTUS_ASSURANCE_GIT_SCHEMES",
        );

        let policy = with(|c| {
            c.source.git_schemes = GitSchemes::parse("https,http").unwrap();
            c.source.allow_private_networks = true;
        })
        .unwrap()
        .source
        .policy();
        assert!(policy.schemes.http && !policy.schemes.git);

        let config = with(|c| {
            c.upload.enabled = true;
            c.upload.trust_base_url = Some("https://trust.example.com/base".into());
            c.upload.trust_token = Some(Secret::new("tok-123"));
            c.upload.s3_access_key_id = Some("AKID".into());
            c.upload.s3_secret_access_key = Some(Secret::new("very-secret"));
            c.upload.raw_prefix = "/scans/raw/".into();
        })
        .unwrap();
        assert!(config.upload.enabled);
        assert_eq!(config.upload.raw_prefix, "scans/raw");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("tok-123") && !shown.contains("very-secret"),
            "{shown}"
        );
    }

    #[test]
    fn scanning_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        bad(
            |c| c.source.source_roots = vec![missing],
            "CERTUS_ASSURANCE_SOURCE_ROOTS",
        );
        let nope = dir.path().join("nope");
        bad(
            |c| c.scanning.osv_db_dir = Some(nope),
            "CERTUS_ASSURANCE_OSV_DB_DIR",
        );
        bad(
            |c| c.archive.max_files = 0,
            "CERTUS_ASSURANCE_ARCHIVE_MAX_FILES",
        );

        let config = with(|c| c.source.source_roots = vec![dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            config.source.source_roots,
            vec![dir.path().canonicalize().unwrap()]
        );
    }

    #[test]
    fn without_tokens_the_default_bind_is_loopback_and_only_loopback_hosts_are_answered() {
        let config = Config::defaults().validate().unwrap();
        assert!(config.server.listen_addr.ip().is_loopback());
        assert!(!config.auth.tokens_configured());
        assert_eq!(
            config.auth.allowed_hosts(),
            Some(&["localhost".to_string(), "127.0.0.1".into(), "[::1]".into()][..])
        );
        // Beyond loopback, any host; `*` says so explicitly.
        let config = with(|c| c.server.listen_addr = "0.0.0.0:8056".parse().unwrap()).unwrap();
        assert_eq!(config.auth.allowed_hosts(), None);
        let config = with(|c| c.auth.allowed_hosts = vec!["*".into()]).unwrap();
        assert_eq!(config.auth.allowed_hosts(), None);
        let config = with(|c| c.auth.allowed_hosts = vec![" Certus.Example.com ".into()]).unwrap();
        assert_eq!(
            config.auth.allowed_hosts(),
            Some(&["certus.example.com".to_string()][..])
        );
    }

    #[test]
    fn fair_use_and_access_settings_are_checked() {
        bad(
            |c| c.auth.metrics_auth = MetricsAuth::Token,
            "CERTUS_ASSURANCE_METRICS_AUTH",
        );
        bad(|c| c.queue.max_streams = 0, "CERTUS_ASSURANCE_MAX_STREAMS");
        bad(
            |c| c.server.max_connections = 0,
            "CERTUS_ASSURANCE_MAX_CONNECTIONS",
        );
        bad(
            |c| c.server.http_header_read_timeout = Duration::ZERO,
            "CERTUS_ASSURANCE_HTTP_HEADER_READ_TIMEOUT_SECONDS",
        );
        bad(
            |c| c.queue.stream_ping_interval = Duration::from_secs(75),
            "CERTUS_ASSURANCE_STREAM_PING_INTERVAL_SECONDS",
        );
        bad(
            |c| c.auth.rate_limit_per_second = -1.0,
            "CERTUS_ASSURANCE_RATE_LIMIT_PER_SECOND",
        );
        bad(
            |c| {
                c.auth.rate_limit_per_second = 5.0;
                c.auth.rate_limit_burst = 0;
            },
            "CERTUS_ASSURANCE_RATE_LIMIT_BURST",
        );
        bad(
            |c| c.auth.allowed_origins = vec!["ci.example.com".into()],
            "CERTUS_ASSURANCE_ALLOWED_ORIGINS",
        );
        let config = with(|c| {
            c.auth.rate_limit_per_second = 0.5;
            c.auth.admin_token_sha256 = Some(Secret::new("ab".repeat(32)));
            c.auth.metrics_auth = MetricsAuth::Token;
        })
        .unwrap();
        assert_eq!(config.auth.rate_limit().unwrap().per_second, 0.5);
        assert!(config.auth.tokens_configured());
        let shown = format!("{config:?}");
        assert!(!shown.contains(&"ab".repeat(32)), "{shown}");
    }

    #[test]
    fn the_database_url_is_kept_out_of_debug_output() {
        let config = with(|c| {
            c.store.database_url = Some(StoreLocation::Postgres(
                "postgres://u:hunter2@db/scans".into(),
            ))
        })
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
