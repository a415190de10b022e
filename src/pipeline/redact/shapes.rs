//! Secret shapes that need no rule table: values of sensitive assignments, auth headers, URL
//! passwords, random-looking token runs and Luhn-valid card numbers; and the masking of byte
//! ranges. The secrets scanner uses this for the text around its findings, and
//! [`super::mask_secrets`] adds the scanner's rule matches to it, so this file imports neither.

use std::sync::LazyLock;

use regex::Regex;

/// `name = value`, `name: value`, `"name": "value"`, `name => value`, `name := value`: the value
/// (group `v`) of a name that says it holds a secret.
static SENSITIVE_ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i-u:pass(?:word|wd|phrase)?|pwd|secret|token|api[_.-]?key|apikey|access[_.-]?key|private[_.-]?key|auth|credential|client[_.-]?secret|session[_.-]?key|signature|cookie|bearer)[\w.-]*["']?\s*(?:[:=]|=>|:=)\s*(?P<v>"[^"\r\n]*"|'[^'\r\n]*'|`[^`\r\n]*`|[^\s,;'"`)\]}]+)"#,
    )
    .expect("sensitive assignment pattern")
});

/// `Authorization: Bearer <value>`, `Basic <value>`, `token <value>`.
static AUTH_SCHEME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\b(?i-u:bearer|basic|token|digest)\s+(?P<v>[A-Za-z0-9+/=_\-.~:]{8,})"#)
        .expect("auth scheme pattern")
});

/// The password of URL user-info.
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'"]*:(?P<v>[^\s@/'"]+)@"#)
        .expect("url password pattern")
});

/// Runs of token characters long enough to be a credential.
static TOKEN_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"[A-Za-z0-9+/=_\-.~]{16,}"#).expect("token run pattern"));

/// Runs of 13–19 digits, optionally grouped by single spaces or dashes: card number candidates.
static CARD_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("card number pattern"));

/// The Luhn checksum of payment card numbers.
fn luhn_ok(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Values that are not secrets even where a sensitive name precedes them.
fn is_reference_or_empty(value: &str) -> bool {
    let quoted = value.starts_with(['"', '\'', '`']);
    let v = value.trim_matches(|c| c == '"' || c == '\'' || c == '`');
    // Unquoted code that reads the value from somewhere else: a call, an index, an attribute.
    let code_reference = !quoted
        && (v.contains(['(', '['])
            || (v.contains('.')
                && v.split('.')
                    .all(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_'))
                && v.starts_with(|c: char| c.is_alphabetic() || c == '_')));
    v.is_empty()
        || code_reference
        || v.starts_with('$')
        || v.starts_with('%')
        || v.starts_with('<')
        || v.starts_with("${")
        || v.starts_with("$(")
        || v.starts_with("{{")
        || v.eq_ignore_ascii_case("null")
        || v.eq_ignore_ascii_case("none")
        || v.eq_ignore_ascii_case("true")
        || v.eq_ignore_ascii_case("false")
        || v.chars().all(|c| c == '*')
}

/// Shannon entropy in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes() {
        counts[b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether a run of token characters looks like a random credential rather than a word, a path
/// or an identifier.
fn looks_random(run: &str) -> bool {
    let core = run.trim_matches(|c| c == '.' || c == '-' || c == '_' || c == '=');
    if core.len() < 16 {
        return false;
    }
    let has_digit = core.bytes().any(|b| b.is_ascii_digit());
    let has_letter = core.bytes().any(|b| b.is_ascii_alphabetic());
    if !(has_digit && has_letter) {
        return false;
    }
    // Dotted or dashed identifiers made of words (`org.example.Service2Factory`,
    // `my-service-v2-deployment`) are not credentials: every segment is short.
    let segments: Vec<&str> = core.split(['.', '-', '_', '/']).collect();
    if segments.len() > 2 && segments.iter().all(|s| s.len() < 10) {
        return false;
    }
    entropy(core) >= 3.0
}

/// Marks the byte ranges to mask in `text`.
pub fn generic_spans(text: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    for re in [&*SENSITIVE_ASSIGNMENT, &*AUTH_SCHEME, &*URL_PASSWORD] {
        for caps in re.captures_iter(text) {
            if let Some(v) = caps.name("v") {
                if is_reference_or_empty(v.as_str()) {
                    continue;
                }
                let s = v.as_str();
                // Keep the quotes, mask what they hold.
                let (start, end) = match s.chars().next() {
                    Some(q @ ('"' | '\'' | '`')) if s.len() >= 2 && s.ends_with(q) => {
                        (v.start() + 1, v.end() - 1)
                    }
                    _ => (v.start(), v.end()),
                };
                if end > start {
                    ranges.push((start, end));
                }
            }
        }
    }
    for m in TOKEN_RUN.find_iter(text) {
        if looks_random(m.as_str()) {
            ranges.push((m.start(), m.end()));
        }
    }
    for m in CARD_NUMBER.find_iter(text) {
        let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
        // A run of one digit (`0000 0000 0000 0000`) passes Luhn but is filler.
        if (13..=19).contains(&digits.len())
            && luhn_ok(&digits)
            && digits.iter().any(|d| *d != digits[0])
        {
            ranges.push((m.start(), m.end()));
        }
    }
    ranges.sort_unstable();
    ranges
}

/// `text` with every byte range of `ranges` replaced by `*` (one per character).
pub fn apply(text: &str, mut ranges: Vec<(usize, usize)>) -> String {
    ranges.sort_unstable();
    if ranges.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for (start, end) in ranges {
        let start = start.max(pos);
        if start >= end {
            continue;
        }
        out.push_str(&text[pos..start]);
        out.extend(text[start..end].chars().map(|_| '*'));
        pos = end;
    }
    out.push_str(&text[pos..]);
    out
}
