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
    /// Write a baseline file (the fingerprints of every finding of a scan's bundle) that later
    /// scans read to mark those findings suppressed.
    Baseline(crate::cli::BaselineArgs),
    /// Read an API token on standard input and print its SHA-256, the value to put in the
    /// token file's `sha256` field or in CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256.
    HashToken,
    /// Manage the offline OSV database (`osv sync` downloads and refreshes it).
    #[command(subcommand)]
    Osv(crate::pipeline::osv::sync::OsvCommand),
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

    /// Job store URL: `sqlite://<path>` (default: <DATA_DIR>/certus-assurance.db), or
    /// `postgres://user:password@host:5432/db` for several replicas sharing one queue.
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

    /// Seconds a git server may stay silent (connecting or mid-transfer) before the clone
    /// attempt fails; process-wide.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_CLONE_STALL_TIMEOUT_SECONDS",
        default_value_t = 20,
        value_name = "SECONDS"
    )]
    pub clone_stall_timeout_seconds: u64,

    /// Allow git hosts on loopback, private and link-local addresses (and plain http:// URLs,
    /// which internal git servers often use).
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub allow_private_networks: bool,

    /// Allow `file://` git URLs and local repository paths.
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub allow_local_sources: bool,

    /// Network schemes allowed in `git_url`, comma-separated: https, ssh, git, http (plain http
    /// also needs CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_GIT_SCHEMES",
        default_value = "https,ssh,git",
        value_name = "LIST"
    )]
    pub git_schemes: String,

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

    /// Most submissions accepted in one `POST /v1/security-scans/batch`.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_BATCH_MAX_ITEMS",
        default_value_t = 100,
        value_name = "N"
    )]
    pub batch_max_items: usize,

    /// Retention: delete finished scans (and their bundles) older than this many seconds; 0 keeps them.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_RETENTION_MAX_AGE_SECONDS",
        default_value_t = 0,
        value_name = "SECONDS"
    )]
    pub retention_max_age_seconds: u64,

    /// Retention: keep at most this many most recent scans; older finished ones are deleted; 0 keeps all.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_RETENTION_MAX_SCANS",
        default_value_t = 0,
        value_name = "N"
    )]
    pub retention_max_scans: u64,

    /// Seconds between retention passes.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_RETENTION_INTERVAL_SECONDS",
        default_value_t = 3600,
        value_name = "SECONDS"
    )]
    pub retention_interval_seconds: u64,

    /// Shared store: seconds a running scan's lease lasts before other replicas may reclaim it.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_LEASE_SECONDS",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub lease_seconds: u64,

    /// Shared store: runs of one scan (first run plus re-runs after a replica died) before it
    /// fails as `interrupted`.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_MAX_ATTEMPTS",
        default_value_t = 3,
        value_name = "N"
    )]
    pub max_attempts: u32,

    /// Shared store: seconds between passes that reclaim expired leases and refresh the
    /// cluster-wide gauges.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_RECONCILE_INTERVAL_SECONDS",
        default_value_t = 5,
        value_name = "SECONDS"
    )]
    pub reconcile_interval_seconds: u64,

    /// Shared store: this replica's identity as the owner of its scans [default: host-pid-random].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_REPLICA_ID",
        value_name = "ID"
    )]
    pub replica_id: Option<String>,

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

    /// API tokens file (TOML, or JSON when the name ends in `.json`): each token's `name`, `role`
    /// (read, submit, admin, metrics), `workspaces` (a list or "*") and `sha256` of its secret
    /// [default: none; without any token, authentication is off].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_API_TOKENS_FILE",
        value_name = "FILE"
    )]
    pub api_tokens_file: Option<PathBuf>,

    /// SHA-256 (64 hex digits) of one admin token valid for every workspace, named `admin`
    /// (make it with `certus-assurance hash-token`).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256",
        value_name = "HEX",
        hide_env_values = true
    )]
    pub admin_token_sha256: Option<Secret>,

    /// Who may read `/metrics` and `/stats`: `open`, or `token` (role metrics or admin).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_METRICS_AUTH",
        value_enum,
        default_value = "open",
        value_name = "MODE"
    )]
    pub metrics_auth: MetricsAuth,

    /// Host names (with or without a port) the service answers to while authentication is off,
    /// comma-separated; a request with another `Host` gets 421. Default: when listening on
    /// loopback, loopback names and addresses only (a web page that rebinds its own name to
    /// 127.0.0.1 cannot reach the service); beyond loopback, any host. `*`: any host.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOSTS"
    )]
    pub allowed_hosts: Vec<String>,

    /// Web origins (`scheme://host[:port]`) whose pages may send state-changing requests and open
    /// event streams while authentication is off, comma-separated. Default: none besides the
    /// service's own origin; a POST or WebSocket with another `Origin` gets 403.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub allowed_origins: Vec<String>,

    /// Most QUEUED plus RUNNING scans one workspace may have; further submissions into it get
    /// 429 with Retry-After (0: no limit).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_MAX_ACTIVE_PER_WORKSPACE",
        default_value_t = 0,
        value_name = "N"
    )]
    pub max_active_per_workspace: usize,

    /// Most WebSocket streams open at once; further connections get 503 before the upgrade.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_MAX_STREAMS",
        default_value_t = 1000,
        value_name = "N"
    )]
    pub max_streams: usize,

    /// Most WebSocket streams open at once from one client address (IPv6 by its /64); further
    /// connections from it get 429 before the upgrade (0: no limit).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_MAX_STREAMS_PER_CLIENT",
        default_value_t = 64,
        value_name = "N"
    )]
    pub max_streams_per_client: usize,

    /// Seconds a stream may go without an event and without a message from its client before
    /// it is closed (code 4408; the client reconnects and gets the history replayed).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_STREAM_IDLE_TIMEOUT_SECONDS",
        default_value_t = 300,
        value_name = "SECONDS"
    )]
    pub stream_idle_timeout_seconds: u64,

    /// Seconds between WebSocket pings on a stream; a stream whose client has not answered the
    /// previous ping with a pong by the next one is closed.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_STREAM_PING_INTERVAL_SECONDS",
        default_value_t = 20,
        value_name = "SECONDS"
    )]
    pub stream_ping_interval_seconds: u64,

    /// Most HTTP connections open at once; a further connection is answered 503 and closed.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Most HTTP connections open at once from one client address (IPv6 by its /64); a further
    /// connection from it is answered 429 and closed (0: no limit; behind a reverse proxy every
    /// connection comes from the proxy's address).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 256,
        value_name = "N"
    )]
    pub max_connections_per_client: usize,

    /// Seconds a client has to send the head of a request (line and headers): counted from the
    /// connection's opening, and from the first byte of each later request on a kept-alive
    /// connection. A connection that does not is closed.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_HTTP_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub http_header_read_timeout_seconds: u64,

    /// Seconds an HTTP connection may pass with no byte received or sent while no request is
    /// being handled (a kept-alive connection waiting for its next request, a response the
    /// client stopped reading, a silent WebSocket); it is then closed.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_HTTP_IDLE_TIMEOUT_SECONDS",
        default_value_t = 75,
        value_name = "SECONDS"
    )]
    pub http_idle_timeout_seconds: u64,

    /// Requests per second each client (token name, or IP address without a token) may send
    /// on average; over it, 429 with Retry-After (0: no limit; fractions allowed).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_RATE_LIMIT_PER_SECOND",
        default_value_t = 0.0,
        value_name = "RATE"
    )]
    pub rate_limit_per_second: f64,

    /// Requests a client may send in a burst on top of the rate.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_RATE_LIMIT_BURST",
        default_value_t = 20,
        value_name = "N"
    )]
    pub rate_limit_burst: u32,

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

    /// Base URL `osv sync` downloads `<URL>/<Ecosystem>/all.zip` from (osv.dev's export bucket,
    /// or a mirror with the same layout).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_OSV_SOURCE_URL",
        default_value = crate::pipeline::osv::sync::DEFAULT_SOURCE_URL,
        value_name = "URL"
    )]
    pub osv_source_url: String,

    /// Oldest OSV data, in hours, the vulnerability scanner accepts: older data (or no data for
    /// an ecosystem of the SBOM) makes its run incomplete, and `CertusAssuranceOsvDatabaseStale` fires
    /// (0: no limit).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_OSV_MAX_AGE_HOURS",
        default_value_t = 168,
        value_name = "HOURS"
    )]
    pub osv_max_age_hours: u64,

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

    /// Most bytes of uploaded archives one workspace may keep stored; 0: no quota.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_ARCHIVE_QUOTA_BYTES",
        default_value_t = 10 * 1024 * 1024 * 1024,
        value_name = "BYTES"
    )]
    pub archive_quota_bytes: u64,

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

    /// Upload settings (Trust and S3).
    #[command(flatten)]
    pub upload: UploadSettings,
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
    /// Path of the SQLite database file (used when `postgres_url` is `None`).
    pub database_path: PathBuf,
    /// PostgreSQL URL for the shared store of several replicas.
    pub postgres_url: Option<String>,
    /// Lease of a running scan on a shared store; renewed every third of it.
    pub lease: Duration,
    /// Runs of one scan before a replica death fails it as `interrupted`.
    pub max_attempts: u32,
    /// How often a replica on a shared store reclaims expired leases and re-reads the counts.
    pub reconcile_interval: Duration,
    /// Identity recorded as the owner of the scans this replica runs.
    pub replica_id: String,
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
    /// Silence from a git server that fails a clone attempt.
    pub clone_stall_timeout: Duration,
    /// Git hosts on private addresses are allowed.
    pub allow_private_networks: bool,
    /// `file://` URLs and local paths are allowed as git sources.
    pub allow_local_sources: bool,
    /// Network schemes allowed in git URLs.
    pub git_schemes: crate::pipeline::source::GitSchemes,
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
    /// Largest batch submission.
    pub batch_max_items: usize,
    /// Retention by age of finished scans (`None`: keep).
    pub retention_max_age: Option<Duration>,
    /// Retention by count of most recent scans (`None`: keep).
    pub retention_max_scans: Option<u64>,
    /// Interval between retention passes.
    pub retention_interval: Duration,
    /// HTTP request time limit.
    pub request_timeout: Duration,
    /// Upload workflow (Trust permission, then S3).
    pub upload: UploadConfig,
    /// Canonical directories `directory` scans may read (empty: directory scans refused).
    pub source_roots: Vec<PathBuf>,
    /// OSV database directory for the vulnerability scanner.
    pub osv_db_dir: Option<PathBuf>,
    /// Oldest OSV data the vulnerability scanner accepts (`None`: no limit).
    pub osv_max_age: Option<Duration>,
    /// Key that signs attestations.
    pub signing_key: Option<crate::pipeline::attestation::AttestationKey>,
    /// `PATH` for external scanners.
    pub tool_path: Option<std::ffi::OsString>,
    /// Upload size limit of `upload-archive`.
    pub archive_max_bytes: u64,
    /// Stored archive bytes a workspace may keep; `None`: no quota.
    pub archive_quota_bytes: Option<u64>,
    /// Unpacked-size limit of an archive.
    pub archive_max_extracted_bytes: u64,
    /// Entry-count limit of an archive.
    pub archive_max_files: u64,
    /// API tokens; `None` when authentication is off.
    pub api_tokens: Option<std::sync::Arc<crate::auth::TokenSet>>,
    /// Who may read `/metrics` and `/stats`.
    pub metrics_auth: MetricsAuth,
    /// `Host` values accepted while authentication is off (lower case); `None`: any host.
    pub allowed_hosts: Option<Vec<String>>,
    /// Web origins allowed to send POSTs and open streams while authentication is off.
    pub allowed_origins: Vec<String>,
    /// Cap of QUEUED plus RUNNING scans per workspace (0: none).
    pub max_active_per_workspace: usize,
    /// Cap of open WebSocket streams.
    pub max_streams: usize,
    /// Cap of open WebSocket streams per client address (0: none).
    pub max_streams_per_client: usize,
    /// A stream with no event and no client message for this long is closed.
    pub stream_idle_timeout: Duration,
    /// Interval of WebSocket pings; a stream without a pong by the next ping is closed.
    pub stream_ping_interval: Duration,
    /// HTTP connection caps and timeouts.
    pub connections: ConnectionLimits,
    /// Per-client request rate limit (`None`: off).
    pub rate_limit: Option<RateLimit>,
}

