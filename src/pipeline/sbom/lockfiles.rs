//! Lockfile and manifest parsers: each turns one file's text into the packages it pins, with the
//! line of each entry, its scope and, where the file records them, the dependencies between
//! entries. Only exact pins are reported (a range in a requirements file says nothing about what
//! is installed; such lines are counted as unpinned); local, path, git and workspace entries are
//! not third-party packages from the ecosystem's registry and are left out.

use std::collections::HashMap;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::entries::{key_lines, package_table_lines, pin};
use super::graph::{Builder, Parsed};
use super::more_lockfiles;
use super::{Ecosystem, Pinned, Scope};

pub use super::entries::Sibling;

/// File kinds the SBOM reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    CargoLock,
    PackageLock,
    YarnLock,
    Requirements,
    PoetryLock,
    PipfileLock,
    GoMod,
    GoSum,
    GemfileLock,
    UvLock,
    PnpmLock,
    ComposerLock,
    /// Read only where no npm, yarn or pnpm lockfile covers its directory.
    PackageJson,
    /// `pyproject.toml` and `Pipfile`, read only where no Python lockfile or requirements file
    /// sits beside them.
    PythonManifest,
}

impl Kind {
    pub fn for_file_name(name: &str) -> Option<Kind> {
        Some(match name {
            "Cargo.lock" => Kind::CargoLock,
            "package-lock.json" | "npm-shrinkwrap.json" => Kind::PackageLock,
            "yarn.lock" => Kind::YarnLock,
            "poetry.lock" => Kind::PoetryLock,
            "Pipfile.lock" => Kind::PipfileLock,
            "go.mod" => Kind::GoMod,
            "go.sum" => Kind::GoSum,
            "Gemfile.lock" | "gems.locked" => Kind::GemfileLock,
            "uv.lock" => Kind::UvLock,
            "pnpm-lock.yaml" => Kind::PnpmLock,
            "composer.lock" => Kind::ComposerLock,
            "package.json" => Kind::PackageJson,
            "pyproject.toml" | "Pipfile" => Kind::PythonManifest,
            n if n.starts_with("requirements") && n.ends_with(".txt") => Kind::Requirements,
            _ => return None,
        })
    }

    /// The JavaScript lockfiles (which make a `package.json` beside or below them redundant).
    pub fn is_js_lockfile(self) -> bool {
        matches!(self, Kind::PackageLock | Kind::YarnLock | Kind::PnpmLock)
    }

    /// The Python files that say what gets installed (which make a `pyproject.toml` or
    /// `Pipfile` beside them redundant).
    pub fn is_python_lock(self) -> bool {
        matches!(
            self,
            Kind::PoetryLock | Kind::UvLock | Kind::PipfileLock | Kind::Requirements
        )
    }
}

pub fn parse(kind: Kind, text: &str, sibling: Sibling<'_>) -> anyhow::Result<Parsed> {
    match kind {
        Kind::CargoLock => cargo_lock(text),
        Kind::PackageLock => package_lock(text),
        Kind::YarnLock => Ok(Parsed::flat(yarn_lock(text))),
        Kind::Requirements => Ok(requirements(text)),
        Kind::PoetryLock => more_lockfiles::poetry_lock(text, sibling),
        Kind::PipfileLock => pipfile_lock(text).map(Parsed::flat),
        Kind::GoMod => Ok(Parsed::flat(go_mod(text))),
        Kind::GoSum => Ok(Parsed::flat(go_sum(text))),
        Kind::GemfileLock => Ok(gemfile_lock(text)),
        Kind::UvLock => more_lockfiles::uv_lock(text),
        Kind::PnpmLock => more_lockfiles::pnpm_lock(text),
        Kind::ComposerLock => more_lockfiles::composer_lock(text, sibling),
        Kind::PackageJson => more_lockfiles::package_json(text),
        Kind::PythonManifest => more_lockfiles::python_manifest(text),
    }
}

#[derive(Deserialize)]
struct CargoLock {
    #[serde(default)]
    package: Vec<CargoPackage>,
}

#[derive(Deserialize)]
struct CargoPackage {
    name: String,
    version: String,
    /// `registry+https://...` for registry crates; absent for workspace members.
    #[serde(default)]
    source: Option<String>,
    /// `name`, `name version` or `name version (source)`.
    #[serde(default)]
    dependencies: Vec<String>,
}

