//! What isolates one test from the others running in parallel: its database, Redis key
//! prefix and topic prefix, all removed when it drops.

use crate::config::Env;

use super::*;

/// The service credential (`INTERNAL_API_TOKEN`) every service under test shares.
pub const INTERNAL_TEST_TOKEN: &str = "test-internal-token-0123456789abcdef0123456789";

/// Everything one test needs to be isolated from every other test running in parallel.
/// Dropping it drops the database and deletes the test's topics and consumer groups.
pub struct Isolation {
    pub db: TestDatabase,
    pub redis_prefix: String,
    pub topic_prefix: String,
}

impl Drop for Isolation {
    fn drop(&mut self) {
        delete_kafka_prefix_now(&kafka_brokers(), &self.topic_prefix);
    }
}

/// A unique topic prefix on the shared broker whose topics and groups are deleted when it
/// drops, for tests that use Kafka without a whole [`Isolation`].
pub struct TopicPrefix(pub String);

impl TopicPrefix {
    pub fn new() -> Self {
        Self(format!("{}.", unique_id()))
    }
}

impl Default for TopicPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TopicPrefix {
    fn drop(&mut self) {
        delete_kafka_prefix_now(&kafka_brokers(), &self.0);
    }
}

/// [`delete_kafka_prefix`] from a destructor: on a thread with a runtime of its own.
fn delete_kafka_prefix_now(brokers: &str, prefix: &str) {
    let (brokers, prefix) = (brokers.to_owned(), prefix.to_owned());
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(delete_kafka_prefix(&brokers, &prefix));
        }
    })
    .join();
}

impl Isolation {
    pub async fn new() -> Self {
        let id = unique_id();
        Self {
            db: TestDatabase::create().await,
            redis_prefix: format!("{id}:"),
            topic_prefix: format!("{id}."),
        }
    }

    /// An environment for a service under test: its database (`db_var`), prefixes, port 0,
    /// fast consumer retries. Add or override variables with [`Env::with`].
    pub fn env(&self, db_var: &str) -> Env {
        Env::from_pairs([])
            .with(db_var, self.db.url.clone())
            .with("REDIS_URL", redis_url())
            .with("REDIS_KEY_PREFIX", self.redis_prefix.clone())
            .with("KAFKA_BROKERS", kafka_brokers())
            .with("KAFKA_TOPIC_PREFIX", self.topic_prefix.clone())
            .with("KAFKA_TOPIC_PARTITIONS", "1")
            .with("CONSUMER_BACKOFF_MS", "20")
            .with("HTTP_WORKERS", "2")
            .with("DATABASE_POOL_SIZE", "8")
            .with("SHUTDOWN_TIMEOUT_SECS", "5")
            .with("USERS_API_PORT", "0")
            .with("CONCERT_API_PORT", "0")
            .with("PAYMENT_API_PORT", "0")
            .with("BATCH_PORT", "0")
            .with("INTERNAL_API_TOKEN", INTERNAL_TEST_TOKEN)
    }
}
