//! The scan state machine: `JobState`, `FailureReason`, `UploadStatus`, and the one function that
//! decides which transitions are legal. No I/O happens here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Status of a scan. Serialized in upper case on scan resources and events (as the earlier
/// service sent it); [`JobState::label`] is the lower-case `/stats` key and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
    ];

    /// Upper-case form stored in the database and sent to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
        }
    }

    /// Lower-case form used as metric label and `/stats` key.
    pub fn label(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }

    /// Whether `self -> to` is a legal transition. Terminal states are final; a running scan
    /// may go back to the queue (shutdown deadline, recovery by config).
    pub fn can_transition_to(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Failed)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Queued)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown scan status `{s}`"))
    }
}

/// Why a scan ended FAILED; a closed set (metric label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    CloneFailed,
    SourceInvalid,
    ScannerFailed,
    Timeout,
    Cancelled,
    Interrupted,
    Internal,
}

impl FailureReason {
    pub const ALL: [FailureReason; 7] = [
        FailureReason::CloneFailed,
        FailureReason::SourceInvalid,
        FailureReason::ScannerFailed,
        FailureReason::Timeout,
        FailureReason::Cancelled,
        FailureReason::Interrupted,
        FailureReason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::CloneFailed => "clone_failed",
            FailureReason::SourceInvalid => "source_invalid",
            FailureReason::ScannerFailed => "scanner_failed",
            FailureReason::Timeout => "timeout",
            FailureReason::Cancelled => "cancelled",
            FailureReason::Interrupted => "interrupted",
            FailureReason::Internal => "internal",
        }
    }
}

impl FromStr for FailureReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown failure reason `{s}`"))
    }
}

/// Upload status of a scan (lower case everywhere, as the earlier service sent it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadStatus {
    #[default]
    Pending,
    Permitted,
    Uploaded,
    Denied,
    Failed,
}

impl UploadStatus {
    pub const ALL: [UploadStatus; 5] = [
        UploadStatus::Pending,
        UploadStatus::Permitted,
        UploadStatus::Uploaded,
        UploadStatus::Denied,
        UploadStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UploadStatus::Pending => "pending",
            UploadStatus::Permitted => "permitted",
            UploadStatus::Uploaded => "uploaded",
            UploadStatus::Denied => "denied",
            UploadStatus::Failed => "failed",
        }
    }

    /// Whether `self -> to` is a legal upload transition. Trust's answer moves `pending` (or a
    /// `failed` upload asked again) to `permitted` or `denied`; an unreachable Trust fails it; a
    /// permitted upload ends `uploaded` or `failed`. `uploaded` and `denied` are final.
    pub fn can_transition_to(self, to: UploadStatus) -> bool {
        use UploadStatus::*;
        matches!(
            (self, to),
            (Pending, Permitted)
                | (Pending, Denied)
                | (Pending, Failed)
                | (Permitted, Uploaded)
                | (Permitted, Failed)
                | (Failed, Permitted)
                | (Failed, Denied)
        )
    }

    /// Whether a new upload-request may start from this status.
    pub fn may_request(self) -> bool {
        matches!(self, UploadStatus::Pending | UploadStatus::Failed)
    }
}

impl FromStr for UploadStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UploadStatus::ALL
            .into_iter()
            .find(|u| u.as_str() == s)
            .ok_or_else(|| format!("unknown upload status `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for to in JobState::ALL {
            assert!(!JobState::Succeeded.can_transition_to(to));
            assert!(!JobState::Failed.can_transition_to(to));
        }
    }

    #[test]
    fn queued_scans_start_or_are_cancelled() {
        assert!(JobState::Queued.can_transition_to(JobState::Running));
        assert!(JobState::Queued.can_transition_to(JobState::Failed));
        assert!(!JobState::Queued.can_transition_to(JobState::Succeeded));
    }

    #[test]
    fn final_upload_statuses_are_final() {
        for to in UploadStatus::ALL {
            assert!(!UploadStatus::Uploaded.can_transition_to(to));
            assert!(!UploadStatus::Denied.can_transition_to(to));
        }
        assert!(UploadStatus::Failed.may_request());
        assert!(!UploadStatus::Permitted.may_request());
    }

    #[test]
    fn statuses_parse_case_insensitively() {
        assert_eq!("queued".parse::<JobState>().unwrap(), JobState::Queued);
        assert_eq!("FAILED".parse::<JobState>().unwrap(), JobState::Failed);
        assert!("done".parse::<JobState>().is_err());
    }
}
