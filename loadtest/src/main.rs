//! `loadtest`: load scenarios against the platform through its gateway, and the flash-sale
//! benchmark with its invariant audit. See docs/BENCHMARKS.md.
//!
//!   loadtest run flash-sale --json .bench/flash-sale.json
//!   loadtest markdown .bench/*.json > docs/BENCHMARKS.md

mod audit;
mod drive;
mod faults;
mod fixture;
mod http;
mod markdown;
mod scenarios;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::config::Env;

use crate::drive::Load;
use crate::scenarios::{Knobs, Scenario};
use crate::stats::{Recorder, Report};

/// The fault log's format, for `--help`.
const FAULT_LOG_HELP: &str = "\
Fault log (run --fault-log PATH), written by a drill such as bench/crash-drill.sh and read once
at the end of the run: one window a line, `START_UNIX_MS END_UNIX_MS LABEL`, END `-` while the
window is still open (it then lasts to the end of the run); blank lines and `#` comments are
skipped. E.g. `1764031200123 1764031206456 concert-api killed`. Error answers (5xx, no answer,
other non-2xx except 409) whose request was in flight during a window, or up to
--fault-margin-secs after its end, are reported apart; flash-sale's \"no 5xx\" check counts only
the others.";

#[derive(Parser)]
#[command(
    about = "Load scenarios and the flash-sale benchmark of the ticketing platform",
    after_help = FAULT_LOG_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario through the gateway and print (and optionally save) its report.
    Run(RunArgs),
    /// Render saved JSON reports as docs/BENCHMARKS.md (to standard output).
    Markdown {
        /// Reports written by `run --json`.
        reports: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    scenario: Scenario,
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Connections (and closed-loop workers). Default: 1000 for hold-contended and
    /// flash-sale, else 64.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seconds of measured load (not flash-sale, which runs until sold out).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests a second over all workers (default: as fast as answers come).
    #[arg(long)]
    rate: Option<f64>,
    /// Accounts to make. Default: 10000 for flash-sale, 5000 for queue-join, else 2000.
    #[arg(long)]
    users: Option<usize>,
    /// Schedules (flash-sale: of --seats-per-schedule seats; hold-distinct: of 1000 seats).
    #[arg(long, default_value_t = 100)]
    schedules: usize,
    #[arg(long, default_value_t = 50)]
    seats_per_schedule: u32,
    /// baseline: the bare path the benchmark gateway routes to a service's /health/live.
    #[arg(long, default_value = "/bench/live")]
    baseline_path: String,
    /// flash-sale: a waiting fan polls at most this often (milliseconds).
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// flash-sale: the crowd arrives spread over this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    arrival_ms: u64,
    /// flash-sale: give up after this many seconds if not sold out.
    #[arg(long, default_value_t = 600)]
    max_duration: u64,
    /// flash-sale: a fan who paid stops waiting for CONFIRMED after this many seconds.
    /// Default: PAYMENT_SETTLE_DIRECT_AFTER_SECS + 10 (by then the platform must have settled).
    #[arg(long)]
    confirm_timeout_secs: Option<u64>,
    /// Fault windows to read at the end of the run (format: see `loadtest --help`); errors in
    /// them are reported apart from the rest.
    #[arg(long)]
    fault_log: Option<PathBuf>,
    /// How long after a fault window's end its stragglers (requests sent while the service
    /// was coming back, a connection pool refilling) still count as inside it.
    #[arg(long, default_value_t = 5)]
    fault_margin_secs: u64,
    /// Also write the report here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The margin the settlement check and a waiting fan give the platform's backstop beyond
/// `PAYMENT_SETTLE_DIRECT_AFTER_SECS`: a tick of the reconciliation and the settling itself.
const SETTLE_MARGIN: Duration = Duration::from_secs(10);

/// The platform's settings worth naming next to the figures, from this process's environment
/// (bench/run.sh exports the same values to the stack it starts).
const PLATFORM_SETTINGS: [&str; 10] = [
    "GATEWAY_AUTH_RATE",
    "GATEWAY_QUEUE_RATE",
    "GATEWAY_QUEUE_BURST",
    "QUEUE_MAX_ACTIVE",
    "QUEUE_ADMIT_PER_TICK",
    "QUEUE_ADMIT_INTERVAL_MS",
    "HTTP_WORKERS",
    "DATABASE_POOL_SIZE",
    "CONSUMER_CONCURRENCY",
    "CATALOGUE_CACHE_SECS",
];

/// How long the platform may take to settle a payment, and so how long the tool waits for it.
#[derive(Debug, PartialEq, Eq)]
struct Waits {
    /// `PAYMENT_SETTLE_DIRECT_AFTER_SECS`.
    settle_direct_after: Duration,
    /// The settlement check's longest wait for stragglers.
    settle_limit: Duration,
    /// A fan's longest wait for CONFIRMED (`--confirm-timeout-secs`).
    confirm_timeout: Duration,
}

/// `PAYMENT_SETTLE_DIRECT_AFTER_SECS` is read as payment-api reads it (same default, a bad
/// value is an error naming it), so that the tool waits as long as the platform may take.
fn waits(env: &Env, confirm_timeout_secs: Option<u64>) -> anyhow::Result<Waits> {
    let settle_direct_after = env.secs("PAYMENT_SETTLE_DIRECT_AFTER_SECS", 120, 1..=86_400)?;
    let settle_limit = settle_direct_after + SETTLE_MARGIN;
    Ok(Waits {
        settle_direct_after,
        settle_limit,
        confirm_timeout: confirm_timeout_secs.map_or(settle_limit, Duration::from_secs),
    })
}

async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let heavy = matches!(args.scenario, Scenario::HoldContended | Scenario::FlashSale);
    let concurrency = args.concurrency.unwrap_or(if heavy { 1000 } else { 64 });
    let users = args.users.unwrap_or(match args.scenario {
        Scenario::FlashSale => 10_000,
        Scenario::QueueJoin => 5_000,
        _ => 2_000,
    });
    let Waits {
        settle_direct_after,
        settle_limit,
        confirm_timeout,
    } = waits(&Env::process(), args.confirm_timeout_secs)?;
    let knobs = Knobs {
        load: Load {
            concurrency,
            duration: Duration::from_secs_f64(args.duration),
            rate: args.rate,
        },
        users,
        schedules: args.schedules,
        seats_per_schedule: args.seats_per_schedule,
        baseline_path: args.baseline_path.clone(),
        poll: Duration::from_millis(args.poll_ms),
        arrival: Duration::from_millis(args.arrival_ms),
        max_duration: Duration::from_secs(args.max_duration),
        confirm_timeout,
        settle_direct_after,
        settle_limit,
    };
    let scenario_name = clap::ValueEnum::to_possible_value(&args.scenario)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();

    let mut settings = BTreeMap::new();
    settings.insert("gateway".into(), args.gateway.clone());
    settings.insert("connections".into(), concurrency.to_string());
    if args.scenario == Scenario::FlashSale {
        settings.insert("users".into(), users.to_string());
        settings.insert(
            "seats".into(),
            format!("{} schedules × {}", args.schedules, args.seats_per_schedule),
        );
        settings.insert("poll".into(), format!("{} ms", args.poll_ms));
        settings.insert("arrival".into(), format!("over {} ms", args.arrival_ms));
        settings.insert(
            "confirm timeout".into(),
            format!("{} s", confirm_timeout.as_secs()),
        );
        if let Some(log) = &args.fault_log {
            settings.insert("fault log".into(), log.display().to_string());
        }
    } else {
        settings.insert("duration".into(), format!("{} s", args.duration));
        settings.insert(
            "rate".into(),
            args.rate
                .map_or("closed loop".into(), |r| format!("{r} req/s")),
        );
    }
    settings.insert("machine".into(), machine());
    for var in PLATFORM_SETTINGS {
        if let Ok(v) = std::env::var(var) {
            settings.insert(var.to_owned(), v);
        }
    }

    let mut platform = fixture::Platform::connect(&args.gateway, concurrency).await?;
    let recorder = Arc::new(Recorder::default());
    let started_at = common::clock::Clock::system()
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    eprintln!("[loadtest] {scenario_name}: setting up, then measuring");
    let outcome = scenarios::run(args.scenario, &knobs, &mut platform, recorder.clone()).await?;
    let (latencies, endpoints): (Vec<_>, Vec<_>) = recorder
        .summary(outcome.measured)
        .into_iter()
        .partition(|s| s.statuses.is_empty());
    let mut audit = outcome.audit;
    let margin = Duration::from_secs(args.fault_margin_secs);
    let (errors, unreadable) = error_split(&recorder, args.fault_log.as_deref(), margin);
    if let Some(why) = unreadable {
        audit.push(stats::Check {
            name: "fault log readable".into(),
            ok: false,
            detail: why,
        });
    }
    if args.scenario == Scenario::FlashSale {
        let failures = errors.outside.failures();
        let detail = if errors.fault_log.is_some() {
            format!(
                "{failures} answers were 5xx or failed connections outside the {} fault \
                 window(s) (each stretched {} s past its end); {} inside them, not counted",
                errors.windows.len(),
                args.fault_margin_secs,
                errors.inside.failures()
            )
        } else {
            format!("{failures} answers were 5xx or failed connections")
        };
        audit.push(stats::Check {
            name: "no 5xx or failed connection".into(),
            ok: failures == 0,
            detail,
        });
    }
    Ok(Report {
        scenario: scenario_name,
        started_at,
        measured_seconds: outcome.measured.as_secs_f64(),
        settings,
        endpoints,
        latencies,
        memory: audit::memory(),
        audit,
        facts: outcome.facts,
        errors,
        sale: outcome.sale,
    })
}

