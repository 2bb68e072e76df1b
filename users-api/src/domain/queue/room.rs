//! A room's live settings (the organiser's levers, DESIGN §10) and its views: the public
//! `WaitingRoomPublic` and the admin's `WaitingRoom` (API.md).
//!
//! The settings live in `queue:{c<id>}:settings`, beside the line, and every admission tick
//! reads them in its script: a change is effective at the next tick, with no restart. A
//! setting never written falls back to the env default (`QUEUE_MAX_ACTIVE`,
//! `QUEUE_ADMIT_PER_TICK`).
//!
//! With a store, PostgreSQL's `queue_rooms` is the source of truth and the hash its working
//! copy, marked `loaded` once restored: a PATCH changes both, the row locked for the whole
//! change and written in the transaction of its `admin_audit` row; a script that finds the
//! hash not `loaded` makes the caller restore it ([`WaitingRoom::restore`]) and run again.

use chrono::{DateTime, TimeZone, Utc};
use redis::{RedisError, Script};
use sea_orm::{DbErr, TransactionTrait};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use common::ApiError;
use common::ErrorCode;

use crate::error::UsersCode;
use crate::store::audit::{self, AuditEntry};
use crate::store::rooms::{self, RoomRow};

use super::{RESTORE_REPLY, RoomError, WaitingRoom, lottery};

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
    /// How many admitted fans may shop at once now, as the admission pace sized it from the
    /// checkout's pressure (at most `max_active`); null while the room has not been paced
    /// (`QUEUE_PACE=fixed`, or before its first tick with a line).
    pub admission_window: Option<u64>,
}

/// The settings an audit row records (before → after).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsRecord {
    pub state: RoomState,
    pub max_active: u64,
    pub admit_per_tick: u64,
    pub sale_opens_at: Option<DateTime<Utc>>,
}

/// Who made a change, for its `admin_audit` row.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub id: i64,
    pub username: &'a str,
}

/// One read of everything a view shows.
/// → {state, max_active, admit_per_tick, opens_at, commitment, seed (after the draw),
///    drawn_at, sold_out, admitted_total, abandoned_total, expired_total, waiting,
///    pre_queued, active, rate, window}, or {'RESTORE'} when ARGV[1] asks to check that the settings
///    are loaded and they are not.
const VIEW: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'state', 'max_active', 'admit_per_tick', 'opens_at',
  'commitment', 'seed', 'drawn_at', 'sold_out', 'loaded')
if ARGV[1] == '1' and not s[9] then return {'RESTORE'} end
local t = redis.call('HMGET', KEYS[2], 'admitted_total', 'abandoned_total', 'expired_total',
  'window')
local seed = ''
if s[7] then seed = s[6] or '' end
return {s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or '', seed, s[7] or '',
  s[8] or '', t[1] or '0', t[2] or '0', t[3] or '0',
  tostring(redis.call('ZCARD', KEYS[3])), tostring(redis.call('ZCARD', KEYS[4])),
  tostring(redis.call('ZCARD', KEYS[5])), redis.call('GET', KEYS[6]) or '', t[4] or ''}
"#;

