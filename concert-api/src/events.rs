//! concert-api's events (DESIGN §6). It consumes `payment.completed`, which settles the
//! reservation — CONFIRMED (and `reservation.confirmed`) or `reservation.rejected` — exactly
//! once per event (inbox); the settlement itself is `domain::settlement`, shared with the
//! direct HTTP path. It publishes the `reservation.*` events built here, each keyed by its
//! reservation and written to the outbox in the transaction of the change it announces.

use chrono::{DateTime, Utc};
use common::clock::Clock;
use common::events::{
    PaymentCompleted, RESERVATION_CONFIRMED, RESERVATION_EXPIRED, RESERVATION_REJECTED,
    ReservationConfirmed, ReservationExpired, ReservationRejected,
};
use common::kafka::{Envelope, EventHandler, HandlerError, Incoming};
use common::outbox;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use serde::Serialize;

use crate::domain::reservation::Reservation;
use crate::domain::settlement::{
    Rejection, Settled, Verdict, settle_each_at_once, settle_in_transaction, settle_payment,
};
use crate::metrics::{SaleMetrics, SettledBy};
use crate::store::confirmed::ConfirmedReservations;
use crate::store::inventory::Inventory;

/// The inbox's consumer name for settlements, whichever way the event came.
pub const CONSUMER: &str = "concert-api.settle-payment";

/// An event concert-api publishes: its topic, the reservation it is keyed by, the envelope.
#[derive(Debug, Clone)]
pub struct Outgoing<T> {
    topic: &'static str,
    reservation_id: i64,
    envelope: Envelope<T>,
}

impl<T> Outgoing<T> {
    /// Event `topic` about `reservation_id`, carrying `data`, dated `at`.
    fn new(topic: &'static str, reservation_id: i64, data: T, at: DateTime<Utc>) -> Self {
        Self {
            topic,
            reservation_id,
            envelope: Envelope::new(topic, data, at),
        }
    }
}

impl<T: Serialize> Outgoing<T> {
    /// Writes the event to the outbox inside the caller's transaction.
    pub async fn enqueue<C: ConnectionTrait>(&self, txn: &C) -> Result<(), DbErr> {
        outbox::enqueue(
            txn,
            self.topic,
            &self.reservation_id.to_string(),
            &self.envelope,
        )
        .await
    }

    /// The event's outbox row, for a statement that writes it itself (`outbox::ROW_COLUMNS`).
    pub fn row(&self) -> Result<[sea_orm::Value; 5], DbErr> {
        outbox::row(self.topic, &self.reservation_id.to_string(), &self.envelope)
    }

    /// The event's id, key and JSON, for a statement that writes several events of its topic
    /// from arrays.
    pub fn parts(&self) -> Result<(sea_orm::prelude::Uuid, String, String), DbErr> {
        let json = serde_json::to_string(&self.envelope)
            .map_err(|e| DbErr::Custom(format!("event encoding: {e}")))?;
        Ok((self.envelope.id, self.reservation_id.to_string(), json))
    }
}

/// Reservation `r` was bought with `payment_id`: its seats are SOLD.
pub fn reservation_confirmed(
    r: &Reservation,
    payment_id: i64,
    at: DateTime<Utc>,
) -> Outgoing<ReservationConfirmed> {
    let data = ReservationConfirmed {
        reservation_id: r.id,
        payment_id,
        user_id: r.user_id,
        concert_id: r.concert_id,
        schedule_id: r.schedule_id,
        seat_nos: r.seat_nos.clone(),
    };
    Outgoing::new(RESERVATION_CONFIRMED, r.id, data, at)
}

/// `reservation.confirmed` for `payment` as far as the payment tells it, for
/// [`crate::store::settlement::sell_each_at_once`], which sets what only the reservation knows
/// (`concert_id`, `schedule_id`, `seat_nos`) in the row it writes.
pub fn reservation_confirmed_by(
    payment: &PaymentCompleted,
    at: DateTime<Utc>,
) -> Outgoing<ReservationConfirmed> {
    let data = ReservationConfirmed {
        reservation_id: payment.reservation_id,
        payment_id: payment.payment_id,
        user_id: payment.user_id,
        concert_id: 0,
        schedule_id: 0,
        seat_nos: Vec::new(),
    };
    Outgoing::new(RESERVATION_CONFIRMED, payment.reservation_id, data, at)
}

