//! What the upload tests need: a real S3 server (`moto_server`, installed by
//! scripts/install-test-deps.sh) on a loopback port, an S3 client to look into it, a TCP proxy in
//! front of it that can cut S3 off in the middle of an upload, and a stand-in for the Trust
//! service speaking its HTTP contract (permit, deny, 500, garbage, hang).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::free_port;

/// The python that has moto, as scripts/install-test-deps.sh left it: its virtualenv first, else
/// the `python3` on PATH.
fn moto_python() -> PathBuf {
    let venv = std::env::var_os("CERTUS_TEST_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/certus-assurance/moto-venv")
        });
    let python = venv.join("bin/python3");
    if venv.join("bin/moto_server").is_file() && python.is_file() {
        python
    } else {
        PathBuf::from("python3")
    }
}

/// Waits (at most 30 s) until something accepts connections on the loopback `port`.
pub fn wait_until_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real S3-compatible server (moto) on a loopback port, stopped on drop.
pub struct MotoServer {
    pub port: u16,
    child: Child,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        MotoServer::start_on(free_port())
    }

    /// A moto server on `port` (to bring S3 back where the service expects it); empty.
    pub fn start_on(port: u16) -> MotoServer {
        let child = Command::new(moto_python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("moto_server starts (run scripts/install-test-deps.sh)");
        wait_until_listening(port, "moto_server");
        MotoServer { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain S3 client for the tests' own looks into the server.
pub struct S3 {
    pub client: aws_sdk_s3::Client,
}

impl S3 {
    pub fn new(endpoint: &str) -> S3 {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .http_client(http)
            // The tests hash what they read themselves; moto's answer for multipart objects
            // carries a part checksum the SDK would take for the whole object's.
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        S3 {
            client: aws_sdk_s3::Client::from_conf(config),
        }
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("create bucket");
    }

    /// Every key in the bucket with its size, sorted.
    pub async fn objects(&self, bucket: &str) -> Vec<(String, u64)> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list objects");
        let mut objects: Vec<(String, u64)> = out
            .contents()
            .iter()
            .map(|o| (o.key().unwrap().to_string(), o.size().unwrap_or(0) as u64))
            .collect();
        objects.sort();
        objects
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get s3://{bucket}/{key}: {e:?}"))
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec()
    }

    /// User metadata and ETag of an object.
    pub async fn head(&self, bucket: &str, key: &str) -> (HashMap<String, String>, String) {
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("head s3://{bucket}/{key}: {e:?}"));
        (
            out.metadata().cloned().unwrap_or_default(),
            out.e_tag().unwrap_or_default().to_string(),
        )
    }

    /// Keys of incomplete multipart uploads.
    pub async fn multipart_uploads(&self, bucket: &str) -> Vec<String> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .expect("list multipart uploads");
        out.uploads()
            .iter()
            .map(|u| u.key().unwrap_or_default().to_string())
            .collect()
    }
}

/// A TCP proxy in front of S3 that can be cut: once `cut_after` bytes went upstream (or on
/// `cut_now`), every connection is closed and new ones are refused, as if S3 stopped.
pub struct S3Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

struct ProxyState {
    upstream: u16,
    sent: AtomicU64,
    cut_after: AtomicU64,
    /// Once this many bytes went upstream, forwarding stops and S3 stalls (see `stalled`).
    stall_after: AtomicU64,
    down: AtomicBool,
    /// New connections are held open and never forwarded.
    stalled: AtomicBool,
    /// This many next connections are closed at once (a transient failure).
    drop_next: AtomicU64,
    cut: Mutex<CancellationToken>,
}

impl ProxyState {
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.lock().unwrap().cancel();
    }

    /// Closes every open connection (and releases held ones).
    fn close_all(&self) {
        let old = std::mem::replace(&mut *self.cut.lock().unwrap(), CancellationToken::new());
        old.cancel();
    }
}

