//! Wiring: builds [`AppState`], binds the listener, starts the workers, and runs until the stop
//! signal, draining in order (see [`crate::shutdown`]). No request or job logic lives here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::{Config, RecoverRunning, StoreLocation};
use crate::jobs::observer::MetricsObserver;
use crate::jobs::{worker, JobManager, JobSettings};
use crate::metrics::Metrics;
use crate::pipeline::profile::PROFILE_LABELS;
use crate::pipeline::scanners::external::passthrough_env;
use crate::pipeline::{builtin_scanners_with, Pipeline, ScanObserver, BUILTIN_SCANNERS};
use crate::shutdown::{Shutdown, CONNECTIONS_CLOSE_TIMEOUT};
use crate::storage::postgres::PgStore;
use crate::storage::sqlite::SqliteStore;
use crate::storage::PrunePolicy;

/// A built application: listening, state recovered, workers not yet started.
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    shutdown: Shutdown,
}

/// Marks an error in the files the settings name (API tokens, the signing key): the binary
/// reports it as invalid configuration (exit status 2), as it does a bad setting.
#[derive(Debug)]
pub struct InvalidConfig;

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid configuration")
    }
}

/// The API tokens the settings name (`None`: authentication off).
pub fn load_tokens(config: &Config) -> anyhow::Result<Option<Arc<crate::auth::TokenSet>>> {
    let auth = &config.auth;
    Ok(crate::auth::TokenSet::load(
        auth.api_tokens_file.as_deref(),
        auth.admin_token_sha256
            .as_ref()
            .map(crate::config::Secret::expose),
    )
    .context(InvalidConfig)?
    .map(Arc::new))
}

/// The key that signs attestations, if the settings name one.
pub fn load_signing_key(
    config: &Config,
) -> anyhow::Result<Option<crate::pipeline::attestation::AttestationKey>> {
    let Some(path) = &config.upload.signing_key_file else {
        return Ok(None);
    };
    crate::pipeline::attestation::AttestationKey::from_file(path)
        .with_context(|| {
            format!(
                "CERTUS_ASSURANCE_SIGNING_KEY_FILE: {} is not a usable ed25519 key",
                path.display()
            )
        })
        .context(InvalidConfig)
        .map(Some)
}

/// The keys that seal clone credentials, if the settings name them (a file, or the variable).
/// A bad key list stops start-up with the setting's name and the line at fault, never the line.
pub fn load_credential_keys(
    config: &Config,
) -> anyhow::Result<Option<Arc<crate::scan::CredentialKeys>>> {
    let source = &config.source;
    let (text, setting) = match (&source.credential_keys_file, &source.credential_keys) {
        (Some(path), _) => (
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE: {} cannot be read",
                        path.display()
                    )
                })
                .context(InvalidConfig)?,
            "CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE",
        ),
        (None, Some(keys)) => (
            keys.expose().to_string(),
            "CERTUS_ASSURANCE_CREDENTIAL_KEYS",
        ),
        (None, None) => return Ok(None),
    };
    let keys = crate::scan::CredentialKeys::parse(&text)
        .map_err(|problem| anyhow::anyhow!("{setting}: {problem}"))
        .context(InvalidConfig)?;
    tracing::info!(
        active = keys.active_id(),
        keys = keys.ids().count(),
        "clone credentials are sealed for the store with the active credential key"
    );
    Ok(Some(Arc::new(keys)))
}

/// Removes temporary workspaces left behind by a process that died mid-scan.
fn clear_work_dir(config: &Config) -> anyhow::Result<()> {
    let work = config.work_dir();
    if work.exists() {
        for entry in
            std::fs::read_dir(&work).with_context(|| format!("listing {}", work.display()))?
        {
            let path = entry?.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(err) = removed {
                tracing::warn!(path = %path.display(), error = %err, "could not remove a leftover workspace");
            }
        }
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))
}

/// Removes partial archive uploads (`.upload-*.part`) left by a process that died while an
/// archive was being received: nothing refers to them, and they would hold disk space forever.
fn clear_partial_uploads(config: &Config) {
    let dir = config.upload_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".upload-") && name.ends_with(".part") {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a partial archive upload left by an earlier process")
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "could not remove a partial archive upload")
                }
            }
        }
    }
}

