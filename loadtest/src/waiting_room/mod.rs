//! `loadtest run waiting-room --fans N`: N fans wait in one line on open status streams
//! (SSE), straight to users-api's replicas; the tool admits them at a set rate and measures
//! how long each admission takes to reach its fan's stream, and what holding the crowd costs.
//!
//! The phases:
//! 1. setup (not measured): N accounts and sessions ([`Platform::users`]) and N tokens in a
//!    fresh line, joined through users-api's own `WaitingRoom` (no concert-api involved: the
//!    streams never ask it), sorted by their place;
//! 2. open: generator processes ([`fans`]) open every stream, fan `i` to replica
//!    `i % replicas` from source address `127.0.0.<10 + i / 10,000>` (a source address has
//!    ~28,000 ports to connect from), fan `i` in generator `i % generators`;
//! 3. hold (`--hold-secs`): nobody is admitted; users-api's CPU, Redis's commands and CPU are
//!    the cost of keeping the crowd informed;
//! 4. admit (`--duration`): every 100 ms the tool admits its share of `--admit-rate`, noting
//!    when it asked; as the line is FIFO and every fan is alive, the admitted ones are the
//!    next in order. Each fan's generator notes when its stream said ACTIVE.
//!
//! Nothing else may admit from the line meanwhile: run it against users-api replicas without
//! batch (bench/waiting-room.sh does).

mod fans;
pub(crate) mod probe;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::auth::QueueKeys;
use common::clock::Clock;
use common::config::{Env, RedisConfig};
use common::redis::RedisStore;
use futures_util::{StreamExt, stream};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use users_api::config::QueueConfig;
use users_api::domain::queue::WaitingRoom;

use crate::fixture::Platform;
use fans::{Fan, FanResult};
use probe::RedisWork;

pub use fans::run as run_generator;

/// The hidden subcommand a generator process runs.
pub const GENERATOR_COMMAND: &str = "waiting-room-fans";

/// Fans per source address: well under the ~28,000 ephemeral ports one address has.
const FANS_PER_SOURCE: usize = 10_000;
/// How often the tool admits its share of the rate.
const ADMIT_EVERY: Duration = Duration::from_millis(100);
/// How long the tool waits for the last admissions' notices after it stops admitting.
const LAST_NOTICES: Duration = Duration::from_secs(5);

/// The scenario's knobs (`loadtest run waiting-room ...`).
#[derive(Debug, Clone)]
pub struct Knobs {
    pub fans: usize,
    /// users-api replicas' base URLs (`http://host:port`).
    pub users_api: Vec<String>,
    /// Where the fans open their streams, per replica (empty: `users_api`).
    pub streams: Vec<String>,
    /// Their process ids, for CPU and memory.
    pub pids: Vec<u32>,
    pub admit_rate: f64,
    pub hold: Duration,
    pub admit_for: Duration,
    pub per_generator: usize,
}

/// One measured window's costs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Costs {
    pub seconds: f64,
    /// users-api's CPU over all replicas, in cores (CPU seconds per second).
    pub users_api_cpu_cores: f64,
    /// The same per fan: CPU milliseconds per fan per second of waiting.
    pub users_api_cpu_ms_per_fan_second: f64,
    pub redis_commands_per_sec: f64,
    pub redis_cpu_cores: f64,
}

