//! Docs that cannot drift: every list the code owns is checked against the code here, both ways
//! (nothing missing from the doc, nothing in the doc that the code does not have). A change that
//! adds a setting, a metric, a profile, a failure reason, an event type, a route or a source file
//! without its doc fails these tests, and so does a doc row left behind by a removal.
//!
//! - settings (docs/configuration.md) against the command line's `CERTUS_ASSURANCE_*` arguments,
//!   with their flags and defaults;
//! - metrics (docs/metrics.md) against the registry, with their types and label names;
//! - profiles (docs/scanning.md) against the built-in presets, with scanners and thresholds;
//! - failure reasons and event types (README.md) against the enums;
//! - routes (README.md) against the OpenAPI document, which `openapi.rs` checks against the router;
//! - the module map (docs/ARCHITECTURE.md) against the files under `src/`;
//! - the bundle files (docs/scanning.md) against a full bundle (`assert_bundle_documented`, called
//!   by the scanning test that writes one), and every relative link and anchor of the docs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use certus_assurance::metrics::Metrics;
use certus_assurance::pipeline::profile::{Profile, BUILTIN_PROFILES, PROFILE_LABELS};
use certus_assurance::pipeline::ScanEvent;
use certus_assurance::scan::FailureReason;
use clap::CommandFactory;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// The cells of every markdown table row in `text` (header and separator rows included, which
/// callers filter by what the first cell holds).
fn table_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !trimmed.starts_with('|') || !trimmed.ends_with('|') {
            continue;
        }
        let inner = &trimmed[1..trimmed.len() - 1];
        rows.push(split_cells(inner));
    }
    rows
}

/// Splits a row on `|` outside backticks (cells quote `a|b` in code spans).
fn split_cells(inner: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut in_code = false;
    for c in inner.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                cell.push(c);
            }
            '|' if !in_code => {
                cells.push(cell.trim().to_string());
                cell.clear();
            }
            _ => cell.push(c),
        }
    }
    cells.push(cell.trim().to_string());
    cells
}

/// The code spans of a cell: "`a`, `b` (x)" → ["a", "b"].
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// The first code span of a cell, if the cell starts with one.
fn leading_code(cell: &str) -> Option<String> {
    cell.trim_start()
        .strip_prefix('`')
        .and_then(|rest| rest.split_once('`'))
        .map(|(code, _)| code.to_string())
}

