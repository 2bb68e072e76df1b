//! A room's live settings (the organiser's levers, DESIGN §10) and its views: the public
//! `WaitingRoomPublic` and the admin's `WaitingRoom` (API.md).
//!
//! The settings live in `queue:{c<id>}:settings`, beside the line, and every admission tick
//! reads them in its script: a change is effective at the next tick, with no restart. A
//! setting never written falls back to the env default (`QUEUE_MAX_ACTIVE`,
//! `QUEUE_ADMIT_PER_TICK`).

use chrono::{DateTime, TimeZone, Utc};
use redis::{RedisError, Script};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use common::ApiError;
use common::ErrorCode;

use crate::error::UsersCode;

use super::{WaitingRoom, lottery};

/// The organiser's changes: any of the fields (at least one).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomSettingsPatch {
    /// `PAUSED`: nobody is admitted (joins and polls go on, positions freeze). `OPEN`:
    /// admission resumes; on a sold-out room it also clears SOLD_OUT (seats were added), and
    /// the next tick judges the inventory again.
    pub state: Option<SettableState>,
    /// Admitted (ACTIVE) fans at once.
    #[schema(minimum = 1, maximum = 100_000)]
    pub max_active: Option<i64>,
    /// Most fans admitted per tick.
    #[schema(minimum = 1, maximum = 10_000)]
    pub admit_per_tick: Option<i64>,
    /// A future instant: joins before it are pre-queued and drawn by lottery at the first
    /// tick after it (the commitment is published at once). `null` before the draw: the draw
    /// happens at the next tick. Cannot change after the draw (409 `LOTTERY_DRAWN`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub sale_opens_at: Option<Option<DateTime<Utc>>>,
}

/// A present field, `null` included (`Some(None)`); an absent one stays `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The states an organiser can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum SettableState {
    Open,
    Paused,
}

/// A room's state as shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoomState {
    Open,
    Paused,
    /// Nothing left to buy (no seat available nor held): terminal for the fans in line.
    SoldOut,
}

/// The pre-queue's lottery: the commitment from when `sale_opens_at` was set, the seed and
/// the draw's time after it. Everything null for a room without a pre-queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Lottery {
    /// Lowercase hex SHA-256 of the seed.
    pub commitment: Option<String>,
    /// The 32-byte seed, lowercase hex; only after the draw. The order is ascending
    /// lowercase hex HMAC-SHA256(key = seed bytes, message = token UTF-8 bytes).
    pub seed: Option<String>,
    pub drawn_at: Option<DateTime<Utc>>,
}

/// `WaitingRoomPublic` of API.md: what anyone may see of a concert's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WaitingRoomPublic {
    pub concert_id: i64,
    pub state: RoomState,
    pub sale_opens_at: Option<DateTime<Utc>>,
    pub lottery: Lottery,
    /// Fans waiting: in line plus pre-queued.
    pub waiting: u64,
    /// The measured admission rate (0 while nobody is admitted).
    pub admitted_per_minute: u64,
}

/// `WaitingRoom` of API.md: the public view plus the organiser's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = WaitingRoom)]
pub struct WaitingRoomView {
    #[serde(flatten)]
    pub public: WaitingRoomPublic,
    /// In effect: the room's own setting or the env default.
    pub max_active: u64,
    pub admit_per_tick: u64,
    /// Of `waiting`, those in the pre-queue (no position until the draw).
    pub pre_queued: u64,
    pub active: u64,
    pub admitted_total: u64,
    /// Waiting or pre-queued fans dropped because they stopped heartbeating.
    pub abandoned_total: u64,
    /// Admitted fans whose pass ran out.
    pub expired_total: u64,
}

/// The settings an audit row records (before → after).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsRecord {
    pub state: RoomState,
    pub max_active: u64,
    pub admit_per_tick: u64,
    pub sale_opens_at: Option<DateTime<Utc>>,
}

/// One read of everything a view shows.
/// → {state, max_active, admit_per_tick, opens_at, commitment, seed (after the draw),
///    drawn_at, sold_out, admitted_total, abandoned_total, expired_total, waiting,
///    pre_queued, active, rate}
const VIEW: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'state', 'max_active', 'admit_per_tick', 'opens_at',
  'commitment', 'seed', 'drawn_at', 'sold_out')
local t = redis.call('HMGET', KEYS[2], 'admitted_total', 'abandoned_total', 'expired_total')
local seed = ''
if s[7] then seed = s[6] or '' end
return {s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or '', seed, s[7] or '',
  s[8] or '', t[1] or '0', t[2] or '0', t[3] or '0',
  tostring(redis.call('ZCARD', KEYS[3])), tostring(redis.call('ZCARD', KEYS[4])),
  tostring(redis.call('ZCARD', KEYS[5])), redis.call('GET', KEYS[6]) or ''}
"#;

