//! `loadtest`: load scenarios against the platform through its gateway, and the flash-sale
//! benchmark with its invariant audit. See docs/BENCHMARKS.md.
//!
//!   loadtest run flash-sale --json .bench/flash-sale.json
//!   loadtest markdown .bench/*.json > docs/BENCHMARKS.md
//!   loadtest round-trips --database-url postgres://postgres@127.0.0.1:5432/postgres

mod audit;
mod drive;
mod faults;
mod fixture;
mod http;
mod markdown;
mod proxy;
mod reliability;
mod report;
mod round_trips;
mod run;
mod scenarios;
mod stats;
mod waiting_room;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::scenarios::Scenario;

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
    Run(Box<RunArgs>),
    /// Render saved JSON reports as docs/BENCHMARKS.md (to standard output).
    Markdown {
        /// Reports written by `run --json`.
        reports: Vec<PathBuf>,
    },
    /// Render the rows of a chaos rehearsal (bench/chaos.sh: directories each holding
    /// fault.json and the sale's report.json) as docs/RELIABILITY.md (to standard output).
    Reliability {
        /// The rows' directories, in the matrix's order.
        rows: Vec<PathBuf>,
    },
    /// A generator process of `run waiting-room` (started by it, not by hand).
    #[command(name = "waiting-room-fans", hide = true)]
    WaitingRoomFans,
    /// A TCP fault proxy in front of one dependency: forwards --listen to --upstream; the
    /// --control port takes `cut`, `heal`, `delay MS` and `status`, a command a line.
    Proxy {
        /// Where clients connect (host:port).
        #[arg(long)]
        listen: String,
        /// The dependency (host:port), connected to afresh for every client.
        #[arg(long)]
        upstream: String,
        /// The control port (host:port): one command a line, answered `ok <state>` or
        /// `error <why>`.
        #[arg(long)]
        control: String,
    },
    /// What one short PostgreSQL transaction costs this process and its backend (CPU from
    /// /proc: run it on the database's machine), with and without the pool's test at every
    /// checkout, issued from the socket's own thread and from another.
    RoundTrips {
        /// e.g. postgres://postgres@127.0.0.1:5432/postgres
        #[arg(long)]
        database_url: String,
        /// Transactions per set-up and round.
        #[arg(long, default_value_t = 20_000)]
        transactions: u32,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
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
    /// flash-sale: sell this existing concert (every seat of its schedules, as an organiser
    /// set them up) instead of making one of --schedules × --seats-per-schedule.
    #[arg(long)]
    concert: Option<i64>,
    /// baseline: the bare path the benchmark gateway routes to a service's /health/live.
    #[arg(long, default_value = "/bench/live")]
    baseline_path: String,
    /// flash-sale: a waiting fan polls at most this often (milliseconds).
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// flash-sale: how many fans (the last to arrive, the back of the line) wait on the status
    /// event stream, as the web app does; the others poll. Default: every fan.
    #[arg(long)]
    streaming_fans: Option<usize>,
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
    /// waiting-room: fans waiting on open status streams.
    #[arg(long, default_value_t = 10_000)]
    fans: usize,
    /// waiting-room: users-api replicas (comma-separated base URLs), reached directly.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8081")]
    users_api: Vec<String>,
    /// waiting-room: where the fans open their status streams, one base URL per replica in
    /// --users-api's order: the replicas' stream ports (USERS_API_STREAM_PORT). Default: the
    /// --users-api URLs themselves (their main ports).
    #[arg(long, value_delimiter = ',')]
    streams: Vec<String>,
    /// waiting-room: the replicas' process ids (comma-separated), for CPU and peak memory.
    #[arg(long, value_delimiter = ',')]
    users_api_pid: Vec<u32>,
    /// waiting-room: admissions per second during the admit phase (--duration long).
    #[arg(long, default_value_t = 500.0)]
    admit_rate: f64,
    /// waiting-room: seconds of holding the crowd with nobody admitted, measured first.
    #[arg(long, default_value_t = 10.0)]
    hold_secs: f64,
    /// waiting-room: streams per generator process (each holds a file per stream).
    #[arg(long, default_value_t = 15_000)]
    fans_per_generator: usize,
    /// Threads of the load tool's runtime (not waiting-room, whose fans run in processes of
    /// their own). One, the default, where the tool shares the machine with the platform:
    /// with two it spent about a quarter more CPU on the same sale, handing work between its
    /// threads, CPU the platform then lacked. More for a load generator on a machine of its
    /// own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Also write the report here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The runtime `loadtest run` drives a scenario on: `threads` workers, or the calling thread
/// alone for one.
fn run_runtime(threads: u16) -> tokio::runtime::Runtime {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(threads));
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Proxy {
            listen,
            upstream,
            control,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async {
                match proxy::Proxy::bind(&listen, &upstream, &control).await {
                    Ok(p) => {
                        let addr = |a: std::io::Result<std::net::SocketAddr>| {
                            a.map_or_else(|e| e.to_string(), |a| a.to_string())
                        };
                        eprintln!(
                            "proxy listening on {} -> {upstream} (control {})",
                            addr(p.listen_addr()),
                            addr(p.control_addr())
                        );
                        p.run().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("[loadtest] proxy: {e}");
                        ExitCode::from(2)
                    }
                }
            })
        }
        Command::WaitingRoomFans => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(waiting_room::run_generator()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("[loadtest] generator: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run(args) if args.scenario == Scenario::WaitingRoom => {
            let json = args.json.clone();
            let knobs = waiting_room::Knobs {
                fans: args.fans,
                users_api: args.users_api.clone(),
                streams: args.streams.clone(),
                pids: args.users_api_pid.clone(),
                admit_rate: args.admit_rate,
                hold: Duration::from_secs_f64(args.hold_secs),
                admit_for: Duration::from_secs_f64(args.duration),
                per_generator: args.fans_per_generator,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let result = runtime
                .block_on(waiting_room::run(knobs))
                .and_then(|report| {
                    report.print();
                    if let Some(path) = json {
                        report.save(&path)?;
                    }
                    Ok(report)
                });
            match result {
                Ok(r) if r.passed() => ExitCode::SUCCESS,
                Ok(_) => {
                    eprintln!("[loadtest] the waiting room FAILED");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("[loadtest] {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::RoundTrips {
            database_url,
            transactions,
            rounds,
        } => match round_trips::run(&database_url, transactions, rounds) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("[loadtest] round-trips: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Reliability { rows } => print_rendered(reliability::render(&rows)),
        Command::Markdown { reports } => print_rendered(markdown::render(&reports)),
        Command::Run(args) => {
            let json = args.json.clone();
            let runtime = run_runtime(args.threads);
            let result = runtime.block_on(run::run(*args)).and_then(|report| {
                report.print();
                if let Some(path) = json {
                    report.save(&path)?;
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

/// A rendered document to standard output, or why it could not be rendered (exit 2).
fn print_rendered(rendered: anyhow::Result<String>) -> ExitCode {
    match rendered {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("[loadtest] {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
