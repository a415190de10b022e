//! The deploy files in deploy/: every manifest parses, the generated Kubernetes monitoring is in
//! sync with alerts/ and dashboards/, kustomize builds the base, and the ports, paths and probe
//! targets are the service's real ones (default port 8056; each probed path is requested from a
//! running app and must answer as the manifest expects).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;
use crate::monitoring::*;
use crate::upload_helpers::*;

/// The service's default port, from its own configuration defaults.
fn default_port() -> u16 {
    certus_assurance::Config::for_data_dir("/nonexistent")
        .server
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
    let built = kustomize(Path::new("deploy/kubernetes"));
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
    let grace = certus_assurance::Config::for_data_dir("/nonexistent")
        .server
        .shutdown_grace;
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
fn the_compose_stack_wires_service_trust_s3_prometheus_alertmanager_and_grafana() {
    let compose = yaml(&repo().join("deploy/docker-compose.yml"));
    let services = compose["services"].as_object().unwrap();
    for wanted in [
        "certus-assurance",
        "trust",
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
        .expect("promtool runs (Debian prometheus; scripts/install-test-deps.sh installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // Alertmanager: the config the entrypoint renders is valid with no receiver integration set
    // and with all of them; the environment the stack passes is what the template reads.
    let alertmanager = &services["alertmanager"];
    let entrypoint = alertmanager["entrypoint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        entrypoint
            .contains("render-config.sh /etc/alertmanager/alertmanager.yml /tmp/alertmanager.yml")
            && entrypoint.contains("--config.file=/tmp/alertmanager.yml"),
        "the entrypoint renders the template and starts on the result: {entrypoint}"
    );
    assert!(mounts("alertmanager").contains(&"./alertmanager:/etc/alertmanager:ro".to_string()));
    let passed: BTreeSet<&str> = alertmanager["environment"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(passed, BTreeSet::from(ALERTMANAGER_ENV));
    let dir = tempfile::tempdir().unwrap();
    for (name, env) in [
        ("none", vec![]),
        (
            "all",
            vec![
                (
                    "ALERTMANAGER_WEBHOOK_URL",
                    "https://hooks.example.com/alerts",
                ),
                (
                    "ALERTMANAGER_SLACK_WEBHOOK_URL",
                    "https://hooks.slack.com/services/T0/B0/X",
                ),
                ("ALERTMANAGER_SLACK_CHANNEL", "#alerts"),
            ],
        ),
    ] {
        let rendered = dir.path().join(format!("{name}.yml"));
        let text = render_alertmanager_config(&env, &rendered);
        assert!(
            !text.contains("${"),
            "{name}: every placeholder is filled:\n{text}"
        );
        let output = Command::new("amtool")
            .arg("check-config")
            .arg(&rendered)
            .output()
            .expect("amtool runs (Debian prometheus-alertmanager)");
        assert!(
            output.status.success(),
            "{name}: {}\n{text}",
            String::from_utf8_lossy(&output.stdout)
        );
        let config = yaml(&rendered);
        for receiver in config["receivers"].as_array().unwrap() {
            let has = |key: &str| receiver.get(key).is_some();
            assert_eq!(has("webhook_configs"), name == "all", "{name}: {receiver}");
            assert_eq!(has("slack_configs"), name == "all", "{name}: {receiver}");
        }
    }

    // Uploads run end to end: uploads on, Trust is the stand-in service, with the same token.
    let app_env = &app["environment"];
    assert_eq!(app_env["CERTUS_ASSURANCE_ENABLE_S3_UPLOAD"], "true");
    let trust = &services["trust"];
    let listen = trust["environment"]["TRUST_STAND_IN_LISTEN"]
        .as_str()
        .unwrap();
    let trust_port = listen.rsplit(':').next().unwrap();
    assert_eq!(
        app_env["CERTUS_ASSURANCE_TRUST_BASE_URL"],
        format!("http://trust:{trust_port}")
    );
    assert_eq!(
        app_env["CERTUS_ASSURANCE_TRUST_TOKEN"],
        trust["environment"]["TRUST_STAND_IN_TOKEN"]
    );
    assert_eq!(
        app["depends_on"]["trust"]["condition"], "service_healthy",
        "the service starts once the stand-in answers"
    );
    assert!(mounts("trust").contains(&"./trust-stand-in:/app:ro".to_string()));
    assert_eq!(trust["command"][1], "/app/trust_stand_in.py");
    assert!(app_env["CERTUS_ASSURANCE_S3_ENDPOINT_URL"]
        .as_str()
        .unwrap()
        .starts_with("http://s3:"));

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

/// One line of a `.dockerignore`, compiled the way Docker compiles it (moby/patternmatcher):
/// the pattern is cleaned (a leading `/` and a trailing `/` do not matter), `*` and `?` match
/// within one path element, `**` matches any number of elements, `[...]` is a class, `\`
/// escapes, and a leading `!` makes the line an exception.
struct DockerIgnorePattern {
    exception: bool,
    regex: regex::Regex,
}

fn docker_ignore_patterns(text: &str) -> Vec<DockerIgnorePattern> {
    let mut patterns = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (exception, pattern) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        // filepath.Clean: no leading or trailing separator, no `.` elements.
        let cleaned: Vec<&str> = pattern
            .split('/')
            .filter(|part| !part.is_empty() && *part != ".")
            .collect();
        let cleaned = cleaned.join("/");
        let mut re = String::from("^");
        let mut chars = cleaned.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    if chars.peek() == Some(&'/') {
                        chars.next();
                    }
                    if chars.peek().is_none() {
                        re.push_str(".*");
                    } else {
                        re.push_str("(.*/)?");
                    }
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '\\' => {
                    if let Some(next) = chars.next() {
                        re.push_str(&regex::escape(&next.to_string()));
                    }
                }
                '[' | ']' | '-' | '^' => re.push(c),
                other => re.push_str(&regex::escape(&other.to_string())),
            }
        }
        re.push('$');
        patterns.push(DockerIgnorePattern {
            exception,
            regex: regex::Regex::new(&re)
                .unwrap_or_else(|e| panic!("dockerignore pattern {line:?}: {e}")),
        });
    }
    patterns
}

/// Whether Docker leaves `path` (relative, `/`-separated) out of the build context: the last
/// pattern that matches the path or one of its parent directories decides.
fn docker_ignores(patterns: &[DockerIgnorePattern], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for pattern in patterns {
        let matches = (1..=parts.len()).any(|n| pattern.regex.is_match(&parts[..n].join("/")));
        if matches {
            excluded = !pattern.exception;
        }
    }
    excluded
}

#[test]
fn the_dockerignore_rules_match_as_docker_matches_them() {
    let patterns =
        docker_ignore_patterns("*\n!src/\n!/Cargo.toml\nsrc/**/*.bak\n!docs/**/keep?.md\n");
    for (path, ignored) in [
        ("README.md", true),
        ("Cargo.toml", false),
        ("src/main.rs", false),
        ("src/api/mod.rs", false),
        ("src/api/old.bak", true),
        ("src/old.bak", true),
        ("docs/a/b/keep1.md", false),
        ("docs/a/b/keep12.md", true),
        ("benches/scanning.rs", true),
    ] {
        assert_eq!(docker_ignores(&patterns, path), ignored, "{path}");
    }
}

/// Copies a file, or a directory with everything under it.
fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

/// Copies what Docker would send as the build context of `deploy/Dockerfile` (the repository
/// root, filtered by `deploy/Dockerfile.dockerignore`) into `dest`; returns the copied paths.
fn assemble_build_context(dest: &Path) -> BTreeSet<String> {
    let ignore = std::fs::read_to_string(repo().join("deploy/Dockerfile.dockerignore")).unwrap();
    let patterns = docker_ignore_patterns(&ignore);
    let mut copied = BTreeSet::new();
    let mut stack = vec![repo()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path
                .strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if path.is_dir() {
                // The target directory and .git are large and never in this context.
                if relative != ".git" && relative != "target" {
                    stack.push(path);
                }
                continue;
            }
            if docker_ignores(&patterns, &relative) {
                continue;
            }
            let target = dest.join(&relative);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&path, &target).unwrap();
            copied.insert(relative);
        }
    }
    copied
}

