//! PEP 440 versions (the PyPI ecosystem's version semantics), parsed and ordered by `pep440_rs`,
//! the parser uv was built on (docs/ARCHITECTURE.md, "Crates: decisions"). The tests below pin
//! what the matcher relies on: the specification's ordering example, the permitted alternative
//! spellings (a leading `v`, `-`/`_`/`.` separators, `alpha`/`beta`/`c`/`pre`/`preview`,
//! `rev`/`r` and the implicit `1.0-1` post-release, epochs, local labels), and refusals.

/// A parsed PEP 440 version; `Ord` is the specification's order, and `1.0 == 1.0.0`.
pub use pep440_rs::Version as Pep440;

/// Parses a version (surrounding white space allowed); `None` if it is not valid PEP 440.
pub fn parse(input: &str) -> Option<Pep440> {
    input.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    fn v(s: &str) -> Pep440 {
        parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn specification_order() {
        // The ordering example of PEP 440, ascending.
        let ordered = [
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert!(v("1!0.1") > v("2.0"), "epochs dominate");
    }

    #[test]
    fn normalisation_and_equivalence() {
        for (a, b) in [
            ("1.0", "1.0.0"),
            ("1.0", "1"),
            ("v1.2", "1.2"),
            ("1.0alpha1", "1.0a1"),
            ("1.0-beta.2", "1.0b2"),
            ("1.0c1", "1.0rc1"),
            ("1.0.preview-3", "1.0rc3"),
            ("1.0-1", "1.0.post1"),
            ("1.0.rev1", "1.0.post1"),
            ("1.0r", "1.0.post0"),
            ("1.0a", "1.0a0"),
            ("1.0.DEV", "1.0.dev0"),
            ("1.0_RC_1", "1.0rc1"),
        ] {
            assert_eq!(v(a).cmp(&v(b)), Ordering::Equal, "{a} == {b}");
        }
        assert!(v("1.10") > v("1.9"), "numeric, not lexical");
        assert!(v("2.11.3") > v("2.11.2"));
        assert!(v("1.0.dev1").any_prerelease());
        assert!(!v("1.0.post1").any_prerelease());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "abc", "1.0+", "1..0", "1.0-", "1.0 beta", "1.0+a/b", "==1.0",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
