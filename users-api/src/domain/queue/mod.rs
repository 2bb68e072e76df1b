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
//! The one key outside a concert's slot, `queue:concerts` (the rooms admission ticks), is
//! written by separate commands beside the scripts (`WaitingRoom::register`).
//!
//! Two kinds of time: a pass's end is a score (ms) the scripts compare with the `now` they
//! are given from a [`Clock`], so tests move it; a heartbeat and the user → token record are
//! Redis key TTLs, which run on Redis's own clock.
//!
//! With a store ([`WaitingRoom::with_store`], users-api's database), the organiser's settings
//! are persisted in PostgreSQL (`queue_rooms`) and Redis holds the working copy: a script that
//! finds a room's settings not loaded (Redis restarted empty, flushed, or never saw the room)
//! answers `RESTORE` before doing anything; the room is then restored from PostgreSQL
//! (`room.rs`) and the script runs again.

mod lines;
pub mod lottery;
pub mod pace;
pub mod room;
mod status;
mod streams;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::ErrorCode;
use common::auth::{QueueKeys, new_queue_token, queue_token_concert};
use common::clock::Clock;
use common::error::Code;
use redis::{RedisError, RedisResult, Script};
use sea_orm::prelude::Uuid;
use sea_orm::{DatabaseConnection, DbErr};

pub use lines::{Following, LineState, Lines, Place, Reading, cadence};
pub use pace::Verdict;
pub use room::{
    Actor, Lottery, PatchError, RoomSettingsPatch, RoomState, SettableState, SettingsRecord,
    WaitingRoomPublic, WaitingRoomView,
};
pub use status::{Admission, Gate, QueueState, QueueStatus};
pub use streams::{StreamSlot, StreamSlots};

use crate::config::QueueConfig;
use crate::error::{Catalogued, UsersCode};
use crate::store::rooms;

/// A dependency of the waiting room failed: Redis, or PostgreSQL when a room's settings had
/// to be restored (or a draw recorded).
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("database: {0}")]
    Store(#[from] DbErr),
}

impl ErrorCode for RoomError {
    fn status(&self) -> actix_web::http::StatusCode {
        Code::DependencyUnavailable.status()
    }
    fn code(&self) -> &'static str {
        Code::DependencyUnavailable.code()
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Redis(e) => ErrorCode::retry_after(e),
            Self::Store(_) => Some(1),
        }
    }
}

/// A script's answer when the room's settings are not loaded in Redis: restore, run again.
const RESTORE_REPLY: &str = "RESTORE";

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
    #[error("database: {0}")]
    Store(#[from] DbErr),
}

impl From<RoomError> for QueueError {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::Redis(e) => Self::Redis(e),
            RoomError::Store(e) => Self::Store(e),
        }
    }
}

impl QueueError {
    fn catalogued(&self) -> Catalogued {
        match self {
            Self::TokenNotFound => UsersCode::QueueTokenNotFound.into(),
            Self::TooManyStreams { .. } => UsersCode::TooManyStreams.into(),
            Self::Redis(_) | Self::Store(_) => Code::DependencyUnavailable.into(),
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
            Self::Redis(e) => ErrorCode::retry_after(e),
            Self::Store(_) => Some(1),
            Self::TokenNotFound => None,
            // A stream whose client went away frees its slot at its next write, within one
            // keep-alive period (15 s at most).
            Self::TooManyStreams { .. } => Some(5),
        }
    }
}

/// Whether a token in line is alive, and how one leaves the line; prepended to every script
/// that judges or drops tokens. `prefix` is the concert's alive prefix
/// ([`QueueKeys::alive_prefix`]); under it live:
/// - `<prefix><token>`: the token's own heartbeat, renewed by each poll (key TTL);
/// - `<prefix>@`: a hash token → holder, the users-api process whose status stream holds it;
/// - `<prefix>@<holder>`: that process's lease on this line, renewed by its ticker each tick.
///
/// A token is alive while it has a heartbeat or its holder's lease runs: an open stream keeps
/// its fan in line at no cost per fan. Tokens start with a digit, so they never meet `@`.
const LINE_FNS: &str = r#"
local function is_alive(prefix, t)
  if redis.call('EXISTS', prefix .. t) == 1 then return true end
  local holder = redis.call('HGET', prefix .. '@', t)
  return holder and redis.call('EXISTS', prefix .. '@' .. holder) == 1
end
local function drop(prefix, line, t)
  redis.call('ZREM', line, t)
  redis.call('DEL', prefix .. t)
  redis.call('HDEL', prefix .. '@', t)
end
"#;

/// A script that uses [`LINE_FNS`].
fn line_script(body: &str) -> Script {
    Script::new(&format!("{LINE_FNS}{body}"))
}

