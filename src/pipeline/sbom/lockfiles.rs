//! Lockfile and manifest parsers: each turns one file's text into the packages it pins, with the
//! line of each entry. Only exact pins are reported (a range in a requirements file says nothing
//! about what is installed); local, path, git and workspace entries are not third-party packages
//! from the ecosystem's registry and are left out.

use anyhow::{bail, Context};
use serde::Deserialize;

use super::{Ecosystem, Pinned};

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
            n if n.starts_with("requirements") && n.ends_with(".txt") => Kind::Requirements,
            _ => return None,
        })
    }
}

pub fn parse(kind: Kind, text: &str) -> anyhow::Result<Vec<Pinned>> {
    match kind {
        Kind::CargoLock => cargo_lock(text),
        Kind::PackageLock => package_lock(text),
        Kind::YarnLock => Ok(yarn_lock(text)),
        Kind::Requirements => Ok(requirements(text)),
        Kind::PoetryLock => poetry_lock(text),
        Kind::PipfileLock => pipfile_lock(text),
        Kind::GoMod => Ok(go_mod(text)),
        Kind::GoSum => Ok(go_sum(text)),
        Kind::GemfileLock => Ok(gemfile_lock(text)),
    }
}

fn pin(ecosystem: Ecosystem, name: &str, version: &str, line: u32) -> Pinned {
    Pinned {
        ecosystem,
        name: name.to_string(),
        version: version.to_string(),
        line,
    }
}

/// The 1-based line where each JSON object key first appears at the start of a line
/// (`"key": ...`), for pointing findings at lockfile entries. serde_json does not keep positions.
fn key_lines(text: &str) -> std::collections::HashMap<&str, u32> {
    let mut out = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix('"') {
            if let Some(end) = rest.find("\":") {
                out.entry(&rest[..end]).or_insert((i + 1) as u32);
            }
        }
    }
    out
}

/// 1-based line of every `[[package]]` header, in order (TOML lockfiles).
fn package_table_lines(text: &str) -> Vec<u32> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[package]]")
        .map(|(i, _)| (i + 1) as u32)
        .collect()
}

#[derive(Deserialize)]
struct TomlLock {
    #[serde(default)]
    package: Vec<TomlPackage>,
}

#[derive(Deserialize)]
struct TomlPackage {
    name: String,
    version: String,
    /// Cargo: `registry+https://...` for registry crates; absent for workspace members.
    #[serde(default)]
    source: Option<toml::Value>,
}

fn cargo_lock(text: &str) -> anyhow::Result<Vec<Pinned>> {
    let lock: TomlLock = toml::from_str(text).context("invalid TOML")?;
    let lines = package_table_lines(text);
    Ok(lock
        .package
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.source
                .as_ref()
                .and_then(|s| s.as_str())
                .is_some_and(|s| s.starts_with("registry+") || s.starts_with("sparse+"))
        })
        .map(|(i, p)| {
            pin(
                Ecosystem::Cargo,
                &p.name,
                &p.version,
                lines.get(i).copied().unwrap_or(1),
            )
        })
        .collect())
}

fn poetry_lock(text: &str) -> anyhow::Result<Vec<Pinned>> {
    let lock: TomlLock = toml::from_str(text).context("invalid TOML")?;
    let lines = package_table_lines(text);
    Ok(lock
        .package
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            // `[package.source] type = "git" | "directory" | "file" | "url"` marks non-registry
            // packages; "legacy" is a private package index and still a PyPI-style release.
            let kind = p
                .source
                .as_ref()
                .and_then(|s| s.get("type"))
                .and_then(|t| t.as_str());
            matches!(kind, None | Some("legacy"))
        })
        .map(|(i, p)| {
            pin(
                Ecosystem::PyPI,
                &p.name,
                &p.version,
                lines.get(i).copied().unwrap_or(1),
            )
        })
        .collect())
}

