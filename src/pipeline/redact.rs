//! The last line of defence against a secret in clear: masks every token-like value in a line of
//! text that some tool or scanner produced (a snippet, an external tool's message, a log line).
//! Scanners mask what they matched themselves; this pass runs over every message and snippet that
//! goes into the bundle, whatever produced it, so that a second token on the same line, a value
//! quoted in a tool's message ("Possible hardcoded password: '…'") or a credential a rule does not
//! know is not written in clear either.
//!
//! What is masked (each value replaced by as many `*` as it has characters):
//! - the value of an assignment or key/value pair whose name says it holds a secret (`password`,
//!   `secret`, `token`, `api_key`, `auth`, `credential`, …), quoted or not, in code, `.env`,
//!   YAML, INI, JSON or a tool's message;
//! - the credential of `Authorization:`-style headers (`Bearer …`, `Basic …`, `token …`);
//! - the password in URL user-info (`scheme://user:password@host`);
//! - every token-like run (letters, digits and `+/=_-.~`) of 16 characters or more that mixes
//!   letters and digits and looks random (Shannon entropy of at least 3 bits per character);
//! - every credential the built-in secrets scanner's rules recognise on the line (provider
//!   token formats, private key bodies, connection-string and `.netrc` passwords, `curl -u`
//!   credentials, generic assignments), whatever their length;
//! - payment card numbers (13–19 digits, optionally grouped by spaces or dashes, passing the
//!   Luhn check).
//!
//! It errs on the side of masking: a masked commit hash in a snippet costs nothing, a secret in
//! clear in an uploaded report cannot be taken back.

use std::sync::LazyLock;

use regex::Regex;

use crate::pipeline::scanners::secrets::SecretsScanner;

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
fn mask_ranges(text: &str) -> Vec<(usize, usize)> {
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
    ranges.extend(SecretsScanner::shared().secret_spans(text));
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

/// `text` with every secret-looking value replaced by `*` (one per character).
pub fn mask_secrets(text: &str) -> String {
    let ranges = mask_ranges(text);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandit_messages_lose_the_quoted_password() {
        let m = mask_secrets("Possible hardcoded password: 'hunter2hunter2'");
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.starts_with("Possible hardcoded password: '"), "{m}");
    }

    #[test]
    fn unquoted_assignments_in_env_yaml_and_ini_are_masked() {
        for line in [
            "DB_PASSWORD=s3cr3tValue",
            "  password: s3cr3tValue",
            "api_key = s3cr3tValue",
            "export GITHUB_TOKEN=s3cr3tValue",
            r#"{"client_secret": "s3cr3tValue"}"#,
        ] {
            let m = mask_secrets(line);
            assert!(!m.contains("s3cr3tValue"), "{line} -> {m}");
        }
    }

    #[test]
    fn every_token_on_the_line_is_masked() {
        let line = r#"call(key="AKIAIOSFODNN7EXAMPLE", csrf="f3Kq9ZpL2mXv8RtY4wNc")"#;
        let m = mask_secrets(line);
        assert!(!m.contains("AKIAIOSFODNN7EXAMPLE"), "{m}");
        assert!(!m.contains("f3Kq9ZpL2mXv8RtY4wNc"), "{m}");
    }

    #[test]
    fn url_passwords_and_auth_headers_are_masked() {
        let m =
            mask_secrets("postgres://app:pa55word@db:5432/x Authorization: Bearer abcdEFGH1234");
        assert!(!m.contains("pa55word"), "{m}");
        assert!(!m.contains("abcdEFGH1234"), "{m}");
    }

    #[test]
    fn plain_code_and_references_stay_readable() {
        for line in [
            "password = os.environ['DB_PASSWORD']",
            "token: ${GITHUB_TOKEN}",
            "assert response.status_code == 200",
            "from org.example.service import ServiceFactory",
            "see src/pipeline/scanners/secrets.rs line 42",
        ] {
            assert_eq!(mask_secrets(line), line);
        }
    }

    #[test]
    fn rule_formats_shorter_than_a_token_run_and_card_numbers_are_masked() {
        // A Slack webhook path segment, a Telegram bot token and a connection-string password
        // are each below the 16-character random-run heuristic in part, or split by `:`/`/`.
        let bot = format!(
            "{}:AA{}",
            "1234567890", "Zk3Lm9Qw2Er5Ty8Ui1Op4As7Df0Gh6Jk3L"
        );
        let line = format!(
            "notify(bot=\"{bot}\", conn=\"Server=db;User Id=sa;Password=Zq8#pL2v;\", card=\"4111 1111 1111 1111\")"
        );
        let m = mask_secrets(&line);
        assert!(!m.contains("Zk3Lm9Qw2Er5Ty8Ui1Op4As7Df0Gh6Jk3L"), "{m}");
        assert!(!m.contains("Zq8#pL2v"), "{m}");
        assert!(!m.contains("4111 1111 1111 1111"), "{m}");
        assert!(m.starts_with("notify(bot=\""), "{m}");
        // Numbers that fail Luhn (order ids, timestamps) stay readable.
        let ids = "order 1234567890123 at 1700000000000";
        assert_eq!(mask_secrets(ids), ids);
    }

    #[test]
    fn masking_keeps_the_length_in_characters() {
        let line = "secret = \"ünïcødé-välüe-1234\"";
        assert_eq!(mask_secrets(line).chars().count(), line.chars().count());
    }
}
