//! Source safety: git hosts checked where the clone connects (names are not resolved at submit),
//! allowed schemes, identifiers, paths confined to their roots, and scanner subprocesses that
//! see none of the service's credentials.

use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{scan_body, spawn_app_with, GitServer, ServiceProcess, TestApp};

/// This machine's own host name, which resolves (through /etc/hosts or DNS) to a loopback or
/// private address on any host or container: a name that passes the submit-time check.
fn own_internal_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the host name is readable")
        .trim()
        .to_string();
    assert!(
        !name.is_empty() && name != "localhost" && !name.ends_with(".localhost"),
        "the host name `{name}` cannot be used for this test"
    );
    let addrs: Vec<IpAddr> = (name.as_str(), 443)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("the host name `{name}` does not resolve: {e}"))
        .map(|a| a.ip())
        .collect();
    assert!(
        addrs
            .iter()
            .all(|ip| certus_assurance::pipeline::source::is_internal(*ip)),
        "`{name}` resolves to {addrs:?}; the test needs a name of an internal address"
    );
    name
}

/// A loopback listener that records whether anything connected to it.
fn watched_port() -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let touched = Arc::new(AtomicBool::new(false));
    let flag = touched.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stream.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        }
    });
    (port, touched)
}

async fn strict_app() -> TestApp {
    spawn_app_with(|c| {
        c.source.allow_private_networks = false;
        c.source.allow_local_sources = false;
    })
    .await
}

async fn detail_of(app: &TestApp, body: &Value) -> (u16, String) {
    let response = app.post_json("/v1/security-scans", body).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["detail"].to_string())
}

#[tokio::test]
async fn a_name_of_an_internal_host_is_accepted_at_submit_and_refused_when_the_clone_connects() {
    let name = own_internal_name();
    let (port, touched) = watched_port();
    let app = strict_app().await;
    for url in [
        format!("https://{name}:{port}/org/repo.git"),
        format!("git://{name}:{port}/repo"),
        format!("ssh://git@{name}:{port}/org/repo.git"),
    ] {
        let id = app.submit_scan(scan_body(&url)).await;
        let scan = app.wait_for_terminal(&id).await;
        assert_eq!(scan["status"], "FAILED", "{url}: {scan}");
        assert_eq!(scan["failure_reason"], "source_invalid", "{url}: {scan}");
        let error = scan["errors"][0].as_str().unwrap();
        assert!(
            error.contains(&format!(
                "git host `{name}` resolves to an internal address"
            )) && error.contains("CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true"),
            "{url}: {error}"
        );
    }
    assert!(
        !touched.load(Ordering::SeqCst),
        "a connection reached the internal address"
    );
}

#[tokio::test]
async fn literal_internal_addresses_are_refused_at_submit_with_a_422_naming_the_setting() {
    let app = strict_app().await;
    for url in [
        "git://127.0.0.1/repo",
        "git://127.0.0.1:9418/repo",
        "https://[::1]/org/repo.git",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/latest",
        "https://[::ffff:10.0.0.1]/repo.git",
        "https://100.64.0.1/repo.git",
        "https://localhost/repo.git",
        "git@10.1.2.3:org/repo.git",
    ] {
        let (status, detail) = detail_of(&app, &scan_body(url)).await;
        assert_eq!(status, 422, "{url}: {detail}");
        assert!(detail.contains("git_url"), "{url}: {detail}");
        assert!(
            detail.contains("CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS"),
            "{url}: {detail}"
        );
    }
    for (url, setting) in [
        (
            "http://example.com/org/repo.git",
            "CERTUS_ASSURANCE_GIT_SCHEMES",
        ),
        ("file:///etc", "CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES"),
        ("/srv/repos/app", "CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES"),
    ] {
        let (status, detail) = detail_of(&app, &scan_body(url)).await;
        assert_eq!(status, 422, "{url}: {detail}");
        assert!(detail.contains(setting), "{url}: {detail}");
    }
}

