//! The waiting room (DESIGN §2 steps 2–4 and 10, §5): one line per concert in Redis.
//!
//! Every operation is one atomic Lua script over the concert's keys (which share the hash tag
//! `{c<id>}`), so concurrency cannot break its rules:
//! - FIFO by a per-concert `INCR` sequence, never by clock time;
//! - one token per user per concert (asking again returns it, while it is alive);
//! - never more than `max_active` admitted at once, whoever calls `admit` and how often;
//! - a waiting token whose heartbeat lapsed is dropped, never admitted; an expired active
//!   token frees its slot at the next admission.
//!
//! Two kinds of time: a pass's end is a score (ms) the scripts compare with the `now` they
//! are given from a [`Clock`], so tests move it; a heartbeat and the user → token record are
//! Redis key TTLs, which run on Redis's own clock.

mod status;
mod streams;

use chrono::{DateTime, Utc};
use common::ErrorCode;
use common::auth::{QueueKeys, new_queue_token, queue_token_concert};
use common::clock::Clock;
use common::error::Code;
use redis::{RedisError, RedisResult, Script};

pub use status::{Admission, QueueState, QueueStatus};
pub use streams::{StreamSlot, StreamSlots};

use crate::config::QueueConfig;
use crate::error::{Catalogued, UsersCode};

/// Why a token's status could not be given.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Unknown, malformed, or another user's: the same answer for all three.
    #[error("no such queue token for this user")]
    TokenNotFound,
    /// The user already has as many status streams open here as one user may.
    #[error("this account already has {open} status streams open; close one or poll instead")]
    TooManyStreams { open: u32 },
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

impl QueueError {
    fn catalogued(&self) -> Catalogued {
        match self {
            Self::TokenNotFound => UsersCode::QueueTokenNotFound.into(),
            Self::TooManyStreams { .. } => UsersCode::TooManyStreams.into(),
            Self::Redis(_) => Code::DependencyUnavailable.into(),
        }
    }
}

impl ErrorCode for QueueError {
    fn status(&self) -> actix_web::http::StatusCode {
        self.catalogued().status()
    }
    fn code(&self) -> &'static str {
        self.catalogued().code()
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Redis(e) => e.retry_after(),
            Self::TokenNotFound => None,
            // A stream whose client went away frees its slot at its next write, within one
            // keep-alive period (15 s at most).
            Self::TooManyStreams { .. } => Some(5),
        }
    }
}

/// Returns the caller's live token for the concert, or appends a new one to the line.
/// A token that is gone (abandoned, expired, retired after a purchase) is replaced by a new
/// one at the back: the user may queue again, but never holds two places.
/// → {state, token, position|active_until_ms, rate, created}
const JOIN: &str = r#"
local now = tonumber(ARGV[2])
local function waiting(t, created)
  redis.call('SET', ARGV[4] .. t, '1', 'PX', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  local rank = redis.call('ZRANK', KEYS[3], t)
  return {'WAITING', t, tostring(rank + 1), redis.call('GET', KEYS[5]) or '', created}
end
local existing = redis.call('GET', KEYS[1])
if existing then
  if redis.call('ZSCORE', KEYS[3], existing) then
    if redis.call('EXISTS', ARGV[4] .. existing) == 1 then return waiting(existing, '0') end
    redis.call('ZREM', KEYS[3], existing)
  else
    local exp = redis.call('ZSCORE', KEYS[4], existing)
    if exp and tonumber(exp) > now then return {'ACTIVE', existing, exp, '', '0'} end
  end
end
local t = ARGV[1]
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[2]), t)
redis.call('SET', KEYS[1], t)
redis.call('SADD', KEYS[6], ARGV[5])
return waiting(t, '1')
"#;

/// Status of a token for its owner; a waiting token's poll is its heartbeat.
/// → {state, position|active_until_ms, rate} or {'NOT_FOUND'}
const STATUS: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'NOT_FOUND'} end
local exp = redis.call('ZSCORE', KEYS[3], ARGV[1])
if exp then
  if tonumber(exp) > tonumber(ARGV[2]) then return {'ACTIVE', exp, ''} end
  return {'EXPIRED', exp, ''}