/// Returns the caller's live token for the concert, or appends a new one to the line.
/// A token that is gone (abandoned, expired, retired after a purchase) is replaced by a new
/// one at the back: the user may queue again, but never holds two places. While the room
/// has an undrawn lottery (a commitment and no `closed` flag), a new token goes to the
/// pre-queue instead; a sold-out room takes nobody (a fan already admitted gets their pass).
/// A new token's room is not registered in `queue:concerts` here (another slot): the caller
/// does it after the script ([`WaitingRoom::register`]).
/// → {state, token, position|active_until_ms|'', rate, created, pre_queue, opens_at_ms}
///   or {'SOLD_OUT'}, or {'RESTORE'} (nothing done) when ARGV[6] asks to check that the
///   settings are loaded and they are not.
const JOIN: &str = r#"
local now = tonumber(ARGV[2])
local s = redis.call('HMGET', KEYS[6], 'sold_out', 'commitment', 'closed', 'opens_at', 'loaded')
if ARGV[6] == '1' and not s[5] then return {'RESTORE'} end
local sold_out = s[1] == '1'
local function heartbeat(t)
  redis.call('SET', ARGV[4] .. t, '1', 'PX', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local function waiting(t, created)
  heartbeat(t)
  local rank = redis.call('ZRANK', KEYS[3], t)
  return {'WAITING', t, tostring(rank + 1), redis.call('GET', KEYS[5]) or '', created, '0', ''}
end
local function pre(t, created)
  heartbeat(t)
  return {'WAITING', t, '', '', created, '1', s[4] or ''}
end
local existing = redis.call('GET', KEYS[1])
if existing then
  if sold_out then
    local exp = redis.call('ZSCORE', KEYS[4], existing)
    if exp and tonumber(exp) > now then return {'ACTIVE', existing, exp, '', '0', '0', ''} end
    return {'SOLD_OUT'}
  end
  if redis.call('ZSCORE', KEYS[3], existing) then
    if is_alive(ARGV[4], existing) then return waiting(existing, '0') end
    drop(ARGV[4], KEYS[3], existing)
  elseif redis.call('ZSCORE', KEYS[7], existing) then
    if is_alive(ARGV[4], existing) then return pre(existing, '0') end
    drop(ARGV[4], KEYS[7], existing)
  else
    local exp = redis.call('ZSCORE', KEYS[4], existing)
    if exp and tonumber(exp) > now then return {'ACTIVE', existing, exp, '', '0', '0', ''} end
  end
end
if sold_out then return {'SOLD_OUT'} end
local t = ARGV[1]
redis.call('SET', KEYS[1], t)
if s[2] and not s[3] then
  redis.call('ZADD', KEYS[7], redis.call('INCR', KEYS[2]), t)
  return pre(t, '1')
end
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[2]), t)
return waiting(t, '1')
"#;

/// Status of a token for its owner; a waiting (or pre-queued) token's poll is its heartbeat.
/// A token still in line in a sold-out room is SOLD_OUT, and its poll is still its heartbeat:
/// the room may be reopened, and admission's sweep of a sold-out line lets go only of the
/// places whose fan stopped listening (a token let go then reads EXPIRED: its place was
/// lost). With a holder (ARGV[7], a process opening or re-checking a status stream), a token
/// in line is registered as held by that process's stream, whose lease ([`TICK`]) keeps it
/// alive from then on.
/// → {state, position|active_until_ms|'', rate, pre_queue, opens_at_ms, seq, passed, head,
///   draws} or {'NOT_FOUND'}, or {'RESTORE'} (nothing written) as JOIN's, ARGV[6] asking.
///   `seq` is the token's place in the sequence while in line; the last three are the line's
///   counters read in the same step (see [`ADMIT`] and [`DRAW`]).
const STATUS: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'NOT_FOUND'} end
local exp = redis.call('ZSCORE', KEYS[3], ARGV[1])
if exp then
  if tonumber(exp) > tonumber(ARGV[2]) then return {'ACTIVE', exp, '', '0', ''} end
  return {'EXPIRED', exp, '', '0', ''}
end
local s = redis.call('HMGET', KEYS[5], 'sold_out', 'opens_at', 'loaded')
if ARGV[6] == '1' and not s[3] then return {'RESTORE'} end
local line = KEYS[2]
local seq = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not seq then
  seq = redis.call('ZSCORE', KEYS[6], ARGV[1])
  if not seq then return {'EXPIRED', '0', '', '0', ''} end
  line = KEYS[6]
end
local alive = is_alive(ARGV[4], ARGV[1])
local function heartbeat()
  if ARGV[7] == '' then
    redis.call('SET', ARGV[4] .. ARGV[1], '1', 'PX', ARGV[3])
  else
    redis.call('HSET', ARGV[4] .. '@', ARGV[1], ARGV[7])
    redis.call('SET', ARGV[4] .. '@' .. ARGV[7], '1', 'PX', ARGV[3])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if s[1] == '1' then
  if alive then heartbeat() end
  return {'SOLD_OUT', '', '', '0', ''}
end
if not alive then
  drop(ARGV[4], line, ARGV[1])
  return {'EXPIRED', '0', '', '0', ''}
end
heartbeat()
local c = redis.call('HMGET', KEYS[7], 'passed', 'head', 'draws')
local tail = {seq, c[1] or '0', c[2] or '0', c[3] or '0'}
if line == KEYS[6] then return {'WAITING', '', '', '1', s[2] or '', unpack(tail)} end
return {'WAITING', tostring(redis.call('ZRANK', KEYS[2], ARGV[1]) + 1),
  redis.call('GET', KEYS[4]) or '', '0', '', unpack(tail)}
"#;

/// A status stream closed: its process no longer holds the token (unless another stream of
/// the fan's took it over meanwhile), and a token still in line gets the grace a poll gives,
/// so a fan whose connection broke has the idle timeout to come back.
/// KEYS: waiting, pre-queue. ARGV: token, alive prefix, holder, idle timeout (ms).
const LEAVE: &str = r#"
local holders = ARGV[2] .. '@'
if redis.call('HGET', holders, ARGV[1]) == ARGV[3] then redis.call('HDEL', holders, ARGV[1]) end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('SET', ARGV[2] .. ARGV[1], '1', 'PX', ARGV[4])
end
return 0
"#;

/// One process's look at one line, once per tick whatever the crowd: renews the process's
/// lease (ARGV[1], for ARGV[2] ms), which keeps every token its streams hold alive, and reads
/// the line's counters. KEYS: stats, settings, rate.
/// → {passed, head, draws, rate, sold_out}
const TICK: &str = r#"
redis.call('SET', ARGV[1], '1', 'PX', ARGV[2])
local c = redis.call('HMGET', KEYS[1], 'passed', 'head', 'draws')
return {c[1] or '0', c[2] or '0', c[3] or '0', redis.call('GET', KEYS[3]) or '',
  redis.call('HGET', KEYS[2], 'sold_out') or ''}
"#;

