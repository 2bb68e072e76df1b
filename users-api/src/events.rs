//! Events users-api consumes: `reservation.confirmed` retires the buyer's queue token, so
//! the next person in line gets the slot.

use common::events::ReservationConfirmed;
use common::kafka::{Envelope, EventHandler, HandlerError, Incoming};

use crate::domain::queue::{Retired, WaitingRoom};

pub struct RetireOnPurchase {
    pub room: WaitingRoom,
}

impl EventHandler for RetireOnPurchase {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let event: Envelope<ReservationConfirmed> = msg.decode()?;
        // At most once per event, recorded in the same Redis script as the retirement (its
        // inbox): a redelivery cannot retire a token the buyer was given since, and no
        // database transaction is needed around a Redis effect.
        let retired = self
            .room
            .retire(event.id, event.data.user_id, event.data.concert_id)
            .await
            .map_err(|e| {
                // Redis down: waited out, never dead-lettered (the token would stay ACTIVE,
                // its slot taken from the line, until it expired).
                if common::redis::is_unavailable(&e) {
                    HandlerError::Unavailable(format!("redis: {e}"))
                } else {
                    HandlerError::Retryable(format!("redis: {e}"))
                }
            })?;
        if retired != Retired::SeenBefore {
            tracing::info!(
                user_id = event.data.user_id,
                concert_id = event.data.concert_id,
                token_removed = retired == Retired::Token,
                "queue token retired after purchase"
            );
        }
        Ok(())
    }
}
