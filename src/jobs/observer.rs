//! The pipeline's [`ScanObserver`], turned into the service's metrics: phase and scanner
//! durations, scanner outcomes, findings by severity and scanner, suppressed findings and the
//! OSV database gauges.

use std::time::SystemTime;

use crate::metrics::Metrics;
use crate::pipeline::finding::{Severity, SeverityCounts};
use crate::pipeline::sbom::Ecosystem;
use crate::pipeline::{Phase, ScanObserver, ScannerStatus};

/// Records what scan runs report in [`Metrics`].
pub struct MetricsObserver {
    metrics: Metrics,
}

impl MetricsObserver {
    pub fn new(metrics: Metrics) -> MetricsObserver {
        MetricsObserver { metrics }
    }
}

impl ScanObserver for MetricsObserver {
    fn phase_finished(&self, phase: Phase, seconds: f64) {
        self.metrics
            .pipeline
            .phase_duration
            .with_label_values(&[phase.as_str()])
            .observe(seconds);
    }

    fn scanner_finished(
        &self,
        scanner: &str,
        status: ScannerStatus,
        seconds: f64,
        findings: Option<&SeverityCounts>,
    ) {
        let labels = [scanner, status.outcome()];
        self.metrics
            .pipeline
            .scanner_runs
            .with_label_values(&labels)
            .inc();
        self.metrics
            .pipeline
            .scanner_duration
            .with_label_values(&labels)
            .observe(seconds);
        for sev in Severity::ALL {
            let n = findings.map_or(0, |counts| counts.get(sev));
            if n > 0 {
                self.metrics
                    .pipeline
                    .findings
                    .with_label_values(&[sev.as_str(), scanner])
                    .inc_by(n);
            }
        }
    }

    fn findings_suppressed(&self, kind: &str, count: u64) {
        self.metrics
            .pipeline
            .findings_suppressed
            .with_label_values(&[kind])
            .inc_by(count);
    }

    fn osv_max_age(&self, seconds: f64) {
        self.metrics.osv.set_max_age(seconds);
    }

    fn osv_ecosystem(&self, ecosystem: Ecosystem, records: u64, updated_at: Option<SystemTime>) {
        self.metrics
            .osv
            .set(ecosystem.osv_name(), records, updated_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{OSV_ECOSYSTEMS, PHASES, SCANNER_OUTCOMES, SEVERITIES};
    use crate::pipeline::bundle::findings::SUPPRESSION_KINDS;

    /// The metrics declare their label sets up front; they are the pipeline's values.
    #[test]
    fn metric_label_values_are_the_pipelines() {
        let ecosystems: Vec<&str> = Ecosystem::ALL.iter().map(|e| e.osv_name()).collect();
        assert_eq!(ecosystems, OSV_ECOSYSTEMS);
        let phases: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(phases, PHASES);
        let outcomes: Vec<&str> = ScannerStatus::ALL.iter().map(|s| s.outcome()).collect();
        assert_eq!(outcomes, SCANNER_OUTCOMES);
        let severities: Vec<&str> = Severity::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(severities, SEVERITIES);
        assert_eq!(SUPPRESSION_KINDS, crate::metrics::SUPPRESSION_KINDS);
    }

    #[test]
    fn runs_are_counted_by_scanner_outcome_and_severity() {
        let metrics = Metrics::new(&["light"], &["secrets"]);
        let observer = MetricsObserver::new(metrics.clone());
        let text = metrics.render_text();
        for kind in SUPPRESSION_KINDS {
            assert!(text.contains(&format!(
                "certus_assurance_findings_suppressed_total{{kind=\"{kind}\"}} 0"
            )));
        }
        observer.findings_suppressed("inline", 2);
        let mut counts = SeverityCounts::default();
        counts.add(Severity::High, 3);
        observer.scanner_finished("secrets", ScannerStatus::Succeeded, 0.5, Some(&counts));
        let text = metrics.render_text();
        assert!(text.contains("certus_assurance_findings_suppressed_total{kind=\"inline\"} 2"));
        assert!(text.contains(
            "certus_assurance_scanner_runs_total{outcome=\"success\",scanner=\"secrets\"} 1"
        ));
        assert!(text
            .contains("certus_assurance_findings_total{scanner=\"secrets\",severity=\"high\"} 3"));
    }
}
