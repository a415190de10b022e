//! Known-vulnerability scanner: matches the SBOM inventory against the offline OSV database
//! ([`crate::pipeline::osv`]) and reports one finding per (component, advisory), with the
//! advisory id, its aliases (CVE), the fixed versions, the severity and every lockfile that pins
//! the component (SARIF: one location each, and `properties.lockfiles`).
//!
//! Without a database the scanner reports itself skipped, with how to get one, rather than
//! "0 findings", which would read as "no known vulnerabilities". With a database it also checks
//! that the data covers the SBOM: an ecosystem of the SBOM with no records, or data older than
//! `CERTUS_ASSURANCE_OSV_MAX_AGE_HOURS`, makes the run incomplete (its findings stand, the policy
//! counts the scanner as failed) and is reported in the warnings and the SARIF run properties.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ScanContext, Scanner, ScannerOutput};
use crate::pipeline::bundle::sarif::{build_sarif, percent_encode_path, SarifTool};
use crate::pipeline::finding::{Finding, Severity};
use crate::pipeline::osv::{Freshness, OsvStore, VulnMatch};
use crate::pipeline::sbom::{Component, Ecosystem};

const TOOL_NAME: &str = "certus-assurance-vulnerabilities";
/// Key under `partialFingerprints` for this scanner's results: sha256 of advisory id and purl
/// (v2: one result per component and advisory; v1 also hashed the lockfile path).
pub const VULN_FINGERPRINT_KEY: &str = "vulnerabilityFingerprint/v2";

/// Why the scanner skips when no database is configured.
pub const NO_DATABASE: &str = "no OSV database is configured, so components were not matched against known vulnerabilities; run `certus-assurance osv sync --db-dir DIR` and set CERTUS_ASSURANCE_OSV_DB_DIR=DIR to enable it (docs/scanning.md, OSV data)";

pub struct VulnerabilityScanner {
    store: Option<Arc<OsvStore>>,
}

impl VulnerabilityScanner {
    /// `store` is `None` when no database is configured.
    pub fn new(store: Option<Arc<OsvStore>>) -> Self {
        VulnerabilityScanner { store }
    }
}

fn skipped() -> ScannerOutput {
    ScannerOutput {
        findings: vec![],
        sarif: serde_json::Value::Null,
        files_scanned: 0,
        bytes_scanned: 0,
    }
}

/// Which ecosystems of the SBOM lack data or have data that is too old.
#[derive(Debug, Default, PartialEq, Eq)]
struct Coverage {
    missing: Vec<Ecosystem>,
    /// With the age in whole hours (`None`: no date to tell the age from).
    stale: Vec<(Ecosystem, Option<u64>)>,
}

fn coverage(
    in_sbom: &BTreeSet<Ecosystem>,
    fresh: &BTreeMap<Ecosystem, Freshness>,
    max_age: Option<std::time::Duration>,
    now: SystemTime,
) -> Coverage {
    let mut c = Coverage::default();
    for eco in in_sbom {
        let f = fresh.get(eco).copied().unwrap_or(Freshness {
            records: 0,
            updated_at: None,
            source: None,
        });
        if f.records == 0 {
            c.missing.push(*eco);
            continue;
        }
        let Some(max) = max_age else { continue };
        match f.age(now) {
            Some(age) if age <= max => {}
            age => c.stale.push((*eco, age.map(|a| a.as_secs() / 3600))),
        }
    }
    c
}

impl Scanner for VulnerabilityScanner {
    fn name(&self) -> &'static str {
        super::names::VULNERABILITIES
    }

    fn run(&self, ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput> {
        let Some(store) = &self.store else {
            ctx.reports.skip(NO_DATABASE);
            return Ok(skipped());
        };
        let db = store.get()?;
        if db.records == 0 {
            ctx.reports.skip(
                "the OSV database directory (CERTUS_ASSURANCE_OSV_DB_DIR) holds no OSV records, so components were not matched against known vulnerabilities; run `certus-assurance osv sync` to download them (docs/scanning.md, OSV data)",
            );
            return Ok(skipped());
        }
        if !db.errors.is_empty() {
            ctx.reports.warn(format!(
                "vulnerabilities: {} file(s) of the OSV database could not be read and were ignored (first: {})",
                db.errors.len(),
                db.errors[0]
            ));
        }
        let inventory = ctx.inventory()?;
        let now = SystemTime::now();
        let fresh = store.freshness(&db);
        let in_sbom: BTreeSet<Ecosystem> =
            inventory.components.iter().map(|c| c.ecosystem).collect();
        let cov = coverage(&in_sbom, &fresh, store.max_age(), now);
        report_coverage(ctx, &cov, store.max_age());
        let matches = db.match_components(&inventory.components);
        let (findings, extra) = to_findings(&inventory.components, &matches);

        let mut sarif = vulnerability_sarif(&matches, &findings, extra);
        if let Some(run) = sarif.pointer_mut("/runs/0") {
            run["properties"] =
                json!({ "osv": run_properties(&in_sbom, &fresh, &cov, store.max_age(), now) });
        }
        Ok(ScannerOutput {
            findings,
            sarif,
            files_scanned: inventory.files.len() as u64,
            bytes_scanned: 0,
        })
    }
}

