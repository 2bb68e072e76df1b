//! The events of payment-api. Published: `payment.completed` (one stable id per payment) and
//! `payment.refunded`, each written to the outbox in the transaction of the change. Consumed:
//! `reservation.rejected` refunds the payment (once — also when reconciliation's direct
//! settlement got the rejection first, under the same event id); `reservation.confirmed`
//! records that the payment bought its seats (bookkeeping that spares reconciliation from
//! asking about it).
//!
//! The `payment.completed` id is derived from the payment, so the first publication, every
//! re-publication and the direct call are one event to concert-api's inbox.

use chrono::{DateTime, Utc};
use common::clock::Clock;
use common::events::{
    PAYMENT_COMPLETED, PAYMENT_REFUNDED, PaymentCompleted, PaymentRefunded, RESERVATION_CONFIRMED,
    RESERVATION_REJECTED, ReservationConfirmed, ReservationRejected,
};
use common::kafka::{Envelope, EventHandler, HandlerError, Incoming};
use common::outbox;
use sea_orm::prelude::Uuid;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::domain::settle::refund_rejected;
use crate::store::payments::{self, PaymentRow};

/// The inbox's consumer name for both events, also used by the direct settlement.
pub const CONSUMER: &str = "payment-api.settlement";

/// The high half of every `payment.completed` event id: "paymen" in ASCII, then UUID version
/// 8 (RFC 9562's custom layout) and `001` for this event kind.
const COMPLETED_ID_HIGH: u64 = 0x7061_796d_656e_8001;
/// RFC 9562 variant bits; the other 62 bits of the low half are the payment id.
const VARIANT: u64 = 0x8000_0000_0000_0000;
const PAYMENT_ID_BITS: u64 = 0x3fff_ffff_ffff_ffff;

/// The id of a payment's `payment.completed` event: the same every time it is written or
/// sent, and different for every payment (ids stay far below 2^62).
pub fn completed_event_id(payment_id: i64) -> Uuid {
    Uuid::from_u64_pair(
        COMPLETED_ID_HIGH,
        VARIANT | (payment_id as u64 & PAYMENT_ID_BITS),
    )
}

/// [`completed_event_id`] as the database computes it for a payment it has just numbered
/// (`pay_at_once`): the high half in hex, and the low half's bits above the payment id, so
/// that the id is `high || hex(low | payment_id)`.
pub fn completed_event_id_parts() -> (String, i64) {
    (format!("{COMPLETED_ID_HIGH:016x}"), VARIANT as i64)
}

/// A payment's `payment.completed` event, identical however often it is built: it occurred
/// when the payment was made.
pub fn completed_event(p: &PaymentRow) -> Envelope<PaymentCompleted> {
    let mut event = Envelope::new(
        PAYMENT_COMPLETED,
        PaymentCompleted {
            payment_id: p.id,
            reservation_id: p.reservation_id,
            user_id: p.user_id,
            amount: p.amount,
            paid_at: p.created_at,
        },
        p.created_at,
    );
    event.id = completed_event_id(p.id);
    event
}

/// Writes `payment.completed` for a payment to the outbox. Its id is the payment's own, so
/// to re-publish, first clear the earlier row (`store::reconciliation::clear_published`).
pub async fn publish_completed<C: ConnectionTrait>(txn: &C, p: &PaymentRow) -> Result<(), DbErr> {
    outbox::enqueue(
        txn,
        PAYMENT_COMPLETED,
        &p.reservation_id.to_string(),
        &completed_event(p),
    )
    .await
}

/// Writes `payment.refunded` for a payment refunded at `now` to the outbox.
pub async fn publish_refunded<C: ConnectionTrait>(
    txn: &C,
    p: &PaymentRow,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let event = Envelope::new(
        PAYMENT_REFUNDED,
        PaymentRefunded {
            payment_id: p.id,
            reservation_id: p.reservation_id,
            user_id: p.user_id,
            amount: p.amount,
        },
        now,
    );
    outbox::enqueue(txn, PAYMENT_REFUNDED, &p.reservation_id.to_string(), &event).await
}

/// The settlement consumer: what concert-api decided about a payment.
pub struct SettlementEvents {
    pub db: DatabaseConnection,
    pub clock: Clock,
    pub money: std::sync::Arc<crate::metrics::MoneyMetrics>,
}

impl EventHandler for SettlementEvents {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        match msg.topic.as_str() {
            RESERVATION_REJECTED => {
                let event: Envelope<ReservationRejected> = msg.decode()?;
                let now = self.clock.now();
                let Some(refunded) =
                    refund_rejected(&self.db, Some(event.id), event.data.payment_id, now).await?
                else {
                    return Ok(());
                };
                if refunded {
                    self.money.refunded();
                }
                tracing::info!(
                    payment_id = event.data.payment_id,
                    reason = %event.data.reason,
                    refunded,
                    "reservation rejected"
                );
            }
            RESERVATION_CONFIRMED => {
                let event: Envelope<ReservationConfirmed> = msg.decode()?;
                let now = self.clock.now();
                payments::mark_confirmed_once(
                    &self.db,
                    event.id,
                    CONSUMER,
                    event.data.payment_id,
                    now,
                )
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

    /// A sale's confirmations arrive some twenty to a fetch: one statement records them all.
    const BATCH_LIMIT: usize = 256;

    fn batches(&self, msg: &Incoming) -> bool {
        msg.topic == RESERVATION_CONFIRMED
    }

    async fn handle_batch(&self, msgs: &[Incoming]) -> Result<(), HandlerError> {
        let confirmations = msgs
            .iter()
            .map(|m| {
                let event: Envelope<ReservationConfirmed> = m.decode()?;
                Ok((event.id, event.data.payment_id))
            })
            .collect::<Result<Vec<_>, HandlerError>>()?;
        payments::mark_each_confirmed_once(&self.db, CONSUMER, &confirmations, self.clock.now())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::payments::PaymentStatus;

    #[test]
    fn a_payment_has_one_event_id_of_its_own() {
        assert_eq!(completed_event_id(42), completed_event_id(42));
        assert_ne!(completed_event_id(42), completed_event_id(43));
        let id = completed_event_id(42);
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(id.as_bytes()[8] >> 6, 0b10, "RFC 9562 variant");
        assert_eq!(id.as_u64_pair().1 & PAYMENT_ID_BITS, 42);
    }

    #[test]
    fn the_event_is_the_same_however_often_it_is_built() {
        let p = PaymentRow {
            id: 7,
            user_id: 3,
            reservation_id: 11,
            amount: 1000,
            status: PaymentStatus::Completed,
            created_at: Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap(),
        };
        let (a, b) = (completed_event(&p), completed_event(&p));
        assert_eq!(a, b);
        assert_eq!(a.id, completed_event_id(7));
        assert_eq!(a.data.paid_at, p.created_at);
        assert_eq!(a.occurred_at, p.created_at);
    }
}
