//! Counters and histograms, rendered in Prometheus' text format for `GET /metrics`.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::transfer::BlobFormat;

/// The `Content-Type` of [`Metrics::render`]: Prometheus' text format 0.0.4, which every
/// scraper reads (OpenMetrics would move counters' `# TYPE` names off their `_total` samples).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the request duration histogram buckets.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0,
];

/// What one finished request contributes.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    /// The route template, such as `/download/{container}/{*blob}` (never the blob name).
    pub route: &'a str,
    /// Response status.
    pub status: u16,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// From the request's arrival to the end (or abort) of its response body.
    pub duration: Duration,
    /// Whether the response body was cut off (client gone, or a failure mid-stream).
    pub aborted: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabels {
    format: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: String,
    role: &'static str,
}

/// The proxy's metrics: handles to the series of one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    unwraps: Family<KeyLabels, Counter>,
    integrity_failures: Family<FormatLabels, Counter>,
    bytes_in: Counter,
    bytes_out: Counter,
    aborted: Counter,
    auth_failures: Counter,
    storage_errors: Counter,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Registry::default(),
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            unwraps: Family::default(),
            integrity_failures: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            aborted: Counter::default(),
            auth_failures: Counter::default(),
            storage_errors: Counter::default(),
            in_flight: Gauge::default(),
        };
        // Both formats are served from the first scrape on, so a rate over them starts at 0.
        for format in [BlobFormat::Stream, BlobFormat::Fernet] {
            metrics
                .integrity_failures
                .get_or_create_owned(&format_labels(format));
        }
        metrics.registered()
    }
}

impl Metrics {
    /// Registers every handle; the crate adds `_total` to counters and a full stop to help.
    fn registered(mut self) -> Self {
        let registry = &mut self.registry;
        registry.register(
            "blobprox_requests",
            "Requests by route template and status",
            self.requests.clone(),
        );
        registry.register(
            "blobprox_request_duration_seconds",
            "Time from request to the end of the response body",
            self.durations.clone(),
        );
        registry.register(
            "blobprox_integrity_failures",
            "Response bodies cut off because stored data failed authentication, by blob format",
            self.integrity_failures.clone(),
        );
        registry.register(
            "blobprox_key_unwraps",
            "Wrapped keys opened, by private key fingerprint and role (current or retired)",
            self.unwraps.clone(),
        );
        for (name, help, counter) in [
            (
                "blobprox_received_bytes",
                "Request body bytes received",
                &self.bytes_in,
            ),
            (
                "blobprox_sent_bytes",
                "Response body bytes sent",
                &self.bytes_out,
            ),
            (
                "blobprox_aborted_responses",
                "Response bodies cut off before their end",
                &self.aborted,
            ),
            (
                "blobprox_auth_failures",
                "Requests refused for their credentials",
                &self.auth_failures,
            ),
            (
                "blobprox_storage_errors",
                "Requests failed by storage",
                &self.storage_errors,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "blobprox_requests_in_flight",
            "Requests whose response has not ended",
            self.in_flight.clone(),
        );
        self
    }

    /// A request started.
    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// A request finished (its response body ended or was dropped).
    pub fn request_finished(&self, record: &RequestRecord<'_>) {
        self.in_flight.dec();
        self.bytes_in.inc_by(record.bytes_in);
        self.bytes_out.inc_by(record.bytes_out);
        if record.aborted {
            self.aborted.inc();
        }
        let route = record.route.to_owned();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                status: record.status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels { route })
            .observe(record.duration.as_secs_f64());
    }

    /// A wrapped key was opened by the private key with this fingerprint and role.
    pub fn key_unwrapped(&self, fingerprint: &str, role: &'static str) {
        let labels = KeyLabels {
            key: fingerprint.to_owned(),
            role,
        };
        self.unwraps.get_or_create(&labels).inc();
    }

    /// Credentials were refused.
    pub fn auth_failed(&self) {
        self.auth_failures.inc();
    }

    /// Storage failed or refused the proxy.
    pub fn storage_failed(&self) {
        self.storage_errors.inc();
    }

    /// A response body was cut off because stored data of `format` failed authentication.
    pub fn integrity_failed(&self, format: BlobFormat) {
        self.integrity_failures
            .get_or_create(&format_labels(format))
            .inc();
    }

