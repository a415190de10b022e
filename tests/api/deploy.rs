//! The deploy files in deploy/: every manifest parses, the generated Kubernetes monitoring is in
//! sync with alerts/ and dashboards/, kustomize builds the base, and the ports, paths and probe
//! targets are the service's real ones (default port 8056; each probed path is requested from a
//! running app and must answer as the manifest expects).

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;
use crate::monitoring::*;

/// The service's default port, from its own configuration defaults.
fn default_port() -> u16 {
    certus_assurance::Config::for_data_dir("/nonexistent")
        .listen_addr
        .port()
}

fn kubernetes_docs() -> Vec<Value> {
    files("deploy/kubernetes", ".yaml")
        .iter()
        .flat_map(|p| yaml_documents(p))
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
}

#[test]
fn the_kubernetes_monitoring_is_generated_from_alerts_and_dashboards() {
    let output = Command::new("scripts/generate-kubernetes-monitoring.sh")
        .arg("--check")
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "deploy/kubernetes is out of date; run scripts/generate-kubernetes-monitoring.sh:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // And independently of the script: the same rules and dashboards, parsed.
    let docs = kubernetes_docs();
    let rule = kind(&docs, "PrometheusRule");
    let mut groups = Vec::new();
    for path in rule_files() {
        groups.extend(yaml(&path)["groups"].as_array().unwrap().clone());
    }
    assert_eq!(rule["spec"]["groups"], Value::Array(groups));

    let config_map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a dashboards ConfigMap for Grafana's sidecar");
    let data = config_map["data"].as_object().unwrap();
    let files = files("dashboards", ".json");
    assert_eq!(data.len(), files.len());
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let embedded = data[&name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} embedded"));
        assert_eq!(
            serde_json::from_str::<Value>(embedded).unwrap(),
            json(&path),
            "{name}"
        );
    }
}

#[test]
fn kustomize_builds_the_base_with_every_manifest() {
    let output = Command::new("kubectl")
        .args(["kustomize", "deploy/kubernetes"])
        .current_dir(repo())
        .output()
        .expect("kubectl runs (scripts/install-test-deps.sh installs it)");
    assert!(
        output.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let built: Vec<Value> = yaml_serde::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: BTreeSet<&str> = built.iter().filter_map(|d| d["kind"].as_str()).collect();
    for wanted in [
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
    ] {
        assert!(kinds.contains(wanted), "{wanted} in the build: {kinds:?}");
    }
    // Every file of the directory is a resource of the kustomization.
    let kustomization = yaml(&repo().join("deploy/kubernetes/kustomization.yaml"));
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    for path in files("deploy/kubernetes", ".yaml") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name == "kustomization.yaml" || listed.contains(&name),
            "{name} is not listed in kustomization.yaml"
        );
    }
}

#[tokio::test]
async fn kubernetes_ports_probes_and_scrape_path_match_the_service() {
    let docs = kubernetes_docs();
    let deployment = kind(&docs, "Deployment");
    let service = kind(&docs, "Service");
    let monitor = kind(&docs, "ServiceMonitor");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let port = default_port();
    assert_eq!(port, 8056);

    // The container listens where the manifest says, on every interface.
    let ports = container["ports"].as_array().unwrap();
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .expect("an http port");
    assert_eq!(http["containerPort"], port);
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("env {name}"))
            .to_string()
    };
    assert_eq!(
        env("CERTUS_ASSURANCE_LISTEN_ADDR"),
        format!("0.0.0.0:{port}")
    );

    // Probes and the scrape path, each answered by the real routes of a running app.
    let app = spawn_app().await;
    for (probe, path, status) in [
        ("livenessProbe", "/health", 200),
        ("readinessProbe", "/health/ready", 200),
        ("startupProbe", "/health", 200),
    ] {
        let p = &container[probe]["httpGet"];
        assert_eq!(p["path"], path, "{probe}");
        assert_eq!(p["port"], "http", "{probe} uses the named port");
        assert_eq!(app.get(path).await.status(), status, "{probe} {path}");
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    let metrics_path = endpoint["path"].as_str().unwrap();
    let response = app.get(metrics_path).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));

    // Service → pod port; ServiceMonitor → Service port; selectors match labels.
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"], port);
    assert_eq!(service_port["targetPort"], "http");
    assert_eq!(endpoint["port"], service_port["name"]);
    let pod_labels = pod["metadata"]["labels"].as_object().unwrap();
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "Service selector {k}");
    }
    for (k, v) in deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(pod_labels.get(k), Some(v), "Deployment selector {k}");
    }
    let service_labels = service["metadata"]["labels"].as_object().unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            service_labels.get(k),
            Some(v),
            "ServiceMonitor selector {k}"
        );
    }
    // The rules expect job="certus-assurance": the ServiceMonitor's job is the Service name.
    assert_eq!(service["metadata"]["name"], "certus-assurance");
    assert!(monitor["spec"].get("jobLabel").is_none());

    // Data directory on the volume; resources; a locked-down security context.
    let data_dir = env("CERTUS_ASSURANCE_DATA_DIR");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let data_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == data_dir.as_str())
        .expect("the data directory is a volume");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == data_mount["name"])
        .unwrap();
    let claim = volume["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap();
    assert!(docs
        .iter()
        .any(|d| d["kind"] == "PersistentVolumeClaim" && d["metadata"]["name"] == claim));
    for key in ["requests", "limits"] {
        assert!(container["resources"][key]["memory"].is_string(), "{key}");
    }
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let sc = &container["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    // Longer than the drain: shutdown grace plus time to close connections.
    let grace = certus_assurance::Config::for_data_dir("/nonexistent").shutdown_grace;
    assert!(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap()
            > grace.as_secs() + 10
    );
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
}

#[test]
fn the_container_image_is_multi_stage_non_root_and_serves_the_default_port() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    let runtime = lines[*stages.last().unwrap()..].join("\n");
    assert!(
        runtime.contains("COPY --from=build "),
        "the runtime stage copies the built binary"
    );
    assert!(
        runtime.contains("ca-certificates"),
        "CA certificates for git, S3 and Trust"
    );
    assert!(
        !runtime.contains("cargo"),
        "no toolchain in the runtime image"
    );
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert!(uid >= 1000, "non-root user");
    let port = default_port();
    assert!(runtime.contains(&format!("EXPOSE {port}")));
    assert!(runtime.contains(&format!("CERTUS_ASSURANCE_LISTEN_ADDR=0.0.0.0:{port}")));
    assert!(runtime.contains("CERTUS_ASSURANCE_DATA_DIR=/data"));
    assert!(runtime.contains("VOLUME [\"/data\"]"));
    // The build stage copies what the crate needs to build.
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "src", "migrations"] {
        assert!(
            text.contains(&format!("COPY {needed}")) || text.contains(&format!(" {needed} ")),
            "the build stage copies {needed}"
        );
        assert!(repo().join(needed).exists());
    }
    let ignore = std::fs::read_to_string(repo().join("deploy/Dockerfile.dockerignore")).unwrap();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src/",
        "migrations/",
    ] {
        assert!(
            ignore.contains(&format!("!{needed}")),
            "{needed} is in the build context"
        );
    }
}

