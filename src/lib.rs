//! Certus Assurance: a security-scan service. The library holds all logic; the binary only
//! parses the configuration, starts telemetry and runs [`App`].

/// Handlers, router and middleware of the HTTP and WebSocket API.
pub mod api;
/// Wiring: builds the state, binds the listener, starts workers, runs until stopped.
pub mod app;
/// API tokens: roles, workspace scopes, hashed secrets compared in constant time.
pub mod auth;
/// The command line, and the commands that run without the server (`scan`, `baseline`, ...).
pub mod cli;
/// Settings from `CERTUS_ASSURANCE_*` variables, one section per concern, validated at start-up.
pub mod config;
/// The HTTP error type and its one mapping to status and body.
pub mod error;
/// Job engine: state machine, manager, event channels and workers.
pub mod jobs;
/// The one metrics registry and every metric.
pub mod metrics;
/// One scan run: checkout, scanners, bundle.
pub mod pipeline;
/// The standard `process_*` metrics, read from `/proc` at each scrape.
pub mod process_metrics;
/// The scan domain: state machine, test ids, clock. No I/O; everything above imports it.
pub mod scan;
/// Stop signal and drain ordering.
pub mod shutdown;
/// Job store interface and its SQLite and PostgreSQL backends.
pub mod storage;
/// Log subscriber setup.
pub mod telemetry;
/// Upload workflow: Trust permission, then S3 raw and golden buckets.
pub mod upload;

pub use app::App;
pub use config::Config;

/// Source revision this binary was built from.
pub const BUILD_REVISION: &str = env!("CERTUS_ASSURANCE_REVISION");
