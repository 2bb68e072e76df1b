//! docs/RELIABILITY.md, rendered from the rows of one `bench/chaos.sh`: each row a directory
//! with the fault the runner injected (`fault.json`) and the flash sale's report
//! (`report.json`). Every figure comes from those files, none is typed by hand.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::report::Report;

/// What the runner injected in one row (bench/chaos.sh writes it).
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    pub name: String,
    pub injected: String,
    pub lesson: String,
    /// From the sale's opening until the injection.
    pub injected_at_ms: u64,
    /// Every hurt part was ready again within the runner's patience.
    pub came_back: bool,
    pub loadtest_exit: i32,
    /// "3000 fans, 1500 seats".
    pub sale: String,
}

/// One row: the fault and the sale it was injected into (None when the load tool left no
/// report: the row failed before its audit).
pub struct Row {
    pub fault: Fault,
    pub report: Option<Report>,
}

impl Row {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("read {}", path.display()))
        };
        let fault = serde_json::from_slice(&read("fault.json")?)
            .with_context(|| format!("parse {}/fault.json", dir.display()))?;
        let report = match read("report.json") {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parse {}/report.json", dir.display()))?,
            ),
            Err(_) => None,
        };
        Ok(Self { fault, report })
    }

    /// The row passed: the part came back, and the audit held.
    pub fn passed(&self) -> bool {
        self.fault.came_back
            && self.fault.loadtest_exit == 0
            && self.report.as_ref().is_some_and(Report::passed)
    }

    /// The longest recovery of its windows, seconds.
    fn recovery(&self) -> Option<f64> {
        self.report.as_ref().and_then(|r| {
            r.errors
                .windows
                .iter()
                .filter_map(|w| w.answers.recovered_after_seconds)
                .reduce(f64::max)
        })
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn matrix_row(out: &mut String, i: usize, row: &Row) {
    let f = &row.fault;
    let Some(r) = &row.report else {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | — | — | — | — | — | — | — | **no report** (loadtest exited {}) |",
            i + 1,
            f.name,
            seconds(f.injected_at_ms),
            f.loadtest_exit
        );
        return;
    };
    let windows = &r.errors.windows;
    let lasted = windows
        .iter()
        .filter_map(|w| w.end_unix_ms.map(|e| e.saturating_sub(w.start_unix_ms)))
        .max()
        .map_or("still open".into(), seconds);
    let sum = |f: fn(&crate::faults::WindowAnswers) -> u64| -> u64 {
        windows.iter().map(|w| f(&w.answers)).sum()
    };
    let max = |f: fn(&crate::faults::WindowAnswers) -> f64| -> f64 {
        windows.iter().map(|w| f(&w.answers)).fold(0.0, f64::max)
    };
    let during = sum(|a| a.during);
    let failed = sum(|a| a.failed_during);
    let other = sum(|a| a.other_errors_during);
    let rate = if during == 0 {
        0.0
    } else {
        failed as f64 * 100.0 / during as f64
    };
    let confirmed = r
        .latencies
        .iter()
        .find(|l| l.name.starts_with("payment → CONFIRMED"))
        .map_or("—".into(), |l| format!("{:.1} s", l.max_ms / 1000.0));
    let sold = r.sale.as_ref().map_or("—".into(), |s| {
        format!("{}/{}", sold_in_database(r).unwrap_or(s.bought), s.seats)
    });
    let failed_checks: Vec<&str> = r
        .audit
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    let audit = if row.passed() {
        "✅ passed".to_owned()
    } else if !f.came_back {
        "❌ a part did not come back".to_owned()
    } else {
        format!("❌ {}", failed_checks.join(", "))
    };
    let _ = writeln!(
        out,
        "| {} | `{}` | {} | {lasted} | {during} ({failed} failed, {rate:.2} %; {other} other) | \
         {:.0} ms | {:.0} ms | {} | {} | {confirmed} | {sold} | {audit} |",
        i + 1,
        f.name,
        seconds(f.injected_at_ms),
        max(|a| a.p99_ms_during),
        max(|a| a.p99_ms_after),
        sum(|a| a.failed_after),
        row.recovery()
            .map_or("still open".into(), |s| format!("{s:.1} s")),
    );
}

/// The audit's own count of SOLD seats, from its fact, when the report has it.
fn sold_in_database(r: &Report) -> Option<u64> {
    r.audit
        .iter()
        .find(|c| c.name.starts_with("seats sold"))
        .and_then(|c| c.detail.split_whitespace().next()?.parse().ok())
}

