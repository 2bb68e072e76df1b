//! The waiting-room pass: the queue keys of a concert, queue tokens, and the extractor that
//! checks `X-Queue-Token` is the caller's ACTIVE token, in one Redis round trip.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use chrono::{DateTime, TimeZone, Utc};

use crate::error::ApiError;
use crate::redis::RedisStore;

use super::session::{AuthUser, random_token};

/// The waiting room's Redis keys (DESIGN §5). Every key of one concert shares the hash tag
/// `{c<id>}`, so a script over them runs on one Redis Cluster slot.
#[derive(Clone)]
pub struct QueueKeys {
    redis: RedisStore,
}

impl QueueKeys {
    pub fn new(redis: RedisStore) -> Self {
        Self { redis }
    }
    pub fn redis(&self) -> &RedisStore {
        &self.redis
    }
    pub fn seq(&self, concert: i64) -> String {
        self.redis.key(&format!("queue:{{c{concert}}}:seq"))
    }
    pub fn waiting(&self, concert: i64) -> String {
        self.redis.key(&format!("queue:{{c{concert}}}:waiting"))
    }
    pub fn active(&self, concert: i64) -> String {
        self.redis.key(&format!("queue:{{c{concert}}}:active"))
    }
    /// Prefix of the per-token heartbeat keys; the token is appended.
    pub fn alive_prefix(&self, concert: i64) -> String {
        self.redis.key(&format!("queue:{{c{concert}}}:alive:"))
    }
    pub fn user(&self, concert: i64, user_id: i64) -> String {
        self.redis
            .key(&format!("queue:{{c{concert}}}:user:{user_id}"))
    }
    /// Per-concert admission rate (EWMA of tokens admitted per second), for wait estimates.
    pub fn rate(&self, concert: i64) -> String {
        self.redis.key(&format!("queue:{{c{concert}}}:rate"))
    }
    pub fn concerts(&self) -> String {
        self.redis.key("queue:concerts")
    }
}

/// A queue token is `<concert_id>.<32 random bytes base64url>`: unguessable, and it names its
/// concert so the pass check can address that concert's keys in a single script call.
pub fn new_queue_token(concert_id: i64) -> String {
    format!("{concert_id}.{}", random_token())
}

/// The concert a queue token belongs to, if the token is well-formed.
pub fn queue_token_concert(token: &str) -> Option<i64> {
    let (concert, rest) = token.split_once('.')?;
    let id: i64 = concert.parse().ok().filter(|id| *id > 0)?;
    (rest.len() == 43
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(id)
}

/// Checks a token in one round trip: it must be the user's token for its concert and be in
/// the concert's active set with an unexpired score. Returns `{status, expires_at_ms}`.
/// Built once: every pass check (several a purchase) used to hash the text again.
static PASS_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PASS_TEXT));
static PASS_TEXT: &str = r#"
local owned = redis.call('GET', KEYS[1])
if owned ~= ARGV[1] then return {'NOT_OWNED', 0} end
local exp = redis.call('ZSCORE', KEYS[2], ARGV[1])
if exp then
  if tonumber(exp) > tonumber(ARGV[2]) then return {'ACTIVE', exp} end
  return {'EXPIRED', exp}
end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return {'WAITING', 0} end
return {'EXPIRED', 0}
"#;

/// An ACTIVE waiting-room token of the caller, or 401 `QUEUE_TOKEN_INVALID` saying why.
#[derive(Debug, Clone)]
pub struct ActiveQueuePass {
    pub token: String,
    pub user_id: i64,
    pub concert_id: i64,
    pub active_until: DateTime<Utc>,
}

/// What the pass script says of a token, read from its reply in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassState {
    Active,
    Waiting,
    NotOwned,
    Expired,
}

impl PassState {
    fn from_script(reply: &str) -> Self {
        match reply {
            "ACTIVE" => Self::Active,
            "WAITING" => Self::Waiting,
            "NOT_OWNED" => Self::NotOwned,
            _ => Self::Expired,
        }
    }
}

impl ActiveQueuePass {
    fn invalid(detail: &str) -> ApiError {
        crate::error::Code::QueueTokenInvalid.err(detail)
    }

    /// 401 unless this pass is for `concert_id`.
    pub fn require_concert(&self, concert_id: i64) -> Result<(), ApiError> {
        if self.concert_id == concert_id {
            Ok(())
        } else {
            Err(Self::invalid("queue token is for another concert"))
        }
    }

    /// Checks `token` for `user_id` against Redis at `now`.
    pub async fn check(
        keys: &QueueKeys,
        user_id: i64,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, ApiError> {
        let concert_id = queue_token_concert(token)
            .ok_or_else(|| Self::invalid("queue token is malformed or unknown"))?;
        let mut conn = keys.redis().conn();
        let (status, exp): (String, f64) = PASS_SCRIPT
            .key(keys.user(concert_id, user_id))
            .key(keys.active(concert_id))
            .key(keys.waiting(concert_id))
            .arg(token)
            .arg(now.timestamp_millis())
            .invoke_async(&mut conn)
            .await?;
        match PassState::from_script(&status) {
            PassState::Active => Ok(Self {
                token: token.to_owned(),
                user_id,
                concert_id,
                active_until: Utc.timestamp_millis_opt(exp as i64).single().unwrap_or(now),
            }),
            PassState::Waiting => Err(Self::invalid(
                "queue token is still waiting; it is not active yet",
            )),
            PassState::NotOwned => Err(Self::invalid(
                "queue token is unknown or belongs to another user",
            )),
            PassState::Expired => Err(Self::invalid("queue token has expired")),
        }
    }

    /// Checks the `X-Queue-Token` a request carried ([`queue_token`]; `None` if none), for a
    /// handler that must answer other things first and so cannot use the extractor.
    pub async fn check_header(
        keys: &QueueKeys,
        user_id: i64,
        token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Self, ApiError> {
        let token = token.ok_or_else(|| Self::invalid("missing X-Queue-Token header"))?;
        Self::check(keys, user_id, token, now).await
    }
}

/// The request's `X-Queue-Token`, trimmed; `None` if it is absent or blank.
pub fn queue_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("x-queue-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

impl FromRequest for ActiveQueuePass {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = AuthUser::from_request(req, payload);
        let keys = req.app_data::<web::Data<QueueKeys>>().cloned();
        let token = queue_token(req);
        let clock = req
            .app_data::<web::Data<crate::clock::Clock>>()
            .map(|c| c.get_ref().clone())
            .unwrap_or_default();
        Box::pin(async move {
            let user = user.await?;
            let keys =
                keys.ok_or_else(|| ApiError::internal("QueueKeys is not registered as app data"))?;
            Self::check_header(&keys, user.id, token.as_deref(), clock.now()).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_tokens_name_their_concert() {
        let t = new_queue_token(42);
        assert_eq!(queue_token_concert(&t), Some(42));
        assert_eq!(queue_token_concert("42.short"), None);
        assert_eq!(queue_token_concert("x.abc"), None);
        assert_eq!(
            queue_token_concert("-1.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            None
        );
        assert_eq!(queue_token_concert(""), None);
    }
}
