//! Provider formats, checksums, placeholders and unquoted assignments, one test per family.
//! Every credential-looking value is built at run time from its documented shape (prefix +
//! pseudo-random body), so this file holds no token verbatim.

use super::checks::*;
use super::rules::RULES;
use super::SecretsScanner;

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Deterministic pseudo-random string (xorshift), different per `seed`.
fn r(seed: u64, len: usize, alphabet: &[u8]) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

fn uuid(seed: u64) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        r(seed, 8, HEX),
        r(seed + 1, 4, HEX),
        r(seed + 2, 4, HEX),
        r(seed + 3, 4, HEX),
        r(seed + 4, 12, HEX)
    )
}

/// A GitHub/npm-style token with a valid CRC32 checksum.
fn checksummed(prefix: &str, seed: u64) -> String {
    let body = r(seed, 30, ALNUM);
    format!("{prefix}{body}{}", base62(crc32(body.as_bytes()), 6))
}

/// Rule ids found in `content` scanned as `path`.
fn found(path: &str, content: &str) -> Vec<String> {
    SecretsScanner::shared()
        .scan_content(path, content.as_bytes())
        .into_iter()
        .map(|f| {
            assert!(!f.snippet.is_empty());
            f.rule_id
        })
        .collect()
}

/// `line` in `path` yields exactly one finding, of `rule`, whose snippet does not hold `secret`.
fn detects(rule: &str, path: &str, line: &str, secret: &str) {
    let findings = SecretsScanner::shared().scan_content(path, format!("{line}\n").as_bytes());
    let ids: Vec<&str> = findings.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(ids, vec![rule], "{path}: {line}");
    let visible = secret.chars().count().min(4);
    let tail: String = secret.chars().skip(visible).collect();
    if tail.len() >= 4 {
        assert!(
            !findings[0].snippet.contains(&tail),
            "{rule} snippet leaks: {}",
            findings[0].snippet
        );
    }
}

fn quiet(path: &str, line: &str) {
    let ids = found(path, &format!("{line}\n"));
    assert!(ids.is_empty(), "{path}: {line} -> {ids:?}");
}

#[test]
fn at_least_150_formats_with_documented_severities() {
    assert!(RULES.len() >= 150, "{} rules", RULES.len());
    for rule in RULES {
        assert!(
            rule.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{} is not lower-kebab-case",
            rule.id
        );
    }
}

#[test]
fn checksum_helpers() {
    // The CRC-32 check value of the IEEE polynomial.
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(base62(0, 6), "000000");
    assert_eq!(base62(61, 1), "z");
    assert_eq!(base62(62, 2), "10");
    let good = checksummed("ghp_", 1);
    assert!(crc32_base62_ok(&good));
    let mut bad = good.clone();
    bad.replace_range(10..11, if &good[10..11] == "A" { "B" } else { "A" });
    assert!(!crc32_base62_ok(&bad));
    assert!(aws_key_id_alphabet_ok(&format!("AKIA{}", r(2, 16, B32))));
    assert!(!aws_key_id_alphabet_ok("AKIA0000111188889999"));
}

#[test]
fn github_and_npm_checksums_are_verified() {
    let scanner = SecretsScanner::shared();
    for (rule, prefix) in [
        ("github-pat", "ghp_"),
        ("github-oauth-token", "gho_"),
        ("github-app-token", "ghs_"),
        ("github-refresh-token", "ghr_"),
        ("npm-access-token", "npm_"),
    ] {
        let token = checksummed(prefix, 7);
        let f = scanner.scan_content("a.py", format!("T = \"{token}\"\n").as_bytes());
        assert_eq!(f.len(), 1, "{rule}");
        assert_eq!(f[0].rule_id, rule);
        assert!(
            f[0].message.ends_with("(checksum verified)"),
            "{}",
            f[0].message
        );
        // A random body without a valid checksum is a look-alike: quiet in neutral code, still
        // reported (as a possible token) where the line names a credential.
        let unverified = format!("{prefix}{}", r(8, 36, ALNUM));
        let f = scanner.scan_content("a.py", format!("T = \"{unverified}\"\n").as_bytes());
        assert!(f.is_empty(), "{rule}: {f:?}");
        let f = scanner.scan_content("a.py", format!("TOKEN = \"{unverified}\"\n").as_bytes());
        assert_eq!(f.len(), 1, "{rule}");
        assert!(f[0].message.starts_with("Possible "), "{}", f[0].message);
    }
    // AWS key ids in the base32 alphabet are verified.
    let id = format!("AKIA{}", r(9, 16, B32));
    let f = scanner.scan_content("a.py", format!("k = \"{id}\"\n").as_bytes());
    assert!(
        f[0].message.ends_with("(checksum verified)"),
        "{}",
        f[0].message
    );
}