#[tokio::test]
async fn git_schemes_are_limited_by_configuration() {
    let app = spawn_app_with(|c| {
        c.source.allow_private_networks = false;
        c.source.git_schemes =
            certus_assurance::pipeline::source::GitSchemes::parse("https").unwrap();
    })
    .await;
    for url in [
        "git://example.com/repo",
        "ssh://git@example.com/org/repo.git",
        "git@example.com:org/repo.git",
    ] {
        let (status, detail) = detail_of(&app, &scan_body(url)).await;
        assert_eq!(status, 422, "{url}: {detail}");
        assert!(
            detail.contains("CERTUS_ASSURANCE_GIT_SCHEMES") && detail.contains("use https"),
            "{url}: {detail}"
        );
    }
    let response = app
        .post_json(
            "/v1/security-scans",
            &scan_body("https://example.com/org/repo.git"),
        )
        .await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn identifiers_that_could_become_paths_or_keys_are_refused() {
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    for (field, value) in [
        ("workspace_id", "a\u{0}b"),
        ("workspace_id", ".."),
        ("component_id", "../../etc"),
        ("component_id", "a/b"),
        ("component_id", "a\\b"),
        ("assessment_id", "%2e%2e"),
        ("assessment_id", "\u{ff0e}\u{ff0e}"), // fullwidth full stops
        ("workspace_id", "ws\u{2215}x"),       // division slash
        ("workspace_id", "caf\u{e9}"),
        ("workspace_id", "ws\u{202e}txt"), // right-to-left override
        ("assessment_id", &"a".repeat(129)),
    ] {
        let mut body = scan_body("https://example.com/org/repo.git");
        body[field] = json!(value);
        let response = app.post_json("/v1/security-scans", &body).await;
        assert_eq!(response.status(), 422, "{field}={value:?}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["detail"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["loc"] == json!(["body", field])),
            "{field}={value:?}: {body}"
        );
    }
    let mut body = scan_body("https://example.com/org/repo.git");
    body["assessment_id"] = json!("a".repeat(128));
    assert_eq!(
        app.post_json("/v1/security-scans", &body).await.status(),
        202
    );
    // Scan ids in paths are checked before any lookup.
    for path in [
        "/v1/security-scans/..%2F..%2Fetc",
        "/v1/security-scans/test_..%2F..%2Fx",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn a_manifest_path_through_a_link_out_of_the_tree_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("manifest.json");
    std::fs::write(&target, r#"{"thresholds": {"critical": 1000}}"#).unwrap();
    let git = GitServer::start();
    git.create_repo("m", &[("a.py", "print(1)\n")]);
    let repo = git.repo_path("m");
    std::os::unix::fs::symlink(&target, repo.join("linked.json")).unwrap();
    std::fs::create_dir_all(repo.join("conf")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../../etc", repo.join("conf/etc")).unwrap();
    git.commit("m", &[], "links out of the tree");
    let app = spawn_app_with(|_| {}).await;
    for path in ["linked.json", "conf/etc/passwd"] {
        let mut body = scan_body(&git.url("m"));
        body["manifest_path"] = json!(path);
        let id = app.submit_scan(body).await;
        let scan = app.wait_for_terminal(&id).await;
        assert_eq!(scan["status"], "FAILED", "{path}: {scan}");
        assert_eq!(scan["failure_reason"], "source_invalid", "{path}: {scan}");
        let error = scan["errors"][0].as_str().unwrap();
        assert!(
            error.contains("outside the source tree") || error.contains("does not exist"),
            "{path}: {error}"
        );
        assert!(!error.contains("thresholds"), "{error}");
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The service as a real process with credentials in its environment, a source root that is
/// itself a symbolic link, and a fake scanner that records the environment it was given.
#[tokio::test]
async fn scanners_see_no_service_credentials_and_directory_scans_stay_in_their_roots() {
    let base = tempfile::tempdir().unwrap();
    let real_root = base.path().join("real-root");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(real_root.join("proj")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(real_root.join("proj/app.py"), "print('hi')\n").unwrap();
    std::os::unix::fs::symlink(&outside, real_root.join("proj/escape")).unwrap();
    std::os::unix::fs::symlink(&outside, real_root.join("escape")).unwrap();
    let root_link = base.path().join("root-link");
    std::os::unix::fs::symlink(&real_root, &root_link).unwrap();

    let tools = base.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let env_dump = base.path().join("bandit.env");
    write_executable(
        &tools.join("bandit"),
        &format!(
            "#!/bin/sh\nfor a; do REPORT=\"$a\"; done\nenv > {}\necho '{{\"results\": []}}' > \"$REPORT\"\n",
            env_dump.display()
        ),
    );
    let data = base.path().join("data");
    let secrets = [
        ("CERTUS_ASSURANCE_TRUST_TOKEN", "trust-token-7f3a9c"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-5b8e1d"),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE0000KEY1"),
        ("AWS_SESSION_TOKEN", "aws-session-2c4f6a"),
        ("CERTUS_ASSURANCE_DATABASE_PASSWORD_HINT", "db-hint-9d0e1f"),
    ];
    let mut env: Vec<(&str, &str)> = secrets.to_vec();
    let roots = root_link.display().to_string();
    let tool_path = tools.display().to_string();
    env.push(("CERTUS_ASSURANCE_SOURCE_ROOTS", &roots));
    env.push(("CERTUS_ASSURANCE_TOOL_PATH", &tool_path));
    let service = ServiceProcess::start(&data, &env);
    let client = reqwest::Client::new();
    let submit = |body: Value| {
        let client = client.clone();
        let url = format!("{}/v1/security-scans", service.address);
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let directory = |path: String| {
        json!({
            "workspace_id": "ws", "component_id": "c", "assessment_id": "a",
            "source_type": "directory", "directory_path": path, "profile": "standard",
        })
    };

    // Paths that leave the root, directly or through links, are refused at submit.
    for bad in [
        root_link.join("escape").display().to_string(),
        root_link.join("proj/escape").display().to_string(),
        root_link.join("proj/../../outside").display().to_string(),
        "proj/../../outside".to_string(),
        "../outside".to_string(),
        outside.display().to_string(),
        "/etc".to_string(),
    ] {
        let (status, body) = submit(directory(bad.clone())).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body.to_string().contains("directory_path"), "{bad}: {body}");
    }

    // Inside the root (named through the link, or relative to it) is accepted and runs the
    // scanner, which sees none of the credentials.
    let (status, accepted) = submit(directory(root_link.join("proj").display().to_string())).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["test_id"].as_str().unwrap().to_string();
    let (status, _) = submit(directory("proj".into())).await;
    assert_eq!(status, 202);
    let scan = service
        .wait_for_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120))
        .await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let dumped = std::fs::read_to_string(&env_dump).expect("the fake scanner ran");
    assert!(dumped.contains("HOME="), "{dumped}");
    for (name, value) in secrets {
        assert!(!dumped.contains(name), "{name} reached the scanner");
        assert!(
            !dumped.contains(value),
            "the value of {name} reached the scanner"
        );
    }
    for line in dumped.lines() {
        assert!(
            !line.starts_with("CERTUS_ASSURANCE_") && !line.starts_with("AWS_"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn archive_paths_name_only_archives_that_upload_archive_stored() {
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    let sha = "a".repeat(64);
    for bad in [
        format!("uploads/{sha}.tar.gz/../../../etc/passwd"),
        format!("uploads/../uploads/{sha}.tar.gz"),
        format!("uploads/{}.tar.gz", "A".repeat(64)),
        format!("uploads/{sha}.exe"),
        format!("uploads/{sha}.tar\u{0}.gz"),
        format!("./uploads/{sha}.zip"),
        format!("{}/uploads/{sha}.zip", app.data_dir.display()),
        "uploads/%2e%2e/%2e%2e/etc/passwd".to_string(),
        format!("uploads/{sha}.zip"), // well-formed, but never stored
    ] {
        let body = json!({
            "workspace_id": "ws", "component_id": "c", "assessment_id": "a",
            "source_type": "archive", "archive_path": bad,
        });
        let (status, detail) = detail_of(&app, &body).await;
        assert_eq!(status, 422, "{bad:?}: {detail}");
        assert!(
            detail.contains("archive_path") && detail.contains("upload-archive"),
            "{bad:?}: {detail}"
        );
    }
}

/// A child process killed when the test ends.
pub(crate) struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `git http-backend` over TLS on a loopback port (tests/https_git_server.py), with a
/// self-signed certificate for 127.0.0.1 that the service is told to trust. With `basic_auth`
/// (`user:password`), the server answers only requests that carry those credentials.
pub(crate) fn start_https_git_server(
    root: &Path,
    dir: &Path,
    basic_auth: Option<&str>,
) -> (u16, std::path::PathBuf, Killed) {
    let (cert, key) = crate::upload_helpers::self_signed_cert(dir);
    let port_file = dir.join("port");
    let mut command = std::process::Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/https_git_server.py"
        ))
        .args([root, &cert, &key, &port_file]);
    if let Some(auth) = basic_auth {
        command.env("GIT_BASIC_AUTH", auth);
    }
    let server = Killed(command.spawn().expect("python3 runs"));
    for _ in 0..400 {
        if let Ok(port) = std::fs::read_to_string(&port_file) {
            return (port.trim().parse().unwrap(), cert, server);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the https git server did not start");
}

/// The success path of the proxy with real TLS: libgit2 connects through the clone's CONNECT
/// proxy (https always does), verifies the server end to end, and follows a first redirect.
#[tokio::test]
async fn https_clones_run_through_the_clone_proxy_and_follow_a_first_redirect() {
    let git = GitServer::start();
    let commit = git.create_repo("web", &[("app.py", "print(1)\n")]);
    let dir = tempfile::tempdir().unwrap();
    let (port, cert, _server) = start_https_git_server(git.root.path(), dir.path(), None);
    let cert = cert.display().to_string();
    let service = ServiceProcess::start(&dir.path().join("data"), &[("SSL_CERT_FILE", &cert)]);
    let client = reqwest::Client::new();
    for url in [
        format!("https://127.0.0.1:{port}/web"),
        format!("https://127.0.0.1:{port}/moved/web"),
    ] {
        let response = client
            .post(format!("{}/v1/security-scans", service.address))
            .json(&scan_body(&url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.unwrap();
        let scan = service
            .wait_for_state(
                accepted["test_id"].as_str().unwrap(),
                &["SUCCEEDED", "FAILED"],
                Duration::from_secs(120),
            )
            .await;
        assert_eq!(scan["status"], "SUCCEEDED", "{url}: {scan}");
        assert_eq!(scan["resolved_commit"], commit, "{url}");
    }
}
