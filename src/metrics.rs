//! The one metrics registry and every metric of the service: name, help, labels and buckets are
//! declared here and nowhere else. Other modules only call the typed handles of [`Metrics`].
//!
//! `/metrics` renders [`Metrics::gather`] in the Prometheus text format 0.0.4, and `/stats` is a
//! JSON view of the very same gathered families ([`Metrics::stats`]) — there is no second set of
//! counters. Every label value comes from a closed list below (never an id, URL, path or commit),
//! and every known label combination is created at 0 when the registry is built, so series exist
//! from the first scrape. docs/metrics.md is the reader's catalogue of this file.
//!
//! The status gauges (`scans`, `uploads`) have two sources. On the embedded store (one process)
//! each transition moves them in the code path that makes it. On a shared store other replicas
//! move the counts too, so the transitions only mark the gauges stale and the job engine sets
//! them from the store's counts when they are read ([`Metrics::read_counts_at_scrape`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde_json::json;

/// Content type of the `/metrics` response.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Values of the `status` label of `scans` (lower case, as `/stats` keys).
pub const SCAN_STATUSES: [&str; 4] = ["queued", "running", "succeeded", "failed"];
/// Legal `(from, to)` scan transitions; `scan_transitions_total` has exactly these series.
pub const SCAN_TRANSITIONS: [(&str, &str); 5] = [
    ("queued", "running"),
    ("queued", "failed"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "queued"),
];
/// Values of `failure_reason` and of the `reason` label of `scan_failures_total`.
pub const FAILURE_REASONS: [&str; 7] = [
    "clone_failed",
    "source_invalid",
    "scanner_failed",
    "timeout",
    "cancelled",
    "interrupted",
    "internal",
];
/// Reasons a submission is refused before a scan exists.
pub const REJECT_REASONS: [&str; 6] = [
    "invalid",
    "unauthorized",
    "queue_full",
    "draining",
    "workspace_limit",
    "rate_limited",
];
/// Why an HTTP connection was refused when it opened (`http_connections_refused_total`).
pub const CONNECTION_REFUSAL_REASONS: [&str; 2] = ["global_limit", "per_client_limit"];
/// Why an HTTP connection was closed for taking too long (`http_connections_timed_out_total`).
pub const CONNECTION_TIMEOUT_REASONS: [&str; 2] = ["header_read", "idle"];
/// Why a WebSocket stream was refused or closed early (`stream_closures_total`).
pub const STREAM_CLOSURE_REASONS: [&str; 4] =
    ["global_limit", "per_client_limit", "idle", "no_pong"];
/// Values of the `source_type` label.
pub const SOURCE_TYPES: [&str; 3] = ["git", "directory", "archive"];
/// Values of the `phase` label of `scan_phase_duration_seconds`.
pub const PHASES: [&str; 3] = ["clone", "scan", "bundle"];
/// Outcomes of one scanner run.
pub const SCANNER_OUTCOMES: [&str; 3] = ["success", "failure", "skipped"];
/// Values of the `result` label of `policy_evaluations_total`.
pub const POLICY_RESULTS: [&str; 2] = ["pass", "fail"];
/// Values of the `status` label of `uploads` (`/stats.upload_stats` keys).
pub const UPLOAD_STATUSES: [&str; 5] = ["pending", "permitted", "uploaded", "denied", "failed"];
/// Legal upload transitions.
pub const UPLOAD_TRANSITIONS: [(&str, &str); 7] = [
    ("pending", "permitted"),
    ("pending", "denied"),
    ("pending", "failed"),
    ("permitted", "uploaded"),
    ("permitted", "failed"),
    ("failed", "permitted"),
    ("failed", "denied"),
];
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
/// Values of the `ecosystem` label of the OSV gauges: the ecosystems the vulnerability scanner
/// supports, as OSV spells them.
pub const OSV_ECOSYSTEMS: [&str; 6] = ["crates.io", "npm", "PyPI", "Go", "RubyGems", "Packagist"];
/// Kind label values of `findings_suppressed_total`.
pub const SUPPRESSION_KINDS: [&str; 3] = ["inline", "baseline", "path"];
/// Severity label values of `findings_total`.
pub const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