#[test]
fn the_compose_stack_wires_service_prometheus_alertmanager_grafana_and_s3() {
    let compose = yaml(&repo().join("deploy/docker-compose.yml"));
    let services = compose["services"].as_object().unwrap();
    for wanted in [
        "certus-assurance",
        "prometheus",
        "alertmanager",
        "grafana",
        "s3",
    ] {
        assert!(services.contains_key(wanted), "service {wanted}");
    }
    let port = default_port();
    let app = &services["certus-assurance"];
    assert_eq!(app["build"]["dockerfile"], "deploy/Dockerfile");
    assert!(app["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == &format!("{port}:{port}")));
    assert_eq!(
        app["environment"]["CERTUS_ASSURANCE_LISTEN_ADDR"],
        format!("0.0.0.0:{port}")
    );

    // Prometheus scrapes the service under the job name the rules expect and loads the rules.
    let prom_config = yaml(&repo().join("deploy/prometheus/prometheus.yml"));
    let job = &prom_config["scrape_configs"][0];
    assert_eq!(job["job_name"], "certus-assurance");
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(
        job["static_configs"][0]["targets"][0],
        format!("certus-assurance:{port}")
    );
    let mounts = |service: &str| -> Vec<String> {
        services[service]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let rules_mount = mounts("prometheus")
        .into_iter()
        .find(|m| m.starts_with("../alerts:"))
        .expect("alerts/ mounted into Prometheus");
    let rules_dir = rules_mount.split(':').nth(1).unwrap();
    let rule_glob = prom_config["rule_files"][0].as_str().unwrap();
    assert!(
        rule_glob.starts_with(rules_dir),
        "{rule_glob} under {rules_dir}"
    );
    assert_eq!(
        prom_config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
        "alertmanager:9093"
    );
    let output = Command::new("promtool")
        .args([
            "check",
            "config",
            "--syntax-only",
            "deploy/prometheus/prometheus.yml",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let output = Command::new("amtool")
        .args(["check-config", "deploy/alertmanager/alertmanager.yml"])
        .current_dir(repo())
        .output()
        .expect("amtool runs (Debian prometheus-alertmanager)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // Grafana gets the provisioning files and the dashboards where the provider looks.
    let grafana = mounts("grafana");
    assert!(grafana
        .iter()
        .any(|m| m.starts_with("../dashboards/provisioning:/etc/grafana/provisioning")));
    let provider = yaml(&repo().join("dashboards/provisioning/dashboards/certus-assurance.yml"));
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        grafana
            .iter()
            .any(|m| m.starts_with("../dashboards:") && m.split(':').nth(1) == Some(path)),
        "dashboards mounted at the provider's path {path}: {grafana:?}"
    );
    let datasource = yaml(&repo().join("dashboards/provisioning/datasources/prometheus.yml"));
    assert_eq!(
        datasource["datasources"][0]["url"],
        "http://prometheus:9090"
    );
}