end
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then return {'EXPIRED', '0', ''} end
local alive = ARGV[4] .. ARGV[1]
if redis.call('EXISTS', alive) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'EXPIRED', '0', ''}
end
redis.call('SET', alive, '1', 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'WAITING', tostring(rank + 1), redis.call('GET', KEYS[4]) or ''}
"#;

/// One admission tick for one concert: drop expired actives, then admit the oldest waiting
/// tokens that are still alive while active < max, at most `per_tick`; abandoned ones met on
/// the way are dropped. Keeps the admission rate (an EWMA per second) for wait estimates.
/// → {admitted, expired, abandoned, active, waiting}
const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
local expired = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local had_waiting = redis.call('ZCARD', KEYS[1]) > 0
local room = math.min(tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[2]), tonumber(ARGV[3]))
local admitted, abandoned, scanned = 0, 0, 0
local scan_limit = tonumber(ARGV[7])
local until_ms = now + tonumber(ARGV[4])
while room > 0 and scanned < scan_limit do
  local batch = redis.call('ZRANGE', KEYS[1], 0, room - 1)
  if #batch == 0 then break end
  for _, t in ipairs(batch) do
    scanned = scanned + 1
    redis.call('ZREM', KEYS[1], t)
    local alive = ARGV[5] .. t
    if redis.call('EXISTS', alive) == 1 then
      redis.call('DEL', alive)
      redis.call('ZADD', KEYS[2], until_ms, t)
      admitted = admitted + 1
      room = room - 1
    else
      abandoned = abandoned + 1
    end
  end
end
if had_waiting then
  local per_sec = admitted * 1000 / tonumber(ARGV[6])
  local old = tonumber(redis.call('GET', KEYS[3]) or '')
  local rate = per_sec
  if old then rate = 0.7 * old + 0.3 * per_sec end
  redis.call('SET', KEYS[3], tostring(rate))
end
local active, waiting = redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[1])
if active == 0 and waiting == 0 then
  redis.call('SREM', KEYS[4], ARGV[8])
  redis.call('DEL', KEYS[3])
end
return {admitted, expired, abandoned, active, waiting}
"#;

/// Retires the user's token for a concert after a purchase: its slot frees at once.
const RETIRE: &str = r#"
local t = redis.call('GET', KEYS[1])
if not t then return 0 end
return redis.call('ZREM', KEYS[2], t)
"#;

/// The waiting rooms of every concert, on one Redis. Joins and polls are judged at the
/// room's clock; an admission tick is told its time by the scheduler that runs it.
#[derive(Clone)]
pub struct WaitingRoom {
    keys: QueueKeys,
    cfg: QueueConfig,
    clock: Clock,
    join: Script,
    status: Script,
    admit: Script,
    retire: Script,
    streams: StreamSlots,
}

impl WaitingRoom {
    pub fn new(keys: QueueKeys, cfg: QueueConfig, clock: Clock) -> Self {
        Self {
            keys,
            clock,
            join: Script::new(JOIN),
            status: Script::new(STATUS),
            admit: Script::new(ADMIT),
            retire: Script::new(RETIRE),
            streams: StreamSlots::new(cfg.sse_per_user),
            cfg,
        }
    }

