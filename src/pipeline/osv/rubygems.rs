//! RubyGems version ordering (`Gem::Version#<=>`), written out here because it is twenty lines
//! of Ruby: a version is split into numeric and alphabetic segments; any alphabetic segment
//! makes it a pre-release that sorts before the release; trailing zeros do not count.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Num(u64),
    Text(String),
}

/// A parsed gem version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GemVersion {
    /// `canonical_segments`: trailing zeros removed from the numeric and the pre-release parts.
    segments: Vec<Segment>,
}

impl GemVersion {
    /// Parses a version the way `Gem::Version.new` does (`-` means `.pre.`); `None` for strings
    /// RubyGems would reject.
    pub fn parse(input: &str) -> Option<GemVersion> {
        let s = input.trim();
        if s.is_empty()
            || !s.as_bytes()[0].is_ascii_digit()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return None;
        }
        let s = s.replace('-', ".pre.");
        let mut raw = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let start = i;
            if bytes[i].is_ascii_digit() {
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                raw.push(Segment::Num(s[start..i].parse().ok()?));
            } else if bytes[i].is_ascii_alphabetic() {
                while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                    i += 1;
                }
                raw.push(Segment::Text(s[start..i].to_string()));
            } else {
                i += 1;
            }
        }
        let split = raw
            .iter()
            .position(|s| matches!(s, Segment::Text(_)))
            .unwrap_or(raw.len());
        let (numeric, pre) = raw.split_at(split);
        let trim = |part: &[Segment]| -> Vec<Segment> {
            let mut v = part.to_vec();
            while v.last() == Some(&Segment::Num(0)) {
                v.pop();
            }
            v
        };
        let mut segments = trim(numeric);
        segments.extend(trim(pre));
        Some(GemVersion { segments })
    }

    pub fn is_prerelease(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Text(_)))
    }
}

impl Ord for GemVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.segments.len().max(other.segments.len());
        let zero = Segment::Num(0);
        for i in 0..n {
            let a = self.segments.get(i).unwrap_or(&zero);
            let b = other.segments.get(i).unwrap_or(&zero);
            let ord = match (a, b) {
                (Segment::Num(x), Segment::Num(y)) => x.cmp(y),
                (Segment::Text(x), Segment::Text(y)) => x.cmp(y),
                (Segment::Text(_), Segment::Num(_)) => Ordering::Less,
                (Segment::Num(_), Segment::Text(_)) => Ordering::Greater,
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for GemVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> GemVersion {
        GemVersion::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn ordering_matches_rubygems() {
        // Cases from RubyGems' own test_gem_version.rb.
        let ordered = [
            "0.9", "1.0.a.2", "1.0.a10", "1.0.b1", "1.0.rc1", "1.0", "1.0.1", "1.2.b1", "1.2",
            "1.9.3", "1.10", "5.a", "5.x", "5",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert!(v("1.0.a10") > v("1.0.a9"), "numbers compare numerically");
    }

    #[test]
    fn trailing_zeros_and_dashes() {
        assert_eq!(v("1.0").cmp(&v("1")), Ordering::Equal);
        assert_eq!(v("1.0.0").cmp(&v("1")), Ordering::Equal);
        assert_eq!(v("1.0.b1").cmp(&v("1.0.b.1")), Ordering::Equal);
        assert_eq!(v("1.0-beta").cmp(&v("1.0.pre.beta")), Ordering::Equal);
        assert!(v("1.0-beta") < v("1.0"));
        assert!(v("1.0.rc1").is_prerelease());
        assert!(!v("1.0.1").is_prerelease());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "junk", "1.0 2", "1.0+local", "-1"] {
            assert!(GemVersion::parse(bad).is_none(), "{bad}");
        }
    }
}
