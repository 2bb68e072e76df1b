//! Settling a payment (DESIGN §2 step 8): the one path for a `payment.completed` event,
//! whether the broker delivered it or payment-api brought it over HTTP because the broker
//! did not (DESIGN §6, the broker-independent backstop).
//!
//! Both record the event in the same inbox under the same consumer name, in the same
//! transaction as the settlement, so whichever comes first has the effect and the other is a
//! duplicate. A duplicate still gets the verdict, read back from what the first one left: the
//! reservation CONFIRMED by this payment, or else the `reservation.rejected` written for it.

use common::ApiError;
use common::events::{PAYMENT_COMPLETED, PaymentCompleted};
use common::inbox;
use common::kafka::Envelope;
use sea_orm::prelude::Uuid;
use sea_orm::{DatabaseConnection, DbErr};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::events::CONSUMER;
use crate::store::reservations::{self, Settlement};
use crate::store::settlements;

/// How a payment was settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "verdict", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// The reservation is CONFIRMED by this payment and its seats SOLD.
    Confirmed,
    /// The payment bought nothing; payment-api must refund it.
    Rejected {
        /// e.g. `RESERVATION_EXPIRED`, `SEATS_NO_LONGER_HELD`, `PAID_AFTER_HOLD_EXPIRED`.
        reason: String,
        /// The `reservation.rejected` event written for it: payment-api records this id in
        /// its inbox when it refunds, so the event arriving later through the broker is a
        /// duplicate. Absent only if that event has been cleaned out of the outbox (a week).
        rejection_event_id: Option<Uuid>,
    },
}

/// A verdict, and whether this call gave it (`false`: the event had been handled before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub verdict: Verdict,
    pub first: bool,
}

/// A `payment.completed` event as payment-api sends it directly: it must say what it is.
pub fn check_event(event: &Envelope<PaymentCompleted>) -> Result<(), ApiError> {
    if event.kind != PAYMENT_COMPLETED {
        return Err(ApiError::invalid_field(
            "type",
            format!("must be {PAYMENT_COMPLETED}"),
        ));
    }
    if event.version != 1 {
        return Err(ApiError::invalid_field("version", "must be 1"));
    }
    Ok(())
}

/// Settles the payment `event` announces, at most once per event id (the consumer's inbox),
/// and answers the verdict either way.
pub async fn settle_payment(
    db: &DatabaseConnection,
    event: &Envelope<PaymentCompleted>,
) -> Result<Settled, DbErr> {
    let payment = &event.data;
    // A concurrent settlement of the same event waits on the inbox row until the first
    // commits, and then reads its outcome.
    let first = inbox::once(db, event.id, CONSUMER, async |txn| {
        Ok::<_, DbErr>(match reservations::settle(txn, payment).await? {
            Settlement::Confirmed | Settlement::AlreadyConfirmed => Verdict::Confirmed,
            Settlement::Rejected(reason) => Verdict::Rejected {
                rejection_event_id: settlements::written_now(
                    txn,
                    payment.reservation_id,
                    payment.payment_id,
                )
                .await?
                .map(|r| r.event_id),
                reason,
            },
        })
    })
    .await?;
    Ok(match first {
        Some(verdict) => Settled {
            verdict,
            first: true,
        },
        None => Settled {
            verdict: recorded_verdict(db, payment).await?,
            first: false,
        },
    })
}

/// The verdict an earlier settlement of this payment gave. Settling either confirms the
/// reservation with this payment (which nothing undoes) or rejects the payment, so anything
/// but CONFIRMED-by-this-payment is a rejection.
async fn recorded_verdict(
    db: &DatabaseConnection,
    payment: &PaymentCompleted,
) -> Result<Verdict, DbErr> {
    let reservation = reservations::find(db, payment.reservation_id).await?;
    if let Some(r) = &reservation
        && r.status == "CONFIRMED"
        && r.payment_id == Some(payment.payment_id)
    {
        return Ok(Verdict::Confirmed);
    }
    Ok(
        match settlements::first_for(db, payment.reservation_id, payment.payment_id).await? {
            Some(r) => Verdict::Rejected {
                reason: r.reason,
                rejection_event_id: Some(r.event_id),
            },
            None => Verdict::Rejected {
                reason: reservation.map_or_else(
                    || "UNKNOWN_RESERVATION".to_owned(),
                    |r| format!("RESERVATION_{}", r.status),
                ),
                rejection_event_id: None,
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, version: u32) -> Envelope<PaymentCompleted> {
        let mut e = Envelope::new(
            kind,
            PaymentCompleted {
                payment_id: 1,
                reservation_id: 2,
                user_id: 3,
                amount: 1000,
                paid_at: chrono::Utc::now(),
            },
            chrono::Utc::now(),
        );
        e.version = version;
        e
    }

    #[test]
    fn only_a_payment_completed_event_of_version_1_is_settled() {
        assert!(check_event(&event(PAYMENT_COMPLETED, 1)).is_ok());
        let wrong_type = check_event(&event("payment.refunded", 1)).unwrap_err();
        assert!(
            wrong_type.detail().contains("type"),
            "{}",
            wrong_type.detail()
        );
        let wrong_version = check_event(&event(PAYMENT_COMPLETED, 2)).unwrap_err();
        assert!(wrong_version.detail().contains("version"));
    }

    #[test]
    fn verdicts_read_as_the_contract_says() {
        assert_eq!(
            serde_json::to_value(Verdict::Confirmed).unwrap(),
            serde_json::json!({"verdict": "CONFIRMED"})
        );
        let id = Uuid::nil();
        assert_eq!(
            serde_json::to_value(Verdict::Rejected {
                reason: "RESERVATION_EXPIRED".into(),
                rejection_event_id: Some(id),
            })
            .unwrap(),
            serde_json::json!({"verdict": "REJECTED", "reason": "RESERVATION_EXPIRED", "rejection_event_id": id})
        );
    }
}
