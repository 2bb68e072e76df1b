//! Settings read from the environment (flat names, DESIGN §3), validated at startup.
//!
//! A service builds its own config struct out of these pieces. A bad value stops the
//! process with a message naming the variable; secrets are wrapped so they never print.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A value that must never reach a log line (database URLs carry passwords).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A URL whose password is hidden when printed, e.g. `postgres://app:***@db/x`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Secret<String>);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(self.expose()))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.expose()))
    }
}

/// Replaces the password part of `scheme://user:password@host/...` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

/// Where settings come from: the process environment, or a map in tests.
#[derive(Clone, Debug, Default)]
pub struct Env {
    overrides: HashMap<String, String>,
    use_process_env: bool,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            overrides: HashMap::new(),
            use_process_env: true,
        }
    }

    /// Only the given pairs (tests); nothing leaks in from the process environment.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            overrides: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            use_process_env: false,
        }
    }

    /// Sets one variable, taking precedence over the process environment.
    pub fn with(mut self, var: &str, value: impl Into<String>) -> Self {
        self.overrides.insert(var.to_owned(), value.into());
        self
    }

    pub fn raw(&self, var: &str) -> Option<String> {
        if let Some(v) = self.overrides.get(var) {
            return Some(v.clone());
        }
        if self.use_process_env {
            return std::env::var(var).ok();
        }
        None
    }

    /// A string setting, or its default when unset or empty.
    pub fn string(&self, var: &str, default: &str) -> String {
        match self.raw(var) {
            Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
            _ => default.to_owned(),
        }
    }

    /// A parsed setting within `range`, or its default when unset or empty.
    pub fn parse<T>(
        &self,
        var: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let Some(raw) = self.raw(var).filter(|v| !v.trim().is_empty()) else {
            return Ok(default);
        };
        let value: T = raw.trim().parse().map_err(|e: T::Err| ConfigError {
            var: var.to_owned(),
            value: raw.clone(),
            reason: e.to_string(),
        })?;
        if !range.contains(&value) {
            return Err(ConfigError {
                var: var.to_owned(),
                value: raw,
                reason: format!("must be between {} and {}", range.start(), range.end()),
            });
        }
        Ok(value)
    }

    /// A duration given in whole seconds.
    pub fn secs(
        &self,
        var: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.parse(var, default, range).map(Duration::from_secs)
    }

    /// A duration given in milliseconds.
    pub fn millis(
        &self,
        var: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.parse(var, default, range).map(Duration::from_millis)
    }

    /// A URL with one of the given schemes.
    pub fn url(
        &self,
        var: &str,
        default: &str,
        schemes: &[&str],
    ) -> Result<SecretUrl, ConfigError> {
        let value = self.string(var, default);
        let ok = schemes.iter().any(|s| {
            value
                .strip_prefix(s)
                .is_some_and(|r| r.starts_with("://") && r.len() > 3)
        });
        if !ok {
            return Err(ConfigError {
                var: var.to_owned(),
                value: redact_url(&value),
                reason: format!("must be a URL starting with {}://", schemes.join("://, ")),
            });
        }
        Ok(SecretUrl::new(value))
    }

    /// One of a fixed set of words (case-insensitive), returned lower-case.
    pub fn choice(
        &self,
        var: &str,
        default: &str,
        allowed: &[&str],
    ) -> Result<String, ConfigError> {
        let value = self.string(var, default).to_ascii_lowercase();
        if allowed.contains(&value.as_str()) {
            Ok(value)
        } else {
            Err(ConfigError {
                var: var.to_owned(),
                value,
                reason: format!("must be one of {}", allowed.join(", ")),
            })
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// HTTP listener and process-wide settings every service has.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    /// How long in-flight requests may take to drain on shutdown.
    pub shutdown_timeout: Duration,
}

impl HttpConfig {
    /// `port_var` is the service's own port variable, e.g. `USERS_API_PORT`.
    pub fn from_env(env: &Env, port_var: &str, default_port: u16) -> Result<Self, ConfigError> {
        let default_workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            host: env.string("HTTP_HOST", "127.0.0.1"),
            port: env.parse(port_var, default_port, 0..=65535)?,
            workers: env.parse("HTTP_WORKERS", default_workers, 1..=256)?,
            shutdown_timeout: env.secs("SHUTDOWN_TIMEOUT_SECS", 10, 1..=300)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    pub url: SecretUrl,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    /// The longest any statement of this service waits for a lock (PostgreSQL's
    /// `lock_timeout`, set once per connection); `None`: no bound. A service that must answer
    /// "still in use" rather than wait sets it in code ([`DatabaseConfig::with_lock_timeout`]).
    pub lock_timeout: Option<Duration>,
}

impl DatabaseConfig {
    /// `url_var` is the service's own database variable, e.g. `USERS_DATABASE_URL`.
    pub fn from_env(env: &Env, url_var: &str, default_db: &str) -> Result<Self, ConfigError> {
        let default_url = format!("postgres://postgres@127.0.0.1:5432/{default_db}");
        Ok(Self {
            url: env.url(url_var, &default_url, &["postgres", "postgresql"])?,
            pool_size: env.parse("DATABASE_POOL_SIZE", 16, 1..=500)?,
            connect_timeout: env.secs("DATABASE_CONNECT_TIMEOUT_SECS", 5, 1..=120)?,
            lock_timeout: None,
        })
    }

    pub fn with_lock_timeout(mut self, bound: Duration) -> Self {
        self.lock_timeout = Some(bound);
        self
    }
}

#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub url: SecretUrl,
    /// Prepended to every key, so tests (and tenants) never collide.
    pub key_prefix: String,
}

impl RedisConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"])?,
            key_prefix: env.string("REDIS_KEY_PREFIX", ""),
        })
    }
}

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Prepended to every topic name, so tests never collide.
    pub topic_prefix: String,
    pub consumer_max_attempts: u32,
    pub consumer_backoff: Duration,
    /// Workers per consumer; one key's events always go to the same worker, in order.
    pub consumer_concurrency: usize,
    pub topic_partitions: i32,
    /// After this long without a heartbeat a consumer is out of its group and its partitions
    /// move (the broker accepts 6 s to 30 min by default).
    pub session_timeout_ms: u32,
}