#[test]
fn the_image_build_stage_has_every_file_cargo_needs_in_its_context() {
    let context = tempfile::tempdir().unwrap();
    let admitted = assemble_build_context(context.path());
    assert!(admitted.contains("Cargo.toml"), "{admitted:?}");

    // The build stage's COPY lines, applied to the context as Docker applies them.
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let build_stage: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("FROM "))
        .skip(1)
        .take_while(|l| !l.starts_with("FROM "))
        .collect();
    let workdir = tempfile::tempdir().unwrap();
    let mut copies = 0;
    for line in build_stage {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<&str> = args.split_whitespace().collect();
        assert!(
            !words.iter().any(|w| w.starts_with("--")),
            "the build stage copies only from the context: {line}"
        );
        let (sources, destination) = words.split_at(words.len() - 1);
        let destination = destination[0].trim_start_matches("./");
        for source in sources {
            let from = context.path().join(source);
            assert!(
                from.exists(),
                "`{line}` in deploy/Dockerfile: {source} is not in the build context; \
                 admit it in deploy/Dockerfile.dockerignore"
            );
            let to = if destination.is_empty() || destination.ends_with('/') {
                workdir
                    .path()
                    .join(destination)
                    .join(Path::new(source).file_name().unwrap())
            } else {
                workdir.path().join(destination)
            };
            copy_tree(&from, &to);
            copies += 1;
        }
    }
    assert!(copies >= 4, "the build stage copies the crate");

    // cargo fetch reads every target of the manifest (benches, examples, tests) and the lock
    // file: a target file or a lock entry missing from the image fails here as in `docker build`.
    // Offline from the CARGO_HOME the suite was built with, for the host target only (the crates
    // of other platforms need not be downloaded).
    let host = String::from_utf8(
        Command::new("rustc")
            .arg("-vV")
            .output()
            .expect("rustc runs")
            .stdout,
    )
    .unwrap()
    .lines()
    .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
    .expect("rustc -vV names the host");
    let output = Command::new("cargo")
        .args(["fetch", "--locked", "--offline", "--target", &host])
        .current_dir(workdir.path())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo fetch in the image's build stage failed; a file the manifest needs is not in \
         the build context (deploy/Dockerfile.dockerignore) or not copied (deploy/Dockerfile):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_file_the_compose_stack_mounts_or_builds_from_exists() {
    let deploy = repo().join("deploy");
    let compose_files: Vec<PathBuf> = std::fs::read_dir(&deploy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            (name.starts_with("docker-compose") || name.starts_with("compose"))
                && (name.ends_with(".yml") || name.ends_with(".yaml"))
        })
        .collect();
    assert!(!compose_files.is_empty(), "a compose file in deploy/");
    let mut checked = 0;
    for file in compose_files {
        let compose = yaml(&file);
        let named: BTreeSet<&str> = compose["volumes"]
            .as_object()
            .map(|v| v.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for (name, service) in compose["services"].as_object().unwrap() {
            if let Some(build) = service.get("build") {
                let context = deploy.join(build["context"].as_str().unwrap_or("."));
                assert!(context.is_dir(), "{name}: build context {context:?}");
                if let Some(dockerfile) = build["dockerfile"].as_str() {
                    assert!(
                        context.join(dockerfile).is_file(),
                        "{name}: dockerfile {dockerfile}"
                    );
                }
            }
            for volume in service["volumes"].as_array().into_iter().flatten() {
                // Short syntax `source:target[:mode]` or long syntax `{type, source, target}`.
                let source = match volume {
                    Value::String(s) => s.split(':').next().unwrap().to_string(),
                    other => other["source"].as_str().unwrap_or_default().to_string(),
                };
                if named.contains(source.as_str()) || source.is_empty() {
                    continue;
                }
                assert!(
                    source.starts_with('.') || source.starts_with('/'),
                    "{name}: volume {source} is neither a path nor a declared named volume"
                );
                assert!(
                    deploy.join(&source).exists(),
                    "{}: service {name} mounts {source}, which does not exist",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "the compose stack mounts files");
}

/// `kubectl kustomize dir` (relative to the repository root, or absolute), parsed.
fn kustomize(dir: &Path) -> Vec<Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .current_dir(repo())
        .output()
        .expect("kubectl runs (scripts/install-test-deps.sh installs it)");
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

/// The ServiceMonitor and the PrometheusRule of a build, with the label `release` taken out
/// (returned), and everything else unchanged.
fn without_release_labels(docs: &[Value]) -> (Vec<Value>, Vec<Option<Value>>) {
    let mut releases = Vec::new();
    let docs = docs
        .iter()
        .map(|d| {
            let mut d = d.clone();
            if d["kind"] == "ServiceMonitor" || d["kind"] == "PrometheusRule" {
                let labels = d["metadata"]["labels"].as_object_mut().unwrap();
                releases.push(labels.remove("release"));
            }
            d
        })
        .collect();
    (docs, releases)
}

#[test]
fn the_kube_prometheus_stack_overlay_labels_the_servicemonitor_and_prometheusrule_for_its_selectors(
) {
    let base = kustomize(Path::new("deploy/kubernetes"));
    let overlay = kustomize(Path::new("deploy/overlays/kube-prometheus-stack"));
    let (base_rest, base_releases) = without_release_labels(&base);
    assert_eq!(
        base_releases,
        vec![None, None],
        "the base has no release label"
    );
    let (rest, releases) = without_release_labels(&overlay);
    let wanted = Some(Value::from("kube-prometheus-stack"));
    assert_eq!(releases, vec![wanted.clone(), wanted]);
    assert_eq!(rest, base_rest, "the overlay changes nothing else");
    // The Grafana sidecar of the chart finds the dashboards by their label.
    assert!(overlay
        .iter()
        .any(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1"));

    // The overlay's documented patch for another release name, uncommented, sets that name.
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("deploy"), &copy.path().join("deploy"));
    let file = copy
        .path()
        .join("deploy/overlays/kube-prometheus-stack/kustomization.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut uncommenting = false;
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            uncommenting |= line == "# patches:";
            if uncommenting && line.starts_with('#') {
                line.trim_start_matches('#')
                    .strip_prefix(' ')
                    .unwrap_or("")
                    .replace("my-release", "monitoring")
            } else {
                uncommenting = false;
                line.to_string()
            }
        })
        .collect();
    std::fs::write(&file, edited.join("\n") + "\n").unwrap();
    let built = kustomize(&copy.path().join("deploy/overlays/kube-prometheus-stack"));
    let (_, releases) = without_release_labels(&built);
    let wanted = Some(Value::from("monitoring"));
    assert_eq!(
        releases,
        vec![wanted.clone(), wanted],
        "{}",
        edited.join("\n")
    );
}

/// Every `runbook_url` value of a rule, promtool test or PrometheusRule file.
fn runbook_urls(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url:"))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn the_runbook_base_url_is_set_once_and_generated_into_every_runbook_link() {
    let base = runbook_base_url();
    assert!(
        base.starts_with("https://")
            && base.ends_with("/docs/runbooks.md")
            && base.contains("YOUR-ORG"),
        "the default is the repository URL form of docs/runbooks.md with a placeholder: {base}"
    );
    // Generated: every link is absolute, the base plus the alert's section.
    let mut files = rule_files();
    files.extend(
        files_under(&repo().join("tests/alerts"))
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".test.yml")),
    );
    files.push(repo().join("deploy/kubernetes/prometheusrule.yaml"));
    for file in &files {
        let urls = runbook_urls(file);
        assert!(!urls.is_empty(), "{}", file.display());
        for url in urls {
            assert!(
                url.starts_with(&format!("{base}#")),
                "{}: {url}",
                file.display()
            );
        }
    }

    // One edit of the base and one run of the script change every link; --check notices the
    // edit before the run.
    let copy = tempfile::tempdir().unwrap();
    for dir in [
        "alerts",
        "tests/alerts",
        "dashboards",
        "deploy/kubernetes",
        "scripts",
    ] {
        copy_tree(&repo().join(dir), &copy.path().join(dir));
    }
    let new_base = "https://docs.example.com/certus/runbooks.html";
    let setting = copy.path().join("alerts/runbook-base-url");
    let text = std::fs::read_to_string(&setting).unwrap();
    std::fs::write(&setting, text.replace(&base, new_base)).unwrap();
    let script = copy
        .path()
        .join("scripts/generate-kubernetes-monitoring.sh");
    let run = |args: &[&str]| Command::new(&script).args(args).output().unwrap();
    let check = run(&["--check"]);
    assert!(
        !check.status.success(),
        "--check fails while the links differ from the base"
    );
    assert!(String::from_utf8_lossy(&check.stderr)
        .contains("run scripts/generate-kubernetes-monitoring.sh"));
    let generate = run(&[]);
    assert!(
        generate.status.success(),
        "{}",
        String::from_utf8_lossy(&generate.stderr)
    );
    assert!(run(&["--check"]).status.success());
    let mut links = 0;
    for file in &files {
        let copied = copy.path().join(file.strip_prefix(repo()).unwrap());
        for url in runbook_urls(&copied) {
            let anchor = url.rsplit('#').next().unwrap();
            assert_eq!(url, format!("{new_base}#{anchor}"), "{}", copied.display());
            links += 1;
        }
    }
    assert!(links >= 30, "{links} links rewritten");
    // A value that is not an absolute URL is refused, naming the file.
    std::fs::write(&setting, "docs/runbooks.md\n").unwrap();
    let refused = run(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("alerts/runbook-base-url"));
}

#[tokio::test]
async fn the_compose_trust_stand_in_permits_and_denies_and_the_service_uploads_through_it() {
    let compose = yaml(&repo().join("deploy/docker-compose.yml"));
    let services = &compose["services"];
    let trust_env = services["trust"]["environment"].as_object().unwrap();
    let env: Vec<(&str, &str)> = trust_env
        .iter()
        .filter(|(k, _)| k.as_str() != "TRUST_STAND_IN_LISTEN")
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let denied = trust_env["TRUST_STAND_IN_DENY_WORKSPACES"]
        .as_str()
        .unwrap();
    let token = services["certus-assurance"]["environment"]["CERTUS_ASSURANCE_TRUST_TOKEN"]
        .as_str()
        .unwrap();
    let trust = ComposeTrustStandIn::start(&env);
    let moto = MotoServer::start();
    let s3 = S3::new(&moto.endpoint());
    s3.create_bucket("raw").await;
    s3.create_bucket("golden").await;
    let git = GitServer::start();
    git.create_repo("demo", &[("README.md", "# demo\n")]);
    let (trust_url, endpoint) = (trust.url.clone(), moto.endpoint());
    let app = spawn_app_with(|c| enable_uploads_with(c, &trust_url, token, &endpoint)).await;

    let mut permitted = scan_body(&git.url("demo"));
    permitted["workspace_id"] = "team-a".into();
    let mut refused = permitted.clone();
    refused["workspace_id"] = denied.into();
    for (body, status, final_status) in [(permitted, 202, "uploaded"), (refused, 403, "denied")] {
        let id = app.submit_scan(body).await;
        assert_eq!(app.wait_for_terminal(&id).await["status"], "SUCCEEDED");
        let response = app
            .post_json(
                &format!("/v1/security-scans/{id}/upload-request"),
                &serde_json::json!({"tier": "basic"}),
            )
            .await;
        let code = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(code, status, "{answer}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let scan = app.scan(&id).await;
            if scan["upload_status"] == final_status && scan["upload_in_progress"] == false {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{scan}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let raw = s3.objects("raw").await;
    let golden = s3.objects("golden").await;
    assert!(
        !raw.is_empty() && raw.len() == golden.len(),
        "{raw:?} {golden:?}"
    );
    let stats = app.stats().await;
    assert_eq!(stats["upload_stats"]["uploaded"], 1, "{stats}");
    assert_eq!(stats["upload_stats"]["denied"], 1, "{stats}");
}

// ---------------------------------------------------------------------------------------------
// The cluster overlays: deploy/overlays/cluster (replicas sharing PostgreSQL and S3), and the
// same scaled on queue depth by KEDA (cluster-keda) or by an HPA through prometheus-adapter
// (cluster-hpa).

const CLUSTER_OVERLAYS: [&str; 3] = ["cluster", "cluster-keda", "cluster-hpa"];

fn overlay(name: &str) -> Vec<Value> {
    kustomize(&Path::new("deploy/overlays").join(name))
}

fn only<'a>(docs: &'a [Value], kind: &str, overlay: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{overlay}: one {kind}");
    found[0]
}

/// Where one variable of a container's environment comes from.
#[derive(Debug, PartialEq)]
enum EnvSource {
    Value(String),
    Secret { name: String, key: String },
    ConfigMap(String),
}

/// The container's environment, each `configMapKeyRef` resolved in the build's ConfigMaps.
fn container_env(docs: &[Value], container: &Value) -> BTreeMap<String, EnvSource> {
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_string();
        let from = &var["valueFrom"];
        let source = if let Some(value) = var["value"].as_str() {
            EnvSource::Value(value.to_string())
        } else if from["secretKeyRef"].is_object() {
            EnvSource::Secret {
                name: str_of(&from["secretKeyRef"], "name").to_string(),
                key: str_of(&from["secretKeyRef"], "key").to_string(),
            }
        } else if from["configMapKeyRef"].is_object() {
            let reference = &from["configMapKeyRef"];
            let map = docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == reference["name"])
                .unwrap_or_else(|| {
                    panic!(
                        "{name}: the ConfigMap {} is in the build",
                        reference["name"]
                    )
                });
            let value = map["data"][str_of(reference, "key")]
                .as_str()
                .unwrap_or_else(|| {
                    panic!("{name}: the ConfigMap has the key {}", reference["key"])
                });
            EnvSource::ConfigMap(value.to_string())
        } else {
            panic!("{name}: an environment variable with neither a value nor a reference: {var}")
        };
        assert!(
            env.insert(name.clone(), source).is_none(),
            "{name} is set once"
        );
    }
    env
}

/// A plain value of the environment (set directly or through a ConfigMap).
fn plain<'a>(env: &'a BTreeMap<String, EnvSource>, name: &str) -> Option<&'a str> {
    match env.get(name)? {
        EnvSource::Value(v) | EnvSource::ConfigMap(v) => Some(v),
        EnvSource::Secret { .. } => panic!("{name} is not a plain value"),
    }
}