/// One admission tick for one concert: drop expired actives, then — unless the room is
/// gated (paused, a pre-queue not drawn yet, no seat available, sold out) — admit the oldest
/// waiting tokens that are still alive while active < max, at most `per_tick` and at most
/// the seats available (`inventory:{c<id>}`, written by concert-api; no hash = unknown = no
/// limit); abandoned ones met on the way are dropped. A sold-out room admits nobody until
/// its organiser reopens it, so its tick sweeps the line instead: up to 256 tokens a tick,
/// from where the last sweep stopped (`swept_to` in stats), dropping those whose fan stopped
/// listening, so that the room empties, goes idle and stops being ticked. (Before, every
/// sold-out room kept its line — thousands of tokens — and was ticked four times a second for
/// good.) A pass that reached the end of the line rests for ARGV[14] ms (half the waiting
/// idle timeout; `sweep_rests_until` in stats) before the next one starts from the front: a
/// heartbeat lapses only an idle timeout after its fan's last poll, so looking again sooner
/// finds the same fans still there. A fan who left is let go at most about one and a half
/// idle timeouts after their last poll. (Before, the passes followed one another: two lines of
/// ~4,800 fans left by the sales before kept Redis sweeping ~2,000 tokens a second through
/// the next sale.) The room's settings override the defaults given
/// as arguments. Keeps the admission rate (an EWMA per second) for wait
/// estimates and running totals. With a pace (ARGV[8] '0' widen or '1' narrow, see
/// [`pace`]) active is held under the room's admission window instead of `max_active`: the
/// window grows by ARGV[9] while fans wait and the checkout keeps up, shrinks to ARGV[11] %
/// (at most once per ARGV[13] ms) when it does not, starts at ARGV[10], and stays at least
/// ARGV[12] and at most max_active (the ceiling wins).
/// → {admitted, expired, abandoned, active, waiting, gate, pre_queued, idle, window (0
///   without a pace)}; gate 5 = a draw
///   is due (nobody admitted: the caller draws, then ticks again); idle 1 = nobody active,
///   waiting or pre-queued and no lottery to draw (the caller unregisters the room, see
///   [`IDLE`]); {-1} (nothing done) when ARGV[7] asks to check that the settings are loaded
///   and they are not.
const ADMIT: &str = r#"
local s = redis.call('HMGET', KEYS[4], 'state', 'max_active', 'admit_per_tick', 'commitment',
  'drawn_at', 'opens_at', 'sold_out', 'loaded')
if ARGV[7] == '1' and not s[8] then return {-1} end
local now = tonumber(ARGV[1])
local expired = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if expired > 0 then redis.call('HINCRBY', KEYS[5], 'expired_total', expired) end
local max_active = tonumber(s[2]) or tonumber(ARGV[2])
local per_tick = tonumber(s[3]) or tonumber(ARGV[3])
local undrawn = s[4] and not s[5]
local gate = 0
local cap = per_tick
if undrawn then
  if (not s[6]) or now >= tonumber(s[6]) then gate = 5 else gate = 2 end
elseif s[7] == '1' then
  gate = 4
else
  local inv = redis.call('HMGET', KEYS[6], 'total', 'available', 'held')
  local available = tonumber(inv[2])
  if available then
    local held, total = tonumber(inv[3]) or 0, tonumber(inv[1]) or 0
    if available <= 0 and held <= 0 and total > 0 then
      redis.call('HSET', KEYS[4], 'sold_out', '1')
      gate = 4
    elseif available <= 0 then
      gate = 3
    else
      cap = available
    end
  end
  if gate == 0 and s[1] == 'PAUSED' then gate = 1 end
end
local had_waiting = redis.call('ZCARD', KEYS[1]) > 0
local window = max_active
local paced = ARGV[8] ~= ''
if paced then
  local w = redis.call('HMGET', KEYS[5], 'window', 'window_cut_at')
  window = tonumber(w[1]) or tonumber(ARGV[10])
  if gate == 0 then
    if ARGV[8] == '1' then
      if now - (tonumber(w[2]) or 0) >= tonumber(ARGV[13]) then
        window = math.floor(window * tonumber(ARGV[11]) / 100)
        redis.call('HSET', KEYS[5], 'window_cut_at', now)
      end
    elseif had_waiting then
      window = window + tonumber(ARGV[9])
    end
  end
  window = math.min(math.max(tonumber(ARGV[12]), window), max_active)
  redis.call('HSET', KEYS[5], 'window', window)
end
local admitted, abandoned, scanned = 0, 0, 0
if gate == 0 then
  local room = math.min(window - redis.call('ZCARD', KEYS[2]), per_tick, cap)
  local scan_limit = math.max(per_tick * 20, 1000)
  local until_ms = now + tonumber(ARGV[4])
  local head
  while room > 0 and scanned < scan_limit do
    local batch = redis.call('ZRANGE', KEYS[1], 0, room - 1, 'WITHSCORES')
    if #batch == 0 then break end
    for i = 1, #batch, 2 do
      local t = batch[i]
      head = batch[i + 1]
      scanned = scanned + 1
      local alive = is_alive(ARGV[5], t)
      drop(ARGV[5], KEYS[1], t)
      if alive then
        redis.call('ZADD', KEYS[2], until_ms, t)
        admitted = admitted + 1
        room = room - 1
      else
        abandoned = abandoned + 1
      end
    end
  end
  if admitted > 0 then redis.call('HINCRBY', KEYS[5], 'admitted_total', admitted) end
  if abandoned > 0 then redis.call('HINCRBY', KEYS[5], 'abandoned_total', abandoned) end
  if scanned > 0 then
    redis.call('HINCRBY', KEYS[5], 'passed', scanned)
    redis.call('HSET', KEYS[5], 'head', head)
  end
