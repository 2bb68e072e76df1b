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
    /// The run's headline figures as plain numbers (what docs/BENCHMARKS.md's targets read).
    /// Reports saved before they existed read as `None` ([`Figures::of`] then reads them
    /// from the report's rows).
    #[serde(default)]
    pub figures: Option<Figures>,
}

/// A run's headline figures, as numbers: the endpoint scenarios fill the first three, the
/// flash sale the rest (`payment → CONFIRMED` wherever the run measured it). Every field is
/// written, `null` when it does not apply or was not measured; a field missing from the JSON
/// reads as `None` (bench/purchase_cost.py adds `cpu_ms_per_purchase` to a saved report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Figures {
    /// Endpoint scenarios: the scenario's main endpoint ([`main_endpoint`]).
    pub endpoint: Option<String>,
    pub requests_per_second: Option<f64>,
    pub p99_ms: Option<f64>,
    /// flash-sale: the crowd and the seats on sale.
    pub fans: Option<u64>,
    pub seats: Option<u64>,
    /// flash-sale: from the opening until every seat was SOLD in the database, both read on
    /// the database's clock (the last confirmation's time; when either cannot be read, until
    /// the watcher saw it). `None`: the sale did not sell out before `--max-duration`.
    pub sell_out_seconds: Option<f64>,
    /// flash-sale: seats bought (CONFIRMED seen by the buyer) / `sell_out_seconds`.
    pub purchases_per_second: Option<f64>,
    /// flash-sale: passes the waiting room admitted after the last seat sold.
    pub fans_admitted_after_sell_out: Option<u64>,
    /// flash-sale: the endpoint with the highest p99 (the fans' endpoints: not the
    /// organiser's screen, not the payment → CONFIRMED latencies) and that p99.
    pub worst_endpoint: Option<String>,
    pub worst_endpoint_p99_ms: Option<f64>,
    /// payment → CONFIRMED p99, from the database clock's row when the run has one, else the
    /// client's; `payment_to_confirmed_row` names the row.
    pub payment_to_confirmed_p99_ms: Option<f64>,
    pub payment_to_confirmed_row: Option<String>,
    /// flash-sale: the platform's CPU per purchase over the sale's window, written into the
    /// report by bench/purchase_cost.py (`None`: the sale ran without it).
    pub cpu_ms_per_purchase: Option<CpuPerPurchase>,
    /// flash-sale: when bench/run.sh measured several sales one after another, each one's
    /// figures in the order they ran; this report is the one marked `shown` (the median
    /// sell-out), written by bench/purchase_cost.py (`pick`).
    pub sales: Option<Vec<SaleFigures>>,
}

/// One of several measured sales (see [`Figures::sales`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SaleFigures {
    pub sell_out_seconds: Option<f64>,
    /// The platform's total.
    pub cpu_ms_per_purchase: Option<f64>,
    pub worst_endpoint_p99_ms: Option<f64>,
    pub payment_to_confirmed_p99_ms: Option<f64>,
    /// The sale whose report this is.
    pub shown: bool,
}

/// CPU milliseconds (user + system) per purchase: the platform's total and each of its
/// processes (bench/purchase_cost.py's rows: a service, the gateway, the broker, Redis,
/// PostgreSQL's backends per client service, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuPerPurchase {
    pub total: f64,
    #[serde(default)]
    pub per_process: BTreeMap<String, f64>,
}

/// The flash sale's scenario name (its figures differ from the endpoint scenarios').
pub const FLASH_SALE: &str = "flash-sale";

/// The main endpoint of a scenario: the one with the most requests.
pub fn main_endpoint(endpoints: &[Summary]) -> Option<&Summary> {
    endpoints.iter().max_by_key(|e| e.requests)
}

/// A row of the endpoints a fan calls: not the organiser's screen, not a payment →
/// CONFIRMED latency.
fn fan_endpoint(s: &Summary) -> bool {
    !s.name.starts_with("organiser:") && !s.name.starts_with("payment → CONFIRMED")
}

/// The payment → CONFIRMED row: the database clock's when present, else the client's.
fn payment_to_confirmed(latencies: &[Summary]) -> Option<&Summary> {
    let rows = || {
        latencies
            .iter()
            .filter(|l| l.name.starts_with("payment → CONFIRMED"))
    };
    rows()
        .find(|l| l.name.contains("database clock"))
        .or_else(|| rows().next())
}

