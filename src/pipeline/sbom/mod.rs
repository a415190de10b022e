//! The software bill of materials of a source tree: which third-party packages its lockfiles and
//! manifests pin, each with a package URL (purl), and the SPDX 2.3 and CycloneDX 1.5 documents
//! that describe them. Pure data and file reading; no network.
//!
//! [`discover`] walks the tree (the same skips as the secrets scanner: VCS metadata, vendored
//! dependency directories and build output are not descended into; `.gitignore` and
//! `.certusignore` files are honoured) and hands each known lockfile to its parser in
//! [`lockfiles`], which reports each package's scope and, where the file records it, the
//! dependency [`graph`]; the inventory merges them and [`documents`] renders the result.

pub mod documents;
mod entries;
pub mod graph;
pub mod lockfiles;
mod more_lockfiles;
pub mod version;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
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
    #[serde(rename = "Packagist")]
    Packagist,
}

impl Ecosystem {
    pub const ALL: [Ecosystem; 6] = [
        Ecosystem::Cargo,
        Ecosystem::Npm,
        Ecosystem::PyPI,
        Ecosystem::Go,
        Ecosystem::RubyGems,
        Ecosystem::Packagist,
    ];

    /// The ecosystem's name in OSV records.
    pub fn osv_name(self) -> &'static str {
        match self {
            Ecosystem::Cargo => "crates.io",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Go => "Go",
            Ecosystem::RubyGems => "RubyGems",
            Ecosystem::Packagist => "Packagist",
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
            Ecosystem::Packagist => "composer",
        }
    }

    /// The form of a package name used to look it up: PyPI names are case- and
    /// separator-insensitive (PEP 503), Composer package names are lower case; every other
    /// ecosystem compares names exactly.
    pub fn normalize_name(self, name: &str) -> String {
        match self {
            Ecosystem::PyPI => normalize_pypi_name(name),
            Ecosystem::Packagist => name.to_ascii_lowercase(),
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

/// How much the project needs a package, as its lockfile says: at run time, only with an
/// optional feature (npm `optionalDependencies`, Python extras), or only to develop it (npm
/// `devDependencies`, `packages-dev`, Poetry and uv groups other than the main one, Pipfile
/// `develop`). Ordered from most to least required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Required,
    Optional,
    Dev,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Required => "required",
            Scope::Optional => "optional",
            Scope::Dev => "dev",
        }
    }
}

/// What one lockfile parser found, before de-duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub line: u32,
    pub scope: Scope,
}

/// Every component of a tree plus the lockfiles read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// Sorted by ecosystem, name and version; one entry per (ecosystem, name, version).
    pub components: Vec<Component>,
    /// Lockfiles and manifests that were parsed, relative to the source root.
    pub files: Vec<String>,
    /// Problems that did not stop the inventory (a lockfile that could not be parsed, manifest
    /// requirements without an exact version).
    pub warnings: Vec<String>,
    /// The scope of each component (same index as `components`): the most required one any
    /// lockfile gives it.
    pub scopes: Vec<Scope>,
    /// For each component found in a lockfile that records dependencies (by index): the
    /// components it depends on. Components absent here have unknown dependencies.
    pub dependencies: BTreeMap<usize, BTreeSet<usize>>,
    /// Components the scanned source depends on directly, or through entries that are not
    /// components (workspace members, path and git packages), or whose dependents are unknown.
    pub direct: BTreeSet<usize>,
}

