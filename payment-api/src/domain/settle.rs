//! Settling a payment's fate with concert-api: the `payment.completed` event with its one
//! stable id, the broker-independent backstop (DESIGN §6) that brings that event over HTTP
//! when the broker has not delivered it, the refund a rejection earns (whichever way the
//! rejection came), and the count of payments still unsettled, by age.
//!
//! The event id is derived from the payment, so the first publication, every re-publication
//! and the direct call are one event to concert-api's inbox; and a rejection answered over
//! HTTP is recorded in this service's inbox under the id of the `reservation.rejected` event
//! concert-api wrote, so when that event arrives through the broker it is a duplicate.

use chrono::{DateTime, Utc};
use common::ApiError;
use common::events::{PAYMENT_COMPLETED, PaymentCompleted};
use common::inbox;
use common::kafka::Envelope;
use sea_orm::prelude::Uuid;
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::concerts::{ConcertClient, RemoteVerdict};
use crate::events::CONSUMER;
use crate::store::payments::{self, PaymentRow};
use crate::store::reconciliation;

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

/// A payment's `payment.completed` event, identical however often it is built.
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

/// Refunds a payment concert-api rejected: once per rejection event (recorded in the
/// `reservation.rejected` consumer's inbox when its id is known) and at most once per payment
/// whatever the events (`refund`). `None`: this rejection event was handled before.
pub async fn refund_rejected(
    db: &DatabaseConnection,
    rejection_event_id: Option<Uuid>,
    payment_id: i64,
) -> Result<Option<bool>, DbErr> {
    match rejection_event_id {
        Some(id) => {
            inbox::once(db, id, CONSUMER, async |txn| {
                super::refund(txn, payment_id).await
            })
            .await
        }
        None => {
            let txn = db.begin().await?;
            let refunded = super::refund(&txn, payment_id).await?;
            txn.commit().await?;
            Ok(Some(refunded))
        }
    }
}

/// How a direct settlement ended for payment-api.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectOutcome {
    /// concert-api confirmed the seat; the bookkeeping now says so.
    Confirmed,
    /// concert-api rejected the payment; `refunded` is whether this call gave the money back
    /// (`false`: the refund had already happened).
    Rejected { refunded: bool },
}

/// Settles `p` through concert-api's internal endpoint, bypassing the broker, and applies the
/// verdict here: confirmed → bookkeeping; rejected → refund. Repeating it changes nothing.
/// No transaction is open during the call.
pub async fn settle_directly(
    db: &DatabaseConnection,
    concerts: &ConcertClient,
    p: &PaymentRow,
) -> Result<DirectOutcome, ApiError> {
    let event = completed_event(p);
    match concerts.settle(&event).await? {
        RemoteVerdict::Confirmed => {
            payments::mark_confirmed(db, p.id).await?;
            tracing::info!(payment_id = p.id, event_id = %event.id, "settled directly: confirmed");
            Ok(DirectOutcome::Confirmed)
        }
        RemoteVerdict::Rejected {
            reason,
            rejection_event_id,
        } => {
            let refunded = refund_rejected(db, rejection_event_id, p.id)
                .await?
                .unwrap_or(false);
            tracing::warn!(payment_id = p.id, %reason, refunded, "settled directly: rejected");
            Ok(DirectOutcome::Rejected { refunded })
        }
    }
}

/// The ages the unsettled-payment gauge reports, in seconds: past re-publishing's default,
/// past direct settlement's default, and well past anything the backstop should allow.
pub const UNSETTLED_AGES: [u64; 3] = [30, 120, 600];

/// Unsettled payments (COMPLETED, never seen confirmed) older than each of [`UNSETTLED_AGES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsettledByAge(pub [i64; 3]);

impl UnsettledByAge {
    /// Counted at `now`.
    pub async fn at(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<Self, DbErr> {
        let cutoffs = UNSETTLED_AGES.map(|secs| now - chrono::Duration::seconds(secs as i64));
        reconciliation::unsettled_before(db, cutoffs)
            .await
            .map(Self)
    }

    /// `(age in seconds, payments older than it)`, youngest age first.
    pub fn by_age(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        UNSETTLED_AGES.into_iter().zip(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            status: "COMPLETED".into(),
            created_at: Utc::now(),
        };
        let (a, b) = (completed_event(&p), completed_event(&p));
        assert_eq!(a, b);
        assert_eq!(a.id, completed_event_id(7));
        assert_eq!(a.data.paid_at, p.created_at);
    }
}
