//! Validation of candidate matches: placeholders, entropy, checksums and structure.

use std::collections::HashMap;

use serde_json::Value;

/// Shannon entropy in bits per character, over the characters of `s`.
pub(super) fn shannon_entropy(s: &str) -> f64 {
    let mut counts: HashMap<char, usize> = HashMap::new();
    let mut total = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    counts
        .values()
        .map(|&n| {
            let p = n as f64 / total;
            -p * p.log2()
        })
        .sum()
}

pub(super) fn has_letter_and_digit(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_alphabetic()) && s.chars().any(|c| c.is_ascii_digit())
}

/// Documentation and templates stand in for secrets with these; real keys essentially never
/// contain them.
pub(super) fn is_placeholder(value: &str) -> bool {
    const MARKERS: &[&str] = &[
        "example",
        "changeme",
        "change_me",
        "change-me",
        "placeholder",
        "dummy",
        "redacted",
        "your_",
        "your-",
        "yourpass",
        "****",
        "...",
        "${",
        "{{",
        "<",
        ">",
        "%s",
        "%(",
    ];
    let lower = value.to_ascii_lowercase();
    if MARKERS.iter().any(|m| lower.contains(m)) {
        return true;
    }
    // Filler is typed in one case (`xxxx`, `XXXX`); `xXxX` turns up in random tokens.
    if value.contains("xxxx") || value.contains("XXXX") {
        return true;
    }
    let mut chars = value.chars();
    match chars.next() {
        Some(first) => chars.all(|c| c == first),
        None => true,
    }
}

/// A fixed-prefix token whose random part is filler (`ghp_xxxx…`, `AKIA0000…`) is documentation.
pub(super) fn token_looks_real(value: &str) -> bool {
    !is_placeholder(value) && shannon_entropy(value) >= 3.0
}

/// Length of the `-----BEGIN ... -----` header at the start of an armored block.
pub(super) fn armor_header_len(block: &[u8]) -> usize {
    const DASHES: &[u8] = b"-----";
    block
        .windows(DASHES.len())
        .enumerate()
        .skip(DASHES.len())
        .find(|(_, w)| *w == DASHES)
        .map_or(block.len(), |(i, _)| i + DASHES.len())
}

/// The body of a real key has hundreds of base64 characters; documentation has `...` or a few
/// words. Header lines (`Proc-Type:`, `Version:`) add a little noise, well below the threshold.
pub(super) fn armor_body_is_real(block: &[u8]) -> bool {
    let body_start = armor_header_len(block);
    let body = &block[body_start..];
    let body_end = body
        .windows(b"-----END".len())
        .position(|w| w == b"-----END")
        .unwrap_or(body.len());
    let body = &body[..body_end];
    if body.windows(3).any(|w| w == b"...") {
        return false;
    }
    body.iter()
        .filter(|b| b.is_ascii_alphanumeric() || **b == b'+' || **b == b'/')
        .count()
        >= 64
}

/// The body of a key file: at least 64 base64 characters, not elided with `...`.
pub(super) fn key_body_is_real(body: &[u8]) -> bool {
    !body.windows(3).any(|w| w == b"...")
        && body
            .iter()
            .filter(|b| b.is_ascii_alphanumeric() || **b == b'+' || **b == b'/')
            .count()
            >= 64
}

/// Three base64url segments; the header must decode to a JSON object and the payload must be
/// valid base64url.
pub(super) fn jwt_is_valid(value: &[u8]) -> bool {
    let parts: Vec<&[u8]> = value.split(|b| *b == b'.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return false;
    };
    if signature.is_empty() || base64url_decode(payload).is_none() {
        return false;
    }
    base64url_decode(header)
        .and_then(|h| serde_json::from_slice::<serde_json::Map<String, Value>>(&h).ok())
        .is_some()
}

