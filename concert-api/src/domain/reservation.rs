//! What a valid hold request is, and how a reservation looks to its owner.

use chrono::{DateTime, Utc};
use common::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::catalogue::ScheduleFacts;
use crate::store::reservations::ReservationRow;

#[derive(Debug, Deserialize, ToSchema)]
pub struct HoldRequest {
    pub schedule_id: i64,
    pub seat_nos: Vec<i64>,
}

/// A hold request that passed every check that needs no database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidHold {
    pub schedule_id: i64,
    pub seat_nos: Vec<i32>,
}

impl HoldRequest {
    /// 1..=`max_seats` distinct positive seat numbers of a positive schedule id.
    pub fn validate(self, max_seats: usize) -> Result<ValidHold, ApiError> {
        if self.schedule_id <= 0 {
            return Err(ApiError::invalid_field(
                "schedule_id",
                "must be a positive integer",
            ));
        }
        if self.seat_nos.is_empty() || self.seat_nos.len() > max_seats {
            return Err(ApiError::invalid_field(
                "seat_nos",
                format!("must list 1 to {max_seats} seats"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut seat_nos = Vec::with_capacity(self.seat_nos.len());
        for (i, &n) in self.seat_nos.iter().enumerate() {
            let n = i32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::invalid_field(
                    &format!("seat_nos[{i}]"),
                    "must be a seat number of 1 or more",
                )
            })?;
            if !seen.insert(n) {
                return Err(ApiError::invalid_field(
                    &format!("seat_nos[{i}]"),
                    format!("seat {n} is listed twice"),
                ));
            }
            seat_nos.push(n);
        }
        Ok(ValidHold {
            schedule_id: self.schedule_id,
            seat_nos,
        })
    }
}

impl ValidHold {
    /// Every seat must exist in the schedule.
    pub fn check_seats_exist(&self, schedule: &ScheduleFacts) -> Result<(), ApiError> {
        match self.seat_nos.iter().position(|n| *n > schedule.seat_count) {
            Some(i) => Err(ApiError::invalid_field(
                &format!("seat_nos[{i}]"),
                format!(
                    "schedule {} has seats 1 to {}",
                    schedule.id, schedule.seat_count
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Booking is open from `booking_opens_at` until the show starts.
pub fn check_booking_open(schedule: &ScheduleFacts, now: DateTime<Utc>) -> Result<(), ApiError> {
    if now < schedule.booking_opens_at {
        Err(ApiError::conflict(
            "BOOKING_CLOSED",
            format!(
                "booking opens at {}",
                schedule.booking_opens_at.to_rfc3339()
            ),
        ))
    } else if now >= schedule.starts_at {
        Err(ApiError::conflict(
            "BOOKING_CLOSED",
            "the show has started; booking is closed",
        ))
    } else {
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReservationView {
    pub id: i64,
    pub user_id: i64,
    pub concert_id: i64,
    pub schedule_id: i64,
    pub seat_nos: Vec<i32>,
    pub amount: i64,
    /// `HELD`, `CONFIRMED`, `EXPIRED`, `CANCELLED` or `REJECTED`.
    pub status: String,
    pub held_until: DateTime<Utc>,
    pub payment_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl ReservationView {
    /// A hold past `held_until + grace` is dead even before the sweeper marks it: say so.
    pub fn at(row: ReservationRow, stale_before: DateTime<Utc>) -> Self {
        let status = if row.status == "HELD" && row.held_until < stale_before {
            "EXPIRED".to_owned()
        } else {
            row.status
        };
        Self {
            id: row.id,
            user_id: row.user_id,
            concert_id: row.concert_id,
            schedule_id: row.schedule_id,
            seat_nos: row.seat_nos,
            amount: row.amount,
            status,
            held_until: row.held_until,
            payment_id: row.payment_id,
            created_at: row.created_at,
        }
    }
}

/// The expiry sweep batch runs: holds past `held_until + grace` become EXPIRED and their
/// seats free; CONFIRMED reservations and SOLD seats are never touched.
pub async fn expire_holds(
    db: &sea_orm::DatabaseConnection,
    now: DateTime<Utc>,
    grace: std::time::Duration,
) -> Result<crate::store::reservations::Sweep, sea_orm::DbErr> {
    let grace = chrono::Duration::from_std(grace).unwrap_or_else(|_| chrono::Duration::seconds(30));
    crate::store::reservations::expire_holds(db, now - grace, 1000).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(schedule_id: i64, seat_nos: &[i64]) -> HoldRequest {
        HoldRequest {
            schedule_id,
            seat_nos: seat_nos.to_vec(),
        }
    }

    #[test]
    fn valid_holds_pass() {
        assert_eq!(req(3, &[4, 1]).validate(4).unwrap().seat_nos, vec![4, 1]);
        assert!(req(3, &[1, 2, 3, 4]).validate(4).is_ok());
    }

    #[test]
    fn bad_holds_name_the_field() {
        for (r, field) in [
            (req(0, &[1]), "schedule_id"),
            (req(1, &[]), "seat_nos"),
            (req(1, &[1, 2, 3, 4, 5]), "seat_nos"),
            (req(1, &[1, 1]), "seat_nos[1]"),
            (req(1, &[0]), "seat_nos[0]"),
            (req(1, &[2, -3]), "seat_nos[1]"),
            (req(1, &[i64::MAX]), "seat_nos[0]"),
        ] {
            let err = r.validate(4).unwrap_err();
            assert_eq!(err.code(), "INVALID_REQUEST");
            assert!(err.detail().contains(field), "{field}: {}", err.detail());
        }
    }

    #[test]
    fn seats_beyond_the_schedule_are_invalid() {
        let schedule = ScheduleFacts {
            id: 9,
            concert_id: 1,
            starts_at: Utc::now(),
            booking_opens_at: Utc::now(),
            seat_count: 50,
        };
        assert!(
            req(9, &[50])
                .validate(4)
                .unwrap()
                .check_seats_exist(&schedule)
                .is_ok()
        );
        let err = req(9, &[1, 51])
            .validate(4)
            .unwrap()
            .check_seats_exist(&schedule)
            .unwrap_err();
        assert!(err.detail().contains("seat_nos[1]"));
    }

    #[test]
    fn booking_is_open_between_opening_and_start() {
        let now = Utc::now();
        let s = |opens: i64, starts: i64| ScheduleFacts {
            id: 1,
            concert_id: 1,
            booking_opens_at: now + chrono::Duration::seconds(opens),
            starts_at: now + chrono::Duration::seconds(starts),
            seat_count: 50,
        };
        assert!(check_booking_open(&s(-10, 100), now).is_ok());
        assert_eq!(
            check_booking_open(&s(10, 100), now).unwrap_err().code(),
            "BOOKING_CLOSED"
        );
        assert_eq!(
            check_booking_open(&s(-100, -1), now).unwrap_err().code(),
            "BOOKING_CLOSED"
        );
    }
}
