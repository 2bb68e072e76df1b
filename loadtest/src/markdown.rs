//! docs/BENCHMARKS.md, rendered from the JSON reports of one `bench/run.sh`: every figure in
//! it comes from a report, none is typed by hand.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::report::{CpuPerPurchase, FLASH_SALE, Figures, Report, SaleFigures, main_endpoint};
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

/// The report of bench/pgbench-hold.sh: the hold's SQL alone, the ceiling of a hold.
const PGBENCH_HOLD: &str = "pgbench-hold";

struct Target<'a> {
    what: &'a str,
    goal: String,
    measured: String,
    /// `None`: the run did not measure it.
    met: Option<bool>,
}

/// The reports of one run and their figures (their own, or read from their rows).
struct Run<'a> {
    reports: &'a [Report],
    figures: Vec<Figures>,
}

impl<'a> Run<'a> {
    fn new(reports: &'a [Report]) -> Self {
        Self {
            reports,
            figures: reports.iter().map(Figures::of).collect(),
        }
    }

    fn find(&self, scenario: &str) -> Option<(&'a Report, &Figures)> {
        let i = self.reports.iter().position(|r| r.scenario == scenario)?;
        Some((&self.reports[i], &self.figures[i]))
    }

    /// The main endpoint's req/s and p99 of an endpoint scenario.
    fn endpoint(&self, scenario: &str) -> Option<(f64, f64)> {
        let (_, f) = self.find(scenario)?;
        Some((f.requests_per_second?, f.p99_ms?))
    }

    /// The bare-HTTP ceiling: the baseline's req/s.
    fn baseline(&self) -> Option<f64> {
        self.endpoint("baseline").map(|(rps, _)| rps)
    }

    /// The hold's ceiling: pgbench-hold's transactions a second.
    fn hold_ceiling(&self) -> Option<f64> {
        self.endpoint(PGBENCH_HOLD).map(|(tps, _)| tps)
    }

    /// hold-distinct's holds a second (its 201 answers over the measured time) and p99.
    fn holds(&self) -> Option<(f64, f64)> {
        let (r, f) = self.find("hold-distinct")?;
        let e = main_endpoint(&r.endpoints)?;
        let holds =
            e.statuses.get("201").copied().unwrap_or(0) as f64 / r.measured_seconds.max(1e-9);
        Some((holds, f.p99_ms.unwrap_or(e.p99_ms)))
    }
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// "database clock" of "payment → CONFIRMED (database clock)".
fn clock_of(row: &str) -> &str {
    row.split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map_or(row, |(inside, _)| inside)
}

/// The issue's flash-sale targets.
const SELL_OUT_FANS: u64 = 10_000;
const SELL_OUT_SEATS: u64 = 5_000;
const SELL_OUT_SECONDS: f64 = 10.0;
const WORST_P99_MS: f64 = 250.0;
const CONFIRMED_P99_MS: f64 = 500.0;
const CPU_MS_PER_PURCHASE: f64 = 4.0;
/// hold-distinct: holds a second, or this share of the pgbench hold ceiling.
const HOLDS_PER_SECOND: u64 = 2_500;
const HOLD_CEILING_SHARE: f64 = 0.25;

fn targets<'a>(run: &Run<'a>) -> Vec<Target<'a>> {
    let mut out = Vec::new();
    let baseline = run.baseline();
    for (name, rps) in [("queue-join", 8_000.0), ("queue-poll", 12_000.0)] {
        let Some((r, _)) = run.find(name) else {
            continue;
        };
        let Some((per_second, p99)) = run.endpoint(name) else {
            continue;
        };
        out.push(Target {
            what: &r.scenario,
            goal: format!("≥ {rps:.0} req/s, p99 < 50 ms"),
            measured: format!("{per_second:.0} req/s, p99 {p99:.1} ms"),
            met: Some(per_second >= rps && p99 < 50.0),
        });
        if let Some(b) = baseline {
            let ratio = per_second / b;
            out.push(Target {
                what: &r.scenario,
                goal: "≥ 40 % of the baseline's req/s".into(),
                measured: format!("{:.0} % ({per_second:.0} of {b:.0} req/s)", ratio * 100.0),
                met: Some(ratio >= 0.4),
            });
        }
    }
    if let (Some((r, _)), Some((holds, p99))) = (run.find("hold-distinct"), run.holds()) {
        let ceiling = run.hold_ceiling();
        let share = ceiling.map(|c| holds / c);
        out.push(Target {
            what: &r.scenario,
            goal: format!(
                "≥ {} holds/s or ≥ {:.0} % of the pgbench hold ceiling",
                thousands(HOLDS_PER_SECOND),
                HOLD_CEILING_SHARE * 100.0
            ),
            measured: match (ceiling, share) {
                (Some(c), Some(s)) => format!(
                    "{holds:.0} holds/s, {:.0} % of {c:.0} tx/s (pgbench-hold)",
                    s * 100.0
                ),
                _ => format!("{holds:.0} holds/s (no pgbench-hold report in this run)"),
            },
            met: Some(
                holds >= HOLDS_PER_SECOND as f64 || share.is_some_and(|s| s >= HOLD_CEILING_SHARE),
            ),
        });
        out.push(Target {
            what: &r.scenario,
            goal: "p99 < 100 ms".into(),
            measured: format!("p99 {p99:.1} ms"),
            met: Some(p99 < 100.0),
        });
    }
    if let Some((r, _)) = run.find("hold-contended")
        && let Some(e) = main_endpoint(&r.endpoints)
    {
        out.push(Target {
            what: &r.scenario,
            goal: "exactly one winner, p99 < 200 ms".into(),
            measured: format!(
                "{} winner(s), p99 {:.1} ms",
                e.statuses.get("201").copied().unwrap_or(0),
                e.p99_ms
            ),
            met: Some(r.passed() && e.p99_ms < 200.0),
        });
    }
    if let Some((r, f)) = run.find(FLASH_SALE) {
        out.push(Target {
            what: &r.scenario,
            goal: "every invariant holds, zero 5xx".into(),
            measured: format!(
                "{} of {} checks pass",
                r.audit.iter().filter(|c| c.ok).count(),
                r.audit.len()
            ),
            met: Some(r.passed()),
        });
        let crowd = match (f.fans, f.seats) {
            (Some(fans), Some(seats)) => format!("{fans} fans / {seats} seats"),
            _ => "(crowd not recorded)".into(),
        };
        out.push(Target {
            what: &r.scenario,
            goal: format!(
                "sell out {} fans / {} seats in ≤ {SELL_OUT_SECONDS:.0} s",
                thousands(SELL_OUT_FANS),
                thousands(SELL_OUT_SEATS)
            ),
            measured: match (f.sell_out_seconds, f.purchases_per_second) {
                (Some(s), Some(pps)) => {
                    format!("{crowd}: sold out in {s:.1} s ({pps:.0} purchases/s)")
                }
                (Some(s), None) => format!("{crowd}: sold out in {s:.1} s"),
                _ => format!("{crowd}: not sold out"),
            },
            met: Some(
                f.sell_out_seconds.is_some_and(|s| s <= SELL_OUT_SECONDS)
                    && f.fans.is_some_and(|n| n >= SELL_OUT_FANS)
                    && f.seats.is_some_and(|n| n >= SELL_OUT_SEATS),
            ),
        });
        if let (Some(p99), Some(name)) = (f.worst_endpoint_p99_ms, &f.worst_endpoint) {
            out.push(Target {
                what: &r.scenario,
                goal: format!("p99 < {WORST_P99_MS:.0} ms on every endpoint"),
                measured: format!("worst p99 {p99:.1} ms ({name})"),
                met: Some(p99 < WORST_P99_MS),
            });
        }
        if let (Some(p99), Some(row)) = (f.payment_to_confirmed_p99_ms, &f.payment_to_confirmed_row)
        {
            let n = r
                .latencies
                .iter()
                .find(|l| &l.name == row)
                .map_or(String::new(), |l| format!(", n = {}", l.requests));
            out.push(Target {
                what: &r.scenario,
                goal: format!("payment → CONFIRMED p99 < {CONFIRMED_P99_MS:.0} ms"),
                measured: format!("p99 {p99:.0} ms ({}{n})", clock_of(row)),
                met: Some(p99 < CONFIRMED_P99_MS),
            });
        }
        out.push(Target {
            what: &r.scenario,
            goal: format!("total CPU per purchase ≤ {CPU_MS_PER_PURCHASE:.0} ms"),
            measured: f.cpu_ms_per_purchase.as_ref().map_or(
                "not measured (the sale ran without bench/purchase_cost.py)".into(),
                |c| format!("{:.2} ms (every process of the platform)", c.total),
            ),
            met: f
                .cpu_ms_per_purchase
                .as_ref()
                .map(|c| c.total <= CPU_MS_PER_PURCHASE),
        });
        let services: Vec<_> = r.memory.iter().filter(|m| m.process != "nginx").collect();
        if let Some(m) = services
            .iter()
            .max_by(|a, b| a.peak_rss_mib.total_cmp(&b.peak_rss_mib))
        {
            out.push(Target {
                what: &r.scenario,
                goal: "each service's RSS < 150 MiB".into(),
                measured: format!("largest peak {:.1} MiB ({})", m.peak_rss_mib, m.process),
                met: Some(services.iter().all(|m| m.peak_rss_mib < 150.0)),
            });
        }
    }
    out
}

/// 10000 as "10,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The flash sale's CPU per purchase, process by process (dearest first).
fn cpu_table(out: &mut String, cpu: &CpuPerPurchase) {
    let _ = writeln!(out, "\n### CPU per purchase\n");
    let _ = writeln!(
        out,
        "The flash sale's CPU time (user + system, from /proc) of each process of the platform \
         from \"the sale opens\" to \"the sale is over\" (the last fan done: bought, gone or told \
         SOLD_OUT), divided by the seats bought \
         (`bench/purchase_cost.py`; PostgreSQL's backends are charged to the service they \
         serve; the load generator is not counted).\n"
    );
    let _ = writeln!(out, "| process | ms per purchase |");
    let _ = writeln!(out, "|---|---:|");
    let mut rows: Vec<_> = cpu.per_process.iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
    for (name, ms) in rows {
        let _ = writeln!(out, "| {name} | {ms:.2} |");
    }
    let _ = writeln!(out, "| **total** | **{:.2}** |", cpu.total);
}

