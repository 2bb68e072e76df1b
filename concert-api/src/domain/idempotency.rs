//! Hold idempotency (API.md "Idempotency"): the rules of [`common::idempotency`], shared with
//! payment-api, applied to `POST /api/reservations`: a request with an `Idempotency-Key`
//! claims the key, holds and keeps its answer in one transaction; a retry with the same
//! request gets that answer again, byte for byte, whatever happened since; a retry with
//! another request is refused (422); a retry while the first still runs waits for it, then
//! replays, or is refused (409 with `Retry-After`).
//!
//! The answer and request types and the judging of a key are shared; what is concert-api's
//! own is here: what the same hold is ([`hold_request`]) and the catalogue entries a refused
//! key answers with ([`judge`]). The transaction around the claim is the box office's, not
//! payment-api's wrapper: a hold must act after its commit (the inventory counts, the
//! seats-seen-taken memory), which that wrapper has no place for.

use common::ApiError;

use crate::domain::hold::ValidHold;
use crate::error::ConcertCode;
use crate::store::idempotency::Claim;

pub use common::idempotency::{Answer, KeyedRequest};

/// A hold: the same request is the same schedule and the same set of seats.
pub fn hold_request<'a>(user_id: i64, key: &'a str, hold: &ValidHold) -> KeyedRequest<'a> {
    let mut seats = hold.seat_nos.clone();
    seats.sort_unstable();
    let seats: Vec<String> = seats.iter().map(i32::to_string).collect();
    KeyedRequest::new(
        user_id,
        key,
        format!("hold:{}:{}", hold.schedule_id, seats.join(",")),
    )
}

/// The stored answer to replay, a refusal of the key, or `None`: go on. The rules are
/// [`common::idempotency::judge`]'s; a refused key answers with concert-api's own catalogue
/// entries (`ConcertCode`), where its codes are declared and documented.
pub fn judge(claim: Claim) -> Result<Option<Answer>, ApiError> {
    common::idempotency::judge(
        claim,
        ConcertCode::IdempotencyKeyReused,
        ConcertCode::IdempotencyKeyInUse,
    )
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::http::header::RETRY_AFTER;

    use super::*;

    #[test]
    fn a_hold_is_known_by_its_schedule_and_its_set_of_seats() {
        let h = |seats: &[i32]| ValidHold {
            schedule_id: 7,
            seat_nos: seats.to_vec(),
        };
        assert_eq!(hold_request(1, "k", &h(&[3, 1])).request, "hold:7:1,3");
        assert_eq!(
            hold_request(1, "k", &h(&[1, 3])),
            hold_request(1, "k", &h(&[3, 1]))
        );
        assert_ne!(
            hold_request(1, "k", &h(&[1])).request,
            hold_request(1, "k", &h(&[2])).request
        );
    }

    #[test]
    fn a_refused_key_answers_with_concert_api_s_codes() {
        let in_use = judge(Claim::InUse).unwrap_err();
        assert_eq!(in_use.status(), StatusCode::CONFLICT);
        assert_eq!(in_use.code(), "IDEMPOTENCY_KEY_IN_USE");
        assert_eq!(
            in_use.to_response().headers().get(RETRY_AFTER).unwrap(),
            "1"
        );
        let reused = judge(Claim::Reused).unwrap_err();
        assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reused.code(), ConcertCode::IdempotencyKeyReused.code());
    }
}
