//! Read-heavy catalogue answers cached in Redis for a short time. Admin writes bump a
//! version that is part of every key, so a write makes every cached list unreachable at once
//! (old entries just expire). Every key carries the hash tag `{catalogue}`, so the version
//! and the entries share one Redis Cluster slot and one script reads both.
//!
//! When an entry expires while fans keep asking for it, the misses arriving together in one
//! process share one computation: the first asks the database, the others wait for its answer
//! (a flash sale's schedule list was computed ~360 times a sale, several at once per expiry).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::redis::RedisStore;
use redis::Script;
use tokio::sync::watch;

/// Looks the current version up and reads the entry under it in one round trip.
/// KEYS: the version. ARGV: the entries' prefix, what is cached. The entry's key depends on
/// the version read here, so it cannot be declared; it shares the version's hash tag.
const READ: &str = r#"
local v = redis.call('GET', KEYS[1]) or '0'
return {v, redis.call('GET', ARGV[1] .. v .. ':' .. ARGV[2]) or false}
"#;

/// Misses being computed in this process, by version and entry: the answer, once there.
type Waiting = HashMap<String, watch::Receiver<Option<String>>>;
type InFlight = Arc<Mutex<Waiting>>;

#[derive(Clone)]
pub struct CatalogueCache {
    redis: RedisStore,
    ttl: Duration,
    read: Script,
    in_flight: InFlight,
}

/// The computation of one miss, owned by the request computing it. Dropping it (the answer
/// sent, an error, or the request cancelled) takes it off the list; whoever waited and got
/// no answer computes their own.
struct Flight {
    key: String,
    answer: watch::Sender<Option<String>>,
    in_flight: InFlight,
}

impl Drop for Flight {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.key);
    }
}

/// Either this request computes the miss, or it waits for the one already computing it.
enum Miss {
    Compute(Flight),
    Wait(watch::Receiver<Option<String>>),
}

fn lock(in_flight: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    in_flight
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CatalogueCache {
    pub fn new(redis: RedisStore, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            read: Script::new(READ),
            in_flight: Arc::default(),
        }
    }

    fn miss(&self, version: &str, what: &str) -> Miss {
        let key = format!("{version}:{what}");
        let mut in_flight = lock(&self.in_flight);
        if let Some(answer) = in_flight.get(&key) {
            return Miss::Wait(answer.clone());
        }
        let (answer, waiting) = watch::channel(None);
        in_flight.insert(key.clone(), waiting);
        Miss::Compute(Flight {
            key,
            answer,
            in_flight: self.in_flight.clone(),
        })
    }

    fn version_key(&self) -> String {
        self.redis.key("cache:{catalogue}:version")
    }

    fn entry_prefix(&self) -> String {
        self.redis.key("cache:{catalogue}:")
    }

    /// The cached body for `what` and the version it was looked up under. A Redis failure
    /// is a miss: the database answers instead.
    async fn get(&self, what: &str) -> (Option<String>, String) {
        if self.ttl.is_zero() {
            return (None, "0".into());
        }
        let mut conn = self.redis.conn();
        let res: redis::RedisResult<(String, Option<String>)> = self
            .read
            .key(self.version_key())
            .arg(self.entry_prefix())
            .arg(what)
            .invoke_async(&mut conn)
            .await;
        match res {
            Ok((version, body)) => (body, version),
            Err(e) => {
                tracing::warn!(error = %e, "catalogue cache read failed");
                (None, "0".into())
            }
        }
    }

    /// The body cached for `what`, or else the one `compute` makes, cached for next time.
    pub async fn read_through<F, Fut, E>(&self, what: &str, compute: F) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
    {
        let (hit, version) = self.get(what).await;
        if let Some(body) = hit {
            return Ok(body);
        }
        // Caching off: every read asks the database.
        if self.ttl.is_zero() {
            return compute().await;
        }
        match self.miss(&version, what) {
            Miss::Compute(flight) => {
                let body = compute().await?;
                self.put(&version, what, &body).await;
                flight.answer.send_replace(Some(body.clone()));
                Ok(body)
            }
            Miss::Wait(mut answer) => {
                let shared = answer
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|body| body.clone());
                match shared {
                    Some(body) => Ok(body),
                    None => compute().await,
                }
            }
        }
    }

    async fn put(&self, version: &str, what: &str, body: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let mut conn = self.redis.conn();
        let key = format!("{}{version}:{what}", self.entry_prefix());
        let res: redis::RedisResult<()> = redis::cmd("SET")
            .arg(key)
            .arg(body)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "catalogue cache write failed");
        }
    }

    /// After an admin write: every cached list is stale. If Redis cannot be told, lists
    /// catch up when their short TTL runs out.
    pub async fn invalidate(&self) {
        let mut conn = self.redis.conn();
        let res: redis::RedisResult<i64> = redis::cmd("INCR")
            .arg(self.version_key())
            .query_async(&mut conn)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "catalogue cache invalidation failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> CatalogueCache {
        let cfg = common::config::RedisConfig::from_env(&common::config::Env::from_pairs([(
            "REDIS_KEY_PREFIX",
            "cache-unit:",
        )]))
        .expect("default Redis settings");
        let redis = RedisStore::connect(&cfg).expect("built without connecting");
        CatalogueCache::new(redis, Duration::from_secs(2))
    }

    #[tokio::test]
    async fn misses_arriving_together_wait_for_the_first_answer() {
        let cache = cache();
        let Miss::Compute(flight) = cache.miss("7", "schedules:1") else {
            panic!("the first miss computes");
        };
        let mut waiters = Vec::new();
        for _ in 0..3 {
            match cache.miss("7", "schedules:1") {
                Miss::Wait(answer) => waiters.push(answer),
                Miss::Compute(_) => panic!("a miss in flight is waited for"),
            }
        }
        assert!(
            matches!(cache.miss("8", "schedules:1"), Miss::Compute(_)),
            "another version is another entry"
        );

        flight.answer.send_replace(Some("body".into()));
        drop(flight);
        for mut answer in waiters {
            let body = answer.wait_for(Option::is_some).await.expect("answered");
            assert_eq!(body.as_deref(), Some("body"));
        }
        assert!(
            matches!(cache.miss("7", "schedules:1"), Miss::Compute(_)),
            "a finished flight is off the list"
        );
    }

    #[tokio::test]
    async fn a_computation_that_fails_leaves_its_waiters_to_compute_their_own() {
        let cache = cache();
        let Miss::Compute(flight) = cache.miss("1", "concert:3") else {
            panic!("the first miss computes");
        };
        let Miss::Wait(mut answer) = cache.miss("1", "concert:3") else {
            panic!("the second waits");
        };
        drop(flight);
        assert!(answer.wait_for(Option::is_some).await.is_err());
        assert!(lock(&cache.in_flight).is_empty());
    }
}
