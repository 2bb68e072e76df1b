//! Log-in throttling: failed log-ins slow down whoever keeps guessing one account, without
//! letting them lock the account's owner out (DESIGN §2 step 1).
//!
//! Two counters, both in Redis, both keyed by the username as typed (an unknown username is
//! counted and throttled exactly like a real one, so throttling says nothing about which
//! accounts exist):
//!
//! - per (username, client address): the first `LOGIN_FREE_FAILURES` failures are free; after
//!   that each attempt waits 1 s, 2 s, 4 s … (capped at `LOGIN_BACKOFF_MAX_SECS`) since the
//!   last failure. An attempt inside the delay is refused before the password is hashed, and
//!   an attempt let through claims the slot, so a burst in parallel still gets one guess per
//!   delay. A success clears the counter. Failures are forgotten `LOGIN_FAILURE_WINDOW_SECS`
//!   (plus the longest delay) after the last one.
//! - per username across addresses (a botnet guessing one account from many addresses): past
//!   `LOGIN_ACCOUNT_FAILURE_LIMIT` failures within a `LOGIN_FAILURE_WINDOW_SECS` window,
//!   addresses that never logged in to this account are refused until the window ends. An
//!   address that did (the last [`TRUSTED_ADDRESSES`] of them, for [`TRUSTED_FOR`]) is never
//!   refused by this counter: the attacker's failures elsewhere cannot lock the owner out of
//!   an on-sale.
//!
//! The three keys of one username carry one hash tag, a digest of the username
//! (`username_tag`), so each pipeline below stays on one Redis Cluster slot while the accounts
//! spread over all of them.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::HttpRequest;
use common::clock::Clock;
use common::config::{ConfigError, Env};
use common::redis::RedisStore;
use sha2::{Digest, Sha256};

/// How many addresses that logged in successfully are remembered per account.
pub const TRUSTED_ADDRESSES: isize = 10;
/// How long such an address stays trusted after its last successful log-in.
pub const TRUSTED_FOR: Duration = Duration::from_secs(30 * 86_400);

/// The numbers of log-in throttling.
#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    /// Failures per (account, address) before the backoff starts.
    pub free_failures: u32,
    /// The longest delay between attempts of one (account, address).
    pub backoff_max: Duration,
    /// Failures per account (any address) within `failure_window` before untrusted addresses
    /// are refused.
    pub account_failure_limit: u32,
    pub failure_window: Duration,
}

impl ThrottleConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            free_failures: env.parse("LOGIN_FREE_FAILURES", 5, 0..=100)?,
            backoff_max: env.secs("LOGIN_BACKOFF_MAX_SECS", 900, 1..=86_400)?,
            account_failure_limit: env.parse("LOGIN_ACCOUNT_FAILURE_LIMIT", 100, 1..=1_000_000)?,
            failure_window: env.secs("LOGIN_FAILURE_WINDOW_SECS", 3600, 60..=604_800)?,
        })
    }
}

/// The client's address as throttling sees it.
///
/// users-api is reached only through the gateway, which appends the address it accepted the
/// connection from to `X-Forwarded-For` (nginx `$proxy_add_x_forwarded_for`; Envoy Gateway
/// likewise). Every earlier entry is whatever the client sent and is never believed: only the
/// LAST entry is the gateway's. Without the header (a direct call inside the cluster, a test)
/// the TCP peer is the client. An IPv6 address counts as its /64, which one subscriber
/// usually holds whole, so rotating addresses inside it gains an attacker nothing.
pub fn client_address(req: &HttpRequest) -> String {
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .last()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    match forwarded.or_else(|| req.peer_addr().map(|a| a.ip())) {
        Some(ip) => normalize(ip),
        None => "unknown".to_owned(),
    }
}