/// `payment` bought nothing, for `why`: payment-api refunds it.
pub fn reservation_rejected(
    payment: &PaymentCompleted,
    why: Rejection,
    at: DateTime<Utc>,
) -> Outgoing<ReservationRejected> {
    let data = ReservationRejected {
        reservation_id: payment.reservation_id,
        payment_id: payment.payment_id,
        user_id: payment.user_id,
        reason: why.to_string(),
    };
    Outgoing::new(RESERVATION_REJECTED, payment.reservation_id, data, at)
}

/// The hold `reservation_id` of `user_id` died unpaid: by the sweep, or taken over.
pub fn reservation_expired(
    reservation_id: i64,
    user_id: i64,
    at: DateTime<Utc>,
) -> Outgoing<ReservationExpired> {
    Outgoing::new(
        RESERVATION_EXPIRED,
        reservation_id,
        ReservationExpired {
            reservation_id,
            user_id,
        },
        at,
    )
}

/// Settles every `payment.completed` the broker brings.
pub struct SettleOnPayment {
    pub db: DatabaseConnection,
    pub inventory: Inventory,
    pub confirmations: ConfirmedReservations,
    pub clock: Clock,
    pub sale: std::sync::Arc<SaleMetrics>,
}

impl EventHandler for SettleOnPayment {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let event: Envelope<PaymentCompleted> = msg.decode()?;
        self.settle(&event, self.clock.now()).await
    }

    /// What waits in line when a settlement is done (a sale brings a payment every few
    /// milliseconds) is settled together: the common case of all of them in one statement,
    /// then any other case one at a time.
    const BATCH_LIMIT: usize = 64;

    fn batches(&self, _msg: &Incoming) -> bool {
        true
    }

    async fn handle_batch(&self, msgs: &[Incoming]) -> Result<(), HandlerError> {
        let events = msgs
            .iter()
            .map(Incoming::decode)
            .collect::<Result<Vec<Envelope<PaymentCompleted>>, _>>()?;
        let now = self.clock.now();
        let settled =
            settle_each_at_once(&self.db, &self.inventory, &self.confirmations, &events, now)
                .await?;
        let mut at_once = 0;
        for (event, settled) in events.iter().zip(settled) {
            match settled {
                Some(settled) => {
                    self.sale.settled(&settled, event, SettledBy::Event, now);
                    at_once += 1;
                }
                None => {
                    let settled =
                        settle_in_transaction(&self.db, &self.inventory, event, now).await?;
                    self.settled(event, &settled, now);
                }
            }
        }
        tracing::info!(payments = events.len(), at_once, "payments settled");
        Ok(())
    }
}

impl SettleOnPayment {
    /// Settles the payment `event` announced on its own (every case).
    async fn settle(
        &self,
        event: &Envelope<PaymentCompleted>,
        now: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let settled =
            settle_payment(&self.db, &self.inventory, &self.confirmations, event, now).await?;
        self.settled(event, &settled, now);
        Ok(())
    }

    /// Counts and logs how a payment was settled.
    fn settled(&self, event: &Envelope<PaymentCompleted>, settled: &Settled, now: DateTime<Utc>) {
        self.sale.settled(settled, event, SettledBy::Event, now);
        if !settled.first {
            tracing::debug!(event_id = %event.id, "payment already settled");
            return;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any instant will do: these rules only compare times.
    fn instant() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn rejections_are_keyed_by_reservation_and_carry_the_reason() {
        let payment = PaymentCompleted {
            payment_id: 5,
            reservation_id: 9,
            user_id: 3,
            amount: 1000,
            paid_at: instant(),
        };
        let at = instant();
        let e = reservation_rejected(&payment, Rejection::PayerIsNotHolder, at);
        assert_eq!((e.topic, e.reservation_id), (RESERVATION_REJECTED, 9));
        assert_eq!(e.envelope.kind, RESERVATION_REJECTED);
        assert_eq!(e.envelope.occurred_at, at);
        assert_eq!(
            e.envelope.data.reason,
            Rejection::PayerIsNotHolder.to_string()
        );
    }
}
