//! The one table of scanners: every scanner this build knows, built in or external, with how it
//! runs (an external tool's executable, command line, report format and exit codes). Profiles, the `/v1/profiles` list, the metric label values, the command line and the
//! docs tests read it; adding a scanner is one row here (plus its code). Every scanner, whatever
//! its kind, runs through [`super::run`].

use std::sync::Arc;

use super::external::spec::{Report, ToolSpec, REPORT_ARG};
use super::names;
use super::sbom::SbomScanner;
use super::secrets::SecretsScanner;
use super::vulnerabilities::VulnerabilityScanner;
use super::Scanner;
use crate::pipeline::bundle::artifacts;
use crate::pipeline::osv::OsvStore;

/// How a scanner runs.
pub enum Runs {
    /// In the service's process, on the blocking pool; built with the OSV database, if any.
    Builtin(fn(Option<Arc<OsvStore>>) -> Arc<dyn Scanner>),
    /// An external tool, run as a child process when it is installed.
    External(ToolSpec),
}

/// One row of the table.
pub struct ScannerDecl {
    pub name: &'static str,
    pub runs: Runs,
}

impl ScannerDecl {
    /// `builtin` or `external` (the `kind` of the `scanners` entries and of `/v1/profiles`).
    pub const fn kind(&self) -> &'static str {
        match self.runs {
            Runs::Builtin(_) => "builtin",
            Runs::External(_) => "external",
        }
    }

    const fn is_builtin(&self) -> bool {
        matches!(self.runs, Runs::Builtin(_))
    }

    /// The scanner's SARIF report in the bundle.
    pub fn report(&self) -> String {
        artifacts::sarif_path(self.name)
    }

    /// The external tool, for an external scanner.
    pub fn tool(&self) -> Option<&ToolSpec> {
        match &self.runs {
            Runs::External(tool) => Some(tool),
            Runs::Builtin(_) => None,
        }
    }
}

const fn tool(
    name: &'static str,
    binary: &'static str,
    install_hint: &'static str,
    (report, args): (Report, &'static [&'static str]),
    ok_exit_codes: &'static [i32],
) -> ScannerDecl {
    ScannerDecl {
        name,
        runs: Runs::External(ToolSpec {
            name,
            binary,
            install_hint,
            report,
            args,
            ok_exit_codes,
        }),
    }
}

/// `{report}`: the report file.
const R: &str = REPORT_ARG;

fn secrets(_: Option<Arc<OsvStore>>) -> Arc<dyn Scanner> {
    Arc::new(SecretsScanner::new())
}

fn sbom(_: Option<Arc<OsvStore>>) -> Arc<dyn Scanner> {
    Arc::new(SbomScanner)
}

fn vulnerabilities(osv: Option<Arc<OsvStore>>) -> Arc<dyn Scanner> {
    Arc::new(VulnerabilityScanner::new(osv))
}