fn normalize(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Reads and, for an attempt it lets through while backing off, claims the (account,
/// address) slot: returns 0 (go ahead) or the milliseconds left to wait. One key only.
const PAIR_CHECK: &str = r"
local v = redis.call('HMGET', KEYS[1], 'n', 'at')
local n = tonumber(v[1] or '0')
local free = tonumber(ARGV[2])
if n < free then return 0 end
local now = tonumber(ARGV[1])
local at = tonumber(v[2] or '0')
local delay = tonumber(ARGV[3])
local exp = n - free
if exp < 40 then delay = math.min(delay, 1000 * 2 ^ exp) end
local ready = at + delay
if now < ready then return math.ceil(ready - now) end
redis.call('HSET', KEYS[1], 'at', now)
return 0
";

/// The username's key name: the first 16 hex digits (64 bits) of its SHA-256. Hashing keeps
/// braces a username may contain out of the hash tag, and what was typed out of key names.
fn username_tag(username: &str) -> String {
    let digest = Sha256::digest(username.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts failed log-ins and says when an attempt must wait.
#[derive(Clone)]
pub struct LoginThrottle {
    redis: RedisStore,
    config: ThrottleConfig,
    clock: Clock,
    check: std::sync::Arc<redis::Script>,
}

impl LoginThrottle {
    pub fn new(redis: RedisStore, config: ThrottleConfig, clock: Clock) -> Self {
        Self {
            redis,
            config,
            clock,
            check: std::sync::Arc::new(redis::Script::new(PAIR_CHECK)),
        }
    }

    /// `login_fail:{<tag>}:[<address>]`: a hash of the failure count `n` and the last
    /// failure (or claimed attempt) `at`, in milliseconds of the service's clock. `<tag>` is
    /// [`username_tag`]: a fixed-length name for the username that no username can bend into
    /// another's, and the Redis Cluster hash tag of all three keys of the account.
    fn pair_key(&self, username: &str, address: &str) -> String {
        let tag = username_tag(username);
        self.redis.key(&format!("login_fail:{{{tag}}}:[{address}]"))
    }

    /// `login_fail_account:{<tag>}`: failures in the current window (TTL = the window).
    fn account_key(&self, username: &str) -> String {
        let tag = username_tag(username);
        self.redis.key(&format!("login_fail_account:{{{tag}}}"))
    }

    /// `login_trusted:{<tag>}`: addresses that logged in, scored by when (seconds).
    fn trusted_key(&self, username: &str) -> String {
        let tag = username_tag(username);
        self.redis.key(&format!("login_trusted:{{{tag}}}"))
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Before the password is hashed: `None` to go ahead, or the seconds to wait.
    pub async fn check(&self, username: &str, address: &str) -> redis::RedisResult<Option<u64>> {
        let mut conn = self.redis.conn();
        let (failures, ttl_ms, trusted_at): (Option<u64>, i64, Option<f64>) = redis::pipe()
            .cmd("GET")
            .arg(self.account_key(username))
            .cmd("PTTL")
            .arg(self.account_key(username))
            .cmd("ZSCORE")
            .arg(self.trusted_key(username))
            .arg(address)
            .query_async(&mut conn)
            .await?;
        if failures.unwrap_or(0) >= u64::from(self.config.account_failure_limit) {
            let trusted_since = self.clock.now().timestamp() - TRUSTED_FOR.as_secs() as i64;
            let trusted = trusted_at.is_some_and(|at| at as i64 >= trusted_since);
            if !trusted {
                let wait_ms = if ttl_ms > 0 {
                    ttl_ms as u64
                } else {
                    self.config.failure_window.as_millis() as u64
                };
                return Ok(Some(wait_ms.div_ceil(1000).max(1)));
            }
        }
        let wait_ms: i64 = self
            .check
            .key(self.pair_key(username, address))
            .arg(self.now_ms())
            .arg(self.config.free_failures)
            .arg(self.config.backoff_max.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok((wait_ms > 0).then(|| (wait_ms as u64).div_ceil(1000).max(1)))
    }

    /// A wrong password (or unknown username) from `address`.
    pub async fn failed(&self, username: &str, address: &str) -> redis::RedisResult<()> {
        let pair = self.pair_key(username, address);
        let account = self.account_key(username);
        let pair_ttl = (self.config.failure_window + self.config.backoff_max).as_secs();
        let _: () = redis::pipe()
            .cmd("HINCRBY")
            .arg(&pair)
            .arg("n")
            .arg(1)
            .ignore()
            .cmd("HSET")
            .arg(&pair)
            .arg("at")
            .arg(self.now_ms())
            .ignore()
            .cmd("EXPIRE")
            .arg(&pair)
            .arg(pair_ttl)
            .ignore()
            .cmd("INCR")
            .arg(&account)
            .ignore()
            // The window starts at its first failure and is not extended by later ones.
            .cmd("EXPIRE")
            .arg(&account)
            .arg(self.config.failure_window.as_secs())
            .arg("NX")
            .ignore()
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// A successful log-in from `address`: its backoff is cleared and the address is trusted
    /// for this account (the most recent [`TRUSTED_ADDRESSES`], for [`TRUSTED_FOR`]).
    pub async fn succeeded(&self, username: &str, address: &str) -> redis::RedisResult<()> {
        let trusted = self.trusted_key(username);
        let now = self.clock.now().timestamp();
        let _: () = redis::pipe()
            .cmd("DEL")
            .arg(self.pair_key(username, address))
            .ignore()
            .cmd("ZADD")
            .arg(&trusted)
            .arg(now)
            .arg(address)
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(&trusted)
            .arg(0)
            .arg(-(TRUSTED_ADDRESSES + 1))
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&trusted)
            .arg("-inf")
            .arg(format!("({}", now - TRUSTED_FOR.as_secs() as i64))
            .ignore()
            .cmd("EXPIRE")
            .arg(&trusted)
            .arg(TRUSTED_FOR.as_secs())
            .ignore()
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_last_forwarded_entry_is_the_client_and_earlier_ones_are_ignored() {
        let peer = "10.0.0.9:5555".parse().unwrap();
        let cases = [
            (None, "10.0.0.9"),
            (Some("203.0.113.7"), "203.0.113.7"),
            (Some("1.1.1.1, 203.0.113.7"), "203.0.113.7"),
            (Some("203.0.113.7,   198.51.100.2 "), "198.51.100.2"),
            (Some("1.1.1.1, not-an-address"), "10.0.0.9"),
            (Some("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64"),
            (Some("::ffff:192.0.2.1"), "192.0.2.1"),
        ];
        for (header, expected) in cases {
            let mut req = TestRequest::default().peer_addr(peer);
            if let Some(h) = header {
                req = req.insert_header(("X-Forwarded-For", h));
            }
            assert_eq!(
                client_address(&req.to_http_request()),
                expected,
                "{header:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_accounts_keys_share_one_hash_tag_that_no_username_can_shape() {
        let env = Env::from_pairs([]);
        let redis = RedisStore::connect(&common::config::RedisConfig::from_env(&env).unwrap());
        let throttle = LoginThrottle::new(
            redis.unwrap(),
            ThrottleConfig::from_env(&env).unwrap(),
            Clock::system(),
        );
        assert_eq!(
            [
                throttle.pair_key("ann", "192.0.2.1"),
                throttle.account_key("ann"),
                throttle.trusted_key("ann"),
            ],
            [
                "login_fail:{49915e0d7d4b402e}:[192.0.2.1]",
                "login_fail_account:{49915e0d7d4b402e}",
                "login_trusted:{49915e0d7d4b402e}",
            ]
        );
        // A username with braces of its own does not become the tag.
        assert_eq!(
            throttle.account_key("{c1}"),
            "login_fail_account:{f5428c4a5ae527fc}"
        );
        assert_ne!(username_tag("ann"), username_tag("Ann"));
    }

    #[test]
    fn the_settings_have_the_documented_defaults_and_ranges() {
        let c = ThrottleConfig::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!(
            (
                c.free_failures,
                c.backoff_max,
                c.account_failure_limit,
                c.failure_window
            ),
            (5, Duration::from_secs(900), 100, Duration::from_secs(3600))
        );
        let err = ThrottleConfig::from_env(&Env::from_pairs([("LOGIN_BACKOFF_MAX_SECS", "0")]))
            .unwrap_err();
        assert_eq!(err.var, "LOGIN_BACKOFF_MAX_SECS");
    }
}