/// Warns about, and marks the run incomplete for, ecosystems of the SBOM without data or with
/// data older than `max_age`.
fn report_coverage(ctx: &ScanContext<'_>, cov: &Coverage, max_age: Option<std::time::Duration>) {
    if !cov.missing.is_empty() {
        let names: Vec<&str> = cov.missing.iter().map(|e| e.osv_name()).collect();
        let reason = format!(
            "the OSV database has no records for {} (in the SBOM), so those components were not checked; run `certus-assurance osv sync --ecosystems {}`",
            names.join(", "),
            names.join(",")
        );
        ctx.reports.warn(format!("vulnerabilities: {reason}"));
        ctx.reports.incomplete(reason);
    }
    if !cov.stale.is_empty() {
        let max_hours = max_age.map_or(0, |d| d.as_secs() / 3600);
        let parts: Vec<String> = cov
            .stale
            .iter()
            .map(|(e, age)| match age {
                Some(h) => format!("{} ({h} h old)", e.osv_name()),
                None => format!(
                    "{} (age unknown: no sync state and no `modified` times)",
                    e.osv_name()
                ),
            })
            .collect();
        let reason = format!(
            "the OSV data for {} is older than CERTUS_ASSURANCE_OSV_MAX_AGE_HOURS={max_hours}; run `certus-assurance osv sync` (daily, e.g. from cron) to refresh it",
            parts.join(", ")
        );
        ctx.reports.warn(format!("vulnerabilities: {reason}"));
        ctx.reports.incomplete(reason);
    }
}

/// The SARIF log of the matches: one rule per advisory (linked to osv.dev), one result per
/// (component, advisory) with every lockfile location.
fn vulnerability_sarif(
    matches: &[VulnMatch],
    findings: &[Finding],
    extra: Vec<ResultExtra>,
) -> serde_json::Value {
    let mut rules: BTreeMap<&str, (&str, Severity)> = BTreeMap::new();
    for m in matches {
        rules
            .entry(m.advisory.id.as_str())
            .or_insert((m.advisory.summary.as_str(), m.advisory.severity));
    }
    let rule_list: Vec<(&str, &str, Severity)> = rules
        .iter()
        .map(|(id, (summary, sev))| (*id, if summary.is_empty() { *id } else { *summary }, *sev))
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
        findings,
    );
    if let Some(rules) = sarif.pointer_mut("/runs/0/tool/driver/rules") {
        for rule in rules.as_array_mut().into_iter().flatten() {
            if let Some(id) = rule["id"].as_str() {
                rule["helpUri"] = json!(format!("https://osv.dev/vulnerability/{id}"));
            }
        }
    }
    if let Some(results) = sarif.pointer_mut("/runs/0/results") {
        for (result, (props, locations)) in results.as_array_mut().into_iter().flatten().zip(extra)
        {
            result["locations"] = json!(locations
                .iter()
                .map(|l| json!({
                    "physicalLocation": {
                        "artifactLocation": {
                            "uri": percent_encode_path(&l.path),
                            "uriBaseId": "SRCROOT",
                        },
                        "region": {"startLine": l.line.max(1), "startColumn": 1},
                    },
                }))
                .collect::<Vec<_>>());
            if let Some(obj) = result["properties"].as_object_mut() {
                obj.extend(props);
            }
        }
    }
    sarif
}

