//! concert-api's error catalogue: every code it answers with that the platform's own
//! catalogue ([`common::error::Code`]) does not already have (API.md, concert-api).

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

/// What a typed error maps each variant to: an entry of this catalogue or the platform's.
pub use common::error::Catalogued;
