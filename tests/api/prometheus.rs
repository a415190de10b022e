//! The shipped monitoring against a real Prometheus and a real Alertmanager (Debian packages),
//! both started by the test on loopback ports with temporary configuration and data, and stopped
//! when it ends.
//!
//! Prometheus scrapes the running service every second and evaluates the shipped rule file
//! (alerts/certus-assurance.rules.yml, unchanged) every second; Alertmanager sends to a webhook
//! receiver served by this test. A healthy workload (succeeding scans, API traffic) comes first:
//! then every dashboard query and every rule expression must evaluate without error through the
//! HTTP API, the core panels (scans, queue, workers, HTTP, process) must return data, and no
//! alert may fire or even have a true expression. Then failing scans (clones of a repository that
//! does not exist) must bring `CertusAssuranceScanFailuresMany` to the webhook, while
//! `CertusAssuranceScanFailureRatioHigh` is pending: its shipped `for: 10m` is longer than a test
//! should wait, and its firing after `for` is proven by the promtool unit tests instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

use crate::helpers::*;
use crate::monitoring::*;

const JOB: &str = "certus-assurance";

/// A server process started by the test; stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(name: &'static str, program: &str, args: &[String], dir: &Path) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} starts (scripts/install-test-deps.sh installs it): {e}")
            });
        Daemon { name, child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn wait_ready(&mut self, url: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log_tail());
            }
            if let Ok(r) = client.get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready at {url}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Alertmanager webhook receiver: every notification body it got.
async fn start_webhook() -> (u16, Arc<Mutex<Vec<Value>>>) {
    async fn receive(
        State(received): State<Arc<Mutex<Vec<Value>>>>,
        Json(body): Json<Value>,
    ) -> &'static str {
        received.lock().unwrap().push(body);
        "ok"
    }
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/alerts", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

async fn start_alertmanager(dir: &Path, webhook_port: u16) -> (Daemon, u16) {
    let port = free_port();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: test\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: test\n    webhook_configs:\n      - url: http://127.0.0.1:{webhook_port}/alerts\n        send_resolved: false\n"
        ),
    )
    .unwrap();
    let data = dir.join("alertmanager-data");
    std::fs::create_dir_all(&data).unwrap();
    let mut daemon = Daemon::start(
        "alertmanager",
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // No high-availability cluster: nothing listens beyond the web port.
            "--cluster.listen-address=".to_string(),
            "--log.level=warn".to_string(),
        ],
        dir,
    );
    daemon
        .wait_ready(&format!("http://127.0.0.1:{port}/-/ready"))
        .await;
    (daemon, port)
}

async fn start_prometheus(dir: &Path, app_port: u16, alertmanager_port: u16) -> (Daemon, u16) {
    let port = free_port();
    let rules = repo().join("alerts/certus-assurance.rules.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{alertmanager_port}']\n\
             scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['127.0.0.1:{app_port}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let data = dir.join("prometheus-data");
    std::fs::create_dir_all(&data).unwrap();
    let mut daemon = Daemon::start(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_string(),
        ],
        dir,
    );
    daemon
        .wait_ready(&format!("http://127.0.0.1:{port}/-/ready"))
        .await;
    (daemon, port)
}

struct PromApi {
    base: String,
    client: reqwest::Client,
}

