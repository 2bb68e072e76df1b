//! Read-heavy catalogue answers cached in Redis for a short time. Admin writes bump a
//! version that is part of every key, so a write makes every cached list unreachable at once
//! (old entries just expire). Every key carries the hash tag `{catalogue}`, so the version
//! and the entries share one Redis Cluster slot and one script reads both.
//!
//! When an entry expires while fans keep asking for it, the misses arriving together in one
//! process share one computation: the first asks the database, the others wait for its answer
//! (a flash sale's schedule list was computed ~360 times a sale, several at once per expiry).
//!
//! Each process also keeps the bodies it read or wrote, by entry, with the version they were
//! cached under and no longer than the Redis entry lives ([`Copies`]). A look then still asks
//! Redis for the version (a write anywhere is seen at once), but a body this process already
//! has under that version is not sent again: a flash sale's schedule list (100 dates, some
//! 18 KiB) went through Redis's Lua and back to the process for every fan before.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::redis::RedisStore;
use redis::Script;
use tokio::sync::watch;

/// Looks the current version up and reads the entry under it in one round trip.
/// KEYS: the version. ARGV: the entries' prefix, what is cached, the version of the copy the
/// caller has ('' for none). The entry's key depends on the version read here, so it cannot
/// be declared; it shares the version's hash tag.
/// → {version, body or false, its remaining lifetime in ms, 0}, or {version, false, 0, 1}
///   when the caller's copy is of the current version (the entry is not sent again).
const READ: &str = r#"
local v = redis.call('GET', KEYS[1]) or '0'
if v == ARGV[3] then return {v, false, 0, 1} end
local key = ARGV[1] .. v .. ':' .. ARGV[2]
local body = redis.call('GET', key)
if not body then return {v, false, 0, 0} end
return {v, body, redis.call('PTTL', key), 0}
"#;

/// Bodies this process keeps, at most this many entries (what is cached varies with the
/// query: a page size, a cursor).
const MAX_COPIES: usize = 1_000;

/// A body this process has: the version it was cached under and until when it may be served
/// (no later than the Redis entry's own end). The body is shared, so taking a copy out of the
/// map does not duplicate it; it is copied once, into the answer, when it is served.
#[derive(Clone)]
struct Kept {
    version: String,
    body: Arc<str>,
    until: Instant,
}

/// The bodies this process has, by what is cached.
type Copies = Arc<Mutex<HashMap<String, Kept>>>;

/// What Redis answered to a look.
enum Look {
    /// The caller's copy is of the current version.
    Current,
    /// The entry under the current version, if any, and until when it lives at the latest.
    Entry(Option<(String, Instant)>),
}

/// Misses being computed in this process, by version and entry: the answer, once there.
type Waiting = HashMap<String, watch::Receiver<Option<String>>>;
type InFlight = Arc<Mutex<Waiting>>;

#[derive(Clone)]
pub struct CatalogueCache {
    redis: RedisStore,
    ttl: Duration,
    read: Script,
    in_flight: InFlight,
    copies: Copies,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CatalogueCache {
    pub fn new(redis: RedisStore, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            read: Script::new(READ),
            in_flight: Arc::default(),
            copies: Arc::default(),
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

    /// This process's copy of `what`, if it may still be served.
    fn copy(&self, what: &str) -> Option<Kept> {
        lock(&self.copies)
            .get(what)
            .filter(|c| c.until > Instant::now())
            .cloned()
    }

    /// Keeps `body` as `what` under `version` until `until` (no later than its Redis entry);
    /// a body already past its end is not kept.
    fn keep(&self, what: &str, version: &str, body: &str, until: Instant) {
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut copies = lock(&self.copies);
        if copies.len() >= MAX_COPIES && !copies.contains_key(what) {
            copies.retain(|_, c| c.until > now);
            if copies.len() >= MAX_COPIES {
                return;
            }
        }
        copies.insert(
            what.to_owned(),
            Kept {
                version: version.to_owned(),
                body: Arc::from(body),
                until,
            },
        );
    }

    /// Asks Redis for the current version and, unless `have` (the version of this process's
    /// copy) is it, the entry under it.
    async fn look(&self, what: &str, have: &str) -> redis::RedisResult<(String, Look)> {
        let asked = Instant::now();
        let mut conn = self.redis.conn();
        let (version, body, lives_ms, current): (String, Option<String>, i64, bool) = self
            .read
            .key(self.version_key())
            .arg(self.entry_prefix())
            .arg(what)
            .arg(have)
            .invoke_async(&mut conn)
            .await?;
        let look = match body {
            _ if current => Look::Current,
            // An entry with no lifetime (PTTL -1; every put sets one) is not copied.
            Some(body) => Look::Entry(Some((
                body,
                asked + Duration::from_millis(u64::try_from(lives_ms).unwrap_or(0)),
            ))),
            None => Look::Entry(None),
        };
        Ok((version, look))
    }

    /// The cached body for `what` and the version it was looked up under. A Redis failure
    /// is a miss: the database answers instead.
    async fn get(&self, what: &str) -> (Option<String>, String) {
        if self.ttl.is_zero() {
            return (None, "0".into());
        }
        let copy = self.copy(what);
        let have = copy.as_ref().map_or("", |c| c.version.as_str());
        match self.look(what, have).await {
            Ok((version, Look::Current)) => (copy.map(|c| String::from(&*c.body)), version),
            Ok((version, Look::Entry(Some((body, until))))) => {
                self.keep(what, &version, &body, until);
                (Some(body), version)
            }
            Ok((version, Look::Entry(None))) => (None, version),
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
        let written = Instant::now();
        let mut conn = self.redis.conn();
        let key = format!("{}{version}:{what}", self.entry_prefix());
        let res: redis::RedisResult<()> = redis::cmd("SET")
            .arg(key)
            .arg(body)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await;
        match res {
            Ok(()) => self.keep(what, version, body, written + self.ttl),
            Err(e) => tracing::warn!(error = %e, "catalogue cache write failed"),
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
