//! The SBOM through the real service, on a git repository served by `git daemon`: lockfiles of
//! the newer formats, dev and optional scope, the dependency graph in both documents (checked
//! against each other and against the vendored SPDX 2.3 and CycloneDX 1.5 schemas), the warning
//! for unpinned requirements, and a `.certusignore` keeping test fixtures out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{scan_body, spawn_app_with, validate_schemas, GitServer};

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

fn validate(kind: &str, file: PathBuf) -> (bool, String) {
    validate_schemas(&[kind.into(), file.into_os_string()])
}

const UV_LOCK: &str = r#"version = 1
revision = 2
requires-python = ">=3.9"

[[package]]
name = "blinker"
version = "1.9.0"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files.pythonhosted.org/packages/21/28/9b3f50ce0e048515135495f198351908d99540d69bfdc8c1d15b73dc55ce/blinker-1.9.0.tar.gz", hash = "sha256:b4ce2265a7abece45e7cc896e98dbebe6cead56bcf805a3d23136d145f5445bf", size = 22460 }

[[package]]
name = "click"
version = "8.1.8"
source = { registry = "https://pypi.org/simple" }
dependencies = [
    { name = "colorama", marker = "sys_platform == 'win32'" },
]

[[package]]
name = "colorama"
version = "0.4.6"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "flask"
source = { editable = "." }
dependencies = [
    { name = "blinker" },
    { name = "click" },
]

[package.optional-dependencies]
dotenv = [
    { name = "python-dotenv" },
]

[package.dev-dependencies]
tests = [
    { name = "pytest" },
]

[[package]]
name = "pytest"
version = "8.3.4"
source = { registry = "https://pypi.org/simple" }
dependencies = [
    { name = "colorama", marker = "sys_platform == 'win32'" },
]

[[package]]
name = "python-dotenv"
version = "1.0.1"
source = { registry = "https://pypi.org/simple" }
"#;

const PNPM_LOCK: &str = r#"lockfileVersion: '9.0'

settings:
  autoInstallPeers: true
  excludeLinksFromLockfile: false

importers:

  .:
    dependencies:
      express:
        specifier: ^4.19.2
        version: 4.19.2
    devDependencies:
      typescript:
        specifier: ^5.4.5
        version: 5.4.5

packages:

  debug@2.6.9:
    resolution: {integrity: sha512-bC7ElrdJaJnPbAP+1EotYvqZsb3ecl5wi6Bfi6BJTUcNowp6cvspg0jXznRTKDjm/E7AdgFBVeAPVMNcKGsHMA==}

  express@4.19.2:
    resolution: {integrity: sha512-5T6nhjsT+EOMzuck8JjBHARTHfMht0POzlA60WV2pMD3gyXw2LZnZ+ueGdNxG+0calOJcWKbpFcuzLZ91YWq9Q==}
    engines: {node: '>= 0.10.0'}

  typescript@5.4.5:
    resolution: {integrity: sha512-vcI4UpRgg81oIRUFwR0WSIHKt11nJ7SAVlYNIu+QpqeyXP+gpQJy/Z4+F0aGxSE4MqwjyXvW/TzgkLAx2AGHwQ==}
    engines: {node: '>=14.17'}
    hasBin: true

snapshots:

  debug@2.6.9:
    dependencies:
      ms: 2.0.0

  express@4.19.2:
    dependencies:
      debug: 2.6.9

  ms@2.0.0: {}

  typescript@5.4.5: {}
"#;

const COMPOSER_LOCK: &str = r#"{
    "_readme": [
        "This file locks the dependencies of your project to a known state"
    ],
    "content-hash": "d1f0bcd5d3e1e4f1bd3c43a0c6a3a5b1",
    "packages": [
        {
            "name": "monolog/monolog",
            "version": "3.6.0",
            "require": {
                "php": ">=8.1",
                "psr/log": "^2.0 || ^3.0"
            },
            "type": "library"
        },
        {
            "name": "psr/log",
            "version": "3.0.0",
            "require": {
                "php": ">=8.0.0"
            },
            "type": "library"
        }
    ],
    "packages-dev": [
        {
            "name": "phpunit/phpunit",
            "version": "10.5.20",
            "require": {
                "php": ">=8.1"
            },
            "type": "library"
        }
    ]
}"#;

