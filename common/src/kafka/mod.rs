//! Kafka: an idempotent producer with explicit topic creation (the broker does not
//! auto-create) — this module — and the consumer loop with at-least-once delivery
//! ([`consumer`]: the offset is committed only after the handler and its database
//! transaction succeeded) whose failing messages are parked in `<topic>.dlq`
//! ([`dead_letter`]). The envelope events travel in is [`crate::events::Envelope`].

mod consumer;
mod dead_letter;
mod offsets;
mod producer;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;

use crate::config::KafkaConfig;

pub use crate::events::Envelope;
pub use consumer::{ConsumerStats, Delivery, EventHandler, HandlerError, Incoming, run_consumer};

/// A librdkafka configuration with the brokers and their security settings
/// (`KAFKA_SECURITY_PROTOCOL`, SASL, CA): the start of every producer, consumer and admin client.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &cfg.brokers);
    for (key, value) in cfg.security.properties() {
        config.set(key, value);
    }
    if let Some(debug) = &cfg.debug {
        config.set("debug", debug);
    }
    config
}

/// Why a service's topics are not usable.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// `KAFKA_CREATE_TOPICS=false` and these do not exist.
    #[error(
        "topics missing on the broker (KAFKA_CREATE_TOPICS=false, so they must be created beforehand, e.g. by the KafkaTopic objects): {}",
        .0.join(", ")
    )]
    Missing(Vec<String>),
}

/// The producer shared by a service's outbox relay and its dead-letter writes.
#[derive(Clone)]
pub struct KafkaClient {
    cfg: KafkaConfig,
    producer: producer::PolledProducer,
}