elseif gate == 4 and had_waiting then
  local sweep = redis.call('HMGET', KEYS[5], 'swept_to', 'sweep_rests_until')
  if now >= (tonumber(sweep[2]) or 0) then
    local batch
    if sweep[1] then
      batch = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. sweep[1], '+inf', 'WITHSCORES',
        'LIMIT', 0, 256)
    else
      batch = redis.call('ZRANGE', KEYS[1], 0, 255, 'WITHSCORES')
    end
    for i = 1, #batch, 2 do
      if not is_alive(ARGV[5], batch[i]) then
        drop(ARGV[5], KEYS[1], batch[i])
        abandoned = abandoned + 1
      end
    end
    if #batch < 512 then
      redis.call('HDEL', KEYS[5], 'swept_to')
      redis.call('HSET', KEYS[5], 'sweep_rests_until', now + tonumber(ARGV[14]))
    else
      redis.call('HSET', KEYS[5], 'swept_to', batch[#batch])
    end
    if abandoned > 0 then redis.call('HINCRBY', KEYS[5], 'abandoned_total', abandoned) end
  end
end
if had_waiting then
  local rate = 0
  if gate == 0 then
    local per_sec = admitted * 1000 / tonumber(ARGV[6])
    local old = tonumber(redis.call('GET', KEYS[3]) or '')
    rate = per_sec
    if old then rate = 0.7 * old + 0.3 * per_sec end
  end
  redis.call('SET', KEYS[3], tostring(rate))
end
local active, waiting = redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[1])
local pre_queued = redis.call('ZCARD', KEYS[7])
local idle = 0
if active == 0 and waiting == 0 and pre_queued == 0 and not undrawn then
  idle = 1
  redis.call('DEL', KEYS[3], ARGV[5] .. '@')
  redis.call('HDEL', KEYS[5], 'window', 'window_cut_at', 'swept_to', 'sweep_rests_until')
end
if not paced then window = 0 end
return {admitted, expired, abandoned, active, waiting, gate, pre_queued, idle, window}
"#;

/// The second look at a room [`ADMIT`] found idle, once it is out of `queue:concerts` (a
/// set on another slot, so not in ADMIT's script): a join or a lottery that came in between
/// must put it back ([`WaitingRoom::unregister_if_idle`]).
/// KEYS: waiting, active, pre-queue, settings. → 1 if nobody is in the room and no lottery
/// is to be drawn, else 0.
const IDLE: &str = r#"
if redis.call('ZCARD', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[2]) > 0
    or redis.call('ZCARD', KEYS[3]) > 0 then return 0 end
local lot = redis.call('HMGET', KEYS[4], 'commitment', 'drawn_at')
if lot[1] and not lot[2] then return 0 end
return 1
"#;

/// The draw's first step: closes the pre-queue (new joins then go to the FIFO line), drops
/// lapsed pre-queued tokens, and reserves the `n` sequence numbers just below every later
/// arrival's for the drawn tokens. Run again before the draw is written (a crash, a second
/// batch leader), it closes nothing more and returns what is left of the same pre-queue.
/// → {} if no draw is due, else {seed_hex, token...}
const CLOSE_PREQUEUE: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'commitment', 'drawn_at', 'opens_at', 'closed', 'seed')
if not s[1] or s[2] then return {} end
if s[3] and tonumber(ARGV[1]) < tonumber(s[3]) then return {} end
if not s[4] then
  local lapsed = 0
  for _, t in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if not is_alive(ARGV[2], t) then
      drop(ARGV[2], KEYS[2], t)
      lapsed = lapsed + 1
    end
  end
  if lapsed > 0 then redis.call('HINCRBY', KEYS[4], 'abandoned_total', lapsed) end
  local n = redis.call('ZCARD', KEYS[2])
  local base = redis.call('INCRBY', KEYS[3], n)
  redis.call('HSET', KEYS[1], 'closed', '1', 'draw_base', base, 'draw_n', n)
end
local out = {s[5]}
for _, t in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do out[#out + 1] = t end
return out
"#;

/// The draw's second step: the pre-queued tokens, in the lottery's order (ARGV[3..]), enter
/// the line on the reserved sequence numbers, ahead of every later arrival; one still
/// heartbeating is placed, a lapsed one dropped. Writes `drawn_at` (ARGV[1], the time the
/// store recorded), which publishes the seed. Only the first run does anything, so two batch
/// leaders cannot draw twice.
/// → drawn, or -1 if the draw was already written
const DRAW: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'drawn_at', 'draw_base', 'draw_n')
if s[1] or not s[2] then return -1 end
local first = tonumber(s[2]) - tonumber(s[3])
local drawn, lapsed = 0, 0
for i = 3, #ARGV do
  local t = ARGV[i]
  if redis.call('ZSCORE', KEYS[2], t) then
    if is_alive(ARGV[2], t) then
      redis.call('ZREM', KEYS[2], t)
      redis.call('ZADD', KEYS[3], first + i - 2, t)
      drawn = drawn + 1
    else
      drop(ARGV[2], KEYS[2], t)
      lapsed = lapsed + 1
    end
  end
end
local rest = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, t in ipairs(rest) do drop(ARGV[2], KEYS[2], t) end
lapsed = lapsed + #rest
if lapsed > 0 then redis.call('HINCRBY', KEYS[4], 'abandoned_total', lapsed) end
redis.call('HINCRBY', KEYS[4], 'draws', 1)
redis.call('HSET', KEYS[1], 'drawn_at', ARGV[1])
return drawn
"#;

/// Retires buyers' tokens for a concert after their purchases — each slot frees at once —
/// once per purchase event. KEYS[1] is the concert's active set, then for each purchase its
/// buyer's token key and its event's marker (kept ARGV[1] seconds), set in the same script,
/// so a delivery seen before does nothing, even to a token the user got since. One answer a
/// purchase: -1 seen before, 1 token retired, 0 no active token.
const RETIRE: &str = r#"
local out = {}
for i = 2, #KEYS - 1, 2 do
  local r = -1
  if redis.call('SET', KEYS[i + 1], '1', 'NX', 'EX', ARGV[1]) then
    local t = redis.call('GET', KEYS[i])
    if t then r = redis.call('ZREM', KEYS[1], t) else r = 0 end
  end
  out[#out + 1] = r
end
return out
"#;

/// How long a purchase event's retirement is remembered: redeliveries come within minutes
/// (a consumer restarted or rebalanced before committing its offset); a day covers them with
/// room to spare and keeps a busy day's markers small (~100 bytes each).
pub const RETIRED_KEPT: Duration = Duration::from_secs(24 * 3600);

/// What retiring a purchase's token came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// The user's active token was removed.
    Token,
    /// The user had no active token for the concert (expired, or never admitted here).
    NoActiveToken,
    /// This event retired before: nothing was done.
    SeenBefore,
}