/// Caps and timeouts of HTTP connections (see `crate::api::connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client address (0: no limit).
    pub max_per_client: usize,
    /// Time to receive a request's head.
    pub header_read_timeout: Duration,
    /// Time without a byte either way while no request is being handled.
    pub idle_timeout: Duration,
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
        positive("CLONE_STALL_TIMEOUT_SECONDS", s.clone_stall_timeout_seconds)?;
        positive("REQUEST_TIMEOUT_SECONDS", s.request_timeout_seconds)?;
        positive("BATCH_MAX_ITEMS", s.batch_max_items as u64)?;
        positive("RETENTION_INTERVAL_SECONDS", s.retention_interval_seconds)?;
        if s.batch_max_items > 10_000 {
            bail!("CERTUS_ASSURANCE_BATCH_MAX_ITEMS must be at most 10000");
        }
        if s.stream_history_limit < 8 {
            bail!("CERTUS_ASSURANCE_STREAM_HISTORY_LIMIT must be at least 8");
        }
        if s.max_body_bytes < 1024 {
            bail!("CERTUS_ASSURANCE_MAX_BODY_BYTES must be at least 1024");
        }
        if let Some(key) = &s.git_ssh_key_file {
            if !key.is_file() {
                bail!(
                    "CERTUS_ASSURANCE_GIT_SSH_KEY_FILE: {} is not a file",
                    key.display()
                );
            }
        }
        let git_schemes = crate::pipeline::source::GitSchemes::parse(&s.git_schemes)
            .map_err(|e| anyhow::anyhow!("CERTUS_ASSURANCE_GIT_SCHEMES: {e}"))?;
        if git_schemes.http && !s.allow_private_networks {
            bail!("CERTUS_ASSURANCE_GIT_SCHEMES: http needs CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true (plain http connections cannot be checked when they connect, so they are only for internal git servers)");
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
        let signing_key = match &s.upload.signing_key_file {
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
        let upload = UploadConfig::from_settings(&s.upload, s.request_timeout_seconds)?;
        let (database_path, postgres_url) = match &s.database_url {
            None => (s.data_dir.join("certus-assurance.db"), None),
            Some(url) => match parse_database_url(url)? {
                StoreLocation::Sqlite(path) => (path, None),
                StoreLocation::Postgres(url) => (s.data_dir.join("certus-assurance.db"), Some(url)),
            },
        };
        let api_tokens = crate::auth::TokenSet::load(
            s.api_tokens_file.as_deref(),
            s.admin_token_sha256.as_ref().map(Secret::expose),
        )?
        .map(std::sync::Arc::new);
        let allowed_hosts = if s.allowed_hosts.iter().any(|h| h.trim() == "*") {
            None
        } else if !s.allowed_hosts.is_empty() {
            let mut hosts = Vec::new();
            for h in &s.allowed_hosts {
                let h = h.trim().to_ascii_lowercase();
                if h.is_empty() || h.contains(['/', ' ', '@']) {
                    bail!("CERTUS_ASSURANCE_ALLOWED_HOSTS: `{h}` is not a host name (e.g. certus.example.com or certus.example.com:8056)");
                }
                hosts.push(h);
            }
            Some(hosts)
        } else if s.listen_addr.ip().is_loopback() {
            Some(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "[::1]".to_string(),
            ])
        } else {
            None
        };
        let mut allowed_origins = Vec::new();
        for o in &s.allowed_origins {
            let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
            let valid = url::Url::parse(&o)
                .ok()
                .is_some_and(|u| u.host_str().is_some() && u.path() == "/");
            if !valid {
                bail!("CERTUS_ASSURANCE_ALLOWED_ORIGINS: `{o}` is not an origin (scheme://host[:port], e.g. https://ci.example.com)");
            }
            allowed_origins.push(o);
        }
        if s.metrics_auth == MetricsAuth::Token && api_tokens.is_none() {
            bail!(
                "CERTUS_ASSURANCE_METRICS_AUTH=token needs tokens: set CERTUS_ASSURANCE_API_TOKENS_FILE \
                 (with a token of role metrics or admin) or CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256"
            );
        }
        positive("MAX_STREAMS", s.max_streams as u64)?;
        positive("STREAM_IDLE_TIMEOUT_SECONDS", s.stream_idle_timeout_seconds)?;
        positive(
            "STREAM_PING_INTERVAL_SECONDS",
            s.stream_ping_interval_seconds,
        )?;
        positive("MAX_CONNECTIONS", s.max_connections as u64)?;
        positive(
            "HTTP_HEADER_READ_TIMEOUT_SECONDS",
            s.http_header_read_timeout_seconds,
        )?;
        positive("HTTP_IDLE_TIMEOUT_SECONDS", s.http_idle_timeout_seconds)?;
        if s.stream_ping_interval_seconds >= s.http_idle_timeout_seconds {
            bail!(
                "CERTUS_ASSURANCE_STREAM_PING_INTERVAL_SECONDS ({}) must be less than \
                 CERTUS_ASSURANCE_HTTP_IDLE_TIMEOUT_SECONDS ({}): pings are what keeps a quiet \
                 stream's connection from being closed as idle",
                s.stream_ping_interval_seconds,
                s.http_idle_timeout_seconds
            );
        }
        if !s.rate_limit_per_second.is_finite() || s.rate_limit_per_second < 0.0 {
            bail!("CERTUS_ASSURANCE_RATE_LIMIT_PER_SECOND must be 0 (off) or a positive number of requests per second");
        }
        let rate_limit = if s.rate_limit_per_second > 0.0 {
            positive("RATE_LIMIT_BURST", u64::from(s.rate_limit_burst))?;
            Some(RateLimit {
                per_second: s.rate_limit_per_second,
                burst: s.rate_limit_burst,
            })
        } else {
            None
        };
        positive("LEASE_SECONDS", s.lease_seconds)?;
        positive("MAX_ATTEMPTS", s.max_attempts as u64)?;
        positive("RECONCILE_INTERVAL_SECONDS", s.reconcile_interval_seconds)?;
        Ok(Config {
            listen_addr: s.listen_addr,
            data_dir: s.data_dir.clone(),
            artifact_root: s
                .artifact_root
                .clone()
                .unwrap_or_else(|| s.data_dir.join("artifacts")),
            database_path,
            postgres_url,
            lease: Duration::from_secs(s.lease_seconds),
            max_attempts: s.max_attempts,
            reconcile_interval: Duration::from_secs(s.reconcile_interval_seconds),
            replica_id: s.replica_id.clone().unwrap_or_else(default_replica_id),
            max_workers: s.max_workers,
            max_queue: s.max_queue,
            scan_timeout: Duration::from_secs(scan_timeout),
            clone_timeout: Duration::from_secs(s.clone_timeout_seconds),
            clone_max_bytes: s.clone_max_bytes,
            clone_stall_timeout: Duration::from_secs(s.clone_stall_timeout_seconds),
            allow_private_networks: s.allow_private_networks,
            allow_local_sources: s.allow_local_sources,
            git_schemes,
            git_ssh_key_file: s.git_ssh_key_file.clone(),
            shutdown_grace: Duration::from_secs(s.shutdown_grace_seconds),
            recover_running: s.recover_running,
            stream_history_limit: s.stream_history_limit,
            max_body_bytes: s.max_body_bytes,
            batch_max_items: s.batch_max_items,
            retention_max_age: (s.retention_max_age_seconds > 0)
                .then(|| Duration::from_secs(s.retention_max_age_seconds)),
            retention_max_scans: (s.retention_max_scans > 0).then_some(s.retention_max_scans),
            retention_interval: Duration::from_secs(s.retention_interval_seconds),
            request_timeout: Duration::from_secs(s.request_timeout_seconds),
            upload,
            source_roots,
            osv_db_dir: s.osv_db_dir.clone(),
            osv_max_age: (s.osv_max_age_hours > 0)
                .then(|| Duration::from_secs(s.osv_max_age_hours.saturating_mul(3600))),
            signing_key,
            tool_path: s.tool_path.clone().or_else(|| passthrough_env("PATH")),
            archive_max_bytes: s.archive_max_bytes,
            archive_quota_bytes: (s.archive_quota_bytes > 0).then_some(s.archive_quota_bytes),
            archive_max_extracted_bytes: s.archive_max_extracted_bytes,
            archive_max_files: s.archive_max_files,
            api_tokens,
            metrics_auth: s.metrics_auth,
            allowed_hosts,
            allowed_origins,
            max_active_per_workspace: s.max_active_per_workspace,
            max_streams: s.max_streams,
            max_streams_per_client: s.max_streams_per_client,
            stream_idle_timeout: Duration::from_secs(s.stream_idle_timeout_seconds),
            stream_ping_interval: Duration::from_secs(s.stream_ping_interval_seconds),
            connections: ConnectionLimits {
                max_connections: s.max_connections,
                max_per_client: s.max_connections_per_client,
                header_read_timeout: Duration::from_secs(s.http_header_read_timeout_seconds),
                idle_timeout: Duration::from_secs(s.http_idle_timeout_seconds),
            },
            rate_limit,
        })
    }

    /// Defaults for a service whose state lives under `data_dir` (used by tests and benches).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let settings = Settings::parse_from_defaults();
        let mut config = Config::from_settings(&settings).expect("defaults are valid");
        let data_dir = data_dir.into();
        config.artifact_root = data_dir.join("artifacts");
        config.database_path = data_dir.join("certus-assurance.db");
        config.postgres_url = None;
        config.data_dir = data_dir;
        config
    }

    /// What git sources are allowed (submit-time checks and clones).
    pub fn source_policy(&self) -> crate::pipeline::source::SourcePolicy {
        crate::pipeline::source::SourcePolicy {
            allow_private_networks: self.allow_private_networks,
            allow_local_sources: self.allow_local_sources,
            schemes: self.git_schemes,
        }
    }

    /// Directory of temporary scan workspaces (cleared at start-up).
    pub fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }

    /// Directory where `upload-archive` stores archives until they are scanned.
    pub fn upload_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }

    /// Whether requests must carry a bearer token.
    pub fn auth_enabled(&self) -> bool {
        self.api_tokens.is_some()
    }

    /// Whether the service listens beyond loopback with authentication off (logged as a warning
    /// at start-up: anyone who reaches the port may submit and read every workspace's scans).
    pub fn exposed_without_auth(&self) -> bool {
        !self.listen_addr.ip().is_loopback() && !self.auth_enabled()
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
            clone_stall_timeout_seconds: 20,
            allow_private_networks: false,
            allow_local_sources: false,
            git_schemes: "https,ssh,git".into(),
            git_ssh_key_file: None,
            shutdown_grace_seconds: 30,
            recover_running: RecoverRunning::Fail,
            stream_history_limit: 5000,
            max_body_bytes: 1024 * 1024,
            lease_seconds: 30,
            max_attempts: 3,
            reconcile_interval_seconds: 5,
            replica_id: None,
            batch_max_items: 100,
            retention_max_age_seconds: 0,
            retention_max_scans: 0,
            retention_interval_seconds: 3600,
            request_timeout_seconds: 30,
            source_roots: vec![],
            osv_db_dir: None,
            osv_source_url: crate::pipeline::osv::sync::DEFAULT_SOURCE_URL.into(),
            osv_max_age_hours: 168,
            tool_path: None,
            archive_max_bytes: 512 * 1024 * 1024,
            archive_quota_bytes: 10 * 1024 * 1024 * 1024,
            archive_max_extracted_bytes: 2 * 1024 * 1024 * 1024,
            archive_max_files: 100_000,
            api_tokens_file: None,
            admin_token_sha256: None,
            metrics_auth: MetricsAuth::Open,
            allowed_hosts: vec![],
            allowed_origins: vec![],
            max_active_per_workspace: 0,
            max_streams: 1000,
            max_streams_per_client: 64,
            stream_idle_timeout_seconds: 300,
            stream_ping_interval_seconds: 20,
            max_connections: 1024,
            max_connections_per_client: 256,
            http_header_read_timeout_seconds: 10,
            http_idle_timeout_seconds: 75,
            rate_limit_per_second: 0.0,
            rate_limit_burst: 20,
            log_format: None,
            log_level: "info".into(),
            upload: UploadSettings::defaults(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upload settings: Trust permission, then S3 (raw and golden buckets).
// ---------------------------------------------------------------------------------------------

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

/// Smallest part S3 accepts in a multipart upload (every part but the last).
pub const S3_MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// Largest object a single PutObject or CopyObject may write.
pub const S3_MAX_SINGLE_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// The upload settings as given (flags or `CERTUS_ASSURANCE_*` variables).
#[derive(Debug, Clone, Args)]
pub struct UploadSettings {
    /// Enable the upload workflow (`POST .../upload-request`): Trust permission, then S3.
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_ENABLE_S3_UPLOAD", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub enable_s3_upload: bool,

    /// Base URL of the Certus Trust service (required when uploads are enabled).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_TRUST_BASE_URL",
        value_name = "URL"
    )]
    pub trust_base_url: Option<String>,

    /// Bearer token sent to the Trust service.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_TRUST_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub trust_token: Option<Secret>,

    /// Total time limit of one request to the Trust service, in seconds (less than the request
    /// time limit, since upload-request waits for Trust's answer).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub trust_timeout_seconds: u64,

    /// S3 endpoint (e.g. MinIO or LocalStack) [default: AWS for the region]; path-style addressing.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_S3_ENDPOINT_URL",
        value_name = "URL"
    )]
    pub s3_endpoint_url: Option<String>,

    /// S3 region.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_S3_REGION",
        default_value = "us-east-1",
        value_name = "REGION"
    )]
    pub s3_region: String,

    /// S3 access key id [default: the standard AWS credential chain].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_S3_ACCESS_KEY_ID",
        value_name = "ID",
        hide_env_values = true
    )]
    pub s3_access_key_id: Option<String>,

    /// S3 secret access key (with S3_ACCESS_KEY_ID).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<Secret>,

    /// Bucket that receives each permitted file first.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_DATALAKE_RAW_BUCKET",
        default_value = "raw",
        value_name = "BUCKET"
    )]
    pub datalake_raw_bucket: String,

    /// Bucket that files are copied to once every file is in the raw bucket.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_DATALAKE_GOLDEN_BUCKET",
        default_value = "golden",
        value_name = "BUCKET"
    )]
    pub datalake_golden_bucket: String,

    /// Key prefix in the raw bucket: `<prefix>/<test_id>/incoming/<path>`.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_DATALAKE_RAW_PREFIX",
        default_value = "security-scans",
        value_name = "PREFIX"
    )]
    pub datalake_raw_prefix: String,

    /// Key prefix in the golden bucket: `<prefix>/<test_id>/golden/<path>`.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_DATALAKE_GOLDEN_PREFIX",
        default_value = "security-scans",
        value_name = "PREFIX"
    )]
    pub datalake_golden_prefix: String,

    /// Files larger than this go up in parts of this size (multipart upload); at least 5 MiB.
    #[arg(long, global = true, env = "CERTUS_ASSURANCE_S3_MULTIPART_THRESHOLD_BYTES", default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub s3_multipart_threshold_bytes: u64,

    /// Time limit of one attempt of one S3 request, in seconds.
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_S3_TIMEOUT_SECONDS",
        default_value_t = 60,
        value_name = "SECONDS"
    )]
    pub s3_timeout_seconds: u64,

    /// Attempts per S3 request (transient errors are retried with capped exponential backoff).
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_S3_MAX_ATTEMPTS",
        default_value_t = 4,
        value_name = "N"
    )]
    pub s3_max_attempts: u32,

    /// ed25519 private key (PKCS#8 PEM or DER, or a 32-byte seed as raw bytes, hex or base64)
    /// that signs each bundle's attestation (a DSSE envelope) and the inner signature of upload
    /// requests [default: unsigned attestation, `basic` uploads only].
    #[arg(
        long,
        global = true,
        env = "CERTUS_ASSURANCE_SIGNING_KEY_FILE",
        value_name = "FILE"
    )]
    pub signing_key_file: Option<PathBuf>,
}

