//! Test harness: the real `App` on a random loopback port with its own data directory, a real
//! `git daemon` serving repositories made by the test, and helpers to drive scans.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use certus_assurance::{App, Config};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

static TRACING: Once = Once::new();

/// Logs appear only when TEST_LOG is set.
fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = certus_assurance::telemetry::init(
                Some(certus_assurance::config::LogFormat::Pretty),
                "debug,hyper=info,h2=info",
            );
        }
    });
}

/// A running application plus what a test needs to drive it.
pub struct TestApp {
    /// The app's job engine (to drain the queue in tests that run with no workers).
    pub jobs: certus_assurance::jobs::JobManager,
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<TempDir>,
}

/// Configuration of a test app: loopback git hosts and local sources allowed, short grace.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::for_data_dir(data_dir);
    config.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.source.allow_private_networks = true;
    config.source.allow_local_sources = true;
    config.server.shutdown_grace = Duration::from_secs(5);
    // libgit2's stall timeout is process-wide: every test app uses the same short value.
    config.source.clone_stall_timeout = Duration::from_secs(3);
    config
}

/// Turns authentication on with the tokens of `file` (a token file's TOML text), written into
/// the app's data directory; the app reads it at start-up.
pub fn use_tokens(config: &mut Config, file: &str) {
    let path = config.server.data_dir.join("tokens.toml");
    std::fs::create_dir_all(&config.server.data_dir).expect("the data directory can be created");
    std::fs::write(&path, file).expect("the token file can be written");
    config.auth.api_tokens_file = Some(path);
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    tweak(&mut config);
    let mut app = start(config, None).await;
    app._dir = Some(dir);
    app
}

pub async fn start(
    config: Config,
    scanners: Option<Vec<std::sync::Arc<dyn certus_assurance::pipeline::scanners::Scanner>>>,
) -> TestApp {
    init_tracing();
    let app = match scanners {
        Some(s) => App::build_with_scanners(config.clone(), s).await,
        None => App::build(config.clone()).await,
    }
    .expect("app builds");
    let port = app.port();
    let jobs = app.jobs();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        jobs,
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        data_dir: config.server.data_dir.clone(),
        config,
        stop: Some(tx),
        handle: Some(handle),
        _dir: None,
    }
}