/// Every measured sale's figures, in the order they ran, the one shown above marked.
fn sales_table(out: &mut String, sales: &[SaleFigures]) {
    let _ = writeln!(out, "\n### Sale by sale\n");
    let _ = writeln!(
        out,
        "The flash sales measured, one after another on the same stack; the figures above are \
         those of the one marked (the median sell-out time).\n"
    );
    let _ = writeln!(
        out,
        "| sale | sold out in | CPU per purchase | worst endpoint p99 | payment → CONFIRMED p99 |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let num = |v: Option<f64>, digits: usize, unit: &str| {
        v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$} {unit}"))
    };
    for (i, s) in sales.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} | {} |",
            i + 1,
            if s.shown { " (shown)" } else { "" },
            s.sell_out_seconds
                .map_or_else(|| "not sold out".to_owned(), |v| format!("{v:.1} s")),
            num(s.cpu_ms_per_purchase, 2, "ms"),
            num(s.worst_endpoint_p99_ms, 1, "ms"),
            num(s.payment_to_confirmed_p99_ms, 0, "ms"),
        );
    }
}

/// The run's headline numbers, from the figures.
fn headline(out: &mut String, run: &Run) {
    let mut lines = Vec::new();
    if let Some((_, f)) = run.find(FLASH_SALE) {
        let crowd = match (f.fans, f.seats) {
            (Some(fans), Some(seats)) => format!("{fans} fans for {seats} seats"),
            _ => "the crowd".into(),
        };
        let sold = match (f.sell_out_seconds, f.purchases_per_second) {
            (Some(s), Some(pps)) => format!("sold out in {s:.1} s ({pps:.0} purchases/s)"),
            (Some(s), None) => format!("sold out in {s:.1} s"),
            _ => "did not sell out".into(),
        };
        let late = f.fans_admitted_after_sell_out.map_or(String::new(), |n| {
            format!("; {n} fans admitted after the last seat sold")
        });
        let of = f
            .sales
            .as_ref()
            .filter(|sales| sales.len() > 1)
            .map_or(String::new(), |sales| {
                format!(", the median of {} sales measured", sales.len())
            });
        lines.push(format!("The flash sale: {crowd}, {sold}{of}{late}."));
        let mut latency = Vec::new();
        if let (Some(p99), Some(name)) = (f.worst_endpoint_p99_ms, &f.worst_endpoint) {
            latency.push(format!("worst endpoint p99 {p99:.1} ms ({name})"));
        }
        if let (Some(p99), Some(row)) = (f.payment_to_confirmed_p99_ms, &f.payment_to_confirmed_row)
        {
            latency.push(format!(
                "payment → CONFIRMED p99 {p99:.0} ms ({})",
                clock_of(row)
            ));
        }
        if !latency.is_empty() {
            lines.push(format!("During the sale: {}.", latency.join("; ")));
        }
        lines.push(f.cpu_ms_per_purchase.as_ref().map_or(
            "CPU per purchase: not measured (the sale ran without bench/purchase_cost.py).".into(),
            |c| {
                format!(
                    "CPU per purchase: {:.2} ms over every process of the platform.",
                    c.total
                )
            },
        ));
    }
    if let Some((holds, _)) = run.holds() {
        lines.push(match run.hold_ceiling() {
            Some(c) => format!(
                "Holds: {holds:.0} a second through the platform (hold-distinct), {:.0} % of the \
                 {c:.0} a second PostgreSQL runs the hold's own SQL at (pgbench-hold).",
                holds / c * 100.0
            ),
            None => format!("Holds: {holds:.0} a second through the platform (hold-distinct)."),
        });
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Headline\n");
    for l in lines {
        let _ = writeln!(out, "- {l}");
    }
    let _ = writeln!(out);
}

/// Which clock each scenario's latencies run on (its `latency clock` setting), scenarios
/// sharing a clock on one line.
fn latency_clocks(out: &mut String, reports: &[Report]) {
    let mut clocks: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in reports {
        let clock = r.settings.get("latency clock").map_or(
            "not recorded (a report saved before the setting existed)",
            String::as_str,
        );
        match clocks.iter_mut().find(|(c, _)| *c == clock) {
            Some((_, names)) => names.push(&r.scenario),
            None => clocks.push((clock, vec![&r.scenario])),
        }
    }
    let _ = writeln!(
        out,
        "A latency runs until the whole answer is read; where it starts is the scenario's clock \
         (its `latency clock` setting). A closed-loop clock starts when a connection is free to \
         send on (as wrk measures), so a request's wait for the previous answer is not seen; a \
         clock from the due time counts that wait.\n"
    );
    for (clock, names) in clocks {
        let kind = if clock.starts_with("from when each request was due") {
            "from the due time"
        } else if clock.starts_with("from the sending") {
            "closed loop"
        } else {
            "unknown"
        };
        let _ = writeln!(out, "- {} — **{kind}**: {clock}", names.join(", "));
    }
    let _ = writeln!(
        out,
        "\nAnswers are counted by status, and error answers also by problem `code`.\n"
    );
}

/// Each scenario against its ceiling: the holds against pgbench-hold, the rest against the
/// bare-HTTP baseline.
fn ratios(out: &mut String, run: &Run) {
    let baseline = run.baseline();
    let ceiling = run.hold_ceiling();
    if baseline.is_none() && ceiling.is_none() {
        return;
    }
    let _ = writeln!(out, "\n## Ratios to the ceilings\n");
    if let Some((r, f)) = run.find("baseline") {
        let _ = writeln!(
            out,
            "- The baseline is `{}` through the same gateway: nginx and actix-web with no \
             PostgreSQL, Redis or broker behind it — the machine's ceiling for one request.",
            f.endpoint.as_deref().unwrap_or(&r.scenario)
        );
    }
    if ceiling.is_some() {
        let _ = writeln!(
            out,
            "- pgbench-hold is a hold's own SQL — `claim_free`'s call of `claim_free_seats`, the \
             buyer's lock and the claim in one round trip — run by pgbench straight against the same PostgreSQL, with as many \
             clients as hold-distinct has connections (its settings below): the database's \
             ceiling for a hold. The holds (hold-distinct's, and the flash sale's purchases, one \
             hold each) are read against it."
        );
    }
    let _ = writeln!(out, "\n| scenario | measured | ceiling | of ceiling |");
    let _ = writeln!(out, "|---|---:|---|---:|");
    let mut row = |scenario: &str, measured: f64, unit: &str, ceiling: (&str, f64, &str)| {
        let _ = writeln!(
            out,
            "| {scenario} | {measured:.0} {unit} | {} {:.0} {} | {:.0} % |",
            ceiling.0,
            ceiling.1,
            ceiling.2,
            measured / ceiling.1 * 100.0
        );
    };
    for (r, f) in run.reports.iter().zip(&run.figures) {
        let name = r.scenario.as_str();
        if name == "baseline" || name == PGBENCH_HOLD {
            continue;
        }
        if name == "hold-distinct"
            && let (Some(c), Some((holds, _))) = (ceiling, run.holds())
        {
            row(name, holds, "holds/s", ("pgbench-hold", c, "tx/s"));
        } else if name == FLASH_SALE {
            if let (Some(c), Some(pps)) = (ceiling, f.purchases_per_second) {
                row(name, pps, "purchases/s", ("pgbench-hold", c, "tx/s"));
            }
        } else if let (Some(b), Some(rps)) = (baseline, f.requests_per_second) {
            row(name, rps, "req/s", ("baseline", b, "req/s"));
        }
    }
}

/// What bounds the figures, from profiling this machine (no figures here: those come from
/// the reports above and below).
const LIMITS: &str = "### What limits the figures

- Everything shares two cores: at every target that is missed, both are busy (vmstat shows
  under 2 % idle) and the load generator, nginx, PostgreSQL, Redis and Kafka take most of
  them; the services' own code is a small share (perf).
- Threads cost more than code here: most of the services' CPU is the kernel's (epoll,
  futex wake-ups, context switches) as requests pass between actix workers and the runtime
  that drives Redis and PostgreSQL. The local stack runs one actix worker per two cores
  (`HTTP_WORKERS`); with one per core every scenario was slower (queue-join 7,506 against
  10,336 req/s, hold-distinct 866 against 1,009 holds/s).
- Holds are bound by PostgreSQL: during hold-distinct it uses well over one of the two cores
  for one claiming statement and its commit per hold. Checking the session and the queue
  pass in one Redis pipeline instead of two round trips was tried and made no difference
  within noise, so it was not kept.
- A hot seat's losers are answered from concert-api's memory (a seat seen taken is believed
  for 250 ms), so hold-contended measures nginx, actix and the two Redis round trips of
  authentication more than the database.
- queue-join is two Redis round trips (session, then the join script) against a baseline
  that touches nothing.
- The flash sale is bound by CPU per purchase: selling 5,000 seats in 10 s on two cores
  leaves 4 ms of CPU for each, the load tool's own (0.4–0.5 ms a purchase on a fast hour of
  this machine) included, and only with both cores busy from the first second to the last.
  The platform spends the figure in the table above, so even at 3.7–3.9 ms the sale needs
  10.5–11 s of both cores, and the crowd's entry and the last seats leave them partly idle
  for about a second. Per
  purchase it makes about 10 HTTP requests through nginx (two joins and two event streams,
  as half the fans leave empty-handed; the schedule list, the seat map, the hold, the payment
  and a look at the reservation), about 3.2 PostgreSQL transactions over two databases, most
  of them one statement (the hold and the payment, one call each; the seat map, about half
  the time; the settlements, one statement for the payments that waited together; payment-api's
  record of the confirmations, one statement a fetch; the outbox relays and the background
  jobs), about 9 Redis round trips (120 commands, counting those inside scripts) and 2 Kafka
  messages, each through a producer, the broker and a consumer group. No one of them is
  large: PostgreSQL for concert-api is the largest row, the rest is the per-request cost of
  three actix/tokio services behind nginx (syscalls and thread hand-offs).
- The three consumers take what waits in their line together (one worker each; a failed
  batch is handled again one message at a time, each effect once by its inbox): concert-api
  settles the payments in one statement (the common case; the others alone), payment-api
  records the confirmations in one, users-api retires the buyers in one script a concert.
  PostgreSQL transactions a purchase went from 5.15 to 3.16 (the sales of the run that
  brought them against those of the run before). Alternated sales (bench/purchase-cost.sh,
  10,000 fans): payment-api's
  PostgreSQL 0.60, 0.61 and 0.68 ms a purchase against 0.83, 0.85 and 0.82, payment-api 0.32,
  0.34 and 0.38 against 0.43; then concert-api's PostgreSQL 1.16 and 1.09 against 1.69 and
  1.60, concert-api 0.85 and 0.79 against 1.06 and 0.96, payment → CONFIRMED p99 286 and 264
  ms against 476 and 347, sold out in 17.9 and 16.6 s against 20.9 and 19.3 s.
