//! Settings read from the environment (flat names, DESIGN §3), validated at startup.
//!
//! A service builds its own config struct out of these pieces. A bad value stops the
//! process with a message naming the variable; secrets are wrapped so they never print.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
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

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

/// Where settings come from: the process environment, or a map in tests.
///
/// Every variable asked for is recorded (set or not), so `<service> check-config` can list
/// exactly the names a service reads. In check mode ([`Env::checking`]) a bad value is
/// recorded instead of failing and the default is used, so one pass reads every variable
/// and reports every error.
#[derive(Clone, Debug, Default)]
pub struct Env {
    overrides: HashMap<String, String>,
    use_process_env: bool,
    /// Every name asked for; shared by clones.
    read: Arc<Mutex<BTreeSet<String>>>,
    /// `Some` in check mode: the errors met so far.
    collected: Option<Arc<Mutex<Vec<ConfigError>>>>,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            use_process_env: true,
            ..Self::default()
        }
    }

    /// Only the given pairs (tests); nothing leaks in from the process environment.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            overrides: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Self::default()
        }
    }

    /// Sets one variable, taking precedence over the process environment.
    pub fn with(mut self, var: &str, value: impl Into<String>) -> Self {
        self.overrides.insert(var.to_owned(), value.into());
        self
    }

    /// Check mode: bad values are collected ([`Env::errors`]) and replaced by their defaults
    /// instead of failing, so reading a whole configuration reports every problem at once.
    pub fn checking(mut self) -> Self {
        self.collected = Some(Arc::default());
        self
    }

    /// Every variable name asked for so far, set or not, sorted.
    pub fn names_read(&self) -> Vec<String> {
        self.read
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The errors collected in check mode (empty otherwise).
    pub fn errors(&self) -> Vec<ConfigError> {
        self.collected
            .as_ref()
            .and_then(|c| c.lock().ok().map(|e| e.clone()))
            .unwrap_or_default()
    }

    /// A validation that failed: an error, or in check mode recorded and `Ok(fallback)`.
    pub fn reject<T>(&self, err: ConfigError, fallback: T) -> Result<T, ConfigError> {
        match &self.collected {
            Some(collected) => {
                if let Ok(mut errors) = collected.lock() {
                    errors.push(err);
                }
                Ok(fallback)
            }
            None => Err(err),
        }
    }

    pub fn raw(&self, var: &str) -> Option<String> {
        if let Ok(mut read) = self.read.lock() {
            read.insert(var.to_owned());
        }
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
        let value: T = match raw.trim().parse() {
            Ok(v) => v,
            Err(e) => {
                let e: T::Err = e;
                let err = ConfigError {
                    var: var.to_owned(),
                    value: raw.clone(),
                    reason: e.to_string(),
                };
                return self.reject(err, default);
            }
        };
        if !range.contains(&value) {
            let err = ConfigError {
                var: var.to_owned(),
                value: raw,
                reason: format!("must be between {} and {}", range.start(), range.end()),
            };
            return self.reject(err, default);
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
            let err = ConfigError {
                var: var.to_owned(),
                value: redact_url(&value),
                reason: format!("must be a URL starting with {}://", schemes.join("://, ")),
            };
            return self.reject(err, SecretUrl::new(default));
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
            let err = ConfigError {
                var: var.to_owned(),
                value,
                reason: format!("must be one of {}", allowed.join(", ")),
            };
            self.reject(err, default.to_ascii_lowercase())
        }
    }

    /// `true` or `false` (also `1`/`0`, `yes`/`no`).
    pub fn flag(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        let fallback = if default { "true" } else { "false" };
        let value = self.choice(var, fallback, &["true", "false", "1", "0", "yes", "no"])?;
        Ok(matches!(value.as_str(), "true" | "1" | "yes"))
    }

    /// A secret of `min_len..=max_len` visible ASCII characters, `None` when unset or empty.
    /// Its value never appears in an error.
    pub fn secret(
        &self,
        var: &str,
        len: std::ops::RangeInclusive<usize>,
    ) -> Result<Option<Secret<String>>, ConfigError> {
        let Some(value) = self.raw(var).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let reason = if !value.bytes().all(|b| b.is_ascii_graphic()) {
            Some("must be visible ASCII characters only (no spaces or control characters)".into())
        } else if !len.contains(&value.len()) {
            Some(format!(
                "must be {} to {} characters long (it is {})",
                len.start(),
                len.end(),
                value.len()
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => {
                let err = ConfigError {
                    var: var.to_owned(),
                    value: "***".into(),
                    reason,
                };
                self.reject(err, None)
            }
            None => Ok(Some(Secret::new(value))),
        }
    }

    /// A path to an existing, readable file, `None` when unset or empty.
    pub fn file(&self, var: &str) -> Result<Option<PathBuf>, ConfigError> {
        let value = self.string(var, "");
        if value.is_empty() {
            return Ok(None);
        }
        match std::fs::File::open(&value) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(Some(PathBuf::from(value))),
            Ok(_) => {
                let err = ConfigError {
                    var: var.to_owned(),
                    value,
                    reason: "must be a file (PEM), not a directory".into(),
                };
                self.reject(err, None)
            }
            Err(e) => {
                let err = ConfigError {
                    var: var.to_owned(),
                    value,
                    reason: format!("cannot be read: {e}"),
                };
                self.reject(err, None)
            }
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
    /// The deadline of the whole shutdown (drain, background tasks, producer flush): every
    /// step gets what is left of it, and the process exits when it passes.
    pub shutdown_timeout: Duration,
    /// The service credential `/internal/**` requires (header `X-Internal-Token`); `None`:
    /// every internal request is refused.
    pub internal_token: Option<Secret<String>>,
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
            internal_token: internal_token(env)?,
        })
    }
}

