//! Sessions: opaque tokens, stored hashed in Redis with a sliding TTL, and the extractor
//! that turns `Authorization: Bearer` into the caller or a 401.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
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

/// Sessions in Redis: `session:<sha256(token)>` → JSON, TTL slid on every use.
/// Only the hash is stored, so a Redis dump does not hand out live tokens.
#[derive(Clone)]
pub struct SessionStore {
    redis: RedisStore,
    ttl: Duration,
    clock: crate::clock::Clock,
}

impl SessionStore {
    pub fn new(redis: RedisStore, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            clock: crate::clock::Clock::system(),
        }
    }

    /// The same store, stating expiry by `clock` (a service's, or a test's manual one).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(&self, token: &str) -> String {
        self.redis.key(&format!("session:{}", sha256_hex(token)))
    }

    /// Stores a new session and returns its token and expiry.
    pub async fn create(&self, session: &Session) -> redis::RedisResult<(String, DateTime<Utc>)> {
        let token = random_token();
        let value = serde_json::to_string(session).expect("session serializes");
        let mut conn = self.redis.conn();
        let _: () = redis::cmd("SET")
            .arg(self.key(&token))
            .arg(value)
            .arg("EX")
            .arg(self.ttl.as_secs())
            .query_async(&mut conn)
            .await?;
        Ok((token, self.clock.now() + self.ttl))
    }

    /// Looks a token up and slides its TTL in the same command (`GETEX`): one round trip.
    pub async fn touch(&self, token: &str) -> redis::RedisResult<Option<Session>> {
        let mut conn = self.redis.conn();
        let raw: Option<String> = redis::cmd("GETEX")
            .arg(self.key(token))
            .arg("EX")
            .arg(self.ttl.as_secs())
            .query_async(&mut conn)
            .await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
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
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
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
    fn session_hash_is_sha256_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
