//! The HTTP scope: requests by method, route template and status, their latency, and the
//! connections under them; and the WebSocket streams. The request middleware records every
//! request through [`HttpMetrics::record`], which keeps the handles of each (method, route,
//! status) it has seen, so a request costs a lookup of its route instead of building and
//! hashing three label values twice.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

use super::family::Family;
use super::labels::{ConnectionRefusal, ConnectionTimeout, HttpMethod, StreamClosure};
use super::{counter_vec, histogram_vec, int_counter, int_gauge, HTTP_BUCKETS};

/// At most this many route labels keep cached handles (the router's templates and `unmatched`
/// are far fewer); beyond it requests are still counted, through a label lookup.
const MAX_CACHED_ROUTES: usize = 256;
/// At most this many (method, status) pairs are cached per route.
const MAX_CACHED_PER_ROUTE: usize = 64;

/// The handles of one (method, status) of a route.
struct Series {
    method: HttpMethod,
    status: u16,
    requests: IntCounter,
    duration: Histogram,
}

#[derive(Clone)]
pub struct HttpMetrics {
    /// `http_requests_total{method, route, status}`.
    pub requests: IntCounterVec,
    /// `http_request_duration_seconds{method, route, status}`.
    pub duration: HistogramVec,
    /// `http_connections_open`.
    pub connections_open: IntGauge,
    /// `http_connections_refused_total{reason}`.
    pub connections_refused: Family<IntCounterVec, ConnectionRefusal>,
    /// `http_connections_timed_out_total{reason}`.
    pub connections_timed_out: Family<IntCounterVec, ConnectionTimeout>,
    /// The series seen so far, by route label.
    seen: Arc<RwLock<HashMap<Box<str>, Vec<Series>>>>,
}

impl HttpMetrics {
    pub(super) fn register(r: &Registry) -> HttpMetrics {
        HttpMetrics {
            requests: counter_vec(
                r,
                "http_requests_total",
                "HTTP requests answered, by method, route template and status code.",
                &["method", "route", "status"],
            ),
            duration: histogram_vec(
                r,
                "http_request_duration_seconds",
                "HTTP request latency, by method, route template and status code.",
                &["method", "route", "status"],
                HTTP_BUCKETS,
            ),
            connections_open: int_gauge(
                r,
                "http_connections_open",
                "HTTP connections open (WebSocket streams included).",
            ),
            connections_refused: Family::new(
                counter_vec(
                    r,
                    "http_connections_refused_total",
                    "HTTP connections refused when they opened, by reason (global_limit, per_client_limit).",
                    &["reason"],
                ),
                |_| true,
            ),
            connections_timed_out: Family::new(
                counter_vec(
                    r,
                    "http_connections_timed_out_total",
                    "HTTP connections closed for taking too long, by reason (header_read, idle).",
                    &["reason"],
                ),
                |_| true,
            ),
            seen: Arc::default(),
        }
    }

    /// Counts and times one answered request. `route` is the route template, or `unmatched`.
    pub fn record(&self, method: HttpMethod, route: &str, status: u16, seconds: f64) {
        {
            let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
            if let Some(series) = seen.get(route).and_then(|list| {
                list.iter()
                    .find(|s| s.method == method && s.status == status)
            }) {
                series.requests.inc();
                series.duration.observe(seconds);
                return;
            }
        }
        let status_label = status.to_string();
        let labels = [method.as_str(), route, status_label.as_str()];
        let series = Series {
            method,
            status,
            requests: self.requests.with_label_values(&labels),
            duration: self.duration.with_label_values(&labels),
        };
        series.requests.inc();
        series.duration.observe(seconds);
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_CACHED_ROUTES && !seen.contains_key(route) {
            return;
        }
        let list = seen.entry(route.into()).or_default();
        if list.len() < MAX_CACHED_PER_ROUTE
            && !list
                .iter()
                .any(|s| s.method == method && s.status == status)
        {
            list.push(series);
        }
    }
}

#[derive(Clone)]
pub struct StreamMetrics {
    /// `active_streams`: open WebSocket event streams.
    pub active: IntGauge,
    /// `stream_events_sent_total`.
    pub events_sent: IntCounter,
    /// `stream_events_dropped_total`: log events dropped from a scan's bounded history.
    pub events_dropped: IntCounter,
    /// `stream_closures_total{reason}`.
    pub closures: Family<IntCounterVec, StreamClosure>,
}

impl StreamMetrics {
    pub(super) fn register(r: &Registry) -> StreamMetrics {
        StreamMetrics {
            active: int_gauge(r, "active_streams", "Open WebSocket event streams."),
            events_sent: int_counter(
                r,
                "stream_events_sent_total",
                "Events sent to WebSocket subscribers.",
            ),
            events_dropped: int_counter(
                r,
                "stream_events_dropped_total",
                "Log events dropped from a scan's bounded replay history.",
            ),
            closures: Family::new(
                counter_vec(
                    r,
                    "stream_closures_total",
                    "WebSocket streams refused before the upgrade or closed by the server before their scan ended, by reason.",
                    &["reason"],
                ),
                |_| true,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_once_per_record_whether_its_handles_are_cached_or_not() {
        let registry = Registry::new();
        let http = HttpMetrics::register(&registry);
        for _ in 0..3 {
            http.record(HttpMethod::Get, "/health", 200, 0.001);
        }
        http.record(HttpMethod::Post, "/health", 200, 0.001);
        http.record(HttpMethod::Get, "/health", 503, 0.001);
        let get = |m: &str, s: &str| http.requests.with_label_values(&[m, "/health", s]).get();
        assert_eq!(get("GET", "200"), 3);
        assert_eq!(get("POST", "200"), 1);
        assert_eq!(get("GET", "503"), 1);
        let count = http
            .duration
            .with_label_values(&["GET", "/health", "200"])
            .get_sample_count();
        assert_eq!(count, 3);
    }
}
