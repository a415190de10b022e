//! SPDX 2.3 and CycloneDX 1.5 JSON documents for an [`Inventory`]. Both describe one root
//! package (the scanned source) that depends on every component.

use serde_json::{json, Value};

use super::Inventory;

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
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Source",
            "relationshipType": "DEPENDS_ON",
            "relatedSpdxElement": spdx_id(i),
        }));
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
        },
        "packages": packages,
        "relationships": relationships,
    })
}

/// The CycloneDX 1.5 JSON BOM.
pub fn cyclonedx(inv: &Inventory, info: &DocumentInfo<'_>) -> Value {
    let components: Vec<Value> = inv
        .components
        .iter()
        .map(|c| {
            let (group, name) = match c.ecosystem {
                super::Ecosystem::Npm => {
                    match c.name.strip_prefix('@').and_then(|n| n.split_once('/')) {
                        Some((scope, pkg)) => (Some(format!("@{scope}")), pkg.to_string()),
                        None => (None, c.name.clone()),
                    }
                }
                _ => (None, c.name.clone()),
            };
            let mut comp = json!({
                "type": "library",
                "bom-ref": c.purl,
                "name": name,
                "version": c.version,
                "purl": c.purl,
                "properties": c.locations.iter().map(|l| json!({
                    "name": "certus-assurance:location",
                    "value": format!("{}:{}", l.path, l.line),
                })).collect::<Vec<_>>(),
            });
            if let Some(g) = group {
                comp["group"] = json!(g);
            }
            comp
        })
        .collect();
    let refs: Vec<&str> = inv.components.iter().map(|c| c.purl.as_str()).collect();
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
            "properties": [{"name": "certus-assurance:test_id", "value": info.run_id}],
        },
        "components": components,
        "dependencies": [{"ref": "source", "dependsOn": refs}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sbom::{purl, Component, Ecosystem, Location};

    fn inventory() -> Inventory {
        Inventory {
            components: vec![Component {
                ecosystem: Ecosystem::Npm,
                name: "@babel/core".into(),
                version: "7.0.0".into(),
                purl: purl(Ecosystem::Npm, "@babel/core", "7.0.0"),
                locations: vec![Location {
                    path: "package-lock.json".into(),
                    line: 7,
                }],
            }],
            files: vec!["package-lock.json".into()],
            warnings: vec![],
        }
    }

    const INFO: DocumentInfo<'static> = DocumentInfo {
        subject: "web",
        run_id: "test_0123456789ab",
        created: "2025-01-01T00:00:00Z",
        tool_version: "0.1.0",
    };

    #[test]
    fn spdx_document_shape() {
        let doc = spdx(&inventory(), &INFO);
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["packages"].as_array().unwrap().len(), 2);
        assert_eq!(
            doc["packages"][1]["externalRefs"][0]["referenceLocator"],
            "pkg:npm/%40babel/core@7.0.0"
        );
        assert_eq!(doc["relationships"][1]["relationshipType"], "DEPENDS_ON");
    }

    #[test]
    fn cyclonedx_document_shape() {
        let doc = cyclonedx(&inventory(), &INFO);
        assert_eq!(doc["specVersion"], "1.5");
        assert_eq!(doc["components"][0]["group"], "@babel");
        assert_eq!(doc["components"][0]["name"], "core");
        let serial = doc["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36);
        assert_eq!(
            doc["dependencies"][0]["dependsOn"][0],
            "pkg:npm/%40babel/core@7.0.0"
        );
    }
}