    /// The Prometheus text exposition (format 0.0.4, see [`CONTENT_TYPE`]) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

fn format_labels(format: BlobFormat) -> FormatLabels {
    FormatLabels {
        format: format.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/metrics` as the hand-written renderer served it before the crate took over, for the
    /// records of [`renders_the_names_labels_and_values_served_before`]; series order is free.
    const SERVED_BEFORE: &str = r#"# HELP blobprox_requests_total Requests by route template and status.
# TYPE blobprox_requests_total counter
blobprox_requests_total{route="/key/public",status="200"} 1
# HELP blobprox_request_duration_seconds Time from request to the end of the response body.
# TYPE blobprox_request_duration_seconds histogram
blobprox_request_duration_seconds_bucket{route="/key/public",le="0.001"} 0
blobprox_request_duration_seconds_bucket{route="/key/public",le="0.005"} 0
blobprox_request_duration_seconds_bucket{route="/key/public",le="0.01"} 0
blobprox_request_duration_seconds_bucket{route="/key/public",le="0.025"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="0.05"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="0.1"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="0.25"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="0.5"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="1"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="2.5"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="10"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="30"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="120"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="600"} 1
blobprox_request_duration_seconds_bucket{route="/key/public",le="+Inf"} 1
blobprox_request_duration_seconds_sum{route="/key/public"} 0.02
blobprox_request_duration_seconds_count{route="/key/public"} 1
# HELP blobprox_integrity_failures_total Response bodies cut off because stored data failed authentication, by blob format.
# TYPE blobprox_integrity_failures_total counter
blobprox_integrity_failures_total{format="stream"} 0
blobprox_integrity_failures_total{format="fernet"} 1
# HELP blobprox_key_unwraps_total Wrapped keys opened, by private key fingerprint and role (current or retired).
# TYPE blobprox_key_unwraps_total counter
blobprox_key_unwraps_total{key="00aa11bb22cc33dd",role="retired"} 1
# HELP blobprox_received_bytes_total Request body bytes received.
# TYPE blobprox_received_bytes_total counter
blobprox_received_bytes_total 3
# HELP blobprox_sent_bytes_total Response body bytes sent.
# TYPE blobprox_sent_bytes_total counter
blobprox_sent_bytes_total 451
# HELP blobprox_aborted_responses_total Response bodies cut off before their end.
# TYPE blobprox_aborted_responses_total counter
blobprox_aborted_responses_total 1
# HELP blobprox_auth_failures_total Requests refused for their credentials.
# TYPE blobprox_auth_failures_total counter
blobprox_auth_failures_total 1
# HELP blobprox_storage_errors_total Requests failed by storage.
# TYPE blobprox_storage_errors_total counter
blobprox_storage_errors_total 1
# HELP blobprox_requests_in_flight Requests whose response has not ended.
# TYPE blobprox_requests_in_flight gauge
blobprox_requests_in_flight 0
"#;

    #[test]
    fn renders_the_names_labels_and_values_served_before() {
        let metrics = Metrics::default();
        metrics.request_started();
        metrics.request_finished(&RequestRecord {
            route: "/key/public",
            status: 200,
            bytes_in: 3,
            bytes_out: 451,
            duration: Duration::from_millis(20),
            aborted: true,
        });
        metrics.auth_failed();
        metrics.storage_failed();
        metrics.integrity_failed(BlobFormat::Fernet);
        metrics.key_unwrapped("00aa11bb22cc33dd", "retired");
        let sorted = |text: &str| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&metrics.render()), sorted(SERVED_BEFORE));
    }

    #[test]
    fn counts_add_up_and_in_flight_comes_back_down() {
        let metrics = Metrics::default();
        for status in [200, 200, 404] {
            metrics.request_started();
            metrics.request_finished(&RequestRecord {
                route: "/key/public",
                status,
                bytes_in: 0,
                bytes_out: 10,
                duration: Duration::from_secs(3),
                aborted: false,
            });
        }
        metrics.request_started();
        metrics.key_unwrapped("00aa11bb22cc33dd", "current");
        metrics.key_unwrapped("00aa11bb22cc33dd", "current");
        let text = metrics.render();
        for expected in [
            "blobprox_requests_total{route=\"/key/public\",status=\"200\"} 2",
            "blobprox_requests_total{route=\"/key/public\",status=\"404\"} 1",
            "blobprox_request_duration_seconds_bucket{route=\"/key/public\",le=\"2.5\"} 0",
            "blobprox_request_duration_seconds_bucket{route=\"/key/public\",le=\"10\"} 3",
            "blobprox_request_duration_seconds_sum{route=\"/key/public\"} 9.0",
            "blobprox_key_unwraps_total{key=\"00aa11bb22cc33dd\",role=\"current\"} 2",
            "blobprox_sent_bytes_total 30",
            "blobprox_aborted_responses_total 0",
            "blobprox_integrity_failures_total{format=\"stream\"} 0",
            "blobprox_requests_in_flight 1",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "{expected} in\n{text}"
            );
        }
    }
}
