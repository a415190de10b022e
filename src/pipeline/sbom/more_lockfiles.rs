//! Parsers for lockfiles that record a dependency graph and the project's own requirements:
//! `poetry.lock` (v1 and v2, with the `pyproject.toml` beside it), `uv.lock`, `pnpm-lock.yaml`
//! (v5, v6 and v9), `composer.lock` (with `composer.json`), and `package.json` where no
//! JavaScript lockfile covers it.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;

use super::graph::{Builder, Parsed};
use super::lockfiles::{key_lines, package_table_lines, pin, Sibling};
use super::{normalize_pypi_name, Ecosystem, Scope};

// ----- Python: poetry.lock -------------------------------------------------------------------

#[derive(Deserialize)]
struct PoetryLock {
    #[serde(default)]
    package: Vec<PoetryPackage>,
}

#[derive(Deserialize)]
struct PoetryPackage {
    name: String,
    version: String,
    /// Lock format 1.x: `main` or `dev`.
    #[serde(default)]
    category: Option<String>,
    /// Lock format 2.1 (Poetry 2): the dependency groups that need the package.
    #[serde(default)]
    groups: Option<Vec<String>>,
    /// Only installed with an extra of the project.
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    source: Option<toml::Value>,
    /// name → `"spec"`, `{version, optional, markers, extras}` or a list of those.
    #[serde(default)]
    dependencies: toml::Table,
}

/// poetry.lock. Scope comes from the lock where it says (`category` in format 1.x, `groups` in
/// 2.1; `optional = true` marks extras); lock format 2.0 says neither, so the groups of the
/// `pyproject.toml` beside it are the roots and each package's scope follows from the graph.
pub fn poetry_lock(text: &str, sibling: Sibling<'_>) -> anyhow::Result<Parsed> {
    let lock: PoetryLock = toml::from_str(text).context("invalid TOML")?;
    let lines = package_table_lines(text);
    let mut b = Builder::default();
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in lock.package.iter().enumerate() {
        // `[package.source] type = "git" | "directory" | "file" | "url"` marks non-registry
        // packages; "legacy" is a private package index and still a PyPI-style release.
        let kind = p
            .source
            .as_ref()
            .and_then(|s| s.get("type"))
            .and_then(|t| t.as_str());
        let registry = matches!(kind, None | Some("legacy"));
        let line = lines.get(i).copied().unwrap_or(1);
        let runtime = if p.optional {
            Scope::Optional
        } else {
            Scope::Required
        };
        let stated = match (&p.groups, &p.category) {
            (Some(groups), _) if groups.iter().any(|g| g == "main") => Some(runtime),
            (Some(_), _) => Some(Scope::Dev),
            (None, Some(c)) if c == "dev" => Some(Scope::Dev),
            (None, Some(_)) => Some(runtime),
            (None, None) => None,
        };
        let node = b.node(
            registry.then(|| pin(Ecosystem::PyPI, &p.name, &p.version, line)),
            stated,
        );
        by_name
            .entry(normalize_pypi_name(&p.name))
            .or_default()
            .push(node);
    }
    for (i, p) in lock.package.iter().enumerate() {
        for (name, spec) in &p.dependencies {
            let specs = match spec {
                toml::Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            let optional = specs
                .iter()
                .all(|s| s.get("optional").and_then(|o| o.as_bool()).unwrap_or(false));
            let kind = if optional {
                Scope::Optional
            } else {
                Scope::Required
            };
            for &to in by_name
                .get(&normalize_pypi_name(name))
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                b.edge(i, to, kind);
            }
        }
    }
    if let Some(pyproject) = sibling("pyproject.toml") {
        for (name, kind) in pyproject_requirements(&pyproject)? {
            for &to in by_name.get(&name).map(Vec::as_slice).unwrap_or_default() {
                b.root(to, kind);
            }
        }
    }
    Ok(b.finish())
}