#[test]
fn cloud_provider_formats() {
    let cases: Vec<(&str, String, String)> = vec![
        (
            "aws-session-token",
            "AWS_SESSION_TOKEN=".into(),
            format!("IQoJb3JpZ2luX2Vj{}", r(1, 200, B64)),
        ),
        (
            "azure-storage-account-key",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=".into(),
            format!("{}==", r(2, 86, B64)),
        ),
        (
            "azure-ad-client-secret",
            "AZURE_CLIENT_SECRET=".into(),
            format!("{}8Q~{}", r(3, 3, ALNUM), r(4, 34, ALNUM)),
        ),
        (
            "digitalocean-pat",
            "DO_TOKEN=".into(),
            format!("dop_v1_{}", r(5, 64, HEX)),
        ),
        (
            "alibaba-access-key-id",
            "id = ".into(),
            format!("LTAI{}", r(6, 20, ALNUM)),
        ),
        (
            "google-oauth-client-secret",
            "secret: ".into(),
            format!("GOCSPX-{}", r(7, 28, ALNUM)),
        ),
        ("heroku-api-key", "HEROKU_API_KEY=".into(), uuid(8)),
        (
            "cloudflare-api-token",
            "CLOUDFLARE_API_TOKEN=".into(),
            r(9, 40, ALNUM),
        ),
        ("linode-token", "LINODE_TOKEN=".into(), r(10, 64, HEX)),
        (
            "ibm-cloud-api-key",
            "IBM_CLOUD_API_KEY=".into(),
            r(11, 44, ALNUM),
        ),
        (
            "flyio-token",
            "FLY_API_TOKEN=".into(),
            format!("fo1_{}", r(12, 43, ALNUM)),
        ),
    ];
    for (rule, prefix, secret) in &cases {
        detects(rule, "deploy/.env", &format!("{prefix}{secret}"), secret);
    }
    // AWS key id look-alikes: lower case, too short, the documented example.
    quiet("a.py", &format!("k = \"akia{}\"", r(13, 16, UPPER_DIGITS)));
    quiet("a.py", &format!("k = \"AKIA{}\"", r(14, 15, UPPER_DIGITS)));
    quiet("a.py", "k = \"AKIAIOSFODNN7EXAMPLE\"");
    quiet("a.py", &format!("k = \"dop_v1_{}\"", r(15, 63, HEX)));
}

#[test]
fn vcs_and_ci_formats() {
    for (rule, secret) in [
        ("gitlab-pat", format!("glpat-{}", r(20, 20, ALNUM))),
        ("gitlab-deploy-token", format!("gldt-{}", r(21, 20, ALNUM))),
        ("gitlab-runner-token", format!("glrt-{}", r(22, 20, ALNUM))),
        (
            "gitlab-pipeline-trigger-token",
            format!("glptt-{}", r(23, 40, HEX)),
        ),
        (
            "gitlab-runner-registration-token",
            format!("GR1348941{}", r(24, 20, ALNUM)),
        ),
        ("gitlab-scim-token", format!("glsoat-{}", r(25, 20, ALNUM))),
        (
            "github-fine-grained-pat",
            format!("github_pat_{}_{}", r(26, 22, ALNUM), r(27, 59, ALNUM)),
        ),
        (
            "bitbucket-app-password",
            format!("ATBB{}", r(28, 32, ALNUM)),
        ),
        (
            "atlassian-api-token",
            format!("ATATT3{}", r(29, 186, ALNUM)),
        ),
        (
            "circleci-personal-token",
            format!("CCIPAT_{}_{}", r(30, 22, ALNUM), r(31, 40, HEX)),
        ),
        ("buildkite-token", format!("bkua_{}", r(32, 40, HEX))),
        ("pulumi-access-token", format!("pul-{}", r(33, 40, HEX))),
        (
            "terraform-cloud-token",
            format!("{}.atlasv1.{}", r(34, 14, ALNUM), r(35, 67, ALNUM)),
        ),
        ("doppler-token", format!("dp.pt.{}", r(36, 43, ALNUM))),
        ("vault-service-token", format!("hvs.{}", r(37, 95, ALNUM))),
    ] {
        detects(
            rule,
            "ci/config.yml",
            &format!("  token: {secret}"),
            &secret,
        );
    }
    detects(
        "azure-devops-pat",
        "ci/config.yml",
        &format!(
            "AZURE_DEVOPS_PAT: {}",
            r(38, 52, b"abcdefghijklmnopqrstuvwxyz234567")
        ),
        "",
    );
    quiet("ci/config.yml", "  token: glpat-xxxxxxxxxxxxxxxxxxxx");
    quiet(
        "ci/config.yml",
        &format!("  token: glptt-{}", r(39, 39, HEX)),
    );
}

