//! The layering of docs/ARCHITECTURE.md, checked against the code: every `crate::<module>` (and,
//! in the binary, `certus_assurance::<module>`) path in a file under `src/` must name its own
//! module, a module of a lower layer, or a base module. Base modules are usable from anywhere
//! and import only other base modules. Comments and `#[cfg(test)] mod tests` are not read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, top first. A module may import the layers below its own.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["cli"],
    &["app"],
    &["api"],
    &["jobs"],
    &["pipeline", "upload", "storage"],
    &["metrics"],
    &["scan"],
];

/// Usable from anywhere; they import only each other.
const BASE: &[&str] = &[
    "config",
    "error",
    "process_metrics",
    "telemetry",
    "shutdown",
    "auth",
];

/// Imports that break the layering today, as `(importing module, imported module)`. Each is
/// owed a fix; remove its line with the fix, and keep this list empty.
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Whether `from` may import `to` by the rules above.
fn allowed(from: &str, to: &str) -> bool {
    if from == to || from == "lib" || BASE.contains(&to) {
        return true;
    }
    if BASE.contains(&from) {
        return false;
    }
    match (layer_of(from), layer_of(to)) {
        (Some(a), Some(b)) => b > a,
        _ => false,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to: its first path component under `src/`, without `.rs`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under src/");
    let first = rel
        .components()
        .next()
        .expect("a path")
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The crate modules a file's code names (`crate::x` or `certus_assurance::x`).
fn imported_modules(text: &str) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        for prefix in ["crate::", "certus_assurance::"] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().last();
                rest = &rest[at + prefix.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn every_import_follows_the_layers() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut problems = Vec::new();
    for module in &modules {
        if module != "lib" && layer_of(module).is_none() && !BASE.contains(&module.as_str()) {
            problems.push(format!(
                "src/{module} has no layer: add it to LAYERS or BASE here and to the layering \
                 rules of docs/ARCHITECTURE.md"
            ));
        }
    }
    let mut broken = BTreeSet::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for to in imported_modules(&text) {
            if !modules.contains(&to) || allowed(&from, &to) {
                continue;
            }
            broken.insert((from.clone(), to.clone()));
            if !KNOWN_EXCEPTIONS.contains(&(from.as_str(), to.as_str())) {
                problems.push(format!(
                    "{} imports {to}, which is above {from} in docs/ARCHITECTURE.md's layers",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    for (from, to) in KNOWN_EXCEPTIONS {
        if !broken.contains(&(from.to_string(), to.to_string())) {
            problems.push(format!(
                "{from} -> {to} is listed in KNOWN_EXCEPTIONS but no longer happens: remove it"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "layering:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_rules_are_the_documented_ones() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"),
    )
    .expect("docs/ARCHITECTURE.md is readable");
    let line = |modules: &[&str]| modules.join(", ");
    for layer in LAYERS {
        assert!(
            doc.contains(&format!("- {}", line(layer))),
            "docs/ARCHITECTURE.md lists the layer `- {}`",
            line(layer)
        );
    }
    assert!(
        doc.contains(&format!("- base: {}", line(BASE))),
        "docs/ARCHITECTURE.md lists `- base: {}`",
        line(BASE)
    );
}

#[test]
fn the_reader_sees_imports_and_skips_comments_and_tests() {
    let text = "use crate::jobs::JobManager;\n// crate::api is named in a comment\nfn f() { \
                certus_assurance::scan::now_secs(); my_crate::x(); }\n#[cfg(test)]\nmod tests \
                {\n    use crate::cli;\n}\n";
    let found: Vec<String> = imported_modules(text).into_iter().collect();
    assert_eq!(found, ["jobs", "scan"]);
    assert!(allowed("api", "jobs") && !allowed("jobs", "api"));
    assert!(allowed("cli", "app") && !allowed("app", "cli"));
    assert!(allowed("storage", "scan") && !allowed("scan", "storage"));
    assert!(allowed("pipeline", "config") && !allowed("config", "pipeline"));
    assert!(!allowed("pipeline", "storage"));
}