impl KafkaConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let brokers = env.string("KAFKA_BROKERS", "127.0.0.1:9092");
        if brokers.split(',').any(|b| !b.contains(':')) {
            return Err(ConfigError {
                var: "KAFKA_BROKERS".into(),
                value: brokers,
                reason: "must be a comma-separated list of host:port".into(),
            });
        }
        Ok(Self {
            brokers,
            topic_prefix: env.string("KAFKA_TOPIC_PREFIX", ""),
            consumer_max_attempts: env.parse("CONSUMER_MAX_ATTEMPTS", 5, 1..=100)?,
            consumer_backoff: env.millis("CONSUMER_BACKOFF_MS", 200, 1..=60_000)?,
            consumer_concurrency: env.parse("CONSUMER_CONCURRENCY", 16, 1..=256)?,
            topic_partitions: env.parse("KAFKA_TOPIC_PARTITIONS", 3, 1..=1000)?,
            session_timeout_ms: env.parse("KAFKA_SESSION_TIMEOUT_MS", 10_000, 6_000..=1_800_000)?,
        })
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}{}", self.topic_prefix, name)
    }
}

/// Session settings shared by users-api (which writes sessions) and every service that reads them.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub ttl: Duration,
}

impl SessionConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            ttl: env.secs("SESSION_TTL_SECS", 1800, 60..=86_400 * 30)?,
        })
    }
}

pub fn log_format(env: &Env) -> Result<LogFormat, ConfigError> {
    Ok(
        match env
            .choice("LOG_FORMAT", "pretty", &["pretty", "json"])?
            .as_str()
        {
            "json" => LogFormat::Json,
            _ => LogFormat::Pretty,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset() {
        let env = Env::from_pairs([]);
        let http = HttpConfig::from_env(&env, "USERS_API_PORT", 8081).unwrap();
        assert_eq!(http.port, 8081);
        let kafka = KafkaConfig::from_env(&env).unwrap();
        assert_eq!(kafka.brokers, "127.0.0.1:9092");
        assert_eq!(
            SessionConfig::from_env(&env).unwrap().ttl,
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn bad_number_names_the_variable() {
        let env = Env::from_pairs([("USERS_API_PORT", "eighty")]);
        let err = HttpConfig::from_env(&env, "USERS_API_PORT", 8081).unwrap_err();
        assert_eq!(err.var, "USERS_API_PORT");
        assert!(err.to_string().contains("USERS_API_PORT"), "{err}");
    }

    #[test]
    fn out_of_range_names_the_variable_and_range() {
        let env = Env::from_pairs([("SESSION_TTL_SECS", "5")]);
        let err = SessionConfig::from_env(&env).unwrap_err();
        assert_eq!(err.var, "SESSION_TTL_SECS");
        assert!(err.reason.contains("between 60"), "{}", err.reason);
    }

    #[test]
    fn bad_url_is_rejected_without_printing_the_password() {
        let env = Env::from_pairs([("USERS_DATABASE_URL", "mysql://u:hunter2@db/x")]);
        let err = DatabaseConfig::from_env(&env, "USERS_DATABASE_URL", "users").unwrap_err();
        assert_eq!(err.var, "USERS_DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let url = SecretUrl::new("postgres://app:hunter2@db:5432/users");
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/users");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
        let cfg = DatabaseConfig::from_env(
            &Env::from_pairs([("USERS_DATABASE_URL", "postgres://app:hunter2@db/users")]),
            "USERS_DATABASE_URL",
            "users",
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn url_without_password_is_unchanged() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
    }

    #[test]
    fn bad_kafka_brokers_and_log_format_are_rejected() {
        let env = Env::from_pairs([("KAFKA_BROKERS", "localhost"), ("LOG_FORMAT", "xml")]);
        assert_eq!(
            KafkaConfig::from_env(&env).unwrap_err().var,
            "KAFKA_BROKERS"
        );
        assert_eq!(log_format(&env).unwrap_err().var, "LOG_FORMAT");
    }
}