fn package_lock(text: &str) -> anyhow::Result<Vec<Pinned>> {
    let doc: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
    let mut out = Vec::new();
    let lines = key_lines(text);
    if let Some(packages) = doc.get("packages").and_then(|p| p.as_object()) {
        // lockfileVersion 2 and 3: keys are install paths.
        for (key, entry) in packages {
            let Some(idx) = key.rfind("node_modules/") else {
                continue; // "" is the root project
            };
            if entry.get("link").and_then(|l| l.as_bool()) == Some(true) {
                continue;
            }
            let name = entry
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or(&key[idx + "node_modules/".len()..]);
            let Some(version) = entry.get("version").and_then(|v| v.as_str()) else {
                continue;
            };
            if !is_registry_npm(entry, version) {
                continue;
            }
            let line = lines.get(key.as_str()).copied().unwrap_or(1);
            out.push(pin(Ecosystem::Npm, name, version, line));
        }
    } else if let Some(deps) = doc.get("dependencies").and_then(|d| d.as_object()) {
        // lockfileVersion 1: nested `dependencies`.
        fn walk(
            lines: &std::collections::HashMap<&str, u32>,
            deps: &serde_json::Map<String, serde_json::Value>,
            out: &mut Vec<Pinned>,
        ) {
            for (name, entry) in deps {
                if let Some(version) = entry.get("version").and_then(|v| v.as_str()) {
                    if is_registry_npm(entry, version) {
                        let line = lines.get(name.as_str()).copied().unwrap_or(1);
                        out.push(pin(Ecosystem::Npm, name, version, line));
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
    Ok(out)
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

fn requirements(text: &str) -> Vec<Pinned> {
    let mut out = Vec::new();
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
        let Some(eq) = entry.find("==") else { continue };
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
        }
    }
    out
}

fn pipfile_lock(text: &str) -> anyhow::Result<Vec<Pinned>> {
    let doc: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
    let mut out = Vec::new();
    let lines = key_lines(text);
    let mut any = false;
    for section in ["default", "develop"] {
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
            out.push(pin(
                Ecosystem::PyPI,
                name,
                version.trim_start_matches('='),
                line,
            ));
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

fn go_sum(text: &str) -> Vec<Pinned> {
    // go.sum lists every version the build ever considered; the selected one is the highest.
    let mut best: std::collections::BTreeMap<String, (String, u32)> = Default::default();
    for (i, raw) in text.lines().enumerate() {
        let mut parts = raw.split_whitespace();
        let (Some(module), Some(version)) = (parts.next(), parts.next()) else {
            continue;
        };
        let version = version.trim_end_matches("/go.mod");
        if !version.starts_with('v') {
            continue;
        }
        let newer = match best.get(module) {
            None => true,
            Some((current, _)) => {
                match (
                    crate::pipeline::osv::version::parse_semver(version),
                    crate::pipeline::osv::version::parse_semver(current),
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

fn gemfile_lock(text: &str) -> Vec<Pinned> {
    let mut out = Vec::new();
    let mut section = "";
    let mut in_specs = false;
    for (i, raw) in text.lines().enumerate() {
        if !raw.starts_with(' ') && !raw.trim().is_empty() {
            section = raw.trim();
            in_specs = false;
            continue;
        }
        if raw.trim() == "specs:" {
            in_specs = true;
            continue;
        }
        // Only gems from a gem server; GIT and PATH sections are not registry releases.
        if section != "GEM" || !in_specs {
            continue;
        }
        // `    name (version[-platform])`; six spaces are the gem's own dependencies.
        if raw.starts_with("    ") && !raw.starts_with("     ") {
            let entry = raw.trim();
            let Some((name, rest)) = entry.split_once(" (") else {
                continue;
            };
            let version = rest.trim_end_matches(')');
            let version = version.split('-').next().unwrap_or(version);
            if !name.is_empty() && version.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                out.push(pin(Ecosystem::RubyGems, name, version, (i + 1) as u32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
        assert_eq!(names(&cargo_lock(text).unwrap()), vec!["smallvec@1.6.0:7"]);
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
            sorted(names(&package_lock(v3).unwrap())),
            vec![
                "@babel/core@7.0.0:7",
                "lodash@4.17.20:6",
                "minimist@0.0.8:8"
            ]
        );
        let v1 = r#"{"lockfileVersion": 1, "dependencies": {"a": {"version": "1.0.0", "dependencies": {"b": {"version": "2.0.0"}}}}}"#;
        assert_eq!(
            names(&package_lock(v1).unwrap()),
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
            names(&requirements(text)),
            vec![
                "Django@3.2.0:2",
                "uvicorn@0.20.0:6",
                "cryptography@41.0.0:7",
                "foo@1.0.0:10"
            ]
        );
    }

    #[test]
    fn poetry_and_pipfile() {
        let poetry = r#"[[package]]
name = "jinja2"
version = "2.10"
description = "x"

[[package]]
name = "mylib"
version = "0.1.0"

[package.source]
type = "directory"
url = "../mylib"
"#;
        assert_eq!(names(&poetry_lock(poetry).unwrap()), vec!["jinja2@2.10:1"]);
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
        assert_eq!(
            names(&pipfile_lock(pipfile).unwrap()),
            vec!["flask@0.12.2:4", "pytest@7.0.0:8"]
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
        let s = "github.com/a/b v1.0.0 h1:x=\ngithub.com/a/b v1.0.0/go.mod h1:y=\ngithub.com/a/b v1.2.0/go.mod h1:z=\n";
        assert_eq!(names(&go_sum(s)), vec!["github.com/a/b@v1.2.0:3"]);
    }

    #[test]
    fn gemfile_lock_gem_section_only() {
        let text = "GIT\n  remote: https://example.com/x.git\n  specs:\n    mygem (0.1.0)\n\nGEM\n  remote: https://rubygems.org/\n  specs:\n    actionpack (6.1.0)\n      rack (~> 2.0)\n    nokogiri (1.13.10-x86_64-linux)\n      racc (~> 1.4)\n    rack (2.2.3)\n\nPLATFORMS\n  ruby\n\nDEPENDENCIES\n  actionpack\n";
        assert_eq!(
            names(&gemfile_lock(text)),
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
}