impl Figures {
    /// The scenario's own figures (`self`: the flash sale's counts and times) completed with
    /// those its rows give: the main endpoint's rate and p99 (endpoint scenarios), the worst
    /// endpoint (flash-sale), payment → CONFIRMED (any run that measured it).
    pub fn complete(
        mut self,
        scenario: &str,
        endpoints: &[Summary],
        latencies: &[Summary],
    ) -> Self {
        if scenario == FLASH_SALE {
            if let Some(w) = endpoints
                .iter()
                .filter(|e| fan_endpoint(e))
                .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))
            {
                self.worst_endpoint = Some(w.name.clone());
                self.worst_endpoint_p99_ms = Some(w.p99_ms);
            }
        } else if let Some(e) = main_endpoint(endpoints) {
            self.endpoint = Some(e.name.clone());
            self.requests_per_second = Some(e.per_second);
            self.p99_ms = Some(e.p99_ms);
        }
        if let Some(l) = payment_to_confirmed(latencies) {
            self.payment_to_confirmed_p99_ms = Some(l.p99_ms);
            self.payment_to_confirmed_row = Some(l.name.clone());
        }
        self
    }

    /// A report's figures: those it was saved with, each one missing (a report saved before
    /// they existed, or whose `figures` another tool wrote in part) read from what its rows,
    /// numbers and facts say.
    pub fn of(r: &Report) -> Figures {
        let read = Self::read(r);
        let Some(saved) = r.figures.clone() else {
            return read;
        };
        macro_rules! saved_or_read {
            ($($field:ident),* $(,)?) => {
                Figures { $($field: saved.$field.or(read.$field),)* }
            };
        }
        saved_or_read!(
            endpoint,
            requests_per_second,
            p99_ms,
            fans,
            seats,
            sell_out_seconds,
            purchases_per_second,
            fans_admitted_after_sell_out,
            worst_endpoint,
            worst_endpoint_p99_ms,
            payment_to_confirmed_p99_ms,
            payment_to_confirmed_row,
            cpu_ms_per_purchase,
            sales,
        )
    }

    /// What a report's rows, numbers and facts say (no CPU per purchase: only
    /// bench/purchase_cost.py measures it).
    fn read(r: &Report) -> Figures {
        let mut f = Figures::default();
        if r.scenario == FLASH_SALE {
            let fact = |name: &str| r.facts.get(name).map(String::as_str);
            // "49.8 s", or "not sold out".
            f.sell_out_seconds = fact("sell-out time (every seat SOLD in the database)")
                .and_then(|v| v.strip_suffix(" s"))
                .and_then(|v| v.parse().ok());
            f.fans = r.settings.get("users").and_then(|v| v.parse().ok());
            f.seats = r
                .sale
                .as_ref()
                .map(|s| s.seats)
                .or_else(|| fact("seats").and_then(|v| v.parse().ok()));
            let bought = r.sale.as_ref().map(|s| s.bought).or_else(|| {
                fact("seats bought (CONFIRMED seen by the buyer)").and_then(|v| v.parse().ok())
            });
            f.purchases_per_second = purchases_per_second(bought, f.sell_out_seconds);
            f.fans_admitted_after_sell_out =
                fact("fans admitted after the last seat sold").and_then(|v| v.parse().ok());
        }
        f.complete(&r.scenario, &r.endpoints, &r.latencies)
    }
}

