//! Events concert-api consumes: `payment.completed` settles the reservation — CONFIRMED (and
//! `reservation.confirmed`) or `reservation.rejected` — exactly once per event (inbox).

use common::events::PaymentCompleted;
use common::inbox;
use common::kafka::{Envelope, EventHandler, HandlerError, Incoming};
use sea_orm::{DatabaseConnection, TransactionTrait};

use crate::store::reservations::{Settlement, settle};

pub const CONSUMER: &str = "concert-api.settle-payment";

pub struct SettleOnPayment {
    pub db: DatabaseConnection,
}

impl EventHandler for SettleOnPayment {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let event: Envelope<PaymentCompleted> = msg.decode()?;
        let txn = self.db.begin().await?;
        if !inbox::record(&txn, event.id, CONSUMER).await? {
            return Ok(());
        }
        let outcome = settle(&txn, &event.data).await?;
        txn.commit().await?;
        match &outcome {
            Settlement::Rejected(reason) => tracing::warn!(
                reservation_id = event.data.reservation_id,
                payment_id = event.data.payment_id,
                %reason,
                "payment rejected; payment-api will refund"
            ),
            other => {
                tracing::info!(reservation_id = event.data.reservation_id, outcome = ?other, "payment settled")
            }
        }
        Ok(())
    }
}
