//! Phase 2 of a scan, the scanners: the `Scanner` trait of the built-in scanners and the context a
//! scanner runs with (findings and severities are [`super::finding`]'s), one file per built-in
//! scanner, the external tools' adapters ([`external`]), the one table of every scanner
//! ([`registry`], names in [`names`]) and the one run path for both kinds ([`run`]). A scanner
//! reads a checked-out source tree and returns findings plus its SARIF log; it never uploads,
//! never touches the job store and never knows which job it runs for.

pub mod external;
pub mod names;
pub mod registry;
pub(crate) mod run;
pub mod sbom;
pub mod secrets;
pub mod vulnerabilities;

pub use super::finding::{Finding, Severity, SeverityCounts};

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::sbom::Inventory;

/// What a scanner needs from the pipeline.
pub struct ScanContext<'a> {
    /// Root of the checked-out source tree.
    pub source_root: &'a Path,
    /// Set when the scan is cancelled or timed out; long loops check it and stop early.
    pub cancel: &'a AtomicBool,
    /// Facts computed once per scan and shared by its scanners (the SBOM inventory).
    pub shared: &'a SharedFacts,
    /// What this scanner reports besides findings.
    pub reports: &'a SideReports,
}

impl ScanContext<'_> {
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The tree's SBOM inventory, computed by the first scanner that asks.
    pub fn inventory(&self) -> anyhow::Result<Arc<Inventory>> {
        let mut slot = self
            .shared
            .inventory
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(inv) = slot.as_ref() {
            return Ok(inv.clone());
        }
        let inv = Arc::new(super::sbom::discover_excluding(
            self.source_root,
            self.cancel,
            &self.shared.excludes,
        )?);
        *slot = Some(inv.clone());
        Ok(inv)
    }
}

/// Per-scan facts shared by the scanners of one run.
#[derive(Debug, Default)]
pub struct SharedFacts {
    /// Name of the scanned subject (the component id), used in SBOM documents.
    pub subject: String,
    /// The scan's id, used to make document identifiers unique.
    pub run_id: String,
    /// The profile's path excludes (gitignore-syntax globs): lockfiles there stay out of the SBOM
    /// as their findings are suppressed.
    pub excludes: Vec<String>,
    inventory: Mutex<Option<Arc<Inventory>>>,
}

impl SharedFacts {
    pub fn new(subject: impl Into<String>, run_id: impl Into<String>) -> SharedFacts {
        SharedFacts {
            subject: subject.into(),
            run_id: run_id.into(),
            excludes: Vec::new(),
            inventory: Mutex::new(None),
        }
    }

    /// With the profile's path excludes.
    pub fn with_excludes(mut self, excludes: Vec<String>) -> SharedFacts {
        self.excludes = excludes;
        self
    }
}

/// What a scanner reports besides its findings: extra bundle files (SBOM documents), warnings
/// for `scan.json`, and whether it skipped its work (and why).
#[derive(Debug, Default)]
pub struct SideReports {
    files: Mutex<Vec<(String, serde_json::Value)>>,
    warnings: Mutex<Vec<String>>,
    skipped: Mutex<Option<String>>,
    incomplete: Mutex<Option<String>>,
}

impl SideReports {
    /// Adds a JSON file to the bundle at `rel_path` (e.g. `reports/sbom/sbom.spdx.json`).
    pub fn add_file(&self, rel_path: impl Into<String>, value: serde_json::Value) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((rel_path.into(), value));
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message.into());
    }

    /// Marks the run as skipped: the scanner could not do its work for a reason that is not a
    /// failure of the scan (nothing to compare against), and says what would enable it.
    pub fn skip(&self, reason: impl Into<String>) {
        *self.skipped.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.into());
    }

    /// Marks the run as incomplete: the scanner ran and its findings stand, but it could not
    /// look at everything it should have (data missing for some ecosystems, data older than the
    /// configured age). The run counts as `failed` for the policy unless the profile makes the
    /// scanner optional; `reason` says what is missing and how to get it.
    pub fn incomplete(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut slot = self.incomplete.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(match slot.take() {
            Some(earlier) => format!("{earlier}; {reason}"),
            None => reason,
        });
    }

    /// Why the run was incomplete, if it was.
    pub fn incomplete_reason(&self) -> Option<String> {
        self.incomplete
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn take_files(&self) -> Vec<(String, serde_json::Value)> {
        std::mem::take(&mut *self.files.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn skipped(&self) -> Option<String> {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What one scanner run produced.
#[derive(Debug)]
pub struct ScannerOutput {
    pub findings: Vec<Finding>,
    /// The complete SARIF 2.1.0 log, written to `reports/sast/<scanner>.sarif.json`; `Null`
    /// for a scanner that reports no findings of its own (the SBOM) or skipped its work.
    pub sarif: serde_json::Value,
    pub files_scanned: u64,
    pub bytes_scanned: u64,
}

/// A scanner that runs synchronously on the blocking pool.
pub trait Scanner: Send + Sync {
    /// Stable scanner name; used as file name and as the `scanner` metric label.
    fn name(&self) -> &'static str;
    fn run(&self, ctx: &ScanContext<'_>) -> anyhow::Result<ScannerOutput>;
}