fn cargo_lock(text: &str) -> anyhow::Result<Parsed> {
    let lock: CargoLock = toml::from_str(text).context("invalid TOML")?;
    let lines = package_table_lines(text);
    let mut b = Builder::default();
    let mut by_name: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
    for (i, p) in lock.package.iter().enumerate() {
        let registry = p
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with("registry+") || s.starts_with("sparse+"));
        let line = lines.get(i).copied().unwrap_or(1);
        let node = b.node(
            registry.then(|| pin(Ecosystem::Cargo, &p.name, &p.version, line)),
            None,
        );
        by_name.entry(&p.name).or_default().push((node, &p.version));
    }
    for (i, p) in lock.package.iter().enumerate() {
        for dep in &p.dependencies {
            let mut parts = dep.split_whitespace();
            let name = parts.next().unwrap_or("");
            let version = parts.next();
            let Some(candidates) = by_name.get(name) else {
                continue;
            };
            let target = match version {
                Some(v) => candidates.iter().find(|(_, cv)| *cv == v),
                None if candidates.len() == 1 => candidates.first(),
                None => None,
            };
            if let Some(&(to, _)) = target {
                b.edge(i, to, Scope::Required);
            }
        }
    }
    // Workspace members (no `source`) are the project: what they depend on is direct.
    // Cargo.lock does not say which dependencies are dev-dependencies: every crate is required.
    Ok(b.finish())
}

fn package_lock(text: &str) -> anyhow::Result<Parsed> {
    let doc: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
    let lines = key_lines(text);
    if let Some(packages) = doc.get("packages").and_then(|p| p.as_object()) {
        return Ok(package_lock_v2(packages, &lines));
    }
    let mut out = Vec::new();
    if let Some(deps) = doc.get("dependencies").and_then(|d| d.as_object()) {
        // lockfileVersion 1: nested `dependencies`.
        fn walk(
            lines: &HashMap<&str, u32>,
            deps: &serde_json::Map<String, serde_json::Value>,
            out: &mut Vec<Pinned>,
        ) {
            for (name, entry) in deps {
                if let Some(version) = entry.get("version").and_then(|v| v.as_str()) {
                    if is_registry_npm(entry, version) {
                        let line = lines.get(name.as_str()).copied().unwrap_or(1);
                        let mut p = pin(Ecosystem::Npm, name, version, line);
                        p.scope = npm_flags_scope(entry);
                        out.push(p);
                    }
                }
                if let Some(nested) = entry.get("dependencies").and_then(|d| d.as_object()) {
                    walk(lines, nested, out);
                }
            }
        }
        walk(&lines, deps, &mut out);
    } else if doc.get("lockfileVersion").is_none() {
        bail!("not an npm lockfile (no lockfileVersion)");
    }
    Ok(Parsed::flat(out))
}

/// npm's flags: `dev` (only in the devDependencies tree), `optional` (only in the
/// optionalDependencies tree; with `dev` too, an optional dependency of a dev dependency),
/// `devOptional` (a dev dependency that is also an optional dependency of a runtime one).
fn npm_flags_scope(entry: &serde_json::Value) -> Scope {
    let flag = |k: &str| entry.get(k).and_then(|v| v.as_bool()) == Some(true);
    if flag("dev") {
        Scope::Dev
    } else if flag("optional") || flag("devOptional") {
        Scope::Optional
    } else {
        Scope::Required
    }
}

/// lockfileVersion 2 and 3: keys are install paths (`""` is the project, `packages/x` a
/// workspace member); a dependency resolves like Node does, from the dependent's own
/// `node_modules` up to the root's.
fn package_lock_v2(
    packages: &serde_json::Map<String, serde_json::Value>,
    lines: &HashMap<&str, u32>,
) -> Parsed {
    let mut b = Builder::default();
    let mut node_of: HashMap<&str, usize> = HashMap::new();
    for (key, entry) in packages {
        let mut pinned = None;
        if let Some(idx) = key.rfind("node_modules/") {
            let name = entry
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or(&key[idx + "node_modules/".len()..]);
            let linked = entry.get("link").and_then(|l| l.as_bool()) == Some(true);
            if let (false, Some(version)) = (linked, entry.get("version").and_then(|v| v.as_str()))
            {
                if is_registry_npm(entry, version) {
                    let line = lines.get(key.as_str()).copied().unwrap_or(1);
                    pinned = Some(pin(Ecosystem::Npm, name, version, line));
                }
            }
        }
        let stated = pinned.as_ref().map(|_| npm_flags_scope(entry));
        node_of.insert(key.as_str(), b.node(pinned, stated));
    }
    for (key, entry) in packages {
        let from = node_of[key.as_str()];
        // A link entry stands for its target (a workspace member).
        if entry.get("link").and_then(|l| l.as_bool()) == Some(true) {
            if let Some(&to) = entry
                .get("resolved")
                .and_then(|r| r.as_str())
                .and_then(|r| node_of.get(r))
            {
                b.edge(from, to, Scope::Required);
            }
            continue;
        }
        let project = !key.contains("node_modules/");
        let mut sections = vec![
            ("dependencies", Scope::Required),
            ("optionalDependencies", Scope::Optional),
            ("peerDependencies", Scope::Required),
        ];
        if project {
            sections.push(("devDependencies", Scope::Dev));
        }
        for (section, kind) in sections {
            let Some(deps) = entry.get(section).and_then(|d| d.as_object()) else {
                continue;
            };
            for name in deps.keys() {
                if let Some(to) = resolve_node_module(key, name, &node_of) {
                    if key.is_empty() {
                        b.root(to, kind);
                    } else {
                        b.edge(from, to, kind);
                    }
                }
            }
        }
    }
    b.finish()
}

