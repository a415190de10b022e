//! The software bill of materials of a source tree: which third-party packages its lockfiles and
//! manifests pin, each with a package URL (purl), and the SPDX 2.3 and CycloneDX 1.5 documents
//! that describe them. Pure data and file reading; no network.
//!
//! [`discover`] walks the tree (the same skips as the secrets scanner: VCS metadata, vendored
//! dependency directories and build output are not descended into) and hands each known lockfile
//! to its parser in [`lockfiles`]; [`documents`] renders the result.

pub mod documents;
pub mod lockfiles;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::anyhow;
use ignore::WalkBuilder;
use serde::Serialize;

/// Package ecosystems the SBOM knows (names as OSV spells them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Ecosystem {
    #[serde(rename = "crates.io")]
    Cargo,
    #[serde(rename = "npm")]
    Npm,
    #[serde(rename = "PyPI")]
    PyPI,
    #[serde(rename = "Go")]
    Go,
    #[serde(rename = "RubyGems")]
    RubyGems,
}

impl Ecosystem {
    pub const ALL: [Ecosystem; 5] = [
        Ecosystem::Cargo,
        Ecosystem::Npm,
        Ecosystem::PyPI,
        Ecosystem::Go,
        Ecosystem::RubyGems,
    ];

    /// The ecosystem's name in OSV records.
    pub fn osv_name(self) -> &'static str {
        match self {
            Ecosystem::Cargo => "crates.io",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Go => "Go",
            Ecosystem::RubyGems => "RubyGems",
        }
    }

    pub fn from_osv_name(name: &str) -> Option<Ecosystem> {
        Ecosystem::ALL.into_iter().find(|e| e.osv_name() == name)
    }

    /// The purl type.
    pub fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::Cargo => "cargo",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "pypi",
            Ecosystem::Go => "golang",
            Ecosystem::RubyGems => "gem",
        }
    }

    /// The form of a package name used to look it up: PyPI names are case- and
    /// separator-insensitive (PEP 503); every other ecosystem compares names exactly.
    pub fn normalize_name(self, name: &str) -> String {
        match self {
            Ecosystem::PyPI => normalize_pypi_name(name),
            _ => name.to_string(),
        }
    }
}

/// PEP 503 normalisation: lower case, runs of `-`, `_` and `.` become one `-`.
pub fn normalize_pypi_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_sep = false;
        }
    }
    out
}

/// One package pinned by a lockfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    pub ecosystem: Ecosystem,
    /// The package name as the ecosystem writes it (`@scope/name` for scoped npm packages, the
    /// module path for Go).
    pub name: String,
    /// The exact version pinned (Go versions keep their `v` prefix).
    pub version: String,
    pub purl: String,
    /// Where it was found: lockfile paths relative to the source root, with the 1-based line of
    /// the entry.
    pub locations: Vec<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    pub path: String,
    pub line: u32,
}

/// What one lockfile parser found, before de-duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub line: u32,
}

/// Every component of a tree plus the lockfiles read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// Sorted by ecosystem, name and version; one entry per (ecosystem, name, version).
    pub components: Vec<Component>,
    /// Lockfiles and manifests that were parsed, relative to the source root.
    pub files: Vec<String>,
    /// Problems that did not stop the inventory (a lockfile that could not be parsed).
    pub warnings: Vec<String>,
}

