//! What every lockfile parser shares: the way to read a file beside the lockfile, a pinned
//! package, and the lines of entries (serde keeps no positions). Both parser files use it, so
//! neither needs the other's helpers.

use super::{Ecosystem, Pinned, Scope};

/// Reads a file beside the lockfile (`pyproject.toml` beside `poetry.lock`, `composer.json`
/// beside `composer.lock`), if there is one.
pub type Sibling<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn pin(ecosystem: Ecosystem, name: &str, version: &str, line: u32) -> Pinned {
    Pinned {
        ecosystem,
        name: name.to_string(),
        version: version.to_string(),
        line,
        scope: Scope::Required,
    }
}

/// The 1-based line where each JSON object key first appears at the start of a line
/// (`"key": ...`), for pointing findings at lockfile entries. serde_json does not keep positions.
pub(super) fn key_lines(text: &str) -> std::collections::HashMap<&str, u32> {
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
pub(super) fn package_table_lines(text: &str) -> Vec<u32> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[package]]")
        .map(|(i, _)| (i + 1) as u32)
        .collect()
}
