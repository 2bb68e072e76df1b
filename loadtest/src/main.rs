//! `loadtest`: load scenarios against the platform through its gateway, and the flash-sale
//! benchmark with its invariant audit. See docs/BENCHMARKS.md.
//!
//!   loadtest run flash-sale --json .bench/flash-sale.json
//!   loadtest markdown .bench/*.json > docs/BENCHMARKS.md

mod audit;
mod drive;
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

use crate::drive::Load;
use crate::scenarios::{Knobs, Scenario};
use crate::stats::{Recorder, Report};

#[derive(Parser)]
#[command(about = "Load scenarios and the flash-sale benchmark of the ticketing platform")]
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
    /// Also write the report here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

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

async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let heavy = matches!(args.scenario, Scenario::HoldContended | Scenario::FlashSale);
    let concurrency = args.concurrency.unwrap_or(if heavy { 1000 } else { 64 });
    let users = args.users.unwrap_or(match args.scenario {
        Scenario::FlashSale => 10_000,
        Scenario::QueueJoin => 5_000,
        _ => 2_000,
    });
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
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    eprintln!("[loadtest] {scenario_name}: setting up, then measuring");
    let outcome = scenarios::run(args.scenario, &knobs, &mut platform, recorder.clone()).await?;
    let (latencies, endpoints): (Vec<_>, Vec<_>) = recorder
        .summary(outcome.measured)
        .into_iter()
        .partition(|s| s.statuses.is_empty());
    let mut audit = outcome.audit;
    if args.scenario == Scenario::FlashSale {
        let failures: u64 = endpoints.iter().map(|e| e.failures()).sum();
        audit.push(stats::Check {
            name: "no 5xx or failed connection".into(),
            ok: failures == 0,
            detail: format!("{failures} answers were 5xx or failed connections"),
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
    })
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