/// The shared secret services present to each other's `/internal/**` routes.
pub const INTERNAL_API_TOKEN: &str = "INTERNAL_API_TOKEN";
const INTERNAL_TOKEN_LEN: std::ops::RangeInclusive<usize> = 32..=512;

/// `INTERNAL_API_TOKEN` if set (32 to 512 visible ASCII characters).
pub fn internal_token(env: &Env) -> Result<Option<Secret<String>>, ConfigError> {
    env.secret(INTERNAL_API_TOKEN, INTERNAL_TOKEN_LEN)
}

/// `INTERNAL_API_TOKEN` for a service that calls another's `/internal/**`: it must be set.
pub fn required_internal_token(env: &Env) -> Result<Secret<String>, ConfigError> {
    match internal_token(env)? {
        Some(token) => Ok(token),
        None => {
            let err = ConfigError {
                var: INTERNAL_API_TOKEN.into(),
                value: String::new(),
                reason: "must be set: this service calls /internal/** of another service".into(),
            };
            env.reject(err, Secret::new(String::new()))
        }
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
        let url = env.url(url_var, &default_url, &["postgres", "postgresql"])?;
        check_postgres_tls(env, url_var, &url)?;
        Ok(Self {
            url,
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

/// The URL's `sslmode` (`disable` when absent: plain connections, as before TLS support),
/// one of libpq's words.
pub fn postgres_ssl_mode(url: &str) -> Option<&str> {
    url_query(url, &["sslmode", "ssl-mode"])
}

fn url_query<'a>(url: &'a str, keys: &[&str]) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        keys.contains(&k).then_some(v)
    })
}