/// The project's requirements in a `pyproject.toml`, by normalised name: PEP 621
/// `[project] dependencies` and `optional-dependencies`, PEP 735 `[dependency-groups]`,
/// Poetry's `[tool.poetry.dependencies]`, `dev-dependencies` and `group.<name>.dependencies`
/// (every group but `main` is a development group).
fn pyproject_requirements(text: &str) -> anyhow::Result<Vec<(String, Scope)>> {
    let doc: toml::Table = toml::from_str(text).context("pyproject.toml: invalid TOML")?;
    let mut out = Vec::new();
    let pep508 = |item: &toml::Value| -> Option<String> {
        let s = item.as_str()?.trim();
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(s.len());
        (end > 0).then(|| normalize_pypi_name(&s[..end]))
    };
    let project = doc.get("project");
    for item in project
        .and_then(|p| p.get("dependencies"))
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
    {
        out.extend(pep508(item).map(|n| (n, Scope::Required)));
    }
    for list in project
        .and_then(|p| p.get("optional-dependencies"))
        .and_then(|d| d.as_table())
        .into_iter()
        .flat_map(|t| t.values())
    {
        for item in list.as_array().into_iter().flatten() {
            out.extend(pep508(item).map(|n| (n, Scope::Optional)));
        }
    }
    for list in doc
        .get("dependency-groups")
        .and_then(|d| d.as_table())
        .into_iter()
        .flat_map(|t| t.values())
    {
        for item in list.as_array().into_iter().flatten() {
            out.extend(pep508(item).map(|n| (n, Scope::Dev)));
        }
    }
    let poetry = doc.get("tool").and_then(|t| t.get("poetry"));
    let table_names = |table: Option<&toml::Value>, scope: Scope, out: &mut Vec<_>| {
        for (name, spec) in table.and_then(|t| t.as_table()).into_iter().flatten() {
            if name == "python" {
                continue;
            }
            let optional = spec.get("optional").and_then(|o| o.as_bool()) == Some(true);
            let scope = if optional && scope == Scope::Required {
                Scope::Optional
            } else {
                scope
            };
            out.push((normalize_pypi_name(name), scope));
        }
    };
    table_names(
        poetry.and_then(|p| p.get("dependencies")),
        Scope::Required,
        &mut out,
    );
    table_names(
        poetry.and_then(|p| p.get("dev-dependencies")),
        Scope::Dev,
        &mut out,
    );
    for (group, body) in poetry
        .and_then(|p| p.get("group"))
        .and_then(|g| g.as_table())
        .into_iter()
        .flatten()
    {
        let scope = if group == "main" {
            Scope::Required
        } else {
            Scope::Dev
        };
        table_names(body.get("dependencies"), scope, &mut out);
    }
    Ok(out)
}

// ----- Python: uv.lock -----------------------------------------------------------------------

#[derive(Deserialize)]
struct UvLock {
    #[serde(default)]
    package: Vec<UvPackage>,
}

#[derive(Deserialize)]
struct UvPackage {
    name: String,
    /// Absent for workspace members with a dynamic version.
    #[serde(default)]
    version: Option<String>,
    /// `{ registry = "..." }`, `{ editable = "." }`, `{ virtual = "." }`, `{ git = "..." }`,
    /// `{ path = ... }`, `{ directory = ... }`, `{ url = ... }`.
    #[serde(default)]
    source: toml::Table,
    #[serde(default)]
    dependencies: Vec<UvDependency>,
    #[serde(default, rename = "optional-dependencies")]
    optional_dependencies: BTreeMap<String, Vec<UvDependency>>,
    /// The dependency groups (PEP 735 and `tool.uv.dev-dependencies`).
    #[serde(default, rename = "dev-dependencies")]
    dev_dependencies: BTreeMap<String, Vec<UvDependency>>,
}

#[derive(Deserialize)]
struct UvDependency {
    name: String,
    /// Written when the lock holds several versions of the package.
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    extra: Vec<String>,
}