fn settings_of_the_binary() -> BTreeSet<String> {
    use clap::CommandFactory;
    certus_assurance::cli::Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().and_then(|e| e.to_str()).map(String::from))
        .collect()
}

#[test]
fn the_cluster_overlays_share_only_postgres_and_s3_and_take_their_settings_from_secrets() {
    let settings = settings_of_the_binary();
    for name in CLUSTER_OVERLAYS {
        let docs = overlay(name);
        assert!(
            !docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim"),
            "{name}: no volume claim"
        );
        let deployment = only(&docs, "Deployment", name);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let env = container_env(&docs, container);

        // Every variable is a setting of the binary.
        for var in env.keys() {
            assert!(
                settings.contains(var),
                "{name}: {var} is not a setting of the binary"
            );
        }
        // The store, the S3 client and its keys come from Secrets; nothing secret is inline.
        let secret = |var: &str, expected: &str| match env.get(var) {
            Some(EnvSource::Secret { name: found, .. }) => assert_eq!(found, expected, "{var}"),
            other => panic!("{name}: {var} from the Secret {expected}, not {other:?}"),
        };
        secret("CERTUS_ASSURANCE_DATABASE_URL", "certus-assurance-database");
        for var in [
            "CERTUS_ASSURANCE_S3_ENDPOINT_URL",
            "CERTUS_ASSURANCE_S3_REGION",
            "CERTUS_ASSURANCE_S3_ACCESS_KEY_ID",
            "CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY",
        ] {
            secret(var, "certus-assurance-s3");
        }
        for (var, source) in &env {
            let sensitive = [
                "SECRET",
                "TOKEN",
                "PASSWORD",
                "DATABASE_URL",
                "CREDENTIAL_KEYS",
            ]
            .iter()
            .any(|w| var.contains(w))
                && !var.ends_with("_FILE");
            assert!(
                !sensitive || matches!(source, EnvSource::Secret { .. }),
                "{name}: {var} must come from a Secret"
            );
        }
        assert_eq!(plain(&env, "CERTUS_ASSURANCE_ARTIFACT_STORE"), Some("s3"));
        assert!(!plain(&env, "CERTUS_ASSURANCE_ARTIFACT_BUCKET")
            .unwrap()
            .is_empty());

        // The credential keys are a file of a mounted Secret.
        let keys_file = plain(&env, "CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE").unwrap();
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| keys_file.starts_with(&format!("{}/", str_of(m, "mountPath"))))
            .unwrap_or_else(|| panic!("{name}: {keys_file} is on a mounted volume"));
        let volumes = pod["volumes"].as_array().unwrap();
        let volume = |v: &str| volumes.iter().find(|x| x["name"] == v).unwrap();
        let keys = &volume(str_of(mount, "name"))["secret"];
        assert_eq!(keys["secretName"], "certus-assurance-credential-keys");
        let mode = keys["defaultMode"].as_u64().unwrap();
        assert_eq!(
            mode & 0o007,
            0,
            "{name}: the key file is not world-readable"
        );
        assert_eq!(
            mode & 0o040,
            0o040,
            "{name}: the service's group (fsGroup) reads it"
        );
        assert_eq!(
            pod["securityContext"]["fsGroup"],
            pod["securityContext"]["runAsGroup"]
        );

        // No shared volume: every volume is scratch of the pod, or a Secret.
        for v in volumes {
            assert!(
                v["emptyDir"].is_object() || v["secret"].is_object(),
                "{name}: volume {v} is neither an emptyDir nor a Secret"
            );
        }
        let data_dir = plain(&env, "CERTUS_ASSURANCE_DATA_DIR").unwrap();
        let data = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == data_dir)
            .expect("the data directory is mounted");
        assert!(volume(str_of(data, "name"))["emptyDir"].is_object());

        // Rolled one pod at a time, and a budget that lets one go at a time.
        let strategy = &deployment["spec"]["strategy"];
        assert_eq!(strategy["type"], "RollingUpdate", "{name}");
        assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 0, "{name}");
        let budget = only(&docs, "PodDisruptionBudget", name);
        assert_eq!(budget["spec"]["maxUnavailable"], 1, "{name}");
        let labels = deployment["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .unwrap();
        for (k, v) in budget["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                labels.get(k),
                Some(v),
                "{name}: the budget selects the pods by {k}"
            );
        }
        // The rest of the base holds: probes, the Service and the monitoring.
        for kind in ["Service", "ServiceMonitor", "PrometheusRule"] {
            only(&docs, kind, name);
        }
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"],
            "/health/ready"
        );
    }
    let fixed = overlay("cluster");
    let replicas = only(&fixed, "Deployment", "cluster")["spec"]["replicas"]
        .as_u64()
        .unwrap();
    assert!(replicas >= 2, "several replicas: {replicas}");
}