/// Unpadded base64url (RFC 4648 §5). `None` on any character outside the alphabet or an
/// impossible length.
pub(super) fn base64url_decode(input: &[u8]) -> Option<Vec<u8>> {
    fn sextet(b: u8) -> Option<u32> {
        match b {
            b'A'..=b'Z' => Some(u32::from(b - b'A')),
            b'a'..=b'z' => Some(u32::from(b - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(b - b'0') + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let input = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for chunk in input.chunks(4) {
        let mut acc = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            acc |= sextet(*b)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Passwords in example URLs: words (`password`), templates (`${DB_PASS}`, `<password>`,
/// `{{pass}}`, `%(password)s`) and masks (`***`, `xxx`).
pub(super) fn is_url_password_placeholder(password: &str) -> bool {
    const WORDS: &[&str] = &[
        "password", "passwd", "pass", "pwd", "pw", "secret", "changeme", "token",
    ];
    let lower = password.to_ascii_lowercase();
    WORDS.contains(&lower.as_str())
        || lower.starts_with('$')
        || lower.starts_with('{')
        || lower.starts_with('[')
        || lower.starts_with(':')
        || is_placeholder(password)
}

/// What the name of an assignment says its value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameKind {
    /// `password`, `passwd`, `pwd`, `pass`, `passphrase`: a human-chosen word is enough.
    Password,
    /// `secret`, `token`, `api_key`, `credential`, `auth`, `…_key`: must look machine-generated.
    Secret,
}

/// The words of an identifier: split at `_ . - :` and at lower-to-upper case changes, lowercased.
fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Last words that say the value describes or locates the secret rather than being it.
const NOT_THE_VALUE: &[&str] = &[
    "name",
    "names",
    "ref",
    "refs",
    "id",
    "ids",
    "url",
    "uri",
    "urls",
    "endpoint",
    "path",
    "file",
    "files",
    "dir",
    "type",
    "types",
    "length",
    "len",
    "size",
    "count",
    "ttl",
    "expiry",
    "expires",
    "expiration",
    "timeout",
    "header",
    "prefix",
    "suffix",
    "format",
    "policy",
    "mode",
    "enabled",
    "enable",
    "disabled",
    "version",
    "field",
    "fields",
    "label",
    "hint",
    "placeholder",
    "pattern",
    "regex",
    "validator",
    "validation",
    "error",
    "errors",
    "message",
    "msg",
    "input",
    "param",
    "method",
    "provider",
    "algorithm",
    "alg",
    "hash",
    "min",
    "max",
    "store",
    "storage",
    "manager",
    "service",
    "helper",
    "class",
    "handler",
    "option",
    "options",
    "required",
    "env",
    "var",
    "variable",
    "location",
    "region",
    "host",
    "port",
    "user",
    "username",
    "login",
    "email",
    "issuer",
    "audience",
    "scope",
    "scopes",
    "rotation",
    "generator",
    "template",
    "strength",
    "reset",
    "changed",
    "confirmation",
    "visible",
    "show",
    "hide",
    "toggle",
    "icon",
    "text",
    "title",
    "description",
    "help",
    "schema",
    "spec",
    "mount",
    "volume",
    "length",
    "lifetime",
    "age",
    "source",
    "arn",
    "keyref",
    "secretref",
    "dialog",
    "form",
    "page",
    "view",
    "screen",
    "button",
    "link",
    "key_id",
    "fingerprint",
    "kind",
    "status",
    "state",
    "policy",
    "rules",
    "rule",
    "level",
    "duration",
    "interval",
    "retries",
    "limit",
    "usage",
    "callback",
    "redirect",
    "flow",
    "grant",
    "response",
    "request",
    "digest",
    "salt",
    "iterations",
    "rounds",
    "cost",
    "encoding",
    "charset",
    "attribute",
    "attr",
    "column",
    "col",
    "table",
    "index",
    "key_name",
    "path_prefix",
];

/// Words that make the whole name something else.
const NOT_SECRET: &[&str] = &[
    "public",
    "publishable",
    "pub",
    "pubkey",
    "author",
    "authors",
    "authored",
    "authority",
    "monkey",
    "turkey",
    "hockey",
    "keyboard",
    "keystroke",
    "keystrokes",
    "keypress",
    "keydown",
    "keyup",
    "tokenizer",
    "tokenize",
    "tokenized",
    "tokens",
    "csrf",
    "xsrf",
    "primary",
    "foreign",
    "sort",
    "partition",
    "cache",
    "idempotency",
    "lookup",
    "i18n",
    "translation",
    "unique",
    "composite",
    "hotkey",
    "shortcut",
    "keyframe",
    "keyframes",
    "keyword",
    "keywords",
    "keychain",
    "keystore",
    "keyring",
    "passenger",
    "passes",
    "passed",
    "passing",
    "bypass",
    "compass",
    "passport",
    "passthrough",
    "pass_through",
    "ssh",
    "gpg",
    "pgp",
    "license",
    "websocket",
    "nonce",
    "sec",
    "hashed",
    "hash",
    "sha",
    "sha1",
    "sha256",
    "sha512",
    "md5",
    "digest",
    "checksum",
    "fingerprint",
];

/// Whether `name` (the assigned name of a generic match) holds a secret, and which kind.
/// `None` for names that merely mention one: `author`, `public_key`, `password_url`,
/// `token_endpoint`, `secretName` (a reference to a Kubernetes secret), `max_tokens`, …
pub(super) fn classify_name(name: &str) -> Option<NameKind> {
    let words = name_words(name);
    let last = words.last()?;
    if NOT_THE_VALUE.contains(&last.as_str())
        || words.iter().any(|w| NOT_SECRET.contains(&w.as_str()))
    {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    if lower.contains("passw")
        || lower.contains("pwd")
        || lower.contains("passphrase")
        || words.iter().any(|w| w == "pass" || w == "pw")
    {
        return Some(NameKind::Password);
    }
    let secretish = words.iter().any(|w| {
        matches!(
            w.as_str(),
            "secret"
                | "secrets"
                | "token"
                | "apikey"
                | "credential"
                | "credentials"
                | "auth"
                | "authtoken"
                | "authkey"
                | "accesskey"
                | "secretkey"
                | "privatekey"
                | "key"
                | "bearer"
                | "authorization"
                | "clientsecret"
                | "apitoken"
                | "accesstoken"
        )
    }) || lower.contains("secret")
        || lower.contains("token")
        || lower.contains("apikey");
    secretish.then_some(NameKind::Secret)
}

const PLACEHOLDER_STARTS: &[&str] = &[
    "$", "%", "{{", "<", "#{", "@", "!", "&", "*", "(", "[", "~/", "/", "./", "../", "\\",
];

const PLACEHOLDER_CONTAINS: &[&str] = &[
    "${",
    "{{",
    "}}",
    "%(",
    "$(",
    "#{",
    "env(",
    "env[",
    "env.",
    "os.environ",
    "getenv",
    "process.env",
    "secrets.",
    "vault:",
    "ref+",
    "arn:aws:",
    "{{resolve:",
    "://",
    "example",
    "changeme",
    "change_me",
    "change-me",
    "placeholder",
    "dummy",
    "redacted",
    "your",
    "sample",
    "fake",
    "test",
    "xxxx",
    "****",
    "...",
    "<",
    ">",
    "%s",
    "replace",
    "insert",
    "enter_",
    "enter-",
    "put_",
    "todo",
    "fixme",
    "_here",
    "-here",
    "password",
    "passwd",
    "secret",
    "mock",
    "demo",
    "invalid",
    "notreal",
    "not_real",
    "not-real",
    "lorem",
    "ipsum",
    "foobar",
    "qwerty",
    "letmein",
    "abcdef",
    "123456",
    "000000",
    "string",
];

const PLACEHOLDER_WORDS: &[&str] = &[
    "null",
    "none",
    "nil",
    "true",
    "false",
    "yes",
    "no",
    "on",
    "off",
    "undefined",
    "empty",
    "required",
    "optional",
    "string",
    "str",
    "text",
    "token",
    "pass",
    "pwd",
    "default",
    "hidden",
    "masked",
    "notset",
    "not_set",
    "unset",
    "tbd",
    "value",
    "foo",
    "bar",
    "admin",
    "root",
    "guest",
    "user",
    "postgres",
    "mysql",
    "redis",
    "rabbitmq",
    "guest",
    "auto",
    "random",
    "generated",
    "secure",
    "encrypted",
    "base64",
    "bytes",
    "any",
    "object",
];

const FILE_EXTENSIONS: &[&str] = &[
    ".pem",
    ".key",
    ".crt",
    ".cer",
    ".der",
    ".txt",
    ".json",
    ".yaml",
    ".yml",
    ".p12",
    ".pfx",
    ".jks",
    ".env",
    ".pub",
    ".conf",
    ".cfg",
    ".ini",
    ".properties",
    ".xml",
    ".toml",
    ".gpg",
    ".asc",
    ".kdbx",
    ".html",
    ".js",
    ".py",
    ".php",
];

/// Values that stand for a secret without being one: references to where it is kept,
/// templates, placeholders, examples, words, booleans, numbers and file paths.
pub(super) fn is_reference_or_placeholder(value: &str) -> bool {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    if v.is_empty()
        || PLACEHOLDER_STARTS.iter().any(|s| v.starts_with(s))
        || PLACEHOLDER_CONTAINS.iter().any(|c| lower.contains(c))
        || PLACEHOLDER_WORDS.contains(&lower.as_str())
    {
        return true;
    }
    // Windows paths, file names with a key or certificate extension.
    let bytes = v.as_bytes();
    if bytes.len() > 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'\\' {
        return true;
    }
    if FILE_EXTENSIONS.iter().any(|e| lower.ends_with(e)) {
        return true;
    }
    // Numbers, versions, dates.
    if v.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '_' | ':' | '+' | ','))
    {
        return true;
    }
    // Filler typed with one character.
    let mut chars = v.chars();
    if let Some(first) = chars.next() {
        if chars.all(|c| c == first) {
            return true;
        }
    }
    // Code: calls, indexing, dotted attribute paths (`settings.db.password`), and names of
    // environment variables (`DB_PASSWORD`).
    let ident = |s: &str| {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    // A call: a name made of words (`get_password(…)`, `os.getenv(…)`), not random characters
    // that happen to hold a parenthesis.
    let call = v.find('(').is_some_and(|open| {
        let callee = &v[..open];
        let words = name_words(callee);
        v.ends_with(')')
            && !words.is_empty()
            && callee
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':'))
            && words.iter().all(|w| w.len() >= 2)
            && words.iter().map(String::len).sum::<usize>() >= 3 * words.len()
    });
    if call
        || (v.contains('.') && v.split('.').all(ident))
        || (v.contains('_')
            && v.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
    {
        return true;
    }
    false
}

/// Words joined by separators or case changes (`user_password_field`, `myAppSecret`,
/// `correct-horse-battery`): identifiers, not credentials.
fn is_wordy_identifier(v: &str) -> bool {
    // camelCase or snake_case words of three letters or more (`uddiv3TmodelKey`): random
    // tokens split at case changes fall into short fragments.
    let words = name_words(v);
    if words.len() >= 3
        && words.iter().all(|w| w.len() >= 3)
        && v.bytes().filter(u8::is_ascii_digit).count() <= 2
        && is_strict_camel_case(v)
        && words.iter().all(|w| has_vowel(w))
    {
        return true;
    }
    if v.bytes().any(|b| b.is_ascii_digit()) {
        return false;
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '-' | '.'))
    {
        return false;
    }
    // Words, not the short fragments random mixed-case letters fall into (`mxgJTeKdNnFR`).
    let letters = words.iter().map(String::len).sum::<usize>();
    words.len() >= 2
        && words.iter().all(|w| w.len() >= 2 && has_vowel(w))
        && letters >= 4 * words.len()
}

/// Words have vowels; the fragments of random strings often do not.
fn has_vowel(word: &str) -> bool {
    word.bytes()
        .any(|b| matches!(b, b'a' | b'e' | b'i' | b'o' | b'u' | b'y'))
}

/// `lowerStartThenWords`: a lower-case start, then words of one capital and at least two lower-case
/// letters or digits each; separators `_ - .` allowed between words. Random mixed-case strings
/// almost never have this shape (they hold runs of capitals or lone capitals).
fn is_strict_camel_case(v: &str) -> bool {
    let b = v.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_uppercase() {
            let tail = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                .count();
            if tail < 2 {
                return false;
            }
            i += 1 + tail;
        } else if b[i].is_ascii_lowercase()
            || b[i].is_ascii_digit()
            || matches!(b[i], b'_' | b'-' | b'.')
        {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Identifiers made of short dotted/dashed segments (`my-app-secret-v2`, `org.example.Factory2`).
fn is_segmented_identifier(v: &str) -> bool {
    let segments: Vec<&str> = v.split(['.', '-', '_', '/', ':']).collect();
    segments.len() > 2 && segments.iter().all(|s| s.len() < 12)
}

/// A value a person typed as a password: not a placeholder, a reference, a word or a number.
pub(super) fn password_value_ok(value: &str, min_len: usize) -> bool {
    let n = value.chars().count();
    if !(min_len..=128).contains(&n)
        || value.chars().any(char::is_whitespace)
        || is_reference_or_placeholder(value)
        || is_wordy_identifier(value)
    {
        return false;
    }
    let has_letter = value.chars().any(|c| c.is_ascii_alphabetic());
    let has_digit = value.chars().any(|c| c.is_ascii_digit());
    let has_symbol = value.chars().any(|c| !c.is_ascii_alphanumeric());
    let has_upper = value.chars().any(|c| c.is_ascii_uppercase());
    let has_lower = value.chars().any(|c| c.is_ascii_lowercase());
    let varied = (has_letter && (has_digit || has_symbol))
        || (n >= 12 && has_upper && has_lower && shannon_entropy(value) >= 3.3);
    varied && shannon_entropy(value) >= 2.3
}

/// A value that looks machine-generated: a token, a key, a random secret.
pub(super) fn secret_value_ok(value: &str) -> bool {
    let n = value.chars().count();
    if !(12..=512).contains(&n)
        || !value
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '`' | '<' | '>' | '\\'))
        || is_reference_or_placeholder(value)
        || is_wordy_identifier(value)
        || is_segmented_identifier(value)
    {
        return false;
    }
    let entropy = shannon_entropy(value);
    if has_letter_and_digit(value) {
        entropy >= if n < 16 { 3.2 } else { 3.4 }
    } else {
        // Letters only: long, both cases, and random-looking.
        n >= 24
            && value.chars().any(|c| c.is_ascii_uppercase())
            && value.chars().any(|c| c.is_ascii_lowercase())
            && entropy >= 4.0
    }
}

/// The value of a generic match, judged by what its name says it is.
pub(super) fn generic_ok(name: &str, value: &str) -> bool {
    match classify_name(name) {
        Some(NameKind::Password) => password_value_ok(value, 8) || secret_value_ok(value),
        Some(NameKind::Secret) => secret_value_ok(value),
        None => false,
    }
}

/// Prefixes of vendor tokens. A value starting with one that its vendor's rule rejected is a
/// look-alike (truncated, a placeholder, a publishable key), not a generic secret.
pub(super) const VENDOR_PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "gldt-",
    "glrt-",
    "xox",
    "xapp-",
    "npm_",
    "pypi-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "pk_live_",
    "pk_test_",
    "akia",
    "asia",
    "aiza",
    "sk-proj-",
    "sk-ant-",
    "hf_",
    "dop_v1_",
    "shpat_",
    "shpss_",
    "dckr_pat_",
    "glc_",
    "glsa_",
    "hvs.",
    "sg.",
    "whsec_",
    "sq0",
    "nrak-",
    "sntry",
    "pscale_",
    "sbp_",
    "lin_api_",
    "figd_",
    "pul-",
    "dapi",
    "r8_",
    "gsk_",
    "pplx-",
    "glptt-",
    "glsoat-",
    "gloas-",
    "glcbt-",
    "glimt-",
    "glft-",
    "glffct-",
    "glagent-",
    "gr1348941",
    "dop_",
    "doo_",
    "dor_",
    "xai-",
    "sk-",
    "ops_",
    "atbb",
    "atatt",
    "ccipat_",
    "bkua_",
    "hrku-",
    "ltai",
    "akid",
    "shp",
    "dckr_",
    "rubygems_",
    "clojars_",
    "oy2",
    "ntn_",
    "secret_",
    "pat-",
    "nfp_",
];

/// Whether `value` starts like a vendor token (ASCII case-insensitive).
pub(super) fn has_vendor_prefix(value: &str) -> bool {
    let lower = value
        .get(..value.len().min(12))
        .unwrap_or("")
        .to_ascii_lowercase();
    VENDOR_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// The credential of an `Authorization: Bearer|token …` header.
pub(super) fn bearer_ok(value: &str) -> bool {
    if value.starts_with("eyJ") {
        jwt_is_valid(value.as_bytes())
    } else {
        secret_value_ok(value)
    }
}

/// `Basic <base64>` decoding to `user:password` with a real password.
pub(super) fn basic_auth_ok(value: &str) -> bool {
    let Some(decoded) = base64_std_decode(value.as_bytes()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, password)) = text.split_once(':') else {
        return false;
    };
    !user.is_empty()
        && text.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && password_value_ok(password, 4)
}

/// Standard base64 (with `+/`, optional padding).
pub(super) fn base64_std_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mapped: Vec<u8> = input
        .iter()
        .map(|b| match b {
            b'+' => b'-',
            b'/' => b'_',
            b'-' | b'_' => b'!',
            other => *other,
        })
        .collect();
    base64url_decode(&mapped)
}

/// CRC-32 (IEEE 802.3, the zlib one).
pub(super) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// `n` in base62 (`0-9A-Za-z`), left-padded with `0` to `width` characters.
pub(super) fn base62(mut n: u32, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 62) as usize]);
        n /= 62;
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// GitHub (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`) and npm (`npm_`) tokens end with the base62
/// CRC32 of the random part before them, in 6 characters.
pub(super) fn crc32_base62_ok(token: &str) -> bool {
    let Some((_, body)) = token.split_once('_') else {
        return false;
    };
    if body.len() < 7 || !body.is_ascii() {
        return false;
    }
    let (random, check) = body.split_at(body.len() - 6);
    base62(crc32(random.as_bytes()), 6) == check
}

