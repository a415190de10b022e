//! The rule table of the secrets scanner: one row per credential format.
//!
//! Formats come from the vendors' public documentation and from the published rule sets of
//! gitleaks, detect-secrets, secretlint and trufflehog (read, not copied: every pattern here is
//! written for this scanner's matching model). A row says
//! - `id`: stable lower-kebab-case rule id (SARIF `ruleId`, fingerprints, suppressions);
//! - `severity`: see docs/scanning.md — critical for credentials that open cloud accounts, source
//!   code, payments, package publishing or private keys; high for other live service tokens;
//!   medium for webhooks, JWTs, URL passwords and the generic assignment rules; low for test-mode
//!   and publishable keys;
//! - `keywords`: lower-case ASCII literals, one of which occurs (case-insensitively) in every
//!   match: the prefilter runs a rule only on files containing one of its keywords;
//! - `pattern`: [`Pat::Token`] for a self-identifying token (a vendor prefix or shape), matched
//!   between token boundaries; [`Pat::Context`] for a value that is only recognisable next to a
//!   name (`DATADOG_API_KEY=…`); [`Pat::Raw`] for everything else. Every pattern has a `secret`
//!   group holding the value;
//! - `check`: the validation the value must pass besides the pattern ([`Check`]);
//! - `scope`: whether the rule runs on every file or only on configuration files.

use crate::pipeline::finding::Severity;

/// How a rule's regex is written; see [`Pat::regex`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Pat {
    /// A self-identifying token, matched with token boundaries on both sides.
    Token(&'static str),
    /// `NAME … = VALUE`: `names` (case-insensitive alternation) somewhere in the assigned name,
    /// then an assignment, then `value` (case-sensitive).
    Context {
        names: &'static str,
        value: &'static str,
    },
    /// A complete pattern with its own flags.
    Raw(&'static str),
}

impl Pat {
    /// The regex source of this pattern. Unicode is off everywhere (`-u`): the scanner runs on
    /// bytes and credentials are ASCII.
    pub(super) fn regex(self) -> String {
        match self {
            Pat::Token(body) => {
                format!(r"(?m-u)(?:^|[^0-9A-Za-z_\-])(?P<secret>{body})(?:[^0-9A-Za-z_\-]|$)")
            }
            Pat::Context { names, value } => format!(
                r#"(?m-u)(?i:{names})[0-9A-Za-z_.\-]{{0,20}}["'\]]?[ \t]*(?::=|=>|=|:)[ \t]*["'`]?(?P<secret>{value})(?:[^0-9A-Za-z_\-]|$)"#
            ),
            Pat::Raw(p) => p.to_string(),
        }
    }
}

/// Extra validation a rule's match must pass, beyond its regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Fixed-format token: not a placeholder and not low-entropy filler.
    Token,
    /// Like `Token`, and must mix letters and digits (a 40-char identifier is not a key).
    AwsSecret,
    /// AWS access key id: `Token`; verified when the 16 characters after the prefix are in the
    /// base32 alphabet AWS uses (`A-Z2-7`).
    AwsKeyId,
    /// GitHub and npm tokens: `Token`; verified when the last 6 characters are the base62
    /// CRC32 of the 30 random characters before them.
    Crc32Base62,
    /// PyPI macaroon: the part after `pypi-` decodes as base64url and names `pypi.org`.
    PypiMacaroon,
    /// Armored block with a real base64 body (not `...` in documentation).
    PrivateKey,
    /// The base64 body of a key file (PuTTY private lines, SSH2 block): long, not elided.
    KeyBody,
    /// Private key inside a JSON document whose `"type"` is `"service_account"`.
    GcpServiceAccount,
    /// Three base64url segments whose header decodes to a JSON object.
    Jwt,
    /// Password part of `scheme://user:password@host`, placeholders excluded.
    UrlPassword,
    /// Value assigned to a secret-sounding name (group `name`): long and random-looking for
    /// tokens and keys, a non-trivial word for passwords; never a placeholder or a reference.
    Generic,
    /// A password in a context that says it is one (connection string, `.netrc`, `curl -u`).
    Password,
    /// `Authorization: Basic <base64>` decoding to `user:password`.
    BasicAuth,
    /// The credential of `Authorization: Bearer|token …`: a JWT or a random-looking token.
    Bearer,
}

/// Where a rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every scanned file.
    Any,
    /// Configuration files (`.env`, YAML, INI, TOML, properties, shell, Dockerfiles…; see
    /// `is_config_path`), and `export NAME=…` / `ENV NAME …` lines anywhere. Unquoted values in
    /// program source are expressions, not literals.
    Config,
}

/// One detection rule.
pub(super) struct RuleSpec {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub keywords: &'static [&'static str],
    pub pattern: Pat,
    pub check: Check,
    pub scope: Scope,
}

macro_rules! tok {
    ($id:literal, $title:literal, $sev:ident, [$($kw:literal),+], $body:literal) => {
        tok!($id, $title, $sev, [$($kw),+], $body, Token)
    };
    ($id:literal, $title:literal, $sev:ident, [$($kw:literal),+], $body:literal, $check:ident) => {
        RuleSpec {
            id: $id,
            title: $title,
            severity: Severity::$sev,
            keywords: &[$($kw),+],
            pattern: Pat::Token($body),
            check: Check::$check,
            scope: Scope::Any,
        }
    };
}

macro_rules! ctx {
    ($id:literal, $title:literal, $sev:ident, [$($kw:literal),+], $names:literal, $value:expr) => {
        RuleSpec {
            id: $id,
            title: $title,
            severity: Severity::$sev,
            keywords: &[$($kw),+],
            pattern: Pat::Context { names: $names, value: $value },
            check: Check::Token,
            scope: Scope::Any,
        }
    };
}

macro_rules! raw {
    ($id:literal, $title:literal, $sev:ident, [$($kw:literal),+], $pat:expr, $check:ident) => {
        raw!($id, $title, $sev, [$($kw),+], $pat, $check, Any)
    };
    ($id:literal, $title:literal, $sev:ident, [$($kw:literal),+], $pat:expr, $check:ident, $scope:ident) => {
        RuleSpec {
            id: $id,
            title: $title,
            severity: Severity::$sev,
            keywords: &[$($kw),+],
            pattern: Pat::Raw($pat),
            check: Check::$check,
            scope: Scope::$scope,
        }
    };
}

