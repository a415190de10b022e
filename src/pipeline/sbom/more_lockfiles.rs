//! Parsers for lockfiles that record a dependency graph and the project's own requirements:
//! `poetry.lock` (v1 and v2, with the `pyproject.toml` beside it), `uv.lock`, `pnpm-lock.yaml`
//! (v5, v6 and v9), `composer.lock` (with `composer.json`), and `package.json` where no
//! JavaScript lockfile covers it.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;

use super::entries::{key_lines, package_table_lines, pin, Sibling};
use super::graph::{Builder, Parsed};
use super::{normalize_pypi_name, Ecosystem, Pinned, Scope};

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
            // Lock format 2.0: only extras are marked; groups come from the pyproject.toml.
            (None, None) => p.optional.then_some(Scope::Optional),
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
    let mut warnings = Vec::new();
    if let Some(pyproject) = sibling("pyproject.toml") {
        match pyproject_requirements(&pyproject) {
            Ok(requirements) => {
                for (name, kind) in requirements {
                    for &to in by_name.get(&name).map(Vec::as_slice).unwrap_or_default() {
                        b.root(to, kind);
                    }
                }
            }
            Err(err) => warnings.push(format!(
                "{err:#}; the scope of packages the lock does not mark is unknown (required)"
            )),
        }
    }
    let mut parsed = b.finish();
    parsed.warnings = warnings;
    Ok(parsed)
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
                // Format 9 lists the package (without peers) under `packages`, before its
                // snapshots.
                let line = lines
                    .get(key.split('(').next().unwrap_or(key))
                    .or_else(|| lines.get(key.as_str()))
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
        let key = pnpm_target_key(name, reference, version)?;
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

/// The snapshot key a dependency reference points at, in the lockfile format `version`; `None`
/// for links and local files.
fn pnpm_target_key(name: &str, reference: &Value, version: f64) -> Option<String> {
    let v5 = version < 6.0;
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
    Some(key)
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
    let mut warnings = Vec::new();
    let manifest = sibling("composer.json").and_then(|text| {
        serde_json::from_str::<Value>(&text)
            .map_err(|err| {
                warnings.push(format!(
                    "composer.json beside it is not valid JSON ({err}); the project's direct \
                     dependencies are unknown"
                ))
            })
            .ok()
    });
    if let Some(manifest) = manifest {
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
    let mut parsed = b.finish();
    parsed.warnings = warnings;
    Ok(parsed)
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

// ----- Python: pyproject.toml and Pipfile without a lockfile ---------------------------------

/// A `pyproject.toml` or `Pipfile` no lockfile or requirements file sits beside: exact pins
/// (`name==1.0` in PEP 508, `"==1.0"` in a Pipfile, `"1.0"` in Poetry's tables) are components,
/// the rest is counted as unpinned. Path, git and URL entries are neither. Sections: PEP 621
/// `[project] dependencies` and `optional-dependencies`, PEP 735 `[dependency-groups]`, Poetry's
/// `[tool.poetry.dependencies]`, `dev-dependencies` and groups, Pipfile `[packages]` and
/// `[dev-packages]`.
pub fn python_manifest(text: &str) -> anyhow::Result<Parsed> {
    let doc: toml::Table = toml::from_str(text).context("invalid TOML")?;
    let mut pins = Vec::new();
    let mut unpinned = 0;
    let line_of = |needle: &str| -> u32 {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| (i + 1) as u32)
            .unwrap_or(1)
    };
    let mut add = |requirement: Requirement| match requirement {
        Requirement::Pinned(p) => pins.push(p),
        Requirement::Unpinned => unpinned += 1,
        Requirement::NotAPackage => {}
    };
    for (item, scope) in pep508_lists(&doc) {
        add(pep508(item, scope, &line_of));
    }
    for (table, scope, poetry_style) in name_spec_tables(&doc) {
        for (name, spec) in table.as_table().into_iter().flatten() {
            if name != "python" {
                add(name_spec(name, spec, scope, poetry_style, &line_of));
            }
        }
    }
    let mut parsed = Parsed::flat(pins);
    parsed.unpinned = unpinned;
    Ok(parsed)
}

/// What one requirement of a Python manifest says.
enum Requirement {
    Pinned(Pinned),
    /// A package without an exact version.
    Unpinned,
    /// Something else (a path, git or URL dependency, an `include-group`).
    NotAPackage,
}

/// The PEP 508 strings of `[project]` (dependencies, optional dependencies) and of
/// `[dependency-groups]`, with their scopes.
fn pep508_lists(doc: &toml::Table) -> Vec<(&toml::Value, Scope)> {
    let project = doc.get("project");
    let mut out: Vec<(&toml::Value, Scope)> = project
        .and_then(|p| p.get("dependencies"))
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
        .map(|item| (item, Scope::Required))
        .collect();
    for (section, scope) in [
        (
            project.and_then(|p| p.get("optional-dependencies")),
            Scope::Optional,
        ),
        (doc.get("dependency-groups"), Scope::Dev),
    ] {
        for list in section
            .and_then(|d| d.as_table())
            .into_iter()
            .flat_map(|t| t.values())
        {
            for item in list.as_array().into_iter().flatten() {
                out.push((item, scope));
            }
        }
    }
    out
}

/// A PEP 508 string: pinned only with `==` or `===` and one plain version.
fn pep508(item: &toml::Value, scope: Scope, line_of: &dyn Fn(&str) -> u32) -> Requirement {
    let Some(s) = item.as_str() else {
        return Requirement::NotAPackage; // `{include-group = "..."}`
    };
    let req = s.split(';').next().unwrap_or("").trim();
    let end = req
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(req.len());
    if end == 0 {
        return Requirement::NotAPackage;
    }
    let name = &req[..end];
    let spec = req[end..].trim_start();
    let spec = match spec.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(_, r)| r).unwrap_or("").trim(),
        None => spec,
    };
    let version = spec
        .strip_prefix("===")
        .or_else(|| spec.strip_prefix("=="))
        .map(str::trim);
    match version {
        Some(v) if !v.is_empty() && !v.contains([',', '*', ' ']) => {
            let mut p = pin(Ecosystem::PyPI, name, v, line_of(s));
            p.scope = scope;
            Requirement::Pinned(p)
        }
        _ => Requirement::Unpinned,
    }
}