/// Seconds of an `exec` preStop hook that runs `sleep N` (0 without a hook).
fn pre_stop_seconds(container: &Value) -> u64 {
    let hook = &container["lifecycle"]["preStop"];
    if hook.is_null() {
        return 0;
    }
    let command: Vec<&str> = hook["exec"]["command"]
        .as_array()
        .expect("an exec preStop hook")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    match command.as_slice() {
        ["sleep", seconds] => seconds.parse().expect("whole seconds"),
        other => panic!("a preStop hook this test does not know: {other:?}"),
    }
}

#[test]
fn the_cluster_drain_fits_in_the_termination_grace_period() {
    let defaults = certus_assurance::Config::for_data_dir("/nonexistent");
    for name in CLUSTER_OVERLAYS {
        let docs = overlay(name);
        let pod = &only(&docs, "Deployment", name)["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let env = container_env(&docs, container);
        let grace = plain(&env, "CERTUS_ASSURANCE_SHUTDOWN_GRACE_SECONDS")
            .map(|v| v.parse::<u64>().expect("whole seconds"))
            .unwrap_or(defaults.server.shutdown_grace.as_secs());
        let pause = pre_stop_seconds(container);
        // The kubelet runs preStop, then sends SIGTERM; the service then waits up to `grace` for
        // running scans, stops the rest (a few seconds to notice and requeue them), waits up to
        // `grace` again for running uploads, and up to CONNECTIONS_CLOSE_TIMEOUT for open
        // connections (src/app.rs, `run_until_stopped`). All of it within the grace period.
        let close = certus_assurance::shutdown::CONNECTIONS_CLOSE_TIMEOUT.as_secs();
        let requeue_margin = 10;
        let drain = pause + grace + requeue_margin + grace + close;
        let period = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            period >= drain,
            "{name}: terminationGracePeriodSeconds {period} is shorter than the drain: preStop \
             {pause} + SHUTDOWN_GRACE_SECONDS {grace} (scans) + {requeue_margin} (requeue) + \
             {grace} (uploads) + {close} (connections) = {drain}"
        );
        assert!(
            pause > 0,
            "{name}: a preStop pause while the endpoints drop the pod"
        );
    }
}

