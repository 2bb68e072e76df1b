//! What a run measured: per endpoint a latency histogram and counts by status and error code;
//! other latencies (payment → CONFIRMED); and their summaries for the report.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::faults::{Answered, ErrorCounts, ErrorEvent, ErrorSplit, Window};
use crate::http::Reply;

/// Error answers kept with their times for the fault-window split; past this many (a run
/// against a dead gateway) they are only counted, and counted as outside every window.
const MAX_ERROR_EVENTS: usize = 1_000_000;

/// Answers kept on the timeline (for the fault windows' latencies); later ones are not.
const MAX_TIMELINE: usize = 10_000_000;

struct Series {
    hist: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    codes: BTreeMap<String, u64>,
}

impl Series {
    fn new() -> Self {
        Self {
            // Microseconds, 1 µs .. 120 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
            codes: BTreeMap::new(),
        }
    }
}

#[derive(Default)]
struct Errors {
    events: Vec<ErrorEvent>,
    /// Errors beyond `MAX_ERROR_EVENTS`.
    overflow: ErrorCounts,
}

/// Collects samples from every task of a run.
#[derive(Default)]
pub struct Recorder {
    series: Mutex<BTreeMap<String, Series>>,
    errors: Mutex<Errors>,
    timeline: Mutex<Vec<Answered>>,
}

impl Recorder {
    /// One answer of endpoint `name`.
    pub fn record(&self, name: &str, reply: &Reply) {
        let code = reply.code();
        let kind = crate::faults::kind_of(reply.status, code.as_deref());
        let mut all = self.series.lock().expect("recorder lock");
        let s = all.entry(name.to_owned()).or_insert_with(Series::new);
        s.hist
            .saturating_record(reply.elapsed.as_micros().max(1) as u64);
        *s.statuses.entry(reply.status).or_default() += 1;
        if let Some(code) = code {
            *s.codes.entry(code).or_default() += 1;
        }
        drop(all);
        let mut timeline = self.timeline.lock().expect("recorder lock");
        if timeline.len() < MAX_TIMELINE {
            timeline.push(Answered {
                sent_unix_ms: reply.sent_unix_ms,
                elapsed_us: reply.elapsed.as_micros() as u64,
                kind,
            });
        }
        drop(timeline);
        if let Some(kind) = kind {
            let mut errors = self.errors.lock().expect("recorder lock");
            if errors.events.len() < MAX_ERROR_EVENTS {
                errors.events.push(ErrorEvent {
                    endpoint: name.to_owned(),
                    status: reply.status,
                    kind,
                    sent_unix_ms: reply.sent_unix_ms,
                    answered_unix_ms: reply.sent_unix_ms + reply.elapsed.as_millis() as u64,
                });
            } else {
                errors.overflow.add(name, reply.status, Some(kind));
            }
        }
    }

    /// The run's error answers split by fault windows (`margin`: how long after its end a
    /// window still claims errors).
    pub fn error_split(&self, windows: &[Window], margin: Duration) -> ErrorSplit {
        let errors = self.errors.lock().expect("recorder lock");
        let mut split = crate::faults::split(&errors.events, windows, margin);
        split.outside.merge(&errors.overflow);
        drop(errors);
        let timeline = self.timeline.lock().expect("recorder lock");
        let answers = crate::faults::answers(&timeline, windows, margin);
        for (w, a) in split.windows.iter_mut().zip(answers) {
            w.answers = a;
        }
        split
    }

    /// A latency that is not one request (e.g. payment → CONFIRMED).
    pub fn record_latency(&self, name: &str, d: Duration) {
        let mut all = self.series.lock().expect("recorder lock");
        let s = all.entry(name.to_owned()).or_insert_with(Series::new);
        s.hist.saturating_record(d.as_micros().max(1) as u64);
    }

    pub fn count(&self, name: &str, status: u16) -> u64 {
        let all = self.series.lock().expect("recorder lock");
        all.get(name)
            .and_then(|s| s.statuses.get(&status).copied())
            .unwrap_or(0)
    }

    /// Every series, rates over `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Vec<Summary> {
        let all = self.series.lock().expect("recorder lock");
        all.iter()
            .map(|(name, s)| {
                let ms = |q: f64| s.hist.value_at_quantile(q) as f64 / 1000.0;
                let requests = s.hist.len();
                Summary {
                    name: name.clone(),
                    requests,
                    per_second: requests as f64 / elapsed.as_secs_f64().max(1e-9),
                    p50_ms: ms(0.50),
                    p95_ms: ms(0.95),
                    p99_ms: ms(0.99),
                    max_ms: s.hist.max() as f64 / 1000.0,
                    statuses: s
                        .statuses
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect(),
                    codes: s.codes.clone(),
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub requests: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers by HTTP status ("0": the connection failed or timed out); empty for latencies.
    pub statuses: BTreeMap<String, u64>,
    /// Error answers by problem `code`.
    pub codes: BTreeMap<String, u64>,
}