/// `runs[0].properties.osv`: what the data covered, per ecosystem the scanner supports.
fn run_properties(
    in_sbom: &BTreeSet<Ecosystem>,
    fresh: &BTreeMap<Ecosystem, Freshness>,
    cov: &Coverage,
    max_age: Option<std::time::Duration>,
    now: SystemTime,
) -> serde_json::Value {
    let data: serde_json::Map<String, serde_json::Value> = fresh
        .iter()
        .map(|(eco, f)| {
            (
                eco.osv_name().to_string(),
                json!({
                    "records": f.records,
                    "updated_at": f.updated_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                    "age_seconds": f.age(now).map(|a| a.as_secs()),
                    "age_source": f.source.map(|s| s.as_str()),
                }),
            )
        })
        .collect();
    json!({
        "sbom_ecosystems": in_sbom.iter().map(|e| e.osv_name()).collect::<Vec<_>>(),
        "missing_ecosystems": cov.missing.iter().map(|e| e.osv_name()).collect::<Vec<_>>(),
        "stale_ecosystems": cov.stale.iter().map(|(e, _)| e.osv_name()).collect::<Vec<_>>(),
        "max_age_seconds": max_age.map(|d| d.as_secs()),
        "data": data,
    })
}

type ResultExtra = (
    serde_json::Map<String, serde_json::Value>,
    Vec<crate::pipeline::sbom::Location>,
);

