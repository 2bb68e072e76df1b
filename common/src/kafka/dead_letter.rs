//! Dead letters: a message that failed `CONSUMER_MAX_ATTEMPTS` times (or can never succeed)
//! is published to `<topic>.dlq` with the error, its origin and its attempts as headers.

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};

use super::{Incoming, KafkaClient};

pub(super) async fn dead_letter(
    client: &KafkaClient,
    incoming: &Incoming,
    error: &str,
    attempts: u32,
) -> Result<(), KafkaError> {
    let attempts = attempts.to_string();
    let partition = incoming.partition.to_string();
    let offset = incoming.offset.to_string();
    let source = client.topic(&incoming.topic);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "dlq.error",
            value: Some(error),
        })
        .insert(Header {
            key: "dlq.source.topic",
            value: Some(&source),
        })
        .insert(Header {
            key: "dlq.source.partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "dlq.source.offset",
            value: Some(&offset),
        })
        .insert(Header {
            key: "dlq.attempts",
            value: Some(&attempts),
        });
    let dlq = format!("{source}.dlq");
    client
        .send(
            &dlq,
            incoming.key.as_deref().unwrap_or(""),
            &incoming.payload,
            headers,
        )
        .await
}