#[test]
fn payment_formats() {
    for (rule, secret) in [
        ("stripe-live-key", format!("sk_live_{}", r(40, 24, ALNUM))),
        ("stripe-test-key", format!("rk_test_{}", r(41, 24, ALNUM))),
        (
            "stripe-webhook-secret",
            format!("whsec_{}", r(42, 32, ALNUM)),
        ),
        (
            "square-access-token",
            format!("sq0atp-{}", r(43, 22, ALNUM)),
        ),
        (
            "square-oauth-secret",
            format!("sq0csp-{}", r(44, 43, ALNUM)),
        ),
        (
            "braintree-access-token",
            format!(
                "access_token$production${}${}",
                r(45, 16, LOWER_DIGITS),
                r(46, 32, HEX)
            ),
        ),
        ("shopify-access-token", format!("shpat_{}", r(47, 32, HEX))),
        (
            "shopify-custom-app-token",
            format!("shpca_{}", r(48, 32, HEX)),
        ),
        (
            "shopify-private-app-token",
            format!("shppa_{}", r(49, 32, HEX)),
        ),
        ("shopify-shared-secret", format!("shpss_{}", r(50, 32, HEX))),
        (
            "plaid-access-token",
            format!("access-production-{}", uuid(51)),
        ),
        (
            "flutterwave-secret-key",
            format!("FLWSECK-{}-X", r(52, 32, HEX)),
        ),
        ("easypost-api-key", format!("EZAK{}", r(53, 54, ALNUM))),
    ] {
        detects(rule, "pay.js", &format!("const k = '{secret}';"), &secret);
    }
    // Publishable keys are public by design.
    quiet(
        "pay.js",
        &format!("const k = 'pk_live_{}';", r(54, 24, ALNUM)),
    );
    quiet("pay.js", "const k = 'sk_live_xxxxxxxxxxxxxxxxxxxxxxxx';");
}

#[test]
fn messaging_formats() {
    for (rule, secret) in [
        (
            "slack-app-token",
            format!(
                "xapp-1-A{}-{}-{}",
                r(60, 10, UPPER_DIGITS),
                r(61, 13, b"0123456789"),
                r(62, 64, HEX)
            ),
        ),
        (
            "telegram-bot-token",
            format!("{}:AA{}", r(63, 10, b"0123456789"), r(64, 33, ALNUM)),
        ),
        (
            "sendgrid-api-key",
            format!("SG.{}.{}", r(65, 22, ALNUM), r(66, 43, ALNUM)),
        ),
        ("mailgun-api-key", format!("key-{}", r(67, 32, HEX))),
        ("mailchimp-api-key", format!("{}-us12", r(68, 32, HEX))),
        ("twilio-api-key", format!("SK{}", r(69, 32, HEX))),
        (
            "brevo-api-key",
            format!("xkeysib-{}-{}", r(70, 64, HEX), r(71, 16, ALNUM)),
        ),
        (
            "discord-webhook-url",
            format!(
                "https://discord.com/api/webhooks/{}/{}",
                r(72, 18, b"0123456789"),
                r(73, 68, ALNUM)
            ),
        ),
    ] {
        detects(rule, "notify.py", &format!("X = \"{secret}\""), &secret);
    }
    detects(
        "twilio-auth-token",
        "notify.py",
        &format!("TWILIO_AUTH_TOKEN = \"{}\"", r(74, 32, HEX)),
        "",
    );
    detects(
        "discord-bot-token",
        "bot/.env",
        &format!(
            "DISCORD_BOT_TOKEN={}.{}.{}",
            format_args!("M{}", r(75, 25, ALNUM)),
            r(76, 6, ALNUM),
            r(77, 38, ALNUM)
        ),
        "",
    );
    quiet("notify.py", "X = \"SG.your-sendgrid-key-here\"");
    quiet(
        "notify.py",
        &format!(
            "X = \"{}:AB{}\"",
            r(78, 10, b"0123456789"),
            r(79, 33, ALNUM)
        ),
    );
}

