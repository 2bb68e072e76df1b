//! What a valid hold request is, when a schedule can be booked, and every way buying seats
//! can be refused (API.md, the order of checks for `POST /api/reservations`).

use chrono::{DateTime, Utc};
use common::error::Code;
use common::{ApiError, ErrorCode};
use sea_orm::DbErr;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{Catalogued, ConcertCode};
use crate::store::catalogue::ScheduleFacts;

#[derive(Debug, Deserialize, ToSchema)]
pub struct HoldRequest {
    #[schema(minimum = 1)]
    pub schedule_id: i64,
    /// 1 to 4 (`RESERVATION_MAX_SEATS`) distinct seat numbers of the schedule.
    #[schema(schema_with = seat_numbers)]
    pub seat_nos: Vec<i64>,
}

/// Documents the default `RESERVATION_MAX_SEATS` (4), as API.md states it.
fn seat_numbers() -> utoipa::openapi::schema::ArrayBuilder {
    common::openapi::distinct_seat_numbers(4)
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

/// Why seats could not be shown or held.
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    #[error("schedule {0} does not exist")]
    ScheduleNotFound(i64),
    /// The queue pass admits its holder to another concert's sale.
    #[error("queue token is for another concert")]
    NotAdmitted,
    /// The request's `index`-th seat is not in the schedule.
    #[error("field `seat_nos[{index}]`: schedule {schedule_id} has seats 1 to {seat_count}")]
    NoSuchSeat {
        index: usize,
        schedule_id: i64,
        seat_count: i32,
    },
    #[error("booking opens at {}", .0.to_rfc3339())]
    BookingNotOpen(DateTime<Utc>),
    #[error("the show has started; booking is closed")]
    ShowStarted,
    /// These seats are taken (or were seen taken a moment ago).
    #[error("seats not available: {}", list(.0))]
    SeatsUnavailable(Vec<i32>),
    /// The buyer's live seats for the concert plus this hold would pass its limit.
    #[error("this concert allows {limit} tickets per buyer; you may hold {remaining} more")]
    PurchaseLimit { limit: i64, remaining: i64 },
    #[error(transparent)]
    Store(#[from] DbErr),
}

impl SaleError {
    /// A copy of a refusal decided under the hold's transaction (never [`SaleError::Store`],
    /// which is not a refusal).
    pub fn clone_refusal(&self) -> SaleError {
        match self {
            Self::ScheduleNotFound(id) => Self::ScheduleNotFound(*id),
            Self::NotAdmitted => Self::NotAdmitted,
            Self::NoSuchSeat {
                index,
                schedule_id,
                seat_count,
            } => Self::NoSuchSeat {
                index: *index,
                schedule_id: *schedule_id,
                seat_count: *seat_count,
            },
            Self::BookingNotOpen(at) => Self::BookingNotOpen(*at),
            Self::ShowStarted => Self::ShowStarted,
            Self::SeatsUnavailable(seats) => Self::SeatsUnavailable(seats.clone()),
            Self::PurchaseLimit { limit, remaining } => Self::PurchaseLimit {
                limit: *limit,
                remaining: *remaining,
            },
            Self::Store(e) => Self::Store(DbErr::Custom(e.to_string())),
        }
    }
}

fn list(seats: &[i32]) -> String {
    seats
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl SaleError {
    pub fn code(&self) -> Catalogued {
        match self {
            Self::ScheduleNotFound(_) => ConcertCode::ScheduleNotFound.into(),
            Self::NotAdmitted => Code::QueueTokenInvalid.into(),
            Self::NoSuchSeat { .. } => Code::InvalidRequest.into(),
            Self::BookingNotOpen(_) | Self::ShowStarted => ConcertCode::BookingClosed.into(),
            Self::SeatsUnavailable(_) => ConcertCode::SeatUnavailable.into(),
            Self::PurchaseLimit { .. } => ConcertCode::PurchaseLimit.into(),
            Self::Store(e) => common::error::db_code(e).into(),
        }
    }
}

impl ErrorCode for SaleError {
    fn status(&self) -> actix_web::http::StatusCode {
        self.code().status()
    }
    fn code(&self) -> &'static str {
        SaleError::code(self).code()
    }
    /// `SEAT_UNAVAILABLE` names the seats, so a client can pick others; `PURCHASE_LIMIT`
    /// says how many more the buyer may hold.
    fn extensions(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        match self {
            Self::SeatsUnavailable(seats) => Some(
                [("seat_nos".to_owned(), serde_json::json!(seats))]
                    .into_iter()
                    .collect(),
            ),
            Self::PurchaseLimit { remaining, .. } => Some(
                [("remaining".to_owned(), serde_json::json!(remaining))]
                    .into_iter()
                    .collect(),
            ),
            _ => None,
        }
    }
}

impl ValidHold {
    /// Every seat must exist in the schedule.
    pub fn check_seats_exist(&self, schedule: &ScheduleFacts) -> Result<(), SaleError> {
        match self.seat_nos.iter().position(|n| *n > schedule.seat_count) {
            Some(index) => Err(SaleError::NoSuchSeat {
                index,
                schedule_id: schedule.id,
                seat_count: schedule.seat_count,
            }),
            None => Ok(()),
        }
    }
}

/// Booking is open from `booking_opens_at` until the show starts.
pub fn check_booking_open(schedule: &ScheduleFacts, now: DateTime<Utc>) -> Result<(), SaleError> {
    if now < schedule.booking_opens_at {
        Err(SaleError::BookingNotOpen(schedule.booking_opens_at))
    } else if now >= schedule.starts_at {
        Err(SaleError::ShowStarted)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any instant will do: these rules only compare times.
    fn instant() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

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
            assert_eq!(err.code(), Code::InvalidRequest.code());
            assert!(err.detail().contains(field), "{field}: {}", err.detail());
        }
    }

    #[test]
    fn seats_beyond_the_schedule_are_invalid() {
        let schedule = ScheduleFacts {
            id: 9,
            concert_id: 1,
            starts_at: instant(),
            booking_opens_at: instant(),
            seat_count: 50,
        };
        assert!(
            req(9, &[50])
                .validate(4)
                .unwrap()
                .check_seats_exist(&schedule)
                .is_ok()
        );
        let err = ApiError::from(
            req(9, &[1, 51])
                .validate(4)
                .unwrap()
                .check_seats_exist(&schedule)
                .unwrap_err(),
        );
        assert_eq!(err.code(), Code::InvalidRequest.code());
        assert!(err.detail().contains("seat_nos[1]"), "{}", err.detail());
    }

    #[test]
    fn booking_is_open_between_opening_and_start() {
        let now = instant();
        let s = |opens: i64, starts: i64| ScheduleFacts {
            id: 1,
            concert_id: 1,
            booking_opens_at: now + chrono::Duration::seconds(opens),
            starts_at: now + chrono::Duration::seconds(starts),
            seat_count: 50,
        };
        assert!(check_booking_open(&s(-10, 100), now).is_ok());
        for closed in [s(10, 100), s(-100, -1)] {
            let err = ApiError::from(check_booking_open(&closed, now).unwrap_err());
            assert_eq!(err.code(), ConcertCode::BookingClosed.code());
        }
    }

    #[test]
    fn taken_seats_are_listed_in_the_detail_and_as_a_member() {
        let err = ApiError::from(SaleError::SeatsUnavailable(vec![3, 4]));
        assert_eq!(err.code(), ConcertCode::SeatUnavailable.code());
        assert_eq!(err.detail(), "seats not available: 3, 4");
        assert_eq!(err.problem_json()["seat_nos"], serde_json::json!([3, 4]));
    }

    #[test]
    fn the_purchase_limit_says_how_many_are_left() {
        let err = ApiError::from(SaleError::PurchaseLimit {
            limit: 2,
            remaining: 1,
        });
        assert_eq!(err.code(), ConcertCode::PurchaseLimit.code());
        assert_eq!(err.status(), actix_web::http::StatusCode::CONFLICT);
        assert!(err.detail().contains("1 more"), "{}", err.detail());
        assert_eq!(err.problem_json()["remaining"], 1);
    }
}