fn report(problems: &[String], what: &str) {
    assert!(
        problems.is_empty(),
        "{what} and the code disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_setting_is_documented_with_its_flag_and_default() {
    let doc = read("docs/configuration.md");
    let mut documented: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in table_rows(&doc) {
        if let Some(name) = row.first().and_then(|c| leading_code(c)) {
            if name.starts_with("CERTUS_ASSURANCE_") && row.len() >= 3 {
                documented.insert(name, row);
            }
        }
    }
    let command = certus_assurance::cli::Cli::command();
    let mut problems = Vec::new();
    let mut declared = BTreeSet::new();
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        declared.insert(env.to_string());
        let Some(row) = documented.get(env) else {
            problems.push(format!(
                "{env} is a setting but has no row in docs/configuration.md"
            ));
            continue;
        };
        if let Some(long) = arg.get_long() {
            if !row[1].contains(&format!("`--{long}`")) {
                problems.push(format!(
                    "{env}: the flag column says {:?}, the code's flag is --{long}",
                    row[1]
                ));
            }
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if let [default] = defaults.as_slice() {
            let shown = leading_code(&row[2]);
            if shown.as_deref() != Some(default.as_str()) {
                problems.push(format!(
                    "{env}: the default column says {:?}, the code's default is `{default}`",
                    row[2]
                ));
            }
        }
    }
    for env in documented.keys() {
        if !declared.contains(env) {
            problems.push(format!(
                "docs/configuration.md documents {env}, which is not a setting of the binary"
            ));
        }
    }
    report(&problems, "docs/configuration.md");
}

#[test]
fn every_metric_is_documented_with_its_type_and_labels() {
    let doc = read("docs/metrics.md");
    let mut documented: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in table_rows(&doc) {
        if let Some(first) = row.first() {
            // One row may document several metrics ("`a`, `b`").
            for name in code_spans(first) {
                if name.starts_with("certus_assurance_") && row.len() >= 3 {
                    documented.insert(name, row.clone());
                }
            }
        }
    }
    let scanners = certus_assurance::pipeline::BUILTIN_SCANNERS;
    let metrics = Metrics::new(&PROFILE_LABELS, &scanners);
    // HTTP series appear with their first response; make one so the families are gathered.
    metrics
        .http_requests_total
        .with_label_values(&["GET", "/health", "200"])
        .inc();
    metrics
        .http_request_duration_seconds
        .with_label_values(&["GET", "/health", "200"])
        .observe(0.001);
    let mut problems = Vec::new();
    let mut declared = BTreeSet::new();
    for family in metrics.gather() {
        let name = family.name().to_string();
        if !name.starts_with("certus_assurance_") {
            continue;
        }
        declared.insert(name.clone());
        let Some(row) = documented.get(&name) else {
            problems.push(format!("{name} is registered but not documented"));
            continue;
        };
        let kind = format!("{:?}", family.get_field_type()).to_lowercase();
        if !row[1].to_lowercase().contains(&kind) {
            problems.push(format!(
                "{name}: documented type {:?}, registered as {kind}",
                row[1]
            ));
        }
        let labels: BTreeSet<String> = family
            .get_metric()
            .iter()
            .flat_map(|m| m.get_label().iter().map(|l| l.name().to_string()))
            .collect();
        for label in &labels {
            if !row[2].contains(&format!("`{label}`")) {
                problems.push(format!(
                    "{name}: label `{label}` is not in the documented labels {:?}",
                    row[2]
                ));
            }
        }
        if labels.is_empty() && row[2].trim() != "none" {
            problems.push(format!(
                "{name} has no labels but the doc says {:?}",
                row[2]
            ));
        }
    }
    for name in documented.keys() {
        if !declared.contains(name) {
            problems.push(format!(
                "docs/metrics.md documents {name}, which the registry does not have"
            ));
        }
    }
    report(&problems, "docs/metrics.md");
}

/// "0 / 5 / 50 / –" for a profile's thresholds (critical / high / medium / low).
fn thresholds_cell(profile: &Profile) -> String {
    let t = &profile.thresholds;
    let all = [t.critical, t.high, t.medium, t.low];
    if all.iter().all(Option::is_none) {
        return "none".to_string();
    }
    all.iter()
        .map(|v| v.map(|n| n.to_string()).unwrap_or_else(|| "–".to_string()))
        .collect::<Vec<_>>()
        .join(" / ")
}

#[test]
fn the_profile_table_lists_each_preset_with_its_scanners_and_thresholds() {
    let mut documented: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in table_after_header("docs/scanning.md", &["profile", "scanners"]) {
        if let Some(name) = leading_code(&row[0]) {
            documented.insert(name, row);
        }
    }
    let mut problems = Vec::new();
    for name in BUILTIN_PROFILES {
        let profile = Profile::builtin(name).expect("a built-in profile");
        let Some(row) = documented.get(name) else {
            problems.push(format!("profile `{name}` has no row in the profile table"));
            continue;
        };
        let listed: Vec<String> = row[1].split(',').map(|s| s.trim().to_string()).collect();
        if listed != profile.scanners {
            problems.push(format!(
                "profile `{name}`: the doc lists scanners {listed:?}, the code runs {:?}",
                profile.scanners
            ));
        }
        let expected = thresholds_cell(&profile);
        if row[2] != expected {
            problems.push(format!(
                "profile `{name}`: the doc's thresholds are {:?}, the code's {expected:?}",
                row[2]
            ));
        }
    }
    for name in documented.keys() {
        if !BUILTIN_PROFILES.contains(&name.as_str()) {
            problems.push(format!(
                "the profile table lists `{name}`, which is not a built-in profile"
            ));
        }
    }
    report(&problems, "docs/scanning.md's profile table");
}

/// The body rows of the table in `rel` whose header row starts with the cells `header`.
fn table_after_header(rel: &str, header: &[&str]) -> Vec<Vec<String>> {
    let text = read(rel);
    let mut rows = Vec::new();
    let mut inside = false;
    let mut found = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if !trimmed.starts_with('|') || !trimmed.ends_with('|') || trimmed.len() < 2 {
            inside = false;
            continue;
        }
        let cells = split_cells(&trimmed[1..trimmed.len() - 1]);
        if cells.len() >= header.len() && cells.iter().zip(header).all(|(c, h)| c == h) {
            inside = true;
            found = true;
            continue;
        }
        if inside && !cells[0].starts_with("---") {
            rows.push(cells);
        }
    }
    assert!(
        found && !rows.is_empty(),
        "{rel} has no table whose header starts with {header:?}"
    );
    rows
}

