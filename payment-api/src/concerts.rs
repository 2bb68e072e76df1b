//! concert-api's internal reservation endpoint, as payment-api sees it (through common's
//! `ServiceClient`: timeouts, one retry on connect failure, 503 with nothing debited).

use chrono::{DateTime, Utc};
use common::ApiError;
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
}
