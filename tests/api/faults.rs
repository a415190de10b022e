//! Fault injection against the service binary as a real process: kill -9 during a clone, a
//! scan and an upload, then a restart on the same data directory; Trust down; S3 down and back;
//! a full artifact disk; a git server that stalls mid-clone. After every scenario
//! [`Service::assert_nothing_lost`] checks that no accepted scan is missing or stuck, that
//! `/stats` equals the store, and that no workspace or half-written file is left behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{cannot_run, planted_aws_key, scan_body, GitServer, Service};
use crate::upload_helpers::{MotoServer, S3Proxy, TrustMode, TrustStandIn, S3};

const TRUST_TOKEN: &str = "trust-test-token";

/// Deterministic bytes that do not compress (so a pack is as large as its content).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A repository holding 1 MiB of incompressible data: its clone takes a while through a
/// throttled [`GitProxy`].
fn large_repo(git: &GitServer, name: &str) {
    git.create_repo(name, &[("README.md", "# large\n")]);
    std::fs::write(git.repo_path(name).join("blob.bin"), noise(1 << 20, 7)).unwrap();
    git.commit(name, &[], "add a large blob");
}

/// A TCP proxy in front of `git daemon` whose answers are throttled, or stall for good after a
/// number of bytes on each connection: a slow or hung git server in the middle of a clone.
struct GitProxy {
    port: u16,
    /// Bytes sent back to the service so far, over all connections.
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl GitProxy {
    /// Forwards `chunk` bytes of every answer, then waits `pause`; after `stall_after` bytes on
    /// one connection it stops forwarding and holds the connection open.
    async fn start(upstream: u16, chunk: usize, pause: Duration, stall_after: u64) -> GitProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (task_sent, task_stop) = (sent.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (sent, stop) = (task_sent.clone(), task_stop.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    };
                    let down = async move {
                        let mut buf = vec![0u8; chunk];
                        let mut on_this = 0u64;
                        loop {
                            if on_this >= stall_after || stop.load(Ordering::SeqCst) {
                                // Hold the connection open without a byte more.
                                std::future::pending::<()>().await;
                            }
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            on_this += n as u64;
                            sent.fetch_add(n as u64, Ordering::SeqCst);
                            tokio::time::sleep(pause).await;
                        }
                    };
                    tokio::join!(up, down);
                });
            }
        });
        GitProxy {
            port,
            sent,
            stop,
            task,
        }
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    async fn wait_for_bytes(&self, bytes: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.sent.load(Ordering::SeqCst) < bytes {
            assert!(
                std::time::Instant::now() < deadline,
                "the clone never got {bytes} bytes in"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for GitProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

fn errors_of(scan: &Value) -> String {
    scan["errors"].to_string()
}

/// kill -9 while a clone is transferring: after the restart the scan is FAILED
/// (`interrupted`), the scan queued behind it runs, and the crash's workspace is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_clone_interrupts_that_scan_and_keeps_the_queue() {
    let git = GitServer::start();
    large_repo(&git, "large");
    git.create_repo("small", &[("README.md", "# small\n")]);
    let slow = GitProxy::start(git.port, 4096, Duration::from_millis(20), u64::MAX).await;
    let mut service = Service::start(&[("CERTUS_ASSURANCE_MAX_WORKERS", "1")]);
    let cloning = service.submit(scan_body(&slow.url("large"))).await;
    let queued = service.submit(scan_body(&git.url("small"))).await;

    // 64 KiB of a 1 MiB pack are through: the clone is under way.
    slow.wait_for_bytes(64 * 1024).await;
    let scan = service.scan(&cloning).await;
    assert_eq!(scan["status"], "RUNNING", "{scan}");
    assert_eq!(service.scan(&queued).await["status"], "QUEUED");
    service.kill9_and_restart();

    let scan = service.wait_for_terminal(&cloning).await;
    assert_eq!(scan["status"], "FAILED", "{scan}");
    assert_eq!(scan["failure_reason"], "interrupted", "{scan}");
    assert_eq!(
        service.wait_for_terminal(&queued).await["status"],
        "SUCCEEDED"
    );
    let stats = service.assert_nothing_lost().await;
    assert_eq!(
        stats["scans_by_status"],
        json!({"queued": 0, "running": 0, "succeeded": 1, "failed": 1})
    );
}

/// A fake external scanner (`bandit` on the tool path) that records its pid in `marker` and
/// sleeps: a scan that is caught in its scanning phase.
fn sleeping_tool(dir: &Path, marker: &Path) {
    let script = dir.join("bandit");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > '{}.part' && mv '{0}.part' '{0}'\nexec /bin/sleep 120\n",
            marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether process `pid` is alive (and not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// kill -9 while an external scanner runs: after the restart the scan is FAILED
/// (`interrupted`) with its workspace gone, and new scans run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_scanning_interrupts_the_scan_and_new_scans_run() {
    let git = GitServer::start();
    git.create_repo("py", &[("app.py", "print('hello')\n")]);
    let tools = tempfile::tempdir().unwrap();
    let marker = tools.path().join("bandit.pid");
    sleeping_tool(tools.path(), &marker);
    let tool_path = tools.path().display().to_string();
    let mut service = Service::start(&[("CERTUS_ASSURANCE_TOOL_PATH", &tool_path)]);
    let mut body = scan_body(&git.url("py"));
    body["profile"] = json!("standard");
    let scanning = service.submit(body).await;
    service
        .wait_for_path(&marker, "the external scanner starting")
        .await;
    let tool_pid: u32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(service.scan(&scanning).await["status"], "RUNNING");
    service.kill9_and_restart();
    // The kernel stops the scanner with the service (it would otherwise run on, orphaned).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(tool_pid) {
        if std::time::Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", &tool_pid.to_string()])
                .status();
            panic!("scanner process {tool_pid} outlived the service's kill -9");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let scan = service.wait_for_terminal(&scanning).await;
    assert_eq!(scan["status"], "FAILED", "{scan}");
    assert_eq!(scan["failure_reason"], "interrupted", "{scan}");
    let after = service.submit(scan_body(&git.url("py"))).await;
    assert_eq!(
        service.wait_for_terminal(&after).await["status"],
        "SUCCEEDED"
    );
    service.assert_nothing_lost().await;
}

/// Buckets and settings of the upload scenarios.
const RAW: &str = "raw";
const GOLDEN: &str = "golden";

fn upload_env(trust_url: &str, s3_endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CERTUS_ASSURANCE_ENABLE_S3_UPLOAD", "true".into()),
        ("CERTUS_ASSURANCE_TRUST_BASE_URL", trust_url.into()),
        ("CERTUS_ASSURANCE_TRUST_TOKEN", TRUST_TOKEN.into()),
        ("CERTUS_ASSURANCE_TRUST_TIMEOUT_SECONDS", "2".into()),
        ("CERTUS_ASSURANCE_S3_ENDPOINT_URL", s3_endpoint.into()),
        ("CERTUS_ASSURANCE_S3_ACCESS_KEY_ID", "testing".into()),
        ("CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY", "testing".into()),
        ("CERTUS_ASSURANCE_DATALAKE_RAW_BUCKET", RAW.into()),
        ("CERTUS_ASSURANCE_DATALAKE_GOLDEN_BUCKET", GOLDEN.into()),
        ("CERTUS_ASSURANCE_S3_TIMEOUT_SECONDS", "5".into()),
        ("CERTUS_ASSURANCE_S3_MAX_ATTEMPTS", "2".into()),
    ]
}

async fn create_buckets(s3: &S3) {
    s3.create_bucket(RAW).await;
    s3.create_bucket(GOLDEN).await;
}

/// What the upload scenarios run against: moto (optionally behind an [`S3Proxy`]), the Trust
/// stand-in, and the service with one SUCCEEDED scan (`id`) ready to upload.
struct UploadRig {
    moto: Option<MotoServer>,
    s3: S3,
    proxy: Option<S3Proxy>,
    trust: Option<TrustStandIn>,
    _git: GitServer,
    service: Service,
    id: String,
}

impl UploadRig {
    async fn start(trust: TrustMode, through_proxy: bool) -> UploadRig {
        let moto = MotoServer::start();
        let s3 = S3::new(&moto.endpoint());
        create_buckets(&s3).await;
        let proxy = match through_proxy {
            true => Some(S3Proxy::start(moto.port).await),
            false => None,
        };
        let endpoint = proxy
            .as_ref()
            .map(S3Proxy::endpoint)
            .unwrap_or_else(|| moto.endpoint());
        let trust = TrustStandIn::start(trust).await;
        let git = GitServer::start();
        git.create_repo("demo", &[("README.md", "# demo\n")]);
        let env = upload_env(&trust.url, &endpoint);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut service = Service::start(&env);
        let id = service.submit(scan_body(&git.url("demo"))).await;
        let scan = service.wait_for_terminal(&id).await;
        assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
        UploadRig {
            moto: Some(moto),
            s3,
            proxy,
            trust: Some(trust),
            _git: git,
            service,
            id,
        }
    }
}

/// The scan is still SUCCEEDED and its upload ended `failed` (not in flight) with a reason
/// that contains `reason`.
fn assert_upload_failed(scan: &Value, reason: &str) {
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(scan["upload_status"], "failed", "{scan}");
    assert_eq!(scan["upload_in_progress"], false, "{scan}");
    let text = scan["upload_reason"].as_str().unwrap_or_default();
    assert!(!text.is_empty() && text.contains(reason), "{scan}");
}

async fn request_upload(service: &Service, id: &str) -> (u16, Value) {
    service
        .post(
            &format!("/v1/security-scans/{id}/upload-request"),
            &json!({"tier": "basic"}),
        )
        .await
}

async fn wait_for_upload_end(service: &Service, id: &str) -> Value {
    service
        .wait_for(id, "the end of its upload", |s| {
            s["upload_in_progress"] == false
                && ["uploaded", "failed", "denied"].contains(&s["upload_status"].as_str().unwrap())
        })
        .await
}

/// A new upload-request is accepted and completes: every file in S3, the counts agree.
async fn upload_succeeds(service: &Service, s3: &S3, id: &str) {
    let (status, answer) = request_upload(service, id).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload_end(service, id).await;
    assert_eq!(scan["upload_status"], "uploaded", "{scan}");
    assert_uploaded(s3, &scan).await;
    let stats = service.assert_nothing_lost().await;
    assert_eq!(stats["upload_stats"]["uploaded"], 1);
    assert_eq!(stats["upload_stats"]["failed"], 0);
}

/// An upload-request answers `status` with a detail containing `detail`, and leaves the upload
/// `failed` and the scan SUCCEEDED.
async fn upload_refused(service: &Service, id: &str, status: u16, detail: &str) {
    let (answered, answer) = request_upload(service, id).await;
    assert_eq!(answered, status, "{answer}");
    let text = answer["detail"].as_str().unwrap();
    assert!(text.contains(detail), "{text}");
    assert_upload_failed(&service.scan(id).await, "");
    service.assert_nothing_lost().await;
}

/// Every bundle file of `scan` is in the golden bucket.
async fn assert_uploaded(s3: &S3, scan: &Value) {
    let id = scan["test_id"].as_str().unwrap();
    let golden: Vec<String> = s3
        .objects(GOLDEN)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains(id))
        .collect();
    for file in scan["artifacts"].as_array().unwrap() {
        let file = file.as_str().unwrap();
        assert!(
            golden
                .iter()
                .any(|k| k.ends_with(&format!("/golden/{file}"))),
            "{file} not in the golden bucket: {golden:?}"
        );
    }
}

/// kill -9 in the middle of an upload (S3 hangs after the first bytes): after the restart the
/// upload is `failed` with a reason, the scan stays SUCCEEDED, and a new upload-request
/// completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_an_upload_leaves_it_failed_and_a_new_request_completes_it() {
    let mut rig = UploadRig::start(TrustMode::Permit, true).await;
    let id = rig.id.clone();
    let proxy = rig.proxy.take().unwrap();
    let service = &mut rig.service;

    // Some files reach S3, then it hangs with the upload half done.
    let bundle_bytes: u64 = crate::helpers::files_under(&service.artifact_root().join(&id))
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    let half = bundle_bytes / 2;
    proxy.stall_after(half);
    let (status, answer) = request_upload(service, &id).await;
    assert_eq!(status, 202, "{answer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while proxy.sent_upstream() < half {
        assert!(std::time::Instant::now() < deadline, "no upload bytes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let scan = service.scan(&id).await;
    assert_eq!(scan["upload_status"], "permitted", "{scan}");
    assert_eq!(scan["upload_in_progress"], true, "{scan}");
    let landed = rig.s3.objects(RAW).await.len();
    let declared = scan["artifacts"].as_array().unwrap().len();
    assert!(
        landed > 0 && landed < declared,
        "{landed} of {declared} files in S3: not mid-way"
    );
    service.kill9_and_restart();

    assert_upload_failed(&service.scan(&id).await, "stopped while this upload ran");
    service.assert_nothing_lost().await;

    proxy.restore();
    upload_succeeds(service, &rig.s3, &id).await;
}

/// Trust hanging past its timeout, then refusing connections: each upload-request answers a
/// clear error, the upload ends `failed` (not stuck `permitted`), the scan stays SUCCEEDED,
/// and nothing reaches S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_down_fails_the_upload_with_a_clear_detail_and_leaves_the_scan_succeeded() {
    let mut rig = UploadRig::start(TrustMode::Hang, false).await;
    let (service, id) = (&rig.service, &rig.id);

    // Hanging: the 2 s Trust timeout fires.
    upload_refused(service, id, 504, "Trust").await;
    // Down: connection refused.
    drop(rig.trust.take());
    let (service, id) = (&rig.service, &rig.id);
    upload_refused(service, id, 502, "could not be reached").await;
    assert_eq!(rig.s3.objects(RAW).await, vec![]);
    assert_eq!(rig.s3.objects(GOLDEN).await, vec![]);
    let stats = service.assert_nothing_lost().await;
    assert_eq!(stats["upload_stats"]["failed"], 1);
    assert_eq!(stats["upload_stats"]["permitted"], 0);
}

/// S3 stopped (connection refused): the upload fails after its retries with a reason; with S3
/// back on the same address, a new upload-request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_fails_the_upload_and_a_new_request_succeeds_once_s3_is_back() {
    let mut rig = UploadRig::start(TrustMode::Permit, false).await;
    let moto = rig.moto.take().unwrap();
    let port = moto.port;
    let (service, id) = (&rig.service, &rig.id);

    drop(moto);
    let (status, answer) = request_upload(service, id).await;
    assert_eq!(status, 202, "{answer}");
    let scan = wait_for_upload_end(service, id).await;
    assert_upload_failed(&scan, "");
    let stats = service.assert_nothing_lost().await;
    assert_eq!(stats["upload_stats"]["failed"], 1);

    let moto = MotoServer::start_on(port);
    let s3 = S3::new(&moto.endpoint());
    create_buckets(&s3).await;
    upload_succeeds(service, &s3, id).await;
}

