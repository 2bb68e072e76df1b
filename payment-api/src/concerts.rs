//! concert-api's internal endpoints, as payment-api sees them (through common's
//! `ServiceClient`: timeouts, one retry on connect failure, 503 with nothing debited): the
//! reservation read before paying, and the direct settlement reconciliation falls back on.

use chrono::{DateTime, Utc};
use common::ApiError;
use common::events::PaymentCompleted;
use common::kafka::Envelope;
use sea_orm::prelude::Uuid;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct RemoteReservation {
    pub id: i64,
    pub user_id: i64,
    pub concert_id: i64,
    pub amount: i64,
    pub status: String,
    pub held_until: DateTime<Utc>,
    pub payment_id: Option<i64>,
}

/// concert-api's verdict on a payment it settled (or had settled before).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "verdict", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RemoteVerdict {
    Confirmed,
    Rejected {
        reason: String,
        /// The `reservation.rejected` event concert-api wrote for it.
        rejection_event_id: Option<Uuid>,
    },
}

#[derive(Clone)]
pub struct ConcertClient {
    client: common::client::ServiceClient,
}

impl ConcertClient {
    pub fn new(base: &str, timeout: std::time::Duration) -> Self {
        Self {
            client: common::client::ServiceClient::new(
                base,
                timeout,
                "reservations cannot be checked right now; nothing was charged",
            ),
        }
    }

    /// The reservation, `None` if concert-api does not know it.
    pub async fn reservation(&self, id: i64) -> Result<Option<RemoteReservation>, ApiError> {
        self.client
            .get_json(&format!("/internal/reservations/{id}"))
            .await
    }

    /// Settles a payment through concert-api, bypassing the broker: `event` is the
    /// `payment.completed` envelope, with the same id as the one in the outbox. Safe to repeat.
    pub async fn settle(
        &self,
        event: &Envelope<PaymentCompleted>,
    ) -> Result<RemoteVerdict, ApiError> {
        self.client.post_json("/internal/settlements", event).await
    }
}
