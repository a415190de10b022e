//! The scan scope: scans by status, submissions and their refusals, transitions, failures,
//! durations, the policy verdicts, retention, the workers and the ages of the oldest queued and
//! running scans. The job engine records all of them.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Registry,
};

use super::family::{register, Family, Family2};
use super::labels::{PolicyResult, RejectReason};
use super::{counter_vec, gauge, gauge_vec, histogram_vec, int_gauge, name};
use crate::scan::{FailureReason, JobState};

/// Values of the `source_type` label.
pub const SOURCE_TYPES: [&str; 3] = ["git", "directory", "archive"];

const SCAN_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[derive(Clone)]
pub struct ScanMetrics {
    /// `scans{status}`: scans by current status (store-derived; rebuilt at start-up). Moved
    /// through [`super::Metrics::scan_transition`] and its siblings, which know whether the
    /// gauges are read from a shared store.
    pub status: Family<prometheus::IntGaugeVec, JobState>,
    /// `scans_submitted_total{profile, source_type}`.
    pub submitted: IntCounterVec,
    /// `scan_submissions_rejected_total{reason}`.
    pub rejected: Family<IntCounterVec, RejectReason>,
    /// `scan_transitions_total{from, to}`: exactly the legal transitions.
    pub transitions: Family2<IntCounterVec, JobState, JobState>,
    /// `scan_failures_total{reason}`.
    pub failures: Family<IntCounterVec, FailureReason>,
    /// `scan_duration_seconds{profile, status}`.
    pub duration: HistogramVec,
    /// `scan_queue_wait_seconds`.
    pub queue_wait: Histogram,
    /// `policy_evaluations_total{profile, result}`.
    pub policy_evaluations: IntCounterVec,
    /// `scans_pruned_total{status}`: the final statuses.
    pub pruned: Family<IntCounterVec, JobState>,
    /// `workers`: configured scan workers.
    pub workers: IntGauge,
    /// `workers_busy`: workers running a scan.
    pub workers_busy: IntGauge,
    /// Unix time the oldest QUEUED scan was submitted; 0 when the queue is empty.
    pub queue_oldest_enqueued: Gauge,
    /// Unix time the oldest RUNNING scan started; 0 when none runs.
    pub running_oldest_started: Gauge,
    /// Earliest `started_at + timeout_seconds` among RUNNING scans; 0 when none runs.
    pub running_earliest_deadline: Gauge,
}

impl ScanMetrics {
    pub(super) fn register(r: &Registry, profiles: &[&str]) -> ScanMetrics {
        let m = ScanMetrics {
            status: Family::new(
                gauge_vec(
                    r,
                    "scans",
                    "Scans by current status, as recorded in the job store.",
                    &["status"],
                ),
                |_| true,
            ),
            submitted: counter_vec(
                r,
                "scans_submitted_total",
                "Scan submissions accepted (answered 202).",
                &["profile", "source_type"],
            ),
            rejected: Family::new(
                counter_vec(
                    r,
                    "scan_submissions_rejected_total",
                    "Scan submissions refused before a scan was created.",
                    &["reason"],
                ),
                |_| true,
            ),
            transitions: Family2::new(
                counter_vec(
                    r,
                    "scan_transitions_total",
                    "Scan status transitions made by this process.",
                    &["from", "to"],
                ),
                JobState::can_transition_to,
            ),
            failures: Family::new(
                counter_vec(
                    r,
                    "scan_failures_total",
                    "Scans that ended FAILED, by failure reason.",
                    &["reason"],
                ),
                |_| true,
            ),
            duration: histogram_vec(
                r,
                "scan_duration_seconds",
                "Time from a scan starting to run until it finished.",
                &["profile", "status"],
                SCAN_DURATION_BUCKETS,
            ),
            queue_wait: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        name("scan_queue_wait_seconds"),
                        "Time a scan waited in the queue before a worker started it.",
                    )
                    .buckets(QUEUE_WAIT_BUCKETS.to_vec()),
                )
                .expect("valid"),
            ),
            policy_evaluations: counter_vec(
                r,
                "policy_evaluations_total",
                "Policy verdicts of succeeded scans.",
                &["profile", "result"],
            ),
            pruned: Family::new(
                counter_vec(
                    r,
                    "scans_pruned_total",
                    "Finished scans deleted by retention, by their final status.",
                    &["status"],
                ),
                JobState::is_terminal,
            ),
            workers: int_gauge(r, "workers", "Configured scan workers."),
            workers_busy: int_gauge(r, "workers_busy", "Scan workers currently running a scan."),
            queue_oldest_enqueued: gauge(
                r,
                "queue_oldest_enqueued_timestamp_seconds",
                "Unix time the oldest QUEUED scan was submitted (0 when the queue is empty).",
            ),
            running_oldest_started: gauge(
                r,
                "running_oldest_started_timestamp_seconds",
                "Unix time the oldest RUNNING scan started (0 when none runs).",
            ),
            running_earliest_deadline: gauge(
                r,
                "running_earliest_deadline_timestamp_seconds",
                "Unix time by which the RUNNING scan with the earliest deadline (start + its timeout) must end (0 when none runs).",
            ),
        };
        m.create_profile_series(profiles);
        m
    }

    /// The series labelled by profile, at 0.
    fn create_profile_series(&self, profiles: &[&str]) {
        for p in profiles {
            for t in SOURCE_TYPES {
                self.submitted.with_label_values(&[p, t]);
            }
            for s in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
                self.duration.with_label_values(&[p, s.label()]);
            }
            for r in PolicyResult::ALL {
                self.policy_evaluations.with_label_values(&[p, r.as_str()]);
            }
        }
    }

    /// Counts the policy verdict of a succeeded scan of `profile`.
    pub fn policy_evaluated(&self, profile: &str, passed: bool) {
        let result = if passed {
            PolicyResult::Pass
        } else {
            PolicyResult::Fail
        };
        self.policy_evaluations
            .with_label_values(&[profile, result.as_str()])
            .inc();
    }
}