impl KafkaClient {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut config = client_config(cfg);
        config
            // Idempotence: a retried send is written once, in order, per partition.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            // A broker that stops answering fails the send in bounded time, so the outbox
            // relay can roll back and try again instead of hanging.
            .set("message.timeout.ms", "10000")
            .set("socket.timeout.ms", "10000");
        let producer = producer::PolledProducer::create(&config)?;
        Ok(Self {
            cfg: cfg.clone(),
            producer,
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// The physical topic name for a logical one (adds the configured prefix).
    pub fn topic(&self, name: &str) -> String {
        self.cfg.topic(name)
    }

    /// Publishes one message and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        physical_topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        self.producer
            .send(
                physical_topic,
                key,
                payload,
                headers,
                Duration::from_secs(5),
            )
            .await
    }

    /// The physical names of the given logical topics and their `.dlq` twins.
    pub fn physical_topics(&self, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .flat_map(|n| [self.topic(n), self.topic(&format!("{n}.dlq"))])
            .collect()
    }

    /// Makes sure the given logical topics and their `.dlq` twins exist: creates the missing
    /// ones (`KAFKA_TOPIC_PARTITIONS`, `KAFKA_TOPIC_REPLICATION`, `KAFKA_TOPIC_MIN_INSYNC`),
    /// or with `KAFKA_CREATE_TOPICS=false` only checks, naming every missing one.
    pub async fn ensure_topics(&self, names: &[&str]) -> Result<(), TopicError> {
        if !self.cfg.create_topics {
            let missing = self.missing_topics(names, Duration::from_secs(10)).await?;
            if missing.is_empty() {
                return Ok(());
            }
            return Err(TopicError::Missing(missing));
        }
        let admin: AdminClient<DefaultClientContext> = client_config(&self.cfg).create()?;
        let physical = self.physical_topics(names);
        let min_insync = self.cfg.topic_min_insync.to_string();
        let topics: Vec<NewTopic<'_>> = physical
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.cfg.topic_partitions,
                    TopicReplication::Fixed(self.cfg.topic_replication),
                )
                .set("min.insync.replicas", &min_insync)
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    tracing::error!(%topic, ?code, "could not create topic");
                    return Err(KafkaError::AdminOp(code).into());
                }
            }
        }
        Ok(())
    }

    /// Which of the given logical topics (and `.dlq` twins) the broker does not have.
    pub async fn missing_topics(
        &self,
        names: &[&str],
        timeout: Duration,
    ) -> Result<Vec<String>, KafkaError> {
        let physical = self.physical_topics(names);
        let producer = self.producer.clone();
        let existing = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, timeout).map(|m| {
                m.topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.name().to_owned())
                    .collect::<std::collections::HashSet<_>>()
            })
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        Ok(physical
            .into_iter()
            .filter(|t| !existing.contains(t))
            .collect())
    }

    /// Broker reachability for readiness: a metadata round trip.
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Where consumer group `group` stands on each of `topics` (logical names), read from the
    /// broker: so it is known when no member of the group is alive. A partition the group
    /// never committed counts from its oldest retained message.
    pub async fn group_positions(
        &self,
        group: &str,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<Vec<(String, GroupPosition)>, String> {
        let config = client_config(&self.cfg)
            .set("group.id", self.topic(group))
            .set("enable.auto.commit", "false")
            .clone();
        let topics: Vec<(String, String)> = topics
            .iter()
            .map(|t| ((*t).to_owned(), self.topic(t)))
            .collect();
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            // Never subscribes: it only asks the group's coordinator for the commits.
            let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
            topics
                .into_iter()
                .map(|(logical, physical)| {
                    let mut position = GroupPosition::default();
                    let partitions = partitions_of(consumer.client(), &physical, timeout)?;
                    let mut asked = rdkafka::TopicPartitionList::new();
                    for p in &partitions {
                        asked.add_partition(&physical, *p);
                    }
                    let committed = consumer
                        .committed_offsets(asked, timeout)
                        .map_err(|e| e.to_string())?;
                    for p in partitions {
                        let (low, high) = consumer
                            .fetch_watermarks(&physical, p, timeout)
                            .map_err(|e| e.to_string())?;
                        let commit =
                            committed
                                .find_partition(&physical, p)
                                .and_then(|e| match e.offset() {
                                    rdkafka::Offset::Offset(n) => Some(n),
                                    _ => None,
                                });
                        position.committed += commit.unwrap_or(0);
                        position.backlog += (high - commit.unwrap_or(low).max(low)).max(0);
                    }
                    Ok((logical, position))
                })
                .collect()
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Messages retained in `topic` (a logical name): end minus start offsets, summed over
    /// its partitions; 0 for a topic that does not exist.
    pub async fn retained(&self, topic: &str, timeout: Duration) -> Result<i64, String> {
        let producer = self.producer.clone();
        let physical = self.topic(topic);
        tokio::task::spawn_blocking(move || {
            let client = producer.client();
            partitions_of(client, &physical, timeout)?
                .into_iter()
                .map(|p| {
                    client
                        .fetch_watermarks(&physical, p, timeout)
                        .map(|(low, high)| (high - low).max(0))
                        .map_err(|e| e.to_string())
                })
                .sum()
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits for every queued message to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush incomplete at shutdown");
        }
    }
}

/// A consumer group's standing on one topic, summed over its partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupPosition {
    /// The committed offsets: they rise as the group consumes.
    pub committed: i64,
    /// Messages between the committed offsets and the end of the topic.
    pub backlog: i64,
}

/// The partition ids of `physical` (none if it does not exist).
fn partitions_of<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    physical: &str,
    timeout: Duration,
) -> Result<Vec<i32>, String> {
    let metadata = client
        .fetch_metadata(Some(physical), timeout)
        .map_err(|e| e.to_string())?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == physical && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    /// librdkafka is built with OpenSSL (rdkafka's `ssl-vendored`): it accepts TLS and
    /// SCRAM settings for a producer and a consumer. Without OpenSSL it refuses them at
    /// creation ("not built with OpenSSL"), before any connection.
    #[test]
    fn tls_and_scram_settings_are_accepted_by_librdkafka() {
        for (protocol, mechanism) in [
            ("ssl", "SCRAM-SHA-512"),
            ("sasl_ssl", "SCRAM-SHA-512"),
            ("sasl_ssl", "SCRAM-SHA-256"),
            ("sasl_plaintext", "SCRAM-SHA-256"),
        ] {
            let mut env = Env::from_pairs([
                ("KAFKA_BROKERS", "127.0.0.1:1"),
                ("KAFKA_SECURITY_PROTOCOL", protocol),
                ("KAFKA_SASL_MECHANISM", mechanism),
            ]);
            if protocol.starts_with("sasl_") {
                env = env
                    .with("KAFKA_SASL_USERNAME", "svc")
                    .with("KAFKA_SASL_PASSWORD", "pw");
            }
            let cfg = KafkaConfig::from_env(&env).unwrap();
            let config = client_config(&cfg);
            assert_eq!(config.get("security.protocol"), Some(protocol));
            if protocol.starts_with("sasl_") {
                assert_eq!(config.get("sasl.mechanisms"), Some(mechanism));
            }
            if let Err(e) = KafkaClient::new(&cfg) {
                panic!("{protocol}/{mechanism}: producer refused: {e}");
            }
            let consumer: Result<rdkafka::consumer::BaseConsumer, _> =
                client_config(&cfg).set("group.id", "g").create();
            if let Err(e) = consumer {
                panic!("{protocol}/{mechanism}: consumer refused: {e}");
            }
        }
    }
}
