//! A scan's progress: the [`ScanEvent`]s of the WebSocket stream, the [`ProgressSink`] the caller
//! hands in, and the [`Reporter`] every phase emits through, which also keeps `logs/runner.log`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use super::finding::SeverityCounts;

/// One event of a scan's progress, as sent on the WebSocket stream (`type` is the tag).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScanEvent {
    Phase {
        phase: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
    },
    ToolStart {
        tool: String,
    },
    Log {
        tool: String,
        stream: String,
        line: String,
    },
    ToolComplete {
        tool: String,
        /// `succeeded`, `failed` or `skipped`.
        status: String,
        /// The tool's exit code; absent when the tool did not run (skipped) or has none.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        findings: u64,
    },
    FindingSummary {
        counts: SeverityCounts,
        by_scanner: BTreeMap<String, SeverityCounts>,
        policy_passed: bool,
    },
    Error {
        message: String,
    },
    /// The terminal event; emitted by the job engine once the outcome is recorded.
    ScanComplete {
        status: String,
        manifest_digest: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure_reason: Option<String>,
        /// Bundle file paths relative to the scan's artifact directory.
        bundle: Vec<String>,
    },
}

impl ScanEvent {
    pub(crate) fn tool_complete(
        tool: &str,
        status: &str,
        exit_code: Option<i32>,
        findings: u64,
    ) -> Self {
        ScanEvent::ToolComplete {
            tool: tool.to_string(),
            status: status.to_string(),
            exit_code,
            findings,
        }
    }

    /// Log lines may be dropped from bounded histories; every other event is kept.
    pub fn is_droppable(&self) -> bool {
        matches!(self, ScanEvent::Log { .. })
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, ScanEvent::ScanComplete { .. })
    }
}

/// Where a running scan reports progress. Called from async code only.
pub trait ProgressSink: Send + Sync {
    fn emit(&self, event: ScanEvent);
}

/// Forwards events to the sink and appends a line per event to `logs/runner.log`.
pub(crate) struct Reporter {
    pub(crate) sink: Arc<dyn ProgressSink>,
    pub(crate) log: Mutex<Option<std::fs::File>>,
}

impl Reporter {
    pub(crate) fn emit(&self, event: ScanEvent) {
        let line = match &event {
            ScanEvent::Phase { phase, message, .. } => format!("[{phase}] {message}"),
            ScanEvent::ToolStart { tool } => format!("[{tool}] started"),
            ScanEvent::Log { tool, stream, line } => format!("[{tool}:{stream}] {line}"),
            ScanEvent::ToolComplete {
                tool,
                status,
                exit_code,
                findings,
            } => match exit_code {
                Some(code) => {
                    format!("[{tool}] {status} (exit code {code}), {findings} findings")
                }
                None => format!("[{tool}] {status}, {findings} findings"),
            },
            ScanEvent::FindingSummary {
                counts,
                policy_passed,
                ..
            } => format!(
                "[summary] {} findings (critical {}, high {}, medium {}, low {}); policy {}",
                counts.total,
                counts.critical,
                counts.high,
                counts.medium,
                counts.low,
                if *policy_passed { "passed" } else { "failed" }
            ),
            ScanEvent::Error { message } => format!("[error] {message}"),
            ScanEvent::ScanComplete { status, .. } => format!("[complete] {status}"),
        };
        if let Some(file) = self.log.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let stamp = humantime::format_rfc3339_millis(SystemTime::now());
            // One write per line (the file is not buffered: it is complete at every moment).
            // The runner log is best effort: a full disk must not turn into a second failure.
            let _ = file.write_all(format!("{stamp} {line}\n").as_bytes());
        }
        self.sink.emit(event);
    }

    pub(crate) fn phase(&self, phase: &str, message: String) {
        self.emit(ScanEvent::Phase {
            phase: phase.to_string(),
            message,
            commit: None,
            branch: None,
        });
    }
}