/// The `threshold` of the ScaledObject's Prometheus trigger and its query.
fn keda_trigger(docs: &[Value]) -> (String, f64) {
    let scaled = only(docs, "ScaledObject", "cluster-keda");
    let triggers = scaled["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 1);
    let trigger = &triggers[0];
    assert_eq!(trigger["type"], "prometheus");
    assert_eq!(trigger["metricType"], "AverageValue");
    let metadata = &trigger["metadata"];
    assert!(str_of(metadata, "serverAddress").starts_with("http"));
    (
        str_of(metadata, "query").to_string(),
        str_of(metadata, "threshold").parse().unwrap(),
    )
}

/// The prometheus-adapter rule of cluster-hpa: (name it exposes, metricsQuery, seriesQuery).
fn adapter_rule() -> (String, String, String) {
    let values = yaml(&repo().join("deploy/overlays/cluster-hpa/prometheus-adapter-values.yaml"));
    let rules = values["rules"]["custom"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    let overrides = &rule["resources"]["overrides"];
    assert_eq!(overrides["namespace"]["resource"], "namespace");
    assert_eq!(overrides["service"]["resource"], "service");
    (
        str_of(&rule["name"], "as").to_string(),
        str_of(rule, "metricsQuery").to_string(),
        str_of(rule, "seriesQuery").to_string(),
    )
}

/// The adapter's query as it runs for an Object metric of the Service `service` in `namespace`.
fn expand_adapter_query(template: &str, series: &str, namespace: &str, service: &str) -> String {
    template
        .replace("<<.Series>>", series)
        .replace(
            "<<.LabelMatchers>>",
            &format!("namespace=\"{namespace}\",service=\"{service}\""),
        )
        .replace("<<.GroupBy>>", "service")
}

#[test]
fn the_autoscalers_follow_the_queue_depth_gauge_with_one_replica_per_max_workers_scans() {
    let documented = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let keda = overlay("cluster-keda");
    let hpa = overlay("cluster-hpa");
    let (query, threshold) = keda_trigger(&keda);
    let (exposed, template, series_query) = adapter_rule();
    let adapter_query = expand_adapter_query(
        &template,
        "certus_assurance_scans",
        "prod",
        "certus-assurance",
    );
    for (what, expr) in [
        ("KEDA", &query),
        ("adapter", &adapter_query),
        ("adapter series", &series_query),
    ] {
        let names = metric_names(expr);
        assert_eq!(
            names,
            BTreeSet::from(["certus_assurance_scans".to_string()]),
            "{what}: {expr}"
        );
        for metric in &names {
            assert!(
                documented.contains(&format!("| `{metric}` | gauge |")),
                "{what}: {metric} is a gauge of docs/metrics.md"
            );
        }
    }
    // The target per replica is the workers of one replica.
    for (name, docs) in [("cluster-keda", &keda), ("cluster-hpa", &hpa)] {
        let deployment = only(docs, "Deployment", name);
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "{name}: the autoscaler owns the replica count"
        );
        let env = container_env(
            docs,
            &deployment["spec"]["template"]["spec"]["containers"][0],
        );
        let workers: f64 = plain(&env, "CERTUS_ASSURANCE_MAX_WORKERS")
            .expect("MAX_WORKERS is set where the target is")
            .parse()
            .unwrap();
        let target = if name == "cluster-keda" {
            let scaled = only(docs, "ScaledObject", name);
            assert_eq!(
                scaled["spec"]["scaleTargetRef"]["name"],
                deployment["metadata"]["name"]
            );
            assert!(scaled["spec"]["minReplicaCount"].as_u64().unwrap() >= 2);
            threshold
        } else {
            let autoscaler = only(docs, "HorizontalPodAutoscaler", name);
            let spec = &autoscaler["spec"];
            assert_eq!(spec["scaleTargetRef"]["kind"], "Deployment");
            assert_eq!(
                spec["scaleTargetRef"]["name"],
                deployment["metadata"]["name"]
            );
            assert!(spec["minReplicas"].as_u64().unwrap() >= 2);
            let metric = &spec["metrics"][0]["object"];
            assert_eq!(
                metric["metric"]["name"],
                exposed.as_str(),
                "the adapter's name"
            );
            let service = only(docs, "Service", name);
            assert_eq!(metric["describedObject"]["kind"], "Service");
            assert_eq!(
                metric["describedObject"]["name"],
                service["metadata"]["name"]
            );
            assert_eq!(metric["target"]["type"], "AverageValue");
            str_of(&metric["target"], "averageValue").parse().unwrap()
        };
        assert_eq!(target, workers, "{name}: one replica per MAX_WORKERS scans");
    }

    // Both queries, evaluated by promtool over two replicas that report the same cluster-wide
    // counts (3 queued, 2 running, 7 succeeded), give 5; the adapter's query keeps another
    // service's series out.
    let dir = tempfile::tempdir().unwrap();
    let labels = |instance: &str, status: &str| {
        format!(
            "certus_assurance_scans{{job=\"certus-assurance\",namespace=\"prod\",service=\"certus-assurance\",instance=\"{instance}\",status=\"{status}\"}}"
        )
    };
    let mut series = String::new();
    for instance in ["10.0.0.1:8056", "10.0.0.2:8056"] {
        for (status, n) in [
            ("queued", 3),
            ("running", 2),
            ("succeeded", 7),
            ("failed", 0),
        ] {
            series.push_str(&format!(
                "      - series: '{}'\n        values: '{n}x5'\n",
                labels(instance, status)
            ));
        }
    }
    series.push_str(
        "      - series: 'certus_assurance_scans{job=\"other\",namespace=\"prod\",service=\"other\",instance=\"10.0.0.9:8056\",status=\"queued\"}'\n        values: '40x5'\n",
    );
    let rules = dir.path().join("autoscaling.rules.yml");
    std::fs::write(
        &rules,
        format!(
            "groups:\n  - name: autoscaling\n    rules:\n      - record: keda:query\n        expr: '{}'\n      - record: adapter:query\n        expr: '{}'\n",
            query.replace('\'', "''"),
            adapter_query.replace('\'', "''")
        ),
    )
    .unwrap();
    let tests = dir.path().join("autoscaling.test.yml");
    std::fs::write(
        &tests,
        format!(
            "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}    promql_expr_test:\n      - expr: keda:query\n        eval_time: 2m\n        exp_samples:\n          - labels: 'keda:query'\n            value: 5\n      - expr: adapter:query\n        eval_time: 2m\n        exp_samples:\n          - labels: 'adapter:query{{service=\"certus-assurance\"}}'\n            value: 5\n",
            rules.display()
        ),
    )
    .unwrap();
    for args in [
        vec!["check", "rules", rules.to_str().unwrap()],
        vec!["test", "rules", tests.to_str().unwrap()],
    ] {
        let output = Command::new("promtool")
            .args(&args)
            .output()
            .expect("promtool runs (Debian prometheus; scripts/install-test-deps.sh installs it)");
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