#[test]
fn ai_api_formats() {
    for (rule, secret) in [
        (
            "openai-project-key",
            format!("sk-proj-{}", r(80, 120, ALNUM)),
        ),
        (
            "openai-service-account-key",
            format!("sk-svcacct-{}", r(81, 80, ALNUM)),
        ),
        ("openai-admin-key", format!("sk-admin-{}", r(82, 80, ALNUM))),
        (
            "openai-api-key",
            format!("sk-{}T3BlbkFJ{}", r(83, 20, ALNUM), r(84, 20, ALNUM)),
        ),
        (
            "anthropic-api-key",
            format!("sk-ant-api03-{}AA", r(85, 93, ALNUM)),
        ),
        (
            "anthropic-admin-key",
            format!("sk-ant-admin01-{}AA", r(86, 93, ALNUM)),
        ),
        ("huggingface-token", format!("hf_{}", r(87, 34, ALNUM))),
        (
            "huggingface-org-token",
            format!("api_org_{}", r(88, 34, ALNUM)),
        ),
        ("replicate-api-token", format!("r8_{}", r(89, 37, ALNUM))),
        ("groq-api-key", format!("gsk_{}", r(90, 52, ALNUM))),
        ("perplexity-api-key", format!("pplx-{}", r(91, 48, ALNUM))),
    ] {
        detects(
            rule,
            "llm/settings.toml",
            &format!("api_key = \"{secret}\""),
            &secret,
        );
    }
    detects(
        "mistral-api-key",
        "llm/.env",
        &format!("MISTRAL_API_KEY={}", r(92, 32, ALNUM)),
        "",
    );
    quiet("llm/settings.toml", "api_key = \"sk-proj-...\"");
    quiet(
        "llm/settings.toml",
        "api_key = \"hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
    );
}

#[test]
fn package_registry_formats() {
    for (rule, secret) in [
        ("rubygems-api-key", format!("rubygems_{}", r(100, 48, HEX))),
        ("nuget-api-key", format!("oy2{}", r(101, 43, LOWER_DIGITS))),
        ("crates-io-token", format!("cio{}", r(102, 32, ALNUM))),
        ("docker-hub-pat", format!("dckr_pat_{}", r(103, 27, ALNUM))),
        ("jfrog-api-key", format!("AKCp{}", r(104, 69, ALNUM))),
        (
            "clojars-token",
            format!("CLOJARS_{}", r(105, 60, LOWER_DIGITS)),
        ),
    ] {
        detects(
            rule,
            "publish.sh",
            &format!("export PUBLISH_TOKEN={secret}"),
            &secret,
        );
    }
    quiet("publish.sh", "export PUBLISH_TOKEN=$NPM_TOKEN");
    quiet(
        "publish.sh",
        "export PUBLISH_TOKEN=${{ secrets.NPM_TOKEN }}",
    );
}

