//! Single leadership through a Redis lease: only the holder runs the jobs; another replica
//! is a hot standby that takes over within one lease period when the leader dies, and at once
//! when it shuts down (the lease is released).

use std::time::Duration;

use common::redis::RedisStore;
use redis::Script;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Take the lease if it is free, or keep it if it is ours. → 1 if we hold it now.
const CLAIM: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Give the lease up, only if it is still ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

pub const LEASE_KEY: &str = "batch:leader";

/// Whether this process leads right now.
#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Keeps claiming the lease every `lease / 3` until `cancel`, then releases it. A renewal
    /// that fails (Redis unreachable) drops leadership at once: better no leader for a moment
    /// than two.
    pub fn run(
        redis: RedisStore,
        instance: String,
        lease: Duration,
        cancel: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let key = redis.key(LEASE_KEY);
        let task = tokio::spawn(async move {
            let (claim, release) = (Script::new(CLAIM), Script::new(RELEASE));
            let lease_ms = lease.as_millis() as u64;
            loop {
                let mut conn = redis.conn();
                let held: redis::RedisResult<i64> = claim
                    .key(&key)
                    .arg(&instance)
                    .arg(lease_ms)
                    .invoke_async(&mut conn)
                    .await;
                let leading = matches!(held, Ok(1));
                if leading != *tx.borrow() {
                    tracing::info!(%instance, leading, "leadership changed");
                }
                let _ = tx.send(leading);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(lease / 3) => {}
                }
            }
            let _ = tx.send(false);
            let mut conn = redis.conn();
            let _: redis::RedisResult<i64> = release
                .key(&key)
                .arg(&instance)
                .invoke_async(&mut conn)
                .await;
            tracing::info!(%instance, "lease released");
        });
        (Self { rx }, task)
    }
}
