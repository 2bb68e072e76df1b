//! Events payment-api consumes: `reservation.rejected` refunds the payment (once — also when
//! reconciliation's direct settlement got the rejection first, under the same event id);
//! `reservation.confirmed` records that the payment bought its seats (bookkeeping that
//! spares reconciliation from asking about it).

use common::events::{
    RESERVATION_CONFIRMED, RESERVATION_REJECTED, ReservationConfirmed, ReservationRejected,
};
use common::inbox;
use common::kafka::{Envelope, EventHandler, HandlerError, Incoming};
use sea_orm::DatabaseConnection;

use crate::domain::settle::refund_rejected;
use crate::store::payments;

/// The inbox's consumer name for both events, also used by the direct settlement.
pub const CONSUMER: &str = "payment-api.settlement";

pub struct SettlementEvents {
    pub db: DatabaseConnection,
}

impl EventHandler for SettlementEvents {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        match msg.topic.as_str() {
            RESERVATION_REJECTED => {
                let event: Envelope<ReservationRejected> = msg.decode()?;
                let Some(refunded) =
                    refund_rejected(&self.db, Some(event.id), event.data.payment_id).await?
                else {
                    return Ok(());
                };
                tracing::info!(
                    payment_id = event.data.payment_id,
                    reason = %event.data.reason,
                    refunded,
                    "reservation rejected"
                );
            }
            RESERVATION_CONFIRMED => {
                let event: Envelope<ReservationConfirmed> = msg.decode()?;
                inbox::once(&self.db, event.id, CONSUMER, async |txn| {
                    payments::mark_confirmed(txn, event.data.payment_id).await
                })
                .await?;
            }
            other => {
                return Err(HandlerError::Poison(format!(
                    "payment-api does not consume {other}"
                )));
            }
        }
        Ok(())
    }
}
