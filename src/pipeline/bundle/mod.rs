//! Phase 3 of a scan, the bundle: the SARIF writer every scanner uses ([`sarif`]), the merge and
//! suppression of every scanner's findings into one list ([`findings`]), the files of the bundle
//! and how they are written ([`artifacts`]), the summary and scan record ([`summary`]), the
//! signed attestation ([`attestation`]), and reading a finished bundle's findings back
//! ([`read`]), which the findings route and the command line share.

pub mod artifacts;
pub mod attestation;
pub mod findings;
pub mod read;
pub mod sarif;
pub mod summary;