/// Every scanner, built-in ones first (the order of the metric label values and of
/// `/v1/profiles`).
pub const SCANNERS: [ScannerDecl; 10] = [
    ScannerDecl {
        name: names::SECRETS,
        runs: Runs::Builtin(secrets),
    },
    ScannerDecl {
        name: names::SBOM,
        runs: Runs::Builtin(sbom),
    },
    ScannerDecl {
        name: names::VULNERABILITIES,
        runs: Runs::Builtin(vulnerabilities),
    },
    tool(
        names::BANDIT,
        "bandit",
        "pip install bandit",
        (
            Report::BanditJson,
            &["-r", ".", "-f", "json", "-q", "--exit-zero", "-o", R],
        ),
        &[0, 1],
    ),
    tool(
        names::SEMGREP,
        "semgrep",
        "pip install semgrep",
        (Report::SemgrepJson, &[]),
        &[0, 1],
    ),
    tool(
        names::DETECT_SECRETS,
        "detect-secrets",
        "pip install detect-secrets",
        (Report::DetectSecretsStdout, &["scan", "--all-files", "."]),
        &[0],
    ),
    tool(
        names::RUFF,
        "ruff",
        "pip install ruff",
        (
            Report::SarifFile,
            &[
                "check",
                "--isolated",
                "--select",
                "S",
                "--no-cache",
                "--exit-zero",
                "--output-format",
                "sarif",
                "--output-file",
                R,
                ".",
            ],
        ),
        &[0, 1],
    ),
    tool(
        names::GITLEAKS,
        "gitleaks",
        "install the gitleaks binary",
        (
            Report::SarifFile,
            &[
                "detect",
                "--no-git",
                "--source",
                ".",
                "--redact",
                "--no-banner",
                "--exit-code",
                "0",
                "--report-format",
                "sarif",
                "--report-path",
                R,
            ],
        ),
        &[0, 1],
    ),
    tool(
        names::TRIVY,
        "trivy",
        "install the trivy binary and its vulnerability database",
        (
            Report::SarifFile,
            &[
                "fs",
                "--scanners",
                "vuln",
                "--skip-db-update",
                "--offline-scan",
                "--quiet",
                "--format",
                "sarif",
                "--output",
                R,
                ".",
            ],
        ),
        &[0],
    ),
    tool(
        names::OSV_SCANNER,
        "osv-scanner",
        "install the osv-scanner binary",
        (
            Report::SarifFile,
            &["--offline", "--format", "sarif", "--output", R, "-r", "."],
        ),
        &[0, 1, 128],
    ),
];

const fn count(builtin: bool) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < SCANNERS.len() {
        if SCANNERS[i].is_builtin() == builtin {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The names of the scanners of one kind (`None`: every scanner), in table order.
const fn names_of<const N: usize>(builtin: Option<bool>) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut n) = (0, 0);
    while i < SCANNERS.len() {
        let keep = match builtin {
            None => true,
            Some(b) => SCANNERS[i].is_builtin() == b,
        };
        if keep {
            out[n] = SCANNERS[i].name;
            n += 1;
        }
        i += 1;
    }
    out
}

/// Every scanner's name (the `scanner` label values).
pub const SCANNER_NAMES: [&str; SCANNERS.len()] = names_of(None);
/// Scanners that run inside the service.
pub const BUILTIN_SCANNER_NAMES: [&str; count(true)] = names_of(Some(true));
/// External tools with an adapter (run when installed).
pub const EXTERNAL_TOOL_NAMES: [&str; count(false)] = names_of(Some(false));

/// The row of `name`.
pub fn find(name: &str) -> Option<&'static ScannerDecl> {
    SCANNERS.iter().find(|s| s.name == name)
}

/// The external tool called `name`.
pub fn tool_spec(name: &str) -> Option<&'static ToolSpec> {
    find(name).and_then(ScannerDecl::tool)
}

/// The built-in scanners of this build; `osv` is the vulnerability database, if one is
/// configured.
pub fn builtin_scanners(osv: Option<Arc<OsvStore>>) -> Vec<Arc<dyn Scanner>> {
    SCANNERS
        .iter()
        .filter_map(|s| match s.runs {
            Runs::Builtin(build) => Some(build(osv.clone())),
            Runs::External(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_declared_once_and_built_ins_answer_to_theirs() {
        let mut seen = std::collections::BTreeSet::new();
        for name in SCANNER_NAMES {
            assert!(seen.insert(name), "{name} is declared twice");
        }
        assert_eq!(
            BUILTIN_SCANNER_NAMES.len() + EXTERNAL_TOOL_NAMES.len(),
            SCANNERS.len()
        );
        let built: Vec<&str> = builtin_scanners(None).iter().map(|s| s.name()).collect();
        assert_eq!(built, BUILTIN_SCANNER_NAMES);
        for name in EXTERNAL_TOOL_NAMES {
            assert_eq!(tool_spec(name).map(|t| t.name), Some(name));
        }
        assert!(find("nmap").is_none());
    }
}
