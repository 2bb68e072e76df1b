//! Hold idempotency (API.md "Idempotency"), the rules of payment-api's
//! `domain/idempotency.rs` applied to `POST /api/reservations`: a request with an
//! `Idempotency-Key` claims the key, holds and keeps its answer in one transaction; a retry
//! with the same request gets that answer again, byte for byte, whatever happened since; a
//! retry with another request is refused (422); a retry while the first still runs waits for
//! it, then replays, or is refused (409 with `Retry-After`).
//!
//! Why not one implementation in `common`: payment-api's wrapper is bound to its own error
//! catalogue and relies on its pool's `lock_timeout`, and a hold must do work after the commit
//! (the inventory counts, the seats-seen-taken memory) that its wrapper has no place for. The
//! table, the statements and the rules are the same; moving them is a refactor for later.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use common::error::PROBLEM_JSON;
use common::{ApiError, ErrorCode};

use crate::domain::hold::ValidHold;
use crate::error::ConcertCode;
use crate::store::idempotency::Claim;

/// A hold sent with an `Idempotency-Key`: whose key, and what "the same request" is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest<'a> {
    pub user_id: i64,
    pub key: &'a str,
    /// Stored with the key (`request_hash`); a retry must bring the same.
    pub request: String,
}

impl<'a> KeyedRequest<'a> {
    /// A hold: the same request is the same schedule and the same set of seats.
    pub fn hold(user_id: i64, key: &'a str, hold: &ValidHold) -> Self {
        let mut seats = hold.seat_nos.clone();
        seats.sort_unstable();
        let seats: Vec<String> = seats.iter().map(i32::to_string).collect();
        Self {
            user_id,
            key,
            request: format!("hold:{}:{}", hold.schedule_id, seats.join(",")),
        }
    }
}

/// The answer a client was given, kept with its key: status and body, as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn created(body: serde_json::Value) -> Self {
        Self {
            status: StatusCode::CREATED,
            body,
        }
    }

    pub fn refused(err: &ApiError) -> Self {
        Self {
            status: err.status(),
            body: err.problem_json(),
        }
    }

    /// The HTTP response: the same status and body every time it is given.
    pub fn respond(&self) -> HttpResponse {
        let content_type = if self.status.is_success() {
            "application/json"
        } else {
            PROBLEM_JSON
        };
        HttpResponse::build(self.status)
            .content_type(content_type)
            .json(&self.body)
    }
}

/// Why a key cannot be used for this request. Never kept: the key stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("this Idempotency-Key was used with a different request")]
    Reused,
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    InUse,
}

impl KeyRefusal {
    fn catalogued(&self) -> ConcertCode {
        match self {
            Self::Reused => ConcertCode::IdempotencyKeyReused,
            Self::InUse => ConcertCode::IdempotencyKeyInUse,
        }
    }
}

impl ErrorCode for KeyRefusal {
    fn status(&self) -> StatusCode {
        self.catalogued().status()
    }
    fn code(&self) -> &'static str {
        self.catalogued().code()
    }
    fn retry_after(&self) -> Option<u64> {
        matches!(self, Self::InUse).then_some(1)
    }
}

/// The stored answer to replay, a refusal of the key, or `None`: go on.
pub fn judge(claim: Claim) -> Result<Option<Answer>, ApiError> {
    match claim {
        Claim::Fresh => Ok(None),
        Claim::Replay { status, body } => Ok(Some(Answer {
            status: StatusCode::from_u16(status).map_err(ApiError::internal)?,
            body,
        })),
        Claim::Reused => Err(KeyRefusal::Reused.into()),
        Claim::InUse => Err(KeyRefusal::InUse.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_is_known_by_its_schedule_and_its_set_of_seats() {
        let h = |seats: &[i32]| ValidHold {
            schedule_id: 7,
            seat_nos: seats.to_vec(),
        };
        assert_eq!(
            KeyedRequest::hold(1, "k", &h(&[3, 1])).request,
            "hold:7:1,3"
        );
        assert_eq!(
            KeyedRequest::hold(1, "k", &h(&[1, 3])),
            KeyedRequest::hold(1, "k", &h(&[3, 1]))
        );
        assert_ne!(
            KeyedRequest::hold(1, "k", &h(&[1])).request,
            KeyedRequest::hold(1, "k", &h(&[2])).request
        );
    }

    #[test]
    fn a_key_in_use_says_when_to_retry_and_a_reused_one_does_not() {
        assert_eq!(KeyRefusal::InUse.retry_after(), Some(1));
        assert_eq!(KeyRefusal::Reused.retry_after(), None);
        assert_eq!(
            ApiError::from(KeyRefusal::Reused).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ApiError::from(KeyRefusal::InUse).code(),
            "IDEMPOTENCY_KEY_IN_USE"
        );
    }
}