/// Applies a patch atomically. ARGV: state ('' = unchanged, OPEN, PAUSED), max_active,
/// admit_per_tick ('' = unchanged), opens_at ('' = unchanged, 'null', or ms), a new seed
/// and its commitment (used only if the room has none yet), the concert id.
/// → {'LOTTERY_DRAWN'} or {'OK', before: state, sold_out, max, tick, opens_at,
///    after: the same five}
const UPDATE: &str = r#"
local fields = {'state', 'sold_out', 'max_active', 'admit_per_tick', 'opens_at'}
local before = redis.call('HMGET', KEYS[1], unpack(fields))
if ARGV[4] ~= '' then
  local want = ARGV[4]
  if want == 'null' then want = false end
  if redis.call('HEXISTS', KEYS[1], 'drawn_at') == 1 then
    if want ~= before[5] then return {'LOTTERY_DRAWN'} end
  elseif want then
    redis.call('HSET', KEYS[1], 'opens_at', want)
    if redis.call('HEXISTS', KEYS[1], 'commitment') == 0 then
      redis.call('HSET', KEYS[1], 'seed', ARGV[5], 'commitment', ARGV[6])
    end
    redis.call('SADD', KEYS[2], ARGV[7])
  else
    redis.call('HDEL', KEYS[1], 'opens_at')
  end
end
if ARGV[1] == 'PAUSED' then
  redis.call('HSET', KEYS[1], 'state', 'PAUSED')
elseif ARGV[1] == 'OPEN' then
  redis.call('HDEL', KEYS[1], 'state', 'sold_out')
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'max_active', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'admit_per_tick', ARGV[3]) end
local after = redis.call('HMGET', KEYS[1], unpack(fields))
local out = {'OK'}
for i = 1, 5 do out[#out + 1] = before[i] or '' end
for i = 1, 5 do out[#out + 1] = after[i] or '' end
return out
"#;

#[derive(Clone)]
pub(crate) struct SettingsScripts {
    view: Script,
    update: Script,
}

impl SettingsScripts {
    pub(crate) fn new() -> Self {
        Self {
            view: Script::new(VIEW),
            update: Script::new(UPDATE),
        }
    }
}

/// Why a patch was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("sale_opens_at cannot change after the lottery was drawn")]
    LotteryDrawn,
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

impl ErrorCode for PatchError {
    fn status(&self) -> actix_web::http::StatusCode {
        match self {
            Self::LotteryDrawn => UsersCode::LotteryDrawn.status(),
            Self::Redis(e) => ErrorCode::status(e),
        }
    }
    fn code(&self) -> &'static str {
        match self {
            Self::LotteryDrawn => UsersCode::LotteryDrawn.code(),
            Self::Redis(e) => ErrorCode::code(e),
        }
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::LotteryDrawn => None,
            Self::Redis(e) => ErrorCode::retry_after(e),
        }
    }
}

fn millis_to_time(ms: &str) -> Option<DateTime<Utc>> {
    ms.parse::<i64>()
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

fn state_of(state: &str, sold_out: &str) -> RoomState {
    if sold_out == "1" {
        RoomState::SoldOut
    } else if state == "PAUSED" {
        RoomState::Paused
    } else {
        RoomState::Open
    }
}

impl RoomSettingsPatch {
    /// Checks the ranges, and that `sale_opens_at` is in the future (at `now`).
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), ApiError> {
        if self.state.is_none()
            && self.max_active.is_none()
            && self.admit_per_tick.is_none()
            && self.sale_opens_at.is_none()
        {
            return Err(ApiError::invalid(
                "give at least one of `state`, `max_active`, `admit_per_tick`, `sale_opens_at`",
            ));
        }
        if let Some(n) = self.max_active
            && !(1..=100_000).contains(&n)
        {
            return Err(ApiError::invalid_field("max_active", "must be 1 to 100000"));
        }
        if let Some(n) = self.admit_per_tick
            && !(1..=10_000).contains(&n)
        {
            return Err(ApiError::invalid_field(
                "admit_per_tick",
                "must be 1 to 10000",
            ));
        }
        if let Some(Some(at)) = self.sale_opens_at
            && at <= now
        {
            return Err(ApiError::invalid_field(
                "sale_opens_at",
                "must be in the future (or null)",
            ));
        }
        Ok(())
    }
}

impl WaitingRoom {
    fn record(&self, f: &[String]) -> SettingsRecord {
        let field = |i: usize| f.get(i).map_or("", String::as_str);
        SettingsRecord {
            state: state_of(field(0), field(1)),
            max_active: field(2)
                .parse()
                .unwrap_or(u64::from(self.config().max_active)),
            admit_per_tick: field(3)
                .parse()
                .unwrap_or(u64::from(self.config().admit_per_tick)),
            sale_opens_at: millis_to_time(field(4)),
        }
    }