#[test]
fn database_formats() {
    for (rule, secret) in [
        (
            "planetscale-token",
            format!("pscale_tkn_{}", r(110, 43, ALNUM)),
        ),
        (
            "planetscale-password",
            format!("pscale_pw_{}", r(111, 43, ALNUM)),
        ),
        ("supabase-access-token", format!("sbp_{}", r(112, 40, HEX))),
        ("neon-api-key", format!("napi_{}", r(113, 64, LOWER_DIGITS))),
        ("databricks-token", format!("dapi{}", r(114, 32, HEX))),
    ] {
        detects(rule, "db.yaml", &format!("key: \"{secret}\""), &secret);
    }
    let pw = r(115, 14, ALNUM);
    for (rule, line) in [
        (
            "url-password",
            format!("url: mongodb+srv://app:{pw}@cluster0.mongodb.net/db"),
        ),
        (
            "url-password",
            format!("REDIS_URL=redis://default:{pw}@cache:6379/0"),
        ),
        ("url-password", format!("AMQP=amqp://svc:{pw}@mq:5672/")),
        (
            "connection-string-password",
            format!("var c = \"Server=db;Database=app;User Id=sa;Password={pw};\";"),
        ),
    ] {
        detects(rule, "app.cs", &line, &pw);
    }
    quiet(
        "app.cs",
        "var c = \"Server=db;User Id=sa;Password=${DB_PASS};\";",
    );
    quiet("app.cs", "url: postgres://user:password@localhost/db");
}

#[test]
fn observability_formats() {
    for (rule, secret) in [
        (
            "new-relic-user-key",
            format!("NRAK-{}", r(120, 27, UPPER_DIGITS)),
        ),
        ("sentry-user-token", format!("sntryu_{}", r(121, 64, HEX))),
        (
            "grafana-service-account-token",
            format!("glsa_{}_{}", r(122, 32, ALNUM), r(123, 8, HEX)),
        ),
        ("grafana-cloud-token", format!("glc_{}", r(124, 80, ALNUM))),
        (
            "dynatrace-token",
            format!(
                "dt0c01.{}.{}",
                r(125, 24, UPPER_DIGITS),
                r(126, 64, UPPER_DIGITS)
            ),
        ),
    ] {
        detects(rule, "monitoring.py", &format!("KEY = '{secret}'"), &secret);
    }
    detects(
        "datadog-api-key",
        "docker-compose.yml",
        &format!("      - DD_API_KEY={}", r(127, 32, HEX)),
        "",
    );
    quiet("docker-compose.yml", "      - DD_API_KEY=${DD_API_KEY}");
    quiet("docker-compose.yml", "      - DD_SITE=datadoghq.eu");
}

