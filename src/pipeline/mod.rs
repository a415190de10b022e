//! One scan run in a temporary workspace, by phase: [`source`] (git, directory, archive, the
//! archive store), [`scanners`] (one registry table; built-in and external scanners through one
//! run path), [`bundle`] (findings, summary, SARIF, attestation). [`run`] drives the phases;
//! [`scan`], [`finding`] and [`failure`] are the plain types every phase shares.
//! Progress goes to a [`ProgressSink`] and measures to a [`ScanObserver`], both handed in by the
//! caller; the result is a [`ScanReport`] or a [`ScanFailure`]. The pipeline never reads or
//! writes job records and does not know jobs exist.

pub mod bundle;
pub mod failure;
pub mod finding;
pub mod observer;
pub mod osv;
pub mod profile;
pub mod progress;
pub mod redact;
pub mod run;
pub mod sbom;
pub mod scan;
pub mod scanners;
pub mod source;

pub use failure::{FailureKind, ScanFailure};
pub use observer::{Phase, ScanObserver, ScannerStatus};
pub use progress::{ProgressSink, ScanEvent};
pub use run::{builtin_scanners, builtin_scanners_with, Pipeline};
pub use scan::{ScanReport, ScanSpec};
/// Names of every scanner this build knows, built in and external (the `scanner` label values).
pub use scanners::registry::SCANNER_NAMES as BUILTIN_SCANNERS;
pub use source::prepare::Provenance;
pub use source::ScanSource;

// The service's edge and wiring name these at their former paths.
pub use bundle::{artifacts, attestation};
pub use source::archive_store::{archive_not_stored, parse_archive_path, stored_archive};
pub use source::{archive, checkout, directory as local_source, egress};

/// The external tools as the `/v1/profiles` route looks them up.
pub mod tools {
    pub use super::scanners::external::{find_on_path, tool_installed as installed};
    pub use super::scanners::registry::tool_spec as spec;
}