/// AWS access key ids encode the account in base32 (`A-Z2-7`) after the 4-character prefix.
pub(super) fn aws_key_id_alphabet_ok(id: &str) -> bool {
    id.len() == 20
        && id.as_bytes()[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(b))
}

/// A PyPI token is `pypi-` and a base64url macaroon whose location is `pypi.org` (or
/// `test.pypi.org`).
pub(super) fn pypi_macaroon_ok(token: &str) -> bool {
    let Some(body) = token.strip_prefix("pypi-") else {
        return false;
    };
    // Decode a prefix whose length is a multiple of 4, so the result does not depend on padding.
    let cut = body.len().min(64) / 4 * 4;
    base64url_decode(&body.as_bytes()[..cut])
        .is_some_and(|bytes| bytes.windows(8).any(|w| w == b"pypi.org"))
}

/// Configuration files, where unquoted values are literals: `.env*`, YAML, INI, TOML,
/// properties, shell scripts, Dockerfiles, compose files, `.npmrc`/`.pypirc`/`.netrc`-style
/// dotfiles and files without an extension.
pub(super) fn is_config_path(rel_path: &str) -> bool {
    const EXTENSIONS: &[&str] = &[
        "env",
        "yaml",
        "yml",
        "ini",
        "cfg",
        "conf",
        "cnf",
        "toml",
        "properties",
        "sh",
        "bash",
        "zsh",
        "ksh",
        "fish",
        "envrc",
        "tfvars",
        "hcl",
        "service",
        "config",
        "settings",
        "prefs",
        "npmrc",
        "pypirc",
        "netrc",
        "pgpass",
        "gitconfig",
        "rc",
        "secrets",
        "credentials",
        "dockerfile",
        "containerfile",
        "example_env",
        "list",
    ];
    let name = rel_path.rsplit('/').next().unwrap_or(rel_path);
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(".env")
        || lower.ends_with(".env")
        || lower.starts_with("dockerfile")
        || lower.starts_with("containerfile")
        || lower.starts_with("docker-compose")
        || lower.starts_with("compose.")
        || lower == "credentials"
        || lower == "config"
    {
        return true;
    }
    match lower.rsplit_once('.') {
        Some((stem, ext)) => EXTENSIONS.contains(&ext) || (stem.is_empty() && !ext.is_empty()),
        None => true,
    }
}

/// Lines that are shell or Dockerfile assignments in any file: `export NAME=…`, `ENV NAME …`,
/// `ARG NAME=…`, `set NAME=…`, `$env:NAME = …`.
pub(super) fn is_assignment_line(line_prefix: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line_prefix);
    let t = text
        .trim_start()
        .trim_start_matches(['-', ' ', '>', '$', '`']);
    let lower = t.to_ascii_lowercase();
    [
        "export ", "env ", "arg ", "set ", "setx ", "setenv ", "env:",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
        && !t.contains(['(', '{', '='])
}