impl Inventory {
    pub fn scope(&self, index: usize) -> Scope {
        self.scopes.get(index).copied().unwrap_or_default()
    }
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
        // `vendor/name`: the vendor is the purl namespace; both lower case.
        Ecosystem::Packagist => name
            .to_ascii_lowercase()
            .split('/')
            .map(enc)
            .collect::<Vec<_>>()
            .join("/"),
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

/// Name of the ignore file honoured in the scanned tree (gitignore syntax, in any directory,
/// like `.gitignore`): lockfiles it matches are not read, so test fixtures and examples stay out
/// of the SBOM.
pub const IGNORE_FILE: &str = ".certusignore";

type Key = (Ecosystem, String, String);

/// Finds and parses every known lockfile under `root`.
pub fn discover(root: &Path, cancel: &AtomicBool) -> anyhow::Result<Inventory> {
    discover_excluding(root, cancel, &[])
}

/// [`discover`], leaving out the paths that match `excludes` (gitignore-syntax globs relative
/// to `root`, such as a profile's or manifest's path excludes) as well as those a
/// `.certusignore` or `.gitignore` matches.
pub fn discover_excluding(
    root: &Path,
    cancel: &AtomicBool,
    excludes: &[String],
) -> anyhow::Result<Inventory> {
    let found = find_lockfiles(root, cancel, excludes)?;
    let covered = Covered::of(&found);
    let mut inventory = Inventory::default();
    let mut merger = Merger::default();
    for (rel, path, kind) in found {
        if covered.skips(&rel, kind) {
            continue;
        }
        let Some(text) = read_text(&path, &rel, &mut inventory.warnings) else {
            continue;
        };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let sibling = |name: &str| read_sibling(&dir, name);
        let parsed = match lockfiles::parse(kind, &text, &sibling) {
            Ok(parsed) => parsed,
            Err(err) => {
                inventory
                    .warnings
                    .push(format!("{rel}: could not be parsed: {err:#}"));
                continue;
            }
        };
        inventory.files.push(rel.clone());
        for warning in &parsed.warnings {
            inventory.warnings.push(format!("{rel}: {warning}"));
        }
        if parsed.unpinned > 0 {
            inventory
                .warnings
                .push(unpinned_warning(&rel, parsed.unpinned));
        }
        merger.add(&rel, parsed);
    }
    merger.finish(&mut inventory);
    Ok(inventory)
}

/// Every lockfile and manifest under `root` (gitignore rules, [`IGNORE_FILE`] and `excludes`
/// applied, [`SKIPPED_DIRS`] not entered), sorted by relative path.
fn find_lockfiles(
    root: &Path,
    cancel: &AtomicBool,
    excludes: &[String],
) -> anyhow::Result<Vec<(String, PathBuf, lockfiles::Kind)>> {
    let mut overrides = ignore::overrides::OverrideBuilder::new(root);
    for glob in excludes {
        overrides
            .add(&format!("!{glob}"))
            .map_err(|err| anyhow!("path exclude `{glob}` is not a valid glob: {err}"))?;
    }
    let overrides = overrides
        .build()
        .map_err(|err| anyhow!("path excludes could not be compiled: {err}"))?;
    let walker = WalkBuilder::new(root)
        .overrides(overrides)
        .hidden(false)
        .parents(false)
        .git_global(false)
        .git_ignore(true)
        .git_exclude(true)
        .ignore(true)
        .require_git(false)
        .follow_links(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(|entry| {
            entry.depth() == 0
                || !entry.file_type().is_some_and(|t| t.is_dir())
                || !SKIPPED_DIRS.contains(&entry.file_name().to_string_lossy().as_ref())
        })
        .build();
    let mut found = Vec::new();
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
    Ok(found)
}

/// The directories whose lockfiles make other files beside them (or below) redundant.
struct Covered {
    /// go.sum is only read where no go.mod sits beside it (go.mod lists the build's versions).
    go_mod_dirs: HashSet<String>,
    /// package.json is only read where no npm, yarn or pnpm lockfile sits beside it or in a
    /// directory above (a workspace's lockfile is at its root).
    js_lock_dirs: HashSet<String>,
    /// pyproject.toml and Pipfile are only read where no Python lockfile or requirements file
    /// sits beside them.
    python_lock_dirs: HashSet<String>,
}

impl Covered {
    fn of(found: &[(String, PathBuf, lockfiles::Kind)]) -> Covered {
        let dirs = |keep: &dyn Fn(lockfiles::Kind) -> bool| -> HashSet<String> {
            found
                .iter()
                .filter(|(_, _, k)| keep(*k))
                .map(|(rel, _, _)| parent_of(rel))
                .collect()
        };
        Covered {
            go_mod_dirs: dirs(&|k| k == lockfiles::Kind::GoMod),
            js_lock_dirs: dirs(&|k| k.is_js_lockfile()),
            python_lock_dirs: dirs(&|k| k.is_python_lock()),
        }
    }

    /// Whether the file at `rel` is left out because a lockfile covers it.
    fn skips(&self, rel: &str, kind: lockfiles::Kind) -> bool {
        let dir = parent_of(rel);
        match kind {
            lockfiles::Kind::GoSum => self.go_mod_dirs.contains(&dir),
            lockfiles::Kind::PackageJson => ancestors(&dir).any(|d| self.js_lock_dirs.contains(&d)),
            lockfiles::Kind::PythonManifest => self.python_lock_dirs.contains(&dir),
            _ => false,
        }
    }
}

/// A file beside a lockfile (a manifest it needs), when it is a regular file of bounded size.
fn read_sibling(dir: &Path, name: &str) -> Option<String> {
    let p = dir.join(name);
    let meta = std::fs::symlink_metadata(&p).ok()?;
    if !meta.is_file() || meta.len() > MAX_LOCKFILE_BYTES {
        return None;
    }
    std::fs::read(&p)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn unpinned_warning(rel: &str, unpinned: usize) -> String {
    format!(
        "{rel}: {} requirement{} without an exact version; what {} is unknown and \
         not in the SBOM. Pin exact versions or commit a lockfile",
        unpinned,
        if unpinned == 1 { "" } else { "s" },
        if unpinned == 1 {
            "it installs"
        } else {
            "they install"
        }
    )
}

/// The packages of every file, merged by (ecosystem, normalised name, version), with their
/// scopes, dependency edges and direct dependencies.
#[derive(Default)]
struct Merger {
    merged: BTreeMap<Key, (Component, Scope)>,
    edges: BTreeSet<(Key, Key)>,
    with_graph: BTreeSet<Key>,
    direct: BTreeSet<Key>,
}

impl Merger {
    fn add(&mut self, rel: &str, parsed: graph::Parsed) {
        let keys: Vec<Key> = parsed
            .pins
            .iter()
            .map(|pin| {
                (
                    pin.ecosystem,
                    pin.ecosystem.normalize_name(&pin.name),
                    pin.version.clone(),
                )
            })
            .collect();
        for (pin, key) in parsed.pins.into_iter().zip(&keys) {
            let location = Location {
                path: rel.to_string(),
                line: pin.line,
            };
            self.merged
                .entry(key.clone())
                .and_modify(|(c, scope)| {
                    if !c.locations.contains(&location) {
                        c.locations.push(location.clone());
                    }
                    *scope = (*scope).min(pin.scope);
                })
                .or_insert_with(|| {
                    (
                        Component {
                            ecosystem: pin.ecosystem,
                            purl: purl(pin.ecosystem, &pin.name, &pin.version),
                            name: pin.name,
                            version: pin.version,
                            locations: vec![location],
                        },
                        pin.scope,
                    )
                });
            if parsed.has_graph {
                self.with_graph.insert(key.clone());
            }
        }
        for &d in &parsed.direct {
            self.direct.insert(keys[d].clone());
        }
        if parsed.has_graph {
            for &(from, to) in &parsed.edges {
                if keys[from] != keys[to] {
                    self.edges.insert((keys[from].clone(), keys[to].clone()));
                }
            }
        }
    }

    /// Fills the inventory's components, scopes, dependencies and direct dependencies.
    fn finish(self, inventory: &mut Inventory) {
        let index: HashMap<Key, usize> = self
            .merged
            .keys()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect();
        for (component, scope) in self.merged.into_values() {
            inventory.components.push(component);
            inventory.scopes.push(scope);
        }
        for c in &mut inventory.components {
            c.locations.sort();
        }
        for key in &self.with_graph {
            inventory.dependencies.insert(index[key], BTreeSet::new());
        }
        let mut has_parent = vec![false; inventory.components.len()];
        for (from, to) in &self.edges {
            let (f, t) = (index[from], index[to]);
            inventory.dependencies.entry(f).or_default().insert(t);
            has_parent[t] = true;
        }
        inventory.direct = self.direct.iter().map(|k| index[k]).collect();
        // Every component stays reachable from the source.
        for (i, parent) in has_parent.iter().enumerate() {
            if !parent {
                inventory.direct.insert(i);
            }
        }
    }
}

/// Reads a lockfile as text, or records why it was not read.
fn read_text(path: &Path, rel: &str, warnings: &mut Vec<String>) -> Option<String> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > MAX_LOCKFILE_BYTES {
        warnings.push(format!(
            "{rel}: not read, larger than {} MiB",
            MAX_LOCKFILE_BYTES / (1024 * 1024)
        ));
        return None;
    }
    match std::fs::read(path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(err) => {
            warnings.push(format!("{rel}: not readable: {err}"));
            None
        }
    }
}

/// `a/b/c`, `a/b`, `a`, `` (the root).
fn ancestors(dir: &str) -> impl Iterator<Item = String> + '_ {
    let mut next = Some(dir.to_string());
    std::iter::from_fn(move || {
        let current = next.take()?;
        if !current.is_empty() {
            next = Some(parent_of(&current));
        }
        Some(current)
    })
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
        assert_eq!(
            inv.warnings,
            vec![
                "broken/Pipfile.lock: could not be parsed: invalid JSON: key must be a string at \
                 line 1 column 2"
                    .to_string(),
                "requirements.txt: 1 requirement without an exact version; what it installs is \
                 unknown and not in the SBOM. Pin exact versions or commit a lockfile"
                    .to_string(),
            ]
        );
        assert_eq!(
            inv.files,
            vec!["go.mod", "requirements.txt", "svc/requirements-dev.txt"]
        );
    }