impl TestApp {
    /// Sends the stop signal (as on SIGTERM) without waiting for the drain.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Graceful stop (as on SIGTERM); waits until the app has drained.
    pub async fn stop(&mut self) {
        self.begin_stop();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("app task").expect("app stops cleanly");
        }
    }

    /// Stops (gracefully) and starts again on the same data directory with `tweak` applied.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        self.stop().await;
        self.reopen(tweak).await
    }

    /// Starts a new app on this app's data directory (after `stop` or `crash`).
    pub async fn reopen(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = self._dir.take();
        let mut config = self.config.clone();
        tweak(&mut config);
        let mut app = start(config, None).await;
        app._dir = dir;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// Submits a scan and asserts it was accepted; returns the test id.
    pub async fn submit_scan(&self, body: Value) -> String {
        let response = self.post_json("/v1/security-scans", &body).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, 202, "submit answered {status}: {body}");
        body["test_id"].as_str().expect("test_id").to_string()
    }

    pub async fn scan(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/security-scans/{id}")).await
    }

    /// Polls the scan until its status is one of `states`.
    pub async fn wait_for_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let scan = self.scan(id).await;
            if states.iter().any(|s| scan["status"] == *s) {
                return scan;
            }
            assert!(
                Instant::now() < deadline,
                "scan {id} did not reach {states:?}: {scan}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for_terminal(&self, id: &str) -> Value {
        self.wait_for_state(id, &["SUCCEEDED", "FAILED"], Duration::from_secs(60))
            .await
    }

    pub async fn stats(&self) -> Value {
        self.get_json("/stats").await
    }

    pub async fn metrics_text(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Counts per status and upload status read straight from the SQLite file.
    pub fn store_counts(&self) -> (HashMap<String, i64>, HashMap<String, i64>) {
        store_counts_at(&self.data_dir)
    }

    pub fn artifact_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("artifacts").join(id)
    }

    /// Entries left in the temporary workspace directory.
    pub fn leftover_workspaces(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data_dir.join("work"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// `POST {addr}/v1/security-scans` with `body`; asserts `202` and returns the `test_id`.
pub async fn submit_at(client: &reqwest::Client, addr: &str, body: &Value) -> String {
    let r = client
        .post(format!("{addr}/v1/security-scans"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["test_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `GET url`, its body as JSON.
pub async fn get_json_at(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// `GET {addr}/metrics`, the text.
pub async fn metrics_text_at(client: &reqwest::Client, addr: &str) -> String {
    let response = client.get(format!("{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of one sample in Prometheus text, e.g. `sample(&text, "certus_assurance_scans", &[("status","queued")])`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let mut found = HashMap::new();
        for pair in label_text.split(',').filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once('=') {
                found.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
        if found.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| found.get(*k).map(String::as_str) == Some(*v))
        {
            return value.parse().ok();
        }
    }
    None
}

/// A valid submission body for `git_url`.
pub fn scan_body(git_url: &str) -> Value {
    json!({
        "workspace_id": "test",
        "component_id": "c",
        "assessment_id": "a",
        "git_url": git_url,
        "branch": "main",
        "profile": "light",
    })
}

/// A free loopback port.
/// The status line and the body of a raw HTTP answer.
pub fn status_and_body(answer: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(answer).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.email=test@example.com",
            "-c",
            "user.name=Test",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Repositories on disk served by a real `git daemon` on a loopback port.
pub struct GitServer {
    pub root: TempDir,
    pub port: u16,
    daemon: Child,
}

impl GitServer {
    pub fn start() -> GitServer {
        let root = tempfile::tempdir().unwrap();
        let port = free_port();
        let daemon = Command::new("git")
            .process_group(0)
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--informative-errors",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", root.path().display()),
                &root.path().display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        GitServer { root, port, daemon }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    pub fn repo_path(&self, repo: &str) -> PathBuf {
        self.root.path().join(repo)
    }

    /// Creates a repository with one commit of `files` on `main`; returns the commit id.
    pub fn create_repo(&self, repo: &str, files: &[(&str, &str)]) -> String {
        let dir = self.repo_path(repo);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        self.commit(repo, files, "initial commit")
    }

    /// Adds a commit on the current branch; returns its id.
    pub fn commit(&self, repo: &str, files: &[(&str, &str)], message: &str) -> String {
        let dir = self.repo_path(repo);
        for (path, content) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&dir, &["rev-parse", "HEAD"])
    }

    pub fn checkout_new_branch(&self, repo: &str, branch: &str) {
        git(&self.repo_path(repo), &["checkout", "-q", "-b", branch]);
    }

    pub fn checkout(&self, repo: &str, branch: &str) {
        git(&self.repo_path(repo), &["checkout", "-q", branch]);
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        // `git daemon` forks `git-daemon`; kill the whole process group, not only the wrapper.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.daemon.id())])
            .status();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A TCP server that accepts connections and never answers: a git host that stalls.
pub struct StallingServer {
    pub port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl StallingServer {
    pub fn start() -> StallingServer {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        StallingServer {
            port,
            _thread: thread,
        }
    }

    pub fn url(&self) -> String {
        format!("git://127.0.0.1:{}/stalled", self.port)
    }
}

/// A fake AWS key assembled at run time so this file holds no literal credential.
pub fn planted_aws_key() -> String {
    format!("AKIA{}", "Q7W3E5R7T9Y2U4I6")
}

/// A fake GitHub token of the right shape.
pub fn planted_github_token() -> String {
    format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5")
}

/// The service binary as a real process (for crash tests with SIGKILL).
pub struct ServiceProcess {
    pub child: Child,
    pub address: String,
}

impl ServiceProcess {
    pub fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> ServiceProcess {
        let stdout = if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        ServiceProcess::start_with_stdout(data_dir, extra_env, stdout)
    }

    /// [`ServiceProcess::start`] with the service's stdout (its log) sent to `stdout`.
    pub fn start_with_stdout(
        data_dir: &Path,
        extra_env: &[(&str, &str)],
        stdout: Stdio,
    ) -> ServiceProcess {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_certus-assurance"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CERTUS_ASSURANCE_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("CERTUS_ASSURANCE_DATA_DIR", data_dir)
            .env("CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS", "true")
            .env("CERTUS_ASSURANCE_LOG_FORMAT", "json")
            .stdout(stdout)
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("service binary starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "service did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        ServiceProcess {
            child,
            address: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Polls the scan until it is in one of `states`; returns it.
    pub async fn wait_for_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            let scan: Value = client
                .get(format!("{}/v1/security-scans/{id}", self.address))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if states.iter().any(|s| scan["status"] == *s) {
                return scan;
            }
            assert!(
                Instant::now() < deadline,
                "scan {id} not in {states:?}: {scan}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: nothing is drained or cleaned up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("service exits")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts per status and upload status read straight from the SQLite file of `data_dir`.
pub fn store_counts_at(data_dir: &Path) -> (HashMap<String, i64>, HashMap<String, i64>) {
    let conn = rusqlite::Connection::open(data_dir.join("certus-assurance.db")).unwrap();
    let mut by_status = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT lower(status), COUNT(*) FROM scans GROUP BY status")
        .unwrap();
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap() {
        let (k, v): (String, i64) = row.unwrap();
        by_status.insert(k, v);
    }
    let mut by_upload = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT upload_status, COUNT(*) FROM scans GROUP BY upload_status")
        .unwrap();
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap() {
        let (k, v): (String, i64) = row.unwrap();
        by_upload.insert(k, v);
    }
    (by_status, by_upload)
}

/// Asserts `/stats`, `/metrics` and the store agree on every scan and upload count.
///
/// `/stats` and `/metrics` read one registry (the same gauges), so their agreement only shows
/// that both render it; the independent check is the comparison with the store, which
/// [`assert_counts_agree`] makes for every count the store holds.
pub async fn assert_stats_match_metrics_and_store(app: &TestApp) -> Value {
    let stats = app.stats().await;
    let text = app.metrics_text().await;
    assert_counts_agree(&stats, &text, &app.data_dir)
}

/// Asserts that `stats` (a `/stats` answer), `text` (a `/metrics` answer) and the SQLite store
/// in `data_dir` agree on every scan and upload count; returns `stats`. `/stats` and `/metrics`
/// read one registry: the store comparison is what tests the counts (`active_streams` has no
/// store and is only checked for both renderings agreeing).
pub fn assert_counts_agree(stats: &Value, text: &str, data_dir: &Path) -> Value {
    assert_counts_agree_with(stats, text, &store_counts_at(data_dir))
}

/// [`assert_counts_agree`] against counts read from any store: `(by status, by upload status)`,
/// statuses in lower case, a missing status counting 0.
pub fn assert_counts_agree_with(
    stats: &Value,
    text: &str,
    (store, uploads): &(HashMap<String, i64>, HashMap<String, i64>),
) -> Value {
    let mut total = 0;
    for status in ["queued", "running", "succeeded", "failed"] {
        let from_stats = stats["scans_by_status"][status].as_i64().unwrap();
        let from_metrics =
            sample(text, "certus_assurance_scans", &[("status", status)]).unwrap() as i64;
        let from_store = store.get(status).copied().unwrap_or(0);
        assert_eq!(from_stats, from_metrics, "{status}: /stats vs /metrics");
        assert_eq!(from_stats, from_store, "{status}: /stats vs store");
        total += from_store;
    }
    assert_eq!(stats["total_scans"].as_i64().unwrap(), total);
    for status in ["pending", "permitted", "uploaded", "denied", "failed"] {
        let from_stats = stats["upload_stats"][status].as_i64().unwrap();
        let from_metrics =
            sample(text, "certus_assurance_uploads", &[("status", status)]).unwrap() as i64;
        assert_eq!(
            from_stats, from_metrics,
            "upload {status}: /stats vs /metrics"
        );
        assert_eq!(
            from_stats,
            uploads.get(status).copied().unwrap_or(0),
            "upload {status}: /stats vs store"
        );
    }
    assert_eq!(
        stats["active_streams"].as_f64().unwrap(),
        sample(text, "certus_assurance_active_streams", &[]).unwrap()
    );
    stats.clone()
}

/// The service binary as a real process on a data directory that outlives it, plus the id of
/// every submission it accepted: what the fault-injection and load tests drive and check.
pub struct Service {
    /// The data directory (SQLite file, `work/`, artifacts unless configured elsewhere).
    pub data: PathBuf,
    _data: Option<TempDir>,
    env: Vec<(String, String)>,
    pub process: ServiceProcess,
    pub client: reqwest::Client,
    /// Every `test_id` a submission got 202 for.
    pub accepted: Vec<String>,
}

/// Polls at most this long for a scan (or upload) to reach an expected state.
const SERVICE_WAIT: Duration = Duration::from_secs(90);

impl Service {
    /// Starts the binary on a new data directory with `env` (on top of [`ServiceProcess`]'s).
    pub fn start(env: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let mut service = Service::start_in(dir.path(), env);
        service._data = Some(dir);
        service
    }

    /// Starts the binary on the data directory `data` (which the caller keeps).
    pub fn start_in(data: &Path, env: &[(&str, &str)]) -> Service {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let process = Service::spawn(data, &env);
        Service {
            data: data.to_path_buf(),
            _data: None,
            env,
            process,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            accepted: Vec::new(),
        }
    }

    fn spawn(data: &Path, env: &[(String, String)]) -> ServiceProcess {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ServiceProcess::start(data, &env)
    }

    /// SIGKILL, then a new process on the same data directory and settings.
    pub fn kill9_and_restart(&mut self) {
        self.process.kill9();
        self.process = Service::spawn(&self.data, &self.env);
    }

    pub fn address(&self) -> &str {
        &self.process.address
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Where bundles go: `CERTUS_ASSURANCE_ARTIFACT_ROOT` if set, else `<data>/artifacts`.
    pub fn artifact_root(&self) -> PathBuf {
        self.env
            .iter()
            .find(|(k, _)| k == "CERTUS_ASSURANCE_ARTIFACT_ROOT")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| self.data.join("artifacts"))
    }

    /// GET, answering status and JSON body (Null when the body is not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.address()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST a JSON body, answering status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.address()))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits a scan, asserts 202 and remembers the id.
    pub async fn submit(&mut self, body: Value) -> String {
        let (status, answer) = self.post("/v1/security-scans", &body).await;
        assert_eq!(status, 202, "submit answered {status}: {answer}");
        let id = answer["test_id"].as_str().expect("test_id").to_string();
        self.accepted.push(id.clone());
        id
    }

    pub async fn scan(&self, id: &str) -> Value {
        let (status, scan) = self.get(&format!("/v1/security-scans/{id}")).await;
        assert_eq!(status, 200, "GET scan {id}: {status} {scan}");
        scan
    }

    /// Polls the scan until `done` holds; `what` names the awaited state in the failure.
    pub async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SERVICE_WAIT;
        loop {
            let scan = self.scan(id).await;
            if done(&scan) {
                return scan;
            }
            assert!(
                Instant::now() < deadline,
                "scan {id} never reached {what}: {scan}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for_terminal(&self, id: &str) -> Value {
        self.wait_for(id, "a terminal state", is_terminal).await
    }

    /// Polls until `path` exists (a marker a fault scenario waits for).
    pub async fn wait_for_path(&self, path: &Path, what: &str) {
        let deadline = Instant::now() + SERVICE_WAIT;
        while !path.exists() {
            assert!(Instant::now() < deadline, "{what} never happened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What must hold after any fault: every accepted scan is found by GET, in the list and in
    /// the store, and reaches a terminal state (scans still progressing are waited for);
    /// `/stats` equals `/metrics` and the store; no workspace and no half-written bundle file
    /// is left behind. Returns the final `/stats`.
    pub async fn assert_nothing_lost(&self) -> Value {
        use futures_util::StreamExt;
        use std::collections::HashSet;

        futures_util::stream::iter(self.accepted.iter())
            .map(|id| self.wait_for_terminal(id))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;

        let mut listed = HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/security-scans?limit=500&cursor={c}"),
                None => "/v1/security-scans?limit=500".to_string(),
            };
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "list: {page}");
            for scan in page["scans"].as_array().unwrap() {
                assert!(is_terminal(scan), "listed scan not terminal: {scan}");
                listed.insert(scan["test_id"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        let conn = rusqlite::Connection::open(self.data.join("certus-assurance.db")).unwrap();
        let stored: HashSet<String> = conn
            .prepare("SELECT test_id FROM scans")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for id in &self.accepted {
            assert!(
                listed.contains(id),
                "accepted scan {id} missing from the list"
            );
            assert!(
                stored.contains(id),
                "accepted scan {id} missing from the store"
            );
        }
        assert_eq!(listed, stored, "the list and the store disagree");

        let (status, stats) = self.get("/stats").await;
        assert_eq!(status, 200, "/stats: {stats}");
        let text = metrics_text_at(&self.client, self.address()).await;
        let stats = assert_counts_agree(&stats, &text, &self.data);
        assert_eq!(stats["total_scans"].as_u64().unwrap(), stored.len() as u64);

        // A stopped clone removes its workspace a moment after the scan is recorded.
        let work = self.data.join("work");
        let leftovers = || -> Vec<PathBuf> {
            std::fs::read_dir(&work)
                .map(|rd| rd.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !leftovers().is_empty() {
            assert!(
                Instant::now() < deadline,
                "workspaces left behind: {:?}",
                leftovers()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let half_written = files_under(&self.artifact_root())
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
            .collect::<Vec<_>>();
        assert!(
            half_written.is_empty(),
            "half-written files: {half_written:?}"
        );
        stats
    }
}

pub fn is_terminal(scan: &Value) -> bool {
    scan["status"] == "SUCCEEDED" || scan["status"] == "FAILED"
}

/// Every regular file under `dir` (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}

/// Runs `tests/validate_schemas.py` with `args`; returns (success, output).
pub fn validate_schemas(args: &[std::ffi::OsString]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate_schemas.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (scripts/install-test-deps.sh installs jsonschema)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("ModuleNotFoundError"),
        "jsonschema is missing; run scripts/install-test-deps.sh: {text}"
    );
    (out.status.success(), text)
}

/// A test that cannot run its subject fails here, saying what is `missing`, unless
/// `CERTUS_ASSURANCE_TEST_SKIP` (a comma-separated list of reasons, e.g. `disk-full`; README.md,
/// Development) names its `reason`: then the skip is appended to the file named by
/// `CERTUS_ASSURANCE_TEST_SKIPPED_FILE` (scripts/test.sh sets it and lists the file at the end;
/// default `skipped-tests.txt` in the target directory) and the caller returns.
pub fn cannot_run(reason: &str, test: &str, missing: &str) {
    let opted_out = std::env::var("CERTUS_ASSURANCE_TEST_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|r| r.trim() == reason);
    assert!(
        opted_out,
        "{test} cannot run: {missing}. Provide it, or set CERTUS_ASSURANCE_TEST_SKIP={reason} \
         to skip this test (scripts/test.sh lists the skipped tests)"
    );
    let file = std::env::var_os("CERTUS_ASSURANCE_TEST_SKIPPED_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/<profile>/deps/<test binary>
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().join("skipped-tests.txt")
        });
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .unwrap_or_else(|e| panic!("recording the skip in {}: {e}", file.display()));
    std::io::Write::write_all(
        &mut out,
        format!("{test} (CERTUS_ASSURANCE_TEST_SKIP={reason}): {missing}\n").as_bytes(),
    )
    .unwrap();
    eprintln!("SKIPPED {test}: {missing}");
}