const SCAN_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
const STEP_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Handles to every metric, all registered in [`Metrics::registry`]. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Scans by current status (store-derived; rebuilt from the store at start-up).
    pub scans: IntGaugeVec,
    pub scans_submitted_total: IntCounterVec,
    pub scan_submissions_rejected_total: IntCounterVec,
    pub scan_transitions_total: IntCounterVec,
    pub scan_failures_total: IntCounterVec,
    pub scan_duration_seconds: HistogramVec,
    pub scan_queue_wait_seconds: Histogram,
    pub scan_phase_duration_seconds: HistogramVec,
    pub scanner_runs_total: IntCounterVec,
    pub scanner_duration_seconds: HistogramVec,
    pub findings_total: IntCounterVec,
    pub findings_suppressed_total: IntCounterVec,
    pub policy_evaluations_total: IntCounterVec,
    pub scans_pruned_total: IntCounterVec,
    pub workers: IntGauge,
    pub workers_busy: IntGauge,
    /// Unix time the oldest QUEUED scan was submitted; 0 when the queue is empty.
    pub queue_oldest_enqueued_timestamp_seconds: prometheus::Gauge,
    /// Unix time the oldest RUNNING scan started; 0 when none runs.
    pub running_oldest_started_timestamp_seconds: prometheus::Gauge,
    /// Earliest `started_at + timeout_seconds` among RUNNING scans; 0 when none runs.
    pub running_earliest_deadline_timestamp_seconds: prometheus::Gauge,
    /// Scans by upload status (store-derived).
    pub uploads: IntGaugeVec,
    /// Seconds since the status gauges were last read from a shared store (0 on the embedded
    /// store, which moves them in process).
    pub store_counts_age_seconds: prometheus::Gauge,
    /// Reads of the status counts from a shared store that failed (the last good counts stay).
    pub store_counts_read_failures_total: IntCounter,
    pub upload_transitions_total: IntCounterVec,
    pub trust_requests_total: IntCounterVec,
    pub trust_request_duration_seconds: HistogramVec,
    pub s3_requests_total: IntCounterVec,
    pub s3_request_duration_seconds: HistogramVec,
    pub s3_uploaded_bytes_total: IntCounter,
    pub active_streams: IntGauge,
    pub stream_events_sent_total: IntCounter,
    pub stream_events_dropped_total: IntCounter,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub http_connections_open: IntGauge,
    pub http_connections_refused_total: IntCounterVec,
    pub http_connections_timed_out_total: IntCounterVec,
    pub stream_closures_total: IntCounterVec,
    pub build_info: IntGaugeVec,
    /// Size and age of the OSV database, per ecosystem.
    pub osv: OsvGauges,
    /// Status gauges come from the store's counts at read time (shared store).
    counts_at_read: Arc<AtomicBool>,
    /// Bumped by every local transition while `counts_at_read`: the cached counts predate it.
    counts_generation: Arc<AtomicU64>,
    /// Held while the status gauges are set from one read and while the registry is gathered,
    /// so a reader never sees the gauges of two different reads mixed.
    counts_lock: Arc<Mutex<()>>,
}

