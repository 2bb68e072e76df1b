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
        /// The caller's HELD + CONFIRMED seats for the concert would pass its
        /// `max_tickets_per_user`; `remaining` says how many more it may hold.
        PurchaseLimit = CONFLICT "PURCHASE_LIMIT",
        /// A hold with this `Idempotency-Key` is still being processed (with Retry-After).
        IdempotencyKeyInUse = CONFLICT "IDEMPOTENCY_KEY_IN_USE",
        /// This `Idempotency-Key` came with another hold request.
        IdempotencyKeyReused = UNPROCESSABLE_ENTITY "IDEMPOTENCY_KEY_REUSED",
        ConcertNotFound = NOT_FOUND "CONCERT_NOT_FOUND",
        ScheduleNotFound = NOT_FOUND "SCHEDULE_NOT_FOUND",
        /// The internal lookup (any owner); the public one answers the platform's `NOT_FOUND`.
        ReservationNotFound = NOT_FOUND "RESERVATION_NOT_FOUND",
    }
}

/// What a typed error maps each variant to: an entry of this catalogue or the platform's.
pub use common::error::Catalogued;