/// Applies a patch atomically. KEYS: settings. ARGV: state ('' = unchanged, OPEN, PAUSED),
/// max_active, admit_per_tick ('' = unchanged), opens_at ('' = unchanged, 'null', or ms), a
/// new seed and its commitment (used only if the room has none yet), whether to check that
/// the settings are loaded. A room given an opening is registered for admission by the
/// caller, after the script.
/// → {'LOTTERY_DRAWN'}, {'RESTORE'} (nothing done), or {'OK', before: state, sold_out, max,
///    tick, opens_at, after: the same five, then seed, commitment}
const UPDATE: &str = r#"
if ARGV[7] == '1' and redis.call('HEXISTS', KEYS[1], 'loaded') == 0 then return {'RESTORE'} end
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
local lot = redis.call('HMGET', KEYS[1], 'seed', 'commitment')
out[#out + 1] = lot[1] or ''
out[#out + 1] = lot[2] or ''
return out
"#;

/// Loads a room's settings from the store into Redis, unless another caller did meanwhile.
/// KEYS: settings, inventory. ARGV: whether the store has a row ('1') — without one the hash
/// is left as it is (a room configured before the store existed keeps its settings) — then
/// its state ('PAUSED' or ''), max_active, admit_per_tick, opens_at (ms), seed, commitment,
/// drawn_at (ms; '' = none). A drawn lottery comes back drawn (and closed: joins go FIFO).
/// SOLD_OUT is not stored: it is judged from the inventory now, as a tick would, and by
/// every tick after. The caller then registers the room for admission (a tick drops it
/// again if it has nothing to do). → 1 if restored, 0 if it was already loaded.
const RESTORE: &str = r#"
if redis.call('HGET', KEYS[1], 'loaded') == '1' then return 0 end
if ARGV[1] == '1' then
  local names = {'state', 'max_active', 'admit_per_tick', 'opens_at', 'seed', 'commitment'}
  for i, f in ipairs(names) do
    local v = ARGV[i + 1]
    if v == '' then redis.call('HDEL', KEYS[1], f) else redis.call('HSET', KEYS[1], f, v) end
  end
  if ARGV[8] ~= '' and redis.call('HEXISTS', KEYS[1], 'drawn_at') == 0 then
    redis.call('HSET', KEYS[1], 'drawn_at', ARGV[8], 'closed', '1')
  end
end
local lot = redis.call('HMGET', KEYS[1], 'commitment', 'drawn_at')
if not (lot[1] and not lot[2]) then
  local inv = redis.call('HMGET', KEYS[2], 'total', 'available', 'held')
  local available = tonumber(inv[2])
  if available and available <= 0 and (tonumber(inv[3]) or 0) <= 0
      and (tonumber(inv[1]) or 0) > 0 then
    redis.call('HSET', KEYS[1], 'sold_out', '1')
  end
end
redis.call('HSET', KEYS[1], 'loaded', '1')
return 1
"#;

#[derive(Clone)]
pub(crate) struct SettingsScripts {
    view: Script,
    update: Script,
    restore: Script,
}

impl SettingsScripts {
    pub(crate) fn new() -> Self {
        Self {
            view: Script::new(VIEW),
            update: Script::new(UPDATE),
            restore: Script::new(RESTORE),
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
    /// Nothing was changed: the transaction was rolled back and Redis made to reload the
    /// room from the database.
    #[error("database: {0}")]
    Store(#[from] DbErr),
}

impl From<RoomError> for PatchError {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::Redis(e) => Self::Redis(e),
            RoomError::Store(e) => Self::Store(e),
        }
    }
}

impl ErrorCode for PatchError {
    fn status(&self) -> actix_web::http::StatusCode {
        match self {
            Self::LotteryDrawn => UsersCode::LotteryDrawn.status(),
            Self::Redis(e) => ErrorCode::status(e),
            Self::Store(_) => common::error::Code::DependencyUnavailable.status(),
        }
    }
    fn code(&self) -> &'static str {
        match self {
            Self::LotteryDrawn => UsersCode::LotteryDrawn.code(),
            Self::Redis(e) => ErrorCode::code(e),
            Self::Store(_) => common::error::Code::DependencyUnavailable.code(),
        }
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::LotteryDrawn => None,
            Self::Redis(e) => ErrorCode::retry_after(e),
            Self::Store(_) => Some(1),
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

fn millis_text(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.timestamp_millis().to_string())
        .unwrap_or_default()
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

    /// Loads the room's settings from the store into Redis (a script found them not
    /// loaded). Without a store there is nothing to load.
    pub(super) async fn restore(&self, concert_id: i64) -> Result<(), RoomError> {
        let Some(db) = self.store() else {
            return Ok(());
        };
        let row = rooms::find(db, concert_id).await?;
        self.restore_from(concert_id, row.as_ref()).await?;
        Ok(())
    }

    /// [`restore`](Self::restore) with the row already read (`None`: the room has none).
    async fn restore_from(&self, concert_id: i64, row: Option<&RoomRow>) -> Result<(), RedisError> {
        let rk = self.room_keys();
        let r = row.cloned().unwrap_or_default();
        let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        let mut conn = self.keys().redis().conn();
        let restored: i64 = self
            .settings
            .restore
            .key(rk.settings(concert_id))
            .key(rk.inventory(concert_id))
            .arg(if row.is_some() { "1" } else { "0" })
            .arg(if r.paused { "PAUSED" } else { "" })
            .arg(number(r.max_active))
            .arg(number(r.admit_per_tick))
            .arg(millis_text(r.sale_opens_at))
            .arg(r.seed.clone().unwrap_or_default())
            .arg(r.commitment.clone().unwrap_or_default())
            .arg(millis_text(r.drawn_at))
            .invoke_async(&mut conn)
            .await?;
        self.register(concert_id).await?;
        if restored == 1 && row.is_some() {
            tracing::info!(
                concert_id,
                "waiting room's settings restored from the database into Redis"
            );
        }
        Ok(())
    }

    /// Makes Redis reload the room from the store at its next use: after a change made in
    /// Redis whose transaction could not commit. Best effort (logged).
    async fn forget(&self, concert_id: i64) {
        let mut conn = self.keys().redis().conn();
        let done: Result<i64, RedisError> = redis::cmd("HDEL")
            .arg(self.room_keys().settings(concert_id))
            .arg("loaded")
            .query_async(&mut conn)
            .await;
        if let Err(error) = done {
            tracing::error!(
                concert_id,
                %error,
                "a settings change not committed could not be undone in Redis"
            );
        }
    }

    /// Applies a validated patch; returns the settings before and after it. With a store, the
    /// settings are persisted as well (in one transaction, no audit row).
    pub async fn update_settings(
        &self,
        concert_id: i64,
        patch: &RoomSettingsPatch,
    ) -> Result<(SettingsRecord, SettingsRecord), PatchError> {
        self.change_settings(concert_id, patch, None).await
    }

    /// [`update_settings`](Self::update_settings) by an organiser: the persisted settings and
    /// the `admin_audit` row (`queue.settings`, `concert:<id>`, before → after) are written in
    /// one transaction. Needs a store (without one, no row is written).
    pub async fn update_settings_by(
        &self,
        concert_id: i64,
        patch: &RoomSettingsPatch,
        actor: Actor<'_>,
    ) -> Result<(SettingsRecord, SettingsRecord), PatchError> {
        self.change_settings(concert_id, patch, Some(actor)).await
    }

    /// The room's row is locked first, so changes to one room are serialised in both stores
    /// (the before → after records form one chain); the Redis change is made while it is
    /// held. If the transaction then fails, Redis is made to reload the room from the
    /// database, which undoes the change there too.
    async fn change_settings(
        &self,
        concert_id: i64,
        patch: &RoomSettingsPatch,
        actor: Option<Actor<'_>>,
    ) -> Result<(SettingsRecord, SettingsRecord), PatchError> {
        let Some(db) = self.store() else {
            let (before, after, _) = self.apply(concert_id, patch, None).await?;
            return Ok((before, after));
        };
        let at = self.clock.now();
        let txn = db.begin().await?;
        let persisted = rooms::lock(&txn, concert_id, at).await?;
        // An error here drops the transaction: rolled back, nothing changed.
        let (before, after, saved) = self
            .apply(concert_id, patch, Some(persisted.as_ref()))
            .await?;
        let written = async {
            rooms::save(&txn, concert_id, &saved, at).await?;
            if let Some(actor) = actor {
                let to_json = |r: &SettingsRecord| serde_json::to_value(r).unwrap_or_default();
                audit::record(
                    &txn,
                    AuditEntry {
                        actor_id: actor.id,
                        actor_username: actor.username,
                        at,
                        action: "queue.settings",
                        target: format!("concert:{concert_id}"),
                        before: to_json(&before),
                        after: to_json(&after),
                    },
                )
                .await?;
            }
            Ok::<(), DbErr>(())
        }
        .await;
        if let Err(e) = written {
            // Still holding the row: nobody else changes the room before Redis forgets.
            self.forget(concert_id).await;
            let _ = txn.rollback().await;
            return Err(e.into());
        }
        if let Err(e) = txn.commit().await {
            self.forget(concert_id).await;
            return Err(e.into());
        }
        Ok((before, after))
    }

    /// The patch in Redis; returns the settings before and after it for the audit, and after
    /// it as the store keeps them. `restore_with` is `None` without a store; with one it is
    /// the room's locked row (`Some(None)`: none), which the settings are restored from first
    /// if Redis has lost them.
    async fn apply(
        &self,
        concert_id: i64,
        patch: &RoomSettingsPatch,
        restore_with: Option<Option<&RoomRow>>,
    ) -> Result<(SettingsRecord, SettingsRecord, RoomRow), PatchError> {
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
        let mut check = restore_with.is_some();
        let out = loop {
            let out: Vec<String> = self
                .settings
                .update
                .key(rk.settings(concert_id))
                .arg(state)
                .arg(opt(patch.max_active))
                .arg(opt(patch.admit_per_tick))
                .arg(&opens)
                .arg(lottery::to_hex(&seed))
                .arg(lottery::commitment(&seed))
                .arg(Self::check_flag(check))
                .invoke_async(&mut conn)
                .await?;
            match out.first().map(String::as_str) {
                Some("OK") => break out,
                Some(RESTORE_REPLY) if check => {
                    self.restore_from(concert_id, restore_with.flatten())
                        .await?;
                    check = false;
                }
                _ => return Err(PatchError::LotteryDrawn),
            }
        };
        if matches!(patch.sale_opens_at, Some(Some(_))) {
            self.register(concert_id).await?;
        }
        let field = |i: usize| out.get(i).map_or("", String::as_str);
        let text = |i: usize| (!field(i).is_empty()).then(|| field(i).to_owned());
        let before = self.record(out.get(1..6).unwrap_or_default());
        let after = self.record(out.get(6..11).unwrap_or_default());
        let saved = RoomRow {
            paused: field(6) == "PAUSED",
            max_active: field(8).parse().ok(),
            admit_per_tick: field(9).parse().ok(),
            sale_opens_at: millis_to_time(field(10)),
            seed: text(11),
            commitment: text(12),
            drawn_at: None,
        };
        Ok((before, after, saved))
    }

    /// The room's full view (the admin's); its `public` part is what anyone sees.
    pub async fn view(&self, concert_id: i64) -> Result<WaitingRoomView, RoomError> {
        let k = self.keys();
        let rk = self.room_keys();
        let mut conn = k.redis().conn();
        let mut check = self.store().is_some();
        let f = loop {
            let f: Vec<String> = self
                .settings
                .view
                .key(rk.settings(concert_id))
                .key(rk.stats(concert_id))
                .key(k.waiting(concert_id))
                .key(rk.prequeue(concert_id))
                .key(k.active(concert_id))
                .key(k.rate(concert_id))
                .arg(Self::check_flag(check))
                .invoke_async(&mut conn)
                .await?;
            if check && f.first().map(String::as_str) == Some(RESTORE_REPLY) {
                self.restore(concert_id).await?;
                check = false;
                continue;
            }
            break f;
        };
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
            admission_window: field(15).parse().ok(),
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