/// One finding per (component, advisory), placed at the component's first lockfile, plus the
/// SARIF result properties and every location of each.
fn to_findings(
    components: &[Component],
    matches: &[VulnMatch],
) -> (Vec<Finding>, Vec<ResultExtra>) {
    // Components are unique per (ecosystem, name, version); PyPI spellings of one name share a
    // purl, so merge by (advisory, purl).
    let mut merged: BTreeMap<(&str, &str), (&VulnMatch, Vec<crate::pipeline::sbom::Location>)> =
        BTreeMap::new();
    for m in matches {
        let c = &components[m.component];
        let entry = merged
            .entry((m.advisory.id.as_str(), c.purl.as_str()))
            .or_insert((m, Vec::new()));
        entry.1.extend(c.locations.iter().cloned());
    }
    let mut rows = Vec::new();
    for ((_, purl), (m, mut locations)) in merged {
        locations.sort();
        locations.dedup();
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
        let mut hasher = Sha256::new();
        for part in [adv.id.as_str(), purl] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let (path, line) = locations
            .first()
            .map_or((String::new(), 1), |l| (l.path.clone(), l.line));
        let finding = Finding {
            rule_id: adv.id.clone(),
            severity: adv.severity,
            message,
            path,
            line: line.max(1),
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
        props.insert(
            "lockfiles".into(),
            json!(locations
                .iter()
                .map(|l| l.path.as_str())
                .collect::<Vec<_>>()),
        );
        if let Some(v) = &adv.cvss_vector {
            props.insert("cvss_vector".into(), json!(v));
        }
        rows.push((finding, (props, locations)));
    }
    rows.sort_by(|a, b| {
        (&a.0.path, a.0.line, &a.0.rule_id).cmp(&(&b.0.path, b.0.line, &b.0.rule_id))
    });
    rows.into_iter().unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::scanners::{SharedFacts, SideReports};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    fn write_db(dir: &std::path::Path, modified: &str) {
        let pypi = dir.join("PyPI");
        std::fs::create_dir_all(&pypi).unwrap();
        let rec = json!({"id": "PYSEC-2018-66", "modified": modified, "aliases": ["CVE-2018-1000656"],
            "summary": "Denial of service in flask",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "flask"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0.12.3"}]}]}]});
        std::fs::write(pypi.join("PYSEC-2018-66.json"), rec.to_string()).unwrap();
    }

    fn run(
        tree: &std::path::Path,
        db: &std::path::Path,
        max_age: Option<Duration>,
    ) -> (ScannerOutput, SideReports) {
        let store = Arc::new(OsvStore::new(db.to_path_buf()).with_max_age(max_age));
        let scanner = VulnerabilityScanner::new(Some(store));
        let cancel = AtomicBool::new(false);
        let shared = SharedFacts::new("t", "run");
        let reports = SideReports::default();
        let out = scanner
            .run(&ScanContext {
                source_root: tree,
                cancel: &cancel,
                shared: &shared,
                reports: &reports,
            })
            .unwrap();
        (out, reports)
    }

    #[test]
    fn one_result_per_component_and_advisory_with_every_lockfile() {
        let tree = tempfile::tempdir().unwrap();
        for d in ["", "docs", "examples/app"] {
            std::fs::create_dir_all(tree.path().join(d)).unwrap();
            std::fs::write(
                tree.path().join(d).join("requirements.txt"),
                "Flask==0.12.2\nrequests==2.31.0\n",
            )
            .unwrap();
        }
        let db = tempfile::tempdir().unwrap();
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        write_db(db.path(), &now);
        let (out, reports) = run(tree.path(), db.path(), Some(Duration::from_secs(3600)));
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].path, "docs/requirements.txt");
        let results = out.sarif["runs"][0]["results"].as_array().unwrap();
        assert_eq!(results.len(), 1);
        let uris: Vec<&str> = results[0]["locations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l["physicalLocation"]["artifactLocation"]["uri"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            uris,
            vec![
                "docs/requirements.txt",
                "examples/app/requirements.txt",
                "requirements.txt"
            ]
        );
        assert_eq!(
            results[0]["properties"]["lockfiles"],
            json!(uris),
            "the paths are listed as a property too"
        );
        assert!(results[0]["partialFingerprints"][VULN_FINGERPRINT_KEY].is_string());
        // PyPI has fresh data and is the only ecosystem of the SBOM: complete.
        assert_eq!(reports.incomplete_reason(), None);
        let props = &out.sarif["runs"][0]["properties"]["osv"];
        assert_eq!(props["sbom_ecosystems"], json!(["PyPI"]));
        assert_eq!(props["missing_ecosystems"], json!([]));
        assert_eq!(props["data"]["PyPI"]["records"], 1);
        assert_eq!(props["data"]["PyPI"]["age_source"], "records");
        assert_eq!(props["max_age_seconds"], 3600);
    }

    #[test]
    fn missing_and_stale_data_make_the_run_incomplete() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(tree.path().join("requirements.txt"), "flask==0.12.2\n").unwrap();
        std::fs::write(
            tree.path().join("Gemfile.lock"),
            "GEM\n  remote: https://rubygems.org/\n  specs:\n    rack (2.2.3)\n\nPLATFORMS\n  ruby\n\nDEPENDENCIES\n  rack\n",
        )
        .unwrap();
        let db = tempfile::tempdir().unwrap();
        write_db(db.path(), "2024-01-01T00:00:00Z");
        let (out, reports) = run(
            tree.path(),
            db.path(),
            Some(Duration::from_secs(168 * 3600)),
        );
        // Findings stand.
        assert_eq!(out.findings.len(), 1);
        let reason = reports.incomplete_reason().expect("incomplete");
        assert!(reason.contains("no records for RubyGems"), "{reason}");
        assert!(
            reason.contains("osv sync --ecosystems RubyGems"),
            "{reason}"
        );
        assert!(
            reason.contains("PyPI (") && reason.contains("h old"),
            "{reason}"
        );
        assert!(
            reason.contains("CERTUS_ASSURANCE_OSV_MAX_AGE_HOURS=168"),
            "{reason}"
        );
        let warnings = reports.take_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let props = &out.sarif["runs"][0]["properties"]["osv"];
        assert_eq!(props["missing_ecosystems"], json!(["RubyGems"]));
        assert_eq!(props["stale_ecosystems"], json!(["PyPI"]));
        assert_eq!(props["data"]["RubyGems"]["records"], 0);
        assert!(props["data"]["PyPI"]["age_seconds"].as_u64().unwrap() > 168 * 3600);

        // No limit: old data is accepted; the missing ecosystem is still reported.
        let (_, reports) = run(tree.path(), db.path(), None);
        let reason = reports.incomplete_reason().expect("incomplete");
        assert!(!reason.contains("older than"), "{reason}");
    }

    #[test]
    fn no_database_or_an_empty_one_is_skipped_with_how_to_get_one() {
        let tree = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let (out, reports) = run(tree.path(), empty.path(), None);
        assert!(out.sarif.is_null());
        assert!(reports.skipped().unwrap().contains("osv sync"));
        let scanner = VulnerabilityScanner::new(None);
        let cancel = AtomicBool::new(false);
        let shared = SharedFacts::new("t", "run");
        let reports = SideReports::default();
        scanner
            .run(&ScanContext {
                source_root: tree.path(),
                cancel: &cancel,
                shared: &shared,
                reports: &reports,
            })
            .unwrap();
        assert!(reports.skipped().unwrap().contains("osv sync"));
        assert_eq!(reports.incomplete_reason(), None);
    }
}
