//! What a run measured: per endpoint a latency histogram and counts by status and error code;
//! other latencies (payment → CONFIRMED); and the report that is printed and saved as JSON.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::http::Reply;

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

/// Collects samples from every task of a run.
#[derive(Default)]
pub struct Recorder {
    series: Mutex<BTreeMap<String, Series>>,
}

impl Recorder {
    /// One answer of endpoint `name`.
    pub fn record(&self, name: &str, reply: &Reply) {
        let code = reply.code();
        let mut all = self.series.lock().expect("recorder lock");
        let s = all.entry(name.to_owned()).or_insert_with(Series::new);
        s.hist
            .saturating_record(reply.elapsed.as_micros().max(1) as u64);
        *s.statuses.entry(reply.status).or_default() += 1;
        if let Some(code) = code {
            *s.codes.entry(code).or_default() += 1;
        }
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

impl Summary {
    /// 5xx answers and failed connections: the platform's own failures.
    pub fn failures(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| s.starts_with('5') || s.as_str() == "0")
            .map(|(_, n)| n)
            .sum()
    }
}

/// One invariant of the audit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Peak and current resident memory of one process, from /proc.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Memory {
    pub process: String,
    pub pid: u32,
    pub peak_rss_mib: f64,
    pub rss_mib: f64,
}

/// A whole run, printed and saved as JSON; `docs/BENCHMARKS.md` is rendered from these.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub started_at: String,
    pub measured_seconds: f64,
    /// The flags and the platform settings the run used.
    pub settings: BTreeMap<String, String>,
    pub endpoints: Vec<Summary>,
    pub latencies: Vec<Summary>,
    pub memory: Vec<Memory>,
    pub audit: Vec<Check>,
    /// Facts of the run worth a line (sold seats, winners, ...).
    pub facts: BTreeMap<String, String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.audit.iter().all(|c| c.ok)
    }

    pub fn print(&self) {
        println!(
            "== {} ({:.1} s measured, started {})",
            self.scenario, self.measured_seconds, self.started_at
        );
        for (k, v) in &self.settings {
            println!("   {k} = {v}");
        }
        println!(
            "{:<34} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9}  answers",
            "endpoint", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for s in &self.endpoints {
            let mut answers: Vec<String> =
                s.statuses.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            answers.extend(s.codes.iter().map(|(k, v)| format!("{k}×{v}")));
            println!(
                "{:<34} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9.2}  {}",
                s.name,
                s.requests,
                s.per_second,
                s.p50_ms,
                s.p95_ms,
                s.p99_ms,
                s.max_ms,
                answers.join(" ")
            );
        }
        for s in &self.latencies {
            println!(
                "{:<34} {:>9} {:>10} {:>8.2} {:>8.2} {:>8.2} {:>9.2}",
                s.name, s.requests, "", s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms
            );
        }
        for m in &self.memory {
            println!(
                "   memory {:<12} pid {:<8} peak RSS {:>7.1} MiB (now {:.1} MiB)",
                m.process, m.pid, m.peak_rss_mib, m.rss_mib
            );
        }
        for (k, v) in &self.facts {
            println!("   {k}: {v}");
        }
        for c in &self.audit {
            println!(
                "   [{}] {}: {}",
                if c.ok { "ok" } else { "FAILED" },
                c.name,
                c.detail
            );
        }
    }
}