/// The JSON report (`--json`): every figure a number.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub started_at: String,
    pub fans: usize,
    pub replicas: usize,
    pub generators: usize,
    pub admit_rate_per_sec: f64,
    pub setup_seconds: f64,
    pub open_seconds: f64,
    pub streams_opened: usize,
    pub open_failures: usize,
    /// Opens that were tried again (refused or timed out at first; see `fans::OPEN_ATTEMPTS`).
    pub open_retries: u64,
    /// Streams the server ended before their fan was admitted.
    pub dropped: usize,
    pub hold: Costs,
    pub admitting: Costs,
    pub admitted: u64,
    /// Tokens admission dropped as abandoned (0 while every stream holds its fan).
    pub abandoned: u64,
    /// Admitted fans whose stream said ACTIVE.
    pub notices: usize,
    /// Admitted fans whose stream never said ACTIVE.
    pub missing_notices: usize,
    pub notice_p50_ms: f64,
    pub notice_p99_ms: f64,
    pub notice_max_ms: f64,
    /// Peak resident memory of users-api, summed over replicas, and each replica's.
    pub users_api_peak_rss_mib: f64,
    pub users_api_peak_rss_mib_each: Vec<f64>,
    /// users-api's resident memory while holding the crowd (after the streams opened),
    /// summed over replicas.
    pub users_api_holding_rss_mib: f64,
    pub generators_peak_rss_mib: f64,
    pub failures: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn print(&self) {
        println!(
            "== waiting-room: {} fans on {} users-api replica(s), {} generator(s), admitting {}/s",
            self.fans, self.replicas, self.generators, self.admit_rate_per_sec
        );
        println!(
            "   streams opened {} in {:.1} s ({} tried again), failed {}, dropped {}",
            self.streams_opened,
            self.open_seconds,
            self.open_retries,
            self.open_failures,
            self.dropped
        );
        for (name, c) in [("hold", &self.hold), ("admitting", &self.admitting)] {
            println!(
                "   {name:<9} {:.1} s: users-api {:.3} cores ({:.4} CPU-ms per fan-second), redis {:.0} commands/s, {:.3} cores",
                c.seconds,
                c.users_api_cpu_cores,
                c.users_api_cpu_ms_per_fan_second,
                c.redis_commands_per_sec,
                c.redis_cpu_cores
            );
        }
        println!(
            "   admitted {} (abandoned {}), notices {} (missing {}): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            self.admitted,
            self.abandoned,
            self.notices,
            self.missing_notices,
            self.notice_p50_ms,
            self.notice_p99_ms,
            self.notice_max_ms
        );
        println!(
            "   users-api RSS {:.0} MiB holding the crowd, peak {:.0} MiB (each: {:?}); generators {:.0} MiB",
            self.users_api_holding_rss_mib,
            self.users_api_peak_rss_mib,
            self.users_api_peak_rss_mib_each,
            self.generators_peak_rss_mib
        );
        for f in &self.failures {
            println!("   FAILED: {f}");
        }
    }

    pub fn save(&self, path: &PathBuf) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
    }
}

/// A point in time's counters, to take differences of.
struct Snapshot {
    at: Instant,
    users_api_cpu: f64,
    redis: RedisWork,
}

impl Snapshot {
    async fn take(k: &Knobs, redis: &RedisStore) -> anyhow::Result<Self> {
        let mut users_api_cpu = 0.0;
        for pid in &k.pids {
            users_api_cpu += probe::cpu_seconds(*pid)?;
        }
        Ok(Self {
            at: Instant::now(),
            users_api_cpu,
            redis: RedisWork::read(redis).await?,
        })
    }

    fn costs_since(&self, before: &Snapshot, fans: usize) -> Costs {
        let seconds = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let cpu = self.users_api_cpu - before.users_api_cpu;
        Costs {
            seconds,
            users_api_cpu_cores: cpu / seconds,
            users_api_cpu_ms_per_fan_second: cpu * 1000.0 / (fans.max(1) as f64 * seconds),
            redis_commands_per_sec: self.redis.commands.saturating_sub(before.redis.commands)
                as f64
                / seconds,
            redis_cpu_cores: (self.redis.cpu_seconds - before.redis.cpu_seconds) / seconds,
        }
    }
}

/// A generator process and its pipes.
struct Generator {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<tokio::process::ChildStdout>,
}

