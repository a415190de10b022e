//! The one metrics registry and every metric of the service, declared once per scope, each
//! scope in its own file with its names, help texts, label sets and buckets:
//!
//! | scope | file | what |
//! |---|---|---|
//! | scans | `scans.rs` | status gauge, submissions, transitions, failures, durations, workers |
//! | pipeline | `pipeline.rs` | phases, scanner runs, findings, suppressions |
//! | uploads | `uploads.rs` | upload status gauge, transitions, Trust and S3 requests |
//! | http, streams | `http.rs` | requests, connections, WebSocket streams |
//! | store | here | how fresh the status gauges read from a shared store are |
//! | osv | `osv.rs` | the vulnerability database gauges |
//! | process | `process_metrics.rs` | the standard `process_*` families |
//!
//! Label values come from enums (`labels.rs`, and the scan domain's own enums), through typed
//! families (`family.rs`) whose series are created at 0 when the registry is built; never an
//! id, URL, path or commit. docs/metrics.md is the reader's catalogue of these files.
//!
//! `/metrics` renders the whole registry (the process figures are read from `/proc` then, at
//! each scrape). `/stats` is a JSON view of the very same gauge objects, read through their
//! handles ([`Metrics::stats`]): no second set of counters, no gather, no `/proc` read.
//!
//! The status gauges (`scans`, `uploads`) have two sources. On the embedded store (one process)
//! each transition moves them in the code path that makes it. On a shared store other replicas
//! move the counts too, so the transitions only mark the gauges stale and the job engine sets
//! them from the store's counts when they are read ([`Metrics::read_counts_at_scrape`]).

pub mod family;
pub mod http;
pub mod labels;
pub mod osv;
pub mod pipeline;
pub mod scans;
pub mod uploads;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::scan::{JobState, UploadStatus};
use family::{register, Family, LabelValue};

pub use http::{HttpMetrics, StreamMetrics};
pub use osv::{OsvGauges, OSV_ECOSYSTEMS};
pub use pipeline::{PipelineMetrics, PHASES, SCANNER_OUTCOMES, SEVERITIES, SUPPRESSION_KINDS};
pub use scans::ScanMetrics;
pub use uploads::UploadMetrics;

/// Content type of the `/metrics` response.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const STEP_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn name(suffix: &str) -> String {
    format!("certus_assurance_{suffix}")
}

fn counter_vec(r: &Registry, n: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name(n), help), labels).expect("valid"),
    )
}

fn gauge_vec(r: &Registry, n: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        r,
        IntGaugeVec::new(Opts::new(name(n), help), labels).expect("valid"),
    )
}

fn histogram_vec(
    r: &Registry,
    n: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name(n), help).buckets(buckets.to_vec());
    register(r, HistogramVec::new(opts, labels).expect("valid"))
}

fn int_counter(r: &Registry, n: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name(n), help).expect("valid"))
}

fn int_gauge(r: &Registry, n: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name(n), help).expect("valid"))
}

fn gauge(r: &Registry, n: &str, help: &str) -> Gauge {
    register(r, Gauge::new(name(n), help).expect("valid"))
}

/// How fresh the status gauges read from a shared store are.
#[derive(Clone)]
pub struct StoreMetrics {
    /// `store_counts_age_seconds`: since the status gauges were last read from a shared store
    /// (0 on the embedded store, which moves them in process).
    pub counts_age: Gauge,
    /// `store_counts_read_failures_total`: reads of the counts that failed (the last good
    /// counts stay).
    pub counts_read_failures: IntCounter,
}

impl StoreMetrics {
    fn register(r: &Registry) -> StoreMetrics {
        StoreMetrics {
            counts_age: gauge(
                r,
                "store_counts_age_seconds",
                "Seconds since the scan and upload status gauges were read from the shared store (0 on the embedded store, which keeps them in process).",
            ),
            counts_read_failures: int_counter(
                r,
                "store_counts_read_failures_total",
                "Reads of the status counts from the shared store that failed or timed out; the gauges keep the last good counts.",
            ),
        }
    }
}

/// Whether the status gauges are moved in process or read from a shared store.
#[derive(Default)]
struct StatusCounts {
    /// Status gauges come from the store's counts at read time (shared store).
    at_read: AtomicBool,
    /// Bumped by every local transition while `at_read`: the cached counts predate it.
    generation: AtomicU64,
    /// Held while the status gauges are set from one read and while they are read, so a
    /// reader never sees the gauges of two different reads mixed.
    lock: Mutex<()>,
}