- A join registers its room for admission (`SADD queue:concerts`, a third Redis round trip)
  only when it found the line empty, or when its process has not done so for a second;
  before, every new token did. A sale's SADDs went from 8,877–9,177 to 191–1,094, and in
  alternated sales (bench/purchase-cost.sh, 10,000 fans, two pairs) the join's p99 from 487
  and 572 ms to 370 and 356 (p50 212 and 212 to 161 and 199); the CPU a purchase moved less
  than the runs vary.
- Every binary allocates with mimalloc, blocks of 1 MiB or more still with glibc's malloc
  (DESIGN, Decisions): perf had found a tenth of the machine in glibc's malloc during the
  crowd's first seconds. The machine's speed drifted by half within minutes while this was
  measured (the same build: 4.3 ms a purchase at one hour, 8.2 at the next), so the figures
  are ratios to nginx's CPU, whose work is the same in both builds (this round's last build,
  with the join above, against the build it started from; three pairs, alternated):
  users-api 0.60–0.65 of it against 0.75–0.78, the three services together 2.14–2.20 against
  2.35–2.42, the load tool 0.83–0.88 against 1.00–1.06; the whole platform 7.18–7.70 against
  7.17–7.81, within the runs' spread. Peak RSS in the sale: users-api 84–95 MiB against
  97–107, concert-api 47–51 against 39–44. With transparent huge pages (mimalloc's default)
  the join's p99 was 711 and 757 ms against 421 and 415 without, and concert-api's peak RSS
  69–74 MiB.
- nginx's PCRE JIT (`pcre_jit on`, for the regular expressions of its maps and locations)
  was tried: nginx 0.74 and 0.75 ms a purchase with it, 0.70 and 0.75 without; not kept.
- The run of 6 December, 23:35 (mimalloc in every binary) met a slower machine than the one
  before it, three hours earlier: the baseline's bare route 30,134 req/s against 33,150. Its
  sales against those of the run before: 17.4 s (16.8–17.6) against 17.5 s (15.7–17.7),
  5.66 ms a purchase (5.49–5.71) against 5.72 (5.31–5.78), the worst endpoint's p99 397 ms
  (397–486) against 444 (444–725).
  Against nginx's CPU, whose work is the same in both (the load tool's own CPU, the control
  the run before used, changed with the allocator): the three services 2.13–2.15 of it
  against 2.33–2.36, users-api 0.61–0.63 against 0.76–0.79, the whole platform 6.90–7.09
  against 7.15–7.25. The load tool spent 0.70–0.72 ms a purchase against 0.76–0.83, on the
  slower machine.