/// uv.lock: registry packages are components; workspace members (`editable` or `virtual`
/// sources) are the project, so their `dependencies`, `optional-dependencies` and
/// `dev-dependencies` are the roots (required, optional and dev); a dependency with `extra`
/// also pulls that extra's dependencies of its target.
pub fn uv_lock(text: &str) -> anyhow::Result<Parsed> {
    let lock: UvLock = toml::from_str(text).context("invalid TOML")?;
    if lock.package.is_empty() && !text.contains("requires-python") {
        bail!("not a uv lockfile (no [[package]] and no requires-python)");
    }
    let lines = package_table_lines(text);
    let mut b = Builder::default();
    let mut by_name: HashMap<String, Vec<(usize, Option<&str>)>> = HashMap::new();
    for (i, p) in lock.package.iter().enumerate() {
        let registry = p.source.contains_key("registry");
        let line = lines.get(i).copied().unwrap_or(1);
        let pinned = match (&p.version, registry) {
            (Some(v), true) => Some(pin(Ecosystem::PyPI, &p.name, v, line)),
            _ => None,
        };
        let node = b.node(pinned, None);
        by_name
            .entry(normalize_pypi_name(&p.name))
            .or_default()
            .push((node, p.version.as_deref()));
    }
    let resolve = |d: &UvDependency| -> Vec<usize> {
        by_name
            .get(&normalize_pypi_name(&d.name))
            .into_iter()
            .flatten()
            .filter(|(_, v)| d.version.is_none() || d.version.as_deref() == *v)
            .map(|(n, _)| *n)
            .collect()
    };
    for (i, p) in lock.package.iter().enumerate() {
        let member = p.source.contains_key("editable") || p.source.contains_key("virtual");
        let mut sections: Vec<(&UvDependency, Scope)> = p
            .dependencies
            .iter()
            .map(|d| (d, Scope::Required))
            .collect();
        if member {
            sections.extend(
                p.optional_dependencies
                    .values()
                    .flatten()
                    .map(|d| (d, Scope::Optional)),
            );
            sections.extend(
                p.dev_dependencies
                    .values()
                    .flatten()
                    .map(|d| (d, Scope::Dev)),
            );
        }
        for (dep, kind) in sections {
            for to in resolve(dep) {
                if member {
                    b.root(to, kind);
                } else {
                    b.edge(i, to, kind);
                }
                // `{ name = "httpx", extra = ["http2"] }`: httpx with its http2 extra.
                for extra in &dep.extra {
                    let target = &lock.package[to];
                    for extra_dep in target
                        .optional_dependencies
                        .get(extra)
                        .into_iter()
                        .flatten()
                    {
                        for extra_to in resolve(extra_dep) {
                            b.edge(to, extra_to, Scope::Required);
                        }
                    }
                }
            }
        }
    }
    Ok(b.finish())
}

// ----- JavaScript: pnpm-lock.yaml ------------------------------------------------------------