    fn write_tree(root: &Path, files: &[(&str, &str)]) {
        for (rel, text) in files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    #[test]
    fn certusignore_keeps_fixture_lockfiles_out() {
        let dir = tempfile::tempdir().unwrap();
        write_tree(
            dir.path(),
            &[
                ("requirements.txt", "flask==3.1.0\n"),
                ("tests/fixtures/app/requirements.txt", "django==1.11.0\n"),
                ("tests/fixtures/app/package-lock.json", "{\"lockfileVersion\": 3, \"packages\": {\"node_modules/lodash\": {\"version\": \"4.17.4\"}}}"),
                ("examples/requirements.txt", "requests==2.0.0\n"),
            ],
        );
        let cancel = AtomicBool::new(false);
        // Without an ignore file, fixtures count, and the inventory says where they came from.
        let inv = discover(dir.path(), &cancel).unwrap();
        assert_eq!(inv.components.len(), 4);
        assert!(inv
            .files
            .contains(&"tests/fixtures/app/package-lock.json".to_string()));
        std::fs::write(
            dir.path().join(IGNORE_FILE),
            "# test data\ntests/fixtures/\n/examples\n",
        )
        .unwrap();
        let inv = discover(dir.path(), &cancel).unwrap();
        let names: Vec<_> = inv.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["flask"]);
        assert_eq!(inv.files, vec!["requirements.txt"]);
    }

