//! docs/BENCHMARKS.md, rendered from the JSON reports of one `bench/run.sh`: every figure in
//! it comes from a report, none is typed by hand.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::report::Report;
use crate::stats::Summary;

fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<Report>> {
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
            serde_json::from_slice(&bytes).with_context(|| format!("parse {}", p.display()))
        })
        .collect()
}

fn answers(s: &Summary) -> String {
    let mut parts: Vec<String> = s
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    parts.extend(s.codes.iter().map(|(k, v)| format!("`{k}`: {v}")));
    parts.join(", ")
}

fn row(out: &mut String, scenario: &str, s: &Summary) {
    let _ = writeln!(
        out,
        "| {scenario} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
        s.name,
        s.requests,
        s.per_second,
        s.p50_ms,
        s.p95_ms,
        s.p99_ms,
        s.max_ms,
        answers(s)
    );
}

/// The main endpoint of a scenario: the one with the most requests.
fn main_endpoint(r: &Report) -> Option<&Summary> {
    r.endpoints.iter().max_by_key(|e| e.requests)
}

struct Target<'a> {
    what: &'a str,
    goal: String,
    measured: String,
    met: bool,
}

fn targets(reports: &[Report]) -> Vec<Target<'_>> {
    let find = |name: &str| reports.iter().find(|r| r.scenario == name);
    let baseline = find("baseline")
        .and_then(main_endpoint)
        .map(|e| e.per_second);
    let mut out = Vec::new();
    for (name, rps) in [("queue-join", 8_000.0), ("queue-poll", 12_000.0)] {
        if let Some(e) = find(name).and_then(main_endpoint) {
            out.push(Target {
                what: name,
                goal: format!("≥ {rps:.0} req/s, p99 < 50 ms"),
                measured: format!("{:.0} req/s, p99 {:.1} ms", e.per_second, e.p99_ms),
                met: e.per_second >= rps && e.p99_ms < 50.0,
            });
            if let Some(b) = baseline {
                let ratio = e.per_second / b;
                out.push(Target {
                    what: name,
                    goal: "≥ 40 % of the baseline's req/s".into(),
                    measured: format!(
                        "{:.0} % ({:.0} of {:.0} req/s)",
                        ratio * 100.0,
                        e.per_second,
                        b
                    ),
                    met: ratio >= 0.4,
                });
            }
        }
    }
    if let Some(e) = find("hold-distinct").and_then(main_endpoint) {
        let holds = e.statuses.get("201").copied().unwrap_or(0) as f64
            / find("hold-distinct").map_or(1.0, |r| r.measured_seconds);
        out.push(Target {
            what: "hold-distinct",
            goal: "≥ 2,500 holds/s, p99 < 100 ms".into(),
            measured: format!("{holds:.0} holds/s, p99 {:.1} ms", e.p99_ms),
            met: holds >= 2500.0 && e.p99_ms < 100.0,
        });
    }
    if let Some(r) = find("hold-contended")
        && let Some(e) = main_endpoint(r)
    {
        out.push(Target {
            what: "hold-contended",
            goal: "exactly one winner, p99 < 200 ms".into(),
            measured: format!(
                "{} winner(s), p99 {:.1} ms",
                e.statuses.get("201").copied().unwrap_or(0),
                e.p99_ms
            ),
            met: r.passed() && e.p99_ms < 200.0,
        });
    }
    if let Some(r) = find("flash-sale") {
        let worst = r
            .endpoints
            .iter()
            .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
        out.push(Target {
            what: "flash-sale",
            goal: "every invariant holds, zero 5xx".into(),
            measured: format!(
                "{} of {} checks pass",
                r.audit.iter().filter(|c| c.ok).count(),
                r.audit.len()
            ),
            met: r.passed(),
        });
        if let Some(w) = worst {
            out.push(Target {
                what: "flash-sale",
                goal: "p99 < 250 ms on every endpoint".into(),
                measured: format!("worst p99 {:.1} ms ({})", w.p99_ms, w.name),
                met: w.p99_ms < 250.0,
            });
        }
        if let Some(c) = r
            .latencies
            .iter()
            .find(|l| l.name.contains("database clock"))
        {
            out.push(Target {
                what: "flash-sale",
                goal: "payment → CONFIRMED p99 < 1 s".into(),
                measured: format!("p99 {:.0} ms (n = {})", c.p99_ms, c.requests),
                met: c.p99_ms < 1000.0,
            });
        }
        let services: Vec<_> = r.memory.iter().filter(|m| m.process != "nginx").collect();
        if let Some(m) = services
            .iter()
            .max_by(|a, b| a.peak_rss_mib.total_cmp(&b.peak_rss_mib))
        {
            out.push(Target {
                what: "flash-sale",
                goal: "each service's RSS < 150 MiB".into(),
                measured: format!("largest peak {:.1} MiB ({})", m.peak_rss_mib, m.process),
                met: services.iter().all(|m| m.peak_rss_mib < 150.0),
            });
        }
    }
    out
}

/// What bounds the figures, from profiling this machine (no figures here: those come from
/// the reports above and below).
const LIMITS: &str = "### What limits the figures

- Everything shares two cores: at every target that is missed, both are busy (vmstat shows
  under 2 % idle) and the load generator, nginx, PostgreSQL, Redis and Kafka take most of
  them; the services' own code is a small share (perf).
