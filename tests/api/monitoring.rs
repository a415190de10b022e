//! Reading the monitoring that ships in the repository: rule files (alerts/), promtool unit tests
//! (tests/alerts/), dashboards (dashboards/), and the PromQL inside them. Used by the alert,
//! dashboard, Prometheus and deploy tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files of `dir` (relative to the repository root) whose name ends with `suffix`, sorted.
pub fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *{suffix} in {dir}");
    found
}

pub fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Every YAML document of a multi-document file.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

pub fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// The rule files shipped in alerts/.
pub fn rule_files() -> Vec<PathBuf> {
    files("alerts", ".rules.yml")
}

/// One alerting or recording rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub file: String,
    pub group: String,
    /// The alert name, or the recorded series name.
    pub name: String,
    pub is_alert: bool,
    pub expr: String,
    pub for_: Duration,
    pub rule: Value,
}

pub fn rules() -> Vec<Rule> {
    let mut out = Vec::new();
    for path in rule_files() {
        let doc = yaml(&path);
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        for group in doc["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                let is_alert = rule.get("alert").is_some();
                out.push(Rule {
                    file: file.clone(),
                    group: str_of(group, "name").to_string(),
                    name: str_of(rule, if is_alert { "alert" } else { "record" }).to_string(),
                    is_alert,
                    expr: str_of(rule, "expr").to_string(),
                    for_: rule["for"]
                        .as_str()
                        .map(prometheus_duration)
                        .unwrap_or_default(),
                    rule: rule.clone(),
                });
            }
        }
    }
    out
}

/// A Prometheus duration such as `90s`, `5m`, `1h30m`, `3d`.
pub fn prometheus_duration(text: &str) -> Duration {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {text}"));
        number.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => panic!("bad duration unit in {text}"),
        };
    }
    assert!(number.is_empty(), "duration {text} needs a unit");
    Duration::from_secs(total)
}

/// The dashboards shipped in dashboards/: (file name, JSON).
pub fn dashboards() -> Vec<(String, Value)> {
    files("dashboards", ".json")
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                json(&p),
            )
        })
        .collect()
}

/// Every panel of a dashboard, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().cloned().unwrap_or_default() {
        for nested in panel["panels"].as_array().cloned().unwrap_or_default() {
            out.push(nested);
        }
        out.push(panel);
    }
    out
}

/// One panel query: (dashboard file, panel title, expression).
pub fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                out.push((
                    file.clone(),
                    str_of(&panel, "title").to_string(),
                    str_of(&target, "expr").to_string(),
                ));
            }
        }
    }
    out
}

/// Replaces Grafana's variables by values Prometheus can evaluate: `job` and `instance` as given,
/// `$__rate_interval` and `$__range` by `range`.
pub fn expand_grafana_variables(expr: &str, job: &str, instance: &str, range: &str) -> String {
    expr.replace("$__rate_interval", range)
        .replace("$__range", range)
        .replace("$__interval", range)
        .replace("${job}", job)
        .replace("$job", job)
        .replace("${instance}", instance)
        .replace("$instance", instance)
}

const PROMQL_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "start",
    "end",
];

/// Names of the series an expression selects: metric names and recording-rule names (not
/// functions, aggregations, keywords, label names or strings).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips a balanced group that starts at `chars[i]` (`(`, `{`, `[`), honouring strings.
    let skip_group = |mut i: usize| -> usize {
        let open = chars[i];
        let close = match open {
            '(' => ')',
            '{' => '}',
            _ => ']',
        };
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    let quote = chars[i];
                    i += 1;
                    while i < chars.len() && chars[i] != quote {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '{' || c == '[' {
            i = skip_group(i);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && i + 1 < chars.len() && chars[i + 1].is_ascii_digit())
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after = next_non_space(i);
            // A function or aggregation is followed by `(`; an aggregation may put its
            // `by (...)`/`without (...)` clause first.
            let next_word: String = chars[after..]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic() || **c == '_')
                .collect();
            let followed_by_paren = (after < chars.len() && chars[after] == '(')
                || matches!(next_word.as_str(), "by" | "without");
            let lower = word.to_ascii_lowercase();
            if PROMQL_KEYWORDS.contains(&lower.as_str()) {
                // `by (...)`, `on (...)`, ...: the parentheses hold label names.
                if followed_by_paren
                    && matches!(
                        lower.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    )
                {
                    i = skip_group(after);
                }
            } else if !followed_by_paren {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Series names exposed in a Prometheus text exposition (samples and families).
pub fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                names.insert(name.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        names.insert(line[..end].to_string());
    }
    names
}

/// The anchor GitHub gives a markdown heading.
pub fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Anchors of every heading of a markdown file.
pub fn markdown_anchors(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code && line.starts_with('#') {
            anchors.insert(heading_anchor(line.trim_start_matches('#')));
        }
    }
    anchors
}

#[test]
fn promql_names_are_told_apart_from_functions_labels_and_keywords() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, job) (rate(certus_assurance_trust_request_duration_seconds_bucket{outcome=~"a|b"}[10m]))) > 2
           and on (job) sum(increase(x_total[1h] offset 30m)) > bool 0 or vector(0) unless absent(up{job="certus-assurance"})
           / ignoring(status) job:certus_assurance_http_errors:ratio_rate5m * 1e3"#,
    );
    let expected: BTreeSet<String> = [
        "certus_assurance_trust_request_duration_seconds_bucket",
        "x_total",
        "up",
        "job:certus_assurance_http_errors:ratio_rate5m",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, expected);
    assert_eq!(heading_anchor("CertusAssuranceDown"), "certusassurancedown");
    assert_eq!(
        heading_anchor("Queue full (503 on submit)"),
        "queue-full-503-on-submit"
    );
    assert_eq!(prometheus_duration("1h30m"), Duration::from_secs(5400));
}

/// The runbook base URL set in alerts/runbook-base-url (its first line that is not a comment).
pub fn runbook_base_url() -> String {
    let text = std::fs::read_to_string(repo().join("alerts/runbook-base-url")).unwrap();
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("alerts/runbook-base-url holds a URL")
        .to_string()
}

/// The environment variables deploy/alertmanager/alertmanager.yml reads.
pub const ALERTMANAGER_ENV: [&str; 3] = [
    "ALERTMANAGER_WEBHOOK_URL",
    "ALERTMANAGER_SLACK_WEBHOOK_URL",
    "ALERTMANAGER_SLACK_CHANNEL",
];

/// deploy/alertmanager/alertmanager.yml rendered into `out` by deploy/alertmanager/render-config.sh
/// (as the compose stack's entrypoint does) with exactly `env` among [`ALERTMANAGER_ENV`], and its
/// template glob pointed at the repository's deploy/alertmanager/templates (mounted at
/// /etc/alertmanager in the stack). Returns the rendered text.
pub fn render_alertmanager_config(env: &[(&str, &str)], out: &Path) -> String {
    let dir = repo().join("deploy/alertmanager");
    let mut command = std::process::Command::new("sh");
    command
        .arg(dir.join("render-config.sh"))
        .arg(dir.join("alertmanager.yml"))
        .arg(out);
    for name in ALERTMANAGER_ENV {
        command.env_remove(name);
    }
    let output = command.envs(env.iter().copied()).output().unwrap();
    assert!(
        output.status.success(),
        "render-config.sh: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(out)
        .unwrap()
        .replace("/etc/alertmanager/", &format!("{}/", dir.display()));
    std::fs::write(out, &text).unwrap();
    text
}