/// The package URL of a component (purl-spec: type, optional namespace, name, version).
pub fn purl(ecosystem: Ecosystem, name: &str, version: &str) -> String {
    let enc = |s: &str| percent_encode(s);
    let path = match ecosystem {
        Ecosystem::Npm => match name.strip_prefix('@').and_then(|n| n.split_once('/')) {
            Some((scope, pkg)) => format!("%40{}/{}", enc(scope), enc(pkg)),
            None => enc(name),
        },
        Ecosystem::Go => name.split('/').map(enc).collect::<Vec<_>>().join("/"),
        Ecosystem::PyPI => enc(&normalize_pypi_name(name)),
        Ecosystem::Cargo | Ecosystem::RubyGems => enc(name),
    };
    format!("pkg:{}/{}@{}", ecosystem.purl_type(), path, enc(version))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Directories never descended into when looking for lockfiles: VCS metadata and installed or
/// vendored dependencies (whose own lockfiles describe someone else's project).
const SKIPPED_DIRS: &[&str] = &[
    ".git",
    "node_modules",
    "vendor",
    "third_party",
    ".venv",
    "venv",
    "target",
    "__pycache__",
    "site-packages",
];

/// Lockfiles larger than this are not parsed (reported as a warning).
const MAX_LOCKFILE_BYTES: u64 = 64 * 1024 * 1024;

/// Finds and parses every known lockfile under `root`.
pub fn discover(root: &Path, cancel: &AtomicBool) -> anyhow::Result<Inventory> {
    let walker = WalkBuilder::new(root)
        .hidden(false)
        .parents(false)
        .git_global(false)
        .git_ignore(true)
        .git_exclude(true)
        .ignore(true)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|entry| {
            entry.depth() == 0
                || !entry.file_type().is_some_and(|t| t.is_dir())
                || !SKIPPED_DIRS.contains(&entry.file_name().to_string_lossy().as_ref())
        })
        .build();
    let mut found: Vec<(String, std::path::PathBuf, lockfiles::Kind)> = Vec::new();
    for entry in walker {
        if cancel.load(Ordering::Relaxed) {
            return Err(anyhow!("cancelled"));
        }
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let file_name = entry.file_name().to_string_lossy();
        let Some(kind) = lockfiles::Kind::for_file_name(&file_name) else {
            continue;
        };
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .replace('\\', "/");
        found.push((rel, entry.path().to_path_buf(), kind));
    }
    found.sort();
    // go.sum is only read where no go.mod sits beside it (go.mod lists the build's versions).
    let go_mod_dirs: std::collections::HashSet<String> = found
        .iter()
        .filter(|(_, _, k)| *k == lockfiles::Kind::GoMod)
        .map(|(rel, _, _)| parent_of(rel))
        .collect();

    let mut inventory = Inventory::default();
    let mut merged: BTreeMap<(Ecosystem, String, String), Component> = BTreeMap::new();
    for (rel, path, kind) in found {
        if kind == lockfiles::Kind::GoSum && go_mod_dirs.contains(&parent_of(&rel)) {
            continue;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_LOCKFILE_BYTES {
            inventory.warnings.push(format!(
                "{rel}: not read, larger than {} MiB",
                MAX_LOCKFILE_BYTES / (1024 * 1024)
            ));
            continue;
        }
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(err) => {
                inventory
                    .warnings
                    .push(format!("{rel}: not readable: {err}"));
                continue;
            }
        };
        match lockfiles::parse(kind, &text) {
            Ok(pins) => {
                inventory.files.push(rel.clone());
                for pin in pins {
                    let key = (
                        pin.ecosystem,
                        pin.ecosystem.normalize_name(&pin.name),
                        pin.version.clone(),
                    );
                    let location = Location {
                        path: rel.clone(),
                        line: pin.line,
                    };
                    merged
                        .entry(key)
                        .and_modify(|c| {
                            if !c.locations.contains(&location) {
                                c.locations.push(location.clone());
                            }
                        })
                        .or_insert_with(|| Component {
                            ecosystem: pin.ecosystem,
                            purl: purl(pin.ecosystem, &pin.name, &pin.version),
                            name: pin.name,
                            version: pin.version,
                            locations: vec![location],
                        });
                }
            }
            Err(err) => inventory
                .warnings
                .push(format!("{rel}: could not be parsed: {err:#}")),
        }
    }
    inventory.components = merged.into_values().collect();
    for c in &mut inventory.components {
        c.locations.sort();
    }
    Ok(inventory)
}

fn parent_of(rel: &str) -> String {
    rel.rsplit_once('/')
        .map(|(dir, _)| dir.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_follow_the_spec() {
        assert_eq!(
            purl(Ecosystem::Npm, "@babel/core", "7.0.0"),
            "pkg:npm/%40babel/core@7.0.0"
        );
        assert_eq!(
            purl(Ecosystem::Npm, "lodash", "4.17.21"),
            "pkg:npm/lodash@4.17.21"
        );
        assert_eq!(
            purl(Ecosystem::PyPI, "Jinja2", "2.10"),
            "pkg:pypi/jinja2@2.10"
        );
        assert_eq!(
            purl(Ecosystem::PyPI, "typing_extensions", "4.0.0"),
            "pkg:pypi/typing-extensions@4.0.0"
        );
        assert_eq!(
            purl(Ecosystem::Go, "github.com/gin-gonic/gin", "v1.9.0"),
            "pkg:golang/github.com/gin-gonic/gin@v1.9.0"
        );
        assert_eq!(
            purl(Ecosystem::Cargo, "serde", "1.0.0"),
            "pkg:cargo/serde@1.0.0"
        );
        assert_eq!(
            purl(Ecosystem::RubyGems, "rails", "7.0.0.rc1"),
            "pkg:gem/rails@7.0.0.rc1"
        );
    }

    #[test]
    fn pypi_names_normalise() {
        assert_eq!(normalize_pypi_name("Foo.Bar__baz"), "foo-bar-baz");
        assert_eq!(Ecosystem::Npm.normalize_name("Foo"), "Foo");
    }

    #[test]
    fn discovery_merges_and_skips_vendored_trees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("requirements.txt", "Jinja2==2.10\nrequests>=2\n");
        write("svc/requirements-dev.txt", "jinja2==2.10\n");
        write("node_modules/x/requirements.txt", "flask==0.1\n");
        write(
            "go.mod",
            "module example.com/m\n\nrequire github.com/a/b v1.0.0\n",
        );
        write("go.sum", "github.com/c/d v1.0.0 h1:x=\n");
        write("broken/Pipfile.lock", "{not json");
        let cancel = AtomicBool::new(false);
        let inv = discover(root, &cancel).unwrap();
        let names: Vec<_> = inv
            .components
            .iter()
            .map(|c| format!("{}@{}", c.name, c.version))
            .collect();
        assert_eq!(names, vec!["Jinja2@2.10", "github.com/a/b@v1.0.0"]);
        assert_eq!(inv.components[0].locations.len(), 2);
        assert_eq!(inv.warnings.len(), 1, "{:?}", inv.warnings);
        assert!(inv.warnings[0].starts_with("broken/Pipfile.lock"));
    }
}
