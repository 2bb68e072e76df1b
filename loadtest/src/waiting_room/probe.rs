//! What the waiting-room scenario (and `round-trips`) reads about the machine: a process's
//! CPU time and peak memory from `/proc`, and Redis's commands and CPU from `INFO`.

use anyhow::Context;
use common::redis::RedisStore;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`; 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// A process's CPU seconds (user + system) so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (is process {pid} running?)"))?;
    parse_cpu(&stat).with_context(|| format!("/proc/{pid}/stat: {stat:?}"))
}

fn parse_cpu(stat: &str) -> Option<f64> {
    // After the command's name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / CLK_TCK)
}

/// A process's peak resident memory (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    parse_kib(&status, "VmHWM:")
        .map(|kib| kib as f64 / 1024.0)
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// A process's resident memory now (`VmRSS`), in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    parse_kib(&status, "VmRSS:")
        .map(|kib| kib as f64 / 1024.0)
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Redis's commands served and CPU seconds so far (`INFO commandstats`, `INFO cpu`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RedisWork {
    pub commands: u64,
    pub cpu_seconds: f64,
}

impl RedisWork {
    pub async fn read(redis: &RedisStore) -> anyhow::Result<Self> {
        let mut conn = redis.conn();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        Ok(Self::parse(&stats, &cpu))
    }

    fn parse(commandstats: &str, cpu: &str) -> Self {
        let commands = commandstats
            .lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .filter_map(|l| {
                let calls = l.split("calls=").nth(1)?;
                calls.split(',').next()?.parse::<u64>().ok()
            })
            .sum();
        let seconds = |name: &str| {
            cpu.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Self {
            commands,
            cpu_seconds: seconds("used_cpu_sys:") + seconds("used_cpu_user:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (users api (x)) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 150 0 0 20 0 9 0";
        assert_eq!(parse_cpu(stat), Some(4.0));
    }

    #[test]
    fn peak_memory_comes_from_vmhwm() {
        let status =
            "Name:\tusers-api\nVmPeak:\t 900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_kib(status, "VmHWM:"), Some(204_800));
    }

    #[test]
    fn redis_work_sums_every_command_and_both_cpu_kinds() {
        let stats = "# Commandstats\r\ncmdstat_evalsha:calls=120,usec=900,usec_per_call=7.5\r\ncmdstat_get:calls=30,usec=10\r\n";
        let cpu = "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.25\r\nused_cpu_sys_children:9\r\n";
        assert_eq!(
            RedisWork::parse(stats, cpu),
            RedisWork {
                commands: 150,
                cpu_seconds: 3.75
            }
        );
    }
}