/// `certus_assurance_osv_records`, `certus_assurance_osv_database_age_seconds` (computed from
/// the recorded update time at each scrape) and `certus_assurance_osv_database_max_age_seconds`.
#[derive(Clone)]
pub struct OsvGauges {
    records: IntGaugeVec,
    age: prometheus::GaugeVec,
    max_age: prometheus::Gauge,
    updated: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl OsvGauges {
    fn new() -> OsvGauges {
        let g = OsvGauges {
            records: IntGaugeVec::new(
                Opts::new(
                    name("osv_records"),
                    "OSV records in the vulnerability database, per ecosystem.",
                ),
                &["ecosystem"],
            )
            .expect("valid"),
            age: prometheus::GaugeVec::new(
                Opts::new(
                    name("osv_database_age_seconds"),
                    "Time since the OSV data of an ecosystem was last known current (0 while it has no records).",
                ),
                &["ecosystem"],
            )
            .expect("valid"),
            max_age: prometheus::Gauge::new(
                name("osv_database_max_age_seconds"),
                "CERTUS_ASSURANCE_OSV_MAX_AGE_HOURS in seconds (0: no limit, or no OSV database configured).",
            )
            .expect("valid"),
            updated: Arc::default(),
        };
        for e in OSV_ECOSYSTEMS {
            g.records.with_label_values(&[e]);
            g.age.with_label_values(&[e]);
        }
        g
    }

    /// Records what the database holds for `ecosystem` (one of [`OSV_ECOSYSTEMS`]) and when it
    /// was last known current (`None`: no data or no date; the age reads 0).
    pub fn set(&self, ecosystem: &str, records: u64, updated_at: Option<std::time::SystemTime>) {
        if !OSV_ECOSYSTEMS.contains(&ecosystem) {
            return;
        }
        self.records
            .with_label_values(&[ecosystem])
            .set(records as i64);
        let mut updated = self.updated.lock().unwrap_or_else(|p| p.into_inner());
        match updated_at.filter(|_| records > 0) {
            Some(t) => {
                let secs = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                updated.insert(ecosystem.to_string(), secs);
            }
            None => {
                updated.remove(ecosystem);
            }
        }
    }

    pub fn set_max_age(&self, seconds: f64) {
        self.max_age.set(seconds);
    }
}

impl Collector for OsvGauges {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.records.desc();
        d.extend(self.age.desc());
        d.extend(self.max_age.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        {
            let updated = self.updated.lock().unwrap_or_else(|p| p.into_inner());
            for e in OSV_ECOSYSTEMS {
                let age = updated.get(e).map_or(0.0, |t| (now - t).max(0.0).floor());
                self.age.with_label_values(&[e]).set(age);
            }
        }
        let mut out = self.records.collect();
        out.extend(self.age.collect());
        out.extend(self.max_age.collect());
        out
    }
}

fn name(suffix: &str) -> String {
    format!("certus_assurance_{suffix}")
}

impl Metrics {
    /// Builds the registry with every series of a known label combination at 0.
    ///
    /// `profiles` and `scanners` are the closed sets of profile and scanner names this build
    /// knows; they become label values.
    pub fn new(profiles: &[&str], scanners: &[&str]) -> Metrics {
        let registry = Registry::new();
        fn reg<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let gauge_vec = |n: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name(n), help), labels).expect("valid"),
            )
        };
        let counter_vec = |n: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name(n), help), labels).expect("valid"),
            )
        };
        let histogram_vec = |n: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name(n), help).buckets(buckets.to_vec()),
                    labels,
                )
                .expect("valid"),
            )
        };

        let m = Metrics {
            scans: gauge_vec(
                "scans",
                "Scans by current status, as recorded in the job store.",
                &["status"],
            ),
            scans_submitted_total: counter_vec(
                "scans_submitted_total",
                "Scan submissions accepted (answered 202).",
                &["profile", "source_type"],
            ),
            scan_submissions_rejected_total: counter_vec(
                "scan_submissions_rejected_total",
                "Scan submissions refused before a scan was created.",
                &["reason"],
            ),
            scan_transitions_total: counter_vec(
                "scan_transitions_total",
                "Scan status transitions made by this process.",
                &["from", "to"],
            ),
            scan_failures_total: counter_vec(
                "scan_failures_total",
                "Scans that ended FAILED, by failure reason.",
                &["reason"],
            ),
            scan_duration_seconds: histogram_vec(
                "scan_duration_seconds",
                "Time from a scan starting to run until it finished.",
                &["profile", "status"],
                SCAN_DURATION_BUCKETS,
            ),
            scan_queue_wait_seconds: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        name("scan_queue_wait_seconds"),
                        "Time a scan waited in the queue before a worker started it.",
                    )
                    .buckets(QUEUE_WAIT_BUCKETS.to_vec()),
                )
                .expect("valid"),
            ),
            scan_phase_duration_seconds: histogram_vec(
                "scan_phase_duration_seconds",
                "Duration of each phase of a scan run.",
                &["phase"],
                STEP_BUCKETS,
            ),
            scanner_runs_total: counter_vec(
                "scanner_runs_total",
                "Scanner runs by scanner and outcome.",
                &["scanner", "outcome"],
            ),
            scanner_duration_seconds: histogram_vec(
                "scanner_duration_seconds",
                "Duration of one scanner run.",
                &["scanner", "outcome"],
                STEP_BUCKETS,
            ),
            findings_total: counter_vec(
                "findings_total",
                "Findings reported by scanners, by severity.",
                &["severity", "scanner"],
            ),
            findings_suppressed_total: counter_vec(
                "findings_suppressed_total",
                "Merged findings listed as suppressed, by kind of suppression.",
                &["kind"],
            ),
            policy_evaluations_total: counter_vec(
                "policy_evaluations_total",
                "Policy verdicts of succeeded scans.",
                &["profile", "result"],
            ),
            scans_pruned_total: counter_vec(
                "scans_pruned_total",
                "Finished scans deleted by retention, by their final status.",
                &["status"],
            ),
            workers: reg(
                &registry,
                IntGauge::new(name("workers"), "Configured scan workers.").expect("valid"),
            ),
            workers_busy: reg(
                &registry,
                IntGauge::new(
                    name("workers_busy"),
                    "Scan workers currently running a scan.",
                )
                .expect("valid"),
            ),
            queue_oldest_enqueued_timestamp_seconds: reg(
                &registry,
                prometheus::Gauge::new(
                    name("queue_oldest_enqueued_timestamp_seconds"),
                    "Unix time the oldest QUEUED scan was submitted (0 when the queue is empty).",
                )
                .expect("valid"),
            ),
            running_oldest_started_timestamp_seconds: reg(
                &registry,
                prometheus::Gauge::new(
                    name("running_oldest_started_timestamp_seconds"),
                    "Unix time the oldest RUNNING scan started (0 when none runs).",
                )
                .expect("valid"),
            ),
            running_earliest_deadline_timestamp_seconds: reg(
                &registry,
                prometheus::Gauge::new(
                    name("running_earliest_deadline_timestamp_seconds"),
                    "Unix time by which the RUNNING scan with the earliest deadline (start + its timeout) must end (0 when none runs).",
                )
                .expect("valid"),
            ),
            uploads: gauge_vec(
                "uploads",
                "Scans by upload status, as recorded in the job store.",
                &["status"],
            ),
            store_counts_age_seconds: reg(
                &registry,
                prometheus::Gauge::new(
                    name("store_counts_age_seconds"),
                    "Seconds since the scan and upload status gauges were read from the shared store (0 on the embedded store, which keeps them in process).",
                )
                .expect("valid"),
            ),
            store_counts_read_failures_total: reg(
                &registry,
                IntCounter::new(
                    name("store_counts_read_failures_total"),
                    "Reads of the status counts from the shared store that failed or timed out; the gauges keep the last good counts.",
                )
                .expect("valid"),
            ),
            upload_transitions_total: counter_vec(
                "upload_transitions_total",
                "Upload status transitions made by this process.",
                &["from", "to"],
            ),
            trust_requests_total: counter_vec(
                "trust_requests_total",
                "Requests to the Trust service for upload permission, by outcome.",
                &["outcome"],
            ),
            trust_request_duration_seconds: histogram_vec(
                "trust_request_duration_seconds",
                "Latency of requests to the Trust service, by outcome.",
                &["outcome"],
                HTTP_BUCKETS,
            ),
            s3_requests_total: counter_vec(
                "s3_requests_total",
                "Requests to S3, by operation and outcome.",
                &["operation", "outcome"],
            ),
            s3_request_duration_seconds: histogram_vec(
                "s3_request_duration_seconds",
                "Latency of S3 requests, by operation and outcome.",
                &["operation", "outcome"],
                STEP_BUCKETS,
            ),
            s3_uploaded_bytes_total: reg(
                &registry,
                IntCounter::new(name("s3_uploaded_bytes_total"), "Bytes uploaded to S3.")
                    .expect("valid"),
            ),
            active_streams: reg(
                &registry,
                IntGauge::new(name("active_streams"), "Open WebSocket event streams.")
                    .expect("valid"),
            ),
            stream_events_sent_total: reg(
                &registry,
                IntCounter::new(
                    name("stream_events_sent_total"),
                    "Events sent to WebSocket subscribers.",
                )
                .expect("valid"),
            ),
            stream_events_dropped_total: reg(
                &registry,
                IntCounter::new(
                    name("stream_events_dropped_total"),
                    "Log events dropped from a scan's bounded replay history.",
                )
                .expect("valid"),
            ),
            http_requests_total: counter_vec(
                "http_requests_total",
                "HTTP requests answered, by method, route template and status code.",
                &["method", "route", "status"],
            ),
            http_request_duration_seconds: histogram_vec(
                "http_request_duration_seconds",
                "HTTP request latency, by method, route template and status code.",
                &["method", "route", "status"],
                HTTP_BUCKETS,
            ),
            http_connections_open: reg(
                &registry,
                IntGauge::new(
                    name("http_connections_open"),
                    "HTTP connections open (WebSocket streams included).",
                )
                .expect("valid"),
            ),
            http_connections_refused_total: counter_vec(
                "http_connections_refused_total",
                "HTTP connections refused when they opened, by reason (global_limit, per_client_limit).",
                &["reason"],
            ),
            http_connections_timed_out_total: counter_vec(
                "http_connections_timed_out_total",
                "HTTP connections closed for taking too long, by reason (header_read, idle).",
                &["reason"],
            ),
            stream_closures_total: counter_vec(
                "stream_closures_total",
                "WebSocket streams refused before the upgrade or closed by the server before their scan ended, by reason.",
                &["reason"],
            ),
            build_info: gauge_vec(
                "build_info",
                "Always 1; the labels carry the version and source revision of this build.",
                &["version", "revision"],
            ),
            osv: reg(&registry, OsvGauges::new()),
            registry,
            counts_at_read: Arc::default(),
            counts_generation: Arc::default(),
            counts_lock: Arc::default(),
        };

        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                crate::process_metrics::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");

        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::BUILD_REVISION])
            .set(1);
        for s in SCAN_STATUSES {
            m.scans.with_label_values(&[s]);
        }
        for p in profiles {
            for t in SOURCE_TYPES {
                m.scans_submitted_total.with_label_values(&[p, t]);
            }
            for s in ["succeeded", "failed"] {
                m.scan_duration_seconds.with_label_values(&[p, s]);
            }
            for r in POLICY_RESULTS {
                m.policy_evaluations_total.with_label_values(&[p, r]);
            }
        }
        for r in REJECT_REASONS {
            m.scan_submissions_rejected_total.with_label_values(&[r]);
        }
        for r in CONNECTION_REFUSAL_REASONS {
            m.http_connections_refused_total.with_label_values(&[r]);
        }
        for r in CONNECTION_TIMEOUT_REASONS {
            m.http_connections_timed_out_total.with_label_values(&[r]);
        }
        for r in STREAM_CLOSURE_REASONS {
            m.stream_closures_total.with_label_values(&[r]);
        }
        for (from, to) in SCAN_TRANSITIONS {
            m.scan_transitions_total.with_label_values(&[from, to]);
        }
        for r in FAILURE_REASONS {
            m.scan_failures_total.with_label_values(&[r]);
        }
        for s in ["succeeded", "failed"] {
            m.scans_pruned_total.with_label_values(&[s]);
        }
        for p in PHASES {
            m.scan_phase_duration_seconds.with_label_values(&[p]);
        }
        for s in scanners {
            for o in SCANNER_OUTCOMES {
                m.scanner_runs_total.with_label_values(&[s, o]);
                m.scanner_duration_seconds.with_label_values(&[s, o]);
            }
            for sev in SEVERITIES {
                m.findings_total.with_label_values(&[sev, s]);
            }
        }
        for k in SUPPRESSION_KINDS {
            m.findings_suppressed_total.with_label_values(&[k]);
        }
        for s in UPLOAD_STATUSES {
            m.uploads.with_label_values(&[s]);
        }
        for (from, to) in UPLOAD_TRANSITIONS {
            m.upload_transitions_total.with_label_values(&[from, to]);
        }
        for o in TRUST_OUTCOMES {
            m.trust_requests_total.with_label_values(&[o]);
            m.trust_request_duration_seconds.with_label_values(&[o]);
        }
        for op in S3_OPERATIONS {
            for o in S3_OUTCOMES {
                m.s3_requests_total.with_label_values(&[op, o]);
                m.s3_request_duration_seconds.with_label_values(&[op, o]);
            }
        }
        m
    }

    /// Every metric family of the registry (including the process collector).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let _counts = self.counts_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.registry.gather()
    }

    /// From now on the status gauges are set from the store's counts when read
    /// ([`Metrics::set_status_counts`]); transitions made here only mark them stale.
    pub fn read_counts_at_scrape(&self) {
        self.counts_at_read.store(true, Ordering::SeqCst);
    }

    /// Whether the status gauges are set from the store's counts when read.
    pub fn counts_at_read(&self) -> bool {
        self.counts_at_read.load(Ordering::SeqCst)
    }

    /// Changes with every local transition while the gauges are read from the store: counts read
    /// before a change no longer hold after it.
    pub fn counts_generation(&self) -> u64 {
        self.counts_generation.load(Ordering::SeqCst)
    }

    /// Sets every status gauge from one read of the store's counts (statuses missing from a
    /// list read 0). Readers gathering at the same time see all of the old or all of the new.
    pub fn set_status_counts(&self, scans: &[(&str, i64)], uploads: &[(&str, i64)]) {
        let _counts = self.counts_lock.lock().unwrap_or_else(|p| p.into_inner());
        let value = |list: &[(&str, i64)], label: &str| {
            list.iter()
                .find(|(l, _)| *l == label)
                .map_or(0, |(_, n)| *n)
        };
        for s in SCAN_STATUSES {
            self.scans.with_label_values(&[s]).set(value(scans, s));
        }
        for s in UPLOAD_STATUSES {
            self.uploads.with_label_values(&[s]).set(value(uploads, s));
        }
    }

    /// Moves one status gauge for a transition made by this process, or, when the gauges are
    /// read from the store, marks them stale.
    fn move_status(&self, gauges: &IntGaugeVec, status: &str, delta: i64) {
        if self.counts_at_read() {
            self.counts_generation.fetch_add(1, Ordering::SeqCst);
        } else {
            gauges.with_label_values(&[status]).add(delta);
        }
    }

    /// `n` scans were inserted (QUEUED, upload `pending`).
    pub fn scans_inserted(&self, n: i64) {
        self.move_status(&self.scans, "queued", n);
        self.move_status(&self.uploads, "pending", n);
    }

    /// Retention deleted a scan in `status` with upload status `upload_status`.
    pub fn scan_pruned(&self, status: &str, upload_status: &str) {
        self.move_status(&self.scans, status, -1);
        self.move_status(&self.uploads, upload_status, -1);
        self.scans_pruned_total.with_label_values(&[status]).inc();
    }

    /// The Prometheus text exposition (format 0.0.4) of the registry.
    pub fn render_text(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.gather(), &mut buf)
            .expect("text encoding of gathered families cannot fail");
        String::from_utf8(buf).expect("text exposition is UTF-8")
    }

    /// The `/stats` document, read from the same gathered families that `/metrics` renders.
    pub fn stats(&self, now: std::time::SystemTime) -> serde_json::Value {
        let families = self.gather();
        let by_label = |metric: &str, label: &str, keys: &[&str]| {
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert((*k).to_string(), json!(0));
            }
            let full = name(metric);
            if let Some(family) = families.iter().find(|f| f.name() == full) {
                for m in family.get_metric() {
                    if let Some(pair) = m.get_label().iter().find(|p| p.name() == label) {
                        out.insert(
                            pair.value().to_string(),
                            json!(m.get_gauge().get_value() as i64),
                        );
                    }
                }
            }
            out
        };
        let single = |metric: &str| {
            let full = name(metric);
            families
                .iter()
                .find(|f| f.name() == full)
                .and_then(|f| f.get_metric().first())
                .map(|m| m.get_gauge().get_value() as i64)
                .unwrap_or(0)
        };
        let scans = by_label("scans", "status", &SCAN_STATUSES);
        let total: i64 = scans.values().filter_map(|v| v.as_i64()).sum();
        json!({
            "total_scans": total,
            "scans_by_status": scans,
            "upload_stats": by_label("uploads", "status", &UPLOAD_STATUSES),
            "active_streams": single("active_streams"),
            "timestamp": humantime::format_rfc3339_seconds(now).to_string(),
        })
    }

    /// Records one scan transition: moves the status gauges and counts the transition.
    pub fn scan_transition(&self, from: &str, to: &str) {
        self.move_status(&self.scans, from, -1);
        self.move_status(&self.scans, to, 1);
        self.scan_transitions_total
            .with_label_values(&[from, to])
            .inc();
    }

    /// Records one upload transition: moves the upload status gauges and counts the transition.
    pub fn upload_transition(&self, from: &str, to: &str) {
        self.move_status(&self.uploads, from, -1);
        self.move_status(&self.uploads, to, 1);
        self.upload_transitions_total
            .with_label_values(&[from, to])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_have_the_spec_shape_at_zero() {
        let m = Metrics::new(&["light"], &["secrets"]);
        let stats = m.stats(std::time::SystemTime::UNIX_EPOCH);
        assert_eq!(stats["total_scans"], 0);
        assert_eq!(
            stats["scans_by_status"],
            json!({"queued":0,"running":0,"succeeded":0,"failed":0})
        );
        assert_eq!(stats["upload_stats"]["pending"], 0);
        assert_eq!(stats["timestamp"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn stats_follow_the_registry() {
        let m = Metrics::new(&["light"], &["secrets"]);
        m.scans.with_label_values(&["queued"]).inc();
        m.scan_transition("queued", "running");
        m.active_streams.inc();
        let stats = m.stats(std::time::SystemTime::now());
        assert_eq!(stats["scans_by_status"]["running"], 1);
        assert_eq!(stats["scans_by_status"]["queued"], 0);
        assert_eq!(stats["total_scans"], 1);
        assert_eq!(stats["active_streams"], 1);
        let text = m.render_text();
        assert!(text.contains("certus_assurance_scans{status=\"running\"} 1"));
        assert!(text
            .contains("certus_assurance_scan_transitions_total{from=\"queued\",to=\"running\"} 1"));
    }

    #[test]
    fn status_gauges_read_from_the_store_are_set_whole_and_only_marked_stale_by_transitions() {
        let m = Metrics::new(&["light"], &["secrets"]);
        m.read_counts_at_scrape();
        m.set_status_counts(&[("queued", 2), ("running", 1)], &[("pending", 3)]);
        let before = m.counts_generation();
        // Another replica's view may differ from this one's history: a local transition must
        // not move the gauges (that is how they went negative), only mark the read stale.
        m.scan_transition("running", "succeeded");
        m.scan_transition("running", "succeeded");
        m.upload_transition("pending", "permitted");
        m.scans_inserted(4);
        m.scan_pruned("failed", "failed");
        assert_eq!(m.counts_generation(), before + 10);
        let stats = m.stats(std::time::SystemTime::now());
        assert_eq!(
            stats["scans_by_status"],
            json!({"queued":2,"running":1,"succeeded":0,"failed":0})
        );
        assert_eq!(
            stats["upload_stats"],
            json!({"pending":3,"permitted":0,"uploaded":0,"denied":0,"failed":0})
        );
        let text = m.render_text();
        assert!(text.contains(
            "certus_assurance_scan_transitions_total{from=\"running\",to=\"succeeded\"} 2"
        ));
        assert!(text.contains("certus_assurance_scans_pruned_total{status=\"failed\"} 1"));
        // A status missing from a read is 0, not the value of an earlier read.
        m.set_status_counts(&[("succeeded", 2)], &[]);
        let stats = m.stats(std::time::SystemTime::now());
        assert_eq!(
            stats["scans_by_status"],
            json!({"queued":0,"running":0,"succeeded":2,"failed":0})
        );
        assert_eq!(stats["upload_stats"]["pending"], 0);
    }

    #[test]
    fn osv_age_is_computed_at_each_scrape_from_the_recorded_time() {
        let m = Metrics::new(&["light"], &["vulnerabilities"]);
        let text = m.render_text();
        for e in OSV_ECOSYSTEMS {
            assert!(text.contains(&format!(
                "certus_assurance_osv_database_age_seconds{{ecosystem=\"{e}\"}} 0"
            )));
            assert!(text.contains(&format!(
                "certus_assurance_osv_records{{ecosystem=\"{e}\"}} 0"
            )));
        }
        assert!(text.contains("certus_assurance_osv_database_max_age_seconds 0"));
        let set_at = std::time::SystemTime::now();
        let day_ago = set_at - std::time::Duration::from_secs(86_400);
        m.osv.set("PyPI", 42, Some(day_ago));
        m.osv.set("npm", 0, Some(day_ago));
        m.osv.set("Maven", 7, Some(day_ago));
        m.osv.set_max_age(3600.0);
        let text = m.render_text();
        let age = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("certus_assurance_osv_database_age_seconds{ecosystem=\"PyPI\"} ")
            })
            .unwrap()
            .parse::<f64>()
            .unwrap();
        // At least the day recorded, at most that plus the time since it was recorded.
        let since = set_at.elapsed().unwrap().as_secs_f64();
        assert!(age >= 86_400.0 && age <= 86_400.0 + since, "{age}");
        assert!(text.contains("certus_assurance_osv_records{ecosystem=\"PyPI\"} 42"));
        assert!(text.contains("certus_assurance_osv_database_age_seconds{ecosystem=\"npm\"} 0"));
        assert!(!text.contains("Maven"));
        assert!(text.contains("certus_assurance_osv_database_max_age_seconds 3600"));
    }
}
