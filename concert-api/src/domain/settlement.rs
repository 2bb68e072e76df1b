//! Settling a payment (DESIGN §2 step 8): the one path for a `payment.completed` event,
//! whether the broker delivered it or payment-api brought it over HTTP because the broker
//! did not (DESIGN §6, the broker-independent backstop).
//!
//! Both record the event in the same inbox under the same consumer name, in the same
//! transaction as the settlement, so whichever comes first has the effect and the other is a
//! duplicate. A duplicate still gets the verdict, read back from what the first one left: the
//! reservation CONFIRMED by this payment, or else the `reservation.rejected` written for it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use common::ApiError;
use common::events::{PAYMENT_COMPLETED, PaymentCompleted};
use common::inbox;
use common::kafka::Envelope;
use sea_orm::prelude::Uuid;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use serde::{Serialize, Serializer};

use crate::domain::reservation::Reservation;
use crate::domain::status::ReservationStatus;
use crate::events::{self, CONSUMER};
use crate::store::confirmed::ConfirmedReservations;
use crate::store::inventory::{Change, Inventory};
use crate::store::{reservations, settlement};

/// Why a payment bought nothing: the `reason` of `reservation.rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    UnknownReservation,
    /// The reservation was no longer HELD: `RESERVATION_<STATUS>`.
    Reservation(ReservationStatus),
    PayerIsNotHolder,
    PaidAfterHoldExpired,
    /// The hold lost a seat (taken over after it died) before the payment arrived.
    SeatsNoLongerHeld,
}

/// The reasons that name no status.
const FIXED_REASONS: [Rejection; 4] = [
    Rejection::UnknownReservation,
    Rejection::PayerIsNotHolder,
    Rejection::PaidAfterHoldExpired,
    Rejection::SeatsNoLongerHeld,
];
const STATUS_REASON_PREFIX: &str = "RESERVATION_";

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownReservation => f.write_str("UNKNOWN_RESERVATION"),
            Self::Reservation(status) => write!(f, "{STATUS_REASON_PREFIX}{status}"),
            Self::PayerIsNotHolder => f.write_str("PAYER_IS_NOT_HOLDER"),
            Self::PaidAfterHoldExpired => f.write_str("PAID_AFTER_HOLD_EXPIRED"),
            Self::SeatsNoLongerHeld => f.write_str("SEATS_NO_LONGER_HELD"),
        }
    }
}

impl FromStr for Rejection {
    type Err = DbErr;

    /// A reason as written to the outbox.
    fn from_str(reason: &str) -> Result<Self, DbErr> {
        if let Some(status) = reason
            .strip_prefix(STATUS_REASON_PREFIX)
            .and_then(ReservationStatus::from_sql)
        {
            return Ok(Self::Reservation(status));
        }
        FIXED_REASONS
            .into_iter()
            .find(|r| r.to_string() == reason)
            .ok_or_else(|| DbErr::Type(format!("not a rejection reason: {reason:?}")))
    }
}

impl Serialize for Rejection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How a payment was settled: the answer of `POST /internal/settlements`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// The reservation is CONFIRMED by this payment and its seats SOLD.
    Confirmed,
    /// The payment bought nothing; payment-api must refund it.
    Rejected {
        reason: Rejection,
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

/// What to do with a payment for its (locked) reservation, before its seats are looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement<'a> {
    /// HELD by the payer and paid by `held_until`: sell it its seats, if it still owns them.
    Sell(&'a Reservation),
    /// Already CONFIRMED by this very payment (a re-published event): nothing to do.
    AlreadyConfirmed,
    Reject(Rejection),
}

/// Judges `payment` against the reservation it pays for (DESIGN §2 step 8).
pub fn judge<'a>(
    reservation: Option<&'a Reservation>,
    payment: &PaymentCompleted,
) -> Judgement<'a> {
    let Some(r) = reservation else {
        return Judgement::Reject(Rejection::UnknownReservation);
    };
    if r.is_confirmed_by(payment.payment_id) {
        Judgement::AlreadyConfirmed
    } else if r.status != ReservationStatus::Held {
        Judgement::Reject(Rejection::Reservation(r.status))
    } else if r.user_id != payment.user_id {
        Judgement::Reject(Rejection::PayerIsNotHolder)
    } else if payment.paid_at > r.held_until {
        Judgement::Reject(Rejection::PaidAfterHoldExpired)
    } else {
        Judgement::Sell(r)
    }
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
/// and answers the verdict either way. Events it writes are dated `now`.
pub async fn settle_payment(
    db: &DatabaseConnection,
    inventory: &Inventory,
    confirmations: &ConfirmedReservations,
    event: &Envelope<PaymentCompleted>,
    now: DateTime<Utc>,
) -> Result<Settled, DbErr> {
    // The common case, a first delivery that buys its hold, in one statement.
    let at_once = settle_each_at_once(
        db,
        inventory,
        confirmations,
        std::slice::from_ref(event),
        now,
    )
    .await?;
    if let Some(settled) = at_once.into_iter().next().flatten() {
        return Ok(settled);
    }
    settle_in_transaction(db, inventory, event, now).await
}