impl UploadSettings {
    /// The defaults, ignoring the environment.
    fn defaults() -> UploadSettings {
        UploadSettings {
            enable_s3_upload: false,
            trust_base_url: None,
            trust_token: None,
            trust_timeout_seconds: 10,
            s3_endpoint_url: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            datalake_raw_bucket: "raw".into(),
            datalake_golden_bucket: "golden".into(),
            datalake_raw_prefix: "security-scans".into(),
            datalake_golden_prefix: "security-scans".into(),
            s3_multipart_threshold_bytes: 16 * 1024 * 1024,
            s3_timeout_seconds: 60,
            s3_max_attempts: 4,
            signing_key_file: None,
        }
    }
}

/// Validated upload settings.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Uploads are enabled; when false, upload-request answers 503 naming the variable to set.
    pub enabled: bool,
    /// Trust service base URL (set whenever `enabled`).
    pub trust_base_url: Option<url::Url>,
    /// Bearer token for Trust.
    pub trust_token: Option<Secret>,
    /// Total time limit of one Trust request.
    pub trust_timeout: Duration,
    /// S3 endpoint override (path-style addressing is used with it).
    pub s3_endpoint_url: Option<String>,
    pub s3_region: String,
    /// Static credentials; `None` uses the standard AWS credential chain.
    pub s3_credentials: Option<(String, Secret)>,
    pub raw_bucket: String,
    pub golden_bucket: String,
    /// Raw key prefix without leading or trailing `/` (may be empty).
    pub raw_prefix: String,
    /// Golden key prefix without leading or trailing `/` (may be empty).
    pub golden_prefix: String,
    /// Size above which a file is uploaded in parts; also the part size.
    pub multipart_threshold: u64,
    /// Time limit of one attempt of one S3 request.
    pub s3_timeout: Duration,
    /// Attempts per S3 request.
    pub s3_max_attempts: u32,
    /// Ed25519 key signing the declared digests.
    pub signing_key_file: Option<PathBuf>,
}

