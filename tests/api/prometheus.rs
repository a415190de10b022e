//! The shipped monitoring against a real Prometheus and a real Alertmanager (Debian packages),
//! both started by the test on loopback ports with temporary configuration and data, and stopped
//! when it ends.
//!
//! Prometheus scrapes the running service every second and evaluates the shipped rule file
//! (alerts/certus-assurance.rules.yml, unchanged) every second; Alertmanager runs the shipped
//! configuration (deploy/alertmanager, rendered as the compose stack renders it, with only its
//! grouping delays shortened) with its webhook and Slack receivers pointed at a server of this
//! test. A healthy workload (succeeding scans, API traffic) comes first:
//! then every dashboard query and every rule expression must evaluate without error through the
//! HTTP API, the core panels (scans, queue, workers, HTTP, process) must return data, and no
//! alert may fire or even have a true expression. Then failing scans (clones of a repository that
//! does not exist) must bring `CertusAssuranceScanFailuresMany` to the webhook and to Slack
//! (with its absolute runbook link and a whole count), while `CertusAssuranceScanFailureRatioHigh`
//! is pending: its shipped `for: 10m` is longer than a test should wait, and its firing after
//! `for` is proven by the promtool unit tests instead.
//!
//! A second test drives every alert of the rule file at least to `pending` against the real
//! service (held scans, a full queue, restarts, Trust failures and denials, S3 failures, stale
//! OSV data, a missing and a dead target), checks that the first 5xx after a start moves the
//! error ratio, and that every dashboard panel returns data, equal to `/stats` and the store
//! where it shows the same number.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use certus_assurance::pipeline::scanners::{ScanContext, Scanner, ScannerOutput};
use serde_json::Value;

use crate::helpers::*;
use crate::monitoring::*;
use crate::upload_helpers::*;

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

/// What the shipped receivers delivered: webhook notifications (Alertmanager's JSON) and Slack
/// messages (the incoming-webhook JSON, rendered by the shipped template).
#[derive(Clone, Default)]
struct Received {
    webhook: Arc<Mutex<Vec<Value>>>,
    slack: Arc<Mutex<Vec<Value>>>,
}

impl Received {
    fn webhook(&self) -> Vec<Value> {
        self.webhook.lock().unwrap().clone()
    }

    fn slack(&self) -> Vec<Value> {
        self.slack.lock().unwrap().clone()
    }

