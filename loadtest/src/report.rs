//! The report of a run: what it measured, its audit and facts, printed to the terminal and
//! saved as JSON (`docs/BENCHMARKS.md` is rendered from the saved reports).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::faults::ErrorSplit;
use crate::stats::Summary;

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

    /// Writes the report as pretty JSON (what `run --json` saves and `markdown` reads).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
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
                let a = &w.answers;
                println!(
                    "       during: {} answers, {} failed, p99 {:.0} ms; after: {} answers, {} \
                     failed, p99 {:.0} ms; recovered after {}",
                    a.during,
                    a.failed_during,
                    a.p99_ms_during,
                    a.after,
                    a.failed_after,
                    a.p99_ms_after,
                    a.recovered_after_seconds
                        .map_or("(still open)".into(), |s| format!("{s:.1} s"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_saved_before_the_fault_split_still_render() {
        let old = serde_json::json!({
            "scenario": "flash-sale",
            "started_at": "2026-11-25T02:06:48Z",
            "measured_seconds": 46.7,
            "settings": {},
            "endpoints": [],
            "latencies": [],
            "memory": [],
            "audit": [],
            "facts": {},
        });
        let report: Report = serde_json::from_value(old).unwrap();
        assert_eq!(report.errors, ErrorSplit::default());
        assert_eq!(report.sale, None);
        let saved = serde_json::to_value(&report).unwrap();
        assert!(saved["errors"]["outside"]["server_errors"].is_u64());
    }
}
