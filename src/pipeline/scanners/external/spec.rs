//! What the registry says about an external tool: its executable, how to install it, how it
//! hands back its report and which exit codes mean it ran to completion.

/// How a tool hands back its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A SARIF file written to the path given in its arguments.
    SarifFile,
    /// Bandit's JSON report file.
    BanditJson,
    /// detect-secrets' JSON baseline on stdout.
    DetectSecretsStdout,
    /// semgrep's JSON report, with its SARIF report of the same run beside it (`.sarif`).
    SemgrepJson,
}

/// The argument that stands for the path of the tool's report file.
pub const REPORT_ARG: &str = "{report}";

/// One external tool.
#[derive(Debug, Clone, Copy)]
pub struct ToolSpec {
    pub name: &'static str,
    pub binary: &'static str,
    /// How to install it, for the message when it is missing.
    pub install_hint: &'static str,
    pub report: Report,
    /// Its arguments, [`REPORT_ARG`] standing for the report file (semgrep's are built from
    /// the shipped rules instead).
    pub args: &'static [&'static str],
    /// Exit codes that mean "ran to completion" (findings or not).
    pub ok_exit_codes: &'static [i32],
}
