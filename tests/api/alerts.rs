//! The alert and recording rules in alerts/: promtool accepts them and runs their unit tests
//! (tests/alerts/), every alert is tested firing and silent (around its `for:`), every alert is
//! labelled and linked to its runbook section, and every series a rule or a dashboard reads is
//! one the running service exposes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;
use crate::monitoring::*;

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promtool runs (scripts/install-test-deps.sh installs Debian's prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn unit_test_files() -> Vec<String> {
    files("tests/alerts", ".test.yml")
        .iter()
        .map(|p| {
            p.strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect()
}

#[test]
fn promtool_accepts_the_rules_and_passes_their_unit_tests() {
    let rule_files: Vec<String> = rule_files()
        .iter()
        .map(|p| {
            p.strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    let mut args = vec!["check", "rules"];
    args.extend(rule_files.iter().map(String::as_str));
    promtool(&args);

    let tests = unit_test_files();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let out = promtool(&args);
    assert_eq!(
        out.matches("SUCCESS").count(),
        tests.len(),
        "every unit test file passes:\n{out}"
    );
}

#[test]
fn every_alert_is_labelled_described_and_linked_to_its_runbook_section() {
    let anchors = markdown_anchors(&repo().join("docs/runbooks.md"));
    let alerts: Vec<Rule> = rules().into_iter().filter(|r| r.is_alert).collect();
    assert!(alerts.len() >= 15, "{} alerts", alerts.len());
    let mut seen = BTreeSet::new();
    for alert in &alerts {
        let name = &alert.name;
        assert!(seen.insert(name.clone()), "{name} is defined twice");
        assert!(name.starts_with("CertusAssurance"), "{name}");
        let severity = alert.rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity `{severity}`"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                !alert.rule["annotations"][key]
                    .as_str()
                    .unwrap_or("")
                    .trim()
                    .is_empty(),
                "{name} has no {key}"
            );
        }
        let url = alert.rule["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = heading_anchor(name);
        assert_eq!(
            url,
            format!("{}#{anchor}", runbook_base_url()),
            "{name} links to its own section, absolutely (alerts/runbook-base-url)"
        );
        assert!(
            anchors.contains(&anchor),
            "docs/runbooks.md has no section `{name}` for the runbook_url of {name}"
        );
    }
    // The list of situations, each covered by at least one alert.
    for required in [
        "CertusAssuranceDown",
        "CertusAssuranceAbsent",
        "CertusAssuranceScanFailureRatioHigh",
        "CertusAssuranceScanFailuresMany",
        "CertusAssuranceScansStuckRunning",
        "CertusAssuranceQueueNotDraining",
        "CertusAssuranceWorkersSaturated",
        "CertusAssuranceTrustErrors",
        "CertusAssuranceTrustSlow",
        "CertusAssuranceUploadFailures",
        "CertusAssuranceS3Errors",
        "CertusAssuranceUploadsDeniedSpike",
        "CertusAssuranceErrorBudgetBurnFast",
        "CertusAssuranceErrorBudgetBurnSlow",
        "CertusAssuranceFrequentRestarts",
    ] {
        assert!(seen.contains(required), "no alert {required}");
    }
}

/// (eval time, fires) of one unit-test group for one alert.
type Cases = Vec<(Duration, bool)>;

#[test]
fn every_alert_has_unit_tests_where_it_fires_and_where_it_stays_silent() {
    let alerts: BTreeMap<String, Duration> = rules()
        .into_iter()
        .filter(|r| r.is_alert)
        .map(|r| (r.name, r.for_))
        .collect();
    // alert -> one Cases per test group
    let mut cases: BTreeMap<String, Vec<Cases>> = BTreeMap::new();
    for file in unit_test_files() {
        let doc = yaml(&repo().join(&file));
        let listed: BTreeSet<String> = doc["rule_files"]
            .as_array()
            .expect("rule_files")
            .iter()
            .map(|f| {
                let p = repo().join("tests/alerts").join(f.as_str().unwrap());
                std::fs::canonicalize(&p)
                    .unwrap_or_else(|_| panic!("{file}: {} does not exist", p.display()))
                    .to_string_lossy()
                    .to_string()
            })
            .collect();
        for shipped in rule_files() {
            let shipped = std::fs::canonicalize(shipped).unwrap();
            assert!(
                listed.contains(&*shipped.to_string_lossy()),
                "{file} tests the shipped rule files, all of them ({})",
                shipped.display()
            );
        }
        for group in doc["tests"].as_array().expect("tests") {
            let mut by_alert: BTreeMap<String, Cases> = BTreeMap::new();
            for case in group["alert_rule_test"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let name = str_of(&case, "alertname").to_string();
                assert!(
                    alerts.contains_key(&name),
                    "{file} tests `{name}`, which no rule defines"
                );
                let fires = case["exp_alerts"]
                    .as_array()
                    .map(|a| !a.is_empty())
                    .unwrap_or(false);
                by_alert
                    .entry(name)
                    .or_default()
                    .push((prometheus_duration(str_of(&case, "eval_time")), fires));
            }
            for (name, c) in by_alert {
                cases.entry(name).or_default().push(c);
            }
        }
    }
    let mut missing = Vec::new();
    for (name, for_) in &alerts {
        let groups = cases.get(name).cloned().unwrap_or_default();
        let fires = groups.iter().flatten().any(|(_, f)| *f);
        let silent = groups.iter().flatten().any(|(_, f)| !*f);
        if !fires || !silent {
            missing.push(format!(
                "{name}: needs a case where it fires and one where it stays silent (fires: {fires}, silent: {silent})"
            ));
            continue;
        }
        // Around `for:`: in one scenario, silent at some time within `for` before it fires.
        if !for_.is_zero() {
            let around = groups.iter().any(|g| {
                g.iter().filter(|(_, f)| *f).any(|(t_fire, _)| {
                    g.iter().any(|(t_silent, f)| {
                        !*f && *t_silent < *t_fire && *t_fire - *t_silent < *for_
                    })
                })
            });
            if !around {
                missing.push(format!(
                    "{name}: needs a silent case less than its `for` ({for_:?}) before a firing one"
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "alerts without unit tests:\n{}",
        missing.join("\n")
    );
}

#[tokio::test]
async fn rules_and_dashboards_read_only_series_the_service_exposes() {
    let app = spawn_app().await;
    // HTTP series appear with the first request.
    app.get("/health").await;
    let exposed = exposed_names(&app.metrics_text().await);
    let recorded: BTreeSet<String> = rules()
        .into_iter()
        .filter(|r| !r.is_alert)
        .map(|r| r.name)
        .collect();
    // `up` is written by Prometheus for every target.
    let known = |name: &str| name == "up" || exposed.contains(name) || recorded.contains(name);

    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for rule in rules() {
        for name in metric_names(&rule.expr) {
            if !known(&name) {
                unknown.push(format!("{} rule {}: {name}", rule.file, rule.name));
            }
            used.insert(name);
        }
    }
    for (file, title, expr) in panel_queries() {
        for name in metric_names(&expand_grafana_variables(&expr, "j", "i", "5m")) {
            if !known(&name) {
                unknown.push(format!("{file} panel `{title}`: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "series the service does not expose (rename in the rule/dashboard, or add the metric to src/metrics/ and docs/metrics.md):\n{}",
        unknown.join("\n")
    );
    // The checker sees the metrics of every area.
    for expected in [
        "certus_assurance_scan_failures_total",
        "certus_assurance_http_requests_total",
        "certus_assurance_trust_requests_total",
        "certus_assurance_s3_requests_total",
        "certus_assurance_upload_transitions_total",
        "process_cpu_seconds_total",
    ] {
        assert!(used.contains(expected), "{expected} is used somewhere");
    }
}