/// Node's lookup: `<dir>/node_modules/<name>` from the dependent's directory up to the root.
fn resolve_node_module(from: &str, name: &str, nodes: &HashMap<&str, usize>) -> Option<usize> {
    let mut base = from.to_string();
    loop {
        let candidate = if base.is_empty() {
            format!("node_modules/{name}")
        } else {
            format!("{base}/node_modules/{name}")
        };
        if let Some(&n) = nodes.get(candidate.as_str()) {
            return Some(n);
        }
        if base.is_empty() {
            return None;
        }
        base = match base.rfind("node_modules/") {
            Some(idx) => base[..idx].trim_end_matches('/').to_string(),
            None => String::new(),
        };
    }
}

/// A registry release has a semver version; `file:`, `git+...` and similar are not.
fn is_registry_npm(entry: &serde_json::Value, version: &str) -> bool {
    let resolved = entry.get("resolved").and_then(|r| r.as_str()).unwrap_or("");
    !resolved.starts_with("file:")
        && !resolved.starts_with("git")
        && version.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

fn yarn_lock(text: &str) -> Vec<Pinned> {
    let mut out = Vec::new();
    let mut current: Option<(String, u32)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = (i + 1) as u32;
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        if !raw.starts_with(' ') {
            // An entry header: `"a@^1", a@^1.2:` (v1) or `"a@npm:^1":` (berry).
            current = None;
            let header = raw.trim_end().trim_end_matches(':');
            let first = header
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if first == "__metadata" || first.is_empty() {
                continue;
            }
            let at = if let Some(rest) = first.strip_prefix('@') {
                rest.find('@').map(|p| p + 1)
            } else {
                first.find('@')
            };
            let Some(at) = at else { continue };
            let (name, spec) = (&first[..at], &first[at + 1..]);
            let spec = spec.trim_start_matches("npm:");
            if spec.starts_with("workspace:")
                || spec.starts_with("file:")
                || spec.starts_with("link:")
                || spec.starts_with("portal:")
                || spec.starts_with("patch:")
                || spec.contains("://")
                || spec.starts_with("github:")
            {
                continue;
            }
            current = Some((name.to_string(), line_no));
            continue;
        }
        let trimmed = raw.trim();
        if let Some((name, line)) = &current {
            let version = trimmed
                .strip_prefix("version ")
                .or_else(|| trimmed.strip_prefix("version: "))
                .map(|v| v.trim().trim_matches('"'));
            if let Some(version) = version {
                if version.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                    out.push(pin(Ecosystem::Npm, name, version, *line));
                }
                current = None;
            }
        }
    }
    out
}

fn requirements(text: &str) -> Parsed {
    let mut out = Vec::new();
    let mut unpinned = 0;
    let mut logical = String::new();
    let mut start_line = 0u32;
    for (i, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            start_line = (i + 1) as u32;
        }
        let line = raw.trim_end();
        if let Some(cont) = line.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        // Comments start with `#` at the line start or after whitespace.
        let entry = match entry.find(" #") {
            Some(p) => &entry[..p],
            None => entry.as_str(),
        };
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') || entry.starts_with('-') {
            continue;
        }
        // Drop environment markers and per-requirement options (`--hash=...`).
        let entry = entry.split(';').next().unwrap_or("").trim();
        let entry = entry.split(" --").next().unwrap_or("").trim();
        // A requirement starts with a project name; paths and URLs (`./pkg`, `https://...`)
        // are not registry requirements.
        if !entry
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            || (entry.contains("://") && !entry.contains(" @ "))
        {
            continue;
        }
        let Some(eq) = entry.find("==") else {
            unpinned += 1;
            continue;
        };
        let name_part = entry[..eq].trim();
        let version = entry[eq..].trim_start_matches('=').trim();
        // `name[extra1,extra2]`
        let name = name_part.split('[').next().unwrap_or("").trim();
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let version_ok = !version.is_empty()
            && !version.contains('*')
            && !version.contains(',')
            && !version.contains(' ');
        if name_ok && version_ok {
            out.push(pin(Ecosystem::PyPI, name, version, start_line));
        } else {
            unpinned += 1;
        }
    }
    let mut parsed = Parsed::flat(out);
    parsed.unpinned = unpinned;
    parsed
}