/// A tmpfs of `size` mounted on a new directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs { dir })
    }

    /// [`Tmpfs::mount`]; where mounting is not permitted, the test fails saying so, or is
    /// skipped and recorded under CERTUS_ASSURANCE_TEST_SKIP=disk-full ([`cannot_run`]).
    fn mount_or_skip(size: &str, test: &str) -> Option<Tmpfs> {
        match Tmpfs::mount(size) {
            Ok(t) => Some(t),
            Err(why) => {
                cannot_run(
                    "disk-full",
                    test,
                    &format!(
                        "mounting a {size} tmpfs (mount -t tmpfs) is not permitted here ({why}); \
                         the disk-full tests need root or CAP_SYS_ADMIN"
                    ),
                );
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A repository whose findings alone (thousands of distinct planted AWS key ids) make a bundle
/// of several MiB.
fn noisy_repo(git: &GitServer, name: &str) {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let prefix = &planted_aws_key()[..4];
    let files: Vec<(String, String)> = (0..3u64)
        .map(|f| {
            let bytes = noise(2500 * 16, f + 11);
            let text: String = bytes
                .chunks(16)
                .map(|c| {
                    let id: String = c
                        .iter()
                        .map(|b| ALPHABET[(b % 32) as usize] as char)
                        .collect();
                    format!("aws_access_key_id = \"{prefix}{id}\"\n")
                })
                .collect();
            (format!("keys{f}.env"), text)
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    git.create_repo(name, &refs);
}

/// The artifact directory on a 2 MiB tmpfs: a scan whose bundle does not fit fails with a
/// message that says the disk is full and what to do, the service keeps serving, scans succeed
/// again once space is freed, and the store stays consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_artifact_disk_fails_the_scan_clearly_and_scans_resume_once_space_is_freed() {
    let Some(tmpfs) = Tmpfs::mount_or_skip(
        "2m",
        "a_full_artifact_disk_fails_the_scan_clearly_and_scans_resume_once_space_is_freed",
    ) else {
        return;
    };
    let artifacts: PathBuf = tmpfs.path().to_path_buf();
    let git = GitServer::start();
    noisy_repo(&git, "noisy");
    git.create_repo("small", &[("README.md", "# small\n")]);
    let mut service = Service::start(&[(
        "CERTUS_ASSURANCE_ARTIFACT_ROOT",
        artifacts.to_str().unwrap(),
    )]);

    // Findings that do not fit in 2 MiB.
    let big = service.submit(scan_body(&git.url("noisy"))).await;
    let scan = service.wait_for_terminal(&big).await;
    assert_eq!(scan["status"], "FAILED", "{scan}");
    assert_eq!(scan["failure_reason"], "internal", "{scan}");
    let errors = errors_of(&scan);
    assert!(
        errors.contains("disk is full") && errors.contains("free space"),
        "{errors}"
    );
    assert!(!errors.contains(artifacts.to_str().unwrap()), "{errors}");
    let (status, health) = service.get("/health").await;
    assert_eq!(status, 200, "{health}");
    service.assert_nothing_lost().await;

    // The disk filled up by something else: even a small bundle does not fit.
    let filler = artifacts.join("filler");
    let free = fs_free_bytes(&artifacts);
    std::fs::write(&filler, vec![0u8; free.saturating_sub(8 * 1024) as usize]).unwrap();
    let small = service.submit(scan_body(&git.url("small"))).await;
    let scan = service.wait_for_terminal(&small).await;
    assert_eq!(scan["status"], "FAILED", "{scan}");
    assert!(errors_of(&scan).contains("disk is full"), "{scan}");
    service.assert_nothing_lost().await;

    // Space freed: scans succeed again.
    std::fs::remove_file(&filler).unwrap();
    let again = service.submit(scan_body(&git.url("small"))).await;
    let scan = service.wait_for_terminal(&again).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let stats = service.assert_nothing_lost().await;
    assert_eq!(
        stats["scans_by_status"],
        json!({"queued": 0, "running": 0, "succeeded": 1, "failed": 2})
    );
    drop(service);
    drop(tmpfs);
}

/// The data directory (SQLite database, workspaces, bundles) on a full tmpfs: submissions answer
/// 507 with a detail that says the disk is full, nothing half-stored; reads keep working; once
/// space is freed, submissions are accepted and run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_disk_refuses_submissions_with_507_and_recovers_once_space_is_freed() {
    let Some(tmpfs) = Tmpfs::mount_or_skip(
        "8m",
        "a_full_data_disk_refuses_submissions_with_507_and_recovers_once_space_is_freed",
    ) else {
        return;
    };
    let git = GitServer::start();
    git.create_repo("small", &[("README.md", "# small\n")]);
    let mut service = Service::start_in(tmpfs.path(), &[]);
    let first = service.submit(scan_body(&git.url("small"))).await;
    assert_eq!(
        service.wait_for_terminal(&first).await["status"],
        "SUCCEEDED"
    );

    let filler = tmpfs.path().join("filler");
    fill_up(&filler);
    for _ in 0..3 {
        let (status, answer) = service
            .post("/v1/security-scans", &scan_body(&git.url("small")))
            .await;
        assert_eq!(status, 507, "{answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(
            detail.contains("disk is full") && detail.contains("free space"),
            "{detail}"
        );
    }
    // An archive upload on the full disk answers 507 as well.
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "app.py", &b"x = 1\n"[..])
        .unwrap();
    let (content_type, body) =
        crate::scanning::multipart(&archive.into_inner().unwrap(), "src.tar");
    let response = service
        .client
        .post(format!(
            "{}/v1/security-scans/upload-archive",
            service.address()
        ))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 507);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["detail"].as_str().unwrap().contains("disk is full"),
        "{answer}"
    );
    let (status, health) = service.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(service.scan(&first).await["status"], "SUCCEEDED");
    let stats = service.assert_nothing_lost().await;
    assert_eq!(stats["total_scans"], 1);

    std::fs::remove_file(&filler).unwrap();
    let again = service.submit(scan_body(&git.url("small"))).await;
    assert_eq!(
        service.wait_for_terminal(&again).await["status"],
        "SUCCEEDED"
    );
    let stats = service.assert_nothing_lost().await;
    assert_eq!(stats["scans_by_status"]["succeeded"], 2);
    drop(service);
    drop(tmpfs);
}

