//! The OSV scope: what the offline vulnerability database holds per ecosystem, how old its data
//! is (computed from the recorded update time at each scrape) and the configured limit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{IntGaugeVec, Opts};

use super::name;

/// Values of the `ecosystem` label of the OSV gauges: the ecosystems the vulnerability scanner
/// supports, as OSV spells them.
pub const OSV_ECOSYSTEMS: [&str; 6] = ["crates.io", "npm", "PyPI", "Go", "RubyGems", "Packagist"];

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
    pub(super) fn new() -> OsvGauges {
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
