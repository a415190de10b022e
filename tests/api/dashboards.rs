//! Conventions of the Grafana dashboards in dashboards/: datasource, job and instance variables;
//! every panel on the `$datasource` variable with a unit and a description; every query filtered
//! by job and instance and using `$__rate_interval` (or `$__range`) for its ranges; no hard-coded
//! datasource uid anywhere; provisioning files that load them.

use std::collections::BTreeSet;

use regex::Regex;
use serde_json::Value;

use crate::monitoring::*;

/// Every `datasource` reference in a JSON tree: (path, value).
fn datasource_refs(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{path}.{k}");
                if k == "datasource" {
                    out.push((p.clone(), child.clone()));
                }
                datasource_refs(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                datasource_refs(child, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_four_dashboards_exist_with_unique_uids() {
    let dashboards = dashboards();
    let titles: BTreeSet<String> = dashboards
        .iter()
        .map(|(_, d)| str_of(d, "title").to_string())
        .collect();
    for wanted in ["Overview", "Scans", "Uploads & dependencies", "Runtime"] {
        assert!(
            titles.iter().any(|t| t.ends_with(wanted)),
            "a dashboard titled `… / {wanted}`: {titles:?}"
        );
    }
    let uids: BTreeSet<&str> = dashboards.iter().map(|(_, d)| str_of(d, "uid")).collect();
    assert_eq!(uids.len(), dashboards.len(), "dashboard uids are unique");
    for (file, d) in &dashboards {
        assert!(!str_of(d, "uid").is_empty(), "{file}: a stable uid");
        assert!(
            d["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "certus-assurance"),
            "{file}: tagged certus-assurance"
        );
    }
}

#[test]
fn dashboards_select_datasource_job_and_instance_through_variables() {
    for (file, d) in dashboards() {
        let vars = d["templating"]["list"].as_array().expect("templating");
        let var = |name: &str| {
            vars.iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{file}: no `{name}` variable"))
        };
        let ds = var("datasource");
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], "prometheus", "{file}");
        for name in ["job", "instance"] {
            let v = var(name);
            assert_eq!(v["type"], "query", "{file}: {name}");
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{file}: {name}");
            let query = v["query"]["query"].as_str().unwrap_or("");
            assert!(
                query.starts_with("label_values(") && query.contains(&format!(", {name})")),
                "{file}: {name} lists the label's values: {query}"
            );
        }
        assert!(
            var("instance")["query"]["query"]
                .as_str()
                .unwrap()
                .contains("job=~\"$job\""),
            "{file}: instances of the selected job"
        );
        assert_eq!(var("instance")["includeAll"], true, "{file}");
    }
}

#[test]
fn no_datasource_uid_is_hard_coded() {
    for (file, d) in dashboards() {
        let mut refs = Vec::new();
        datasource_refs(&d, String::new(), &mut refs);
        assert!(!refs.is_empty());
        for (path, r) in refs {
            let ok = match &r {
                Value::String(s) => s == "${datasource}" || s == "$datasource",
                Value::Object(o) => {
                    o.get("uid").and_then(Value::as_str) == Some("${datasource}")
                        && o.get("type").and_then(Value::as_str) == Some("prometheus")
                }
                _ => false,
            };
            assert!(
                ok,
                "{file}{path}: datasource {r} is not the $datasource variable"
            );
        }
    }
}

#[test]
fn every_panel_has_a_unit_a_description_and_queries_on_the_variables() {
    let range = Regex::new(r"\[([^\]]*)\]").unwrap();
    let selector = Regex::new(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}").unwrap();
    let mut count = 0;
    for (file, d) in dashboards() {
        for panel in panels(&d) {
            if panel["type"] == "row" {
                continue;
            }
            count += 1;
            let title = str_of(&panel, "title");
            let at = format!("{file} panel `{title}`");
            assert!(!title.is_empty(), "{file}: a panel without title");
            assert!(
                str_of(&panel, "description").len() > 20,
                "{at}: a description says what the panel shows"
            );
            assert!(
                !str_of(&panel["fieldConfig"]["defaults"], "unit").is_empty(),
                "{at}: fieldConfig.defaults.unit"
            );
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{at}");
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{at}: no query");
            for target in targets {
                let expr = str_of(target, "expr");
                assert!(!expr.is_empty(), "{at}: empty query");
                for cap in range.captures_iter(expr) {
                    assert!(
                        ["$__rate_interval", "$__range"].contains(&&cap[1]),
                        "{at}: range [{}] (use $__rate_interval, or $__range for totals over the time range): {expr}",
                        &cap[1]
                    );
                }
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{at}: {expr}");
                for cap in selector.captures_iter(expr) {
                    let (name, matchers) = (&cap[1], &cap[2]);
                    assert!(
                        matchers.contains("job=~\"$job\""),
                        "{at}: {name} is not filtered by job: {expr}"
                    );
                    // Recording rules are aggregated by job; raw series also by instance.
                    if !name.contains(':') {
                        assert!(
                            matchers.contains("instance=~\"$instance\""),
                            "{at}: {name} is not filtered by instance: {expr}"
                        );
                    }
                }
                // Every series is selected through a selector (so the filter check saw it).
                for name in names {
                    assert!(
                        selector.captures_iter(expr).any(|c| c[1] == *name),
                        "{at}: {name} has no label selector: {expr}"
                    );
                }
            }
        }
    }
    assert!(count >= 40, "{count} panels");
}

#[test]
fn provisioning_loads_the_dashboards_from_a_prometheus_datasource() {
    let ds = yaml(&repo().join("dashboards/provisioning/datasources/prometheus.yml"));
    let sources = ds["datasources"].as_array().unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0]["type"], "prometheus");
    assert_eq!(sources[0]["isDefault"], true);
    assert!(
        sources[0]["jsonData"]["timeInterval"].is_string(),
        "the scrape interval, for $__rate_interval"
    );
    let providers = yaml(&repo().join("dashboards/provisioning/dashboards/certus-assurance.yml"));
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"], "file");
    assert!(str_of(&provider["options"], "path").starts_with('/'));
}
