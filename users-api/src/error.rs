//! users-api's error catalogue: every code it answers with that the platform's own
//! catalogue ([`common::error::Code`]) does not already have (API.md, users-api).

use actix_web::http::StatusCode;
use common::error::Code;

common::error_codes! {
    pub enum UsersCode {
        UsernameTaken = CONFLICT "USERNAME_TAKEN",
        /// Unknown username and wrong password look the same.
        BadCredentials = UNAUTHORIZED "BAD_CREDENTIALS",
        /// concert-api says the concert does not exist: no line is opened for it.
        ConcertNotFound = NOT_FOUND "CONCERT_NOT_FOUND",
        /// Unknown, malformed, or another user's token (ownership is never revealed).
        QueueTokenNotFound = NOT_FOUND "QUEUE_TOKEN_NOT_FOUND",
    }
}

/// A code from either catalogue: what a typed error of users-api maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalogued {
    Platform(Code),
    Users(UsersCode),
}

impl Catalogued {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Platform(c) => c.status(),
            Self::Users(c) => c.status(),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Platform(c) => c.code(),
            Self::Users(c) => c.code(),
        }
    }
}

impl From<Code> for Catalogued {
    fn from(c: Code) -> Self {
        Self::Platform(c)
    }
}

impl From<UsersCode> for Catalogued {
    fn from(c: UsersCode) -> Self {
        Self::Users(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_code_repeats_one_of_the_platform() {
        for users in UsersCode::ALL {
            assert!(
                Code::ALL.iter().all(|c| c.code() != users.code()),
                "{} is already a platform code",
                users.code()
            );
        }
    }
}