- Every fan waits on the status event stream, as the web app does. Admission sizes itself
  (`QUEUE_PACE`): it keeps the holds' and payments' p90 inside the services near 100 ms, and
  the machine is busy throughout. Sampled every half second (each process's CPU in /proc), a
  sale of the stock build had 1.95 of the 2 cores busy from its opening to its last seat
  (17.4 s): for the first 2.3 s the crowd's joins and stream opens, with few purchases yet
  (the load tool 0.38 cores, nginx 0.41, users-api 0.41, Redis 0.18, PostgreSQL 0.24), then
  15 s of purchases (PostgreSQL 0.76, concert-api 0.30, Kafka 0.19, nginx 0.16, the load tool
  0.14, payment-api 0.13, Redis 0.10, users-api 0.09). bench/purchase-cost.sh's \"machine,
  every CPU busy\" of 1.4–1.5 cores averages in the seconds after the last seat, while the
  load tool waits for the last confirmations (0.25 cores): the sale is bound by CPU from the
  first second to the last, and by nothing else. Sampled again this round (two sales, sold
  out in 14.5 and 14.1 s): the first 1.9 s the load tool 0.45 cores, nginx 0.47, users-api
  0.50 and Redis 0.25; holds by second of the sale 66, 16 and 153, then 370–550 a second
  (450 on average) until the last one (reservations' `created_at`): the crowd's first two seconds are most of what separates the
  sale from 5,000 seats at its steady pace. It ran at 1.1–1.2 until users-api read each line as often as admission runs (every
  250 ms) instead of every second: an admitted fan heard of it up to a second late, and its
  slot sat idle meanwhile (alternated sales: 16.1 and 15.1 s against 21.6 and 21.8 s, CPU per
  purchase unchanged). Reading and admitting every 100 ms instead gained nothing more (15.7
  and 16.6 s against 15.6 and 15.9 s), nor did a first window of 300 instead of 100 (15.0 and
  14.4 s against 15.3 and 14.7 s): the window reaches 300 within 4 s, while the joins of the
  first second still hold up the first admitted fans. The window is cut to 85 % when the checkout is slow: at 70 % the cut overshot (the
  samples arrive a second or two after the fans they judge) and left the machine half idle
  for seconds (vmstat); the sale sold out in a median 27 s then, 24 s at 85 %. A higher
  target sells a little faster at twice the latency (250 ms: 57.5 s instead of 64.6 s when
  measured at 70 %); a lower one much slower (50 ms: 98.5 s).
- The outbox relay took time that grew with the square of its backlog to drain it. For each
  of a batch's 256 rows it checked that no earlier row of the same key was held by another
  relay, and PostgreSQL, whose statistics are taken while nothing is pending (as nearly
  always), read every pending row for each of them. A stack restarted after some hours sends
  the expiry events of the holds that ran out meanwhile: in the first sale after such a
  restart (23,359 events) the relay's statement ran 575 times for 45.6 s of PostgreSQL
  (pg_stat_statements), and the sale took 38.2 s. The check now reads once a batch the
  pending rows below its last id that it did not take, which only another relay can hold
  (usually none). bench/outbox-drain.sh, 23,000 rows pending among a million: 50.6 s before,
  0.41 s now. The outbox's key index, which no statement used any more, is gone.
- The hold's claim statement was planned afresh for every hold: PostgreSQL's plan cache kept
  custom plans (the generic plan's estimate, for any number of seats, is dearer), and
  planning cost as much as running it (pg_stat_statements over a sale: 5,124 plans for 5,108
  holds, 2.76 s planning and 2.94 s running). The hold now asks for generic plans
  (`claim_free_seats` sets `plan_cache_mode`): 58 plans and 61 ms planning for 5,101 holds.
- A common hold is one round trip: the buyer's lock and the claim are one PL/pgSQL call
  (`claim_free_seats`), its own transaction, instead of BEGIN, the lock, the claim and
  COMMIT. hold-distinct, alternated runs on one machine: 1,790 and 1,737 holds/s before,
  2,289 and 2,495 after (p99 63.5 and 72.0 ms before, 53.0 and 47.5 ms after). In a whole
  sale the three round trips saved are within the noise of its CPU per purchase.
- A common payment is one round trip too: the key's claim, the payment, the debit, the
  ledger row, the outbox row and the key's answer are one PL/pgSQL call (`pay_at_once`)
  instead of six round trips. Alternated sales (bench/purchase-cost.sh, 10,000 fans): payment-api
  0.62 and 0.58 ms of CPU a purchase before, 0.48 and 0.48 after; its PostgreSQL 0.93 and
  0.86 before, 0.74 and 0.76 after. The platform's total and the sale's length moved less
  than the runs vary (7.68 and 6.96 ms, 29.9 and 28.4 s before; 7.03 and 7.11 ms, 29.7 and
  28.8 s after).
- users-api's inbox for `reservation.confirmed` moved into the Redis script that retires
  the buyer's token (a marker per event, kept a day): no database transaction per purchase
  in users-api any more. Alternated sales: users-api 0.86 and 0.85 ms of CPU a purchase
  before, 0.77 and 0.74 after; its PostgreSQL 0.25 and 0.25 before, 0.02 and 0.01 after;
  Redis 0.57 and 0.55 before, 0.64 and 0.58 after (one SET more per purchase).
- Background work that grew with the platform, found with pg_stat_statements over whole sales
  (loaded for the measurement only): each of the three sales measured so spent 1.1 to 3.1 s of
  PostgreSQL counting every seat of the 305 shows still to come on this machine, because
  concert-api's full inventory pass ran every minute and fell inside the sale; it now runs
  hourly, and each 5 s pass also counts a concert whose `seq` went down (Redis went back in
  time), the one case the minute's pass covered that the changed concerts did not. batch's
  money totals (this month's 1.87 million ledger rows and 1.1 million wallets, 0.3 s of
  PostgreSQL's CPU a reading, measured with its parallel workers off) ran every 15 s and now
  every minute: 5 ms of CPU a second instead of 20. They still grow with the month and the
  accounts (the ledger's part could be summed from a checkpoint; the wallets' sum has no
  such shortcut). batch's minute-by-minute cleanup read the whole
  outbox (620 ms for 785,000 rows) and the whole inbox (130-230 ms) to find the minute's
  expired rows; both now read an index (outbox 0.07 and 1.7 ms for its two statements,
  inbox 0.06-0.2 ms; `EXPLAIN ANALYZE` on the same database). The outbox relay walked 71,000 dead versions of published rows on each poll
  (1,198 pages, 1.47 ms), which autovacuum's default would have left until 150,000; the
  outbox is now vacuumed every 10,000 (232 pages, 0.20 ms a poll, for 0.2-0.3 s of CPU a
  vacuum). And the seat map was planned for every call (6,603 plans, 428 ms planning and
  329 ms running in one sale): it is now a PL/pgSQL call with a generic plan, 76-103 µs a
  call in all against 115. Whole sales (bench/purchase-cost.sh, 10,000 fans) cost 6.78 ms a
  purchase before these changes and 5.41-6.29 ms in the five runs made as they went in (runs
  of one build differ by about 0.5 ms).
- Tried this round and not kept, each within noise of the build it was measured against
  (bench/purchase-cost.sh, 10,000 fans, runs of each, alternated): PostgreSQL over its
  Unix socket instead of loopback TCP (its CPU per purchase 3.63 against 3.69 ms);
  `shared_buffers` 1 GB instead of 128 MB; `DATABASE_POOL_SIZE` 6 instead of 16; one tokio
  worker per service (`TOKIO_WORKER_THREADS=1`); admission ticks every 50 ms instead of 250;
  mimalloc as concert-api's and payment-api's allocator (perf put glibc's malloc and free at
  about a tenth of the services' CPU, but concert-api's CPU per purchase stayed 1.20, 1.19
  and 1.32 ms against 1.20, 1.23 and 1.34 ms; kept later for every binary, above).
- Six PostgreSQL round trips fewer per purchase and two reads made cheaper, each measured
  over alternated runs (bench/purchase-cost.sh, 10,000 fans) against the build before it:
  the settlement's sale, confirmation and event in one statement, the seat map read from the
  live seats alone (planned in half the time, run in two thirds) and the watchdog's wallet
  sample read by primary key instead of sorting every wallet: 7.93 and 8.26 ms a purchase
  against 8.50 and 8.60 ms. Then the payment row with its debit in one statement and
  payment-api's record of the confirmation with its inbox row, self-committing (measured
  together with mimalloc, above): 7.66, 7.83 and 9.01 ms against 8.22, 8.48 and 9.12 ms,
  payment-api and its PostgreSQL about 0.15 ms of it.
- An idle service cost 14–18 ms of CPU a second, 9 of them in rust-rdkafka's producer polling
  thread, which spins through the end of each 100 ms poll. The producer now has a polling
  thread of its own with one-second windows: the four services idle at 31 ms a second
  together instead of 62–63 (bench/purchase-cost.sh, its idle window), and spent 2.68 and
  2.75 ms of a purchase during the sale against 2.80 and 2.79.
- Some costs grow with the platform rather than the sale: batch's seat invariant check read
  every live reservation of every show still to come, every 15 s. On the machine these
  figures come from, after some 35 sales (175,000 such reservations), that was 260 ms of
  PostgreSQL a check idle and 1.3 s during a sale. It now reads every date every 10 minutes
  and, in between, only the concerts with reservations written since its last check (0.4 ms
  idle); PostgreSQL's CPU for batch during a sale went from 0.18–0.20 to 0.10 ms a purchase.
  That check of the changed concerts later grew too: the planner guessed 128 changed concerts
  for 2 or 3 and scanned every reservation and every SOLD seat (724,000 and 1.47 million
  after this round's sales), 500 ms a check; each concert's reservations and each date's
  seats are now read through their indexes in lateral subqueries, 42 ms (`EXPLAIN ANALYZE`,
  the same database). And batch's expiry sweep, every second, took the dead holds in id
  order: whenever the last `ANALYZE` of `reservations` had run during a sale, the planner
  expected 20,000 dead holds and walked the primary key through all 744,000 reservations
  (170 ms), and PostgreSQL for batch took 0.76–1.23 ms of each purchase in the four sales
  measured while those statistics lasted, against 0.13–0.31 otherwise. The sweep now takes
  the longest dead first, the order of its partial index: 0.3 ms whatever the statistics.
  The same sale sold out in 21–28 s and cost 6.8–9.1 ms per purchase over a dozen runs of
  one build, the later runs (more sales behind them) the dearer.
- The sale runs first, on a fresh stack, and waits until no seat is held by an earlier run.
  Run after the endpoint scenarios, as it was until this round, thousands of their holds
  ended during it and batch's expiry sweep was charged to the sale: PostgreSQL for batch and
  Redis took 0.65–1.1 ms of a purchase each, against 0.1–0.2 and 0.5 ms alone (the last file
  rendered that way said 10.21 ms a purchase; bench/purchase-cost.sh, 10,000 fans, 7.87 and
  7.93 ms). batch's own periodic work (the full seat check every 10 minutes, the money
  totals) still lands in some sales and not others: PostgreSQL for batch 0.8 ms a purchase
  in two runs of one build, 0.2 in the next two.
- A reservation no longer has foreign keys to its concert and schedule: each check locked
  the on-sale's one concert row `FOR KEY SHARE` at every hold (concurrent lockers share a
  MultiXact; each lock rewrites the row's header and writes WAL). The hold's SQL alone
  (pgbench-hold, 64 clients, same stack) went from 2,195 to 2,603 holds/s; through the
  platform the difference is within noise (hold-distinct 1,745 and 1,774 holds/s; the flash
  sale 7.89 and 7.96 ms a purchase with and without), because there every hold waits on far
  more than the database. pgbench-hold also connects without TLS now, like the services
  (libpq negotiated TLS with Debian's PostgreSQL): the ceiling is the database's, not the
  encryption's.
- What the commits' flushes cost: with `synchronous_commit = off` (for the measurement only:
  money is not written that way) PostgreSQL took 3.00 ms of a purchase instead of 3.52.
  Group commit (`commit_delay` 200 µs) did not take that back: PostgreSQL for concert-api
  1.87 and 1.86 ms a purchase with it, 1.88 and 1.80 without (alternated runs), so it was
  not kept.
- Threads, counted (`/proc/<pid>/task/*/status` over a sale): concert-api's tokio runtime
  threads (the consumer that settles payments, the outbox relay, the Redis connection's
  driver task, and the sockets of pooled connections opened there) switched out 29 times a
  purchase and spent 0.55 ms, its one actix worker 13 times and 0.42 ms; payment-api's 11
  and 8 times (0.26 and 0.24 ms). A request served on the actix worker reaches Redis through
  the driver task on the other runtime, a hand-off between threads each way, and a pooled
  PostgreSQL connection may be watched by either runtime. A Redis connection per thread,
  opened by the thread that first uses it (so the actix worker drives its own), is kept in
  users-api only, the fourth time it was tried; in concert-api and payment-api (the second
  time with a PostgreSQL pool of its own too, below) it was not. The first
  time concert-api's CPU went down (1.05, 1.03, 1.09 and 1.18 ms a
  purchase against 1.17, 1.20, 1.19 and 1.23, alternated runs), but its holds' p90 went up
  (four of 23 one-second samples at 300 ms or more, against one of 22), since replies now
  waited for the one busy worker thread; the pace admitted fewer fans, and three of four
  sales sold out 3–6 s later (27.8–30.7 s, and 24.7 s, against 23.8–24.9 s). The third time
  (bench/purchase-cost.sh, 10,000 fans, four pairs alternated) the same: thread switches a
  purchase fell from 33 to 14 in concert-api and from 11 to 3 in users-api, concert-api's CPU
  from 0.75–0.83 to 0.72–0.74 ms a purchase, the platform's total did not move (5.20–5.72
  against 5.46–5.71 ms), and the sales sold out later (15.9, 17.1, 18.9 and 17.6 s against
  16.1, 15.4, 16.9 and 16.5 s) with the machine less busy (1.72–1.83 cores against
  1.88–1.92). In users-api alone, whose requests the pace does not read, it lowered the
  join's p99 (472, 348 and 381 ms against 629, 586 and 504, three pairs, the sales as fast),
  but each worker then finds a dead connection only by failing a request on it: after Redis
  was cut or restarted, a request could still answer 503 once readiness (which had tried the
  connection of one worker) was back, and two fault tests of the end-to-end suite failed.
  The fourth time readiness asks every connection, and a command that fails for want of a
  connection, on any of them, has every thread open a new one at its next command (a
  platform test, after_redis_restarts_one_failed_request_and_every_worker_is_back, fails
  without that). Three pairs alternated (the same command): the join's p99 344, 342 and 621
  ms against 489, 738 and 423; sold out in 15.1, 15.5 and 16.1 s against 14.3, 15.4 and
  16.5; 4.88, 5.26 and 5.30 ms a purchase against 4.83, 5.11 and 5.42. Over the six pairs of
  the third and fourth tries, the join's p99 had a median of 364 ms against 545.
- Runs on this shared machine vary more than most changes. Compare builds over several
  runs each, alternated, and by their counters (statements, plans, buffers) more than by
  their times. The machine's own speed drifts: the load tool does the same work in every
  sale, yet its CPU went from 0.88 to 1.21 ms a purchase between runs minutes apart, and the
  platform's with it (6.8 and 8.5 ms for one build). bench/purchase-cost.sh prints the
  platform's CPU over the load tool's as a control for that drift. Three sales run one after
  another by bench/run.sh did the same work (35,523 to 35,777 PostgreSQL transactions, 615,000
  to 649,000 Redis commands) at 5.44, 6.07 and 6.40 ms a purchase, every process rising
  together, the load tool too (0.89 to 1.02 ms): so bench/run.sh measures three sales and
  shows the median one. Between sessions it drifts further: the same build's three sales
  measured 7.79–8.57 ms a purchase and 22.1–24.9 s one morning, and 4.41–4.66 ms and
  12.7–13.9 s two hours later on a host that reports the same processor.
- Tried and not kept: PCRE's JIT in nginx (`pcre_jit on`; the gateway runs a few regular
  expressions a request, its maps). nginx's CPU over 30,000 requests at 3,000 a second,
  alternated: 1.21 and 1.21 s without, 1.19 and 1.19 s with (the baseline's bare route); 1.30
  and 1.59 s without, 1.36 and 1.41 s with (the seat map). About 40 µs a proxied request,
  with or without.
- Tried and not kept: actix-web's router on the full `regex` crate (its `unicode` feature)
  instead of `regex-lite`, whose matcher (`PikeVM`) was the largest user-space symbol of
  concert-api's worker in perf during a sale (0.3 % of the machine). The seat-map scenario,
  10 s, alternated three times: 80,805, 86,015 and 94,559 requests at 92.6, 89.2 and
  80.1 µs of concert-api's CPU a request with `regex-lite`; 72,377, 72,515 and 72,784 at
  103.1, 102.3 and 102.9 µs with `regex`.
- A sold-out room sweeps its line until the fans who left have lapsed (the waiting idle
  timeout, 120 s): up to 256 heartbeat lookups a tick. The passes used to follow one another
  for those two minutes, looking again and again at fans whose heartbeats could not have
  lapsed yet: after each sale of 10,000 fans, about 6,000 Redis commands a second and 12 ms
  of Redis's CPU a second, which the next sale measured shortly after paid. A pass that
  reaches the end of the line now rests half the idle timeout before the next. A sale, then
  60 s at rest with its room's ~4,800 fans left in line (two pairs, alternated): Redis 11
  and 13 ms of CPU a second before, 8 and 7 after (3 with no room to sweep); its `EXISTS`
  calls 1,059 and 1,078 a second before, 143 after.
- Tried in the same round and not kept (bench/purchase-cost.sh, 10,000 fans, alternated
  pairs, each sale's platform CPU read against the load tool's own, whose work is the same in
  every sale): PostgreSQL over its Unix socket once more, 9.09 and 8.78 times the load tool
  against 8.96 and 8.94 over TCP, although pgbench's read-only round trip costs the machine
  33 µs over the socket against 58 over TCP; the status streams through users-api's main
  ports and nginx's idle connections instead of a new connection to the stream listener for
  each, 8.21 and 8.43 against 8.43 and 8.54; a stream at the front looking every 2 s instead
  of every second (`QUEUE_SSE_POLL_MS`), 35 % fewer frames (32,857 and 28,686 against 50,282
  and 43,206) for 9.15 and 8.86 against 8.85 and 8.18.
- Tried on 7 December in the evening and not kept (the same command and reading):
  - The services talking to Redis over its Unix socket (a `redis+unix://` REDIS_URL).
    redis-benchmark's GET costs Redis 5.7–6.4 µs over the socket against 8.2–9.1 over TCP,
    and the client 7.8–8.5 against 10.3–11.4. In a sale, three pairs: 8.46, 9.89 and 9.00
    times the load tool against 8.34, 8.55 and 9.05 over TCP. Redis's CPU was 0.52–0.60 of
    nginx's against 0.55–0.59. What the socket saves a round trip is smaller than what one
    sale differs from the next.
  - mimalloc 2 instead of 3 (the crate's `v2` feature; `_mi_page_malloc_zero` is 11 % of
    users-api's samples in perf during queue-join). queue-join, 10 s on a fresh stack, three
    pairs: users-api's CPU 1.24–1.28 of nginx's against 1.18–1.30, and 7,256–8,114 joins a
    second against 7,094–8,613.
  - PostgreSQL pools of 6 connections instead of 16 (`DATABASE_POOL_SIZE`). Two pairs:
    8.94 and 8.43 times the load tool against 8.93 and 8.72. PostgreSQL for concert-api was
    1.31–1.33 of nginx's CPU against 1.42. The sales sold out in 24.5 and 18.1 s against 13.9
    and 20.8 s: holds waited for a connection, and the pace admitted fewer fans.
- 7 December at night (bench/purchase-cost.sh, 10,000 fans, alternated pairs):
  - Kept: the admission window grows by 100 a second instead of 50 (`QUEUE_PACE_STEP`). The
    crowd's first seconds slow the checkout, so the window leaves them cut; at 50 a second it
    took 4–6 s to grow back to the 250–400 fans a busy sale keeps active, and the machine ran
    at 1.3–1.7 of its 2 cores meanwhile (/proc/stat every 250 ms, after 2 s at 2.0). Six
    pairs: sold out in 11.2, 11.3, 11.8, 12.1, 11.4 and 11.7 s against 11.6, 11.5, 12.1,
    12.4, 12.3 and 11.5 s; 3.71–4.12 ms a purchase against 3.64–4.17; worst p99 272–452 ms
    against 299–362.
  - Kept: the sell-out time is read on the database's clock, from the opening to the last
    confirmation. The watcher that decides the sale is over looks every 250 ms, and its
    moment was up to a look and a query late: one sale's last confirmation came 13.09 s
    after the opening (the opening read from the load tool's log every 5 ms) while the
    watcher said 13.40 s.
  - Not kept: admission ticks every 100 ms instead of 250 (`QUEUE_ADMIT_INTERVAL_MS`), so a
    slot a buyer leaves is given again sooner. With the step of 100, four pairs sold out in
    10.7–11.2 s (mean 11.0) against 11.1–12.2 (mean 11.5), but cost 3.78–3.97 ms a purchase
    against 3.50–3.99 (means 3.87 and 3.72) and had a worst p99 of 247–408 ms against 245–380
    (means 331 and 288): half a second of sell-out paid with two other targets.
  - Measured and left alone: the benchmark databases had grown to 1,234 concerts, 1.14 million
    seats and 2.6 GB over the weeks. On fresh databases (and an emptied Redis) three sales
    cost 8.44, 8.42 and 8.50 times the load tool against 8.55, 8.90 and 8.80 on the grown
    ones: 3 % or less, under one sale's spread.
- 8 December after midnight (bench/purchase-cost.sh, 10,000 fans, alternated pairs):
  - Measured what the commits' WAL flushes still cost a sale, with `synchronous_commit = off`
    (for the measurement only). The whole cluster, five pairs: sold out in 11.4, 9.8, 11.7,
    10.3 and 10.9 s (mean 10.8) against 12.4, 11.6, 11.8, 10.9 and 12.8 (mean 11.9); 3.37–4.07
    ms a purchase (mean 3.75) against 3.63–4.49 (mean 4.06). The concert database alone,
    three pairs: 10.5, 10.4 and 10.3 s against 11.3, 10.9 and 10.8; 3.55–3.62 ms against
    3.62–3.99. A flush here takes 81 µs (pg_test_fsync). The holds, payments and settlements
    keep waiting for theirs: a crash that forgot a hold could hand its reservation id out
    again (the id sequence's advance reaches the disk only with the flush of a transaction
    that used it), and a payment or a settlement must never be forgotten.
  - Not kept: the outbox relay's mark committed without waiting for its flush (its loss only
    sends the rows again, which the inbox absorbs). Three pairs sold out in 11.4, 12.3 and
    11.6 s against 11.6, 10.5 and 11.1; WAL flushes a sale (pg_stat_wal) 8,899–9,518 against
    9,467–9,914: a few hundred flushes fewer in a sale of about 9,500, too few to show.
  - Not kept: the window growing by 200 a second (`QUEUE_PACE_STEP=200`). Three pairs sold
    out in 11.0, 11.4 and 11.3 s against 11.7, 12.8 and 11.6, but the join's p99 rose to 303,
    457 and 348 ms against 249, 241 and 226: the admitted fans' checkout met the crowd's joins
    sooner. It trades the p99 target for most of a second of sell-out, and meets neither.
  - Not kept: a first window of 50 instead of 100 (`QUEUE_PACE_START=50`), so that fewer
    admitted fans shop while the crowd joins. Eleven pairs, in a slow hour of the machine (the
    load tool 0.42–0.60 ms a purchase): it sold out first in six of them, and the means were
    12.9 and 13.4 s; the worst p99 was lower in seven, 257–420 ms against 286–718. Within the
    sales' spread.
  - Not kept: nginx accepting the crowd's connections in bursts (`multi_accept on`) and only
    once their request has arrived (`listen … deferred`). Three pairs: nginx spent 1.30–1.31
    times the load tool's CPU against 1.32–1.35, and the sales sold out in 15.6, 12.2 and
    10.9 s against 13.7, 11.1 and 11.1.
  - The load tool, profiled over one sale (perf): parsing the answers' JSON is about a tenth
    of its samples, the rest is spread over hyper, tokio and the kernel, with no hot spot
    worth a change; it spends 0.41–0.48 ms a purchase.
- Tried and not kept, within that drift: mimalloc as the allocator of the services and the
  load tool (glibc's malloc is 7–10 % of a service's CPU in perf; 6.93 and 5.42 ms a purchase
  with glibc, 7.17 and 5.81 with mimalloc, alternated; tried a third time for the four
  services alone, 6.56 and 6.82 ms with glibc, 6.57 and 6.99 with mimalloc, the services'
  own rows 2–4 % lower in both pairs, the sales 18.3 and 19.2 s against 18.0 and 19.2 s;
  kept the fourth time, above: without transparent huge pages, large blocks left to glibc,
  and measured against nginx's CPU instead of the drifting milliseconds),
  and the services' main runtime on one
  thread (`current_thread`; queue-join 15,494 and 14,890 req/s before, 15,158 and 16,573
  after; hold-distinct 2,586 and 2,197 before, 2,366 and 2,256 after).
- A round trip to PostgreSQL costs the platform about 25 µs. The settlement's common case (the
  first delivery of a payment that buys its hold) is one self-committing statement now, four
  round trips fewer (BEGIN, the inbox row, the lock, COMMIT): concert-api 0.99 and 1.04 ms a
  purchase against 1.09 and 1.11, its PostgreSQL and the platform's total within noise
  (alternated runs). The ~20 round trips left per purchase are about half a millisecond.
- A broker started minutes before the sale pays for its JIT compiler in the first sales (perf:
  6.5 % of the machine's samples in its C2 compiler threads; the broker 1.20 and 1.04 ms a
  purchase in the first two sales, 0.38–0.60 after), so the benchmarks run a warm-up sale
  that is not measured before the measured one.
- Tried again this round and not kept: `DATABASE_POOL_SIZE` 4 (the pace saw the pool busy and
  admitted fewer fans: sold out in 33.4 s, and the platform's CPU over the load tool's
  rose); one tokio worker per service (platform over load tool 6.61 and 6.87 against 7.18
  and 7.09, services about 0.1 ms a purchase less: smaller than what batch's periodic checks
  add to one sale and not another).
- The worst endpoint's p99 and the sale's length pull against each other. 10,000 fans join and
  open their event streams in the first second (20,000 requests) while the first admitted
  fans start their checkout: over this round's 17 sales the joins' p99 was 270–820 ms and the
  worst endpoint's 320–850 ms. The one at 320 ms (`DATABASE_POOL_SIZE` 4, so the pace
  admitted fewer) sold out in 33.4 s; at the pace's 100 ms target the sales sold out in
  20.1–26.9 s with the worst p99 at 490–850 ms. Those first seconds leave no core idle
  (`perf record -a` over the first 3 s of a sale: 5,932 samples at 999 Hz on 2 cores), and
  no one process holds them: users-api 19 %, nginx 18.5 %, the load tool 16 %, PostgreSQL
  17 %, Redis 10 %, concert-api 9 %. A join takes a median of about 25 ms inside users-api
  (its request histogram) against 206 ms at the client, so most of the wait is for a core;
  only making a join and a stream's opening cheaper everywhere at once would bring the p99
  under 250 ms.
- The join row measures the load tool's connection pool as much as the platform. A flash
  sale keeps at most `--concurrency` requests in flight (1,000), and a join is timed from a
  free connection (closed loop), so while the crowd arrives its latency is about the pool's
  size over the joins answered a second (Little's law). One sale each, the same half hour
  (`FLASH_SALE_ARGS='--users 10000 --schedules 100 --concurrency N' bench/purchase-cost.sh`):
  500 connections, the joins' median 92 ms and p99 204 ms (the worst endpoint of that sale);
  1,000, 167–229 ms and 372–520 ms over three sales; 2,000, 381 and 812 ms; the sale's length
  14.4–16.1 s throughout. Neither the pace's target moved it (the joins' median 171 ms at 50
  ms, 204 ms at 200 ms, against 170–190 ms at 100 ms; at 50 ms the sale took 19.1 s instead
  of 15) nor a longer arrival (over 2 and 3 s: the joins' p99 538 and 562 ms). users-api's
  own threads were far from busy (sampled every half second over a sale's first 8 s: its
  actix worker at most 28 %, its stream port's thread 26 %): the requests wait for a core.
  What a fan waits, from its arrival to its place in line, counting the wait for a
  connection, is the row `fan: arrival → in line`: a median of 445 ms and a p99 of 810 ms in
  a sale whose join row said 167 and 372 ms. A smaller pool would pass the p99 target
  without any fan waiting less; what it needs is joins served faster while the crowd
  arrives.
- An on-sale meets statistics that know nothing of its concert or its buyers: the planner
  then takes any index that starts with the concert as readily as the buyer's own. The
  purchase limit's lookup reads only the buyer's reservations (`concert_id + 0`); read by
  concert, every hold read every reservation of the sale so far (8 ms a hold at the end).
  The schedule list counts each schedule's own seats for the same reason.
- Tried and not kept: a stream at position `p` looking every `ceil(p / 250)` seconds instead
  of `ceil(p / 1000)` (users-api's `FRONT`), so fans behind the first 250 hear of their
  progress less often. It halved the status frames (22,231 to 31,576 a sale against 49,504 to
  62,452) and users-api's CPU fell by about 0.1 ms a purchase in each of four alternated
  pairs, but the platform's total stayed within the machine's drift (5.57, 6.78, 8.49 and
  5.99 ms a purchase against 6.08, 6.14, 7.58 and 6.74): not worth the fans' coarser view.
- Some costs grow with the sale's length rather than its size — the streams' position
  frames, the organiser's view once a second, the invariant watchdog — so a slow sale pays
  more of them per purchase.
- payment → CONFIRMED crosses three processes and the broker: outbox relay, Kafka, the
  settlement transaction, and its own outbox for the confirmation.
- The one-statement settlement found its reservation through the `held_until` partial index
  (`status = 'HELD' AND held_until >= paid_at`): every hold of the sale lies minutes ahead, so
  each settlement walked them all, filtering by id (170 buffers a settlement over a sale,
  pg_stat_statements). Found by key now (68 buffers): PostgreSQL for concert-api 1.92 and
  1.95 → 1.78 and 1.78 ms a purchase (bench/purchase-cost.sh, alternated runs).
- A sold-out room kept its whole line in Redis and was ticked four times a second for good:
  after a day of benchmark sales 26 of them ran 104 admission scripts a second during every
  sale (redis-cli MONITOR). Its ticks now let go of the fans who stopped listening, 256
  places a tick, and the empty room is no longer ticked.
- Where the CPU goes, by the kernel's own accounting (utime and stime of every thread over
  one sale): the platform 4.8 ms a purchase in user space and 2.4 in the kernel. perf put two
  thirds of the services' samples in the kernel: in this VM it samples on a timer, and a
  sample taken with interrupts off lands where they are turned back on.
- Tried this round and not kept: batched Kafka fetches (`fetch.wait.max.ms` 25 with
  `fetch.min.bytes` 64 KiB, so that a fetch carries several events): the broker 0.56 and
  0.40 ms a purchase against 0.48 and 0.40 (alternated runs), no saving to trade the
  confirmation's latency for. A later round batched only the consumers nobody waits on
  (payment-api's record of the verdict, users-api's retiring of the pass: 8 KiB or the
  300 ms wait they already had), and a fetch answered per message had carried one event
  each: the broker 0.40 and 0.41 ms a purchase against 0.51 to 0.54, payment-api and
  users-api about 0.05 ms less each; all three consumers batched, the broker 0.34 and 0.35,
  but a lone payment would then wait 300 ms for its confirmation. concert-api's settlement
  is still answered per message.
- batch's money check sums every wallet and the open month of the ledger once a minute:
  about 0.5 s of CPU on the machine these figures come from (1.47 million wallets, 2.3
  million ledger rows this month, most of them made by earlier benchmark runs), with or
  without its parallel workers. A sale of 16 s has it inside its window about one time in
  four; it then shows as a row of exited PostgreSQL backends (its parallel workers) of 0.1
  to 0.25 ms a purchase.
- At rest the stack spends about 150 ms of CPU a second (bench/purchase-cost.sh, its idle
  window), a sale of 25 s thus about 0.7 ms of each purchase. Its largest part is batch's
  watchdog: every 15 s it sums the open month of the ledger for the money check, a parallel
  scan (two worker processes forked each time) of 2.5 million rows on the machine these
  figures come from, 330 ms (`EXPLAIN ANALYZE`); PostgreSQL for payment-api spent 33 ms a
  second at rest. It grows with the month until the archive job closes it; closing days
  instead of months would bound it. (The check runs once a minute now, above. A later idle
  window measured 141 ms a second: the broker 37 of it, 24 with the services stopped, and
  Redis 20, most of it the sweep of the last sale's sold-out room.)
- Half of the outbox relays' looks found nothing (pg_stat_statements over two sales): a wake
  comes just before the writer's commit and the relay looked at once, and every batch was
  followed by one more look. The relay now waits 2 ms before a woken look and stops after a
  batch short of its limit: empty looks 2,122 → 1,044 (concert) and 2,480 → 875 (payment),
  each a transaction of three round trips; the CPU this saves is within a sale's noise.
- Tried again and not kept: concert-api's HTTP worker with a PostgreSQL pool and a Redis
  connection of its own, opened on the worker's thread, so that no round trip passes between
  the worker's thread and the runtime's. concert-api's own CPU falls (0.88 and 0.94 ms a
  purchase against 1.09 and 1.11), but the sale took 41.6 and 48.9 s against 30.6 and 30.1 s.
  What waits was found this round, with timings inside the hold: the holds that took 50 ms or
  more spent most of it getting a pooled connection (median 97 ms against 53 ms with the
  shared pool), and the admission pace, which holds the holds' p90 near 100 ms, admitted
  fewer fans. The machine's two cores are shared by many busy threads (nginx, PostgreSQL's
  backends, the broker, the load tool, the services); one thread doing all of concert-api's
  work gets a smaller share of them than three do, and every connection it holds waits for
  it. A larger pool does not help (`DATABASE_POOL_SIZE` 32:
  31.8 and 32.0 s against 31.0 and 29.3 s at 16): the connections are busy with a client
  waiting for a core, not with PostgreSQL. The same for the hold's three foreign-key checks
  and two of the eight indexes of `reservations`, dropped by hand: pgbench-hold 2,680 tx/s
  against 2,833 and 3,032 without the checks, 2,622 and 3,029 without the indexes —
  pgbench's own noise, not worth the guarantees.
- A short transaction costs more in round trips than in work: `loadtest round-trips` (BEGIN,
  SELECT 1, COMMIT through a one-connection pool, CPU from /proc) measures about 400 µs of
  wall time, 215 µs of the client's CPU and 140 µs of the backend's on this machine. The
  pool tested every connection it handed out with a round trip of its own; it now tests only
  one idle for a second or more, which saves about 45 µs of the client's CPU and 25 µs of
  the backend's per transaction, some eight transactions a purchase. Issuing the statements
  from the thread that reads the socket would save another 85 µs of the client's (the
  worker-pool trial above), and the pool's test of each connection it takes back cannot be
  turned off (sqlx 0.9).
- What one purchase's PostgreSQL time is (pg_stat_statements, two sales): the hold's claim and
  the settlement, 0.6 ms each, are two thirds of it for concert-api; each writes about 20 WAL
  records, as every status change of a seat or a reservation is a new row version in each of
  their indexes (reservations has eight and none of its updates can be HOT).
- A seat's updates are HOT now (the new row version on its page, no index entry): `seats`
  lost its two partial indexes on the columns a hold changes (`held_until`,
  `reservation_id`) and keeps a fifth of each page free; seats are found by reservation
  through `reservation_seats`, and the expiry sweep reaches dead seats through their
  reservations. pgbench-hold (64 clients, 10 s, the two in turn, the indexes put back by
  hand for the runs before) made 3,245, 3,493 and 3,411 holds/s against 2,881, 3,148 and
  3,067 with them. In six
  alternated sales (bench/purchase-cost.sh, 10,000 fans; every seat update of the sales HOT
  by pg_stat_user_tables) PostgreSQL for concert-api spent 1.25-1.32 times nginx's CPU
  against 1.27-1.41 before, about 0.05 ms a purchase; the whole platform 5.71-6.29 times
  nginx's against 6.03-6.29, within the sales' spread.
- Where a purchase's time goes, by what the platform runs (the build before the catalogue
  copies and the regex route matching below, `bench/purchase-cost.sh`, 10,000 fans, two
  sales): in PostgreSQL (pg_stat_statements) the hold's claim 1.19 ms of wall time a call
  and 14 WAL records, the
  payment 0.68 ms and 19, the settlement 0.41 ms and 20 a reservation (in batches of about
  ten), the seat map 0.19 ms (1.16 reads a purchase); a commit's fdatasync here is 124 µs,
  a third of it system CPU (pg_test_fsync). In Redis (every command in the slow log over one
  run) the scripts are nine tenths of its command time: the status stream's opening look
  19,915 calls at 57 µs, the join 10,071 at 58, the pass check 16,618 at 33, the inventory
  update 9,269 at 54, the catalogue read 6,116 at 68, admission's ticks 1,201 at 272, the
  sessions' GETEX 51,757 at 4.8 (wall time inside Redis on a busy machine; at rest the
  inventory update takes 18.7 µs and a script that only returns 4.9). The broker spends
  31 ms of CPU a second at rest, half of it in its network threads. perf over 10 s of a
  sale (-a, 499 Hz): PostgreSQL 35 % of the samples, the services' workers 23 %, nginx 9 %,
  the broker 7 %, the load tool 7 %, Redis 6 %, idle 12 %; the kernel's network code about
  a tenth of all of them.
