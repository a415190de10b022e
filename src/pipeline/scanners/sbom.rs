//! SBOM scanner: writes the tree's components, with their scope and dependency graph, as SPDX
//! 2.3 and CycloneDX 1.5 documents under `reports/sbom/`. It reports no findings of its own; its
//! warnings (lockfiles that could not be read, unpinned requirements) go to `scan.json`. The
//! vulnerability scanner matches the same inventory against the OSV database.

use std::time::SystemTime;

use super::{ScanContext, Scanner, ScannerOutput};
use crate::pipeline::sbom::documents::{self, DocumentInfo};

/// Bundle paths of the SBOM documents.
pub const SPDX_PATH: &str = "reports/sbom/sbom.spdx.json";
pub const CYCLONEDX_PATH: &str = "reports/sbom/sbom.cyclonedx.json";

#[derive(Debug, Default)]
pub struct SbomScanner;

impl Scanner for SbomScanner {
    fn name(&self) -> &'static str {
        super::names::SBOM
    }

    fn run(&self, ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput> {
        let inventory = ctx.inventory()?;
        let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let subject = if ctx.shared.subject.is_empty() {
            "source"
        } else {
            ctx.shared.subject.as_str()
        };
        let run_id = if ctx.shared.run_id.is_empty() {
            "local"
        } else {
            ctx.shared.run_id.as_str()
        };
        let info = DocumentInfo {
            subject,
            run_id,
            created: &created,
            tool_version: env!("CARGO_PKG_VERSION"),
        };
        ctx.reports
            .add_file(SPDX_PATH, documents::spdx(&inventory, &info));
        ctx.reports
            .add_file(CYCLONEDX_PATH, documents::cyclonedx(&inventory, &info));
        for warning in &inventory.warnings {
            ctx.reports.warn(format!("sbom: {warning}"));
        }
        Ok(ScannerOutput {
            findings: vec![],
            sarif: serde_json::Value::Null,
            files_scanned: inventory.files.len() as u64,
            bytes_scanned: 0,
        })
    }
}