impl S3Proxy {
    pub async fn start(upstream: u16) -> S3Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState {
            upstream,
            sent: AtomicU64::new(0),
            cut_after: AtomicU64::new(u64::MAX),
            stall_after: AtomicU64::new(u64::MAX),
            down: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            drop_next: AtomicU64::new(0),
            cut: Mutex::new(CancellationToken::new()),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if accept_state.down.load(Ordering::SeqCst)
                    || accept_state
                        .drop_next
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    drop(client);
                    continue;
                }
                if accept_state.stalled.load(Ordering::SeqCst) {
                    let held = accept_state.cut.lock().unwrap().clone();
                    tokio::spawn(async move {
                        let _client = client;
                        held.cancelled().await;
                    });
                    continue;
                }
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", state.upstream)).await else {
                        return;
                    };
                    let cut = state.cut.lock().unwrap().clone();
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up_state = state.clone();
                    let held = cut.clone();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let total =
                                up_state.sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                            if total > up_state.cut_after.load(Ordering::SeqCst) {
                                up_state.cut();
                                break;
                            }
                            if total > up_state.stall_after.load(Ordering::SeqCst) {
                                up_state.stalled.store(true, Ordering::SeqCst);
                                held.cancelled().await;
                                break;
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = async { tokio::join!(up, down) } => {}
                    }
                });
            }
        });
        S3Proxy { port, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts S3 off once `bytes` more bytes went upstream.
    pub fn cut_after(&self, bytes: u64) {
        let sent = self.state.sent.load(Ordering::SeqCst);
        self.state.cut_after.store(sent + bytes, Ordering::SeqCst);
    }

    /// S3 stalls once `bytes` more bytes went upstream: the request under way and every later
    /// one are held open and never answered, as if S3 hung in the middle of an upload.
    pub fn stall_after(&self, bytes: u64) {
        let sent = self.state.sent.load(Ordering::SeqCst);
        self.state.stall_after.store(sent + bytes, Ordering::SeqCst);
    }

    /// Bytes forwarded to S3 so far.
    pub fn sent_upstream(&self) -> u64 {
        self.state.sent.load(Ordering::SeqCst)
    }

    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::SeqCst)
    }

    /// The next `n` connections are closed as soon as they are accepted; open ones close too.
    pub fn drop_next_connections(&self, n: u64) {
        self.state.drop_next.store(n, Ordering::SeqCst);
        self.state.close_all();
    }

    /// S3 stops answering: open connections close, new ones are accepted and never answered.
    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
        self.state.close_all();
    }

    /// S3 is back.
    pub fn restore(&self) {
        self.state.cut_after.store(u64::MAX, Ordering::SeqCst);
        self.state.stall_after.store(u64::MAX, Ordering::SeqCst);
        self.state.stalled.store(false, Ordering::SeqCst);
        self.state.down.store(false, Ordering::SeqCst);
        self.state.close_all();
    }
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.state.cut();
        self.task.abort();
    }
}

/// How the Trust stand-in answers.
#[derive(Clone, Debug, PartialEq)]
pub enum TrustMode {
    /// 200 with a permit (`upload_permission_id` = `perm-<n>`).
    Permit,
    /// 200 with `permitted: false` and this reason.
    Deny(String),
    /// 500 with a JSON detail.
    ServerError,
    /// 200 with a body that is not a Trust answer.
    Garbage,
    /// Never answers (the client's timeout must fire).
    Hang,
}

type Hook = Box<dyn Fn(&Value) + Send + Sync>;

struct TrustState {
    mode: Mutex<TrustMode>,
    delay: Mutex<Duration>,
    requests: Mutex<Vec<(Option<String>, Value)>>,
    permits: AtomicUsize,
    before_answer: Mutex<Option<Hook>>,
}

/// A test server speaking Trust's `POST /v1/verify-and-permit-upload`.
pub struct TrustStandIn {
    pub url: String,
    state: Arc<TrustState>,
    task: JoinHandle<()>,
}