/// [`settle_payment`] for a payment the common case did not settle (or that it was not tried
/// for): every case, in a transaction. A concurrent settlement of the same event waits on the
/// inbox row until the first commits, and then reads its outcome.
pub async fn settle_in_transaction(
    db: &DatabaseConnection,
    inventory: &Inventory,
    event: &Envelope<PaymentCompleted>,
    now: DateTime<Utc>,
) -> Result<Settled, DbErr> {
    let payment = &event.data;
    let first = inbox::once(db, event.id, CONSUMER, async |txn| {
        let (rejection, change) = settle(txn, payment, now).await?;
        Ok::<_, DbErr>((
            match rejection {
                None => Verdict::Confirmed,
                Some(reason) => Verdict::Rejected {
                    reason,
                    rejection_event_id: settlement::rejection_written_now(
                        txn,
                        payment.reservation_id,
                        payment.payment_id,
                    )
                    .await?
                    .map(|r| r.event_id),
                },
            },
            change,
        ))
    })
    .await?;
    Ok(match first {
        Some((verdict, change)) => {
            // Committed: the seats sold (or freed by the rejection) are counted now.
            if let Some(change) = change {
                inventory.apply(change).await;
            }
            Settled {
                verdict,
                first: true,
            }
        }
        None => Settled {
            verdict: recorded_verdict(db, payment).await?,
            first: false,
        },
    })
}

/// The common case of [`settle_payment`] for several events at once, in one statement
/// ([`settlement::sell_each_at_once`]): answers, in `events`' order, the verdict of each one
/// that bought its hold there (`Some`), and `None` for every other, which changed nothing and
/// must be settled on its own by [`settle_in_transaction`].
pub async fn settle_each_at_once(
    db: &DatabaseConnection,
    inventory: &Inventory,
    confirmations: &ConfirmedReservations,
    events: &[Envelope<PaymentCompleted>],
    now: DateTime<Utc>,
) -> Result<Vec<Option<Settled>>, DbErr> {
    let mut to_sell = Vec::with_capacity(events.len());
    for event in events {
        let (confirmed_id, confirmed_key, confirmed_payload) =
            events::reservation_confirmed_by(&event.data, now).parts()?;
        to_sell.push(settlement::ToSell {
            event_id: event.id,
            payment: &event.data,
            confirmed_id,
            confirmed_key,
            confirmed_payload,
        });
    }
    let sold = settlement::sell_each_at_once(
        db,
        CONSUMER,
        &to_sell,
        common::telemetry::current_traceparent(),
    )
    .await?;
    let mut changes = Vec::with_capacity(sold.len());
    let mut sold: Vec<Option<settlement::SoldAtOnce>> = sold.into_iter().map(Some).collect();
    let verdicts = events
        .iter()
        .map(|event| {
            // Each sale answers one event: a copy of it in the list (the same id) was not first.
            let sale = sold
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|s| s.event_id == event.id))?
                .take()?;
            confirmations.keep(&sale.confirmed(&event.data));
            changes.push(Change::sold(sale.concert_id, sale.schedule_id, sale.sold));
            Some(Settled {
                verdict: Verdict::Confirmed,
                first: true,
            })
        })
        .collect();
    inventory.apply_all(changes).await;
    Ok(verdicts)
}

/// Settles `payment` in the caller's transaction: its reservation CONFIRMED with its seats
/// SOLD (`None`), or the payment rejected (`Some`) with `reservation.rejected` written; and
/// the seats that changed status, for the inventory once committed.
async fn settle<C: ConnectionTrait>(
    txn: &C,
    payment: &PaymentCompleted,
    now: DateTime<Utc>,
) -> Result<(Option<Rejection>, Option<Change>), DbErr> {
    // A reservation of an archived show is final: judged as it stands, never changed.
    let reservation = match settlement::lock(txn, payment.reservation_id).await? {
        Some(r) => Some(r),
        None => reservations::find_archived(txn, payment.reservation_id).await?,
    };
    let rejection = match judge(reservation.as_ref(), payment) {
        Judgement::AlreadyConfirmed => return Ok((None, None)),
        Judgement::Sell(r) => {
            // Exactly the seats this hold still owns, or none if it lost one.
            let confirmed = events::reservation_confirmed(r, payment.payment_id, now).row()?;
            let sold = settlement::sell(txn, r, payment.payment_id, confirmed).await?;
            if sold as usize == r.seat_nos.len() {
                return Ok((
                    None,
                    Some(Change::sold(r.concert_id, r.schedule_id, sold as i64)),
                ));
            }
            Rejection::SeatsNoLongerHeld
        }
        Judgement::Reject(why) => why,
    };
    let mut change = None;
    if let Some(r) = reservation.filter(|r| r.status == ReservationStatus::Held) {
        // A hold that cannot be paid any more is over: it ends REJECTED, its seats freed.
        let freed = settlement::end_rejected(txn, r.id).await?;
        change = Some(Change::freed(r.concert_id, r.schedule_id, freed as i64));
    }
    events::reservation_rejected(payment, rejection, now)
        .enqueue(txn)
        .await?;
    Ok((Some(rejection), change))
}