pub async fn run(k: Knobs) -> anyhow::Result<Report> {
    ensure!(k.fans > 0, "--fans must be at least 1");
    ensure!(!k.users_api.is_empty(), "--users-api names no replica");
    ensure!(k.admit_rate > 0.0, "--admit-rate must be positive");
    check_open_files(k.per_generator)?;
    let streams = if k.streams.is_empty() {
        &k.users_api
    } else {
        &k.streams
    };
    ensure!(
        streams.len() == k.users_api.len(),
        "--streams names {} listener(s) for {} replica(s)",
        streams.len(),
        k.users_api.len()
    );
    let addrs = streams
        .iter()
        .map(|u| socket_addr(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut report = Report {
        scenario: "waiting-room",
        started_at: chrono::Utc::now().to_rfc3339(),
        fans: k.fans,
        replicas: addrs.len(),
        admit_rate_per_sec: k.admit_rate,
        ..Report::default()
    };
    let redis = RedisStore::connect(&RedisConfig::from_env(&Env::process())?)?;

    let setup = Instant::now();
    let platform = Platform::connect(&k.users_api[0], 16).await?;
    let concert = 900_000_000 + i64::from(rand::random::<u32>() % 100_000_000);
    eprintln!("[waiting-room] setup: {} accounts and sessions", k.fans);
    let users = platform.users(k.fans, "w").await?;
    eprintln!("[waiting-room] setup: {} fans join line {concert}", k.fans);
    let room = platform.room();
    let joined: Vec<anyhow::Result<(i64, String, String)>> = stream::iter(users)
        .map(|u| async move {
            let (status, _) = room.join(u.id, concert).await?;
            Ok((status.position.unwrap_or(i64::MAX), u.session, status.token))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut line = joined.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    line.sort_unstable_by_key(|f| f.0);
    report.setup_seconds = setup.elapsed().as_secs_f64();

    let generators = k.fans.div_ceil(k.per_generator);
    report.generators = generators;
    let mut assigned: Vec<Vec<Fan>> = vec![Vec::new(); generators];
    for (i, (_, session, token)) in line.iter().enumerate() {
        let source = Ipv4Addr::new(127, 0, 0, u8::try_from(10 + i / FANS_PER_SOURCE)?);
        assigned[i % generators].push(Fan {
            addr: addrs[i % addrs.len()],
            source: IpAddr::V4(source),
            session: session.clone(),
            token: token.clone(),
        });
    }
    eprintln!(
        "[waiting-room] opening {} streams from {generators} generator(s)",
        k.fans
    );
    let open = Instant::now();
    let mut gens = Vec::new();
    for fans in assigned {
        gens.push(start_generator(&fans).await?);
    }
    for g in &mut gens {
        let mut said = String::new();
        g.stdout.read_line(&mut said).await?;
        ensure!(said.starts_with("opened "), "a generator said {said:?}");
    }
    report.open_seconds = open.elapsed().as_secs_f64();

    eprintln!("[waiting-room] holding for {:?}", k.hold);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_hold = Snapshot::take(&k, &redis).await?;
    for pid in &k.pids {
        report.users_api_holding_rss_mib += probe::rss_mib(*pid)?;
    }
    tokio::time::sleep(k.hold).await;
    let after_hold = Snapshot::take(&k, &redis).await?;
    report.hold = after_hold.costs_since(&before_hold, k.fans);

    eprintln!(
        "[waiting-room] admitting {}/s for {:?}",
        k.admit_rate, k.admit_for
    );
    let admissions = admit(&k, &redis, concert, &line).await?;
    let after_admit = Snapshot::take(&k, &redis).await?;
    report.admitting = after_admit.costs_since(&after_hold, k.fans);
    tokio::time::sleep(LAST_NOTICES).await;

    for pid in &k.pids {
        report
            .users_api_peak_rss_mib_each
            .push(probe::peak_rss_mib(*pid)?);
    }
    report.users_api_peak_rss_mib = report.users_api_peak_rss_mib_each.iter().sum();
    let mut results = Vec::with_capacity(k.fans);
    for g in gens {
        if let Some(pid) = g.child.id() {
            report.generators_peak_rss_mib += probe::peak_rss_mib(pid).unwrap_or(0.0);
        }
        results.extend(finish_generator(g).await?);
    }
    judge(&mut report, &admissions, &results);
    Ok(report)
}

/// What admission did: `(when it was asked, Unix ms; the token)` for every admitted fan, and
/// how many tokens it dropped as abandoned.
struct Admissions {
    admitted: Vec<(u64, String)>,
    abandoned: u64,
}

/// Admits `k.admit_rate` a second, 100 ms at a time, for `k.admit_for` or until the line is
/// empty. The line is FIFO and every fan alive: the admitted ones are the next in `line`.
async fn admit(
    k: &Knobs,
    redis: &RedisStore,
    concert: i64,
    line: &[(i64, String, String)],
) -> anyhow::Result<Admissions> {
    let per_tick = k.admit_rate * ADMIT_EVERY.as_secs_f64();
    let room = WaitingRoom::new(
        QueueKeys::new(redis.clone()),
        QueueConfig::from_env(&Env::from_pairs([
            ("QUEUE_MAX_ACTIVE", "1000000"),
            (
                "QUEUE_ADMIT_PER_TICK",
                &per_tick.ceil().max(1.0).to_string(),
            ),
        ]))?,
        Clock::system(),
    );
    let mut out = Admissions {
        admitted: Vec::new(),
        abandoned: 0,
    };
    let mut next = 0usize;
    let mut owed = 0.0;
    let mut every = tokio::time::interval(ADMIT_EVERY);
    let until = Instant::now() + k.admit_for;
    while Instant::now() < until && next < line.len() {
        every.tick().await;
        owed += per_tick;
        if owed < 1.0 {
            continue;
        }
        let asked = unix_ms();
        let done = room.admit(concert, Clock::system().now()).await?;
        owed -= done.admitted as f64;
        out.abandoned += done.abandoned;
        let scanned = usize::try_from(done.admitted + done.abandoned)?;
        for (_, _, token) in line.iter().skip(next).take(scanned) {
            out.admitted.push((asked, token.clone()));
        }
        next += scanned;
    }
    Ok(out)
}

/// Fills the report's verdict from what admission did and what the fans saw.
fn judge(report: &mut Report, admissions: &Admissions, results: &[FanResult]) {
    let by_token: std::collections::HashMap<&str, &FanResult> =
        results.iter().map(|r| (r.token.as_str(), r)).collect();
    report.streams_opened = results.iter().filter(|r| r.status == 200).count();
    report.open_failures = results.len() - report.streams_opened;
    report.open_retries = results
        .iter()
        .map(|r| u64::from(r.attempts.saturating_sub(1)))
        .sum();
    report.dropped = results.iter().filter(|r| r.dropped).count();
    report.admitted = admissions.admitted.len() as u64;
    report.abandoned = admissions.abandoned;
    let mut latencies: Vec<u64> = Vec::with_capacity(admissions.admitted.len());
    for (asked, token) in &admissions.admitted {
        match by_token.get(token.as_str()).and_then(|r| r.active_at_ms) {
            Some(at) => latencies.push(at.saturating_sub(*asked)),
            None => report.missing_notices += 1,
        }
    }
    report.notices = latencies.len();
    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64
    };
    report.notice_p50_ms = at(0.50);
    report.notice_p99_ms = at(0.99);
    report.notice_max_ms = latencies.last().map_or(0.0, |m| *m as f64);
    let mut failures = Vec::new();
    if report.open_failures > 0 {
        let first = results.iter().find(|r| r.status != 200);
        failures.push(format!(
            "{} streams did not open (first: {:?})",
            report.open_failures,
            first.and_then(|r| r.error.clone())
        ));
    }
    if report.dropped > 0 {
        failures.push(format!("{} streams were dropped", report.dropped));
    }
    if report.missing_notices > 0 {
        failures.push(format!(
            "{} admitted fans never heard ACTIVE",
            report.missing_notices
        ));
    }
    if report.abandoned > 0 {
        failures.push(format!(
            "admission dropped {} held fans as abandoned",
            report.abandoned
        ));
    }
    report.failures = failures;
}

async fn start_generator(fans: &[Fan]) -> anyhow::Result<Generator> {
    let exe = std::env::current_exe().context("the load tool's own path")?;
    let mut child = Command::new(exe)
        .arg(GENERATOR_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start a generator process")?;
    let mut stdin = child.stdin.take().context("generator stdin")?;
    let stdout = BufReader::new(child.stdout.take().context("generator stdout")?);
    let mut lines = String::with_capacity(fans.len() * 120);
    for fan in fans {
        lines.push_str(&fan.line());
        lines.push('\n');
    }
    lines.push('\n');
    stdin.write_all(lines.as_bytes()).await?;
    stdin.flush().await?;
    Ok(Generator {
        child,
        stdin: Some(stdin),
        stdout,
    })
}

/// Stops a generator (closes its standard input) and reads what its fans saw.
async fn finish_generator(mut g: Generator) -> anyhow::Result<Vec<FanResult>> {
    drop(g.stdin.take());
    let mut rest = String::new();
    g.stdout.read_to_string(&mut rest).await?;
    let status = g.child.wait().await?;
    if !status.success() {
        bail!("a generator exited with {status}");
    }
    rest.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("a generator's line {l:?}")))
        .collect()
}

/// `http://host:port` → the address to connect to.
fn socket_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: must be http://host:port"))?
        .trim_end_matches('/');
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport
        .parse()
        .with_context(|| format!("{url}: must be http://<ip>:<port>"))
}

/// A generator holds a file per stream: it must be allowed as many (the hard limit here is
/// 20,000; `ulimit -n` raises the soft one).
fn check_open_files(per_generator: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(soft) = soft
        && per_generator + 256 > soft
    {
        bail!(
            "--fans-per-generator {per_generator} needs more open files than this process may have ({soft}); raise it with `ulimit -n` or lower --fans-per-generator"
        );
    }
    Ok(())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan(token: &str, status: u16, active_at_ms: Option<u64>) -> FanResult {
        FanResult {
            token: token.into(),
            status,
            active_at_ms,
            ..FanResult::default()
        }
    }

    #[test]
    fn notices_are_timed_from_the_admission_and_missing_ones_fail_the_run() {
        let admissions = Admissions {
            admitted: vec![
                (1_000, "a".into()),
                (1_000, "b".into()),
                (2_000, "c".into()),
            ],
            abandoned: 0,
        };
        let results = [
            fan("a", 200, Some(1_300)),
            fan("b", 200, Some(1_900)),
            fan("c", 200, None),
            fan("d", 200, None),
        ];
        let mut report = Report::default();
        judge(&mut report, &admissions, &results);
        assert_eq!((report.notices, report.missing_notices), (2, 1));
        assert_eq!((report.notice_p50_ms, report.notice_max_ms), (300.0, 900.0));
        assert_eq!(report.streams_opened, 4);
        assert!(!report.passed());

        let mut clean = Report::default();
        judge(
            &mut clean,
            &Admissions {
                admitted: vec![(1_000, "a".into())],
                abandoned: 0,
            },
            &results,
        );
        assert!(clean.passed(), "{:?}", clean.failures);
    }

    #[test]
    fn replicas_are_named_by_address() {
        assert_eq!(
            socket_addr("http://localhost:8081/").unwrap(),
            "127.0.0.1:8081".parse().unwrap()
        );
        assert!(socket_addr("https://127.0.0.1:8081").is_err());
    }
}