impl UploadConfig {
    /// Defaults: uploads disabled.
    pub fn disabled() -> UploadConfig {
        UploadConfig::from_settings(&UploadSettings::defaults(), 30).expect("defaults are valid")
    }

    /// Validates the upload settings, naming the offending variable in every error.
    pub fn from_settings(s: &UploadSettings, request_timeout_seconds: u64) -> anyhow::Result<Self> {
        let trust_base_url = match s.trust_base_url.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(raw) => Some(parse_service_url("TRUST_BASE_URL", raw)?),
        };
        if s.enable_s3_upload && trust_base_url.is_none() {
            bail!(
                "CERTUS_ASSURANCE_TRUST_BASE_URL is required when CERTUS_ASSURANCE_ENABLE_S3_UPLOAD=true \
                 (nothing is uploaded without Trust's permission)"
            );
        }
        if s.trust_timeout_seconds == 0 {
            bail!("CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS must be greater than 0");
        }
        if s.trust_timeout_seconds >= request_timeout_seconds {
            bail!(
                "CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS ({}) must be less than \
                 CERTUS_ASSURANCE_REQUEST_TIMEOUT_SECONDS ({request_timeout_seconds}), since \
                 upload-request waits for Trust's answer",
                s.trust_timeout_seconds
            );
        }
        let s3_endpoint_url = match s.s3_endpoint_url.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(raw) => Some(
                parse_service_url("S3_ENDPOINT_URL", raw)?
                    .as_str()
                    .trim_end_matches('/')
                    .to_string(),
            ),
        };
        if s.s3_region.is_empty()
            || !s
                .s3_region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            bail!(
                "CERTUS_ASSURANCE_S3_REGION must be a region name such as us-east-1 (got `{}`)",
                s.s3_region
            );
        }
        let s3_credentials = match (
            s.s3_access_key_id.as_deref().filter(|v| !v.is_empty()),
            s.s3_secret_access_key
                .as_ref()
                .filter(|v| !v.expose().is_empty()),
        ) {
            (Some(id), Some(secret)) => Some((id.to_string(), secret.clone())),
            (None, None) => None,
            (Some(_), None) => bail!(
                "CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY must be set together with CERTUS_ASSURANCE_S3_ACCESS_KEY_ID"
            ),
            (None, Some(_)) => bail!(
                "CERTUS_ASSURANCE_S3_ACCESS_KEY_ID must be set together with CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY"
            ),
        };
        check_bucket("DATALAKE_RAW_BUCKET", &s.datalake_raw_bucket)?;
        check_bucket("DATALAKE_GOLDEN_BUCKET", &s.datalake_golden_bucket)?;
        let raw_prefix = check_prefix("DATALAKE_RAW_PREFIX", &s.datalake_raw_prefix)?;
        let golden_prefix = check_prefix("DATALAKE_GOLDEN_PREFIX", &s.datalake_golden_prefix)?;
        if s.s3_multipart_threshold_bytes < S3_MIN_PART_BYTES
            || s.s3_multipart_threshold_bytes > S3_MAX_SINGLE_OBJECT_BYTES
        {
            bail!(
                "CERTUS_ASSURANCE_S3_MULTIPART_THRESHOLD_BYTES must be from {S3_MIN_PART_BYTES} (5 MiB, \
                 the smallest S3 part) to {S3_MAX_SINGLE_OBJECT_BYTES} (5 GiB)"
            );
        }
        if s.s3_timeout_seconds == 0 {
            bail!("CERTUS_ASSURANCE_S3_TIMEOUT_SECONDS must be greater than 0");
        }
        if !(1..=10).contains(&s.s3_max_attempts) {
            bail!("CERTUS_ASSURANCE_S3_MAX_ATTEMPTS must be from 1 to 10");
        }
        if let Some(key) = &s.signing_key_file {
            if !key.is_file() {
                bail!(
                    "CERTUS_ASSURANCE_SIGNING_KEY_FILE: {} is not a readable file",
                    key.display()
                );
            }
        }
        Ok(UploadConfig {
            enabled: s.enable_s3_upload,
            trust_base_url,
            trust_token: s.trust_token.clone().filter(|t| !t.expose().is_empty()),
            trust_timeout: Duration::from_secs(s.trust_timeout_seconds),
            s3_endpoint_url,
            s3_region: s.s3_region.clone(),
            s3_credentials,
            raw_bucket: s.datalake_raw_bucket.clone(),
            golden_bucket: s.datalake_golden_bucket.clone(),
            raw_prefix,
            golden_prefix,
            multipart_threshold: s.s3_multipart_threshold_bytes,
            s3_timeout: Duration::from_secs(s.s3_timeout_seconds),
            s3_max_attempts: s.s3_max_attempts,
            signing_key_file: s.signing_key_file.clone(),
        })
    }
}