fn readme_table(header: &str) -> Vec<Vec<String>> {
    table_after_header("README.md", &[header])
}

#[test]
fn the_readme_lists_every_failure_reason() {
    let documented: BTreeSet<String> = readme_table("`failure_reason`")
        .iter()
        .filter_map(|r| leading_code(&r[0]))
        .collect();
    let declared: BTreeSet<String> = FailureReason::ALL
        .iter()
        .map(|r| r.as_str().to_string())
        .collect();
    assert_eq!(
        documented, declared,
        "README.md's failure_reason table and FailureReason::ALL differ"
    );
}

/// The `type` of each event, by an exhaustive match: a new variant does not compile until it is
/// named here, and then fails the test until the README documents it.
fn event_type(event: &ScanEvent) -> &'static str {
    match event {
        ScanEvent::Phase { .. } => "phase",
        ScanEvent::ToolStart { .. } => "tool_start",
        ScanEvent::Log { .. } => "log",
        ScanEvent::ToolComplete { .. } => "tool_complete",
        ScanEvent::FindingSummary { .. } => "finding_summary",
        ScanEvent::Error { .. } => "error",
        ScanEvent::ScanComplete { .. } => "scan_complete",
    }
}

#[test]
fn the_readme_lists_every_event_type() {
    let documented: BTreeSet<String> = readme_table("`type`")
        .iter()
        .filter_map(|r| leading_code(&r[0]))
        .collect();
    let example = ScanEvent::Error {
        message: "x".into(),
    };
    // The serialized tag is the same name as the match gives.
    let tag = serde_json::to_value(&example).unwrap()["type"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(tag, event_type(&example));
    let declared: BTreeSet<String> = [
        "phase",
        "tool_start",
        "log",
        "tool_complete",
        "finding_summary",
        "error",
        "scan_complete",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        documented, declared,
        "README.md's event table and ScanEvent differ"
    );
}

#[test]
fn the_readme_route_table_matches_the_openapi_document() {
    let document: serde_json::Value =
        serde_json::from_str(&read("src/api/openapi.json")).expect("openapi.json parses");
    let mut declared = BTreeMap::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                let statuses: BTreeSet<String> = operation["responses"]
                    .as_object()
                    .map(|r| r.keys().cloned().collect())
                    .unwrap_or_default();
                declared.insert((method.to_uppercase(), path.clone()), statuses);
            }
        }
    }
    let mut documented = BTreeMap::new();
    for row in table_after_header("README.md", &["method", "path", "purpose", "statuses"]) {
        let method = row[0]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        if let Some(path) = leading_code(&row[1]) {
            let statuses: BTreeSet<String> = code_spans(&row[3]).into_iter().collect();
            documented.insert((method, path), statuses);
        }
    }
    let mut problems = Vec::new();
    for (route, statuses) in &declared {
        match documented.get(route) {
            None => problems.push(format!("{} {} is not in the README", route.0, route.1)),
            Some(doc) if doc != statuses => problems.push(format!(
                "{} {}: the README lists statuses {doc:?}, the OpenAPI document {statuses:?}",
                route.0, route.1
            )),
            Some(_) => {}
        }
    }
    for route in documented.keys() {
        if !declared.contains_key(route) {
            problems.push(format!(
                "the README lists {} {}, which the OpenAPI document does not have",
                route.0, route.1
            ));
        }
    }
    report(&problems, "README.md's route table");
}