async fn verify_and_permit(
    State(state): State<Arc<TrustState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    state.requests.lock().unwrap().push((auth, request.clone()));
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(hook) = state.before_answer.lock().unwrap().as_ref() {
        hook(&request);
    }
    let mode = state.mode.lock().unwrap().clone();
    match mode {
        TrustMode::Permit => {
            let n = state.permits.fetch_add(1, Ordering::SeqCst) + 1;
            axum::Json(json!({
                "permitted": true,
                "upload_permission_id": format!("perm-{n}"),
                "reason": "all checks passed",
                "verification_proof": {
                    "chain_verified": true,
                    "signer_outer": "certus-trust@example.com",
                    "rekor_entry_uuid": format!("rekor-{n}"),
                },
                "storage_config": {"raw_s3": request["storage_destinations"]["raw_s3"]},
            }))
            .into_response()
        }
        TrustMode::Deny(reason) => axum::Json(json!({
            "permitted": false,
            "upload_permission_id": null,
            "reason": reason,
            "verification_proof": null,
        }))
        .into_response(),
        TrustMode::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"detail": "trust database unavailable"})),
        )
            .into_response(),
        TrustMode::Garbage => (StatusCode::OK, "<html>maintenance</html>").into_response(),
        TrustMode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

impl TrustStandIn {
    pub async fn start(mode: TrustMode) -> TrustStandIn {
        let state = Arc::new(TrustState {
            mode: Mutex::new(mode),
            delay: Mutex::new(Duration::ZERO),
            requests: Mutex::new(Vec::new()),
            permits: AtomicUsize::new(0),
            before_answer: Mutex::new(None),
        });
        let app = Router::new()
            .route("/v1/verify-and-permit-upload", post(verify_and_permit))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TrustStandIn {
            url: format!("http://127.0.0.1:{port}"),
            state,
            task,
        }
    }

    pub fn set_mode(&self, mode: TrustMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Waits this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Runs `hook` with the request body before each answer.
    pub fn before_answer(&self, hook: impl Fn(&Value) + Send + Sync + 'static) {
        *self.state.before_answer.lock().unwrap() = Some(Box::new(hook));
    }

    /// Request bodies received so far, with their Authorization header.
    pub fn requests(&self) -> Vec<(Option<String>, Value)> {
        self.state.requests.lock().unwrap().clone()
    }
}

impl Drop for TrustStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A self-signed certificate and key for 127.0.0.1 in `dir` (`cert.pem`, `key.pem`).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (run scripts/install-test-deps.sh)");
    assert!(made.success(), "openssl req failed");
    (cert, key)
}

/// `openssl s_server` with a self-signed certificate for 127.0.0.1: an HTTPS server whose
/// certificate no trust store accepts. Stopped on drop.
pub struct UntrustedTlsServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl UntrustedTlsServer {
    pub fn start() -> UntrustedTlsServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_cert(dir.path());
        let port = free_port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "openssl s_server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        UntrustedTlsServer {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for UntrustedTlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Turns uploads on against `trust_url` (sending `trust_token`) and the S3 server at
/// `s3_endpoint` (moto's credentials), into the `raw` and `golden` buckets.
pub fn enable_uploads_with(
    c: &mut certus_assurance::config::Config,
    trust_url: &str,
    trust_token: &str,
    s3_endpoint: &str,
) {
    let u = &mut c.upload;
    u.enabled = true;
    u.trust_base_url = Some(trust_url.to_string());
    u.trust_token = Some(certus_assurance::config::Secret::new(trust_token));
    u.trust_timeout = Duration::from_secs(2);
    u.s3_endpoint_url = Some(s3_endpoint.to_string());
    u.s3_access_key_id = Some("testing".into());
    u.s3_secret_access_key = Some(certus_assurance::config::Secret::new("testing"));
    u.raw_bucket = "raw".into();
    u.golden_bucket = "golden".into();
    u.s3_timeout = Duration::from_secs(10);
    u.s3_max_attempts = 2;
}

/// The docker-compose stack's Trust stand-in (deploy/trust-stand-in/trust_stand_in.py) run by
/// the system's python3 on a loopback port with the given environment; stopped on drop.
pub struct ComposeTrustStandIn {
    pub url: String,
    child: Child,
}

impl ComposeTrustStandIn {
    pub fn start(env: &[(&str, &str)]) -> ComposeTrustStandIn {
        let port = free_port();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/trust-stand-in/trust_stand_in.py");
        let child = Command::new("python3")
            .arg(script)
            .envs(env.iter().copied())
            .env("TRUST_STAND_IN_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "python3 runs the Trust stand-in (scripts/install-test-deps.sh installs python3)",
            );
        wait_until_listening(port, "the Trust stand-in");
        ComposeTrustStandIn {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

impl Drop for ComposeTrustStandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
