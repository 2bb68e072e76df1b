//! Events users-api consumes: `reservation.confirmed` retires the buyer's queue token, so
//! the next person in line gets the slot.

use std::collections::BTreeMap;

use common::events::ReservationConfirmed;
use common::kafka::{Envelope, EventHandler, HandlerError, Incoming};

use sea_orm::prelude::Uuid;

use crate::domain::queue::{Retired, WaitingRoom};

pub struct RetireOnPurchase {
    pub room: WaitingRoom,
}

/// Redis down: waited out, never dead-lettered (the token would stay ACTIVE, its slot taken
/// from the line, until it expired).
fn redis_failed(e: redis::RedisError) -> HandlerError {
    if common::redis::is_unavailable(&e) {
        HandlerError::Unavailable(format!("redis: {e}"))
    } else {
        HandlerError::Retryable(format!("redis: {e}"))
    }
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
            .map_err(redis_failed)?;
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

    /// A sale's purchases arrive some twenty to a fetch: one script a concert retires them.
    const BATCH_LIMIT: usize = 256;

    fn batches(&self, _msg: &Incoming) -> bool {
        true
    }

    /// Each concert's purchases in one script, each at most once as in [`handle`]: if a
    /// later concert's script fails, the earlier ones are seen before when the consumer
    /// handles the messages again one at a time.
    async fn handle_batch(&self, msgs: &[Incoming]) -> Result<(), HandlerError> {
        let mut by_concert: BTreeMap<i64, Vec<(Uuid, i64)>> = BTreeMap::new();
        for msg in msgs {
            let event: Envelope<ReservationConfirmed> = msg.decode()?;
            by_concert
                .entry(event.data.concert_id)
                .or_default()
                .push((event.id, event.data.user_id));
        }
        for (concert_id, purchases) in by_concert {
            let retired = self
                .room
                .retire_each(concert_id, &purchases)
                .await
                .map_err(redis_failed)?;
            let count = |what: Retired| retired.iter().filter(|r| **r == what).count();
            tracing::info!(
                concert_id,
                tokens_removed = count(Retired::Token),
                no_active_token = count(Retired::NoActiveToken),
                seen_before = count(Retired::SeenBefore),
                "queue tokens retired after purchases"
            );
        }
        Ok(())
    }
}
