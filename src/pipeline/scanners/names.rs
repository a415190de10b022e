//! The name of every scanner, written once. The registry table ([`super::registry`]), the
//! built-in scanners, the profiles and the earlier service's tool ids refer to these constants.

pub const SECRETS: &str = "secrets";
pub const SBOM: &str = "sbom";
pub const VULNERABILITIES: &str = "vulnerabilities";
pub const BANDIT: &str = "bandit";
pub const SEMGREP: &str = "semgrep";
pub const DETECT_SECRETS: &str = "detect-secrets";
pub const RUFF: &str = "ruff";
pub const GITLEAKS: &str = "gitleaks";
pub const TRIVY: &str = "trivy";
pub const OSV_SCANNER: &str = "osv-scanner";
