//! The events services exchange (DESIGN §6): topic names and each event's `data`.
//! Keyed by reservation id, so one reservation's events stay in order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