fn section(out: &mut String, i: usize, row: &Row) {
    let f = &row.fault;
    let _ = writeln!(out, "### {}. `{}`\n", i + 1, f.name);
    let _ = writeln!(
        out,
        "- **Injected:** {} — {} after the sale opened ({}).",
        f.injected,
        seconds(f.injected_at_ms),
        f.sale
    );
    if let Some(r) = &row.report {
        for w in &r.errors.windows {
            let length = w.end_unix_ms.map_or("still open".into(), |e| {
                seconds(e.saturating_sub(w.start_unix_ms))
            });
            let _ = writeln!(
                out,
                "- **Window** “{}” ({length}): {} answers during it, {}; p99 {:.0} ms during, \
                 {:.0} ms after ({} answers after, {} failed).",
                w.label,
                w.answers.during,
                w.errors.describe(),
                w.answers.p99_ms_during,
                w.answers.p99_ms_after,
                w.answers.after,
                w.answers.failed_after
            );
        }
        let _ = writeln!(
            out,
            "- **Outside the window:** {}.",
            r.errors.outside.describe()
        );
        for key in [
            "seats bought (CONFIRMED seen by the buyer)",
            "sell-out time (every seat SOLD in the database)",
            "fans who logged in again (the platform lost their session)",
            "fans who joined the line again (their pass was lost or ran out)",
        ] {
            if let Some(v) = r.facts.get(key) {
                let _ = writeln!(out, "- {key}: {v}.");
            }
        }
        let _ = writeln!(out, "- **Audit:**");
        for c in &r.audit {
            let _ = writeln!(
                out,
                "  - {} {}: {}",
                if c.ok { "✅" } else { "❌" },
                c.name,
                c.detail
            );
        }
    }
    let _ = writeln!(out, "- **What it taught us:** {}\n", f.lesson);
}