    #[test]
    fn path_excludes_keep_lockfiles_out() {
        let dir = tempfile::tempdir().unwrap();
        write_tree(
            dir.path(),
            &[
                ("requirements.txt", "flask==3.1.0\n"),
                ("tests/data/requirements.txt", "django==1.11.0\n"),
                ("docs/examples/app/requirements.txt", "requests==2.0.0\n"),
            ],
        );
        let cancel = AtomicBool::new(false);
        let excludes = vec!["tests/data/**".to_string(), "examples/".to_string()];
        let inv = discover_excluding(dir.path(), &cancel, &excludes).unwrap();
        assert_eq!(inv.files, vec!["requirements.txt"]);
        let err = discover_excluding(dir.path(), &cancel, &["a/{b".to_string()]).unwrap_err();
        assert!(
            err.to_string().contains("`a/{b` is not a valid glob"),
            "{err}"
        );
    }

    #[test]
    fn package_json_counts_only_without_a_lockfile() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = r#"{
  "name": "web",
  "dependencies": { "express": "^4.18.2", "lodash": "4.17.21", "shared": "workspace:*" },
  "devDependencies": { "jest": "latest" }
}"#;
        write_tree(
            dir.path(),
            &[
                ("standalone/package.json", manifest),
                (
                    "ws/package-lock.json",
                    r#"{"lockfileVersion": 3, "packages": {}}"#,
                ),
                ("ws/packages/a/package.json", manifest),
            ],
        );
        let inv = discover(dir.path(), &AtomicBool::new(false)).unwrap();
        let names: Vec<_> = inv.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["lodash"]);
        assert_eq!(
            inv.files,
            vec!["standalone/package.json", "ws/package-lock.json"]
        );
        assert_eq!(
            inv.warnings,
            vec![
                "standalone/package.json: 2 requirements without an exact version; what they \
                 install is unknown and not in the SBOM. Pin exact versions or commit a lockfile"
            ]
        );
    }

    #[test]
    fn pyproject_counts_only_without_a_python_lockfile() {
        let dir = tempfile::tempdir().unwrap();
        let pyproject =
            "[project]\nname = \"x\"\ndependencies = [\"flask>=3\", \"click==8.1.7\"]\n";
        write_tree(
            dir.path(),
            &[
                ("lib/pyproject.toml", pyproject),
                ("app/pyproject.toml", pyproject),
                ("app/uv.lock", "version = 1\nrequires-python = \">=3.9\"\n"),
            ],
        );
        let inv = discover(dir.path(), &AtomicBool::new(false)).unwrap();
        let names: Vec<_> = inv.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["click"]);
        assert_eq!(inv.files, vec!["app/uv.lock", "lib/pyproject.toml"]);
        assert_eq!(
            inv.warnings,
            vec![
                "lib/pyproject.toml: 1 requirement without an exact version; what it installs \
                 is unknown and not in the SBOM. Pin exact versions or commit a lockfile"
            ]
        );
    }

    #[test]
    fn inventory_merges_scopes_and_graphs_across_lockfiles() {
        let dir = tempfile::tempdir().unwrap();
        write_tree(
            dir.path(),
            &[
                (
                    "Pipfile.lock",
                    r#"{"_meta": {}, "default": {}, "develop": {"pytest": {"version": "==8.3.4"}}}"#,
                ),
                (
                    "svc/poetry.lock",
                    "[[package]]\nname = \"pytest\"\nversion = \"8.3.4\"\ngroups = [\"main\"]\n\n[package.dependencies]\npluggy = \">=1.5,<2\"\n\n[[package]]\nname = \"pluggy\"\nversion = \"1.5.0\"\ngroups = [\"main\"]\n\n[metadata]\nlock-version = \"2.1\"\n",
                ),
                ("tools/requirements.txt", "black==24.1.0\n"),
            ],
        );
        let inv = discover(dir.path(), &AtomicBool::new(false)).unwrap();
        let summary: Vec<String> = inv
            .components
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}={}", c.name, inv.scope(i).as_str()))
            .collect();
        // pytest is dev in the Pipfile but required by the poetry project: required wins.
        assert_eq!(
            summary,
            vec!["black=required", "pluggy=required", "pytest=required"]
        );
        // Dependencies are known for the poetry packages only; black has no dependents.
        assert_eq!(
            inv.dependencies,
            [(2, [1].into_iter().collect()), (1, BTreeSet::new())]
                .into_iter()
                .collect()
        );
        assert_eq!(inv.direct, [0, 2].into_iter().collect());
    }
}
