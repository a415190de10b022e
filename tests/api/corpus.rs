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
        format!("ghp_{}", r.string(36, ALNUM)),
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
        format!("gho_{}", r.string(36, ALNUM)),
        "",
    );
    plant(
        "github-app-token",
        "ci/app.sh",
        "export GHS=",
        format!("ghs_{}", r.string(36, ALNUM)),
        "",
    );
    plant(
        "github-refresh-token",
        "ci/refresh.sh",
        "export GHR=",
        format!("ghr_{}", r.string(36, ALNUM)),
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
        format!("npm_{}", r.string(36, ALNUM)),
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
