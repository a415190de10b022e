//! Lenient semver parsing, shared by the lockfile parsers (which compare a pinned version with
//! the current one) and the OSV matcher (semver ecosystems and OSV's SEMVER ranges).

/// Parses a semver version leniently: a leading `v` or `=` is dropped and a missing minor or
/// patch number counts as 0 (`1.2` is `1.2.0`), as OSV's SEMVER ranges allow.
pub fn parse_semver(text: &str) -> Option<semver::Version> {
    let t = text.trim().trim_start_matches(['v', '=']);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    // Pad the numeric core: split off pre-release/build first.
    let cut = t.find(['-', '+']).unwrap_or(t.len());
    let (core, rest) = t.split_at(cut);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    semver::Version::parse(&format!("{padded}{rest}")).ok()
}