/// A UUID, the shape of many vendors' keys that are only recognisable by the name they sit under.
macro_rules! uuid {
    () => {
        "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    };
}

/// Names that hold a secret, for the generic rules (case-insensitive). `key` counts only as the
/// end of a longer name (`stripe_key`, `encryptionKey`), never alone.
macro_rules! secret_names {
    () => {
        r"passw(?:or)?d|passphrase|pwd|pass\b|_pass|secret|token|api[_.\-]?key|apikey|access[_.\-]?key|private[_.\-]?key|auth|credential|[_.\-]key\b|[a-z]Key\b|_KEY\b"
    };
}

/// The rules, in priority order: when matches of two rules overlap, the earlier rule wins, so
/// specific token formats come before the catch-all JWT, URL and generic rules, and the GCP
/// service-account rule comes before the plain private key rule it overlaps.
pub(super) const RULES: &[RuleSpec] = &[
    // --- Private keys ----------------------------------------------------------------------
    raw!(
        "gcp-service-account-key", "GCP service account private key", Critical,
        ["private_key"],
        r#"(?-u)"private_key"\s*:\s*"(?P<secret>-----BEGIN [A-Z ]*PRIVATE KEY-----[^"]+)""#,
        GcpServiceAccount
    ),
    raw!(
        "private-key", "private key", Critical,
        ["private key"],
        r#"(?-u)(?P<secret>-----BEGIN (?:(?:RSA|EC|DSA|OPENSSH|PGP|ENCRYPTED|SSH2 ENCRYPTED) )?PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s\\:,.()<>@_'!\-]+?-----END (?:(?:RSA|EC|DSA|OPENSSH|PGP|ENCRYPTED|SSH2 ENCRYPTED) )?PRIVATE KEY(?: BLOCK)?-----)"#,
        PrivateKey
    ),
    raw!(
        "ssh2-private-key", "SSH2 (RFC 4716) private key", Critical,
        ["---- begin ssh2 encrypted private key"],
        r#"(?-u)---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\r?\n(?P<secret>[A-Za-z0-9+/=\s\\:"\-]+?)---- END SSH2 ENCRYPTED PRIVATE KEY ----"#,
        KeyBody
    ),
    raw!(
        "putty-private-key", "PuTTY private key", Critical,
        ["putty-user-key-file"],
        r"(?-u)PuTTY-User-Key-File-[23]: [^\r\n]+(?:\r?\n[^\r\n]*){1,12}?\r?\nPrivate-Lines: \d+\r?\n(?P<secret>(?:[A-Za-z0-9+/=]+\r?\n)*[A-Za-z0-9+/=]+)",
        KeyBody
    ),
    tok!(
        "kubeconfig-client-key", "Kubernetes client key (kubeconfig client-key-data)", Critical,
        ["ls0tls1"],
        r"LS0tLS1CRUdJTiB(?:SU0EgUFJJVkFURSBLRVkt|FQyBQUklWQVRFIEtFWS|QUklWQVRFIEtFWS)[A-Za-z0-9+/]{64,}={0,2}"
    ),
    tok!(
        "private-key-base64", "base64-encoded private key", Critical,
        ["ls0tls1crudjti"],
        r"LS0tLS1CRUdJTi[A-Za-z0-9+/]{0,40}(?:UFJJVkFURSBLRVk|BSSVZBVEUgS0VZ|QUklWQVRFIEtFW)[A-Za-z0-9+/]{64,}={0,2}"
    ),
    tok!(
        "age-secret-key", "age secret key", Critical,
        ["age-secret-key-1"],
        r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"
    ),
    // --- Cloud: AWS --------------------------------------------------------------------------
    tok!(
        "aws-access-key-id", "AWS access key ID", Critical,
        ["akia", "asia", "abia", "acca", "a3t"],
        r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",
        AwsKeyId
    ),
    raw!(
        "aws-secret-access-key", "AWS secret access key", Critical,
        ["aws_secret", "aws-secret", "aws.secret", "awssecret", "secret_access", "secret-access",
         "secret.access", "secretaccess"],
        r#"(?im-u)(?:aws[_\-.]?secret[_\-.]?(?:access[_\-.]?)?key|secret[_\-.]?access[_\-.]?key)["']?\s*(?:=>|:=|=|:)\s*["']?(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        AwsSecret
    ),
    tok!(
        "aws-session-token", "AWS session token", Critical,
        ["iqojb3jpz2lux2vj", "fwogzxivyxdze"],
        r"(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdzE)[A-Za-z0-9/+=]{80,}"
    ),
    ctx!(
        "aws-session-token-assignment", "AWS session token", Critical,
        ["session_token", "session-token", "sessiontoken", "security_token", "security-token"],
        r"aws[_\-.]?session[_\-.]?token|x-amz-security-token|aws[_\-.]?security[_\-.]?token|sessiontoken",
        "[A-Za-z0-9/+=]{100,}"
    ),
    tok!(
        "aws-mws-key", "Amazon MWS auth token", Critical,
        ["amzn.mws."],
        r"amzn\.mws\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    tok!(
        "aws-bedrock-api-key", "Amazon Bedrock API key", Critical,
        ["absk"],
        r"ABSK[A-Za-z0-9+/]{109,269}={0,2}"
    ),
    // --- Cloud: Google, Azure, others ---------------------------------------------------------
    tok!(
        "google-api-key", "Google API key", High,
        ["aiza"],
        r"AIza[0-9A-Za-z_\-]{35}"
    ),
    tok!(
        "google-oauth-client-secret", "Google OAuth client secret", Critical,
        ["gocspx-"],
        r"GOCSPX-[A-Za-z0-9_\-]{28}"
    ),
    tok!(
        "google-oauth-access-token", "Google OAuth access token", High,
        ["ya29."],
        r"ya29\.[0-9A-Za-z_\-]{50,}"
    ),
    tok!(
        "google-oauth-refresh-token", "Google OAuth refresh token", High,
        ["1//0"],
        r"1//0[0-9A-Za-z_\-]{40,}"
    ),
    raw!(
        "azure-storage-account-key", "Azure storage account key", Critical,
        ["accountkey"],
        r"(?i-u)AccountKey\s*=\s*(?-i:(?P<secret>[A-Za-z0-9+/]{86}==))",
        Token
    ),
    raw!(
        "azure-shared-access-key", "Azure Service Bus / Event Hubs / IoT Hub shared access key", Critical,
        ["sharedaccesskey"],
        r"(?i-u)SharedAccessKey\s*=\s*(?-i:(?P<secret>[A-Za-z0-9+/]{42,43}=))",
        Token
    ),
    raw!(
        "azure-sas-token", "Azure shared access signature", High,
        ["sig="],
        r#"(?-u)[?&;"'\s]sv=\d{4}-\d\d-\d\d[^\s"'<>]*?[&;]sig=(?P<secret>[A-Za-z0-9%+/]{30,}(?:%3[Dd]|=)*)"#,
        Token
    ),
    raw!(
        "azure-ad-client-secret", "Azure AD (Entra ID) client secret", Critical,
        ["q~"],
        r#"(?m-u)(?:^|[\\'"`\s>=:(,])(?P<secret>[a-zA-Z0-9_~.]{3}\dQ~[a-zA-Z0-9_~.\-]{31,34})(?:$|[\\'"`\s<),;])"#,
        Token
    ),
    ctx!(
        "azure-devops-pat", "Azure DevOps personal access token", Critical,
        ["devops", "azdo", "ado_", "vsts", "system_accesstoken", "azure_pat"],
        r"azure[_\-.]?devops|azdo|ado[_\-]pat|ado[_\-]token|vsts|system[_.]accesstoken|azure[_\-]pat",
        "[a-z2-7]{52}|[A-Za-z0-9]{76}AZDO[A-Za-z0-9]{4}"
    ),
    tok!(
        "digitalocean-pat", "DigitalOcean personal access token", Critical,
        ["dop_v1_"],
        "dop_v1_[a-f0-9]{64}"
    ),
    tok!(
        "digitalocean-oauth-token", "DigitalOcean OAuth token", Critical,
        ["doo_v1_"],
        "doo_v1_[a-f0-9]{64}"
    ),
    tok!(
        "digitalocean-refresh-token", "DigitalOcean refresh token", Critical,
        ["dor_v1_"],
        "dor_v1_[a-f0-9]{64}"
    ),
    tok!(
        "alibaba-access-key-id", "Alibaba Cloud AccessKey ID", High,
        ["ltai"],
        "LTAI[A-Za-z0-9]{12,20}"
    ),
    ctx!(
        "alibaba-access-key-secret", "Alibaba Cloud AccessKey secret", Critical,
        ["alibaba", "aliyun", "alicloud"],
        r"(?:alibaba|aliyun|alicloud)[_\-.]?(?:cloud[_\-.]?)?(?:access[_\-.]?)?(?:key[_\-.]?)?secret",
        "[A-Za-z0-9]{30}"
    ),
    tok!(
        "tencent-secret-id", "Tencent Cloud SecretId", High,
        ["akid"],
        "AKID[A-Za-z0-9]{32}"
    ),
    ctx!(
        "ibm-cloud-api-key", "IBM Cloud API key", Critical,
        ["ibm", "bluemix", "iam_apikey"],
        r"ibm[_\-.]?(?:cloud[_\-.]?)?api[_\-.]?key|bluemix[_\-.]?api[_\-.]?key|iam[_\-]apikey",
        r"[A-Za-z0-9_\-]{44}"
    ),
    ctx!(
        "oracle-cloud-auth-token", "Oracle Cloud (OCI) auth token", High,
        ["oci_", "oci-", "oracle"],
        r"oci[_\-](?:cli[_\-])?(?:auth[_\-]?token|password|pass_phrase|passphrase)|oracle[_\-.]?(?:cloud|oci)[_\-.]?(?:auth[_\-]?)?token",
        r"[A-Za-z0-9\[\]();:<>.+_\-#{}]{20}"
    ),
    ctx!(
        "linode-token", "Linode (Akamai) API token", Critical,
        ["linode"],
        r"linode[_\-.]?(?:api[_\-.]?|cli[_\-.]?)?token",
        "[a-f0-9]{64}"
    ),
    tok!(
        "heroku-api-key-v2", "Heroku API key", Critical,
        ["hrku-"],
        r"HRKU-AA[0-9A-Za-z_\-]{58}"
    ),
    ctx!(
        "heroku-api-key", "Heroku API key", Critical,
        ["heroku"],
        r"heroku[_\-.]?(?:api[_\-.]?)?(?:key|token)",
        uuid!()
    ),
    ctx!(
        "cloudflare-api-token", "Cloudflare API token", Critical,
        ["cloudflare", "cf_api", "cf-api", "cf_token"],
        r"(?:cloudflare|cf)[_\-.]?(?:api[_\-.]?)?token",
        r"[A-Za-z0-9_\-]{40}"
    ),
    ctx!(
        "cloudflare-global-api-key", "Cloudflare global API key", Critical,
        ["cloudflare", "cf_api", "cf-api", "cf_key"],
        r"(?:cloudflare|cf)[_\-.]?(?:global[_\-.]?)?(?:api[_\-.]?)?key",
        "[a-f0-9]{37}"
    ),
    tok!(
        "cloudflare-origin-ca-key", "Cloudflare Origin CA key", High,
        ["v1.0-"],
        "v1\\.0-[a-f0-9]{24}-[a-f0-9]{146}"
    ),
    ctx!(
        "vercel-token", "Vercel access token", High,
        ["vercel", "now_token", "zeit"],
        r"vercel[_\-.]?(?:api[_\-.]?)?(?:token|key)|now[_\-]token",
        "[A-Za-z0-9]{24}"
    ),
    tok!(
        "netlify-pat", "Netlify personal access token", High,
        ["nfp_"],
        "nfp_[A-Za-z0-9]{36}"
    ),
    ctx!(
        "netlify-token", "Netlify access token", High,
        ["netlify"],
        r"netlify[_\-.]?(?:auth[_\-.]?)?(?:token|key)",
        r"[A-Za-z0-9_\-]{40,46}"
    ),
    tok!(
        "flyio-token", "Fly.io access token", High,
        ["fo1_", "fm1", "fm2", "flyv1"],
        r"(?:FlyV1 )?(?:fo1_[A-Za-z0-9_\-]{43}|fm[12][ar]?_[A-Za-z0-9+/=_\-]{100,})"
    ),
    ctx!(
        "scaleway-secret-key", "Scaleway secret key", High,
        ["scaleway", "scw_"],
        r"scw[_\-]secret[_\-]key|scaleway[_\-.]?secret",
        uuid!()
    ),
    ctx!(
        "hetzner-cloud-token", "Hetzner Cloud API token", High,
        ["hcloud", "hetzner"],
        r"(?:hcloud|hetzner)[_\-.]?(?:api[_\-.]?)?token",
        "[A-Za-z0-9]{64}"
    ),
    ctx!(
        "vultr-api-key", "Vultr API key", High,
        ["vultr"],
        r"vultr[_\-.]?api[_\-.]?key",
        "[A-Z0-9]{36}"
    ),
    tok!(
        "yandex-api-key", "Yandex Cloud API key", High,
        ["aqvn"],
        r"AQVN[A-Za-z0-9_\-]{35,38}"
    ),
    // --- Source hosting and CI ------------------------------------------------------------------
    tok!(
        "github-pat", "GitHub personal access token", Critical,
        ["ghp_"],
        "ghp_[0-9A-Za-z]{36}",
        Crc32Base62
    ),
    tok!(
        "github-fine-grained-pat", "GitHub fine-grained personal access token", Critical,
        ["github_pat_"],
        "github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59}"
    ),
    tok!(
        "github-oauth-token", "GitHub OAuth access token", Critical,
        ["gho_"],
        "gho_[0-9A-Za-z]{36}",
        Crc32Base62
    ),
    tok!(
        "github-app-token", "GitHub App token", Critical,
        ["ghu_", "ghs_"],
        "gh[us]_[0-9A-Za-z]{36}",
        Crc32Base62
    ),
    tok!(
        "github-refresh-token", "GitHub refresh token", Critical,
        ["ghr_"],
        "ghr_[0-9A-Za-z]{36,76}",
        Crc32Base62
    ),
    tok!(
        "gitlab-pat", "GitLab personal access token", Critical,
        ["glpat-"],
        r"glpat-[0-9A-Za-z_\-]{20,}(?:\.[0-9A-Za-z_\-]+)*"
    ),
    tok!(
        "gitlab-deploy-token", "GitLab deploy token", Critical,
        ["gldt-"],
        r"gldt-[0-9A-Za-z_\-]{20,}"
    ),
    tok!(
        "gitlab-runner-token", "GitLab runner authentication token", Critical,
        ["glrt-"],
        r"glrt-[0-9A-Za-z_\-]{20,}(?:\.[0-9A-Za-z_\-]+)*"
    ),
    tok!(
        "gitlab-runner-registration-token", "GitLab runner registration token", High,
        ["gr1348941"],
        r"GR1348941[0-9A-Za-z_\-]{20,}"
    ),
    tok!(
        "gitlab-pipeline-trigger-token", "GitLab pipeline trigger token", High,
        ["glptt-"],
        "glptt-[0-9a-f]{40}"
    ),
    tok!(
        "gitlab-scim-token", "GitLab SCIM OAuth token", High,
        ["glsoat-"],
        r"glsoat-[0-9A-Za-z_\-]{20,}"
    ),
    tok!(
        "gitlab-oauth-app-secret", "GitLab OAuth application secret", High,
        ["gloas-"],
        r"gloas-[0-9A-Za-z_\-]{64}"
    ),
    tok!(
        "gitlab-ci-job-token", "GitLab CI/CD job token", High,
        ["glcbt-"],
        r"glcbt-[0-9A-Za-z]{1,5}_[0-9A-Za-z_\-]{20,}"
    ),
    tok!(
        "gitlab-incoming-mail-token", "GitLab incoming mail token", Medium,
        ["glimt-"],
        r"glimt-[0-9A-Za-z_\-]{25}"
    ),
    tok!(
        "gitlab-feed-token", "GitLab feed token", Medium,
        ["glft-"],
        r"glft-[0-9A-Za-z_\-]{20}"
    ),
    tok!(
        "gitlab-feature-flag-token", "GitLab feature flag client token", Medium,
        ["glffct-"],
        r"glffct-[0-9A-Za-z_\-]{20}"
    ),
    tok!(
        "gitlab-agent-token", "GitLab agent for Kubernetes token", High,
        ["glagent-"],
        r"glagent-[0-9A-Za-z_\-]{50}"
    ),
    tok!(
        "bitbucket-app-password", "Bitbucket app password", Critical,
        ["atbb"],
        r"ATBB[A-Za-z0-9_=.\-]{32}"
    ),
    tok!(
        "atlassian-api-token", "Atlassian API token", High,
        ["atatt3"],
        r"ATATT3[A-Za-z0-9_\-=]{150,}"
    ),
    ctx!(
        "atlassian-api-token-legacy", "Atlassian (Jira/Confluence) API token", High,
        ["jira", "confluence", "atlassian"],
        r"(?:jira|confluence|atlassian)[_\-.]?(?:api[_\-.]?)?token",
        "[A-Za-z0-9]{24}"
    ),
    ctx!(
        "bitbucket-client-secret", "Bitbucket OAuth client secret", High,
        ["bitbucket"],
        r"bitbucket[_\-.]?(?:client[_\-.]?|oauth[_\-.]?)?secret",
        r"[A-Za-z0-9=_\-]{64}"
    ),
    tok!(
        "circleci-personal-token", "CircleCI personal API token", High,
        ["ccipat_"],
        "CCIPAT_[A-Za-z0-9]{22}_[a-f0-9]{40}"
    ),
    ctx!(
        "circleci-token", "CircleCI API token", High,
        ["circle"],
        r"circle[_\-.]?(?:ci[_\-.]?)?(?:api[_\-.]?)?token",
        "[a-f0-9]{40}"
    ),
    ctx!(
        "travis-ci-token", "Travis CI API token", High,
        ["travis"],
        r"travis[_\-.]?(?:ci[_\-.]?)?(?:api[_\-.]?)?token",
        r"[A-Za-z0-9_\-]{22}"
    ),
    tok!(
        "buildkite-token", "Buildkite API access token", High,
        ["bkua_"],
        "bkua_[a-f0-9]{40}"
    ),
    ctx!(
        "drone-ci-token", "Drone CI token", High,
        ["drone"],
        r"drone[_\-.]?(?:api[_\-.]?)?token",
        "[A-Za-z0-9]{32}"
    ),
    ctx!(
        "jenkins-api-token", "Jenkins API token", High,
        ["jenkins"],
        r"jenkins[_\-.]?(?:api[_\-.]?)?token",
        "[a-f0-9]{34}"
    ),
    tok!(
        "sonarqube-token", "SonarQube/SonarCloud token", High,
        ["squ_", "sqa_", "sqp_"],
        "sq[uap]_[a-f0-9]{40}"
    ),
    ctx!(
        "codecov-token", "Codecov upload token", Medium,
        ["codecov"],
        r"codecov[_\-.]?(?:upload[_\-.]?)?token",
        uuid!()
    ),
    ctx!(
        "snyk-token", "Snyk API token", High,
        ["snyk"],
        r"snyk[_\-.]?(?:api[_\-.]?)?(?:token|key)",
        uuid!()
    ),
    tok!(
        "octopus-deploy-api-key", "Octopus Deploy API key", High,
        ["api-"],
        "API-[A-Z0-9]{26}"
    ),
    tok!(
        "harness-pat", "Harness personal access token", High,
        ["pat."],
        r"pat\.[A-Za-z0-9_\-]{22}\.[a-f0-9]{24}\.[A-Za-z0-9]{20}"
    ),
    tok!(
        "launchdarkly-key", "LaunchDarkly API or SDK key", High,
        ["api-", "sdk-"],
        "(?:api|sdk)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    // --- Secret managers, identity, infrastructure as code ------------------------------------
    tok!(
        "terraform-cloud-token", "Terraform Cloud / HCP Terraform API token", Critical,
        [".atlasv1."],
        r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=\-]{60,70}"
    ),
    tok!(
        "pulumi-access-token", "Pulumi access token", Critical,
        ["pul-"],
        "pul-[a-f0-9]{40}"
    ),
    tok!(
        "doppler-token", "Doppler token", Critical,
        ["dp.pt.", "dp.st.", "dp.ct.", "dp.sa.", "dp.scim.", "dp.audit."],
        r"dp\.(?:pt|st|ct|sa|scim|audit)\.[A-Za-z0-9_\-.]{40,}"
    ),
    tok!(
        "vault-service-token", "HashiCorp Vault service token", Critical,
        ["hvs."],
        r"hvs\.[A-Za-z0-9_\-]{90,}"
    ),
    tok!(
        "vault-batch-token", "HashiCorp Vault batch token", Critical,
        ["hvb."],
        r"hvb\.[A-Za-z0-9_\-]{138,300}"
    ),
    ctx!(
        "vault-token-legacy", "HashiCorp Vault token", Critical,
        ["vault"],
        r"vault[_\-.]?token",
        r"s\.[A-Za-z0-9]{24}"
    ),
    tok!(
        "onepassword-service-account-token", "1Password service account token", Critical,
        ["ops_eyj"],
        r"ops_eyJ[A-Za-z0-9+/=_\-]{250,}"
    ),
    tok!(
        "onepassword-secret-key", "1Password secret key", Critical,
        ["a3-"],
        r"A3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}"
    ),
    tok!(
        "infisical-token", "Infisical service token", Critical,
        ["st."],
        r"st\.[a-f0-9]{24}\.[a-f0-9]{32}\.[a-f0-9]{32}"
    ),
    ctx!(
        "okta-api-token", "Okta API token", Critical,
        ["okta"],
        r"okta[_\-.]?(?:api[_\-.]?)?token",
        r"00[A-Za-z0-9_\-]{40}"
    ),
    ctx!(
        "auth0-client-secret", "Auth0 client secret", High,
        ["auth0"],
        r"auth0[_\-.]?(?:client[_\-.]?)?secret",
        r"[A-Za-z0-9_\-]{64}"
    ),
    // --- Payments ------------------------------------------------------------------------------
    tok!(
        "stripe-live-key", "Stripe live secret key", Critical,
        ["sk_live_", "rk_live_"],
        "[sr]k_live_[0-9A-Za-z]{20,}"
    ),
    tok!(
        "stripe-test-key", "Stripe test secret key", Low,
        ["sk_test_", "rk_test_"],
        "[sr]k_test_[0-9A-Za-z]{20,}"
    ),
    tok!(
        "stripe-webhook-secret", "Stripe webhook signing secret", High,
        ["whsec_"],
        "whsec_[A-Za-z0-9]{32,}"
    ),
    tok!(
        "square-access-token", "Square access token", Critical,
        ["sq0atp-", "eaaa"],
        r"sq0atp-[0-9A-Za-z_\-]{22}|EAAA[A-Za-z0-9_\-]{60}"
    ),
    tok!(
        "square-oauth-secret", "Square OAuth secret", Critical,
        ["sq0csp-"],
        r"sq0csp-[0-9A-Za-z_\-]{43}"
    ),
    tok!(
        "braintree-access-token", "PayPal Braintree access token", Critical,
        ["access_token$"],
        r"access_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32}"
    ),
    ctx!(
        "paypal-client-secret", "PayPal client secret", Critical,
        ["paypal"],
        r"paypal[_\-.]?(?:client[_\-.]?)?secret",
        r"E[A-Za-z0-9_\-]{79}"
    ),
    ctx!(
        "adyen-api-key", "Adyen API key", Critical,
        ["adyen"],
        r"adyen[_\-.]?(?:api[_\-.]?)?key",
        r"AQE[A-Za-z0-9+/=_\-.]{80,}"
    ),
    tok!(
        "razorpay-key-id", "Razorpay key id", Low,
        ["rzp_live_", "rzp_test_"],
        "rzp_(?:live|test)_[A-Za-z0-9]{14}"
    ),
    ctx!(
        "razorpay-key-secret", "Razorpay key secret", Critical,
        ["razorpay"],
        r"razorpay[_\-.]?(?:key[_\-.]?)?secret",
        "[A-Za-z0-9]{24}"
    ),
    tok!(
        "shopify-access-token", "Shopify access token", Critical,
        ["shpat_"],
        "shpat_[a-fA-F0-9]{32}"
    ),
    tok!(
        "shopify-custom-app-token", "Shopify custom app access token", Critical,
        ["shpca_"],
        "shpca_[a-fA-F0-9]{32}"
    ),
    tok!(
        "shopify-private-app-token", "Shopify private app access token", Critical,
        ["shppa_"],
        "shppa_[a-fA-F0-9]{32}"
    ),
    tok!(
        "shopify-shared-secret", "Shopify shared secret", Critical,
        ["shpss_"],
        "shpss_[a-fA-F0-9]{32}"
    ),
    tok!(
        "plaid-access-token", "Plaid access token", Critical,
        ["access-production-", "access-development-", "access-sandbox-"],
        "access-(?:production|development|sandbox)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    ctx!(
        "plaid-secret", "Plaid client secret", Critical,
        ["plaid"],
        r"plaid[_\-.]?(?:client[_\-.]?)?secret",
        "[a-f0-9]{30}"
    ),
    tok!(
        "flutterwave-secret-key", "Flutterwave secret key", Critical,
        ["flwseck"],
        "FLWSECK(?:_TEST)?-[a-hA-H0-9]{32}-X"
    ),
    tok!(
        "flutterwave-encryption-key", "Flutterwave encryption key", High,
        ["flwseck_test"],
        "FLWSECK_TEST[a-hA-H0-9]{12}"
    ),
    tok!(
        "easypost-api-key", "EasyPost API key", High,
        ["ezak", "eztk"],
        "EZ[AT]K[A-Za-z0-9]{54}"
    ),
    ctx!(
        "gocardless-token", "GoCardless access token", Critical,
        ["gocardless"],
        r"gocardless[_\-.]?(?:access[_\-.]?)?token",
        r"live_[A-Za-z0-9\-_=]{40}"
    ),
    tok!(
        "shippo-token", "Shippo API token", High,
        ["shippo_"],
        "shippo_(?:live|test)_[a-f0-9]{40}"
    ),
    tok!(
        "duffel-token", "Duffel API token", High,
        ["duffel_"],
        r"duffel_(?:test|live)_[A-Za-z0-9_\-=]{43}"
    ),
    // --- Messaging and e-mail -----------------------------------------------------------------
    tok!(
        "slack-webhook-url", "Slack webhook URL", High,
        ["hooks.slack.com"],
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/T[0-9A-Z]{6,}/[0-9A-Z]{6,}/[0-9A-Za-z]{16,}"
    ),
    raw!(
        "slack-token", "Slack token", High,
        ["xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"],
        // Real bot/user/app tokens start with the numeric workspace id; this keeps
        // `xoxb-your-token-here` out.
        r"(?-u)\b(?P<secret>xox[baprs]-[0-9]{6,}-[0-9A-Za-z\-]{10,})",
        Token
    ),
    tok!(
        "slack-app-token", "Slack app-level token", High,
        ["xapp-"],
        r"xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+"
    ),
    tok!(
        "slack-config-token", "Slack configuration token", High,
        ["xoxe.xox", "xoxe-"],
        r"xoxe\.xox[bp]-\d-[A-Z0-9]{100,}|xoxe-\d-[A-Z0-9]{100,}"
    ),
    ctx!(
        "discord-bot-token", "Discord bot token", High,
        ["discord"],
        r"discord[_\-.]?(?:bot[_\-.]?)?token",
        r"[MNO][A-Za-z\d_\-]{23,27}\.[A-Za-z\d_\-]{6}\.[A-Za-z\d_\-]{27,38}"
    ),
    tok!(
        "discord-webhook-url", "Discord webhook URL", Medium,
        ["discord.com/api/webhooks", "discordapp.com/api/webhooks"],
        r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d+/[A-Za-z0-9_\-]{60,68}"
    ),
    tok!(
        "telegram-bot-token", "Telegram bot token", High,
        [":aa"],
        r"\d{8,10}:AA[0-9A-Za-z_\-]{33}"
    ),
    tok!(
        "twilio-api-key", "Twilio API key SID", High,
        ["sk"],
        "SK[0-9a-fA-F]{32}"
    ),
    ctx!(
        "twilio-auth-token", "Twilio auth token", Critical,
        ["twilio"],
        r"twilio[_\-.]?(?:auth[_\-.]?)?token",
        "[a-f0-9]{32}"
    ),
    tok!(
        "sendgrid-api-key", "SendGrid API key", High,
        ["sg."],
        r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}"
    ),
    tok!(
        "mailgun-api-key", "Mailgun API key", High,
        ["key-"],
        "key-[a-f0-9]{32}"
    ),
    ctx!(
        "mailgun-private-key", "Mailgun private API or webhook signing key", High,
        ["mailgun"],
        r"mailgun[_\-.]?(?:private[_\-.]?|api[_\-.]?|signing[_\-.]?|webhook[_\-.]?)*key",
        "[a-h0-9]{32}-[a-h0-9]{8}-[a-h0-9]{8}"
    ),
    tok!(
        "mailchimp-api-key", "Mailchimp API key", High,
        ["-us"],
        r"[a-f0-9]{32}-us\d{1,2}"
    ),
    ctx!(
        "postmark-token", "Postmark server or account token", High,
        ["postmark"],
        r"postmark[_\-.]?(?:api[_\-.]?|server[_\-.]?|account[_\-.]?)?(?:token|key)",
        uuid!()
    ),
    ctx!(
        "vonage-api-secret", "Vonage (Nexmo) API secret", High,
        ["nexmo", "vonage"],
        r"(?:nexmo|vonage)[_\-.]?(?:api[_\-.]?)?secret",
        "[A-Za-z0-9]{16}"
    ),
    tok!(
        "teams-webhook-url", "Microsoft Teams incoming webhook URL", Medium,
        ["webhook.office.com", "logic.azure.com"],
        r"https://[a-z0-9\-]+\.webhook\.office\.com/webhookb2/[a-z0-9\-]+@[a-z0-9\-]+/IncomingWebhook/[a-z0-9]{32}/[a-z0-9\-]+(?:/[A-Za-z0-9_\-]+)?|https://[a-z0-9\-.]+\.logic\.azure\.com(?::443)?/workflows/[a-f0-9]{32}/triggers/manual/paths/invoke\?[^\s'\x22<>]*sig=[A-Za-z0-9_\-%]{43,}"
    ),
    tok!(
        "brevo-api-key", "Brevo (Sendinblue) API or SMTP key", High,
        ["xkeysib-", "xsmtpsib-"],
        "x(?:keysib|smtpsib)-[a-f0-9]{64}-[A-Za-z0-9]{16}"
    ),
    ctx!(
        "intercom-token", "Intercom access token", High,
        ["intercom"],
        r"intercom[_\-.]?(?:access[_\-.]?)?token",
        r"[A-Za-z0-9=_\-]{60}"
    ),
    ctx!(
        "zendesk-api-token", "Zendesk API token", High,
        ["zendesk"],
        r"zendesk[_\-.]?(?:api[_\-.]?)?token",
        "[A-Za-z0-9]{40}"
    ),
    ctx!(
        "messagebird-api-key", "MessageBird API key", High,
        ["messagebird"],
        r"messagebird[_\-.]?(?:api[_\-.]?)?key",
        "[A-Za-z0-9]{25}"
    ),
    tok!(
        "resend-api-key", "Resend API key", High,
        ["re_"],
        "re_[A-Za-z0-9]{8}_[A-Za-z0-9]{24}"
    ),
    tok!(
        "zapier-webhook-url", "Zapier webhook URL", Medium,
        ["hooks.zapier.com"],
        r"https://hooks\.zapier\.com/hooks/catch/\d+/[A-Za-z0-9]+/?"
    ),
    // --- AI APIs -----------------------------------------------------------------------------
    tok!(
        "openai-project-key", "OpenAI project API key", Critical,
        ["sk-proj-"],
        r"sk-proj-[A-Za-z0-9_\-]{40,}"
    ),
    tok!(
        "openai-service-account-key", "OpenAI service account key", Critical,
        ["sk-svcacct-"],
        r"sk-svcacct-[A-Za-z0-9_\-]{40,}"
    ),
    tok!(
        "openai-admin-key", "OpenAI admin key", Critical,
        ["sk-admin-"],
        r"sk-admin-[A-Za-z0-9_\-]{40,}"
    ),
    tok!(
        "anthropic-api-key", "Anthropic API key", Critical,
        ["sk-ant-api"],
        r"sk-ant-api\d\d-[A-Za-z0-9_\-]{32,}"
    ),
    tok!(
        "anthropic-admin-key", "Anthropic admin key", Critical,
        ["sk-ant-admin"],
        r"sk-ant-admin\d\d-[A-Za-z0-9_\-]{32,}"
    ),
    tok!(
        "openrouter-api-key", "OpenRouter API key", High,
        ["sk-or-v1-"],
        "sk-or-v1-[a-f0-9]{64}"
    ),
    tok!(
        "openai-api-key", "OpenAI API key", Critical,
        ["t3blbkfj"],
        r"sk-[A-Za-z0-9_\-]*T3BlbkFJ[A-Za-z0-9_\-]{20,}"
    ),
    ctx!(
        "openai-api-key-assignment", "OpenAI API key", Critical,
        ["openai"],
        r"openai[_\-.]?(?:api[_\-.]?)?key",
        r"sk-[A-Za-z0-9]{48}"
    ),
    tok!(
        "huggingface-token", "Hugging Face access token", High,
        ["hf_"],
        "hf_[A-Za-z0-9]{34}"
    ),
    tok!(
        "huggingface-org-token", "Hugging Face organization API token", High,
        ["api_org_"],
        "api_org_[A-Za-z0-9]{34}"
    ),
    ctx!(
        "cohere-api-key", "Cohere API key", High,
        ["cohere", "co_api_key"],
        r"cohere[_\-.]?(?:api[_\-.]?)?key|co_api_key",
        "[A-Za-z0-9]{40}"
    ),
    tok!(
        "replicate-api-token", "Replicate API token", High,
        ["r8_"],
        "r8_[A-Za-z0-9]{37}"
    ),
    tok!(
        "groq-api-key", "Groq API key", High,
        ["gsk_"],
        "gsk_[A-Za-z0-9]{52}"
    ),
    tok!(
        "perplexity-api-key", "Perplexity API key", High,
        ["pplx-"],
        "pplx-[A-Za-z0-9]{40,56}"
    ),
    ctx!(
        "mistral-api-key", "Mistral AI API key", High,
        ["mistral"],
        r"mistral[_\-.]?(?:api[_\-.]?)?key",
        "[A-Za-z0-9]{32}"
    ),
    tok!(
        "xai-api-key", "xAI API key", High,
        ["xai-"],
        "xai-[A-Za-z0-9]{80}"
    ),
    ctx!(
        "deepseek-api-key", "DeepSeek API key", High,
        ["deepseek"],
        r"deepseek[_\-.]?(?:api[_\-.]?)?key",
        "sk-[a-f0-9]{32}"
    ),
    tok!(
        "langsmith-api-key", "LangSmith API key", High,
        ["lsv2_"],
        "lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}"
    ),
    tok!(
        "pinecone-api-key", "Pinecone API key", High,
        ["pcsk_"],
        "pcsk_[A-Za-z0-9_]{50,}"
    ),
    ctx!(
        "elevenlabs-api-key", "ElevenLabs API key", High,
        ["elevenlabs", "xi-api-key", "xi_api_key"],
        r"elevenlabs[_\-.]?(?:api[_\-.]?)?key|xi[_\-]api[_\-]key",
        "(?:sk_)?[a-f0-9]{32,48}"
    ),
    tok!(
        "fireworks-api-key", "Fireworks AI API key", High,
        ["fw_"],
        "fw_[A-Za-z0-9]{24}"
    ),
    // --- Package registries --------------------------------------------------------------------
    tok!(
        "npm-access-token", "npm access token", High,
        ["npm_"],
        "npm_[0-9A-Za-z]{36}",
        Crc32Base62
    ),
    raw!(
        "pypi-upload-token", "PyPI upload token", High,
        // The fixed part is the macaroon header, base64 of "pypi.org" / "test.pypi.org".
        ["pypi-ageichlwas5vcmc", "pypi-agendgvzdc5wexbplm9yzw"],
        r"(?-u)(?P<secret>pypi-(?:AgEIcHlwaS5vcmc|AgENdGVzdC5weXBpLm9yZw)[0-9A-Za-z_\-]{50,})",
        PypiMacaroon
    ),
    tok!(
        "rubygems-api-key", "RubyGems API key", High,
        ["rubygems_"],
        "rubygems_[a-f0-9]{48}"
    ),
    tok!(
        "nuget-api-key", "NuGet API key", High,
        ["oy2"],
        "oy2[a-z0-9]{43}"
    ),
    tok!(
        "crates-io-token", "crates.io API token", High,
        ["cio"],
        "cio[A-Za-z0-9]{32}"
    ),
    tok!(
        "docker-hub-pat", "Docker Hub personal access token", High,
        ["dckr_pat_", "dckr_oat_"],
        r"dckr_(?:pat|oat)_[A-Za-z0-9_\-]{27,}"
    ),
    tok!(
        "jfrog-api-key", "JFrog Artifactory API key", High,
        ["akcp"],
        "AKCp[A-Za-z0-9]{69}"
    ),
    tok!(
        "jfrog-reference-token", "JFrog reference token", High,
        ["cmvmdgtu"],
        "cmVmdGtu[A-Za-z0-9]{56}"
    ),
    ctx!(
        "artifactory-password", "Artifactory password or API key", High,
        ["artifactory"],
        r"artifactory[_\-.]?(?:password|api[_\-]?key|token)",
        r"[A-Za-z0-9+/=_\-]{16,}"
    ),
    tok!(
        "clojars-token", "Clojars deploy token", High,
        ["clojars_"],
        "CLOJARS_[a-z0-9]{60}"
    ),
    ctx!(
        "hex-api-key", "Hex.pm API key", High,
        ["hex_api_key", "hexpm", "hex_key"],
        r"hex[_\-]api[_\-]key|hexpm|hex[_\-]key",
        "[a-f0-9]{32}"
    ),
    tok!(
        "github-packages-token", "GitHub token for GitHub Packages (npmrc / nuget / maven)", Critical,
        ["npm.pkg.github.com/:_authtoken="],
        "npm\\.pkg\\.github\\.com/:_authToken=[A-Za-z0-9_]{36,}"
    ),
    // --- Databases -----------------------------------------------------------------------------
    tok!(
        "planetscale-token", "PlanetScale service token", Critical,
        ["pscale_tkn_"],
        r"pscale_tkn_[A-Za-z0-9=\-_.]{32,64}"
    ),
    tok!(
        "planetscale-password", "PlanetScale database password", Critical,
        ["pscale_pw_"],
        r"pscale_pw_[A-Za-z0-9=\-_.]{32,64}"
    ),
    tok!(
        "planetscale-oauth-token", "PlanetScale OAuth token", Critical,
        ["pscale_oauth_"],
        r"pscale_oauth_[A-Za-z0-9=\-_.]{32,64}"
    ),
    tok!(
        "supabase-access-token", "Supabase personal access token", Critical,
        ["sbp_"],
        "sbp_[a-f0-9]{40}"
    ),
    tok!(
        "supabase-secret-key", "Supabase secret API key", Critical,
        ["sb_secret_"],
        r"sb_secret_[A-Za-z0-9_\-]{31,}"
    ),
    tok!(
        "neon-api-key", "Neon API key", Critical,
        ["napi_"],
        "napi_[a-z0-9]{64}"
    ),
    ctx!(
        "mongodb-atlas-private-key", "MongoDB Atlas API private key", Critical,
        ["atlas", "mongodb"],
        r"(?:mongodb[_\-.]?)?atlas[_\-.]?(?:api[_\-.]?)?private[_\-.]?key|mongodb[_\-.]?private[_\-.]?key",
        uuid!()
    ),
    tok!(
        "databricks-token", "Databricks access token", Critical,
        ["dapi"],
        r"dapi[a-f0-9]{32}(?:-\d)?"
    ),
    raw!(
        "snowflake-credential", "Snowflake password or key passphrase", Critical,
        ["snowflake", "snowsql"],
        r#"(?im-u)(?:snowflake|snowsql)[0-9A-Za-z_.\-]{0,20}(?:password|pwd|passphrase|token)["']?[ \t]*(?::=|=>|=|:)[ \t]*["'`]?(?P<secret>[^\s"'`,;]{8,128})"#,
        Password
    ),
    ctx!(
        "influxdb-token", "InfluxDB API token", High,
        ["influx"],
        r"influx(?:db)?[_\-.]?(?:admin[_\-.]?)?token",
        r"[A-Za-z0-9_\-]{86}=="
    ),
    // --- Observability -------------------------------------------------------------------------
    ctx!(
        "datadog-api-key", "Datadog API key", High,
        ["datadog", "dd_api", "dd-api", "ddapi"],
        r"(?:datadog|dd)[_\-.]?api[_\-.]?key",
        "[a-f0-9]{32}"
    ),
    ctx!(
        "datadog-app-key", "Datadog application key", High,
        ["datadog", "dd_app", "dd-app", "ddapp"],
        r"(?:datadog|dd)[_\-.]?(?:app|application)[_\-.]?key",
        "[a-f0-9]{40}"
    ),
    tok!(
        "new-relic-user-key", "New Relic user API key", High,
        ["nrak-"],
        "NRAK-[A-Z0-9]{27}"
    ),
    tok!(
        "new-relic-insights-key", "New Relic Insights insert/query key", High,
        ["nrii-", "nriq-"],
        r"NRI[IQ]-[A-Za-z0-9_\-]{32}"
    ),
    tok!(
        "new-relic-browser-key", "New Relic browser API token", Medium,
        ["nrjs-"],
        "NRJS-[a-f0-9]{19}"
    ),
    tok!(
        "new-relic-license-key", "New Relic ingest license key", High,
        ["nral"],
        "[a-f0-9]{36}NRAL"
    ),
    tok!(
        "new-relic-admin-key", "New Relic admin API key", High,
        ["nraa-"],
        "NRAA-[a-f0-9]{27}"
    ),
    tok!(
        "sentry-user-token", "Sentry user auth token", High,
        ["sntryu_"],
        "sntryu_[a-f0-9]{64}"
    ),
    tok!(
        "sentry-org-token", "Sentry organization auth token", High,
        ["sntrys_"],
        r"sntrys_eyJ[A-Za-z0-9+/=_\-]{60,}"
    ),
    tok!(
        "sentry-dsn", "Sentry DSN", Low,
        ["sentry.io/", "@o"],
        r"https://[a-f0-9]{32}@o?\d*\.?ingest\.(?:[a-z]{2}\.)?sentry\.io/\d+"
    ),
    tok!(
        "grafana-cloud-token", "Grafana Cloud access policy token", High,
        ["glc_"],
        r"glc_[A-Za-z0-9+/]{32,400}={0,2}"
    ),
    tok!(
        "grafana-service-account-token", "Grafana service account token", High,
        ["glsa_"],
        "glsa_[A-Za-z0-9]{32}_[a-f0-9]{8}"
    ),
    tok!(
        "grafana-api-key", "Grafana API key (legacy)", High,
        ["eyjrijoi"],
        r"eyJrIjoi[A-Za-z0-9]{70,400}={0,2}"
    ),
    ctx!(
        "honeycomb-api-key", "Honeycomb API key", High,
        ["honeycomb"],
        r"honeycomb[_\-.]?(?:api[_\-.]?|write[_\-.]?|ingest[_\-.]?)?key",
        r"hc[a-z]i[kc]_[a-z0-9]{20,}|[A-Za-z0-9]{22}|[a-f0-9]{32}"
    ),
    tok!(
        "dynatrace-token", "Dynatrace API token", High,
        ["dt0c01.", "dt0s01.", "dt0a01."],
        r"dt0[acs]\d\d\.[A-Z0-9]{24}\.[A-Z0-9]{64}"
    ),
    ctx!(
        "pagerduty-api-key", "PagerDuty API key", High,
        ["pagerduty", "pager_duty"],
        r"pager[_\-.]?duty[_\-.]?(?:api[_\-.]?|integration[_\-.]?|routing[_\-.]?)?(?:key|token)",
        r"u\+[A-Za-z0-9_+\-]{18}|[A-Za-z0-9_+\-]{20}"
    ),
    ctx!(
        "splunk-hec-token", "Splunk HEC or API token", High,
        ["splunk", "hec_token", "hec-token"],
        r"splunk[_\-.]?(?:hec[_\-.]?)?token|hec[_\-]token",
        uuid!()
    ),
    ctx!(
        "opsgenie-api-key", "Opsgenie API key", High,
        ["opsgenie"],
        r"opsgenie[_\-.]?(?:api[_\-.]?)?key",
        uuid!()
    ),
    ctx!(
        "rollbar-token", "Rollbar access token", Medium,
        ["rollbar"],
        r"rollbar[_\-.]?(?:access[_\-.]?|server[_\-.]?)?token",
        "[a-f0-9]{32}"
    ),
    ctx!(
        "sumologic-access-key", "Sumo Logic access key", High,
        ["sumo"],
        r"sumo[_\-]?(?:logic)?[_\-]?(?:access)?[_\-]?key",
        "[A-Za-z0-9]{64}"
    ),
    // --- SaaS and developer platforms ---------------------------------------------------------
    tok!(
        "firebase-fcm-server-key", "Firebase Cloud Messaging server key", High,
        [":apa91b"],
        r"AAAA[A-Za-z0-9_\-]{7}:APA91b[A-Za-z0-9_\-]{100,}"
    ),
    tok!(
        "mapbox-secret-token", "Mapbox secret access token", High,
        ["sk.eyj"],
        r"sk\.eyJ[A-Za-z0-9_\-]{50,}\.[A-Za-z0-9_\-]{20,}"
    ),
    ctx!(
        "algolia-admin-key", "Algolia admin API key", High,
        ["algolia"],
        r"algolia[_\-.]?(?:admin|write)[_\-.]?(?:api[_\-.]?)?key",
        "[a-f0-9]{32}"
    ),
    tok!(
        "contentful-pat", "Contentful personal access token", High,
        ["cfpat-"],
        r"CFPAT-[A-Za-z0-9_\-]{43}"
    ),
    ctx!(
        "contentful-delivery-token", "Contentful delivery or preview token", Medium,
        ["contentful"],
        r"contentful[_\-.]?(?:delivery|preview|management|access)[_\-.]?(?:api[_\-.]?)?token",
        r"[A-Za-z0-9_\-]{43}"
    ),
    ctx!(
        "asana-pat", "Asana personal access token", High,
        ["asana"],
        r"asana[_\-.]?(?:access[_\-.]?|personal[_\-.]?)?token|asana[_\-.]?pat",
        r"\d/\d{16}(?:/\d{16})?:[A-Za-z0-9]{32}"
    ),
    tok!(
        "linear-api-key", "Linear API key", High,
        ["lin_api_"],
        "lin_api_[A-Za-z0-9]{40}"
    ),
    tok!(
        "linear-oauth-token", "Linear OAuth token", High,
        ["lin_oauth_"],
        "lin_oauth_[a-f0-9]{64}"
    ),
    tok!(
        "notion-integration-token", "Notion integration token", High,
        ["secret_", "ntn_"],
        "secret_[A-Za-z0-9]{43}|ntn_[A-Za-z0-9]{46}"
    ),
    tok!(
        "airtable-pat", "Airtable personal access token", High,
        ["pat"],
        r"pat[A-Za-z0-9]{14}\.[a-f0-9]{64}"
    ),
    ctx!(
        "airtable-api-key", "Airtable API key (legacy)", High,
        ["airtable"],
        r"airtable[_\-.]?(?:api[_\-.]?)?key",
        "key[A-Za-z0-9]{14}"
    ),
    tok!(
        "figma-pat", "Figma personal access token", High,
        ["figd_"],
        r"figd_[A-Za-z0-9_\-]{40}"
    ),
    tok!(
        "dropbox-access-token", "Dropbox access token", High,
        ["sl."],
        r"sl\.(?:u\.)?[A-Za-z0-9_\-]{130,}"
    ),
    ctx!(
        "dropbox-long-lived-token", "Dropbox long-lived access token", High,
        ["dropbox"],
        "dropbox",
        r"[a-z0-9]{11}AAAAAAAAAA[a-z0-9_\-]{43}"
    ),
    ctx!(
        "twitch-api-token", "Twitch API token", High,
        ["twitch"],
        r"twitch[_\-.]?(?:client[_\-.]?secret|oauth[_\-.]?token|access[_\-.]?token|token)",
        "[a-z0-9]{30}"
    ),
    tok!(
        "facebook-access-token", "Facebook / Meta access token", High,
        ["eaa"],
        "EAA[A-Za-z0-9]{90,}"
    ),
    ctx!(
        "facebook-app-secret", "Facebook / Meta app secret", High,
        ["facebook", "fb_app", "fb-app", "fbapp", "fb_secret", "fb-secret", "fbsecret", "meta_app", "meta-app", "metaapp", "meta_secret", "meta-secret", "metasecret"],
        r"(?:facebook|fb|meta)[_\-.]?(?:app[_\-.]?)?secret",
        "[a-f0-9]{32}"
    ),
    tok!(
        "twitter-bearer-token", "Twitter / X bearer token", High,
        ["aaaaaaaaaaaaaaaaaaaaa"],
        "A{21}[A-Za-z0-9%]{30,}"
    ),
    ctx!(
        "twitter-api-secret", "Twitter / X API key or secret", High,
        ["twitter"],
        r"twitter[_\-.]?(?:api[_\-.]?|consumer[_\-.]?|access[_\-.]?)?(?:secret|key|token)",
        "[A-Za-z0-9]{50}|[A-Za-z0-9]{25}"
    ),
    ctx!(
        "linkedin-client-secret", "LinkedIn client secret", High,
        ["linkedin"],
        r"linkedin[_\-.]?(?:client[_\-.]?)?secret",
        "[A-Za-z0-9]{16}"
    ),
    tok!(
        "postman-api-key", "Postman API key", High,
        ["pmak-"],
        "PMAK-[a-f0-9]{24}-[a-f0-9]{34}"
    ),
    tok!(
        "sourcegraph-token", "Sourcegraph access token", High,
        ["sgp_"],
        "sgp_(?:[a-f0-9]{16}_|local_)?[a-f0-9]{40}"
    ),
    tok!(
        "tailscale-key", "Tailscale auth or API key", High,
        ["tskey-"],
        "tskey-[a-z]+-[A-Za-z0-9]{6,}-[A-Za-z0-9]{20,}"
    ),
    ctx!(
        "ngrok-authtoken", "ngrok authtoken or API key", High,
        ["ngrok"],
        r"ngrok[_\-.]?(?:auth[_\-.]?token|api[_\-.]?key|token)",
        "[0-9A-Za-z]{25,27}_[0-9A-Za-z]{20,21}"
    ),
    tok!(
        "frameio-token", "Frame.io API token", High,
        ["fio-u-"],
        r"fio-u-[A-Za-z0-9_\-=]{64}"
    ),
    tok!(
        "typeform-token", "Typeform personal access token", High,
        ["tfp_"],
        r"tfp_[A-Za-z0-9_\-.=]{40,}"
    ),
    tok!(
        "prefect-api-key", "Prefect API key", High,
        ["pnu_"],
        "pnu_[A-Za-z0-9]{36}"
    ),
    tok!(
        "readme-api-key", "ReadMe API key", High,
        ["rdme_"],
        "rdme_[a-z0-9]{70}"
    ),
    tok!(
        "scalingo-token", "Scalingo API token", High,
        ["tk-us-"],
        r"tk-us-[A-Za-z0-9_\-]{48}"
    ),
    ctx!(
        "hubspot-api-key", "HubSpot API key or private app token", High,
        ["hubspot", "hapikey"],
        r"hubspot[_\-.]?(?:api[_\-.]?key|token|access[_\-.]?token)|hapikey",
        uuid!()
    ),
    tok!(
        "hubspot-private-app-token", "HubSpot private app token", High,
        ["pat-na1-", "pat-eu1-"],
        "pat-(?:na|eu)1-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    ctx!(
        "segment-write-key", "Segment write key or token", Medium,
        ["segment"],
        r"segment[_\-.]?(?:write[_\-.]?key|api[_\-.]?key|token)",
        "[A-Za-z0-9]{32}"
    ),
    ctx!(
        "trello-api-token", "Trello API token", High,
        ["trello"],
        r"trello[_\-.]?(?:api[_\-.]?)?(?:token|secret)",
        "[a-f0-9]{64}|ATTA[A-Za-z0-9]{60,}"
    ),
    ctx!(
        "mapquest-or-maps-key", "Maps API key (Here, TomTom, MapQuest)", Medium,
        ["here_api", "tomtom", "mapquest"],
        r"(?:here|tomtom|mapquest)[_\-.]?api[_\-.]?key",
        r"[A-Za-z0-9_\-]{32,43}"
    ),
    ctx!(
        "confluent-api-secret", "Confluent Cloud API secret", High,
        ["confluent"],
        r"confluent[_\-.]?(?:cloud[_\-.]?)?(?:api[_\-.]?)?secret",
        r"[A-Za-z0-9+/]{64}"
    ),
    ctx!(
        "fastly-api-token", "Fastly API token", High,
        ["fastly"],
        r"fastly[_\-.]?(?:api[_\-.]?)?(?:token|key)",
        r"[A-Za-z0-9_\-]{32}"
    ),
    ctx!(
        "firebase-secret", "Firebase database secret", High,
        ["firebase"],
        r"firebase[_\-.]?(?:secret|token|database[_\-.]?secret)",
        "[A-Za-z0-9]{40}"
    ),
    ctx!(
        "github-oauth-client-secret", "GitHub OAuth app client secret", Critical,
        ["github"],
        r"github[_\-.]?(?:oauth[_\-.]?)?client[_\-.]?secret",
        "[a-f0-9]{40}"
    ),
    ctx!(
        "gitter-token", "Gitter access token", Medium,
        ["gitter"],
        r"gitter[_\-.]?(?:access[_\-.]?)?token",
        "[a-f0-9]{40}"
    ),
    ctx!(
        "kraken-api-key", "Kraken / crypto exchange API secret", High,
        ["kraken", "binance", "coinbase", "bitfinex"],
        r"(?:kraken|binance|coinbase|bitfinex)[_\-.]?(?:api[_\-.]?)?(?:secret|key)",
        r"[A-Za-z0-9+/=_\-]{64,88}"
    ),
    ctx!(
        "etsy-or-shop-api-key", "Etsy / Squarespace / Wix API key", Medium,
        ["etsy", "squarespace", "wix_"],
        r"(?:etsy|squarespace|wix)[_\-.]?(?:api[_\-.]?)?(?:key|token)",
        r"[A-Za-z0-9_\-.]{24,}"
    ),
    // --- Structured and generic ---------------------------------------------------------------
    raw!(
        "jwt", "JSON Web Token", Medium,
        ["eyj"],
        r"(?-u)\b(?P<secret>eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{3,}\.[A-Za-z0-9_\-]{16,})",
        Jwt
    ),
    raw!(
        "authorization-header", "credential in an Authorization header", Medium,
        ["authorization"],
        r#"(?i-u)authorization["']?[ \t]*[:=][ \t]*["'`]?(?:bearer|token|bot|apikey|sso-key)[ \t]+(?-i:(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*))"#,
        Bearer
    ),
    raw!(
        "api-key-header", "credential in an API key header", Medium,
        ["x-api-key", "x-api-token", "x-auth-token", "x-access-token", "x-apikey"],
        r#"(?i-u)\bx-(?:api-key|api-token|auth-token|access-token|apikey)["']?[ \t]*[:=][ \t]*["'`]?(?-i:(?P<secret>[A-Za-z0-9\-._~+/=]{12,}))"#,
        Bearer
    ),
    raw!(
        "basic-auth-header", "Basic credentials in an Authorization header", Medium,
        ["basic"],
        r"(?m-u)\b(?i:basic)[ \t]+(?P<secret>[A-Za-z0-9+/]{8,}={0,2})(?:[^A-Za-z0-9+/=]|$)",
        BasicAuth
    ),
    raw!(
        "curl-user-password", "password on a curl --user argument", Medium,
        ["curl"],
        r#"(?-u)\bcurl\b[^\r\n]*?\s(?:-u|--user)[ \t=]*["']?[^\s:'"$]+:(?P<secret>[^\s'"]{4,128})"#,
        Password
    ),
    raw!(
        "netrc-password", ".netrc password", Medium,
        ["machine"],
        r"(?m-u)\bmachine[ \t]+\S+[ \t\r\n]+(?:login[ \t]+\S+[ \t\r\n]+)?password[ \t]+(?P<secret>\S+)",
        Password
    ),
    raw!(
        "mysql-cli-password", "password on a mysql command line (-p)", Medium,
        ["mysql"],
        r#"(?-u)\bmysql(?:dump|admin|import|sh)?\b[^\r\n]*?[ \t]-p(?P<secret>[^\s'"$-][^\s'"]{3,127})"#,
        Password
    ),
    raw!(
        "sshpass-password", "password on an sshpass command line", Medium,
        ["sshpass"],
        r#"(?-u)\bsshpass[ \t]+-p[ \t]*["']?(?P<secret>[^\s'"$][^\s'"]{3,127})"#,
        Password
    ),
    raw!(
        "docker-login-password", "password on a docker login command line", Medium,
        ["docker login"],
        r#"(?-u)\bdocker[ \t]+login\b[^\r\n]*?[ \t](?:-p|--password)(?:[ \t]+|=)["']?(?P<secret>[^\s'"$][^\s'"]{3,127})"#,
        Password
    ),
    raw!(
        "url-query-secret", "credential in a URL query string", Medium,
        ["password=", "passwd=", "pwd=", "pass=", "key=", "token=", "secret=", "auth="],
        r#"(?-u)[?&](?P<name>[A-Za-z0-9_\-]*(?i:passw(?:or)?d|pwd|pass|api[_\-]?key|apikey|token|secret|auth))=(?P<secret>[^&\s"'#<>;]{4,256})"#,
        Generic
    ),
    raw!(
        "connection-string-password", "password in a connection string", Medium,
        ["password=", "pwd="],
        r#"(?i-u)(?:user[ ]?id|uid|user(?:name)?|server|data[ ]source|host|database|initial[ ]catalog|addr(?:ess)?)[ \t]*=[^;\r\n"']*;(?:[ \t]*[A-Za-z ]+[ \t]*=[^;\r\n"']*;)*?[ \t]*(?:password|pwd)[ \t]*=[ \t]*(?-i:(?P<secret>[^;\r\n"'\s]{3,128}))"#,
        Password
    ),
    raw!(
        "url-password", "password in URL", Medium,
        ["://"],
        r#"(?-u)\b[A-Za-z][A-Za-z0-9+.\-]{1,31}://[^\s:/?#@"'<>\[\]]{0,256}:(?P<secret>[^\s/?#@"'<>]{1,256})@[A-Za-z0-9\[]"#,
        UrlPassword
    ),
    raw!(
        "generic-secret-xml", "hardcoded secret in an XML element or setting", Medium,
        ["password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "key", "credential"],
        r#"(?i-u)(?:<(?P<name>[A-Za-z0-9_.:\-]*(?:passw(?:or)?d|pwd|secret|token|api[_.\-]?key|credential)[A-Za-z0-9_.\-]*)[ \t]*>[ \t]*|<add[ \t]+(?:key|name)[ \t]*=[ \t]*"(?P<name2>[^"]*(?:passw(?:or)?d|pwd|secret|token|api[_.\-]?key|credential)[^"]*)"[ \t]+value[ \t]*=[ \t]*")(?-i:(?P<secret>[^<"\s]{4,256}))[ \t]*(?:</|")"#,
        Generic
    ),
    raw!(
        "generic-secret-assignment", "hardcoded secret", Medium,
        ["password", "passwd", "pwd", "pass", "secret", "token", "api_key", "api-key", "api.key",
         "apikey", "access_key", "access-key", "access.key", "accesskey", "auth", "credential",
         "key"],
        concat!(
            r#"(?-u)(?P<name>[A-Za-z0-9_.\-]*(?i:"#,
            secret_names!(),
            r#")[A-Za-z0-9_.\-]*)["'\]]?[ \t]*(?::=|=>|=|:|,)[ \t]*(?:[a-z]?["'`])(?P<secret>[^"'`\r\n]{4,256})["'`]"#
        ),
        Generic
    ),
    raw!(
        "generic-secret-unquoted", "hardcoded secret (unquoted value)", Medium,
        ["password", "passwd", "pwd", "pass", "secret", "token", "api_key", "api-key", "api.key",
         "apikey", "access_key", "access-key", "access.key", "accesskey", "auth", "credential",
         "key"],
        concat!(
            r#"(?m-u)(?P<name>[A-Za-z0-9_.\-]*(?i:"#,
            secret_names!(),
            r#")[A-Za-z0-9_.\-]*)[ \t]*(?::=|=|:)[ \t]*(?P<secret>[^\s"'`<>#][^\s"'`<>]*[^\s"'`<>,;)\]}])[ \t]*(?:[#;][^\r\n]*)?\r?$"#
        ),
        Generic,
        Config
    ),
];
