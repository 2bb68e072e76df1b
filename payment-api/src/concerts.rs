//! concert-api's internal endpoints, as payment-api sees them (through common's
//! `ServiceClient`: timeouts, one retry on connect failure, 503 with nothing debited): the
//! reservation read before paying, and the direct settlement reconciliation falls back on.

use chrono::{DateTime, Utc};
use common::ApiError;
use common::events::PaymentCompleted;
use common::kafka::Envelope;
use sea_orm::prelude::Uuid;
use serde::Deserialize;

/// A reservation as concert-api's internal endpoint shows it (whoever owns it).
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteReservation {
    pub id: i64,
    pub user_id: i64,
    pub concert_id: i64,
    pub amount: i64,
    pub status: RemoteStatus,
    pub held_until: DateTime<Utc>,
    pub payment_id: Option<i64>,
}

/// A reservation's status as concert-api states it (API.md's `Reservation`), read here once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RemoteStatus {
    Held,
    Confirmed,
    Expired,
    Cancelled,
    Rejected,
    /// One this build does not know yet: not payable, and said so by name.
    #[serde(untagged)]
    Other(String),
}

impl RemoteStatus {
    /// The status in a sentence: "a cancelled reservation".
    pub fn describe(&self) -> String {
        match self {
            Self::Held => "held".to_owned(),
            Self::Confirmed => "confirmed".to_owned(),
            Self::Expired => "expired".to_owned(),
            Self::Cancelled => "cancelled".to_owned(),
            Self::Rejected => "rejected".to_owned(),
            Self::Other(name) => name.to_ascii_lowercase(),
        }
    }
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

/// concert-api could not answer (refused, timed out, an unexpected status or body). To a
/// client: 503 `DEPENDENCY_UNAVAILABLE` with `Retry-After`, nothing charged; to
/// reconciliation: try again next pass.
#[derive(Debug, thiserror::Error)]
#[error("concert-api could not answer: {0}")]
pub struct Unreachable(ApiError);

/// The client's own 503, detail and `Retry-After` as they are: not through `ErrorCode`, which
/// would hide a server error's detail behind the generic one.
impl From<Unreachable> for ApiError {
    fn from(err: Unreachable) -> Self {
        err.0
    }
}

#[derive(Clone)]
pub struct ConcertClient {
    client: common::client::ServiceClient,
}

impl ConcertClient {
    /// `token`: the service credential concert-api's `/internal/**` requires
    /// (`INTERNAL_API_TOKEN`), sent as `X-Internal-Token`.
    pub fn new(
        base: &str,
        timeout: std::time::Duration,
        token: &common::config::Secret<String>,
    ) -> Self {
        Self {
            client: common::client::ServiceClient::new(
                base,
                timeout,
                "reservations cannot be checked right now; nothing was charged",
            )
            .with_internal_token(token),
        }
    }

    /// The reservation, `None` if concert-api does not know it.
    pub async fn reservation(&self, id: i64) -> Result<Option<RemoteReservation>, Unreachable> {
        self.client
            .get_json(&format!("/internal/reservations/{id}"))
            .await
            .map_err(Unreachable)
    }

    /// Settles a payment through concert-api, bypassing the broker: `event` is the
    /// `payment.completed` envelope, with the same id as the one in the outbox. Safe to repeat.
    pub async fn settle(
        &self,
        event: &Envelope<PaymentCompleted>,
    ) -> Result<RemoteVerdict, Unreachable> {
        self.client
            .post_json("/internal/settlements", event)
            .await
            .map_err(Unreachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_once_and_an_unknown_one_keeps_its_name() {
        let read = |s: &str| serde_json::from_value::<RemoteStatus>(serde_json::json!(s)).unwrap();
        assert_eq!(read("HELD"), RemoteStatus::Held);
        assert_eq!(read("CONFIRMED"), RemoteStatus::Confirmed);
        assert_eq!(read("CANCELLED").describe(), "cancelled");
        assert_eq!(read("ON_HOLD"), RemoteStatus::Other("ON_HOLD".into()));
        assert_eq!(read("ON_HOLD").describe(), "on_hold");
    }
}
