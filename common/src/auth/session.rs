//! Sessions: opaque tokens, stored hashed in Redis with a sliding TTL, and the extractor
//! that turns `Authorization: Bearer` into the caller or a 401.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use futures_util::future::try_join;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::redis::RedisStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Admin => "ADMIN",
        }
    }
}

/// What a session key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
}

/// The stored JSON: the session plus when it was opened and the absolute deadline it can
/// never slide past (unix seconds of the writer's clock). Both are absent in sessions written
/// before the absolute lifetime existed; the first read caps those from then on.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    session: Session,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    absolute_expires_at: Option<i64>,
}

/// A session just opened by [`SessionStore::open`].
#[derive(Debug, Clone)]
pub struct Opened {
    pub token: String,
    /// When it lapses unless used (each use slides it, never past `absolute_expires_at`).
    pub expires_at: DateTime<Utc>,
    /// When it ends however much it is used.
    pub absolute_expires_at: DateTime<Utc>,
}

/// 32 random bytes, base64url: an opaque token nobody can compute from a user id.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256_hex(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The absolute session lifetime when the store is not told another
/// (`SESSION_MAX_LIFETIME_SECS`'s default: 12 h).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Most sessions one user has at once: the index of a user's sessions is trimmed to this
/// many, and opening one more ends the oldest (so "log out everywhere" always finds them all).
pub const MAX_SESSIONS_PER_USER: usize = 100;

/// Sessions in Redis: `session:<sha256(token)>` → JSON, TTL slid on every use but never past
/// the session's absolute deadline. Only the hash is stored, so a Redis dump does not hand
/// out live tokens. `user_sessions:<user id>` indexes each user's session hashes (a sorted
/// set scored by absolute deadline) for "log out everywhere".
///
/// A session's key and its user's index live in different slots of a Redis Cluster, so no
/// pipeline spans both: each pipeline stays on one key (the two may run at once), and a DEL
/// of many sessions is split by slot by the cluster client.
#[derive(Clone)]
pub struct SessionStore {
    redis: RedisStore,
    ttl: Duration,
    max_lifetime: Duration,
    clock: crate::clock::Clock,
}