/// The data disk fills up while a scan clones: the scan fails as `clone_failed` with a message
/// that says the disk is full (and shows no server path), its workspace is removed, and scans
/// run again once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_disk_filling_up_during_a_clone_fails_the_scan_clearly() {
    let Some(tmpfs) = Tmpfs::mount_or_skip(
        "8m",
        "a_data_disk_filling_up_during_a_clone_fails_the_scan_clearly",
    ) else {
        return;
    };
    let git = GitServer::start();
    large_repo(&git, "large");
    git.create_repo("small", &[("README.md", "# small\n")]);
    let slow = GitProxy::start(git.port, 4096, Duration::from_millis(20), u64::MAX).await;
    let mut service = Service::start_in(tmpfs.path(), &[]);
    let id = service.submit(scan_body(&slow.url("large"))).await;
    slow.wait_for_bytes(64 * 1024).await;

    let filler = tmpfs.path().join("filler");
    fill_up(&filler);
    let scan = service.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "FAILED", "{scan}");
    assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    let errors = errors_of(&scan);
    assert!(
        errors.contains("disk is full") && errors.contains("free space"),
        "{errors}"
    );
    assert!(!errors.contains(tmpfs.path().to_str().unwrap()), "{errors}");
    service.assert_nothing_lost().await;

    std::fs::remove_file(&filler).unwrap();
    let again = service.submit(scan_body(&git.url("small"))).await;
    assert_eq!(
        service.wait_for_terminal(&again).await["status"],
        "SUCCEEDED"
    );
    service.assert_nothing_lost().await;
    drop(service);
    drop(tmpfs);
}

