//! What a run measured: per endpoint a latency histogram and counts by status and error code;
//! other latencies (payment → CONFIRMED); and the report that is printed and saved as JSON.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::faults::{ErrorCounts, ErrorEvent, ErrorSplit, Window};
use crate::http::Reply;

/// Error answers kept with their times for the fault-window split; past this many (a run
/// against a dead gateway) they are only counted, and counted as outside every window.
const MAX_ERROR_EVENTS: usize = 1_000_000;

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
        drop(all);
        if crate::faults::kind(reply.status).is_some() {
            let mut errors = self.errors.lock().expect("recorder lock");
            if errors.events.len() < MAX_ERROR_EVENTS {
                errors.events.push(ErrorEvent {
                    endpoint: name.to_owned(),
                    status: reply.status,
                    sent_unix_ms: reply.sent_unix_ms,
                    answered_unix_ms: reply.sent_unix_ms + reply.elapsed.as_millis() as u64,
                });
            } else {
                errors.overflow.add(name, reply.status);
            }
        }
    }

    /// The run's error answers split by fault windows (`margin`: how long after its end a
    /// window still claims errors).
    pub fn error_split(&self, windows: &[Window], margin: Duration) -> ErrorSplit {
        let errors = self.errors.lock().expect("recorder lock");
        let mut split = crate::faults::split(&errors.events, windows, margin);
        split.outside.merge(&errors.overflow);
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
    /// Error answers (5xx, failed connections, other unexpected answers), inside and outside
    /// the fault windows of `--fault-log`. Reports saved before it existed read as empty.
    #[serde(default)]
    pub errors: ErrorSplit,
    /// flash-sale: the fans' and the settlement's numbers.
    #[serde(default)]
    pub sale: Option<SaleNumbers>,
}

/// The flash sale's numbers, as numbers (the facts say the same in words).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SaleNumbers {
    pub seats: u64,
    /// Fans who saw their reservation CONFIRMED.
    pub bought: u64,
    /// How long a fan waits for CONFIRMED after its payment's 201 (`--confirm-timeout-secs`).
    pub confirm_timeout_seconds: f64,
    /// Fans who paid and stopped waiting for CONFIRMED after that bound.
    pub gave_up_confirm: u64,
    /// Fans who paid and saw the reservation end otherwise (REJECTED, EXPIRED: refunded).
    pub rejected_after_payment: u64,
    /// Fans whose payment was refused (a 4xx, e.g. the hold expired meanwhile).
    pub payment_refused: u64,
    /// Fans still in line when the sale ended.
    pub left_waiting: u64,
    /// Fans admitted who ended without a hold.
    pub left_without_seat: u64,
    /// Requests a fan sent again after a 5xx or no answer (with a backoff).
    pub fault_retries: u64,
    /// `PAYMENT_SETTLE_DIRECT_AFTER_SECS` as read by the tool (the services' default: 120).
    pub settle_direct_after_seconds: f64,
    /// The settlement check waits at most this long for stragglers before judging.
    pub settle_limit_seconds: f64,
    /// How long it waited (0 when everything had settled already).
    pub settle_waited_seconds: f64,
    /// COMPLETED payments neither CONFIRMED nor refunded when it stopped waiting.
    pub unsettled_after_wait: u64,
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
        let e = &self.errors;
        if let Some(log) = &e.fault_log {
            println!(
                "   fault windows ({log}, each stretched {:.0} s past its end): {}",
                e.margin_seconds,
                e.windows.len()
            );
            for w in &e.windows {
                let length = w.end_unix_ms.map_or("still open".into(), |end| {
                    format!(
                        "{:.1} s",
                        end.saturating_sub(w.start_unix_ms) as f64 / 1000.0
                    )
                });
                println!(
                    "     {} ({length}): {}",
                    if w.label.is_empty() {
                        "(no label)"
                    } else {
                        &w.label
                    },
                    w.errors.describe()
                );
            }
            println!("   errors inside fault windows: {}", e.inside.describe());
            println!("   errors outside fault windows: {}", e.outside.describe());
        } else {
            println!("   errors: {}", e.outside.describe());
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