/// A go.sum with no go.mod beside it (a vendored or generated tree).
const GO_SUM: &str =
    "github.com/gin-gonic/gin v1.9.0 h1:OjyFBKICoexlu99ctXNR2gg+c5pKrKMuyjgARg9qeY8=
github.com/gin-gonic/gin v1.9.0/go.mod h1:W1Me9+hsUSyj3CePGrd1/QrKJMSJ1Tu/0hFEH89961k=
github.com/gin-gonic/gin v1.8.1/go.mod h1:ji8BvRH1azfM+SYow9zQ6SZMvR8qOMZHmsCuWR9tTTk=
golang.org/x/net v0.7.0 h1:rJrUqqhjsgNp7KqAIc25s9pZnjU7TUcSY7HcVZjdn1g=
golang.org/x/net v0.7.0/go.mod h1:2Tu9+aMcznHK/AK1HMvgo6xiTLG5rD5rZLDS+rp2Bjs=
";

fn tree() -> Vec<(&'static str, &'static str)> {
    vec![
        ("py/uv.lock", UV_LOCK),
        ("js/pnpm-lock.yaml", PNPM_LOCK),
        ("php/composer.lock", COMPOSER_LOCK),
        (
            "php/composer.json",
            r#"{"require": {"monolog/monolog": "^3.0"}, "require-dev": {"phpunit/phpunit": "^10.5"}}"#,
        ),
        ("go/go.sum", GO_SUM),
        (
            "legacy/requirements.txt",
            "# pinned\nDjango==4.2.8\nrequests>=2.31\ncelery\n",
        ),
        // A test fixture: an old lockfile the project's tests read, not a dependency.
        (
            "tests/fixtures/vulnerable-app/package-lock.json",
            r#"{"lockfileVersion": 3, "packages": {"": {"name": "x"}, "node_modules/lodash": {"version": "4.17.4"}}}"#,
        ),
        (
            ".certusignore",
            "# lockfiles the tests read\ntests/fixtures/\n",
        ),
    ]
}

