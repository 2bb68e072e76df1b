//! Events concert-api consumes: `payment.completed` settles the reservation — CONFIRMED (and
//! `reservation.confirmed`) or `reservation.rejected` — exactly once per event (inbox). The
//! settlement itself is `domain::settlement`, shared with the direct HTTP path.

use common::events::PaymentCompleted;
use common::kafka::{Envelope, EventHandler, HandlerError, Incoming};
use sea_orm::DatabaseConnection;

use crate::domain::settlement::{Verdict, settle_payment};

/// The inbox's consumer name for settlements, whichever way the event came.
pub const CONSUMER: &str = "concert-api.settle-payment";

pub struct SettleOnPayment {
    pub db: DatabaseConnection,
}

impl EventHandler for SettleOnPayment {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let event: Envelope<PaymentCompleted> = msg.decode()?;
        let settled = settle_payment(&self.db, &event).await?;
        if !settled.first {
            tracing::debug!(event_id = %event.id, "payment already settled");
            return Ok(());
        }
        match &settled.verdict {
            Verdict::Rejected { reason, .. } => tracing::warn!(
                reservation_id = event.data.reservation_id,
                payment_id = event.data.payment_id,
                %reason,
                "payment rejected; payment-api will refund"
            ),
            Verdict::Confirmed => {
                tracing::info!(
                    reservation_id = event.data.reservation_id,
                    "payment settled"
                )
            }
        }
        Ok(())
    }
}