- A schedule list (100 dates, 18 KiB) went from Redis through Lua to concert-api for every
  fan that read it, about 1.2 times a purchase, though it only changes every 2 s or at an
  admin write. Each process now keeps the bodies it read, no longer than their Redis entry
  lives, and the read script sends only the version when the caller's copy is current. Redis
  CPU for one such read (20,000 in a row, INFO cpu): 98 µs before, 53 µs after. Three
  alternated pairs of sales (bench/purchase-cost.sh, 10,000 fans): the whole platform 6.70,
  6.54 and 6.49 times nginx's CPU against 6.84, 6.73 and 6.76 before, Redis and concert-api
  within the sales' spread.
- Route matching in the services used regex-lite (actix-web without its `unicode` feature):
  0.42 % of the machine's samples during a sale (perf, as above), 0.11 % with the regex crate.
- Group commit was tried (`commit_delay` 200 µs): a fifth fewer WAL flushes (15,884 and
  16,166 against 20,506 and 19,924 over a run), PostgreSQL's CPU against nginx's within the
  spread (1.36 and 1.38 for concert-api against 1.39 and 1.41), payment → CONFIRMED p99 327
  and 304 ms against 443 and 186. Not kept.
- The run of 7 December, 15:11 (the catalogue copies and the regex route matching) met the
  slowest machine yet: the baseline's bare route 11,704 req/s against 31,902 in the run
  before, and its speed moved by half from one sale to the next. An hour earlier
  (bench/purchase-cost.sh, 10,000 fans; nginx 0.66-0.72 ms a purchase then, 1.19 in that
  run) the build with the catalogue copies but the old route matching sold out in 13.1,
  14.1 and 15.0 s at 4.51, 4.69 and 4.41 ms a purchase (worst endpoint p99 318, 297 and 262
  ms), the build before it in 12.9, 13.8 and 15.4 s at 4.32, 4.74 and 4.82 ms; a first
  `bench/run.sh` run of the catalogue build, half an hour before that one (baseline 24,875
  req/s), sold out in 21.2 s at 6.55 ms.