fn pipfile_lock(text: &str) -> anyhow::Result<Vec<Pinned>> {
    let doc: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
    let mut out = Vec::new();
    let lines = key_lines(text);
    let mut any = false;
    for (section, scope) in [("default", Scope::Required), ("develop", Scope::Dev)] {
        let Some(pkgs) = doc.get(section).and_then(|s| s.as_object()) else {
            continue;
        };
        any = true;
        for (name, entry) in pkgs {
            let Some(version) = entry.get("version").and_then(|v| v.as_str()) else {
                continue; // git/path/editable entries have no version pin
            };
            let Some(version) = version.strip_prefix("==") else {
                continue;
            };
            let line = lines.get(name.as_str()).copied().unwrap_or(1);
            let mut p = pin(Ecosystem::PyPI, name, version.trim_start_matches('='), line);
            p.scope = scope;
            out.push(p);
        }
    }
    if !any && doc.get("_meta").is_none() {
        bail!("not a Pipfile.lock (no default, develop or _meta section)");
    }
    Ok(out)
}

fn go_mod(text: &str) -> Vec<Pinned> {
    let mut out = Vec::new();
    let mut in_block = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split("//").next().unwrap_or("").trim();
        let line_no = (i + 1) as u32;
        if in_block {
            if line == ")" {
                in_block = false;
                continue;
            }
            if let Some(p) = go_requirement(line, line_no) {
                out.push(p);
            }
        } else if let Some(rest) = line.strip_prefix("require") {
            let rest = rest.trim();
            if rest == "(" {
                in_block = true;
            } else if let Some(p) = go_requirement(rest, line_no) {
                out.push(p);
            }
        }
    }
    out
}

fn go_requirement(line: &str, line_no: u32) -> Option<Pinned> {
    let mut parts = line.split_whitespace();
    let module = parts.next()?.trim_matches('"');
    let version = parts.next()?;
    if !version.starts_with('v') || module.is_empty() {
        return None;
    }
    Some(pin(Ecosystem::Go, module, version, line_no))
}

/// go.sum: `module version hash` lines, where a version ending in `/go.mod` hashes only the
/// module's go.mod (read to resolve the module graph) and a plain version hashes the module's
/// content (its code was downloaded for the build). Only modules with a content hash are
/// components; of several such versions of one module the build selects the highest.
fn go_sum(text: &str) -> Vec<Pinned> {
    let mut best: std::collections::BTreeMap<String, (String, u32)> = Default::default();
    for (i, raw) in text.lines().enumerate() {
        let mut parts = raw.split_whitespace();
        let (Some(module), Some(version)) = (parts.next(), parts.next()) else {
            continue;
        };
        if version.ends_with("/go.mod") || !version.starts_with('v') {
            continue;
        }
        let newer = match best.get(module) {
            None => true,
            Some((current, _)) => {
                match (
                    super::version::parse_semver(version),
                    super::version::parse_semver(current),
                ) {
                    (Some(a), Some(b)) => a > b,
                    _ => false,
                }
            }
        };
        if newer {
            best.insert(module.to_string(), (version.to_string(), (i + 1) as u32));
        }
    }
    best.into_iter()
        .map(|(m, (v, line))| pin(Ecosystem::Go, &m, &v, line))
        .collect()
}

