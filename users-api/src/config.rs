//! users-api settings: listener, database, Redis, broker, sessions, the waiting room, and
//! the clock every rule is judged by.

use std::time::Duration;

use crate::domain::queue::pace::PaceConfig;
use common::clock::Clock;
use common::config::{
    ConfigError, DatabaseConfig, Env, HttpConfig, KafkaConfig, LogFormat, RedisConfig, Secret,
    SessionConfig, log_format,
};

/// Where `users-api create-admin` reads the admin's password (never from the command line,
/// which other users of the machine can see).
pub const ADMIN_PASSWORD: &str = "ADMIN_PASSWORD";

#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    /// The status stream's own lean listener (`USERS_API_STREAM_PORT`; unset: none, streams
    /// are served on the main port only; 0: a free port). See [`crate::stream_port`].
    pub stream_port: Option<u16>,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub session: SessionConfig,
    pub queue: QueueConfig,
    pub concert_api: ConcertApiConfig,
    pub log_format: LogFormat,
    /// The system clock; tests put a manual one here. Not a setting.
    pub clock: Clock,
    /// Concurrent password hashes (`LOGIN_MAX_CONCURRENT_HASHES`, default 4: ~76 MiB at
    /// most) and how long a log-in waits for a slot (`LOGIN_HASH_WAIT_MS`, default 2000).
    pub hashing: crate::domain::account::HashGate,
    /// Failed log-ins and their backoff (`LOGIN_FREE_FAILURES`, `LOGIN_BACKOFF_MAX_SECS`,
    /// `LOGIN_ACCOUNT_FAILURE_LIMIT`, `LOGIN_FAILURE_WINDOW_SECS`).
    pub throttle: crate::domain::throttle::ThrottleConfig,
    /// How long a session lasts however much it is used (`SESSION_MAX_LIFETIME_SECS`,
    /// default 12 h). Written into each session, so only users-api reads the setting.
    pub session_max_lifetime: Duration,
}

/// The waiting room's numbers (DESIGN §3).
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub max_active: u32,
    pub admit_per_tick: u32,
    pub admit_interval: Duration,
    pub active_ttl: Duration,
    pub waiting_idle_timeout: Duration,
    /// How often an open SSE stream re-checks the status (each check is also a heartbeat).
    pub sse_poll: Duration,
    /// An SSE stream sends the status at least this often, changed or not.
    pub sse_keepalive: Duration,
    /// Status streams one user may hold open at once in one process.
    pub sse_per_user: u32,
    /// How admission sizes the number of fans shopping at once.
    pub pace: PaceConfig,
}

impl QueueConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_active: env.parse("QUEUE_MAX_ACTIVE", 500, 1..=1_000_000)?,
            admit_per_tick: env.parse("QUEUE_ADMIT_PER_TICK", 250, 1..=100_000)?,
            admit_interval: env.millis("QUEUE_ADMIT_INTERVAL_MS", 250, 10..=60_000)?,
            active_ttl: env.secs("QUEUE_ACTIVE_TTL_SECS", 600, 1..=86_400)?,
            waiting_idle_timeout: env.secs("QUEUE_WAITING_IDLE_TIMEOUT_SECS", 120, 1..=86_400)?,
            sse_poll: env.millis("QUEUE_SSE_POLL_MS", 1000, 10..=60_000)?,
            sse_keepalive: env.secs("QUEUE_SSE_KEEPALIVE_SECS", 15, 1..=15)?,
            sse_per_user: env.parse("QUEUE_SSE_PER_USER", 3, 1..=100)?,
            pace: PaceConfig {
                auto: env.choice("QUEUE_PACE", "auto", &["auto", "fixed"])? == "auto",
                target: env.millis("QUEUE_PACE_TARGET_MS", 100, 1..=60_000)?,
                start: env.parse("QUEUE_PACE_START", 100, 1..=1_000_000)?,
                step_per_second: env.parse("QUEUE_PACE_STEP", 100, 1..=1_000_000)?,
            },
        })
    }
}

/// Where users-api asks whether a concert exists.
#[derive(Clone, Debug)]
pub struct ConcertApiConfig {
    pub url: String,
    pub timeout: Duration,
    /// How long a concert's existence is remembered.
    pub cache_ttl: Duration,
}

impl ConcertApiConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.url(
            "CONCERT_API_URL",
            "http://127.0.0.1:8082",
            &["http", "https"],
        )?;
        Ok(Self {
            url: url.expose().trim_end_matches('/').to_owned(),
            timeout: env.millis("CONCERT_API_TIMEOUT_MS", 2000, 50..=60_000)?,
            cache_ttl: env.secs("CONCERT_CACHE_SECS", 30, 0..=3600)?,
        })
    }
}

/// Where the status stream's lean listener binds.
pub const STREAM_PORT: &str = "USERS_API_STREAM_PORT";

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let http = HttpConfig::from_env(env, "USERS_API_PORT", 8081)?;
        Ok(Self {
            stream_port: stream_port(env, http.port)?,
            http,
            database: DatabaseConfig::from_env(env, "USERS_DATABASE_URL", "ticketing_users")?,
            redis: RedisConfig::from_env(env)?,
            kafka: KafkaConfig::from_env(env)?,
            session: SessionConfig::from_env(env)?,
            queue: QueueConfig::from_env(env)?,
            concert_api: ConcertApiConfig::from_env(env)?,
            log_format: log_format(env)?,
            clock: Clock::system(),
            hashing: crate::domain::account::HashGate::new(
                env.parse("LOGIN_MAX_CONCURRENT_HASHES", 4, 1..=64)?,
                env.millis("LOGIN_HASH_WAIT_MS", 2000, 0..=60_000)?,
            ),
            throttle: crate::domain::throttle::ThrottleConfig::from_env(env)?,
            session_max_lifetime: env.secs(
                "SESSION_MAX_LIFETIME_SECS",
                43_200,
                60..=86_400 * 30,
            )?,
        })
    }
}

/// `USERS_API_STREAM_PORT`, when set: a port other than the main one (0 picks a free port).
fn stream_port(env: &Env, main: u16) -> Result<Option<u16>, ConfigError> {
    if env.raw(STREAM_PORT).is_none_or(|v| v.trim().is_empty()) {
        return Ok(None);
    }
    let port: u16 = env.parse(STREAM_PORT, 0, 0..=65535)?;
    if port != 0 && port == main {
        let err = ConfigError {
            var: STREAM_PORT.to_owned(),
            value: port.to_string(),
            reason: "must differ from USERS_API_PORT".to_owned(),
        };
        return env.reject(err, None);
    }
    Ok(Some(port))
}

/// The admin password for `users-api create-admin`.
pub fn admin_password(env: &Env) -> Result<Secret<String>, String> {
    env.raw(ADMIN_PASSWORD)
        .map(Secret::new)
        .ok_or_else(|| format!("{ADMIN_PASSWORD} is not set"))
}