#[test]
fn key_formats() {
    let age = format!(
        "AGE-SECRET-KEY-1{}",
        r(130, 58, b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")
    );
    detects("age-secret-key", "keys.txt", &age, &age);
    let putty = format!(
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: me\nPublic-Lines: 2\n{}\n{}\nPrivate-Lines: 1\n{}\nPrivate-MAC: {}",
        r(131, 64, B64),
        r(132, 20, B64),
        r(133, 64, B64),
        r(134, 64, HEX)
    );
    assert_eq!(found("id.ppk", &putty), vec!["putty-private-key"]);
    let b64_key = format!(
        "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo{}",
        r(135, 200, B64)
    );
    detects(
        "kubeconfig-client-key",
        "kubeconfig",
        &format!("    client-key-data: {b64_key}"),
        &b64_key,
    );
    quiet("README.md", "age keys look like AGE-SECRET-KEY-1...");
}

#[test]
fn saas_formats() {
    for (rule, secret) in [
        ("linear-api-key", format!("lin_api_{}", r(140, 40, ALNUM))),
        (
            "notion-integration-token",
            format!("ntn_{}", r(141, 46, ALNUM)),
        ),
        (
            "airtable-pat",
            format!("pat{}.{}", r(142, 14, ALNUM), r(143, 64, HEX)),
        ),
        ("figma-pat", format!("figd_{}", r(144, 40, ALNUM))),
        (
            "postman-api-key",
            format!("PMAK-{}-{}", r(145, 24, HEX), r(146, 34, HEX)),
        ),
        ("sourcegraph-token", format!("sgp_{}", r(147, 40, HEX))),
        (
            "tailscale-key",
            format!("tskey-auth-{}-{}", r(148, 12, ALNUM), r(149, 30, ALNUM)),
        ),
        ("typeform-token", format!("tfp_{}", r(150, 59, ALNUM))),
        (
            "mapbox-secret-token",
            format!("sk.eyJ{}.{}", r(151, 60, ALNUM), r(152, 22, ALNUM)),
        ),
        (
            "firebase-fcm-server-key",
            format!("AAAA{}:APA91b{}", r(153, 7, ALNUM), r(154, 134, ALNUM)),
        ),
        (
            "facebook-access-token",
            format!("EAAB{}", r(155, 120, ALNUM)),
        ),
        ("dropbox-access-token", format!("sl.{}", r(156, 140, ALNUM))),
        ("contentful-pat", format!("CFPAT-{}", r(157, 43, ALNUM))),
        ("frameio-token", format!("fio-u-{}", r(158, 64, ALNUM))),
    ] {
        detects(
            rule,
            "integrations.json",
            &format!("  \"value\": \"{secret}\","),
            &secret,
        );
    }
    detects(
        "algolia-admin-key",
        "search.env",
        &format!("ALGOLIA_ADMIN_KEY={}", r(159, 32, HEX)),
        "",
    );
    // Search-only Algolia keys and Mapbox public tokens are meant to be public.
    quiet(
        "search.env",
        &format!("ALGOLIA_SEARCH_ONLY={}", r(160, 32, HEX)),
    );
    quiet(
        "map.js",
        &format!(
            "const t = 'pk.eyJ{}.{}';",
            r(161, 60, ALNUM),
            r(162, 22, ALNUM)
        ),
    );
}

#[test]
fn unquoted_assignments_per_file_type() {
    let pw = format!("{}7#{}", r(170, 8, ALNUM), r(171, 5, ALNUM));
    let token = r(172, 32, ALNUM);
    let cases: Vec<(&str, String)> = vec![
        (".env", format!("DB_PASSWORD={pw}")),
        ("config/.env.production", format!("SECRET_KEY={token}")),
        (
            "settings/.env",
            format!(
                "DJANGO_SECRET_KEY={}!@#%^&*{}",
                r(173, 20, ALNUM),
                r(174, 12, ALNUM)
            ),
        ),
        (
            "settings.py",
            format!(
                "SECRET_KEY = '{}(J1$g6-{})'",
                r(175, 20, ALNUM),
                r(176, 8, ALNUM)
            ),
        ),
        (
            "app.ini",
            format!(
                "password = {}",
                r(
                    177,
                    12,
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                )
            ),
        ),
        ("values.yaml", format!("  password: {pw}")),
        (
            "docker-compose.yml",
            format!("      - POSTGRES_PASSWORD={pw}"),
        ),
        (
            "docker-compose.yml",
            format!("      POSTGRES_PASSWORD: {pw}"),
        ),
        ("settings.ini", format!("password = {pw}")),
        ("pyproject.toml", format!("api_token = \"{token}\"")),
        ("app.properties", format!("spring.datasource.password={pw}")),
        ("deploy.sh", format!("export API_TOKEN={token}")),
        (
            "scripts/run.py",
            format!("# export API_TOKEN={token}").replace("# ", ""),
        ),
        ("config.json", format!("{{\"client_secret\": \"{token}\"}}")),
        ("main.tf", format!("  password = \"{pw}\"")),
        (
            "web.config",
            format!("<add key=\"DbPassword\" value=\"{pw}\" />"),
        ),
        ("pom.xml", format!("<password>{pw}</password>")),
        ("settings.xml", format!("<server password=\"{pw}\" />")),
        ("Dockerfile", format!("ENV API_TOKEN={token}")),
        (
            ".npmrc",
            format!("//registry.example.org/:_authToken={token}"),
        ),
    ];
    for (path, line) in &cases {
        let ids = found(path, &format!("{line}\n"));
        assert_eq!(ids.len(), 1, "{path}: {line} -> {ids:?}");
        assert!(
            ids[0].starts_with("generic-secret"),
            "{path}: {line} -> {ids:?}"
        );
    }
    // Unquoted values in program source are expressions.
    quiet("app.py", "password = get_password()");
    quiet("app.rs", &format!("let password = {pw};").replace('#', ""));
    quiet("app.ts", "  password: string;");
}

#[test]
fn headers_and_command_lines() {
    let token = r(180, 40, ALNUM);
    detects(
        "authorization-header",
        "api.http",
        &format!("Authorization: Bearer {token}"),
        &token,
    );
    detects(
        "authorization-header",
        "call.sh",
        &format!("curl -H \"Authorization: token {token}\" https://api.example.org"),
        &token,
    );
    let basic = b64("deploy:Zq8#pL2vXw");
    detects(
        "basic-auth-header",
        "req.http",
        &format!("Authorization: Basic {basic}"),
        &basic,
    );
    let pw = format!("{}9{}", r(181, 6, ALNUM), r(182, 6, ALNUM));
    detects(
        "curl-user-password",
        "call.sh",
        &format!("curl -u deploy:{pw} https://repo.example.org"),
        &pw,
    );
    for (rule, line) in [
        (
            "mysql-cli-password",
            format!("mysqldump -u root -p{pw} app > dump.sql"),
        ),
        (
            "sshpass-password",
            format!("sshpass -p '{pw}' ssh deploy@host"),
        ),
        (
            "docker-login-password",
            format!("docker login -u deploy -p {pw} registry.example.org"),
        ),
        (
            "url-query-secret",
            format!("jdbc:mysql://db:3306/app?user=app&password={pw}"),
        ),
        (
            "url-query-secret",
            format!("GET https://api.example.org/v1/items?api_key={token}"),
        ),
    ] {
        detects(rule, "run.md", &line, &pw);
    }
    detects(
        "api-key-header",
        "call.sh",
        &format!("curl -H \"X-API-Key: {token}\" https://api.example.org"),
        &token,
    );
    quiet(
        "call.sh",
        "curl -H \"X-API-Key: $API_KEY\" https://api.example.org",
    );
    quiet("run.md", "mysql -u root -p app");
    quiet("run.md", "sshpass -p \"$SSHPASS\" ssh host");
    quiet("run.md", "docker login -u deploy --password-stdin");
    quiet(
        "run.md",
        "https://api.example.org/v1/items?api_key=YOUR_API_KEY",
    );
    quiet("api.http", "Authorization: Bearer ${TOKEN}");
    quiet("api.http", "Authorization: Bearer <your-token>");
    quiet("call.sh", "curl -u $USER:$PASS https://repo.example.org");
    // `Basic` followed by base64 that is not `user:password`.
    quiet(
        "doc.md",
        &format!("Basic {}", b64("no colon in here at all")),
    );
}

fn b64(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn placeholders_and_references_stay_quiet() {
    for (path, line) in [
        (".env", "DB_PASSWORD=${DB_PASSWORD}"),
        (".env", "DB_PASSWORD=$DB_PASSWORD"),
        (".env", "API_TOKEN=<your-token>"),
        (".env", "API_TOKEN=changeme"),
        (".env", "API_TOKEN=xxxxxxxxxxxxxxxxxxxx"),
        (".env", "DB_PASSWORD=****************"),
        (".env", "DB_PASSWORD=example-password"),
        (".env", "DB_PASSWORD=dummy12345"),
        (".env", "DB_PASSWORD=test1234"),
        (".env", "DB_PASSWORD=password"),
        (".env", "CLIENT_SECRET=secret"),
        (".env", "DB_PASSWORD=null"),
        (".env", "DB_PASSWORD=none"),
        (".env", "AUTH_ENABLED=true"),
        (".env", "DB_PASSWORD=12345678901234"),
        (".env", "PASSWORD_FILE=/run/secrets/db_password"),
        (".env", "TLS_KEY=/etc/ssl/private/server.key"),
        ("values.yaml", "  password: {{ .Values.db.password }}"),
        ("values.yaml", "  secretName: db-credentials-v2"),
        (
            "values.yaml",
            "  tokenUrl: https://login.example.org/oauth/token",
        ),
        ("app.py", "password = os.environ[\"DB_PASSWORD\"]"),
        ("app.js", "const token = process.env.API_TOKEN;"),
        ("app.go", "token := os.Getenv(\"API_TOKEN\")"),
        ("app.py", "API_KEY = \"your-api-key-here-1234\""),
        ("app.properties", "db.password=${DB_PASSWORD}"),
        ("settings.ini", "password = %(db_password)s"),
        ("pom.xml", "<password>${env.DEPLOY_PASSWORD}</password>"),
        ("config.json", "{\"password\": \"\", \"token\": null}"),
        (
            "report.json",
            "\"hashed_secret\": \"7a44f1c2b9e8d3a6f5e4d3c2b1a0998877665544\",",
        ),
        ("sarif.rs", "fingerprint_key: \"lintFingerprint/v1\","),
    ] {
        quiet(path, line);
    }
}