/// `sslmode` is a word PostgreSQL knows, and `sslrootcert` (if any) a readable file.
fn check_postgres_tls(env: &Env, var: &str, url: &SecretUrl) -> Result<(), ConfigError> {
    const MODES: [&str; 6] = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
    let url_text = url.expose();
    if let Some(mode) = postgres_ssl_mode(url_text)
        && !MODES.contains(&mode)
    {
        let err = ConfigError {
            var: var.to_owned(),
            value: redact_url(url_text),
            reason: format!("sslmode must be one of {}", MODES.join(", ")),
        };
        return env.reject(err, ());
    }
    if let Some(path) = url_query(url_text, &["sslrootcert", "ssl-root-cert", "ssl-ca"])
        && !std::path::Path::new(path).is_file()
    {
        let err = ConfigError {
            var: var.to_owned(),
            value: redact_url(url_text),
            reason: format!("sslrootcert {path} is not a readable file"),
        };
        return env.reject(err, ());
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// One server (`redis://`, `rediss://` for TLS) or a Redis Cluster (`redis+cluster://`,
    /// `rediss+cluster://`, then its seed nodes `host:port,host:port,...`).
    pub url: SecretUrl,
    /// Prepended to every key, so tests (and tenants) never collide. Never `{` or `}`: a
    /// key's hash tag (`{c<id>}`) picks its Redis Cluster slot, and a brace in the prefix
    /// would take the tag's place.
    pub key_prefix: String,
    /// A private CA (PEM) that signs the server certificate of a TLS Redis (`rediss://`,
    /// `rediss+cluster://`); `None`: the system's trusted roots.
    pub ca_cert: Option<PathBuf>,
}

/// REDIS_URL's schemes: one server, or (`+cluster`) a Redis Cluster through its seed nodes.
const REDIS_SCHEMES: [&str; 4] = ["redis", "rediss", "redis+cluster", "rediss+cluster"];
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The seed nodes of a Redis Cluster URL, each as a URL of its own that carries the URL's
/// credentials and query (`redis+cluster://u:p@a:1,b:2` → `redis://u:p@a:1`,
/// `redis://u:p@b:2`; `rediss+cluster` → `rediss`); `None` for one server's URL, `Err` with
/// the reason for a cluster URL that is malformed.
pub fn redis_cluster_seeds(url: &str) -> Option<Result<Vec<SecretUrl>, &'static str>> {
    let (scheme, rest) = url.split_once("://")?;
    let node_scheme = scheme.strip_suffix("+cluster")?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    if !database.is_empty() {
        return Some(Err(
            "a Redis Cluster has database 0 only: no /<database> after its nodes",
        ));
    }
    let (credentials, nodes) = match authority.rsplit_once('@') {
        Some((credentials, nodes)) => (format!("{credentials}@"), nodes),
        None => (String::new(), authority),
    };
    if !valid_host_ports(nodes) {
        return Some(Err(
            "a Redis Cluster URL lists its seed nodes as host:port,host:port,...",
        ));
    }
    let seed = |node: &str| SecretUrl::new(format!("{node_scheme}://{credentials}{node}{query}"));
    Some(Ok(nodes.split(',').map(|n| seed(n.trim())).collect()))
}

impl RedisConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut url = env.url("REDIS_URL", DEFAULT_REDIS_URL, &REDIS_SCHEMES)?;
        if let Some(Err(reason)) = redis_cluster_seeds(url.expose()) {
            let err = ConfigError {
                var: "REDIS_URL".into(),
                value: url.to_string(),
                reason: reason.into(),
            };
            url = env.reject(err, SecretUrl::new(DEFAULT_REDIS_URL))?;
        }
        let tls = ["rediss://", "rediss+cluster://"]
            .iter()
            .any(|s| url.expose().starts_with(s));
        let ca_cert = env.file("REDIS_CA_CERT")?;
        let ca_cert = match ca_cert {
            Some(path) if !tls => {
                let err = ConfigError {
                    var: "REDIS_CA_CERT".into(),
                    value: path.display().to_string(),
                    reason: "only used with a rediss:// or rediss+cluster:// REDIS_URL (TLS)"
                        .into(),
                };
                env.reject(err, None)?
            }
            other => other,
        };
        let mut key_prefix = env.string("REDIS_KEY_PREFIX", "");
        if key_prefix.contains(['{', '}']) {
            let err = ConfigError {
                var: "REDIS_KEY_PREFIX".into(),
                value: key_prefix,
                reason: "must not contain { or }: they would replace the keys' Redis Cluster \
                         hash tags"
                    .into(),
            };
            key_prefix = env.reject(err, String::new())?;
        }
        Ok(Self {
            url,
            key_prefix,
            ca_cert,
        })
    }

    /// The seed nodes' URLs when REDIS_URL names a Redis Cluster ([`redis_cluster_seeds`]),
    /// `None` when it names one server.
    pub fn cluster_seeds(&self) -> Option<Result<Vec<SecretUrl>, &'static str>> {
        redis_cluster_seeds(self.url.expose())
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
    /// librdkafka's `debug` contexts (`KAFKA_DEBUG`, e.g. `cgrp,fetch`), logged through
    /// `tracing`; `None`: only its warnings and errors.
    pub debug: Option<String>,
    /// How every producer, consumer and admin client reaches the brokers.
    pub security: KafkaSecurity,
    /// Create missing topics at start (local stack, tests); `false`: only check they exist
    /// (on Kubernetes the KafkaTopic objects create them).
    pub create_topics: bool,
    /// Replicas of a topic the service creates.
    pub topic_replication: i32,
    /// `min.insync.replicas` of a topic the service creates (at most the replication).
    pub topic_min_insync: i32,
}

