//! The upload scope: scans by upload status, upload transitions, the requests to Trust and to
//! S3, and the bytes uploaded. The job engine moves the status; the uploader counts its calls.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Registry};

use super::family::{Family, Family2};
use super::{counter_vec, gauge_vec, histogram_vec, int_counter, HTTP_BUCKETS, STEP_BUCKETS};
use crate::scan::UploadStatus;

/// Outcomes of one request to the Trust service.
pub const TRUST_OUTCOMES: [&str; 6] = [
    "permitted",
    "denied",
    "error",
    "timeout",
    "unreachable",
    "invalid_response",
];
/// S3 operations the uploader and the artifact store perform (`operation` label).
pub const S3_OPERATIONS: [&str; 11] = [
    "put_object",
    "create_multipart_upload",
    "upload_part",
    "complete_multipart_upload",
    "abort_multipart_upload",
    "copy_object",
    "head_object",
    "list_objects",
    "list_multipart_uploads",
    "get_object",
    "delete_objects",
];
/// Outcomes of one S3 request.
pub const S3_OUTCOMES: [&str; 3] = ["success", "error", "timeout"];

#[derive(Clone)]
pub struct UploadMetrics {
    /// `uploads{status}`: scans by upload status (store-derived). Moved through
    /// [`super::Metrics::upload_transition`] and its siblings.
    pub status: Family<IntGaugeVec, UploadStatus>,
    /// `upload_transitions_total{from, to}`: exactly the legal transitions.
    pub transitions: Family2<IntCounterVec, UploadStatus, UploadStatus>,
    /// `trust_requests_total{outcome}`.
    pub trust_requests: IntCounterVec,
    /// `trust_request_duration_seconds{outcome}`.
    pub trust_request_duration: HistogramVec,
    /// `s3_requests_total{operation, outcome}`.
    pub s3_requests: IntCounterVec,
    /// `s3_request_duration_seconds{operation, outcome}`.
    pub s3_request_duration: HistogramVec,
    /// `s3_uploaded_bytes_total`.
    pub s3_uploaded_bytes: IntCounter,
}

impl UploadMetrics {
    pub(super) fn register(r: &Registry) -> UploadMetrics {
        let m = UploadMetrics {
            status: Family::new(
                gauge_vec(
                    r,
                    "uploads",
                    "Scans by upload status, as recorded in the job store.",
                    &["status"],
                ),
                |_| true,
            ),
            transitions: Family2::new(
                counter_vec(
                    r,
                    "upload_transitions_total",
                    "Upload status transitions made by this process.",
                    &["from", "to"],
                ),
                UploadStatus::can_transition_to,
            ),
            trust_requests: counter_vec(
                r,
                "trust_requests_total",
                "Requests to the Trust service for upload permission, by outcome.",
                &["outcome"],
            ),
            trust_request_duration: histogram_vec(
                r,
                "trust_request_duration_seconds",
                "Latency of requests to the Trust service, by outcome.",
                &["outcome"],
                HTTP_BUCKETS,
            ),
            s3_requests: counter_vec(
                r,
                "s3_requests_total",
                "Requests to S3, by operation and outcome.",
                &["operation", "outcome"],
            ),
            s3_request_duration: histogram_vec(
                r,
                "s3_request_duration_seconds",
                "Latency of S3 requests, by operation and outcome.",
                &["operation", "outcome"],
                STEP_BUCKETS,
            ),
            s3_uploaded_bytes: int_counter(r, "s3_uploaded_bytes_total", "Bytes uploaded to S3."),
        };
        for o in TRUST_OUTCOMES {
            m.trust_requests.with_label_values(&[o]);
            m.trust_request_duration.with_label_values(&[o]);
        }
        for op in S3_OPERATIONS {
            for o in S3_OUTCOMES {
                m.s3_requests.with_label_values(&[op, o]);
                m.s3_request_duration.with_label_values(&[op, o]);
            }
        }
        m
    }
}