impl SessionStore {
    pub fn new(redis: RedisStore, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            clock: crate::clock::Clock::system(),
        }
    }

    /// The same store, stating expiry by `clock` (a service's, or a test's manual one).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same store, opening sessions that end `max_lifetime` after they were opened
    /// however much they are used. A reader honours the deadline written in each session,
    /// so only the writer (users-api) needs the setting; a reader applies its own only to a
    /// session written before deadlines existed.
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    fn key_of_hash(&self, hash: &str) -> String {
        self.redis.key(&format!("session:{hash}"))
    }

    fn key(&self, token: &str) -> String {
        self.key_of_hash(&sha256_hex(token))
    }

    fn index_key(&self, user_id: i64) -> String {
        self.redis.key(&format!("user_sessions:{user_id}"))
    }

    fn secs(d: Duration) -> i64 {
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
    }

    /// Stores a new session and returns its token and expiry.
    pub async fn create(&self, session: &Session) -> redis::RedisResult<(String, DateTime<Utc>)> {
        self.open(session).await.map(|o| (o.token, o.expires_at))
    }

    /// Stores a new session, indexes it under its user, and returns its token, sliding expiry
    /// and absolute deadline. Past [`MAX_SESSIONS_PER_USER`] the user's oldest sessions end.
    pub async fn open(&self, session: &Session) -> redis::RedisResult<Opened> {
        let token = random_token();
        let hash = sha256_hex(&token);
        let now = self.clock.now();
        let lifetime = Self::secs(self.max_lifetime);
        let deadline = now.timestamp() + lifetime;
        let first_ttl = self.ttl.min(self.max_lifetime).as_secs().max(1);
        let value = serde_json::to_string(&Stored {
            session: session.clone(),
            created_at: Some(now.timestamp()),
            absolute_expires_at: Some(deadline),
        })
        .map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "session JSON", e.to_string()))
        })?;
        let index = self.index_key(session.user_id);
        let mut conn = self.redis.conn();
        let store = redis::cmd("SET")
            .arg(self.key_of_hash(&hash))
            .arg(value)
            .arg("EX")
            .arg(first_ttl)
            .to_owned();
        let indexing = redis::pipe()
            .cmd("ZADD")
            .arg(&index)
            .arg(deadline)
            .arg(&hash)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(now.timestamp())
            .ignore()
            .cmd("EXPIRE")
            .arg(&index)
            .arg(lifetime.max(1))
            .ignore()
            .cmd("ZCARD")
            .arg(&index)
            .to_owned();
        // On a cluster the session and its user's index are in different slots: written side
        // by side, each in one round trip.
        let ((), (count,)): ((), (usize,)) = try_join(
            store.query_async(&mut conn),
            indexing.query_async(&mut self.redis.conn()),
        )
        .await?;
        if count > MAX_SESSIONS_PER_USER {
            let evicted: Vec<(String, f64)> = redis::cmd("ZPOPMIN")
                .arg(&index)
                .arg(count - MAX_SESSIONS_PER_USER)
                .query_async(&mut conn)
                .await?;
            self.delete_hashes(evicted.into_iter().map(|(h, _)| h), None)
                .await?;
        }
        let now_plus = |secs: u64| now + chrono::Duration::seconds(secs as i64);
        Ok(Opened {
            token,
            expires_at: now_plus(first_ttl),
            absolute_expires_at: now_plus(lifetime as u64),
        })
    }

    /// Looks a token up and slides its TTL in the same command (`GETEX`): one round trip.
    /// A session past its absolute deadline is gone (deleted here if Redis still had it);
    /// one whose slid TTL would outlive the deadline is cut to it (a second command, only in
    /// the last `SESSION_TTL_SECS` of its life).
    pub async fn touch(&self, token: &str) -> redis::RedisResult<Option<Session>> {
        let key = self.key(token);
        let mut conn = self.redis.conn();
        let raw: Option<String> = redis::cmd("GETEX")
            .arg(&key)
            .arg("EX")
            .arg(self.ttl.as_secs())
            .query_async(&mut conn)
            .await?;
        let Some(mut stored) = raw.and_then(|s| serde_json::from_str::<Stored>(&s).ok()) else {
            return Ok(None);
        };
        let now = self.clock.now().timestamp();
        match stored.absolute_expires_at {
            Some(deadline) if now >= deadline => {
                let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
                return Ok(None);
            }
            Some(deadline) => {
                let left = deadline - now;
                if left < Self::secs(self.ttl) {
                    let _: i64 = redis::cmd("EXPIRE")
                        .arg(&key)
                        .arg(left)
                        .query_async(&mut conn)
                        .await?;
                }
            }
            None => {
                // Written before deadlines: capped from this first read on, and indexed so
                // "log out everywhere" finds it.
                let lifetime = Self::secs(self.max_lifetime);
                let deadline = now + lifetime;
                stored.absolute_expires_at = Some(deadline);
                let value = serde_json::to_string(&stored).map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "session JSON",
                        e.to_string(),
                    ))
                })?;
                let index = self.index_key(stored.session.user_id);
                let mut capped = redis::pipe();
                capped
                    .cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("XX")
                    .arg("KEEPTTL")
                    .ignore();
                if lifetime < Self::secs(self.ttl) {
                    capped.cmd("EXPIRE").arg(&key).arg(lifetime.max(1)).ignore();
                }
                let indexed = redis::pipe()
                    .cmd("ZADD")
                    .arg(&index)
                    .arg(deadline)
                    .arg(sha256_hex(token))
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&index)
                    .arg(lifetime.max(1))
                    .ignore()
                    .to_owned();
                let ((), ()) = try_join(
                    capped.query_async(&mut conn),
                    indexed.query_async(&mut self.redis.conn()),
                )
                .await?;
            }
        }
        Ok(Some(stored.session))
    }

    /// Ends a session at once, for every service.
    pub async fn delete(&self, token: &str) -> redis::RedisResult<()> {
        let mut conn = self.redis.conn();
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(token))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Ends `user_id`'s session `token` and drops it from the user's index.
    pub async fn end(&self, user_id: i64, token: &str) -> redis::RedisResult<()> {
        self.delete_hashes([sha256_hex(token)], Some(user_id))
            .await
            .map(drop)
    }

    /// Ends every session of `user_id` at once, for every service ("log out everywhere", a
    /// password reset). Returns how many session keys were still live.
    pub async fn end_all(&self, user_id: i64) -> redis::RedisResult<usize> {
        let mut conn = self.redis.conn();
        let hashes: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.index_key(user_id))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        self.delete_hashes(hashes, Some(user_id)).await
    }

    /// Deletes the sessions with these hashes in one `DEL` (on a cluster, one per slot, the
    /// counts summed) and, given the user, removes them from the user's index at the same
    /// time. A session opened meanwhile is not in `hashes`, so it stays indexed. Returns how
    /// many were still live.
    async fn delete_hashes(
        &self,
        hashes: impl IntoIterator<Item = String>,
        user_id: Option<i64>,
    ) -> redis::RedisResult<usize> {
        let hashes: Vec<String> = hashes.into_iter().collect();
        if hashes.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = hashes.iter().map(|h| self.key_of_hash(h)).collect();
        let delete = async {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<usize>(&mut self.redis.conn())
                .await
        };
        let unindex = async {
            let Some(user_id) = user_id else {
                return Ok(());
            };
            redis::cmd("ZREM")
                .arg(self.index_key(user_id))
                .arg(&hashes)
                .query_async(&mut self.redis.conn())
                .await
        };
        let (deleted, ()) = try_join(delete, unindex).await?;
        Ok(deleted)
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    bearer_value(value)
}

