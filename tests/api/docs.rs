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
//!   by the scanning test that writes one), and every relative link and anchor of the docs;
//! - across README.md, docs/ and deploy/**/README*: every variable named (a setting, or read by
//!   the build, the tests or the scripts), every `certus-assurance …` command line (subcommands
//!   and flags of the binary), every metric and recording rule, every test named;
//! - the fields of a submission and of a scan (README.md) against the OpenAPI schemas, the
//!   `route` label values (docs/metrics.md) against the routes, the runbook sections against the
//!   failure reasons and the alerts, the skip reasons of `CERTUS_ASSURANCE_TEST_SKIP` against the
//!   tests' `cannot_run` calls, and the secrets scanner's rule count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use certus_assurance::metrics::labels::HttpMethod;
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

/// The service's registry, with every family present: the HTTP series appear with their first
/// response, so one is recorded.
fn registry_with_every_family() -> Metrics {
    let scanners = certus_assurance::pipeline::scanners::registry::SCANNER_NAMES;
    let metrics = Metrics::new(&PROFILE_LABELS, &scanners);
    // HTTP series appear with their first response; make one so the families are gathered.
    metrics.http.record(HttpMethod::Get, "/health", 200, 0.001);
    metrics
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
    let metrics = registry_with_every_family();
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
    assert_eq!(
        documented,
        failure_reasons(),
        "README.md's failure_reason table and FailureReason::ALL differ"
    );
}

fn failure_reasons() -> BTreeSet<String> {
    FailureReason::ALL
        .iter()
        .map(|r| r.as_str().to_string())
        .collect()
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

/// README.md, every file of docs/ and every README under deploy/: the files whose sentences the
/// checks below hold to the code.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut deploy = BTreeSet::new();
    source_files(&repo().join("deploy"), &repo(), &mut deploy);
    files.extend(
        deploy
            .iter()
            .filter(|p| {
                p.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("README"))
            })
            .map(|p| repo().join(p)),
    );
    files
}

fn doc_name(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap().display().to_string()
}

/// The code of a markdown text: each line of its fenced blocks and each inline code span
/// outside them.
fn code_texts(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    let mut prose = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            out.push(line.to_string());
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    out.extend(code_spans(&prose));
    out
}

/// The text of every file under `dirs` (and of `extra` files), markdown excluded: where a
/// variable a doc names must be read.
fn code_corpus(dirs: &[&str], extra: &[&str]) -> String {
    let mut corpus: String = extra.iter().map(|f| read(f) + "\n").collect();
    for dir in dirs {
        let mut files = BTreeSet::new();
        let root = repo().join(dir);
        if root.is_dir() {
            source_files(&root, &repo(), &mut files);
        }
        for file in files.iter().filter(|f| !f.ends_with(".md")) {
            if let Ok(text) = std::fs::read_to_string(repo().join(file)) {
                corpus.push_str(&text);
                corpus.push('\n');
            }
        }
    }
    corpus
}

#[test]
fn every_variable_the_docs_name_is_a_setting_or_read_by_the_code() {
    let settings: BTreeSet<String> = certus_assurance::cli::Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().and_then(|e| e.to_str()).map(String::from))
        .collect();
    // The build's and the tests' own variables (CERTUS_ASSURANCE_BUILD_REVISION,
    // CERTUS_ASSURANCE_TEST_*) are read outside src/.
    let outside_src = code_corpus(
        &["tests", "scripts", "fuzz", "benches", ".ci"],
        &["build.rs"],
    );
    let everywhere = outside_src.clone() + &code_corpus(&["src", "deploy"], &[]);
    // Read by libraries (the OpenTelemetry SDK, libgit2's ssh agent) or named from the system.
    let external =
        |name: &str| name.starts_with("OTEL_") || ["SSH_AUTH_SOCK", "O_EXCL"].contains(&name);
    let variable = regex::Regex::new(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b").expect("a pattern");
    // The examples' own shell variables (`TEST_ID=$(curl …)`), in any of the docs.
    let assigned = regex::Regex::new(r"\b([A-Z][A-Z0-9_]*)=\$\(").expect("a pattern");
    let shell: BTreeSet<String> = doc_files()
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("a doc");
            assigned
                .captures_iter(&text)
                .map(|c| c[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut problems = BTreeSet::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).expect("a doc");
        // Every CERTUS_ASSURANCE_* name, in prose too.
        for name in variable.find_iter(&text).map(|m| m.as_str()) {
            if name.starts_with("CERTUS_ASSURANCE_")
                && !settings.contains(name)
                && !outside_src.contains(name)
            {
                problems.insert(format!(
                    "{}: `{name}` is not a setting of the binary (nor a variable of the build or \
                     the tests)",
                    doc_name(&file)
                ));
            }
        }
        // In code: a setting's short form (`MAX_QUEUE`), or a variable the code reads.
        for code in code_texts(&text) {
            for name in variable.find_iter(&code).map(|m| m.as_str()) {
                if !name.starts_with("CERTUS_ASSURANCE_")
                    && !settings.contains(&format!("CERTUS_ASSURANCE_{name}"))
                    && !external(name)
                    && !shell.contains(name)
                    && !everywhere.contains(name)
                {
                    problems.insert(format!(
                        "{}: `{name}` is neither a setting nor read by the code",
                        doc_name(&file)
                    ));
                }
            }
        }
    }
    report(
        &problems.into_iter().collect::<Vec<_>>(),
        "the variables the docs name",
    );
}