/// The verdict an earlier settlement of this payment gave. Settling either confirms the
/// reservation with this payment (which nothing undoes) or rejects the payment, so anything
/// but CONFIRMED-by-this-payment is a rejection.
async fn recorded_verdict(
    db: &DatabaseConnection,
    payment: &PaymentCompleted,
) -> Result<Verdict, DbErr> {
    let reservation = reservations::find(db, payment.reservation_id).await?;
    if reservation
        .as_ref()
        .is_some_and(|r| r.is_confirmed_by(payment.payment_id))
    {
        return Ok(Verdict::Confirmed);
    }
    Ok(
        match settlement::first_rejection(db, payment.reservation_id, payment.payment_id).await? {
            Some(r) => Verdict::Rejected {
                reason: r.reason.parse()?,
                rejection_event_id: Some(r.event_id),
            },
            None => Verdict::Rejected {
                reason: reservation.map_or(Rejection::UnknownReservation, |r| {
                    Rejection::Reservation(r.status)
                }),
                rejection_event_id: None,
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    /// Any instant will do: these rules only compare times.
    fn instant() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn event(kind: &str, version: u32) -> Envelope<PaymentCompleted> {
        let mut e = Envelope::new(kind, payment(3, instant()), instant());
        e.version = version;
        e
    }

    fn payment(user_id: i64, paid_at: DateTime<Utc>) -> PaymentCompleted {
        PaymentCompleted {
            payment_id: 1,
            reservation_id: 2,
            user_id,
            amount: 1000,
            paid_at,
        }
    }

    fn hold(held_until: DateTime<Utc>) -> Reservation {
        Reservation {
            id: 2,
            user_id: 3,
            schedule_id: 4,
            concert_id: 5,
            seat_nos: vec![6],
            amount: 1000,
            status: ReservationStatus::Held,
            held_until,
            payment_id: None,
            created_at: held_until,
        }
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
    fn a_payment_in_time_by_the_holder_buys_the_hold() {
        let now = instant();
        let r = hold(now);
        assert_eq!(judge(Some(&r), &payment(3, now)), Judgement::Sell(&r));
        assert_eq!(
            judge(Some(&r), &payment(3, now + TimeDelta::milliseconds(1))),
            Judgement::Reject(Rejection::PaidAfterHoldExpired)
        );
        assert_eq!(
            judge(Some(&r), &payment(4, now)),
            Judgement::Reject(Rejection::PayerIsNotHolder)
        );
        assert_eq!(
            judge(None, &payment(3, now)),
            Judgement::Reject(Rejection::UnknownReservation)
        );
    }

    #[test]
    fn a_reservation_no_longer_held_is_rejected_unless_this_payment_confirmed_it() {
        let now = instant();
        let mine = Reservation {
            status: ReservationStatus::Confirmed,
            payment_id: Some(1),
            ..hold(now)
        };
        assert_eq!(
            judge(Some(&mine), &payment(3, now)),
            Judgement::AlreadyConfirmed
        );
        let other = Reservation {
            payment_id: Some(9),
            ..mine.clone()
        };
        assert_eq!(
            judge(Some(&other), &payment(3, now)),
            Judgement::Reject(Rejection::Reservation(ReservationStatus::Confirmed))
        );
    }

    #[test]
    fn reasons_read_back_as_they_were_written() {
        let mut all = FIXED_REASONS.to_vec();
        all.extend(ReservationStatus::ALL.map(Rejection::Reservation));
        for r in all {
            assert_eq!(r.to_string().parse::<Rejection>().unwrap(), r);
        }
        assert_eq!(
            Rejection::Reservation(ReservationStatus::Expired).to_string(),
            "RESERVATION_EXPIRED"
        );
        assert!("RESERVATION_GONE".parse::<Rejection>().is_err());
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
                reason: Rejection::Reservation(ReservationStatus::Expired),
                rejection_event_id: Some(id),
            })
            .unwrap(),
            serde_json::json!({"verdict": "REJECTED", "reason": "RESERVATION_EXPIRED", "rejection_event_id": id})
        );
    }
}
