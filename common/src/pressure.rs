//! Checkout pressure (DESIGN §10): how hard the checkout is working, published for the
//! waiting room's admission pace.
//!
//! concert-api times its holds and payment-api its payments ([`Pressure::record`]) and both
//! look at their database pool ten times a second. Once a second each instance writes what it
//! saw in that second — requests, their 90th-percentile latency, the share of looks that found
//! every pool connection busy — as one field of the Redis hash [`PRESSURE_KEY`]. batch reads
//! the hash at each admission tick ([`read`]) and narrows admission while the checkout is
//! slow, widening it again while it keeps up.
//!
//! One `HSET` a second per instance; recording is a few relaxed atomic adds, no lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::redis::RedisStore;

/// The hash of every instance's last second (field: `<service>:<instance>`).
pub const PRESSURE_KEY: &str = "checkout:pressure";

/// A sample older than this is not the checkout's present (its instance may be gone).
pub const FRESH_FOR: Duration = Duration::from_secs(3);

/// Upper bounds (ms) of the latency buckets; the last bucket is everything slower.
const BOUNDS_MS: [u64; 16] = [
    2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 2_000, 5_000,
];

/// One instance's last second, as published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was taken (Unix ms).
    pub at_ms: i64,
    /// Requests timed in that second.
    pub requests: u64,
    /// Their 90th percentile (ms, the upper bound of its bucket); 0 without requests.
    pub p90_ms: u64,
    /// Share of the pool looks that found no idle connection (0.0–1.0).
    pub pool_busy: f64,
}

/// Latencies of one kind of request since the last publication.
#[derive(Debug, Default)]
struct Buckets([AtomicU64; BOUNDS_MS.len() + 1]);

impl Buckets {
    fn add(&self, took: Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let i = BOUNDS_MS.partition_point(|&b| b < ms);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Empties the buckets; returns (requests, p90 ms).
    fn take(&self) -> (u64, u64) {
        let counts: Vec<u64> = self
            .0
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let n: u64 = counts.iter().sum();
        (n, p90(&counts))
    }
}

/// The 90th percentile of bucket counts, as its bucket's upper bound (the slowest bucket
/// counts as twice the last bound).
fn p90(counts: &[u64]) -> u64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return 0;
    }
    let want = n - n / 10;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= want {
            return BOUNDS_MS
                .get(i)
                .copied()
                .unwrap_or(BOUNDS_MS[BOUNDS_MS.len() - 1] * 2);
        }
    }
    BOUNDS_MS[BOUNDS_MS.len() - 1] * 2
}

/// This instance's recorder; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Pressure {
    latencies: Arc<Buckets>,
    pool_looks: Arc<AtomicU64>,
    pool_busy: Arc<AtomicU64>,
}

impl Pressure {
    /// Counts one checkout request that took `took`.
    fn record(&self, took: Duration) {
        self.latencies.add(took);
    }

    /// Times a checkout request: it is recorded when the guard is dropped, however the
    /// request ends.
    pub fn time(&self) -> Timed<'_> {
        Timed {
            pressure: self,
            started: std::time::Instant::now(),
        }
    }

    fn look_at_pool(&self, db: &DatabaseConnection) {
        let pool = db.get_postgres_connection_pool();
        let busy = pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections();
        self.pool_looks.fetch_add(1, Ordering::Relaxed);
        if busy {
            self.pool_busy.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What was recorded since the last call, dated `at_ms`; starts the next second.
    pub fn take(&self, at_ms: i64) -> Sample {
        let (requests, p90_ms) = self.latencies.take();
        let looks = self.pool_looks.swap(0, Ordering::Relaxed);
        let busy = self.pool_busy.swap(0, Ordering::Relaxed);
        Sample {
            at_ms,
            requests,
            p90_ms,
            pool_busy: if looks == 0 {
                0.0
            } else {
                busy as f64 / looks as f64
            },
        }
    }

    /// Publishes this instance's pressure as `service` for as long as `svc` runs
    /// ([`Pressure::publish`]).
    pub fn spawn_publisher(
        &self,
        svc: &mut crate::lifecycle::Service,
        service: &str,
        redis: &RedisStore,
        db: &DatabaseConnection,
    ) {
        let cancel = svc.cancel_token();
        svc.spawn(
            "checkout pressure",
            self.clone()
                .publish(redis.clone(), db.clone(), instance_field(service), cancel),
        );
    }

    /// Looks at `db`'s pool ten times a second and publishes a [`Sample`] every second as
    /// field `field` of [`PRESSURE_KEY`], until `cancel`. A failed write is logged and the
    /// next second tries again.
    pub async fn publish(
        self,
        redis: RedisStore,
        db: DatabaseConnection,
        field: String,
        cancel: CancellationToken,
    ) {
        let key = redis.key(PRESSURE_KEY);
        let mut look = tokio::time::interval(Duration::from_millis(100));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut looks = 0u32;
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    // A graceful stop takes its field away at once.
                    let _: redis::RedisResult<i64> = redis.conn().hdel(&key, &field).await;
                    return;
                }
                _ = look.tick() => {}
            }
            self.look_at_pool(&db);
            looks += 1;
            if looks < 10 {
                continue;
            }
            looks = 0;
            let sample = self.take(chrono::Utc::now().timestamp_millis());
            let Ok(value) = serde_json::to_string(&sample) else {
                continue;
            };
            let mut conn = redis.conn();
            let written: redis::RedisResult<()> = redis::pipe()
                .hset(&key, &field, value)
                .ignore()
                .pexpire(&key, (FRESH_FOR.as_millis() * 10) as i64)
                .ignore()
                .query_async(&mut conn)
                .await;
            if let Err(error) = written {
                tracing::debug!(%error, "checkout pressure not published");
            }
        }
    }
}