- The organiser's sale view reads every reservation of the concert: 9 ms and 5,600 buffers a
  poll at 10,000 reservations, growing with the concert.
- The rows a hold writes have no foreign keys any more (`seats.reservation_id`, both columns
  of `reservation_seats`): their checks were three queries a hold, two of them locking the new
  reservation row. pgbench-hold (64 clients, 10 s, without and with the keys in turn, three
  times): 4,721, 5,253 and 4,866 holds/s against 3,984, 4,415 and 4,086, 18 % more. What they
  guarded holds by construction (DESIGN.md, the concert database), and batch's seat check
  counts a SOLD seat whose reservation is missing.
- Every admitted fan reads a date's seat map (1.25 reads a purchase, with the retries after a
  lost race), the same rows for all of them. concert-api now keeps each date's map for 250 ms
  from when its read began, one read at a time, with the seats it has seen taken since laid
  over it (a fan's own hold shows at once). Alternated sales (bench/purchase-cost.sh, 10,000
  fans, the build before and after): the concert database's transactions 4.44 and 4.60 a
  purchase before, 3.77 and 3.83 after; CPU per purchase 6.22 and 6.89 ms before, 5.37 and
  6.49 after; the seat map's p50 at the client 71 and 81 ms before, 40 and 46 after. The
  seat-map scenario went from 4,017 and 3,613 to 9,491 and 10,534 requests/s. Keeping maps
  1 s (and the seats held here as long) took the transactions to 3.54 and 3.58, inside the
  noise of the sale's CPU (7.62 against 7.62 ms, 6.61 against 5.34), so it was not kept.