/// Tables of name = spec with their scopes: Poetry's (`"1.0"` is exact; `true` in the tuple)
/// and Pipfile's (`"==1.0"`).
fn name_spec_tables(doc: &toml::Table) -> Vec<(&toml::Value, Scope, bool)> {
    let mut tables: Vec<(&toml::Value, Scope, bool)> = Vec::new();
    let poetry = doc.get("tool").and_then(|t| t.get("poetry"));
    if let Some(deps) = poetry.and_then(|p| p.get("dependencies")) {
        tables.push((deps, Scope::Required, true));
    }
    if let Some(deps) = poetry.and_then(|p| p.get("dev-dependencies")) {
        tables.push((deps, Scope::Dev, true));
    }
    for (group, body) in poetry
        .and_then(|p| p.get("group"))
        .and_then(|g| g.as_table())
        .into_iter()
        .flatten()
    {
        if let Some(deps) = body.get("dependencies") {
            let scope = if group == "main" {
                Scope::Required
            } else {
                Scope::Dev
            };
            tables.push((deps, scope, true));
        }
    }
    if let Some(deps) = doc.get("packages") {
        tables.push((deps, Scope::Required, false));
    }
    if let Some(deps) = doc.get("dev-packages") {
        tables.push((deps, Scope::Dev, false));
    }
    tables
}