/// An `http` or `https` URL with a host and no credentials (tokens go in their own variable).
fn parse_service_url(var: &str, raw: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(raw).with_context(|| {
        format!("CERTUS_ASSURANCE_{var} must be an http(s) URL such as https://trust.example.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!(
            "CERTUS_ASSURANCE_{var} must be an http(s) URL with a host (got scheme `{}`)",
            url.scheme()
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("CERTUS_ASSURANCE_{var} must not carry credentials; use the token or key variables");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!(
            "CERTUS_ASSURANCE_{var} must not have a query string or fragment (`?...`, `#...`): \
             they can carry credentials (tokens, signatures) that would be logged; use the token \
             or key variables"
        );
    }
    Ok(url)
}

/// S3 bucket naming rules: 3-63 characters of lower-case letters, digits, `.` and `-`.
fn check_bucket(var: &str, bucket: &str) -> anyhow::Result<()> {
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if !valid {
        bail!(
            "CERTUS_ASSURANCE_{var} must be a valid S3 bucket name (3-63 lower-case letters, digits, \
             `.` or `-`), got `{bucket}`"
        );
    }
    Ok(())
}

/// Key prefix: segments of `[A-Za-z0-9._-]` separated by `/`; surrounding `/` removed.
fn check_prefix(var: &str, prefix: &str) -> anyhow::Result<String> {
    let trimmed = prefix.trim_matches('/');
    let valid = trimmed.len() <= 256
        && (trimmed.is_empty()
            || trimmed.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            }));
    if !valid {
        bail!(
            "CERTUS_ASSURANCE_{var} must be `/`-separated segments of letters, digits, `.`, `_` or `-` \
             (got `{prefix}`)"
        );
    }
    Ok(trimmed.to_string())
}

