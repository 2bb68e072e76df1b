//! payment-api settings: listener, database, Redis, broker, sessions, money rules, clock.

use std::time::Duration;

use common::clock::Clock;
use common::config::{
    ConfigError, DatabaseConfig, Env, HttpConfig, KafkaConfig, LogFormat, RedisConfig, Secret,
    SessionConfig, log_format, required_internal_token,
};

#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub session: SessionConfig,
    pub payment: PaymentConfig,
    pub log_format: LogFormat,
    /// The service's time source: the system's, or a test's manual one (never from env).
    pub clock: Clock,
}

/// Money rules and the concert-api client (DESIGN §3).
#[derive(Clone, Debug)]
pub struct PaymentConfig {
    pub wallet_max_balance: i64,
    /// A hold this close to `held_until` is not paid any more.
    pub cutoff: Duration,
    pub concert_api_url: String,
    pub concert_api_timeout: Duration,
    /// The service credential concert-api's `/internal/**` requires (`INTERNAL_API_TOKEN`,
    /// required: payment-api and batch call it).
    pub internal_token: Secret<String>,
    /// A COMPLETED payment whose reservation has not settled after this long is re-published.
    pub reconcile_after: Duration,
    /// ... and after this long it is settled over HTTP with concert-api instead, so a stuck
    /// broker or consumer group cannot strand the money (DESIGN §6).
    pub settle_direct_after: Duration,
}

impl PaymentConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.url(
            "CONCERT_API_URL",
            "http://127.0.0.1:8082",
            &["http", "https"],
        )?;
        Ok(Self {
            wallet_max_balance: env.parse("WALLET_MAX_BALANCE", 100_000_000, 1..=i64::MAX / 2)?,
            cutoff: env.secs("PAYMENT_CUTOFF_SECS", 10, 0..=3600)?,
            concert_api_url: url.expose().trim_end_matches('/').to_owned(),
            concert_api_timeout: env.millis("CONCERT_API_TIMEOUT_MS", 2000, 50..=60_000)?,
            internal_token: required_internal_token(env)?,
            reconcile_after: env.secs("PAYMENT_RECONCILE_AFTER_SECS", 30, 1..=86_400)?,
            settle_direct_after: env.secs("PAYMENT_SETTLE_DIRECT_AFTER_SECS", 120, 1..=86_400)?,
        })
    }
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env, "PAYMENT_API_PORT", 8083)?,
            // A request that finds its Idempotency-Key still claimed waits at most this long
            // (then 409 IDEMPOTENCY_KEY_IN_USE): a bound on every lock wait of the service.
            database: DatabaseConfig::from_env(env, "PAYMENT_DATABASE_URL", "ticketing_payment")?
                .with_lock_timeout(crate::store::idempotency::IN_FLIGHT_WAIT),
            redis: RedisConfig::from_env(env)?,
            kafka: KafkaConfig::from_env(env)?,
            session: SessionConfig::from_env(env)?,
            payment: PaymentConfig::from_env(env)?,
            log_format: log_format(env)?,
            clock: Clock::system(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn direct_settlement_defaults_to_two_minutes_and_is_validated() {
        let cfg =
            PaymentConfig::from_env(&Env::from_pairs([("INTERNAL_API_TOKEN", TOKEN)])).unwrap();
        assert_eq!(cfg.settle_direct_after, Duration::from_secs(120));
        let cfg = PaymentConfig::from_env(&Env::from_pairs([
            ("INTERNAL_API_TOKEN", TOKEN),
            ("PAYMENT_SETTLE_DIRECT_AFTER_SECS", "5"),
        ]))
        .unwrap();
        assert_eq!(cfg.settle_direct_after, Duration::from_secs(5));
        for bad in ["0", "-1", "soon", "86401"] {
            let err = PaymentConfig::from_env(&Env::from_pairs([
                ("INTERNAL_API_TOKEN", TOKEN),
                ("PAYMENT_SETTLE_DIRECT_AFTER_SECS", bad),
            ]))
            .unwrap_err();
            assert_eq!(err.var, "PAYMENT_SETTLE_DIRECT_AFTER_SECS", "{bad}");
        }
    }

    #[test]
    fn the_internal_token_is_required_and_validated() {
        let err = PaymentConfig::from_env(&Env::from_pairs([])).unwrap_err();
        assert_eq!(err.var, "INTERNAL_API_TOKEN");
        let err = PaymentConfig::from_env(&Env::from_pairs([("INTERNAL_API_TOKEN", "short")]))
            .unwrap_err();
        assert_eq!(err.var, "INTERNAL_API_TOKEN");
        assert!(err.reason.contains("32"), "{}", err.reason);
        assert!(!err.to_string().contains("short"), "{err}");
        let cfg =
            PaymentConfig::from_env(&Env::from_pairs([("INTERNAL_API_TOKEN", TOKEN)])).unwrap();
        assert_eq!(cfg.internal_token.expose(), TOKEN);
        assert!(!format!("{cfg:?}").contains(TOKEN));
    }
}