/// The `certus-assurance …` invocations in the code of a text: the words after the binary's
/// name, up to the end of the shell command.
fn invocations(code: &str) -> Vec<Vec<String>> {
    let binary =
        regex::Regex::new(r"(?:^|[\s/(])certus-assurance((?:[ \t]+[^\s]+)*)").expect("a pattern");
    binary
        .captures_iter(code)
        .map(|caps| {
            caps[1]
                .split_whitespace()
                .take_while(|w| {
                    !["|", "||", "&&", ";", "&", ">", "2>", "<<"].contains(w) && !w.starts_with('#')
                })
                .map(|w| {
                    w.trim_matches(|c| "[]\"')`…".contains(c))
                        .split('=')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .filter(|w| !w.is_empty())
                .collect()
        })
        .collect()
}

#[test]
fn every_command_line_in_the_docs_has_the_binarys_subcommands_and_flags() {
    let mut root = certus_assurance::cli::Cli::command();
    root.build();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).expect("a doc");
        for code in code_texts(&text) {
            for words in invocations(&code) {
                let Some(first) = words.first() else { continue };
                // `image: certus-assurance`, `job="certus-assurance" …`: a name, not a command.
                if !first.starts_with('-') && root.find_subcommand(first).is_none() {
                    continue;
                }
                checked += 1;
                let mut command = &root;
                let mut positional = false;
                for word in &words {
                    let known = if let Some(long) = word.strip_prefix("--") {
                        command.get_arguments().any(|a| a.get_long() == Some(long))
                            || ["help", "version"].contains(&long)
                    } else if let Some(short) = word.strip_prefix('-').filter(|s| s.len() == 1) {
                        let c = short.chars().next().unwrap();
                        command.get_arguments().any(|a| a.get_short() == Some(c))
                            || ['h', 'V'].contains(&c)
                    } else {
                        match command.find_subcommand(word) {
                            Some(sub) if !positional => command = sub,
                            _ => positional = true,
                        }
                        true
                    };
                    if !known {
                        problems.push(format!(
                            "{}: `certus-assurance {}`: `{word}` is not a flag of `{}`",
                            doc_name(&file),
                            words.join(" "),
                            command.get_name()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} command lines found in the docs"
    );
    report(&problems, "the command lines in the docs");
}

/// The names of the `record:` or `alert:` rules (`kind`) of alerts/certus-assurance.rules.yml.
fn rule_names(kind: &str) -> BTreeSet<String> {
    let rules = read("alerts/certus-assurance.rules.yml");
    regex::Regex::new(&format!(r"{kind}:\s*(\S+)"))
        .unwrap()
        .captures_iter(&rules)
        .map(|c| c[1].to_string())
        .collect()
}

#[test]
fn every_metric_and_recording_rule_the_docs_name_exists() {
    let families: BTreeSet<String> = registry_with_every_family()
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let recorded = rule_names("record");
    let series =
        regex::Regex::new(r"(?:[a-z_]+:)?\bcertus_assurance_[a-z0-9_]*[a-z0-9](?::[a-z0-9_]+)?")
            .expect("a pattern");
    let mut problems = BTreeSet::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).expect("a doc");
        for name in series.find_iter(&text).map(|m| m.as_str()) {
            let known = if name.contains(':') {
                recorded.contains(name)
            } else {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(*s))
                    .unwrap_or(name);
                families.contains(name) || families.contains(base)
            };
            if !known {
                problems.insert(format!(
                    "{}: `{name}` is neither a registered metric nor a recording rule",
                    doc_name(&file)
                ));
            }
        }
    }
    report(
        &problems.into_iter().collect::<Vec<_>>(),
        "the series the docs name",
    );
}

/// The level of a markdown heading line (`## A` → 2), if it is one.
fn heading_level(line: &str) -> Option<usize> {
    let hashes = line.len() - line.trim_start_matches('#').len();
    (hashes > 0 && line[hashes..].starts_with(' ')).then_some(hashes)
}

/// The titles of the headings one level below the heading line `section` of `rel`, up to the
/// next heading of its level or above (code fences skipped).
fn subsections(rel: &str, section: &str) -> BTreeSet<String> {
    let text = read(rel);
    let level = heading_level(section).expect("a heading");
    let mut inside = false;
    let mut in_fence = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if in_fence {
            continue;
        }
        match heading_level(line) {
            _ if line == section => inside = true,
            Some(l) if inside && l <= level => inside = false,
            Some(l) if inside && l == level + 1 => {
                out.insert(line[l..].trim().to_string());
            }
            _ => {}
        }
    }
    assert!(!out.is_empty(), "{rel} has no headings under `{section}`");
    out
}

#[test]
fn the_runbooks_cover_every_failure_reason_and_only_real_alerts() {
    let reasons = subsections("docs/runbooks.md", "## Scans failing");
    assert_eq!(
        reasons,
        failure_reasons(),
        "docs/runbooks.md's sections under `Scans failing` and FailureReason::ALL differ"
    );
    // alerts.rs checks that every alert links to its section; here, every section is an alert.
    let alerts = rule_names("alert");
    let documented = subsections("docs/runbooks.md", "## Alerts");
    assert_eq!(
        documented, alerts,
        "docs/runbooks.md's sections under `Alerts` and the alerts of \
         alerts/certus-assurance.rules.yml differ"
    );
}

#[test]
fn the_readme_names_every_reason_a_test_may_be_skipped_for() {
    let tests = code_corpus(&["tests"], &[]);
    let used: BTreeSet<String> = regex::Regex::new(r#"cannot_run\(\s*"([^"]+)""#)
        .unwrap()
        .captures_iter(&tests)
        .map(|c| c[1].to_string())
        .collect();
    assert!(
        !used.is_empty(),
        "no cannot_run(\"<reason>\", …) call found under tests/"
    );
    let documented: BTreeSet<String> =
        spans_from("README.md", "`CERTUS_ASSURANCE_TEST_SKIP`", "\n- ")
            .into_iter()
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
    assert_eq!(
        documented, used,
        "the skip reasons README.md lists next to CERTUS_ASSURANCE_TEST_SKIP and the reasons the \
         tests pass to cannot_run differ"
    );
}

/// The property names of the OpenAPI document's schema `name`.
fn schema_properties(name: &str) -> BTreeSet<String> {
    let document: serde_json::Value =
        serde_json::from_str(&read("src/api/openapi.json")).expect("openapi.json parses");
    document["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("openapi.json has no properties for the schema {name}"))
        .keys()
        .cloned()
        .collect()
}

/// The code spans of the text of `rel` from the first `start` to the next `end` (a paragraph:
/// `"\n\n"`; a list item: `"\n- "`).
fn spans_from(rel: &str, start: &str, end: &str) -> Vec<String> {
    let text = read(rel);
    let at = text
        .find(start)
        .unwrap_or_else(|| panic!("{rel} has no {start:?}"));
    let rest = &text[at..];
    code_spans(&rest[..rest.find(end).unwrap_or(rest.len())])
}

/// The code spans of the README paragraph that starts with `start`.
fn readme_paragraph_spans(start: &str) -> BTreeSet<String> {
    spans_from("README.md", start, "\n\n").into_iter().collect()
}

#[test]
fn the_readme_names_every_field_of_a_submission_and_of_a_scan() {
    let mut documented = BTreeSet::new();
    for row in table_after_header("README.md", &["field", "rules"]) {
        documented.extend(code_spans(&row[0]));
    }
    assert_eq!(
        documented,
        schema_properties("Submission"),
        "README.md's `Submitting a scan` table and the OpenAPI Submission schema differ"
    );
    let submitted = schema_properties("Submitted");
    let answer = readme_paragraph_spans("The `202` body has");
    let missing: Vec<_> = submitted.difference(&answer).collect();
    assert!(
        missing.is_empty(),
        "README.md's `202` paragraph does not name {missing:?}"
    );
    // The full status adds to the `202` body; `cancel_requested` is the cancel answer's own.
    let full: BTreeSet<String> = readme_paragraph_spans("The full status (")
        .union(&submitted)
        .cloned()
        .collect();
    let mut scan = schema_properties("Scan");
    scan.remove("cancel_requested");
    let missing: Vec<_> = scan.difference(&full).collect();
    assert!(
        missing.is_empty(),
        "README.md's full status paragraph does not name {missing:?}"
    );
}

/// docs/security.md names the test behind each defence: `module::name` for tests/api/, bare
/// names for unit tests under src/ (and the fuzzers' and the scripts' checks).
#[test]
fn every_test_the_docs_name_exists() {
    let code = code_corpus(&["src", "tests", "fuzz"], &[]);
    // schemathesis's check names (`not_a_server_error`) are configured by the scripts.
    let scripts = code_corpus(&["scripts"], &[]);
    let defined = |name: &str| {
        regex::Regex::new(&format!(r"\bfn\s+{name}\b"))
            .unwrap()
            .is_match(&code)
    };
    let qualified = regex::Regex::new(r"^([a-z_]+)::([a-z0-9_]+)$").unwrap();
    let bare = regex::Regex::new(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+){3,}$").unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).expect("a doc");
        let security = file.ends_with("docs/security.md");
        for span in code_spans(&text) {
            if let Some(caps) = qualified.captures(&span) {
                let module = repo().join(format!("tests/api/{}.rs", &caps[1]));
                if !module.exists() {
                    continue; // `jobs::state`, a module path rather than a test.
                }
                checked += 1;
                let source = std::fs::read_to_string(&module).unwrap();
                let test = regex::Regex::new(&format!(r"\bfn\s+{}\b", &caps[2])).unwrap();
                if !test.is_match(&source) {
                    problems.push(format!(
                        "{}: `{span}`: tests/api/{}.rs has no such test",
                        doc_name(&file),
                        &caps[1]
                    ));
                }
            } else if security && bare.is_match(&span) && !span.starts_with("certus_assurance_") {
                checked += 1;
                if !defined(&span) && !scripts.contains(&span) {
                    problems.push(format!(
                        "{}: `{span}` is no test or function of the code",
                        doc_name(&file)
                    ));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} test names found in the docs");
    report(&problems, "the tests the docs name");
}

#[test]
fn the_route_label_values_in_the_metrics_doc_are_the_routes() {
    let documented: BTreeSet<String> = spans_from("docs/metrics.md", "- `route`:", "\n- ")
        .into_iter()
        .filter(|s| s.starts_with('/') || s == "unmatched")
        .collect();
    let document: serde_json::Value =
        serde_json::from_str(&read("src/api/openapi.json")).expect("openapi.json parses");
    // The router's template of the one catch-all route is `{*path}`.
    let mut routes: BTreeSet<String> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(|p| p.replace("{path}", "{*path}"))
        .collect();
    routes.insert("unmatched".into());
    assert_eq!(
        documented, routes,
        "docs/metrics.md's `route` label values and the routes of the OpenAPI document differ"
    );
}

#[test]
fn the_secrets_rule_count_in_the_scanning_doc_is_the_codes() {
    let doc = read("docs/scanning.md");
    let stated: usize = regex::Regex::new(r"Credentials committed to the tree, by (\d+) rules")
        .unwrap()
        .captures(&doc)
        .expect("docs/scanning.md states how many rules the secrets scanner has")[1]
        .parse()
        .unwrap();
    let rules = certus_assurance::pipeline::scanners::secrets::SecretsScanner::rules().len();
    assert_eq!(
        stated, rules,
        "docs/scanning.md says the secrets scanner has {stated} rules; it has {rules}"
    );
}