/// The artifact store the settings name. With the `s3` backend, fetched copies of stored
/// bundles (`<ARTIFACT_ROOT>/.cache/`) are dropped at start-up: the bucket is the truth.
async fn artifact_store(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<crate::upload::artifact_store::ArtifactStore> {
    use crate::upload::artifact_store::{ArtifactStore, CACHE_DIR};
    let root = config.artifact_root();
    let Some((bucket, prefix)) = config.artifacts.s3_location() else {
        return Ok(ArtifactStore::local(root, config.upload_dir()));
    };
    let cache = root.join(CACHE_DIR);
    if let Err(err) = tokio::fs::remove_dir_all(&cache).await {
        if err.kind() != std::io::ErrorKind::NotFound {
            return Err(err).with_context(|| format!("clearing {}", cache.display()));
        }
    }
    let s3 =
        crate::upload::object_store::ObjectStore::connect(&config.upload, metrics.clone()).await;
    Ok(ArtifactStore::s3(
        root,
        config.upload_dir(),
        s3,
        bucket,
        prefix,
    ))
}

/// Creates the data directory and the artifact root (returned), and clears what a dead process
/// left in `work/` and in the archive uploads.
fn prepare_directories(config: &Config) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(&config.server.data_dir).with_context(|| {
        format!(
            "creating CERTUS_ASSURANCE_DATA_DIR {}",
            config.server.data_dir.display()
        )
    })?;
    let artifact_root = config.artifact_root();
    std::fs::create_dir_all(&artifact_root).with_context(|| {
        format!(
            "creating CERTUS_ASSURANCE_ARTIFACT_ROOT {}",
            artifact_root.display()
        )
    })?;
    clear_work_dir(config)?;
    clear_partial_uploads(config);
    Ok(artifact_root)
}

/// The built-in scanners (with the OSV database when the settings name one, also returned),
/// each replaced by the given scanner of the same name.
fn scanners_of(
    config: &Config,
    replacements: Vec<Arc<dyn crate::pipeline::scanners::Scanner>>,
) -> (
    Vec<Arc<dyn crate::pipeline::scanners::Scanner>>,
    Option<Arc<crate::pipeline::osv::OsvStore>>,
) {
    let osv = config.scanning.osv_db_dir.clone().map(|dir| {
        Arc::new(crate::pipeline::osv::OsvStore::new(dir).with_max_age(config.scanning.osv_max_age))
    });
    let mut scanners = builtin_scanners_with(osv.clone());
    for r in replacements {
        scanners.retain(|s| s.name() != r.name());
        scanners.push(r);
    }
    (scanners, osv)
}

/// Opens the job store the settings name (migrations applied).
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn crate::storage::JobStore>> {
    Ok(match config.store_location() {
        StoreLocation::Postgres(url) => Arc::new(
            PgStore::connect(&url, config.store.replica_id())
                .await
                .context("opening the PostgreSQL store (CERTUS_ASSURANCE_DATABASE_URL)")?,
        ),
        StoreLocation::Sqlite(path) => {
            Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open(&path)).await??)
        }
    })
}

/// The job engine over `store` and `pipeline`, with the artifact store and (when enabled) the
/// uploader the settings name.
async fn build_jobs(
    config: &Config,
    store: Arc<dyn crate::storage::JobStore>,
    metrics: &Metrics,
    pipeline: Pipeline,
    signing_seed: Option<[u8; 32]>,
    credential_keys: Option<Arc<crate::scan::CredentialKeys>>,
) -> anyhow::Result<JobManager> {
    let jobs = JobManager::new(
        store,
        metrics.clone(),
        pipeline,
        JobSettings {
            max_queue: config.queue.max_queue,
            max_workers: config.queue.max_workers,
            default_timeout: config.queue.scan_timeout,
            shutdown_grace: config.server.shutdown_grace,
            lease: config.store.lease,
            max_attempts: config.store.max_attempts,
            max_active_per_workspace: config.queue.max_active_per_workspace,
        },
        config.queue.stream_history_limit,
    )
    .with_artifact_store(artifact_store(config, metrics).await?)
    .with_credential_keys(credential_keys);
    let jobs = if config.upload.enabled {
        let uploader =
            crate::upload::Uploader::from_config(&config.upload, signing_seed, metrics.clone())
                .await
                .context("configuring uploads (CERTUS_ASSURANCE_ENABLE_S3_UPLOAD=true)")?
                .with_artifact_store(jobs.artifacts().clone());
        jobs.with_uploader(uploader)
    } else {
        jobs
    };
    Ok(jobs)
}

