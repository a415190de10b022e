//! Known-vulnerability scanner: matches the SBOM inventory against the offline OSV database
//! ([`crate::pipeline::osv`]) and reports one finding per affected component and lockfile
//! location, with the advisory id, its aliases (CVE), the fixed versions and the severity.
//!
//! Without a configured database the scanner reports itself skipped with a warning rather than
//! "0 findings", which would read as "no known vulnerabilities".

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Finding, ScanContext, Scanner, ScannerOutput, Severity};
use crate::pipeline::osv::{OsvStore, VulnMatch};
use crate::pipeline::sarif::{build_sarif, SarifTool};

const TOOL_NAME: &str = "certus-assurance-vulnerabilities";
/// Key under `partialFingerprints` for this scanner's results.
pub const VULN_FINGERPRINT_KEY: &str = "vulnerabilityFingerprint/v1";

/// Why the scanner skips when no database is configured.
pub const NO_DATABASE: &str = "no OSV database is configured, so components were not matched against known vulnerabilities; set CERTUS_ASSURANCE_OSV_DB_DIR to a directory of OSV records (the osv.dev per-ecosystem exports) to enable it";

pub struct VulnerabilityScanner {
    store: Option<Arc<OsvStore>>,
}

impl VulnerabilityScanner {
    /// `store` is `None` when no database is configured.
    pub fn new(store: Option<Arc<OsvStore>>) -> Self {
        VulnerabilityScanner { store }
    }
}

impl Scanner for VulnerabilityScanner {
    fn name(&self) -> &'static str {
        "vulnerabilities"
    }

    fn run(&self, ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput> {
        let Some(store) = &self.store else {
            ctx.reports.skip(NO_DATABASE);
            return Ok(ScannerOutput {
                findings: vec![],
                sarif: serde_json::Value::Null,
                files_scanned: 0,
                bytes_scanned: 0,
            });
        };
        let db = store.get()?;
        if !db.errors.is_empty() {
            ctx.reports.warn(format!(
                "vulnerabilities: {} file(s) of the OSV database could not be read and were ignored (first: {})",
                db.errors.len(),
                db.errors[0]
            ));
        }
        if db.indexed == 0 {
            ctx.reports.warn(
                "vulnerabilities: the OSV database holds no records for crates.io, npm, PyPI, Go or RubyGems; no component could match",
            );
        }
        let inventory = ctx.inventory()?;
        let matches = db.match_components(&inventory.components);
        let (findings, extra) = to_findings(&inventory.components, &matches);

        let mut rules: BTreeMap<&str, (&str, Severity)> = BTreeMap::new();
        for m in &matches {
            rules
                .entry(m.advisory.id.as_str())
                .or_insert((m.advisory.summary.as_str(), m.advisory.severity));
        }
        let rule_list: Vec<(&str, &str, Severity)> = rules
            .iter()
            .map(|(id, (summary, sev))| {
                (*id, if summary.is_empty() { *id } else { *summary }, *sev)
            })
            .collect();
        let mut sarif = build_sarif(
            &SarifTool {
                name: TOOL_NAME,
                version: env!("CARGO_PKG_VERSION"),
                information_uri: env!("CARGO_PKG_HOMEPAGE"),
                rule_tags: &["security", "vulnerability", "dependency"],
                fingerprint_key: VULN_FINGERPRINT_KEY,
            },
            &rule_list,
            &findings,
        );
        if let Some(rules) = sarif.pointer_mut("/runs/0/tool/driver/rules") {
            for rule in rules.as_array_mut().into_iter().flatten() {
                if let Some(id) = rule["id"].as_str() {
                    rule["helpUri"] = json!(format!("https://osv.dev/vulnerability/{id}"));
                }
            }
        }
        if let Some(results) = sarif.pointer_mut("/runs/0/results") {
            for (result, props) in results.as_array_mut().into_iter().flatten().zip(extra) {
                if let Some(obj) = result["properties"].as_object_mut() {
                    obj.extend(props);
                }
            }
        }
        Ok(ScannerOutput {
            findings,
            sarif,
            files_scanned: inventory.files.len() as u64,
            bytes_scanned: 0,
        })
    }
}

/// One finding per (match, location), plus the SARIF result properties of each.
fn to_findings(
    components: &[crate::pipeline::sbom::Component],
    matches: &[VulnMatch],
) -> (
    Vec<Finding>,
    Vec<serde_json::Map<String, serde_json::Value>>,
) {
    let mut rows = Vec::new();
    for m in matches {
        let c = &components[m.component];
        let adv = &m.advisory;
        let cves: Vec<&str> = adv
            .aliases
            .iter()
            .filter(|a| a.starts_with("CVE-"))
            .map(String::as_str)
            .collect();
        let fix = if m.fixed.is_empty() {
            "No fixed version is known.".to_string()
        } else {
            format!("Fixed in {}.", m.fixed.join(", "))
        };
        let message = format!(
            "{} {} is affected by {}{}{} {}",
            c.name,
            c.version,
            adv.id,
            if cves.is_empty() {
                String::new()
            } else {
                format!(" ({})", cves.join(", "))
            },
            if adv.summary.is_empty() {
                ".".to_string()
            } else {
                format!(": {}.", adv.summary.trim_end_matches('.'))
            },
            fix
        );
        for loc in &c.locations {
            let mut hasher = Sha256::new();
            for part in [adv.id.as_str(), c.purl.as_str(), loc.path.as_str()] {
                hasher.update(part.as_bytes());
                hasher.update([0]);
            }
            let finding = Finding {
                rule_id: adv.id.clone(),
                severity: adv.severity,
                message: message.clone(),
                path: loc.path.clone(),
                line: loc.line.max(1),
                column: 1,
                snippet: format!("{} {}", c.name, c.version),
                fingerprint: hex::encode(hasher.finalize()),
            };
            let mut props = serde_json::Map::new();
            props.insert("advisory".into(), json!(adv.id));
            props.insert("aliases".into(), json!(adv.aliases));
            props.insert("fixed_versions".into(), json!(m.fixed));
            props.insert("package".into(), json!(c.name));
            props.insert("installed_version".into(), json!(c.version));
            props.insert("ecosystem".into(), json!(c.ecosystem.osv_name()));
            props.insert("purl".into(), json!(c.purl));
            props.insert("severity_source".into(), json!(adv.severity_source));
            if let Some(v) = &adv.cvss_vector {
                props.insert("cvss_vector".into(), json!(v));
            }
            rows.push((finding, props));
        }
    }
    rows.sort_by(|a, b| {
        (&a.0.path, a.0.line, &a.0.rule_id).cmp(&(&b.0.path, b.0.line, &b.0.rule_id))
    });
    rows.into_iter().unzip()
}