/// Handles to every metric, all registered in one registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub scans: ScanMetrics,
    pub pipeline: PipelineMetrics,
    pub uploads: UploadMetrics,
    pub http: HttpMetrics,
    pub streams: StreamMetrics,
    pub store: StoreMetrics,
    /// Size and age of the OSV database, per ecosystem.
    pub osv: OsvGauges,
    counts: Arc<StatusCounts>,
}

impl Metrics {
    /// Builds the registry with every series of a known label combination at 0.
    ///
    /// `profiles` and `scanners` are the closed sets of profile and scanner names this build
    /// knows; they become label values.
    pub fn new(profiles: &[&str], scanners: &[&str]) -> Metrics {
        let registry = Registry::new();
        let build_info = gauge_vec(
            &registry,
            "build_info",
            "Always 1; the labels carry the version and source revision of this build.",
            &["version", "revision"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::BUILD_REVISION])
            .set(1);
        let m = Metrics {
            scans: ScanMetrics::register(&registry, profiles),
            pipeline: PipelineMetrics::register(&registry, scanners),
            uploads: UploadMetrics::register(&registry),
            http: HttpMetrics::register(&registry),
            streams: StreamMetrics::register(&registry),
            store: StoreMetrics::register(&registry),
            osv: register(&registry, OsvGauges::new()),
            registry,
            counts: Arc::default(),
        };
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                crate::process_metrics::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        m
    }

    /// Every metric family of the registry (including the process collector).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let _counts = self.counts.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.registry.gather()
    }

    /// From now on the status gauges are set from the store's counts when read
    /// ([`Metrics::set_status_counts`]); transitions made here only mark them stale.
    pub fn read_counts_at_scrape(&self) {
        self.counts.at_read.store(true, Ordering::SeqCst);
    }

    /// Whether the status gauges are set from the store's counts when read.
    pub fn counts_at_read(&self) -> bool {
        self.counts.at_read.load(Ordering::SeqCst)
    }

    /// Changes with every local transition while the gauges are read from the store: counts read
    /// before a change no longer hold after it.
    pub fn counts_generation(&self) -> u64 {
        self.counts.generation.load(Ordering::SeqCst)
    }

    /// Sets every status gauge from one read of the store's counts (statuses missing from a
    /// list read 0). Readers at the same time see all of the old or all of the new.
    pub fn set_status_counts(&self, scans: &[(JobState, i64)], uploads: &[(UploadStatus, i64)]) {
        let _counts = self.counts.lock.lock().unwrap_or_else(|p| p.into_inner());
        set_all(&self.scans.status, scans);
        set_all(&self.uploads.status, uploads);
    }

    /// Moves one status gauge for a transition made by this process, or, when the gauges are
    /// read from the store, marks them stale.
    fn move_status<L: LabelValue>(&self, gauges: &Family<IntGaugeVec, L>, status: L, delta: i64) {
        if self.counts_at_read() {
            self.counts.generation.fetch_add(1, Ordering::SeqCst);
        } else {
            gauges.get(status).add(delta);
        }
    }

    /// `n` scans were inserted (QUEUED, upload `pending`).
    pub fn scans_inserted(&self, n: i64) {
        self.move_status(&self.scans.status, JobState::Queued, n);
        self.move_status(&self.uploads.status, UploadStatus::Pending, n);
    }

    /// Retention deleted a scan in `status` with upload status `upload_status`.
    pub fn scan_pruned(&self, status: JobState, upload_status: UploadStatus) {
        self.move_status(&self.scans.status, status, -1);
        self.move_status(&self.uploads.status, upload_status, -1);
        self.scans.pruned.get(status).inc();
    }

    /// Records one scan transition: moves the status gauges and counts the transition.
    pub fn scan_transition(&self, from: JobState, to: JobState) {
        self.move_status(&self.scans.status, from, -1);
        self.move_status(&self.scans.status, to, 1);
        self.scans.transitions.get(from, to).inc();
    }

    /// Records one upload transition: moves the upload status gauges and counts the transition.
    pub fn upload_transition(&self, from: UploadStatus, to: UploadStatus) {
        self.move_status(&self.uploads.status, from, -1);
        self.move_status(&self.uploads.status, to, 1);
        self.uploads.transitions.get(from, to).inc();
    }

    /// The Prometheus text exposition (format 0.0.4) of the registry.
    pub fn render_text(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.gather(), &mut buf)
            .expect("text encoding of gathered families cannot fail");
        String::from_utf8(buf).expect("text exposition is UTF-8")
    }

    /// The `/stats` document: the `scans`, `uploads` and `active_streams` gauges that `/metrics`
    /// renders, read through their handles (all status gauges from one store read, see
    /// [`Metrics::set_status_counts`]).
    pub fn stats(&self, now: std::time::SystemTime) -> Stats {
        let (scans, uploads) = {
            let _counts = self.counts.lock.lock().unwrap_or_else(|p| p.into_inner());
            (read_all(&self.scans.status), read_all(&self.uploads.status))
        };
        Stats {
            total_scans: scans.iter().sum(),
            scans_by_status: scans,
            upload_stats: uploads,
            active_streams: self.streams.active.get(),
            timestamp: now,
        }
    }
}