/// pnpm-lock.yaml. Entries are `packages` keys (`/name/1.0.0` in format 5, `/name@1.0.0` in 6,
/// `name@1.0.0` in 9, with peer suffixes `(peer@1.0.0)` or `_peer@1.0.0`); format 9 keeps the
/// dependencies of each entry under `snapshots`. Importers (`importers.<path>` in workspaces,
/// the top level otherwise) are the project's roots. Format 5 and 6 state `dev` and `optional`
/// per entry; for format 9 the scope follows from the importers' `dependencies`,
/// `optionalDependencies` and `devDependencies`.
pub fn pnpm_lock(text: &str) -> anyhow::Result<Parsed> {
    let doc: Value = yaml_serde::from_str(text).context("invalid YAML")?;
    let version = match doc.get("lockfileVersion") {
        Some(Value::String(s)) => s.parse::<f64>().ok(),
        Some(Value::Number(n)) => n.as_f64(),
        _ => None,
    }
    .context("not a pnpm lockfile (no lockfileVersion)")?;
    let v5 = version < 6.0;
    let lines = yaml_key_lines(text);
    let empty = serde_json::Map::new();
    let entries = doc
        .get("snapshots")
        .or_else(|| doc.get("packages"))
        .and_then(|p| p.as_object())
        .unwrap_or(&empty);
    let mut b = Builder::default();
    let mut node_of: HashMap<&str, usize> = HashMap::new();
    for (key, entry) in entries {
        let pinned = pnpm_key(key, v5)
            .filter(|(_, v)| v.bytes().next().is_some_and(|c| c.is_ascii_digit()))
            .map(|(name, v)| {
                let line = lines
                    .get(key.as_str())
                    .or_else(|| lines.get(key.split('(').next().unwrap_or(key)))
                    .copied()
                    .unwrap_or(1);
                pin(Ecosystem::Npm, &name, &v, line)
            });
        let flag = |k: &str| entry.get(k).and_then(|v| v.as_bool());
        let stated = match (flag("dev"), flag("optional")) {
            (Some(true), _) => Some(Scope::Dev),
            (Some(false), Some(true)) => Some(Scope::Optional),
            (Some(false), _) => Some(Scope::Required),
            (None, _) => None,
        };
        node_of.insert(key.as_str(), b.node(pinned, stated));
    }
    let target = |name: &str, reference: &Value| -> Option<usize> {
        let reference = match reference {
            Value::String(s) => s.clone(),
            Value::Object(o) => o.get("version")?.as_str()?.to_string(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let key = if reference.starts_with("link:") || reference.starts_with("file:") {
            return None;
        } else if reference.starts_with('/') {
            reference
        } else if reference.bytes().next().is_some_and(|c| c.is_ascii_digit()) {
            if v5 {
                format!("/{name}/{reference}")
            } else if version >= 9.0 {
                format!("{name}@{reference}")
            } else {
                format!("/{name}@{reference}")
            }
        } else if version >= 9.0 {
            // An alias: `string-width-cjs: string-width@4.2.3`.
            reference
        } else {
            format!("/{reference}")
        };
        node_of.get(key.as_str()).copied()
    };
    for (key, entry) in entries {
        let from = node_of[key.as_str()];
        for (section, kind) in [
            ("dependencies", Scope::Required),
            ("optionalDependencies", Scope::Optional),
        ] {
            for (name, reference) in entry
                .get(section)
                .and_then(|d| d.as_object())
                .into_iter()
                .flatten()
            {
                if let Some(to) = target(name, reference) {
                    b.edge(from, to, kind);
                }
            }
        }
    }
    let importers: Vec<&Value> = match doc.get("importers").and_then(|i| i.as_object()) {
        Some(map) => map.values().collect(),
        None => vec![&doc],
    };
    for importer in importers {
        for (section, kind) in [
            ("dependencies", Scope::Required),
            ("optionalDependencies", Scope::Optional),
            ("devDependencies", Scope::Dev),
        ] {
            for (name, reference) in importer
                .get(section)
                .and_then(|d| d.as_object())
                .into_iter()
                .flatten()
            {
                if let Some(to) = target(name, reference) {
                    b.root(to, kind);
                }
            }
        }
    }
    Ok(b.finish())
}

/// `(name, version)` of a pnpm package key, without peer suffixes.
fn pnpm_key(key: &str, v5: bool) -> Option<(String, String)> {
    let k = key.strip_prefix('/').unwrap_or(key);
    if v5 {
        let (name, version) = k.rsplit_once('/')?;
        let version = version.split('_').next().unwrap_or(version);
        return Some((name.to_string(), version.to_string()));
    }
    let k = k.split('(').next().unwrap_or(k);
    let at = match k.strip_prefix('@') {
        Some(rest) => rest.find('@').map(|p| p + 1),
        None => k.find('@'),
    }?;
    Some((k[..at].to_string(), k[at + 1..].to_string()))
}

/// The 1-based line of each mapping key at two spaces of indentation (`  /a@1.0.0:`,
/// `  '@b/c@2.0.0':`), first occurrence.
fn yaml_key_lines(text: &str) -> HashMap<&str, u32> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("  ") else {
            continue;
        };
        if rest.starts_with(' ') {
            continue;
        }
        let Some(key) = rest.trim_end().strip_suffix(':') else {
            continue;
        };
        let key = key.trim_matches(|c| c == '\'' || c == '"');
        out.entry(key).or_insert((i + 1) as u32);
    }
    out
}

// ----- PHP: composer.lock --------------------------------------------------------------------