/// Where scans are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded SQLite file (one replica).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (several replicas may share it). Kept out of logs: it may hold a password.
    Postgres(String),
}

fn parse_database_url(url: &str) -> anyhow::Result<StoreLocation> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            bail!("CERTUS_ASSURANCE_DATABASE_URL: `sqlite://` needs a file path, e.g. sqlite://./data/scans.db");
        }
        return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // `verify-full`/`verify-ca` are handled by the store itself (see storage/postgres.rs).
        let parseable = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        parseable.parse::<tokio_postgres::Config>().map_err(|e| {
            anyhow::anyhow!("CERTUS_ASSURANCE_DATABASE_URL is not a valid PostgreSQL URL: {e}")
        })?;
        return Ok(StoreLocation::Postgres(url.to_string()));
    }
    Err(anyhow::anyhow!("unsupported scheme"))
        .context("CERTUS_ASSURANCE_DATABASE_URL must start with sqlite:// or postgres://")
}

/// Transport of the OTLP span exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (`grpc`), usually port 4317.
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`, the specification's default),
    /// usually port 4318.
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Where and how spans are exported, from the standard OpenTelemetry variables. Exporting is on
/// when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, unless
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The exporter itself reads the
/// remaining `OTEL_EXPORTER_OTLP_*` variables (headers, timeout, compression) and the SDK reads
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER*` and `OTEL_BSP_*`; the values checked here
/// are the ones whose mistakes would otherwise go unnoticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// The endpoint variable's value (for the start-up log line).
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else
    /// `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// `OTEL_SERVICE_NAME` (default `certus-assurance`).
    pub service_name: Option<String>,
}