/// The keys users-api adds to a concert's waiting room (DESIGN §5), beside common's
/// [`QueueKeys`]; all carry the hash tag `{c<id>}`, so every script stays on one slot.
pub(crate) struct RoomKeys<'a>(&'a QueueKeys);

impl RoomKeys<'_> {
    /// Hash: the organiser's settings and the lottery (`state`, `max_active`,
    /// `admit_per_tick`, `opens_at`, `seed`, `commitment`, `closed`, `draw_base`, `draw_n`,
    /// `drawn_at`, `sold_out`), and `loaded` once it was restored from the store.
    pub(crate) fn settings(&self, concert: i64) -> String {
        self.0
            .redis()
            .key(&format!("queue:{{c{concert}}}:settings"))
    }
    /// String: a purchase event that retired its buyer's token (`WaitingRoom::retire`).
    pub(crate) fn retired(&self, concert: i64, event_id: Uuid) -> String {
        self.0
            .redis()
            .key(&format!("queue:{{c{concert}}}:retired:{event_id}"))
    }
    /// Hash: running totals (`admitted_total`, `abandoned_total`, `expired_total`).
    pub(crate) fn stats(&self, concert: i64) -> String {
        self.0.redis().key(&format!("queue:{{c{concert}}}:stats"))
    }
    /// Zset token → seq: fans who joined before the draw (no position yet).
    pub(crate) fn prequeue(&self, concert: i64) -> String {
        self.0
            .redis()
            .key(&format!("queue:{{c{concert}}}:prequeue"))
    }
    /// Hash `{total, available, held, sold}` kept by concert-api (the shared interface).
    pub(crate) fn inventory(&self, concert: i64) -> String {
        self.0.redis().key(&format!("inventory:{{c{concert}}}"))
    }
}

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
    idle: Script,
    close_prequeue: Script,
    draw: Script,
    retire: Script,
    leave: Script,
    tick: Script,
    pub(crate) settings: room::SettingsScripts,
    streams: StreamSlots,
    /// This process's name as the holder of its status streams' tokens (random per start).
    holder: Arc<str>,
    /// When this process last registered each room for admission (see [`Registrations`]).
    registrations: Registrations,
    /// users-api's database, where the settings are persisted; `None`: Redis only.
    store: Option<DatabaseConnection>,
}

/// When this process last registered each room in `queue:concerts` (a join's second round
/// trip). A room leaves the set only when it is idle (nobody waiting, active or pre-queued;
/// [`WaitingRoom::unregister_if_idle`], which looks again after removing it), so a join that
/// finds others already waiting needs no registration: the room is in the set, or the one who
/// found the line empty registers it right after their own script. Such a join registers
/// anyway when this process has not done so for [`Registrations::REFRESH`]: that bounds how
/// long a room stays unticked when its first fan's registration never happened (the process
/// died between the two round trips) or Redis lost the set but not the line. In a crowd's
/// first second this turns ten thousand registrations into a handful.
#[derive(Clone, Default)]
struct Registrations(Arc<Mutex<HashMap<i64, DateTime<Utc>>>>);

impl Registrations {
    const REFRESH: chrono::TimeDelta = chrono::TimeDelta::seconds(1);
    /// More rooms than this remembered: the stale ones are forgotten.
    const KEPT: usize = 4096;

    /// Whether a new token of `concert` must register its room: the line was empty before it
    /// (or it went to the pre-queue), or this process's last registration is stale.
    fn due(&self, concert: i64, first_in_line: bool, now: DateTime<Utc>) -> bool {
        if first_in_line {
            return true;
        }
        let last = self.lock().get(&concert).copied();
        last.is_none_or(|at| now - at >= Self::REFRESH || at > now)
    }

    fn done(&self, concert: i64, now: DateTime<Utc>) {
        let mut rooms = self.lock();
        if rooms.len() >= Self::KEPT {
            rooms.retain(|_, at| now - *at < Self::REFRESH);
        }
        rooms.insert(concert, now);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, DateTime<Utc>>> {
        // The map holds plain timestamps: one left by a panicking thread is still valid.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a join was refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("concert {0} is sold out")]
    SoldOut(i64),
    #[error(transparent)]
    Room(#[from] RoomError),
}

impl From<RedisError> for JoinError {
    fn from(e: RedisError) -> Self {
        Self::Room(e.into())
    }
}

impl ErrorCode for JoinError {
    fn status(&self) -> actix_web::http::StatusCode {
        match self {
            Self::SoldOut(_) => UsersCode::SoldOut.status(),
            Self::Room(e) => e.status(),
        }
    }
    fn code(&self) -> &'static str {
        match self {
            Self::SoldOut(_) => UsersCode::SoldOut.code(),
            Self::Room(e) => e.code(),
        }
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::SoldOut(_) => None,
            Self::Room(e) => e.retry_after(),
        }
    }
}

impl WaitingRoom {
    pub fn new(keys: QueueKeys, cfg: QueueConfig, clock: Clock) -> Self {
        Self {
            keys,
            clock,
            join: line_script(JOIN),
            status: line_script(STATUS),
            admit: line_script(ADMIT),
            idle: Script::new(IDLE),
            close_prequeue: line_script(CLOSE_PREQUEUE),
            draw: line_script(DRAW),
            retire: Script::new(RETIRE),
            leave: Script::new(LEAVE),
            tick: Script::new(TICK),
            settings: room::SettingsScripts::new(),
            streams: StreamSlots::new(cfg.sse_per_user),
            holder: Arc::from(common::auth::random_token().get(..16).unwrap_or("holder")),
            registrations: Registrations::default(),
            cfg,
            store: None,
        }
    }

    /// Persists the rooms' settings in users-api's database (`queue_rooms`) and restores a
    /// room from it whenever Redis has lost the room's settings. Without it the room works
    /// on Redis alone (tools and other services' tests that only need admission).
    pub fn with_store(mut self, db: DatabaseConnection) -> Self {
        self.store = Some(db);
        self
    }

    pub(crate) fn store(&self) -> Option<&DatabaseConnection> {
        self.store.as_ref()
    }