impl App {
    /// Opens the store, recovers interrupted scans, rebuilds the gauges and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        App::build_with_scanners(config, vec![]).await
    }

    /// [`App::build`] with some scanners replaced (tests slip in scanners that fail or panic):
    /// each given scanner replaces the built-in one of the same name.
    pub async fn build_with_scanners(
        config: Config,
        replacements: Vec<Arc<dyn crate::pipeline::scanners::Scanner>>,
    ) -> anyhow::Result<App> {
        let tokens = load_tokens(&config)?;
        let signing_key = load_signing_key(&config)?;
        let credential_keys = load_credential_keys(&config)?;
        let (scanners, osv) = scanners_of(&config, replacements);
        let artifact_root = prepare_directories(&config)?;
        crate::pipeline::checkout::init_git_timeouts(config.source.clone_stall_timeout);
        let store = open_store(&config).await?;
        let metrics = Metrics::new(&PROFILE_LABELS, &BUILTIN_SCANNERS);
        let observer: Arc<dyn ScanObserver> = Arc::new(MetricsObserver::new(metrics.clone()));
        let pipeline = Pipeline {
            work_root: config.work_dir(),
            artifact_root,
            clone_timeout: config.source.clone_timeout,
            clone_max_bytes: config.source.clone_max_bytes,
            source_policy: config.source.policy(),
            resolver: Arc::new(crate::pipeline::egress::SystemResolver),
            ssh_key: config.source.git_ssh_key_file.clone(),
            observer: observer.clone(),
            scanners: Arc::new(scanners),
            source_roots: Arc::new(config.source.source_roots.clone()),
            upload_dir: config.upload_dir(),
            archive_limits: crate::pipeline::archive::Limits {
                max_bytes: config.archive.max_extracted_bytes,
                max_entries: config.archive.max_files,
            },
            signing_key: signing_key.clone(),
            tool_path: config.scanning.tool_path.clone(),
            tool_env: Arc::new(passthrough_env(crate::config::passthrough_env)),
        };
        let seed = signing_key.as_ref().map(|key| key.seed());
        let jobs = build_jobs(&config, store, &metrics, pipeline, seed, credential_keys).await?;
        jobs.recover(config.queue.recover_running == RecoverRunning::Requeue)
            .await
            .context("recovering scans from the store")?;
        let listen_addr = config.server.listen_addr;
        let listener = TcpListener::bind(listen_addr)
            .await
            .with_context(|| format!("binding CERTUS_ASSURANCE_LISTEN_ADDR {listen_addr}"))?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::default();
        if let Some(osv) = osv {
            shutdown.workers.spawn(crate::pipeline::osv::watch(
                osv,
                observer,
                shutdown.stop_claiming.clone(),
            ));
        }
        let state = AppState {
            jobs,
            metrics,
            rate_limiter: config
                .auth
                .rate_limit()
                .map(|limit| Arc::new(api::rate_limit::RateLimiter::new(limit))),
            streams: Arc::new(tokio::sync::Semaphore::new(config.queue.max_streams)),
            tokens,
            stream_clients: api::per_client::PerClient::new(config.queue.max_streams_per_client),
            config: Arc::new(config),
            shutdown: shutdown.close_streams.clone(),
        };
        Ok(App {
            listener,
            addr,
            state,
            shutdown,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The job engine (tests drain the queue or inspect state through it).
    pub fn jobs(&self) -> JobManager {
        self.state.jobs.clone()
    }

    /// Serves until `stop` resolves, then drains: stop accepting and claiming, let running scans
    /// finish until the grace deadline, requeue what is left, close streams.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            addr,
            state,
            shutdown,
        } = self;
        let config = state.config.clone();
        let jobs = state.jobs.clone();
        if addr.ip().is_loopback() {
            tracing::info!(%addr, "listening (loopback only; set CERTUS_ASSURANCE_LISTEN_ADDR to expose it)");
        } else {
            tracing::info!(%addr, "listening");
        }
        let metrics_auth = config.auth.metrics_auth;
        match &state.tokens {
            Some(tokens) => match metrics_auth {
                crate::config::MetricsAuth::Open => tracing::info!(
                    tokens = tokens.len(),
                    metrics_auth = ?metrics_auth,
                    "authentication is on: every route needs a bearer token but /health, \
                     /health/ready, /openapi.json, /metrics and /stats (open to scrapers: set \
                     CERTUS_ASSURANCE_METRICS_AUTH=token to close the last two)"
                ),
                crate::config::MetricsAuth::Token => tracing::info!(
                    tokens = tokens.len(),
                    metrics_auth = ?metrics_auth,
                    "authentication is on: every route needs a bearer token but /health, \
                     /health/ready and /openapi.json; /metrics and /stats need role metrics or admin"
                ),
            },
            None => tracing::info!(
                "authentication is off: any caller that reaches the port may submit and read every \
                 workspace's scans (set CERTUS_ASSURANCE_API_TOKENS_FILE or \
                 CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256 to turn it on)"
            ),
        }
        if !addr.ip().is_loopback() && state.tokens.is_none() {
            tracing::warn!(%addr, "listening beyond loopback with authentication off; turn authentication on or bind to 127.0.0.1");
        }
        for index in 0..config.queue.max_workers {
            shutdown.workers.spawn(worker::run_worker(
                jobs.clone(),
                index,
                shutdown.stop_claiming.clone(),
                shutdown.hard_stop.clone(),
            ));
        }
        if jobs.is_shared() {
            // Alive before the first claim, so scans pinned to this replica are not taken.
            if let Err(err) = jobs.heartbeat(liveness(&config)).await {
                tracing::warn!(error = ?err, "recording this replica as alive failed; retrying at the next reconcile");
            }
            shutdown.workers.spawn(run_reconciler(
                jobs.clone(),
                config.clone(),
                shutdown.stop_claiming.clone(),
            ));
        }
        if config.retention.enabled() {
            shutdown.workers.spawn(run_retention(
                jobs.clone(),
                config.clone(),
                shutdown.stop_claiming.clone(),
            ));
        }
        shutdown.workers.close();

        let metrics = state.metrics.clone();
        let router = api::router(state);
        let server = tokio::spawn(api::connections::serve(
            listener,
            router,
            config.server.connections(),
            metrics,
            shutdown.stop_http.clone(),
        ));

        stop.await;
        let grace = config.server.shutdown_grace;
        tracing::info!(grace_seconds = grace.as_secs(), "draining");
        jobs.start_draining();
        shutdown.stop_claiming.cancel();
        if tokio::time::timeout(grace, shutdown.workers.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; stopping running scans and queueing them again");
            shutdown.hard_stop.cancel();
            shutdown.workers.wait().await;
        }
        jobs.drain_uploads(grace).await;
        shutdown.close_streams.cancel();
        shutdown.stop_http.cancel();
        match tokio::time::timeout(CONNECTIONS_CLOSE_TIMEOUT, server).await {
            Ok(Ok(())) => {}
            Ok(Err(join)) => return Err(join).context("the HTTP server task failed"),
            Err(_) => tracing::warn!("open connections did not close in time; stopping anyway"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Prunes finished scans on a schedule (first pass at start-up) until shutdown.
async fn run_retention(
    jobs: JobManager,
    config: Arc<Config>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let policy = PrunePolicy {
            finished_before: config
                .retention
                .max_age
                .map(|age| crate::scan::now_secs() - age.as_secs_f64()),
            keep_latest: config.retention.max_scans,
            batch: 500,
        };
        if let Err(err) = jobs.prune(policy).await {
            tracing::error!(error = ?err, "retention pass failed; retrying at the next interval");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.retention.interval) => {}
        }
    }
}

/// How long a heartbeat keeps this replica alive in the shared store: three reconcile intervals,
/// and at least one lease, so a replica busy for a moment is not taken for dead.
fn liveness(config: &Config) -> std::time::Duration {
    (config.store.reconcile_interval * 3).max(config.store.lease)
}

/// Shared store: renews this replica's liveness, reclaims scans of dead replicas and refreshes
/// the cluster-wide gauges.
async fn run_reconciler(
    jobs: JobManager,
    config: std::sync::Arc<Config>,
    stop: tokio_util::sync::CancellationToken,
) {
    let interval = config.store.reconcile_interval;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(err) = jobs.heartbeat(liveness(&config)).await {
            tracing::warn!(error = ?err, "recording this replica as alive failed; retrying at the next interval");
        }
        if let Err(err) = jobs.reconcile_cluster().await {
            tracing::warn!(error = ?err, "reconciling with the shared store failed; retrying at the next interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_key_and_token_files_are_invalid_configuration_naming_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "not a key").unwrap();
        let mut config = Config::for_data_dir(dir.path());
        config.upload.signing_key_file = Some(key.clone());
        let err = load_signing_key(&config).unwrap_err();
        assert!(err.downcast_ref::<InvalidConfig>().is_some());
        let text = format!("{err:#}");
        assert!(text.contains("CERTUS_ASSURANCE_SIGNING_KEY_FILE"), "{text}");
        assert!(!text.contains("not a key"), "the key is not echoed: {text}");

        std::fs::write(&key, "11".repeat(32)).unwrap();
        assert!(load_signing_key(&config).unwrap().is_some());

        config.auth.api_tokens_file = Some(dir.path().join("missing.toml"));
        let err = load_tokens(&config).unwrap_err();
        assert!(err.downcast_ref::<InvalidConfig>().is_some());
        assert!(format!("{err:#}").contains("CERTUS_ASSURANCE_API_TOKENS_FILE"));

        config.auth.api_tokens_file = None;
        config.auth.admin_token_sha256 = Some(crate::config::Secret::new("not-hex"));
        let err = format!("{:#}", load_tokens(&config).unwrap_err());
        assert!(err.contains("CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256"), "{err}");

        config.auth.admin_token_sha256 =
            Some(crate::config::Secret::new(crate::auth::hash_token("root")));
        assert_eq!(load_tokens(&config).unwrap().unwrap().len(), 1);
    }
}