- A buyer reads its reservation after paying until it says CONFIRMED (about once a
  purchase). CONFIRMED is final, so concert-api now keeps each reservation it confirms (the
  settlement's statement returns the row) and answers the owner's read from that copy.
  Alternated sales (the same command): the concert database's transactions 3.82 and 3.87 a
  purchase before, 2.90 and 2.87 after; that read's p50 80 and 87 ms before, 63 and 43 after,
  its p99 703 and 637 ms before, 268 and 208 after. The CPU per purchase did not move beyond
  the runs' drift (platform over load tool 9.22 and 8.79 before, 9.20 and 8.90 after): a
  primary-key read is cheap next to everything else a purchase costs.
- The sale's window used to run about 7 s past its last fan: after the room said SOLD_OUT the
  load tool gave the fans still in line 5 × `--poll` + 2 s to be told, even when every one of
  them had been told and gone home, and only then said the sale was over. Every CPU figure per
  purchase before this round was charged that idle stack (at 140-160 ms of CPU a second, about
  0.2 ms a purchase), and the window said 26.9 s for a sale the load tool measured at 20.1 s.
  The grace now ends as soon as the last fan is done (the same command: 22.4 s window, 22.4 s
  sale).
- Tried and not kept: the broker on the serial collector instead of G1 (a 512 MiB heap on two
  cores). A fresh broker, one warm-up sale, then the measured one, alternated: the broker 0.97
  and 1.14 ms a purchase with the serial collector, 1.12 and 1.20 with G1, within the runs'
  drift. A broker started just before the sale costs 1.0-1.2 ms a purchase across four such
  runs against 0.33-0.6 once it has run a few sales: its JIT compiler, not its collector.
- The broker runs on the JIT's first tier only (`-XX:TieredStopAtLevel=1`, in
  deploy/local/kafka-node.sh): C2 spent more of the two cores compiling it than it saved at a
  few hundred messages a second. Three sales each, after a warm-up sale, on a freshly started
  broker (`SCENARIOS=flash-sale bench/run.sh`): the broker 0.33, 0.33 and 0.40 ms a purchase
  with C1 only, 0.71, 0.48 and 0.53 with both tiers; the platform 4.29, 4.39 and 5.14 ms
  against 4.66, 4.41 and 4.50 (the third C1 sale ran on a slower minute of the host: every
  row rose by about 15 %).
- The admission pace is not what holds the sale back. Watched through one sale (the room's
  window and active passes in Redis every 200 ms, `vmstat 1`): the window starts at 85-100
  and reaches 250-500 by the end, and from the second second on the machine is busy (0-11 %
  idle, a third of it kernel time, 17,000-26,000 context switches a second). A wider window
  would only lengthen the queues in front of the same two cores.
- Tried again and not kept: two actix workers a service (`HTTP_WORKERS=2`), alternated with
  one: the services 2.06 and 2.09 times nginx's CPU against 1.81 and 1.86, sold out in 15.2
  and 15.9 s against 14.1 and 13.5 s. And the status streams on users-api's main port
  (`USERS_API_STREAM_PORT=`), through the gateway's pool of idle connections: nginx 0.89 ms
  a purchase either way.
- Measured and not pursued: the gateway's hop to a service over a Unix socket instead of
  loopback TCP. nginx proxying to an nginx `return 200` on the same machine spent 23-25 µs a
  request with the socket against 30-33 µs with TCP; at about ten requests a purchase that is
  about 0.1 ms of 4.5-5, and a Kubernetes deployment (services in other pods) has no use for
  it.
- The load tool runs on one thread (`loadtest run --threads`, default 1). On two, perf put
  12 % of its samples in context switches. Three alternated pairs of sales
  (bench/purchase-cost.sh, 10,000 fans): the tool spent 0.48-0.55 ms of CPU a purchase on one
  thread against 0.63-0.67 on two. Fans got into line sooner: the row `fan: arrival → in
  line` had a p50 of 226-462 ms against 445-486 and a p99 of 525-895 against 982-1,205. The
  join's p99 was 289-389 ms against 414-645. The endpoint scenarios, one run each way, twice:
  baseline 30,453 and 28,038 req/s against 25,036 and 27,121; hold-distinct 2,243 and 2,469
  holds/s against 2,008 and 2,004.
- Tried this round and not kept, each within the runs' spread (three alternated sales each,
  the same command):
  - nginx's `reuseport` on the public listener: nginx 0.79, 0.76 and 0.76 ms a purchase
    against 0.77, 0.79 and 0.72 without;
  - `multi_accept on`: 0.71, 0.75 and 0.75;
  - one tokio worker a service (`TOKIO_WORKER_THREADS=1`), a third try: 3.95, 4.14 and
    3.98 ms a purchase against 4.16, 3.93 and 4.07.";

pub fn render(paths: &[PathBuf]) -> anyhow::Result<String> {
    Ok(render_reports(&load(paths)?))
}