/// TLS and SASL to the brokers (librdkafka's `security.protocol`, `sasl.*`, `ssl.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: String,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512` (with `sasl_*`).
    pub sasl_mechanism: String,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret<String>>,
    /// A private CA (PEM) for the brokers' certificates (with `ssl`, `sasl_ssl`); `None`: the
    /// system's trusted roots.
    pub ssl_ca_location: Option<PathBuf>,
}

impl KafkaSecurity {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let protocol = env.choice(
            "KAFKA_SECURITY_PROTOCOL",
            "plaintext",
            &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"],
        )?;
        let sasl_mechanism = env
            .choice(
                "KAFKA_SASL_MECHANISM",
                "scram-sha-512",
                &["scram-sha-256", "scram-sha-512"],
            )?
            .to_ascii_uppercase();
        let sasl_username = Some(env.string("KAFKA_SASL_USERNAME", "")).filter(|u| !u.is_empty());
        let sasl_password = env.secret("KAFKA_SASL_PASSWORD", 1..=1024)?;
        let ssl_ca_location = env.file("KAFKA_SSL_CA_LOCATION")?;
        let sasl = protocol.starts_with("sasl_");
        let tls = protocol.ends_with("ssl");
        let mut security = Self {
            protocol: protocol.clone(),
            sasl_mechanism,
            sasl_username,
            sasl_password,
            ssl_ca_location,
        };
        if sasl {
            for (var, missing) in [
                ("KAFKA_SASL_USERNAME", security.sasl_username.is_none()),
                ("KAFKA_SASL_PASSWORD", security.sasl_password.is_none()),
            ] {
                // A value that was given but is invalid has been reported already.
                if missing && env.raw(var).is_none_or(|v| v.is_empty()) {
                    let err = ConfigError {
                        var: var.into(),
                        value: String::new(),
                        reason: format!("must be set when KAFKA_SECURITY_PROTOCOL={protocol}"),
                    };
                    env.reject(err, ())?;
                }
            }
        } else {
            for (var, set) in [
                ("KAFKA_SASL_USERNAME", security.sasl_username.is_some()),
                ("KAFKA_SASL_PASSWORD", security.sasl_password.is_some()),
            ] {
                if set {
                    let err = ConfigError {
                        var: var.into(),
                        value: if var.ends_with("PASSWORD") {
                            "***".into()
                        } else {
                            security.sasl_username.clone().unwrap_or_default()
                        },
                        reason: format!(
                            "only used with KAFKA_SECURITY_PROTOCOL=sasl_plaintext or sasl_ssl (it is {protocol})"
                        ),
                    };
                    env.reject(err, ())?;
                }
            }
        }
        if !tls && let Some(path) = security.ssl_ca_location.take() {
            let err = ConfigError {
                var: "KAFKA_SSL_CA_LOCATION".into(),
                value: path.display().to_string(),
                reason: format!(
                    "only used with KAFKA_SECURITY_PROTOCOL=ssl or sasl_ssl (it is {protocol})"
                ),
            };
            env.reject(err, ())?;
        }
        Ok(security)
    }

    /// The librdkafka properties these settings stand for.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let mut props = vec![("security.protocol", self.protocol.clone())];
        if self.protocol.starts_with("sasl_") {
            props.push(("sasl.mechanisms", self.sasl_mechanism.clone()));
            if let Some(user) = &self.sasl_username {
                props.push(("sasl.username", user.clone()));
            }
            if let Some(password) = &self.sasl_password {
                props.push(("sasl.password", password.expose().clone()));
            }
        }
        if self.protocol.ends_with("ssl") {
            // The bundled OpenSSL knows no system CA directory of its own: without a CA file,
            // librdkafka probes the usual system locations.
            let ca = self
                .ssl_ca_location
                .as_ref()
                .map_or_else(|| "probe".to_owned(), |p| p.display().to_string());
            props.push(("ssl.ca.location", ca));
        }
        props
    }
}