#[tokio::test]
async fn sbom_has_new_lockfiles_scope_graph_and_honours_certusignore() {
    let git = GitServer::start();
    git.create_repo("lockfiles", &tree());
    let app = spawn_app_with(|_| {}).await;
    let mut body = scan_body(&git.url("lockfiles"));
    body["profile"] = json!("sbom-only");
    let id = app.submit_scan(body).await;
    let scan = app
        .wait_for_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120))
        .await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let dir = app.artifact_dir(&id);
    let cdx_path = dir.join("reports/sbom/sbom.cyclonedx.json");
    let spdx_path = dir.join("reports/sbom/sbom.spdx.json");

    // Both documents are valid against the vendored schemas.
    let (ok, out) = validate("cyclonedx", cdx_path.clone());
    assert!(ok, "CycloneDX schema violations:\n{out}");
    let (ok, out) = validate("spdx", spdx_path.clone());
    assert!(ok, "SPDX schema violations:\n{out}");

    // Every pinned package of the new formats, with its scope; nothing from the fixture.
    let cdx = read_json(&cdx_path);
    let components: BTreeMap<String, String> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["purl"].as_str().unwrap().to_string(),
                c["scope"].as_str().unwrap_or("required").to_string(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("pkg:composer/monolog/monolog@3.6.0", "required"),
        ("pkg:composer/phpunit/phpunit@10.5.20", "excluded"),
        ("pkg:composer/psr/log@3.0.0", "required"),
        ("pkg:golang/github.com/gin-gonic/gin@v1.9.0", "required"),
        ("pkg:golang/golang.org/x/net@v0.7.0", "required"),
        ("pkg:npm/debug@2.6.9", "required"),
        ("pkg:npm/express@4.19.2", "required"),
        ("pkg:npm/ms@2.0.0", "required"),
        ("pkg:npm/typescript@5.4.5", "excluded"),
        ("pkg:pypi/blinker@1.9.0", "required"),
        ("pkg:pypi/click@8.1.8", "required"),
        ("pkg:pypi/colorama@0.4.6", "required"),
        ("pkg:pypi/django@4.2.8", "required"),
        ("pkg:pypi/pytest@8.3.4", "excluded"),
        ("pkg:pypi/python-dotenv@1.0.1", "optional"),
    ]
    .into_iter()
    .map(|(p, s)| (p.to_string(), s.to_string()))
    .collect();
    assert_eq!(components, expected);
    let lockfiles: Vec<&str> = cdx["metadata"]["properties"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "certus-assurance:lockfile")
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        lockfiles,
        vec![
            "go/go.sum",
            "js/pnpm-lock.yaml",
            "legacy/requirements.txt",
            "php/composer.lock",
            "py/uv.lock"
        ]
    );

    // The CycloneDX graph: refs are bom-refs, the source depends on the direct dependencies.
    let refs: BTreeSet<&str> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    let graph: BTreeMap<&str, BTreeSet<&str>> = cdx["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let deps = d["dependsOn"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            (d["ref"].as_str().unwrap(), deps)
        })
        .collect();
    for (from, deps) in &graph {
        assert!(
            *from == "source" || refs.contains(from),
            "unknown ref {from}"
        );
        for to in deps {
            assert!(refs.contains(to), "unknown dependsOn {to}");
        }
    }
    let set = |v: &[&'static str]| v.iter().copied().collect::<BTreeSet<&str>>();
    assert_eq!(
        graph["pkg:npm/express@4.19.2"],
        set(&["pkg:npm/debug@2.6.9"])
    );
    assert_eq!(graph["pkg:npm/debug@2.6.9"], set(&["pkg:npm/ms@2.0.0"]));
    assert_eq!(graph["pkg:npm/ms@2.0.0"], set(&[]));
    assert_eq!(
        graph["pkg:pypi/click@8.1.8"],
        set(&["pkg:pypi/colorama@0.4.6"])
    );
    assert_eq!(
        graph["pkg:composer/monolog/monolog@3.6.0"],
        set(&["pkg:composer/psr/log@3.0.0"])
    );
    // go.sum and requirements.txt record no graph: their components have no entry of their own.
    assert!(!graph.contains_key("pkg:golang/golang.org/x/net@v0.7.0"));
    assert!(!graph.contains_key("pkg:pypi/django@4.2.8"));
    let source = &graph["source"];
    for direct in [
        "pkg:npm/express@4.19.2",
        "pkg:npm/typescript@5.4.5",
        "pkg:pypi/click@8.1.8",
        "pkg:pypi/pytest@8.3.4",
        "pkg:composer/phpunit/phpunit@10.5.20",
        "pkg:golang/golang.org/x/net@v0.7.0",
        "pkg:pypi/django@4.2.8",
    ] {
        assert!(
            source.contains(direct),
            "source does not depend on {direct}"
        );
    }
    for transitive in [
        "pkg:npm/ms@2.0.0",
        "pkg:pypi/colorama@0.4.6",
        "pkg:composer/psr/log@3.0.0",
    ] {
        assert!(!source.contains(transitive), "{transitive} is not direct");
    }

    // The SPDX document has the same graph, by SPDXID, and the scopes as relationships.
    let spdx = read_json(&spdx_path);
    let purl_of: BTreeMap<&str, &str> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            Some((
                p["SPDXID"].as_str().unwrap(),
                p["externalRefs"][0]["referenceLocator"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(purl_of.len(), expected.len());
    let mut spdx_graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut scoped: BTreeMap<&str, &str> = BTreeMap::new();
    for r in spdx["relationships"].as_array().unwrap() {
        let (a, kind, b) = (
            r["spdxElementId"].as_str().unwrap(),
            r["relationshipType"].as_str().unwrap(),
            r["relatedSpdxElement"].as_str().unwrap(),
        );
        let name = |id: &str| -> &str {
            if id == "SPDXRef-Source" {
                "source"
            } else {
                purl_of
                    .get(id)
                    .copied()
                    .unwrap_or_else(|| panic!("relationship to unknown element {id}"))
            }
        };
        match kind {
            "DESCRIBES" => assert_eq!((a, b), ("SPDXRef-DOCUMENT", "SPDXRef-Source")),
            "DEPENDS_ON" => {
                spdx_graph.entry(name(a)).or_default().insert(name(b));
            }
            "DEV_DEPENDENCY_OF" | "OPTIONAL_DEPENDENCY_OF" => {
                assert_eq!(b, "SPDXRef-Source");
                scoped.insert(name(a), kind);
            }
            other => panic!("unexpected relationship {other}"),
        }
    }
    for (from, deps) in &graph {
        let spdx_deps = spdx_graph.get(from).cloned().unwrap_or_default();
        if *from == "source" {
            // Dev and optional direct dependencies are related by their own relationship.
            let required: BTreeSet<&str> = deps
                .iter()
                .copied()
                .filter(|d| components[*d] == "required")
                .collect();
            assert_eq!(spdx_deps, required);
        } else {
            assert_eq!(&spdx_deps, deps, "dependencies of {from}");
        }
    }
    let expected_scoped: BTreeMap<&str, &str> = [
        ("pkg:composer/phpunit/phpunit@10.5.20", "DEV_DEPENDENCY_OF"),
        ("pkg:npm/typescript@5.4.5", "DEV_DEPENDENCY_OF"),
        ("pkg:pypi/pytest@8.3.4", "DEV_DEPENDENCY_OF"),
        ("pkg:pypi/python-dotenv@1.0.1", "OPTIONAL_DEPENDENCY_OF"),
    ]
    .into_iter()
    .collect();
    assert_eq!(scoped, expected_scoped);

    // Unpinned requirements are a warning naming the file and the count.
    let scan_json = read_json(&dir.join("scan.json"));
    let warnings: Vec<&str> = scan_json["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.contains(
            &"sbom: legacy/requirements.txt: 2 requirements without an exact version; what they \
              install is unknown and not in the SBOM. Pin exact versions or commit a lockfile"
        ),
        "{warnings:?}"
    );
}

/// Without the `.certusignore`, the fixture's lockfile is counted and the documents say which
/// file it came from, so a user can see what to exclude.
#[tokio::test]
async fn fixture_lockfiles_are_counted_and_named_without_a_certusignore() {
    let git = GitServer::start();
    let files: Vec<(&str, &str)> = tree()
        .into_iter()
        .filter(|(p, _)| *p != ".certusignore")
        .collect();
    git.create_repo("fixtures", &files);
    let app = spawn_app_with(|_| {}).await;
    let mut body = scan_body(&git.url("fixtures"));
    body["profile"] = json!("sbom-only");
    let id = app.submit_scan(body).await;
    let scan = app
        .wait_for_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120))
        .await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let dir = app.artifact_dir(&id);
    let cdx = read_json(&dir.join("reports/sbom/sbom.cyclonedx.json"));
    let lodash = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["purl"] == "pkg:npm/lodash@4.17.4")
        .expect("the fixture's lodash is listed without a .certusignore");
    assert_eq!(
        lodash["properties"][0],
        json!({"name": "certus-assurance:location",
               "value": "tests/fixtures/vulnerable-app/package-lock.json:1"})
    );
    let spdx = read_json(&dir.join("reports/sbom/sbom.spdx.json"));
    assert!(spdx["creationInfo"]["comment"]
        .as_str()
        .unwrap()
        .contains("tests/fixtures/vulnerable-app/package-lock.json"));
}