fn render_reports(reports: &[Report]) -> String {
    let run = Run::new(reports);
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `bench/run.sh` from the JSON reports of `loadtest` (the `loadtest/` crate); \
         do not edit the figures by hand — run it again.\n"
    );
    // The earliest report: the order they are shown in is not the order they ran in.
    if let Some(first) = reports
        .iter()
        .min_by(|a, b| a.started_at.cmp(&b.started_at))
    {
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
         target/release/loadtest run <scenario> --help  # one scenario by hand, against a running stack\n\
         bench/pgbench-hold.sh OUT.json                 # the hold's SQL alone, against a running stack's PostgreSQL\n\
         bench/purchase-cost.sh                         # what one purchase costs, in more detail\n```\n"
    );
    let _ = writeln!(
        out,
        "`bench/run.sh` restarts the local stack (`deploy/local/stack.sh`) with the settings each \
         scenario lists below (the gateway's per-address limits raised: all load comes from one \
         address). The flash sale runs first, on a freshly started stack of its own (so that its \
         memory figures are its own and no other scenario's holds expire during it), after a \
         warm-up sale of the same size that is not measured (a platform that has been running: \
         the broker's JIT compiler, PostgreSQL's caches, the pools), under \
         `bench/purchase_cost.py`, which reads the CPU time of every process of the stack when \
         the sale opens and when it is over and writes the CPU per purchase into the sale's \
         report. It measures several sales one after another (`FLASH_SALE_RUNS`, three by \
         default), since one varies from the next by more than most changes we measure: the \
         figures below are those of the sale with the median sell-out time, and \"Sale by \
         sale\" lists every one. The endpoint scenarios follow on another fresh stack. Right after \
         hold-distinct it runs `bench/pgbench-hold.sh`: the hold's SQL through pgbench against \
         the same PostgreSQL, on a throwaway concert it removes afterwards — the ceiling the \
         holds are read against. Setup (accounts, sessions, money, passes) is never measured.\n"
    );
    headline(&mut out, &run);
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| scenario | target | measured | |");
    let _ = writeln!(out, "|---|---|---|---|");
    for t in targets(&run) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            t.measured,
            met(t.met)
        );
    }
    if let Some(sales) = run.find(FLASH_SALE).and_then(|(_, f)| f.sales.as_deref()) {
        sales_table(&mut out, sales);
    }
    if let Some(cpu) = run
        .find(FLASH_SALE)
        .and_then(|(_, f)| f.cpu_ms_per_purchase.as_ref())
    {
        cpu_table(&mut out, cpu);
    }
    let _ = writeln!(out, "\n{LIMITS}");
    let _ = writeln!(out, "\n## Every endpoint\n");
    latency_clocks(&mut out, reports);
    let _ = writeln!(
        out,
        "| scenario | endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | answers |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    for r in reports {
        for e in &r.endpoints {
            row(&mut out, &r.scenario, e);
        }
    }
    ratios(&mut out, &run);
    for r in reports {
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
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn endpoint(name: &str, requests: u64, per_second: f64, p99: f64, status: &str) -> Value {
        json!({
            "name": name, "requests": requests, "per_second": per_second,
            "p50_ms": p99 / 2.0, "p95_ms": p99 * 0.9, "p99_ms": p99, "max_ms": p99 * 2.0,
            "statuses": {status: requests}, "codes": {},
        })
    }

    fn latency(name: &str, p99: f64) -> Value {
        json!({
            "name": name, "requests": 5000, "per_second": 0.0,
            "p50_ms": p99 / 2.0, "p95_ms": p99 * 0.9, "p99_ms": p99, "max_ms": p99 * 2.0,
            "statuses": {}, "codes": {},
        })
    }

    const CLOSED: &str = "from the sending (closed loop: a request waits for the previous answer, \
                          so queueing before it is not seen)";

    fn report(scenario: &str, endpoints: Vec<Value>, extra: Value) -> Report {
        let mut r = json!({
            "scenario": scenario,
            "started_at": "2026-12-03T08:00:00Z",
            "measured_seconds": 10.0,
            "settings": {"machine": "2 cores × test", "latency clock": CLOSED},
            "endpoints": endpoints,
            "latencies": [],
            "memory": [],
            "audit": [{"name": "all good", "ok": true, "detail": "-"}],
            "facts": {},
        });
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        serde_json::from_value(r).unwrap()
    }

    /// A run as an older loadtest saved it: no figures anywhere.
    fn old_run() -> Vec<Report> {
        vec![
            report(
                "baseline",
                vec![endpoint("GET /bench/live", 300_000, 30_000.0, 6.8, "200")],
                json!({}),
            ),
            report(
                "hold-distinct",
                vec![endpoint(
                    "POST /api/reservations",
                    9_000,
                    900.0,
                    120.0,
                    "201",
                )],
                json!({}),
            ),
            report(
                "flash-sale",
                vec![
                    endpoint(
                        "GET /api/queue/tokens/{token}",
                        70_000,
                        1_300.0,
                        300.0,
                        "200",
                    ),
                    endpoint("organiser: sale view", 50, 1.0, 2_000.0, "200"),
                ],
                json!({
                    "settings": {"users": "10000", "latency clock":
                        "from the sending (each fan sends its next request after the previous answer)"},
                    "latencies": [latency("payment → CONFIRMED (database clock)", 450.0)],
                    "facts": {
                        "seats": "5000",
                        "seats bought (CONFIRMED seen by the buyer)": "5000",
                        "sell-out time (every seat SOLD in the database)": "9.5 s",
                    },
                }),
            ),
        ]
    }

    fn target_line<'a>(md: &'a str, goal: &str) -> &'a str {
        md.lines()
            .find(|l| l.starts_with('|') && l.contains(goal))
            .unwrap_or_else(|| panic!("no target {goal:?} in\n{md}"))
    }

    #[test]
    fn a_run_saved_without_figures_renders_from_its_rows() {
        let md = render_reports(&old_run());
        let sell_out = target_line(&md, "sell out 10,000 fans / 5,000 seats in ≤ 10 s");
        assert!(
            sell_out.contains("sold out in 9.5 s (526 purchases/s)"),
            "{sell_out}"
        );
        assert!(sell_out.ends_with("| met |"), "{sell_out}");
        // The organiser's screen is not an endpoint of the target.
        let worst = target_line(&md, "p99 < 250 ms on every endpoint");
        assert!(
            worst.contains("worst p99 300.0 ms (GET /api/queue/tokens/{token})"),
            "{worst}"
        );
        assert!(worst.ends_with("| **missed** |"), "{worst}");
        let confirmed = target_line(&md, "payment → CONFIRMED p99 < 500 ms");
        assert!(
            confirmed.contains("p99 450 ms (database clock, n = 5000)"),
            "{confirmed}"
        );
        assert!(confirmed.ends_with("| met |"), "{confirmed}");
        let cpu = target_line(&md, "total CPU per purchase ≤ 4 ms");
        assert!(cpu.ends_with("| not measured |"), "{cpu}");
        assert!(!md.contains("### CPU per purchase"));
        // Without pgbench-hold, the holds are read against the baseline as before.
        let holds = target_line(&md, "≥ 2,500 holds/s or ≥ 25 % of the pgbench hold ceiling");
        assert!(
            holds.contains("900 holds/s (no pgbench-hold report"),
            "{holds}"
        );
        assert!(holds.ends_with("| **missed** |"), "{holds}");
        assert!(
            md.contains("| hold-distinct | 900 req/s | baseline 30000 req/s | 3 % |"),
            "{md}"
        );
        // Each scenario's latency clock.
        assert!(
            md.contains("- baseline, hold-distinct — **closed loop**: from the sending"),
            "{md}"
        );
        assert!(
            md.contains("- flash-sale — **closed loop**: from the sending (each fan"),
            "{md}"
        );
    }

    #[test]
    fn a_run_with_figures_renders_them_with_the_pgbench_ceiling_and_the_cpu_table() {
        let mut run = old_run();
        let sale = run.iter_mut().find(|r| r.scenario == FLASH_SALE).unwrap();
        // The figures as saved win over the rows: the sale's report says 8 s, the facts 9.5.
        sale.figures = Some(Figures {
            fans: Some(10_000),
            seats: Some(5_000),
            sell_out_seconds: Some(8.0),
            purchases_per_second: Some(625.0),
            fans_admitted_after_sell_out: Some(0),
            worst_endpoint: Some("POST /api/reservations".into()),
            worst_endpoint_p99_ms: Some(240.0),
            payment_to_confirmed_p99_ms: Some(450.0),
            payment_to_confirmed_row: Some("payment → CONFIRMED (database clock)".into()),
            cpu_ms_per_purchase: Some(CpuPerPurchase {
                total: 3.5,
                per_process: [
                    ("concert-api", 1.0),
                    ("postgres, for concert-api", 2.0),
                    ("redis", 0.5),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            }),
            ..Figures::default()
        });
        let mut pgbench = report(
            "pgbench-hold",
            vec![endpoint(
                "pgbench hold (claim_free)",
                30_000,
                3_000.0,
                40.0,
                "committed",
            )],
            json!({"settings": {"latency clock": "from the sending (closed loop: pgbench)"}}),
        );
        pgbench.figures = Some(Figures::default().complete(
            &pgbench.scenario,
            &pgbench.endpoints,
            &pgbench.latencies,
        ));
        run.insert(2, pgbench);
        let md = render_reports(&run);
        assert!(
            target_line(&md, "sell out 10,000").contains("sold out in 8.0 s (625 purchases/s)")
        );
        assert!(target_line(&md, "p99 < 250 ms on every endpoint").ends_with("| met |"));
        let cpu = target_line(&md, "total CPU per purchase ≤ 4 ms");
        assert!(cpu.contains("3.50 ms") && cpu.ends_with("| met |"), "{cpu}");
        // The per-process table, dearest first, then the total.
        let table = md.split("### CPU per purchase").nth(1).unwrap();
        let pg = table.find("| postgres, for concert-api | 2.00 |").unwrap();
        let api = table.find("| concert-api | 1.00 |").unwrap();
        let total = table.find("| **total** | **3.50** |").unwrap();
        assert!(pg < api && api < total, "{table}");
        // hold-distinct against the pgbench ceiling: 900 of 3000 is 30 %.
        let holds = target_line(&md, "holds/s or ≥ 25 % of the pgbench hold ceiling");
        assert!(
            holds.contains("900 holds/s, 30 % of 3000 tx/s (pgbench-hold)"),
            "{holds}"
        );
        assert!(holds.ends_with("| met |"), "{holds}");
        assert!(
            md.contains("| hold-distinct | 900 holds/s | pgbench-hold 3000 tx/s | 30 % |"),
            "{md}"
        );
        assert!(
            md.contains("| flash-sale | 625 purchases/s | pgbench-hold 3000 tx/s | 21 % |"),
            "{md}"
        );
        assert!(
            md.contains("| pgbench-hold | pgbench hold (claim_free) | 30000 | 3000 |"),
            "{md}"
        );
        assert!(md.contains("- CPU per purchase: 3.50 ms"), "{md}");
        assert!(md.contains("## pgbench-hold"), "{md}");
        assert!(!md.contains("### Sale by sale"), "one sale: no table");
    }

    #[test]
    fn several_sales_are_listed_in_the_order_they_ran_with_the_one_shown_marked() {
        let mut run = old_run();
        let sale = run.iter_mut().find(|r| r.scenario == FLASH_SALE).unwrap();
        let one = |sell_out: Option<f64>, cpu: f64, shown: bool| SaleFigures {
            sell_out_seconds: sell_out,
            cpu_ms_per_purchase: Some(cpu),
            worst_endpoint_p99_ms: Some(300.0),
            payment_to_confirmed_p99_ms: None,
            shown,
        };
        sale.figures = Some(Figures {
            sell_out_seconds: Some(17.0),
            sales: Some(vec![
                one(Some(19.25), 6.1, false),
                one(Some(17.0), 5.25, true),
                one(None, 5.5, false),
            ]),
            ..Figures::default()
        });
        let md = render_reports(&run);
        let table = md.split("### Sale by sale").nth(1).unwrap();
        let table = table.split("\n#").next().unwrap();
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(
            rows[1..],
            [
                "| 1 | 19.2 s | 6.10 ms | 300.0 ms | — |",
                "| 2 (shown) | 17.0 s | 5.25 ms | 300.0 ms | — |",
                "| 3 | not sold out | 5.50 ms | 300.0 ms | — |",
            ],
            "{table}"
        );
        assert!(
            md.contains("sold out in 17.0 s (526 purchases/s), the median of 3 sales measured."),
            "{md}"
        );
        assert!(
            md.find("### Sale by sale").unwrap() > md.find("## Targets").unwrap(),
            "after the targets it qualifies"
        );
    }
}
