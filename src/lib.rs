//! Certus Assurance: a security-scan service. The library holds all logic; the binary only
//! parses the configuration, starts telemetry and runs [`App`].

/// Handlers, router and middleware of the HTTP and WebSocket API.
pub mod api;
/// Wiring: builds the state, binds the listener, starts workers, runs until stopped.
pub mod app;
/// API tokens: roles, workspace scopes, hashed secrets compared in constant time.
pub mod auth;
/// The `scan` command: one scan through the pipeline without the server.
pub mod cli;
/// Settings from `CERTUS_ASSURANCE_*` variables, validated at start-up.
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
/// Stop signal and drain ordering.
pub mod shutdown;
/// Job store interface and its SQLite backend.
pub mod storage;
/// Log subscriber setup.
pub mod telemetry;
/// Upload workflow: Trust permission, then S3 raw and golden buckets.
pub mod upload;

pub use app::App;
pub use config::Config;

/// Source revision this binary was built from.
pub const BUILD_REVISION: &str = env!("CERTUS_ASSURANCE_REVISION");
