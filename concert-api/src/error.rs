//! concert-api's error catalogue: every code it answers with that the platform's own
//! catalogue ([`common::error::Code`]) does not already have (API.md, concert-api).

use actix_web::http::StatusCode;
use common::error::Code;

common::error_codes! {
    pub enum ConcertCode {
        /// Some requested seats are taken; `seat_nos` lists them.
        SeatUnavailable = CONFLICT "SEAT_UNAVAILABLE",
        /// Before `booking_opens_at`, or the show has started.
        BookingClosed = CONFLICT "BOOKING_CLOSED",
        /// Only a live HELD reservation can be cancelled.
        NotCancellable = CONFLICT "NOT_CANCELLABLE",
        ConcertNotFound = NOT_FOUND "CONCERT_NOT_FOUND",
        ScheduleNotFound = NOT_FOUND "SCHEDULE_NOT_FOUND",
        /// The internal lookup (any owner); the public one answers the platform's `NOT_FOUND`.
        ReservationNotFound = NOT_FOUND "RESERVATION_NOT_FOUND",
    }
}

/// A code from either catalogue: what a typed error of concert-api maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalogued {
    Platform(Code),
    Concert(ConcertCode),
}

impl Catalogued {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Platform(c) => c.status(),
            Self::Concert(c) => c.status(),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Platform(c) => c.code(),
            Self::Concert(c) => c.code(),
        }
    }
}

impl From<Code> for Catalogued {
    fn from(c: Code) -> Self {
        Self::Platform(c)
    }
}

impl From<ConcertCode> for Catalogued {
    fn from(c: ConcertCode) -> Self {
        Self::Concert(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_code_repeats_one_of_the_platform() {
        for concert in ConcertCode::ALL {
            assert!(
                Code::ALL.iter().all(|c| c.code() != concert.code()),
                "{} is already a platform code",
                concert.code()
            );
        }
    }
}