    /// Applies a validated patch; returns the settings before and after it.
    pub async fn update_settings(
        &self,
        concert_id: i64,
        patch: &RoomSettingsPatch,
    ) -> Result<(SettingsRecord, SettingsRecord), PatchError> {
        let rk = self.room_keys();
        let seed = lottery::new_seed();
        let opt = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        let opens = match patch.sale_opens_at {
            None => String::new(),
            Some(None) => "null".to_owned(),
            Some(Some(at)) => at.timestamp_millis().to_string(),
        };
        let state = match patch.state {
            None => "",
            Some(SettableState::Open) => "OPEN",
            Some(SettableState::Paused) => "PAUSED",
        };
        let mut conn = self.keys().redis().conn();
        let out: Vec<String> = self
            .settings
            .update
            .key(rk.settings(concert_id))
            .key(self.keys().concerts())
            .arg(state)
            .arg(opt(patch.max_active))
            .arg(opt(patch.admit_per_tick))
            .arg(opens)
            .arg(lottery::to_hex(&seed))
            .arg(lottery::commitment(&seed))
            .arg(concert_id)
            .invoke_async(&mut conn)
            .await?;
        if out.first().map(String::as_str) != Some("OK") {
            return Err(PatchError::LotteryDrawn);
        }
        let before = self.record(out.get(1..6).unwrap_or_default());
        let after = self.record(out.get(6..11).unwrap_or_default());
        Ok((before, after))
    }

    /// The room's full view (the admin's); its `public` part is what anyone sees.
    pub async fn view(&self, concert_id: i64) -> Result<WaitingRoomView, RedisError> {
        let k = self.keys();
        let rk = self.room_keys();
        let mut conn = k.redis().conn();
        let f: Vec<String> = self
            .settings
            .view
            .key(rk.settings(concert_id))
            .key(rk.stats(concert_id))
            .key(k.waiting(concert_id))
            .key(rk.prequeue(concert_id))
            .key(k.active(concert_id))
            .key(k.rate(concert_id))
            .invoke_async(&mut conn)
            .await?;
        let field = |i: usize| f.get(i).map_or("", String::as_str);
        let text = |i: usize| (!field(i).is_empty()).then(|| field(i).to_owned());
        let count = |i: usize| field(i).parse::<u64>().unwrap_or(0);
        let rate = field(14).parse::<f64>().unwrap_or(0.0);
        let (in_line, pre_queued) = (count(11), count(12));
        Ok(WaitingRoomView {
            public: WaitingRoomPublic {
                concert_id,
                state: state_of(field(0), field(7)),
                sale_opens_at: millis_to_time(field(3)),
                lottery: Lottery {
                    commitment: text(4),
                    seed: text(5),
                    drawn_at: millis_to_time(field(6)),
                },
                waiting: in_line + pre_queued,
                admitted_per_minute: (rate * 60.0).round().max(0.0) as u64,
            },
            max_active: field(1)
                .parse()
                .unwrap_or(u64::from(self.config().max_active)),
            admit_per_tick: field(2)
                .parse()
                .unwrap_or(u64::from(self.config().admit_per_tick)),
            pre_queued,
            active: count(13),
            admitted_total: count(8),
            abandoned_total: count(9),
            expired_total: count(10),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<RoomSettingsPatch, serde_json::Error> {
        serde_json::from_str(body)
    }

    #[test]
    fn an_absent_opening_is_unchanged_and_null_clears_it() {
        assert_eq!(
            parse("{\"state\": \"PAUSED\"}").unwrap().sale_opens_at,
            None
        );
        assert_eq!(
            parse("{\"sale_opens_at\": null}").unwrap().sale_opens_at,
            Some(None)
        );
        assert!(
            parse("{\"sale_opens_at\": \"2030-01-01T00:00:00Z\"}")
                .unwrap()
                .sale_opens_at
                .is_some_and(|o| o.is_some())
        );
        assert!(parse("{\"state\": \"SOLD_OUT\"}").is_err(), "not settable");
        assert!(parse("{\"max\": 3}").is_err(), "unknown fields are refused");
    }

    #[test]
    fn ranges_and_the_future_are_checked_naming_the_field() {
        let now = Utc::now();
        let check = |body: &str| parse(body).unwrap().validate(now);
        assert!(check("{}").is_err());
        for (body, field) in [
            ("{\"max_active\": 0}", "max_active"),
            ("{\"max_active\": 100001}", "max_active"),
            ("{\"admit_per_tick\": 10001}", "admit_per_tick"),
            (
                "{\"sale_opens_at\": \"2000-01-01T00:00:00Z\"}",
                "sale_opens_at",
            ),
        ] {
            let err = check(body).unwrap_err();
            assert_eq!(err.status(), 400);
            assert!(err.detail().contains(field), "{body}: {}", err.detail());
        }
        assert!(check("{\"max_active\": 100000, \"admit_per_tick\": 1}").is_ok());
        assert!(check("{\"sale_opens_at\": null}").is_ok());
    }
}
