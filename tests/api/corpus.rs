//! Test corpora generated at run time (nothing is downloaded): a tree with planted secrets of
//! every rule family plus look-alikes that must not match, lockfiles of every ecosystem pinning
//! known-vulnerable and fixed versions, and an OSV fixture directory in the real OSV schema.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

/// A small deterministic generator (xorshift64*), so corpora are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` characters from `alphabet`.
    pub fn string(&mut self, n: usize, alphabet: &str) -> String {
        let a = alphabet.as_bytes();
        (0..n)
            .map(|_| a[(self.next() % a.len() as u64) as usize] as char)
            .collect()
    }
}

pub const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const UPPER_DIGITS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
pub const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// One planted secret: the rule that must report it, where, and the value that must never
/// appear in clear in the bundle.
#[derive(Debug, Clone)]
pub struct Planted {
    pub rule: &'static str,
    pub path: String,
    pub line: u32,
    pub value: String,
}

/// Files with one planted secret of every rule family, and files of look-alikes.
pub struct SecretsCorpus {
    pub files: Vec<(String, String)>,
    pub planted: Vec<Planted>,
}

impl SecretsCorpus {
    /// `(rule, path, line)` of every planted secret.
    pub fn expected(&self) -> BTreeSet<(String, String, u32)> {
        self.planted
            .iter()
            .map(|p| (p.rule.to_string(), p.path.clone(), p.line))
            .collect()
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// CRC32 (IEEE) of `data`, as GitHub and npm tokens carry it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A GitHub or npm token in its documented shape: prefix, 30 random base62 characters and the
/// CRC32 of those in 6 base62 digits (every real token carries it).
fn checksummed(prefix: &str, r: &mut Rng) -> String {
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = r.string(30, ALNUM);
    let mut n = crc32(body.as_bytes());
    let mut tail = [b'0'; 6];
    for slot in tail.iter_mut().rev() {
        *slot = B62[(n % 62) as usize];
        n /= 62;
    }
    format!("{prefix}{body}{}", String::from_utf8_lossy(&tail))
}

pub fn secrets_corpus(seed: u64) -> SecretsCorpus {
    let mut r = Rng::new(seed);
    let mut files = Vec::new();
    let mut planted = Vec::new();
    let mut plant = |rule: &'static str, path: &str, before: &str, value: String, after: &str| {
        // Three lines of ordinary code, then the secret on line 4.
        let text = format!(
            "# configuration for the {rule} integration\nimport os\n\n{before}{value}{after}\n\nprint('done')\n"
        );
        files.push((path.to_string(), text));
        planted.push(Planted {
            rule,
            path: path.to_string(),
            line: 4,
            value,
        });
    };
    plant(
        "aws-access-key-id",
        "src/aws.py",
        "AWS_ACCESS_KEY_ID = \"",
        format!("AKIA{}", r.string(16, UPPER_DIGITS)),
        "\"",
    );
    let aws_secret = format!("{}7{}", r.string(20, ALNUM), r.string(19, ALNUM));
    plant(
        "aws-secret-access-key",
        "config/aws.ini",
        "aws_secret_access_key = ",
        aws_secret,
        "",
    );
    plant(
        "github-pat",
        "ci/github.sh",
        "export GH_TOKEN=",
        checksummed("ghp_", &mut r),
        "",
    );
    plant(
        "github-fine-grained-pat",
        "ci/github_fg.sh",
        "export GH_FG=",
        format!("github_pat_{}_{}", r.string(22, ALNUM), r.string(59, ALNUM)),
        "",
    );
    plant(
        "github-oauth-token",
        "ci/oauth.sh",
        "export GHO=",
        checksummed("gho_", &mut r),
        "",
    );
    plant(
        "github-app-token",
        "ci/app.sh",
        "export GHS=",
        checksummed("ghs_", &mut r),
        "",
    );
    plant(
        "github-refresh-token",
        "ci/refresh.sh",
        "export GHR=",
        checksummed("ghr_", &mut r),
        "",
    );
    plant(
        "gitlab-pat",
        "ci/gitlab.sh",
        "export GL=",
        format!("glpat-{}", r.string(20, ALNUM)),
        "",
    );
    plant(
        "stripe-live-key",
        "billing/live.rb",
        "Stripe.api_key = '",
        format!("sk_live_{}", r.string(24, ALNUM)),
        "'",
    );
    plant(
        "stripe-test-key",
        "billing/test.rb",
        "Stripe.api_key = '",
        format!("sk_test_{}", r.string(24, ALNUM)),
        "'",
    );
    plant(
        "slack-webhook-url",
        "ops/slack.yml",
        "webhook: ",
        format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            r.string(8, UPPER_DIGITS),
            r.string(8, UPPER_DIGITS),
            r.string(24, ALNUM)
        ),
        "",
    );
    plant(
        "slack-token",
        "ops/slack_bot.py",
        "SLACK = \"",
        format!(
            "xoxb-{}-{}",
            r.string(12, "0123456789"),
            r.string(24, ALNUM)
        ),
        "\"",
    );
    plant(
        "npm-access-token",
        "web/.npmrc",
        "//registry.npmjs.org/:_authToken=",
        checksummed("npm_", &mut r),
        "",
    );
    plant(
        "pypi-upload-token",
        "pkg/.pypirc",
        "password = ",
        format!("pypi-AgEIcHlwaS5vcmc{}", r.string(60, ALNUM)),
        "",
    );
    plant(
        "google-api-key",
        "web/maps.js",
        "const key = \"",
        format!("AIza{}", r.string(35, ALNUM)),
        "\";",
    );
    let jwt = format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(format!(r#"{{"sub":"{}","admin":true}}"#, r.string(10, ALNUM)).as_bytes()),
        r.string(
            43,
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    );
    plant("jwt", "web/session.ts", "const session = \"", jwt, "\";");
    plant(
        "url-password",
        "deploy/db.env",
        "DATABASE_URL=postgres://app:",
        r.string(18, ALNUM),
        "@db.internal.example.com:5432/app",
    );
    plant(
        "generic-secret-assignment",
        "src/settings.py",
        "API_TOKEN = \"",
        r.string(32, ALNUM),
        "\"",
    );

    // One plant for every other rule of the table, in its documented shape.
    const HEX: &str = "0123456789abcdef";
    const LOWER_DIGITS: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
    const DIGITS: &str = "0123456789";
    const B32: &str = "abcdefghijklmnopqrstuvwxyz234567";
    const AGE: &str = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";
    let uuid = |r: &mut Rng| {
        format!(
            "{}-{}-{}-{}-{}",
            r.string(8, HEX),
            r.string(4, HEX),
            r.string(4, HEX),
            r.string(4, HEX),
            r.string(12, HEX)
        )
    };
    let basic = |r: &mut Rng| {
        b64url(format!("deploy:{}7{}", r.string(10, ALNUM), r.string(4, ALNUM)).as_bytes())
            .replace('-', "+")
            .replace('_', "/")
    };
    let value = format!(
        "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo{}",
        r.string(200, B64)
    );
    plant(
        "kubeconfig-client-key",
        "plants/kubeconfig-client-key.py",
        "client_key_data = \"",
        value,
        "\"",
    );
    let value = format!(
        "LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZLS0tLS0K{}",
        r.string(200, B64)
    );
    plant(
        "private-key-base64",
        "plants/private-key-base64.py",
        "key_b64 = \"",
        value,
        "\"",
    );
    let value = format!("AGE-SECRET-KEY-1{}", r.string(58, AGE));
    plant(
        "age-secret-key",
        "plants/age-secret-key.py",
        "AGE = \"",
        value,
        "\"",
    );
    let value = format!("IQoJb3JpZ2luX2Vj{}", r.string(200, B64));
    plant(
        "aws-session-token",
        "plants/aws-session-token.py",
        "SESSION = \"",
        value,
        "\"",
    );
    let value = r.string(150, ALNUM);
    plant(
        "aws-session-token-assignment",
        "plants/aws-session-token-assignment.py",
        "aws_session_token = \"",
        value,
        "\"",
    );
    let value = format!(
        "amzn.mws.{}-{}-{}-{}-{}",
        r.string(8, HEX),
        r.string(4, HEX),
        r.string(4, HEX),
        r.string(4, HEX),
        r.string(12, HEX)
    );
    plant(
        "aws-mws-key",
        "plants/aws-mws-key.py",
        "MWS = \"",
        value,
        "\"",
    );
    let value = format!("ABSK{}", r.string(130, ALNUM));
    plant(
        "aws-bedrock-api-key",
        "plants/aws-bedrock-api-key.py",
        "BEDROCK = \"",
        value,
        "\"",
    );
    let value = format!("GOCSPX-{}", r.string(28, ALNUM));
    plant(
        "google-oauth-client-secret",
        "plants/google-oauth-client-secret.py",
        "GOOGLE_CS = \"",
        value,
        "\"",
    );
    let value = format!("ya29.{}", r.string(80, ALNUM));
    plant(
        "google-oauth-access-token",
        "plants/google-oauth-access-token.py",
        "GOOGLE_AT = \"",
        value,
        "\"",
    );
    let value = format!("1//0{}", r.string(60, ALNUM));
    plant(
        "google-oauth-refresh-token",
        "plants/google-oauth-refresh-token.py",
        "GOOGLE_RT = \"",
        value,
        "\"",
    );
    let value = format!("{}==", r.string(86, B64));
    plant(
        "azure-storage-account-key",
        "plants/azure-storage-account-key.py",
        "CONN = \"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=",
        value,
        ";EndpointSuffix=core.windows.net\"",
    );
    let value = format!("{}=", r.string(43, B64));
    plant(
        "azure-shared-access-key",
        "plants/azure-shared-access-key.py",
        "SB = \"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=",
        value,
        "\"",
    );
    let value = r.string(44, ALNUM);
    plant("azure-sas-token", "plants/azure-sas-token.py", "SAS = \"https://acct.blob.core.windows.net/c?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01&sig=", value, "%3D\"");
    let value = format!("{}8Q~{}", r.string(3, ALNUM), r.string(34, ALNUM));
    plant(
        "azure-ad-client-secret",
        "plants/azure-ad-client-secret.py",
        "AZ = \"",
        value,
        "\"",
    );
    let value = r.string(52, B32);
    plant(
        "azure-devops-pat",
        "plants/azure-devops-pat.py",
        "AZURE_DEVOPS_PAT = \"",
        value,
        "\"",
    );
    let value = format!("dop_v1_{}", r.string(64, HEX));
    plant(
        "digitalocean-pat",
        "plants/digitalocean-pat.py",
        "DO = \"",
        value,
        "\"",
    );
    let value = format!("doo_v1_{}", r.string(64, HEX));
    plant(
        "digitalocean-oauth-token",
        "plants/digitalocean-oauth-token.py",
        "DO = \"",
        value,
        "\"",
    );
    let value = format!("dor_v1_{}", r.string(64, HEX));
    plant(
        "digitalocean-refresh-token",
        "plants/digitalocean-refresh-token.py",
        "DO = \"",
        value,
        "\"",
    );
    let value = format!("LTAI{}", r.string(20, ALNUM));
    plant(
        "alibaba-access-key-id",
        "plants/alibaba-access-key-id.py",
        "ALI = \"",
        value,
        "\"",
    );
    let value = r.string(30, ALNUM);
    plant(
        "alibaba-access-key-secret",
        "plants/alibaba-access-key-secret.py",
        "ALIBABA_ACCESS_KEY_SECRET = \"",
        value,
        "\"",
    );
    let value = format!("AKID{}", r.string(32, ALNUM));
    plant(
        "tencent-secret-id",
        "plants/tencent-secret-id.py",
        "TC = \"",
        value,
        "\"",
    );
    let value = r.string(44, ALNUM);
    plant(
        "ibm-cloud-api-key",
        "plants/ibm-cloud-api-key.py",
        "IBM_CLOUD_API_KEY = \"",
        value,
        "\"",
    );
    let value = r.string(20, ALNUM);
    plant(
        "oracle-cloud-auth-token",
        "plants/oracle-cloud-auth-token.py",
        "OCI_AUTH_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(64, HEX);
    plant(
        "linode-token",
        "plants/linode-token.py",
        "LINODE_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("HRKU-AA{}", r.string(58, ALNUM));
    plant(
        "heroku-api-key-v2",
        "plants/heroku-api-key-v2.py",
        "HK = \"",
        value,
        "\"",
    );
    let value = uuid(&mut r);
    plant(
        "heroku-api-key",
        "plants/heroku-api-key.py",
        "HEROKU_API_KEY = \"",
        value,
        "\"",
    );
    let value = r.string(40, ALNUM);
    plant(
        "cloudflare-api-token",
        "plants/cloudflare-api-token.py",
        "CLOUDFLARE_API_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(37, HEX);
    plant(
        "cloudflare-global-api-key",
        "plants/cloudflare-global-api-key.py",
        "CLOUDFLARE_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("v1.0-{}-{}", r.string(24, HEX), r.string(146, HEX));
    plant(
        "cloudflare-origin-ca-key",
        "plants/cloudflare-origin-ca-key.py",
        "CF = \"",
        value,
        "\"",
    );
    let value = r.string(24, ALNUM);
    plant(
        "vercel-token",
        "plants/vercel-token.py",
        "VERCEL_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("nfp_{}", r.string(36, ALNUM));
    plant(
        "netlify-pat",
        "plants/netlify-pat.py",
        "NF = \"",
        value,
        "\"",
    );
    let value = r.string(43, ALNUM);
    plant(
        "netlify-token",
        "plants/netlify-token.py",
        "NETLIFY_AUTH_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("fo1_{}", r.string(43, ALNUM));
    plant(
        "flyio-token",
        "plants/flyio-token.py",
        "FLY = \"",
        value,
        "\"",
    );
    let value = uuid(&mut r);
    plant(
        "scaleway-secret-key",
        "plants/scaleway-secret-key.py",
        "SCW_SECRET_KEY = \"",
        value,
        "\"",
    );
    let value = r.string(64, ALNUM);
    plant(
        "hetzner-cloud-token",
        "plants/hetzner-cloud-token.py",
        "HCLOUD_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(36, UPPER_DIGITS);
    plant(
        "vultr-api-key",
        "plants/vultr-api-key.py",
        "VULTR_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("AQVN{}", r.string(36, ALNUM));
    plant(
        "yandex-api-key",
        "plants/yandex-api-key.py",
        "YC = \"",
        value,
        "\"",
    );
    let value = format!("gldt-{}", r.string(20, ALNUM));
    plant(
        "gitlab-deploy-token",
        "plants/gitlab-deploy-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("glrt-{}", r.string(20, ALNUM));
    plant(
        "gitlab-runner-token",
        "plants/gitlab-runner-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("GR1348941{}", r.string(20, ALNUM));
    plant(
        "gitlab-runner-registration-token",
        "plants/gitlab-runner-registration-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("glptt-{}", r.string(40, HEX));
    plant(
        "gitlab-pipeline-trigger-token",
        "plants/gitlab-pipeline-trigger-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("glsoat-{}", r.string(20, ALNUM));
    plant(
        "gitlab-scim-token",
        "plants/gitlab-scim-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("gloas-{}", r.string(64, ALNUM));
    plant(
        "gitlab-oauth-app-secret",
        "plants/gitlab-oauth-app-secret.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("glcbt-{}_{}", r.string(3, ALNUM), r.string(20, ALNUM));
    plant(
        "gitlab-ci-job-token",
        "plants/gitlab-ci-job-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("glimt-{}", r.string(25, ALNUM));
    plant(
        "gitlab-incoming-mail-token",
        "plants/gitlab-incoming-mail-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("glft-{}", r.string(20, ALNUM));
    plant(
        "gitlab-feed-token",
        "plants/gitlab-feed-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("glffct-{}", r.string(20, ALNUM));
    plant(
        "gitlab-feature-flag-token",
        "plants/gitlab-feature-flag-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("glagent-{}", r.string(50, ALNUM));
    plant(
        "gitlab-agent-token",
        "plants/gitlab-agent-token.py",
        "GL = \"",
        value,
        "\"",
    );
    let value = format!("ATBB{}", r.string(32, ALNUM));
    plant(
        "bitbucket-app-password",
        "plants/bitbucket-app-password.py",
        "BB = \"",
        value,
        "\"",
    );
    let value = format!("ATATT3{}", r.string(186, ALNUM));
    plant(
        "atlassian-api-token",
        "plants/atlassian-api-token.py",
        "AT = \"",
        value,
        "\"",
    );
    let value = r.string(24, ALNUM);
    plant(
        "atlassian-api-token-legacy",
        "plants/atlassian-api-token-legacy.py",
        "JIRA_API_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(64, ALNUM);
    plant(
        "bitbucket-client-secret",
        "plants/bitbucket-client-secret.py",
        "BITBUCKET_CLIENT_SECRET = \"",
        value,
        "\"",
    );
    let value = format!("CCIPAT_{}_{}", r.string(22, ALNUM), r.string(40, HEX));
    plant(
        "circleci-personal-token",
        "plants/circleci-personal-token.py",
        "CC = \"",
        value,
        "\"",
    );
    let value = r.string(40, HEX);
    plant(
        "circleci-token",
        "plants/circleci-token.py",
        "CIRCLECI_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(22, ALNUM);
    plant(
        "travis-ci-token",
        "plants/travis-ci-token.py",
        "TRAVIS_API_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("bkua_{}", r.string(40, HEX));
    plant(
        "buildkite-token",
        "plants/buildkite-token.py",
        "BK = \"",
        value,
        "\"",
    );
    let value = r.string(32, ALNUM);
    plant(
        "drone-ci-token",
        "plants/drone-ci-token.py",
        "DRONE_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(34, HEX);
    plant(
        "jenkins-api-token",
        "plants/jenkins-api-token.py",
        "JENKINS_API_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("squ_{}", r.string(40, HEX));
    plant(
        "sonarqube-token",
        "plants/sonarqube-token.py",
        "SQ = \"",
        value,
        "\"",
    );
    let value = uuid(&mut r);
    plant(
        "codecov-token",
        "plants/codecov-token.py",
        "CODECOV_TOKEN = \"",
        value,
        "\"",
    );
    let value = uuid(&mut r);
    plant(
        "snyk-token",
        "plants/snyk-token.py",
        "SNYK_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("API-{}", r.string(26, UPPER_DIGITS));
    plant(
        "octopus-deploy-api-key",
        "plants/octopus-deploy-api-key.py",
        "OCTO = \"",
        value,
        "\"",
    );
    let value = format!(
        "pat.{}.{}.{}",
        r.string(22, ALNUM),
        r.string(24, HEX),
        r.string(20, ALNUM)
    );
    plant(
        "harness-pat",
        "plants/harness-pat.py",
        "HARNESS = \"",
        value,
        "\"",
    );
    let value = format!("sdk-{}", uuid(&mut r));
    plant(
        "launchdarkly-key",
        "plants/launchdarkly-key.py",
        "LD = \"",
        value,
        "\"",
    );
    let value = format!("{}.atlasv1.{}", r.string(14, ALNUM), r.string(67, ALNUM));
    plant(
        "terraform-cloud-token",
        "plants/terraform-cloud-token.py",
        "TFC = \"",
        value,
        "\"",
    );
    let value = format!("pul-{}", r.string(40, HEX));
    plant(
        "pulumi-access-token",
        "plants/pulumi-access-token.py",
        "PUL = \"",
        value,
        "\"",
    );
    let value = format!("dp.st.{}", r.string(43, ALNUM));
    plant(
        "doppler-token",
        "plants/doppler-token.py",
        "DP = \"",
        value,
        "\"",
    );
    let value = format!("hvs.{}", r.string(95, ALNUM));
    plant(
        "vault-service-token",
        "plants/vault-service-token.py",
        "VT = \"",
        value,
        "\"",
    );
    let value = format!("hvb.{}", r.string(150, ALNUM));
    plant(
        "vault-batch-token",
        "plants/vault-batch-token.py",
        "VT = \"",
        value,
        "\"",
    );
    let value = format!("s.{}", r.string(24, ALNUM));
    plant(
        "vault-token-legacy",
        "plants/vault-token-legacy.py",
        "VAULT_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("ops_eyJ{}", r.string(260, ALNUM));
    plant(
        "onepassword-service-account-token",
        "plants/onepassword-service-account-token.py",
        "OP = \"",
        value,
        "\"",
    );
    let value = format!(
        "A3-{}-{}-{}-{}-{}",
        r.string(6, UPPER_DIGITS),
        r.string(11, UPPER_DIGITS),
        r.string(5, UPPER_DIGITS),
        r.string(5, UPPER_DIGITS),
        r.string(5, UPPER_DIGITS)
    );
    plant(
        "onepassword-secret-key",
        "plants/onepassword-secret-key.py",
        "OPK = \"",
        value,
        "\"",
    );
    let value = format!(
        "st.{}.{}.{}",
        r.string(24, HEX),
        r.string(32, HEX),
        r.string(32, HEX)
    );
    plant(
        "infisical-token",
        "plants/infisical-token.py",
        "INF = \"",
        value,
        "\"",
    );
    let value = format!("00{}", r.string(40, ALNUM));
    plant(
        "okta-api-token",
        "plants/okta-api-token.py",
        "OKTA_API_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(64, ALNUM);
    plant(
        "auth0-client-secret",
        "plants/auth0-client-secret.py",
        "AUTH0_CLIENT_SECRET = \"",
        value,
        "\"",
    );
    let value = format!("whsec_{}", r.string(32, ALNUM));
    plant(
        "stripe-webhook-secret",
        "plants/stripe-webhook-secret.py",
        "WH = \"",
        value,
        "\"",
    );
    let value = format!("sq0atp-{}", r.string(22, ALNUM));
    plant(
        "square-access-token",
        "plants/square-access-token.py",
        "SQ = \"",
        value,
        "\"",
    );
    let value = format!("sq0csp-{}", r.string(43, ALNUM));
    plant(
        "square-oauth-secret",
        "plants/square-oauth-secret.py",
        "SQ = \"",
        value,
        "\"",
    );
    let value = format!(
        "access_token$production${}${}",
        r.string(16, LOWER_DIGITS),
        r.string(32, HEX)
    );
    plant(
        "braintree-access-token",
        "plants/braintree-access-token.py",
        "BT = \"",
        value,
        "\"",
    );
    let value = format!("E{}", r.string(79, ALNUM));
    plant(
        "paypal-client-secret",
        "plants/paypal-client-secret.py",
        "PAYPAL_CLIENT_SECRET = \"",
        value,
        "\"",
    );
    let value = format!("AQE{}", r.string(100, ALNUM));
    plant(
        "adyen-api-key",
        "plants/adyen-api-key.py",
        "ADYEN_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("rzp_live_{}", r.string(14, ALNUM));
    plant(
        "razorpay-key-id",
        "plants/razorpay-key-id.py",
        "RZP = \"",
        value,
        "\"",
    );
    let value = r.string(24, ALNUM);
    plant(
        "razorpay-key-secret",
        "plants/razorpay-key-secret.py",
        "RAZORPAY_KEY_SECRET = \"",
        value,
        "\"",
    );
    let value = format!("shpat_{}", r.string(32, HEX));
    plant(
        "shopify-access-token",
        "plants/shopify-access-token.py",
        "SH = \"",
        value,
        "\"",
    );
    let value = format!("shpca_{}", r.string(32, HEX));
    plant(
        "shopify-custom-app-token",
        "plants/shopify-custom-app-token.py",
        "SH = \"",
        value,
        "\"",
    );
    let value = format!("shppa_{}", r.string(32, HEX));
    plant(
        "shopify-private-app-token",
        "plants/shopify-private-app-token.py",
        "SH = \"",
        value,
        "\"",
    );
    let value = format!("shpss_{}", r.string(32, HEX));
    plant(
        "shopify-shared-secret",
        "plants/shopify-shared-secret.py",
        "SH = \"",
        value,
        "\"",
    );
    let value = format!("access-production-{}", uuid(&mut r));
    plant(
        "plaid-access-token",
        "plants/plaid-access-token.py",
        "PLAID = \"",
        value,
        "\"",
    );
    let value = r.string(30, HEX);
    plant(
        "plaid-secret",
        "plants/plaid-secret.py",
        "PLAID_SECRET = \"",
        value,
        "\"",
    );
    let value = format!("FLWSECK-{}-X", r.string(32, HEX));
    plant(
        "flutterwave-secret-key",
        "plants/flutterwave-secret-key.py",
        "FLW = \"",
        value,
        "\"",
    );
    let value = format!("FLWSECK_TEST{}", r.string(12, HEX));
    plant(
        "flutterwave-encryption-key",
        "plants/flutterwave-encryption-key.py",
        "FLW = \"",
        value,
        "\"",
    );
    let value = format!("EZAK{}", r.string(54, ALNUM));
    plant(
        "easypost-api-key",
        "plants/easypost-api-key.py",
        "EP = \"",
        value,
        "\"",
    );
    let value = format!("live_{}", r.string(40, ALNUM));
    plant(
        "gocardless-token",
        "plants/gocardless-token.py",
        "GOCARDLESS_ACCESS_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("shippo_live_{}", r.string(40, HEX));
    plant(
        "shippo-token",
        "plants/shippo-token.py",
        "SHIPPO = \"",
        value,
        "\"",
    );
    let value = format!("duffel_live_{}", r.string(43, ALNUM));
    plant(
        "duffel-token",
        "plants/duffel-token.py",
        "DUFFEL = \"",
        value,
        "\"",
    );
    let value = format!(
        "xapp-1-A{}-{}-{}",
        r.string(10, UPPER_DIGITS),
        r.string(13, DIGITS),
        r.string(64, HEX)
    );
    plant(
        "slack-app-token",
        "plants/slack-app-token.py",
        "XAPP = \"",
        value,
        "\"",
    );
    let value = format!("xoxe.xoxp-1-{}", r.string(160, UPPER_DIGITS));
    plant(
        "slack-config-token",
        "plants/slack-config-token.py",
        "XOXE = \"",
        value,
        "\"",
    );
    let value = format!(
        "M{}.{}.{}",
        r.string(25, ALNUM),
        r.string(6, ALNUM),
        r.string(38, ALNUM)
    );
    plant(
        "discord-bot-token",
        "plants/discord-bot-token.py",
        "DISCORD_BOT_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!(
        "https://discord.com/api/webhooks/{}/{}",
        r.string(18, DIGITS),
        r.string(68, ALNUM)
    );
    plant(
        "discord-webhook-url",
        "plants/discord-webhook-url.py",
        "HOOK = \"",
        value,
        "\"",
    );
    let value = format!("{}:AA{}", r.string(10, DIGITS), r.string(33, ALNUM));
    plant(
        "telegram-bot-token",
        "plants/telegram-bot-token.py",
        "TG = \"",
        value,
        "\"",
    );
    let value = format!("SK{}", r.string(32, HEX));
    plant(
        "twilio-api-key",
        "plants/twilio-api-key.py",
        "TW = \"",
        value,
        "\"",
    );
    let value = r.string(32, HEX);
    plant(
        "twilio-auth-token",
        "plants/twilio-auth-token.py",
        "TWILIO_AUTH_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("SG.{}.{}", r.string(22, ALNUM), r.string(43, ALNUM));
    plant(
        "sendgrid-api-key",
        "plants/sendgrid-api-key.py",
        "SG = \"",
        value,
        "\"",
    );
    let value = format!("key-{}", r.string(32, HEX));
    plant(
        "mailgun-api-key",
        "plants/mailgun-api-key.py",
        "MG = \"",
        value,
        "\"",
    );
    let value = format!(
        "{}-{}-{}",
        r.string(32, HEX),
        r.string(8, HEX),
        r.string(8, HEX)
    );
    plant(
        "mailgun-private-key",
        "plants/mailgun-private-key.py",
        "MAILGUN_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("{}-us12", r.string(32, HEX));
    plant(
        "mailchimp-api-key",
        "plants/mailchimp-api-key.py",
        "MC = \"",
        value,
        "\"",
    );
    let value = uuid(&mut r);
    plant(
        "postmark-token",
        "plants/postmark-token.py",
        "POSTMARK_SERVER_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(16, ALNUM);
    plant(
        "vonage-api-secret",
        "plants/vonage-api-secret.py",
        "VONAGE_API_SECRET = \"",
        value,
        "\"",
    );
    let value = format!(
        "https://acme.webhook.office.com/webhookb2/{}@{}/IncomingWebhook/{}/{}",
        uuid(&mut r),
        uuid(&mut r),
        r.string(32, HEX),
        uuid(&mut r)
    );
    plant(
        "teams-webhook-url",
        "plants/teams-webhook-url.py",
        "TEAMS = \"",
        value,
        "\"",
    );
    let value = format!("xkeysib-{}-{}", r.string(64, HEX), r.string(16, ALNUM));
    plant(
        "brevo-api-key",
        "plants/brevo-api-key.py",
        "BREVO = \"",
        value,
        "\"",
    );
    let value = r.string(60, ALNUM);
    plant(
        "intercom-token",
        "plants/intercom-token.py",
        "INTERCOM_ACCESS_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(40, ALNUM);
    plant(
        "zendesk-api-token",
        "plants/zendesk-api-token.py",
        "ZENDESK_API_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(25, ALNUM);
    plant(
        "messagebird-api-key",
        "plants/messagebird-api-key.py",
        "MESSAGEBIRD_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("re_{}_{}", r.string(8, ALNUM), r.string(24, ALNUM));
    plant(
        "resend-api-key",
        "plants/resend-api-key.py",
        "RESEND = \"",
        value,
        "\"",
    );
    let value = format!(
        "https://hooks.zapier.com/hooks/catch/{}/{}/",
        r.string(7, DIGITS),
        r.string(6, LOWER_DIGITS)
    );
    plant(
        "zapier-webhook-url",
        "plants/zapier-webhook-url.py",
        "ZAP = \"",
        value,
        "\"",
    );
    let value = format!("sk-proj-{}", r.string(120, ALNUM));
    plant(
        "openai-project-key",
        "plants/openai-project-key.py",
        "OA = \"",
        value,
        "\"",
    );
    let value = format!("sk-svcacct-{}", r.string(80, ALNUM));
    plant(
        "openai-service-account-key",
        "plants/openai-service-account-key.py",
        "OA = \"",
        value,
        "\"",
    );
    let value = format!("sk-admin-{}", r.string(80, ALNUM));
    plant(
        "openai-admin-key",
        "plants/openai-admin-key.py",
        "OA = \"",
        value,
        "\"",
    );
    let value = format!("sk-ant-api03-{}AA", r.string(93, ALNUM));
    plant(
        "anthropic-api-key",
        "plants/anthropic-api-key.py",
        "AN = \"",
        value,
        "\"",
    );
    let value = format!("sk-ant-admin01-{}AA", r.string(93, ALNUM));
    plant(
        "anthropic-admin-key",
        "plants/anthropic-admin-key.py",
        "AN = \"",
        value,
        "\"",
    );
    let value = format!("sk-or-v1-{}", r.string(64, HEX));
    plant(
        "openrouter-api-key",
        "plants/openrouter-api-key.py",
        "OR = \"",
        value,
        "\"",
    );
    let value = format!("sk-{}T3BlbkFJ{}", r.string(20, ALNUM), r.string(20, ALNUM));
    plant(
        "openai-api-key",
        "plants/openai-api-key.py",
        "OA = \"",
        value,
        "\"",
    );
    let value = format!("sk-{}", r.string(48, ALNUM));
    plant(
        "openai-api-key-assignment",
        "plants/openai-api-key-assignment.py",
        "OPENAI_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("hf_{}", r.string(34, ALNUM));
    plant(
        "huggingface-token",
        "plants/huggingface-token.py",
        "HF = \"",
        value,
        "\"",
    );
    let value = format!("api_org_{}", r.string(34, ALNUM));
    plant(
        "huggingface-org-token",
        "plants/huggingface-org-token.py",
        "HF = \"",
        value,
        "\"",
    );
    let value = r.string(40, ALNUM);
    plant(
        "cohere-api-key",
        "plants/cohere-api-key.py",
        "COHERE_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("r8_{}", r.string(37, ALNUM));
    plant(
        "replicate-api-token",
        "plants/replicate-api-token.py",
        "RP = \"",
        value,
        "\"",
    );
    let value = format!("gsk_{}", r.string(52, ALNUM));
    plant(
        "groq-api-key",
        "plants/groq-api-key.py",
        "GQ = \"",
        value,
        "\"",
    );
    let value = format!("pplx-{}", r.string(48, ALNUM));
    plant(
        "perplexity-api-key",
        "plants/perplexity-api-key.py",
        "PX = \"",
        value,
        "\"",
    );
    let value = r.string(32, ALNUM);
    plant(
        "mistral-api-key",
        "plants/mistral-api-key.py",
        "MISTRAL_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("xai-{}", r.string(80, ALNUM));
    plant(
        "xai-api-key",
        "plants/xai-api-key.py",
        "XA = \"",
        value,
        "\"",
    );
    let value = format!("sk-{}", r.string(32, HEX));
    plant(
        "deepseek-api-key",
        "plants/deepseek-api-key.py",
        "DEEPSEEK_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("lsv2_pt_{}_{}", r.string(32, HEX), r.string(10, HEX));
    plant(
        "langsmith-api-key",
        "plants/langsmith-api-key.py",
        "LS = \"",
        value,
        "\"",
    );
    let value = format!("pcsk_{}", r.string(60, ALNUM));
    plant(
        "pinecone-api-key",
        "plants/pinecone-api-key.py",
        "PC = \"",
        value,
        "\"",
    );
    let value = format!("sk_{}", r.string(48, HEX));
    plant(
        "elevenlabs-api-key",
        "plants/elevenlabs-api-key.py",
        "ELEVENLABS_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("fw_{}", r.string(24, ALNUM));
    plant(
        "fireworks-api-key",
        "plants/fireworks-api-key.py",
        "FW = \"",
        value,
        "\"",
    );
    let value = format!("rubygems_{}", r.string(48, HEX));
    plant(
        "rubygems-api-key",
        "plants/rubygems-api-key.py",
        "RG = \"",
        value,
        "\"",
    );
    let value = format!("oy2{}", r.string(43, LOWER_DIGITS));
    plant(
        "nuget-api-key",
        "plants/nuget-api-key.py",
        "NG = \"",
        value,
        "\"",
    );
    let value = format!("cio{}", r.string(32, ALNUM));
    plant(
        "crates-io-token",
        "plants/crates-io-token.py",
        "CIO = \"",
        value,
        "\"",
    );
    let value = format!("dckr_pat_{}", r.string(27, ALNUM));
    plant(
        "docker-hub-pat",
        "plants/docker-hub-pat.py",
        "DH = \"",
        value,
        "\"",
    );
    let value = format!("AKCp{}", r.string(69, ALNUM));
    plant(
        "jfrog-api-key",
        "plants/jfrog-api-key.py",
        "JF = \"",
        value,
        "\"",
    );
    let value = format!("cmVmdGtu{}", r.string(56, ALNUM));
    plant(
        "jfrog-reference-token",
        "plants/jfrog-reference-token.py",
        "JF = \"",
        value,
        "\"",
    );
    let value = r.string(24, ALNUM);
    plant(
        "artifactory-password",
        "plants/artifactory-password.py",
        "ARTIFACTORY_PASSWORD = \"",
        value,
        "\"",
    );
    let value = format!("CLOJARS_{}", r.string(60, LOWER_DIGITS));
    plant(
        "clojars-token",
        "plants/clojars-token.py",
        "CJ = \"",
        value,
        "\"",
    );
    let value = r.string(32, HEX);
    plant(
        "hex-api-key",
        "plants/hex-api-key.py",
        "HEX_API_KEY = \"",
        value,
        "\"",
    );
    let value = r.string(40, ALNUM);
    plant(
        "github-packages-token",
        "plants/github-packages-token.py",
        "NPMRC = \"//npm.pkg.github.com/:_authToken=",
        value,
        "\"",
    );
    let value = format!("pscale_tkn_{}", r.string(43, ALNUM));
    plant(
        "planetscale-token",
        "plants/planetscale-token.py",
        "PS = \"",
        value,
        "\"",
    );
    let value = format!("pscale_pw_{}", r.string(43, ALNUM));
    plant(
        "planetscale-password",
        "plants/planetscale-password.py",
        "PS = \"",
        value,
        "\"",
    );
    let value = format!("pscale_oauth_{}", r.string(43, ALNUM));
    plant(
        "planetscale-oauth-token",
        "plants/planetscale-oauth-token.py",
        "PS = \"",
        value,
        "\"",
    );
    let value = format!("sbp_{}", r.string(40, HEX));
    plant(
        "supabase-access-token",
        "plants/supabase-access-token.py",
        "SB = \"",
        value,
        "\"",
    );
    let value = format!("sb_secret_{}", r.string(31, ALNUM));
    plant(
        "supabase-secret-key",
        "plants/supabase-secret-key.py",
        "SB = \"",
        value,
        "\"",
    );
    let value = format!("napi_{}", r.string(64, LOWER_DIGITS));
    plant(
        "neon-api-key",
        "plants/neon-api-key.py",
        "NEON = \"",
        value,
        "\"",
    );
    let value = uuid(&mut r);
    plant(
        "mongodb-atlas-private-key",
        "plants/mongodb-atlas-private-key.py",
        "ATLAS_PRIVATE_KEY = \"",
        value,
        "\"",
    );
    let value = format!("dapi{}", r.string(32, HEX));
    plant(
        "databricks-token",
        "plants/databricks-token.py",
        "DB = \"",
        value,
        "\"",
    );
    let value = format!("{}7#{}", r.string(10, ALNUM), r.string(4, ALNUM));
    plant(
        "snowflake-credential",
        "plants/snowflake-credential.py",
        "SNOWFLAKE_PASSWORD = \"",
        value,
        "\"",
    );
    let value = format!("{}==", r.string(86, ALNUM));
    plant(
        "influxdb-token",
        "plants/influxdb-token.py",
        "INFLUXDB_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(32, HEX);
    plant(
        "datadog-api-key",
        "plants/datadog-api-key.py",
        "DD_API_KEY = \"",
        value,
        "\"",
    );
    let value = r.string(40, HEX);
    plant(
        "datadog-app-key",
        "plants/datadog-app-key.py",
        "DD_APP_KEY = \"",
        value,
        "\"",
    );
    let value = format!("NRAK-{}", r.string(27, UPPER_DIGITS));
    plant(
        "new-relic-user-key",
        "plants/new-relic-user-key.py",
        "NR = \"",
        value,
        "\"",
    );
    let value = format!("NRII-{}", r.string(32, ALNUM));
    plant(
        "new-relic-insights-key",
        "plants/new-relic-insights-key.py",
        "NR = \"",
        value,
        "\"",
    );
    let value = format!("NRJS-{}", r.string(19, HEX));
    plant(
        "new-relic-browser-key",
        "plants/new-relic-browser-key.py",
        "NR = \"",
        value,
        "\"",
    );
    let value = format!("{}NRAL", r.string(36, HEX));
    plant(
        "new-relic-license-key",
        "plants/new-relic-license-key.py",
        "NR = \"",
        value,
        "\"",
    );
    let value = format!("NRAA-{}", r.string(27, HEX));
    plant(
        "new-relic-admin-key",
        "plants/new-relic-admin-key.py",
        "NR = \"",
        value,
        "\"",
    );
    let value = format!("sntryu_{}", r.string(64, HEX));
    plant(
        "sentry-user-token",
        "plants/sentry-user-token.py",
        "SN = \"",
        value,
        "\"",
    );
    let value = format!("sntrys_eyJ{}", r.string(80, ALNUM));
    plant(
        "sentry-org-token",
        "plants/sentry-org-token.py",
        "SN = \"",
        value,
        "\"",
    );
    let value = format!(
        "https://{}@o{}.ingest.sentry.io/{}",
        r.string(32, HEX),
        r.string(6, DIGITS),
        r.string(7, DIGITS)
    );
    plant(
        "sentry-dsn",
        "plants/sentry-dsn.py",
        "DSN = \"",
        value,
        "\"",
    );
    let value = format!("glc_{}", r.string(80, ALNUM));
    plant(
        "grafana-cloud-token",
        "plants/grafana-cloud-token.py",
        "GF = \"",
        value,
        "\"",
    );
    let value = format!("glsa_{}_{}", r.string(32, ALNUM), r.string(8, HEX));
    plant(
        "grafana-service-account-token",
        "plants/grafana-service-account-token.py",
        "GF = \"",
        value,
        "\"",
    );
    let value = format!("eyJrIjoi{}", r.string(80, ALNUM));
    plant(
        "grafana-api-key",
        "plants/grafana-api-key.py",
        "GF = \"",
        value,
        "\"",
    );
    let value = r.string(22, ALNUM);
    plant(
        "honeycomb-api-key",
        "plants/honeycomb-api-key.py",
        "HONEYCOMB_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!(
        "dt0c01.{}.{}",
        r.string(24, UPPER_DIGITS),
        r.string(64, UPPER_DIGITS)
    );
    plant(
        "dynatrace-token",
        "plants/dynatrace-token.py",
        "DT = \"",
        value,
        "\"",
    );
    let value = r.string(20, ALNUM);
    plant(
        "pagerduty-api-key",
        "plants/pagerduty-api-key.py",
        "PAGERDUTY_API_KEY = \"",
        value,
        "\"",
    );
    let value = uuid(&mut r);
    plant(
        "splunk-hec-token",
        "plants/splunk-hec-token.py",
        "SPLUNK_HEC_TOKEN = \"",
        value,
        "\"",
    );
    let value = uuid(&mut r);
    plant(
        "opsgenie-api-key",
        "plants/opsgenie-api-key.py",
        "OPSGENIE_API_KEY = \"",
        value,
        "\"",
    );
    let value = r.string(32, HEX);
    plant(
        "rollbar-token",
        "plants/rollbar-token.py",
        "ROLLBAR_ACCESS_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(64, ALNUM);
    plant(
        "sumologic-access-key",
        "plants/sumologic-access-key.py",
        "SUMO_ACCESS_KEY = \"",
        value,
        "\"",
    );
    let value = format!("AAAA{}:APA91b{}", r.string(7, ALNUM), r.string(134, ALNUM));
    plant(
        "firebase-fcm-server-key",
        "plants/firebase-fcm-server-key.py",
        "FCM = \"",
        value,
        "\"",
    );
    let value = format!("sk.eyJ{}.{}", r.string(60, ALNUM), r.string(22, ALNUM));
    plant(
        "mapbox-secret-token",
        "plants/mapbox-secret-token.py",
        "MB = \"",
        value,
        "\"",
    );
    let value = r.string(32, HEX);
    plant(
        "algolia-admin-key",
        "plants/algolia-admin-key.py",
        "ALGOLIA_ADMIN_KEY = \"",
        value,
        "\"",
    );
    let value = format!("CFPAT-{}", r.string(43, ALNUM));
    plant(
        "contentful-pat",
        "plants/contentful-pat.py",
        "CF = \"",
        value,
        "\"",
    );
    let value = r.string(43, ALNUM);
    plant(
        "contentful-delivery-token",
        "plants/contentful-delivery-token.py",
        "CONTENTFUL_DELIVERY_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!(
        "2/{}/{}:{}",
        r.string(16, DIGITS),
        r.string(16, DIGITS),
        r.string(32, HEX)
    );
    plant(
        "asana-pat",
        "plants/asana-pat.py",
        "ASANA_ACCESS_TOKEN = \"",
        value,
        "\"",
    );
    let value = format!("lin_api_{}", r.string(40, ALNUM));
    plant(
        "linear-api-key",
        "plants/linear-api-key.py",
        "LN = \"",
        value,
        "\"",
    );
    let value = format!("lin_oauth_{}", r.string(64, HEX));
    plant(
        "linear-oauth-token",
        "plants/linear-oauth-token.py",
        "LN = \"",
        value,
        "\"",
    );
    let value = format!("ntn_{}", r.string(46, ALNUM));
    plant(
        "notion-integration-token",
        "plants/notion-integration-token.py",
        "NT = \"",
        value,
        "\"",
    );
    let value = format!("pat{}.{}", r.string(14, ALNUM), r.string(64, HEX));
    plant(
        "airtable-pat",
        "plants/airtable-pat.py",
        "AT = \"",
        value,
        "\"",
    );
    let value = format!("key{}", r.string(14, ALNUM));
    plant(
        "airtable-api-key",
        "plants/airtable-api-key.py",
        "AIRTABLE_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("figd_{}", r.string(40, ALNUM));
    plant("figma-pat", "plants/figma-pat.py", "FG = \"", value, "\"");
    let value = format!("sl.{}", r.string(140, ALNUM));
    plant(
        "dropbox-access-token",
        "plants/dropbox-access-token.py",
        "DBX = \"",
        value,
        "\"",
    );
    let value = format!(
        "{}AAAAAAAAAA{}",
        r.string(11, LOWER_DIGITS),
        r.string(43, LOWER_DIGITS)
    );
    plant(
        "dropbox-long-lived-token",
        "plants/dropbox-long-lived-token.py",
        "DROPBOX_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(30, LOWER_DIGITS);
    plant(
        "twitch-api-token",
        "plants/twitch-api-token.py",
        "TWITCH_CLIENT_SECRET = \"",
        value,
        "\"",
    );
    let value = format!("EAAB{}", r.string(120, ALNUM));
    plant(
        "facebook-access-token",
        "plants/facebook-access-token.py",
        "FB = \"",
        value,
        "\"",
    );
    let value = r.string(32, HEX);
    plant(
        "facebook-app-secret",
        "plants/facebook-app-secret.py",
        "FACEBOOK_APP_SECRET = \"",
        value,
        "\"",
    );
    let value = format!("AAAAAAAAAAAAAAAAAAAAA{}", r.string(80, ALNUM));
    plant(
        "twitter-bearer-token",
        "plants/twitter-bearer-token.py",
        "TWB = \"",
        value,
        "\"",
    );
    let value = r.string(50, ALNUM);
    plant(
        "twitter-api-secret",
        "plants/twitter-api-secret.py",
        "TWITTER_API_SECRET = \"",
        value,
        "\"",
    );
    let value = r.string(16, ALNUM);
    plant(
        "linkedin-client-secret",
        "plants/linkedin-client-secret.py",
        "LINKEDIN_CLIENT_SECRET = \"",
        value,
        "\"",
    );
    let value = format!("PMAK-{}-{}", r.string(24, HEX), r.string(34, HEX));
    plant(
        "postman-api-key",
        "plants/postman-api-key.py",
        "PM = \"",
        value,
        "\"",
    );
    let value = format!("sgp_{}", r.string(40, HEX));
    plant(
        "sourcegraph-token",
        "plants/sourcegraph-token.py",
        "SGT = \"",
        value,
        "\"",
    );
    let value = format!("tskey-auth-{}-{}", r.string(12, ALNUM), r.string(30, ALNUM));
    plant(
        "tailscale-key",
        "plants/tailscale-key.py",
        "TS = \"",
        value,
        "\"",
    );
    let value = format!("{}_{}", r.string(27, ALNUM), r.string(21, ALNUM));
    plant(
        "ngrok-authtoken",
        "plants/ngrok-authtoken.py",
        "NGROK_AUTHTOKEN = \"",
        value,
        "\"",
    );
    let value = format!("fio-u-{}", r.string(64, ALNUM));
    plant(
        "frameio-token",
        "plants/frameio-token.py",
        "FIO = \"",
        value,
        "\"",
    );
    let value = format!("tfp_{}", r.string(59, ALNUM));
    plant(
        "typeform-token",
        "plants/typeform-token.py",
        "TF = \"",
        value,
        "\"",
    );
    let value = format!("pnu_{}", r.string(36, ALNUM));
    plant(
        "prefect-api-key",
        "plants/prefect-api-key.py",
        "PF = \"",
        value,
        "\"",
    );
    let value = format!("rdme_{}", r.string(70, LOWER_DIGITS));
    plant(
        "readme-api-key",
        "plants/readme-api-key.py",
        "RM = \"",
        value,
        "\"",
    );
    let value = format!("tk-us-{}", r.string(48, ALNUM));
    plant(
        "scalingo-token",
        "plants/scalingo-token.py",
        "SC = \"",
        value,
        "\"",
    );
    let value = uuid(&mut r);
    plant(
        "hubspot-api-key",
        "plants/hubspot-api-key.py",
        "HUBSPOT_API_KEY = \"",
        value,
        "\"",
    );
    let value = format!("pat-na1-{}", uuid(&mut r));
    plant(
        "hubspot-private-app-token",
        "plants/hubspot-private-app-token.py",
        "HS = \"",
        value,
        "\"",
    );
    let value = r.string(32, ALNUM);
    plant(
        "segment-write-key",
        "plants/segment-write-key.py",
        "SEGMENT_WRITE_KEY = \"",
        value,
        "\"",
    );
    let value = r.string(64, HEX);
    plant(
        "trello-api-token",
        "plants/trello-api-token.py",
        "TRELLO_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(32, ALNUM);
    plant(
        "mapquest-or-maps-key",
        "plants/mapquest-or-maps-key.py",
        "TOMTOM_API_KEY = \"",
        value,
        "\"",
    );
    let value = r.string(64, ALNUM);
    plant(
        "confluent-api-secret",
        "plants/confluent-api-secret.py",
        "CONFLUENT_API_SECRET = \"",
        value,
        "\"",
    );
    let value = r.string(32, ALNUM);
    plant(
        "fastly-api-token",
        "plants/fastly-api-token.py",
        "FASTLY_API_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(40, ALNUM);
    plant(
        "firebase-secret",
        "plants/firebase-secret.py",
        "FIREBASE_SECRET = \"",
        value,
        "\"",
    );
    let value = r.string(40, HEX);
    plant(
        "github-oauth-client-secret",
        "plants/github-oauth-client-secret.py",
        "GITHUB_CLIENT_SECRET = \"",
        value,
        "\"",
    );
    let value = r.string(40, HEX);
    plant(
        "gitter-token",
        "plants/gitter-token.py",
        "GITTER_TOKEN = \"",
        value,
        "\"",
    );
    let value = r.string(88, ALNUM);
    plant(
        "kraken-api-key",
        "plants/kraken-api-key.py",
        "KRAKEN_API_SECRET = \"",
        value,
        "\"",
    );
    let value = r.string(24, ALNUM);
    plant(
        "etsy-or-shop-api-key",
        "plants/etsy-or-shop-api-key.py",
        "ETSY_API_KEY = \"",
        value,
        "\"",
    );
    let value = r.string(40, ALNUM);
    plant(
        "authorization-header",
        "plants/authorization-header.py",
        "HEADERS = {\"Authorization\": \"Bearer ",
        value,
        "\"}",
    );
    let value = basic(&mut r);
    plant(
        "basic-auth-header",
        "plants/basic-auth-header.py",
        "AUTH = \"Basic ",
        value,
        "\"",
    );
    let value = format!("{}7{}", r.string(10, ALNUM), r.string(4, ALNUM));
    plant(
        "curl-user-password",
        "plants/curl-user-password.py",
        "CMD = \"curl -u deploy:",
        value,
        " https://repo.example.org\"",
    );
    let value = format!("{}7{}", r.string(10, ALNUM), r.string(4, ALNUM));
    plant(
        "connection-string-password",
        "plants/connection-string-password.py",
        "CONN = \"Server=db;Database=app;User Id=sa;Password=",
        value,
        ";\"",
    );
    let password = format!("{}7{}", r.string(10, ALNUM), r.string(4, ALNUM));
    plant(
        "generic-secret-xml",
        "conf/settings.xml",
        "<password>",
        password,
        "</password>",
    );
    let password = format!("{}7{}", r.string(10, ALNUM), r.string(4, ALNUM));
    plant(
        "generic-secret-unquoted",
        "deploy/.env",
        "DB_PASSWORD=",
        password,
        "",
    );
    // Private key blocks span lines: written as their own files.
    let body: Vec<String> = (0..6).map(|_| r.string(64, B64)).collect();
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
        body.join("\n")
    );
    files.push(("keys/deploy.pem".into(), format!("\n\n\n{pem}\n")));
    planted.push(Planted {
        rule: "private-key",
        path: "keys/deploy.pem".into(),
        line: 4,
        value: body[2].clone(),
    });
    let sa_body = (0..5)
        .map(|_| r.string(64, B64))
        .collect::<Vec<_>>()
        .join("\\n");
    let sa = format!(
        "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"demo\",\n  \"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{sa_body}\\n-----END PRIVATE KEY-----\\n\",\n  \"client_email\": \"svc@demo.iam.gserviceaccount.com\"\n}}\n"
    );
    files.push(("keys/service-account.json".into(), sa));
    planted.push(Planted {
        rule: "gcp-service-account-key",
        path: "keys/service-account.json".into(),
        line: 4,
        value: sa_body[..64].to_string(),
    });

    let passwords: Vec<String> = (0..5)
        .map(|_| format!("{}7{}", r.string(10, ALNUM), r.string(4, ALNUM)))
        .collect();
    files.push((
        "scripts/cli.sh".into(),
        format!(
            "#!/bin/sh\nmysqldump -u root -p{} app > dump.sql\nsshpass -p '{}' ssh deploy@host\ndocker login -u deploy -p {} registry.example.org\ncurl 'https://api.example.org/v1/items?user=app&password={}'\ncurl -H 'X-API-Key: {}' https://api.example.org\n",
            passwords[0], passwords[1], passwords[2], passwords[3], passwords[4]
        ),
    ));
    for (i, rule) in [
        "mysql-cli-password",
        "sshpass-password",
        "docker-login-password",
        "url-query-secret",
        "api-key-header",
    ]
    .into_iter()
    .enumerate()
    {
        planted.push(Planted {
            rule,
            path: "scripts/cli.sh".into(),
            line: i as u32 + 2,
            value: passwords[i].clone(),
        });
    }
    // Multi-line key files and `.netrc`: written as their own files.
    let body: Vec<String> = (0..4).map(|_| r.string(64, B64)).collect();
    files.push((
        "keys/id_ssh2".into(),
        format!(
            "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\n{}\n---- END SSH2 ENCRYPTED PRIVATE KEY ----\n",
            body.join("\n")
        ),
    ));
    planted.push(Planted {
        rule: "ssh2-private-key",
        path: "keys/id_ssh2".into(),
        line: 2,
        value: body[1].clone(),
    });
    let private = r.string(64, B64);
    files.push((
        "keys/id.ppk".into(),
        format!(
            "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: deploy\nPublic-Lines: 1\n{}\nPrivate-Lines: 1\n{private}\nPrivate-MAC: {}\n",
            r.string(64, B64),
            r.string(64, HEX)
        ),
    ));
    planted.push(Planted {
        rule: "putty-private-key",
        path: "keys/id.ppk".into(),
        line: 7,
        value: private,
    });
    let password = format!("{}7{}", r.string(10, ALNUM), r.string(4, ALNUM));
    files.push((
        "home/.netrc".into(),
        format!("machine api.example.org\n  login deploy\n  password {password}\n"),
    ));
    planted.push(Planted {
        rule: "netrc-password",
        path: "home/.netrc".into(),
        line: 3,
        value: password,
    });
    // Look-alikes: each resembles a rule's format but must not be reported.
    let look_alikes = [
        format!("short_key = \"AKIA{}\"", r.string(12, UPPER_DIGITS)),
        format!("almost = \"ghp_{}\"", r.string(30, ALNUM)),
        "placeholder = \"ghp_EXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPL\"".to_string(),
        "stripe = 'sk_live_short'".to_string(),
        "password = \"changeme\"".to_string(),
        "token = os.environ[\"API_TOKEN\"]".to_string(),
        "api_key = \"${API_KEY_FROM_THE_VAULT_REFERENCE}\"".to_string(),
        "secret = \"this is a sentence, not a secret at all\"".to_string(),
        "DATABASE_URL=postgres://app:${DB_PASSWORD}@db:5432/app".to_string(),
        "HOMEPAGE=https://user@example.com/profile".to_string(),
        format!(
            "not_a_jwt = \"eyJ{}.{}.{}\"",
            r.string(12, ALNUM),
            r.string(8, ALNUM),
            r.string(20, ALNUM)
        ),
        "docs = \"-----BEGIN PRIVATE KEY-----\\n...\\n-----END PRIVATE KEY-----\"".to_string(),
        format!("glpat = \"glpat-{}\"", r.string(8, ALNUM)),
        "checksum = \"0000000000000000000000000000000000000000\"".to_string(),
        format!("commit = \"{}\"", r.string(40, "0123456789abcdef")),
    ];
    files.push(("src/look_alikes.py".into(), look_alikes.join("\n") + "\n"));
    files.push((
        "README.md".into(),
        "# Demo service\n\nSet `GH_TOKEN` to a token such as `ghp_...` before running.\n".into(),
    ));
    SecretsCorpus { files, planted }
}

/// One pinned package of the lockfile corpus.
#[derive(Debug, Clone)]
pub struct Pin {
    pub ecosystem: &'static str,
    pub name: &'static str,
    pub version: &'static str,
    /// The advisory that must flag it, or `None` for a fixed version.
    pub advisory: Option<&'static str>,
}

/// Every pin of [`lockfile_corpus`].
pub const PINS: &[Pin] = &[
    Pin {
        ecosystem: "crates.io",
        name: "smallvec",
        version: "1.6.0",
        advisory: Some("RUSTSEC-2021-0003"),
    },
    Pin {
        ecosystem: "crates.io",
        name: "time",
        version: "0.2.23",
        advisory: Some("RUSTSEC-2020-0071"),
    },
    Pin {
        ecosystem: "crates.io",
        name: "regex",
        version: "1.5.5",
        advisory: None,
    },
    Pin {
        ecosystem: "npm",
        name: "lodash",
        version: "4.17.20",
        advisory: Some("GHSA-35jh-r3h4-6jhm"),
    },
    Pin {
        ecosystem: "npm",
        name: "@babel/traverse",
        version: "7.23.2",
        advisory: None,
    },
    Pin {
        ecosystem: "npm",
        name: "minimist",
        version: "1.2.5",
        advisory: Some("GHSA-xvch-5gv4-984h"),
    },
    Pin {
        ecosystem: "npm",
        name: "ansi-regex",
        version: "5.0.1",
        advisory: None,
    },
    Pin {
        ecosystem: "PyPI",
        name: "Jinja2",
        version: "2.10",
        advisory: Some("GHSA-462w-v97r-4m45"),
    },
    Pin {
        ecosystem: "PyPI",
        name: "requests",
        version: "2.31.0",
        advisory: None,
    },
    Pin {
        ecosystem: "PyPI",
        name: "urllib3",
        version: "1.26.4",
        advisory: Some("GHSA-q2q7-5pp4-w6pg"),
    },
    Pin {
        ecosystem: "PyPI",
        name: "Django",
        version: "4.2.8",
        advisory: None,
    },
    Pin {
        ecosystem: "PyPI",
        name: "pyyaml",
        version: "5.3",
        advisory: Some("GHSA-8q59-q68h-6hv4"),
    },
    Pin {
        ecosystem: "PyPI",
        name: "cryptography",
        version: "41.0.6",
        advisory: None,
    },
    Pin {
        ecosystem: "Go",
        name: "golang.org/x/net",
        version: "v0.7.0",
        advisory: None,
    },
    Pin {
        ecosystem: "Go",
        name: "github.com/gin-gonic/gin",
        version: "v1.9.0",
        advisory: Some("GHSA-3vp4-m3rf-835h"),
    },
    Pin {
        ecosystem: "RubyGems",
        name: "rack",
        version: "2.2.3",
        advisory: Some("GHSA-wq4h-7r42-5hrr"),
    },
    Pin {
        ecosystem: "RubyGems",
        name: "nokogiri",
        version: "1.16.2",
        advisory: None,
    },
];

/// Lockfiles of every supported format pinning [`PINS`].
pub fn lockfile_corpus() -> Vec<(String, String)> {
    let registry = "registry+https://github.com/rust-lang/crates.io-index";
    vec![
        (
            "rust/Cargo.lock".into(),
            format!(
                "version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"regex\"\nversion = \"1.5.5\"\nsource = \"{registry}\"\n\n[[package]]\nname = \"smallvec\"\nversion = \"1.6.0\"\nsource = \"{registry}\"\n\n[[package]]\nname = \"time\"\nversion = \"0.2.23\"\nsource = \"{registry}\"\n"
            ),
        ),
        (
            "web/package-lock.json".into(),
            serde_json::to_string_pretty(&json!({
                "name": "web", "lockfileVersion": 3, "requires": true,
                "packages": {
                    "": {"name": "web", "version": "1.0.0"},
                    "node_modules/lodash": {"version": "4.17.20", "resolved": "https://registry.npmjs.org/lodash/-/lodash-4.17.20.tgz"},
                    "node_modules/@babel/traverse": {"version": "7.23.2"}
                }
            }))
            .unwrap(),
        ),
        (
            "web/yarn.lock".into(),
            "# yarn lockfile v1\n\n\nminimist@^1.2.0:\n  version \"1.2.5\"\n  resolved \"https://registry.yarnpkg.com/minimist/-/minimist-1.2.5.tgz\"\n\nansi-regex@^5.0.0:\n  version \"5.0.1\"\n".into(),
        ),
        (
            "py/requirements.txt".into(),
            "# pinned\nJinja2==2.10\nrequests==2.31.0\nflask>=2.0\n".into(),
        ),
        (
            "py/poetry.lock".into(),
            "[[package]]\nname = \"urllib3\"\nversion = \"1.26.4\"\ndescription = \"HTTP\"\n\n[[package]]\nname = \"django\"\nversion = \"4.2.8\"\ndescription = \"web\"\n".into(),
        ),
        (
            "py2/Pipfile.lock".into(),
            serde_json::to_string_pretty(&json!({
                "_meta": {"hash": {"sha256": "x"}},
                "default": {"pyyaml": {"version": "==5.3"}, "cryptography": {"version": "==41.0.6"}},
                "develop": {}
            }))
            .unwrap(),
        ),
        (
            "go/go.mod".into(),
            "module example.com/svc\n\ngo 1.21\n\nrequire (\n\tgithub.com/gin-gonic/gin v1.9.0\n\tgolang.org/x/net v0.7.0 // indirect\n)\n".into(),
        ),
        (
            "ruby/Gemfile.lock".into(),
            "GEM\n  remote: https://rubygems.org/\n  specs:\n    nokogiri (1.16.2-x86_64-linux)\n    rack (2.2.3)\n\nPLATFORMS\n  x86_64-linux\n\nDEPENDENCIES\n  nokogiri\n  rack\n".into(),
        ),
    ]
}

fn record(
    id: &str,
    aliases: &[&str],
    ecosystem: &str,
    name: &str,
    ranges: Value,
    severity: Option<&str>,
) -> Value {
    let mut r = json!({
        "schema_version": "1.6.0",
        "id": id,
        // Current, as a synced database is: older data makes the vulnerability scanner's run
        // incomplete (CERTUS_ASSURANCE_OSV_MAX_AGE_HOURS).
        "modified": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "published": "2023-01-01T00:00:00Z",
        "aliases": aliases,
        "summary": format!("Test advisory for {name}"),
        "details": "Generated fixture in the OSV schema.",
        "affected": [{
            "package": {"ecosystem": ecosystem, "name": name},
            "ranges": ranges,
        }],
        "references": [{"type": "ADVISORY", "url": format!("https://osv.dev/vulnerability/{id}")}],
    });
    if let Some(sev) = severity {
        r["database_specific"] = json!({"severity": sev});
    }
    r
}

fn ecosystem_range(kind: &str, events: Value) -> Value {
    json!([{"type": kind, "events": events}])
}

/// Writes the OSV fixture: one directory per ecosystem in the export layout, one ecosystem as an
/// `all.zip` export, records for fixed versions (which must not match), a withdrawn record and
/// records for other ecosystems.
pub fn write_osv_fixture(dir: &Path) {
    let records = vec![
        (
            "crates.io",
            record(
                "RUSTSEC-2021-0003",
                &["CVE-2021-25900", "GHSA-43w2-9j62-hq99"],
                "crates.io",
                "smallvec",
                ecosystem_range(
                    "SEMVER",
                    json!([{"introduced": "0.6.3"}, {"fixed": "0.6.14"}, {"introduced": "1.0.0"}, {"fixed": "1.6.1"}]),
                ),
                Some("CRITICAL"),
            ),
        ),
        (
            "crates.io",
            json!({
                "id": "RUSTSEC-2020-0071", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2020-26235"],
                "summary": "Potential segfault in the time crate",
                "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
                "affected": [{"package": {"ecosystem": "crates.io", "name": "time"},
                    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.2.7"}, {"fixed": "0.2.23"}]},
                               {"type": "SEMVER", "events": [{"introduced": "0.2.23"}, {"last_affected": "0.2.23"}]}]}]
            }),
        ),
        (
            "crates.io",
            record(
                "RUSTSEC-2022-0013",
                &["CVE-2022-24713"],
                "crates.io",
                "regex",
                ecosystem_range("SEMVER", json!([{"introduced": "0"}, {"fixed": "1.5.5"}])),
                Some("HIGH"),
            ),
        ),
        (
            "npm",
            record(
                "GHSA-35jh-r3h4-6jhm",
                &["CVE-2021-23337"],
                "npm",
                "lodash",
                ecosystem_range("SEMVER", json!([{"introduced": "0"}, {"fixed": "4.17.21"}])),
                Some("HIGH"),
            ),
        ),
        (
            "npm",
            record(
                "GHSA-67hx-6x53-jw92",
                &["CVE-2023-45133"],
                "npm",
                "@babel/traverse",
                ecosystem_range("SEMVER", json!([{"introduced": "0"}, {"fixed": "7.23.2"}])),
                Some("CRITICAL"),
            ),
        ),
        (
            "npm",
            record(
                "GHSA-xvch-5gv4-984h",
                &["CVE-2021-44906"],
                "npm",
                "minimist",
                ecosystem_range(
                    "SEMVER",
                    json!([{"introduced": "0"}, {"fixed": "0.2.4"}, {"introduced": "1.0.0"}, {"fixed": "1.2.6"}]),
                ),
                Some("CRITICAL"),
            ),
        ),
        (
            "npm",
            record(
                "GHSA-93q8-gq69-wqmw",
                &["CVE-2021-3807"],
                "npm",
                "ansi-regex",
                ecosystem_range(
                    "SEMVER",
                    json!([{"introduced": "5.0.0"}, {"fixed": "5.0.1"}]),
                ),
                Some("HIGH"),
            ),
        ),
        (
            "PyPI",
            record(
                "GHSA-462w-v97r-4m45",
                &["CVE-2019-10906"],
                "PyPI",
                "jinja2",
                ecosystem_range(
                    "ECOSYSTEM",
                    json!([{"introduced": "0"}, {"fixed": "2.10.1"}]),
                ),
                Some("HIGH"),
            ),
        ),
        (
            "PyPI",
            record(
                "GHSA-j8r2-6x86-q33q",
                &["CVE-2023-32681"],
                "PyPI",
                "requests",
                ecosystem_range(
                    "ECOSYSTEM",
                    json!([{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]),
                ),
                Some("MODERATE"),
            ),
        ),
        (
            "PyPI",
            record(
                "GHSA-q2q7-5pp4-w6pg",
                &["CVE-2021-33503"],
                "PyPI",
                "urllib3",
                ecosystem_range(
                    "ECOSYSTEM",
                    json!([{"introduced": "1.25.4"}, {"fixed": "1.26.5"}]),
                ),
                Some("HIGH"),
            ),
        ),
        (
            "PyPI",
            record(
                "GHSA-7xr5-9hcq-chf9",
                &["CVE-2023-46695"],
                "PyPI",
                "django",
                ecosystem_range(
                    "ECOSYSTEM",
                    json!([{"introduced": "4.2"}, {"fixed": "4.2.7"}]),
                ),
                Some("HIGH"),
            ),
        ),
        (
            "PyPI",
            record(
                "GHSA-8q59-q68h-6hv4",
                &["CVE-2020-14343"],
                "PyPI",
                "PyYAML",
                ecosystem_range("ECOSYSTEM", json!([{"introduced": "0"}, {"fixed": "5.4"}])),
                Some("CRITICAL"),
            ),
        ),
        (
            "PyPI",
            record(
                "GHSA-v8gr-m533-ghj9",
                &["CVE-2023-49083"],
                "PyPI",
                "cryptography",
                ecosystem_range(
                    "ECOSYSTEM",
                    json!([{"introduced": "3.1"}, {"fixed": "41.0.6"}]),
                ),
                Some("MODERATE"),
            ),
        ),
        (
            "Go",
            record(
                "GHSA-vvpx-j8f3-3w6h",
                &["CVE-2022-41723"],
                "Go",
                "golang.org/x/net",
                ecosystem_range("SEMVER", json!([{"introduced": "0"}, {"fixed": "0.7.0"}])),
                Some("HIGH"),
            ),
        ),
        (
            "Go",
            record(
                "GHSA-3vp4-m3rf-835h",
                &["CVE-2023-29401"],
                "Go",
                "github.com/gin-gonic/gin",
                ecosystem_range(
                    "SEMVER",
                    json!([{"introduced": "1.3.1-0.20190301021747-ccb9e902956d"}, {"fixed": "1.9.1"}]),
                ),
                Some("MODERATE"),
            ),
        ),
        (
            "RubyGems",
            record(
                "GHSA-wq4h-7r42-5hrr",
                &["CVE-2022-30122"],
                "RubyGems",
                "rack",
                ecosystem_range(
                    "ECOSYSTEM",
                    json!([{"introduced": "2.2.0"}, {"fixed": "2.2.3.1"}]),
                ),
                Some("HIGH"),
            ),
        ),
        (
            "RubyGems",
            record(
                "GHSA-xc9x-jj77-9p9j",
                &["CVE-2024-25062"],
                "RubyGems",
                "nokogiri",
                ecosystem_range(
                    "ECOSYSTEM",
                    json!([{"introduced": "0"}, {"fixed": "1.16.2"}]),
                ),
                Some("HIGH"),
            ),
        ),
        // Withdrawn: must never match.
        ("PyPI", {
            let mut r = record(
                "GHSA-wdrw-wdrw-wdrw",
                &[],
                "PyPI",
                "requests",
                ecosystem_range("ECOSYSTEM", json!([{"introduced": "0"}])),
                Some("HIGH"),
            );
            r["withdrawn"] = json!("2024-02-01T00:00:00Z");
            r
        }),
        // Another ecosystem with the same package name: must never match.
        (
            "Debian",
            record(
                "DSA-0000-1",
                &[],
                "Debian:12",
                "rack",
                ecosystem_range("ECOSYSTEM", json!([{"introduced": "0"}])),
                None,
            ),
        ),
    ];
    for (eco, rec) in &records {
        if *eco == "RubyGems" {
            continue; // written as an export zip below
        }
        let d = dir.join(eco);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("{}.json", rec["id"].as_str().unwrap())),
            serde_json::to_vec_pretty(rec).unwrap(),
        )
        .unwrap();
    }
    let gems = dir.join("RubyGems");
    std::fs::create_dir_all(&gems).unwrap();
    let file = std::fs::File::create(gems.join("all.zip")).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    for (eco, rec) in &records {
        if *eco == "RubyGems" {
            zip.start_file(
                format!("{}.json", rec["id"].as_str().unwrap()),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            std::io::Write::write_all(&mut zip, &serde_json::to_vec(rec).unwrap()).unwrap();
        }
    }
    zip.finish().unwrap();
}

/// Writes `files` under `root`.
pub fn write_tree(root: &Path, files: &[(String, String)]) {
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}
