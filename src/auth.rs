//! API tokens: who a caller is, what its role allows and which workspaces it may see. Knows
//! nothing of HTTP (the middleware in `api/auth.rs` applies these decisions to requests).
//!
//! Tokens are configured from a file (`CERTUS_ASSURANCE_API_TOKENS_FILE`, TOML or JSON) that holds
//! only the SHA-256 digest of each secret, and optionally one admin token whose digest is given in
//! `CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256`. A presented token is hashed and its digest compared with
//! every configured digest in constant time, so neither the comparison nor the position of the
//! matching entry leaks through timing. Secrets are never stored or logged; token names may be.
//!
//! Roles, from least to most:
//! - `metrics`: only `GET /metrics` and `GET /stats` (when `CERTUS_ASSURANCE_METRICS_AUTH=token`);
//! - `read`: `GET /v1/profiles`, list scans, get a scan, stream a scan's events;
//! - `submit`: `read`, plus submit, batch, cancel, upload-request and upload-archive;
//! - `admin`: everything, including `/metrics` and `/stats` when they need a token, and the audit
//!   trail (`GET /v1/audit-events`).
//!
//! Every role except `metrics` is confined to its token's workspaces (`"*"` for all).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The variable naming the token file (used in every error about it).
pub const TOKENS_FILE_VAR: &str = "CERTUS_ASSURANCE_API_TOKENS_FILE";
/// The variable holding the digest of the single admin token.
pub const ADMIN_TOKEN_VAR: &str = "CERTUS_ASSURANCE_ADMIN_TOKEN_SHA256";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Scrape `/metrics` and `/stats` only.
    Metrics,
    /// Read scans and profiles, stream events.
    Read,
    /// Read, plus submit, cancel, upload.
    Submit,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may perform actions that need `needed`.
    pub fn allows(self, needed: Permission) -> bool {
        match needed {
            Permission::Scrape => matches!(self, Role::Metrics | Role::Admin),
            Permission::Read => self >= Role::Read,
            Permission::Submit => self >= Role::Submit,
            Permission::Audit => self == Role::Admin,
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `/metrics` and `/stats` behind `METRICS_AUTH=token`.
    Scrape,
    /// Read-only scan routes.
    Read,
    /// Routes that create or change scans.
    Submit,
    /// The audit trail.
    Audit,
}

impl Permission {
    /// The least role that has this permission (for error messages).
    pub fn least_role(self) -> &'static str {
        match self {
            Permission::Scrape => "metrics or admin",
            Permission::Read => "read",
            Permission::Submit => "submit",
            Permission::Audit => "admin",
        }
    }
}

/// The workspaces a token may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceScope {
    /// Every workspace (`"*"`).
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

impl WorkspaceScope {
    pub fn contains(&self, workspace_id: &str) -> bool {
        match self {
            WorkspaceScope::All => true,
            WorkspaceScope::Only(set) => set.contains(workspace_id),
        }
    }
}

/// One configured token: its name, role, scope and the SHA-256 digest of its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub workspaces: WorkspaceScope,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("workspaces", &self.workspaces)
            .finish_non_exhaustive()
    }
}

/// The configured tokens. Never empty: no tokens means authentication is off (`None`).
#[derive(Debug, Clone)]
pub struct TokenSet {
    tokens: Vec<Arc<ApiToken>>,
}

/// Hex SHA-256 of a token, as the token file stores it (`certus-assurance hash-token`).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths, not their contents.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// One entry of the token file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    workspaces: WorkspacesField,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WorkspacesField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

fn parse_digest(what: &str, hex_digest: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_digest.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes.ok_or_else(|| {
        anyhow::anyhow!(
            "{what}: `sha256` must be the 64-hex-digit SHA-256 of the token (make it with \
             `printf %s \"$TOKEN\" | certus-assurance hash-token`), not the token itself"
        )
    })
}

