//! Prometheus metrics every service exposes on `/metrics`: request count and latency by route
//! and status, the outbox backlog, the broker's reachability, and per consumer group its
//! assigned partitions, lag and handled / failed / dead-lettered events. One registry per
//! service instance, so tests that run several services in one process keep separate figures.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `kafka_broker_up` | | 1 while a metadata round trip to the broker succeeds (checked every 5 s) |
//! | `kafka_consumer_assigned_partitions` | `group` | partitions this process holds; 0 on every replica of a group = nobody consumes |
//! | `kafka_consumer_lag` | `group` | messages behind the end of its assigned partitions |
//! | `kafka_consumer_handled_total` | `group` | events handled (effect committed or found a duplicate) |
//! | `kafka_consumer_failed_attempts_total` | `group` | handler attempts that failed and were retried |
//! | `kafka_consumer_dead_lettered_total` | `group` | events parked in `<topic>.dlq` |
//! | `kafka_consumer_restarts_total` | `group` | times this process replaced its member because the group stayed unsettled for six session timeouts while a broker was up |

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::kafka::ConsumerStats;

/// The method as a metric label: the standard ones by name, anything a client invents as one
/// `OTHER` — a label taken from the request would let anyone add series without bound.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
}

/// Per consumer group, in the order [`Metrics::refresh_consumers`] reads them.
const CONSUMER_FIGURES: [(&str, &str); 6] = [
    (
        "kafka_consumer_assigned_partitions",
        "Partitions assigned to this process's member of the group",
    ),
    (
        "kafka_consumer_lag",
        "Messages behind the end of the assigned partitions",
    ),
    ("kafka_consumer_handled_total", "Events handled"),
    (
        "kafka_consumer_failed_attempts_total",
        "Handler attempts that failed and were retried",
    ),
    (
        "kafka_consumer_dead_lettered_total",
        "Events parked in the dead-letter topic",
    ),
    (
        "kafka_consumer_restarts_total",
        "Members replaced because the group stayed unsettled",
    ),
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    outbox_pending: IntGauge,
    outbox_oldest_age: Gauge,
    broker_up: IntGauge,
    consumer_gauges: Vec<IntGaugeVec>,
    consumers: Mutex<Vec<(String, Arc<ConsumerStats>)>>,
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
        let broker_up = IntGauge::new(
            "kafka_broker_up",
            "1 while the broker answers a metadata request",
        )
        .expect("valid metric");
        // The consumer's own atomics, copied into these at scrape time.
        let consumer_gauges: Vec<IntGaugeVec> = CONSUMER_FIGURES
            .iter()
            .map(|(name, help)| {
                IntGaugeVec::new(Opts::new(*name, *help), &["group"]).expect("valid metric")
            })
            .collect();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(outbox_oldest_age.clone()),
            Box::new(broker_up.clone()),
        ]
        .into_iter()
        .chain(
            consumer_gauges
                .iter()
                .map(|g| Box::new(g.clone()) as Box<dyn prometheus::core::Collector>),
        ) {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            requests,
            latency,
            outbox_pending,
            outbox_oldest_age,
            broker_up,
            consumer_gauges,
            consumers: Mutex::new(Vec::new()),
        }
    }

    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.set(i64::from(up));
    }

    pub fn broker_up(&self) -> bool {
        self.broker_up.get() == 1
    }

    /// Exports `stats` of the consumer group `group` from now on.
    pub fn track_consumer(&self, group: &str, stats: Arc<ConsumerStats>) {
        if let Ok(mut c) = self.consumers.lock() {
            c.push((group.to_owned(), stats));
        }
    }

    fn refresh_consumers(&self) {
        let Ok(consumers) = self.consumers.lock() else {
            return;
        };
        for (group, s) in consumers.iter() {
            let values = [
                s.assigned_partitions.load(Ordering::Relaxed),
                s.lag.load(Ordering::Relaxed),
                s.handled.load(Ordering::Relaxed) as i64,
                s.failed_attempts.load(Ordering::Relaxed) as i64,
                s.dead_lettered.load(Ordering::Relaxed) as i64,
                s.restarts.load(Ordering::Relaxed) as i64,
            ];
            for (gauge, value) in self.consumer_gauges.iter().zip(values) {
                gauge.with_label_values(&[group.as_str()]).set(value);
            }
        }
    }

    /// The registry, for a service to add its own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [route, method_label(method), status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    pub fn set_outbox_backlog(&self, pending: i64, oldest_age_secs: f64) {
        self.outbox_pending.set(pending);
        self.outbox_oldest_age.set(oldest_age_secs);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.refresh_consumers();
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

    #[test]
    fn invented_methods_share_one_label() {
        let m = Metrics::new("test");
        for method in ["FOO", "BAR", "X-ANYTHING", "get"] {
            m.observe_request("/api/users", method, 405, 0.001);
        }
        let text = m.render();
        assert!(
            text.contains(r#"http_requests_total{method="OTHER",route="/api/users",status="405",service="test"} 4"#),
            "{text}"
        );
        assert!(!text.contains("FOO"), "{text}");
    }
}
