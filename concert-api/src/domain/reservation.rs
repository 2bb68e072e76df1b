//! A reservation, what it is at a given moment, how it looks to its owner, and the expiry
//! sweep batch runs.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr, FromQueryResult};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::policy;
use crate::domain::status::ReservationStatus;
use crate::store::inventory::Inventory;
use crate::store::sweep::{self, Sweep};

/// A reservation as stored (`reservations`).
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct Reservation {
    pub id: i64,
    pub user_id: i64,
    pub schedule_id: i64,
    pub concert_id: i64,
    pub seat_nos: Vec<i32>,
    pub amount: i64,
    pub status: ReservationStatus,
    pub held_until: DateTime<Utc>,
    pub payment_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl Reservation {
    /// Its status once holds that ended before `stale_before` count as dead: such a hold is
    /// EXPIRED even before the sweep records it.
    pub fn status_seen(&self, stale_before: DateTime<Utc>) -> ReservationStatus {
        if self.status == ReservationStatus::Held && self.held_until < stale_before {
            ReservationStatus::Expired
        } else {
            self.status
        }
    }

    /// Confirmed by exactly this payment (a repeated `payment.completed` changes nothing).
    pub fn is_confirmed_by(&self, payment_id: i64) -> bool {
        self.status == ReservationStatus::Confirmed && self.payment_id == Some(payment_id)
    }
}

/// `Reservation` of API.md.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Reservation)]
pub struct ReservationView {
    pub id: i64,
    pub user_id: i64,
    pub concert_id: i64,
    pub schedule_id: i64,
    pub seat_nos: Vec<i32>,
    pub amount: i64,
    pub status: ReservationStatus,
    pub held_until: DateTime<Utc>,
    pub payment_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl ReservationView {
    /// The reservation as its owner sees it while holds that ended before `stale_before` are
    /// dead.
    pub fn at(r: Reservation, stale_before: DateTime<Utc>) -> Self {
        Self {
            status: r.status_seen(stale_before),
            id: r.id,
            user_id: r.user_id,
            concert_id: r.concert_id,
            schedule_id: r.schedule_id,
            seat_nos: r.seat_nos,
            amount: r.amount,
            held_until: r.held_until,
            payment_id: r.payment_id,
            created_at: r.created_at,
        }
    }
}

/// How many holds one sweep transaction expires at most.
const SWEEP_BATCH: i64 = 1000;

/// The expiry sweep batch runs: holds past `held_until + grace` at `now` become EXPIRED and
/// their seats free (and counted free in `inventory`, the concert inventory hashes in Redis);
/// CONFIRMED reservations and SOLD seats are never touched.
pub async fn expire_holds(
    db: &DatabaseConnection,
    inventory: &Inventory,
    now: DateTime<Utc>,
    grace: std::time::Duration,
) -> Result<Sweep, DbErr> {
    sweep::expire_holds(
        db,
        Some(inventory),
        policy::stale_before(now, grace),
        now,
        SWEEP_BATCH,
    )
    .await
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    /// Any instant will do: these rules only compare times.
    fn instant() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn held_until(held_until: DateTime<Utc>) -> Reservation {
        Reservation {
            id: 1,
            user_id: 2,
            schedule_id: 3,
            concert_id: 4,
            seat_nos: vec![5],
            amount: 1000,
            status: ReservationStatus::Held,
            held_until,
            payment_id: None,
            created_at: held_until,
        }
    }

    #[test]
    fn a_hold_reads_expired_once_it_ended_before_the_stale_line() {
        let now = instant();
        let r = held_until(now);
        assert_eq!(r.status_seen(now), ReservationStatus::Held);
        assert_eq!(
            r.status_seen(now + TimeDelta::milliseconds(1)),
            ReservationStatus::Expired
        );
        let cancelled = Reservation {
            status: ReservationStatus::Cancelled,
            ..r
        };
        assert_eq!(
            cancelled.status_seen(now + TimeDelta::days(1)),
            ReservationStatus::Cancelled
        );
    }

    #[test]
    fn only_its_own_payment_has_confirmed_it() {
        let r = Reservation {
            status: ReservationStatus::Confirmed,
            payment_id: Some(7),
            ..held_until(instant())
        };
        assert!(r.is_confirmed_by(7));
        assert!(!r.is_confirmed_by(8));
        assert!(!held_until(instant()).is_confirmed_by(7));
    }
}