/// composer.lock: `packages` are required, `packages-dev` development-only; each package's
/// `require` names its dependencies (platform requirements such as `php` and `ext-*` have no
/// `/` and are not packages). The `composer.json` beside it names the project's own.
pub fn composer_lock(text: &str, sibling: Sibling<'_>) -> anyhow::Result<Parsed> {
    let doc: Value = serde_json::from_str(text).context("invalid JSON")?;
    if doc.get("packages").is_none() && doc.get("packages-dev").is_none() {
        bail!("not a composer.lock (no packages or packages-dev)");
    }
    let mut name_lines: HashMap<String, u32> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.trim_start().strip_prefix("\"name\": \"") {
            let name = rest.split('"').next().unwrap_or("").to_ascii_lowercase();
            name_lines.entry(name).or_insert((i + 1) as u32);
        }
    }
    let mut b = Builder::default();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut requires: Vec<(usize, Vec<String>)> = Vec::new();
    for (section, scope) in [("packages", Scope::Required), ("packages-dev", Scope::Dev)] {
        for pkg in doc
            .get(section)
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            let (Some(name), Some(version)) = (
                pkg.get("name").and_then(|n| n.as_str()),
                pkg.get("version").and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            let lower = name.to_ascii_lowercase();
            // `dev-main` and `1.0.x-dev` are branches of a repository, not releases.
            let numeric = version.strip_prefix('v').unwrap_or(version);
            let release = numeric.bytes().next().is_some_and(|c| c.is_ascii_digit())
                && !version.ends_with("-dev");
            let line = name_lines.get(&lower).copied().unwrap_or(1);
            let node = b.node(
                release.then(|| pin(Ecosystem::Packagist, name, version, line)),
                Some(scope),
            );
            by_name.insert(lower, node);
            let deps = pkg
                .get("require")
                .and_then(|r| r.as_object())
                .map(|r| r.keys().map(|k| k.to_ascii_lowercase()).collect())
                .unwrap_or_default();
            requires.push((node, deps));
        }
    }
    for (from, deps) in requires {
        for dep in deps {
            if let Some(&to) = by_name.get(&dep) {
                b.edge(from, to, Scope::Required);
            }
        }
    }
    if let Some(manifest) = sibling("composer.json") {
        let manifest: Value =
            serde_json::from_str(&manifest).context("composer.json: invalid JSON")?;
        for (section, kind) in [("require", Scope::Required), ("require-dev", Scope::Dev)] {
            for dep in manifest
                .get(section)
                .and_then(|r| r.as_object())
                .into_iter()
                .flat_map(|r| r.keys())
            {
                if let Some(&to) = by_name.get(&dep.to_ascii_lowercase()) {
                    b.root(to, kind);
                }
            }
        }
    }
    Ok(b.finish())
}

// ----- JavaScript: package.json without a lockfile -------------------------------------------

/// A `package.json` no lockfile covers: exact versions are components (the project's direct
/// dependencies; what they pull in is unknown), ranges and tags are counted as unpinned. Local
/// (`file:`, `link:`, `workspace:`, `portal:`) dependencies are neither.
pub fn package_json(text: &str) -> anyhow::Result<Parsed> {
    let doc: Value = serde_json::from_str(text).context("invalid JSON")?;
    let lines = key_lines(text);
    let mut pins = Vec::new();
    let mut unpinned = 0;
    for (section, scope) in [
        ("dependencies", Scope::Required),
        ("optionalDependencies", Scope::Optional),
        ("devDependencies", Scope::Dev),
    ] {
        for (name, spec) in doc
            .get(section)
            .and_then(|d| d.as_object())
            .into_iter()
            .flatten()
        {
            let spec = spec.as_str().unwrap_or("").trim();
            if ["file:", "link:", "workspace:", "portal:"]
                .iter()
                .any(|p| spec.starts_with(p))
            {
                continue;
            }
            let exact = spec.strip_prefix('=').unwrap_or(spec);
            let exact = exact.strip_prefix('v').unwrap_or(exact);
            if semver::Version::parse(exact).is_ok() {
                let line = lines.get(name.as_str()).copied().unwrap_or(1);
                let mut p = pin(Ecosystem::Npm, name, exact, line);
                p.scope = scope;
                pins.push(p);
            } else {
                unpinned += 1;
            }
        }
    }
    let mut parsed = Parsed::flat(pins);
    parsed.unpinned = unpinned;
    Ok(parsed)
}