/// One `name = spec` entry of a Poetry or Pipfile table.
fn name_spec(
    name: &str,
    spec: &toml::Value,
    scope: Scope,
    poetry_style: bool,
    line_of: &dyn Fn(&str) -> u32,
) -> Requirement {
    let version = match spec {
        toml::Value::String(v) => Some(v.as_str()),
        toml::Value::Table(t) => {
            if ["path", "git", "url", "file", "editable"]
                .iter()
                .any(|k| t.contains_key(*k))
            {
                return Requirement::NotAPackage;
            }
            t.get("version").and_then(|v| v.as_str())
        }
        _ => None,
    };
    let optional = spec.get("optional").and_then(|o| o.as_bool()) == Some(true);
    let exact = version.and_then(|v| {
        let v = v.trim();
        let v = match v.strip_prefix("==") {
            Some(rest) => rest.trim(),
            None if poetry_style => v.strip_prefix('=').unwrap_or(v).trim(),
            None => return None,
        };
        let plain = v.bytes().next().is_some_and(|b| b.is_ascii_digit())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'!'));
        plain.then_some(v)
    });
    match exact {
        Some(v) => {
            let line = line_of(&format!("{name} ="));
            let mut p = pin(Ecosystem::PyPI, name, v, line);
            p.scope = if optional && scope == Scope::Required {
                Scope::Optional
            } else {
                scope
            };
            Requirement::Pinned(p)
        }
        None => Requirement::Unpinned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sbom::lockfiles::tests::{direct, edge_names, scopes};

    fn none(_: &str) -> Option<String> {
        None
    }

    /// The shape `uv lock` writes (flask's own lock, trimmed): a project with groups and
    /// extras, registry packages, a git package, a dependency with an extra.
    const UV_LOCK: &str = r#"version = 1
revision = 2
requires-python = ">=3.9"

[[package]]
name = "asgiref"
version = "3.8.1"
source = { registry = "https://pypi.org/simple" }
dependencies = [
    { name = "typing-extensions", marker = "python_full_version < '3.11'" },
]
sdist = { url = "https://files.pythonhosted.org/packages/29/38/b3395cc9ad1b56d2ddac9970bc8f4141312dbaec28bc7c8e2f2ec5e4f62f/asgiref-3.8.1.tar.gz", hash = "sha256:c343bd80a0bec947a9860adb4c432ffa7db769836c64238fc34bdc3fec84d590", size = 35186 }
wheels = [
    { url = "https://files.pythonhosted.org/packages/39/e3/893e8757be2612e6c266d9bb58ad2e3651524b5b40cf56761e985a28b13e/asgiref-3.8.1-py3-none-any.whl", hash = "sha256:3e1e3ecc849832fe52ccf2cb6686b7a55f82bb1d6aee72a58826471390335e47", size = 23828 },
]

[[package]]
name = "blinker"
version = "1.9.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "click"
version = "8.1.8"
source = { registry = "https://pypi.org/simple" }
dependencies = [
    { name = "colorama", marker = "sys_platform == 'win32'" },
]

[[package]]
name = "colorama"
version = "0.4.6"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "flask"
source = { editable = "." }
dependencies = [
    { name = "blinker" },
    { name = "click" },
    { name = "werkzeug" },
]

[package.optional-dependencies]
async = [
    { name = "asgiref" },
]

[package.dev-dependencies]
tests = [
    { name = "httpx", extra = ["http2"] },
    { name = "pytest" },
]

[package.metadata]
requires-dist = [
    { name = "asgiref", marker = "extra == 'async'", specifier = ">=3.2" },
    { name = "blinker", specifier = ">=1.9" },
]

[[package]]
name = "h2"
version = "4.1.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "httpx"
version = "0.28.1"
source = { registry = "https://pypi.org/simple" }

[package.optional-dependencies]
http2 = [
    { name = "h2" },
]

[[package]]
name = "markupsafe"
version = "3.0.2"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "pytest"
version = "8.3.4"
source = { registry = "https://pypi.org/simple" }
dependencies = [
    { name = "colorama", marker = "sys_platform == 'win32'" },
]

[[package]]
name = "typing-extensions"
version = "4.12.2"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "werkzeug"
version = "3.1.0.dev0"
source = { git = "https://github.com/pallets/werkzeug?rev=main#6a1a3cae5bd3bbd8dbd1b6d9f0ec1c8d1e5f1c1e" }
dependencies = [
    { name = "markupsafe" },
]
"#;

    #[test]
    fn uv_lock_components_scopes_and_graph() {
        let parsed = uv_lock(UV_LOCK).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "asgiref@3.8.1=optional",
                "blinker@1.9.0=required",
                "click@8.1.8=required",
                "colorama@0.4.6=required",
                "h2@4.1.0=dev",
                "httpx@0.28.1=dev",
                "markupsafe@3.0.2=required",
                "pytest@8.3.4=dev",
                "typing-extensions@4.12.2=optional",
            ]
        );
        assert_eq!(
            edge_names(&parsed),
            vec![
                "asgiref@3.8.1->typing-extensions@4.12.2",
                "click@8.1.8->colorama@0.4.6",
                "httpx@0.28.1->h2@4.1.0",
                "pytest@8.3.4->colorama@0.4.6",
            ]
        );
        // markupsafe comes through the git package werkzeug: the project's own dependency.
        assert_eq!(
            direct(&parsed),
            vec![
                "asgiref",
                "blinker",
                "click",
                "httpx",
                "markupsafe",
                "pytest"
            ]
        );
        assert_eq!(parsed.pins[0].line, 5);
        assert!(uv_lock("[[package]\n").is_err());
    }

    #[test]
    fn poetry_lock_v1_categories() {
        let text = r#"[[package]]
name = "jinja2"
version = "2.10"
description = "A small but fast and easy to use stand-alone template engine written in pure python."
category = "main"
optional = false
python-versions = "*"

[package.dependencies]
MarkupSafe = ">=0.23"

[package.extras]
i18n = ["Babel (>=0.8)"]

[[package]]
name = "markupsafe"
version = "1.1.1"
description = "Safely add untrusted strings to HTML/XML markup."
category = "main"
optional = false
python-versions = ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*"

[[package]]
name = "mylib"
version = "0.1.0"
description = ""
category = "main"
optional = false
python-versions = "*"

[package.source]
type = "directory"
url = "../mylib"

[[package]]
name = "pytest"
version = "6.2.5"
description = "pytest: simple powerful testing with Python"
category = "dev"
optional = false
python-versions = ">=3.6"

[[package]]
name = "pyyaml"
version = "5.4.1"
description = "YAML parser and emitter for Python"
category = "main"
optional = true
python-versions = ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*, !=3.4.*, !=3.5.*"

[metadata]
lock-version = "1.1"
python-versions = "^3.8"
content-hash = "c2f0e6a3bbc5a6b0a0e9d2c0bb0e4e3f0c1f1b5ca0a3c5e1d1a9f4e0b3b2a1c0"
"#;
        let parsed = poetry_lock(text, &none).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "jinja2@2.10=required",
                "markupsafe@1.1.1=required",
                "pytest@6.2.5=dev",
                "pyyaml@5.4.1=optional",
            ]
        );
        // `MarkupSafe` in the dependencies names the `markupsafe` package.
        assert_eq!(edge_names(&parsed), vec!["jinja2@2.10->markupsafe@1.1.1"]);
    }

    /// Lock format 2.0 says nothing about groups: the pyproject.toml beside it does.
    #[test]
    fn poetry_lock_v2_groups_from_pyproject() {
        let lock = r#"# This file is automatically @generated by Poetry 1.8.3 and should not be changed by hand.

[[package]]
name = "certifi"
version = "2024.2.2"
description = "Python package for providing Mozilla's CA Bundle."
optional = false
python-versions = ">=3.6"
files = [
    {file = "certifi-2024.2.2-py3-none-any.whl", hash = "sha256:dc383c07b76109f368f6106eee2b593b04a011ea4d55f652c6ca24a754d1cdd1"},
]

[[package]]
name = "iniconfig"
version = "2.0.0"
description = "brain-dead simple config-ini parsing"
optional = false
python-versions = ">=3.7"

[[package]]
name = "pytest"
version = "8.1.1"
description = "pytest: simple powerful testing with Python"
optional = false
python-versions = ">=3.8"

[package.dependencies]
iniconfig = "*"

[[package]]
name = "requests"
version = "2.31.0"
description = "Python HTTP for Humans."
optional = false
python-versions = ">=3.7"

[package.dependencies]
certifi = ">=2017.4.17"
PySocks = {version = ">=1.5.6,<1.5.7 || >1.5.7", optional = true}

[package.extras]
socks = ["PySocks (>=1.5.6,!=1.5.7)"]

[[package]]
name = "pysocks"
version = "1.7.1"
description = "A Python SOCKS client module."
optional = true
python-versions = ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*, !=3.4.*"

[metadata]
lock-version = "2.0"
python-versions = "^3.10"
content-hash = "0d1a4e1b2c3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b"
"#;
        let pyproject = r#"[tool.poetry]
name = "svc"
version = "0.1.0"
description = ""
authors = ["Dev <dev@example.com>"]

[tool.poetry.dependencies]
python = "^3.10"
requests = {extras = ["socks"], version = "^2.31.0"}

[tool.poetry.group.test.dependencies]
pytest = "^8.1.1"
"#;
        let sibling = |name: &str| (name == "pyproject.toml").then(|| pyproject.to_string());
        let parsed = poetry_lock(lock, &sibling).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "certifi@2024.2.2=required",
                "iniconfig@2.0.0=dev",
                "pysocks@1.7.1=optional",
                "pytest@8.1.1=dev",
                "requests@2.31.0=required",
            ]
        );
        assert_eq!(direct(&parsed), vec!["pytest", "requests"]);
        // Without the pyproject.toml the scope is unknown: required, but extras are marked.
        let parsed = poetry_lock(lock, &none).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "certifi@2024.2.2=required",
                "iniconfig@2.0.0=required",
                "pysocks@1.7.1=optional",
                "pytest@8.1.1=required",
                "requests@2.31.0=required",
            ]
        );
        // A broken pyproject.toml does not lose the lock's packages; it is a warning.
        let broken = |_: &str| Some("[tool.poetry\n".to_string());
        let parsed = poetry_lock(lock, &broken).unwrap();
        assert_eq!(parsed.pins.len(), 5);
        assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
        assert!(parsed.warnings[0].starts_with("pyproject.toml: invalid TOML"));
    }

    #[test]
    fn poetry_lock_v2_1_groups() {
        let lock = r#"[[package]]
name = "click"
version = "8.1.7"
description = "Composable command line interface toolkit"
optional = false
python-versions = ">=3.7"
groups = ["main", "dev"]

[[package]]
name = "ruff"
version = "0.4.4"
description = "An extremely fast Python linter and code formatter, written in Rust."
optional = false
python-versions = ">=3.7"
groups = ["dev"]

[metadata]
lock-version = "2.1"
python-versions = ">=3.9"
content-hash = "aa"
"#;
        let parsed = poetry_lock(lock, &none).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec!["click@8.1.7=required", "ruff@0.4.4=dev"]
        );
    }

    #[test]
    fn pnpm_lock_v6() {
        let text = r#"lockfileVersion: '6.0'

settings:
  autoInstallPeers: true
  excludeLinksFromLockfile: false

dependencies:
  react-dom:
    specifier: ^18.2.0
    version: 18.2.0(react@18.2.0)
  react:
    specifier: ^18.2.0
    version: 18.2.0

optionalDependencies:
  fsevents:
    specifier: ^2.3.3
    version: 2.3.3

devDependencies:
  '@types/react':
    specifier: ^18.2.0
    version: 18.2.0
  local-tool:
    specifier: link:../tool
    version: link:../tool

packages:

  /@types/react@18.2.0:
    resolution: {integrity: sha512-0FLj93y5USLHdnhIhABk83rm8XEGA7kH3cr+YUlvxoUGp1xNt/DINUMvqPxLyOQMzLmZe8i4RTHbvb8MC7NmrA==}
    dependencies:
      csstype: 3.1.3
    dev: true

  /csstype@3.1.3:
    resolution: {integrity: sha512-M1uQkMl8rQK/szD0LNhtqxIPLpimGm8sOBwU7lLnCpSbTyY3yeU1Vc7l4KT5zT4s/yOxHH5O7tIuuLOCnLADRw==}
    dev: true

  /fsevents@2.3.3:
    resolution: {integrity: sha512-5xoDfX+fL7faATnagmWPpbFtwh/R77WmMMqqHGS65C3vvB0YHrgF+B1YmZ3441tMj5n63k0212XNoJwzlhffQw==}
    engines: {node: ^8.16.0 || ^10.6.0 || >=11.0.0}
    os: [darwin]
    requiresBuild: true
    dev: false
    optional: true

  /js-tokens@4.0.0:
    resolution: {integrity: sha512-RdJUflcE3cUzKiMqQgsCu06FPu9UdIJO0beYbPhHN4k6apgJtifcoCtT9bcxOpYBtpD2kCM6Sbzg4CausW/PKQ==}
    dev: false

  /loose-envify@1.4.0:
    resolution: {integrity: sha512-lyuxPGr/Wfhrlem2CL/UcnUc1zcqKAImBDzukY7Y5F/yQiNdko6+fRLevlw1HgMySw7f611UIY408EtxRSoK3Q==}
    hasBin: true
    dependencies:
      js-tokens: 4.0.0
    dev: false

  /react-dom@18.2.0(react@18.2.0):
    resolution: {integrity: sha512-6IMTriUmvsjHUjNtEDudZfuDQUoWXVxKHhlEGSk81n4YFS+r/Kl99wXiwlVXtPBtJenozv2P+hxDsw9eA7Xo6g==}
    peerDependencies:
      react: ^18.2.0
    dependencies:
      loose-envify: 1.4.0
      react: 18.2.0
      scheduler: 0.23.0
    dev: false

  /react@18.2.0:
    resolution: {integrity: sha512-/3IjMdb2L9QbBdWiW5e3P2/npwMBaU9mHCSCUzNln0ZCYbcfTsGbTJrU/kGemdH2IWmB2ioZ+zkxtmq6g09fGQ==}
    engines: {node: '>=0.10.0'}
    dependencies:
      loose-envify: 1.4.0
    dev: false

  /scheduler@0.23.0:
    resolution: {integrity: sha512-CtuThmgHNg7zIZWAXi3AsyIzA3n4xx7aNyjwC2VJldO2LMVDhFK+63xGqq6CNJiqtFbWyLymGgIQyD5gLfCZMw==}
    dependencies:
      loose-envify: 1.4.0
    dev: false
"#;
        let parsed = pnpm_lock(text).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "@types/react@18.2.0=dev",
                "csstype@3.1.3=dev",
                "fsevents@2.3.3=optional",
                "js-tokens@4.0.0=required",
                "loose-envify@1.4.0=required",
                "react-dom@18.2.0=required",
                "react@18.2.0=required",
                "scheduler@0.23.0=required",
            ]
        );
        assert_eq!(
            edge_names(&parsed),
            vec![
                "@types/react@18.2.0->csstype@3.1.3",
                "loose-envify@1.4.0->js-tokens@4.0.0",
                "react-dom@18.2.0->loose-envify@1.4.0",
                "react-dom@18.2.0->react@18.2.0",
                "react-dom@18.2.0->scheduler@0.23.0",
                "react@18.2.0->loose-envify@1.4.0",
                "scheduler@0.23.0->loose-envify@1.4.0",
            ]
        );
        assert_eq!(
            direct(&parsed),
            vec!["@types/react", "fsevents", "react", "react-dom"]
        );
        let line = |name: &str| parsed.pins.iter().find(|p| p.name == name).unwrap().line;
        assert_eq!(line("@types/react"), 30);
        assert_eq!(line("react-dom"), 59);
    }

    /// Format 9: a workspace; `packages` keyed `name@version`, dependencies under `snapshots`;
    /// no dev flags, so scope comes from the importers.
    #[test]
    fn pnpm_lock_v9_workspace() {
        let text = r#"lockfileVersion: '9.0'

settings:
  autoInstallPeers: true
  excludeLinksFromLockfile: false

importers:

  .:
    devDependencies:
      typescript:
        specifier: ^5.4.5
        version: 5.4.5

  packages/api:
    dependencies:
      '@scope/shared':
        specifier: workspace:*
        version: link:../shared
      express:
        specifier: ^4.19.2
        version: 4.19.2
      string-width-cjs:
        specifier: npm:string-width@^4.2.0
        version: string-width@4.2.3
    optionalDependencies:
      bufferutil:
        specifier: ^4.0.8
        version: 4.0.8
    devDependencies:
      debug:
        specifier: 2.6.9
        version: 2.6.9

packages:

  bufferutil@4.0.8:
    resolution: {integrity: sha512-4T53u4PdgsXqKaIctwF8ifXlRTTmEPJ8iEPWFdGZvcf7sbwYo6FKFEX9eNNAnzFZ7EzJAQ3CJeOtCRA4rDp7Pw==}
    engines: {node: '>=6.14.2'}

  debug@2.6.9:
    resolution: {integrity: sha512-bC7ElrdJaJnPbAP+1EotYvqZsb3ecl5wi6Bfi6BJTUcNowp6cvspg0jXznRTKDjm/E7AdgFBVeAPVMNcKGsHMA==}

  express@4.19.2:
    resolution: {integrity: sha512-5T6nhjsT+EOMzuck8JjBHARTHfMht0POzlA60WV2pMD3gyXw2LZnZ+ueGdNxG+0calOJcWKbpFcuzLZ91YWq9Q==}
    engines: {node: '>= 0.10.0'}

  ms@2.0.0:
    resolution: {integrity: sha512-Tpp60P6IUJDTuOq/5Z8cdskzJujfwqfOTkrwIwj7IRISpnkJnT6SyJ4PCPnGMoFjC9ddhal5KVIYtAt97ix05A==}

  string-width@4.2.3:
    resolution: {integrity: sha512-wKyQRQpjJ0sIp62ErSZdGsjMJWsap5oRNihHhu6G7JVO/9jIB6UyevL+tXuOqrng8j/cxKTWyWUwvSTriiZz/g==}
    engines: {node: '>=8'}

snapshots:

  bufferutil@4.0.8:
    dependencies:
      node-gyp-build: 4.8.1
    optional: true

  debug@2.6.9:
    dependencies:
      ms: 2.0.0

  express@4.19.2:
    dependencies:
      debug: 2.6.9

  ms@2.0.0: {}

  node-gyp-build@4.8.1:
    optional: true

  string-width@4.2.3: {}

  typescript@5.4.5: {}
"#;
        let parsed = pnpm_lock(text).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "bufferutil@4.0.8=optional",
                "debug@2.6.9=required",
                "express@4.19.2=required",
                "ms@2.0.0=required",
                "node-gyp-build@4.8.1=optional",
                "string-width@4.2.3=required",
                "typescript@5.4.5=dev",
            ]
        );
        assert_eq!(
            edge_names(&parsed),
            vec![
                "bufferutil@4.0.8->node-gyp-build@4.8.1",
                "debug@2.6.9->ms@2.0.0",
                "express@4.19.2->debug@2.6.9",
            ]
        );
        assert_eq!(
            direct(&parsed),
            vec![
                "bufferutil",
                "debug",
                "express",
                "string-width",
                "typescript"
            ]
        );
    }

    #[test]
    fn pnpm_lock_v5_keys() {
        assert_eq!(
            pnpm_key("/@babel/core/7.0.0_react@18.2.0", true),
            Some(("@babel/core".into(), "7.0.0".into()))
        );
        assert_eq!(
            pnpm_key("/@babel/core@7.0.0(react@18.2.0)", false),
            Some(("@babel/core".into(), "7.0.0".into()))
        );
        assert!(pnpm_lock("packages: {}\n").is_err());
    }

    #[test]
    fn composer_lock_packages_and_dev() {
        let lock = r#"{
    "_readme": [
        "This file locks the dependencies of your project to a known state",
        "This file is @generated automatically"
    ],
    "content-hash": "d1f0bcd5d3e1e4f1bd3c43a0c6a3a5b1",
    "packages": [
        {
            "name": "monolog/monolog",
            "version": "3.6.0",
            "source": {
                "type": "git",
                "url": "https://github.com/Seldaek/monolog.git",
                "reference": "4b18b21a5527a3d5ffdac2fd35d3ab25a9597654"
            },
            "require": {
                "php": ">=8.1",
                "psr/log": "^2.0 || ^3.0"
            },
            "type": "library"
        },
        {
            "name": "psr/log",
            "version": "3.0.0",
            "require": {
                "php": ">=8.0.0"
            },
            "type": "library"
        },
        {
            "name": "symfony/polyfill-mbstring",
            "version": "v1.29.0",
            "require": {
                "php": ">=7.1"
            },
            "type": "library"
        },
        {
            "name": "acme/internal",
            "version": "dev-main",
            "dist": {
                "type": "path",
                "url": "../internal"
            },
            "require": {
                "symfony/polyfill-mbstring": "^1.0"
            }
        }
    ],
    "packages-dev": [
        {
            "name": "phpunit/phpunit",
            "version": "10.5.20",
            "require": {
                "ext-dom": "*",
                "php": ">=8.1",
                "psr/log": "^3.0"
            },
            "type": "library"
        }
    ],
    "aliases": [],
    "minimum-stability": "stable",
    "platform": {
        "php": ">=8.1"
    }
}"#;
        let manifest = r#"{"require": {"php": ">=8.1", "monolog/monolog": "^3.0", "acme/internal": "*"}, "require-dev": {"phpunit/phpunit": "^10.5"}}"#;
        let sibling = |name: &str| (name == "composer.json").then(|| manifest.to_string());
        let parsed = composer_lock(lock, &sibling).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "monolog/monolog@3.6.0=required",
                "phpunit/phpunit@10.5.20=dev",
                "psr/log@3.0.0=required",
                "symfony/polyfill-mbstring@v1.29.0=required",
            ]
        );
        assert_eq!(
            edge_names(&parsed),
            vec![
                "monolog/monolog@3.6.0->psr/log@3.0.0",
                "phpunit/phpunit@10.5.20->psr/log@3.0.0",
            ]
        );
        // polyfill-mbstring is required by the path package acme/internal.
        assert_eq!(
            direct(&parsed),
            vec![
                "monolog/monolog",
                "phpunit/phpunit",
                "symfony/polyfill-mbstring"
            ]
        );
        assert_eq!(parsed.pins[0].line, 9);
        assert_eq!(
            crate::pipeline::sbom::purl(
                Ecosystem::Packagist,
                "Symfony/Polyfill-Mbstring",
                "v1.29.0"
            ),
            "pkg:composer/symfony/polyfill-mbstring@v1.29.0"
        );
        assert!(composer_lock("{}", &none).is_err());
    }

    #[test]
    fn package_json_exact_versions_and_ranges() {
        let text = r#"{
  "name": "web",
  "dependencies": { "express": "^4.18.2", "lodash": "4.17.21", "left-pad": "=1.3.0", "local": "file:../local" },
  "optionalDependencies": { "fsevents": "2.3.3" },
  "devDependencies": { "jest": "latest", "typescript": "~5.4.0" }
}"#;
        let parsed = package_json(text).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "fsevents@2.3.3=optional",
                "left-pad@1.3.0=required",
                "lodash@4.17.21=required",
            ]
        );
        assert_eq!(parsed.unpinned, 3);
        assert!(!parsed.has_graph);
    }

    #[test]
    fn python_manifests_exact_pins_and_unpinned() {
        let pyproject = r#"[project]
name = "svc"
version = "0.1.0"
dependencies = [
    "flask>=3.0",
    "requests==2.31.0",
    "uvicorn[standard]==0.29.0 ; python_version >= '3.9'",
    "mylib @ https://example.com/mylib-1.0.tar.gz",
]

[project.optional-dependencies]
redis = ["redis==5.0.4"]

[dependency-groups]
dev = ["pytest~=8.1", {include-group = "lint"}]
lint = ["ruff==0.4.4"]

[tool.poetry.dependencies]
python = "^3.10"
django = "4.2.8"
pydantic = "^2.7"
local = {path = "../local"}
celery = {version = "==5.4.0", optional = true}
"#;
        let parsed = python_manifest(pyproject).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "celery@5.4.0=optional",
                "django@4.2.8=required",
                "redis@5.0.4=optional",
                "requests@2.31.0=required",
                "ruff@0.4.4=dev",
                "uvicorn@0.29.0=required",
            ]
        );
        // flask, the URL requirement, pytest and pydantic.
        assert_eq!(parsed.unpinned, 4);
        let line = |name: &str| parsed.pins.iter().find(|p| p.name == name).unwrap().line;
        assert_eq!(line("requests"), 6);
        assert_eq!(line("django"), 20);

        let pipfile = r#"[[source]]
url = "https://pypi.org/simple"
verify_ssl = true
name = "pypi"

[packages]
flask = "==2.3.3"
requests = "*"
mylib = {path = ".", editable = true}
gunicorn = {version = "==21.2.0"}

[dev-packages]
pytest = "==7.4.0"
black = ">=23"

[requires]
python_version = "3.11"
"#;
        let parsed = python_manifest(pipfile).unwrap();
        assert_eq!(
            scopes(&parsed),
            vec![
                "flask@2.3.3=required",
                "gunicorn@21.2.0=required",
                "pytest@7.4.0=dev",
            ]
        );
        assert_eq!(parsed.unpinned, 2);
    }
}
