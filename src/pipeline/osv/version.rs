//! Ecosystem version semantics for matching: semver for crates.io, npm and Go (Go versions
//! carry a `v` prefix and may be pseudo-versions, which are semver pre-releases), PEP 440 for
//! PyPI and `Gem::Version` ordering for RubyGems.

use std::cmp::Ordering;

use super::pep440::{self, Pep440};
use super::rubygems::GemVersion;
use crate::pipeline::sbom::version::parse_semver;
use crate::pipeline::sbom::Ecosystem;

/// A version parsed under its ecosystem's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcoVersion {
    Semver(semver::Version),
    Pep440(Pep440),
    Gem(GemVersion),
}

impl EcoVersion {
    pub fn parse(ecosystem: Ecosystem, text: &str) -> Option<EcoVersion> {
        match ecosystem {
            Ecosystem::Cargo | Ecosystem::Npm | Ecosystem::Go | Ecosystem::Packagist => {
                parse_semver(text).map(EcoVersion::Semver)
            }
            Ecosystem::PyPI => pep440::parse(text).map(EcoVersion::Pep440),
            Ecosystem::RubyGems => GemVersion::parse(text).map(EcoVersion::Gem),
        }
    }

    /// Compares two versions of the same ecosystem; `None` across kinds.
    pub fn compare(&self, other: &EcoVersion) -> Option<Ordering> {
        match (self, other) {
            (EcoVersion::Semver(a), EcoVersion::Semver(b)) => Some(cmp_semver(a, b)),
            (EcoVersion::Pep440(a), EcoVersion::Pep440(b)) => Some(a.cmp(b)),
            (EcoVersion::Gem(a), EcoVersion::Gem(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Semver precedence: build metadata does not take part (semver 2.0.0 §10), unlike the
/// `semver` crate's total order.
fn cmp_semver(a: &semver::Version, b: &semver::Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(e: Ecosystem, a: &str, b: &str) -> Ordering {
        EcoVersion::parse(e, a)
            .unwrap()
            .compare(&EcoVersion::parse(e, b).unwrap())
            .unwrap()
    }

    #[test]
    fn semver_ecosystems() {
        assert_eq!(cmp(Ecosystem::Cargo, "1.10.0", "1.9.9"), Ordering::Greater);
        assert_eq!(cmp(Ecosystem::Npm, "1.0.0-alpha", "1.0.0"), Ordering::Less);
        assert_eq!(
            cmp(Ecosystem::Npm, "1.0.0+build.1", "1.0.0"),
            Ordering::Equal
        );
        assert_eq!(cmp(Ecosystem::Go, "v1.2.3", "1.2.3"), Ordering::Equal);
        assert_eq!(
            cmp(Ecosystem::Go, "v0.0.0-20210226172049-e18ecbb05110", "0.0.1"),
            Ordering::Less,
            "pseudo-versions are pre-releases"
        );
        assert_eq!(
            cmp(Ecosystem::Go, "v2.0.0+incompatible", "v1.9.0"),
            Ordering::Greater
        );
        assert_eq!(cmp(Ecosystem::Cargo, "1.2", "1.2.0"), Ordering::Equal);
        assert!(EcoVersion::parse(Ecosystem::Cargo, "one").is_none());
        assert!(EcoVersion::parse(Ecosystem::Npm, "1.2.3.4").is_none());
    }

    #[test]
    fn other_ecosystems_use_their_own_rules() {
        // Lexically "2.10" < "2.9"; PEP 440 knows better.
        assert_eq!(cmp(Ecosystem::PyPI, "2.10", "2.9"), Ordering::Greater);
        assert_eq!(cmp(Ecosystem::PyPI, "2.11.3", "2.11.3.0"), Ordering::Equal);
        assert_eq!(cmp(Ecosystem::PyPI, "1.0rc1", "1.0"), Ordering::Less);
        assert_eq!(
            cmp(Ecosystem::RubyGems, "6.1.0.rc1", "6.1.0"),
            Ordering::Less
        );
        assert_eq!(
            cmp(Ecosystem::RubyGems, "1.13.10", "1.13.9"),
            Ordering::Greater
        );
        let a = EcoVersion::parse(Ecosystem::PyPI, "1.0").unwrap();
        let b = EcoVersion::parse(Ecosystem::RubyGems, "1.0").unwrap();
        assert_eq!(a.compare(&b), None);
    }
}
