//! SPDX 2.3 and CycloneDX 1.5 JSON documents for an [`Inventory`]. Both describe one root
//! package (the scanned source) and the dependency graph the lockfiles record: the source
//! depends on its direct dependencies, each component on its own. Scope: CycloneDX `scope`
//! (`optional` for optional dependencies, `excluded` for development-only ones, as the
//! specification defines them) with a `certus-assurance:scope` property; SPDX
//! `OPTIONAL_DEPENDENCY_OF` / `DEV_DEPENDENCY_OF` relationships to the source.

use serde_json::{json, Value};

use super::{Ecosystem, Inventory, Scope};

/// What the documents say about the scanned source and the run.
pub struct DocumentInfo<'a> {
    /// Name of the root package (the component id of the scan).
    pub subject: &'a str,
    /// Unique per document set (the scan's test id).
    pub run_id: &'a str,
    /// RFC 3339 UTC timestamp with seconds precision and `Z`.
    pub created: &'a str,
    /// Tool version written as the creator.
    pub tool_version: &'a str,
}

/// A random (v4) UUID in its canonical text form.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn spdx_id(i: usize) -> String {
    format!("SPDXRef-Package-{}", i + 1)
}

/// The SPDX 2.3 JSON document.
pub fn spdx(inv: &Inventory, info: &DocumentInfo<'_>) -> Value {
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Source",
        "name": info.subject,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "SOURCE",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Source",
    })];
    for (i, c) in inv.components.iter().enumerate() {
        let locations: Vec<String> = c
            .locations
            .iter()
            .map(|l| format!("{}:{}", l.path, l.line))
            .collect();
        packages.push(json!({
            "SPDXID": spdx_id(i),
            "name": c.name,
            "versionInfo": c.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "sourceInfo": format!("pinned in {}", locations.join(", ")),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": c.purl,
            }],
        }));
        match inv.scope(i) {
            Scope::Required => {
                if inv.direct.contains(&i) {
                    relationships.push(json!({
                        "spdxElementId": "SPDXRef-Source",
                        "relationshipType": "DEPENDS_ON",
                        "relatedSpdxElement": spdx_id(i),
                    }));
                }
            }
            scope => relationships.push(json!({
                "spdxElementId": spdx_id(i),
                "relationshipType": if scope == Scope::Dev {
                    "DEV_DEPENDENCY_OF"
                } else {
                    "OPTIONAL_DEPENDENCY_OF"
                },
                "relatedSpdxElement": "SPDXRef-Source",
            })),
        }
    }
    for (&from, deps) in &inv.dependencies {
        for &to in deps {
            relationships.push(json!({
                "spdxElementId": spdx_id(from),
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": spdx_id(to),
            }));
        }
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} ({})", info.subject, info.run_id),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/certus-assurance/{}-{}",
            info.run_id,
            new_uuid()
        ),
        "creationInfo": {
            "created": info.created,
            "creators": [format!("Tool: certus-assurance-{}", info.tool_version)],
            "comment": lockfiles_comment(inv),
        },
        "packages": packages,
        "relationships": relationships,
    })
}

/// Which files the inventory was read from (test fixtures show up here, to be excluded with a
/// `.certusignore`).
fn lockfiles_comment(inv: &Inventory) -> String {
    if inv.files.is_empty() {
        "No lockfiles or manifests were found.".to_string()
    } else {
        format!("Read from: {}", inv.files.join(", "))
    }
}

