//! Read-heavy catalogue answers cached in Redis for a short time. Admin writes bump a
//! version that is part of every key, so a write makes every cached list unreachable at once
//! (old entries just expire). Every key carries the hash tag `{catalogue}`, so the version
//! and the entries share one Redis Cluster slot and one script reads both.

use std::future::Future;
use std::time::Duration;

use common::redis::RedisStore;
use redis::Script;

/// Looks the current version up and reads the entry under it in one round trip.
/// KEYS: the version. ARGV: the entries' prefix, what is cached. The entry's key depends on
/// the version read here, so it cannot be declared; it shares the version's hash tag.
const READ: &str = r#"
local v = redis.call('GET', KEYS[1]) or '0'
return {v, redis.call('GET', ARGV[1] .. v .. ':' .. ARGV[2]) or false}
"#;

#[derive(Clone)]
pub struct CatalogueCache {
    redis: RedisStore,
    ttl: Duration,
    read: Script,
}

impl CatalogueCache {
    pub fn new(redis: RedisStore, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            read: Script::new(READ),
        }
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
        let body = compute().await?;
        self.put(&version, what, &body).await;
        Ok(body)
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
