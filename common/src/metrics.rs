//! Prometheus metrics every service exposes on `/metrics`: request count and latency by route
//! and status, plus the outbox backlog. One registry per service instance, so tests that run
//! several services in one process keep separate figures.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    outbox_pending: IntGauge,
    outbox_oldest_age: Gauge,
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        let registry = Registry::new_custom(
            None,
            Some([("service".to_owned(), service.to_owned())].into()),
        )
        .expect("static registry labels are valid");
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let outbox_pending =
            IntGauge::new("outbox_pending", "Outbox rows not yet published").expect("valid metric");
        let outbox_oldest_age = Gauge::new(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(outbox_oldest_age.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            requests,
            latency,
            outbox_pending,
            outbox_oldest_age,
        }
    }

    /// The registry, for a service to add its own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    pub fn set_outbox_backlog(&self, pending: i64, oldest_age_secs: f64) {
        self.outbox_pending.set(pending);
        self.outbox_oldest_age.set(oldest_age_secs);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_by_route_and_status() {
        let m = Metrics::new("test");
        m.observe_request("/api/users", "POST", 201, 0.002);
        m.observe_request("/api/users", "POST", 201, 0.004);
        m.set_outbox_backlog(3, 1.5);
        let text = m.render();
        assert!(
            text.contains(r#"http_requests_total{method="POST",route="/api/users",status="201",service="test"} 2"#),
            "{text}"
        );
        assert!(text.contains("http_request_duration_seconds_bucket"));
        assert!(
            text.contains(r#"outbox_pending{service="test"} 3"#),
            "{text}"
        );
    }
}