/// Only the database on a tmpfs that fills up while a scan runs: the outcome, which cannot be
/// stored while the disk is full, is stored once space is freed; the scan does not stay RUNNING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_ending_while_the_database_disk_is_full_is_recorded_once_space_is_freed() {
    let Some(tmpfs) = Tmpfs::mount_or_skip(
        "8m",
        "a_scan_ending_while_the_database_disk_is_full_is_recorded_once_space_is_freed",
    ) else {
        return;
    };
    // Workspaces and bundles elsewhere: only the store runs out of space.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir(elsewhere.path().join("work")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("work"), tmpfs.path().join("work")).unwrap();
    let artifacts = elsewhere.path().join("artifacts");
    let git = GitServer::start();
    large_repo(&git, "large");
    let slow = GitProxy::start(git.port, 4096, Duration::from_millis(20), u64::MAX).await;
    let mut service = Service::start_in(
        tmpfs.path(),
        &[(
            "CERTUS_ASSURANCE_ARTIFACT_ROOT",
            artifacts.to_str().unwrap(),
        )],
    );
    let id = service.submit(scan_body(&slow.url("large"))).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/security-scans/{id}/stream",
        service.address().trim_start_matches("http://")
    ))
    .await
    .unwrap();
    slow.wait_for_bytes(64 * 1024).await;
    let filler = tmpfs.path().join("filler");
    fill_up(&filler);

    // The terminal event goes out before the outcome is stored.
    let mut ended = None;
    while let Some(Ok(message)) = futures_util::StreamExt::next(&mut ws).await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            if event["type"] == "scan_complete" {
                ended = Some(event);
                break;
            }
        }
    }
    let ended = ended.expect("scan_complete");
    // Longer than the few retries after which a scan was once left RUNNING for good.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let scan = service.scan(&id).await;
    assert_eq!(
        scan["status"], "RUNNING",
        "the store took the outcome on a full disk: {scan}"
    );

    std::fs::remove_file(&filler).unwrap();
    let scan = service.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], ended["status"], "{scan}");
    service.assert_nothing_lost().await;
    drop(service);
    drop(tmpfs);
}

