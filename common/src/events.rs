//! The events services exchange (DESIGN §6): topic names and each event's `data`.
//! Keyed by reservation id, so one reservation's events stay in order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The one envelope every event travels in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope<T> {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    pub data: T,
}

impl<T> Envelope<T> {
    pub fn new(kind: &str, data: T, occurred_at: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::new_v4(),
            kind: kind.to_owned(),
            version: 1,
            occurred_at,
            data,
        }
    }
}

pub const PAYMENT_COMPLETED: &str = "payment.completed";
pub const PAYMENT_REFUNDED: &str = "payment.refunded";
pub const RESERVATION_CONFIRMED: &str = "reservation.confirmed";
pub const RESERVATION_REJECTED: &str = "reservation.rejected";
pub const RESERVATION_EXPIRED: &str = "reservation.expired";

/// Every topic of the platform (each also has a `.dlq` twin).
pub const ALL_TOPICS: [&str; 5] = [
    PAYMENT_COMPLETED,
    PAYMENT_REFUNDED,
    RESERVATION_CONFIRMED,
    RESERVATION_REJECTED,
    RESERVATION_EXPIRED,
];

/// What users-api consumes: a confirmed purchase retires the buyer's queue pass.
pub const USERS_API_CONSUMES: &[&str] = &[RESERVATION_CONFIRMED];
/// What concert-api consumes: a completed payment settles its reservation.
pub const CONCERT_API_CONSUMES: &[&str] = &[PAYMENT_COMPLETED];
/// What payment-api consumes: the settlement's verdict (a rejection is refunded).
pub const PAYMENT_API_CONSUMES: &[&str] = &[RESERVATION_REJECTED, RESERVATION_CONFIRMED];

/// Every consumer group (named after its service, with the topic prefix) and its topics: what
/// batch watches on the broker (`kafka_group_backlog`).
pub const CONSUMER_GROUPS: [(&str, &[&str]); 3] = [
    ("users-api", USERS_API_CONSUMES),
    ("concert-api", CONCERT_API_CONSUMES),
    ("payment-api", PAYMENT_API_CONSUMES),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub payment_id: i64,
    pub reservation_id: i64,
    pub user_id: i64,
    pub amount: i64,
    pub paid_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationConfirmed {
    pub reservation_id: i64,
    pub payment_id: i64,
    pub user_id: i64,
    pub concert_id: i64,
    pub schedule_id: i64,
    pub seat_nos: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRejected {
    pub reservation_id: i64,
    pub payment_id: i64,
    pub user_id: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationExpired {
    pub reservation_id: i64,
    pub user_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment_id: i64,
    pub reservation_id: i64,
    pub user_id: i64,
    pub amount: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_documented_shape() {
        let at = DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = Envelope::new(
            "payment.completed",
            serde_json::json!({"payment_id": 7}),
            at,
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "payment.completed");
        assert_eq!(v["version"], 1);
        assert_eq!(v["occurred_at"], "2026-11-24T10:00:00Z");
        assert_eq!(v["data"]["payment_id"], 7);
        assert!(Uuid::parse_str(v["id"].as_str().unwrap()).is_ok());
    }
}