    /// Waits until the webhook got a firing notification of `alert` and Slack a message naming
    /// it; returns both.
    async fn wait_for(&self, alert: &str, prom: &PromApi) -> (Value, Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let webhook = self.webhook().into_iter().find(|n| {
                n["status"] == "firing"
                    && n["alerts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| a["labels"]["alertname"] == alert)
            });
            let slack = self.slack().into_iter().find(|m| {
                m["attachments"][0]["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("[FIRING") && t.contains(alert))
            });
            if let (Some(webhook), Some(slack)) = (webhook, slack) {
                return (webhook, slack);
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager did not deliver {alert} to both receivers; webhook got {:?}, Slack {:?}; Prometheus alerts: {}",
                alert_names(&self.webhook()),
                self.slack(),
                prom.get("/api/v1/alerts").await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Serves the webhook (`/alerts`) and Slack (`/slack`) receivers on a loopback port.
async fn start_receivers() -> (u16, Received) {
    async fn receive(
        State(received): State<Arc<Mutex<Vec<Value>>>>,
        Json(body): Json<Value>,
    ) -> &'static str {
        received.lock().unwrap().push(body);
        "ok"
    }
    let received = Received::default();
    let app = Router::new()
        .route(
            "/alerts",
            post(receive).with_state(received.webhook.clone()),
        )
        .route("/slack", post(receive).with_state(received.slack.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

/// Alertmanager on the shipped configuration, rendered with both receiver integrations pointed at
/// the test's receivers; only the grouping delays are shortened (30s/5m to 1s).
async fn start_alertmanager(dir: &Path, receivers_port: u16) -> (Daemon, u16) {
    let port = free_port();
    let config = dir.join("alertmanager.yml");
    let webhook = format!("http://127.0.0.1:{receivers_port}/alerts");
    let slack = format!("http://127.0.0.1:{receivers_port}/slack");
    let text = render_alertmanager_config(
        &[
            ("ALERTMANAGER_WEBHOOK_URL", &webhook),
            ("ALERTMANAGER_SLACK_WEBHOOK_URL", &slack),
            ("ALERTMANAGER_SLACK_CHANNEL", "#certus"),
        ],
        &config,
    );
    let shortened = text
        .replace("group_wait: 30s", "group_wait: 1s")
        .replace("group_interval: 5m", "group_interval: 1s");
    assert_ne!(shortened, text, "the shipped grouping delays were found");
    std::fs::write(&config, shortened).unwrap();
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

/// A Prometheus configuration: scrape and evaluate every second, the shipped rules, the test's
/// Alertmanager, and the job `certus-assurance` with `targets` (no scrape job without targets).
fn prometheus_config(targets: &[u16], alertmanager_port: u16) -> String {
    let rules = repo().join("alerts/certus-assurance.rules.yml");
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{alertmanager_port}']\n",
        rules.display()
    );
    if !targets.is_empty() {
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        config.push_str(&format!(
            "scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ));
    }
    config
}

async fn start_prometheus(dir: &Path, targets: &[u16], alertmanager_port: u16) -> (Daemon, u16) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, prometheus_config(targets, alertmanager_port)).unwrap();
    let data = dir.join("prometheus-data");
    std::fs::create_dir_all(&data).unwrap();
    let mut daemon = Daemon::start(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // POST /-/reload applies a changed configuration file.
            "--web.enable-lifecycle".to_string(),
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
    let (receivers_port, received) = start_receivers().await;
    let (_alertmanager, alertmanager_port) = start_alertmanager(dir.path(), receivers_port).await;
    let (_prometheus, prometheus_port) =
        start_prometheus(dir.path(), &[app.port], alertmanager_port).await;
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
        received.webhook().is_empty() && received.slack().is_empty(),
        "Alertmanager sent nothing on a healthy run: {:?} {:?}",
        received.webhook(),
        received.slack()
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
    let (notification, slack) = received
        .wait_for("CertusAssuranceScanFailuresMany", &prom)
        .await;
    let alert = notification["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "CertusAssuranceScanFailuresMany")
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["job"], JOB);
    let runbook = format!("{}#certusassurancescanfailuresmany", runbook_base_url());
    assert_eq!(alert["annotations"]["runbook_url"], runbook.as_str());
    // A whole number of scans (about 10 or more), however `increase` extrapolated.
    let description = alert["annotations"]["description"].as_str().unwrap();
    let count = description
        .strip_prefix("About ")
        .and_then(|d| d.split_once(" scans failed in the last hour (cancellations excluded;"))
        .map(|(count, _)| count)
        .unwrap_or_else(|| panic!("{alert}"));
    assert!(
        count.parse::<u64>().is_ok_and(|n| n >= 10),
        "a whole count: {description}"
    );
    // Slack: the shipped template with the summary, the description and the runbook link.
    assert_eq!(slack["channel"], "#certus");
    let text = slack["attachments"][0]["text"].as_str().unwrap();
    for wanted in [
        "*More than 10 scans failed in the last hour* (warning)",
        description,
        &format!("Runbook: {runbook}"),
    ] {
        assert!(
            text.contains(wanted),
            "{wanted:?} in the Slack text {text:?}"
        );
    }
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
    let names = alert_names(&received.webhook());
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

/// A scanner standing in for a long scan: it runs while `hold` is set (and the scan is not
/// cancelled), then reports nothing.
struct HoldingScanner {
    hold: Arc<AtomicBool>,
}

impl Scanner for HoldingScanner {
    fn name(&self) -> &'static str {
        "secrets"
    }

    fn run(&self, ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput> {
        while self.hold.load(Ordering::SeqCst) && !ctx.is_cancelled() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(ScannerOutput {
            findings: vec![],
            sarif: serde_json::json!({
                "version": "2.1.0",
                "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
                "runs": [{"tool": {"driver": {"name": "holding"}}, "results": []}],
            }),
            files_scanned: 1,
            bytes_scanned: 1,
        })
    }
}

/// Releases the [`HoldingScanner`] when dropped, also when the test fails: a held scanner thread
/// would keep the runtime from shutting down.
struct Release(Arc<AtomicBool>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The service binary on a fixed port (so restarts keep its `instance`), no workers, stopped on
/// drop.
fn start_binary(dir: &Path, port: u16) -> Daemon {
    let data = dir.join("binary-data");
    std::fs::create_dir_all(&data).unwrap();
    Daemon::start(
        "certus-assurance",
        env!("CARGO_BIN_EXE_certus-assurance"),
        &[
            format!("--listen-addr=127.0.0.1:{port}"),
            format!("--data-dir={}", data.display()),
            "--max-workers=0".to_string(),
            "--log-format=json".to_string(),
        ],
        dir,
    )
}

/// An OSV database whose only record (PyPI) was last modified in 2020.
fn stale_osv_database(dir: &Path) -> PathBuf {
    let db = dir.join("osv");
    std::fs::create_dir_all(db.join("PyPI")).unwrap();
    std::fs::write(
        db.join("PyPI/GHSA-0000-0000-0001.json"),
        serde_json::json!({
            "id": "GHSA-0000-0000-0001",
            "modified": "2020-01-01T00:00:00Z",
            "summary": "an old advisory",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "left-pad-py"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}],
        })
        .to_string(),
    )
    .unwrap();
    db
}

impl PromApi {
    /// Waits until `alert` is pending or firing (an `ALERTS` series exists for it).
    async fn wait_for_alert(&self, alert: &str) {
        self.wait_for(
            &format!("count(ALERTS{{alertname=\"{alert}\"}})"),
            &format!("{alert} pending or firing"),
            |v| v > 0.0,
        )
        .await;
    }

    /// Writes `config` and makes Prometheus load it.
    async fn reload(&self, dir: &Path, config: String) {
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let response = self
            .client
            .post(format!("{}/-/reload", self.base))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "reload: {response:?}");
    }

    /// The value of a one-series query, if it has one.
    async fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr).await.unwrap_or_default();
        result
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
    }
}

/// Moves a scan's `column` (a Unix time) back by `seconds` in the SQLite store, as a stalled
/// worker or an idle queue would have left it after that long.
fn age_scan(data_dir: &Path, id: &str, column: &str, seconds: f64) {
    let conn = rusqlite::Connection::open(data_dir.join("certus-assurance.db")).unwrap();
    let changed = conn
        .execute(
            &format!("UPDATE scans SET {column} = {column} - ?1 WHERE test_id = ?2"),
            rusqlite::params![seconds, id],
        )
        .unwrap();
    assert_eq!(changed, 1, "{id} is stored");
}

/// SUCCEEDED scans whose upload was never asked for, read from the store.
fn pending_succeeded_uploads(data_dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open(data_dir.join("certus-assurance.db")).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM scans WHERE status = 'SUCCEEDED' AND upload_status = 'pending'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

async fn upload_request(app: &TestApp, id: &str) -> u16 {
    app.post_json(
        &format!("/v1/security-scans/{id}/upload-request"),
        &serde_json::json!({"tier": "basic"}),
    )
    .await
    .status()
    .as_u16()
}

/// Submits scans of `url` one after the other (the queue holds one) until `n` ended; returns them.
async fn run_scans(app: &TestApp, url: &str, n: usize) -> Vec<Value> {
    let mut scans = Vec::new();
    for _ in 0..n {
        let id = app.submit_scan(scan_body(url)).await;
        scans.push(app.wait_for_terminal(&id).await);
    }
    scans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_reaches_pending_against_the_real_service_and_every_panel_shows_its_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "# demo\n")]);
    let trust = TrustStandIn::start(TrustMode::Permit).await;
    let moto = MotoServer::start();
    let s3 = S3::new(&moto.endpoint());
    s3.create_bucket("raw").await;
    s3.create_bucket("golden").await;
    let proxy = S3Proxy::start(moto.port).await;
    let hold = Arc::new(AtomicBool::new(true));
    let _release = Release(hold.clone());
    let osv = stale_osv_database(dir.path());
    let data = dir.path().join("app-data");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = test_config(&data);
    config.queue.max_workers = 1;
    config.queue.max_queue = 1;
    config.scanning.osv_db_dir = Some(osv);
    config.scanning.osv_max_age = Some(Duration::from_secs(3600));
    enable_uploads_with(&mut config, &trust.url, "trust-token", &proxy.endpoint());
    config.upload.trust_timeout = Duration::from_secs(3);
    let scanners: Vec<Arc<dyn Scanner>> = vec![Arc::new(HoldingScanner { hold: hold.clone() })];
    let app = start(config, Some(scanners)).await;
    let demo = git.url("demo");

    // --- Saturated before the first scrape: one scan held RUNNING, one QUEUED (the queue is
    // full), both aged by an hour as a stalled worker and an idle queue would leave them. ---
    let mut held = scan_body(&demo);
    held["timeout_seconds"] = 600.into();
    let running = app.submit_scan(held.clone()).await;
    app.wait_for_state(&running, &["RUNNING"], Duration::from_secs(30))
        .await;
    let queued = app.submit_scan(held).await;
    age_scan(&data, &running, "started_at", 3600.0);
    age_scan(&data, &queued, "submitted_at", 3600.0);

    // --- No target yet: CertusAssuranceAbsent. Then the app and a binary replica. ---
    let (receivers_port, received) = start_receivers().await;
    let (_alertmanager, alertmanager_port) = start_alertmanager(dir.path(), receivers_port).await;
    let (_prometheus, prometheus_port) = start_prometheus(dir.path(), &[], alertmanager_port).await;
    let prom = PromApi {
        base: format!("http://127.0.0.1:{prometheus_port}"),
        client: reqwest::Client::new(),
    };
    prom.wait_for_alert("CertusAssuranceAbsent").await;
    let binary_port = free_port();
    let mut binary = start_binary(dir.path(), binary_port);
    binary
        .wait_ready(&format!("http://127.0.0.1:{binary_port}/health"))
        .await;
    prom.reload(
        dir.path(),
        prometheus_config(&[app.port, binary_port], alertmanager_port),
    )
    .await;
    let instance = format!("127.0.0.1:{}", app.port);
    let binary_instance = format!("127.0.0.1:{binary_port}");
    for target in [&instance, &binary_instance] {
        prom.wait_for(
            &format!("up{{job=\"{JOB}\",instance=\"{target}\"}}"),
            "the target up",
            |v| v == 1.0,
        )
        .await;
    }
    for alert in [
        "CertusAssuranceWorkersSaturated",
        "CertusAssuranceScansStuckRunning",
        "CertusAssuranceQueueNotDraining",
        "CertusAssuranceOsvDatabaseStale",
    ] {
        prom.wait_for_alert(alert).await;
    }

    // --- The first 5xx after the start (a submission refused with 503 queue_full) moves the
    // error ratio: its series existed at 0 before it. ---
    let ratio = format!("job:certus_assurance_http_errors:ratio_rate5m{{job=\"{JOB}\"}}");
    let before = prom.value(&ratio).await;
    assert!(!before.is_some_and(|v| v > 0.0), "no error yet: {before:?}");
    let refused = app.post_json("/v1/security-scans", &scan_body(&demo)).await;
    assert_eq!(refused.status(), 503);
    prom.wait_for(&ratio, "the first 5xx in the error ratio", |v| v > 0.0)
        .await;
    prom.wait_for_alert("CertusAssuranceQueueFull").await;
    // More refusals: the error budget burns.
    for _ in 0..20 {
        let refused = app.post_json("/v1/security-scans", &scan_body(&demo)).await;
        assert_eq!(refused.status(), 503);
    }
    prom.wait_for_alert("CertusAssuranceErrorBudgetBurnFast")
        .await;
    prom.wait_for_alert("CertusAssuranceErrorBudgetBurnSlow")
        .await;

    // --- The binary replica restarts three times on its port, then stays down. ---
    let start_time = format!("process_start_time_seconds{{instance=\"{binary_instance}\"}}");
    for _ in 0..3 {
        let before = prom.value(&start_time).await;
        drop(binary);
        // The start time has a resolution of a second; the next start is in a later one.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        binary = start_binary(dir.path(), binary_port);
        binary
            .wait_ready(&format!("http://127.0.0.1:{binary_port}/health"))
            .await;
        prom.wait_for(&start_time, "the new start time", |v| Some(v) != before)
            .await;
    }
    received
        .wait_for("CertusAssuranceFrequentRestarts", &prom)
        .await;

    // --- The held scans end; failing clones bring both failure alerts. ---
    hold.store(false, Ordering::SeqCst);
    let mut succeeded = vec![running.clone(), queued.clone()];
    for id in &succeeded {
        assert_eq!(app.wait_for_terminal(id).await["status"], "SUCCEEDED");
    }
    // Eight for the uploads below, one left pending.
    for scan in run_scans(&app, &demo, 7).await {
        assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
        succeeded.push(scan["test_id"].as_str().unwrap().to_string());
    }
    for scan in run_scans(&app, &git.url("missing"), 12).await {
        assert_eq!(scan["failure_reason"], "clone_failed", "{scan}");
    }
    received
        .wait_for("CertusAssuranceScanFailuresMany", &prom)
        .await;
    prom.wait_for_alert("CertusAssuranceScanFailureRatioHigh")
        .await;

    // --- Uploads: Trust does not answer (5 timeouts: errors, slow, failed uploads), then denies
    // the same five, then permits two that reach S3, then S3 drops every connection (eight
    // failed attempts of one upload). ---
    trust.set_mode(TrustMode::Hang);
    let timeouts =
        futures_util::future::join_all(succeeded[..5].iter().map(|id| upload_request(&app, id)))
            .await;
    assert_eq!(timeouts, vec![504; 5]);
    trust.set_mode(TrustMode::Deny("not signed by a release key".into()));
    for id in &succeeded[..5] {
        assert_eq!(upload_request(&app, id).await, 403);
    }
    trust.set_mode(TrustMode::Permit);
    for id in &succeeded[5..7] {
        assert_eq!(upload_request(&app, id).await, 202);
    }
    for id in &succeeded[5..7] {
        wait_for_upload_status(&app, id, "uploaded").await;
    }
    proxy.drop_next_connections(u64::MAX);
    for _ in 0..8 {
        assert_eq!(upload_request(&app, &succeeded[7]).await, 202);
        wait_for_upload_status(&app, &succeeded[7], "failed").await;
    }
    proxy.restore();
    for alert in [
        "CertusAssuranceTrustErrors",
        "CertusAssuranceTrustSlow",
        "CertusAssuranceUploadFailures",
        "CertusAssuranceS3Errors",
    ] {
        prom.wait_for_alert(alert).await;
    }
    received
        .wait_for("CertusAssuranceUploadsDeniedSpike", &prom)
        .await;

    // --- Every dashboard panel returns data; where a panel shows a number /stats or the store
    // has, they agree (once Prometheus scraped the last change). ---
    let stats = app.stats().await;
    assert_counts_agree(&stats, &app.metrics_text().await, &data);
    let scans_by_status = stats["scans_by_status"].clone();
    let uploads_by_status = stats["upload_stats"].clone();
    let pending_succeeded = pending_succeeded_uploads(&data);
    assert_eq!(
        pending_succeeded, 1,
        "one succeeded scan was never asked for: {stats}"
    );
    let not_uploadable = ["queued", "running", "failed"]
        .iter()
        .map(|s| scans_by_status[s].as_i64().unwrap())
        .sum::<i64>();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut problems = Vec::new();
        let mut compared = 0;
        for (file, title, expr) in panel_queries() {
            let expr = expand_grafana_variables(&expr, JOB, &instance, "5m");
            let result = match prom.query(&expr).await {
                Err(e) => {
                    problems.push(format!("{file} `{title}`: {e}"));
                    continue;
                }
                Ok(r) if r.is_empty() => {
                    problems.push(format!("{file} `{title}`: no data\n    {expr}"));
                    continue;
                }
                Ok(r) => r,
            };
            let value =
                |series: &Value| -> f64 { series["value"][1].as_str().unwrap().parse().unwrap() };
            let mut expect = |what: &str, got: f64, want: f64| {
                compared += 1;
                if got != want {
                    problems.push(format!(
                        "{file} `{title}` {what}: {got}, /stats or the store {want}"
                    ));
                }
            };
            if expr.starts_with("max by (status) (certus_assurance_scans{") {
                for series in &result {
                    let status = series["metric"]["status"].as_str().unwrap();
                    expect(
                        status,
                        value(series),
                        scans_by_status[status].as_f64().unwrap(),
                    );
                }
            } else if expr.starts_with("max by (status) (certus_assurance_uploads{") {
                for series in &result {
                    let status = series["metric"]["status"].as_str().unwrap();
                    expect(
                        status,
                        value(series),
                        uploads_by_status[status].as_f64().unwrap(),
                    );
                }
            } else {
                // One-number panels: the queued scans, and the two parts of pending uploads.
                let single = [
                    (
                        "queued",
                        expr.starts_with("max(certus_assurance_scans{")
                            && expr.ends_with("status=\"queued\"})"),
                        scans_by_status["queued"].as_f64().unwrap(),
                    ),
                    (
                        "pending, succeeded",
                        expr.starts_with("max(certus_assurance_uploads{")
                            && expr.contains("status=\"pending\"}) - "),
                        pending_succeeded as f64,
                    ),
                    (
                        "pending, not uploadable",
                        expr.starts_with("sum(max by (status) (certus_assurance_scans{")
                            && expr.contains("queued|running|failed"),
                        not_uploadable as f64,
                    ),
                ];
                if let Some((what, _, want)) = single.iter().find(|(_, shows, _)| *shows) {
                    expect(what, value(&result[0]), *want);
                }
            }
        }
        if problems.is_empty() {
            assert!(compared >= 15, "{compared} numbers compared");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data or with other numbers than /stats:\n{}",
            problems.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // --- Last, the binary replica stops for good: CertusAssuranceDown. ---
    drop(binary);
    prom.wait_for_alert("CertusAssuranceDown").await;

    // Every alert of the rule file was pending or firing at some evaluation.
    let seen: BTreeSet<String> = prom
        .query("count by (alertname) (count_over_time(ALERTS[1h]))")
        .await
        .unwrap()
        .iter()
        .map(|s| s["metric"]["alertname"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<String> = rules()
        .into_iter()
        .filter(|r| r.is_alert && !seen.contains(&r.name))
        .map(|r| r.name)
        .collect();
    assert!(
        missing.is_empty(),
        "never pending: {missing:?} (seen {seen:?})"
    );
}

/// Polls the scan until its upload ended in `status` (no upload in progress).
async fn wait_for_upload_status(app: &TestApp, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scan = app.scan(id).await;
        if scan["upload_status"] == status && scan["upload_in_progress"] == false {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "upload of {id} never {status}: {scan}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
