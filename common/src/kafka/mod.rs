//! Kafka: an idempotent producer with explicit topic creation (the broker does not
//! auto-create) — this module — and the consumer loop with at-least-once delivery
//! ([`consumer`]: the offset is committed only after the handler and its database
//! transaction succeeded) whose failing messages are parked in `<topic>.dlq`
//! ([`dead_letter`]). The envelope events travel in is [`crate::events::Envelope`].

mod consumer;
mod dead_letter;
mod offsets;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::KafkaConfig;

pub use crate::events::Envelope;
pub use consumer::{ConsumerStats, EventHandler, HandlerError, Incoming, run_consumer};

/// The producer shared by a service's outbox relay and its dead-letter writes.
#[derive(Clone)]
pub struct KafkaClient {
    cfg: KafkaConfig,
    producer: FutureProducer,
}

impl KafkaClient {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &cfg.brokers)
            // Idempotence: a retried send is written once, in order, per partition.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            // A broker that stops answering fails the send in bounded time, so the outbox
            // relay can roll back and try again instead of hanging.
            .set("message.timeout.ms", "10000")
            .set("socket.timeout.ms", "10000")
            .create()?;
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
        let record = FutureRecord::to(physical_topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Creates the given logical topics and their `.dlq` twins; existing ones are fine.
    pub async fn ensure_topics(&self, names: &[&str]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.brokers)
            .create()?;
        let physical: Vec<String> = names
            .iter()
            .flat_map(|n| [self.topic(n), self.topic(&format!("{n}.dlq"))])
            .collect();
        let topics: Vec<NewTopic<'_>> = physical
            .iter()
            .map(|t| NewTopic::new(t, self.cfg.topic_partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!(%topic, ?code, "could not create topic");
                    });
                }
            }
        }
        Ok(())
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

    /// Waits for every queued message to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush incomplete at shutdown");
        }
    }
}