/// `host:port[,host:port...]`: a non-empty host of letters, digits, `.`, `-`, `_` (or an
/// `[IPv6]`), and a port 1..=65535.
fn valid_host_ports(list: &str) -> bool {
    list.split(',').all(|b| {
        let Some((host, port)) = b.trim().rsplit_once(':') else {
            return false;
        };
        let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            !v6.is_empty()
                && v6
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        } else {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        };
        host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

impl KafkaConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut brokers = env.string("KAFKA_BROKERS", "127.0.0.1:9092");
        if !valid_host_ports(&brokers) {
            let err = ConfigError {
                var: "KAFKA_BROKERS".into(),
                value: brokers,
                reason: "must be a comma-separated list of host:port".into(),
            };
            brokers = env.reject(err, "127.0.0.1:9092".to_owned())?;
        }
        let topic_replication = env.parse("KAFKA_TOPIC_REPLICATION", 1, 1..=5)?;
        let mut topic_min_insync = env.parse("KAFKA_TOPIC_MIN_INSYNC", 1, 1..=5)?;
        if topic_min_insync > topic_replication {
            let err = ConfigError {
                var: "KAFKA_TOPIC_MIN_INSYNC".into(),
                value: topic_min_insync.to_string(),
                reason: format!(
                    "must not exceed KAFKA_TOPIC_REPLICATION ({topic_replication}): no write could succeed"
                ),
            };
            topic_min_insync = env.reject(err, 1)?;
        }
        Ok(Self {
            security: KafkaSecurity::from_env(env)?,
            create_topics: env.flag("KAFKA_CREATE_TOPICS", true)?,
            topic_replication,
            topic_min_insync,
            brokers,
            topic_prefix: env.string("KAFKA_TOPIC_PREFIX", ""),
            consumer_max_attempts: env.parse("CONSUMER_MAX_ATTEMPTS", 5, 1..=100)?,
            consumer_backoff: env.millis("CONSUMER_BACKOFF_MS", 200, 1..=60_000)?,
            consumer_concurrency: env.parse("CONSUMER_CONCURRENCY", 16, 1..=256)?,
            topic_partitions: env.parse("KAFKA_TOPIC_PARTITIONS", 3, 1..=1000)?,
            session_timeout_ms: env.parse("KAFKA_SESSION_TIMEOUT_MS", 10_000, 6_000..=1_800_000)?,
            debug: Some(env.string("KAFKA_DEBUG", "")).filter(|d| !d.is_empty()),
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

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: where spans are exported (OTLP over HTTP, e.g.
/// `http://otel-collector:4318`; `/v1/traces` is appended), `None` when unset: traces off.
pub fn traces_endpoint(env: &Env) -> Result<Option<String>, ConfigError> {
    if env
        .raw("OTEL_EXPORTER_OTLP_ENDPOINT")
        .is_none_or(|v| v.trim().is_empty())
    {
        return Ok(None);
    }
    let url = env.url("OTEL_EXPORTER_OTLP_ENDPOINT", "", &["http"])?;
    Ok(Some(url.expose().to_owned()))
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

    #[test]
    fn traces_are_off_unless_an_http_collector_is_named() {
        let endpoint =
            |v: &str| traces_endpoint(&Env::from_pairs([("OTEL_EXPORTER_OTLP_ENDPOINT", v)]));
        assert_eq!(traces_endpoint(&Env::from_pairs([])).unwrap(), None);
        assert_eq!(endpoint(" ").unwrap(), None);
        assert_eq!(
            endpoint("http://collector:4318").unwrap().as_deref(),
            Some("http://collector:4318")
        );
        for bad in [
            "collector:4318",
            "grpc://collector:4317",
            "https://collector:4318",
        ] {
            assert_eq!(
                endpoint(bad).unwrap_err().var,
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "{bad}"
            );
        }
    }

    #[test]
    fn env_records_every_name_asked_for_even_unset_ones() {
        let env = Env::from_pairs([("KAFKA_BROKERS", "k:9092")]);
        KafkaConfig::from_env(&env).unwrap();
        let names = env.names_read();
        for name in [
            "KAFKA_BROKERS",
            "KAFKA_TOPIC_PREFIX",
            "KAFKA_SECURITY_PROTOCOL",
            "KAFKA_SASL_MECHANISM",
            "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_SSL_CA_LOCATION",
            "KAFKA_CREATE_TOPICS",
            "KAFKA_TOPIC_REPLICATION",
            "KAFKA_TOPIC_MIN_INSYNC",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        // Clones share the record.
        let clone = env.clone().with("X", "1");
        clone.raw("ONLY_ON_THE_CLONE");
        assert!(env.names_read().iter().any(|n| n == "ONLY_ON_THE_CLONE"));
    }

    #[test]
    fn check_mode_collects_errors_and_uses_defaults() {
        let env = Env::from_pairs([("SESSION_TTL_SECS", "5"), ("LOG_FORMAT", "xml")]).checking();
        assert_eq!(
            SessionConfig::from_env(&env).unwrap().ttl,
            Duration::from_secs(1800)
        );
        assert_eq!(log_format(&env).unwrap(), LogFormat::Pretty);
        let vars: Vec<String> = env.errors().into_iter().map(|e| e.var).collect();
        assert_eq!(vars, ["SESSION_TTL_SECS", "LOG_FORMAT"]);
    }

    #[test]
    fn kafka_security_defaults_to_plaintext() {
        let kafka = KafkaConfig::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!(kafka.security.protocol, "plaintext");
        assert_eq!(kafka.security.sasl_mechanism, "SCRAM-SHA-512");
        assert_eq!(
            kafka.security.properties(),
            [("security.protocol", "plaintext".to_owned())]
        );
        assert!(kafka.create_topics);
        assert_eq!((kafka.topic_replication, kafka.topic_min_insync), (1, 1));
    }

    #[test]
    fn sasl_needs_a_username_and_a_password() {
        let err =
            KafkaConfig::from_env(&Env::from_pairs([("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")]))
                .unwrap_err();
        assert_eq!(err.var, "KAFKA_SASL_USERNAME");
        let err = KafkaConfig::from_env(&Env::from_pairs([
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("KAFKA_SASL_USERNAME", "svc"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "KAFKA_SASL_PASSWORD");
        assert!(err.reason.contains("sasl_plaintext"), "{}", err.reason);
        let kafka = KafkaConfig::from_env(&Env::from_pairs([
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-256"),
            ("KAFKA_SASL_USERNAME", "svc"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
        ]))
        .unwrap();
        let props = kafka.security.properties();
        assert!(props.contains(&("sasl.mechanisms", "SCRAM-SHA-256".to_owned())));
        assert!(props.contains(&("sasl.username", "svc".to_owned())));
        assert!(props.contains(&("sasl.password", "hunter2".to_owned())));
        assert!(props.contains(&("ssl.ca.location", "probe".to_owned())));
        assert!(!format!("{kafka:?}").contains("hunter2"));
        // SASL settings without SASL are a mistake, not silently ignored.
        let err =
            KafkaConfig::from_env(&Env::from_pairs([("KAFKA_SASL_USERNAME", "svc")])).unwrap_err();
        assert_eq!(err.var, "KAFKA_SASL_USERNAME");
        let err = KafkaConfig::from_env(&Env::from_pairs([("KAFKA_SASL_MECHANISM", "plain")]))
            .unwrap_err();
        assert_eq!(err.var, "KAFKA_SASL_MECHANISM");
        let err = KafkaConfig::from_env(&Env::from_pairs([("KAFKA_SECURITY_PROTOCOL", "tls")]))
            .unwrap_err();
        assert_eq!(err.var, "KAFKA_SECURITY_PROTOCOL");
    }

    #[test]
    fn the_kafka_ca_must_exist_and_needs_tls() {
        let err = KafkaConfig::from_env(&Env::from_pairs([
            ("KAFKA_SECURITY_PROTOCOL", "ssl"),
            ("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "KAFKA_SSL_CA_LOCATION");
        assert!(err.reason.contains("cannot be read"), "{}", err.reason);
        let err = KafkaConfig::from_env(&Env::from_pairs([
            ("KAFKA_SECURITY_PROTOCOL", "ssl"),
            ("KAFKA_SSL_CA_LOCATION", "/"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "KAFKA_SSL_CA_LOCATION");
        let ca = std::env::temp_dir().join(format!("kafka-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let ca_text = ca.display().to_string();
        let kafka = KafkaConfig::from_env(&Env::from_pairs([
            ("KAFKA_SECURITY_PROTOCOL", "ssl"),
            ("KAFKA_SSL_CA_LOCATION", ca_text.as_str()),
        ]))
        .unwrap();
        assert!(
            kafka
                .security
                .properties()
                .contains(&("ssl.ca.location", ca_text.clone()))
        );
        let err = KafkaConfig::from_env(&Env::from_pairs([(
            "KAFKA_SSL_CA_LOCATION",
            ca_text.as_str(),
        )]))
        .unwrap_err();
        assert_eq!(err.var, "KAFKA_SSL_CA_LOCATION");
        assert!(err.reason.contains("plaintext"), "{}", err.reason);
        let _ = std::fs::remove_file(&ca);
    }

    #[test]
    fn topic_replication_and_min_insync_are_validated() {
        for (var, value) in [
            ("KAFKA_TOPIC_REPLICATION", "0"),
            ("KAFKA_TOPIC_REPLICATION", "6"),
            ("KAFKA_TOPIC_MIN_INSYNC", "2"),
            ("KAFKA_CREATE_TOPICS", "maybe"),
        ] {
            let err = KafkaConfig::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{value}");
        }
        let kafka = KafkaConfig::from_env(&Env::from_pairs([
            ("KAFKA_TOPIC_REPLICATION", "3"),
            ("KAFKA_TOPIC_MIN_INSYNC", "2"),
            ("KAFKA_CREATE_TOPICS", "false"),
        ]))
        .unwrap();
        assert_eq!((kafka.topic_replication, kafka.topic_min_insync), (3, 2));
        assert!(!kafka.create_topics);
    }

    #[test]
    fn brokers_must_be_host_port_pairs() {
        for bad in [
            "localhost",
            "k:",
            ":9092",
            "k:0",
            "k:99999",
            "k:9092,",
            "k 1:9092",
        ] {
            let err =
                KafkaConfig::from_env(&Env::from_pairs([("KAFKA_BROKERS", bad)])).unwrap_err();
            assert_eq!(err.var, "KAFKA_BROKERS", "{bad}");
        }
        for good in ["k:9092", "a.b-c_d:1,e:2", "[::1]:9092", "10.0.0.1:9093"] {
            KafkaConfig::from_env(&Env::from_pairs([("KAFKA_BROKERS", good)])).unwrap();
        }
    }

    #[test]
    fn the_internal_token_is_optional_but_validated() {
        assert!(internal_token(&Env::from_pairs([])).unwrap().is_none());
        for bad in ["short", "has a space in it 0123456789abcdef"] {
            let err = internal_token(&Env::from_pairs([("INTERNAL_API_TOKEN", bad)])).unwrap_err();
            assert_eq!(err.var, "INTERNAL_API_TOKEN");
            assert_eq!(err.value, "***");
        }
        let token = "x".repeat(32);
        let got = internal_token(&Env::from_pairs([("INTERNAL_API_TOKEN", token.as_str())]))
            .unwrap()
            .unwrap();
        assert_eq!(got.expose(), &token);
        let http = HttpConfig::from_env(
            &Env::from_pairs([("INTERNAL_API_TOKEN", token.as_str())]),
            "P",
            1,
        )
        .unwrap();
        assert!(!format!("{http:?}").contains(&token));
        assert_eq!(
            required_internal_token(&Env::from_pairs([]))
                .unwrap_err()
                .var,
            "INTERNAL_API_TOKEN"
        );
    }

    #[test]
    fn postgres_tls_settings_are_checked() {
        let read = |url: &str| {
            DatabaseConfig::from_env(&Env::from_pairs([("DB_URL", url)]), "DB_URL", "x")
        };
        read("postgres://u@h/db?sslmode=verify-full").unwrap();
        assert_eq!(
            postgres_ssl_mode("postgres://u@h/db?a=b&sslmode=require"),
            Some("require")
        );
        assert_eq!(postgres_ssl_mode("postgres://u@h/db"), None);
        let err = read("postgres://u:pw@h/db?sslmode=always").unwrap_err();
        assert_eq!(err.var, "DB_URL");
        assert!(!err.value.contains("pw"), "{}", err.value);
        let err =
            read("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent.pem").unwrap_err();
        assert!(err.reason.contains("sslrootcert"), "{}", err.reason);
    }

    #[test]
    fn redis_ca_needs_rediss_and_an_existing_file() {
        let err =
            RedisConfig::from_env(&Env::from_pairs([("REDIS_CA_CERT", "/nonexistent/ca.pem")]))
                .unwrap_err();
        assert_eq!(err.var, "REDIS_CA_CERT");
        let ca = std::env::temp_dir().join(format!("redis-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "pem").unwrap();
        let ca_text = ca.display().to_string();
        let err = RedisConfig::from_env(&Env::from_pairs([("REDIS_CA_CERT", ca_text.as_str())]))
            .unwrap_err();
        assert!(err.reason.contains("rediss://"), "{}", err.reason);
        let cfg = RedisConfig::from_env(&Env::from_pairs([
            ("REDIS_URL", "rediss://app:pw@redis:6380"),
            ("REDIS_CA_CERT", ca_text.as_str()),
        ]))
        .unwrap();
        assert_eq!(cfg.ca_cert.as_deref(), Some(ca.as_path()));
        let err = RedisConfig::from_env(&Env::from_pairs([
            ("REDIS_URL", "redis+cluster://a:7001,b:7002"),
            ("REDIS_CA_CERT", ca_text.as_str()),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "REDIS_CA_CERT");
        let cfg = RedisConfig::from_env(&Env::from_pairs([
            ("REDIS_URL", "rediss+cluster://app:pw@a:7001,b:7002"),
            ("REDIS_CA_CERT", ca_text.as_str()),
        ]))
        .unwrap();
        assert_eq!(cfg.ca_cert.as_deref(), Some(ca.as_path()));
        let _ = std::fs::remove_file(&ca);
    }

    #[test]
    fn a_cluster_url_names_its_seed_nodes_with_the_urls_credentials() {
        let seeds = |url: &str| {
            let cfg = RedisConfig::from_env(&Env::from_pairs([("REDIS_URL", url)])).unwrap();
            cfg.cluster_seeds()
                .map(|s| s.unwrap().iter().map(|u| u.expose().to_owned()).collect())
        };
        assert_eq!(seeds("redis://127.0.0.1:6379"), None::<Vec<String>>);
        assert_eq!(seeds("rediss://app:pw@redis:6380/2"), None);
        assert_eq!(
            seeds("redis+cluster://127.0.0.1:7101,127.0.0.1:7102, [::1]:7103").unwrap(),
            [
                "redis://127.0.0.1:7101",
                "redis://127.0.0.1:7102",
                "redis://[::1]:7103"
            ]
        );
        assert_eq!(
            seeds("rediss+cluster://app:pw@a:7001,b:7002/?protocol=resp3").unwrap(),
            [
                "rediss://app:pw@a:7001?protocol=resp3",
                "rediss://app:pw@b:7002?protocol=resp3"
            ]
        );
    }

    #[test]
    fn a_cluster_url_with_a_database_or_without_host_ports_is_rejected() {
        for bad in [
            "redis+cluster://app:hunter2@a:7001,b:7002/1",
            "redis+cluster://a:7001/0",
            "redis+cluster://a",
            "redis+cluster://a:7001,,b:7002",
            "rediss+cluster://app:hunter2@",
            "redis+clusters://a:7001",
        ] {
            let err = RedisConfig::from_env(&Env::from_pairs([("REDIS_URL", bad)])).unwrap_err();
            assert_eq!(err.var, "REDIS_URL", "{bad}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let err = RedisConfig::from_env(&Env::from_pairs([("REDIS_URL", "redis+cluster://a:1/3")]))
            .unwrap_err();
        assert!(err.reason.contains("database"), "{}", err.reason);
    }

    #[test]
    fn the_redis_key_prefix_cannot_carry_a_hash_tag() {
        for bad in ["{t1}:", "t{1:", "t}1:"] {
            let err =
                RedisConfig::from_env(&Env::from_pairs([("REDIS_KEY_PREFIX", bad)])).unwrap_err();
            assert_eq!(err.var, "REDIS_KEY_PREFIX", "{bad}");
        }
        let cfg = RedisConfig::from_env(&Env::from_pairs([("REDIS_KEY_PREFIX", "t1:")])).unwrap();
        assert_eq!(cfg.key_prefix, "t1:");
    }
}