- Holds are bound by PostgreSQL: during hold-distinct it uses well over one of the two cores
  for one claiming statement and its commit per hold. Checking the session and the queue
  pass in one Redis pipeline instead of two round trips was tried and made no difference
  within noise, so it was not kept.
- A hot seat's losers are answered from concert-api's memory (a seat seen taken is believed
  for 250 ms), so hold-contended measures nginx, actix and the two Redis round trips of
  authentication more than the database.
- queue-join is two Redis round trips (session, then the join script) against a baseline
  that touches nothing.
- The flash sale is a closed population: 10,000 fans polling their place and every admitted
  buyer trying again at once. The waiting room is what keeps it inside the machine's
  capacity, so the number of buyers admitted at once (`QUEUE_MAX_ACTIVE`) is sized to it;
  admitting more makes every endpoint slower and the sale no faster.
- payment → CONFIRMED crosses three processes and the broker: outbox relay, Kafka, the
  settlement transaction, and its own outbox for the confirmation.";

pub fn render(paths: &[PathBuf]) -> anyhow::Result<String> {
    let reports = load(paths)?;
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `bench/run.sh` from the JSON reports of `loadtest` (the `loadtest/` crate); \
         do not edit the figures by hand — run it again.\n"
    );
    if let Some(first) = reports.first() {
        let _ = writeln!(
            out,
            "Run started {}. Machine: {}. Everything — PostgreSQL, Redis, Kafka, nginx, the four \
             services and the load generator — runs on this one machine; every request goes \
             through the nginx gateway.\n",
            first.started_at,
            first
                .settings
                .get("machine")
                .map_or("(not recorded)", String::as_str)
        );
    }
    let _ = writeln!(out, "## Reproduce\n");
    let _ = writeln!(
        out,
        "```sh\nbench/run.sh                                   # every scenario, then this file\n\
         target/release/loadtest run <scenario> --help  # one scenario by hand, against a running stack\n```\n"
    );
    let _ = writeln!(
        out,
        "`bench/run.sh` restarts the local stack (`deploy/local/stack.sh`) with the settings each \
         scenario lists below (the gateway's per-address limits raised: all load comes from one \
         address), and starts it afresh before the flash sale so that its memory figures are \
         its own. Setup (accounts, sessions, money, passes) is never measured.\n"
    );
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| scenario | target | measured | |");
    let _ = writeln!(out, "|---|---|---|---|");
    for t in targets(&reports) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            t.measured,
            if t.met { "met" } else { "**missed**" }
        );
    }
    let _ = writeln!(out, "\n{LIMITS}");
    let _ = writeln!(out, "\n## Every endpoint\n");
    let _ = writeln!(
        out,
        "Latency runs from when a connection is free to send on until the whole answer is read \
         (as wrk measures). Answers are counted by status, and error answers also by problem \
         `code`.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | answers |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    for r in &reports {
        for e in &r.endpoints {
            row(&mut out, &r.scenario, e);
        }
    }
    let baseline = reports
        .iter()
        .find(|r| r.scenario == "baseline")
        .and_then(main_endpoint);
    if let Some(b) = baseline {
        let _ = writeln!(out, "\n## Ratios to the baseline\n");
        let _ = writeln!(
            out,
            "The baseline is `{}` through the same gateway: nginx and actix-web with no \
             PostgreSQL, Redis or broker behind it — the machine's ceiling for one request.\n",
            b.name
        );
        let _ = writeln!(out, "| scenario | req/s | of baseline |");
        let _ = writeln!(out, "|---|---:|---:|");
        for r in reports
            .iter()
            .filter(|r| r.scenario != "baseline" && r.scenario != "flash-sale")
        {
            if let Some(e) = main_endpoint(r) {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.0} % |",
                    r.scenario,
                    e.per_second,
                    e.per_second / b.per_second * 100.0
                );
            }
        }
    }
    for r in &reports {
        let _ = writeln!(out, "\n## {}\n", r.scenario);
        let _ = writeln!(out, "Measured for {:.1} s.\n", r.measured_seconds);
        for (k, v) in &r.settings {
            if k != "machine" {
                let _ = writeln!(out, "- `{k}` = {v}");
            }
        }
        for (k, v) in &r.facts {
            let _ = writeln!(out, "- {k}: {v}");
        }
        for l in &r.latencies {
            let _ = writeln!(
                out,
                "- {}: n = {}, p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                l.name, l.requests, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
            );
        }
        if !r.memory.is_empty() {
            let mem: Vec<String> = r
                .memory
                .iter()
                .map(|m| format!("{} {:.1}", m.process, m.peak_rss_mib))
                .collect();
            let _ = writeln!(
                out,
                "- peak RSS (MiB, since the stack started): {}",
                mem.join(", ")
            );
        }
        if r.errors.fault_log.is_some() {
            let _ = writeln!(
                out,
                "- errors inside the {} fault window(s) (each stretched {:.0} s past its end): {}",
                r.errors.windows.len(),
                r.errors.margin_seconds,
                r.errors.inside.describe()
            );
            let _ = writeln!(
                out,
                "- errors outside them: {}",
                r.errors.outside.describe()
            );
        }
        for c in &r.audit {
            let _ = writeln!(
                out,
                "- audit [{}] {}: {}",
                if c.ok { "ok" } else { "FAILED" },
                c.name,
                c.detail
            );
        }
    }
    Ok(out)
}
