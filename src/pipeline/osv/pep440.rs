//! PEP 440 version parsing and ordering (the PyPI ecosystem's version semantics), written out
//! here because the ordering rules are short and a dependency for them is not.
//!
//! Accepts the normalised and the permitted alternative spellings: a leading `v`, `-`/`_`/`.`
//! separators, `alpha`/`beta`/`c`/`pre`/`preview` for pre-releases, `rev`/`r` and the implicit
//! `1.0-1` form for post-releases, epochs (`1!2.0`) and local labels (`+ubuntu.1`).

use std::cmp::Ordering;

/// A parsed PEP 440 version. Ordering follows the specification's rules (see [`Ord`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pep440 {
    epoch: u64,
    /// Release segments with trailing zeros removed (`1.0.0` == `1`).
    release: Vec<u64>,
    /// `(kind, number)`: kind 0 = a, 1 = b, 2 = rc.
    pre: Option<(u8, u64)>,
    post: Option<u64>,
    dev: Option<u64>,
    local: Vec<LocalSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LocalSegment {
    Num(u64),
    Text(String),
}

impl Ord for LocalSegment {
    fn cmp(&self, other: &Self) -> Ordering {
        // Numeric local segments sort after alphanumeric ones.
        match (self, other) {
            (LocalSegment::Num(a), LocalSegment::Num(b)) => a.cmp(b),
            (LocalSegment::Text(a), LocalSegment::Text(b)) => a.cmp(b),
            (LocalSegment::Text(_), LocalSegment::Num(_)) => Ordering::Less,
            (LocalSegment::Num(_), LocalSegment::Text(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for LocalSegment {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A bound that sorts below or above every concrete value (the spec's -inf / +inf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Bound<T> {
    Low,
    Value(T),
    High,
}

impl Pep440 {
    /// Parses a version; `None` if it is not a valid PEP 440 version.
    pub fn parse(input: &str) -> Option<Pep440> {
        let s = input.trim().to_ascii_lowercase();
        let s = s.strip_prefix('v').unwrap_or(&s);
        let (public, local) = match s.split_once('+') {
            Some((p, l)) => (p, Some(l)),
            None => (s, None),
        };
        let mut p = Cursor {
            s: public.as_bytes(),
            i: 0,
        };
        let mut epoch = 0;
        if let Some(bang) = public.find('!') {
            epoch = public[..bang].parse().ok()?;
            p.i = bang + 1;
        }
        let mut release = vec![p.number()?];
        while p.peek() == Some(b'.') && p.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            p.i += 1;
            release.push(p.number()?);
        }
        let pre = p.pre_release();
        let post = p.post_release().ok()?;
        let dev = p.dev_release();
        if p.i != p.s.len() {
            return None;
        }
        let local = match local {
            None => vec![],
            Some(l) => parse_local(l)?,
        };
        while release.len() > 1 && release.last() == Some(&0) {
            release.pop();
        }
        if release == [0] {
            // Keep a single zero so `0` and `0.0` compare equal without an empty vector.
        }
        Some(Pep440 {
            epoch,
            release,
            pre,
            post,
            dev,
            local,
        })
    }

    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    /// `(epoch, release, pre, post, dev)` as the specification orders them.
    #[allow(clippy::type_complexity)]
    fn key(&self) -> (u64, &[u64], Bound<(u8, u64)>, Bound<u64>, Bound<u64>) {
        let pre = match (self.pre, self.post, self.dev) {
            // A bare dev release sorts before every pre-release of the same release.
            (None, None, Some(_)) => Bound::Low,
            (None, _, _) => Bound::High,
            (Some(p), _, _) => Bound::Value(p),
        };
        let post = self.post.map_or(Bound::Low, Bound::Value);
        let dev = self.dev.map_or(Bound::High, Bound::Value);
        (self.epoch, &self.release, pre, post, dev)
    }
}

impl Ord for Pep440 {
    fn cmp(&self, other: &Self) -> Ordering {
        let (ea, ra, pa, qa, da) = self.key();
        let (eb, rb, pb, qb, db) = other.key();
        ea.cmp(&eb)
            .then_with(|| compare_release(ra, rb))
            .then(pa.cmp(&pb))
            .then(qa.cmp(&qb))
            .then(da.cmp(&db))
            .then_with(|| self.local.cmp(&other.local))
    }
}

impl PartialOrd for Pep440 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares release tuples as if the shorter were padded with zeros.
fn compare_release(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        match x.cmp(&y) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    Ordering::Equal
}

/// A local label (`ubuntu.1`): segments split at `.`, `-` and `_`, numeric or alphanumeric.
fn parse_local(l: &str) -> Option<Vec<LocalSegment>> {
    if l.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for seg in l.split(['.', '-', '_']) {
        if seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        out.push(match seg.parse::<u64>() {
            Ok(n) if seg.bytes().all(|b| b.is_ascii_digit()) => LocalSegment::Num(n),
            _ => LocalSegment::Text(seg.to_string()),
        });
    }
    Some(out)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.s.get(self.i + ahead).copied()
    }

    fn number(&mut self) -> Option<u64> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if start == self.i {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }

    /// `[-_.]?N?` after a label: the number, or 0 when there is none (the separator is then
    /// left unread).
    fn label_number(&mut self) -> u64 {
        let save_n = self.i;
        self.separator();
        self.number().unwrap_or_else(|| {
            self.i = save_n;
            0
        })
    }

    /// Pre-release: `[-_.]?(a|b|rc|alpha|beta|c|pre|preview)[-_.]?N?`.
    fn pre_release(&mut self) -> Option<(u8, u64)> {
        let save = self.i;
        self.separator();
        let kind = self.word(&[
            ("alpha", 0),
            ("a", 0),
            ("beta", 1),
            ("b", 1),
            ("preview", 2),
            ("pre", 2),
            ("rc", 2),
            ("c", 2),
        ]);
        match kind {
            Some(k) => Some((k, self.label_number())),
            None => {
                self.i = save;
                None
            }
        }
    }

    /// Post-release: `[-_.]?(post|rev|r)[-_.]?N?` or `-N`; `Err` for a number out of range.
    fn post_release(&mut self) -> Result<Option<u64>, ()> {
        let save = self.i;
        if self.peek() == Some(b'-') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
            return self.number().map(Some).ok_or(());
        }
        self.separator();
        if self.word(&[("post", 0), ("rev", 0), ("r", 0)]).is_some() {
            return Ok(Some(self.label_number()));
        }
        self.i = save;
        Ok(None)
    }

    /// Development release: `[-_.]?dev[-_.]?N?`.
    fn dev_release(&mut self) -> Option<u64> {
        let save = self.i;
        self.separator();
        if self.word(&[("dev", 0)]).is_some() {
            return Some(self.label_number());
        }
        self.i = save;
        None
    }

    fn separator(&mut self) {
        if matches!(self.peek(), Some(b'.' | b'-' | b'_')) {
            self.i += 1;
        }
    }

    /// Consumes the first of `words` (longest listed first) found here.
    fn word(&mut self, words: &[(&str, u8)]) -> Option<u8> {
        for (w, k) in words {
            if self.s[self.i..].starts_with(w.as_bytes()) {
                self.i += w.len();
                return Some(*k);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Pep440 {
        Pep440::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
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
        assert!(v("1.0.dev1").is_prerelease());
        assert!(!v("1.0.post1").is_prerelease());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "abc", "1.0+", "1..0", "1.0-", "1.0 beta", "1.0+a/b", "==1.0",
        ] {
            assert!(Pep440::parse(bad).is_none(), "{bad}");
        }
    }
}
