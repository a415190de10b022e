use std::sync::Arc;
use std::time::Duration;

use certus_assurance::pipeline::scanners::{ScanContext, Scanner, ScannerOutput};
use serde_json::{json, Value};

use crate::helpers::*;

fn secrets_repo(git: &GitServer, name: &str) -> String {
    git.create_repo(
        name,
        &[
            (
                "config.py",
                &format!("AWS_KEY = \"{}\"\n", planted_aws_key()),
            ),
            (
                "src/app.js",
                &format!("const token = '{}';\n", planted_github_token()),
            ),
            ("README.md", "# demo\n"),
        ],
    )
}

#[tokio::test]
async fn stats_follow_a_scan_from_queued_to_succeeded() {
    let git = GitServer::start();
    let commit = secrets_repo(&git, "demo");
    let app = spawn_app().await;
    assert_eq!(app.stats().await["total_scans"], 0);
    let id = app.submit_scan(scan_body(&git.url("demo"))).await;
    let stats = app.stats().await;
    assert_eq!(stats["total_scans"], 1);
    let active = stats["scans_by_status"]["queued"].as_i64().unwrap()
        + stats["scans_by_status"]["running"].as_i64().unwrap()
        + stats["scans_by_status"]["succeeded"].as_i64().unwrap();
    assert_eq!(active, 1);
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(scan["resolved_commit"], commit);
    assert_eq!(scan["resolved_branch"], "main");
    assert_eq!(
        scan["findings"]["critical"].as_u64().unwrap() + scan["findings"]["high"].as_u64().unwrap(),
        2
    );
    assert_eq!(
        scan["policy"]["passed"], false,
        "critical findings exceed the light profile"
    );
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["scans_by_status"]["succeeded"], 1);
    assert_eq!(stats["total_scans"], 1);

    // The bundle holds the documented files, and no secret in clear.
    let dir = app.artifact_dir(&id);
    for file in [
        "scan.json",
        "summary.json",
        "reports/sast/secrets.sarif.json",
        "logs/runner.log",
        "stream.jsonl",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let sarif: Value = serde_json::from_slice(
        &std::fs::read(dir.join("reports/sast/secrets.sarif.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), 2);
    for file in certus_assurance::pipeline::bundle::artifacts::list_files(&dir).unwrap() {
        let text = std::fs::read_to_string(dir.join(&file)).unwrap();
        assert!(
            !text.contains(&planted_aws_key()),
            "{file} holds the AWS key in clear"
        );
        assert!(
            !text.contains(&planted_github_token()),
            "{file} holds the token in clear"
        );
    }
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["policy"]["passed"], false);
    assert_eq!(summary["findings"]["total"]["total"], 2);
    assert!(app.leftover_workspaces().is_empty());

    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scan_transitions_total",
            &[("from", "queued"), ("to", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scan_transitions_total",
            &[("from", "running"), ("to", "succeeded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "certus_assurance_policy_evaluations_total",
            &[("profile", "light"), ("result", "fail")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scanner_runs_total",
            &[("scanner", "secrets"), ("outcome", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scan_duration_seconds_count",
            &[("profile", "light"), ("status", "succeeded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "certus_assurance_scan_queue_wait_seconds_count", &[]),
        Some(1.0)
    );
}

/// Succeeding, failing, cancelled and timed-out scans: /stats equals /metrics equals the store,
/// before and after a restart on the same data directory.
#[tokio::test]
async fn mixed_workload_keeps_stats_metrics_and_store_equal_across_a_restart() {
    let git = GitServer::start();
    secrets_repo(&git, "ok");
    let stall = StallingServer::start();
    let app = spawn_app_with(|c| c.queue.max_workers = 1).await;

    // A: occupies the only worker, then times out.
    let mut a_body = scan_body(&stall.url());
    a_body["timeout_seconds"] = json!(1);
    let a = app.submit_scan(a_body).await;
    app.wait_for_state(&a, &["RUNNING"], Duration::from_secs(10))
        .await;
    // B succeeds, C names a repository that does not exist, D is cancelled while queued.
    let b = app.submit_scan(scan_body(&git.url("ok"))).await;
    let c = app.submit_scan(scan_body(&git.url("does-not-exist"))).await;
    let d = app.submit_scan(scan_body(&git.url("ok"))).await;
    let response = app
        .client
        .post(app.url(&format!("/v1/security-scans/{d}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "FAILED");

    let a_scan = app.wait_for_terminal(&a).await;
    assert_eq!(a_scan["failure_reason"], "timeout", "{a_scan}");
    assert_eq!(app.wait_for_terminal(&b).await["status"], "SUCCEEDED");
    let c_scan = app.wait_for_terminal(&c).await;
    assert_eq!(c_scan["status"], "FAILED");
    assert_eq!(c_scan["failure_reason"], "clone_failed", "{c_scan}");
    assert!(c_scan["errors"][0]
        .as_str()
        .unwrap()
        .contains("could not clone"));
    let d_scan = app.scan(&d).await;
    assert_eq!(d_scan["failure_reason"], "cancelled");

    // E is cancelled while running; F succeeds after it.
    let e = app.submit_scan(scan_body(&stall.url())).await;
    app.wait_for_state(&e, &["RUNNING"], Duration::from_secs(10))
        .await;
    let response = app
        .client
        .post(app.url(&format!("/v1/security-scans/{e}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let e_scan = app.wait_for_terminal(&e).await;
    assert_eq!(e_scan["failure_reason"], "cancelled", "{e_scan}");
    let f = app.submit_scan(scan_body(&git.url("ok"))).await;
    assert_eq!(app.wait_for_terminal(&f).await["status"], "SUCCEEDED");
    let response = app
        .client
        .post(app.url(&format!("/v1/security-scans/{f}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        409,
        "a finished scan cannot be cancelled"
    );

    let before = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(
        before["scans_by_status"],
        json!({"queued": 0, "running": 0, "succeeded": 2, "failed": 4})
    );
    let text = app.metrics_text().await;
    for (reason, n) in [
        ("timeout", 1.0),
        ("clone_failed", 1.0),
        ("cancelled", 2.0),
        ("internal", 0.0),
    ] {
        assert_eq!(
            sample(
                &text,
                "certus_assurance_scan_failures_total",
                &[("reason", reason)]
            ),
            Some(n),
            "{reason}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scans_submitted_total",
            &[("profile", "light"), ("source_type", "git")]
        ),
        Some(6.0)
    );

    let app = app.restart_with(|_| {}).await;
    let after = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(after["scans_by_status"], before["scans_by_status"]);
    assert_eq!(after["total_scans"], 6);

    // Stalled clones finish cleaning up once libgit2's read timeout fires; nothing is left.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while !app.leftover_workspaces().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "workspaces left: {:?}",
            app.leftover_workspaces()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// kill -9 of the real binary: the running scan becomes FAILED (interrupted), the queued one runs
/// after the restart, and the gauges are rebuilt from the store.
#[tokio::test]
async fn a_crash_interrupts_running_scans_and_keeps_queued_ones() {
    let git = GitServer::start();
    secrets_repo(&git, "ok");
    let stall = StallingServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = ServiceProcess::start(data.path(), &[("CERTUS_ASSURANCE_MAX_WORKERS", "1")]);
    let client = reqwest::Client::new();
    let submit = |body: Value| {
        let client = client.clone();
        let url = format!("{}/v1/security-scans", service.address);
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["test_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let running = submit(scan_body(&stall.url())).await;
    let queued = submit(scan_body(&git.url("ok"))).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scan: Value = client
            .get(format!("{}/v1/security-scans/{running}", service.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if scan["status"] == "RUNNING" {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The worker creates the scan's workspace just after the claim: kill once it exists.
    let has_workspace = || {
        std::fs::read_dir(data.path().join("work"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !has_workspace() {
        assert!(
            std::time::Instant::now() < deadline,
            "no workspace appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.kill9();
    assert!(
        std::fs::read_dir(data.path().join("work"))
            .unwrap()
            .next()
            .is_some(),
        "the crash left a workspace"
    );

    let config = test_config(data.path());
    let app = start(config, None).await;
    assert!(
        app.leftover_workspaces().is_empty(),
        "start-up clears leftover workspaces"
    );
    let interrupted = app.scan(&running).await;
    assert_eq!(interrupted["status"], "FAILED");
    assert_eq!(interrupted["failure_reason"], "interrupted");
    assert_eq!(app.wait_for_terminal(&queued).await["status"], "SUCCEEDED");
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(
        stats["scans_by_status"],
        json!({"queued": 0, "running": 0, "succeeded": 1, "failed": 1})
    );
}

/// A git host in front of `git daemon` that holds every connection without a byte while it is
/// closed, and forwards new connections to the daemon once opened: a scan stays RUNNING (in its
/// clone) until the gate opens.
struct GitGate {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl GitGate {
    fn start(upstream: u16) -> GitGate {
        use std::io::copy;
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = open.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming().flatten() {
                if !gate.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut client_read, mut server_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = copy(&mut client_read, &mut server_write);
                    let _ = server_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut server_read, mut client_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = copy(&mut server_read, &mut client_write);
                    let _ = client_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        GitGate { port, open }
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// SIGTERM on the real binary while a scan is RUNNING past the grace period: clean exit, the scan
/// is back in the queue in the store, and a restart on the same data directory runs it to
/// SUCCEEDED.
#[tokio::test]
async fn sigterm_drains_and_requeues_scans_past_the_deadline() {
    let git = GitServer::start();
    secrets_repo(&git, "held");
    let gate = GitGate::start(git.port);
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("CERTUS_ASSURANCE_MAX_WORKERS", "1"),
        ("CERTUS_ASSURANCE_SHUTDOWN_GRACE_SECONDS", "1"),
    ];
    let mut service = ServiceProcess::start(data.path(), &env);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/security-scans", service.address))
        .json(&scan_body(&gate.url("held")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["test_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Claimed by the worker and held in its clone.
    service
        .wait_for_state(&id, &["RUNNING"], Duration::from_secs(30))
        .await;
    let status = service.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let conn = rusqlite::Connection::open(data.path().join("certus-assurance.db")).unwrap();
    let state: String = conn
        .query_row("SELECT status FROM scans WHERE test_id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(state, "QUEUED", "requeued at the grace deadline");
    drop(conn);

    // The git host answers now: the restarted service claims the scan again and finishes it.
    gate.open();
    let service = ServiceProcess::start(data.path(), &env);
    let scan = service
        .wait_for_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120))
        .await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let text = client
        .get(format!("{}/metrics", service.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let transition = |from: &str, to: &str| {
        sample(
            &text,
            "certus_assurance_scan_transitions_total",
            &[("from", from), ("to", to)],
        )
    };
    assert_eq!(transition("queued", "running"), Some(1.0), "{text}");
    assert_eq!(transition("running", "succeeded"), Some(1.0));
    // Nothing was RUNNING when the previous process exited: start-up recovered nothing.
    assert_eq!(transition("running", "failed"), Some(0.0));
    assert_eq!(transition("running", "queued"), Some(0.0));
}

/// The requeue at the grace deadline is counted as `running→queued` in the registry /metrics
/// renders. In-process, with the same drain the SIGTERM handler starts (the binary exits right
/// after the drain, so its /metrics cannot be scraped after the requeue).
#[tokio::test]
async fn the_requeue_at_the_shutdown_deadline_counts_running_to_queued() {
    let stall = StallingServer::start();
    let mut app = spawn_app_with(|c| {
        c.queue.max_workers = 1;
        c.server.shutdown_grace = Duration::from_secs(1);
    })
    .await;
    let id = app.submit_scan(scan_body(&stall.url())).await;
    app.wait_for_state(&id, &["RUNNING"], Duration::from_secs(30))
        .await;
    let transition = |text: &str, from: &str, to: &str| {
        sample(
            text,
            "certus_assurance_scan_transitions_total",
            &[("from", from), ("to", to)],
        )
    };
    let before = app.metrics_text().await;
    assert_eq!(transition(&before, "queued", "running"), Some(1.0));
    assert_eq!(transition(&before, "running", "queued"), Some(0.0));
    app.stop().await;
    let after = app.jobs.metrics().render_text();
    assert_eq!(
        transition(&after, "running", "queued"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "certus_assurance_scans", &[("status", "queued")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "certus_assurance_scans", &[("status", "running")]),
        Some(0.0)
    );
    let (by_status, _) = app.store_counts();
    assert_eq!(by_status.get("queued").copied(), Some(1), "{by_status:?}");
}

/// A scanner that panics when the tree holds a file named PANIC.
struct PanickyScanner;

impl Scanner for PanickyScanner {
    fn name(&self) -> &'static str {
        "secrets"
    }
    fn run(&self, ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput> {
        if ctx.source_root.join("PANIC").exists() {
            panic!("scanner bug");
        }
        Ok(ScannerOutput {
            findings: vec![],
            sarif: json!({"version": "2.1.0", "runs": []}),
            files_scanned: 0,
            bytes_scanned: 0,
        })
    }
}

#[tokio::test]
async fn a_panic_inside_a_scan_fails_that_scan_not_the_worker() {
    let git = GitServer::start();
    git.create_repo("boom", &[("PANIC", "x")]);
    git.create_repo("fine", &[("README.md", "ok")]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.queue.max_workers = 1;
    let app = start(config, Some(vec![Arc::new(PanickyScanner)])).await;
    let boom = app.submit_scan(scan_body(&git.url("boom"))).await;
    let fine = app.submit_scan(scan_body(&git.url("fine"))).await;
    let boom = app.wait_for_terminal(&boom).await;
    assert_eq!(boom["status"], "FAILED");
    assert_eq!(boom["failure_reason"], "scanner_failed", "{boom}");
    assert_eq!(
        app.wait_for_terminal(&fine).await["status"],
        "SUCCEEDED",
        "the worker survived"
    );
    assert!(app.leftover_workspaces().is_empty());
}

#[tokio::test]
async fn credentials_in_git_urls_never_appear_in_answers_events_or_files() {
    let port = free_port(); // nothing listens: the clone fails after its retries
    let secret = "hunter2-very-secret-token";
    let url = format!("https://deploy:{secret}@127.0.0.1:{port}/org/repo.git");
    let app = spawn_app().await;
    let response = app.post_json("/v1/security-scans", &scan_body(&url)).await;
    assert_eq!(response.status(), 202);
    let submitted = response.text().await.unwrap();
    assert!(!submitted.contains(secret));
    let id = serde_json::from_str::<Value>(&submitted).unwrap()["test_id"]
        .as_str()
        .unwrap()
        .to_string();
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    assert!(!scan.to_string().contains(secret), "{scan}");
    assert_eq!(
        scan["git_url"],
        format!("https://***@127.0.0.1:{port}/org/repo.git")
    );
    for file in
        certus_assurance::pipeline::bundle::artifacts::list_files(&app.artifact_dir(&id)).unwrap()
    {
        let text = std::fs::read_to_string(app.artifact_dir(&id).join(&file)).unwrap();
        assert!(!text.contains(secret), "{file} leaks the credential");
    }
    let db = std::fs::read(app.data_dir.join("certus-assurance.db")).unwrap();
    let wal = std::fs::read(app.data_dir.join("certus-assurance.db-wal")).unwrap_or_default();
    let needle = secret.as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the store holds the credential"
        );
    }
}

/// While draining, status reads and readiness keep answering: readiness says not ready and new
/// submissions get 503 (counted as `draining`), until running scans are done.
#[tokio::test]
async fn draining_refuses_new_scans_and_reports_not_ready() {
    let stall = StallingServer::start();
    let mut app = spawn_app_with(|c| {
        c.queue.max_workers = 1;
        c.server.shutdown_grace = Duration::from_secs(3);
    })
    .await;
    let id = app.submit_scan(scan_body(&stall.url())).await;
    app.wait_for_state(&id, &["RUNNING"], Duration::from_secs(10))
        .await;
    app.begin_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["checks"]["draining"],
        true
    );
    let response = app
        .post_json("/v1/security-scans", &scan_body(&stall.url()))
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scan_submissions_rejected_total",
            &[("reason", "draining")]
        ),
        Some(1.0)
    );
    assert_eq!(app.scan(&id).await["status"], "RUNNING");
    app.stop().await;
}

#[tokio::test]
async fn unresolvable_git_hosts_fail_as_clone_failed_after_retries() {
    let app = spawn_app_with(|c| c.source.allow_private_networks = false).await;
    let id = app
        .submit_scan(scan_body("https://no-such-host.invalid/org/repo.git"))
        .await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    let log = std::fs::read_to_string(app.artifact_dir(&id).join("logs/runner.log")).unwrap();
    assert!(log.contains("retrying"), "{log}");
}