impl OtlpExport {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Option<OtlpExport>> {
        OtlpExport::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `var` (empty values count as unset, as the specification says).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<OtlpExport>> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match get("OTEL_SDK_DISABLED").map(|v| v.to_ascii_lowercase()) {
            None => {}
            Some(v) if v == "false" => {}
            Some(v) if v == "true" => return Ok(None),
            Some(v) => bail!("OTEL_SDK_DISABLED must be `true` or `false` (got `{v}`)"),
        }
        match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => bail!(
                "OTEL_TRACES_EXPORTER must be `otlp` or `none` (got `{other}`); this build exports traces over OTLP only"
            ),
        }
        let Some((endpoint_var, endpoint)) = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|name| get(name).map(|v| (name, v))) else {
            return Ok(None);
        };
        let url = url::Url::parse(&endpoint).with_context(|| {
            format!("{endpoint_var} is not a URL (such as http://otel-collector:4318)")
        })?;
        match url.scheme() {
            "http" => {}
            "https" => bail!(
                "{endpoint_var}: this build exports OTLP without TLS; send traces to a collector \
                 over http:// (for example an OpenTelemetry Collector next to the service)"
            ),
            other => bail!("{endpoint_var} must be an http:// URL (got scheme `{other}`)"),
        }
        // The endpoint is logged at start-up: it must hold nothing secret.
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            bail!(
                "{endpoint_var} must not carry a user, a password, a query string or a fragment \
                 (the endpoint is logged at start-up); authenticate at a collector next to the service"
            );
        }
        let protocol = match [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|name| get(name).map(|v| (name, v)))
        {
            None => OtlpProtocol::HttpProtobuf,
            Some((_, v)) if v == "grpc" => OtlpProtocol::Grpc,
            Some((_, v)) if v == "http/protobuf" => OtlpProtocol::HttpProtobuf,
            Some((name, v)) => {
                bail!("{name} must be `grpc` or `http/protobuf` (got `{v}`)")
            }
        };
        Ok(Some(OtlpExport {
            endpoint,
            protocol,
            service_name: get("OTEL_SERVICE_NAME"),
        }))
    }
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