/// The recorder's error answers split by the windows of `fault_log` (none without one), and
/// why the log could not be used, if it could not: then every error counts as outside.
fn error_split(
    recorder: &Recorder,
    fault_log: Option<&std::path::Path>,
    margin: Duration,
) -> (faults::ErrorSplit, Option<String>) {
    let Some(path) = fault_log else {
        return (recorder.error_split(&[], margin), None);
    };
    let windows = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| faults::parse(&text));
    let (windows, unreadable) = match windows {
        Ok(w) => (w, None),
        Err(e) => (Vec::new(), Some(format!("{}: {e}", path.display()))),
    };
    let mut split = recorder.error_split(&windows, margin);
    split.fault_log = Some(path.display().to_string());
    (split, unreadable)
}

/// "<cores> × <cpu model>, <memory>", from /proc.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("? GiB".into(), |kib| {
            format!("{:.0} GiB", kib / 1024.0 / 1024.0)
        });
    format!("{cores} cores × {model}, {mem}")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Markdown { reports } => match markdown::render(&reports) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("[loadtest] {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => {
            let json = args.json.clone();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let result = runtime.block_on(run(args)).and_then(|report| {
                report.print();
                if let Some(path) = json {
                    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                        .with_context(|| format!("write {}", path.display()))?;
                }
                Ok(report)
            });
            match result {
                Ok(r) if r.passed() => ExitCode::SUCCESS,
                Ok(_) => {
                    eprintln!("[loadtest] an invariant FAILED");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("[loadtest] {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_waits_follow_the_platforms_settlement_bound() {
        let defaults = waits(&Env::from_pairs([]), None).unwrap();
        assert_eq!(
            defaults,
            Waits {
                settle_direct_after: secs(120),
                settle_limit: secs(130),
                confirm_timeout: secs(130),
            }
        );
        let set = waits(
            &Env::from_pairs([("PAYMENT_SETTLE_DIRECT_AFTER_SECS", "20")]),
            Some(7),
        )
        .unwrap();
        assert_eq!((set.settle_limit, set.confirm_timeout), (secs(30), secs(7)));
        let bad = waits(
            &Env::from_pairs([("PAYMENT_SETTLE_DIRECT_AFTER_SECS", "soon")]),
            None,
        )
        .unwrap_err();
        assert!(
            bad.to_string().contains("PAYMENT_SETTLE_DIRECT_AFTER_SECS"),
            "{bad}"
        );
    }

    #[test]
    fn the_drill_flags_parse_and_the_fault_log_is_documented() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "run",
            "flash-sale",
            "--users",
            "6000",
            "--schedules",
            "60",
            "--fault-log",
            "faults.log",
            "--fault-margin-secs",
            "3",
            "--confirm-timeout-secs",
            "40",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run");
        };
        assert_eq!(args.fault_log, Some(PathBuf::from("faults.log")));
        assert_eq!(args.fault_margin_secs, 3);
        assert_eq!(args.confirm_timeout_secs, Some(40));
        let help = <Cli as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        assert!(help.contains("START_UNIX_MS END_UNIX_MS LABEL"), "{help}");
    }

    fn reply(status: u16, sent: u64) -> crate::http::Reply {
        crate::http::Reply {
            status,
            body: bytes::Bytes::new(),
            sent_unix_ms: sent,
            elapsed: Duration::from_millis(10),
        }
    }

    #[test]
    fn errors_are_split_by_the_fault_log_read_at_the_end() {
        let rec = Recorder::default();
        rec.record("POST /api/payments", &reply(201, 1_000));
        rec.record("POST /api/payments", &reply(502, 1_500));
        rec.record("GET /api/reservations/{id}", &reply(0, 1_600));
        rec.record("POST /api/payments", &reply(503, 9_000));
        let dir = std::env::temp_dir().join(format!("loadtest-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("faults.log");
        std::fs::write(&log, "# drill\n1400 1700 payment-api killed\n").unwrap();

        let (split, unreadable) = error_split(&rec, Some(&log), secs(1));
        assert_eq!(unreadable, None);
        assert_eq!(split.fault_log, Some(log.display().to_string()));
        assert_eq!(split.windows.len(), 1);
        assert_eq!(split.inside.server_errors, 1);
        assert_eq!(split.inside.transport_errors, 1);
        assert_eq!(split.outside.failures(), 1);
        assert_eq!(split.outside.by_answer["POST /api/payments 503"], 1);

        // No log: everything is outside. An unreadable one says so and places nothing.
        let (plain, _) = error_split(&rec, None, secs(1));
        assert_eq!((plain.fault_log, plain.outside.failures()), (None, 3));
        let missing = dir.join("absent.log");
        let (split, unreadable) = error_split(&rec, Some(&missing), secs(1));
        assert!(unreadable.is_some_and(|why| why.contains("absent.log")));
        assert_eq!(split.outside.failures(), 3);
        std::fs::write(&log, "1400 soon payment-api killed\n").unwrap();
        let (_, unreadable) = error_split(&rec, Some(&log), secs(1));
        assert!(unreadable.is_some_and(|why| why.contains("line 1")));
        let _ = std::fs::remove_dir_all(&dir);
    }

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
        assert_eq!(report.errors, faults::ErrorSplit::default());
        assert_eq!(report.sale, None);
        let saved = serde_json::to_value(&report).unwrap();
        assert!(saved["errors"]["outside"]["server_errors"].is_u64());
    }
}