/// The token of an `Authorization: Bearer <token>` value (at most 256 characters).
pub fn bearer_value(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 256)
        .then_some(token)
}

/// The caller's session, or 401 `UNAUTHENTICATED`.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
    /// The bearer token, so logout can delete exactly this session.
    pub token: String,
}

impl AuthUser {
    /// 403 `FORBIDDEN` unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::User => Err(ApiError::forbidden("this endpoint is for administrators")),
        }
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let store = req.app_data::<web::Data<SessionStore>>().cloned();
        let token = bearer(req).map(str::to_owned);
        Box::pin(async move {
            let store = store
                .ok_or_else(|| ApiError::internal("SessionStore is not registered as app data"))?;
            let token = token.ok_or_else(|| {
                ApiError::unauthenticated("missing or malformed Authorization: Bearer header")
            })?;
            let session = store.touch(&token).await?.ok_or_else(|| {
                ApiError::unauthenticated("session is unknown, expired or logged out")
            })?;
            Ok(AuthUser {
                id: session.user_id,
                username: session.username,
                role: session.role,
                token,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn a_session_written_before_deadlines_reads_with_none_and_new_ones_round_trip() {
        let legacy: Stored =
            serde_json::from_str(r#"{"user_id":7,"username":"ann","role":"USER"}"#).unwrap();
        assert_eq!(
            (
                legacy.session.user_id,
                legacy.created_at,
                legacy.absolute_expires_at
            ),
            (7, None, None)
        );
        let stored = Stored {
            session: Session {
                user_id: 8,
                username: "bob".into(),
                role: Role::Admin,
            },
            created_at: Some(100),
            absolute_expires_at: Some(43_300),
        };
        let json = serde_json::to_value(&stored).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"user_id": 8, "username": "bob", "role": "ADMIN",
                "created_at": 100, "absolute_expires_at": 43_300})
        );
        // A reader that knows only `Session` (an older service) still reads it.
        let old_reader: Session = serde_json::from_value(json).unwrap();
        assert_eq!(old_reader, stored.session);
    }

    #[test]
    fn session_hash_is_sha256_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