/// Seats bought a second of the sale, when it sold out.
pub fn purchases_per_second(bought: Option<u64>, sell_out_seconds: Option<f64>) -> Option<f64> {
    match (bought, sell_out_seconds) {
        (Some(n), Some(s)) if s > 0.0 => Some(n as f64 / s),
        _ => None,
    }
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
        assert_eq!(report.figures, None);
        let saved = serde_json::to_value(&report).unwrap();
        assert!(saved["errors"]["outside"]["server_errors"].is_u64());
    }

    fn row(name: &str, requests: u64, per_second: f64, p99_ms: f64, status: bool) -> Summary {
        Summary {
            name: name.into(),
            requests,
            per_second,
            p50_ms: p99_ms / 2.0,
            p95_ms: p99_ms * 0.9,
            p99_ms,
            max_ms: p99_ms * 2.0,
            statuses: if status {
                BTreeMap::from([("200".to_owned(), requests)])
            } else {
                BTreeMap::new()
            },
            codes: BTreeMap::new(),
        }
    }

    fn sale_rows() -> (Vec<Summary>, Vec<Summary>) {
        let endpoints = vec![
            row(
                "GET /api/queue/tokens/{token}",
                70_000,
                1_300.0,
                880.0,
                true,
            ),
            row("POST /api/reservations", 5_200, 95.0, 690.0, true),
            // The organiser's screen is not a fan's endpoint, however slow.
            row("organiser: sale view", 50, 1.0, 2_000.0, true),
        ];
        let latencies = vec![
            row(
                "payment → CONFIRMED (client, 250 ms polls)",
                5_000,
                0.0,
                1_187.0,
                false,
            ),
            row(
                "payment → CONFIRMED (database clock)",
                5_000,
                0.0,
                626.0,
                false,
            ),
        ];
        (endpoints, latencies)
    }

    #[test]
    fn the_flash_sales_figures_read_the_fans_endpoints_and_the_database_clock() {
        let (endpoints, latencies) = sale_rows();
        let own = Figures {
            fans: Some(10_000),
            seats: Some(5_000),
            sell_out_seconds: Some(50.0),
            purchases_per_second: purchases_per_second(Some(5_000), Some(50.0)),
            fans_admitted_after_sell_out: Some(0),
            ..Figures::default()
        };
        let f = own.clone().complete(FLASH_SALE, &endpoints, &latencies);
        assert_eq!(f.purchases_per_second, Some(100.0));
        assert_eq!(
            f.worst_endpoint.as_deref(),
            Some("GET /api/queue/tokens/{token}")
        );
        assert_eq!(f.worst_endpoint_p99_ms, Some(880.0));
        assert_eq!(f.payment_to_confirmed_p99_ms, Some(626.0));
        assert_eq!(
            f.payment_to_confirmed_row.as_deref(),
            Some("payment → CONFIRMED (database clock)")
        );
        assert_eq!(
            (f.endpoint, f.requests_per_second, f.p99_ms),
            (None, None, None)
        );
        assert_eq!(f.cpu_ms_per_purchase, None);
        // Without the database clock's row, the client's.
        let f = own.complete(FLASH_SALE, &endpoints, &latencies[..1]);
        assert_eq!(f.payment_to_confirmed_p99_ms, Some(1_187.0));
    }

    #[test]
    fn an_endpoint_scenarios_figures_are_its_main_endpoints() {
        let endpoints = vec![
            row("POST /api/reservations", 8_935, 889.0, 120.4, true),
            row("GET /api/schedules/{id}/seats", 10, 1.0, 500.0, true),
        ];
        let f = Figures::default().complete("hold-distinct", &endpoints, &[]);
        assert_eq!(f.endpoint.as_deref(), Some("POST /api/reservations"));
        assert_eq!(f.requests_per_second, Some(889.0));
        assert_eq!(f.p99_ms, Some(120.4));
        assert_eq!(f.worst_endpoint, None);
        assert_eq!(f.payment_to_confirmed_p99_ms, None);
        assert_eq!(purchases_per_second(Some(10), Some(0.0)), None);
        assert_eq!(purchases_per_second(Some(10), None), None);
    }

    #[test]
    fn a_report_saved_without_figures_gives_them_from_its_rows_and_facts() {
        let (endpoints, latencies) = sale_rows();
        let old = serde_json::json!({
            "scenario": "flash-sale",
            "started_at": "2026-12-02T02:21:57Z",
            "measured_seconds": 55.7,
            "settings": {"users": "10000"},
            "endpoints": endpoints,
            "latencies": latencies,
            "memory": [],
            "audit": [],
            "facts": {
                "seats": "5000",
                "seats bought (CONFIRMED seen by the buyer)": "4980",
                "sell-out time (every seat SOLD in the database)": "49.8 s",
                "fans admitted after the last seat sold": "3",
            },
        });
        let report: Report = serde_json::from_value(old).unwrap();
        assert_eq!(report.figures, None);
        let f = Figures::of(&report);
        assert_eq!((f.fans, f.seats), (Some(10_000), Some(5_000)));
        assert_eq!(f.sell_out_seconds, Some(49.8));
        assert_eq!(f.purchases_per_second, Some(4_980.0 / 49.8));
        assert_eq!(f.fans_admitted_after_sell_out, Some(3));
        assert_eq!(f.worst_endpoint_p99_ms, Some(880.0));
        assert_eq!(f.payment_to_confirmed_p99_ms, Some(626.0));
        assert_eq!(f.cpu_ms_per_purchase, None);
        // bench/purchase_cost.py wrote only the CPU into it: the rest is still read.
        let mut merged = report.clone();
        merged.figures = Some(Figures {
            cpu_ms_per_purchase: Some(CpuPerPurchase {
                total: 3.0,
                per_process: BTreeMap::new(),
            }),
            ..Figures::default()
        });
        let g = Figures::of(&merged);
        assert_eq!(g.cpu_ms_per_purchase.map(|c| c.total), Some(3.0));
        assert_eq!(g.sell_out_seconds, Some(49.8));
        assert_eq!(g.worst_endpoint_p99_ms, Some(880.0));
    }

    #[test]
    fn figures_round_trip_and_a_partial_object_parses() {
        let f = Figures {
            fans: Some(10_000),
            cpu_ms_per_purchase: Some(CpuPerPurchase {
                total: 3.5,
                per_process: BTreeMap::from([("concert-api".to_owned(), 1.25)]),
            }),
            ..Figures::default()
        };
        let json = serde_json::to_value(&f).unwrap();
        // Every field is written, null when it does not apply.
        assert!(json["sell_out_seconds"].is_null());
        assert!(json.as_object().unwrap().contains_key("sell_out_seconds"));
        assert_eq!(serde_json::from_value::<Figures>(json).unwrap(), f);
        // What bench/purchase_cost.py may write into a report saved with `"figures": null`.
        let partial: Figures = serde_json::from_value(serde_json::json!({
            "cpu_ms_per_purchase": {"total": 2.0, "per_process": {"redis": 0.5}}
        }))
        .unwrap();
        assert_eq!(partial.cpu_ms_per_purchase.unwrap().total, 2.0);
        assert_eq!(partial.fans, None);
    }
}
