//! Events users-api consumes: `reservation.confirmed` retires the buyer's queue token, so
//! the next person in line gets the slot.

use common::events::ReservationConfirmed;
use common::inbox;
use common::kafka::{Envelope, EventHandler, HandlerError, Incoming};
use sea_orm::DatabaseConnection;

use crate::domain::queue::WaitingRoom;

pub const CONSUMER: &str = "users-api.retire-token";

pub struct RetireOnPurchase {
    pub db: DatabaseConnection,
    pub room: WaitingRoom,
}

impl EventHandler for RetireOnPurchase {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let event: Envelope<ReservationConfirmed> = msg.decode()?;
        // Retiring is idempotent, so if the commit fails after it and the event comes again,
        // doing it twice is harmless.
        let Some(retired) = inbox::once(&self.db, event.id, CONSUMER, async |_txn| {
            self.room
                .retire(event.data.user_id, event.data.concert_id)
                .await
                .map_err(|e| {
                    // Redis down: waited out, never dead-lettered (the token would stay
                    // ACTIVE, its slot taken from the line, until it expired).
                    if common::redis::is_unavailable(&e) {
                        HandlerError::Unavailable(format!("redis: {e}"))
                    } else {
                        HandlerError::Retryable(format!("redis: {e}"))
                    }
                })
        })
        .await?
        else {
            return Ok(());
        };
        tracing::info!(
            user_id = event.data.user_id,
            concert_id = event.data.concert_id,
            retired,
            "queue token retired after purchase"
        );
        Ok(())
    }
}