    /// A slot for one more status stream of `user_id` in this process (`QUEUE_SSE_PER_USER`).
    pub fn open_stream(&self, user_id: i64) -> Result<StreamSlot, QueueError> {
        self.streams
            .try_open(user_id)
            .ok_or(QueueError::TooManyStreams {
                open: self.cfg.sse_per_user,
            })
    }

    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    fn millis(d: std::time::Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// How long the user → token key outlives the last heartbeat: long enough to cover a
    /// full active period after admission.
    fn user_key_ttl_ms(&self) -> u64 {
        Self::millis(self.cfg.waiting_idle_timeout) + Self::millis(self.cfg.active_ttl)
    }

    /// Admitted per second when no tick has measured it yet.
    fn nominal_rate(&self) -> f64 {
        f64::from(self.cfg.admit_per_tick) / self.cfg.admit_interval.as_secs_f64()
    }

    /// Joins the line (or finds the caller's place in it). Returns the status and whether a
    /// new token was issued. One round trip.
    pub async fn join(&self, user_id: i64, concert_id: i64) -> RedisResult<(QueueStatus, bool)> {
        let k = &self.keys;
        let mut conn = k.redis().conn();
        let out: Vec<String> = self
            .join
            .key(k.user(concert_id, user_id))
            .key(k.seq(concert_id))
            .key(k.waiting(concert_id))
            .key(k.active(concert_id))
            .key(k.rate(concert_id))
            .key(k.concerts())
            .arg(new_queue_token(concert_id))
            .arg(self.clock.now().timestamp_millis())
            .arg(Self::millis(self.cfg.waiting_idle_timeout))
            .arg(k.alive_prefix(concert_id))
            .arg(concert_id)
            .arg(self.user_key_ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        let field = |i: usize| out.get(i).map_or("", String::as_str);
        // Join only ever replies WAITING or ACTIVE.
        let state = QueueState::from_reply(field(0)).unwrap_or(QueueState::Expired);
        let status = QueueStatus::from_reply(
            field(1),
            concert_id,
            state,
            field(2),
            field(3),
            self.nominal_rate(),
        );
        Ok((status, field(4) == "1"))
    }

    /// The status of `token` if it is `user_id`'s. Polling a waiting token keeps it alive.
    /// One round trip.
    pub async fn status(&self, user_id: i64, token: &str) -> Result<QueueStatus, QueueError> {
        let concert_id = queue_token_concert(token).ok_or(QueueError::TokenNotFound)?;
        let k = &self.keys;
        let mut conn = k.redis().conn();
        let out: Vec<String> = self
            .status
            .key(k.user(concert_id, user_id))
            .key(k.waiting(concert_id))
            .key(k.active(concert_id))
            .key(k.rate(concert_id))
            .arg(token)
            .arg(self.clock.now().timestamp_millis())
            .arg(Self::millis(self.cfg.waiting_idle_timeout))
            .arg(k.alive_prefix(concert_id))
            .arg(self.user_key_ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        let field = |i: usize| out.get(i).map_or("", String::as_str);
        let state = QueueState::from_reply(field(0)).ok_or(QueueError::TokenNotFound)?;
        Ok(QueueStatus::from_reply(
            token,
            concert_id,
            state,
            field(1),
            field(2),
            self.nominal_rate(),
        ))
    }

    /// One admission tick for `concert_id` at `now` (batch calls this every
    /// `admit_interval`, with its clock's time).
    pub async fn admit(&self, concert_id: i64, now: DateTime<Utc>) -> RedisResult<Admission> {
        let k = &self.keys;
        let mut conn = k.redis().conn();
        let scan_limit = u64::from(self.cfg.admit_per_tick)
            .saturating_mul(20)
            .max(1000);
        let out: Vec<u64> = self
            .admit
            .key(k.waiting(concert_id))
            .key(k.active(concert_id))
            .key(k.rate(concert_id))
            .key(k.concerts())
            .arg(now.timestamp_millis())
            .arg(self.cfg.max_active)
            .arg(self.cfg.admit_per_tick)
            .arg(Self::millis(self.cfg.active_ttl))
            .arg(k.alive_prefix(concert_id))
            .arg(Self::millis(self.cfg.admit_interval))
            .arg(scan_limit)
            .arg(concert_id)
            .invoke_async(&mut conn)
            .await?;
        let at = |i: usize| out.get(i).copied().unwrap_or_default();
        Ok(Admission {
            admitted: at(0),
            expired: at(1),
            abandoned: at(2),
            active: at(3),
            waiting: at(4),
        })
    }

    /// Retires `user_id`'s token for `concert_id` (after a purchase). Returns whether an
    /// active token was removed; retiring twice is harmless.
    pub async fn retire(&self, user_id: i64, concert_id: i64) -> RedisResult<bool> {
        let k = &self.keys;
        let mut conn = k.redis().conn();
        let removed: i64 = self
            .retire
            .key(k.user(concert_id, user_id))
            .key(k.active(concert_id))
            .invoke_async(&mut conn)
            .await?;
        Ok(removed == 1)
    }

    /// Concerts that currently have a line or admitted users (admission iterates these).
    pub async fn concerts_with_lines(&self) -> RedisResult<Vec<i64>> {
        let mut conn = self.keys.redis().conn();
        redis::cmd("SMEMBERS")
            .arg(self.keys.concerts())
            .query_async(&mut conn)
            .await
    }
}