/// Gemfile.lock: `GEM`, `GIT` and `PATH` sections list specs (`    name (version)`) with their
/// own dependencies indented below (`      dep (~> 1.0)`); `DEPENDENCIES` lists the Gemfile's
/// (`  name`, `  name!` for a gem from a GIT or PATH source). Only GEM specs are registry gems.
fn gemfile_lock(text: &str) -> Parsed {
    let mut b = Builder::default();
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    let mut deps_of: Vec<(usize, String)> = Vec::new();
    let mut roots: Vec<String> = Vec::new();
    let mut section = "";
    let mut in_specs = false;
    let mut current: Option<usize> = None;
    let name_of = |entry: &str| -> String {
        entry
            .split(" (")
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches('!')
            .to_string()
    };
    for (i, raw) in text.lines().enumerate() {
        if !raw.starts_with(' ') && !raw.trim().is_empty() {
            section = raw.trim();
            in_specs = false;
            current = None;
            continue;
        }
        if raw.trim() == "specs:" {
            in_specs = true;
            continue;
        }
        if section == "DEPENDENCIES" && raw.starts_with("  ") && !raw.starts_with("   ") {
            roots.push(name_of(raw));
            continue;
        }
        if !matches!(section, "GEM" | "GIT" | "PATH") || !in_specs {
            continue;
        }
        let entry = raw.trim();
        if raw.starts_with("      ") && !raw.starts_with("       ") {
            if let Some(node) = current {
                deps_of.push((node, name_of(entry)));
            }
            continue;
        }
        if !raw.starts_with("    ") || raw.starts_with("     ") {
            continue;
        }
        let Some((name, rest)) = entry.split_once(" (") else {
            continue;
        };
        let version = rest.trim_end_matches(')');
        // `1.13.10-x86_64-linux`: the platform is not part of the version.
        let version = version.split('-').next().unwrap_or(version);
        let registry = section == "GEM"
            && !name.is_empty()
            && version.bytes().next().is_some_and(|b| b.is_ascii_digit());
        let node = b.node(
            registry.then(|| pin(Ecosystem::RubyGems, name, version, (i + 1) as u32)),
            None,
        );
        by_name.entry(name.to_string()).or_default().push(node);
        current = Some(node);
    }
    for (from, name) in deps_of {
        for &to in by_name.get(&name).map(Vec::as_slice).unwrap_or_default() {
            b.edge(from, to, Scope::Required);
        }
    }
    for name in roots {
        for &to in by_name.get(&name).map(Vec::as_slice).unwrap_or_default() {
            b.root(to, Scope::Required);
        }
    }
    b.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn names(pins: &[Pinned]) -> Vec<String> {
        pins.iter()
            .map(|p| format!("{}@{}:{}", p.name, p.version, p.line))
            .collect()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn cargo_lock_keeps_registry_crates() {
        let text = r#"version = 3

[[package]]
name = "app"
version = "0.1.0"

[[package]]
name = "smallvec"
version = "1.6.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "abc"

[[package]]
name = "gitdep"
version = "0.2.0"
source = "git+https://example.com/x#abc"
"#;
        assert_eq!(
            names(&cargo_lock(text).unwrap().pins),
            vec!["smallvec@1.6.0:7"]
        );
        assert!(cargo_lock("[[package]\nname=").is_err());
    }

    #[test]
    fn package_lock_v3_and_v1() {
        let v3 = r#"{
  "name": "app",
  "lockfileVersion": 3,
  "packages": {
    "": { "name": "app", "version": "1.0.0" },
    "node_modules/lodash": { "version": "4.17.20", "resolved": "https://registry.npmjs.org/lodash/-/lodash-4.17.20.tgz" },
    "node_modules/@babel/core": { "version": "7.0.0" },
    "node_modules/a/node_modules/minimist": { "version": "0.0.8" },
    "node_modules/local": { "resolved": "file:../local", "link": true },
    "node_modules/gitdep": { "version": "1.0.0", "resolved": "git+ssh://git@example.com/x.git" }
  }
}"#;
        assert_eq!(
            sorted(names(&package_lock(v3).unwrap().pins)),
            vec![
                "@babel/core@7.0.0:7",
                "lodash@4.17.20:6",
                "minimist@0.0.8:8"
            ]
        );
        let v1 = r#"{"lockfileVersion": 1, "dependencies": {"a": {"version": "1.0.0", "dependencies": {"b": {"version": "2.0.0"}}}}}"#;
        assert_eq!(
            names(&package_lock(v1).unwrap().pins),
            vec!["a@1.0.0:1", "b@2.0.0:1"]
        );
        assert!(package_lock("{}").is_err());
    }

    #[test]
    fn yarn_v1_and_berry() {
        let v1 = r#"# yarn lockfile v1


"@babel/code-frame@^7.0.0", "@babel/code-frame@^7.10.4":
  version "7.12.13"
  resolved "https://registry.yarnpkg.com/x"

lodash@^4.17.15:
  version "4.17.15"
"#;
        assert_eq!(
            names(&yarn_lock(v1)),
            vec!["@babel/code-frame@7.12.13:4", "lodash@4.17.15:8"]
        );
        let berry = r#"__metadata:
  version: 6

"app@workspace:.":
  version: 0.0.0-use.local

"minimist@npm:^1.2.0":
  version: 1.2.5
  resolution: "minimist@npm:1.2.5"
"#;
        assert_eq!(names(&yarn_lock(berry)), vec!["minimist@1.2.5:7"]);
    }

    #[test]
    fn requirements_only_exact_pins() {
        let text = "# comment\n\
            Django==3.2.0  # pinned\n\
            requests>=2.0\n\
            -r other.txt\n\
            --index-url https://example.com\n\
            uvicorn[standard]==0.20.0 ; python_version >= \"3.8\"\n\
            cryptography==41.0.0 \\\n    --hash=sha256:abc\n\
            -e git+https://example.com/x.git#egg=x\n\
            foo===1.0.0\n\
            bar==1.*\n";
        assert_eq!(
            names(&requirements(text).pins),
            vec![
                "Django@3.2.0:2",
                "uvicorn@0.20.0:6",
                "cryptography@41.0.0:7",
                "foo@1.0.0:10"
            ]
        );
    }

    #[test]
    fn pipfile_default_and_develop() {
        let pipfile = r#"{
  "_meta": {"hash": {}},
  "default": {
    "flask": {"version": "==0.12.2", "hashes": []},
    "local": {"path": "."}
  },
  "develop": {
    "pytest": {"version": "==7.0.0"}
  }
}"#;
        let pins = pipfile_lock(pipfile).unwrap();
        assert_eq!(names(&pins), vec!["flask@0.12.2:4", "pytest@7.0.0:8"]);
        assert_eq!(
            pins.iter().map(|p| p.scope).collect::<Vec<_>>(),
            vec![Scope::Required, Scope::Dev]
        );
    }

    #[test]
    fn go_mod_and_sum() {
        let m = "module example.com/app\n\ngo 1.21\n\nrequire (\n\tgithub.com/gin-gonic/gin v1.9.0\n\tgolang.org/x/net v0.7.0 // indirect\n)\n\nrequire github.com/x/y v0.1.0\n\nreplace github.com/x/y => ../y\n";
        assert_eq!(
            names(&go_mod(m)),
            vec![
                "github.com/gin-gonic/gin@v1.9.0:6",
                "golang.org/x/net@v0.7.0:7",
                "github.com/x/y@v0.1.0:10"
            ]
        );
        // A real go.sum shape: content and go.mod hashes of the selected versions, go.mod-only
        // hashes of versions the module graph considered, a duplicate line.
        let s = "github.com/a/b v1.0.0 h1:x=\n\
                 github.com/a/b v1.0.0/go.mod h1:y=\n\
                 github.com/a/b v1.2.0/go.mod h1:z=\n\
                 github.com/a/b v1.0.0 h1:x=\n\
                 golang.org/x/text v0.3.0/go.mod h1:w=\n\
                 golang.org/x/text v0.14.0 h1:v=\n\
                 golang.org/x/text v0.14.0/go.mod h1:u=\n\
                 golang.org/x/text v0.13.0 h1:t=\n";
        assert_eq!(
            names(&go_sum(s)),
            vec!["github.com/a/b@v1.0.0:1", "golang.org/x/text@v0.14.0:6"]
        );
    }

    #[test]
    fn gemfile_lock_gem_section_only() {
        let text = "GIT\n  remote: https://example.com/x.git\n  specs:\n    mygem (0.1.0)\n\nGEM\n  remote: https://rubygems.org/\n  specs:\n    actionpack (6.1.0)\n      rack (~> 2.0)\n    nokogiri (1.13.10-x86_64-linux)\n      racc (~> 1.4)\n    rack (2.2.3)\n\nPLATFORMS\n  ruby\n\nDEPENDENCIES\n  actionpack\n";
        assert_eq!(
            names(&gemfile_lock(text).pins),
            vec!["actionpack@6.1.0:9", "nokogiri@1.13.10:11", "rack@2.2.3:13"]
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(
            Kind::for_file_name("requirements-dev.txt"),
            Some(Kind::Requirements)
        );
        assert_eq!(Kind::for_file_name("Cargo.toml"), None);
    }

    /// `from->to` for each edge, by name and version.
    pub(crate) fn edge_names(parsed: &Parsed) -> Vec<String> {
        let n = |i: usize| format!("{}@{}", parsed.pins[i].name, parsed.pins[i].version);
        let mut v: Vec<String> = parsed
            .edges
            .iter()
            .map(|&(f, t)| format!("{}->{}", n(f), n(t)))
            .collect();
        v.sort();
        v
    }

    /// `name@version=scope` for each pin, sorted.
    pub(crate) fn scopes(parsed: &Parsed) -> Vec<String> {
        let mut v: Vec<String> = parsed
            .pins
            .iter()
            .map(|p| format!("{}@{}={}", p.name, p.version, p.scope.as_str()))
            .collect();
        v.sort();
        v
    }

    /// Names of the direct pins, sorted.
    pub(crate) fn direct(parsed: &Parsed) -> Vec<String> {
        let mut v: Vec<String> = parsed
            .direct
            .iter()
            .map(|&i| parsed.pins[i].name.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn package_lock_v3_graph_and_scopes() {
        let text = r#"{
  "name": "web",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {
      "name": "web",
      "version": "1.0.0",
      "dependencies": { "debug": "^2.6.9", "shared": "file:packages/shared" },
      "devDependencies": { "mocha": "^10.2.0" },
      "optionalDependencies": { "fsevents": "^2.3.2" }
    },
    "node_modules/debug": {
      "version": "2.6.9",
      "resolved": "https://registry.npmjs.org/debug/-/debug-2.6.9.tgz",
      "integrity": "sha512-bC7ElrdJaJnPbAP+1EotYvqZsb3ecl5wi6Bfi6BJTUcNowp6cvspg0jXznRTKDjm/E7AdgFBVeAPVMNcKGsHMA==",
      "dependencies": { "ms": "2.0.0" }
    },
    "node_modules/fsevents": {
      "version": "2.3.3",
      "resolved": "https://registry.npmjs.org/fsevents/-/fsevents-2.3.3.tgz",
      "optional": true,
      "os": ["darwin"]
    },
    "node_modules/mocha": {
      "version": "10.2.0",
      "dev": true,
      "dependencies": { "debug": "4.3.4", "ms": "2.1.3" }
    },
    "node_modules/mocha/node_modules/debug": {
      "version": "4.3.4",
      "dev": true,
      "dependencies": { "ms": "2.1.2" }
    },
    "node_modules/mocha/node_modules/debug/node_modules/ms": { "version": "2.1.2", "dev": true },
    "node_modules/mocha/node_modules/ms": { "version": "2.1.3", "dev": true },
    "node_modules/ms": { "version": "2.0.0" },
    "node_modules/shared": { "resolved": "packages/shared", "link": true },
    "packages/shared": {
      "version": "0.1.0",
      "dependencies": { "uuid": "^9.0.0" }
    },
    "node_modules/uuid": { "version": "9.0.1" }
  }
}"#;
        let parsed = package_lock(text).unwrap();
        assert!(parsed.has_graph);
        assert_eq!(
            edge_names(&parsed),
            vec![
                "debug@2.6.9->ms@2.0.0",
                "debug@4.3.4->ms@2.1.2",
                "mocha@10.2.0->debug@4.3.4",
                "mocha@10.2.0->ms@2.1.3",
            ]
        );
        assert_eq!(
            scopes(&parsed),
            vec![
                "debug@2.6.9=required",
                "debug@4.3.4=dev",
                "fsevents@2.3.3=optional",
                "mocha@10.2.0=dev",
                "ms@2.0.0=required",
                "ms@2.1.2=dev",
                "ms@2.1.3=dev",
                "uuid@9.0.1=required",
            ]
        );
        // uuid is required by a workspace member: the project's own dependency.
        assert_eq!(direct(&parsed), vec!["debug", "fsevents", "mocha", "uuid"]);
    }

    #[test]
    fn cargo_lock_graph() {
        let text = r#"# This file is automatically @generated by Cargo.
version = 3

[[package]]
name = "app"
version = "0.1.0"
dependencies = [
 "regex",
 "serde 1.0.200",
]

[[package]]
name = "aho-corasick"
version = "1.1.3"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = [
 "memchr",
]

[[package]]
name = "memchr"
version = "2.7.2"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "regex"
version = "1.10.4"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = [
 "aho-corasick",
 "memchr",
]

[[package]]
name = "serde"
version = "0.9.15"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "serde"
version = "1.0.200"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;
        let parsed = cargo_lock(text).unwrap();
        assert_eq!(
            edge_names(&parsed),
            vec![
                "aho-corasick@1.1.3->memchr@2.7.2",
                "regex@1.10.4->aho-corasick@1.1.3",
                "regex@1.10.4->memchr@2.7.2",
            ]
        );
        // serde 0.9.15 is in the lock but nothing depends on it: still listed under the project.
        assert_eq!(direct(&parsed), vec!["regex", "serde"]);
        assert_eq!(parsed.direct.len(), 3);
    }

    #[test]
    fn gemfile_lock_graph() {
        let text = "GIT\n  remote: https://github.com/example/mygem.git\n  revision: 0123456789abcdef\n  specs:\n    mygem (0.1.0)\n      rack (>= 2.0)\n\nGEM\n  remote: https://rubygems.org/\n  specs:\n    actionpack (6.1.7)\n      rack (~> 2.0, >= 2.0.9)\n      rack-test (>= 0.6.3)\n    rack (2.2.8)\n    rack-test (2.1.0)\n      rack (>= 1.3)\n\nPLATFORMS\n  ruby\n\nDEPENDENCIES\n  actionpack (~> 6.1)\n  mygem!\n\nBUNDLED WITH\n   2.4.10\n";
        let parsed = gemfile_lock(text);
        assert_eq!(
            names(&parsed.pins),
            vec!["actionpack@6.1.7:11", "rack@2.2.8:14", "rack-test@2.1.0:15"]
        );
        assert_eq!(
            edge_names(&parsed),
            vec![
                "actionpack@6.1.7->rack-test@2.1.0",
                "actionpack@6.1.7->rack@2.2.8",
                "rack-test@2.1.0->rack@2.2.8",
            ]
        );
        // rack is also required by mygem (a GIT gem of the Gemfile).
        assert_eq!(direct(&parsed), vec!["actionpack", "rack"]);
    }

    #[test]
    fn requirements_count_unpinned_lines() {
        let text = "Django==4.2.8\nrequests>=2.31\nflask\nnumpy~=1.26\nbar==1.*\n-r base.txt\n-e .\n./local-pkg\nhttps://example.com/pkg.tar.gz\nmypkg @ https://example.com/mypkg-1.0.tar.gz\n";
        let parsed = requirements(text);
        assert_eq!(names(&parsed.pins), vec!["Django@4.2.8:1"]);
        // requests, flask, numpy, bar (a wildcard) and the direct URL reference.
        assert_eq!(parsed.unpinned, 5);
    }

    const ALL_KINDS: [Kind; 14] = [
        Kind::CargoLock,
        Kind::PackageLock,
        Kind::YarnLock,
        Kind::Requirements,
        Kind::PoetryLock,
        Kind::PipfileLock,
        Kind::GoMod,
        Kind::GoSum,
        Kind::GemfileLock,
        Kind::UvLock,
        Kind::PnpmLock,
        Kind::ComposerLock,
        Kind::PackageJson,
        Kind::PythonManifest,
    ];

    /// The fuzz target's invariants (fuzz/fuzz_targets/lockfiles.rs) on its seed corpus and on
    /// prefixes of every seed: each parser refuses the text or returns pins with lines inside
    /// it, and a graph that points at pins.
    #[test]
    fn every_parser_holds_on_the_fuzz_seeds_and_their_prefixes() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/lockfiles");
        let mut checked = 0;
        for entry in std::fs::read_dir(&seeds).expect("the fuzz seed corpus") {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let cuts: Vec<usize> = (0..=text.len())
                .step_by(13)
                .chain([text.len()])
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            for cut in cuts {
                let text = &text[..cut];
                // A non-ASCII byte before `node_modules/` and in keys.
                let variants = [
                    text.to_string(),
                    text.replace("node_modules/", "é/node_modules/"),
                ];
                for text in &variants {
                    let lines = text.split('\n').count() as u32;
                    let sibling = |_: &str| Some(text.clone());
                    for kind in ALL_KINDS {
                        let Ok(parsed) = parse(kind, text, &sibling) else {
                            continue;
                        };
                        checked += 1;
                        for pin in &parsed.pins {
                            assert!(!pin.name.is_empty() && !pin.version.is_empty());
                            assert!((1..=lines).contains(&pin.line), "{kind:?} {pin:?}");
                        }
                        let n = parsed.pins.len();
                        assert!(parsed.edges.iter().all(|&(f, t)| f < n && t < n && f != t));
                        assert!(parsed.direct.iter().all(|&d| d < n));
                    }
                }
            }
        }
        assert!(checked > 1000, "only {checked} parses succeeded");
    }
}