pub fn render(dirs: &[PathBuf]) -> anyhow::Result<String> {
    let rows: Vec<Row> = dirs
        .iter()
        .map(|d| Row::load(d))
        .collect::<anyhow::Result<_>>()?;
    let mut out = String::new();
    let when = rows
        .iter()
        .filter_map(|r| r.report.as_ref())
        .map(|r| r.started_at.as_str())
        .min()
        .unwrap_or("?");
    let passed = rows.iter().filter(|r| r.passed()).count();
    let settings = rows
        .iter()
        .find_map(|r| r.report.as_ref())
        .map(|r| &r.settings);
    let _ = writeln!(
        out,
        "# Reliability: what a sale survives\n\n\
         Rendered by `bench/chaos.sh` (which runs `loadtest reliability` over its rows) on {when}: \
         **{passed} of {} faults passed**. Do not edit by hand; run `bench/chaos.sh` to \
         regenerate it (about half an hour on two cores), or `bench/chaos.sh NAME...` for some \
         rows (the matrix of those goes to `.bench/chaos-*/RELIABILITY.md` only).\n",
        rows.len()
    );
    let _ = writeln!(
        out,
        "Each row is a fresh flash sale ({}) through the gateway, against a stack of two \
         replicas of every API and two batch processes (a leader and a hot standby), the \
         services reaching PostgreSQL and Redis through `loadtest proxy`. The fault is injected \
         a few seconds after the sale opens; its window runs from the injection until the cause \
         is removed and the hurt part answers ready again. The load tool's fans ride faults out \
         as clients do (a 5xx or a dropped connection is retried with backoff and the same \
         idempotency key; a lost session logs in again; a lost pass joins the line again), and \
         its audit, read from the databases once every payment had its chance to settle, \
         decides the row.\n",
        rows.first().map_or("?", |r| r.fault.sale.as_str())
    );
    let _ = writeln!(
        out,
        "Columns: **lasted**, the fault's window; **answers during**, every answer in flight \
         during the window or up to the load tool's margin after it, with those that failed \
         (5xx or no answer) and the other errors (401 after Redis lost its sessions, 404 for a \
         pass it lost, 429); **p99 during / after**, the latency of those answers and of the \
         answers after the window; **failed after**, failures after the window and its margin \
         (every one of them fails the audit); **recovered after**, from the injection until the \
         fault was over and its last failure answered; **slowest confirmation**, the longest \
         wait from a payment's 201 to its reservation CONFIRMED; **sold**, seats SOLD of the \
         sale's; **audit**: no seat sold twice, money conserved to the unit, every payment \
         settled within `PAYMENT_SETTLE_DIRECT_AFTER_SECS`, no 5xx outside the window.\n"
    );
    let _ = writeln!(
        out,
        "## The matrix\n\n\
         | # | fault | injected at | lasted | answers during | p99 during | p99 after | failed after | recovered after | slowest confirmation | sold | audit |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (i, row) in rows.iter().enumerate() {
        matrix_row(&mut out, i, row);
    }
    if let Some((i, worst)) = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.recovery().map(|s| (i, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
    {
        let _ = writeln!(
            out,
            "\nThe longest recovery: **{:.1} s**, row {} (`{}`).",
            worst,
            i + 1,
            rows[i].fault.name
        );
    }
    let _ = writeln!(out, "\n## Each fault\n");
    for (i, row) in rows.iter().enumerate() {
        section(&mut out, i, row);
    }
    if let Some(settings) = settings {
        let _ = writeln!(out, "## The settings of the sales\n");
        for (k, v) in settings {
            let _ = writeln!(out, "- `{k}`: {v}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_without_a_report_is_shown_failed_and_the_rest_render() {
        let dir = std::env::temp_dir().join(format!("reliability-{}", std::process::id()));
        let (good, bad) = (dir.join("01-redis-cut"), dir.join("02-kafka-pause"));
        std::fs::create_dir_all(&good).unwrap();
        std::fs::create_dir_all(&bad).unwrap();
        let fault = |name: &str, exit: i32| {
            serde_json::json!({
                "name": name, "injected": "a fault", "lesson": "a lesson",
                "injected_at_ms": 4000, "came_back": true, "loadtest_exit": exit,
                "sale": "10 fans, 5 seats"
            })
            .to_string()
        };
        std::fs::write(good.join("fault.json"), fault("redis-cut", 0)).unwrap();
        let report = serde_json::json!({
            "scenario": "flash-sale", "started_at": "2026-12-02T09:00:00Z",
            "measured_seconds": 10.0, "settings": {"users": "10"}, "endpoints": [],
            "latencies": [], "memory": [], "facts": {},
            "audit": [{"name": "money conserved", "ok": true, "detail": "exact"},
                      {"name": "seats sold == seats on sale", "ok": true,
                       "detail": "5 seats SOLD, 5 in CONFIRMED reservations, 5 on sale"}],
            "sale": {"seats": 5, "bought": 4, "confirm_timeout_seconds": 130.0,
                     "gave_up_confirm": 0, "rejected_after_payment": 0, "payment_refused": 0,
                     "left_waiting": 5, "left_without_seat": 0, "fault_retries": 3,
                     "settle_direct_after_seconds": 120.0, "settle_limit_seconds": 130.0,
                     "settle_waited_seconds": 0.0, "unsettled_after_wait": 0},
            "errors": {"fault_log": "faults.log", "margin_seconds": 5.0, "windows": [{
                "label": "Redis unreachable", "start_unix_ms": 1000, "end_unix_ms": 6000,
                "errors": {"server_errors": 3, "transport_errors": 0, "unexpected_answers": 0,
                           "by_answer": {"POST /api/reservations 503": 3}},
                "answers": {"during": 300, "failed_during": 3, "other_errors_during": 0,
                            "p99_ms_during": 120.0, "after": 900, "failed_after": 0,
                            "p99_ms_after": 40.0, "recovered_after_seconds": 5.2}}],
                "inside": {"server_errors": 3, "transport_errors": 0, "unexpected_answers": 0,
                           "by_answer": {}},
                "outside": {"server_errors": 0, "transport_errors": 0, "unexpected_answers": 0,
                            "by_answer": {}}}
        });
        std::fs::write(good.join("report.json"), report.to_string()).unwrap();
        std::fs::write(bad.join("fault.json"), fault("kafka-pause", 2)).unwrap();

        let md = render(&[good, bad]).unwrap();
        assert!(md.contains("**1 of 2 faults passed**"), "{md}");
        assert!(
            md.contains("| 1 | `redis-cut` | 4.0 s | 5.0 s | 300 (3 failed, 1.00 %; 0 other)"),
            "{md}"
        );
        assert!(
            md.contains("| 5.2 s | — | 5/5 | ✅ passed |"),
            "sold as the database says: {md}"
        );
        assert!(md.contains("**no report** (loadtest exited 2)"), "{md}");
        assert!(md.contains("The longest recovery: **5.2 s**, row 1 (`redis-cut`)"));
        assert!(md.contains("POST /api/reservations 503 ×3"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