fn set_all<L: LabelValue + PartialEq>(gauges: &Family<IntGaugeVec, L>, values: &[(L, i64)]) {
    for &l in L::ALL {
        let value = values.iter().find(|(v, _)| *v == l).map_or(0, |(_, n)| *n);
        gauges.get(l).set(value);
    }
}

fn read_all<L: LabelValue, const N: usize>(gauges: &Family<IntGaugeVec, L>) -> [i64; N] {
    std::array::from_fn(|i| gauges.get(L::ALL[i]).get())
}

/// The `/stats` document (DESIGN.md "/stats"): keys in the order of the status enums.
pub struct Stats {
    pub total_scans: i64,
    /// By [`JobState`], in the order of `JobState::ALL`.
    pub scans_by_status: [i64; 4],
    /// By [`UploadStatus`], in the order of `UploadStatus::ALL`.
    pub upload_stats: [i64; 5],
    pub active_streams: i64,
    pub timestamp: std::time::SystemTime,
}

/// A JSON object with one key per label value.
struct ByLabel<'a, L>(&'a [i64], std::marker::PhantomData<L>);

impl<L: LabelValue> Serialize for ByLabel<'_, L> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (l, n) in L::ALL.iter().zip(self.0) {
            map.serialize_entry(l.label(), n)?;
        }
        map.end()
    }
}

impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("total_scans", &self.total_scans)?;
        map.serialize_entry(
            "scans_by_status",
            &ByLabel::<JobState>(&self.scans_by_status, std::marker::PhantomData),
        )?;
        map.serialize_entry(
            "upload_stats",
            &ByLabel::<UploadStatus>(&self.upload_stats, std::marker::PhantomData),
        )?;
        map.serialize_entry("active_streams", &self.active_streams)?;
        map.serialize_entry(
            "timestamp",
            &humantime::format_rfc3339_seconds(self.timestamp).to_string(),
        )?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stats_json(m: &Metrics, now: std::time::SystemTime) -> serde_json::Value {
        serde_json::to_value(m.stats(now)).unwrap()
    }

    #[test]
    fn stats_have_the_spec_shape_at_zero() {
        let m = Metrics::new(&["light"], &["secrets"]);
        let stats = stats_json(&m, std::time::SystemTime::UNIX_EPOCH);
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
        m.scans.status.get(JobState::Queued).inc();
        m.scan_transition(JobState::Queued, JobState::Running);
        m.streams.active.inc();
        let stats = stats_json(&m, std::time::SystemTime::now());
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
        m.set_status_counts(
            &[(JobState::Queued, 2), (JobState::Running, 1)],
            &[(UploadStatus::Pending, 3)],
        );
        let before = m.counts_generation();
        // Another replica's view may differ from this one's history: a local transition must
        // not move the gauges (that is how they went negative), only mark the read stale.
        m.scan_transition(JobState::Running, JobState::Succeeded);
        m.scan_transition(JobState::Running, JobState::Succeeded);
        m.upload_transition(UploadStatus::Pending, UploadStatus::Permitted);
        m.scans_inserted(4);
        m.scan_pruned(JobState::Failed, UploadStatus::Failed);
        assert_eq!(m.counts_generation(), before + 10);
        let stats = stats_json(&m, std::time::SystemTime::now());
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
        m.set_status_counts(&[(JobState::Succeeded, 2)], &[]);
        let stats = stats_json(&m, std::time::SystemTime::now());
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