    /// Whether a script should check that the room's settings are loaded (`'1'`/`'0'`).
    fn check_flag(check: bool) -> &'static str {
        if check { "1" } else { "0" }
    }

    pub(crate) fn room_keys(&self) -> RoomKeys<'_> {
        RoomKeys(&self.keys)
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

    fn millis(d: Duration) -> u64 {
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

    /// Joins the line (or finds the caller's place in it; before the draw of a room with a
    /// pre-queue, the pre-queue). Returns the status and whether a new token was issued.
    /// A sold-out room refuses. One round trip, and a second for a new token that must
    /// register its room for admission ([`Registrations::due`]; plus the restore, once per
    /// room, when Redis has lost the room's settings).
    pub async fn join(
        &self,
        user_id: i64,
        concert_id: i64,
    ) -> Result<(QueueStatus, bool), JoinError> {
        let k = &self.keys;
        let rk = self.room_keys();
        let mut conn = k.redis().conn();
        let mut check = self.store.is_some();
        let out = loop {
            let out: Vec<String> = self
                .join
                .key(k.user(concert_id, user_id))
                .key(k.seq(concert_id))
                .key(k.waiting(concert_id))
                .key(k.active(concert_id))
                .key(k.rate(concert_id))
                .key(rk.settings(concert_id))
                .key(rk.prequeue(concert_id))
                .arg(new_queue_token(concert_id))
                .arg(self.clock.now().timestamp_millis())
                .arg(Self::millis(self.cfg.waiting_idle_timeout))
                .arg(k.alive_prefix(concert_id))
                .arg(self.user_key_ttl_ms())
                .arg(Self::check_flag(check))
                .invoke_async(&mut conn)
                .await?;
            if check && out.first().map(String::as_str) == Some(RESTORE_REPLY) {
                self.restore(concert_id).await?;
                check = false;
                continue;
            }
            break out;
        };
        let field = |i: usize| out.get(i).map_or("", String::as_str);
        if field(0) == "SOLD_OUT" {
            return Err(JoinError::SoldOut(concert_id));
        }
        let created = field(4) == "1";
        let first_in_line = field(2) == "1" || field(5) == "1";
        let now = self.clock.now();
        if created && self.registrations.due(concert_id, first_in_line, now) {
            self.register(concert_id).await?;
            self.registrations.done(concert_id, now);
        }
        if field(5) == "1" {
            return Ok((
                QueueStatus::pre_queued(field(1), concert_id, field(6)),
                created,
            ));
        }
        // Join only ever replies WAITING or ACTIVE here.
        let state = QueueState::from_reply(field(0)).unwrap_or(QueueState::Expired);
        let status = QueueStatus::from_reply(
            field(1),
            concert_id,
            state,
            field(2),
            field(3),
            self.nominal_rate(),
        );
        Ok((status, created))
    }

    /// The status of `token` if it is `user_id`'s. Polling a waiting token keeps it alive.
    /// One round trip.
    pub async fn status(&self, user_id: i64, token: &str) -> Result<QueueStatus, QueueError> {
        Ok(self.check(user_id, token, "").await?.0)
    }

    /// [`status`](Self::status) for a status stream of this process: a token in line is held
    /// by the process from then on (kept alive by its lease, see [`tick`](Self::tick), not by
    /// polls), and its place is returned for the stream to follow the line locally.
    pub async fn watch(
        &self,
        user_id: i64,
        token: &str,
    ) -> Result<(QueueStatus, Option<Place>), QueueError> {
        self.check(user_id, token, &self.holder).await
    }

    async fn check(
        &self,
        user_id: i64,
        token: &str,
        holder: &str,
    ) -> Result<(QueueStatus, Option<Place>), QueueError> {
        let concert_id = queue_token_concert(token).ok_or(QueueError::TokenNotFound)?;
        let k = &self.keys;
        let rk = self.room_keys();
        let mut conn = k.redis().conn();
        let mut check = self.store.is_some();
        let out = loop {
            let out: Vec<String> = self
                .status
                .key(k.user(concert_id, user_id))
                .key(k.waiting(concert_id))
                .key(k.active(concert_id))
                .key(k.rate(concert_id))
                .key(rk.settings(concert_id))
                .key(rk.prequeue(concert_id))
                .key(rk.stats(concert_id))
                .arg(token)
                .arg(self.clock.now().timestamp_millis())
                .arg(Self::millis(self.cfg.waiting_idle_timeout))
                .arg(k.alive_prefix(concert_id))
                .arg(self.user_key_ttl_ms())
                .arg(Self::check_flag(check))
                .arg(holder)
                .invoke_async(&mut conn)
                .await?;
            // Asked only for the caller's own token: an unknown one never reaches the store.
            if check && out.first().map(String::as_str) == Some(RESTORE_REPLY) {
                self.restore(concert_id).await?;
                check = false;
                continue;
            }
            break out;
        };
        let field = |i: usize| out.get(i).map_or("", String::as_str);
        let number = |i: usize| field(i).parse::<f64>().ok().map(|n| n as i64);
        let state = QueueState::from_reply(field(0)).ok_or(QueueError::TokenNotFound)?;
        let pre_queue = state == QueueState::Waiting && field(3) == "1";
        let place = match (state, number(5), number(6), number(7), number(8)) {
            (QueueState::Waiting, Some(seq), Some(passed), Some(head), Some(draws)) => {
                Some(Place {
                    seq,
                    rank: if pre_queue { None } else { number(1) },
                    passed,
                    head,
                    draws,
                })
            }
            _ => None,
        };
        let status = if pre_queue {
            QueueStatus::pre_queued(token, concert_id, field(4))
        } else {
            QueueStatus::from_reply(
                token,
                concert_id,
                state,
                field(1),
                field(2),
                self.nominal_rate(),
            )
        };
        Ok((status, place))
    }

    /// A status stream of this process that held `token` has ended: the token goes back to
    /// being kept alive by its own heartbeat, which starts now (the idle timeout's grace).
    pub async fn leave(&self, token: &str) -> RedisResult<()> {
        let Some(concert_id) = queue_token_concert(token) else {
            return Ok(());
        };
        let k = &self.keys;
        let mut conn = k.redis().conn();
        self.leave
            .key(k.waiting(concert_id))
            .key(self.room_keys().prequeue(concert_id))
            .arg(token)
            .arg(k.alive_prefix(concert_id))
            .arg(&*self.holder)
            .arg(Self::millis(self.cfg.waiting_idle_timeout))
            .invoke_async(&mut conn)
            .await
    }

    /// This process's look at `concert_id`'s line for one tick of its status streams: renews
    /// the lease that keeps every token they hold alive and reads the line's counters. One
    /// round trip per concert and tick, however many streams are open.
    pub async fn tick(&self, concert_id: i64) -> RedisResult<LineState> {
        let k = &self.keys;
        let rk = self.room_keys();
        let mut conn = k.redis().conn();
        let out: Vec<String> = self
            .tick
            .key(rk.stats(concert_id))
            .key(rk.settings(concert_id))
            .key(k.rate(concert_id))
            .arg(format!("{}@{}", k.alive_prefix(concert_id), self.holder))
            .arg(Self::millis(self.cfg.waiting_idle_timeout))
            .invoke_async(&mut conn)
            .await?;
        let field = |i: usize| out.get(i).map_or("", String::as_str);
        let number = |i: usize| field(i).parse::<f64>().map_or(0, |n| n as i64);
        Ok(LineState {
            passed: number(0),
            head: number(1),
            draws: number(2),
            rate: field(3).parse().unwrap_or(self.nominal_rate()),
            sold_out: field(4) == "1",
        })
    }

    /// One admission tick for `concert_id` at `now` (batch calls this every
    /// `admit_interval`, with its clock's time). At the first tick after a pre-queue's
    /// `sale_opens_at` it draws the lottery first, then admits from the new line. A room whose
    /// settings Redis lost is restored first.
    pub async fn admit(&self, concert_id: i64, now: DateTime<Utc>) -> Result<Admission, RoomError> {
        self.admit_paced(concert_id, now, Verdict::Fixed).await
    }

    /// The checkout's last second as its instances published it ([`common::pressure`]),
    /// judged for [`admit_paced`](Self::admit_paced): [`Verdict::Fixed`] without a pace.
    /// Freshness is judged by this machine's wall clock, as the samples are dated.
    pub async fn checkout_verdict(&self) -> RedisResult<Verdict> {
        if !self.cfg.pace.auto {
            return Ok(Verdict::Fixed);
        }
        let now_ms = Utc::now().timestamp_millis();
        let checkout = common::pressure::read(self.keys.redis(), now_ms).await?;
        Ok(self.cfg.pace.judge(&checkout))
    }

    /// [`admit`](Self::admit) with the checkout's pressure judged: the room's admission
    /// window is widened or narrowed by `verdict` first ([`pace`]).
    pub async fn admit_paced(
        &self,
        concert_id: i64,
        now: DateTime<Utc>,
        verdict: Verdict,
    ) -> Result<Admission, RoomError> {
        let first = self.admit_once(concert_id, now, verdict).await?;
        if first.gate != Gate::DrawDue {
            return Ok(first);
        }
        let Some(drawn) = self.draw_lottery(concert_id, now).await? else {
            return Ok(first);
        };
        let mut then = self.admit_once(concert_id, now, verdict).await?;
        then.expired += first.expired;
        then.drawn = drawn;
        Ok(then)
    }

    async fn admit_once(
        &self,
        concert_id: i64,
        now: DateTime<Utc>,
        verdict: Verdict,
    ) -> Result<Admission, RoomError> {
        let pace = &self.cfg.pace;
        let k = &self.keys;
        let rk = self.room_keys();
        let mut conn = k.redis().conn();
        let mut check = self.store.is_some();
        let out = loop {
            let out: Vec<i64> = self
                .admit
                .key(k.waiting(concert_id))
                .key(k.active(concert_id))
                .key(k.rate(concert_id))
                .key(rk.settings(concert_id))
                .key(rk.stats(concert_id))
                .key(rk.inventory(concert_id))
                .key(rk.prequeue(concert_id))
                .arg(now.timestamp_millis())
                .arg(self.cfg.max_active)
                .arg(self.cfg.admit_per_tick)
                .arg(Self::millis(self.cfg.active_ttl))
                .arg(k.alive_prefix(concert_id))
                .arg(Self::millis(self.cfg.admit_interval))
                .arg(Self::check_flag(check))
                .arg(verdict.flag())
                .arg(pace.step_per_tick(self.cfg.admit_interval))
                .arg(pace.start)
                .arg(pace::CUT_TO_PERCENT)
                .arg(pace::MIN_WINDOW)
                .arg(Self::millis(pace::CUT_GAP))
                .arg(Self::millis(self.cfg.waiting_idle_timeout / 2))
                .invoke_async(&mut conn)
                .await?;
            if check && out.first() == Some(&-1) {
                self.restore(concert_id).await?;
                check = false;
                continue;
            }
            break out;
        };
        let at = |i: usize| {
            out.get(i)
                .and_then(|n| u64::try_from(*n).ok())
                .unwrap_or_default()
        };
        if at(7) == 1 {
            self.unregister_if_idle(concert_id).await?;
        }
        Ok(Admission {
            admitted: at(0),
            expired: at(1),
            abandoned: at(2),
            active: at(3),
            waiting: at(4),
            pre_queued: at(6),
            drawn: 0,
            gate: Gate::from_reply(at(5)),
            window: Some(at(8)).filter(|w| *w > 0),
        })
    }

    /// Registers `concert_id` in `queue:concerts`, the rooms admission ticks. Always after
    /// the script that gave the room something to tick, so that
    /// [`unregister_if_idle`](Self::unregister_if_idle)'s second look cannot miss it.
    pub(crate) async fn register(&self, concert_id: i64) -> RedisResult<()> {
        let mut conn = self.keys.redis().conn();
        redis::cmd("SADD")
            .arg(self.keys.concerts())
            .arg(concert_id)
            .query_async(&mut conn)
            .await
    }

    /// Takes a room [`ADMIT`] found idle out of `queue:concerts`, then looks at it again
    /// ([`IDLE`]) and puts it back if a join or a lottery came in meanwhile: whatever came
    /// before the removal is seen by the second look, and whatever came after it registers
    /// the room itself.
    async fn unregister_if_idle(&self, concert_id: i64) -> RedisResult<()> {
        let k = &self.keys;
        let rk = self.room_keys();
        let mut conn = k.redis().conn();
        let _: i64 = redis::cmd("SREM")
            .arg(k.concerts())
            .arg(concert_id)
            .query_async(&mut conn)
            .await?;
        let idle: RedisResult<i64> = self
            .idle
            .key(k.waiting(concert_id))
            .key(k.active(concert_id))
            .key(rk.prequeue(concert_id))
            .key(rk.settings(concert_id))
            .invoke_async(&mut conn)
            .await;
        if !matches!(idle, Ok(1)) {
            // Not idle, or not known to be: a needless registration costs one empty tick.
            self.register(concert_id).await?;
        }
        idle.map(drop)
    }

    /// The pre-queue lottery (DESIGN §10): close the pre-queue, order its live tokens by
    /// HMAC-SHA256(seed, token), and put them in line in that order. Deterministic, and its
    /// last step writes only once, so a crash between the steps or two batch leaders racing
    /// give the same single draw. Returns how many tokens were put in line, or `None` if the
    /// draw waits for the next tick: with a store, the draw is recorded there before the seed
    /// is published, so a room restored later is never drawn twice with a published seed.
    async fn draw_lottery(
        &self,
        concert_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, RoomError> {
        let k = &self.keys;
        let rk = self.room_keys();
        let mut conn = k.redis().conn();
        let out: Vec<String> = self
            .close_prequeue
            .key(rk.settings(concert_id))
            .key(rk.prequeue(concert_id))
            .key(k.seq(concert_id))
            .key(rk.stats(concert_id))
            .arg(now.timestamp_millis())
            .arg(k.alive_prefix(concert_id))
            .invoke_async(&mut conn)
            .await?;
        let Some((seed_hex, tokens)) = out.split_first() else {
            return Ok(Some(0));
        };
        let Some(seed) = lottery::from_hex(seed_hex) else {
            tracing::error!(
                concert_id,
                "the lottery's stored seed is not hex; draw skipped"
            );
            return Ok(Some(0));
        };
        let drawn_at = match &self.store {
            None => now,
            Some(db) => {
                match rooms::mark_drawn(db, concert_id, now, seed_hex, &lottery::commitment(&seed))
                    .await
                {
                    // No row: a room configured in Redis alone (nothing to keep in step).
                    Ok(at) => at.unwrap_or(now),
                    Err(error) => {
                        tracing::warn!(
                            concert_id,
                            %error,
                            "the draw could not be recorded in the database; it waits for the next tick"
                        );
                        return Ok(None);
                    }
                }
            }
        };
        let order = lottery::order(&seed, tokens.iter().map(String::as_str));
        let mut draw = self.draw.prepare_invoke();
        draw.key(rk.settings(concert_id))
            .key(rk.prequeue(concert_id))
            .key(k.waiting(concert_id))
            .key(rk.stats(concert_id))
            .arg(drawn_at.timestamp_millis())
            .arg(k.alive_prefix(concert_id));
        for t in &order {
            draw.arg(*t);
        }
        let drawn: i64 = draw.invoke_async(&mut conn).await?;
        if drawn >= 0 {
            tracing::info!(concert_id, drawn, "pre-queue lottery drawn; seed published");
        }
        Ok(Some(u64::try_from(drawn).unwrap_or(0)))
    }

    /// Retires `user_id`'s token for `concert_id` after the purchase `event_id` announced,
    /// at most once per event ([`RETIRED_KEPT`]): the retirement and its record are one
    /// script, so no redelivery can retire a token the user was given since.
    pub async fn retire(
        &self,
        event_id: Uuid,
        user_id: i64,
        concert_id: i64,
    ) -> RedisResult<Retired> {
        let retired = self.retire_each(concert_id, &[(event_id, user_id)]).await?;
        Ok(retired.first().copied().unwrap_or(Retired::NoActiveToken))
    }

    /// [`retire`](Self::retire) for several purchases of `concert_id` (`(event, buyer)`), in
    /// one script: what each came to, in their order.
    pub async fn retire_each(
        &self,
        concert_id: i64,
        purchases: &[(Uuid, i64)],
    ) -> RedisResult<Vec<Retired>> {
        let k = &self.keys;
        let mut conn = k.redis().conn();
        let mut retire = self.retire.key(k.active(concert_id));
        for (event_id, user_id) in purchases {
            retire
                .key(k.user(concert_id, *user_id))
                .key(RoomKeys(k).retired(concert_id, *event_id));
        }
        let retired: Vec<i64> = retire
            .arg(RETIRED_KEPT.as_secs())
            .invoke_async(&mut conn)
            .await?;
        Ok(retired
            .into_iter()
            .map(|r| match r {
                -1 => Retired::SeenBefore,
                1 => Retired::Token,
                _ => Retired::NoActiveToken,
            })
            .collect())
    }

    /// Concerts that currently have a line, admitted users or a lottery to draw (admission
    /// iterates these): Redis's `queue:concerts`, plus, with a store, every room whose
    /// lottery the store says is not drawn yet — so a room Redis forgot is still ticked (and
    /// restored by its tick). A store that cannot answer is logged and Redis's list used.
    pub async fn concerts_with_lines(&self) -> RedisResult<Vec<i64>> {
        let mut conn = self.keys.redis().conn();
        let mut ids: Vec<i64> = redis::cmd("SMEMBERS")
            .arg(self.keys.concerts())
            .query_async(&mut conn)
            .await?;
        if let Some(db) = &self.store {
            match rooms::undrawn(db).await {
                Ok(undrawn) => ids.extend(undrawn),
                Err(error) => tracing::warn!(
                    %error,
                    "rooms with a lottery to draw could not be read; ticking Redis's list only"
                ),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    pub(crate) fn keys(&self) -> &QueueKeys {
        &self.keys
    }
}