/// A request being timed ([`Pressure::time`]).
#[derive(Debug)]
pub struct Timed<'a> {
    pressure: &'a Pressure,
    started: std::time::Instant,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.pressure.record(self.started.elapsed());
    }
}

/// This instance's field in [`PRESSURE_KEY`]: its service, host and process.
fn instance_field(service: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!("{service}:{host}:{}", std::process::id())
}

/// The checkout as the fresh samples of every instance show it at `now_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Checkout {
    /// Instances that published within [`FRESH_FOR`].
    pub instances: usize,
    pub requests: u64,
    /// The slowest instance's p90 (ms) among those that served at least a few requests.
    pub worst_p90_ms: u64,
    /// The busiest pool's share of busy looks.
    pub worst_pool_busy: f64,
}

/// Requests below which an instance's p90 says nothing.
const FEW: u64 = 5;

/// A field this old belongs to an instance that is gone (killed without its goodbye): the
/// reader removes it, or every restart would leave one behind for good.
const GONE_AFTER: Duration = Duration::from_secs(60);

/// Reads every instance's last second from `redis`; samples older than [`FRESH_FOR`] or
/// unreadable are skipped, and those of instances gone for [`GONE_AFTER`] removed.
pub async fn read(redis: &RedisStore, now_ms: i64) -> redis::RedisResult<Checkout> {
    let key = redis.key(PRESSURE_KEY);
    let mut conn = redis.conn();
    let all: Vec<(String, String)> = conn.hgetall(&key).await?;
    let gone: Vec<&str> = all
        .iter()
        .filter(|(_, v)| {
            serde_json::from_str::<Sample>(v)
                .map_or(true, |s| now_ms - s.at_ms > GONE_AFTER.as_millis() as i64)
        })
        .map(|(f, _)| f.as_str())
        .collect();
    if !gone.is_empty() {
        let _: i64 = conn.hdel(&key, gone).await?;
    }
    Ok(summarise(all.iter().map(|(_, v)| v.as_str()), now_ms))
}

fn summarise<'a>(values: impl Iterator<Item = &'a str>, now_ms: i64) -> Checkout {
    let fresh = FRESH_FOR.as_millis() as i64;
    let mut out = Checkout::default();
    for s in values.filter_map(|v| serde_json::from_str::<Sample>(v).ok()) {
        if now_ms - s.at_ms > fresh {
            continue;
        }
        out.instances += 1;
        out.requests += s.requests;
        if s.requests >= FEW {
            out.worst_p90_ms = out.worst_p90_ms.max(s.p90_ms);
        }
        out.worst_pool_busy = out.worst_pool_busy.max(s.pool_busy);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p90_is_the_bound_of_the_bucket_that_holds_it() {
        let b = Buckets::default();
        for _ in 0..89 {
            b.add(Duration::from_millis(3));
        }
        for _ in 0..11 {
            b.add(Duration::from_millis(120));
        }
        assert_eq!(b.take(), (100, 150));
        assert_eq!(b.take(), (0, 0), "taking empties the buckets");
        b.add(Duration::from_secs(60));
        assert_eq!(b.take(), (1, 10_000), "beyond the last bound");
    }

    #[test]
    fn stale_and_quiet_instances_do_not_speak_for_the_checkout() {
        let now = 10_000;
        let sample = |at_ms, requests, p90_ms, pool_busy| {
            serde_json::to_string(&Sample {
                at_ms,
                requests,
                p90_ms,
                pool_busy,
            })
            .unwrap()
        };
        let values = [
            sample(now - 500, 40, 75, 0.1),
            sample(now - 900, 3, 2_000, 0.0),
            sample(now - 5_000, 90, 5_000, 1.0),
            "not json".to_owned(),
        ];
        let c = summarise(values.iter().map(String::as_str), now);
        assert_eq!(
            c,
            Checkout {
                instances: 2,
                requests: 43,
                worst_p90_ms: 75,
                worst_pool_busy: 0.1
            }
        );
    }
}
