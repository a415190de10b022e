//! The closed label sets of the metrics, each declared once: the scan domain's enums (status,
//! failure reason, upload status) are used as they are, and the sets only the metrics name are
//! declared here as enums.

use super::family::{label_enum, label_value};
use crate::scan::{FailureReason, JobState, UploadStatus};

label_value!(JobState, JobState::ALL, label);
label_value!(UploadStatus, UploadStatus::ALL, as_str);
label_value!(FailureReason, FailureReason::ALL, as_str);

label_enum!(
    /// Why a submission was refused before a scan existed (`scan_submissions_rejected_total`).
    RejectReason {
        Invalid => "invalid",
        Unauthorized => "unauthorized",
        QueueFull => "queue_full",
        Draining => "draining",
        WorkspaceLimit => "workspace_limit",
        RateLimited => "rate_limited",
    }
);

label_enum!(
    /// Why an HTTP connection was refused when it opened (`http_connections_refused_total`).
    ConnectionRefusal {
        GlobalLimit => "global_limit",
        PerClientLimit => "per_client_limit",
    }
);

label_enum!(
    /// Why an HTTP connection was closed for taking too long (`http_connections_timed_out_total`).
    ConnectionTimeout {
        HeaderRead => "header_read",
        Idle => "idle",
    }
);

label_enum!(
    /// Why a WebSocket stream was refused or closed early (`stream_closures_total`).
    StreamClosure {
        GlobalLimit => "global_limit",
        PerClientLimit => "per_client_limit",
        Idle => "idle",
        NoPong => "no_pong",
    }
);

label_enum!(
    /// The verdict of a profile's policy (`policy_evaluations_total`).
    PolicyResult {
        Pass => "pass",
        Fail => "fail",
    }
);

label_enum!(
    /// The `method` label of the HTTP metrics: the methods the router serves, and `other`.
    HttpMethod {
        Get => "GET",
        Post => "POST",
        Put => "PUT",
        Delete => "DELETE",
        Patch => "PATCH",
        Head => "HEAD",
        Options => "OPTIONS",
        Other => "other",
    }
);

impl HttpMethod {
    /// The label of a request's method (`other` for a method the router never serves).
    pub fn of(method: &axum::http::Method) -> HttpMethod {
        HttpMethod::ALL
            .into_iter()
            .find(|m| *m != HttpMethod::Other && m.as_str() == method.as_str())
            .unwrap_or(HttpMethod::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::super::family::LabelValue;
    use super::*;

    fn indexes_follow<L: LabelValue + std::fmt::Debug>() {
        for (i, value) in L::ALL.iter().enumerate() {
            assert_eq!(value.index(), i, "{value:?}");
        }
    }

    #[test]
    fn every_label_enum_indexes_its_series_in_declaration_order() {
        indexes_follow::<JobState>();
        indexes_follow::<UploadStatus>();
        indexes_follow::<FailureReason>();
        indexes_follow::<RejectReason>();
        indexes_follow::<ConnectionRefusal>();
        indexes_follow::<ConnectionTimeout>();
        indexes_follow::<StreamClosure>();
        indexes_follow::<PolicyResult>();
        indexes_follow::<HttpMethod>();
    }
}
