//! The settings a report names next to its figures: the flags that shape the scenario, the
//! machine it ran on, and the platform's tuning read from the environment.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::RunArgs;
use crate::scenarios::Scenario;

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

/// The run's settings as the report lists them (`concurrency`, `users` and `confirm_timeout`
/// after their defaults were applied).
pub fn describe(
    args: &RunArgs,
    concurrency: usize,
    users: usize,
    confirm_timeout: Duration,
) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    settings.insert("gateway".into(), args.gateway.clone());
    settings.insert("connections".into(), concurrency.to_string());
    if args.scenario == Scenario::FlashSale {
        settings.insert("users".into(), users.to_string());
        settings.insert(
            "seats".into(),
            match args.concert {
                Some(id) => format!("every seat of concert {id} (existing)"),
                None => format!("{} schedules × {}", args.schedules, args.seats_per_schedule),
            },
        );
        settings.insert("poll".into(), format!("{} ms", args.poll_ms));
        settings.insert(
            "fans on the event stream".into(),
            args.streaming_fans
                .map_or_else(|| "every fan".to_owned(), |n| n.to_string()),
        );
        settings.insert("arrival".into(), format!("over {} ms", args.arrival_ms));
        settings.insert(
            "confirm timeout".into(),
            format!("{} s", confirm_timeout.as_secs()),
        );
        if let Some(log) = &args.fault_log {
            settings.insert("fault log".into(), log.display().to_string());
        }
        settings.insert(
            "latency clock".into(),
            "from the sending (each fan sends its next request after the previous answer)".into(),
        );
    } else {
        settings.insert("duration".into(), format!("{} s", args.duration));
        settings.insert(
            "rate".into(),
            args.rate
                .map_or("closed loop".into(), |r| format!("{r} req/s")),
        );
        settings.insert(
            "latency clock".into(),
            if args.rate.is_some() {
                "from when each request was due (waits for a free connection and a late schedule count)"
            } else {
                "from the sending (closed loop: a request waits for the previous answer, so queueing before it is not seen)"
            }
            .into(),
        );
    }
    settings.insert("machine".into(), machine());
    settings.insert("load tool threads".into(), args.threads.to_string());
    for var in PLATFORM_SETTINGS {
        if let Ok(v) = std::env::var(var) {
            settings.insert(var.to_owned(), v);
        }
    }
    settings
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