/// Whether `id` is a workspace id: 1-128 of `[A-Za-z0-9._-]`, and neither `.` nor `..`.
pub fn valid_workspace(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl TokenSet {
    /// Reads the configured sources; `Ok(None)` when neither is set (authentication off).
    pub fn load(file: Option<&Path>, admin_sha256: Option<&str>) -> anyhow::Result<Option<Self>> {
        let mut tokens = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{TOKENS_FILE_VAR}: cannot read {}", path.display()))?;
            let json = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            tokens = TokenSet::parse(&text, json)
                .with_context(|| format!("{TOKENS_FILE_VAR}: {}", path.display()))?;
        }
        if let Some(hex_digest) = admin_sha256.filter(|v| !v.trim().is_empty()) {
            let digest = parse_digest(ADMIN_TOKEN_VAR, hex_digest)?;
            tokens.push(ApiToken {
                name: "admin".into(),
                role: Role::Admin,
                workspaces: WorkspaceScope::All,
                digest,
            });
        }
        TokenSet::from_tokens(tokens).map(|set| (!set.tokens.is_empty()).then_some(set))
    }

    /// Parses a token file's text: TOML (`[[tokens]]` tables) or JSON (`{"tokens": [...]}`).
    pub fn parse(text: &str, json: bool) -> anyhow::Result<Vec<ApiToken>> {
        let file: TokenFile = if json {
            serde_json::from_str(text).context("not a valid JSON token file")?
        } else {
            toml::from_str(text).context("not a valid TOML token file")?
        };
        if file.tokens.is_empty() {
            bail!("the file lists no tokens; add at least one, or unset the variable to turn authentication off");
        }
        let mut out = Vec::new();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let what = format!("token {} (`{}`)", i + 1, entry.name);
            if entry.name.is_empty()
                || entry.name.len() > 64
                || !entry
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                bail!("{what}: `name` must be 1-64 letters, digits, `.`, `_` or `-`");
            }
            let workspaces = match entry.workspaces {
                WorkspacesField::One(s) if s == "*" => WorkspaceScope::All,
                WorkspacesField::One(s) => {
                    bail!("{what}: `workspaces` must be \"*\" or a list of workspace ids (got \"{s}\"; write [\"{s}\"])")
                }
                WorkspacesField::Many(list) => {
                    if list.is_empty() {
                        bail!("{what}: `workspaces` is empty; list workspace ids or use \"*\"");
                    }
                    if let Some(bad) = list.iter().find(|w| !valid_workspace(w)) {
                        bail!("{what}: `{bad}` is not a workspace id (1-128 of [A-Za-z0-9._-])");
                    }
                    WorkspaceScope::Only(list.into_iter().collect())
                }
            };
            let digest = parse_digest(&what, &entry.sha256)?;
            out.push(ApiToken {
                name: entry.name,
                role: entry.role,
                workspaces,
                digest,
            });
        }
        Ok(out)
    }

    /// Checks that names and digests are unique.
    pub fn from_tokens(tokens: Vec<ApiToken>) -> anyhow::Result<TokenSet> {
        for (i, a) in tokens.iter().enumerate() {
            for b in &tokens[..i] {
                if a.name == b.name {
                    bail!("two tokens are named `{}`; names must be unique", a.name);
                }
                if a.digest == b.digest {
                    bail!(
                        "tokens `{}` and `{}` have the same secret; give each its own",
                        b.name,
                        a.name
                    );
                }
            }
        }
        Ok(TokenSet {
            tokens: tokens.into_iter().map(Arc::new).collect(),
        })
    }

    /// The token whose secret is `presented`, comparing against every entry in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Arc<ApiToken>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(&token.digest, &digest) {
                found = Some(token.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// What the caller of one request may do: everything (authentication off) or what its token
/// allows.
#[derive(Debug, Clone)]
pub enum Access {
    /// Authentication is off.
    Open,
    /// An authenticated token.
    Token(Arc<ApiToken>),
}

impl Access {
    /// Whether the caller may see or act on scans of `workspace_id`.
    pub fn may_see(&self, workspace_id: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Token(t) => t.workspaces.contains(workspace_id),
        }
    }

    /// The workspaces a list must be confined to (`None`: no confinement).
    pub fn workspace_filter(&self) -> Option<&BTreeSet<String>> {
        match self {
            Access::Token(t) => match &t.workspaces {
                WorkspaceScope::Only(set) => Some(set),
                WorkspaceScope::All => None,
            },
            Access::Open => None,
        }
    }

    /// The token's name, for logs.
    pub fn name(&self) -> Option<&str> {
        match self {
            Access::Open => None,
            Access::Token(t) => Some(&t.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[tokens]]
name = "ci-team-a"
role = "submit"
workspaces = ["team-a"]
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

[[tokens]]
name = "ops"
role = "admin"
workspaces = "*"
sha256 = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
"#;

    #[test]
    fn token_files_parse_in_toml_and_json() {
        let tokens = TokenSet::parse(TOML, false).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].role, Role::Submit);
        assert!(tokens[0].workspaces.contains("team-a"));
        assert!(!tokens[0].workspaces.contains("team-b"));
        assert_eq!(tokens[1].workspaces, WorkspaceScope::All);
        let json = r#"{"tokens": [{"name": "r", "role": "read", "workspaces": ["a", "b"],
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]}"#;
        let tokens = TokenSet::parse(json, true).unwrap();
        assert_eq!(tokens[0].role, Role::Read);
    }

    #[test]
    fn token_file_mistakes_are_explained() {
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let entry = |fields: &str| format!("[[tokens]]\n{fields}\n");
        for (text, expect) in [
            (
                entry(
                    r#"name = "a"
role = "root"
workspaces = "*"
sha256 = "x""#,
                ),
                "TOML",
            ),
            (
                entry(&format!(
                    "name = \"a\"\nrole = \"read\"\nworkspaces = \"team-a\"\nsha256 = \"{digest}\""
                )),
                "[\"team-a\"]",
            ),
            (
                entry(
                    r#"name = "a"
role = "read"
workspaces = "*"
sha256 = "test""#,
                ),
                "hash-token",
            ),
            (
                entry(&format!(
                    "name = \"a\"\nrole = \"read\"\nworkspaces = []\nsha256 = \"{digest}\""
                )),
                "empty",
            ),
            (
                entry(&format!(
                    "name = \"a\"\nrole = \"read\"\nworkspaces = [\"../x\"]\nsha256 = \"{digest}\""
                )),
                "not a workspace id",
            ),
            (
                entry(
                    r#"name = "a"
role = "read"
workspaces = "*"
token = "plain""#,
                ),
                "TOML",
            ),
            ("tokens = []".to_string(), "no tokens"),
        ] {
            let err = format!("{:#}", TokenSet::parse(&text, false).unwrap_err());
            assert!(err.contains(expect), "{expect}: {err}");
        }
        let dup = format!("{TOML}\n[[tokens]]\nname = \"ops\"\nrole = \"read\"\nworkspaces = \"*\"\nsha256 = \"{}\"\n", hash_token("other"));
        let err = TokenSet::from_tokens(TokenSet::parse(&dup, false).unwrap()).unwrap_err();
        assert!(err.to_string().contains("named `ops`"), "{err}");
    }

    #[test]
    fn load_names_the_variable_and_never_echoes_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            "[[tokens]]\nname = \"a\"\nrole = \"read\"\nworkspaces = \"*\"\nsha256 = \"s3cr3t-plain\"\n",
        )
        .unwrap();
        let err = format!("{:#}", TokenSet::load(Some(&path), None).unwrap_err());
        assert!(err.contains(TOKENS_FILE_VAR), "{err}");
        assert!(!err.contains("s3cr3t-plain"), "{err}");
        let err = format!(
            "{:#}",
            TokenSet::load(Some(&dir.path().join("missing.toml")), None).unwrap_err()
        );
        assert!(err.contains(TOKENS_FILE_VAR), "{err}");
        let err = format!("{:#}", TokenSet::load(None, Some("abc")).unwrap_err());
        assert!(err.contains(ADMIN_TOKEN_VAR), "{err}");
        assert!(TokenSet::load(None, None).unwrap().is_none());
        let set = TokenSet::load(None, Some(&hash_token("root-token")))
            .unwrap()
            .unwrap();
        let admin = set.authenticate("root-token").unwrap();
        assert_eq!((admin.name.as_str(), admin.role), ("admin", Role::Admin));
    }

    #[test]
    fn authentication_matches_only_the_exact_secret() {
        let set = TokenSet::from_tokens(TokenSet::parse(TOML, false).unwrap()).unwrap();
        // 9f86...: the SHA-256 of "test".
        assert_eq!(set.authenticate("test").unwrap().name, "ci-team-a");
        for wrong in ["", "tes", "test ", "TEST", "testtest"] {
            assert!(set.authenticate(wrong).is_none(), "{wrong:?}");
        }
        let debug = format!("{set:?}");
        assert!(!debug.contains("9f86d0"), "{debug}");
    }

    #[test]
    fn constant_time_eq_compares_every_byte() {
        let a = [7u8; 32];
        assert!(constant_time_eq(&a, &a));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!constant_time_eq(&a, &b), "differs at byte {i}");
            b[i] ^= 0x81;
            assert!(
                !constant_time_eq(&a, &b),
                "differs in the low bit at byte {i}"
            );
        }
        assert!(!constant_time_eq(&a, &a[..31]));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn roles_form_a_ladder_except_metrics() {
        use Permission::*;
        let table = [
            (Role::Metrics, [true, false, false]),
            (Role::Read, [false, true, false]),
            (Role::Submit, [false, true, true]),
            (Role::Admin, [true, true, true]),
        ];
        for (role, expected) in table {
            let got = [role.allows(Scrape), role.allows(Read), role.allows(Submit)];
            assert_eq!(got, expected, "{role:?}");
        }
    }
}