fn source_files(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(&path, root, out);
        } else {
            let rel = path.strip_prefix(root).expect("under src/");
            out.insert(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn the_architecture_map_names_every_file_under_src() {
    let doc = read("docs/ARCHITECTURE.md");
    let mut documented = BTreeSet::new();
    for row in table_rows(&doc) {
        if let Some(first) = row.first() {
            for span in code_spans(first) {
                documented.insert(span);
            }
        }
    }
    let src = repo().join("src");
    let mut files = BTreeSet::new();
    source_files(&src, &src, &mut files);
    let missing: Vec<_> = files.difference(&documented).collect();
    let stale: Vec<_> = documented
        .iter()
        .filter(|d| (d.ends_with(".rs") || d.ends_with(".json")) && !files.contains(*d))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/ARCHITECTURE.md's module table: files under src/ without a row {missing:?}; rows \
         for files that do not exist {stale:?}"
    );
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` removed, spaces
/// as `-`.
fn anchor(heading: &str) -> String {
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

/// The anchors of a markdown file's headings (outside code fences), with GitHub's `-1`, `-2`
/// suffixes for repeated headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if let Some(heading) = line.strip_prefix('#') {
            let base = anchor(heading.trim_start_matches('#'));
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            *n += 1;
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut files = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).expect("docs/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").expect("link pattern");
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a markdown file");
        let name = file.strip_prefix(repo()).unwrap().display().to_string();
        let fences = text.matches("\n```").count() + usize::from(text.starts_with("```"));
        if fences % 2 == 1 {
            problems.push(format!("{name}: a code fence is not closed"));
        }
        for caps in link.captures_iter(&text) {
            let target = &caps[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !resolved.exists() {
                problems.push(format!("{name}: link to {target}: no such file"));
                continue;
            }
            if !fragment.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
                let target_text = std::fs::read_to_string(&resolved).unwrap();
                if !anchors(&target_text).contains(fragment) {
                    problems.push(format!("{name}: link to {target}: no such heading"));
                }
            }
        }
    }
    report(&problems, "links in README.md and docs/");
}

/// Fails unless every file of the bundle in `dir` matches a row of docs/scanning.md's bundle
/// table (`<scanner>` in a row stands for any scanner name), and every row matches a file.
pub fn assert_bundle_documented(dir: &Path) {
    let rows = table_after_header("docs/scanning.md", &["file", "content"]);
    let patterns: Vec<(String, regex::Regex)> = rows
        .iter()
        .flat_map(|row| code_spans(&row[0]))
        .map(|name| {
            let re = format!(
                "^{}$",
                regex::escape(&name).replace("<scanner>", "[a-z][a-z0-9-]*")
            );
            (name, regex::Regex::new(&re).expect("a file pattern"))
        })
        .collect();
    let mut files = BTreeSet::new();
    source_files(dir, dir, &mut files);
    let undocumented: Vec<&String> = files
        .iter()
        .filter(|f| !patterns.iter().any(|(_, re)| re.is_match(f)))
        .collect();
    let unseen: Vec<&String> = patterns
        .iter()
        .filter(|(_, re)| !files.iter().any(|f| re.is_match(f)))
        .map(|(name, _)| name)
        .collect();
    assert!(
        undocumented.is_empty() && unseen.is_empty(),
        "docs/scanning.md's bundle table and a full bundle differ: files without a row \
         {undocumented:?}; rows no file matches {unseen:?}"
    );
}