impl PromApi {
    /// An instant query: Ok(result array) or Err(error text).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url =
            url::Url::parse_with_params(&format!("{}/api/v1/query", self.base), [("query", expr)])
                .unwrap();
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match &body["data"]["result"] {
            Value::Array(items) => Ok(items.clone()),
            // A scalar result (e.g. `time()`) is one value.
            other => Ok(vec![other.clone()]),
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until `expr` returns a first sample whose value satisfies `ok`.
    async fn wait_for(&self, expr: &str, what: &str, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let result = self.query(expr).await.unwrap_or_default();
            let value = result
                .first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok());
            if value.map(&ok).unwrap_or(false) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never saw {what} ({expr} = {result:?})"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every rule of /api/v1/rules as (group, rule, the rule's JSON).
    async fn rules(&self) -> Vec<(String, String, Value)> {
        let rules = self.get("/api/v1/rules").await;
        let groups = rules["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(groups.len(), 4, "the four groups of the rule file: {rules}");
        groups
            .iter()
            .flat_map(|group| {
                group["rules"].as_array().unwrap().iter().map(|rule| {
                    (
                        group["name"].as_str().unwrap().to_string(),
                        rule["name"].as_str().unwrap().to_string(),
                        rule.clone(),
                    )
                })
            })
            .collect()
    }

    /// Waits until the rules have seen the workload (a recorded series moved), then until every
    /// rule has been evaluated twice more (its `lastEvaluation` changed twice), and checks that
    /// every rule evaluates without error.
    async fn wait_for_rule_evaluation(&self) {
        self.wait_for(
            &format!("job:certus_assurance_scans_finished:rate15m{{job=\"{JOB}\"}}"),
            "the recorded rate of finished scans",
            |v| v > 0.0,
        )
        .await;
        let mut rules = self.rules().await;
        for _ in 0..2 {
            let seen: Vec<Value> = rules
                .iter()
                .map(|(_, _, r)| r["lastEvaluation"].clone())
                .collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                rules = self.rules().await;
                let evaluated_again = rules.len() == seen.len()
                    && rules
                        .iter()
                        .zip(&seen)
                        .all(|((_, _, r), before)| r["lastEvaluation"] != *before);
                if evaluated_again {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Prometheus did not evaluate every rule again: {rules:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        for (group, name, rule) in &rules {
            assert_eq!(
                rule["health"], "ok",
                "rule {name} of group {group} evaluates without error: {}",
                rule["lastError"]
            );
        }
    }
}

/// Panels whose queries read upload, Trust or S3 series: valid, but without data until uploads
/// run. Every other panel is a core panel and must return data.
fn is_core(expr: &str) -> bool {
    !metric_names(expr)
        .iter()
        .any(|n| n.contains("_trust_") || n.contains("_s3_") || n.contains("_upload"))
}

fn alert_names(received: &[Value]) -> Vec<String> {
    received
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn a_real_prometheus_evaluates_every_panel_and_rule_and_alertmanager_gets_the_failure_alert()
{
    let git = GitServer::start();
    git.create_repo(
        "healthy",
        &[("README.md", "hello\n"), ("src/main.rs", "fn main() {}\n")],
    );
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (webhook_port, received) = start_webhook().await;
    let (_alertmanager, alertmanager_port) = start_alertmanager(dir.path(), webhook_port).await;
    let (_prometheus, prometheus_port) =
        start_prometheus(dir.path(), app.port, alertmanager_port).await;
    let prom = PromApi {
        base: format!("http://127.0.0.1:{prometheus_port}"),
        client: reqwest::Client::new(),
    };
    let instance = format!("127.0.0.1:{}", app.port);
    prom.wait_for(&format!("up{{job=\"{JOB}\"}}"), "the target up", |v| {
        v == 1.0
    })
    .await;

    // --- A healthy run: succeeding scans and ordinary API traffic. ---
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(app.submit_scan(scan_body(&git.url("healthy"))).await);
    }
    for id in &ids {
        assert_eq!(app.wait_for_terminal(id).await["status"], "SUCCEEDED");
    }
    app.get("/stats").await;
    app.get("/v1/profiles").await;
    app.get("/no/such/route").await;
    prom.wait_for(
        &format!("certus_assurance_scans{{job=\"{JOB}\",status=\"succeeded\"}}"),
        "the succeeded scans",
        |v| v == 6.0,
    )
    .await;
    prom.wait_for_rule_evaluation().await;

    // Every dashboard query is valid; the core panels return data.
    let mut problems = Vec::new();
    let mut core_panels = 0;
    for (file, title, expr) in panel_queries() {
        let expr = expand_grafana_variables(&expr, JOB, &instance, "1m");
        match prom.query(&expr).await {
            Err(e) => problems.push(format!("{file} `{title}`: {e}\n    {expr}")),
            Ok(result) if result.is_empty() && is_core(&expr) => {
                problems.push(format!("{file} `{title}`: no data\n    {expr}"))
            }
            Ok(_) => core_panels += usize::from(is_core(&expr)),
        }
    }
    // The variables' label_values() queries list this job and instance.
    for (label, matcher, wanted) in [
        (
            "job",
            "certus_assurance_build_info".to_string(),
            JOB.to_string(),
        ),
        (
            "instance",
            format!("certus_assurance_build_info{{job=~\"{JOB}\"}}"),
            instance.clone(),
        ),
    ] {
        let url = url::Url::parse_with_params(
            &format!("{}/api/v1/label/{label}/values", prom.base),
            [("match[]", matcher.as_str())],
        )
        .unwrap();
        let values = prom
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert!(
            values["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == wanted.as_str()),
            "label_values(…, {label}) lists {wanted}: {values}"
        );
    }
    // Every rule expression is valid; on a healthy run no alert expression holds.
    for rule in rules() {
        match prom.query(&rule.expr).await {
            Err(e) => problems.push(format!("rule {} ({}): {e}", rule.name, rule.group)),
            Ok(result) if rule.is_alert && !result.is_empty() => problems.push(format!(
                "alert {} holds on a healthy run: {result:?}",
                rule.name
            )),
            Ok(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        core_panels >= 40,
        "{core_panels} core panel queries returned data"
    );
    let active = prom.query("ALERTS").await.unwrap();
    assert!(active.is_empty(), "no alert pending or firing: {active:?}");
    assert!(
        received.lock().unwrap().is_empty(),
        "Alertmanager sent nothing on a healthy run: {:?}",
        received.lock().unwrap()
    );

    // --- Failure: scans of a repository that does not exist fail with clone_failed. ---
    let mut failed = Vec::new();
    for _ in 0..14 {
        failed.push(app.submit_scan(scan_body(&git.url("missing"))).await);
    }
    for id in &failed {
        let scan = app.wait_for_terminal(id).await;
        assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let notification = loop {
        let got = received.lock().unwrap().clone();
        if let Some(n) = got.iter().find(|n| {
            n["status"] == "firing"
                && n["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["labels"]["alertname"] == "CertusAssuranceScanFailuresMany")
        }) {
            break n.clone();
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not send CertusAssuranceScanFailuresMany; it sent {:?}; Prometheus alerts: {}",
            alert_names(&got),
            prom.get("/api/v1/alerts").await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let alert = notification["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "CertusAssuranceScanFailuresMany")
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["job"], JOB);
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "docs/runbooks.md#certusassurancescanfailuresmany"
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("scans failed in the last hour"),
        "{alert}"
    );
    // The ratio alert's expression holds too (14 of 20 finished scans failed); it waits for its
    // `for` before firing.
    let alerts = prom.get("/api/v1/alerts").await;
    let ratio = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "CertusAssuranceScanFailureRatioHigh")
        .unwrap_or_else(|| panic!("the failure ratio alert is active: {alerts}"));
    assert_eq!(ratio["state"], "pending", "{ratio}");
    // Nothing unrelated fired.
    let names = alert_names(&received.lock().unwrap());
    assert!(
        names.iter().all(|n| n == "CertusAssuranceScanFailuresMany"),
        "only the failure alert was sent: {names:?}"
    );
}

#[tokio::test]
async fn the_running_deadline_gauge_follows_the_running_scans() {
    let stalling = StallingServer::start();
    let app = spawn_app().await;
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_running_earliest_deadline_timestamp_seconds",
            &[]
        ),
        Some(0.0),
        "0 while nothing runs"
    );
    let mut body = scan_body(&stalling.url());
    body["timeout_seconds"] = serde_json::json!(120);
    let id = app.submit_scan(body).await;
    let scan = app
        .wait_for_state(&id, &["RUNNING"], Duration::from_secs(20))
        .await;
    let text = app.metrics_text().await;
    let deadline = sample(
        &text,
        "certus_assurance_running_earliest_deadline_timestamp_seconds",
        &[],
    )
    .unwrap();
    let started = humantime::parse_rfc3339_weak(scan["started_at"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("started_at: {e}: {scan}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (deadline - (started + 120.0)).abs() < 1.0,
        "deadline {deadline} = started {started} + 120"
    );
    let cancel = app
        .post_json(
            &format!("/v1/security-scans/{id}/cancel"),
            &serde_json::json!({}),
        )
        .await;
    assert!(cancel.status().is_success());
    app.wait_for_terminal(&id).await;
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_running_earliest_deadline_timestamp_seconds",
            &[]
        ),
        Some(0.0)
    );
}