/// The CycloneDX 1.5 JSON BOM.
pub fn cyclonedx(inv: &Inventory, info: &DocumentInfo<'_>) -> Value {
    let components: Vec<Value> = inv
        .components
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (group, name) = match c.ecosystem {
                Ecosystem::Npm => match c.name.strip_prefix('@').and_then(|n| n.split_once('/')) {
                    Some((scope, pkg)) => (Some(format!("@{scope}")), pkg.to_string()),
                    None => (None, c.name.clone()),
                },
                _ => (None, c.name.clone()),
            };
            let mut properties: Vec<Value> = c
                .locations
                .iter()
                .map(|l| {
                    json!({
                        "name": "certus-assurance:location",
                        "value": format!("{}:{}", l.path, l.line),
                    })
                })
                .collect();
            let scope = inv.scope(i);
            if scope != Scope::Required {
                properties.push(json!({"name": "certus-assurance:scope", "value": scope.as_str()}));
            }
            if scope == Scope::Dev && c.ecosystem == Ecosystem::Npm {
                properties.push(json!({"name": "cdx:npm:package:development", "value": "true"}));
            }
            let mut comp = json!({
                "type": "library",
                "bom-ref": c.purl,
                "name": name,
                "version": c.version,
                "purl": c.purl,
                "properties": properties,
            });
            match scope {
                Scope::Required => {}
                Scope::Optional => comp["scope"] = json!("optional"),
                Scope::Dev => comp["scope"] = json!("excluded"),
            }
            if let Some(g) = group {
                comp["group"] = json!(g);
            }
            comp
        })
        .collect();
    let purl_of = |i: &usize| inv.components[*i].purl.as_str();
    let mut dependencies = vec![json!({
        "ref": "source",
        "dependsOn": inv.direct.iter().map(purl_of).collect::<Vec<_>>(),
    })];
    for (from, deps) in &inv.dependencies {
        dependencies.push(json!({
            "ref": purl_of(from),
            "dependsOn": deps.iter().map(purl_of).collect::<Vec<_>>(),
        }));
    }
    let mut metadata_properties =
        vec![json!({"name": "certus-assurance:test_id", "value": info.run_id})];
    metadata_properties.extend(
        inv.files
            .iter()
            .map(|f| json!({"name": "certus-assurance:lockfile", "value": f})),
    );
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", new_uuid()),
        "version": 1,
        "metadata": {
            "timestamp": info.created,
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "certus-assurance",
                    "version": info.tool_version,
                }],
            },
            "component": {
                "type": "application",
                "bom-ref": "source",
                "name": info.subject,
            },
            "properties": metadata_properties,
        },
        "components": components,
        "dependencies": dependencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sbom::{purl, Component, Ecosystem, Location};

    fn component(e: Ecosystem, name: &str, version: &str, path: &str, line: u32) -> Component {
        Component {
            ecosystem: e,
            name: name.into(),
            version: version.into(),
            purl: purl(e, name, version),
            locations: vec![Location {
                path: path.into(),
                line,
            }],
        }
    }

    /// `@babel/core` (dev) depends on `debug`, which the source also requires; `fsevents` is
    /// optional; `flask` comes from a file without a graph.
    fn inventory() -> Inventory {
        Inventory {
            components: vec![
                component(
                    Ecosystem::Npm,
                    "@babel/core",
                    "7.0.0",
                    "package-lock.json",
                    7,
                ),
                component(Ecosystem::Npm, "debug", "4.3.4", "package-lock.json", 12),
                component(Ecosystem::Npm, "fsevents", "2.3.3", "package-lock.json", 20),
                component(Ecosystem::PyPI, "flask", "3.1.0", "requirements.txt", 1),
            ],
            files: vec!["package-lock.json".into(), "requirements.txt".into()],
            warnings: vec![],
            scopes: vec![
                Scope::Dev,
                Scope::Required,
                Scope::Optional,
                Scope::Required,
            ],
            dependencies: [
                (0, [1].into_iter().collect()),
                (1, Default::default()),
                (2, Default::default()),
            ]
            .into_iter()
            .collect(),
            direct: [0, 1, 2, 3].into_iter().collect(),
        }
    }

    const INFO: DocumentInfo<'static> = DocumentInfo {
        subject: "web",
        run_id: "test_0123456789ab",
        created: "2025-01-01T00:00:00Z",
        tool_version: "0.1.0",
    };

    fn relationships(doc: &Value) -> Vec<String> {
        doc["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["spdxElementId"].as_str().unwrap(),
                    r["relationshipType"].as_str().unwrap(),
                    r["relatedSpdxElement"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn spdx_document_shape() {
        let doc = spdx(&inventory(), &INFO);
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["packages"].as_array().unwrap().len(), 5);
        assert_eq!(
            doc["packages"][1]["externalRefs"][0]["referenceLocator"],
            "pkg:npm/%40babel/core@7.0.0"
        );
        assert_eq!(
            relationships(&doc),
            vec![
                "SPDXRef-DOCUMENT DESCRIBES SPDXRef-Source",
                "SPDXRef-Package-1 DEV_DEPENDENCY_OF SPDXRef-Source",
                "SPDXRef-Source DEPENDS_ON SPDXRef-Package-2",
                "SPDXRef-Package-3 OPTIONAL_DEPENDENCY_OF SPDXRef-Source",
                "SPDXRef-Source DEPENDS_ON SPDXRef-Package-4",
                "SPDXRef-Package-1 DEPENDS_ON SPDXRef-Package-2",
            ]
        );
        assert_eq!(
            doc["creationInfo"]["comment"],
            "Read from: package-lock.json, requirements.txt"
        );
    }

    #[test]
    fn cyclonedx_document_shape() {
        let doc = cyclonedx(&inventory(), &INFO);
        assert_eq!(doc["specVersion"], "1.5");
        assert_eq!(doc["components"][0]["group"], "@babel");
        assert_eq!(doc["components"][0]["name"], "core");
        assert_eq!(doc["components"][0]["scope"], "excluded");
        assert_eq!(
            doc["components"][0]["properties"],
            json!([
                {"name": "certus-assurance:location", "value": "package-lock.json:7"},
                {"name": "certus-assurance:scope", "value": "dev"},
                {"name": "cdx:npm:package:development", "value": "true"},
            ])
        );
        assert!(doc["components"][1].get("scope").is_none());
        assert_eq!(doc["components"][2]["scope"], "optional");
        let serial = doc["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36);
        assert_eq!(
            doc["dependencies"],
            json!([
                {"ref": "source", "dependsOn": [
                    "pkg:npm/%40babel/core@7.0.0", "pkg:npm/debug@4.3.4",
                    "pkg:npm/fsevents@2.3.3", "pkg:pypi/flask@3.1.0"]},
                {"ref": "pkg:npm/%40babel/core@7.0.0", "dependsOn": ["pkg:npm/debug@4.3.4"]},
                {"ref": "pkg:npm/debug@4.3.4", "dependsOn": []},
                {"ref": "pkg:npm/fsevents@2.3.3", "dependsOn": []},
            ])
        );
        assert_eq!(
            doc["metadata"]["properties"][1],
            json!({"name": "certus-assurance:lockfile", "value": "package-lock.json"})
        );
    }
}
