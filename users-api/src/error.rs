//! users-api's error catalogue: every code it answers with that the platform's own
//! catalogue ([`common::error::Code`]) does not already have (API.md, users-api).

common::error_codes! {
    pub enum UsersCode {
        UsernameTaken = CONFLICT "USERNAME_TAKEN",
        /// Unknown username and wrong password look the same.
        BadCredentials = UNAUTHORIZED "BAD_CREDENTIALS",
        /// concert-api says the concert does not exist: no line is opened for it.
        ConcertNotFound = NOT_FOUND "CONCERT_NOT_FOUND",
        /// Unknown, malformed, or another user's token (ownership is never revealed).
        QueueTokenNotFound = NOT_FOUND "QUEUE_TOKEN_NOT_FOUND",
        /// Every password-hashing slot is busy (a log-in crowd): retry after `Retry-After`.
        Busy = SERVICE_UNAVAILABLE "LOGIN_BUSY",
        /// Too many failed log-ins for this username from this address (or, from an address
        /// that never logged in to it, from anywhere): retry after `Retry-After`. Checked
        /// before the password, so it says nothing about whether the password was right.
        Throttled = TOO_MANY_REQUESTS "LOGIN_THROTTLED",
        /// A password that passes the length rule but is too easy to guess: all whitespace,
        /// the username, or on the list of common passwords.
        WeakPassword = BAD_REQUEST "WEAK_PASSWORD",
        /// The user already holds `QUEUE_SSE_PER_USER` status streams open: close one, or
        /// poll the status instead; retry after `Retry-After`.
        TooManyStreams = TOO_MANY_REQUESTS "TOO_MANY_STREAMS",
        /// The concert has nothing left to buy (no seat available nor held): no one joins
        /// its line, and every fan waiting in it is told `SOLD_OUT`.
        SoldOut = CONFLICT "SOLD_OUT",
        /// The pre-queue's lottery was drawn: `sale_opens_at` can no longer change.
        LotteryDrawn = CONFLICT "LOTTERY_DRAWN",
    }
}

/// What a typed error maps each variant to: an entry of this catalogue or the platform's.
pub use common::error::Catalogued;