/// `<host>-<pid>-<random>`: unique per process, readable in `owner` columns and logs.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_string());
    let mut bytes = [0u8; 3];
    let _ = getrandom::fill(&mut bytes);
    format!("{host}-{}-{}", std::process::id(), hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_accept_the_verifying_ssl_modes() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u@db.example.com/scans?sslmode={mode}");
            assert_eq!(
                parse_database_url(&url).unwrap(),
                StoreLocation::Postgres(url.clone()),
                "{mode}"
            );
        }
    }

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
    fn upload_settings_are_checked_and_name_their_variable() {
        let bad = |f: &dyn Fn(&mut Settings), var: &str| {
            let mut s = Settings::parse_from_defaults();
            f(&mut s);
            let err = format!("{:#}", Config::from_settings(&s).unwrap_err());
            assert!(err.contains(var), "{var}: {err}");
        };
        bad(
            &|s| s.upload.enable_s3_upload = true,
            "CERTUS_ASSURANCE_TRUST_BASE_URL",
        );
        bad(
            &|s| s.upload.trust_base_url = Some("ftp://trust".into()),
            "CERTUS_ASSURANCE_TRUST_BASE_URL",
        );
        bad(
            &|s| s.upload.trust_base_url = Some("https://u:p@trust.example.com".into()),
            "CERTUS_ASSURANCE_TRUST_BASE_URL",
        );
        bad(
            &|s| s.upload.trust_base_url = Some("https://trust.example.com/?access_token=x".into()),
            "CERTUS_ASSURANCE_TRUST_BASE_URL",
        );
        bad(
            &|s| s.upload.s3_endpoint_url = Some("https://s3.example.com/#sig=x".into()),
            "CERTUS_ASSURANCE_S3_ENDPOINT_URL",
        );
        bad(
            &|s| s.upload.trust_timeout_seconds = 30,
            "CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS",
        );
        bad(
            &|s| s.upload.s3_endpoint_url = Some("localhost:9000".into()),
            "CERTUS_ASSURANCE_S3_ENDPOINT_URL",
        );
        bad(
            &|s| s.upload.s3_access_key_id = Some("AKID".into()),
            "CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY",
        );
        bad(
            &|s| s.upload.datalake_raw_bucket = "Raw_Bucket".into(),
            "CERTUS_ASSURANCE_DATALAKE_RAW_BUCKET",
        );
        bad(
            &|s| s.upload.datalake_golden_prefix = "a/../b".into(),
            "CERTUS_ASSURANCE_DATALAKE_GOLDEN_PREFIX",
        );
        bad(
            &|s| s.upload.s3_multipart_threshold_bytes = 1024,
            "CERTUS_ASSURANCE_S3_MULTIPART_THRESHOLD_BYTES",
        );
        bad(
            &|s| s.upload.s3_max_attempts = 0,
            "CERTUS_ASSURANCE_S3_MAX_ATTEMPTS",
        );
        bad(
            &|s| s.upload.signing_key_file = Some("/nonexistent/key.pem".into()),
            "CERTUS_ASSURANCE_SIGNING_KEY_FILE",
        );
        bad(
            &|s| s.git_schemes = "https,ftp".into(),
            "CERTUS_ASSURANCE_GIT_SCHEMES",
        );
        bad(
            &|s| s.git_schemes = "".into(),
            "CERTUS_ASSURANCE_GIT_SCHEMES",
        );
        bad(
            &|s| s.git_schemes = "https,http".into(),
            "CERTUS_ASSURANCE_GIT_SCHEMES",
        );

        let mut s = Settings::parse_from_defaults();
        s.git_schemes = "https,http".into();
        s.allow_private_networks = true;
        let policy = Config::from_settings(&s).unwrap().source_policy();
        assert!(policy.schemes.http && !policy.schemes.git);

        let mut s = Settings::parse_from_defaults();
        s.upload.enable_s3_upload = true;
        s.upload.trust_base_url = Some("https://trust.example.com/base".into());
        s.upload.trust_token = Some(Secret::new("tok-123"));
        s.upload.s3_access_key_id = Some("AKID".into());
        s.upload.s3_secret_access_key = Some(Secret::new("very-secret"));
        s.upload.datalake_raw_prefix = "/scans/raw/".into();
        let config = Config::from_settings(&s).unwrap();
        assert!(config.upload.enabled);
        assert_eq!(config.upload.raw_prefix, "scans/raw");
        let shown = format!("{config:?} {s:?}");
        assert!(
            !shown.contains("tok-123") && !shown.contains("very-secret"),
            "{shown}"
        );
    }

    #[test]
    fn upload_settings_come_from_the_environment_names() {
        let cli = Cli::try_parse_from([
            "certus-assurance",
            "--enable-s3-upload",
            "true",
            "--trust-base-url",
            "https://trust.example.com",
            "--s3-multipart-threshold-bytes",
            "5242880",
        ])
        .unwrap();
        let config = Config::from_settings(&cli.settings).unwrap();
        assert!(config.upload.enabled);
        assert_eq!(config.upload.multipart_threshold, 5 * 1024 * 1024);
        let err = Cli::try_parse_from(["certus-assurance", "--s3-max-attempts", "x"]).unwrap_err();
        let text = explain_cli_error(err).to_string();
        assert!(text.contains("CERTUS_ASSURANCE_S3_MAX_ATTEMPTS"), "{text}");
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
        s.upload.signing_key_file = Some(key.clone());
        let err = format!("{:#}", Config::from_settings(&s).unwrap_err());
        assert!(err.contains("CERTUS_ASSURANCE_SIGNING_KEY_FILE"), "{err}");
        assert!(
            !err.contains("not a key"),
            "the key's content is not echoed: {err}"
        );

        std::fs::write(&key, "11".repeat(32)).unwrap();
        let mut s = Settings::parse_from_defaults();
        s.upload.signing_key_file = Some(key);
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
    fn without_tokens_the_default_bind_is_loopback_and_exposure_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        // No tokens, no explicit address: loopback, authentication off, nothing to warn about.
        let config = Config::from_settings(&Settings::parse_from_defaults()).unwrap();
        assert!(config.listen_addr.ip().is_loopback());
        assert!(!config.auth_enabled());
        assert!(!config.exposed_without_auth());
        // The same through the command line with no flags.
        let cli = Cli::try_parse_from(["certus-assurance"]).unwrap();
        if std::env::var_os("CERTUS_ASSURANCE_LISTEN_ADDR").is_none() {
            assert!(cli.settings.listen_addr.ip().is_loopback());
        }

        // An explicit non-loopback address is kept, and flagged while authentication is off.
        let mut s = Settings::parse_from_defaults();
        s.listen_addr = "0.0.0.0:8056".parse().unwrap();
        let config = Config::from_settings(&s).unwrap();
        assert_eq!(config.listen_addr, s.listen_addr);
        assert!(config.exposed_without_auth());

        // With tokens the address stays as configured (default or explicit) and is not flagged.
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(
            &tokens,
            format!(
                "[[tokens]]\nname = \"ci\"\nrole = \"submit\"\nworkspaces = [\"a\"]\nsha256 = \"{}\"\n",
                crate::auth::hash_token("t")
            ),
        )
        .unwrap();
        s.api_tokens_file = Some(tokens.clone());
        let config = Config::from_settings(&s).unwrap();
        assert!(config.auth_enabled());
        assert_eq!(config.listen_addr, s.listen_addr);
        assert!(!config.exposed_without_auth());
        let mut s = Settings::parse_from_defaults();
        s.api_tokens_file = Some(tokens);
        let config = Config::from_settings(&s).unwrap();
        assert_eq!(config.listen_addr, "127.0.0.1:8056".parse().unwrap());
    }

    #[test]
    fn fair_use_and_access_settings_are_checked() {
        let bad = |f: &dyn Fn(&mut Settings), var: &str| {
            let mut s = Settings::parse_from_defaults();
            f(&mut s);
            let err = format!("{:#}", Config::from_settings(&s).unwrap_err());
            assert!(err.contains(var), "{var}: {err}");
        };
        bad(
            &|s| s.metrics_auth = MetricsAuth::Token,
            "CERTUS_ASSURANCE_METRICS_AUTH",
        );
        bad(&|s| s.max_streams = 0, "CERTUS_ASSURANCE_MAX_STREAMS");
        bad(
            &|s| s.max_connections = 0,
            "CERTUS_ASSURANCE_MAX_CONNECTIONS",
        );
        bad(
            &|s| s.http_header_read_timeout_seconds = 0,
            "CERTUS_ASSURANCE_HTTP_HEADER_READ_TIMEOUT_SECONDS",
        );
        bad(
            &|s| s.stream_ping_interval_seconds = 75,
            "CERTUS_ASSURANCE_STREAM_PING_INTERVAL_SECONDS",
        );
        bad(
            &|s| s.rate_limit_per_second = -1.0,
            "CERTUS_ASSURANCE_RATE_LIMIT_PER_SECOND",
        );
        bad(
            &|s| {
                s.rate_limit_per_second = 5.0;
                s.rate_limit_burst = 0;
            },
            "CERTUS_ASSURANCE_RATE_LIMIT_BURST",
        );
        bad(
            &|s| s.api_tokens_file = Some("/nonexistent/tokens.toml".into()),
            "CERTUS_ASSURANCE_API_TOKENS_FILE",
        );
        bad(
            &|s| s.admin_token_sha256 = Some(Secret::new("not-hex")),
            "CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256",
        );
        let mut s = Settings::parse_from_defaults();
        s.rate_limit_per_second = 0.5;
        s.admin_token_sha256 = Some(Secret::new(crate::auth::hash_token("root")));
        s.metrics_auth = MetricsAuth::Token;
        let config = Config::from_settings(&s).unwrap();
        assert_eq!(config.rate_limit.unwrap().per_second, 0.5);
        assert_eq!(config.api_tokens.as_ref().unwrap().len(), 1);
        let shown = format!("{config:?}");
        assert!(!shown.contains(&crate::auth::hash_token("root")), "{shown}");
    }

    #[test]
    fn cli_errors_name_the_variable() {
        let err = Cli::try_parse_from(["certus-assurance", "--max-workers", "lots"]).unwrap_err();
        let text = explain_cli_error(err).to_string();
        assert!(text.contains("CERTUS_ASSURANCE_MAX_WORKERS"), "{text}");
    }

    #[test]
    fn otlp_export_follows_the_standard_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(OtlpExport::from_lookup(env(&[])).unwrap(), None);
        let export = OtlpExport::from_lookup(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(export.protocol, OtlpProtocol::HttpProtobuf);
        let export = OtlpExport::from_lookup(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "scans-eu"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(export.protocol, OtlpProtocol::Grpc);
        assert_eq!(export.service_name.as_deref(), Some("scans-eu"));
        for disabled in [
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ][..],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ][..],
        ] {
            let disabled: &'static [(&'static str, &'static str)] = disabled;
            assert_eq!(OtlpExport::from_lookup(env(disabled)).unwrap(), None);
        }
        for (bad, var) in [
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
                ][..],
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317")][..],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "http://collector:4318/?access_token=x",
                )][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://user:secret@collector:4318",
                )][..],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                    ("OTEL_SDK_DISABLED", "yes"),
                ][..],
                "OTEL_SDK_DISABLED",
            ),
        ] {
            let bad: &'static [(&'static str, &'static str)] = bad;
            let err = format!("{:#}", OtlpExport::from_lookup(env(bad)).unwrap_err());
            assert!(err.contains(var), "{err}");
        }
    }
}