/// Free bytes on the file system holding `dir` (from `df`).
/// Writes `filler` until its file system is full. A clone may be writing to the same file system
/// at the same time, so the free space can shrink while this writes: running out is the goal,
/// not an error.
fn fill_up(filler: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(filler).expect("the filler file can be created");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", filler.display()),
        }
    }
    // The last partial blocks: one byte at a time until nothing more fits.
    while matches!(file.write(&[0u8]), Ok(1)) {}
    let _ = file.sync_all();
}

fn fs_free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// A git server that stops sending in the middle of the pack: the clone fails as
/// `clone_failed` once the stall timeout (and its retries) ran out, with a message that says
/// what happened, and no workspace is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_server_stalling_mid_clone_fails_the_scan_as_clone_failed() {
    let git = GitServer::start();
    large_repo(&git, "large");
    let stalling = GitProxy::start(git.port, 4096, Duration::ZERO, 64 * 1024).await;
    let mut service = Service::start(&[("CERTUS_ASSURANCE_CLONE_STALL_TIMEOUT_SECONDS", "2")]);
    let id = service.submit(scan_body(&stalling.url("large"))).await;
    stalling.wait_for_bytes(64 * 1024).await;
    let scan = service.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "FAILED", "{scan}");
    assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    let errors = errors_of(&scan);
    assert!(errors.contains("could not clone"), "{errors}");
    service.assert_nothing_lost().await;
}
