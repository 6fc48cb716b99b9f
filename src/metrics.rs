//! Counters and histograms, rendered in Prometheus' text format for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::transfer::BlobFormat;

/// Upper bounds (seconds) of the request duration histogram buckets.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0,
];

/// A cumulative histogram of durations.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

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

/// The proxy's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    unwraps: Mutex<BTreeMap<(String, &'static str), u64>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    aborted: AtomicU64,
    auth_failures: AtomicU64,
    storage_errors: AtomicU64,
    integrity_failures: [AtomicU64; 2],
    in_flight: AtomicI64,
}

/// The formats integrity failures are counted by, in the order of `Metrics::integrity_failures`.
const FORMATS: [BlobFormat; 2] = [BlobFormat::Stream, BlobFormat::Fernet];

impl Metrics {
    /// A request started.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished (its response body ended or was dropped).
    pub fn request_finished(&self, record: &RequestRecord<'_>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(record.bytes_in, Ordering::Relaxed);
        self.bytes_out
            .fetch_add(record.bytes_out, Ordering::Relaxed);
        if record.aborted {
            self.aborted.fetch_add(1, Ordering::Relaxed);
        }
        *self
            .requests
            .lock()
            .expect("lock")
            .entry((record.route.to_owned(), record.status))
            .or_default() += 1;
        self.durations
            .lock()
            .expect("lock")
            .entry(record.route.to_owned())
            .or_default()
            .observe(record.duration.as_secs_f64());
    }

    /// A wrapped key was opened by the private key with this fingerprint and role.
    pub fn key_unwrapped(&self, fingerprint: &str, role: &'static str) {
        *self
            .unwraps
            .lock()
            .expect("lock")
            .entry((fingerprint.to_owned(), role))
            .or_default() += 1;
    }

    /// Credentials were refused.
    pub fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Storage failed or refused the proxy.
    pub fn storage_failed(&self) {
        self.storage_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A response body was cut off because stored data of `format` failed authentication.
    pub fn integrity_failed(&self, format: BlobFormat) {
        let index = FORMATS.iter().position(|&f| f == format).expect("listed");
        self.integrity_failures[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "blobprox_requests_total",
            "counter",
            "Requests by route template and status.",
        );
        for ((route, status), count) in self.requests.lock().expect("lock").iter() {
            let _ = writeln!(
                out,
                "blobprox_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let name = "blobprox_request_duration_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time from request to the end of the response body.",
        );
        for (route, histogram) in self.durations.lock().expect("lock").iter() {
            for (bound, count) in DURATION_BUCKETS.iter().zip(histogram.buckets) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let count = histogram.count;
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", histogram.sum);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
        }
        let name = "blobprox_integrity_failures_total";
        header(
            &mut out,
            name,
            "counter",
            "Response bodies cut off because stored data failed authentication, by blob format.",
        );
        for (format, count) in FORMATS.iter().zip(&self.integrity_failures) {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{format=\"{}\"}} {count}", format.as_str());
        }
        header(
            &mut out,
            "blobprox_key_unwraps_total",
            "counter",
            "Wrapped keys opened, by private key fingerprint and role (current or retired).",
        );
        for ((fingerprint, role), count) in self.unwraps.lock().expect("lock").iter() {
            let _ = writeln!(
                out,
                "blobprox_key_unwraps_total{{key=\"{fingerprint}\",role=\"{role}\"}} {count}"
            );
        }
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as i64;
        let scalars = [
            (
                "blobprox_received_bytes_total",
                "counter",
                "Request body bytes received.",
                load(&self.bytes_in),
            ),
            (
                "blobprox_sent_bytes_total",
                "counter",
                "Response body bytes sent.",
                load(&self.bytes_out),
            ),
            (
                "blobprox_aborted_responses_total",
                "counter",
                "Response bodies cut off before their end.",
                load(&self.aborted),
            ),
            (
                "blobprox_auth_failures_total",
                "counter",
                "Requests refused for their credentials.",
                load(&self.auth_failures),
            ),
            (
                "blobprox_storage_errors_total",
                "counter",
                "Requests failed by storage.",
                load(&self.storage_errors),
            ),
            (
                "blobprox_requests_in_flight",
                "gauge",
                "Requests whose response has not ended.",
                self.in_flight.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in scalars {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.request_started();
        metrics.request_finished(&RequestRecord {
            route: "/key/public",
            status: 200,
            bytes_in: 0,
            bytes_out: 451,
            duration: Duration::from_millis(20),
            aborted: false,
        });
        metrics.auth_failed();
        metrics.integrity_failed(BlobFormat::Fernet);
        metrics.key_unwrapped("00aa11bb22cc33dd", "retired");
        metrics.key_unwrapped("00aa11bb22cc33dd", "retired");
        let text = metrics.render();
        assert!(
            text.contains(
                "blobprox_key_unwraps_total{key=\"00aa11bb22cc33dd\",role=\"retired\"} 2"
            )
        );
        assert!(text.contains("blobprox_requests_total{route=\"/key/public\",status=\"200\"} 1"));
        assert!(text.contains(
            "blobprox_request_duration_seconds_bucket{route=\"/key/public\",le=\"0.01\"} 0"
        ));
        assert!(text.contains(
            "blobprox_request_duration_seconds_bucket{route=\"/key/public\",le=\"0.025\"} 1"
        ));
        assert!(text.contains("blobprox_sent_bytes_total 451"));
        assert!(text.contains("blobprox_auth_failures_total 1"));
        assert!(text.contains("blobprox_requests_in_flight 0"));
        assert!(text.contains("blobprox_integrity_failures_total{format=\"fernet\"} 1"));
        assert!(text.contains("blobprox_integrity_failures_total{format=\"stream\"} 0"));
    }
}
