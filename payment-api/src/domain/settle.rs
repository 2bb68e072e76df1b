//! Settling a payment's fate with concert-api: the broker-independent backstop (DESIGN §6)
//! that brings `payment.completed` over HTTP when the broker has not delivered it, the refund
//! a rejection earns (whichever way the rejection came), and the count of payments still
//! unsettled, by age.
//!
//! The event sent directly is the one in the outbox, same id (`events::completed_event`); and
//! a rejection answered over HTTP is recorded in this service's inbox under the id of the
//! `reservation.rejected` event concert-api wrote, so when that event arrives through the
//! broker it is a duplicate.

use chrono::{DateTime, Utc};
use common::inbox;
use sea_orm::prelude::Uuid;
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::concerts::{ConcertClient, RemoteVerdict, Unreachable};
use crate::domain::payment::refund;
use crate::events::{CONSUMER, completed_event};
use crate::store::payments::{self, PaymentRow};
use crate::store::reconciliation;

/// Refunds a payment concert-api rejected: once per rejection event (recorded in the
/// `reservation.rejected` consumer's inbox when its id is known) and at most once per payment
/// whatever the events (`refund`). `None`: this rejection event was handled before.
pub async fn refund_rejected(
    db: &DatabaseConnection,
    rejection_event_id: Option<Uuid>,
    payment_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<bool>, DbErr> {
    match rejection_event_id {
        Some(id) => {
            inbox::once(db, id, CONSUMER, async |txn| {
                refund(txn, payment_id, now).await
            })
            .await
        }
        None => {
            let txn = db.begin().await?;
            let refunded = refund(&txn, payment_id, now).await?;
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

/// Why a direct settlement did not happen this time; the next pass tries again.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    #[error("payment database: {0}")]
    Db(#[from] DbErr),
}

/// Settles `p` through concert-api's internal endpoint at `now`, bypassing the broker, and
/// applies the verdict here: confirmed → bookkeeping; rejected → refund. Repeating it changes
/// nothing. No transaction is open during the call.
pub async fn settle_directly(
    db: &DatabaseConnection,
    concerts: &ConcertClient,
    p: &PaymentRow,
    now: DateTime<Utc>,
) -> Result<DirectOutcome, SettleError> {
    let event = completed_event(p);
    match concerts.settle(&event).await? {
        RemoteVerdict::Confirmed => {
            payments::mark_confirmed(db, p.id, now).await?;
            tracing::info!(payment_id = p.id, event_id = %event.id, "settled directly: confirmed");
            Ok(DirectOutcome::Confirmed)
        }
        RemoteVerdict::Rejected {
            reason,
            rejection_event_id,
        } => {
            let refunded = refund_rejected(db, rejection_event_id, p.id, now)
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
