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
    }
}

/// What a typed error maps each variant to: an entry of this catalogue or the platform's.
pub use common::error::Catalogued;
